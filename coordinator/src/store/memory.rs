//! In-memory coordinator store: the same behaviour as the SQLite one, gone at exit.
//! For tests and simulations.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bitcoin::{OutPoint, Transaction};

use super::{
    check_int, check_withdrawal, BanRecord, BatchRecord, BatchStatus, CoordinatorStore,
    RegistrationRecord, RegistrationStatus, RoundRecord, RoundState, StoreError, WithdrawalRecord,
    MAX_ROUNDS_READ,
};

/// A coordinator store held in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

/// A batch attempt and its signed tree, if stored.
type Attempt = (BatchRecord, Option<Vec<Transaction>>);

#[derive(Debug, Default)]
struct Inner {
    rounds: BTreeMap<u64, RoundRecord>,
    registrations: BTreeMap<(u64, u64), RegistrationRecord>,
    /// Each attempt with its signed tree, if stored.
    batches: BTreeMap<(u64, u32, u32), Attempt>,
    bans: BTreeMap<OutPoint, BanRecord>,
    /// By txid, each with its insertion number (oldest first).
    withdrawals: BTreeMap<bitcoin::Txid, (u64, WithdrawalRecord)>,
    next_withdrawal: u64,
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

fn no_round(round: u64) -> StoreError {
    StoreError::NotFound { what: format!("round {round}") }
}

fn no_batch(round: u64, batch: u32, attempt: u32) -> StoreError {
    StoreError::NotFound { what: format!("batch {batch} attempt {attempt} of round {round}") }
}

impl CoordinatorStore for MemoryStore {
    fn put_round(&self, round: &RoundRecord) -> Result<(), StoreError> {
        check_int("round", round.round)?;
        check_int("round start", round.started_at_ms)?;
        self.lock().rounds.insert(round.round, round.clone());
        Ok(())
    }

    fn set_round_state(&self, round: u64, state: RoundState) -> Result<(), StoreError> {
        check_int("round", round)?;
        self.lock().rounds.get_mut(&round).ok_or_else(|| no_round(round))?.state = state;
        Ok(())
    }

    fn round(&self, round: u64) -> Result<Option<RoundRecord>, StoreError> {
        check_int("round", round)?;
        Ok(self.lock().rounds.get(&round).cloned())
    }

    fn recent_rounds(&self, limit: usize) -> Result<Vec<RoundRecord>, StoreError> {
        let n = limit.min(MAX_ROUNDS_READ);
        Ok(self.lock().rounds.values().rev().take(n).cloned().collect())
    }

    fn latest_round(&self) -> Result<Option<RoundRecord>, StoreError> {
        Ok(self.lock().rounds.values().next_back().cloned())
    }

    fn put_registration(&self, r: &RegistrationRecord) -> Result<(), StoreError> {
        check_int("round", r.round)?;
        check_int("registration", r.registration)?;
        let mut inner = self.lock();
        if !inner.rounds.contains_key(&r.round) {
            return Err(no_round(r.round));
        }
        inner.registrations.insert((r.round, r.registration), r.clone());
        Ok(())
    }

    fn set_registration_status(
        &self,
        round: u64,
        registration: u64,
        status: RegistrationStatus,
    ) -> Result<(), StoreError> {
        check_int("round", round)?;
        check_int("registration", registration)?;
        let mut inner = self.lock();
        let r = inner.registrations.get_mut(&(round, registration)).ok_or_else(|| {
            StoreError::NotFound { what: format!("registration {registration} of round {round}") }
        })?;
        r.status = status;
        Ok(())
    }

    fn registration(
        &self,
        round: u64,
        registration: u64,
    ) -> Result<Option<RegistrationRecord>, StoreError> {
        check_int("round", round)?;
        check_int("registration", registration)?;
        Ok(self.lock().registrations.get(&(round, registration)).cloned())
    }

    fn registrations_of_round(&self, round: u64) -> Result<Vec<RegistrationRecord>, StoreError> {
        check_int("round", round)?;
        let inner = self.lock();
        Ok(inner
            .registrations
            .range((round, 0)..=(round, u64::MAX))
            .map(|(_, r)| r.clone())
            .collect())
    }

    fn registration_counts(
        &self,
        round: u64,
    ) -> Result<Vec<(RegistrationStatus, usize)>, StoreError> {
        check_int("round", round)?;
        let mut counts: Vec<(RegistrationStatus, usize)> = Vec::new();
        for (_, r) in self.lock().registrations.range((round, 0)..=(round, u64::MAX)) {
            match counts.iter_mut().find(|(s, _)| *s == r.status) {
                Some((_, n)) => *n += 1,
                None => counts.push((r.status, 1)),
            }
        }
        Ok(counts)
    }

    fn put_batch(&self, b: &BatchRecord) -> Result<(), StoreError> {
        check_int("round", b.round)?;
        let mut inner = self.lock();
        if !inner.rounds.contains_key(&b.round) {
            return Err(no_round(b.round));
        }
        let key = (b.round, b.batch, b.attempt);
        let tree = inner.batches.remove(&key).and_then(|(_, tree)| tree);
        inner.batches.insert(key, (b.clone(), tree));
        Ok(())
    }

    fn set_batch_status(
        &self,
        round: u64,
        batch: u32,
        attempt: u32,
        status: &BatchStatus,
    ) -> Result<(), StoreError> {
        check_int("round", round)?;
        let mut inner = self.lock();
        let (b, _) = inner
            .batches
            .get_mut(&(round, batch, attempt))
            .ok_or_else(|| no_batch(round, batch, attempt))?;
        b.status = status.clone();
        Ok(())
    }

    fn batches_of_round(&self, round: u64) -> Result<Vec<BatchRecord>, StoreError> {
        check_int("round", round)?;
        let inner = self.lock();
        let range = (round, 0, 0)..=(round, u32::MAX, u32::MAX);
        Ok(inner.batches.range(range).map(|(_, (b, _))| b.clone()).collect())
    }

    fn unfinished_batches(&self) -> Result<Vec<BatchRecord>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .batches
            .values()
            .filter(|(b, _)| !b.status.is_finished())
            .map(|(b, _)| b.clone())
            .collect())
    }

    fn put_signed_tree(
        &self,
        round: u64,
        batch: u32,
        attempt: u32,
        nodes: &[Transaction],
    ) -> Result<(), StoreError> {
        check_int("round", round)?;
        let mut inner = self.lock();
        let (_, tree) = inner
            .batches
            .get_mut(&(round, batch, attempt))
            .ok_or_else(|| no_batch(round, batch, attempt))?;
        *tree = Some(nodes.to_vec());
        Ok(())
    }

    fn signed_tree(&self, round: u64, batch: u32) -> Result<Option<Vec<Transaction>>, StoreError> {
        check_int("round", round)?;
        let inner = self.lock();
        Ok(inner
            .batches
            .range((round, batch, 0)..=(round, batch, u32::MAX))
            .rev()
            .find_map(|(_, (_, tree))| tree.clone()))
    }

    fn ban(
        &self,
        outpoint: &OutPoint,
        until_ms: u64,
        offences: u32,
        reason: &str,
    ) -> Result<(), StoreError> {
        check_int("ban end", until_ms)?;
        let mut inner = self.lock();
        let record = inner.bans.entry(*outpoint).or_insert_with(|| BanRecord {
            outpoint: *outpoint,
            until_ms,
            offences,
            reason: reason.into(),
        });
        if until_ms > record.until_ms {
            record.until_ms = until_ms;
            record.reason = reason.into();
        }
        record.offences = record.offences.max(offences);
        Ok(())
    }

    fn is_banned(&self, outpoint: &OutPoint, now_ms: u64) -> Result<bool, StoreError> {
        check_int("time", now_ms)?;
        Ok(self.lock().bans.get(outpoint).is_some_and(|b| now_ms < b.until_ms))
    }

    fn bans(&self, now_ms: u64) -> Result<Vec<BanRecord>, StoreError> {
        check_int("time", now_ms)?;
        Ok(self.lock().bans.values().filter(|b| now_ms < b.until_ms).cloned().collect())
    }

    fn lift_ban(&self, outpoint: &OutPoint, now_ms: u64, reason: &str) -> Result<bool, StoreError> {
        check_int("time", now_ms)?;
        match self.lock().bans.get_mut(outpoint) {
            Some(ban) if now_ms < ban.until_ms => {
                ban.until_ms = now_ms;
                ban.reason = reason.into();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn purge_expired_bans(&self, now_ms: u64) -> Result<usize, StoreError> {
        check_int("time", now_ms)?;
        let mut inner = self.lock();
        let before = inner.bans.len();
        inner.bans.retain(|_, b| now_ms < b.until_ms);
        Ok(before - inner.bans.len())
    }

    fn put_withdrawal(&self, withdrawal: &WithdrawalRecord) -> Result<(), StoreError> {
        check_withdrawal(withdrawal)?;
        let mut inner = self.lock();
        let number = inner.next_withdrawal;
        inner.next_withdrawal += 1;
        let txid = withdrawal.tx.compute_txid();
        let first = inner.withdrawals.get(&txid).map_or(number, |(n, _)| *n);
        inner.withdrawals.insert(txid, (first, withdrawal.clone()));
        Ok(())
    }

    fn withdrawals(&self) -> Result<Vec<WithdrawalRecord>, StoreError> {
        let inner = self.lock();
        let mut all: Vec<_> = inner.withdrawals.values().cloned().collect();
        all.sort_by_key(|(n, w)| (w.at_ms, *n));
        Ok(all.into_iter().map(|(_, w)| w).collect())
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
