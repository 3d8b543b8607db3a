//! One JSON-RPC call to `bitcoind` with timeouts, retries with exponential back-off and
//! cookie re-reading (a restarted node writes a new cookie).
//!
//! Transient failures (connection refused or reset, timeout, HTTP 503 work queue full,
//! RPC `-28` warming up, `-8` scan already in progress, cookie missing or stale) are
//! retried until [`crate::RetryPolicy::give_up_after`]; everything else fails at once.

use std::sync::{Arc, PoisonError, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use jsonrpc::bitreq_http::{BitreqHttpTransport, Error as HttpTransportError};
use serde::de::DeserializeOwned;
use serde_json::value::{to_raw_value, RawValue};
use serde_json::Value;

use crate::config::{BitcoindConfig, RetryPolicy, RpcAuth};
use crate::error::RpcError;

use crate::codes::{RPC_INVALID_PARAMETER, RPC_IN_WARMUP};

/// Which timeout a call runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// The per-request timeout.
    Normal,
    /// The UTXO set scan timeout.
    Scan,
}

/// The two HTTP clients (normal and scan timeouts) built from the current credentials.
struct Clients {
    normal: Arc<jsonrpc::Client>,
    scan: Arc<jsonrpc::Client>,
    /// The `user:password` they were built with (`None`: not yet read).
    credentials: Option<String>,
}

/// A blocking JSON-RPC client of one `bitcoind`, shareable between threads.
pub struct RpcClient {
    url: String,
    auth: RpcAuth,
    timeout: Duration,
    scan_timeout: Duration,
    retry: RetryPolicy,
    clients: RwLock<Clients>,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient").field("url", &self.url).finish_non_exhaustive()
    }
}

/// What one attempt came to.
enum Attempt<T> {
    /// The answer.
    Done(T),
    /// May pass: try again after a delay.
    Retry(String),
    /// HTTP 401: re-read the cookie, then try again.
    Reauth,
    /// Final.
    Fail(RpcError),
}

impl RpcClient {
    /// A client for the node of `config`. Nothing is sent until the first call; the
    /// cookie is read then (and again whenever the node refuses it).
    pub fn new(config: &BitcoindConfig) -> Self {
        let mut this = RpcClient {
            url: config.url.clone(),
            auth: config.auth.clone(),
            timeout: config.timeout,
            scan_timeout: config.scan_timeout,
            retry: config.retry,
            clients: RwLock::new(Clients {
                normal: Arc::new(jsonrpc::Client::with_transport(BitreqHttpTransport::new())),
                scan: Arc::new(jsonrpc::Client::with_transport(BitreqHttpTransport::new())),
                credentials: None,
            }),
        };
        if let RpcAuth::UserPass { user, password } = &config.auth {
            let built = this.build(format!("{user}:{password}"));
            this.clients = RwLock::new(built);
        }
        this
    }

    /// The RPC endpoint.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Calls `method` with positional `params` under the normal timeout.
    pub fn call<T: DeserializeOwned>(&self, method: &str, params: &[Value]) -> Result<T, RpcError> {
        self.call_with(Timeout::Normal, method, params)
    }

    /// Calls `method` under the given timeout, retrying transient failures.
    pub fn call_with<T: DeserializeOwned>(
        &self,
        timeout: Timeout,
        method: &str,
        params: &[Value],
    ) -> Result<T, RpcError> {
        let raw = to_raw_value(params)
            .map_err(|e| RpcError::Decode { method: method.into(), detail: e.to_string() })?;
        self.retrying(method, |client| attempt_one(client, method, &raw), timeout)
    }

    /// Sends one batch of calls (one HTTP request), retrying it as a whole. Each
    /// answer is the result or the RPC error of its call, in order.
    pub fn batch(
        &self,
        method: &str,
        params: &[Vec<Value>],
    ) -> Result<Vec<Result<Box<RawValue>, RpcError>>, RpcError> {
        let raws = params
            .iter()
            .map(to_raw_value)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| RpcError::Decode { method: method.into(), detail: e.to_string() })?;
        self.retrying(method, |client| attempt_batch(client, method, &raws), Timeout::Normal)
    }

    fn retrying<T>(
        &self,
        method: &str,
        mut attempt: impl FnMut(&jsonrpc::Client) -> Attempt<T>,
        timeout: Timeout,
    ) -> Result<T, RpcError> {
        let start = Instant::now();
        let mut delay = self.retry.first_delay;
        let mut attempts = 0u32;
        let mut reauths = 0u32;
        loop {
            attempts += 1;
            let last = match self.client(timeout) {
                Err(e) => e,
                Ok(client) => match attempt(&client) {
                    Attempt::Done(v) => return Ok(v),
                    Attempt::Fail(e) => return Err(e),
                    Attempt::Retry(why) => why,
                    Attempt::Reauth => {
                        reauths += 1;
                        if !matches!(self.auth, RpcAuth::Cookie(_)) || reauths > 3 {
                            return Err(RpcError::Unauthorized { url: self.url.clone() });
                        }
                        self.forget_credentials();
                        "credentials refused (HTTP 401), cookie re-read".to_string()
                    }
                },
            };
            let waited = start.elapsed();
            if waited + delay > self.retry.give_up_after {
                return Err(self.give_up(attempts, waited, last));
            }
            tracing::debug!(method, attempts, ?delay, "bitcoind call failed, retrying: {last}");
            thread::sleep(delay);
            delay = (delay * 2).min(self.retry.max_delay);
        }
    }

    fn give_up(&self, attempts: u32, waited: Duration, last: String) -> RpcError {
        match &self.auth {
            RpcAuth::Cookie(path) if last.starts_with(COOKIE_PREFIX) => {
                RpcError::Cookie { path: path.clone(), error: last }
            }
            _ => RpcError::Unreachable { url: self.url.clone(), attempts, waited, last },
        }
    }

    /// The client for `timeout`, reading the cookie first if needed. `Err` holds a
    /// transient reason (the cookie is missing while the node restarts).
    fn client(&self, timeout: Timeout) -> Result<Arc<jsonrpc::Client>, String> {
        {
            let c = self.clients.read().unwrap_or_else(PoisonError::into_inner);
            if c.credentials.is_some() {
                return Ok(match timeout {
                    Timeout::Normal => c.normal.clone(),
                    Timeout::Scan => c.scan.clone(),
                });
            }
        }
        let RpcAuth::Cookie(path) = &self.auth else {
            return Err("no credentials".into());
        };
        let cookie = std::fs::read_to_string(path)
            .map_err(|e| format!("{COOKIE_PREFIX}{e}"))?
            .trim()
            .to_string();
        if !cookie.contains(':') {
            return Err(format!("{COOKIE_PREFIX}no user:password in it"));
        }
        let built = self.build(cookie);
        let client = match timeout {
            Timeout::Normal => built.normal.clone(),
            Timeout::Scan => built.scan.clone(),
        };
        *self.clients.write().unwrap_or_else(PoisonError::into_inner) = built;
        Ok(client)
    }

    fn forget_credentials(&self) {
        if matches!(self.auth, RpcAuth::Cookie(_)) {
            self.clients.write().unwrap_or_else(PoisonError::into_inner).credentials = None;
        }
    }

    fn build(&self, credentials: String) -> Clients {
        let transport = |timeout: Duration| {
            let builder = BitreqHttpTransport::builder().timeout(timeout).cookie_auth(&credentials);
            // `url` never fails in jsonrpc 0.21; keep the default endpoint if it ever does.
            let builder = match builder.clone().url(&self.url) {
                Ok(b) => b,
                Err(_) => builder,
            };
            Arc::new(jsonrpc::Client::with_transport(builder.build()))
        };
        Clients {
            normal: transport(self.timeout),
            scan: transport(self.scan_timeout),
            credentials: Some(credentials),
        }
    }
}

/// Marks a transient failure that is about the cookie file.
const COOKIE_PREFIX: &str = "cookie: ";

fn attempt_one<T: DeserializeOwned>(
    client: &jsonrpc::Client,
    method: &str,
    raw: &RawValue,
) -> Attempt<T> {
    let request = client.build_request(method, Some(raw));
    match client.send_request(request) {
        Ok(response) => match response.result::<T>() {
            Ok(v) => Attempt::Done(v),
            Err(e) => classify(method, e),
        },
        Err(e) => classify(method, e),
    }
}

fn attempt_batch(
    client: &jsonrpc::Client,
    method: &str,
    raws: &[Box<RawValue>],
) -> Attempt<Vec<Result<Box<RawValue>, RpcError>>> {
    if raws.is_empty() {
        return Attempt::Done(Vec::new());
    }
    let requests: Vec<_> = raws.iter().map(|r| client.build_request(method, Some(r))).collect();
    let responses = match client.send_batch(&requests) {
        Ok(r) => r,
        Err(e) => return classify(method, e),
    };
    let mut out = Vec::with_capacity(responses.len());
    for response in responses {
        let Some(response) = response else {
            let detail = "batch reply without an answer to a call".to_string();
            return Attempt::Fail(RpcError::Decode { method: method.into(), detail });
        };
        out.push(match (response.error, response.result) {
            (Some(e), _) => {
                Err(RpcError::Rpc { method: method.into(), code: e.code, message: e.message })
            }
            (None, Some(raw)) => Ok(raw),
            (None, None) => to_raw_value(&Value::Null)
                .map_err(|e| RpcError::Decode { method: method.into(), detail: e.to_string() }),
        });
    }
    Attempt::Done(out)
}

/// Sorts a failure into retry, re-authenticate or fail.
fn classify<T>(method: &str, error: jsonrpc::Error) -> Attempt<T> {
    match error {
        jsonrpc::Error::Rpc(e) => {
            let transient = e.code == RPC_IN_WARMUP
                || (e.code == RPC_INVALID_PARAMETER && e.message.contains("in progress"));
            if transient {
                Attempt::Retry(format!("RPC error {}: {}", e.code, e.message))
            } else {
                Attempt::Fail(RpcError::Rpc {
                    method: method.into(),
                    code: e.code,
                    message: e.message,
                })
            }
        }
        jsonrpc::Error::Transport(e) => match e.downcast::<HttpTransportError>() {
            Ok(http) => match *http {
                HttpTransportError::Http(h) if h.status_code == 401 => Attempt::Reauth,
                HttpTransportError::Http(h) if h.status_code == 503 || h.status_code == 500 => {
                    Attempt::Retry(format!("HTTP {}: {}", h.status_code, h.body))
                }
                HttpTransportError::Http(h) => Attempt::Fail(RpcError::Decode {
                    method: method.into(),
                    detail: format!("HTTP {}: {}", h.status_code, h.body),
                }),
                HttpTransportError::Json(e) => {
                    Attempt::Fail(RpcError::Decode { method: method.into(), detail: e.to_string() })
                }
                other => Attempt::Retry(other.to_string()),
            },
            Err(other) => Attempt::Retry(other.to_string()),
        },
        jsonrpc::Error::Json(e) => {
            Attempt::Fail(RpcError::Decode { method: method.into(), detail: e.to_string() })
        }
        other => {
            Attempt::Fail(RpcError::Decode { method: method.into(), detail: other.to_string() })
        }
    }
}
