//! In-memory participant store: the same behaviour as the SQLite one, gone at exit.
//! For tests and simulations.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bitcoin::{OutPoint, Txid};

use super::{
    check_int, DepositRecord, DepositStatus, ExitChildRecord, ExitPathRecord, HistoryEvent,
    ParticipantStore, StoreError, WithdrawalRecord, MAX_HISTORY_READ,
};

/// A participant store held in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    seed: Option<[u8; 32]>,
    next_key_index: u32,
    deposits: BTreeMap<OutPoint, DepositRecord>,
    /// Keyed like the SQLite primary key; the flag is the exited mark.
    exit_paths: BTreeMap<(Txid, u32), (ExitPathRecord, bool)>,
    history: Vec<HistoryEvent>,
    settings: BTreeMap<String, String>,
    withdrawals: Vec<WithdrawalRecord>,
    exit_children: BTreeMap<Txid, ExitChildRecord>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update below is a single insert or assignment, so a panic elsewhere
        // cannot leave the state half-written.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn check_deposit(d: &DepositRecord) -> Result<(), StoreError> {
    check_int("deposit amount", d.txout.value.to_sat())?;
    check_status(&d.status)
}

/// What SQLite's encoding refuses: a round above the storable maximum, a batch status
/// without a funding txid.
fn check_status(status: &DepositStatus) -> Result<(), StoreError> {
    match status {
        DepositStatus::Registered { round } => check_int("deposit round", *round).map(drop),
        DepositStatus::InBatch { funding_txids } if funding_txids.is_empty() => {
            Err(StoreError::Invalid("a deposit in a batch with no funding txid"))
        }
        DepositStatus::Withdrawing { txids } if txids.is_empty() => {
            Err(StoreError::Invalid("a withdrawing deposit with no withdrawal"))
        }
        _ => Ok(()),
    }
}

fn no_path(funding_txid: &Txid, leaf: u32) -> StoreError {
    StoreError::NotFound { what: format!("exit path of leaf {leaf} in batch {funding_txid}") }
}

impl ParticipantStore for MemoryStore {
    fn init_seed(&self, seed: [u8; 32]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.seed.is_some() {
            return Err(StoreError::SeedExists);
        }
        inner.seed = Some(seed);
        Ok(())
    }

    fn seed(&self) -> Result<Option<[u8; 32]>, StoreError> {
        Ok(self.lock().seed)
    }

    fn next_key_index(&self) -> Result<u32, StoreError> {
        let mut inner = self.lock();
        let index = inner.next_key_index;
        inner.next_key_index = index.checked_add(1).ok_or(StoreError::KeyIndexExhausted(index))?;
        Ok(index)
    }

    fn put_deposit(&self, deposit: &DepositRecord) -> Result<(), StoreError> {
        check_deposit(deposit)?;
        self.lock().deposits.insert(deposit.outpoint, deposit.clone());
        Ok(())
    }

    fn deposit(&self, outpoint: &OutPoint) -> Result<Option<DepositRecord>, StoreError> {
        Ok(self.lock().deposits.get(outpoint).cloned())
    }

    fn deposits(&self) -> Result<Vec<DepositRecord>, StoreError> {
        Ok(self.lock().deposits.values().cloned().collect())
    }

    fn set_deposit_status(
        &self,
        outpoint: &OutPoint,
        status: &DepositStatus,
    ) -> Result<(), StoreError> {
        check_status(status)?;
        let mut inner = self.lock();
        let deposit = inner
            .deposits
            .get_mut(outpoint)
            .ok_or_else(|| StoreError::NotFound { what: format!("deposit {outpoint}") })?;
        deposit.status = status.clone();
        Ok(())
    }

    fn store_exit_paths(&self, paths: &[ExitPathRecord]) -> Result<(), StoreError> {
        // Validate everything first so a bad record stores nothing, as in SQLite.
        for p in paths {
            check_int("exit path round", p.round)?;
            check_int("leaf amount", p.leaf_output.value.to_sat())?;
        }
        let mut inner = self.lock();
        for p in paths {
            let exited = inner.exit_paths.get(&(p.funding_txid, p.leaf)).is_some_and(|e| e.1);
            inner.exit_paths.insert((p.funding_txid, p.leaf), (p.clone(), exited));
        }
        Ok(())
    }

    fn exit_paths(&self) -> Result<Vec<ExitPathRecord>, StoreError> {
        Ok(self.lock().exit_paths.values().map(|(p, _)| p.clone()).collect())
    }

    fn pending_exit_paths(&self) -> Result<Vec<ExitPathRecord>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .exit_paths
            .values()
            .filter(|(_, exited)| !exited)
            .map(|(p, _)| p.clone())
            .collect())
    }

    fn exit_path(
        &self,
        funding_txid: &Txid,
        leaf: u32,
    ) -> Result<Option<ExitPathRecord>, StoreError> {
        Ok(self.lock().exit_paths.get(&(*funding_txid, leaf)).map(|(p, _)| p.clone()))
    }

    fn mark_exited(&self, funding_txid: &Txid, leaf: u32) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let entry = inner
            .exit_paths
            .get_mut(&(*funding_txid, leaf))
            .ok_or_else(|| no_path(funding_txid, leaf))?;
        entry.1 = true;
        Ok(())
    }

    fn is_exited(&self, funding_txid: &Txid, leaf: u32) -> Result<bool, StoreError> {
        let inner = self.lock();
        let entry = inner
            .exit_paths
            .get(&(*funding_txid, leaf))
            .ok_or_else(|| no_path(funding_txid, leaf))?;
        Ok(entry.1)
    }

    fn append_history(&self, event: &HistoryEvent) -> Result<(), StoreError> {
        check_int("history time", event.at_ms)?;
        if let Some(round) = event.round {
            check_int("history round", round)?;
        }
        self.lock().history.push(event.clone());
        Ok(())
    }

    fn history(&self, limit: usize) -> Result<Vec<HistoryEvent>, StoreError> {
        let n = limit.min(MAX_HISTORY_READ);
        Ok(self.lock().history.iter().rev().take(n).cloned().collect())
    }

    fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.lock().settings.insert(key.to_owned(), value.to_owned());
        Ok(())
    }

    fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.lock().settings.get(key).cloned())
    }

    fn put_withdrawal(&self, withdrawal: &WithdrawalRecord) -> Result<(), StoreError> {
        check_int("withdrawal time", withdrawal.at_ms)?;
        let mut inner = self.lock();
        let txid = withdrawal.tx.compute_txid();
        if !inner.withdrawals.iter().any(|w| w.tx.compute_txid() == txid) {
            inner.withdrawals.push(withdrawal.clone());
        }
        Ok(())
    }

    fn withdrawals(&self) -> Result<Vec<WithdrawalRecord>, StoreError> {
        Ok(self.lock().withdrawals.clone())
    }

    fn put_exit_child(&self, record: &ExitChildRecord) -> Result<(), StoreError> {
        record.check()?;
        self.lock().exit_children.insert(record.node_txid, record.clone());
        Ok(())
    }

    fn exit_child(&self, node_txid: &Txid) -> Result<Option<ExitChildRecord>, StoreError> {
        Ok(self.lock().exit_children.get(node_txid).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract() {
        super::super::contract::run_all(MemoryStore::new);
    }
}
