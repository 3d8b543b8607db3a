//! The operator's HTTP endpoint: `GET /metrics` (OpenMetrics text), `GET /healthz`
//! (the process answers) and `GET /readyz` (the engine thread is alive, the last store
//! write succeeded and the chain backend answers). Plain HTTP/1.1 on a TCP socket the operator chooses (off by default;
//! loopback in the examples): one request per connection, a request head of at most
//! 8 KiB read within 5 s, anything else answered 404, 405 or 400 and closed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cohort_common::chain::Chain;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::metrics::Metrics;

/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client has to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The engine thread counts as alive if it looped within this long (it wakes at least at
/// every confirmation poll).
const ENGINE_STALE_MS: u64 = 30_000;

/// What `/readyz` looks at.
#[derive(Clone)]
pub struct Health {
    /// The metrics to serve.
    pub metrics: Arc<Metrics>,
    /// The chain backend.
    pub chain: Arc<dyn Chain>,
    /// Unix milliseconds of the engine thread's last loop.
    pub engine_beat: Arc<AtomicU64>,
    /// The last store write's error, until a write succeeds again.
    pub store_error: Arc<std::sync::Mutex<Option<String>>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health").field("engine_beat", &self.engine_beat).finish()
    }
}

/// Binds `addr` (so a taken port is an error here) and serves on the current tokio
/// runtime until the returned task is aborted; returns the bound address.
pub fn serve(
    addr: SocketAddr,
    health: Health,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let health = health.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(stream, &health).await {
                    tracing::debug!(error = %e, "metrics endpoint: request dropped");
                }
            });
        }
    });
    Ok((bound, task))
}

async fn answer(mut stream: TcpStream, health: &Health) -> std::io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => return respond(&mut stream, 400, "text/plain", "bad request\n").await,
        Ok(Err(e)) => return Err(e),
        Err(_) => return Ok(()),
    };
    let mut words = head.split(' ');
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if method != "GET" {
        return respond(&mut stream, 405, "text/plain", "only GET\n").await;
    }
    match path {
        "/metrics" => {
            let body = health.metrics.encode();
            let kind = "application/openmetrics-text; version=1.0.0; charset=utf-8";
            respond(&mut stream, 200, kind, &body).await
        }
        "/healthz" => respond(&mut stream, 200, "text/plain", "ok\n").await,
        "/readyz" => {
            let (code, body) = readiness(health).await;
            respond(&mut stream, code, "text/plain", &body).await
        }
        _ => respond(&mut stream, 404, "text/plain", "not found\n").await,
    }
}

/// Reads up to the blank line ending the request head; `None` if it does not fit or is
/// not text.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end);
            return Ok(String::from_utf8(buf).ok());
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
    }
}

async fn readiness(health: &Health) -> (u16, String) {
    let beat = health.engine_beat.load(Ordering::Relaxed);
    let age = super::now_ms().saturating_sub(beat);
    if age > ENGINE_STALE_MS {
        return (503, format!("engine thread silent for {age} ms\n"));
    }
    let store =
        health.store_error.lock().map(|e| e.clone()).unwrap_or_else(|e| e.into_inner().clone());
    if let Some(e) = store {
        return (503, format!("store: the last write failed: {e}\n"));
    }
    let chain = health.chain.clone();
    match tokio::task::spawn_blocking(move || chain.tip_height()).await {
        Ok(Ok(tip)) => (200, format!("ready: chain tip {tip}\n")),
        Ok(Err(e)) => (503, format!("chain backend: {e}\n")),
        Err(e) => (503, format!("chain check: {e}\n")),
    }
}

async fn respond(stream: &mut TcpStream, code: u16, kind: &str, body: &str) -> std::io::Result<()> {
    let status = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {code} {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
