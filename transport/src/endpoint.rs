//! UDP sockets with large buffers and the QUIC transport configuration.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};

use crate::{Limits, TransportError};

/// Binds a UDP socket with send and receive buffers of `limits.socket_buffer` requested
/// (the kernel may grant less; what it granted is logged).
pub fn udp_socket(addr: SocketAddr, limits: &Limits) -> Result<UdpSocket, TransportError> {
    let ctx = |what: &str| format!("{what} udp socket {addr}");
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| TransportError::io(ctx("creating"), e))?;
    if addr.is_ipv6() {
        // Best effort: accept IPv4-mapped peers too.
        let _ = socket.set_only_v6(false);
    }
    if let Err(e) = socket.set_recv_buffer_size(limits.socket_buffer) {
        tracing::warn!(%addr, error = %e, "cannot set the udp receive buffer size");
    }
    if let Err(e) = socket.set_send_buffer_size(limits.socket_buffer) {
        tracing::warn!(%addr, error = %e, "cannot set the udp send buffer size");
    }
    socket.bind(&addr.into()).map_err(|e| TransportError::io(ctx("binding"), e))?;
    tracing::debug!(
        %addr,
        recv = socket.recv_buffer_size().unwrap_or(0),
        send = socket.send_buffer_size().unwrap_or(0),
        "udp socket buffers"
    );
    Ok(socket.into())
}

/// The QUIC transport configuration: keep-alive and idle timeout from the limits.
pub fn transport_config(limits: &Limits) -> Result<quinn::TransportConfig, TransportError> {
    let mut config = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(limits.idle_timeout)
        .map_err(|e| TransportError::Tls(format!("idle timeout out of range: {e}")))?;
    config.max_idle_timeout(Some(idle));
    config.keep_alive_interval(Some(limits.keep_alive));
    // A session stream plus a few side requests at once.
    config.max_concurrent_bidi_streams(16u32.into());
    config.max_concurrent_uni_streams(0u32.into());
    Ok(config)
}

/// A quinn endpoint on a socket from [`udp_socket`].
pub(crate) fn endpoint(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
    limits: &Limits,
) -> Result<quinn::Endpoint, TransportError> {
    let socket = udp_socket(addr, limits)?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|e| TransportError::io(format!("starting quic endpoint on {addr}"), e))
}
