//! Cohort protocol primitives: keys and scripts, tree, fees, MuSig2 helpers,
//! messages and codec, chain access and the embedded regtest ledger.
//!
//! # Layout
//!
//! - [`chain`]: the chain access trait and why transactions are refused.
//! - [`consensus`]: script verification of whole transactions with libbitcoinconsensus.
//! - [`keys`]: key types and conversions between the two secp256k1 crates.
//! - [`ledger`]: the embedded regtest ledger (UTXO set, mempool, faucet, mining).
//! - [`params`]: round parameters and shared plain data types.

pub mod chain;
pub mod consensus;
pub mod keys;
pub mod ledger;
pub mod params;

pub use bitcoin;
pub use musig2;
