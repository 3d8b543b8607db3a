//! Cohort participant.
//!
//! # Layout
//!
//! - [`session`]: the sans-IO session engine (register, check, sign, persist, sign deposits).
//! - [`store`]: persistent state (seed, key counter, deposits, exit paths, history).
//! - [`wallet`]: the seed, the remembered coordinator and every key derived from the seed.

pub mod session;
pub mod store;
pub mod wallet;
