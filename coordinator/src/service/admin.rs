//! The admin channel's server: a Unix socket only the coordinator's own user can reach,
//! one request per connection handed to the engine thread, which answers from the
//! engine and the store (`Driver::on_admin`).
//!
//! The socket is created owner-only (mode 0600), and a peer whose user id differs from
//! the socket's owner is closed without an answer. A socket file left by a killed
//! coordinator is replaced; one a live coordinator answers on is not.

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;

use super::{now_ms, Driver, Input};
use crate::admin::{
    read_line, AdminRequest, AdminResponse, AttemptView, BanView, BatchDetail, Mode, RoundDetail,
    RoundSummary, StatusView, WithdrawalView, MAX_REQUEST_LINE, MAX_ROUNDS_LISTED,
    TIMELINE_ROUNDS_KEPT,
};
use crate::store::{BatchRecord, BatchStatus, RegistrationStatus, RoundState, StoreError};

/// One admin request on its way to the engine thread, with where its answer goes.
pub(super) struct AdminQuery {
    pub request: AdminRequest,
    pub reply: oneshot::Sender<AdminResponse>,
}

/// Why the admin socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AdminSocketError {
    /// A coordinator already answers on this socket.
    #[error("another coordinator is running with the admin socket {0}")]
    InUse(PathBuf),
    /// Something other than a socket is at the path: it is left alone.
    #[error("{0} exists and is not a socket (set admin_socket to another path)")]
    NotASocket(PathBuf),
    /// Binding or setting its permissions failed.
    #[error("admin socket {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Binds the admin socket at `path` (owner-only), replacing a stale one; returns the
/// listener and the user id allowed to use it.
pub(super) fn bind(path: &Path) -> Result<(UnixListener, u32), AdminSocketError> {
    let io = |source| AdminSocketError::Io { path: path.to_owned(), source };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(AdminSocketError::NotASocket(path.to_owned()));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(AdminSocketError::InUse(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    let owner = std::fs::metadata(path).map_err(io)?.uid();
    Ok((listener, owner))
}

/// Accepts admin connections until the task is aborted.
pub(super) fn serve(
    listener: UnixListener,
    owner: u32,
    inbox: mpsc::Sender<Input>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket: accept failed");
                    continue;
                }
            };
            let inbox = inbox.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(stream, owner, inbox).await {
                    tracing::debug!(error = %e, "admin connection");
                }
            });
        }
    })
}

/// Reads one request, has the engine thread answer it, writes the answer.
async fn answer(
    mut stream: UnixStream,
    owner: u32,
    inbox: mpsc::Sender<Input>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let uid = stream.peer_cred()?.uid();
    if uid != owner {
        tracing::warn!(uid, "admin socket: refused a connection from another user");
        return Ok(());
    }
    let (read, _) = stream.split();
    let Some(line) = read_line(read, MAX_REQUEST_LINE).await? else { return Ok(()) };
    let response = match serde_json::from_str::<AdminRequest>(&line) {
        Ok(request) => {
            let (reply, answer) = oneshot::channel();
            match inbox.send(Input::Admin(AdminQuery { request, reply })) {
                Ok(()) => answer.await.unwrap_or_else(|_| stopped()),
                Err(_) => stopped(),
            }
        }
        Err(e) => AdminResponse::Error(format!("not a request: {e}")),
    };
    let mut out = serde_json::to_vec(&response)?;
    out.push(b'\n');
    stream.write_all(&out).await?;
    stream.shutdown().await?;
    Ok(())
}

fn stopped() -> AdminResponse {
    AdminResponse::Error("the engine has stopped (the coordinator is shutting down)".into())
}

/// What the store says about one round.
struct RoundFacts {
    summary: RoundSummary,
    /// Every attempt of every batch.
    attempts: Vec<BatchRecord>,
    /// Registrations counted by status name.
    by_status: Vec<(String, usize)>,
}

impl Driver {
    /// Answers one admin request on the engine thread.
    pub(super) fn on_admin(&mut self, request: AdminRequest) -> AdminResponse {
        let now = Instant::now();
        let answer = match request {
            AdminRequest::Status => Ok(AdminResponse::Status(self.status_view(now))),
            AdminRequest::Rounds { limit } => self.rounds(limit),
            AdminRequest::Round { round } => self.round_detail(round),
            AdminRequest::Batch { round, batch } => self.batch_detail(round, batch),
            AdminRequest::Bans => self.bans(),
            AdminRequest::Timeline { round } => Ok(self.timeline_of(round)),
            AdminRequest::Unban { outpoint } => self.unban(now, outpoint),
            AdminRequest::Drain => Ok(AdminResponse::Done(self.drain(now))),
            AdminRequest::Pause => Ok(AdminResponse::Done(self.set_paused(true))),
            AdminRequest::Resume => Ok(AdminResponse::Done(self.set_paused(false))),
            AdminRequest::Withdrawals { limit } => self.withdrawals(limit),
        };
        answer.unwrap_or_else(|e| AdminResponse::Error(format!("store: {e}")))
    }

    fn timeline_of(&self, round: u64) -> AdminResponse {
        match self.timeline.round(round) {
            Some(t) => AdminResponse::Timeline(t.svg()),
            None => AdminResponse::Error(format!(
                "round {round}'s timeline is not kept: the coordinator keeps the last \
                 {TIMELINE_ROUNDS_KEPT} rounds it ran since it started"
            )),
        }
    }

    fn status_view(&self, now: Instant) -> StatusView {
        StatusView {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            network: self.about.network.to_string(),
            chain: if self.ledger.is_some() { "dev" } else { "external" }.to_owned(),
            coordinator_key: self.about.coordinator_key.to_string(),
            uptime_secs: now.duration_since(self.about.started).as_secs(),
            mode: self.mode,
            peers: self.outboxes.len(),
            round: self.engine.current_round(),
            stage: self.engine.round_stage(),
            registrations: self.engine.registrations(),
            batches: self.engine.batches().iter().map(|b| b.name().to_owned()).collect(),
            next_round_in_ms: self
                .next_round_at
                .filter(|_| self.mode == Mode::Running)
                .map(|at| at.saturating_duration_since(now).as_millis() as u64),
            bans: self.engine.bans_in_force(now),
            rebroadcasting: self.rebroadcast.len(),
        }
    }

    /// Finishes the running round and opens no new one: registration, if open, closes
    /// now and its batches are signed; the engine thread ends once the round is done.
    pub(super) fn drain(&mut self, now: Instant) -> String {
        if self.mode != Mode::Draining {
            tracing::info!("draining: no new round; exiting when the running round is done");
        }
        self.mode = Mode::Draining;
        self.engine.close_registration(now);
        self.pump(now);
        match self.engine.current_round() {
            Some(round) if !self.engine.round_finished() => {
                format!("draining: round {round} finishes its batches, then the coordinator exits")
            }
            _ => "draining: no round is running; the coordinator exits now".to_owned(),
        }
    }

    fn set_paused(&mut self, paused: bool) -> String {
        match (self.mode, paused) {
            (Mode::Draining, _) => "draining: pause and resume no longer apply".to_owned(),
            (_, true) => {
                self.mode = Mode::Paused;
                tracing::info!("paused: no new round until resume");
                "paused: the running round (if any) finishes; no new round opens".to_owned()
            }
            (_, false) => {
                self.mode = Mode::Running;
                tracing::info!("resumed");
                "resumed: rounds open on schedule".to_owned()
            }
        }
    }

    fn rounds(&self, limit: usize) -> Result<AdminResponse, StoreError> {
        let limit = limit.clamp(1, MAX_ROUNDS_LISTED);
        let store = self.persister.store();
        let rounds = store.recent_rounds(limit)?;
        let mut out = Vec::with_capacity(rounds.len());
        for r in rounds {
            out.push(self.round_summary(r.round, r.started_at_ms, r.state)?.summary);
        }
        Ok(AdminResponse::Rounds(out))
    }

    /// A round's summary line, with its attempts and its registrations by status.
    fn round_summary(
        &self,
        round: u64,
        started_at_ms: u64,
        state: RoundState,
    ) -> Result<RoundFacts, StoreError> {
        let store = self.persister.store();
        // Counted by the store: a round of 100,000 registrations is not read into the
        // engine thread to answer `rounds`.
        let counts = store.registration_counts(round)?;
        let attempts = store.batches_of_round(round)?;
        let batches: BTreeSet<u32> = attempts.iter().map(|a| a.batch).collect();
        let finalized: BTreeSet<u32> = attempts
            .iter()
            .filter(|a| {
                matches!(a.status, BatchStatus::Finalized { .. } | BatchStatus::Confirmed { .. })
            })
            .map(|a| a.batch)
            .collect();
        let mut by_status: Vec<(String, usize)> = Vec::new();
        for &(status, count) in &counts {
            let name = registration_status(status);
            match by_status.iter_mut().find(|(k, _)| k == name) {
                Some((_, n)) => *n += count,
                None => by_status.push((name.to_owned(), count)),
            }
        }
        let summary = RoundSummary {
            round,
            started_at_ms,
            state: round_state(state).to_owned(),
            registrations: counts.iter().map(|(_, n)| n).sum(),
            batches: batches.len(),
            finalized: finalized.len(),
        };
        Ok(RoundFacts { summary, attempts, by_status })
    }

    fn round_detail(&self, round: u64) -> Result<AdminResponse, StoreError> {
        let Some(r) = self.persister.store().round(round)? else {
            return Ok(AdminResponse::Error(format!("no round {round} is stored")));
        };
        let facts = self.round_summary(r.round, r.started_at_ms, r.state)?;
        Ok(AdminResponse::Round(RoundDetail {
            summary: facts.summary,
            registrations_by_status: facts.by_status,
            attempts: facts.attempts.iter().map(attempt_view).collect(),
        }))
    }

    fn batch_detail(&self, round: u64, batch: u32) -> Result<AdminResponse, StoreError> {
        let store = self.persister.store();
        let attempts: Vec<AttemptView> = store
            .batches_of_round(round)?
            .iter()
            .filter(|a| a.batch == batch)
            .map(attempt_view)
            .collect();
        if attempts.is_empty() {
            return Ok(AdminResponse::Error(format!("no batch {batch} in round {round}")));
        }
        let tree_nodes = store.signed_tree(round, batch)?.map_or(0, |t| t.len());
        Ok(AdminResponse::Batch(BatchDetail { round, batch, attempts, tree_nodes }))
    }

    fn withdrawals(&self, limit: usize) -> Result<AdminResponse, StoreError> {
        if !(1..=MAX_ROUNDS_LISTED).contains(&limit) {
            return Ok(AdminResponse::Error(format!(
                "limit {limit} is outside 1..={MAX_ROUNDS_LISTED}"
            )));
        }
        let all = self.persister.store().withdrawals()?;
        let views = all
            .iter()
            .rev()
            .take(limit)
            .map(|w| WithdrawalView {
                txid: w.tx.compute_txid(),
                deposits: w.tx.input.iter().map(|i| i.previous_output).collect(),
                in_sat: w.prevouts.iter().map(|o| o.value.to_sat()).sum(),
                out_sat: w.tx.output.iter().map(|o| o.value.to_sat()).sum(),
                at_ms: w.at_ms,
            })
            .collect();
        Ok(AdminResponse::Withdrawals(views))
    }

    fn bans(&self) -> Result<AdminResponse, StoreError> {
        let bans = self.persister.store().bans(now_ms())?;
        Ok(AdminResponse::Bans(
            bans.into_iter()
                .map(|b| BanView {
                    outpoint: b.outpoint,
                    until_ms: b.until_ms,
                    offences: b.offences,
                    reason: b.reason,
                })
                .collect(),
        ))
    }

    fn unban(
        &mut self,
        now: Instant,
        outpoint: bitcoin::OutPoint,
    ) -> Result<AdminResponse, StoreError> {
        let in_engine = self.engine.lift_ban(&outpoint, now);
        let in_store =
            self.persister.store().lift_ban(&outpoint, now_ms(), "lifted by the operator")?;
        if !(in_engine || in_store) {
            return Ok(AdminResponse::Error(format!("{outpoint} is not banned")));
        }
        tracing::info!(%outpoint, "ban lifted by the operator");
        Ok(AdminResponse::Done(format!(
            "{outpoint} may register again (its offence count stays: a next offence is banned longer)"
        )))
    }
}

fn attempt_view(a: &BatchRecord) -> AttemptView {
    let status = match &a.status {
        BatchStatus::Signing => "signing".to_owned(),
        BatchStatus::TreeSigned => "tree signed".to_owned(),
        BatchStatus::Broadcasting => "broadcasting".to_owned(),
        BatchStatus::Finalized { .. } => "finalized".to_owned(),
        BatchStatus::Confirmed { height } => format!("confirmed at {height}"),
        BatchStatus::Aborted { reason } => format!("aborted: {reason}"),
    };
    AttemptView {
        batch: a.batch,
        attempt: a.attempt,
        status,
        funding_txid: a.funding_tx.compute_txid(),
        inputs: a.funding_tx.input.len(),
        vsize: a.funding_tx.vsize(),
    }
}

fn registration_status(s: RegistrationStatus) -> &'static str {
    match s {
        RegistrationStatus::Accepted => "accepted",
        RegistrationStatus::InBatch(_) => "in batch",
        RegistrationStatus::Excluded => "excluded",
        RegistrationStatus::Cancelled => "cancelled",
        RegistrationStatus::Completed => "completed",
    }
}

fn round_state(s: RoundState) -> &'static str {
    match s {
        RoundState::Registering => "registering",
        RoundState::Signing => "signing",
        RoundState::Finished => "finished",
        RoundState::Aborted => "aborted",
    }
}
