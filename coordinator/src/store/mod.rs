//! Coordinator storage: rounds, registrations, batches, signed trees and bans, behind one
//! trait with a SQLite backend (the default, one file) and an in-memory one.
//!
//! Both backends pass the same contract suite (`contract.rs`). Nothing here knows about
//! sockets or the round engine: the driver writes what the engine decided and, after a
//! restart, reads back [`CoordinatorStore::unfinished_batches`] to pick up where it was.

use bitcoin::{OutPoint, Transaction, TxOut, Txid};
use serde::{Deserialize, Serialize};

#[cfg(test)]
pub(crate) mod contract;
pub mod memory;
pub mod sqlite;

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;

/// Most rounds one [`CoordinatorStore::recent_rounds`] read returns, whatever the limit.
pub const MAX_ROUNDS_READ: usize = 1_000;

pub(crate) use cohort_common::store::{check_int, corrupt, tx_from, txid_from};
pub use cohort_common::store::{StoreError, MAX_STORED_INT};

/// Where a round stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoundState {
    /// Taking registrations.
    Registering,
    /// Batches are being signed.
    Signing,
    /// Every batch is finalized or aborted.
    Finished,
    /// The round was abandoned.
    Aborted,
}

/// One round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// The round number.
    pub round: u64,
    /// The round's parameters, encoded by the caller.
    pub params: Vec<u8>,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// Where it stands.
    pub state: RoundState,
}

/// Where a registration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistrationStatus {
    /// Accepted into the round, not yet placed.
    Accepted,
    /// Placed in this batch of the round.
    InBatch(u32),
    /// Left out (banned, misbehaved, did not fit).
    Excluded,
    /// Withdrawn by the participant.
    Cancelled,
    /// Its batch was finalized.
    Completed,
}

/// One participant's registration in a round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationRecord {
    /// The round.
    pub round: u64,
    /// The registration's id, unique within the round.
    pub registration: u64,
    /// The registration message, encoded by the caller.
    pub body: Vec<u8>,
    /// The deposits it offers, in the order given.
    pub deposits: Vec<OutPoint>,
    /// Where it stands.
    pub status: RegistrationStatus,
}

/// Where one signing attempt of a batch stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BatchStatus {
    /// Collecting nonces and signatures for the tree.
    Signing,
    /// The tree is signed; collecting deposit signatures.
    TreeSigned,
    /// The funding transaction is complete and stored with its signed tree, and may be on
    /// the network: this attempt can no longer be given up. A restarted coordinator
    /// broadcasts it again until the chain knows it.
    Broadcasting,
    /// The funding transaction is fully signed and broadcast.
    Finalized {
        /// The funding transaction's id.
        txid: Txid,
    },
    /// The funding transaction confirmed.
    Confirmed {
        /// At this height.
        height: u32,
    },
    /// The attempt was given up.
    Aborted {
        /// Why.
        reason: String,
    },
}

impl BatchStatus {
    /// Whether nothing more will happen to this attempt (confirmed or aborted); the
    /// others are what a restarted coordinator must resume (a finalized one: watch for its
    /// confirmation, broadcasting it again while the chain does not know it) or abort.
    pub fn is_finished(&self) -> bool {
        matches!(self, Self::Confirmed { .. } | Self::Aborted { .. })
    }

    /// Whether the funding transaction of this attempt is complete and may be on the
    /// network, so that the attempt can never be given up (broadcasting or finalized).
    pub fn is_committed(&self) -> bool {
        matches!(self, Self::Broadcasting | Self::Finalized { .. })
    }
}

/// One signing attempt of one batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecord {
    /// The round.
    pub round: u64,
    /// The batch's index in the round.
    pub batch: u32,
    /// The attempt number; a retry after an abort gets the next one.
    pub attempt: u32,
    /// The funding transaction (unsigned until the deposits are signed).
    pub funding_tx: Transaction,
    /// Where it stands.
    pub status: BatchStatus,
}

/// A deposit outpoint refused until a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanRecord {
    /// The banned deposit.
    pub outpoint: OutPoint,
    /// Banned while `now_ms < until_ms`.
    pub until_ms: u64,
    /// Offences of this deposit so far (each made its ban longer).
    pub offences: u32,
    /// Why.
    pub reason: String,
}

/// A cooperative withdrawal the coordinator co-signed: its deposits join no round again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithdrawalRecord {
    /// The transaction as co-signed (unsigned; input `i` spends deposit `i`).
    pub tx: Transaction,
    /// The outputs its inputs spend, in input order.
    pub prevouts: Vec<TxOut>,
    /// When it was co-signed, in Unix milliseconds.
    pub at_ms: u64,
}

/// What both backends refuse to store: prevouts that do not match the inputs, a time
/// out of range.
pub(crate) fn check_withdrawal(w: &WithdrawalRecord) -> Result<(), StoreError> {
    if w.prevouts.len() != w.tx.input.len() {
        return Err(StoreError::Invalid("a withdrawal's prevouts do not match its inputs"));
    }
    check_int("withdrawal time", w.at_ms)?;
    Ok(())
}

impl WithdrawalRecord {
    /// Its deposits and what they hold, in input order.
    pub fn deposits(&self) -> impl Iterator<Item = (OutPoint, TxOut)> + '_ {
        self.tx.input.iter().map(|i| i.previous_output).zip(self.prevouts.iter().cloned())
    }
}

/// A coordinator's persistent state. Every method takes `&self` and is safe to call from
/// several threads; each call is atomic. Every `u64` argument must be at most
/// [`MAX_STORED_INT`], else [`StoreError::OutOfRange`].
pub trait CoordinatorStore: Send + Sync {
    /// Inserts a round, or replaces the one with the same number (its registrations and
    /// batches stay).
    fn put_round(&self, round: &RoundRecord) -> Result<(), StoreError>;

    /// Changes a round's state; [`StoreError::NotFound`] if there is no such round.
    fn set_round_state(&self, round: u64, state: RoundState) -> Result<(), StoreError>;

    /// One round, if stored.
    fn round(&self, round: u64) -> Result<Option<RoundRecord>, StoreError>;

    /// The `min(limit, MAX_ROUNDS_READ)` highest-numbered rounds, highest first.
    fn recent_rounds(&self, limit: usize) -> Result<Vec<RoundRecord>, StoreError>;

    /// The highest-numbered round, if any.
    fn latest_round(&self) -> Result<Option<RoundRecord>, StoreError>;

    /// Inserts a registration, or replaces the one with the same `(round, registration)`;
    /// [`StoreError::NotFound`] if its round is not stored.
    fn put_registration(&self, registration: &RegistrationRecord) -> Result<(), StoreError>;

    /// Changes a registration's status; [`StoreError::NotFound`] if there is none.
    fn set_registration_status(
        &self,
        round: u64,
        registration: u64,
        status: RegistrationStatus,
    ) -> Result<(), StoreError>;

    /// One registration, if stored.
    fn registration(
        &self,
        round: u64,
        registration: u64,
    ) -> Result<Option<RegistrationRecord>, StoreError>;

    /// A round's registrations, by id.
    fn registrations_of_round(&self, round: u64) -> Result<Vec<RegistrationRecord>, StoreError>;

    /// How many of a round's registrations have each status (statuses with none left
    /// out), without reading the registrations themselves.
    fn registration_counts(
        &self,
        round: u64,
    ) -> Result<Vec<(RegistrationStatus, usize)>, StoreError>;

    /// Inserts a batch attempt, or replaces the one with the same `(round, batch, attempt)`
    /// (keeping its signed tree); [`StoreError::NotFound`] if its round is not stored.
    fn put_batch(&self, batch: &BatchRecord) -> Result<(), StoreError>;

    /// Changes a batch attempt's status; [`StoreError::NotFound`] if there is none.
    fn set_batch_status(
        &self,
        round: u64,
        batch: u32,
        attempt: u32,
        status: &BatchStatus,
    ) -> Result<(), StoreError>;

    /// A round's batch attempts, by `(batch, attempt)`.
    fn batches_of_round(&self, round: u64) -> Result<Vec<BatchRecord>, StoreError>;

    /// Every batch attempt not [finished](BatchStatus::is_finished), by
    /// `(round, batch, attempt)`.
    fn unfinished_batches(&self) -> Result<Vec<BatchRecord>, StoreError>;

    /// Stores the fully signed tree of a batch attempt, all nodes or none, replacing any
    /// earlier tree of that attempt; [`StoreError::NotFound`] if the attempt is not stored.
    fn put_signed_tree(
        &self,
        round: u64,
        batch: u32,
        attempt: u32,
        nodes: &[Transaction],
    ) -> Result<(), StoreError>;

    /// The signed tree of the highest attempt of a batch that has one, nodes in the order
    /// stored.
    fn signed_tree(&self, round: u64, batch: u32) -> Result<Option<Vec<Transaction>>, StoreError>;

    /// Bans a deposit until `until_ms` after `offences` offences. An existing longer ban,
    /// or a higher count, is kept: bans only grow.
    fn ban(
        &self,
        outpoint: &OutPoint,
        until_ms: u64,
        offences: u32,
        reason: &str,
    ) -> Result<(), StoreError>;

    /// Whether a deposit is banned at `now_ms`.
    fn is_banned(&self, outpoint: &OutPoint, now_ms: u64) -> Result<bool, StoreError>;

    /// The bans in force at `now_ms`, by outpoint (`bans(0)`: every stored ban, expired
    /// ones included, with their offence counts).
    fn bans(&self, now_ms: u64) -> Result<Vec<BanRecord>, StoreError>;

    /// Lifts a deposit's ban at `now_ms` (an operator's decision): it ends now, its
    /// offence count stays, and `reason` says who lifted it. Whether it was in force.
    fn lift_ban(&self, outpoint: &OutPoint, now_ms: u64, reason: &str) -> Result<bool, StoreError>;

    /// Deletes the bans expired at `now_ms`; returns how many.
    fn purge_expired_bans(&self, now_ms: u64) -> Result<usize, StoreError>;

    /// Records a co-signed withdrawal (durable before it returns: the co-signature is
    /// sent only after); the same transaction again replaces its record.
    fn put_withdrawal(&self, withdrawal: &WithdrawalRecord) -> Result<(), StoreError>;

    /// Every co-signed withdrawal, oldest first.
    fn withdrawals(&self) -> Result<Vec<WithdrawalRecord>, StoreError>;
}
