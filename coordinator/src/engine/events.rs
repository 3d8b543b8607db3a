//! What the round engine hands its driver: facts to record and requests to carry out
//! (store, broadcast). Each event carries what the store needs, so a store keeps no
//! state of its own about the round.

use std::time::Instant;

use bitcoin::{OutPoint, Transaction, Txid};
use cohort_common::messages::{AbortReason, RefusalReason, Register, RoundParams};

use super::{ChainOutage, PeerId};

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
        /// The registration as the participant sent it (what the store keeps).
        request: Box<Register>,
    },
    /// A registration was refused.
    Refused {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: RefusalReason,
    },
    /// A registration could not be checked: the chain backend is out. The participant
    /// is not refused (its session times out and it may try again).
    ChainUnavailable {
        /// The peer.
        peer: PeerId,
        /// What failed.
        error: ChainOutage,
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
        /// Its members' registrations, in batch order.
        members: Vec<u64>,
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
    /// An attempt was given up (a retry, if any, is proposed as the next attempt).
    AttemptAborted {
        /// The round.
        round: u64,
        /// The batch.
        batch: u32,
        /// The attempt given up.
        attempt: u32,
        /// Why.
        reason: AbortReason,
    },
    /// A deposit is banned until `until`.
    Banned {
        /// The deposit.
        outpoint: OutPoint,
        /// Until when.
        until: Instant,
        /// Its offences so far, this one included (each doubles the ban).
        offences: u32,
    },
    /// Store the signed tree and the complete funding transaction of this attempt,
    /// then call `batch_persisted`; nothing is broadcast before.
    PersistBatch {
        /// The round.
        round: u64,
        /// The batch.
        batch: u32,
        /// The attempt.
        attempt: u32,
        /// Its members' registrations.
        members: Vec<u64>,
        /// The complete funding transaction.
        funding_tx: Box<Transaction>,
        /// Every node transaction, signed.
        nodes: Vec<Transaction>,
    },
    /// Broadcast this (stored) funding transaction, then call `broadcast_result`.
    Broadcast {
        /// The round.
        round: u64,
        /// The batch.
        batch: u32,
        /// The attempt.
        attempt: u32,
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
        /// Its members' registrations.
        members: Vec<u64>,
    },
    /// A batch's funding transaction confirmed.
    BatchConfirmed {
        /// The round.
        round: u64,
        /// The batch.
        batch: u32,
        /// The attempt whose funding transaction confirmed.
        attempt: u32,
        /// The height.
        height: u32,
    },
    /// Every batch of the round is confirmed or failed.
    RoundFinished {
        /// The round.
        round: u64,
    },
}
