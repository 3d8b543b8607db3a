//! Cohort participant.
//!
//! # Layout
//!
//! - [`session`]: the sans-IO session engine (register, check, sign, persist, sign deposits).

pub mod session;
