//! Messages of a batch's signing phases: proposal, signatures, outcome, abort and renonce.

use std::fmt;

use bitcoin::secp256k1::schnorr;
use bitcoin::{Transaction, TxOut, Txid};
use musig2::secp::Point;
use musig2::{AggNonce, PartialSignature, PubNonce};
use serde::{Deserialize, Serialize};

use super::Reason;
use crate::codec::Encoded;
use crate::params::TreeParams;

pub use crate::tree::TreeLeaf;

/// The part of a proposal that is the same for every participant of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalBody {
    /// Round number.
    pub round: u64,
    /// Batch number within the round.
    pub batch: u32,
    /// Attempt number of the batch.
    pub attempt: u32,
    /// The unsigned funding transaction; its output 0 is the tree's root.
    #[serde(with = "super::consensus_bytes")]
    pub funding_tx: Transaction,
    /// The outputs the funding transaction's inputs spend, in input order (for sighashes).
    #[serde(with = "super::consensus_bytes")]
    pub funding_prevouts: Vec<TxOut>,
    /// Every leaf of the tree, in order.
    pub leaves: Vec<TreeLeaf>,
    /// The coordinator's fresh per-batch key `C_b`.
    pub batch_key: Point,
    /// Shape of the tree.
    pub tree: TreeParams,
}

/// The aggregated nonce of one tree node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeNonce {
    /// Node index in the tree.
    pub node: u32,
    /// Sum of the public nonces of every signer of the node.
    pub nonce: AggNonce,
}

/// A batch to sign, for one participant (phase 3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The shared body, encoded once per batch.
    pub body: Encoded<ProposalBody>,
    /// Indices in `body.leaves` of this participant's leaves, in registration order
    /// (the remainder last).
    pub your_leaves: Vec<u32>,
    /// The aggregated nonce of every node on this participant's paths.
    pub node_nonces: Vec<NodeNonce>,
    /// The funding transaction's input index of each of its deposits, in registration order.
    pub deposit_inputs: Vec<u32>,
    /// The coordinator's public nonce for each of its deposits, in registration order.
    pub coordinator_deposit_nonces: Vec<PubNonce>,
}

/// One partial signature of a node, by the cosigner key of one leaf under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePartial {
    /// Node index in the tree.
    pub node: u32,
    /// Index of the signing leaf in the batch.
    pub leaf: u32,
    /// The partial signature.
    pub psig: PartialSignature,
}

/// Partial signatures of every node on the participant's paths, per own leaf (phase 4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeSigs {
    /// Batch number.
    pub batch: u32,
    /// Attempt number.
    pub attempt: u32,
    /// The partial signatures.
    pub sigs: Vec<NodePartial>,
}

/// The final signature of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSignature {
    /// Node index in the tree.
    pub node: u32,
    /// BIP-340 signature of the node's transaction under the node key.
    pub sig: schnorr::Signature,
}

/// Final signatures of every node on the participant's paths (phase 5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTree {
    /// Batch number.
    pub batch: u32,
    /// Attempt number.
    pub attempt: u32,
    /// The signatures.
    pub sigs: Vec<NodeSignature>,
}

/// One partial signature of a deposit input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositPartial {
    /// Input index in the funding transaction.
    pub input: u32,
    /// The participant's partial signature.
    pub psig: PartialSignature,
}

/// Partial signatures of the participant's deposit inputs (phase 6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositSigs {
    /// Batch number.
    pub batch: u32,
    /// Attempt number.
    pub attempt: u32,
    /// The partial signatures.
    pub sigs: Vec<DepositPartial>,
}

/// The funding transaction was broadcast (phase 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finalized {
    /// Batch number.
    pub batch: u32,
    /// The funding transaction's id.
    pub txid: Txid,
}

/// The funding transaction confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmed {
    /// Batch number.
    pub batch: u32,
    /// Height of the block that holds it.
    pub height: u32,
}

/// Why an attempt was aborted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AbortReason {
    /// A participant missed a phase deadline.
    Timeout,
    /// A participant sent an invalid partial signature.
    InvalidPartialSignature,
    /// A participant sent a malformed or unexpected message.
    InvalidMessage,
    /// A participant cancelled or disconnected.
    Cancelled,
    /// The batch ran out of attempts; it is dropped.
    MaxAttempts,
    /// The coordinator is shutting down.
    Shutdown,
    /// Anything else.
    Other(Reason),
    /// The chain refused the funding transaction, or the coordinator could not hand it to
    /// the chain; the batch is dropped. Every deposit signature already given stays valid
    /// for that transaction, so its exit paths must be kept. Last, so that adding it kept
    /// every earlier variant's wire index.
    BroadcastFailed(Reason),
}

impl AbortReason {
    /// Whether the batch is over for every member (no later attempt follows).
    pub fn drops_batch(&self) -> bool {
        matches!(
            self,
            AbortReason::MaxAttempts | AbortReason::Shutdown | AbortReason::BroadcastFailed(_)
        )
    }
}

impl fmt::Display for AbortReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AbortReason::Timeout => f.write_str("a participant missed the deadline"),
            AbortReason::InvalidPartialSignature => {
                f.write_str("a participant sent an invalid partial signature")
            }
            AbortReason::InvalidMessage => f.write_str("a participant sent an invalid message"),
            AbortReason::Cancelled => f.write_str("a participant left the batch"),
            AbortReason::MaxAttempts => f.write_str("the batch ran out of attempts"),
            AbortReason::Shutdown => f.write_str("the coordinator is shutting down"),
            AbortReason::Other(reason) => write!(f, "{reason}"),
            AbortReason::BroadcastFailed(reason) => write!(f, "broadcast failed: {reason}"),
        }
    }
}

/// The attempt failed; nothing was broadcast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Abort {
    /// Batch number.
    pub batch: u32,
    /// The failed attempt.
    pub attempt: u32,
    /// Why.
    pub reason: AbortReason,
    /// Registrations excluded from the next attempt (the culprits).
    pub excluded: Vec<u64>,
}

/// Asks for fresh cosigner keys and nonces for the next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NonceRequest {
    /// Batch number.
    pub batch: u32,
    /// The next attempt.
    pub attempt: u32,
}

/// A fresh cosigner key and its nonces for one leaf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafNonces {
    /// The leaf's fresh cosigner key.
    pub cosigner: Point,
    /// One public nonce per tree level, root first (`max_depth` of them).
    pub nonces: Vec<PubNonce>,
}

/// Fresh keys and nonces for the next attempt, answering a [`NonceRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renonce {
    /// Batch number.
    pub batch: u32,
    /// The attempt the nonces are for.
    pub attempt: u32,
    /// One entry per registered leaf, in registration order, the remainder last.
    pub leaves: Vec<LeafNonces>,
    /// One fresh public nonce per deposit, in registration order.
    pub deposit_nonces: Vec<PubNonce>,
}

/// The participant leaves its batch (only before phase 6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancel {
    /// Why.
    pub reason: Reason,
}
