//! A batch's lifecycle through the real round engine, with real participant sessions
//! and the embedded ledger, all in one thread: re-sent contributions, conflicting
//! ones, a failed store write, and seeded reproducibility.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bitcoin::{Amount, OutPoint, TxOut};
use rand::SeedableRng;

use cohort_common::chain::Chain;
use cohort_common::exit::p2tr_single;
use cohort_common::keys::Keypair;
use cohort_common::ledger::Ledger;
use cohort_common::messages::{AbortReason, ToCoordinator, ToParticipant};
use cohort_common::params::{LeafOutput, TreeParams};
use cohort_common::scripts::DepositScript;
use cohort_coordinator::engine::{Coordinator, CoordinatorConfig, Event, Inbound, PersistError};
use cohort_participant::session::{Event as SessionEvent, OwnedDeposit, Session, SessionConfig};

/// What the test does to a participant's message before the engine sees it: the
/// messages to deliver instead.
type Tamper = Box<dyn FnMut(usize, ToCoordinator) -> Vec<ToCoordinator>>;

struct Net {
    ledger: Ledger,
    engine: Coordinator,
    sessions: Vec<Session>,
    now: Instant,
    events: Vec<Event>,
    tamper: Tamper,
    /// Whether a store write of the signed batch succeeds.
    store_ok: bool,
}

fn config(coordinator_payout: &Keypair, n: usize) -> CoordinatorConfig {
    let mut c = CoordinatorConfig::new(p2tr_single(coordinator_payout));
    c.tree = TreeParams { radix: 2, max_depth: 4 };
    c.max_registrations = n;
    c.registration_window = Duration::from_secs(10);
    c.phase_timeout = Duration::from_secs(5);
    c
}

fn session(ledger: &Ledger, coordinator: &Keypair, rng: &mut rand::rngs::StdRng) -> Session {
    let user = Keypair::from_rng(rng);
    let script = DepositScript::new(user.public, coordinator.public, 1_000).unwrap();
    let amount = Amount::from_sat(200_000);
    let outpoint = ledger.faucet(&script.script_pubkey(), amount).unwrap();
    let txout = TxOut { value: amount, script_pubkey: script.script_pubkey() };
    let deposit = OwnedDeposit { outpoint, txout, script, key: user.clone() };
    Session::new(
        SessionConfig {
            remainder_script: p2tr_single(&user),
            deposits: vec![deposit],
            leaves: vec![LeafOutput {
                script_pubkey: p2tr_single(&Keypair::from_rng(rng)),
                amount: Amount::from_sat(50_000),
            }],
            max_fee: Amount::from_sat(20_000),
            limits: Default::default(),
        },
        None,
    )
}

impl Net {
    /// `n` participants with one deposit and one fixed leaf each; the engine seeded.
    fn new(n: usize, seed: u64) -> Net {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let ledger = Ledger::new();
        ledger.mine(10);
        let coordinator = Keypair::from_rng(&mut rng);
        let payout = Keypair::from_rng(&mut rng);
        let engine_rng = Box::new(rand::rngs::StdRng::seed_from_u64(seed + 1000));
        let engine =
            Coordinator::with_rng(coordinator.clone(), config(&payout, n), engine_rng).unwrap();
        let sessions = (0..n).map(|_| session(&ledger, &coordinator, &mut rng)).collect();
        Net {
            ledger,
            engine,
            sessions,
            now: Instant::now(),
            events: Vec::new(),
            tamper: Box::new(|_, msg| vec![msg]),
            store_ok: true,
        }
    }

    /// Connects everyone, opens a round and runs until nothing moves.
    fn run(&mut self) {
        for i in 0..self.sessions.len() {
            self.engine.peer_connected(self.now, i as u64);
        }
        self.engine.start_round(self.now);
        while self.step() {}
    }

    /// One pass: engine output to the sessions, session output to the engine.
    fn step(&mut self) -> bool {
        let mut moved = false;
        while let Some(event) = self.engine.poll_event() {
            moved = true;
            self.on_engine_event(&event);
            self.events.push(event);
        }
        while let Some((peer, msg)) = self.engine.poll_transmit() {
            moved = true;
            self.sessions[peer as usize].handle_message(self.now, msg);
        }
        for i in 0..self.sessions.len() {
            while let Some(event) = self.sessions[i].poll_event() {
                moved = true;
                if let SessionEvent::PersistExitPaths { batch, attempt, .. } = event {
                    self.sessions[i].exit_paths_persisted(self.now, batch, attempt);
                }
            }
            while let Some(msg) = self.sessions[i].poll_transmit() {
                moved = true;
                for msg in (self.tamper)(i, msg) {
                    let max = self.engine.max_deposits_per_registration();
                    let input = Inbound::resolve(msg, &self.ledger, max);
                    self.engine.handle_message(self.now, i as u64, input);
                }
            }
        }
        moved
    }

    fn on_engine_event(&mut self, event: &Event) {
        match event {
            Event::PersistBatch { batch, attempt, .. } => {
                let result: Result<(), PersistError> =
                    if self.store_ok { Ok(()) } else { Err("disk full".into()) };
                self.engine.batch_persisted(self.now, *batch, *attempt, result);
            }
            Event::Broadcast { batch, tx, .. } => {
                let result = self.ledger.broadcast(tx).map_err(|e| e.to_string());
                self.engine.broadcast_result(self.now, *batch, result);
            }
            _ => {}
        }
    }

    fn count(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.events.iter().filter(|e| f(e)).count()
    }

    fn finalized(&self) -> usize {
        self.count(|e| matches!(e, Event::BatchFinalized { .. }))
    }

    fn excluded(&self) -> usize {
        self.count(|e| matches!(e, Event::Excluded { .. } | Event::Banned { .. }))
    }
}

fn twice(kind: fn(&ToCoordinator) -> bool) -> Tamper {
    Box::new(move |_, msg| if kind(&msg) { vec![msg.clone(), msg] } else { vec![msg] })
}

#[test]
fn an_identical_resent_tree_sigs_is_accepted_without_a_ban() {
    let mut net = Net::new(3, 1);
    net.tamper = twice(|m| matches!(m, ToCoordinator::TreeSigs(_)));
    net.run();
    assert_eq!(net.excluded(), 0, "{:?}", net.events);
    assert_eq!(net.finalized(), 1);
    assert_eq!(net.count(|e| matches!(e, Event::Proposed { attempt: 1, .. })), 1);
}

#[test]
fn an_identical_resent_deposit_sigs_is_accepted_without_a_ban() {
    let mut net = Net::new(3, 2);
    net.tamper = twice(|m| matches!(m, ToCoordinator::DepositSigs(_)));
    net.run();
    assert_eq!(net.excluded(), 0, "{:?}", net.events);
    assert_eq!(net.finalized(), 1);
}

#[test]
fn a_conflicting_resend_excludes_and_bans_its_sender() {
    let mut net = Net::new(3, 3);
    net.tamper = Box::new(|i, msg| match msg {
        ToCoordinator::TreeSigs(sigs) if i == 0 && sigs.attempt == 1 => {
            let mut other = sigs.clone();
            let (a, b) = (other.sigs[0].psig, other.sigs[1].psig);
            other.sigs[0].psig = b;
            other.sigs[1].psig = a;
            vec![ToCoordinator::TreeSigs(sigs), ToCoordinator::TreeSigs(other)]
        }
        other => vec![other],
    });
    net.run();
    let excluded: Vec<u64> = net
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Excluded { registration, reason: AbortReason::InvalidMessage, .. } => {
                Some(*registration)
            }
            _ => None,
        })
        .collect();
    assert_eq!(excluded, vec![1], "the first registration is the culprit");
    assert_eq!(net.count(|e| matches!(e, Event::Banned { .. })), 1);
    // The others finish in a second attempt without it.
    assert_eq!(net.count(|e| matches!(e, Event::Proposed { attempt: 2, .. })), 1);
    assert_eq!(net.finalized(), 1);
}

/// Participant 0 re-sends its first tree signatures with two partials swapped: a
/// conflicting re-send, which excludes and bans it.
fn equivocating_first_participant() -> Tamper {
    Box::new(|i, msg| match &msg {
        ToCoordinator::TreeSigs(sigs) if i == 0 && sigs.attempt == 1 => {
            let mut other = sigs.clone();
            let (a, b) = (other.sigs[0].psig, other.sigs[1].psig);
            other.sigs[0].psig = b;
            other.sigs[1].psig = a;
            vec![ToCoordinator::TreeSigs(sigs.clone()), ToCoordinator::TreeSigs(other)]
        }
        _ => vec![msg],
    })
}

#[test]
fn a_repeat_offenders_ban_grows() {
    // The same seed gives the same deposits, so a history can be restored for the
    // culprit's deposit before the round in which it offends again.
    let offend = |history: Option<(OutPoint, u32)>| {
        let mut net = Net::new(3, 4);
        if let Some((outpoint, offences)) = history {
            // Banned before, and the ban has run out: it may register again.
            net.engine.restore_ban(outpoint, net.now, offences);
        }
        net.tamper = equivocating_first_participant();
        net.run();
        let bans: Vec<_> = net
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Banned { outpoint, until, offences } => {
                    Some((*outpoint, *until - net.now, *offences))
                }
                _ => None,
            })
            .collect();
        assert_eq!(bans.len(), 1, "{bans:?}");
        assert_eq!(net.finalized(), 1, "the others still finish");
        bans[0]
    };
    let first = config(&Keypair::random(), 3);
    let (culprit, length, offences) = offend(None);
    assert_eq!((length, offences), (first.ban_duration, 1));
    assert_eq!(offend(Some((culprit, 1))), (culprit, 2 * first.ban_duration, 2));
    assert_eq!(offend(Some((culprit, 3))), (culprit, 8 * first.ban_duration, 4));
    assert_eq!(offend(Some((culprit, 60))), (culprit, first.max_ban_duration, 61));
}

#[test]
fn a_failed_store_write_means_no_broadcast() {
    let mut net = Net::new(2, 4);
    net.store_ok = false;
    net.run();
    let funding = net.events.iter().find_map(|e| match e {
        Event::PersistBatch { funding_tx, .. } => Some(funding_tx.compute_txid()),
        _ => None,
    });
    let funding = funding.expect("the engine asked to store the signed batch");
    assert_eq!(net.count(|e| matches!(e, Event::Broadcast { .. })), 0);
    assert_eq!(net.finalized(), 0);
    assert_eq!(net.count(|e| matches!(e, Event::BatchFailed { .. })), 1);
    assert_eq!(net.count(|e| matches!(e, Event::AttemptAborted { attempt: 1, .. })), 1);
    assert!(net.ledger.transaction(&funding).is_none(), "nothing unstored reached the chain");
    assert!(net.engine.round_finished());
}

#[test]
fn a_stored_batch_is_broadcast_and_confirmed() {
    let mut net = Net::new(2, 5);
    net.run();
    let order: Vec<&str> = net
        .events
        .iter()
        .filter_map(|e| match e {
            Event::PersistBatch { .. } => Some("persist"),
            Event::Broadcast { .. } => Some("broadcast"),
            Event::BatchFinalized { .. } => Some("finalized"),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["persist", "broadcast", "finalized"]);
    let txid = net.engine.awaiting_confirmation()[0];
    let height = net.ledger.mine(1);
    net.engine.confirmed(net.now, txid, height);
    while net.step() {}
    assert!(net.engine.round_finished());
    assert_eq!(net.count(|e| matches!(e, Event::BatchConfirmed { attempt: 1, .. })), 1);
}

#[test]
fn the_same_seed_and_registrations_build_the_same_batch() {
    let n = 3;
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let ledger = Ledger::new();
    ledger.mine(10);
    let coordinator = Keypair::from_rng(&mut rng);
    let payout = Keypair::from_rng(&mut rng);
    let engine = |seed| {
        let rng = Box::new(rand::rngs::StdRng::seed_from_u64(seed));
        Coordinator::with_rng(coordinator.clone(), config(&payout, n), rng).unwrap()
    };
    let (mut a, mut b, mut c) = (engine(9), engine(9), engine(10));
    let now = Instant::now();
    let mut sessions: Vec<Session> =
        (0..n).map(|_| session(&ledger, &coordinator, &mut rng)).collect();
    for e in [&mut a, &mut b, &mut c] {
        for i in 0..n {
            e.peer_connected(now, i as u64);
        }
        e.start_round(now);
    }
    assert_eq!(a.challenge(), b.challenge());
    assert_ne!(a.challenge(), c.challenge());
    while let Some((peer, msg)) = a.poll_transmit() {
        sessions[peer as usize].handle_message(now, msg);
    }
    for (i, s) in sessions.iter_mut().enumerate() {
        while let Some(msg) = s.poll_transmit() {
            for e in [&mut a, &mut b] {
                let input = Inbound::resolve(msg.clone(), &ledger, 16);
                e.handle_message(now, i as u64, input);
            }
        }
    }
    let proposals = |e: &mut Coordinator| {
        let mut out = Vec::new();
        while let Some((peer, msg)) = e.poll_transmit() {
            if let ToParticipant::Proposal(p) = msg {
                out.push((peer, p));
            }
        }
        out
    };
    let (pa, pb) = (proposals(&mut a), proposals(&mut b));
    assert_eq!(pa.len(), n);
    assert_eq!(pa, pb, "same seed, same registrations: the same proposals, nonces included");
}
