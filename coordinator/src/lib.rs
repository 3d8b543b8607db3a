//! Cohort coordinator.
