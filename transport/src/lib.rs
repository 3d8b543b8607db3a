//! Cohort over QUIC: a pinned self-signed TLS identity, length-framed streams, limits,
//! and the client and server ends of a coordinator connection (DESIGN 8).
//!
//! # Wire
//!
//! - ALPN [`ALPN`] (`cohort/1`), TLS 1.3 only. The coordinator's certificate is
//!   self-signed; a client accepts exactly the certificate whose SubjectPublicKeyInfo
//!   hashes (SHA-256) to the pin of its [`CoordinatorUri`] (`cohort://<hex>@host:port`).
//! - Every stream carries frames: a 4-byte big-endian length, then a bincode body
//!   ([`cohort_common::codec`]). A length above [`Limits::max_frame`] is refused from
//!   the header, before any of the body is read.
//! - The **session stream** is a bidirectional stream whose first frame is
//!   `ToCoordinator::Hello`; the server answers `ToParticipant::Hello` (or `Goodbye` and a
//!   close on a version mismatch). One session per connection; [`Client::open_session`]
//!   opens it. Any other bidirectional stream carries one **side request**: one framed
//!   `SideRequest`, one framed `SideResponse`, then both ends finish it.
//! - The server bounds connections, handshakes in flight, the frame size, the rate of
//!   received frames per connection and the large proposal sends in flight
//!   (see [`Limits`]). Bytes from a peer never panic: a bad frame closes that
//!   connection only.
//!
//! # Layout
//!
//! - [`uri`] holds [`CoordinatorUri`].
//! - [`tls`] holds [`Identity`], [`spki_pin`], the rustls configurations and the pin verifier.
//! - [`framed`] holds [`FramedSend`], [`FramedRecv`].
//! - [`endpoint`] holds UDP sockets with large buffers and the QUIC transport configuration.
//! - [`client`] holds [`Client`].
//! - [`server`] holds [`Server`], [`Service`], [`ServerEvent`], [`Outbox`].

pub mod client;
pub mod endpoint;
pub mod framed;
pub mod server;
pub mod tls;
pub mod uri;

use std::time::Duration;

pub use client::{Client, ClientEndpoint};
pub use framed::{FramedRecv, FramedSend};
pub use server::{Outbox, PeerId, Server, ServerEvent, Service};
pub use tls::{spki_pin, Identity};
pub use uri::CoordinatorUri;

/// The one application protocol spoken.
pub const ALPN: &[u8] = b"cohort/1";

/// Application close codes the server (and client) use.
pub mod close_code {
    /// Normal end of a connection.
    pub const NORMAL: u32 = 0;
    /// The peer broke the protocol (undecodable frame, unexpected message).
    pub const PROTOCOL: u32 = 1;
    /// The peer speaks another protocol version.
    pub const VERSION: u32 = 2;
    /// The peer announced a frame above the limit.
    pub const FRAME_TOO_LARGE: u32 = 3;
    /// The peer sent frames faster than allowed.
    pub const RATE_LIMIT: u32 = 4;
    /// The server is shutting down.
    pub const SHUTDOWN: u32 = 5;
    /// The server holds its maximum of connections.
    pub const BUSY: u32 = 6;
}

/// Limits and timers of a transport endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame body in bytes, either way.
    pub max_frame: u32,
    /// Most connections a server holds at once; more are refused.
    pub max_connections: usize,
    /// Frames a connection may send per second (token bucket with one second of burst).
    pub max_messages_per_sec: u32,
    /// Most handshakes a server runs at once; more wait in quinn's queue.
    pub max_handshakes: usize,
    /// Most large proposal sends in flight at once; a slot is freed when that
    /// participant's next message arrives (or after [`Limits::idle_timeout`]).
    pub max_proposals_in_flight: usize,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Interval of keep-alive packets (below `idle_timeout`).
    pub keep_alive: Duration,
    /// Send and receive buffer size requested for the UDP socket.
    pub socket_buffer: usize,
    /// How long a client waits for the handshake to finish. QUIC hears nothing back from
    /// a closed port, so this is also how long it takes to learn that nobody listens.
    pub connect_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: cohort_common::params::DEFAULT_MAX_FRAME,
            max_connections: 20_000,
            max_messages_per_sec: 50,
            max_handshakes: 256,
            max_proposals_in_flight: 256,
            idle_timeout: Duration::from_secs(45),
            keep_alive: Duration::from_secs(5),
            socket_buffer: 8 * 1024 * 1024,
            // Generous for a simulator's thousands of handshakes at once; the `cohort`
            // commands use a shorter one.
            connect_timeout: Duration::from_secs(20),
        }
    }
}

/// Errors of the transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The server's certificate does not hash to the pin of the URI: not the coordinator
    /// you asked for (or it changed its identity). Do not retry blindly.
    #[error("certificate pin mismatch: expected {expected}, the server presented {got}")]
    PinMismatch {
        /// Pin from the URI (hex).
        expected: String,
        /// Pin of the presented certificate (hex), or why it could not be computed.
        got: String,
    },
    /// The peer does not speak the `cohort/1` application protocol.
    #[error("the peer does not speak the cohort/1 application protocol (ALPN refused)")]
    Alpn,
    /// The peer speaks another protocol version.
    #[error("protocol version mismatch: ours is {ours}, theirs is {theirs}")]
    Version {
        /// Our version.
        ours: u32,
        /// Theirs.
        theirs: u32,
    },
    /// The peer announced (or we tried to send) a frame above the limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced length.
        len: u64,
        /// The limit.
        max: u32,
    },
    /// A frame could not be encoded or decoded (the peer is misbehaving: close it).
    #[error("bad frame: {0}")]
    Codec(#[from] cohort_common::codec::CodecError),
    /// The peer said goodbye, with its reason.
    #[error("the peer ended the session: {0}")]
    Goodbye(String),
    /// The peer sent something out of place (e.g. no `Hello` first).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The connection was closed by the application on either side.
    #[error("connection closed (code {code}): {reason}")]
    Closed {
        /// Application close code (see [`close_code`]).
        code: u64,
        /// Reason given.
        reason: String,
    },
    /// The connection was lost (transport error, reset, timeout by quinn).
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// A stream ended in the middle of a frame, or was reset.
    #[error("stream error: {0}")]
    Stream(String),
    /// An operation did not finish in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A URI could not be parsed.
    #[error("invalid coordinator uri {uri:?}: {why}")]
    Uri {
        /// The text.
        uri: String,
        /// What is wrong.
        why: String,
    },
    /// TLS configuration or identity failure.
    #[error("tls: {0}")]
    Tls(String),
    /// Socket or file I/O failure.
    #[error("i/o: {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

impl TransportError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        TransportError::Io { context: context.into(), source }
    }

    /// Maps a quinn connection error to the clearest transport error: an application
    /// close becomes [`TransportError::Closed`], a TLS `no_application_protocol` alert
    /// becomes [`TransportError::Alpn`].
    pub fn from_connection(err: quinn::ConnectionError) -> Self {
        const NO_APPLICATION_PROTOCOL: u8 = 120;
        let alpn_code = quinn::TransportErrorCode::crypto(NO_APPLICATION_PROTOCOL);
        match err {
            quinn::ConnectionError::ApplicationClosed(close) => TransportError::Closed {
                code: close.error_code.into_inner(),
                reason: String::from_utf8_lossy(&close.reason).into_owned(),
            },
            quinn::ConnectionError::ConnectionClosed(ref close)
                if close.error_code == alpn_code =>
            {
                TransportError::Alpn
            }
            quinn::ConnectionError::TransportError(ref e) if e.code == alpn_code => {
                TransportError::Alpn
            }
            other => TransportError::Connection(other),
        }
    }
}
