//! A batch's whole lifecycle, one type per phase, each transition consuming the phase
//! it leaves (STYLE 2; model: `participant/src/session/phases.rs`, `musig2`'s
//! `FirstRound`/`SecondRound`):
//!
//! `Renoncing → SigningTree → SigningDeposits → Broadcasting → Finalized → Confirmed`,
//! and `Failed` from any phase before `Finalized`.
//!
//! - `Renoncing` waits for fresh nonces from the members left after an abort; a batch's
//!   first attempt starts here with nobody to wait for. When nobody is left to wait for,
//!   the engine builds the attempt ([`super::attempt::Attempt`]) and hands it to
//!   [`Renoncing::proposed`].
//! - `SigningTree` and `SigningDeposits` collect one contribution per member in
//!   [`Slots`]: an identical re-send is accepted, a different one is misbehaviour.
//!   An invalid contribution or signature, a timeout or a cancel aborts the attempt:
//!   back to `Renoncing` without the culprits, or `Failed` after `max_attempts`.
//! - `Broadcasting` first asks the driver to store the signed tree and the signed
//!   funding transaction ([`Event::PersistBatch`]); only once the driver confirms the
//!   write does it ask for the broadcast ([`Event::Broadcast`]). A failed write fails
//!   the batch: nothing unstored is broadcast.
//!
//! The batch addresses members by registration id; the engine routes them to peers,
//! and carries out exclusions, bans and builds (`mod.rs`, `failure.rs`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bitcoin::secp256k1::schnorr;
use bitcoin::{Transaction, Txid};
use cohort_common::messages::{
    Abort, AbortReason, Confirmed as ConfirmedMsg, DepositPartial, DepositSigs,
    Finalized as FinalizedMsg, NodePartial, NonceRequest, Reason, SignedTree, ToParticipant,
    TreeSigs,
};
use cohort_common::musig::PartialSignature;

use super::attempt::{Attempt, AttemptId, BuildError};
use super::slots::{Offer, Slots};
use super::Event;

/// Whether an excluded member's deposits are banned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ban {
    /// Banned for `ban_duration`: it misbehaved or went silent.
    Yes,
    /// Not banned: it left before its deposit signatures, as it may.
    No,
}

/// What a batch transition may read and write besides its phase.
pub(super) struct Ctx<'a> {
    /// The round.
    pub round: u64,
    /// This batch.
    pub batch: u32,
    /// Now.
    pub now: Instant,
    /// The deadline of each phase.
    pub timeout: Duration,
    /// Attempts before the batch gives up.
    pub max_attempts: u32,
    /// Messages to members, by registration id.
    pub sends: &'a mut Vec<(u64, ToParticipant)>,
    /// Events for the driver.
    pub events: &'a mut VecDeque<Event>,
}

impl Ctx<'_> {
    fn send(&mut self, registration: u64, msg: ToParticipant) {
        self.sends.push((registration, msg));
    }

    fn emit(&mut self, event: Event) {
        self.events.push_back(event);
    }

    fn abort_all(&mut self, members: &[u64], attempt: u32, reason: &AbortReason) {
        for id in members {
            let abort =
                Abort { batch: self.batch, attempt, reason: reason.clone(), excluded: Vec::new() };
            self.send(*id, ToParticipant::Abort(abort));
        }
    }

    /// Fails the batch for good: `attempt` (if proposed) is aborted, every member told.
    fn fail(
        &mut self,
        members: &[u64],
        attempt: u32,
        proposed: bool,
        reason: AbortReason,
    ) -> BatchPhase {
        self.abort_all(members, attempt, &reason);
        let (round, batch) = (self.round, self.batch);
        if proposed {
            self.emit(Event::AttemptAborted { round, batch, attempt, reason: reason.clone() });
        }
        self.emit(Event::BatchFailed { round, batch, reason });
        BatchPhase::Failed
    }
}

/// What the engine must do after a batch took an input.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Nothing more.
    Nothing,
    /// Exclude `culprits` (with or without a ban), then [`BatchPhase::abort`].
    Abort {
        /// Registrations to exclude.
        culprits: Vec<u64>,
        /// Why.
        reason: AbortReason,
        /// Whether their deposits are banned.
        ban: Ban,
    },
    /// Build attempt `number` of these members, then [`Renoncing::proposed`].
    Build {
        /// The attempt number.
        number: u32,
        /// The members, in batch order.
        members: Vec<u64>,
    },
    /// The batch ended (failed or confirmed): the round may be over.
    Ended,
}

/// Where a batch stands.
#[derive(Debug)]
pub enum BatchPhase {
    /// Waiting for fresh nonces before (re)building an attempt.
    Renoncing(Renoncing),
    /// Collecting tree partial signatures.
    SigningTree(SigningTree),
    /// Collecting deposit partial signatures.
    SigningDeposits(SigningDeposits),
    /// Storing, then broadcasting the complete funding transaction.
    Broadcasting(Broadcasting),
    /// Broadcast; waiting for confirmation.
    Finalized(Finalized),
    /// Confirmed.
    Confirmed(Confirmed),
    /// Given up: nothing was broadcast.
    Failed,
}

impl BatchPhase {
    /// The phase's name, as the admin commands show it.
    pub fn name(&self) -> &'static str {
        match self {
            BatchPhase::Renoncing(_) => "renoncing",
            BatchPhase::SigningTree(_) => "signing tree",
            BatchPhase::SigningDeposits(_) => "signing deposits",
            BatchPhase::Broadcasting(_) => "broadcasting",
            BatchPhase::Finalized(_) => "finalized",
            BatchPhase::Confirmed(_) => "confirmed",
            BatchPhase::Failed => "failed",
        }
    }

    /// Whether nothing more will happen to this batch.
    pub fn is_terminal(&self) -> bool {
        matches!(self, BatchPhase::Confirmed(_) | BatchPhase::Failed)
    }

    /// The current deadline, if the batch waits on its members.
    pub fn deadline(&self) -> Option<Instant> {
        match self {
            BatchPhase::Renoncing(p) => p.deadline,
            BatchPhase::SigningTree(p) => Some(p.deadline),
            BatchPhase::SigningDeposits(p) => Some(p.deadline),
            _ => None,
        }
    }

    /// The funding txid awaiting confirmation, if broadcast.
    pub fn awaiting_confirmation(&self) -> Option<Txid> {
        match self {
            BatchPhase::Finalized(f) => Some(f.txid),
            _ => None,
        }
    }

    fn take(&mut self) -> BatchPhase {
        std::mem::replace(self, BatchPhase::Failed)
    }

    /// Whether the batch still needs something from `registration` (its partial
    /// signatures); once its deposit signatures are in, it may leave.
    pub(super) fn needs(&self, registration: u64) -> bool {
        match self {
            BatchPhase::Renoncing(_) | BatchPhase::SigningTree(_) => true,
            BatchPhase::SigningDeposits(p) => {
                p.attempt.member_index(registration).is_some_and(|m| !p.sigs.has(m))
            }
            _ => false,
        }
    }

    /// Members that have not delivered when the deadline passed at `now`.
    pub(super) fn expired(&self, now: Instant) -> Option<Vec<u64>> {
        match self {
            BatchPhase::Renoncing(p) if p.deadline.is_some_and(|d| now >= d) => {
                Some(p.waiting.clone())
            }
            BatchPhase::SigningTree(p) if now >= p.deadline => Some(p.sigs.holdouts()),
            BatchPhase::SigningDeposits(p) if now >= p.deadline => Some(p.sigs.holdouts()),
            _ => None,
        }
    }

    /// A member's tree partial signatures.
    pub(super) fn tree_sigs(&mut self, reg: u64, sigs: TreeSigs, ctx: &mut Ctx) -> Outcome {
        let BatchPhase::SigningTree(p) = self else { return Outcome::Nothing };
        if sigs.batch != ctx.batch || sigs.attempt != p.attempt.number() {
            return Outcome::Nothing; // Stale: an earlier attempt's message.
        }
        match p.offer(reg, sigs.sigs) {
            Delivery::Wait => Outcome::Nothing,
            Delivery::Bad => misbehaved(reg),
            Delivery::Complete => match p.attempt.combine_tree(&p.partials) {
                Err(culprits) => invalid_partials(culprits),
                Ok(node_sigs) => {
                    let BatchPhase::SigningTree(p) = self.take() else { return Outcome::Nothing };
                    *self = BatchPhase::SigningDeposits(p.signed(node_sigs, ctx));
                    Outcome::Nothing
                }
            },
        }
    }

    /// A member's deposit partial signatures.
    pub(super) fn deposit_sigs(&mut self, reg: u64, sigs: DepositSigs, ctx: &mut Ctx) -> Outcome {
        let p = match self {
            BatchPhase::SigningDeposits(p) => p,
            // Deposit signatures before the tree is signed: out of order.
            BatchPhase::SigningTree(p) if p.attempt.number() == sigs.attempt => {
                return misbehaved(reg)
            }
            _ => return Outcome::Nothing,
        };
        if sigs.batch != ctx.batch || sigs.attempt != p.attempt.number() {
            return Outcome::Nothing;
        }
        match p.offer(reg, sigs.sigs) {
            Delivery::Wait => Outcome::Nothing,
            Delivery::Bad => misbehaved(reg),
            Delivery::Complete => match p.attempt.complete_funding(&p.partials) {
                Err(culprits) => invalid_partials(culprits),
                Ok(tx) => {
                    let BatchPhase::SigningDeposits(p) = self.take() else {
                        return Outcome::Nothing;
                    };
                    *self = BatchPhase::Broadcasting(p.signed(tx, ctx));
                    Outcome::Nothing
                }
            },
        }
    }

    /// Aborts the current attempt after `culprits` were excluded: the others are asked
    /// for fresh nonces, or everyone is told the batch failed. While renoncing, the
    /// culprits are only dropped from the next attempt.
    pub(super) fn abort(
        &mut self,
        culprits: &[u64],
        reason: AbortReason,
        ctx: &mut Ctx,
    ) -> Outcome {
        let (id, members) = match self {
            BatchPhase::SigningTree(p) => (p.attempt.id, p.attempt.members.clone()),
            BatchPhase::SigningDeposits(p) => (p.attempt.id, p.attempt.members.clone()),
            BatchPhase::Renoncing(p) => return p.drop_members(culprits, &reason, ctx),
            _ => return Outcome::Nothing,
        };
        let remaining: Vec<u64> =
            members.iter().copied().filter(|m| !culprits.contains(m)).collect();
        let next = id.number + 1;
        if remaining.is_empty() || next > ctx.max_attempts {
            give_up(self, id, &members, culprits, reason, ctx);
            return Outcome::Ended;
        }
        for m in &members {
            let abort = Abort {
                batch: ctx.batch,
                attempt: id.number,
                reason: reason.clone(),
                excluded: culprits.to_vec(),
            };
            ctx.send(*m, ToParticipant::Abort(abort));
            if !culprits.contains(m) {
                let request = NonceRequest { batch: ctx.batch, attempt: next };
                ctx.send(*m, ToParticipant::NonceRequest(request));
            }
        }
        let (round, batch) = (ctx.round, ctx.batch);
        ctx.emit(Event::AttemptAborted { round, batch, attempt: id.number, reason });
        *self = BatchPhase::Renoncing(Renoncing {
            number: next,
            waiting: remaining.clone(),
            members: remaining,
            deadline: Some(ctx.now + ctx.timeout),
        });
        Outcome::Nothing
    }

    /// A member's fresh nonces arrived (the engine checked and stored them).
    pub(super) fn renonced(&mut self, reg: u64) -> Outcome {
        match self {
            BatchPhase::Renoncing(p) => p.renonced(reg),
            _ => Outcome::Nothing,
        }
    }

    /// Whether the batch is renoncing attempt `attempt` and still waits for `reg`.
    pub(super) fn waits_for_nonces(&self, reg: u64, attempt: u32) -> bool {
        matches!(self, BatchPhase::Renoncing(p) if p.number == attempt && p.waiting.contains(&reg))
    }

    /// The driver stored (or failed to store) attempt `attempt`'s signed batch.
    pub(super) fn persisted(
        &mut self,
        attempt: u32,
        result: Result<(), PersistError>,
        ctx: &mut Ctx,
    ) -> Outcome {
        let BatchPhase::Broadcasting(p) = self else { return Outcome::Nothing };
        if p.id.number != attempt || p.awaiting != Awaiting::Store {
            return Outcome::Nothing;
        }
        match result {
            Ok(()) => {
                p.awaiting = Awaiting::Broadcast;
                let (round, batch, tx) = (ctx.round, ctx.batch, Box::new(p.tx.clone()));
                ctx.emit(Event::Broadcast { round, batch, attempt, tx });
                Outcome::Nothing
            }
            Err(e) => {
                let reason = AbortReason::Other(Reason::new(format!(
                    "the coordinator could not store the signed batch: {e}"
                )));
                *self = ctx.fail(&p.members.clone(), attempt, true, reason);
                Outcome::Ended
            }
        }
    }

    /// The driver's broadcast result.
    pub(super) fn broadcast_result(
        &mut self,
        result: Result<Txid, String>,
        ctx: &mut Ctx,
    ) -> Outcome {
        let BatchPhase::Broadcasting(p) = self else { return Outcome::Nothing };
        if p.awaiting != Awaiting::Broadcast {
            return Outcome::Nothing;
        }
        let BatchPhase::Broadcasting(p) = self.take() else { return Outcome::Nothing };
        match result {
            Ok(txid) => {
                *self = BatchPhase::Finalized(p.finalized(txid, ctx));
                Outcome::Nothing
            }
            Err(e) => {
                let reason = AbortReason::BroadcastFailed(Reason::new(e));
                *self = ctx.fail(&p.members, p.id.number, true, reason);
                Outcome::Ended
            }
        }
    }

    /// The funding transaction `txid` confirmed at `height`.
    pub(super) fn confirmed(&mut self, txid: Txid, height: u32, ctx: &mut Ctx) -> Outcome {
        match self {
            BatchPhase::Finalized(f) if f.txid == txid => {}
            _ => return Outcome::Nothing,
        }
        let BatchPhase::Finalized(f) = self.take() else { return Outcome::Nothing };
        *self = BatchPhase::Confirmed(f.confirmed(height, ctx));
        Outcome::Ended
    }
}

fn invalid_partials(culprits: Vec<u64>) -> Outcome {
    Outcome::Abort { culprits, reason: AbortReason::InvalidPartialSignature, ban: Ban::Yes }
}

fn misbehaved(reg: u64) -> Outcome {
    Outcome::Abort { culprits: vec![reg], reason: AbortReason::InvalidMessage, ban: Ban::Yes }
}

fn give_up(
    phase: &mut BatchPhase,
    id: AttemptId,
    members: &[u64],
    culprits: &[u64],
    reason: AbortReason,
    ctx: &mut Ctx,
) {
    for m in members {
        let told = if culprits.contains(m) { reason.clone() } else { AbortReason::MaxAttempts };
        let abort = Abort {
            batch: ctx.batch,
            attempt: id.number,
            reason: told,
            excluded: culprits.to_vec(),
        };
        ctx.send(*m, ToParticipant::Abort(abort));
    }
    let (round, batch) = (ctx.round, ctx.batch);
    ctx.emit(Event::AttemptAborted { round, batch, attempt: id.number, reason: reason.clone() });
    ctx.emit(Event::BatchFailed { round, batch, reason });
    *phase = BatchPhase::Failed;
}

/// A failed store write, as the driver reports it.
pub type PersistError = Box<dyn std::error::Error + Send + Sync>;

/// Waiting for fresh nonces from the members left, then for the attempt to be built.
#[derive(Debug)]
pub struct Renoncing {
    number: u32,
    members: Vec<u64>,
    waiting: Vec<u64>,
    /// `None` for a first attempt, which waits for nobody.
    deadline: Option<Instant>,
}

impl Renoncing {
    /// A batch's first attempt: its members' registration nonces are fresh.
    pub(super) fn first(members: Vec<u64>) -> (Renoncing, Outcome) {
        let build = Outcome::Build { number: 1, members: members.clone() };
        (Renoncing { number: 1, members, waiting: Vec::new(), deadline: None }, build)
    }

    /// The attempt being prepared.
    pub fn number(&self) -> u32 {
        self.number
    }

    fn renonced(&mut self, reg: u64) -> Outcome {
        if !self.waiting.contains(&reg) {
            return Outcome::Nothing;
        }
        self.waiting.retain(|w| *w != reg);
        self.ready()
    }

    fn ready(&self) -> Outcome {
        if !self.waiting.is_empty() {
            return Outcome::Nothing;
        }
        Outcome::Build { number: self.number, members: self.members.clone() }
    }

    fn drop_members(&mut self, culprits: &[u64], reason: &AbortReason, ctx: &mut Ctx) -> Outcome {
        let aborted = self.number.saturating_sub(1);
        self.members.retain(|m| !culprits.contains(m));
        self.waiting.retain(|m| !culprits.contains(m));
        for id in culprits {
            let abort = Abort {
                batch: ctx.batch,
                attempt: aborted,
                reason: reason.clone(),
                excluded: vec![*id],
            };
            ctx.send(*id, ToParticipant::Abort(abort));
        }
        self.ready()
    }

    /// The attempt built: every member gets its proposal.
    pub(super) fn proposed(self, attempt: Attempt, ctx: &mut Ctx) -> BatchPhase {
        for (m, id) in attempt.members.iter().enumerate() {
            ctx.send(*id, ToParticipant::Proposal(attempt.proposal(m)));
        }
        ctx.emit(Event::Proposed {
            round: ctx.round,
            batch: ctx.batch,
            attempt: attempt.number(),
            funding_tx: Box::new(attempt.funding().clone()),
            members: attempt.members.clone(),
        });
        BatchPhase::SigningTree(SigningTree::new(attempt, ctx.now + ctx.timeout))
    }

    /// The attempt could not be built: `members` are told, the batch fails.
    pub(super) fn not_built(
        self,
        members: &[u64],
        error: &BuildError,
        ctx: &mut Ctx,
    ) -> BatchPhase {
        let reason = AbortReason::Other(Reason::new(error_chain(error)));
        ctx.fail(members, self.number, false, reason)
    }
}

/// An error and its sources, one line.
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// How a member's contribution was taken.
enum Delivery {
    /// Taken (or repeated); others still owe theirs.
    Wait,
    /// Everyone has delivered.
    Complete,
    /// Invalid, or different from what it sent before.
    Bad,
}

fn delivery<E>(offer: Result<Offer, super::slots::SlotError<E>>) -> Delivery {
    match offer {
        Ok(Offer::Taken { complete: true }) => Delivery::Complete,
        Ok(Offer::Taken { complete: false } | Offer::Repeated) => Delivery::Wait,
        Err(_) => Delivery::Bad,
    }
}

/// Collecting every member's tree partial signatures.
#[derive(Debug)]
pub struct SigningTree {
    attempt: Box<Attempt>,
    sigs: Slots<Vec<NodePartial>>,
    /// `partials[node][leaf - first leaf of node]`.
    partials: Vec<Vec<Option<PartialSignature>>>,
    deadline: Instant,
}

impl SigningTree {
    fn new(attempt: Attempt, deadline: Instant) -> SigningTree {
        let shape = attempt.batch.tree.shape();
        let partials = shape.nodes().iter().map(|n| vec![None; n.leaves.len()]).collect();
        let sigs = Slots::new(attempt.members.clone());
        SigningTree { attempt: Box::new(attempt), sigs, partials, deadline }
    }

    /// The attempt.
    pub fn attempt(&self) -> &Attempt {
        &self.attempt
    }

    fn offer(&mut self, reg: u64, mut sigs: Vec<NodePartial>) -> Delivery {
        let Some(m) = self.attempt.member_index(reg) else { return Delivery::Wait };
        // The same signatures in another order are the same contribution.
        sigs.sort_unstable_by_key(|s| (s.node, s.leaf));
        let attempt = &self.attempt;
        let offer = self.sigs.offer(m, sigs, |s| attempt.check_tree_sigs(m, s));
        if matches!(offer, Ok(Offer::Taken { .. })) {
            if let Some(sent) = self.sigs.get(m) {
                let shape = self.attempt.batch.tree.shape();
                for s in sent {
                    // Checked above: the node exists and the leaf is under it.
                    let (node, leaf) = (s.node as usize, s.leaf as usize);
                    let first = shape.nodes().get(node).map_or(0, |n| n.leaves.start);
                    let slot = self.partials.get_mut(node);
                    if let Some(slot) = slot.and_then(|p| p.get_mut(leaf.wrapping_sub(first))) {
                        *slot = Some(s.psig);
                    }
                }
            }
        }
        delivery(offer)
    }

    /// Every node signed (`node_sigs` from `combine_tree`): each member gets the
    /// signatures of its paths.
    fn signed(self, node_sigs: Vec<schnorr::Signature>, ctx: &mut Ctx) -> SigningDeposits {
        let number = self.attempt.number();
        for (m, id) in self.attempt.members.iter().enumerate() {
            let sigs = self.attempt.signed_tree_for(m, &node_sigs);
            let msg = SignedTree { batch: ctx.batch, attempt: number, sigs };
            ctx.send(*id, ToParticipant::SignedTree(msg));
        }
        ctx.emit(Event::TreeSigned {
            round: ctx.round,
            batch: ctx.batch,
            attempt: number,
            nodes: self.attempt.signed_nodes(&node_sigs),
        });
        let inputs = self.attempt.funding().input.len();
        SigningDeposits {
            sigs: Slots::new(self.attempt.members.clone()),
            attempt: self.attempt,
            node_sigs,
            partials: vec![None; inputs],
            deadline: ctx.now + ctx.timeout,
        }
    }
}

/// The tree is signed; collecting every member's deposit partial signatures.
#[derive(Debug)]
pub struct SigningDeposits {
    attempt: Box<Attempt>,
    node_sigs: Vec<schnorr::Signature>,
    sigs: Slots<Vec<DepositPartial>>,
    partials: Vec<Option<PartialSignature>>,
    deadline: Instant,
}

impl SigningDeposits {
    /// The attempt.
    pub fn attempt(&self) -> &Attempt {
        &self.attempt
    }

    fn offer(&mut self, reg: u64, mut sigs: Vec<DepositPartial>) -> Delivery {
        let Some(m) = self.attempt.member_index(reg) else { return Delivery::Wait };
        sigs.sort_unstable_by_key(|s| s.input);
        let attempt = &self.attempt;
        let offer = self.sigs.offer(m, sigs, |s| attempt.check_deposit_sigs(m, s));
        if matches!(offer, Ok(Offer::Taken { .. })) {
            if let Some(sent) = self.sigs.get(m) {
                for s in sent {
                    if let Some(slot) = self.partials.get_mut(s.input as usize) {
                        *slot = Some(s.psig);
                    }
                }
            }
        }
        delivery(offer)
    }

    /// Every deposit signed (`tx` from `complete_funding`): the driver is asked to
    /// store the batch.
    fn signed(self, tx: Transaction, ctx: &mut Ctx) -> Broadcasting {
        let id = self.attempt.id;
        ctx.emit(Event::PersistBatch {
            round: ctx.round,
            batch: ctx.batch,
            attempt: id.number,
            members: self.attempt.members.clone(),
            funding_tx: Box::new(tx.clone()),
            nodes: self.attempt.signed_nodes(&self.node_sigs),
        });
        Broadcasting { id, members: self.attempt.members, tx, awaiting: Awaiting::Store }
    }
}

/// What `Broadcasting` waits for from the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    /// `batch_persisted` for this attempt.
    Store,
    /// `broadcast_result`.
    Broadcast,
}

/// The funding transaction is complete: stored, then broadcast, by the driver.
#[derive(Debug)]
pub struct Broadcasting {
    id: AttemptId,
    members: Vec<u64>,
    tx: Transaction,
    awaiting: Awaiting,
}

impl Broadcasting {
    fn finalized(self, txid: Txid, ctx: &mut Ctx) -> Finalized {
        for id in &self.members {
            let msg = FinalizedMsg { batch: ctx.batch, txid };
            ctx.send(*id, ToParticipant::Finalized(msg));
        }
        ctx.emit(Event::BatchFinalized {
            round: ctx.round,
            batch: ctx.batch,
            attempts: self.id.number,
            txid,
            members: self.members.clone(),
        });
        Finalized { attempts: self.id.number, members: self.members, txid }
    }
}

/// Broadcast; waiting for the funding transaction to confirm.
#[derive(Debug)]
pub struct Finalized {
    attempts: u32,
    members: Vec<u64>,
    txid: Txid,
}

impl Finalized {
    fn confirmed(self, height: u32, ctx: &mut Ctx) -> Confirmed {
        for id in &self.members {
            let msg = ConfirmedMsg { batch: ctx.batch, height };
            ctx.send(*id, ToParticipant::Confirmed(msg));
        }
        ctx.emit(Event::BatchConfirmed {
            round: ctx.round,
            batch: ctx.batch,
            attempt: self.attempts,
            height,
        });
        Confirmed { txid: self.txid }
    }
}

/// The funding transaction confirmed.
#[derive(Debug)]
pub struct Confirmed {
    /// The funding txid.
    pub txid: Txid,
}
