//! Cohort participant.
//!
//! # Layout
//!
//! - [`store`]: persistent state (seed, key counter, deposits, exit paths, history).

pub mod store;
