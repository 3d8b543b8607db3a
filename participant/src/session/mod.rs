//! The participant's sans-IO session engine: registers, checks every proposal, signs
//! the tree, has its exit paths stored, and only then signs its deposits.
//!
//! # Call order
//!
//! A driver owns one [`Session`] per round and, in a loop:
//!
//! 1. feeds every message from the coordinator to [`Session::handle_message`] (after
//!    the `Hello` exchange, which the driver handles itself), and calls
//!    [`Session::handle_timeout`] when the instant of [`Session::poll_timeout`] passes;
//! 2. drains [`Session::poll_transmit`] to the coordinator, in order;
//! 3. drains [`Session::poll_event`]. On [`Event::PersistExitPaths`] it stores the paths
//!    durably and then calls [`Session::exit_paths_persisted`]; deposit signatures go
//!    out only after that call, for exactly that batch and attempt.
//!
//! The session never reads a clock, a socket or a disk. It ends after exactly one of
//! [`Event::Confirmed`], [`Event::Refused`] or [`Event::Failed`]; [`Session::phase`]
//! is then `Confirmed`, `Refused` or `Failed`. Messages that do not fit the current
//! phase are ignored without any state change. Secret nonces and cosigner keys live
//! only inside the phase that uses them and are never part of an event.
//!
//! # Timeouts
//!
//! After each message it acts on, the session expects the next within
//! `phase_timeout_ms × TIMEOUT_FACTOR` (the coordinator may be waiting on others). On
//! expiry it sends `Cancel` if it has not signed its deposits, emits
//! `Failed(CoordinatorTimeout)` and stops. Once `Finalized` arrives there is no deadline:
//! confirmation takes blocks, and the funding tx is already out.

mod caches;
mod checks;
mod phases;
mod register;
mod signing;

#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::{OsRng, StdRng};
use rand::{RngCore, SeedableRng};

use bitcoin::{Amount, OutPoint, ScriptBuf, Transaction, TxOut, Txid};
use cohort_common::keys::Keypair;
use cohort_common::messages::{AbortReason, Reason, RefusalReason, ToCoordinator, ToParticipant};
use cohort_common::params::LeafOutput;
use cohort_common::scripts::DepositScript;

pub use caches::{DecodedBody, SharedCaches, BODY_DECODE_LIMIT};
pub use checks::{ProposalError, ProposalLimits};
pub use register::ParamsError;
pub use signing::{DepositSigningError, PathError, SignedTreeError};

use phases::{Ctx, Outbox, State, Step};

/// The session waits `phase_timeout_ms` times this for the coordinator's next message.
pub const TIMEOUT_FACTOR: u32 = 4;

/// A deposit the participant owns and offers into the round.
#[derive(Debug, Clone)]
pub struct OwnedDeposit {
    /// The deposit UTXO.
    pub outpoint: OutPoint,
    /// Its output (amount and the static address's script).
    pub txout: TxOut,
    /// The static deposit address's script (`U`, `C`, `deposit_csv`).
    pub script: DepositScript,
    /// The deposit key `U`.
    pub key: Keypair,
}

/// What the participant wants from the round.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Deposits to spend into the batch.
    pub deposits: Vec<OwnedDeposit>,
    /// Fixed leaves, in order.
    pub leaves: Vec<LeafOutput>,
    /// Where the remainder leaf pays.
    pub remainder_script: ScriptBuf,
    /// Largest total fee accepted (own deposits minus own leaves).
    pub max_fee: Amount,
    /// Limits on the batches signed: size, depth, exit cost.
    pub limits: ProposalLimits,
}

/// One fully signed exit path: the node transactions from the root down to the node
/// paying the leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitPath {
    /// Leaf index in the batch.
    pub leaf: u32,
    /// The output the leaf pays.
    pub leaf_output: TxOut,
    /// The node paying it.
    pub node: u32,
    /// The output index of the leaf in that node's transaction.
    pub vout: u32,
    /// Fully signed transactions, root first.
    pub path: Vec<Transaction>,
}

/// What the session tells its driver.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The coordinator accepted the registration.
    Registered {
        /// Round number.
        round: u64,
        /// The coordinator's identifier of the registration.
        registration: u64,
    },
    /// The coordinator refused the registration; the session is over.
    Refused(RefusalReason),
    /// The proposal passed every check; tree signatures were sent.
    ProposalAccepted {
        /// Batch number.
        batch: u32,
        /// Attempt number.
        attempt: u32,
    },
    /// The proposal failed a check; nothing was signed, `Cancel` was sent.
    ProposalRejected {
        /// Batch number (0 when the body did not decode before the first proposal).
        batch: u32,
        /// Attempt number.
        attempt: u32,
        /// The failed check.
        reason: ProposalError,
    },
    /// Store these paths durably, then call [`Session::exit_paths_persisted`].
    PersistExitPaths {
        /// Round number.
        round: u64,
        /// Batch number.
        batch: u32,
        /// Attempt number.
        attempt: u32,
        /// The unsigned funding transaction whose output 0 the paths spend.
        funding_tx: Transaction,
        /// One per own leaf (request order, the remainder last).
        paths: Vec<ExitPath>,
    },
    /// Deposit signatures were sent.
    DepositSigsSent {
        /// Batch number.
        batch: u32,
        /// Attempt number.
        attempt: u32,
    },
    /// The attempt was aborted; nothing was broadcast.
    Aborted {
        /// Batch number.
        batch: u32,
        /// The aborted attempt.
        attempt: u32,
        /// Why.
        reason: AbortReason,
        /// Whether this participant is excluded (the session then ends).
        excluded: bool,
    },
    /// The funding tx was broadcast.
    Finalized {
        /// Batch number.
        batch: u32,
        /// Its txid, as the coordinator reports it.
        txid: Txid,
    },
    /// The funding tx confirmed; the session is over.
    Confirmed {
        /// Batch number.
        batch: u32,
        /// Height of its block.
        height: u32,
    },
    /// The session is over without success.
    Failed(SessionError),
}

/// The phase a session is in (for progress display).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum PhaseName {
    /// Waiting for a round announcement.
    Idle,
    /// Registration sent.
    Registering,
    /// Registered; waiting for a proposal.
    AwaitingProposal,
    /// Tree signatures sent.
    TreeSigned,
    /// Waiting for the driver to store the exit paths.
    AwaitingPersist,
    /// Deposit signatures sent.
    DepositsSigned,
    /// Attempt aborted; waiting for the next attempt's nonce request.
    AwaitingNonceRequest,
    /// Funding tx broadcast.
    Finalized,
    /// Terminal: the funding tx confirmed.
    Confirmed,
    /// Terminal: the registration was refused.
    Refused,
    /// Terminal: the session failed or was cancelled.
    Failed,
}

/// Why a session ended without success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The coordinator sent nothing in time.
    #[error("coordinator timed out in phase {phase:?}")]
    CoordinatorTimeout {
        /// The phase waited in.
        phase: PhaseName,
    },
    /// The round's parameters (or the own configuration) do not allow registering.
    #[error("cannot register: {0}")]
    BadRound(ParamsError),
    /// A proposal failed a check (ignore: nothing was signed).
    #[error("proposal refused: {0}")]
    ProposalRejected(ProposalError),
    /// The final tree signatures failed a check, or the deposits could not be signed;
    /// no deposit signature was sent.
    #[error("signed tree refused: {0}")]
    SignedTree(SignedTreeError),
    /// The coordinator excluded this participant from the batch.
    #[error("excluded from batch {batch} at attempt {attempt}")]
    Excluded {
        /// Batch number.
        batch: u32,
        /// The aborted attempt.
        attempt: u32,
    },
    /// The coordinator dropped the batch.
    #[error("batch {batch} dropped: {reason}")]
    BatchDropped {
        /// Batch number.
        batch: u32,
        /// Why.
        reason: AbortReason,
    },
    /// The driver cancelled the session.
    #[error("cancelled")]
    Cancelled,
    /// The coordinator closed the session.
    #[error("coordinator said goodbye: {0}")]
    CoordinatorGoodbye(Reason),
}

/// Where a session draws its cosigner keys, secret nonces and the auxiliary randomness
/// of its ownership signatures: the operating system by default, a seeded generator in
/// simulations and tests (so a seeded run is reproducible). Either way every attempt
/// draws fresh secrets, which live only in memory and sign at most once.
pub struct Randomness(Box<dyn RngCore + Send>);

impl Randomness {
    /// The operating system's randomness (what a wallet uses).
    pub fn os() -> Self {
        Randomness(Box::new(OsRng))
    }

    /// A generator seeded with `seed`: the same seed gives the same keys and nonces, so
    /// it is for simulations and tests only.
    pub fn seeded(seed: [u8; 32]) -> Self {
        Randomness(Box::new(StdRng::from_seed(seed)))
    }
}

impl Default for Randomness {
    fn default() -> Self {
        Randomness::os()
    }
}

impl std::fmt::Debug for Randomness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Randomness")
    }
}

impl RngCore for Randomness {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }

    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest);
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.0.try_fill_bytes(dest)
    }
}

/// The participant's session engine for one round (see the module documentation).
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    caches: Option<Arc<SharedCaches>>,
    rng: Randomness,
    state: State,
    out: Outbox,
    /// `phase_timeout_ms × TIMEOUT_FACTOR`, once a round is announced.
    wait: Option<Duration>,
    deadline: Option<Instant>,
}

impl Session {
    /// A session waiting for a round announcement, drawing its secrets from the
    /// operating system. `caches` are for many sessions in one process (the simulator);
    /// a wallet passes `None` and runs every check on its own.
    pub fn new(config: SessionConfig, caches: Option<Arc<SharedCaches>>) -> Self {
        Session::with_randomness(config, caches, Randomness::os())
    }

    /// A session waiting for a round announcement, drawing its secrets from `rng`.
    pub fn with_randomness(
        config: SessionConfig,
        caches: Option<Arc<SharedCaches>>,
        rng: Randomness,
    ) -> Self {
        Session {
            config,
            caches,
            rng,
            state: State::Idle,
            out: Outbox::default(),
            wait: None,
            deadline: None,
        }
    }

    /// Feeds one message from the coordinator.
    pub fn handle_message(&mut self, now: Instant, msg: ToParticipant) {
        if let ToParticipant::RoundAnnounce(a) = &msg {
            if matches!(self.state, State::Idle) {
                let ms = a.params.phase_timeout_ms.saturating_mul(u64::from(TIMEOUT_FACTOR));
                self.wait = Some(Duration::from_millis(ms));
            }
        }
        let state = std::mem::replace(&mut self.state, State::Done(PhaseName::Failed));
        let mut ctx = Ctx {
            config: &self.config,
            caches: self.caches.as_deref(),
            rng: &mut self.rng,
            out: &mut self.out,
        };
        let (next, acted) = match step(state, msg, &mut ctx) {
            Step::Acted(next) => (next, true),
            Step::Ignored(unchanged) => (unchanged, false),
        };
        self.state = next;
        if acted {
            self.arm(now);
        }
    }

    /// Call when the instant of [`Session::poll_timeout`] has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(deadline) = self.deadline else { return };
        if now < deadline {
            return;
        }
        let phase = self.state.name();
        let cancel = self.state.may_cancel();
        let mut ctx = Ctx {
            config: &self.config,
            caches: self.caches.as_deref(),
            rng: &mut self.rng,
            out: &mut self.out,
        };
        self.state = ctx.fail(SessionError::CoordinatorTimeout { phase }, cancel);
        self.deadline = None;
    }

    /// The driver stored the exit paths of (batch, attempt) durably: now deposit
    /// signatures may go out. Any other (batch, attempt) is ignored.
    pub fn exit_paths_persisted(&mut self, now: Instant, batch: u32, attempt: u32) {
        let state = std::mem::replace(&mut self.state, State::Done(PhaseName::Failed));
        let mut ctx = Ctx {
            config: &self.config,
            caches: self.caches.as_deref(),
            rng: &mut self.rng,
            out: &mut self.out,
        };
        self.state = match state {
            State::AwaitingPersist(p) if p.is_for(batch, attempt) => p.persisted(&mut ctx),
            other => {
                self.state = other;
                return;
            }
        };
        self.arm(now);
    }

    /// Leaves the round. Before deposit signatures, sends `Cancel` and ends the session
    /// with `Failed(Cancelled)`; afterwards it is too late and nothing happens.
    pub fn cancel(&mut self, now: Instant) {
        let _ = now;
        let cancel = self.state.may_cancel();
        if !cancel && !matches!(self.state, State::Idle) {
            return;
        }
        let mut ctx = Ctx {
            config: &self.config,
            caches: self.caches.as_deref(),
            rng: &mut self.rng,
            out: &mut self.out,
        };
        self.state = ctx.fail(SessionError::Cancelled, cancel);
        self.deadline = None;
    }

    /// The next message for the coordinator.
    pub fn poll_transmit(&mut self) -> Option<ToCoordinator> {
        self.out.transmits.pop_front()
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.out.events.pop_front()
    }

    /// When [`Session::handle_timeout`] must be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// The current phase.
    pub fn phase(&self) -> PhaseName {
        self.state.name()
    }

    /// Sets the deadline for the phase just entered.
    fn arm(&mut self, now: Instant) {
        self.deadline = match (&self.state, self.wait) {
            (State::Idle | State::Finalized(_) | State::Done(_), _) | (_, None) => None,
            (_, Some(wait)) => now.checked_add(wait),
        };
    }
}

/// One message against the current phase: `Acted(next)` when it acted, `Ignored(state)`
/// (unchanged) when the message does not fit.
fn step(state: State, msg: ToParticipant, ctx: &mut Ctx<'_>) -> Step {
    use ToParticipant as M;
    match (state, msg) {
        (State::Done(name), _) => Step::Ignored(State::Done(name)),
        (_, M::Goodbye(g)) => {
            Step::Acted(ctx_fail(ctx, SessionError::CoordinatorGoodbye(g.reason)))
        }
        (State::Idle, M::RoundAnnounce(a)) => Step::Acted(phases::on_announce(&a, ctx)),
        (State::Registering(p), M::Registered(r)) if r.round == p.round() => {
            Step::Acted(p.registered(r.registration, ctx))
        }
        (State::Registering(_), M::Refused(r)) => Step::Acted(refused(r.reason, ctx)),
        (State::AwaitingProposal(p), M::Refused(r)) if p.may_be_refused() => {
            Step::Acted(refused(r.reason, ctx))
        }
        (State::AwaitingProposal(p), M::Proposal(proposal)) => {
            Step::Acted(p.proposal(&proposal, ctx))
        }
        (State::TreeSigned(p), M::SignedTree(s)) if p.answers(&s) => {
            Step::Acted(p.signed_tree(&s, ctx))
        }
        (state, M::Abort(a)) => phases::on_abort(state, &a, ctx),
        (State::AwaitingNonceRequest(p), M::NonceRequest(r)) => {
            p.nonce_request(r.batch, r.attempt, ctx)
        }
        (State::DepositsSigned(p), M::Finalized(f)) if f.batch == p.batch() => {
            Step::Acted(p.finalized(f.txid, ctx))
        }
        (State::Finalized(p), M::Confirmed(c)) if c.batch == p.batch() => {
            Step::Acted(p.confirmed(c.height, ctx))
        }
        (state, _) => Step::Ignored(state),
    }
}

fn refused(reason: RefusalReason, ctx: &mut Ctx<'_>) -> State {
    ctx.out.events.push_back(Event::Refused(reason));
    State::Done(PhaseName::Refused)
}

fn ctx_fail(ctx: &mut Ctx<'_>, error: SessionError) -> State {
    ctx.out.events.push_back(Event::Failed(error));
    State::Done(PhaseName::Failed)
}
