//! The participant driver: one synchronous core ([`DriverCore`]) that reacts to the
//! session's events (exit paths stored durably before deposit signatures leave, history,
//! deposit statuses, progress), and this thin tokio loop ([`Driver::run`]) that feeds it
//! over a QUIC session or any message link. The simulator's in-memory network steps the
//! same core under simulated time.
//!
//! # Layout
//!
//! - [`core`]: the driver core, its [`Action`]s, the persist job, the clock.
//! - [`cancel`]: the [`SignGate`] that lets a round be cancelled before deposit signatures.
//! - [`progress`]: the one vocabulary of steps ([`StepName`], [`Progress`], [`Outcome`]).
//! - here: errors, the links ([`SessionSink`], [`Inbox`], [`SideChannel`]), the tokio loop.
//!
//! # Links
//!
//! Messages go out through a [`SessionSink`] ([`FramedSend`] over QUIC, an mpsc sender in
//! memory) and come in through an [`Inbox`], a channel that [`spawn_reader`] fills from a
//! [`FramedRecv`] (reading in its own task keeps a half-read frame safe from the timeout
//! branch of the driver's `select!`). Side requests go through a [`SideChannel`].

pub mod cancel;
pub mod core;
pub mod progress;

use std::future::Future;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use cohort_common::messages::{
    Cancel, Goodbye, Reason, SideRequest, SideResponse, ToCoordinator, ToParticipant,
};
use cohort_transport::{Client, FramedRecv, FramedSend, TransportError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::session::PhaseName;
use crate::store::{ParticipantStore, StoreError};
use crate::wallet::WalletError;

pub use self::core::{
    Action, Clock, DriverCore, DriverSetup, Observer, PersistJob, Persisted, SimulatedClock,
    SystemClock,
};
pub use cancel::{CancelError, SignGate};
pub use progress::{Outcome, Progress, StepName};

/// Messages from the coordinator, or why the link broke; a closed channel is a clean end.
pub type Inbox = mpsc::Receiver<Result<ToParticipant, TransportError>>;

/// Why the link to the coordinator failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The in-process channel closed.
    #[error("the message channel closed")]
    ChannelClosed,
}

/// Errors of the driver and its links.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The link to the coordinator failed.
    #[error("link to the coordinator: {0}")]
    Link(#[source] LinkError),
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
    /// The blocking task that stored the exit paths panicked or was cancelled; no
    /// deposit was signed.
    #[error("exit path store task: {0}")]
    StoreTask(#[source] tokio::task::JoinError),
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

impl From<TransportError> for DriverError {
    fn from(e: TransportError) -> Self {
        DriverError::Link(LinkError::Transport(e))
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
        self.send(msg).await.map_err(|_| DriverError::Link(LinkError::ChannelClosed))
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

impl<T: SideChannel> SideChannel for Arc<T> {
    fn side(
        &self,
        req: SideRequest,
    ) -> impl Future<Output = Result<SideResponse, DriverError>> + Send {
        self.as_ref().side(req)
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
                Err(e) => Err(e),
            };
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                return;
            }
        }
    });
    (rx, task)
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The tokio loop of one participant's round around a [`DriverCore`].
#[derive(Debug)]
pub struct Driver {
    core: DriverCore,
    gate: Option<SignGate>,
}

impl Driver {
    /// A driver from any setup (the simulator's users have no wallet).
    pub fn with_setup(store: Arc<dyn ParticipantStore>, setup: DriverSetup) -> Self {
        Driver { core: DriverCore::new(store, setup), gate: None }
    }

    /// The same driver, cancellable through `gate` until its first deposit signatures
    /// ([`SignGate::cancel`]; the session then ends [`Outcome::Cancelled`]).
    pub fn with_gate(mut self, gate: SignGate) -> Self {
        self.gate = Some(gate);
        self
    }

    /// The leaf key index of this round's remainder leaf.
    pub fn leaf_index(&self) -> u32 {
        self.core.leaf_key_index()
    }

    /// Runs the session to its end. `observer` sees every [`Progress`] step; returning
    /// `Break` stops the driver right there (nothing more is sent or stored), which is
    /// what killing the process at that point does. A cancelled [`SignGate`] ends it
    /// [`Outcome::Cancelled`] at its next step, before any deposit signature.
    pub async fn run<S: SessionSink>(
        mut self,
        sink: &mut S,
        inbox: &mut Inbox,
        mut observer: impl FnMut(&Progress) -> ControlFlow<()> + Send,
    ) -> Result<Outcome, DriverError> {
        loop {
            if self.gate.as_ref().is_some_and(SignGate::is_cancelled) {
                return Ok(leave(sink, self.core.phase()).await);
            }
            match self.core.poll(Instant::now(), &mut observer)? {
                Action::Send(msg) => sink.send_msg(msg).await?,
                Action::Persist(job) => {
                    let stored = match tokio::task::spawn_blocking(move || job.run()).await {
                        Ok(result) => result.map_err(DriverError::Store),
                        Err(e) => Err(DriverError::StoreTask(e)),
                    };
                    // The one way to the deposit signatures passes the gate.
                    if stored.is_ok() && self.gate.as_ref().is_some_and(|g| !g.commit()) {
                        return Ok(leave(sink, self.core.phase()).await);
                    }
                    self.core.exit_paths_stored(Instant::now(), stored, &mut observer)?;
                }
                Action::Done(outcome) => return Ok(outcome),
                Action::Idle => {
                    let deadline = self.core.poll_timeout();
                    tokio::select! {
                        item = inbox.recv() => match item {
                            Some(Ok(msg)) => {
                                self.core.handle_message(Instant::now(), msg, &mut observer)?;
                            }
                            Some(Err(e)) => return Err(self.core.link_failed(e.into())),
                            None => return self.core.link_closed(),
                        },
                        () = sleep_until_opt(deadline) => self.core.handle_timeout(Instant::now()),
                        () = cancelled(self.gate.as_ref()) => {}
                    }
                }
            }
        }
    }
}

/// Leaves a cancelled round in `phase`: a `Cancel` (before deposit signatures the
/// coordinator excludes the participant without a ban, and the batch retries without it),
/// then a `Goodbye`, both best effort (the coordinator also sees the session end).
/// Nothing more is signed.
async fn leave<S: SessionSink>(sink: &mut S, phase: PhaseName) -> Outcome {
    let reason = || Reason::new("cancelled by the participant");
    for msg in [
        ToCoordinator::Cancel(Cancel { reason: reason() }),
        ToCoordinator::Goodbye(Goodbye { reason: reason() }),
    ] {
        if let Err(e) = sink.send_msg(msg).await {
            tracing::debug!(error = %e, "leaving a cancelled round: not delivered");
            break;
        }
    }
    Outcome::Cancelled { phase }
}

/// Resolves when `gate` is cancelled; never without a gate.
async fn cancelled(gate: Option<&SignGate>) {
    match gate {
        Some(gate) => gate.cancelled().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
