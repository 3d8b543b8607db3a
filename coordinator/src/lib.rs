//! Cohort coordinator.
//!
//! # Layout
//!
//! - [`engine`]: the sans-IO round engine (registration, batches, signing, aborts).
//! - [`store`]: persistent state (rounds, registrations, batches, signed trees, bans).

pub mod engine;
pub mod store;
