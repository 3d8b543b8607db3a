//! Participant storage: the wallet seed, key counter, deposits, signed exit paths, history
//! and a few named settings,
//! behind one trait with a SQLite backend (the default, one file) and an in-memory one.
//!
//! Both backends pass the same contract suite (`contract.rs`). Nothing here knows about
//! sockets or the session engine: the driver calls the store after the engine hands it
//! something worth keeping. The exit paths are what lets a participant leave on its own if
//! the coordinator disappears, so [`ParticipantStore::store_exit_paths`] is durable before it
//! returns.

use bitcoin::{Amount, OutPoint, Transaction, TxOut, Txid};
use serde::{Deserialize, Serialize};

#[cfg(test)]
pub(crate) mod contract;
pub mod memory;
pub mod sqlite;

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;

/// Most history events one read returns, whatever limit the caller asks for.
pub const MAX_HISTORY_READ: usize = 1_000;

pub(crate) use cohort_common::store::check_int;
pub use cohort_common::store::{StoreError, MAX_STORED_INT};

/// Where a deposit stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DepositStatus {
    /// Confirmed and not yet offered to a round.
    Unspent,
    /// Registered in a round that has not produced a batch for it yet.
    Registered {
        /// The round.
        round: u64,
    },
    /// Offered to the funding transaction of one or more batch attempts, each with its
    /// exit paths stored, and not seen spent on the chain yet. The driver records this
    /// once the paths are stored and before any deposit signature goes out, so after a
    /// crash in between it may not have been signed at all: it means "may have been
    /// signed into". Only one attempt can confirm; until one does, the deposit can still
    /// be reclaimed or offered again.
    InBatch {
        /// Every funding transaction it was signed into, oldest first (at least one).
        funding_txids: Vec<Txid>,
    },
    /// Spent on the chain by the funding transaction of a batch it was signed into.
    Batched {
        /// That funding transaction.
        funding_txid: Txid,
    },
    /// Spent by something else (another wallet, a conflicting batch).
    Spent,
    /// Taken back through the deposit's timeout path.
    Reclaimed {
        /// The reclaim transaction.
        txid: Txid,
    },
    /// Signed into one or more cooperative withdrawals (each a replacement of the one
    /// before, at a higher fee), none confirmed yet. The coordinator puts it in no round
    /// again; until a withdrawal confirms it can still be reclaimed.
    Withdrawing {
        /// Every withdrawal it was signed into, oldest first (at least one).
        txids: Vec<Txid>,
    },
    /// Spent on the chain by one of its cooperative withdrawals.
    Withdrawn {
        /// That withdrawal.
        txid: Txid,
    },
}

/// A deposit output this wallet controls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositRecord {
    /// Where it is.
    pub outpoint: OutPoint,
    /// What it holds.
    pub txout: TxOut,
    /// The derivation index of the participant key in its script.
    pub key_index: u32,
    /// The relative timelock of its reclaim path, in blocks.
    pub deposit_csv: u16,
    /// Where it stands.
    pub status: DepositStatus,
}

/// Everything needed to take one leaf out of a batch tree without the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitPathRecord {
    /// The batch's funding transaction, which the path's root spends.
    pub funding_txid: Txid,
    /// The round that made the batch.
    pub round: u64,
    /// The batch's index in its round.
    pub batch: u32,
    /// The leaf's index in the batch (unique per funding transaction).
    pub leaf: u32,
    /// The output this participant owns at the end of the path.
    pub leaf_output: TxOut,
    /// The tree node holding that output.
    pub node: u32,
    /// The output index of `leaf_output` in that node.
    pub vout: u32,
    /// The fully signed transactions from the root to the node, root first.
    pub path: Vec<Transaction>,
    /// The key index of the leaf's key, if the leaf pays one of our keys.
    pub leaf_key_index: Option<u32>,
    /// The leaf output's relative timelock, if it has a timeout path.
    pub exit_csv: Option<u16>,
}

/// A cooperative withdrawal this wallet signed, fully signed, kept to publish it again
/// and to replace it at a higher fee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithdrawalRecord {
    /// The signed transaction (each input a deposit of this wallet).
    pub tx: Transaction,
    /// When it was signed, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// The CPFP child this wallet last published for a tree node of one of its exit paths,
/// kept so that a child that does not confirm can be replaced at a higher rate (it is
/// written before the child is broadcast).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitChildRecord {
    /// The tree node it pays for (spending the node's anchor).
    pub node_txid: Txid,
    /// The signed child: input 0 the node's anchor, input 1 the fee wallet's output,
    /// output 0 the change back to the fee wallet.
    pub child: Transaction,
    /// The value of the fee wallet's output it spends.
    pub fee_input_value: Amount,
    /// The chain's tip height when it was published.
    pub height: u32,
}

impl ExitChildRecord {
    /// What the child pays for itself and its node (the fee input less the change).
    pub fn fee(&self) -> Option<Amount> {
        let change = self.child.output.first()?.value;
        self.fee_input_value.checked_sub(change)
    }

    /// Refuses a record that is not a CPFP child as the exit tool builds one: two
    /// inputs (the node's anchor first), one output, a fee input worth at least the
    /// change and within the store's integer range.
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        check_int("exit child fee input", self.fee_input_value.to_sat())?;
        let shaped = self.child.input.len() == 2
            && self.child.output.len() == 1
            && self.child.input[0].previous_output.txid == self.node_txid;
        if !shaped || self.fee().is_none() {
            return Err(StoreError::Invalid("not a CPFP child of its node"));
        }
        Ok(())
    }
}

/// Something that happened, for the user to read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEvent {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The round it belongs to, if any.
    pub round: Option<u64>,
    /// A short machine-readable kind (`registered`, `batch_signed`, `exit_broadcast`, ...).
    pub kind: String,
    /// Free text.
    pub detail: String,
}

/// A participant's persistent state. Every method takes `&self` and is safe to call from
/// several threads; each call is atomic.
pub trait ParticipantStore: Send + Sync {
    /// Stores the wallet seed. Fails with [`StoreError::SeedExists`] if one is stored,
    /// whatever its value.
    fn init_seed(&self, seed: [u8; 32]) -> Result<(), StoreError>;

    /// The wallet seed, if [`ParticipantStore::init_seed`] was called.
    fn seed(&self) -> Result<Option<[u8; 32]>, StoreError>;

    /// Hands out the next key derivation index, starting at 0. An index is never handed
    /// out twice, also across restarts.
    fn next_key_index(&self) -> Result<u32, StoreError>;

    /// Inserts a deposit, or replaces the one at the same outpoint.
    fn put_deposit(&self, deposit: &DepositRecord) -> Result<(), StoreError>;

    /// The deposit at `outpoint`, if stored.
    fn deposit(&self, outpoint: &OutPoint) -> Result<Option<DepositRecord>, StoreError>;

    /// Every deposit, ordered by outpoint (txid bytes, then vout).
    fn deposits(&self) -> Result<Vec<DepositRecord>, StoreError>;

    /// Changes a stored deposit's status; [`StoreError::NotFound`] if there is none.
    fn set_deposit_status(
        &self,
        outpoint: &OutPoint,
        status: &DepositStatus,
    ) -> Result<(), StoreError>;

    /// Stores all of a batch's exit paths at once: either all are stored or none, and they
    /// are on disk when this returns. A path already stored under the same
    /// `(funding_txid, leaf)` is replaced and keeps its exited mark.
    fn store_exit_paths(&self, paths: &[ExitPathRecord]) -> Result<(), StoreError>;

    /// Every stored exit path, exited or not, ordered by `(funding_txid, leaf)`.
    fn exit_paths(&self) -> Result<Vec<ExitPathRecord>, StoreError>;

    /// The exit paths not marked exited, ordered by `(funding_txid, leaf)`: what a watcher
    /// still has to guard.
    fn pending_exit_paths(&self) -> Result<Vec<ExitPathRecord>, StoreError>;

    /// The exit path of one leaf, if stored.
    fn exit_path(
        &self,
        funding_txid: &Txid,
        leaf: u32,
    ) -> Result<Option<ExitPathRecord>, StoreError>;

    /// Marks a leaf as exited (its output has been claimed); [`StoreError::NotFound`] if
    /// no such path is stored.
    fn mark_exited(&self, funding_txid: &Txid, leaf: u32) -> Result<(), StoreError>;

    /// Whether a leaf is marked exited; [`StoreError::NotFound`] if no such path is stored.
    fn is_exited(&self, funding_txid: &Txid, leaf: u32) -> Result<bool, StoreError>;

    /// Appends a history event.
    fn append_history(&self, event: &HistoryEvent) -> Result<(), StoreError>;

    /// The newest `min(limit, MAX_HISTORY_READ)` events, newest first.
    fn history(&self, limit: usize) -> Result<Vec<HistoryEvent>, StoreError>;

    /// Sets a small named setting (the wallet's coordinator, ...), replacing any value.
    fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError>;

    /// A setting's value, if set.
    fn setting(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Stores a signed withdrawal before it is published; the same transaction again
    /// keeps the first record.
    fn put_withdrawal(&self, withdrawal: &WithdrawalRecord) -> Result<(), StoreError>;

    /// Every stored withdrawal, oldest first.
    fn withdrawals(&self) -> Result<Vec<WithdrawalRecord>, StoreError>;

    /// Stores the CPFP child published for a tree node, replacing the node's previous one.
    fn put_exit_child(&self, record: &ExitChildRecord) -> Result<(), StoreError>;

    /// The CPFP child last published for a tree node, if any.
    fn exit_child(&self, node_txid: &Txid) -> Result<Option<ExitChildRecord>, StoreError>;
}
