//! Cohort protocol primitives: keys and scripts, tree, fees, MuSig2 helpers,
//! messages and codec, chain access and the embedded regtest ledger.
//!
//! # Layout
//!
//! - [`keys`]: key types and conversions between the two secp256k1 crates.
//! - [`params`]: round parameters and shared plain data types.
//! - [`musig`]: MuSig2 (BIP-327) helpers: Taproot key aggregation and cache, nonces, signing.

pub mod exit;
pub mod fees;
pub mod keys;
pub mod musig;
pub mod params;
pub mod scripts;
pub mod tree;

pub use bitcoin;
pub use musig2;
