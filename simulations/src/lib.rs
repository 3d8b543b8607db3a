//! Cohort simulations: whole rounds of many users in one process on the embedded
//! regtest ledger.
//!
//! # Layout
//!
//! - [`memnet`]: the deterministic in-memory network with simulated time and faults.
//! - [`round`]: a round through the real coordinator and participant engines.
//! - [`quic`]: the same round over real loopback QUIC (`--transport quic`), faults
//!   injected in the participants' session sinks.
//! - [`local`]: a batch built and signed with local keys (no engines), exits.
//! - [`run`]: the local-key run (`cohort-sim --local`) and user funding.
//! - [`export`]: the `batch.json` export of a signed batch.
//! - [`sweep`]: `cohort-sim sweep`, the round at several sizes, tabulated and plotted.

pub mod export;
pub mod local;
pub mod memnet;
pub mod quic;
pub mod round;
pub mod run;
pub mod sweep;
