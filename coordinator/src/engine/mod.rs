//! The coordinator's sans-IO round engine.
//!
//! Call order: [`Coordinator::start_round`] opens registration; the driver feeds
//! [`Coordinator::peer_connected`], [`Coordinator::handle_message`] (a `Register` comes
//! with what the chain says about its deposits, see [`Inbound::resolve`]),
//! [`Coordinator::peer_disconnected`], [`Coordinator::handle_timeout`] (when
//! [`Coordinator::poll_timeout`] is due), [`Coordinator::batch_persisted`] once it
//! stored what [`Event::PersistBatch`] asked for, [`Coordinator::broadcast_result`]
//! after it broadcast what [`Event::Broadcast`] asked for, and [`Coordinator::confirmed`]
//! when a funding transaction confirms; after each call it drains
//! [`Coordinator::poll_transmit`] and [`Coordinator::poll_event`]. The engine never
//! reads a clock, a socket, a disk or the chain: time comes in as `now`, chain data
//! with the message, randomness from the one source it was given, and everything it
//! wants done comes out as messages and events. Per-node CPU work runs on rayon inside
//! the calls, so drivers run the engine on a blocking thread, not on the async reactor.
//!
//! The engine only routes: peer → registration → batch. Each batch of a round is its
//! own state machine (`batch.rs`, the whole lifecycle in one file); a failure in one
//! batch aborts only that batch's attempt, excludes the culprits (banning their
//! deposits) and rebuilds the batch without them, up to `max_attempts`.
//!
//! Files: `register.rs` (registration checks, chain data), `batch.rs` (a batch's
//! phases), `attempt.rs` (one built attempt: proposals, combination), `slots.rs`
//! (per-member contributions), `failure.rs` (exclusion, bans, renonce, deadlines),
//! `withdraw.rs` (co-signing cooperative withdrawals), `events.rs` (what the driver is
//! told), `config.rs`.

mod attempt;
mod batch;
mod config;
mod events;
mod failure;
mod register;
mod slots;
mod withdraw;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use bitcoin::{OutPoint, Txid};
use rand::{CryptoRng, RngCore};
use rayon::prelude::*;

use cohort_common::batch::{group_batches, BatchLimits, NonceSeed};
use cohort_common::fees::FeeError;
use cohort_common::keys::Keypair;
use cohort_common::messages::{
    AbortReason, ParamsError, Reason, RefusalReason, Refused, RoundAnnounce, RoundParams,
    ToCoordinator, ToParticipant,
};

pub use attempt::{Attempt, AttemptId, AttemptSecrets, BuildError, ContributionError, Member};
pub use batch::{
    Ban, BatchPhase, Broadcasting, Confirmed, Finalized, PersistError, Renoncing, SigningDeposits,
    SigningTree,
};
pub use config::CoordinatorConfig;
pub use events::Event;
pub use register::{
    is_standard_leaf, ChainFacts, ChainOutage, DepositLookup, DepositScripts, Inbound, Taken,
};
pub use slots::{Offer, SlotError, Slots};
pub use withdraw::{lookup as withdraw_lookup, Cosigned};

use batch::{Ctx, Outcome};

/// A connection's identity, chosen by the driver.
pub type PeerId = u64;

/// A cryptographically secure random source the engine can own.
pub trait SecureRng: RngCore + CryptoRng + Send {}

impl<R: RngCore + CryptoRng + Send> SecureRng for R {}

/// The engine's one source of randomness: batch keys, nonces and round challenges.
pub type EngineRng = Box<dyn SecureRng>;

struct RandomSource(EngineRng);

impl std::fmt::Debug for RandomSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RandomSource")
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

/// Where a round stands, as [`Coordinator::round_stage`] tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoundStage {
    /// Taking registrations.
    Registration,
    /// Registration closed; batches are being signed, broadcast or confirmed.
    Running,
    /// Every batch is confirmed or failed.
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

/// A deposit's ban: until when, and after how many offences (kept once the ban expires,
/// so that the next one is longer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BanState {
    /// Refused while `now < until`.
    pub until: Instant,
    /// Offences so far.
    pub offences: u32,
}

/// The coordinator's round engine. See the module documentation for the call order.
#[derive(Debug)]
pub struct Coordinator {
    key: Keypair,
    config: CoordinatorConfig,
    rng: RandomSource,
    next_round: u64,
    next_registration: u64,
    round: Option<Round>,
    peers: HashMap<PeerId, Option<u64>>,
    bans: HashMap<OutPoint, BanState>,
    /// Deposits with a co-signed withdrawal, kept out of every round.
    withdrawing: withdraw::Withdrawing,
    /// Deposit scripts of addresses seen at registration, kept across rounds.
    scripts: register::DepositScripts,
    /// Messages by registration, routed to peers after each call.
    sends: Vec<(u64, ToParticipant)>,
    outbox: VecDeque<(PeerId, ToParticipant)>,
    events: VecDeque<Event>,
}

impl Coordinator {
    /// An engine with the coordinator's long-term key `C`, drawing its randomness from
    /// the operating system; `config` must pass [`CoordinatorConfig::validate`].
    pub fn new(key: Keypair, config: CoordinatorConfig) -> Result<Self, ParamsError> {
        Self::with_rng(key, config, Box::new(rand::rngs::OsRng))
    }

    /// An engine drawing every batch key, nonce seed and challenge from `rng` (seeded in
    /// simulations and tests, so a run repeats exactly).
    pub fn with_rng(
        key: Keypair,
        config: CoordinatorConfig,
        rng: EngineRng,
    ) -> Result<Self, ParamsError> {
        config.validate(key.public)?;
        Ok(Coordinator {
            key,
            config,
            rng: RandomSource(rng),
            next_round: 1,
            next_registration: 1,
            round: None,
            peers: HashMap::new(),
            bans: HashMap::new(),
            withdrawing: HashMap::new(),
            scripts: register::DepositScripts::default(),
            sends: Vec::new(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    /// The coordinator's long-term public key.
    pub fn public_key(&self) -> bitcoin::secp256k1::PublicKey {
        self.key.public
    }

    /// Continues round numbering after a restart.
    pub fn set_next_round(&mut self, round: u64) {
        self.next_round = self.next_round.max(round);
    }

    /// Restores a ban (from storage, at start-up): banned until `until` (which may have
    /// passed), after `offences` offences so far.
    pub fn restore_ban(&mut self, outpoint: OutPoint, until: Instant, offences: u32) {
        self.bans.insert(outpoint, BanState { until, offences });
    }

    /// Whether a deposit is banned at `now`.
    pub fn is_banned(&self, outpoint: &OutPoint, now: Instant) -> bool {
        self.bans.get(outpoint).is_some_and(|b| b.until > now)
    }

    /// Lifts the ban of a deposit now (its offence count is kept, so that a next offence
    /// is banned longer); whether it was banned.
    pub fn lift_ban(&mut self, outpoint: &OutPoint, now: Instant) -> bool {
        match self.bans.get_mut(outpoint) {
            Some(ban) if ban.until > now => {
                ban.until = now;
                true
            }
            _ => false,
        }
    }

    /// How many deposits are banned at `now`.
    pub fn bans_in_force(&self, now: Instant) -> usize {
        self.bans.values().filter(|b| b.until > now).count()
    }

    /// Where the current round stands (`None`: no round has started).
    pub fn round_stage(&self) -> Option<RoundStage> {
        self.round.as_ref().map(|r| match r.phase {
            RoundPhase::Registration { .. } => RoundStage::Registration,
            RoundPhase::Running => RoundStage::Running,
            RoundPhase::Done => RoundStage::Done,
        })
    }

    /// Registrations accepted into the current round.
    pub fn registrations(&self) -> usize {
        self.round.as_ref().map_or(0, |r| r.registrations.len())
    }

    /// The current round's number, if one is running.
    pub fn current_round(&self) -> Option<u64> {
        self.round.as_ref().map(|r| r.params.round)
    }

    /// The current round's challenge (also in its announcement).
    pub fn challenge(&self) -> Option<[u8; 32]> {
        self.round.as_ref().map(|r| r.challenge)
    }

    /// Whether the current round (if any) has finished.
    pub fn round_finished(&self) -> bool {
        self.round.as_ref().is_none_or(|r| matches!(r.phase, RoundPhase::Done))
    }

    /// The phases of the current round's batches.
    pub fn batches(&self) -> &[BatchPhase] {
        self.round.as_ref().map_or(&[], |r| &r.batches)
    }

    /// The most deposits a registration may offer: a driver looks up no more.
    pub fn max_deposits_per_registration(&self) -> usize {
        usize::from(self.config.max_deposits_per_registration)
    }

    /// Opens registration for a new round, with a challenge from the engine's random
    /// source, and announces it to every connected peer.
    pub fn start_round(&mut self, now: Instant) -> u64 {
        let round = self.next_round;
        self.next_round += 1;
        let mut challenge = [0u8; 32];
        self.rng.0.fill_bytes(&mut challenge);
        let c = &self.config;
        let params = c.round_params(round, self.key.public);
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
        if self.withdraw_before_batches(reg) || !self.still_needs(reg) {
            // Its deposit signatures are in: the batch completes without it, and it
            // learns the outcome from the chain and its stored exit paths.
            return;
        }
        self.fail_member(now, reg, AbortReason::Timeout, Ban::Yes);
    }

    /// Takes one message from a participant, with the chain data it needs.
    pub fn handle_message(&mut self, now: Instant, peer: PeerId, input: Inbound) {
        let msg = match input {
            Inbound::Register(reg, facts) => return self.on_register(now, peer, *reg, facts),
            Inbound::Message(msg) => msg,
        };
        if let ToCoordinator::Register(reg) = msg {
            let facts = Err(ChainOutage::NotLookedUp);
            return self.on_register(now, peer, reg, facts);
        }
        if let ToCoordinator::Goodbye(_) = msg {
            return self.peer_disconnected(now, peer);
        }
        if let ToCoordinator::Withdraw(_) = msg {
            // A driver answers withdrawals itself ([`Coordinator::withdraw`]): the answer
            // must wait for its record to be stored.
            let why = "withdrawals are not served on this connection";
            return self.refuse(peer, RefusalReason::Other(Reason::new(why)));
        }
        let Some(reg) = self.registration_of(peer) else { return };
        match msg {
            ToCoordinator::TreeSigs(sigs) => {
                self.with_batch(now, reg, |phase, ctx| phase.tree_sigs(reg, sigs, ctx))
            }
            ToCoordinator::DepositSigs(sigs) => {
                self.with_batch(now, reg, |phase, ctx| phase.deposit_sigs(reg, sigs, ctx))
            }
            ToCoordinator::Renonce(renonce) => self.on_renonce(now, reg, renonce),
            ToCoordinator::Cancel(_) => self.on_cancel(now, peer, reg),
            ToCoordinator::Register(_)
            | ToCoordinator::Goodbye(_)
            | ToCoordinator::Hello(_)
            | ToCoordinator::Withdraw(_) => {}
        }
    }

    fn registration_of(&self, peer: PeerId) -> Option<u64> {
        self.peers.get(&peer).copied().flatten()
    }

    fn refuse(&mut self, peer: PeerId, reason: RefusalReason) {
        self.outbox.push_back((peer, ToParticipant::Refused(Refused { reason: reason.clone() })));
        self.events.push_back(Event::Refused { peer, reason });
    }

    /// Closes registration now: forms batches and proposes their first attempts.
    pub fn close_registration(&mut self, now: Instant) {
        let Some(round) = &mut self.round else { return };
        if !matches!(round.phase, RoundPhase::Registration { .. }) {
            return;
        }
        round.phase = RoundPhase::Running;
        // Registrations in order, as many per batch as the weight and tree allow.
        let limits = BatchLimits {
            max_batch_weight: round.params.max_batch_weight,
            payout_script_len: self.config.payout_script.len(),
            tree: round.params.tree,
        };
        let ids: Vec<u64> = round.registrations.keys().copied().collect();
        let sizes = round.registrations.values().map(|r| r.member.batch.size());
        let groups: Vec<Vec<u64>> =
            group_batches(sizes, &limits).into_iter().map(|g| ids[g].to_vec()).collect();
        let mut jobs = Vec::with_capacity(groups.len());
        for (b, group) in groups.into_iter().enumerate() {
            for id in &group {
                if let Some(reg) = round.registrations.get_mut(id) {
                    reg.batch = Some(b as u32);
                }
            }
            let (phase, build) = Renoncing::first(group);
            round.batches.push(BatchPhase::Renoncing(phase));
            if let Outcome::Build { number, members } = build {
                jobs.push((b as u32, number, members));
            }
        }
        self.events.push_back(Event::RegistrationClosed {
            round: round.params.round,
            registrations: round.registrations.len(),
            batches: round.batches.len(),
        });
        self.build_and_propose(now, jobs);
        self.maybe_finish_round();
    }

    /// Builds the given attempts in parallel (secrets drawn in order first, so a seeded
    /// engine builds the same batches) and proposes each.
    fn build_and_propose(&mut self, now: Instant, jobs: Vec<(u32, u32, Vec<u64>)>) {
        let jobs: Vec<_> = jobs
            .into_iter()
            .map(|job| {
                let rng = &mut *self.rng.0;
                let secrets = AttemptSecrets {
                    batch_key: Keypair::from_rng(rng),
                    seed: NonceSeed::from_rng(rng),
                };
                (job, secrets)
            })
            .collect();
        let Some(round) = &self.round else { return };
        let (key, config) = (&self.key, &self.config);
        let built: Vec<Built> = jobs
            .into_par_iter()
            .map(|((b, number, ids), secrets)| {
                build_one(round, key, config, b, number, ids, &secrets)
            })
            .collect();
        for b in built {
            self.install_attempt(now, b);
        }
    }

    fn install_attempt(&mut self, now: Instant, built: Built) {
        let Built { batch, members, dropped, result } = built;
        for (id, error) in dropped {
            self.drop_unpriced(batch, id, error);
        }
        let Some(round) = &mut self.round else { return };
        let Some(slot) = round.batches.get_mut(batch as usize) else { return };
        let BatchPhase::Renoncing(renoncing) = std::mem::replace(slot, BatchPhase::Failed) else {
            return;
        };
        let mut ctx =
            ctx_of(&self.config, round.params.round, batch, now, &mut self.sends, &mut self.events);
        *slot = match result {
            Ok(attempt) => renoncing.proposed(attempt, &mut ctx),
            Err(e) => renoncing.not_built(&members, &e, &mut ctx),
        };
        self.route();
    }

    /// A registration pricing left out: told why; its deposits are not banned.
    fn drop_unpriced(&mut self, batch: u32, id: u64, error: FeeError) {
        let Some(round) = &mut self.round else { return };
        let Some(r) = round.registrations.get_mut(&id) else { return };
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
            round: round.params.round,
            batch,
            registration: id,
            reason: AbortReason::Other(Reason::new("fee above max_fee or funds too small")),
        });
    }

    /// Runs `f` on the batch of `reg` and carries out what it asks for.
    fn with_batch(
        &mut self,
        now: Instant,
        reg: u64,
        f: impl FnOnce(&mut BatchPhase, &mut Ctx) -> Outcome,
    ) {
        let Some(b) = self.batch_of(reg) else { return };
        self.on_batch(now, b, f);
    }

    /// Runs `f` on batch `b` and carries out what it asks for.
    fn on_batch(
        &mut self,
        now: Instant,
        b: u32,
        f: impl FnOnce(&mut BatchPhase, &mut Ctx) -> Outcome,
    ) {
        let Some(round) = &mut self.round else { return };
        let Some(phase) = round.batches.get_mut(b as usize) else { return };
        let mut ctx =
            ctx_of(&self.config, round.params.round, b, now, &mut self.sends, &mut self.events);
        let outcome = f(phase, &mut ctx);
        self.route();
        self.carry_out(now, b, outcome);
    }

    /// What a batch asked the engine to do.
    fn carry_out(&mut self, now: Instant, b: u32, outcome: Outcome) {
        match outcome {
            Outcome::Nothing => {}
            Outcome::Abort { culprits, reason, ban } => {
                self.abort_attempt(now, b, culprits, reason, ban)
            }
            Outcome::Build { number, members } => {
                self.build_and_propose(now, vec![(b, number, members)]);
                self.maybe_finish_round();
            }
            Outcome::Ended => self.maybe_finish_round(),
        }
    }

    /// Moves the batches' messages, addressed by registration, to their peers.
    fn route(&mut self) {
        let Some(round) = &self.round else { return };
        for (reg, msg) in self.sends.drain(..) {
            if let Some(r) = round.registrations.get(&reg) {
                self.outbox.push_back((r.peer, msg));
            }
        }
    }

    fn batch_of(&self, reg: u64) -> Option<u32> {
        self.round.as_ref()?.registrations.get(&reg).filter(|r| r.active)?.batch
    }

    /// The driver stored what [`Event::PersistBatch`] asked for (or failed to): only
    /// then is the funding transaction handed out for broadcast. A failed write fails
    /// the batch.
    pub fn batch_persisted(
        &mut self,
        now: Instant,
        batch: u32,
        attempt: u32,
        result: Result<(), PersistError>,
    ) {
        self.on_batch(now, batch, |phase, ctx| phase.persisted(attempt, result, ctx));
    }

    /// The driver's answer to [`Event::Broadcast`].
    pub fn broadcast_result(&mut self, now: Instant, batch: u32, result: Result<Txid, String>) {
        self.on_batch(now, batch, |phase, ctx| phase.broadcast_result(result, ctx));
    }

    /// The driver saw a funding transaction confirm.
    pub fn confirmed(&mut self, now: Instant, txid: Txid, height: u32) {
        let count = self.batches().len();
        for b in 0..count as u32 {
            self.on_batch(now, b, |phase, ctx| phase.confirmed(txid, height, ctx));
        }
    }

    /// Funding transactions broadcast and not yet confirmed.
    pub fn awaiting_confirmation(&self) -> Vec<Txid> {
        self.batches().iter().filter_map(BatchPhase::awaiting_confirmation).collect()
    }

    /// The next deadline, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let round = self.round.as_ref()?;
        if let RoundPhase::Registration { closes_at } = round.phase {
            return Some(closes_at);
        }
        round.batches.iter().filter_map(BatchPhase::deadline).min()
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

fn ctx_of<'a>(
    config: &CoordinatorConfig,
    round: u64,
    batch: u32,
    now: Instant,
    sends: &'a mut Vec<(u64, ToParticipant)>,
    events: &'a mut VecDeque<Event>,
) -> Ctx<'a> {
    Ctx {
        round,
        batch,
        now,
        timeout: config.phase_timeout,
        max_attempts: u32::from(config.max_attempts),
        sends,
        events,
    }
}

/// Builds one attempt; members whose fees do not fit are dropped and the batch priced
/// again.
fn build_one(
    round: &Round,
    key: &Keypair,
    config: &CoordinatorConfig,
    b: u32,
    number: u32,
    mut ids: Vec<u64>,
    secrets: &AttemptSecrets,
) -> Built {
    let mut dropped = Vec::new();
    loop {
        let members: Vec<&Member> =
            ids.iter().filter_map(|id| round.registrations.get(id).map(|r| &r.member)).collect();
        if members.is_empty() {
            let result =
                Err(BuildError::Batch(cohort_common::batch::BuildError::Fees(FeeError::Empty)));
            return Built { batch: b, members: ids, dropped, result };
        }
        let id = AttemptId { round: round.params.round, batch: b, number };
        let (tree, fees) = (round.params.tree, &round.params.fees);
        let result = Attempt::build(id, &members, key, &config.payout_script, tree, fees, secrets);
        match result {
            Err(BuildError::Batch(cohort_common::batch::BuildError::Member { member, error }))
                if member < ids.len() =>
            {
                dropped.push((ids.remove(member), error));
            }
            result => return Built { batch: b, members: ids, dropped, result },
        }
    }
}
