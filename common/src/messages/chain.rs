//! Side requests on their own QUIC streams: the coordinator's public info (which names
//! the port of a `--dev` coordinator's chain endpoint; the chain itself is served as
//! `bitcoind`'s JSON-RPC, never over QUIC), and [`UtxoInfo`], an output as a wallet's
//! chain source reports it.
//!
//! Each request opens a fresh bidirectional stream: one `SideRequest` frame from the
//! client, one `SideResponse` frame back, then both ends finish the stream.

use bitcoin::secp256k1::PublicKey;
use bitcoin::{OutPoint, TxOut};
use serde::{Deserialize, Serialize};

use super::Reason;

/// What a coordinator tells anyone who asks, before any round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// Protocol version.
    pub version: u32,
    /// The coordinator's long-term key `C` (the static deposit addresses commit to it).
    pub coordinator_key: PublicKey,
    /// The network its addresses are for.
    pub network: bitcoin::Network,
    /// The `deposit_csv` it suggests for new static addresses.
    pub deposit_csv: u16,
    /// The `exit_csv` of its virtual-deposit leaves.
    pub exit_csv: u16,
    /// Whether it serves the dev chain endpoint.
    pub dev: bool,
    /// The dev chain's identity (random per embedded ledger, `None` without one): a
    /// wallet remembers it, so a dev coordinator restarted on a fresh chain is told
    /// apart from one whose chain lost the wallet's coins.
    pub dev_chain: Option<[u8; 16]>,
    /// The TCP port of the dev chain's JSON-RPC endpoint (`bitcoind`'s methods, on the
    /// coordinator's host), `None` without a dev chain: a wallet reaches the dev chain
    /// through it with the same client as its own node.
    pub dev_rpc_port: Option<u16>,
}

/// One unspent output as the chain sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UtxoInfo {
    /// Where it is.
    pub outpoint: OutPoint,
    /// What it holds.
    #[serde(with = "super::consensus_bytes")]
    pub txout: TxOut,
    /// Confirmation height (`None` while in the mempool).
    pub height: Option<u32>,
}

/// A side request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SideRequest {
    /// The coordinator's [`ServerInfo`].
    Info,
}

/// The answer to a [`SideRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SideResponse {
    /// To `Info`.
    Info(ServerInfo),
    /// The request failed.
    Error(Reason),
}
