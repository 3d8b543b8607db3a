//! What the round engine hands its driver (events) and where each batch stands.

use std::time::Instant;

use bitcoin::{OutPoint, Transaction, Txid};
use cohort_common::messages::{AbortReason, RefusalReason, RoundParams};

use super::{Attempt, PeerId};

/// What the engine asks its driver to do or record.
#[derive(Debug, Clone)]
pub enum Event {
    /// A round opened registration.
    RoundStarted {
        /// The round.
        round: u64,
        /// Its parameters.
        params: Box<RoundParams>,
    },
    /// A registration was accepted.
    Registered {
        /// The round.
        round: u64,
        /// Its id.
        registration: u64,
        /// Its deposits.
        deposits: Vec<OutPoint>,
    },
    /// A registration was refused.
    Refused {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: RefusalReason,
    },
    /// Registration closed and batches were formed.
    RegistrationClosed {
        /// The round.
        round: u64,
        /// Accepted registrations.
        registrations: usize,
        /// Batches formed.
        batches: usize,
    },
    /// An attempt was built and proposed.
    Proposed {
        /// The round.
        round: u64,
        /// The batch.
        batch: u32,
        /// The attempt.
        attempt: u32,
        /// The unsigned funding transaction.
        funding_tx: Box<Transaction>,
        /// Members.
        members: usize,
    },
    /// Every node of an attempt is signed (store the tree).
    TreeSigned {
        /// The round.
        round: u64,
        /// The batch.
        batch: u32,
        /// The attempt.
        attempt: u32,
        /// Every node transaction, signed.
        nodes: Vec<Transaction>,
    },
    /// A registration was excluded from a batch.
    Excluded {
        /// The round.
        round: u64,
        /// The batch.
        batch: u32,
        /// The registration.
        registration: u64,
        /// Why.
        reason: AbortReason,
    },
    /// A deposit is banned until `until`.
    Banned {
        /// The deposit.
        outpoint: OutPoint,
        /// Until when.
        until: Instant,
    },
    /// Broadcast this funding transaction, then call `broadcast_result`.
    Broadcast {
        /// The round.
        round: u64,
        /// The batch.
        batch: u32,
        /// The complete funding transaction.
        tx: Box<Transaction>,
    },
    /// A batch failed for good (no funding transaction will be broadcast).
    BatchFailed {
        /// The round.
        round: u64,
        /// The batch.
        batch: u32,
        /// Why.
        reason: AbortReason,
    },
    /// A batch's funding transaction is broadcast.
    BatchFinalized {
        /// The round.
        round: u64,
        /// The batch.
        batch: u32,
        /// Attempts it took.
        attempts: u32,
        /// The funding txid.
        txid: Txid,
    },
    /// A batch's funding transaction confirmed.
    BatchConfirmed {
        /// The round.
        round: u64,
        /// The batch.
        batch: u32,
        /// The height.
        height: u32,
    },
    /// Every batch of the round is confirmed or failed.
    RoundFinished {
        /// The round.
        round: u64,
    },
}

/// Where a batch stands.
#[derive(Debug)]
pub enum BatchPhase {
    /// Waiting for fresh nonces from the remaining members after an abort.
    Renoncing {
        /// The attempt being prepared.
        attempt: u32,
        /// Members left.
        members: Vec<u64>,
        /// Those that have not answered yet.
        waiting: Vec<u64>,
        /// Deadline.
        deadline: Instant,
    },
    /// Collecting tree partial signatures.
    SigningTree {
        /// The attempt.
        attempt: Box<Attempt>,
        /// Deadline.
        deadline: Instant,
    },
    /// Collecting deposit partial signatures.
    SigningDeposits {
        /// The attempt.
        attempt: Box<Attempt>,
        /// Deadline.
        deadline: Instant,
    },
    /// The funding transaction is with the driver for broadcast.
    Broadcasting {
        /// The attempt.
        attempt: Box<Attempt>,
    },
    /// Broadcast; waiting for confirmation.
    Finalized {
        /// The attempt number.
        attempts: u32,
        /// Members.
        members: Vec<u64>,
        /// The funding txid.
        txid: Txid,
    },
    /// Confirmed.
    Confirmed {
        /// The funding txid.
        txid: Txid,
    },
    /// Given up.
    Failed,
}

impl BatchPhase {
    pub(super) fn is_terminal(&self) -> bool {
        matches!(self, BatchPhase::Confirmed { .. } | BatchPhase::Failed)
    }
}
