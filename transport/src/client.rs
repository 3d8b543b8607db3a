//! The participant's end: a pinned connection to a coordinator, its session stream and
//! side requests.

use std::net::SocketAddr;
use std::sync::Arc;

use cohort_common::messages::{Hello, SideRequest, SideResponse, ToCoordinator, ToParticipant};
use cohort_common::params::PROTOCOL_VERSION;

use crate::endpoint::{endpoint, transport_config};
use crate::framed::{FramedRecv, FramedSend};
use crate::tls::{client_crypto, SERVER_NAME};
use crate::{close_code, CoordinatorUri, Limits, TransportError};

/// A connection to a coordinator.
#[derive(Debug)]
pub struct Client {
    /// The QUIC connection.
    pub connection: quinn::Connection,
    endpoint: quinn::Endpoint,
    max_frame: u32,
}

impl Client {
    /// Connects to the coordinator of `uri`: the handshake succeeds only if its
    /// certificate matches the pin and it speaks `cohort/1`. No session stream yet.
    pub async fn connect(uri: &CoordinatorUri, limits: &Limits) -> Result<Client, TransportError> {
        let target = resolve(uri).await?;
        let shared = ClientEndpoint::bind_for(target, limits)?;
        Self::connect_to(&shared, target, uri, limits).await
    }

    /// As [`Client::connect`], through an endpoint (one UDP socket) that many clients in
    /// one process share, as a simulator of thousands of participants does.
    pub async fn connect_via(
        shared: &ClientEndpoint,
        uri: &CoordinatorUri,
        limits: &Limits,
    ) -> Result<Client, TransportError> {
        let target = resolve(uri).await?;
        Self::connect_to(shared, target, uri, limits).await
    }

    async fn connect_to(
        shared: &ClientEndpoint,
        target: SocketAddr,
        uri: &CoordinatorUri,
        limits: &Limits,
    ) -> Result<Client, TransportError> {
        let endpoint = shared.endpoint.clone();
        let (crypto, report) = client_crypto(uri.pin)?;
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)
            .map_err(|e| TransportError::Tls(format!("client tls config unusable by quic: {e}")))?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(Arc::new(transport_config(limits)?));
        let connecting = endpoint
            .connect_with(config, target, SERVER_NAME)
            .map_err(|e| TransportError::Stream(format!("cannot connect to {target}: {e}")))?;
        let wait = limits.connect_timeout;
        let result = tokio::time::timeout(wait, connecting).await.map_err(|_| {
            TransportError::Timeout(format!(
                "no handshake with {target} within {} s: is the coordinator running there?",
                wait.as_secs_f64()
            ))
        })?;
        let connection = match result {
            Ok(connection) => connection,
            Err(e) => {
                let mismatch = report.mismatch.lock().ok().and_then(|mut slot| slot.take());
                return Err(match mismatch {
                    Some(got) => {
                        TransportError::PinMismatch { expected: hex::encode(uri.pin), got }
                    }
                    None => TransportError::from_connection(e),
                });
            }
        };
        Ok(Client { connection, endpoint, max_frame: limits.max_frame })
    }

    /// Opens the session stream and exchanges `Hello`s.
    pub async fn open_session(
        &self,
    ) -> Result<(FramedSend<ToCoordinator>, FramedRecv<ToParticipant>), TransportError> {
        let (send, recv) =
            self.connection.open_bi().await.map_err(TransportError::from_connection)?;
        let mut send = FramedSend::new(send, self.max_frame);
        let mut recv = FramedRecv::new(recv, self.max_frame);
        send.send(&ToCoordinator::Hello(Hello { version: PROTOCOL_VERSION })).await?;
        match recv.recv().await {
            Ok(Some(ToParticipant::Hello(Hello { version }))) if version == PROTOCOL_VERSION => {
                Ok((send, recv))
            }
            Ok(Some(ToParticipant::Hello(Hello { version }))) => {
                self.close_with(close_code::VERSION, "protocol version mismatch");
                Err(TransportError::Version { ours: PROTOCOL_VERSION, theirs: version })
            }
            Ok(Some(ToParticipant::Goodbye(bye))) => {
                Err(TransportError::Goodbye(bye.reason.as_str().to_owned()))
            }
            Ok(Some(_)) => {
                Err(TransportError::Protocol("the coordinator did not say hello".into()))
            }
            Ok(None) => Err(TransportError::Protocol("the coordinator ended the session".into())),
            Err(e) => Err(e),
        }
    }

    /// Sends one side request on a new stream and waits for its answer.
    pub async fn request(&self, req: &SideRequest) -> Result<SideResponse, TransportError> {
        let (send, recv) =
            self.connection.open_bi().await.map_err(TransportError::from_connection)?;
        let mut send = FramedSend::<SideRequest>::new(send, self.max_frame);
        let mut recv = FramedRecv::<SideResponse>::new(recv, self.max_frame);
        send.send(req).await?;
        send.stream().finish().map_err(|e| TransportError::Stream(e.to_string()))?;
        recv.recv().await?.ok_or_else(|| {
            TransportError::Protocol("side request stream ended without an answer".into())
        })
    }

    /// Resolves once the connection is closed, by either side.
    pub async fn closed(&self) {
        // Why it closed does not matter to a caller that only waits for it.
        let _ = self.connection.closed().await;
    }

    /// Closes the connection with a reason (code [`close_code::NORMAL`]).
    pub fn close(&self, reason: &str) {
        self.close_with(close_code::NORMAL, reason);
    }

    fn close_with(&self, code: u32, reason: &str) {
        self.connection.close(quinn::VarInt::from_u32(code), reason.as_bytes());
    }

    /// Closes and waits until the close reached the peer (or timed out).
    pub async fn shutdown(&self, reason: &str) {
        self.close(reason);
        self.endpoint.wait_idle().await;
    }
}

/// A client-side QUIC endpoint (one UDP socket with the large buffers of [`Limits`]).
#[derive(Debug, Clone)]
pub struct ClientEndpoint {
    endpoint: quinn::Endpoint,
}

impl ClientEndpoint {
    /// Binds an endpoint on an ephemeral port of the wildcard address of `family_of`'s family.
    pub fn bind_for(family_of: SocketAddr, limits: &Limits) -> Result<Self, TransportError> {
        let bind: SocketAddr =
            if family_of.is_ipv6() { "[::]:0".parse() } else { "0.0.0.0:0".parse() }
                .map_err(|_| TransportError::Tls("bad bind address".into()))?;
        Ok(ClientEndpoint { endpoint: endpoint(bind, None, limits)? })
    }
}

async fn resolve(uri: &CoordinatorUri) -> Result<SocketAddr, TransportError> {
    let mut addrs = tokio::net::lookup_host((uri.host.as_str(), uri.port))
        .await
        .map_err(|e| TransportError::io(format!("resolving {}", uri.host), e))?;
    addrs.next().ok_or_else(|| TransportError::Uri {
        uri: uri.to_string(),
        why: "the host has no address".into(),
    })
}
