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

mod batch;
mod config;
mod register;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bitcoin::{OutPoint, Transaction, Txid};
use rayon::prelude::*;

use cohort_common::chain::Chain;
use cohort_common::fees::{max_inputs, FeeError};
use cohort_common::keys::Keypair;
use cohort_common::messages::{
    Abort, AbortReason, Confirmed, Finalized, NonceRequest, Reason, RefusalReason, Refused,
    Register, Registered, Renonce, RoundAnnounce, RoundParams, SignedTree, ToCoordinator,
    ToParticipant,
};

pub use batch::{Attempt, AttemptId, BuildError, Member};
pub use config::CoordinatorConfig;
pub use register::{is_standard_leaf, Taken};

/// A connection's identity, chosen by the driver.
pub type PeerId = u64;

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
    },
    /// A registration was refused.
    Refused {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: RefusalReason,
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
        /// Members.
        members: usize,
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
    /// A deposit is banned until `until`.
    Banned {
        /// The deposit.
        outpoint: OutPoint,
        /// Until when.
        until: Instant,
    },
    /// Broadcast this funding transaction, then call `broadcast_result`.
    Broadcast {
        /// The round.
        round: u64,
        /// The batch.
        batch: u32,
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
    },
    /// A batch's funding transaction confirmed.
    BatchConfirmed {
        /// The round.
        round: u64,
        /// The batch.
        batch: u32,
        /// The height.
        height: u32,
    },
    /// Every batch of the round is confirmed or failed.
    RoundFinished {
        /// The round.
        round: u64,
    },
}

/// Where a batch stands.
#[derive(Debug)]
pub enum BatchPhase {
    /// Waiting for fresh nonces from the remaining members after an abort.
    Renoncing {
        /// The attempt being prepared.
        attempt: u32,
        /// Members left.
        members: Vec<u64>,
        /// Those that have not answered yet.
        waiting: Vec<u64>,
        /// Deadline.
        deadline: Instant,
    },
    /// Collecting tree partial signatures.
    SigningTree {
        /// The attempt.
        attempt: Box<Attempt>,
        /// Deadline.
        deadline: Instant,
    },
    /// Collecting deposit partial signatures.
    SigningDeposits {
        /// The attempt.
        attempt: Box<Attempt>,
        /// Deadline.
        deadline: Instant,
    },
    /// The funding transaction is with the driver for broadcast.
    Broadcasting {
        /// The attempt.
        attempt: Box<Attempt>,
    },
    /// Broadcast; waiting for confirmation.
    Finalized {
        /// The attempt number.
        attempts: u32,
        /// Members.
        members: Vec<u64>,
        /// The funding txid.
        txid: Txid,
    },
    /// Confirmed.
    Confirmed {
        /// The funding txid.
        txid: Txid,
    },
    /// Given up.
    Failed,
}

impl BatchPhase {
    fn is_terminal(&self) -> bool {
        matches!(self, BatchPhase::Confirmed { .. } | BatchPhase::Failed)
    }
}

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

    /// Whether a registration's batch needs nothing more from it: its deposit
    /// signatures are in (or the funding transaction is already out).
    fn has_done_its_part(&self, reg: u64) -> bool {
        let Some(b) = self.batch_of(reg) else { return true };
        match self.batches().get(b as usize) {
            Some(BatchPhase::SigningDeposits { attempt, .. }) => {
                !attempt.deposit_holdouts().contains(&reg)
            }
            Some(BatchPhase::SigningTree { .. }) | Some(BatchPhase::Renoncing { .. }) => false,
            _ => true,
        }
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

    fn on_tree_sigs(&mut self, now: Instant, reg: u64, sigs: cohort_common::messages::TreeSigs) {
        let Some(b) = self.batch_of(reg) else { return };
        let Some(round) = &mut self.round else { return };
        let Some(BatchPhase::SigningTree { attempt, .. }) = round.batches.get_mut(b as usize)
        else {
            return;
        };
        if sigs.batch != b || sigs.attempt != attempt.number {
            return; // Stale: an earlier attempt's message.
        }
        let Some(m) = attempt.member_index(reg) else { return };
        match attempt.add_tree_sigs(m, &sigs.sigs) {
            Err(_) => self.fail_member(now, reg, AbortReason::InvalidMessage, true),
            Ok(false) => {}
            Ok(true) => self.finish_tree(now, b),
        }
    }

    fn finish_tree(&mut self, now: Instant, b: u32) {
        let timeout = self.config.phase_timeout;
        let Some(round) = &mut self.round else { return };
        let round_id = round.params.round;
        let Some(phase) = round.batches.get_mut(b as usize) else { return };
        let BatchPhase::SigningTree { attempt, .. } = phase else { return };
        match attempt.combine_tree() {
            Err(culprits) => {
                self.abort_attempt(now, b, culprits, AbortReason::InvalidPartialSignature, true);
            }
            Ok(()) => {
                let nodes = attempt.signed_nodes();
                let number = attempt.number;
                for (m, id) in attempt.members.iter().enumerate() {
                    if let Some(r) = round.registrations.get(id) {
                        let msg = SignedTree {
                            batch: b,
                            attempt: number,
                            sigs: attempt.signed_tree_for(m),
                        };
                        self.outbox.push_back((r.peer, ToParticipant::SignedTree(msg)));
                    }
                }
                self.events.push_back(Event::TreeSigned {
                    round: round_id,
                    batch: b,
                    attempt: number,
                    nodes,
                });
                let taken = std::mem::replace(phase, BatchPhase::Failed);
                if let BatchPhase::SigningTree { attempt, .. } = taken {
                    *phase = BatchPhase::SigningDeposits { attempt, deadline: now + timeout };
                }
            }
        }
    }

    fn on_deposit_sigs(
        &mut self,
        now: Instant,
        reg: u64,
        sigs: cohort_common::messages::DepositSigs,
    ) {
        let Some(b) = self.batch_of(reg) else { return };
        let Some(round) = &mut self.round else { return };
        let round_id = round.params.round;
        let Some(phase) = round.batches.get_mut(b as usize) else { return };
        let BatchPhase::SigningDeposits { attempt, .. } = phase else {
            if matches!(phase, BatchPhase::SigningTree { attempt, .. } if attempt.number == sigs.attempt)
            {
                // Deposit signatures before the tree is signed: out of order.
                self.fail_member(now, reg, AbortReason::InvalidMessage, true);
            }
            return;
        };
        if sigs.batch != b || sigs.attempt != attempt.number {
            return;
        }
        let Some(m) = attempt.member_index(reg) else { return };
        match attempt.add_deposit_sigs(m, &sigs.sigs) {
            Err(_) => self.fail_member(now, reg, AbortReason::InvalidMessage, true),
            Ok(false) => {}
            Ok(true) => match attempt.complete_funding() {
                Err(culprits) => {
                    self.abort_attempt(now, b, culprits, AbortReason::InvalidPartialSignature, true)
                }
                Ok(tx) => {
                    self.events.push_back(Event::Broadcast {
                        round: round_id,
                        batch: b,
                        tx: Box::new(tx),
                    });
                    let taken = std::mem::replace(phase, BatchPhase::Failed);
                    if let BatchPhase::SigningDeposits { attempt, .. } = taken {
                        *phase = BatchPhase::Broadcasting { attempt };
                    }
                }
            },
        }
    }

    /// The driver's answer to [`Event::Broadcast`].
    pub fn broadcast_result(&mut self, now: Instant, batch: u32, result: Result<Txid, String>) {
        let _ = now;
        let Some(round) = &mut self.round else { return };
        let round_id = round.params.round;
        let Some(phase) = round.batches.get_mut(batch as usize) else { return };
        let BatchPhase::Broadcasting { attempt } = phase else { return };
        let members = attempt.members.clone();
        let attempts = attempt.number;
        match result {
            Ok(txid) => {
                for id in &members {
                    if let Some(r) = round.registrations.get(id) {
                        self.outbox.push_back((
                            r.peer,
                            ToParticipant::Finalized(Finalized { batch, txid }),
                        ));
                    }
                }
                *phase = BatchPhase::Finalized { attempts, members, txid };
                self.events.push_back(Event::BatchFinalized {
                    round: round_id,
                    batch,
                    attempts,
                    txid,
                });
            }
            Err(e) => {
                let reason = AbortReason::Other(Reason::new(format!("broadcast failed: {e}")));
                for id in &members {
                    if let Some(r) = round.registrations.get(id) {
                        let abort = Abort {
                            batch,
                            attempt: attempts,
                            reason: reason.clone(),
                            excluded: Vec::new(),
                        };
                        self.outbox.push_back((r.peer, ToParticipant::Abort(abort)));
                    }
                }
                *phase = BatchPhase::Failed;
                self.events.push_back(Event::BatchFailed { round: round_id, batch, reason });
                self.maybe_finish_round();
            }
        }
    }

    /// The driver saw a funding transaction confirm.
    pub fn confirmed(&mut self, _now: Instant, txid: Txid, height: u32) {
        let Some(round) = &mut self.round else { return };
        let round_id = round.params.round;
        for (b, phase) in round.batches.iter_mut().enumerate() {
            if let BatchPhase::Finalized { members, txid: t, .. } = phase {
                if *t != txid {
                    continue;
                }
                for id in members.iter() {
                    if let Some(r) = round.registrations.get(id) {
                        let msg = Confirmed { batch: b as u32, height };
                        self.outbox.push_back((r.peer, ToParticipant::Confirmed(msg)));
                    }
                }
                *phase = BatchPhase::Confirmed { txid };
                self.events.push_back(Event::BatchConfirmed {
                    round: round_id,
                    batch: b as u32,
                    height,
                });
            }
        }
        self.maybe_finish_round();
    }

    /// Funding transactions broadcast and not yet confirmed.
    pub fn awaiting_confirmation(&self) -> Vec<Txid> {
        self.batches()
            .iter()
            .filter_map(|p| match p {
                BatchPhase::Finalized { txid, .. } => Some(*txid),
                _ => None,
            })
            .collect()
    }

    fn on_renonce(&mut self, now: Instant, reg: u64, renonce: Renonce) {
        let Some(b) = self.batch_of(reg) else { return };
        let depth = self.round.as_ref().map_or(0, |r| usize::from(r.params.tree.max_depth));
        let Some(round) = &mut self.round else { return };
        let Some(BatchPhase::Renoncing { attempt, waiting, .. }) =
            round.batches.get_mut(b as usize)
        else {
            return;
        };
        if renonce.batch != b || renonce.attempt != *attempt || !waiting.contains(&reg) {
            return;
        }
        let Some(r) = round.registrations.get(&reg) else { return };
        let valid = renonce.leaves.len() == r.member.leaf_keys.len()
            && renonce.deposit_nonces.len() == r.member.deposits.len()
            && renonce.leaves.iter().all(|l| l.nonces.len() == depth)
            && renonce
                .leaves
                .iter()
                .all(|l| !round.taken.cosigners.contains(&l.cosigner.serialize()));
        let mut distinct: Vec<[u8; 33]> =
            renonce.leaves.iter().map(|l| l.cosigner.serialize()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        if !valid || distinct.len() != renonce.leaves.len() {
            return self.fail_member(now, reg, AbortReason::InvalidMessage, true);
        }
        for key in distinct {
            round.taken.cosigners.insert(key);
        }
        if let Some(r) = round.registrations.get_mut(&reg) {
            r.member.leaf_keys = renonce.leaves.iter().map(|l| l.cosigner).collect();
            r.member.leaf_nonces = renonce.leaves.into_iter().map(|l| l.nonces).collect();
            r.member.deposit_nonces = renonce.deposit_nonces;
        }
        waiting.retain(|w| *w != reg);
        if waiting.is_empty() {
            self.rebuild(now, b);
        }
    }

    fn rebuild(&mut self, now: Instant, b: u32) {
        let Some(round) = &mut self.round else { return };
        let Some(phase) = round.batches.get_mut(b as usize) else { return };
        let BatchPhase::Renoncing { attempt, members, waiting, .. } = phase else { return };
        let (attempt, members) = (*attempt, std::mem::take(members));
        let members: Vec<u64> = members.into_iter().filter(|m| !waiting.contains(m)).collect();
        let built = self.build_attempts(vec![(b, attempt, members)]);
        for b in built {
            self.install_attempt(now, attempt, b);
        }
        self.maybe_finish_round();
    }

    fn on_cancel(&mut self, now: Instant, peer: PeerId, reg: u64) {
        if self.withdraw_before_batches(reg) {
            self.peers.insert(peer, None);
            return;
        }
        // Before its deposit signatures a member may leave; its deposits are not banned.
        if !self.has_done_its_part(reg) {
            self.fail_member(now, reg, AbortReason::Cancelled, false);
        }
    }

    /// During registration, drops a registration and frees its deposits; leaving then
    /// costs nothing. Returns whether registration was still open.
    fn withdraw_before_batches(&mut self, reg: u64) -> bool {
        let Some(round) = &mut self.round else { return false };
        if !matches!(round.phase, RoundPhase::Registration { .. }) {
            return false;
        }
        if let Some(r) = round.registrations.remove(&reg) {
            for (op, _) in &r.member.deposits {
                round.taken.outpoints.remove(op);
            }
        }
        true
    }

    /// Excludes `reg` from its batch (banning its deposits if `ban`) and aborts the attempt.
    fn fail_member(&mut self, now: Instant, reg: u64, reason: AbortReason, ban: bool) {
        let Some(b) = self.batch_of(reg) else { return };
        self.abort_attempt(now, b, vec![reg], reason, ban);
    }

    fn abort_attempt(
        &mut self,
        now: Instant,
        b: u32,
        culprits: Vec<u64>,
        reason: AbortReason,
        ban: bool,
    ) {
        let ban_until = now + self.config.ban_duration;
        let timeout = self.config.phase_timeout;
        let max_attempts = u32::from(self.config.max_attempts);
        let Some(round) = &mut self.round else { return };
        let round_id = round.params.round;
        let Some(phase) = round.batches.get_mut(b as usize) else { return };
        let (number, members) = match phase {
            BatchPhase::SigningTree { attempt, .. }
            | BatchPhase::SigningDeposits { attempt, .. } => {
                (attempt.number, attempt.members.clone())
            }
            BatchPhase::Renoncing { .. } => {
                // Already aborted: drop the culprits from the next attempt, nothing more.
                return self.drop_while_renoncing(now, b, culprits, reason, ban);
            }
            _ => return,
        };
        let until = ban.then_some(ban_until);
        for id in &culprits {
            let regs = (&mut round.registrations, round_id);
            exclude(regs, &mut self.bans, &mut self.events, (b, *id), &reason, until);
        }
        let remaining: Vec<u64> =
            members.iter().copied().filter(|m| !culprits.contains(m)).collect();
        let next = number + 1;
        let give_up = remaining.is_empty() || next > max_attempts;
        for id in &members {
            let Some(r) = round.registrations.get(id) else { continue };
            let abort = Abort {
                batch: b,
                attempt: number,
                reason: if give_up && !culprits.contains(id) {
                    AbortReason::MaxAttempts
                } else {
                    reason.clone()
                },
                excluded: culprits.clone(),
            };
            self.outbox.push_back((r.peer, ToParticipant::Abort(abort)));
            if !give_up && !culprits.contains(id) {
                self.outbox.push_back((
                    r.peer,
                    ToParticipant::NonceRequest(NonceRequest { batch: b, attempt: next }),
                ));
            }
        }
        if give_up {
            *phase = BatchPhase::Failed;
            self.events.push_back(Event::BatchFailed { round: round_id, batch: b, reason });
            self.maybe_finish_round();
        } else {
            *phase = BatchPhase::Renoncing {
                attempt: next,
                waiting: remaining.clone(),
                members: remaining,
                deadline: now + timeout,
            };
        }
    }

    /// Handles every deadline that has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(round) = &self.round else { return };
        if let RoundPhase::Registration { closes_at } = round.phase {
            if now >= closes_at {
                self.close_registration(now);
            }
            return;
        }
        let mut expired = Vec::new();
        for (b, phase) in round.batches.iter().enumerate() {
            match phase {
                BatchPhase::SigningTree { attempt, deadline } if now >= *deadline => {
                    expired.push((b as u32, attempt.tree_holdouts(), false));
                }
                BatchPhase::SigningDeposits { attempt, deadline } if now >= *deadline => {
                    expired.push((b as u32, attempt.deposit_holdouts(), false));
                }
                BatchPhase::Renoncing { waiting, deadline, .. } if now >= *deadline => {
                    expired.push((b as u32, waiting.clone(), true));
                }
                _ => {}
            }
        }
        for (b, holdouts, renoncing) in expired {
            if renoncing {
                self.drop_while_renoncing(now, b, holdouts, AbortReason::Timeout, true);
            } else {
                self.abort_attempt(now, b, holdouts, AbortReason::Timeout, true);
            }
        }
    }

    fn drop_while_renoncing(
        &mut self,
        now: Instant,
        b: u32,
        culprits: Vec<u64>,
        reason: AbortReason,
        ban: bool,
    ) {
        let until = ban.then_some(now + self.config.ban_duration);
        let Some(round) = &mut self.round else { return };
        let round_id = round.params.round;
        let Some(BatchPhase::Renoncing { attempt, members, waiting, .. }) =
            round.batches.get_mut(b as usize)
        else {
            return;
        };
        let aborted = attempt.saturating_sub(1);
        members.retain(|m| !culprits.contains(m));
        waiting.retain(|m| !culprits.contains(m));
        let empty = waiting.is_empty();
        for id in culprits {
            let regs = (&mut round.registrations, round_id);
            let Some(peer) =
                exclude(regs, &mut self.bans, &mut self.events, (b, id), &reason, until)
            else {
                continue;
            };
            let abort =
                Abort { batch: b, attempt: aborted, reason: reason.clone(), excluded: vec![id] };
            self.outbox.push_back((peer, ToParticipant::Abort(abort)));
        }
        if empty {
            self.rebuild(now, b);
        }
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

/// Marks a registration excluded from batch `b`, bans its deposits until `ban_until`
/// when given, and records both. Returns its peer.
fn exclude(
    (registrations, round_id): (&mut BTreeMap<u64, Registration>, u64),
    bans: &mut HashMap<OutPoint, Instant>,
    events: &mut VecDeque<Event>,
    (b, id): (u32, u64),
    reason: &AbortReason,
    ban_until: Option<Instant>,
) -> Option<PeerId> {
    let r = registrations.get_mut(&id)?;
    r.active = false;
    if let Some(until) = ban_until {
        for (op, _) in &r.member.deposits {
            bans.insert(*op, until);
            events.push_back(Event::Banned { outpoint: *op, until });
        }
    }
    events.push_back(Event::Excluded {
        round: round_id,
        batch: b,
        registration: id,
        reason: reason.clone(),
    });
    Some(r.peer)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
