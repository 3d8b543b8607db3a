//! The session's phases, one type each, and the transitions between them. Every
//! transition consumes the phase it leaves, so the secrets of a phase (cosigner keys,
//! secret nonces) cannot outlive it and a phase cannot be re-entered to sign twice.
//!
//! `Idle → Registering → AwaitingProposal → TreeSigned → AwaitingPersist →
//! DepositsSigned → Finalized → Done`, with `Abort` leading to `AwaitingNonceRequest`
//! and `NonceRequest` back to `AwaitingProposal` with fresh secrets.

use std::collections::VecDeque;

use bitcoin::Txid;
use cohort_common::messages::{
    Abort, Cancel, Proposal, Reason, RoundAnnounce, RoundParams, SignedTree, ToCoordinator,
};

use super::caches::SharedCaches;
use super::checks::{check_proposal, decode_body, CheckedProposal, Expect, ProposalError};
use super::register::{check_announce, DepositSecret, Secrets};
use super::signing::{check_signed_tree, sign_deposits, sign_tree};
use super::{Event, PhaseName, Randomness, SessionConfig, SessionError};

/// Messages and events waiting for the driver.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    pub transmits: VecDeque<ToCoordinator>,
    pub events: VecDeque<Event>,
}

/// What a transition may read and write besides its phase.
pub(super) struct Ctx<'a> {
    pub config: &'a SessionConfig,
    pub caches: Option<&'a SharedCaches>,
    pub rng: &'a mut Randomness,
    pub out: &'a mut Outbox,
}

impl Ctx<'_> {
    fn send(&mut self, msg: ToCoordinator) {
        self.out.transmits.push_back(msg);
    }

    fn emit(&mut self, event: Event) {
        self.out.events.push_back(event);
    }

    /// Ends the session with `error`, telling the coordinator when `cancel` is set.
    pub fn fail(&mut self, error: SessionError, cancel: bool) -> State {
        if cancel {
            self.send(ToCoordinator::Cancel(Cancel { reason: Reason::new(error.to_string()) }));
        }
        self.emit(Event::Failed(error));
        State::Done(PhaseName::Failed)
    }
}

/// The round the session registered in.
#[derive(Debug, Clone)]
pub(super) struct Round {
    pub round: u64,
    pub params: RoundParams,
    /// The coordinator's identifier of the registration (after `Registered`).
    pub registration: u64,
}

/// Sent `Register`; waiting for `Registered` or `Refused`.
#[derive(Debug)]
pub(super) struct Registering {
    round: Round,
    secrets: Secrets,
}

/// Registered (or renonced); waiting for the proposal of `attempt`.
#[derive(Debug)]
pub(super) struct AwaitingProposal {
    round: Round,
    batch: Option<u32>,
    attempt: u32,
    secrets: Secrets,
}

/// Sent `TreeSigs`; waiting for `SignedTree`. The leaf nonces are spent.
#[derive(Debug)]
pub(super) struct TreeSigned {
    round: Round,
    proposal: CheckedProposal,
    deposits: Vec<DepositSecret>,
}

/// Asked the driver to store the exit paths; deposit signatures wait for its answer.
#[derive(Debug)]
pub(super) struct AwaitingPersist {
    round: Round,
    proposal: CheckedProposal,
    deposits: Vec<DepositSecret>,
}

/// Sent `DepositSigs`; waiting for `Finalized` (or an abort caused by someone else).
#[derive(Debug)]
pub(super) struct DepositsSigned {
    round: Round,
    batch: u32,
    attempt: u32,
}

/// An attempt was aborted; waiting for the `NonceRequest` of the next one.
#[derive(Debug)]
pub(super) struct AwaitingNonceRequest {
    round: Round,
    batch: u32,
    attempt: u32,
}

/// The funding tx was broadcast; waiting for `Confirmed`.
#[derive(Debug)]
pub(super) struct Finalized {
    batch: u32,
}

/// The outcome of one input: the next state, or the same one when the input does not
/// fit the phase (then nothing changed).
#[derive(Debug)]
pub(super) enum Step {
    /// The input was acted on.
    Acted(State),
    /// The input was ignored; the state is handed back untouched.
    Ignored(State),
}

/// The session's state: exactly one phase.
#[derive(Debug)]
pub(super) enum State {
    Idle,
    Registering(Registering),
    AwaitingProposal(AwaitingProposal),
    TreeSigned(TreeSigned),
    AwaitingPersist(AwaitingPersist),
    DepositsSigned(DepositsSigned),
    AwaitingNonceRequest(AwaitingNonceRequest),
    Finalized(Finalized),
    /// Terminal: `Confirmed`, `Refused` or `Failed`.
    Done(PhaseName),
}

impl State {
    /// The phase's name.
    pub fn name(&self) -> PhaseName {
        match self {
            State::Idle => PhaseName::Idle,
            State::Registering(_) => PhaseName::Registering,
            State::AwaitingProposal(_) => PhaseName::AwaitingProposal,
            State::TreeSigned(_) => PhaseName::TreeSigned,
            State::AwaitingPersist(_) => PhaseName::AwaitingPersist,
            State::DepositsSigned(_) => PhaseName::DepositsSigned,
            State::AwaitingNonceRequest(_) => PhaseName::AwaitingNonceRequest,
            State::Finalized(_) => PhaseName::Finalized,
            State::Done(name) => *name,
        }
    }

    /// Whether the session may still leave with `Cancel` (no deposit signature sent).
    pub fn may_cancel(&self) -> bool {
        matches!(
            self,
            State::Registering(_)
                | State::AwaitingProposal(_)
                | State::TreeSigned(_)
                | State::AwaitingPersist(_)
                | State::AwaitingNonceRequest(_)
        )
    }

    /// The `(round, batch, attempt)` an abort must name to apply to this phase.
    fn current_attempt(&self) -> Option<(&Round, Option<u32>, u32)> {
        match self {
            State::AwaitingProposal(p) => Some((&p.round, p.batch, p.attempt)),
            State::TreeSigned(p) => Some((&p.round, Some(p.proposal.batch), p.proposal.attempt)),
            State::AwaitingPersist(p) => {
                Some((&p.round, Some(p.proposal.batch), p.proposal.attempt))
            }
            State::DepositsSigned(p) => Some((&p.round, Some(p.batch), p.attempt)),
            _ => None,
        }
    }
}

/// `Idle` + `RoundAnnounce`: check the round, draw secrets, register.
pub(super) fn on_announce(announce: &RoundAnnounce, ctx: &mut Ctx<'_>) -> State {
    if let Err(e) = check_announce(announce, ctx.config) {
        return ctx.fail(SessionError::BadRound(e), false);
    }
    let secrets = Secrets::fresh(ctx.config, announce.params.tree.max_depth, ctx.rng);
    match secrets.register(ctx.config, announce.round, &announce.challenge, ctx.rng) {
        Ok(register) => {
            ctx.send(ToCoordinator::Register(register));
            let round =
                Round { round: announce.round, params: announce.params.clone(), registration: 0 };
            State::Registering(Registering { round, secrets })
        }
        Err(e) => ctx.fail(SessionError::BadRound(e), false),
    }
}

impl Registering {
    /// `Registered`: wait for the first proposal.
    pub fn registered(mut self, registration: u64, ctx: &mut Ctx<'_>) -> State {
        self.round.registration = registration;
        ctx.emit(Event::Registered { round: self.round.round, registration });
        State::AwaitingProposal(AwaitingProposal {
            round: self.round,
            batch: None,
            attempt: 1,
            secrets: self.secrets,
        })
    }

    /// The round this registration is for.
    pub fn round(&self) -> u64 {
        self.round.round
    }
}

impl AwaitingProposal {
    /// Whether a `Refused` may still come (before the first proposal).
    pub fn may_be_refused(&self) -> bool {
        self.batch.is_none()
    }

    /// `Proposal`: check everything, then sign the tree (or refuse and leave).
    pub fn proposal(mut self, proposal: &Proposal, ctx: &mut Ctx<'_>) -> State {
        let (batch, attempt) = (self.batch.unwrap_or(0), self.attempt);
        let decoded = match decode_body(proposal, ctx.caches) {
            Ok(d) => d,
            Err(e) => return reject(batch, attempt, e, ctx),
        };
        let (batch, attempt) = (decoded.body.batch, decoded.body.attempt);
        let expect = Expect {
            round: self.round.round,
            batch: self.batch,
            attempt: self.attempt,
            tree: self.round.params.tree,
            fee_rate: self.round.params.fees.fee_rate,
        };
        let checked =
            check_proposal(proposal, decoded, expect, ctx.config, &self.secrets, ctx.caches);
        let checked = match checked {
            Ok(c) => c,
            Err(e) => return reject(batch, attempt, e, ctx),
        };
        match sign_tree(&checked, &mut self.secrets.leaves) {
            Ok(sigs) => {
                ctx.send(ToCoordinator::TreeSigs(sigs));
                ctx.emit(Event::ProposalAccepted { batch, attempt });
                // The cosigner keys and the (spent) leaf nonces end here.
                State::TreeSigned(TreeSigned {
                    round: self.round,
                    proposal: checked,
                    deposits: self.secrets.deposits,
                })
            }
            Err(e) => reject(batch, attempt, e, ctx),
        }
    }
}

fn reject(batch: u32, attempt: u32, reason: ProposalError, ctx: &mut Ctx<'_>) -> State {
    ctx.emit(Event::ProposalRejected { batch, attempt, reason: reason.clone() });
    ctx.fail(SessionError::ProposalRejected(reason), true)
}

impl TreeSigned {
    /// Whether `signed` answers this attempt.
    pub fn answers(&self, signed: &SignedTree) -> bool {
        signed.batch == self.proposal.batch && signed.attempt == self.proposal.attempt
    }

    /// `SignedTree`: check every final signature, then ask the driver to persist.
    pub fn signed_tree(self, signed: &SignedTree, ctx: &mut Ctx<'_>) -> State {
        match check_signed_tree(&self.proposal, signed, ctx.caches) {
            Ok(paths) => {
                ctx.emit(Event::PersistExitPaths {
                    round: self.round.round,
                    batch: self.proposal.batch,
                    attempt: self.proposal.attempt,
                    funding_tx: self.proposal.funding_tx().clone(),
                    paths,
                });
                State::AwaitingPersist(AwaitingPersist {
                    round: self.round,
                    proposal: self.proposal,
                    deposits: self.deposits,
                })
            }
            Err(e) => ctx.fail(SessionError::SignedTree(e), true),
        }
    }
}

impl AwaitingPersist {
    /// Whether the driver's confirmation names this attempt.
    pub fn is_for(&self, batch: u32, attempt: u32) -> bool {
        self.proposal.batch == batch && self.proposal.attempt == attempt
    }

    /// The driver stored the exit paths: sign the deposits.
    pub fn persisted(mut self, ctx: &mut Ctx<'_>) -> State {
        match sign_deposits(&self.proposal, ctx.config, &mut self.deposits) {
            Ok(sigs) => {
                let (batch, attempt) = (self.proposal.batch, self.proposal.attempt);
                ctx.send(ToCoordinator::DepositSigs(sigs));
                ctx.emit(Event::DepositSigsSent { batch, attempt });
                State::DepositsSigned(DepositsSigned { round: self.round, batch, attempt })
            }
            Err(e) => ctx.fail(SessionError::SignedTree(e), true),
        }
    }
}

impl DepositsSigned {
    /// `Finalized` for this batch.
    pub fn finalized(self, txid: Txid, ctx: &mut Ctx<'_>) -> State {
        ctx.emit(Event::Finalized { batch: self.batch, txid });
        State::Finalized(Finalized { batch: self.batch })
    }

    /// The batch signed.
    pub fn batch(&self) -> u32 {
        self.batch
    }
}

impl Finalized {
    /// `Confirmed` for this batch: the session succeeded.
    pub fn confirmed(self, height: u32, ctx: &mut Ctx<'_>) -> State {
        ctx.emit(Event::Confirmed { batch: self.batch, height });
        State::Done(PhaseName::Confirmed)
    }

    /// The batch finalized.
    pub fn batch(&self) -> u32 {
        self.batch
    }
}

impl AwaitingNonceRequest {
    /// `NonceRequest` for a later attempt of this batch: fresh secrets, `Renonce`.
    pub fn nonce_request(self, batch: u32, attempt: u32, ctx: &mut Ctx<'_>) -> Step {
        if batch != self.batch || attempt <= self.attempt {
            return Step::Ignored(State::AwaitingNonceRequest(self));
        }
        let secrets = Secrets::fresh(ctx.config, self.round.params.tree.max_depth, ctx.rng);
        ctx.send(ToCoordinator::Renonce(secrets.renonce(batch, attempt)));
        Step::Acted(State::AwaitingProposal(AwaitingProposal {
            round: self.round,
            batch: Some(batch),
            attempt,
            secrets,
        }))
    }
}

/// `Abort` of the current attempt: drop every secret; leave if excluded or the batch
/// is dropped, else wait for the next attempt's nonce request. `Ignored` when the abort
/// does not name the current attempt (the state is then handed back untouched).
pub(super) fn on_abort(state: State, abort: &Abort, ctx: &mut Ctx<'_>) -> Step {
    let Some((round, batch, attempt)) = state.current_attempt() else {
        return Step::Ignored(state);
    };
    if batch.is_some_and(|b| b != abort.batch) || abort.attempt != attempt {
        return Step::Ignored(state);
    }
    let round = round.clone();
    // Secrets (nonces, cosigner keys) of the aborted attempt are dropped here.
    drop(state);
    let excluded = abort.excluded.contains(&round.registration);
    let (batch, attempt) = (abort.batch, abort.attempt);
    ctx.emit(Event::Aborted { batch, attempt, reason: abort.reason.clone(), excluded });
    if excluded {
        return Step::Acted(ctx.fail(SessionError::Excluded { batch, attempt }, false));
    }
    if abort.reason.drops_batch() {
        let reason = abort.reason.clone();
        return Step::Acted(ctx.fail(SessionError::BatchDropped { batch, reason }, false));
    }
    Step::Acted(State::AwaitingNonceRequest(AwaitingNonceRequest { round, batch, attempt }))
}
