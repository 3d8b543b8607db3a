//! The coordinator's sans-IO round engine.
//!
//! Call order: [`Coordinator::start_round`] opens registration; the driver feeds
//! [`Coordinator::peer_connected`], [`Coordinator::handle_message`],
//! [`Coordinator::peer_disconnected`], [`Coordinator::handle_timeout`] (when
//! [`Coordinator::poll_timeout`] is due), [`Coordinator::broadcast_result`] after it
//! broadcasts a funding transaction and [`Coordinator::confirmed`] when one confirms;
//! after each call it drains [`Coordinator::poll_transmit`] and
//! [`Coordinator::poll_event`]. The engine never reads a clock, a socket or a disk:
//! time comes in as `now`, the chain as a `&dyn Chain` view, and everything it wants
//! done comes out as messages and events. Per-node CPU work runs on rayon inside the
//! calls, so drivers run the engine on a blocking thread, not on the async reactor.
//!
//! Each batch of a round is its own state machine ([`BatchPhase`]); a failure in one
//! batch (timeout, invalid message or signature, disconnect, cancel) aborts only that
//! batch's attempt, bans the culprit's deposits, asks everyone else for fresh nonces and
//! rebuilds the batch without the culprit, up to `max_attempts`.
//!
//! Files: `register.rs` (registration checks), `batch.rs` (one attempt: funding tx,
//! tree, nonces, combination), `signing.rs` (collecting signatures, broadcast,
//! confirmation), `failure.rs` (exclusion, bans, aborts, renonce, deadlines),
//! `events.rs` (what the driver is told), `config.rs`.

mod batch;
mod config;
mod events;
mod failure;
mod register;
mod signing;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bitcoin::OutPoint;
use rayon::prelude::*;

use cohort_common::chain::Chain;
use cohort_common::fees::{max_inputs, FeeError};
use cohort_common::keys::Keypair;
use cohort_common::messages::{
    Abort, AbortReason, Reason, RefusalReason, Refused, Register, Registered, RoundAnnounce,
    RoundParams, ToCoordinator, ToParticipant,
};

pub use batch::{Attempt, AttemptId, BuildError, Member};
pub use config::CoordinatorConfig;
pub use events::{BatchPhase, Event};
pub use register::{is_standard_leaf, Taken};

/// A connection's identity, chosen by the driver.
pub type PeerId = u64;

#[derive(Debug)]
struct Registration {
    peer: PeerId,
    member: Member,
    batch: Option<u32>,
    active: bool,
}

#[derive(Debug)]
enum RoundPhase {
    Registration { closes_at: Instant },
    Running,
    Done,
}

#[derive(Debug)]
struct Round {
    params: RoundParams,
    challenge: [u8; 32],
    phase: RoundPhase,
    registrations: BTreeMap<u64, Registration>,
    taken: Taken,
    batches: Vec<BatchPhase>,
}

/// One batch attempt built (or not), with the registrations pricing left out.
#[derive(Debug)]
struct Built {
    batch: u32,
    members: Vec<u64>,
    dropped: Vec<(u64, FeeError)>,
    result: Result<Attempt, BuildError>,
}

/// The coordinator's round engine. See the module documentation for the call order.
#[derive(Debug)]
pub struct Coordinator {
    key: Keypair,
    config: CoordinatorConfig,
    next_round: u64,
    next_registration: u64,
    round: Option<Round>,
    peers: HashMap<PeerId, Option<u64>>,
    bans: HashMap<OutPoint, Instant>,
    outbox: VecDeque<(PeerId, ToParticipant)>,
    events: VecDeque<Event>,
}

impl Coordinator {
    /// An engine with the coordinator's long-term key `C`.
    pub fn new(key: Keypair, config: CoordinatorConfig) -> Self {
        Coordinator {
            key,
            config,
            next_round: 1,
            next_registration: 1,
            round: None,
            peers: HashMap::new(),
            bans: HashMap::new(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The coordinator's long-term public key.
    pub fn public_key(&self) -> bitcoin::secp256k1::PublicKey {
        self.key.public
    }

    /// Continues round numbering after a restart.
    pub fn set_next_round(&mut self, round: u64) {
        self.next_round = self.next_round.max(round);
    }

    /// Restores a ban (from storage, at start-up).
    pub fn restore_ban(&mut self, outpoint: OutPoint, until: Instant) {
        self.bans.insert(outpoint, until);
    }

    /// Whether a deposit is banned at `now`.
    pub fn is_banned(&self, outpoint: &OutPoint, now: Instant) -> bool {
        self.bans.get(outpoint).is_some_and(|until| *until > now)
    }

    /// The current round's number, if one is running.
    pub fn current_round(&self) -> Option<u64> {
        self.round.as_ref().map(|r| r.params.round)
    }

    /// Whether the current round (if any) has finished.
    pub fn round_finished(&self) -> bool {
        self.round.as_ref().is_none_or(|r| matches!(r.phase, RoundPhase::Done))
    }

    /// The phases of the current round's batches.
    pub fn batches(&self) -> &[BatchPhase] {
        self.round.as_ref().map_or(&[], |r| &r.batches)
    }

    /// Opens registration for a new round and announces it to every connected peer.
    pub fn start_round(&mut self, now: Instant, challenge: [u8; 32]) -> u64 {
        let round = self.next_round;
        self.next_round += 1;
        let c = &self.config;
        let params = RoundParams {
            round,
            tree: c.tree,
            fees: c.fees,
            coordinator_key: self.key.public,
            exit_csv: c.exit_csv,
            max_deposit_csv: c.max_deposit_csv,
            min_confs: c.min_confs,
            safety_margin: c.safety_margin,
            max_leaves_per_registration: c.max_leaves_per_registration,
            max_deposits_per_registration: c.max_deposits_per_registration,
            max_batch_weight: c.max_batch_weight,
            registration_closes_ms: millis(c.registration_window),
            phase_timeout_ms: millis(c.phase_timeout),
            max_attempts: c.max_attempts,
        };
        self.round = Some(Round {
            params: params.clone(),
            challenge,
            phase: RoundPhase::Registration { closes_at: now + c.registration_window },
            registrations: BTreeMap::new(),
            taken: Taken::default(),
            batches: Vec::new(),
        });
        let peers: Vec<PeerId> = self.peers.keys().copied().collect();
        for peer in peers {
            self.announce(peer);
        }
        self.events.push_back(Event::RoundStarted { round, params: Box::new(params) });
        round
    }

    fn announce(&mut self, peer: PeerId) {
        if let Some(round) = &self.round {
            if matches!(round.phase, RoundPhase::Registration { .. }) {
                let msg = ToParticipant::RoundAnnounce(RoundAnnounce {
                    round: round.params.round,
                    attempt: 1,
                    params: round.params.clone(),
                    challenge: round.challenge,
                });
                self.outbox.push_back((peer, msg));
            }
        }
    }

    /// A participant connected (after the `Hello` exchange).
    pub fn peer_connected(&mut self, _now: Instant, peer: PeerId) {
        self.peers.insert(peer, None);
        self.announce(peer);
    }

    /// A participant's connection closed.
    pub fn peer_disconnected(&mut self, now: Instant, peer: PeerId) {
        let Some(Some(reg)) = self.peers.remove(&peer) else { return };
        if self.withdraw_before_batches(reg) || self.has_done_its_part(reg) {
            // Its deposit signatures are in: the batch completes without it, and it
            // learns the outcome from the chain and its stored exit paths.
            return;
        }
        self.fail_member(now, reg, AbortReason::Timeout, true);
    }

    /// Takes one message from a participant.
    pub fn handle_message(
        &mut self,
        now: Instant,
        peer: PeerId,
        msg: ToCoordinator,
        chain: &dyn Chain,
    ) {
        match msg {
            ToCoordinator::Register(reg) => self.on_register(now, peer, reg, chain),
            ToCoordinator::TreeSigs(sigs) => {
                let Some(reg) = self.registration_of(peer) else { return };
                self.on_tree_sigs(now, reg, sigs);
            }
            ToCoordinator::DepositSigs(sigs) => {
                let Some(reg) = self.registration_of(peer) else { return };
                self.on_deposit_sigs(now, reg, sigs);
            }
            ToCoordinator::Renonce(renonce) => {
                let Some(reg) = self.registration_of(peer) else { return };
                self.on_renonce(now, reg, renonce);
            }
            ToCoordinator::Cancel(_) => {
                let Some(reg) = self.registration_of(peer) else { return };
                self.on_cancel(now, peer, reg);
            }
            ToCoordinator::Goodbye(_) => self.peer_disconnected(now, peer),
            ToCoordinator::Hello(_) => {}
        }
    }

    fn registration_of(&self, peer: PeerId) -> Option<u64> {
        self.peers.get(&peer).copied().flatten()
    }

    fn refuse(&mut self, peer: PeerId, reason: RefusalReason) {
        self.outbox.push_back((peer, ToParticipant::Refused(Refused { reason: reason.clone() })));
        self.events.push_back(Event::Refused { peer, reason });
    }

    fn on_register(&mut self, now: Instant, peer: PeerId, reg: Register, chain: &dyn Chain) {
        let bans = &self.bans;
        let banned = |op: &OutPoint| bans.get(op).is_some_and(|until| *until > now);
        let Some(round) = &mut self.round else {
            return self.refuse(peer, RefusalReason::RegistrationClosed);
        };
        if !matches!(round.phase, RoundPhase::Registration { .. }) {
            return self.refuse(peer, RefusalReason::RegistrationClosed);
        }
        if self.peers.get(&peer).copied().flatten().is_some() {
            return self.refuse(peer, RefusalReason::Other(Reason::new("already registered")));
        }
        let checked = match register::check(
            &reg,
            &round.params,
            &round.challenge,
            chain,
            &round.taken,
            &banned,
        ) {
            Ok(c) => c,
            Err(reason) => return self.refuse(peer, reason),
        };
        let body = reg.body;
        for d in &body.deposits {
            round.taken.outpoints.insert(d.outpoint);
        }
        for key in body.leaves.iter().map(|l| &l.cosigner).chain([&body.remainder.cosigner]) {
            round.taken.cosigners.insert(key.serialize());
        }
        let id = self.next_registration;
        self.next_registration += 1;
        let deposits: Vec<_> =
            body.deposits.iter().map(|d| d.outpoint).zip(checked.txouts).collect();
        let outpoints = deposits.iter().map(|(op, _)| *op).collect();
        let member = Member {
            registration: id,
            deposits,
            scripts: checked.scripts,
            fixed: body.leaves.iter().map(|l| l.output.clone()).collect(),
            remainder_script: body.remainder.script_pubkey.clone(),
            max_fee: body.max_fee,
            leaf_keys: body
                .leaves
                .iter()
                .map(|l| l.cosigner)
                .chain([body.remainder.cosigner])
                .collect(),
            leaf_nonces: body
                .leaves
                .iter()
                .map(|l| l.nonces.clone())
                .chain([body.remainder.nonces.clone()])
                .collect(),
            deposit_nonces: body.deposits.iter().map(|d| d.nonce.clone()).collect(),
        };
        round.registrations.insert(id, Registration { peer, member, batch: None, active: true });
        self.peers.insert(peer, Some(id));
        let round_id = round.params.round;
        self.outbox.push_back((
            peer,
            ToParticipant::Registered(Registered { round: round_id, registration: id }),
        ));
        self.events.push_back(Event::Registered {
            round: round_id,
            registration: id,
            deposits: outpoints,
        });
        if round.registrations.len() >= self.config.max_registrations {
            self.close_registration(now);
        }
    }

    /// Closes registration now: forms batches and proposes their first attempts.
    pub fn close_registration(&mut self, now: Instant) {
        let Some(round) = &mut self.round else { return };
        if !matches!(round.phase, RoundPhase::Registration { .. }) {
            return;
        }
        round.phase = RoundPhase::Running;
        // Registrations in order, as many per batch as the weight and tree allow.
        let per_batch_inputs =
            max_inputs(round.params.max_batch_weight, &[34, self.config.payout_script.len()]);
        let max_leaves = usize::from(round.params.tree.radix)
            .saturating_pow(u32::from(round.params.tree.max_depth));
        let mut groups: Vec<Vec<u64>> = Vec::new();
        let (mut inputs, mut leaves) = (0usize, 0usize);
        for (id, reg) in &round.registrations {
            let (i, l) = (reg.member.deposits.len(), reg.member.leaf_keys.len());
            if groups.is_empty() || inputs + i > per_batch_inputs || leaves + l > max_leaves {
                groups.push(Vec::new());
                inputs = 0;
                leaves = 0;
            }
            inputs += i;
            leaves += l;
            if let Some(g) = groups.last_mut() {
                g.push(*id);
            }
        }
        for (b, group) in groups.iter().enumerate() {
            for id in group {
                if let Some(reg) = round.registrations.get_mut(id) {
                    reg.batch = Some(b as u32);
                }
            }
        }
        let registrations = round.registrations.len();
        let batches = groups.len();
        round.batches = (0..batches).map(|_| BatchPhase::Failed).collect();
        self.events.push_back(Event::RegistrationClosed {
            round: round.params.round,
            registrations,
            batches,
        });
        // Build every batch's first attempt in parallel.
        let built = self.build_attempts(
            groups.into_iter().enumerate().map(|(b, g)| (b as u32, 1, g)).collect(),
        );
        for b in built {
            self.install_attempt(now, 1, b);
        }
        self.maybe_finish_round();
    }

    fn build_attempts(&self, jobs: Vec<(u32, u32, Vec<u64>)>) -> Vec<Built> {
        let Some(round) = &self.round else { return Vec::new() };
        jobs.into_par_iter()
            .map(|(b, attempt, mut ids)| {
                // Members whose fees do not fit are dropped and the batch priced again.
                let mut dropped = Vec::new();
                loop {
                    let members: Vec<&Member> = ids
                        .iter()
                        .filter_map(|id| round.registrations.get(id).map(|r| &r.member))
                        .collect();
                    if members.is_empty() {
                        let result = Err(BuildError::Fees(cohort_common::fees::FeeError::Empty));
                        return Built { batch: b, members: ids, dropped, result };
                    }
                    let id = AttemptId { round: round.params.round, batch: b, number: attempt };
                    let result = Attempt::build(
                        id,
                        &members,
                        &self.key,
                        &self.config.payout_script,
                        round.params.tree,
                        &round.params.fees,
                    );
                    match result {
                        Err(BuildError::Member { member, error }) if member < ids.len() => {
                            dropped.push((ids.remove(member), error));
                        }
                        result => return Built { batch: b, members: ids, dropped, result },
                    }
                }
            })
            .collect()
    }

    fn install_attempt(&mut self, now: Instant, attempt: u32, built: Built) {
        let Built { batch, members, dropped, result } = built;
        let timeout = self.config.phase_timeout;
        let Some(round) = &mut self.round else { return };
        let round_id = round.params.round;
        // Registrations dropped while pricing are told why; their deposits are not banned.
        for (id, error) in dropped {
            let Some(r) = round.registrations.get_mut(&id) else { continue };
            r.active = false;
            let reason = match error {
                FeeError::FeeTooHigh { fee, max_fee, .. } => {
                    RefusalReason::FeeTooLow { max_fee, required: fee }
                }
                FeeError::InsufficientFunds { deposited, requested, fee, dust, .. } => {
                    RefusalReason::InsufficientFunds {
                        available: deposited,
                        needed: requested
                            .checked_add(fee)
                            .and_then(|a| a.checked_add(dust))
                            .unwrap_or(deposited),
                    }
                }
                other => RefusalReason::Other(Reason::new(other.to_string())),
            };
            self.outbox.push_back((r.peer, ToParticipant::Refused(Refused { reason })));
            self.events.push_back(Event::Excluded {
                round: round_id,
                batch,
                registration: id,
                reason: AbortReason::Other(Reason::new("fee above max_fee or funds too small")),
            });
        }
        let Some(slot) = round.batches.get_mut(batch as usize) else { return };
        match result {
            Ok(a) => {
                for (m, id) in a.members.iter().enumerate() {
                    if let Some(r) = round.registrations.get(id) {
                        self.outbox.push_back((r.peer, ToParticipant::Proposal(a.proposal(m))));
                    }
                }
                self.events.push_back(Event::Proposed {
                    round: round_id,
                    batch,
                    attempt,
                    funding_tx: Box::new(a.funding.clone()),
                    members: a.members.len(),
                });
                *slot = BatchPhase::SigningTree { attempt: Box::new(a), deadline: now + timeout };
            }
            Err(e) => {
                *slot = BatchPhase::Failed;
                let reason = AbortReason::Other(Reason::new(e.to_string()));
                for id in &members {
                    if let Some(r) = round.registrations.get(id) {
                        self.outbox.push_back((
                            r.peer,
                            ToParticipant::Abort(Abort {
                                batch,
                                attempt,
                                reason: reason.clone(),
                                excluded: Vec::new(),
                            }),
                        ));
                    }
                }
                self.events.push_back(Event::BatchFailed { round: round_id, batch, reason });
            }
        }
    }

    fn batch_of(&self, reg: u64) -> Option<u32> {
        self.round.as_ref()?.registrations.get(&reg).filter(|r| r.active)?.batch
    }

    /// The next deadline, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let round = self.round.as_ref()?;
        if let RoundPhase::Registration { closes_at } = round.phase {
            return Some(closes_at);
        }
        round
            .batches
            .iter()
            .filter_map(|p| match p {
                BatchPhase::SigningTree { deadline, .. }
                | BatchPhase::SigningDeposits { deadline, .. }
                | BatchPhase::Renoncing { deadline, .. } => Some(*deadline),
                _ => None,
            })
            .min()
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<(PeerId, ToParticipant)> {
        self.outbox.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn maybe_finish_round(&mut self) {
        let Some(round) = &mut self.round else { return };
        if matches!(round.phase, RoundPhase::Running)
            && round.batches.iter().all(BatchPhase::is_terminal)
        {
            round.phase = RoundPhase::Done;
            self.events.push_back(Event::RoundFinished { round: round.params.round });
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
