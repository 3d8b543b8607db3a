//! What the service records in the [`CoordinatorStore`]: the engine's events as rounds,
//! registrations, batch attempts, signed trees and bans, and the recovery a restarted
//! coordinator runs before its first round.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cohort_common::codec;

use crate::engine::{Coordinator, Event};
use crate::store::{
    BatchRecord, BatchStatus, CoordinatorStore, RegistrationRecord, RegistrationStatus,
    RoundRecord, RoundState, StoreError,
};

/// Why a restarted coordinator gives up the batches it found unfinished.
pub const RESTART_REASON: &str = "coordinator restarted";

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// What recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Batch attempts marked aborted, as `(round, batch, attempt)`.
    pub aborted: Vec<(u64, u32, u32)>,
    /// Batch attempts whose complete funding transaction was stored and maybe broadcast
    /// ([`BatchStatus::is_committed`]): never aborted, broadcast again until the chain
    /// knows them, watched until they confirm.
    pub rebroadcast: Vec<BatchRecord>,
    /// The round numbering continues after this one.
    pub last_round: Option<u64>,
    /// Bans restored into the engine.
    pub bans: usize,
    /// Deposits with a co-signed withdrawal restored into the engine (kept out of rounds).
    pub withdrawing: usize,
}

/// Prepares a fresh engine from the store: aborts the unfinished batch attempts that
/// never had a complete funding transaction (nothing of theirs can be on the network),
/// hands back the ones that did ([`Recovery::rebroadcast`]: their deposits may already
/// be spent), continues the round numbering, and restores the bans in force and the deposits
/// with a co-signed withdrawal.
pub fn recover(
    store: &dyn CoordinatorStore,
    engine: &mut Coordinator,
    now: Instant,
) -> Result<Recovery, StoreError> {
    let mut recovery = Recovery::default();
    for b in store.unfinished_batches()? {
        if b.status.is_committed() {
            recovery.rebroadcast.push(b);
            continue;
        }
        let status = BatchStatus::Aborted { reason: RESTART_REASON.to_owned() };
        store.set_batch_status(b.round, b.batch, b.attempt, &status)?;
        recovery.aborted.push((b.round, b.batch, b.attempt));
    }
    if let Some(latest) = store.latest_round()? {
        if !matches!(latest.state, RoundState::Finished | RoundState::Aborted) {
            store.set_round_state(latest.round, RoundState::Aborted)?;
        }
        engine.set_next_round(latest.round.saturating_add(1));
        recovery.last_round = Some(latest.round);
    }
    let now_ms = now_ms();
    // Every stored ban, expired ones too: their offence counts make the next ban longer.
    for ban in store.bans(0)? {
        let left = Duration::from_millis(ban.until_ms.saturating_sub(now_ms));
        engine.restore_ban(ban.outpoint, now + left, ban.offences);
        if ban.until_ms > now_ms {
            recovery.bans += 1;
        }
    }
    for w in store.withdrawals()? {
        let before = engine.withdrawals();
        engine.restore_withdrawal(w.deposits());
        recovery.withdrawing += engine.withdrawals() - before;
    }
    Ok(recovery)
}

/// Records engine events in the store. Every event carries what its record needs, so
/// the persister keeps no state of its own.
pub struct Persister {
    store: Arc<dyn CoordinatorStore>,
}

impl std::fmt::Debug for Persister {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persister").finish_non_exhaustive()
    }
}

impl Persister {
    /// Records into `store`.
    pub fn new(store: Arc<dyn CoordinatorStore>) -> Self {
        Persister { store }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn CoordinatorStore> {
        &self.store
    }

    /// Records one event. For [`Event::PersistBatch`] the driver must hand the result
    /// to the engine (`batch_persisted`): the broadcast waits for it.
    pub fn record(&self, now: Instant, event: &Event) -> Result<(), StoreError> {
        let s = &self.store;
        match event {
            Event::RoundStarted { round, params } => s.put_round(&RoundRecord {
                round: *round,
                params: codec::encode(params.as_ref()).unwrap_or_default(),
                started_at_ms: now_ms(),
                state: RoundState::Registering,
            }),
            Event::Registered { round, registration, deposits, request } => {
                s.put_registration(&RegistrationRecord {
                    round: *round,
                    registration: *registration,
                    body: codec::encode(request.as_ref()).unwrap_or_default(),
                    deposits: deposits.clone(),
                    status: RegistrationStatus::Accepted,
                })
            }
            Event::Refused { .. } | Event::ChainUnavailable { .. } | Event::Broadcast { .. } => {
                Ok(())
            }
            Event::RegistrationClosed { round, .. } => {
                s.set_round_state(*round, RoundState::Signing)
            }
            Event::Proposed { round, batch, attempt, funding_tx, members } => {
                s.put_batch(&BatchRecord {
                    round: *round,
                    batch: *batch,
                    attempt: *attempt,
                    funding_tx: funding_tx.as_ref().clone(),
                    status: BatchStatus::Signing,
                })?;
                self.set_statuses(*round, members, RegistrationStatus::InBatch(*batch))
            }
            Event::TreeSigned { round, batch, attempt, .. } => {
                s.set_batch_status(*round, *batch, *attempt, &BatchStatus::TreeSigned)
            }
            Event::PersistBatch { round, batch, attempt, funding_tx, nodes, .. } => {
                // The complete funding tx and the signed tree first, the status that
                // commits the attempt last: a kill between these writes leaves an attempt
                // that is not committed (aborted at restart, never broadcast), never a
                // committed one without its tree.
                s.put_batch(&BatchRecord {
                    round: *round,
                    batch: *batch,
                    attempt: *attempt,
                    funding_tx: funding_tx.as_ref().clone(),
                    status: BatchStatus::TreeSigned,
                })?;
                s.put_signed_tree(*round, *batch, *attempt, nodes)?;
                s.set_batch_status(*round, *batch, *attempt, &BatchStatus::Broadcasting)
            }
            Event::Excluded { round, registration, .. } => {
                s.set_registration_status(*round, *registration, RegistrationStatus::Excluded)
            }
            Event::AttemptAborted { round, batch, attempt, reason } => {
                self.abort_attempt(*round, *batch, *attempt, &format!("{reason:?}"), false)
            }
            Event::Banned { outpoint, until, offences } => {
                let left = until.saturating_duration_since(now).as_millis() as u64;
                s.ban(outpoint, now_ms().saturating_add(left), *offences, "excluded from a batch")
            }
            Event::BatchFailed { .. } => Ok(()),
            Event::BatchFinalized { round, batch, attempts, txid, members } => {
                // The members first, the status last: a restart resumes an attempt not
                // recorded finalized and completes its members then; one recorded
                // finalized is only watched until it confirms.
                self.set_statuses(*round, members, RegistrationStatus::Completed)?;
                let status = BatchStatus::Finalized { txid: *txid };
                s.set_batch_status(*round, *batch, *attempts, &status)
            }
            Event::BatchConfirmed { round, batch, attempt, height } => {
                let status = BatchStatus::Confirmed { height: *height };
                s.set_batch_status(*round, *batch, *attempt, &status)
            }
            Event::RoundFinished { round } => s.set_round_state(*round, RoundState::Finished),
        }
    }

    /// Records that a batch attempt found unfinished at start-up
    /// ([`Recovery::rebroadcast`]) is known to the chain as `txid`: the attempt is
    /// finalized and its members completed.
    pub fn resumed_batch_finalized(
        &self,
        batch: &BatchRecord,
        txid: bitcoin::Txid,
    ) -> Result<(), StoreError> {
        let s = &self.store;
        let members: Vec<u64> = s
            .registrations_of_round(batch.round)?
            .iter()
            .filter(|r| r.status == RegistrationStatus::InBatch(batch.batch))
            .map(|r| r.registration)
            .collect();
        // The members first, the status last (as for `BatchFinalized`): a kill between
        // them leaves the attempt to be resumed again.
        self.set_statuses(batch.round, &members, RegistrationStatus::Completed)?;
        let status = BatchStatus::Finalized { txid };
        s.set_batch_status(batch.round, batch.batch, batch.attempt, &status)
    }

    fn set_statuses(
        &self,
        round: u64,
        members: &[u64],
        status: RegistrationStatus,
    ) -> Result<(), StoreError> {
        members.iter().try_for_each(|m| self.store.set_registration_status(round, *m, status))
    }

    /// Records that the chain refused the complete funding transaction of an attempt for
    /// good (a [`Chain::broadcast`](cohort_common::chain::Chain::broadcast) rejection,
    /// not an outage): the attempt is aborted although it was
    /// [`Broadcasting`](BatchStatus::Broadcasting).
    pub fn broadcast_refused(
        &self,
        round: u64,
        batch: u32,
        attempt: u32,
        why: &str,
    ) -> Result<(), StoreError> {
        self.abort_attempt(round, batch, attempt, why, true)
    }

    /// Marks an attempt aborted unless it already finished, or unless its complete funding
    /// transaction is stored (`Broadcasting`: it may be on the network) and `refused` does
    /// not say the chain refused it.
    fn abort_attempt(
        &self,
        round: u64,
        batch: u32,
        attempt: u32,
        why: &str,
        refused: bool,
    ) -> Result<(), StoreError> {
        let keep = self.store.batches_of_round(round)?.iter().any(|b| {
            b.batch == batch
                && b.attempt == attempt
                && (b.status.is_finished()
                    || matches!(b.status, BatchStatus::Finalized { .. })
                    || (b.status == BatchStatus::Broadcasting && !refused))
        });
        if keep {
            return Ok(());
        }
        let status = BatchStatus::Aborted { reason: why.to_owned() };
        self.store.set_batch_status(round, batch, attempt, &status)
    }
}

#[cfg(test)]
mod tests {
    use bitcoin::hashes::Hash;
    use bitcoin::{Amount, OutPoint, ScriptBuf, TxIn, TxOut, Txid};
    use cohort_common::exit::p2tr_single;
    use cohort_common::keys::Keypair;

    use super::*;
    use crate::engine::CoordinatorConfig;
    use crate::store::{MemoryStore, WithdrawalRecord};

    #[test]
    fn a_restart_keeps_co_signed_withdrawals_out_of_rounds() {
        let store = MemoryStore::new();
        let deposit = OutPoint { txid: Txid::from_byte_array([4; 32]), vout: 1 };
        let tx = bitcoin::Transaction {
            version: bitcoin::transaction::Version::TWO,
            lock_time: bitcoin::absolute::LockTime::ZERO,
            input: vec![TxIn { previous_output: deposit, ..TxIn::default() }],
            output: vec![TxOut { value: Amount::from_sat(9_000), script_pubkey: ScriptBuf::new() }],
        };
        let prevout = TxOut { value: Amount::from_sat(10_000), script_pubkey: ScriptBuf::new() };
        store.put_withdrawal(&WithdrawalRecord { tx, prevouts: vec![prevout], at_ms: 1 }).unwrap();
        let key = Keypair::random();
        let config = CoordinatorConfig::new(p2tr_single(&Keypair::random()));
        let mut engine = Coordinator::new(key, config).unwrap();
        let recovery = recover(&store, &mut engine, Instant::now()).unwrap();
        assert_eq!(recovery.withdrawing, 1);
        assert!(engine.is_withdrawing(&deposit));
    }
}
