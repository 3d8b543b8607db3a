//! The tokio driver of the session engine: feeds it the coordinator's messages and its
//! timeouts, sends what it transmits, stores its exit paths, and reports progress.
//!
//! # Safety invariant
//!
//! On [`Event::PersistExitPaths`] the driver writes every path in one durable store
//! transaction ([`ParticipantStore::store_exit_paths`]) and only then calls
//! [`Session::exit_paths_persisted`], the one call that lets deposit signatures out. If the
//! write fails the driver stops: no deposit is signed without its exit paths on disk.
//!
//! # Links
//!
//! Messages go out through a [`SessionSink`] ([`FramedSend`] over QUIC, an mpsc sender in
//! memory) and come in through an [`Inbox`], a channel that [`spawn_reader`] fills from a
//! [`FramedRecv`] (reading in its own task keeps a half-read frame safe from the timeout
//! branch of the driver's `select!`). Side requests go through a [`SideChannel`].

use std::future::Future;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bitcoin::{Amount, OutPoint, ScriptBuf, Txid};
use cohort_common::messages::{SideRequest, SideResponse, ToCoordinator, ToParticipant};
use cohort_transport::{Client, FramedRecv, FramedSend};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::session::{Event, OwnedDeposit, PhaseName, Session, SessionConfig};
use crate::store::{
    DepositRecord, DepositStatus, ExitPathRecord, HistoryEvent, ParticipantStore, StoreError,
};
use crate::wallet::{Wallet, WalletError};

/// Messages from the coordinator, or why the link broke; a closed channel is a clean end.
pub type Inbox = mpsc::Receiver<Result<ToParticipant, String>>;

/// Errors of the driver and its links.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The link to the coordinator failed.
    #[error("link to the coordinator: {0}")]
    Link(String),
    /// A side request was answered with an error.
    #[error("coordinator refused the request: {0}")]
    Remote(String),
    /// A side request got an answer of the wrong kind.
    #[error("unexpected answer to {request}: {got}")]
    UnexpectedAnswer {
        /// The request.
        request: &'static str,
        /// What came back.
        got: String,
    },
    /// The store failed; when storing exit paths, no deposit was signed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The wallet cannot build what the round needs.
    #[error(transparent)]
    Wallet(#[from] WalletError),
    /// Nothing to offer.
    #[error(
        "no confirmed unspent deposit to register (fund the address, then run `cohort deposits`)"
    )]
    NoDeposits,
    /// The progress observer stopped the driver (as a kill at this point would).
    #[error("stopped by the caller in phase {0:?}")]
    Stopped(PhaseName),
}

impl From<cohort_transport::TransportError> for DriverError {
    fn from(e: cohort_transport::TransportError) -> Self {
        DriverError::Link(e.to_string())
    }
}

/// Where session messages go.
pub trait SessionSink: Send {
    /// Sends one message, in order.
    fn send_msg(
        &mut self,
        msg: ToCoordinator,
    ) -> impl Future<Output = Result<(), DriverError>> + Send;
}

impl SessionSink for FramedSend<ToCoordinator> {
    async fn send_msg(&mut self, msg: ToCoordinator) -> Result<(), DriverError> {
        Ok(self.send(&msg).await?)
    }
}

impl SessionSink for mpsc::Sender<ToCoordinator> {
    async fn send_msg(&mut self, msg: ToCoordinator) -> Result<(), DriverError> {
        self.send(msg).await.map_err(|_| DriverError::Link("channel closed".into()))
    }
}

/// One side request, one answer.
pub trait SideChannel: Send + Sync {
    /// Sends `req` and waits for its answer (an `Error` answer is returned as is).
    fn side(
        &self,
        req: SideRequest,
    ) -> impl Future<Output = Result<SideResponse, DriverError>> + Send;
}

impl SideChannel for Client {
    async fn side(&self, req: SideRequest) -> Result<SideResponse, DriverError> {
        Ok(self.request(&req).await?)
    }
}

/// Reads `recv` in its own task into an [`Inbox`]; the task ends with the stream or when
/// the inbox is dropped. Abort the handle when done.
pub fn spawn_reader(mut recv: FramedRecv<ToParticipant>) -> (Inbox, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(64);
    let task = tokio::spawn(async move {
        loop {
            let item = match recv.recv().await {
                Ok(Some(msg)) => Ok(msg),
                Ok(None) => return,
                Err(e) => Err(e.to_string()),
            };
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                return;
            }
        }
    });
    (rx, task)
}

/// A step of the round, for display. `--json` prints it as `{"phase": ..., ...}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Progress {
    /// A round was announced.
    Announced {
        /// Round number.
        round: u64,
    },
    /// The coordinator accepted the registration.
    Registered {
        /// Round number.
        round: u64,
        /// Its registration id.
        registration: u64,
        /// Deposits registered.
        deposits: usize,
    },
    /// The proposal passed every check.
    ProposalChecked {
        /// Batch number.
        batch: u32,
        /// Attempt number.
        attempt: u32,
    },
    /// Tree partial signatures were sent.
    TreeSigned {
        /// Batch number.
        batch: u32,
        /// Attempt number.
        attempt: u32,
    },
    /// A proposal failed a check; nothing was signed.
    ProposalRejected {
        /// Batch number.
        batch: u32,
        /// Attempt number.
        attempt: u32,
        /// The failed check.
        reason: String,
    },
    /// Every exit path is on disk.
    ExitPathsStored {
        /// The funding transaction the paths spend.
        funding_txid: Txid,
        /// How many paths.
        paths: usize,
    },
    /// Deposit signatures were sent.
    DepositsSigned {
        /// Batch number.
        batch: u32,
        /// Attempt number.
        attempt: u32,
    },
    /// The attempt was aborted before anything was broadcast.
    Aborted {
        /// Batch number.
        batch: u32,
        /// Attempt number.
        attempt: u32,
        /// Why.
        reason: String,
        /// Whether we were excluded.
        excluded: bool,
    },
    /// The funding transaction was broadcast.
    Finalized {
        /// Its txid.
        txid: Txid,
    },
    /// The funding transaction confirmed.
    Confirmed {
        /// Block height.
        height: u32,
    },
    /// The registration was refused.
    Refused {
        /// Why.
        reason: String,
    },
    /// The session failed.
    Failed {
        /// Why.
        reason: String,
    },
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Progress::Announced { round } => write!(f, "round {round} announced"),
            Progress::Registered { round, registration, deposits } => write!(
                f,
                "registered in round {round} (registration {registration}, {deposits} deposit(s))"
            ),
            Progress::ProposalChecked { batch, attempt } => {
                write!(f, "proposal checked (batch {batch}, attempt {attempt})")
            }
            Progress::TreeSigned { batch, attempt } => {
                write!(f, "tree signed (batch {batch}, attempt {attempt})")
            }
            Progress::ProposalRejected { batch, attempt, reason } => {
                write!(f, "proposal rejected (batch {batch}, attempt {attempt}): {reason}")
            }
            Progress::ExitPathsStored { funding_txid, paths } => {
                write!(f, "exit paths stored ({paths} path(s) of funding tx {funding_txid})")
            }
            Progress::DepositsSigned { batch, attempt } => {
                write!(f, "deposits signed (batch {batch}, attempt {attempt})")
            }
            Progress::Aborted { batch, attempt, reason, excluded } => write!(
                f,
                "attempt {attempt} of batch {batch} aborted: {reason}{}",
                if *excluded { " (we were excluded)" } else { "" }
            ),
            Progress::Finalized { txid } => write!(f, "finalized: funding txid {txid}"),
            Progress::Confirmed { height } => write!(f, "confirmed at height {height}"),
            Progress::Refused { reason } => write!(f, "registration refused: {reason}"),
            Progress::Failed { reason } => write!(f, "round failed: {reason}"),
        }
    }
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// The funding transaction confirmed.
    Confirmed {
        /// Its txid (as checked locally before signing).
        funding_txid: Option<Txid>,
        /// Block height.
        height: u32,
    },
    /// The registration was refused.
    Refused {
        /// Why.
        reason: String,
    },
    /// The session failed (deposits were not signed unless `deposits_signed`).
    Failed {
        /// Why.
        reason: String,
        /// Whether deposit signatures went out before the failure.
        deposits_signed: bool,
    },
    /// The coordinator closed the session before the end.
    Disconnected {
        /// The phase the session was in.
        phase: String,
        /// Whether deposit signatures went out.
        deposits_signed: bool,
    },
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// One participant's round: the session, what it offers, and the store it writes.
pub struct Driver {
    store: Arc<dyn ParticipantStore>,
    session: Session,
    deposits: Vec<OutPoint>,
    leaf_index: u32,
    remainder_script: ScriptBuf,
    exit_csv: u16,
    round: Option<u64>,
    funding_txid: Option<Txid>,
    deposits_signed: bool,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("phase", &self.session.phase())
            .field("deposits", &self.deposits)
            .field("leaf_index", &self.leaf_index)
            .finish_non_exhaustive()
    }
}

impl Driver {
    /// Prepares a session offering `deposits` (stored, confirmed, unspent) with the
    /// remainder paid to a fresh leaf key's virtual-deposit script.
    pub fn new(
        store: Arc<dyn ParticipantStore>,
        wallet: &Wallet,
        deposits: &[DepositRecord],
        max_fee: Amount,
    ) -> Result<Self, DriverError> {
        if deposits.is_empty() {
            return Err(DriverError::NoDeposits);
        }
        let script = wallet.deposit_script()?;
        let key = wallet.deposit_key();
        let owned = deposits
            .iter()
            .map(|d| OwnedDeposit {
                outpoint: d.outpoint,
                txout: d.txout.clone(),
                script: script.clone(),
                key: key.clone(),
            })
            .collect();
        let leaf_index = store.next_key_index()?;
        let remainder_script = wallet.leaf_script(leaf_index)?.script_pubkey();
        let config = SessionConfig {
            deposits: owned,
            leaves: Vec::new(),
            remainder_script: remainder_script.clone(),
            max_fee,
            limits: crate::session::ProposalLimits::default(),
        };
        Ok(Driver {
            store,
            session: Session::new(config, None),
            deposits: deposits.iter().map(|d| d.outpoint).collect(),
            leaf_index,
            remainder_script,
            exit_csv: wallet.coordinator().exit_csv,
            round: None,
            funding_txid: None,
            deposits_signed: false,
        })
    }

    /// The leaf key index of this round's remainder leaf.
    pub fn leaf_index(&self) -> u32 {
        self.leaf_index
    }

    /// Runs the session to its end. `observer` sees every [`Progress`] step; returning
    /// `Break` stops the driver right there (nothing more is sent or stored), which is
    /// what killing the process at that point does.
    pub async fn run<S: SessionSink>(
        mut self,
        sink: &mut S,
        inbox: &mut Inbox,
        mut observer: impl FnMut(&Progress) -> ControlFlow<()> + Send,
    ) -> Result<Outcome, DriverError> {
        loop {
            if let Some(outcome) = self.pump(sink, &mut observer).await? {
                return Ok(outcome);
            }
            let deadline = self.session.poll_timeout();
            tokio::select! {
                item = inbox.recv() => match item {
                    Some(Ok(msg)) => {
                        if let ToParticipant::RoundAnnounce(a) = &msg {
                            if self.session.phase() == PhaseName::Idle {
                                report(&mut observer, &self.session, Progress::Announced { round: a.params.round })?;
                            }
                        }
                        self.session.handle_message(Instant::now(), msg);
                    }
                    Some(Err(e)) => {
                        self.release_deposits()?;
                        return Err(DriverError::Link(e));
                    }
                    None => {
                        self.release_deposits()?;
                        return Ok(Outcome::Disconnected {
                            phase: format!("{:?}", self.session.phase()),
                            deposits_signed: self.deposits_signed,
                        });
                    }
                },
                () = sleep_until_opt(deadline) => self.session.handle_timeout(Instant::now()),
            }
        }
    }

    /// Sends every pending transmit and handles every pending event until both are
    /// drained; returns the outcome once the session has ended.
    async fn pump<S: SessionSink>(
        &mut self,
        sink: &mut S,
        observer: &mut (impl FnMut(&Progress) -> ControlFlow<()> + Send),
    ) -> Result<Option<Outcome>, DriverError> {
        let mut outcome = None;
        loop {
            let mut idle = true;
            while let Some(msg) = self.session.poll_transmit() {
                idle = false;
                sink.send_msg(msg).await?;
            }
            while let Some(event) = self.session.poll_event() {
                idle = false;
                if let Some(done) = self.handle_event(event, observer).await? {
                    outcome = Some(done);
                }
            }
            if idle {
                return Ok(outcome);
            }
        }
    }

    fn history(&self, kind: &str, detail: String) -> Result<(), StoreError> {
        self.store.append_history(&HistoryEvent {
            at_ms: now_ms(),
            round: self.round,
            kind: kind.to_owned(),
            detail,
        })
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

    async fn handle_event(
        &mut self,
        event: Event,
        observer: &mut (impl FnMut(&Progress) -> ControlFlow<()> + Send),
    ) -> Result<Option<Outcome>, DriverError> {
        let progress = match event {
            Event::Registered { round, registration } => {
                self.round = Some(round);
                self.set_statuses(&DepositStatus::Registered { round })?;
                self.history(
                    "registered",
                    format!("registration {registration} with {} deposit(s)", self.deposits.len()),
                )?;
                Progress::Registered { round, registration, deposits: self.deposits.len() }
            }
            Event::ProposalAccepted { batch, attempt } => {
                report(observer, &self.session, Progress::ProposalChecked { batch, attempt })?;
                Progress::TreeSigned { batch, attempt }
            }
            Event::ProposalRejected { batch, attempt, reason } => {
                self.history("proposal_rejected", reason.to_string())?;
                Progress::ProposalRejected { batch, attempt, reason: reason.to_string() }
            }
            Event::PersistExitPaths { round, batch, attempt, funding_tx, paths } => {
                let funding_txid = funding_tx.compute_txid();
                let records: Vec<ExitPathRecord> = paths
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
                            leaf_key_index: ours.then_some(self.leaf_index),
                            exit_csv: ours.then_some(self.exit_csv),
                        }
                    })
                    .collect();
                let count = records.len();
                let store = Arc::clone(&self.store);
                tokio::task::spawn_blocking(move || store.store_exit_paths(&records))
                    .await
                    .map_err(|e| StoreError::Sqlite(format!("store task failed: {e}")))??;
                self.funding_txid = Some(funding_txid);
                self.history(
                    "exit_paths_stored",
                    format!("{count} path(s) of funding tx {funding_txid}, attempt {attempt}"),
                )?;
                // Observed before the session may sign deposits: stopping here is a kill
                // with the paths on disk and nothing signed.
                report(
                    observer,
                    &self.session,
                    Progress::ExitPathsStored { funding_txid, paths: count },
                )?;
                self.session.exit_paths_persisted(Instant::now(), batch, attempt);
                return Ok(None);
            }
            Event::DepositSigsSent { batch, attempt } => {
                self.deposits_signed = true;
                if let Some(funding_txid) = self.funding_txid {
                    self.set_statuses(&DepositStatus::InBatch { funding_txid })?;
                }
                self.history("deposits_signed", format!("batch {batch}, attempt {attempt}"))?;
                Progress::DepositsSigned { batch, attempt }
            }
            Event::Aborted { batch, attempt, reason, excluded } => {
                self.history("aborted", format!("batch {batch} attempt {attempt}: {reason}"))?;
                Progress::Aborted { batch, attempt, reason: reason.to_string(), excluded }
            }
            Event::Finalized { txid, .. } => {
                let note = match self.funding_txid {
                    Some(ours) if ours == txid => String::new(),
                    Some(ours) => format!(" (differs from the checked {ours})"),
                    None => " (no exit paths stored!)".into(),
                };
                self.history("finalized", format!("funding tx {txid}{note}"))?;
                Progress::Finalized { txid }
            }
            Event::Confirmed { height, .. } => {
                self.history("confirmed", format!("at height {height}"))?;
                report(observer, &self.session, Progress::Confirmed { height })?;
                return Ok(Some(Outcome::Confirmed { funding_txid: self.funding_txid, height }));
            }
            Event::Refused(reason) => {
                self.release_deposits()?;
                self.history("refused", reason.to_string())?;
                report(observer, &self.session, Progress::Refused { reason: reason.to_string() })?;
                return Ok(Some(Outcome::Refused { reason: reason.to_string() }));
            }
            Event::Failed(error) => {
                self.release_deposits()?;
                self.history("failed", error.to_string())?;
                report(observer, &self.session, Progress::Failed { reason: error.to_string() })?;
                return Ok(Some(Outcome::Failed {
                    reason: error.to_string(),
                    deposits_signed: self.deposits_signed,
                }));
            }
        };
        report(observer, &self.session, progress)?;
        Ok(None)
    }
}

fn report(
    observer: &mut (impl FnMut(&Progress) -> ControlFlow<()> + Send),
    session: &Session,
    progress: Progress,
) -> Result<(), DriverError> {
    match observer(&progress) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(()) => Err(DriverError::Stopped(session.phase())),
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
