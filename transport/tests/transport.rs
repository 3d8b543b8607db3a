//! Loopback QUIC tests of the transport: session and side requests, pinning, ALPN,
//! version, frame limits and garbage from one peer not hurting another.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cohort_common::messages::{
    Cancel, Confirmed, Hello, Reason, SideRequest, SideResponse, ToCoordinator, ToParticipant,
};
use cohort_transport::{
    close_code, Client, CoordinatorUri, FramedRecv, FramedSend, Identity, Limits, Outbox, PeerId,
    Server, ServerEvent, Service, TransportError,
};

/// Answers `Cancel { reason }` with `Confirmed { batch: 7, height: len(reason) }` and
/// `TipHeight` with 42; records disconnections.
#[derive(Default)]
struct Echo {
    outboxes: Mutex<HashMap<PeerId, Outbox>>,
    disconnected: Mutex<Vec<(PeerId, String)>>,
}

impl Service for Echo {
    fn event(&self, event: ServerEvent) {
        match event {
            ServerEvent::Connected { peer, outbox, .. } => {
                self.outboxes.lock().unwrap().insert(peer, outbox);
            }
            ServerEvent::Message { peer, msg: ToCoordinator::Cancel(c) } => {
                let height = c.reason.as_str().len() as u32;
                let outbox = self.outboxes.lock().unwrap().get(&peer).cloned();
                if let Some(o) = outbox {
                    o.send(ToParticipant::Confirmed(Confirmed { batch: 7, height }));
                }
            }
            ServerEvent::Message { .. } => {}
            ServerEvent::Disconnected { peer, reason } => {
                self.outboxes.lock().unwrap().remove(&peer);
                self.disconnected.lock().unwrap().push((peer, reason));
            }
        }
    }

    fn side_request(&self, _peer: PeerId, request: SideRequest) -> SideResponse {
        match request {
            SideRequest::Info => SideResponse::Error(Reason::new("no info here")),
        }
    }
}

fn start(limits: Limits) -> (Server, Arc<Echo>, CoordinatorUri) {
    let identity = Identity::generate().unwrap();
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), &identity, limits).unwrap();
    let echo = Arc::new(Echo::default());
    server.serve(echo.clone());
    let uri = server.uri("127.0.0.1").unwrap();
    (server, echo, uri)
}

async fn cancel_round_trip(
    send: &mut FramedSend<ToCoordinator>,
    recv: &mut FramedRecv<ToParticipant>,
    text: &str,
) -> Result<ToParticipant, TransportError> {
    send.send(&ToCoordinator::Cancel(Cancel { reason: Reason::new(text) })).await?;
    tokio::time::timeout(Duration::from_secs(10), recv.recv())
        .await
        .map_err(|_| TransportError::Timeout("answer".into()))??
        .ok_or(TransportError::Protocol("ended".into()))
}

#[tokio::test]
async fn session_and_side_requests_round_trip() {
    let (server, echo, uri) = start(Limits::default());
    let client = Client::connect(&uri, &Limits::default()).await.unwrap();
    // A side request before the session, one during it.
    assert_eq!(
        client.request(&SideRequest::Info).await.unwrap(),
        SideResponse::Error(Reason::new("no info here"))
    );
    let (mut send, mut recv) = client.open_session().await.unwrap();
    let answer = cancel_round_trip(&mut send, &mut recv, "abc").await.unwrap();
    assert_eq!(answer, ToParticipant::Confirmed(Confirmed { batch: 7, height: 3 }));
    assert_eq!(
        client.request(&SideRequest::Info).await.unwrap(),
        SideResponse::Error(Reason::new("no info here"))
    );
    // A second session on the same connection is refused.
    let (mut s2, _r2) = client
        .connection
        .open_bi()
        .await
        .map(|(s, r)| {
            (
                FramedSend::<ToCoordinator>::new(s, 1 << 20),
                FramedRecv::<ToParticipant>::new(r, 1 << 20),
            )
        })
        .unwrap();
    s2.send(&ToCoordinator::Hello(Hello { version: 1 })).await.unwrap();
    let err =
        tokio::time::timeout(Duration::from_secs(10), client.connection.closed()).await.unwrap();
    assert!(err.to_string().contains("a second session"), "{err}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(echo.disconnected.lock().unwrap().len(), 1);
    server.shutdown("test over").await;
}

#[tokio::test]
async fn pin_mismatch_is_refused() {
    let (server, _echo, mut uri) = start(Limits::default());
    uri.pin[0] ^= 1;
    let err = Client::connect(&uri, &Limits::default()).await.unwrap_err();
    match &err {
        TransportError::PinMismatch { expected, got } => {
            assert_eq!(expected, &hex::encode(uri.pin));
            assert_ne!(got, expected);
        }
        other => panic!("expected a pin mismatch, got {other}"),
    }
    assert!(err.to_string().contains("pin mismatch"));
    server.shutdown("test over").await;
}

/// A client that trusts any certificate and offers another ALPN.
async fn raw_client_with_alpn(
    addr: SocketAddr,
    alpn: &[u8],
) -> Result<quinn::Connection, quinn::ConnectionError> {
    #[derive(Debug)]
    struct AnyCert(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::General("tls 1.2".into()))
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut crypto = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    crypto.alpn_protocols = vec![alpn.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    endpoint.connect(addr, "cohort").unwrap().await
}

#[tokio::test]
async fn wrong_alpn_is_refused() {
    let (server, _echo, _uri) = start(Limits::default());
    let addr = server.local_addr().unwrap();
    let err = raw_client_with_alpn(addr, b"h3").await.unwrap_err();
    let err = TransportError::from_connection(err);
    assert!(matches!(err, TransportError::Alpn), "{err}");
    assert!(err.to_string().contains("cohort/1"));
    // The right ALPN with the same raw client works.
    raw_client_with_alpn(addr, cohort_transport::ALPN).await.unwrap();
    server.shutdown("test over").await;
}

#[tokio::test]
async fn wrong_version_gets_goodbye_and_close() {
    let (server, _echo, uri) = start(Limits::default());
    let client = Client::connect(&uri, &Limits::default()).await.unwrap();
    let (s, r) = client.connection.open_bi().await.unwrap();
    let mut send = FramedSend::<ToCoordinator>::new(s, 1 << 20);
    let mut recv = FramedRecv::<ToParticipant>::new(r, 1 << 20);
    send.send(&ToCoordinator::Hello(Hello { version: 99 })).await.unwrap();
    let msg = recv.recv().await.unwrap().unwrap();
    let ToParticipant::Goodbye(bye) = msg else { panic!("expected goodbye, got {msg:?}") };
    assert!(bye.reason.as_str().contains("ours is 1, theirs is 99"), "{}", bye.reason);
    let closed = TransportError::from_connection(client.connection.closed().await);
    match &closed {
        TransportError::Closed { code, reason } => {
            assert_eq!(*code, u64::from(close_code::VERSION));
            assert!(reason.contains("ours is 1, theirs is 99"));
        }
        other => panic!("expected a close, got {other}"),
    }
    server.shutdown("test over").await;
}

#[tokio::test]
async fn oversize_frame_closes_that_connection() {
    let (server, _echo, uri) = start(Limits::default());
    let client = Client::connect(&uri, &Limits::default()).await.unwrap();
    let (mut send, _recv) = client.open_session().await.unwrap();
    // Header of a 9 MiB frame, and no body.
    send.send_frame(&(9u32 * 1024 * 1024).to_be_bytes()).await.unwrap();
    let closed = TransportError::from_connection(client.connection.closed().await);
    match &closed {
        TransportError::Closed { code, reason } => {
            assert_eq!(*code, u64::from(close_code::FRAME_TOO_LARGE));
            assert!(reason.contains("exceeds the limit"), "{reason}");
        }
        other => panic!("expected a close, got {other}"),
    }
    server.shutdown("test over").await;
}

#[tokio::test]
async fn garbage_closes_that_session_only() {
    let (server, echo, uri) = start(Limits::default());
    let good = Client::connect(&uri, &Limits::default()).await.unwrap();
    let (mut gs, mut gr) = good.open_session().await.unwrap();
    let bad = Client::connect(&uri, &Limits::default()).await.unwrap();
    let (mut bs, _br) = bad.open_session().await.unwrap();
    // A well-formed frame of random bytes.
    let mut frame = 64u32.to_be_bytes().to_vec();
    frame.extend((0..64u8).map(|i| i.wrapping_mul(151).wrapping_add(7)));
    bs.send_frame(&frame).await.unwrap();
    let closed = TransportError::from_connection(bad.connection.closed().await);
    assert!(
        matches!(&closed, TransportError::Closed { code, .. } if *code == u64::from(close_code::PROTOCOL)),
        "{closed}"
    );
    // The other session goes on.
    let answer = cancel_round_trip(&mut gs, &mut gr, "still here").await.unwrap();
    assert_eq!(answer, ToParticipant::Confirmed(Confirmed { batch: 7, height: 10 }));
    // And a fresh stream of garbage (neither hello nor side request) is refused too.
    let third = Client::connect(&uri, &Limits::default()).await.unwrap();
    let (mut s, _r) = third.connection.open_bi().await.unwrap();
    s.write_all(&frame).await.unwrap();
    let closed = TransportError::from_connection(third.connection.closed().await);
    assert!(closed.to_string().contains("neither a hello"), "{closed}");
    assert_eq!(
        cancel_round_trip(&mut gs, &mut gr, "x").await.unwrap(),
        ToParticipant::Confirmed(Confirmed { batch: 7, height: 1 })
    );
    assert_eq!(echo.disconnected.lock().unwrap().len(), 1);
    server.shutdown("test over").await;
}

#[tokio::test]
async fn message_rate_limit_closes_the_flooder() {
    let limits = Limits { max_messages_per_sec: 20, ..Limits::default() };
    let (server, _echo, uri) = start(limits);
    let client = Client::connect(&uri, &Limits::default()).await.unwrap();
    let (mut send, _recv) = client.open_session().await.unwrap();
    for _ in 0..100 {
        if send.send(&ToCoordinator::Cancel(Cancel { reason: Reason::new("") })).await.is_err() {
            break;
        }
    }
    let closed = TransportError::from_connection(client.connection.closed().await);
    assert!(
        matches!(&closed, TransportError::Closed { code, .. } if *code == u64::from(close_code::RATE_LIMIT)),
        "{closed}"
    );
    server.shutdown("test over").await;
}

#[tokio::test]
async fn many_connections_come_up() {
    const N: usize = 200;
    let (server, echo, uri) = start(Limits::default());
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..N {
        let uri = uri.clone();
        tasks.push(tokio::spawn(async move {
            let client = Client::connect(&uri, &Limits::default()).await.unwrap();
            let (s, r) = client.open_session().await.unwrap();
            (client, s, r)
        }));
    }
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    eprintln!("{N} loopback connections with sessions up in {elapsed:?}");
    assert_eq!(echo.outboxes.lock().unwrap().len(), N);
    server.shutdown("test over").await;
    for (client, _, _) in &clients {
        let closed = TransportError::from_connection(client.connection.closed().await);
        assert!(
            matches!(&closed, TransportError::Closed { code, .. } if *code == u64::from(close_code::SHUTDOWN)),
            "{closed}"
        );
    }
}
