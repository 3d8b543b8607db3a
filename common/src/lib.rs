//! Cohort protocol primitives: keys and scripts, tree, fees, MuSig2 helpers,
//! messages and codec, chain access and the embedded regtest ledger.
//!
//! # Layout
//!
//! - [`codec`]: bincode bodies, length-prefixed frames, pre-encoded values (only user of bincode).
//! - [`keys`]: key types and conversions between the two secp256k1 crates.
//! - [`messages`]: every protocol message and the two frame-body enums.
//! - [`params`]: round parameters and shared plain data types.

pub mod codec;
pub mod keys;
pub mod messages;
pub mod params;

pub use bitcoin;
pub use musig2;
