//! Whole rounds through the real engines on the in-memory network: happy paths,
//! several batches, and every fault kind in every phase.

// Helpers outside #[test] functions are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::Cell;
use std::sync::Arc;

use bitcoin::{OutPoint, Txid};
use cohort_common::chain::Chain;
use cohort_coordinator::timeline::Outcome;
use cohort_participant::driver::DriverError;
use cohort_participant::store::{
    DepositRecord, DepositStatus, ExitChildRecord, ExitPathRecord, HistoryEvent, MemoryStore,
    ParticipantStore, StoreError, WithdrawalRecord,
};
use cohort_sim::memnet::{Fault, FaultKind, FaultPhase};
use cohort_sim::round::{
    round_timeline, run_round, run_round_with, user_store, RoundConfig, RoundOutcome,
};

fn round(users: usize, seed: u64) -> RoundConfig {
    RoundConfig { seed, ..RoundConfig::new(users) }
}

/// Every honest user completed, every batch confirmed, and the sampled exits ran.
fn assert_all_honest_completed(outcome: &RoundOutcome) {
    let r = &outcome.report;
    let honest = outcome.faulty.iter().filter(|f| !**f).count();
    assert_eq!(r.completed, honest, "{r}");
    assert!(r.batches.iter().all(|b| b.funding_txid.is_some()), "{r}");
    for (i, peer) in outcome.net.peers.iter().enumerate() {
        if !outcome.faulty[i] {
            let txid = peer.finalized.expect("honest participant finalized");
            assert!(peer.confirmed, "participant {i} saw its batch confirm");
            assert!(peer.has_paths(&txid), "participant {i} stored its exit paths");
        }
    }
}

/// The round's timeline counts the batches, attempts and exclusions the report counts.
fn assert_timeline_agrees(outcome: &RoundOutcome) {
    let r = &outcome.report;
    let timeline = round_timeline(&outcome.net.events).expect("a round in the event log");
    assert!(timeline.complete && timeline.finished.is_some(), "{r}");
    assert_eq!(timeline.excluded(), r.excluded, "{r}");
    let attempts: Vec<u32> = timeline.batches.values().map(|b| b.attempts).collect();
    assert_eq!(attempts, r.batches.iter().map(|b| b.attempts).collect::<Vec<_>>(), "{r}");
    let confirmed = timeline.count(|o| matches!(o, Outcome::Confirmed { .. }));
    assert_eq!(confirmed, r.batches.len(), "{r}");
    for b in timeline.batches.values() {
        assert_eq!(b.aborts.len() as u32, b.attempts - 1, "one abort per retry: {r}");
        assert!(b.spans.iter().all(|s| s.end.is_some()), "every phase ended: {r}");
    }
    let svg = timeline.svg();
    assert_eq!(svg.matches("class=\"batch\"").count(), r.batches.len());
}

#[test]
fn happy_path_for_one_two_and_fifty_users() {
    for (users, seed) in [(1, 1), (2, 2), (50, 3)] {
        let outcome = run_round(&round(users, seed)).expect("round");
        assert_all_honest_completed(&outcome);
        let r = &outcome.report;
        assert_eq!(r.batches.len(), 1);
        assert_eq!(r.batches[0].attempts, 1);
        assert_eq!(r.excluded, 0);
        assert_eq!(r.exits.len(), users.min(3), "exits executed on the ledger");
        // Two outputs (batch + coordinator) beat one output per leaf from three leaves on.
        if users >= 3 {
            assert!(r.chain.funding_vbytes < r.chain.own_outputs_vbytes, "{r}");
        }
        assert!(r.chain.nodes >= 1 && r.chain.depth >= 1, "{r}");
    }
}

#[test]
fn a_small_weight_limit_forces_several_batches() {
    let mut config = round(30, 4);
    // Room for 9 deposit inputs per funding transaction.
    config.max_batch_weight = 34 * 4 + 8 + 2 * 172 + 9 * 230;
    let outcome = run_round(&config).expect("round");
    assert_all_honest_completed(&outcome);
    let r = &outcome.report;
    assert!(r.batches.len() >= 3, "{r}");
    assert!(r.batches.iter().all(|b| b.inputs <= 9));
    assert_eq!(r.batches.iter().map(|b| b.inputs).sum::<usize>(), 30);
    // Every funding transaction is different and confirmed on the ledger.
    assert_eq!(outcome.net.broadcast.len(), r.batches.len());
}

#[test]
fn every_fault_kind_in_every_phase_excludes_and_bans_only_the_culprits() {
    let kinds = [FaultKind::Drop, FaultKind::InvalidSig, FaultKind::Timeout];
    let phases = [FaultPhase::Tree, FaultPhase::Deposit];
    for (k, kind) in kinds.into_iter().enumerate() {
        for (p, phase) in phases.into_iter().enumerate() {
            let mut config = round(24, 10 + (k * 2 + p) as u64);
            config.faults = 0.15;
            config.fault = Some(Fault { kind, phase });
            let outcome = run_round(&config).expect("round");
            let r = &outcome.report;
            let culprits = outcome.faulty.iter().filter(|f| **f).count();
            assert!(culprits > 0, "{kind:?}/{phase:?}: the seed gives at least one culprit");
            assert_all_honest_completed(&outcome);
            assert!(r.batches.iter().all(|b| b.attempts <= 2), "{kind:?}/{phase:?}: {r}");
            assert_eq!(r.excluded, culprits, "{kind:?}/{phase:?}: only culprits excluded");
            assert_timeline_agrees(&outcome);
            let now = outcome.net.instant();
            for (user, faulty) in outcome.users.iter().zip(&outcome.faulty) {
                assert_eq!(
                    outcome.net.coordinator.is_banned(&user.outpoint, now),
                    *faulty,
                    "{kind:?}/{phase:?}: bans hit exactly the culprits"
                );
            }
            // No culprit's deposit was spent.
            for (user, faulty) in outcome.users.iter().zip(&outcome.faulty) {
                if *faulty {
                    let spent = outcome
                        .net
                        .broadcast
                        .values()
                        .any(|tx| tx.input.iter().any(|i| i.previous_output == user.outpoint));
                    assert!(!spent, "{kind:?}/{phase:?}: a culprit's deposit stays put");
                }
            }
        }
    }
}

#[test]
fn lost_messages_cost_their_senders_only() {
    let mut config = round(30, 21);
    config.loss = 0.01;
    let outcome = run_round(&config).expect("round");
    let r = &outcome.report;
    // Each lost message knocks out at most its participant (excluded, or never
    // registered); everyone else completes, and the run's safety check (no deposit
    // spent without its owner's stored exit paths) held.
    assert!(r.lost_messages > 0, "{r}");
    assert!(r.completed + r.lost_messages as usize >= 30, "{r}");
    assert!(r.completed + r.excluded <= 30, "{r}");
}

#[test]
fn a_participant_leaving_after_its_deposit_signatures_does_not_stop_the_batch() {
    let mut config = round(20, 31);
    config.faults = 0.2;
    config.fault = Some(Fault { kind: FaultKind::LeaveAfter, phase: FaultPhase::Deposit });
    let outcome = run_round(&config).expect("round");
    let r = &outcome.report;
    assert!(r.faulty > 0, "{r}");
    assert_eq!(r.excluded, 0, "{r}");
    assert_eq!(r.batches.len(), 1);
    assert_eq!(r.batches[0].attempts, 1, "{r}");
    assert_eq!(r.batches[0].inputs, 20, "the leavers' deposits are in: they signed after storing");
    for (i, peer) in outcome.net.peers.iter().enumerate() {
        let funding = outcome.net.broadcast.keys().next().expect("a funding tx");
        assert!(peer.has_paths(funding), "participant {i} holds its exit paths");
    }
}

#[test]
fn export_writes_every_batch_of_an_engine_round() {
    let dir = std::env::temp_dir().join(format!("cohort-round-export-{}", std::process::id()));
    let mut config = round(12, 41);
    config.export = Some(dir.clone());
    let outcome = run_round(&config).expect("round");
    let text = std::fs::read_to_string(dir.join("batch.json")).expect("batch.json");
    assert_eq!(std::fs::read_to_string(dir.join("batch-0.json")).expect("batch-0.json"), text);
    let json: serde_json::Value = serde_json::from_str(&text).expect("json");
    let r = &outcome.report;
    assert_eq!(json["nodes"].as_array().map(Vec::len), Some(r.chain.nodes));
    assert_eq!(json["leaves"].as_array().map(Vec::len), Some(r.batches[0].leaves));
    assert_eq!(json["funding"]["prevouts"].as_array().map(Vec::len), Some(12));
    std::fs::remove_dir_all(dir).ok();
}

/// A participant store whose exit-path writes fail (a full disk); the rest is in memory.
struct FullDisk(Arc<MemoryStore>);

impl ParticipantStore for FullDisk {
    fn init_seed(&self, seed: [u8; 32]) -> Result<(), StoreError> {
        self.0.init_seed(seed)
    }
    fn seed(&self) -> Result<Option<[u8; 32]>, StoreError> {
        self.0.seed()
    }
    fn next_key_index(&self) -> Result<u32, StoreError> {
        self.0.next_key_index()
    }
    fn put_deposit(&self, deposit: &DepositRecord) -> Result<(), StoreError> {
        self.0.put_deposit(deposit)
    }
    fn deposit(&self, outpoint: &OutPoint) -> Result<Option<DepositRecord>, StoreError> {
        self.0.deposit(outpoint)
    }
    fn deposits(&self) -> Result<Vec<DepositRecord>, StoreError> {
        self.0.deposits()
    }
    fn set_deposit_status(&self, o: &OutPoint, s: &DepositStatus) -> Result<(), StoreError> {
        self.0.set_deposit_status(o, s)
    }
    fn store_exit_paths(&self, _paths: &[ExitPathRecord]) -> Result<(), StoreError> {
        Err(StoreError::Io {
            path: "exit paths".into(),
            source: std::io::Error::other("no space left on device"),
        })
    }
    fn exit_paths(&self) -> Result<Vec<ExitPathRecord>, StoreError> {
        self.0.exit_paths()
    }
    fn pending_exit_paths(&self) -> Result<Vec<ExitPathRecord>, StoreError> {
        self.0.pending_exit_paths()
    }
    fn exit_path(&self, t: &Txid, leaf: u32) -> Result<Option<ExitPathRecord>, StoreError> {
        self.0.exit_path(t, leaf)
    }
    fn mark_exited(&self, t: &Txid, leaf: u32) -> Result<(), StoreError> {
        self.0.mark_exited(t, leaf)
    }
    fn is_exited(&self, t: &Txid, leaf: u32) -> Result<bool, StoreError> {
        self.0.is_exited(t, leaf)
    }
    fn append_history(&self, event: &HistoryEvent) -> Result<(), StoreError> {
        self.0.append_history(event)
    }
    fn history(&self, limit: usize) -> Result<Vec<HistoryEvent>, StoreError> {
        self.0.history(limit)
    }
    fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.0.set_setting(key, value)
    }
    fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.0.setting(key)
    }
    fn put_withdrawal(&self, w: &WithdrawalRecord) -> Result<(), StoreError> {
        self.0.put_withdrawal(w)
    }
    fn withdrawals(&self) -> Result<Vec<WithdrawalRecord>, StoreError> {
        self.0.withdrawals()
    }
    fn put_exit_child(&self, c: &ExitChildRecord) -> Result<(), StoreError> {
        self.0.put_exit_child(c)
    }
    fn exit_child(&self, node: &bitcoin::Txid) -> Result<Option<ExitChildRecord>, StoreError> {
        self.0.exit_child(node)
    }
}

#[test]
fn a_participant_that_cannot_store_its_exit_paths_never_signs_its_deposit() {
    let config = round(8, 51);
    let made = Cell::new(0usize);
    let outcome = run_round_with(&config, &|user| {
        made.set(made.get() + 1);
        let memory = user_store(user)?;
        Ok(if made.get() == 1 { Arc::new(FullDisk(memory)) } else { memory })
    })
    .expect("round");
    let r = &outcome.report;
    let broken = &outcome.net.peers[0];
    // The same driver `cohort join` runs stopped on the failed write, before signing.
    assert!(matches!(broken.error, Some(DriverError::Store(StoreError::Io { .. }))), "{r}");
    assert!(broken.store.exit_paths().unwrap().is_empty());
    let deposit = broken.store.deposit(&outcome.users[0].outpoint).unwrap().unwrap();
    assert!(matches!(deposit.status, DepositStatus::Registered { .. }), "{deposit:?}");
    assert!(outcome.net.ledger.utxo(&outcome.users[0].outpoint).unwrap().is_some());
    // Everyone else completed without it; their drivers recorded the round.
    assert_eq!(r.completed, 7, "{r}");
    let kinds: Vec<String> =
        outcome.net.peers[1].store.history(20).unwrap().into_iter().map(|h| h.kind).collect();
    for want in ["registered", "exit_paths_stored", "deposits_signed", "finalized", "confirmed"] {
        assert!(kinds.iter().any(|k| k == want), "missing {want} in {kinds:?}");
    }
}
