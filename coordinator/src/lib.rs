//! Cohort coordinator.
//!
//! # Layout
//!
//! - [`engine`]: the sans-IO round engine (registration, batches, signing, aborts).
//! - [`store`]: persistent state (rounds, registrations, batches, signed trees, bans).
//! - [`service`]: the engine driven over QUIC on its own thread, with persistence and
//!   restart recovery.

pub mod engine;
pub mod service;
pub mod store;
