//! Cohort participant.
