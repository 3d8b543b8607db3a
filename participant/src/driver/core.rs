//! The participant driver's synchronous core: owns the session and the store, turns the
//! session's events into store writes, history and [`Progress`], and says what its
//! link must do next ([`Action`]). It reads no clock and owns no socket: the tokio loop
//! ([`super::Driver::run`]) and the simulator's in-memory network step the same core.
//!
//! # Call order
//!
//! 1. Feed every message with [`DriverCore::handle_message`], and call
//!    [`DriverCore::handle_timeout`] once the instant of [`DriverCore::poll_timeout`]
//!    has passed.
//! 2. Call [`DriverCore::poll`] until it answers [`Action::Idle`]: send each
//!    [`Action::Send`] in order; run each [`Action::Persist`] job (it writes the store;
//!    run it where blocking is fine) and hand its result to
//!    [`DriverCore::exit_paths_stored`]; stop at [`Action::Done`].
//! 3. When the link closes, call [`DriverCore::link_closed`] or
//!    [`DriverCore::link_failed`].
//!
//! # Safety invariant
//!
//! Deposit signatures leave only after [`DriverCore::exit_paths_stored`] receives a
//! [`Persisted`] receipt, which only [`PersistJob::run`] makes, after the store's
//! durable [`ParticipantStore::store_exit_paths`] returned. That method is the one
//! place that calls [`Session::exit_paths_persisted`]; a failed write ends the driver
//! with nothing signed.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

use bitcoin::{OutPoint, ScriptBuf, Txid};
use cohort_common::messages::{ToCoordinator, ToParticipant};

use super::progress::{Outcome, Progress};
use super::{now_ms, DriverError, LinkError};
use crate::session::{
    Event, ExitPath, PhaseName, Randomness, Session, SessionConfig, SharedCaches,
};
use crate::store::{DepositStatus, ExitPathRecord, HistoryEvent, ParticipantStore, StoreError};

/// What sees each [`Progress`] step; `Break` stops the driver right there (nothing more
/// is sent or stored), which is what killing the process at that point does.
pub type Observer<'a> = dyn FnMut(&Progress) -> ControlFlow<()> + 'a;

/// Where history timestamps come from.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch at the driver's instant `now`.
    fn unix_ms(&self, now: Instant) -> u64;
}

/// The system clock (what a wallet uses).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn unix_ms(&self, _now: Instant) -> u64 {
        now_ms()
    }
}

/// Simulated time: `origin` is the Unix time `origin_ms`, and time runs with the
/// instants the driver is given.
#[derive(Debug, Clone, Copy)]
pub struct SimulatedClock {
    /// The instant simulated time starts at.
    pub origin: Instant,
    /// Its Unix time, in milliseconds.
    pub origin_ms: u64,
}

impl Clock for SimulatedClock {
    fn unix_ms(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin).as_millis();
        self.origin_ms.saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }
}

/// Everything a driver needs besides its store.
pub struct DriverSetup {
    /// What the session offers and wants.
    pub session: SessionConfig,
    /// The key index of the remainder leaf's key (recorded with its exit path).
    pub leaf_key_index: u32,
    /// The remainder leaf's timeout (recorded with its exit path).
    pub exit_csv: u16,
    /// Where the session draws keys and nonces ([`Randomness::os`] unless set).
    pub randomness: Randomness,
    /// Caches shared by many sessions in one process; `None` (a wallet's default) runs
    /// every check without them.
    pub caches: Option<Arc<SharedCaches>>,
    /// Where history timestamps come from ([`SystemClock`] unless set).
    pub clock: Box<dyn Clock>,
}

impl std::fmt::Debug for DriverSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverSetup")
            .field("deposits", &self.session.deposits.len())
            .field("leaf_key_index", &self.leaf_key_index)
            .field("exit_csv", &self.exit_csv)
            .field("caches", &self.caches.is_some())
            .finish_non_exhaustive()
    }
}

impl DriverSetup {
    /// A setup with OS randomness, no shared caches and the system clock.
    pub fn new(session: SessionConfig, leaf_key_index: u32, exit_csv: u16) -> Self {
        DriverSetup {
            session,
            leaf_key_index,
            exit_csv,
            randomness: Randomness::os(),
            caches: None,
            clock: Box::new(SystemClock),
        }
    }
}

/// What the driver's link must do next.
#[derive(Debug)]
pub enum Action {
    /// Send this message to the coordinator, in order.
    Send(ToCoordinator),
    /// Run this store write, then hand its result to [`DriverCore::exit_paths_stored`].
    Persist(PersistJob),
    /// The session is over.
    Done(Outcome),
    /// Nothing to do until the next message or timeout.
    Idle,
}

/// A batch's exit paths to store durably; [`PersistJob::run`] writes them.
pub struct PersistJob {
    store: Arc<dyn ParticipantStore>,
    records: Vec<ExitPathRecord>,
    batch: u32,
    attempt: u32,
    funding_txid: Txid,
}

impl std::fmt::Debug for PersistJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistJob")
            .field("funding_txid", &self.funding_txid)
            .field("batch", &self.batch)
            .field("attempt", &self.attempt)
            .field("paths", &self.records.len())
            .finish_non_exhaustive()
    }
}

impl PersistJob {
    /// Writes every path in one durable store transaction (blocking).
    pub fn run(self) -> Result<Persisted, StoreError> {
        self.store.store_exit_paths(&self.records)?;
        Ok(Persisted {
            batch: self.batch,
            attempt: self.attempt,
            funding_txid: self.funding_txid,
            paths: self.records.len(),
        })
    }
}

/// The receipt of a durable [`PersistJob::run`]: the only thing that lets deposit
/// signatures out.
#[derive(Debug)]
pub struct Persisted {
    batch: u32,
    attempt: u32,
    funding_txid: Txid,
    paths: usize,
}

/// Whether a step is also written to the store's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Record {
    /// Reported and written.
    History,
    /// Reported only.
    ProgressOnly,
}

/// One participant's round: the session, what it offers, and the store it writes.
pub struct DriverCore {
    store: Arc<dyn ParticipantStore>,
    clock: Box<dyn Clock>,
    session: Session,
    deposits: Vec<OutPoint>,
    leaf_key_index: u32,
    remainder_script: ScriptBuf,
    exit_csv: u16,
    round: Option<u64>,
    funding_txid: Option<Txid>,
    deposits_signed: bool,
    persist: Option<PersistJob>,
    outcome: Option<Outcome>,
}

impl std::fmt::Debug for DriverCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverCore")
            .field("phase", &self.session.phase())
            .field("deposits", &self.deposits)
            .field("leaf_key_index", &self.leaf_key_index)
            .finish_non_exhaustive()
    }
}

impl DriverCore {
    /// A driver waiting for a round announcement.
    pub fn new(store: Arc<dyn ParticipantStore>, setup: DriverSetup) -> Self {
        let DriverSetup { session, leaf_key_index, exit_csv, randomness, caches, clock } = setup;
        let deposits = session.deposits.iter().map(|d| d.outpoint).collect();
        let remainder_script = session.remainder_script.clone();
        DriverCore {
            store,
            clock,
            session: Session::with_randomness(session, caches, randomness),
            deposits,
            leaf_key_index,
            remainder_script,
            exit_csv,
            round: None,
            funding_txid: None,
            deposits_signed: false,
            persist: None,
            outcome: None,
        }
    }

    /// The key index of the remainder leaf.
    pub fn leaf_key_index(&self) -> u32 {
        self.leaf_key_index
    }

    /// The session's phase.
    pub fn phase(&self) -> PhaseName {
        self.session.phase()
    }

    /// The store the driver writes.
    pub fn store(&self) -> &Arc<dyn ParticipantStore> {
        &self.store
    }

    /// When [`DriverCore::handle_timeout`] must be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.session.poll_timeout()
    }

    /// Feeds one message from the coordinator (an announcement is reported first).
    pub fn handle_message(
        &mut self,
        now: Instant,
        msg: ToParticipant,
        observer: &mut Observer<'_>,
    ) -> Result<(), DriverError> {
        if let ToParticipant::RoundAnnounce(a) = &msg {
            if self.session.phase() == PhaseName::Idle {
                let progress = Progress::Announced { round: a.params.round };
                self.step(now, &progress, Record::ProgressOnly, "", observer)?;
            }
        }
        self.session.handle_message(now, msg);
        Ok(())
    }

    /// The instant of [`DriverCore::poll_timeout`] has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.session.handle_timeout(now);
    }

    /// The next thing to do (see the module documentation).
    pub fn poll(
        &mut self,
        now: Instant,
        observer: &mut Observer<'_>,
    ) -> Result<Action, DriverError> {
        loop {
            if let Some(msg) = self.session.poll_transmit() {
                return Ok(Action::Send(msg));
            }
            if let Some(job) = self.persist.take() {
                return Ok(Action::Persist(job));
            }
            match self.session.poll_event() {
                Some(event) => self.handle_event(now, event, observer)?,
                None => return Ok(self.outcome.take().map_or(Action::Idle, Action::Done)),
            }
        }
    }

    /// The result of a [`PersistJob`]. Only a [`Persisted`] receipt lets the session
    /// sign its deposits; a failed write ends the driver with nothing signed.
    pub fn exit_paths_stored(
        &mut self,
        now: Instant,
        stored: Result<Persisted, DriverError>,
        observer: &mut Observer<'_>,
    ) -> Result<(), DriverError> {
        let stored = stored?;
        self.funding_txid = Some(stored.funding_txid);
        // Recorded before the session may sign: the deposit signatures go out before the
        // session reports them sent, so a kill in between would leave the deposits
        // `Registered`, released as unspent at the next start and then taken for spent by
        // something else when this very funding transaction confirms. Recorded now, a
        // kill before the signatures leaves a funding txid that can never confirm
        // without them (the deposit stays offerable and reclaimable, as `InBatch` is).
        self.add_funding_txid(stored.funding_txid)?;
        let progress =
            Progress::ExitPathsStored { funding_txid: stored.funding_txid, paths: stored.paths };
        let note = format!(", attempt {}", stored.attempt);
        // Reported before the session may sign deposits: stopping here is a kill with
        // the paths on disk and nothing signed.
        self.step(now, &progress, Record::History, &note, observer)?;
        self.session.exit_paths_persisted(now, stored.batch, stored.attempt);
        Ok(())
    }

    /// The link closed cleanly before the session ended: unsigned deposits are released.
    pub fn link_closed(&mut self) -> Result<Outcome, DriverError> {
        self.release_deposits()?;
        Ok(Outcome::Disconnected {
            phase: self.session.phase(),
            deposits_signed: self.deposits_signed,
        })
    }

    /// The link broke: unsigned deposits are released, and the link's error returned.
    pub fn link_failed(&mut self, error: LinkError) -> DriverError {
        match self.release_deposits() {
            Ok(()) => DriverError::Link(error),
            Err(e) => DriverError::Store(e),
        }
    }

    fn handle_event(
        &mut self,
        now: Instant,
        event: Event,
        observer: &mut Observer<'_>,
    ) -> Result<(), DriverError> {
        let (progress, record, note) = match event {
            Event::Registered { round, registration } => {
                self.round = Some(round);
                self.mark_registered(round)?;
                let deposits = self.deposits.len();
                (Progress::Registered { round, registration, deposits }, Record::History, "")
            }
            Event::ProposalAccepted { batch, attempt } => {
                let checked = Progress::ProposalChecked { batch, attempt };
                self.step(now, &checked, Record::ProgressOnly, "", observer)?;
                (Progress::TreeSigned { batch, attempt }, Record::ProgressOnly, "")
            }
            Event::ProposalRejected { batch, attempt, reason } => {
                let reason = reason.to_string();
                (Progress::ProposalRejected { batch, attempt, reason }, Record::History, "")
            }
            Event::PersistExitPaths { round, batch, attempt, funding_tx, paths } => {
                let funding_txid = funding_tx.compute_txid();
                let records = self.exit_path_records(round, batch, funding_txid, paths);
                let store = Arc::clone(&self.store);
                self.persist = Some(PersistJob { store, records, batch, attempt, funding_txid });
                return Ok(());
            }
            Event::DepositSigsSent { batch, attempt } => {
                self.deposits_signed = true;
                if let Some(funding_txid) = self.funding_txid {
                    self.add_funding_txid(funding_txid)?;
                }
                (Progress::DepositsSigned { batch, attempt }, Record::History, "")
            }
            Event::Aborted { batch, attempt, reason, excluded } => {
                let reason = reason.to_string();
                (Progress::Aborted { batch, attempt, reason, excluded }, Record::History, "")
            }
            Event::Finalized { txid, .. } => {
                // The coordinator's word is not taken: a txid other than the one this
                // wallet checked and signed is an alarm, recorded and shown. The exit
                // paths on disk are for the signed one, whatever was broadcast.
                let alarm = match self.funding_txid {
                    Some(ours) if ours == txid => None,
                    Some(ours) => Some(format!(
                        "the coordinator names {txid} as the funding transaction, but this \
                         wallet signed {ours}; the exit paths are for {ours}"
                    )),
                    None => Some(format!(
                        "the coordinator names {txid} as the funding transaction, but this \
                         wallet signed no funding transaction in this session"
                    )),
                };
                if let Some(what) = alarm {
                    self.step(now, &Progress::Alarm { what }, Record::History, "", observer)?;
                }
                (Progress::Finalized { txid }, Record::History, "")
            }
            Event::Confirmed { height, .. } => {
                if let Some(funding_txid) = self.funding_txid {
                    self.set_statuses(&DepositStatus::Batched { funding_txid })?;
                }
                self.outcome = Some(Outcome::Confirmed { funding_txid: self.funding_txid, height });
                (Progress::Confirmed { height }, Record::History, "")
            }
            Event::Refused(reason) => {
                self.release_deposits()?;
                let reason = reason.to_string();
                self.outcome = Some(Outcome::Refused { reason: reason.clone() });
                (Progress::Refused { reason }, Record::History, "")
            }
            Event::Failed(error) => {
                self.release_deposits()?;
                let reason = error.to_string();
                let deposits_signed = self.deposits_signed;
                self.outcome = Some(Outcome::Failed { reason: reason.clone(), deposits_signed });
                (Progress::Failed { reason }, Record::History, "")
            }
        };
        self.step(now, &progress, record, note, observer)
    }

    /// The records of a batch's exit paths; the remainder leaf's carries its key index
    /// and timeout.
    fn exit_path_records(
        &self,
        round: u64,
        batch: u32,
        funding_txid: Txid,
        paths: Vec<ExitPath>,
    ) -> Vec<ExitPathRecord> {
        paths
            .into_iter()
            .map(|p| {
                let ours = p.leaf_output.script_pubkey == self.remainder_script;
                ExitPathRecord {
                    funding_txid,
                    round,
                    batch,
                    leaf: p.leaf,
                    leaf_output: p.leaf_output,
                    node: p.node,
                    vout: p.vout,
                    path: p.path,
                    leaf_key_index: ours.then_some(self.leaf_key_index),
                    exit_csv: ours.then_some(self.exit_csv),
                }
            })
            .collect()
    }

    /// Writes a step to the history (when `record` says so, with `note` after its
    /// details), then shows it to the observer.
    fn step(
        &self,
        now: Instant,
        progress: &Progress,
        record: Record,
        note: &str,
        observer: &mut Observer<'_>,
    ) -> Result<(), DriverError> {
        if record == Record::History {
            self.store.append_history(&HistoryEvent {
                at_ms: self.clock.unix_ms(now),
                round: self.round,
                kind: progress.step().as_str().to_owned(),
                detail: format!("{}{note}", progress.detail()),
            })?;
        }
        match observer(progress) {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(()) => Err(DriverError::Stopped(self.session.phase())),
        }
    }

    /// Adds `funding_txid` to every deposit's list of funding transactions it was signed
    /// into, keeping the earlier ones: any of them may still confirm.
    fn add_funding_txid(&self, funding_txid: Txid) -> Result<(), StoreError> {
        for outpoint in &self.deposits {
            let mut funding_txids = match self.store.deposit(outpoint)?.map(|d| d.status) {
                Some(DepositStatus::InBatch { funding_txids }) => funding_txids,
                _ => Vec::new(),
            };
            if !funding_txids.contains(&funding_txid) {
                funding_txids.push(funding_txid);
            }
            self.store.set_deposit_status(outpoint, &DepositStatus::InBatch { funding_txids })?;
        }
        Ok(())
    }

    /// Marks the deposits registered in `round`, except those already signed into a
    /// batch: their list of funding transactions must survive a new round.
    fn mark_registered(&self, round: u64) -> Result<(), StoreError> {
        for outpoint in &self.deposits {
            let signed = matches!(
                self.store.deposit(outpoint)?.map(|d| d.status),
                Some(DepositStatus::InBatch { .. })
            );
            if !signed {
                self.store.set_deposit_status(outpoint, &DepositStatus::Registered { round })?;
            }
        }
        Ok(())
    }

    fn set_statuses(&self, status: &DepositStatus) -> Result<(), StoreError> {
        for outpoint in &self.deposits {
            self.store.set_deposit_status(outpoint, status)?;
        }
        Ok(())
    }

    /// Deposits still marked registered go back to unspent (nothing of theirs was signed).
    fn release_deposits(&self) -> Result<(), StoreError> {
        if self.deposits_signed {
            return Ok(());
        }
        for outpoint in &self.deposits {
            if let Some(d) = self.store.deposit(outpoint)? {
                if matches!(d.status, DepositStatus::Registered { .. }) {
                    self.store.set_deposit_status(outpoint, &DepositStatus::Unspent)?;
                }
            }
        }
        Ok(())
    }
}
