//! Cohort coordinator.
//!
//! # Layout
//!
//! - [`store`]: persistent state (rounds, registrations, batches, signed trees, bans).

pub mod store;
