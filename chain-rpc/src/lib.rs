//! A `bitcoind` JSON-RPC backend for [`cohort_common::chain::Chain`].
//!
//! [`BitcoindChain`] talks to a Bitcoin Core node (28 or later: TRUC, P2A and package
//! relay) over JSON-RPC with cookie or user/password authentication, per-request
//! timeouts and retries with exponential back-off, and says plainly when the node is
//! down, on another network, or not synced ([`RpcError`]). It needs no wallet and no
//! `-txindex`:
//!
//! | `Chain` method | RPC |
//! |---|---|
//! | `tip_height` | `getblockcount` |
//! | `utxo` | `gettxout` (mempool included), `getblockheader` for the height |
//! | `script_utxos` | `scantxoutset` for the chain, a mempool index for the rest |
//! | `broadcast` | `sendrawtransaction` |
//! | `broadcast_package` | `submitpackage` |
//! | `fee_rate` | `estimatesmartfee`, a fallback, floored at `mempoolminfee` |
//! | `confirmations` | `getrawtransaction`, `gettxout`, then a block scan (a watch) |
//!
//! Every call blocks: run it off any async runtime or engine thread.
//!
//! # Layout
//!
//! - [`config`]: where the node is, how to log in, timeouts and retries.
//! - [`client`]: one JSON-RPC call with retries ([`RpcClient`]).
//! - [`codes`]: Core's RPC error codes.
//! - [`backend`]: [`BitcoindChain`], the `Chain` implementation.
//! - [`error`]: why a call failed, [`RpcError`].
//! - [`regtest`]: a throwaway `bitcoind -regtest` node for tests and local trials.

pub mod backend;
pub mod client;
pub mod codes;
pub mod config;
pub mod error;
mod mempool;
pub mod regtest;
mod watch;
mod wire;

pub use backend::{BitcoindChain, NodeStatus};
pub use client::RpcClient;
pub use config::{BitcoindConfig, RetryPolicy, RpcAuth};
pub use error::RpcError;
