//! Why a call to the node failed.

use std::path::PathBuf;
use std::time::Duration;

use bitcoin::Network;
use cohort_common::chain::ChainError;

/// A failed exchange with `bitcoind`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// The node could not be reached (or kept failing transiently) until the retry
    /// policy gave up.
    #[error("bitcoind at {url} unreachable: {attempts} attempts over {waited:?}, last: {last}")]
    Unreachable {
        /// The RPC endpoint.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// Time spent trying.
        waited: Duration,
        /// The last failure.
        last: String,
    },
    /// The node refused the credentials.
    #[error("bitcoind at {url} refused the RPC credentials (HTTP 401)")]
    Unauthorized {
        /// The RPC endpoint.
        url: String,
    },
    /// The cookie file could not be read.
    #[error("cannot read the bitcoind cookie file {}: {error}", path.display())]
    Cookie {
        /// Its path.
        path: PathBuf,
        /// What went wrong.
        error: String,
    },
    /// The node is on another network.
    #[error("bitcoind is on {node} but {expected} was expected")]
    WrongNetwork {
        /// The network configured.
        expected: Network,
        /// The node's chain name (`getblockchaininfo`'s `chain`).
        node: String,
    },
    /// The node is still catching up with the chain.
    #[error(
        "bitcoind is not synced: {blocks} blocks of {headers} headers (initial block download: {initial_block_download})"
    )]
    NotSynced {
        /// Blocks validated.
        blocks: u64,
        /// Headers known.
        headers: u64,
        /// Whether the node reports initial block download.
        initial_block_download: bool,
    },
    /// The node is too old for TRUC, P2A and package relay.
    #[error("bitcoind version {version} is older than 28.0, which Cohort's exits need")]
    TooOld {
        /// `getnetworkinfo`'s `version`.
        version: u64,
    },
    /// The node answered with an RPC error.
    #[error("bitcoind {method} failed with RPC error {code}: {message}")]
    Rpc {
        /// The method called.
        method: String,
        /// Bitcoin Core's error code (`-26`: rejected by policy, `-5`: not found, ...).
        code: i32,
        /// Its message.
        message: String,
    },
    /// The reply could not be understood.
    #[error("unexpected reply to {method}: {detail}")]
    Decode {
        /// The method called.
        method: String,
        /// What did not fit.
        detail: String,
    },
}

impl RpcError {
    /// The RPC error code, if the node answered with one.
    pub fn rpc_code(&self) -> Option<i32> {
        match self {
            RpcError::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<RpcError> for ChainError {
    fn from(e: RpcError) -> Self {
        ChainError::Backend(e.to_string())
    }
}
