//! Cohort participant.
//!
//! # Layout
//!
//! - [`session`]: the sans-IO session engine (register, check, sign, persist, sign deposits).
//! - [`store`]: persistent state (seed, key counter, deposits, exit paths, history).
//! - [`wallet`]: the seed, the remembered coordinator and every key derived from the seed.
//! - [`client`]: the participant as a library for wallets ([`client::Client`]: join,
//!   deposits, status, exit, reclaim, progress events, cancellation).
//! - [`cli`]: the `cohort` commands, built on the client, with the data directory and its
//!   lock.
//! - [`report`]: what the commands and the client report (text and JSON).
//! - [`driver`]: the tokio driver of the session over QUIC (or any message link).
//! - [`chain`]: the participant's own chain source (its node, or a dev coordinator's chain).
//! - [`exit`]: publishing exit paths, reclaiming leaves and deposits after their timeout.

pub mod chain;
pub mod cli;
pub mod client;
pub mod driver;
pub mod exit;
pub mod report;
pub mod send;
pub mod session;
pub mod store;
pub mod wallet;
pub mod watch;
pub mod withdraw;
