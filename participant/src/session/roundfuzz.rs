//! The round fuzzer: a byte string read as a schedule of faults (drop, duplicate,
//! reorder, delay, tampered or forged coordinator messages, crash and restart of the
//! coordinator engine or of a participant) applied to a whole round of the real engines
//! of the test kit, then run to quiescence; afterwards every invariant of a safe round
//! is asserted (see [`Fuzz::check`]). In the manner of LDK's `chanmon_consistency`.
//!
//! Every participant is honest (a crashed one too: it keeps what it stored and loses
//! only its memory); the coordinator and the network are the adversary. The engine
//! itself runs honestly, so what a malicious coordinator could send is modelled by the
//! tamper and forge steps on its messages.
//!
//! Shared, like the test kit, by path: `participant/tests/round_fuzz.rs` and the
//! cargo-fuzz target `fuzz/fuzz_targets/round.rs` include it next to `testkit.rs`, in a
//! module that also holds the session's public names (it uses them through `super::`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::hashes::Hash;
use bitcoin::secp256k1::schnorr;
use bitcoin::{Amount, FeeRate, OutPoint, Transaction, TxOut, Txid};
use cohort_common::chain::Chain;
use cohort_common::codec::Encoded;
use cohort_common::consensus::verify_tx;
use cohort_common::exit::reclaim_tx;
use cohort_common::messages::{
    Abort, AbortReason, Confirmed, Finalized, NonceRequest, ProposalBody, ToCoordinator,
    ToParticipant,
};
use cohort_coordinator::engine::{Coordinator, Event as EngineEvent, Inbound};
use cohort_coordinator::service::{recover, Persister};
use cohort_coordinator::store::{BatchRecord, MemoryStore};
use rand::SeedableRng;

use super::testkit::Kit;
use super::{Event, ExitPath, PhaseName, Randomness, Session, BODY_DECODE_LIMIT};

/// At most this many steps are read from one input.
pub const MAX_STEPS: usize = 512;
/// Quiescence gives up after this many passes (each either moves messages or time).
const MAX_PASSES: usize = 400;

/// Reads the schedule: every read past the end gives 0, so any bytes are a schedule.
struct Bytes<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at = self.at.saturating_add(1);
        b
    }

    fn done(&self) -> bool {
        self.at >= self.data.len()
    }
}

/// Exit paths one participant stored ("on disk"): they survive its crashes.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Which session of this participant asked for them (a restart starts a new one).
    pub generation: u32,
    pub round: u64,
    pub batch: u32,
    pub attempt: u32,
    /// The unsigned funding transaction the paths spend.
    pub funding_tx: Transaction,
    pub paths: Vec<ExitPath>,
}

/// What the harness keeps per participant besides the kit's [`super::testkit::Party`].
#[derive(Debug, Default)]
struct Wallet {
    generation: u32,
    /// Persist requests of the current session not yet stored.
    pending: VecDeque<Stored>,
    disk: Vec<Stored>,
    crashed: u32,
}

/// What one schedule did, for the callers' statistics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub participants: usize,
    pub steps: usize,
    /// Participants whose deposit went into a confirmed funding tx (exits published).
    pub exited: usize,
    /// Participants whose deposit is still theirs (reclaim checked).
    pub reclaimable: usize,
    /// Deposit signatures sent, over all participants.
    pub deposit_sigs: usize,
    /// The participants that sent deposit signatures at least once.
    pub signers: Vec<usize>,
    pub coordinator_crashes: u32,
    pub participant_crashes: u32,
    pub tampered: usize,
}

/// One schedule over the real engines. Engine messages in flight to participants are the
/// kit's `held` queues; participant messages in flight to the engine their `outbox`es.
pub struct Fuzz {
    pub kit: Kit,
    store: Arc<MemoryStore>,
    persister: Persister,
    engine_seed: u64,
    wallets: Vec<Wallet>,
    /// Funding transactions the engine asked to broadcast, not yet broadcast.
    broadcasts: Vec<(u32, Transaction)>,
    /// Stored complete funding transactions a restarted engine handed back.
    rebroadcast: Vec<BatchRecord>,
    /// Every transaction the harness put on the ledger.
    on_ledger: Vec<Transaction>,
    outcome: Outcome,
}

impl Fuzz {
    /// Runs the schedule in `data` and checks every invariant (panics if one breaks).
    pub fn run(data: &[u8]) -> Outcome {
        let mut bytes = Bytes { data, at: 0 };
        let mut fuzz = Fuzz::start(&mut bytes);
        while !bytes.done() && fuzz.outcome.steps < MAX_STEPS {
            fuzz.step(&mut bytes);
            fuzz.outcome.steps += 1;
        }
        fuzz.quiesce();
        fuzz.check();
        fuzz.outcome
    }

    /// The round as the first bytes choose it: 2..=6 participants, seeded keys and
    /// secrets, registration done (without faults), proposals in flight.
    fn start(bytes: &mut Bytes<'_>) -> Fuzz {
        let n = 2 + usize::from(bytes.byte() % 5);
        let seed = u64::from(bytes.byte());
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut kit = Kit::from_rng(n, None, &mut rng);
        for (i, p) in kit.parties.iter_mut().enumerate() {
            p.session = fresh_session(p, seed, i, 0);
        }
        kit.register_all();
        let store = Arc::new(MemoryStore::new());
        let persister = Persister::new(store.clone());
        let now = kit.now;
        for event in &kit.engine_events {
            // The memory store takes every record the engine's events make.
            let _ = persister.record(now, event);
        }
        let mut fuzz = Fuzz {
            kit,
            store,
            persister,
            engine_seed: seed,
            wallets: (0..n).map(|_| Wallet::default()).collect(),
            broadcasts: Vec::new(),
            rebroadcast: Vec::new(),
            on_ledger: Vec::new(),
            outcome: Outcome { participants: n, ..Outcome::default() },
        };
        for i in 0..n {
            fuzz.collect(i);
        }
        fuzz
    }

    fn n(&self) -> usize {
        self.kit.parties.len()
    }

    /// One step of the schedule: a step code ([`op`]), a party, and the code's arguments.
    fn step(&mut self, b: &mut Bytes<'_>) {
        let code = b.byte() % op::CODES;
        let i = usize::from(b.byte()) % self.n();
        match code {
            op::TO_PARTY..op::TO_ENGINE => self.engine_to_party(i, 0, Fault::None),
            op::TO_ENGINE..op::DROP_TO_PARTY => self.party_to_engine(i, 0, Fault::None),
            op::DROP_TO_PARTY => self.engine_to_party(i, 0, Fault::Drop),
            op::DROP_TO_ENGINE => self.party_to_engine(i, 0, Fault::Drop),
            op::DUP_TO_PARTY => self.engine_to_party(i, 0, Fault::Duplicate),
            op::DUP_TO_ENGINE => self.party_to_engine(i, 0, Fault::Duplicate),
            op::REORDER_TO_PARTY => self.engine_to_party(i, usize::from(b.byte()), Fault::None),
            op::REORDER_TO_ENGINE => self.party_to_engine(i, usize::from(b.byte()), Fault::None),
            op::TAMPER..op::FORGE => {
                let (sel, val) = (b.byte(), b.byte());
                self.engine_to_party(i, 0, Fault::Tamper(sel, val));
            }
            op::FORGE => {
                let (sel, val) = (b.byte(), b.byte());
                self.forge(i, sel, val);
            }
            op::DELAY => self.advance(Duration::from_millis(u64::from(b.byte()) * 50)),
            op::STORE => self.store_paths(i),
            op::CHAIN => self.chain(),
            _ => match b.byte() % 4 {
                op::CRASH_ENGINE => self.crash_engine(),
                op::CRASH_PARTY => self.crash_party(i),
                op::NEW_ROUND => self.new_round(),
                _ => self.rejoin(i),
            },
        }
    }

    /// Delivers (or drops, or delivers twice, or tampers) the `k`-th engine message in
    /// flight to party `i` (modulo the queue length).
    fn engine_to_party(&mut self, i: usize, k: usize, fault: Fault) {
        let len = self.kit.held[i].len();
        if len == 0 {
            return;
        }
        let Some(mut msg) = self.kit.held[i].remove(k % len) else { return };
        match fault {
            Fault::Drop => return,
            Fault::Duplicate => self.kit.held[i].push_front(msg.clone()),
            Fault::Tamper(sel, val) => {
                if tamper(&mut msg, sel, val, &self.kit) {
                    self.outcome.tampered += 1;
                }
            }
            Fault::None => {}
        }
        self.deliver(i, msg);
    }

    /// Hands party `i`'s `k`-th message in flight to the engine (or drops it, or
    /// hands it twice).
    fn party_to_engine(&mut self, i: usize, k: usize, fault: Fault) {
        let outbox = &mut self.kit.parties[i].outbox;
        if outbox.is_empty() {
            return;
        }
        let at = k % outbox.len();
        let Some(msg) = outbox.remove(at) else { return };
        match fault {
            Fault::Drop => return,
            Fault::Duplicate => outbox.push_front(msg.clone()),
            Fault::None | Fault::Tamper(..) => {}
        }
        let Some(engine) = self.kit.engine.as_mut() else { return };
        let input = Inbound::resolve(msg, &self.kit.ledger, engine.max_deposits_per_registration());
        engine.handle_message(self.kit.now, i as u64, input);
        self.flush();
    }

    /// A message the coordinator never sent, for the batch party `i` is in: a
    /// `Finalized` naming some txid, a `Confirmed`, an `Abort`, a `NonceRequest`, or
    /// another party's message in flight.
    fn forge(&mut self, i: usize, sel: u8, val: u8) {
        let (batch, attempt) = self.kit.parties[i]
            .events
            .iter()
            .rev()
            .find_map(|e| match e {
                Event::PersistExitPaths { batch, attempt, .. }
                | Event::ProposalAccepted { batch, attempt } => Some((*batch, *attempt)),
                _ => None,
            })
            .unwrap_or((0, 1));
        let msg = match sel % 6 {
            0 => {
                // The txid of a funding tx in flight, stored, on the ledger, or made up.
                let txids: Vec<Txid> = self
                    .broadcasts
                    .iter()
                    .map(|(_, tx)| tx.compute_txid())
                    .chain(self.on_ledger.iter().map(Transaction::compute_txid))
                    .collect();
                let txid = txids
                    .get(usize::from(val) % txids.len().max(1))
                    .copied()
                    .unwrap_or_else(|| Txid::from_byte_array([val; 32]));
                ToParticipant::Finalized(Finalized { batch, txid })
            }
            1 => ToParticipant::Confirmed(Confirmed { batch, height: u32::from(val) }),
            2 => ToParticipant::Abort(Abort {
                batch,
                attempt,
                reason: AbortReason::Timeout,
                excluded: if val.is_multiple_of(2) {
                    Vec::new()
                } else {
                    vec![self.kit.parties[i].registration]
                },
            }),
            3 => ToParticipant::NonceRequest(NonceRequest {
                batch,
                attempt: attempt.saturating_add(u32::from(val % 3)),
            }),
            _ => {
                // Misrouted: another party's next message.
                let j = usize::from(val) % self.n();
                match self.kit.held[j].front() {
                    Some(m) => m.clone(),
                    None => return,
                }
            }
        };
        self.outcome.tampered += 1;
        self.deliver(i, msg);
    }

    /// Delivers one message to party `i`'s session and collects what it does.
    fn deliver(&mut self, i: usize, msg: ToParticipant) {
        if let ToParticipant::Registered(r) = &msg {
            if self.kit.parties[i].session.phase() == PhaseName::Registering {
                self.kit.parties[i].registration = r.registration;
            }
        }
        let now = self.kit.now;
        self.kit.parties[i].session.handle_message(now, msg);
        self.collect(i);
    }

    /// Collects party `i`'s transmits and events; checks invariant (a) on every
    /// `DepositSigs` as it leaves.
    fn collect(&mut self, i: usize) {
        while let Some(m) = self.kit.parties[i].session.poll_transmit() {
            if let ToCoordinator::DepositSigs(s) = &m {
                self.outcome.deposit_sigs += 1;
                if !self.outcome.signers.contains(&i) {
                    self.outcome.signers.push(i);
                }
                let w = &self.wallets[i];
                let stored = w.disk.iter().rev().find(|d| {
                    d.generation == w.generation && d.batch == s.batch && d.attempt == s.attempt
                });
                let Some(stored) = stored else {
                    panic!(
                        "invariant (a): party {i} sent deposit signatures for batch {} attempt {} \
                         without stored exit paths",
                        s.batch, s.attempt
                    );
                };
                if let Err(e) = verify_stored(stored, &self.kit.parties[i].config) {
                    panic!("invariant (a): party {i} signed its deposits with bad paths: {e}");
                }
            }
            let p = &mut self.kit.parties[i];
            p.sent.push(m.clone());
            p.outbox.push_back(m);
        }
        while let Some(e) = self.kit.parties[i].session.poll_event() {
            if let Event::PersistExitPaths { round, batch, attempt, funding_tx, paths } = &e {
                let w = &mut self.wallets[i];
                w.pending.push_back(Stored {
                    generation: w.generation,
                    round: *round,
                    batch: *batch,
                    attempt: *attempt,
                    funding_tx: funding_tx.clone(),
                    paths: paths.clone(),
                });
            }
            self.kit.parties[i].events.push(e);
        }
    }

    /// Party `i`'s driver stores its oldest pending paths and tells the session.
    fn store_paths(&mut self, i: usize) {
        let Some(stored) = self.wallets[i].pending.pop_front() else { return };
        let (batch, attempt) = (stored.batch, stored.attempt);
        self.wallets[i].disk.push(stored);
        let now = self.kit.now;
        self.kit.parties[i].session.exit_paths_persisted(now, batch, attempt);
        self.collect(i);
    }

    /// Moves what the engine sent into flight, records its events in its store and
    /// answers its store requests (a write always succeeds); broadcasts wait for
    /// [`Fuzz::chain`].
    fn flush(&mut self) {
        let now = self.kit.now;
        while let Some(engine) = self.kit.engine.as_mut() {
            if let Some((peer, msg)) = engine.poll_transmit() {
                if let Some(q) = self.kit.held.get_mut(peer as usize) {
                    q.push_back(msg);
                }
                continue;
            }
            let Some(event) = engine.poll_event() else { break };
            let _ = self.persister.record(now, &event);
            match &event {
                EngineEvent::PersistBatch { batch, attempt, .. } => {
                    engine.batch_persisted(now, *batch, *attempt, Ok(()));
                }
                EngineEvent::Broadcast { batch, tx, .. } => {
                    self.broadcasts.push((*batch, (**tx).clone()));
                }
                _ => {}
            }
            self.kit.engine_events.push(event);
        }
    }

    /// The chain moves: pending broadcasts go out (the engine hears the result), a
    /// block is mined, and the engine hears of every funding tx it waits for that
    /// confirmed.
    fn chain(&mut self) {
        let now = self.kit.now;
        for record in std::mem::take(&mut self.rebroadcast) {
            // Refused when it is on the ledger already, or its deposits went elsewhere;
            // the checks at the end look at what the ledger holds.
            let _ = self.put_on_ledger(&record.funding_tx);
        }
        for (batch, tx) in std::mem::take(&mut self.broadcasts) {
            let result = self.put_on_ledger(&tx);
            if let Some(engine) = self.kit.engine.as_mut() {
                engine.broadcast_result(now, batch, result);
            }
            self.flush();
        }
        let height = self.kit.ledger.mine(1);
        let waiting = self.kit.engine.as_ref().map(Coordinator::awaiting_confirmation);
        for txid in waiting.unwrap_or_default() {
            let confirmed = self.kit.ledger.confirmations(&txid).ok().flatten().unwrap_or(0);
            if let (true, Some(engine)) = (confirmed > 0, self.kit.engine.as_mut()) {
                engine.confirmed(now, txid, height);
            }
        }
        self.flush();
    }

    fn put_on_ledger(&mut self, tx: &Transaction) -> Result<Txid, String> {
        let result = self.kit.ledger.broadcast(tx).map_err(|e| e.to_string());
        if result.is_ok() {
            self.on_ledger.push(tx.clone());
        }
        result
    }

    /// Moves the clock and lets every deadline that passed fire.
    fn advance(&mut self, by: Duration) {
        self.kit.advance(by);
        self.timeouts();
    }

    fn timeouts(&mut self) {
        let now = self.kit.now;
        if let Some(engine) = self.kit.engine.as_mut() {
            if engine.poll_timeout().is_some_and(|t| t <= now) {
                engine.handle_timeout(now);
            }
        }
        self.flush();
        for i in 0..self.n() {
            let session = &mut self.kit.parties[i].session;
            if session.poll_timeout().is_some_and(|t| t <= now) {
                session.handle_timeout(now);
            }
            self.collect(i);
        }
    }

    /// The coordinator process dies: its memory, everything in flight both ways and
    /// the broadcasts it had not made yet are lost. A new engine starts from its store
    /// (the service's `recover`): stored complete funding txs are broadcast again.
    fn crash_engine(&mut self) {
        self.outcome.coordinator_crashes += 1;
        for q in &mut self.kit.held {
            q.clear();
        }
        for p in &mut self.kit.parties {
            p.outbox.clear();
        }
        self.broadcasts.clear();
        self.engine_seed = self.engine_seed.wrapping_add(1 << 32);
        let rng = Box::new(rand::rngs::StdRng::seed_from_u64(self.engine_seed));
        let config = {
            let mut c = cohort_coordinator::engine::CoordinatorConfig::from_round_params(
                &self.kit.params,
                self.kit.coordinator_script.clone(),
            );
            c.max_registrations = self.n();
            c
        };
        let Ok(mut engine) = Coordinator::with_rng(self.kit.coordinator.clone(), config, rng)
        else {
            self.kit.engine = None;
            return;
        };
        let now = self.kit.now;
        if let Ok(recovery) = recover(self.store.as_ref(), &mut engine, now) {
            self.rebroadcast.extend(recovery.rebroadcast);
        }
        for i in 0..self.n() {
            engine.peer_connected(now, i as u64);
        }
        self.kit.engine = Some(engine);
        self.flush();
    }

    /// Party `i`'s process dies: its session, what it had not stored yet and its
    /// messages in flight are lost; what it stored stays. It restarts idle (it joins a
    /// round again only when one is announced).
    fn crash_party(&mut self, i: usize) {
        self.outcome.participant_crashes += 1;
        let w = &mut self.wallets[i];
        w.crashed += 1;
        w.pending.clear();
        self.kit.held[i].clear();
        self.kit.parties[i].outbox.clear();
        if let Some(engine) = self.kit.engine.as_mut() {
            engine.peer_disconnected(self.kit.now, i as u64);
            engine.peer_connected(self.kit.now, i as u64);
        }
        self.flush();
        self.restart_session(i);
    }

    /// A participant whose session ended joins again (`cohort join`), with a new
    /// session; a session still running is left alone.
    fn rejoin(&mut self, i: usize) {
        let phase = self.kit.parties[i].session.phase();
        if matches!(phase, PhaseName::Failed | PhaseName::Refused) {
            self.restart_session(i);
        }
    }

    fn restart_session(&mut self, i: usize) {
        let w = &mut self.wallets[i];
        w.generation += 1;
        w.pending.clear();
        let p = &mut self.kit.parties[i];
        p.session = fresh_session(p, self.engine_seed, i, w.generation);
    }

    /// The engine starts its next round when none is running (after a restart, or
    /// once the round finished); idle sessions register in it.
    fn new_round(&mut self) {
        let now = self.kit.now;
        let Some(engine) = self.kit.engine.as_mut() else { return };
        if engine.current_round().is_some() && !engine.round_finished() {
            return;
        }
        engine.start_round(now);
        self.flush();
    }

    /// Runs to quiescence: every message in flight is delivered in order, every path
    /// stored, every broadcast made and mined, and time moves to the next deadline
    /// until nothing is left to do.
    fn quiesce(&mut self) {
        // Blocks mined in a row for a funding tx that does not confirm (one the ledger
        // refused): the engine learns of that from its own deadlines, not from blocks.
        let mut idle_blocks = 0;
        for _ in 0..MAX_PASSES {
            let mut moved = false;
            for i in 0..self.n() {
                while !self.kit.held[i].is_empty() {
                    self.engine_to_party(i, 0, Fault::None);
                    moved = true;
                }
                while !self.wallets[i].pending.is_empty() {
                    self.store_paths(i);
                    moved = true;
                }
                while !self.kit.parties[i].outbox.is_empty() {
                    self.party_to_engine(i, 0, Fault::None);
                    moved = true;
                }
            }
            let waiting =
                self.kit.engine.as_ref().is_some_and(|e| !e.awaiting_confirmation().is_empty());
            if !self.broadcasts.is_empty() || !self.rebroadcast.is_empty() {
                self.chain();
                idle_blocks = 0;
                moved = true;
            } else if waiting && idle_blocks < 3 {
                self.chain();
                idle_blocks += 1;
                moved = true;
            }
            if moved {
                continue;
            }
            let next = self
                .kit
                .parties
                .iter()
                .filter_map(|p| p.session.poll_timeout())
                .chain(self.kit.engine.as_ref().and_then(Coordinator::poll_timeout))
                .min();
            let Some(next) = next else { break };
            if next > self.kit.now {
                self.kit.now = next;
            }
            self.timeouts();
        }
        self.kit.ledger.mine(1);
    }

    /// The invariants, for every participant (all honest):
    ///
    /// - (a) checked as each `DepositSigs` left: paths stored before, complete and valid
    ///   under consensus rules for the funding tx they spend;
    /// - (b) a deposit that is spent was spent by a funding tx on the ledger whose txid
    ///   is that of paths the participant stored (and those paths verify);
    /// - (c) so the participant can exit: its stored paths are published on the ledger
    ///   (with CPFP children, as the wallet would) and pay its leaves; or the deposit is
    ///   unspent and its reclaim transaction verifies;
    /// - no panic anywhere.
    fn check(&mut self) {
        for i in 0..self.n() {
            let deposits = self.kit.parties[i].config.deposits.clone();
            for d in &deposits {
                let utxo = self.kit.ledger.utxo(&d.outpoint).ok().flatten();
                if utxo.is_some() {
                    let rate = FeeRate::from_sat_per_vb_u32(2);
                    let reclaim = reclaim_tx(
                        &d.script,
                        &d.key,
                        d.outpoint,
                        &d.txout,
                        self.kit.parties[i].config.remainder_script.clone(),
                        rate,
                    );
                    let ok = reclaim.map_err(|e| e.to_string()).and_then(|tx| {
                        verify_tx(&tx, std::slice::from_ref(&d.txout)).map_err(|e| e.to_string())
                    });
                    if let Err(e) = ok {
                        panic!(
                            "invariant (c): party {i}'s unspent deposit cannot be reclaimed: {e}"
                        );
                    }
                    self.outcome.reclaimable += 1;
                    continue;
                }
                self.check_spent(i, d.outpoint);
            }
        }
    }

    fn check_spent(&mut self, i: usize, deposit: OutPoint) {
        let spender = self
            .on_ledger
            .iter()
            .find(|tx| tx.input.iter().any(|txin| txin.previous_output == deposit))
            .map(Transaction::compute_txid);
        let Some(txid) = spender else {
            panic!(
                "invariant (b): party {i}'s deposit {deposit} was spent by no known transaction"
            );
        };
        let stored = self.wallets[i].disk.iter().find(|s| s.funding_tx.compute_txid() == txid);
        let Some(stored) = stored.cloned() else {
            panic!(
                "invariant (b): party {i}'s deposit was spent by {txid}, for which it stored no \
                 exit paths (it stored (round, batch, attempt, txid) {:?})",
                self.wallets[i]
                    .disk
                    .iter()
                    .map(|s| (s.round, s.batch, s.attempt, s.funding_tx.compute_txid()))
                    .collect::<Vec<_>>()
            );
        };
        if let Err(e) = verify_stored(&stored, &self.kit.parties[i].config) {
            panic!("invariant (b): party {i}'s paths for {txid} do not verify: {e}");
        }
        let confirmations = self.kit.ledger.confirmations(&txid).ok().flatten().unwrap_or(0);
        assert!(confirmations > 0, "invariant (c): funding tx {txid} never confirmed");
        self.kit.publish_paths(&stored.paths);
        self.outcome.exited += 1;
    }
}

/// The step codes of a schedule. A schedule is: a byte for the number of participants
/// (`2 + b % 5`), a byte seeding every key and secret, then steps until the input ends
/// (at most [`MAX_STEPS`]): a code byte (modulo [`op::CODES`]), a party byte (modulo the
/// number of participants), and the code's argument bytes. Missing bytes read as 0.
pub mod op {
    /// Codes are read modulo this.
    pub const CODES: u8 = 20;
    /// Deliver the party's next engine message (codes 0 to 3: the most common step).
    pub const TO_PARTY: u8 = 0;
    /// Hand the party's next message to the engine (codes 4 to 6).
    pub const TO_ENGINE: u8 = 4;
    /// Drop the party's next engine message.
    pub const DROP_TO_PARTY: u8 = 7;
    /// Drop the party's next message to the engine.
    pub const DROP_TO_ENGINE: u8 = 8;
    /// Deliver the party's next engine message and keep a copy in flight.
    pub const DUP_TO_PARTY: u8 = 9;
    /// Hand the party's next message to the engine and keep a copy in flight.
    pub const DUP_TO_ENGINE: u8 = 10;
    /// Deliver the `k`-th engine message in flight (argument `k`) out of order.
    pub const REORDER_TO_PARTY: u8 = 11;
    /// Hand the party's `k`-th message in flight (argument `k`) to the engine.
    pub const REORDER_TO_ENGINE: u8 = 12;
    /// Deliver the next engine message with one field changed (arguments: field, value;
    /// codes 13 and 14).
    pub const TAMPER: u8 = 13;
    /// Deliver a message the coordinator never sent (arguments: kind, value).
    pub const FORGE: u8 = 15;
    /// Move the clock by 50 ms times the argument and fire the deadlines passed.
    pub const DELAY: u8 = 16;
    /// The party's driver stores its oldest pending exit paths.
    pub const STORE: u8 = 17;
    /// Broadcast what the engine asked for, mine a block, report confirmations.
    pub const CHAIN: u8 = 18;
    /// A process event, chosen by the argument (modulo 4): one of the four below.
    pub const PROCESS: u8 = 19;
    /// Argument of [`PROCESS`]: the coordinator crashes and restarts from its store.
    pub const CRASH_ENGINE: u8 = 0;
    /// Argument of [`PROCESS`]: the party crashes and restarts with what it stored.
    pub const CRASH_PARTY: u8 = 1;
    /// Argument of [`PROCESS`]: the engine starts its next round if none is running.
    pub const NEW_ROUND: u8 = 2;
    /// Argument of [`PROCESS`]: the party joins again if its session ended.
    pub const REJOIN: u8 = 3;
}

/// The honest round of `n` participants step by step: proposals, tree signatures,
/// signed trees, stored paths, deposit signatures, broadcast, `Finalized`, `Confirmed`.
pub fn honest_steps(n: u8) -> Vec<Vec<u8>> {
    let each = |code: u8| (0..n).map(move |i| vec![code, i]);
    let mut steps: Vec<Vec<u8>> = Vec::new();
    steps.extend(each(op::TO_PARTY));
    steps.extend(each(op::TO_ENGINE));
    steps.extend(each(op::TO_PARTY));
    steps.extend(each(op::STORE));
    steps.extend(each(op::TO_ENGINE));
    steps.push(vec![op::CHAIN, 0]);
    steps.extend(each(op::TO_PARTY));
    steps.extend(each(op::TO_PARTY));
    steps
}

/// Named schedules the seed corpus starts from: the honest round for every size, and
/// for 3 participants every kind of fault at every step of the honest round.
pub fn seed_schedules() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for n in 2..=6u8 {
        let steps = honest_steps(n).concat();
        seeds.push((format!("honest-{n}"), [vec![n - 2, n], steps].concat()));
    }
    let n = 3u8;
    let honest = honest_steps(n);
    let faults: Vec<(String, Vec<u8>)> = vec![
        ("crash-engine".into(), vec![op::PROCESS, 0, op::CRASH_ENGINE]),
        ("crash-party".into(), vec![op::PROCESS, 1, op::CRASH_PARTY]),
        (
            "crash-engine-new-round".into(),
            vec![op::PROCESS, 0, op::CRASH_ENGINE, op::PROCESS, 0, op::NEW_ROUND],
        ),
        (
            "crash-party-rejoin".into(),
            vec![op::PROCESS, 2, op::CRASH_PARTY, op::PROCESS, 2, op::REJOIN],
        ),
        ("drop-to-party".into(), vec![op::DROP_TO_PARTY, 0]),
        ("drop-to-engine".into(), vec![op::DROP_TO_ENGINE, 1]),
        ("dup-to-party".into(), vec![op::DUP_TO_PARTY, 2]),
        ("dup-to-engine".into(), vec![op::DUP_TO_ENGINE, 0]),
        ("reorder".into(), vec![op::REORDER_TO_PARTY, 1, 1, op::REORDER_TO_ENGINE, 1, 1]),
        ("delay".into(), vec![op::DELAY, 0, 200]),
        ("forge-finalized".into(), vec![op::FORGE, 0, 0, 0]),
        ("forge-confirmed".into(), vec![op::FORGE, 0, 1, 7]),
        ("forge-abort".into(), vec![op::FORGE, 1, 2, 1]),
        ("forge-nonce-request".into(), vec![op::FORGE, 1, 3, 1]),
        ("forge-misrouted".into(), vec![op::FORGE, 2, 4, 0]),
    ];
    for (k, _) in honest.iter().enumerate().step_by(2) {
        for (name, fault) in &faults {
            let steps = [honest[..k].concat(), fault.clone(), honest[k..].concat()].concat();
            seeds.push((format!("{name}-at-{k}"), [vec![n - 2, 1], steps].concat()));
        }
    }
    // Every field the tamper step can change, in each engine message to party 0: the
    // proposal (16 body fields, then its own fields), the signed tree, `Finalized`,
    // `Confirmed`.
    let n = usize::from(n);
    let proposal = (0..16u8).map(|f| f * 8).chain(4..8);
    let messages: [(&str, usize, Vec<u8>); 4] = [
        ("proposal", 0, proposal.collect()),
        ("signed-tree", 2 * n, (0..6).collect()),
        ("finalized", 5 * n + 1, (0..2).collect()),
        ("confirmed", 6 * n + 1, (0..2).collect()),
    ];
    for (message, k, sels) in messages {
        for sel in sels {
            let tamper = vec![op::TAMPER, 0, sel, sel.wrapping_mul(37)];
            let steps = [honest[..k].concat(), tamper, honest[k + 1..].concat()].concat();
            seeds.push((format!("tamper-{message}-{sel}"), [vec![1, 1], steps].concat()));
        }
    }
    seeds
}

/// What the harness does to one message.
#[derive(Debug, Clone, Copy)]
enum Fault {
    None,
    Drop,
    Duplicate,
    Tamper(u8, u8),
}

/// A new session for party `i`, its secrets seeded from the schedule.
fn fresh_session(p: &super::testkit::Party, seed: u64, i: usize, generation: u32) -> Session {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s[8..16].copy_from_slice(&(i as u64).to_le_bytes());
    s[16..20].copy_from_slice(&generation.to_le_bytes());
    Session::with_randomness(p.config.clone(), None, Randomness::seeded(s))
}

/// Stored paths are complete (one per own leaf, the remainder last, each paying that
/// leaf) and every transaction on them is valid under consensus rules, starting from
/// output 0 of the funding tx.
fn verify_stored(stored: &Stored, config: &super::SessionConfig) -> Result<(), String> {
    let funding = &stored.funding_tx;
    let funding_txid = funding.compute_txid();
    if stored.paths.len() != config.leaves.len() + 1 {
        return Err(format!("{} paths for {} leaves", stored.paths.len(), config.leaves.len() + 1));
    }
    for (k, path) in stored.paths.iter().enumerate() {
        match config.leaves.get(k) {
            Some(leaf)
                if leaf.script_pubkey != path.leaf_output.script_pubkey
                    || leaf.amount != path.leaf_output.value =>
            {
                return Err(format!("path {k} pays {:?}, not the leaf", path.leaf_output));
            }
            None if path.leaf_output.script_pubkey != config.remainder_script => {
                return Err("the last path does not pay the remainder".into());
            }
            _ => {}
        }
        let Some(root) = path.path.first() else { return Err(format!("path {k} is empty")) };
        let spends_funding = root.input.first().map(|i| i.previous_output)
            == Some(OutPoint { txid: funding_txid, vout: 0 });
        if !spends_funding {
            return Err(format!("path {k} does not start at the funding output"));
        }
        for tx in &path.path {
            let spent: Option<Vec<TxOut>> = tx
                .input
                .iter()
                .map(|txin| {
                    let op = txin.previous_output;
                    std::iter::once(funding)
                        .chain(path.path.iter())
                        .find(|t| t.compute_txid() == op.txid)
                        .and_then(|t| t.output.get(op.vout as usize).cloned())
                })
                .collect();
            let Some(spent) = spent else { return Err(format!("path {k} spends outside itself")) };
            verify_tx(tx, &spent).map_err(|e| format!("path {k}: {e}"))?;
        }
        let last = path.path.last().and_then(|t| t.output.get(path.vout as usize));
        if last != Some(&path.leaf_output) {
            return Err(format!("path {k} does not end in its leaf output"));
        }
        if path.leaf_output.value == Amount::ZERO {
            return Err(format!("path {k} pays nothing"));
        }
    }
    Ok(())
}

/// Changes one field of an engine message, chosen by `sel`, by `val`: fields of the
/// proposal body and of the proposal, signatures of the signed tree, the txid of
/// `Finalized`, the batch or height of `Confirmed`, an `Abort`'s exclusions, a nonce
/// request's attempt. Returns whether anything changed.
fn tamper(msg: &mut ToParticipant, sel: u8, val: u8, kit: &Kit) -> bool {
    let v = usize::from(val);
    let bump = u32::from(val % 3) + 1;
    match msg {
        ToParticipant::Proposal(p) => match sel % 8 {
            0..=3 => {
                let Ok(mut body) = p.body.decode(BODY_DECODE_LIMIT) else { return false };
                if !tamper_body(&mut body, sel / 8, val, kit) {
                    return false;
                }
                match Encoded::new(&body) {
                    Ok(encoded) => p.body = encoded,
                    Err(_) => return false,
                }
            }
            4 => {
                if p.your_leaves.is_empty() {
                    return false;
                }
                let k = v % p.your_leaves.len();
                match val % 3 {
                    0 => p.your_leaves[k] = p.your_leaves[k].wrapping_add(bump),
                    1 => drop(p.your_leaves.pop()),
                    _ => p.your_leaves.push(p.your_leaves[k]),
                }
            }
            5 => {
                let len = p.node_nonces.len();
                if len == 0 {
                    return false;
                }
                match val % 3 {
                    0 if len > 1 => {
                        let a = p.node_nonces[0].nonce.clone();
                        p.node_nonces[0].nonce = p.node_nonces[len - 1].nonce.clone();
                        p.node_nonces[len - 1].nonce = a;
                    }
                    1 => drop(p.node_nonces.pop()),
                    _ => {
                        p.node_nonces[v % len].node = p.node_nonces[v % len].node.wrapping_add(bump)
                    }
                }
            }
            6 => {
                if p.deposit_inputs.is_empty() {
                    return false;
                }
                let k = v % p.deposit_inputs.len();
                p.deposit_inputs[k] = p.deposit_inputs[k].wrapping_add(bump);
            }
            _ => {
                // Another party's coordinator nonce, or none.
                let other = kit.held.iter().flatten().find_map(|m| match m {
                    ToParticipant::Proposal(q)
                        if q.coordinator_deposit_nonces != p.coordinator_deposit_nonces =>
                    {
                        q.coordinator_deposit_nonces.first().cloned()
                    }
                    _ => None,
                });
                match (other, p.coordinator_deposit_nonces.first_mut()) {
                    (Some(n), Some(slot)) if val.is_multiple_of(2) => *slot = n,
                    _ => drop(p.coordinator_deposit_nonces.pop()),
                }
            }
        },
        ToParticipant::SignedTree(t) => {
            let len = t.sigs.len();
            match sel % 6 {
                0 => t.batch = t.batch.wrapping_add(bump),
                1 => t.attempt = t.attempt.wrapping_add(bump),
                2 if len > 0 => drop(t.sigs.pop()),
                3 if len > 1 => {
                    let a = t.sigs[0].sig;
                    t.sigs[0].sig = t.sigs[len - 1].sig;
                    t.sigs[len - 1].sig = a;
                }
                4 if len > 0 => {
                    let mut raw = t.sigs[v % len].sig.serialize();
                    raw[v % 64] ^= 1 << (val % 8);
                    match schnorr::Signature::from_slice(&raw) {
                        Ok(sig) => t.sigs[v % len].sig = sig,
                        Err(_) => return false,
                    }
                }
                5 if len > 0 => t.sigs[v % len].node = t.sigs[v % len].node.wrapping_add(bump),
                _ => return false,
            }
        }
        ToParticipant::Finalized(f) => match sel % 2 {
            0 => {
                let mut raw = f.txid.to_byte_array();
                raw[v % 32] ^= 1 << (val % 8);
                f.txid = Txid::from_byte_array(raw);
            }
            _ => f.batch = f.batch.wrapping_add(bump),
        },
        ToParticipant::Confirmed(c) => match sel % 2 {
            0 => c.batch = c.batch.wrapping_add(bump),
            _ => c.height = c.height.wrapping_add(u32::from(val)),
        },
        ToParticipant::Abort(a) => match sel % 3 {
            0 => a.attempt = a.attempt.wrapping_add(bump),
            1 => a.excluded.clear(),
            _ => a.excluded.extend(kit.parties.iter().map(|p| p.registration)),
        },
        ToParticipant::NonceRequest(r) => match sel % 2 {
            0 => r.attempt = r.attempt.wrapping_add(bump),
            _ => r.batch = r.batch.wrapping_add(bump),
        },
        ToParticipant::Registered(r) => {
            r.registration = r.registration.wrapping_add(u64::from(bump))
        }
        _ => return false,
    }
    true
}

/// Changes one field of a proposal body.
fn tamper_body(body: &mut ProposalBody, sel: u8, val: u8, kit: &Kit) -> bool {
    let v = usize::from(val);
    let sats = Amount::from_sat(u64::from(val) + 1);
    let tx = &mut body.funding_tx;
    match sel % 16 {
        0 => body.round = body.round.wrapping_add(1),
        1 => body.batch = body.batch.wrapping_add(1),
        2 => body.attempt = body.attempt.wrapping_add(1),
        3 => tx.version = bitcoin::transaction::Version(i32::from(val)),
        4 => tx.lock_time = bitcoin::absolute::LockTime::from_consensus(u32::from(val) + 1),
        5 if !tx.input.is_empty() => {
            let k = v % tx.input.len();
            tx.input[k].sequence = bitcoin::Sequence(u32::from(val));
        }
        6 if !tx.input.is_empty() => {
            let k = v % tx.input.len();
            tx.input[k].script_sig = bitcoin::ScriptBuf::from_bytes(vec![val]);
        }
        7 if !tx.output.is_empty() => {
            let k = v % tx.output.len();
            tx.output[k].value = tx.output[k].value.checked_add(sats).unwrap_or(sats);
        }
        8 if !tx.input.is_empty() => drop(tx.input.remove(v % tx.input.len())),
        9 if !body.funding_prevouts.is_empty() => {
            let k = v % body.funding_prevouts.len();
            let o = &mut body.funding_prevouts[k];
            o.value = o.value.checked_sub(sats).unwrap_or(Amount::ZERO);
        }
        10 if !body.leaves.is_empty() => {
            let k = v % body.leaves.len();
            let o = &mut body.leaves[k].output;
            o.amount = o.amount.checked_add(sats).unwrap_or(sats);
        }
        11 if body.leaves.len() > 1 => {
            let (a, b) = (v % body.leaves.len(), (v + 1) % body.leaves.len());
            let key = body.leaves[a].cosigner;
            body.leaves[a].cosigner = body.leaves[b].cosigner;
            body.leaves[b].cosigner = key;
        }
        12 if !body.leaves.is_empty() => {
            let k = v % body.leaves.len();
            let script = kit.coordinator_script.clone();
            body.leaves[k].output.script_pubkey = script;
        }
        13 => match kit.parties.get(v % kit.parties.len()).and_then(|p| p.leaf_keys.first()) {
            Some((key, _)) => body.batch_key = *key,
            None => return false,
        },
        14 => body.tree.radix = body.tree.radix.wrapping_add(1 + val % 3),
        15 => body.tree.max_depth = body.tree.max_depth.wrapping_add(1 + val % 3),
        _ => return false,
    }
    true
}
