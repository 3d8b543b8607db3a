//! The coordinator's end: an accept loop with bounded connections and handshakes, one
//! session per connection, side requests on their own streams, per-connection rate
//! limits, bounded large proposal sends, and a clean shutdown.
//!
//! The server knows nothing about rounds: it hands a [`Service`] the session events
//! ([`ServerEvent`]: a peer said hello, sent a message, went away) and asks it to
//! answer side requests (on tokio's blocking pool, so the service may block). The
//! service answers a peer through that peer's [`Outbox`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cohort_common::codec;
use cohort_common::messages::{
    Goodbye, Hello, Reason, SideRequest, SideResponse, ToCoordinator, ToParticipant,
};
use cohort_common::params::PROTOCOL_VERSION;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::endpoint::{endpoint, transport_config};
use crate::framed::{FramedRecv, FramedSend};
use crate::{close_code, CoordinatorUri, Identity, Limits, TransportError};

/// How long a TLS handshake may take before the attempt is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a new stream may take to send its first frame.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a closing session waits for its `Goodbye` to be delivered.
const GOODBYE_LINGER: Duration = Duration::from_secs(2);

/// A connection's number, unique for the life of the server.
pub type PeerId = u64;

/// What the server tells its [`Service`] about sessions.
#[derive(Debug)]
pub enum ServerEvent {
    /// A peer opened its session (the `Hello`s are exchanged).
    Connected {
        /// The peer.
        peer: PeerId,
        /// Its address.
        remote: SocketAddr,
        /// Where to send it messages.
        outbox: Outbox,
    },
    /// A message on a peer's session (never a `Hello`).
    Message {
        /// The peer.
        peer: PeerId,
        /// The message.
        msg: ToCoordinator,
    },
    /// The peer's session ended (its goodbye, a close, a protocol violation, a timeout).
    Disconnected {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
}

/// What the server drives.
pub trait Service: Send + Sync + 'static {
    /// A session event; must not block for long (it runs on the async reactor).
    fn event(&self, event: ServerEvent);
    /// Answers a side request; runs on the blocking pool, so it may block.
    fn side_request(&self, peer: PeerId, request: SideRequest) -> SideResponse;
}

enum Outgoing {
    Msg(ToParticipant),
    Close(String),
}

/// The sending side of one peer's session. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    peer: PeerId,
    tx: mpsc::UnboundedSender<Outgoing>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("peer", &self.peer).finish_non_exhaustive()
    }
}

impl Outbox {
    /// The peer.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// Queues a message; `false` if the session is gone. A `Proposal` waits for one of
    /// the [`Limits::max_proposals_in_flight`] slots before it is written; the slot is
    /// freed when this peer's next message arrives.
    pub fn send(&self, msg: ToParticipant) -> bool {
        self.tx.send(Outgoing::Msg(msg)).is_ok()
    }

    /// Ends the session after the queued messages: a `Goodbye` with the reason, then
    /// the connection is closed.
    pub fn close(&self, reason: &str) {
        let _ = self.tx.send(Outgoing::Close(reason.to_owned()));
    }
}

/// Token bucket on received frames: `rate` per second, one second of burst.
#[derive(Debug)]
struct RateLimit {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        RateLimit { rate, tokens: rate, last: Instant::now() }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct Shared {
    limits: Limits,
    connections: Arc<Semaphore>,
    handshakes: Arc<Semaphore>,
    proposals: Arc<Semaphore>,
    next_peer: AtomicU64,
}

/// A listening coordinator endpoint.
pub struct Server {
    endpoint: quinn::Endpoint,
    pin: [u8; 32],
    shared: Arc<Shared>,
    accept_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.endpoint.local_addr().ok())
            .field("pin", &hex::encode(self.pin))
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds a QUIC endpoint with this identity (must run inside a tokio runtime).
    pub fn bind(
        addr: SocketAddr,
        identity: &Identity,
        limits: Limits,
    ) -> Result<Server, TransportError> {
        let crypto = identity.server_crypto()?;
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(crypto)
            .map_err(|e| TransportError::Tls(format!("server tls config unusable by quic: {e}")))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
        config.transport_config(Arc::new(transport_config(&limits)?));
        let endpoint = endpoint(addr, Some(config), &limits)?;
        let shared = Arc::new(Shared {
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            handshakes: Arc::new(Semaphore::new(limits.max_handshakes.max(1))),
            proposals: Arc::new(Semaphore::new(limits.max_proposals_in_flight.max(1))),
            next_peer: AtomicU64::new(1),
            limits,
        });
        Ok(Server { endpoint, pin: identity.pin(), shared, accept_task: Mutex::new(None) })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        self.endpoint.local_addr().map_err(|e| TransportError::io("reading the local address", e))
    }

    /// The URI participants use to reach this server at `host`.
    pub fn uri(&self, host: &str) -> Result<CoordinatorUri, TransportError> {
        Ok(CoordinatorUri { pin: self.pin, host: host.to_owned(), port: self.local_addr()?.port() })
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    /// Starts accepting connections for `service` (once; later calls are ignored).
    pub fn serve(&self, service: Arc<dyn Service>) {
        let Ok(mut task) = self.accept_task.lock() else { return };
        if task.is_some() {
            return;
        }
        let endpoint = self.endpoint.clone();
        let shared = self.shared.clone();
        *task = Some(tokio::spawn(accept_loop(endpoint, shared, service)));
    }

    /// Closes every connection with [`close_code::SHUTDOWN`] and the reason, and waits
    /// until the closes are delivered.
    pub async fn shutdown(&self, reason: &str) {
        self.endpoint.close(quinn::VarInt::from_u32(close_code::SHUTDOWN), reason.as_bytes());
        let task = self.accept_task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
        self.endpoint.wait_idle().await;
    }
}

async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>, service: Arc<dyn Service>) {
    while let Some(incoming) = endpoint.accept().await {
        let Ok(connection_permit) = shared.connections.clone().try_acquire_owned() else {
            tracing::warn!(remote = %incoming.remote_address(), "connection limit reached: refused");
            incoming.refuse();
            continue;
        };
        // Waiting here leaves further attempts in quinn's queue: at most
        // `max_handshakes` run at once.
        let Ok(handshake_permit) = shared.handshakes.clone().acquire_owned().await else {
            return;
        };
        let shared = shared.clone();
        let service = service.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let connecting = match incoming.accept() {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(%remote, error = %e, "incoming connection failed");
                    return;
                }
            };
            let connection = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "handshake timed out");
                    return;
                }
            };
            drop(handshake_permit);
            let peer = shared.next_peer.fetch_add(1, Ordering::Relaxed);
            serve_connection(connection, peer, shared, service).await;
            drop(connection_permit);
        });
    }
}

/// Per-connection state shared by its stream tasks.
struct Conn {
    connection: quinn::Connection,
    peer: PeerId,
    rate: Mutex<RateLimit>,
    session_taken: AtomicBool,
    /// The proposal slot this peer holds, freed by its next message.
    proposal_slot: Arc<Mutex<Option<(u64, OwnedSemaphorePermit)>>>,
}

impl Conn {
    fn close(&self, code: u32, reason: &str) {
        tracing::debug!(peer = self.peer, code, reason, "closing connection");
        self.connection.close(quinn::VarInt::from_u32(code), reason.as_bytes());
    }

    /// Counts one received frame; closes the connection when over the rate.
    fn count_frame(&self, limit: u32) -> bool {
        let ok = self.rate.lock().map(|mut r| r.take()).unwrap_or(false);
        if !ok {
            self.close(close_code::RATE_LIMIT, &format!("more than {limit} messages per second"));
        }
        ok
    }

    fn free_proposal_slot(&self) {
        if let Ok(mut slot) = self.proposal_slot.lock() {
            slot.take();
        }
    }
}

async fn serve_connection(
    connection: quinn::Connection,
    peer: PeerId,
    shared: Arc<Shared>,
    service: Arc<dyn Service>,
) {
    let conn = Arc::new(Conn {
        connection: connection.clone(),
        peer,
        rate: Mutex::new(RateLimit::new(shared.limits.max_messages_per_sec)),
        session_taken: AtomicBool::new(false),
        proposal_slot: Arc::new(Mutex::new(None)),
    });
    loop {
        let (send, recv) = match connection.accept_bi().await {
            Ok(streams) => streams,
            Err(e) => {
                tracing::debug!(peer, error = %e, "connection ended");
                break;
            }
        };
        tokio::spawn(serve_stream(conn.clone(), shared.clone(), service.clone(), send, recv));
    }
    conn.free_proposal_slot();
}

/// Reads a stream's first frame and runs it as the session or as a side request.
async fn serve_stream(
    conn: Arc<Conn>,
    shared: Arc<Shared>,
    service: Arc<dyn Service>,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    let max_frame = shared.limits.max_frame;
    let mut recv = FramedRecv::<ToCoordinator>::new(recv, max_frame);
    let send = FramedSend::<ToParticipant>::new(send, max_frame);
    let first = match tokio::time::timeout(FIRST_FRAME_TIMEOUT, recv.recv_body()).await {
        Ok(Ok(Some(body))) => body,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => return refuse(&conn, &e),
        Err(_) => return conn.close(close_code::PROTOCOL, "no frame on a new stream"),
    };
    if !conn.count_frame(shared.limits.max_messages_per_sec) {
        return;
    }
    if let Ok(ToCoordinator::Hello(hello)) =
        codec::decode::<ToCoordinator>(&first, max_frame as usize)
    {
        if conn.session_taken.swap(true, Ordering::SeqCst) {
            return conn.close(close_code::PROTOCOL, "a second session on one connection");
        }
        return run_session(conn, shared, service, hello, send, recv).await;
    }
    match codec::decode::<SideRequest>(&first, max_frame as usize) {
        Ok(request) => side_request(conn, service, request, send, recv).await,
        Err(e) => conn.close(
            close_code::PROTOCOL,
            &format!("first frame is neither a hello nor a side request: {e}"),
        ),
    }
}

/// Closes the connection for a bad frame (size or encoding).
fn refuse(conn: &Conn, err: &TransportError) {
    match err {
        TransportError::FrameTooLarge { .. } => {
            conn.close(close_code::FRAME_TOO_LARGE, &err.to_string())
        }
        TransportError::Codec(_) => conn.close(close_code::PROTOCOL, &err.to_string()),
        _ => tracing::debug!(peer = conn.peer, error = %err, "stream failed"),
    }
}

async fn side_request(
    conn: Arc<Conn>,
    service: Arc<dyn Service>,
    request: SideRequest,
    send: FramedSend<ToParticipant>,
    mut recv: FramedRecv<ToCoordinator>,
) {
    recv.stop(0);
    let peer = conn.peer;
    let response =
        match tokio::task::spawn_blocking(move || service.side_request(peer, request)).await {
            Ok(response) => response,
            Err(e) => SideResponse::Error(Reason::new(format!("internal error: {e}"))),
        };
    let mut send = send.retype::<SideResponse>();
    if let Err(e) = send.send(&response).await {
        tracing::debug!(peer, error = %e, "side response not delivered");
        return;
    }
    let _ = send.finish().await;
}

async fn run_session(
    conn: Arc<Conn>,
    shared: Arc<Shared>,
    service: Arc<dyn Service>,
    hello: Hello,
    mut send: FramedSend<ToParticipant>,
    mut recv: FramedRecv<ToCoordinator>,
) {
    let peer = conn.peer;
    if hello.version != PROTOCOL_VERSION {
        let reason = format!(
            "protocol version mismatch: ours is {PROTOCOL_VERSION}, theirs is {}",
            hello.version
        );
        let bye = ToParticipant::Goodbye(Goodbye { reason: Reason::new(reason.clone()) });
        if send.send(&bye).await.is_ok() {
            let _ = tokio::time::timeout(GOODBYE_LINGER, send.finish()).await;
        }
        conn.close(close_code::VERSION, &reason);
        return;
    }
    if let Err(e) = send.send(&ToParticipant::Hello(Hello { version: PROTOCOL_VERSION })).await {
        tracing::debug!(peer, error = %e, "hello not delivered");
        return;
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let remote = conn.connection.remote_address();
    service.event(ServerEvent::Connected { peer, remote, outbox: Outbox { peer, tx } });
    tokio::spawn(write_session(conn.clone(), shared.clone(), send, rx));
    let reason = read_session(&conn, &shared, service.as_ref(), &mut recv).await;
    tracing::debug!(peer, reason, "session ended");
    service.event(ServerEvent::Disconnected { peer, reason });
}

/// Reads the session until it ends; returns why it ended.
async fn read_session(
    conn: &Conn,
    shared: &Shared,
    service: &dyn Service,
    recv: &mut FramedRecv<ToCoordinator>,
) -> String {
    let peer = conn.peer;
    let max_frame = shared.limits.max_frame;
    loop {
        let body = match recv.recv_body().await {
            Ok(Some(body)) => body,
            Ok(None) => {
                conn.close(close_code::NORMAL, "session stream finished");
                return "session stream finished".into();
            }
            Err(e) => {
                refuse(conn, &e);
                return e.to_string();
            }
        };
        if !conn.count_frame(shared.limits.max_messages_per_sec) {
            return "message rate exceeded".into();
        }
        conn.free_proposal_slot();
        match codec::decode::<ToCoordinator>(&body, max_frame as usize) {
            Ok(ToCoordinator::Goodbye(bye)) => {
                conn.close(close_code::NORMAL, "goodbye");
                return format!("goodbye: {}", bye.reason);
            }
            Ok(ToCoordinator::Hello(_)) => {
                conn.close(close_code::PROTOCOL, "a second hello on the session");
                return "a second hello on the session".into();
            }
            Ok(msg) => service.event(ServerEvent::Message { peer, msg }),
            Err(e) => {
                let err = TransportError::Codec(e);
                refuse(conn, &err);
                return err.to_string();
            }
        }
    }
}

/// Writes what the service queues for one peer, gating proposals.
async fn write_session(
    conn: Arc<Conn>,
    shared: Arc<Shared>,
    mut send: FramedSend<ToParticipant>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
) {
    let closed = conn.connection.clone();
    let mut generation = 0u64;
    loop {
        let out = tokio::select! {
            out = rx.recv() => out,
            _ = closed.closed() => return,
        };
        match out {
            None => {
                let _ = tokio::time::timeout(GOODBYE_LINGER, send.finish()).await;
                return;
            }
            Some(Outgoing::Msg(msg)) => {
                if matches!(msg, ToParticipant::Proposal(_)) {
                    let permit = tokio::select! {
                        p = shared.proposals.clone().acquire_owned() => p,
                        _ = closed.closed() => return,
                    };
                    let Ok(permit) = permit else { return };
                    generation += 1;
                    hold_proposal_slot(&conn, permit, generation, shared.limits.idle_timeout);
                }
                if let Err(e) = send.send(&msg).await {
                    tracing::debug!(peer = conn.peer, error = %e, "write failed");
                    if matches!(e, TransportError::FrameTooLarge { .. } | TransportError::Codec(_))
                    {
                        conn.close(close_code::PROTOCOL, "cannot encode a message for this peer");
                    }
                    return;
                }
            }
            Some(Outgoing::Close(reason)) => {
                let bye = ToParticipant::Goodbye(Goodbye { reason: Reason::new(reason.clone()) });
                if send.send(&bye).await.is_ok() {
                    let _ = tokio::time::timeout(GOODBYE_LINGER, send.finish()).await;
                }
                conn.close(close_code::NORMAL, &reason);
                return;
            }
        }
    }
}

/// Keeps a proposal slot until the peer's next message, or at most `hold`.
fn hold_proposal_slot(conn: &Conn, permit: OwnedSemaphorePermit, generation: u64, hold: Duration) {
    let Ok(mut slot) = conn.proposal_slot.lock() else { return };
    *slot = Some((generation, permit));
    let weak = Arc::downgrade(&conn.proposal_slot);
    tokio::spawn(async move {
        tokio::time::sleep(hold).await;
        if let Some(slot) = weak.upgrade() {
            if let Ok(mut slot) = slot.lock() {
                if slot.as_ref().is_some_and(|(g, _)| *g == generation) {
                    slot.take();
                }
            }
        }
    });
}
