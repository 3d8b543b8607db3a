//! Cohort participant.
//!
//! # Layout
//!
//! - [`session`]: the sans-IO session engine (register, check, sign, persist, sign deposits).
//! - [`store`]: persistent state (seed, key counter, deposits, exit paths, history).

pub mod session;
pub mod store;
