//! Cohort protocol primitives: keys and scripts, tree, fees, MuSig2 helpers,
//! messages and codec, chain access and the embedded regtest ledger.
//!
//! # Layout
//!
//! - [`keys`]: key types and conversions between the two secp256k1 crates.
//! - [`params`]: round parameters and shared plain data types.
//! - [`musig`]: MuSig2 (BIP-327) helpers: Taproot key aggregation and cache, nonces,
//!   signing, aggregate-first combination.
//! - [`scripts`]: static deposit addresses, virtual-deposit leaves, P2A anchors.
//! - [`tree`]: the deterministic virtual-transaction tree.
//! - [`batch`]: the one batch builder: grouping registrations into batches, pricing,
//!   leaf layout, tree, funding transaction and node nonce aggregation.
//! - [`fees`]: funding-transaction weight, fee shares, the funding transaction.
//! - [`exit`]: CPFP children for node transactions and script-path reclaims.
//! - [`codec`]: frames and the bincode body codec (the only module naming bincode).
//! - [`bounded`]: consensus decoding of untrusted transactions, every count checked
//!   against the bytes behind it before anything is allocated for it.
//! - [`messages`]: every protocol message.
//! - [`chain`]: the chain-access trait.
//! - [`consensus`]: Bitcoin Core (libbitcoinkernel) script checks of whole transactions.
//! - [`standard`]: relay rules both sides share: standard outputs, dust, anchors, TRUC,
//!   standard weight, money range, the honest funding transaction's fixed fields.
//! - [`ledger`]: the embedded regtest ledger.
//! - [`store`]: what both stores share: one error type, storable integers, decoders.
//! - [`time`]: Unix milliseconds printed as UTC dates.
//! - `sqlite` (feature `sqlite`): opening the stores' SQLite files and a temporary
//!   directory for their tests.

pub mod batch;
pub mod bounded;
pub mod chain;
pub mod codec;
pub mod consensus;
pub mod exit;
pub mod fees;
pub mod keys;
pub mod ledger;
pub mod messages;
pub mod musig;
pub mod params;
pub mod scripts;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod standard;
pub mod store;
pub mod time;
pub mod tree;

pub use bitcoin;
pub use musig2;
