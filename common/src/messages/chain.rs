//! Side requests on their own QUIC streams: the coordinator's public info, and the
//! dev chain endpoint a `--dev` coordinator serves so that separate participant
//! processes share one embedded ledger.
//!
//! Each request opens a fresh bidirectional stream: one `SideRequest` frame from the
//! client, one `SideResponse` frame back, then both ends finish the stream.

use bitcoin::secp256k1::PublicKey;
use bitcoin::{Amount, FeeRate, OutPoint, ScriptBuf, Transaction, TxOut, Txid};
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

/// Most blocks one [`SideRequest::Mine`] may ask for; a client mining more splits its
/// request.
pub const MAX_MINE_PER_REQUEST: u32 = 1_000;

/// A side request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SideRequest {
    /// The coordinator's [`ServerInfo`].
    Info,
    /// Dev chain: the tip height.
    TipHeight,
    /// Dev chain: one unspent output.
    Utxo(OutPoint),
    /// Dev chain: every unspent output of a script.
    ScriptUtxos(ScriptBuf),
    /// Dev chain: broadcast a transaction.
    Broadcast(#[serde(with = "super::consensus_bytes")] Transaction),
    /// Dev chain: broadcast a parent and a child spending its anchor.
    BroadcastPackage(
        #[serde(with = "super::consensus_bytes")] Transaction,
        #[serde(with = "super::consensus_bytes")] Transaction,
    ),
    /// Dev chain: confirmations of a transaction.
    Confirmations(Txid),
    /// Dev chain: the fee rate to use.
    FeeRate,
    /// Dev chain: a confirmed output of `amount` for `script` from the regtest faucet.
    Faucet(ScriptBuf, #[serde(with = "bitcoin::amount::serde::as_sat")] Amount),
    /// Dev chain: mine blocks (at most [`MAX_MINE_PER_REQUEST`]).
    Mine(u32),
}

/// The answer to a [`SideRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SideResponse {
    /// To `Info`.
    Info(ServerInfo),
    /// A height (`TipHeight`, `Mine`).
    Height(u32),
    /// To `Utxo`.
    Utxo(Option<UtxoInfo>),
    /// To `ScriptUtxos`.
    Utxos(Vec<UtxoInfo>),
    /// To `Broadcast`.
    Txid(Txid),
    /// To `BroadcastPackage`.
    Txids(Txid, Txid),
    /// To `Confirmations`.
    Confirmations(Option<u32>),
    /// To `FeeRate`, in sat per 1,000 weight units.
    FeeRate(u64),
    /// To `Faucet`.
    Funded(OutPoint),
    /// The request failed (a rejected transaction, a disabled dev endpoint, ...).
    Error(Reason),
}

impl SideResponse {
    /// The fee rate of a `FeeRate` answer.
    pub fn fee_rate(&self) -> Option<FeeRate> {
        match self {
            SideResponse::FeeRate(kwu) => Some(FeeRate::from_sat_per_kwu(*kwu)),
            _ => None,
        }
    }
}
