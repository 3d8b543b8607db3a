//! Cohort simulations: whole batches of many users in one process on the embedded
//! regtest ledger.
//!
//! # Layout
//!
//! - [`local`]: a batch built and signed with local keys (no network), exits.
//! - [`export`]: the `batch.json` export of a signed batch.
//! - [`run`]: the `cohort-sim` run: deposits, batches, confirmation, exits, report.

pub mod export;
pub mod local;
pub mod run;
