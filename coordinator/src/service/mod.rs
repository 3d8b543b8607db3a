//! The coordinator service: the round engine driven over QUIC (STYLE 3).
//!
//! The [`Coordinator`] engine runs on ONE dedicated thread (it does rayon work inside its
//! calls, so it never runs on the async reactor). Connection tasks of the
//! [`cohort_transport::Server`] hand it `Connected` / `Message` / `Disconnected` events
//! over a channel; the thread blocks on that inbox with a timeout set by the engine's
//! next deadline, the round schedule and the confirmation poll. After every engine call
//! it drains `poll_transmit` (to each peer's writer task) and `poll_event` (recorded in
//! the [`CoordinatorStore`]; the result of storing a `PersistBatch` goes back to the
//! engine, which only then asks for the `Broadcast`; that goes to the [`Chain`], and on
//! a dev chain a block is mined right after it so rounds finish on their own). A
//! `Register` is handed to the engine with the chain data it needs, looked up here; so is a
//! `Withdraw`, whose co-signature is stored before it is sent. Side requests are answered
//! on tokio's blocking pool by [`SideRequests`], outside the engine. A dev chain is also
//! served as `bitcoind`'s JSON-RPC ([`devrpc`]) on a TCP port next to the QUIC endpoint,
//! announced in [`ServerInfo`]: wallets reach it with the client they use for a node.
//!
//! Restart: before the first round, [`recover`] aborts the batch attempts the store holds
//! unfinished without a complete funding transaction (nothing of theirs can be on the
//! network, so every deposit is still the owner's), continues the round numbering and
//! restores the bans in force. An attempt stored complete (`Broadcasting`: the crash came
//! between the store write and the chain's answer) is never aborted: the driver broadcasts
//! it again at every confirmation poll until the chain knows it, then records it
//! finalized (and confirmed).

mod admin;
pub mod devrpc;
pub mod http;
pub mod metrics;
mod persist;
mod side;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bitcoin::{FeeRate, OutPoint, Script, Transaction, Txid};
use cohort_common::chain::{Chain, ChainError, Utxo};
use cohort_common::keys::Keypair;
use cohort_common::ledger::Ledger;
use cohort_common::messages::{
    Reason, RefusalReason, Refused, ServerInfo, SideRequest, SideResponse, ToCoordinator,
    ToParticipant, Withdraw, WithdrawSigned,
};
use cohort_common::params::PROTOCOL_VERSION;
use cohort_transport::{CoordinatorUri, Identity, Limits, Outbox, PeerId, Server, ServerEvent};

use crate::admin::Mode;
use crate::engine::{
    withdraw_lookup, BatchPhase, ChainOutage, Coordinator, CoordinatorConfig, Event, Inbound,
    PersistError, RoundStage,
};
use crate::store::{BatchRecord, BatchStatus, CoordinatorStore, StoreError, WithdrawalRecord};
use crate::timeline::Timeline;

pub use admin::AdminSocketError;
pub use metrics::Metrics;
pub use persist::{now_ms, recover, Persister, Recovery, RESTART_REASON};
pub use side::SideRequests;

/// Errors starting the service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The QUIC endpoint could not start.
    #[error("transport: {0}")]
    Transport(#[from] cohort_transport::TransportError),
    /// The store could not be read or written during recovery.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The engine thread could not be started.
    #[error("cannot start the engine thread: {0}")]
    Thread(std::io::Error),
    /// A round parameter is outside its range.
    #[error("config: {0}")]
    Params(#[from] cohort_common::messages::ParamsError),
    /// The admin socket could not be opened.
    #[error(transparent)]
    Admin(#[from] AdminSocketError),
    /// The metrics endpoint could not listen.
    #[error("metrics endpoint on {addr}: {source}")]
    Metrics {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The dev chain's JSON-RPC endpoint could not listen.
    #[error("dev chain endpoint on {addr}: {source}")]
    DevRpc {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Where the chain comes from.
#[derive(Clone)]
pub enum ChainBackend {
    /// The embedded regtest ledger, also served to participants as the dev chain
    /// endpoint; a block is mined right after each funding broadcast.
    Dev(Arc<Ledger>),
    /// Another chain backend (no dev endpoint, no mining).
    External(Arc<dyn Chain>),
}

impl std::fmt::Debug for ChainBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainBackend::Dev(l) => f.debug_tuple("Dev").field(l).finish(),
            ChainBackend::External(_) => f.write_str("External"),
        }
    }
}

impl ChainBackend {
    fn chain(&self) -> Arc<dyn Chain> {
        match self {
            ChainBackend::Dev(l) => l.clone(),
            ChainBackend::External(c) => c.clone(),
        }
    }

    fn ledger(&self) -> Option<Arc<Ledger>> {
        match self {
            ChainBackend::Dev(l) => Some(l.clone()),
            ChainBackend::External(_) => None,
        }
    }
}

/// Everything the service runs with.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Round parameters and limits of the engine.
    pub engine: CoordinatorConfig,
    /// Time from the end of one round to the start of the next.
    pub round_interval: Duration,
    /// Transport limits.
    pub limits: Limits,
    /// How often funding transactions awaiting confirmation are looked up.
    pub confirmation_poll: Duration,
    /// The network addresses are for.
    pub network: bitcoin::Network,
    /// The `deposit_csv` suggested to new participants.
    pub deposit_csv: u16,
    /// Where to serve `/metrics`, `/healthz` and `/readyz` over HTTP (`None`: nowhere).
    pub metrics_listen: Option<SocketAddr>,
    /// Where the admin socket listens (`None`: no admin channel).
    pub admin_socket: Option<PathBuf>,
}

impl ServiceConfig {
    /// A service with `engine` on an ephemeral loopback port, for regtest, with default
    /// limits, no metrics endpoint and no admin socket, opening a round 300 ms after the
    /// last and looking for confirmations every 100 ms: what tests and the simulator
    /// start, overriding the fields they care about.
    pub fn local(engine: CoordinatorConfig) -> Self {
        ServiceConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            engine,
            round_interval: Duration::from_millis(300),
            limits: Limits::default(),
            confirmation_poll: Duration::from_millis(100),
            network: bitcoin::Network::Regtest,
            deposit_csv: cohort_common::params::DEFAULT_DEPOSIT_CSV,
            metrics_listen: None,
            admin_socket: None,
        }
    }
}

#[allow(clippy::large_enum_variant)] // One event at a time through the channel.
enum Input {
    Server(ServerEvent),
    Admin(admin::AdminQuery),
    Drain,
    Shutdown,
}

struct Handler {
    inbox: mpsc::Sender<Input>,
    side: SideRequests,
}

impl cohort_transport::Service for Handler {
    fn event(&self, event: ServerEvent) {
        let _ = self.inbox.send(Input::Server(event));
    }

    fn side_request(&self, _peer: PeerId, request: SideRequest) -> SideResponse {
        self.side.answer(request)
    }
}

/// A running coordinator service.
#[derive(Debug)]
pub struct CoordinatorService {
    server: Arc<Server>,
    inbox: mpsc::Sender<Input>,
    engine: Option<JoinHandle<()>>,
    recovery: Recovery,
    metrics: Arc<Metrics>,
    /// The HTTP endpoint's address and task, when it is on.
    http: Option<(SocketAddr, tokio::task::JoinHandle<()>)>,
    /// The admin socket's path and task, when it is on.
    admin: Option<(PathBuf, tokio::task::JoinHandle<()>)>,
    /// The dev chain endpoint's address and task, on a dev chain.
    dev_rpc: Option<(SocketAddr, tokio::task::JoinHandle<()>)>,
    /// Turns true when a drain is complete (the engine thread has ended).
    drained: tokio::sync::watch::Receiver<bool>,
}

impl CoordinatorService {
    /// Recovers from the store, binds the endpoint and starts the engine thread and the
    /// round schedule (the first round starts at once). Must run inside a tokio runtime.
    pub fn start(
        config: ServiceConfig,
        identity: &Identity,
        key: Keypair,
        store: Arc<dyn CoordinatorStore>,
        chain: ChainBackend,
    ) -> Result<CoordinatorService, ServiceError> {
        let mut engine = Coordinator::new(key, config.engine.clone())?;
        let recovery = recover(store.as_ref(), &mut engine, Instant::now())?;
        if !recovery.aborted.is_empty() || recovery.last_round.is_some() {
            tracing::info!(
                aborted = recovery.aborted.len(),
                rebroadcast = recovery.rebroadcast.len(),
                last_round = ?recovery.last_round,
                bans = recovery.bans,
                "recovered from the store"
            );
        }
        // The dev chain's JSON-RPC endpoint: on the QUIC endpoint's address, any free port.
        let dev_rpc = match chain.ledger() {
            Some(ledger) => {
                let addr = SocketAddr::new(config.listen.ip(), 0);
                let served = devrpc::DevRpc::new(ledger, config.network)
                    .serve(addr)
                    .map_err(|source| ServiceError::DevRpc { addr, source })?;
                tracing::info!(addr = %served.0, "dev chain JSON-RPC endpoint listening");
                Some(served)
            }
            None => None,
        };
        let info = ServerInfo {
            version: PROTOCOL_VERSION,
            coordinator_key: engine.public_key(),
            network: config.network,
            deposit_csv: config.deposit_csv,
            exit_csv: config.engine.exit_csv,
            dev: matches!(chain, ChainBackend::Dev(_)),
            dev_chain: chain.ledger().map(|l| l.id()),
            dev_rpc_port: dev_rpc.as_ref().map(|(addr, _)| addr.port()),
        };
        let server = Arc::new(Server::bind(config.listen, identity, config.limits.clone())?);
        let metrics = Arc::new(Metrics::new(config.engine.payout_script.clone()));
        let engine_beat = Arc::new(AtomicU64::new(now_ms()));
        let store_error = Arc::new(std::sync::Mutex::new(None));
        let timed: Arc<dyn Chain> =
            Arc::new(TimedChain { inner: chain.chain(), metrics: metrics.clone() });
        let http = match config.metrics_listen {
            Some(addr) => {
                let health = http::Health {
                    metrics: metrics.clone(),
                    chain: timed.clone(),
                    engine_beat: engine_beat.clone(),
                    store_error: store_error.clone(),
                };
                let served = http::serve(addr, health)
                    .map_err(|source| ServiceError::Metrics { addr, source })?;
                tracing::info!(addr = %served.0, "metrics endpoint listening");
                Some(served)
            }
            None => None,
        };
        let (tx, rx) = mpsc::channel();
        let admin = match &config.admin_socket {
            Some(path) => {
                let (listener, owner) = admin::bind(path)?;
                tracing::info!(path = %path.display(), "admin socket listening");
                Some((path.clone(), admin::serve(listener, owner, tx.clone())))
            }
            None => None,
        };
        let (drained_tx, drained) = tokio::sync::watch::channel(false);
        let about = About {
            network: config.network,
            coordinator_key: info.coordinator_key,
            started: Instant::now(),
        };
        let driver = Driver {
            about,
            mode: Mode::Running,
            timeline: Timeline::new(crate::admin::TIMELINE_ROUNDS_KEPT),
            drained: drained_tx,
            engine,
            persister: Persister::new(store),
            metrics: metrics.clone(),
            engine_beat,
            store_error,
            chain: timed,
            ledger: chain.ledger(),
            outboxes: HashMap::new(),
            round_interval: config.round_interval,
            confirmation_poll: config.confirmation_poll,
            next_round_at: Some(Instant::now()),
            next_poll_at: Instant::now(),
            rebroadcast: recovery.rebroadcast.clone(),
        };
        let engine = std::thread::Builder::new()
            .name("cohort-engine".into())
            .spawn(move || {
                // The engine's per-node work gets a pool of its own, so it never waits
                // behind other rayon users in the process (and its CPU can be told apart).
                let pool = rayon::ThreadPoolBuilder::new()
                    .thread_name(|i| format!("coord-rayon-{i}"))
                    .build();
                match pool {
                    Ok(pool) => pool.install(|| driver.run(rx)),
                    Err(_) => driver.run(rx),
                }
            })
            .map_err(ServiceError::Thread)?;
        server.serve(Arc::new(Handler { inbox: tx.clone(), side: SideRequests::new(info) }));
        Ok(CoordinatorService {
            server,
            inbox: tx,
            engine: Some(engine),
            recovery,
            metrics,
            http,
            admin,
            dev_rpc,
            drained,
        })
    }

    /// Starts draining, as `admin drain` does: registration closes now if open, the
    /// running round finishes its batches, no new round opens, and then the engine
    /// thread ends ([`CoordinatorService::drained`]).
    pub fn drain(&self) {
        let _ = self.inbox.send(Input::Drain);
    }

    /// Waits until a drain (from [`CoordinatorService::drain`] or the admin channel) is
    /// complete; then [`CoordinatorService::shutdown`] loses nothing.
    pub fn drained(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut drained = self.drained.clone();
        async move {
            let _ = drained.wait_for(|done| *done).await;
        }
    }

    /// The admin socket's path, when the admin channel is on.
    pub fn admin_socket(&self) -> Option<&Path> {
        self.admin.as_ref().map(|(path, _)| path.as_path())
    }

    /// The address of the dev chain's JSON-RPC endpoint, on a dev chain.
    pub fn dev_rpc_addr(&self) -> Option<SocketAddr> {
        self.dev_rpc.as_ref().map(|(addr, _)| *addr)
    }

    /// The address of the HTTP endpoint (`/metrics`, `/healthz`, `/readyz`), when on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|(addr, _)| *addr)
    }

    /// The service's metrics (what `/metrics` serves).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, ServiceError> {
        Ok(self.server.local_addr()?)
    }

    /// The URI participants use to reach this service at `host`.
    pub fn uri(&self, host: &str) -> Result<CoordinatorUri, ServiceError> {
        Ok(self.server.uri(host)?)
    }

    /// What the start-up recovery did.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Stops the engine thread (nothing more is recorded), closes every connection and
    /// waits until the closes are delivered. What is stored stays as it was: a round
    /// in progress is aborted by the next start's recovery.
    pub async fn shutdown(mut self, reason: &str) {
        let _ = self.inbox.send(Input::Shutdown);
        if let Some(engine) = self.engine.take() {
            let _ = tokio::task::spawn_blocking(move || engine.join()).await;
        }
        if let Some((_, task)) = self.dev_rpc.take() {
            task.abort();
        }
        if let Some((_, task)) = self.http.take() {
            task.abort();
        }
        if let Some((path, task)) = self.admin.take() {
            task.abort();
            let _ = std::fs::remove_file(path);
        }
        self.server.shutdown(reason).await;
    }
}

/// What the status shows about the service itself.
struct About {
    network: bitcoin::Network,
    coordinator_key: bitcoin::secp256k1::PublicKey,
    started: Instant,
}

/// The engine thread's state.
struct Driver {
    about: About,
    /// Opening rounds, paused, or draining.
    mode: Mode,
    /// The last rounds' phases per batch, for `admin round N --timeline`.
    timeline: Timeline,
    /// Set once a drain is complete, as the thread ends.
    drained: tokio::sync::watch::Sender<bool>,
    engine: Coordinator,
    persister: Persister,
    metrics: Arc<Metrics>,
    /// Unix milliseconds of the last turn of the loop (read by `/readyz`).
    engine_beat: Arc<AtomicU64>,
    /// The last store write's error, until one succeeds (read by `/readyz`).
    store_error: Arc<std::sync::Mutex<Option<String>>>,
    chain: Arc<dyn Chain>,
    ledger: Option<Arc<Ledger>>,
    outboxes: HashMap<PeerId, Outbox>,
    round_interval: Duration,
    confirmation_poll: Duration,
    /// When the next round starts (`None` while one runs).
    next_round_at: Option<Instant>,
    next_poll_at: Instant,
    /// Complete funding transactions found unfinished at start-up, until the chain knows them.
    rebroadcast: Vec<BatchRecord>,
}

impl Driver {
    fn run(mut self, inbox: mpsc::Receiver<Input>) {
        loop {
            let now = Instant::now();
            self.engine_beat.store(now_ms(), Ordering::Relaxed);
            if self.mode == Mode::Running
                && self.next_round_at.is_some_and(|at| at <= now)
                && self.engine.round_finished()
            {
                let round = self.timed(|e| e.start_round(now));
                tracing::info!(round, "round started");
                self.next_round_at = None;
                self.pump(now);
            }
            if self.engine.poll_timeout().is_some_and(|t| t <= now) {
                self.timed(|e| e.handle_timeout(now));
                self.pump(now);
            }
            if self.next_poll_at <= now {
                self.resume_broadcasts();
                self.poll_confirmations(now);
                self.next_poll_at = now + self.confirmation_poll;
            }
            if self.mode == Mode::Draining && self.drain_complete() {
                tracing::info!(
                    "drained: every batch of the last round is confirmed, broadcast or over"
                );
                self.drained.send_replace(true);
                return;
            }
            let mut wake = self.next_poll_at;
            if let Some(t) = self.engine.poll_timeout() {
                wake = wake.min(t);
            }
            if let Some(t) = self.next_round_at.filter(|_| self.mode == Mode::Running) {
                wake = wake.min(t);
            }
            let wait = wake.saturating_duration_since(Instant::now());
            match inbox.recv_timeout(wait) {
                Ok(Input::Server(event)) => self.on_server_event(event),
                Ok(Input::Admin(query)) => {
                    let answer = self.on_admin(query.request);
                    let _ = query.reply.send(answer);
                }
                Ok(Input::Drain) => {
                    self.drain(Instant::now());
                }
                Ok(Input::Shutdown) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
    }

    fn on_server_event(&mut self, event: ServerEvent) {
        let now = Instant::now();
        match event {
            ServerEvent::Connected { peer, outbox, .. } => {
                self.outboxes.insert(peer, outbox);
                self.metrics.peers_changed(1);
                self.timed(|e| e.peer_connected(now, peer));
            }
            ServerEvent::Message { peer, msg: ToCoordinator::Withdraw(request) } => {
                self.on_withdraw(peer, &request);
            }
            ServerEvent::Message { peer, msg } => {
                // A registration that fails the cheap checks is refused before any of its
                // deposits is looked up: a flood of them costs the chain nothing.
                if let ToCoordinator::Register(reg) = &msg {
                    if !self.timed(|e| e.precheck_registration(now, peer, reg)) {
                        return self.pump(now);
                    }
                }
                // The chain data a registration needs is looked up here, outside the engine.
                let max = self.engine.max_deposits_per_registration();
                let input = Inbound::resolve(msg, self.chain.as_ref(), max);
                self.timed(|e| e.handle_message(now, peer, input));
            }
            ServerEvent::Disconnected { peer, reason } => {
                tracing::debug!(peer, reason, "peer left");
                if self.outboxes.remove(&peer).is_some() {
                    self.metrics.peers_changed(-1);
                }
                self.timed(|e| e.peer_disconnected(now, peer));
            }
        }
        self.pump(now);
    }

    /// Answers a cooperative withdrawal: the engine's co-signature once it is stored, or
    /// a refusal.
    fn on_withdraw(&mut self, peer: PeerId, request: &Withdraw) {
        let answer = match self.withdrawal(request) {
            Ok(signed) => {
                let deposits = request.body.inputs.len();
                tracing::info!(peer, txid = %signed.txid, deposits, "withdrawal co-signed");
                ToParticipant::WithdrawSigned(signed)
            }
            Err(reason) => {
                tracing::info!(peer, %reason, "withdrawal refused");
                ToParticipant::Refused(Refused { reason })
            }
        };
        if let Some(outbox) = self.outboxes.get(&peer) {
            outbox.send(answer);
        }
    }

    fn withdrawal(&mut self, request: &Withdraw) -> Result<WithdrawSigned, RefusalReason> {
        // A deposit of a funding transaction stored complete may still confirm.
        for input in &request.body.inputs {
            let op = input.outpoint;
            let spends =
                |b: &BatchRecord| b.funding_tx.input.iter().any(|i| i.previous_output == op);
            if self.rebroadcast.iter().any(spends) {
                return Err(RefusalReason::InRound(op));
            }
        }
        // Only a request from the deposits' owner is looked up on the chain.
        self.timed(|e| e.precheck_withdrawal(request))?;
        let max = self.engine.max_deposits_per_registration();
        let lookups = withdraw_lookup(self.chain.as_ref(), request, max).map_err(ChainOutage::from);
        let cosigned = self.timed(|e| e.withdraw(request, lookups))?;
        let record = WithdrawalRecord {
            tx: request.body.tx.clone(),
            prevouts: cosigned.deposits.into_iter().map(|(_, txout)| txout).collect(),
            at_ms: now_ms(),
        };
        // The co-signature goes out only once the coordinator will remember it.
        if let Err(e) = self.persister.store().put_withdrawal(&record) {
            tracing::error!(error = %e, "cannot store a withdrawal");
            let why = "the coordinator cannot record the withdrawal now; try again";
            return Err(RefusalReason::Other(Reason::new(why)));
        }
        Ok(cosigned.answer)
    }

    /// Runs `f` on the engine, counting its time.
    fn timed<R>(&mut self, f: impl FnOnce(&mut Coordinator) -> R) -> R {
        let started = Instant::now();
        let result = f(&mut self.engine);
        self.metrics.engine_time(started.elapsed());
        result
    }

    /// Drains the engine's messages and events until both are empty.
    fn pump(&mut self, now: Instant) {
        loop {
            while let Some((peer, msg)) = self.engine.poll_transmit() {
                if let Some(outbox) = self.outboxes.get(&peer) {
                    outbox.send(msg);
                }
            }
            let Some(event) = self.engine.poll_event() else { return };
            self.metrics.on_event(now, &event);
            self.timeline.observe(now, &event);
            let started = Instant::now();
            let recorded = self.persister.record(now, &event);
            self.metrics.store_time(started.elapsed());
            if let Ok(mut last) = self.store_error.lock() {
                *last = recorded.as_ref().err().map(ToString::to_string);
            }
            if let Event::PersistBatch { round, batch, attempt, .. } = &event {
                // The broadcast waits for this write; a failed write fails the batch.
                if let Err(e) = &recorded {
                    tracing::error!(round, batch, attempt, error = %e, "cannot store a signed batch");
                }
                let result = recorded.map_err(|e| Box::new(e) as PersistError);
                self.engine.batch_persisted(now, *batch, *attempt, result);
                continue;
            }
            if let Err(e) = recorded {
                tracing::error!(error = %e, ?event, "cannot record an event");
            }
            self.on_engine_event(now, event);
        }
    }

    fn on_engine_event(&mut self, now: Instant, event: Event) {
        match event {
            Event::Broadcast { round, batch, attempt, tx } => {
                let txid = tx.compute_txid();
                let result = match self.chain.broadcast(&tx) {
                    Ok(txid) => Ok(txid),
                    // The chain has it already (accepted before an answer was lost).
                    Err(_) if matches!(self.chain.confirmations(&txid), Ok(Some(_))) => Ok(txid),
                    Err(e) => Err(e),
                };
                match &result {
                    Ok(txid) => {
                        tracing::info!(round, batch, %txid, "funding transaction broadcast")
                    }
                    Err(e) => tracing::warn!(round, batch, error = %e, "funding broadcast failed"),
                }
                let ok = result.is_ok();
                let refused = matches!(result, Err(ChainError::Rejected(_)));
                self.engine.broadcast_result(now, batch, result.map_err(|e| e.to_string()));
                if refused {
                    let why = "funding transaction refused by the chain";
                    if let Err(e) = self.persister.broadcast_refused(round, batch, attempt, why) {
                        tracing::error!(round, batch, attempt, error = %e, "cannot record a refused broadcast");
                    }
                } else if !ok {
                    // Outcome unknown (the backend failed): the transaction may be on the
                    // network. The batch is over for the engine, but the stored attempt
                    // stays `Broadcasting` and is broadcast again at every poll.
                    self.rebroadcast.push(BatchRecord {
                        round,
                        batch,
                        attempt,
                        funding_tx: *tx,
                        status: BatchStatus::Broadcasting,
                    });
                }
                if ok {
                    if let Some(ledger) = &self.ledger {
                        ledger.mine(1);
                        // Let the confirmation be seen at the next turn of the loop.
                        self.next_poll_at = now;
                    }
                }
            }
            Event::RoundFinished { round } => {
                tracing::info!(round, "round finished");
                self.next_round_at = Some(now + self.round_interval);
            }
            Event::RegistrationClosed { round, registrations, batches } => {
                tracing::info!(round, registrations, batches, "registration closed");
            }
            Event::BatchFailed { round, batch, reason } => {
                tracing::warn!(round, batch, ?reason, "batch failed");
            }
            Event::ChainUnavailable { peer, error } => {
                tracing::warn!(peer, ?error, "chain backend unavailable: registration not checked");
            }
            Event::BatchConfirmed { round, batch, height, .. } => {
                tracing::info!(round, batch, height, "batch confirmed");
            }
            _ => {}
        }
    }

    /// Whether a drain may end: registration is closed and every batch of the round is
    /// over or finalized. A finalized batch is broadcast and stored (a restarted
    /// coordinator watches it until it confirms, and broadcasts it again meanwhile), so a
    /// drain does not wait for a block; it is checked after the confirmation poll, so a
    /// batch already in a block is recorded confirmed first.
    fn drain_complete(&self) -> bool {
        let signing = |b: &BatchPhase| !b.is_terminal() && b.awaiting_confirmation().is_none();
        let round_over = match self.engine.round_stage() {
            None | Some(RoundStage::Done) => true,
            Some(RoundStage::Registration) => false,
            Some(RoundStage::Running) => !self.engine.batches().iter().any(signing),
        };
        round_over
    }

    /// Broadcasts again each funding transaction found complete at start-up, and records
    /// it finalized once the chain has it (in its mempool), confirmed once in a block. One the chain
    /// refuses stays on the list: it may be known to the chain later (a node catching
    /// up), and its deposits cannot be handed to another batch meanwhile.
    fn resume_broadcasts(&mut self) {
        let pending = std::mem::take(&mut self.rebroadcast);
        for mut b in pending {
            let txid = b.funding_tx.compute_txid();
            let (round, batch, attempt) = (b.round, b.batch, b.attempt);
            let known = match self.chain.confirmations(&txid) {
                Ok(Some(confs)) => Ok(confs),
                Ok(None) => self.chain.broadcast(&b.funding_tx).map(|_| 0),
                Err(e) => Err(e),
            };
            let confs = match known {
                Ok(confs) => confs,
                Err(e) => {
                    tracing::warn!(round, batch, attempt, %txid, error = %e, "stored funding transaction not on the chain yet");
                    self.rebroadcast.push(b);
                    continue;
                }
            };
            let height = match confs {
                0 => None,
                c => self.chain.tip_height().ok().map(|tip| tip.saturating_sub(c - 1)),
            };
            // Finalized once (members completed with it), confirmed once; kept on the
            // list until both are recorded.
            if b.status == BatchStatus::Broadcasting {
                if let Err(e) = self.persister.resumed_batch_finalized(&b, txid) {
                    tracing::error!(round, batch, attempt, error = %e, "cannot record a resumed batch");
                    self.rebroadcast.push(b);
                    continue;
                }
                tracing::info!(round, batch, attempt, %txid, "stored funding transaction is on the chain");
                b.status = BatchStatus::Finalized { txid };
            }
            let Some(height) = height else {
                self.rebroadcast.push(b);
                continue;
            };
            let status = BatchStatus::Confirmed { height };
            match self.persister.store().set_batch_status(round, batch, attempt, &status) {
                Ok(()) => {
                    tracing::info!(round, batch, attempt, %txid, height, "resumed batch confirmed")
                }
                Err(e) => {
                    tracing::error!(round, batch, attempt, error = %e, "cannot record a resumed batch");
                    self.rebroadcast.push(b);
                }
            }
        }
    }

    fn poll_confirmations(&mut self, now: Instant) {
        let waiting = self.engine.awaiting_confirmation();
        if waiting.is_empty() {
            return;
        }
        let Ok(tip) = self.chain.tip_height() else { return };
        for txid in waiting {
            match self.chain.confirmations(&txid) {
                Ok(Some(confs)) if confs >= 1 => {
                    let height = tip.saturating_sub(confs - 1);
                    self.timed(|e| e.confirmed(now, txid, height));
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(%txid, error = %e, "cannot look up a confirmation"),
            }
        }
        self.pump(now);
    }
}

/// The driver's chain backend, each call's latency counted in the metrics.
struct TimedChain {
    inner: Arc<dyn Chain>,
    metrics: Arc<Metrics>,
}

impl TimedChain {
    fn time<R>(&self, f: impl FnOnce(&dyn Chain) -> R) -> R {
        let started = Instant::now();
        let result = f(self.inner.as_ref());
        self.metrics.chain_time(started.elapsed());
        result
    }
}

impl Chain for TimedChain {
    fn tip_height(&self) -> Result<u32, ChainError> {
        self.time(|c| c.tip_height())
    }
    fn utxo(&self, outpoint: &OutPoint) -> Result<Option<Utxo>, ChainError> {
        self.time(|c| c.utxo(outpoint))
    }
    fn script_utxos(&self, script: &Script) -> Result<Vec<(OutPoint, Utxo)>, ChainError> {
        self.time(|c| c.script_utxos(script))
    }
    fn broadcast(&self, tx: &Transaction) -> Result<Txid, ChainError> {
        self.time(|c| c.broadcast(tx))
    }
    fn broadcast_package(
        &self,
        parent: &Transaction,
        child: &Transaction,
    ) -> Result<(Txid, Txid), ChainError> {
        self.time(|c| c.broadcast_package(parent, child))
    }
    fn fee_rate(&self) -> Result<FeeRate, ChainError> {
        self.time(|c| c.fee_rate())
    }
    fn confirmations(&self, txid: &Txid) -> Result<Option<u32>, ChainError> {
        self.time(|c| c.confirmations(txid))
    }
}
