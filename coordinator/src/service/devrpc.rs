//! The dev chain's JSON-RPC endpoint: a `--dev` coordinator serves its embedded ledger
//! as the subset of `bitcoind`'s RPC a participant (and a test) uses, so a wallet reaches
//! the dev chain through the same client and code path as its own node.
//!
//! | method | as in Core |
//! |---|---|
//! | `getblockchaininfo`, `getnetworkinfo`, `getblockcount`, `getmempoolinfo` | the fields read |
//! | `getblockhash`, `getblockheader`, `getblock` (verbosity 1) | block hashes are made up: the ledger's id and the height |
//! | `gettxout`, `scantxoutset start [raw(HEX)]` | other descriptors are refused |
//! | `getrawmempool`, `getrawtransaction` | every known transaction, as with `-txindex` |
//! | `sendrawtransaction`, `submitpackage` (one transaction, or a parent and its child) | the ledger's checks |
//! | `estimatesmartfee` | the ledger's rate |
//! | `generatetoaddress`, `generateblock ADDRESS []` | at most [`MAX_BLOCKS_PER_CALL`] blocks per call; no coinbase is paid |
//! | `devfaucet SCRIPT_HEX SATS` | not in Core: the dev faucet, `{"txid", "vout"}` |
//!
//! HTTP/1.1 with keep-alive on a TCP socket next to the QUIC endpoint; any credentials
//! are accepted (the endpoint exists only with `--dev`). A request head is at most
//! 16 KiB, a body at most [`MAX_BODY`], a batch at most [`MAX_BATCH`] calls; anything
//! else is answered 400 or 413 and the connection closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::consensus::encode::{deserialize_hex, serialize_hex};
use bitcoin::hashes::Hash as _;
use bitcoin::{Address, Amount, BlockHash, FeeRate, Network, OutPoint, ScriptBuf, Transaction};
use bitcoin::{Txid, Wtxid};
use cohort_chain_rpc::codes::{
    RPC_DESERIALIZATION_ERROR, RPC_INVALID_ADDRESS_OR_KEY, RPC_INVALID_PARAMETER,
    RPC_INVALID_PARAMS, RPC_METHOD_NOT_FOUND, RPC_MISC_ERROR, RPC_PARSE_ERROR,
    RPC_VERIFY_ALREADY_IN_CHAIN, RPC_VERIFY_ERROR, RPC_VERIFY_REJECTED,
};
use cohort_common::chain::{Chain, ChainError, RejectReason};
use cohort_common::ledger::Ledger;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Largest request body (a package of two standard transactions in hex fits).
pub const MAX_BODY: usize = 4 << 20;
/// Most calls in one batch request.
pub const MAX_BATCH: usize = 10_000;
/// Most blocks one `generatetoaddress` mines.
pub const MAX_BLOCKS_PER_CALL: u32 = 100_000;
/// Largest request head.
const MAX_HEAD: usize = 16 * 1024;
/// How long a connection may sit idle between requests.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The version `getnetworkinfo` reports: the ledger follows Core 31's relay policy.
const VERSION: u64 = 310_000;

/// A failed call: Core's code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcFailure {
    /// Core's error code.
    pub code: i32,
    /// What went wrong.
    pub message: String,
}

fn fail(code: i32, message: impl Into<String>) -> RpcFailure {
    RpcFailure { code, message: message.into() }
}

/// The dev chain behind the endpoint.
#[derive(Debug, Clone)]
pub struct DevRpc {
    ledger: Arc<Ledger>,
    network: Network,
}

impl DevRpc {
    /// Serves `ledger`, whose addresses are for `network`.
    pub fn new(ledger: Arc<Ledger>, network: Network) -> Self {
        DevRpc { ledger, network }
    }

    /// Binds `addr` (a taken port is an error here) and serves on the current tokio
    /// runtime until the returned task is aborted; returns the bound address.
    pub fn serve(
        self,
        addr: SocketAddr,
    ) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let bound = listener.local_addr()?;
        let this = Arc::new(self);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let this = this.clone();
                tokio::spawn(async move {
                    if let Err(e) = this.connection(stream).await {
                        tracing::debug!(error = %e, "dev chain endpoint: connection dropped");
                    }
                });
            }
        });
        Ok((bound, task))
    }

    async fn connection(self: Arc<Self>, stream: TcpStream) -> std::io::Result<()> {
        let mut stream = BufReader::new(stream);
        loop {
            let request = match tokio::time::timeout(IDLE_TIMEOUT, read_request(&mut stream)).await
            {
                Ok(Ok(Some(r))) => r,
                Ok(Ok(None)) | Err(_) => return Ok(()),
                Ok(Err(Refused(code, why))) => {
                    respond(stream.get_mut(), code, why.as_bytes(), true).await?;
                    linger(&mut stream).await;
                    return Ok(());
                }
            };
            let this = self.clone();
            let (status, body) =
                tokio::task::spawn_blocking(move || this.answer_body(&request.body))
                    .await
                    .unwrap_or_else(|e| {
                        (500, envelope(Value::Null, Err(fail(RPC_MISC_ERROR, e.to_string()))))
                    });
            respond(stream.get_mut(), status, body.as_bytes(), request.close).await?;
            if request.close {
                return Ok(());
            }
        }
    }

    /// The HTTP status and JSON body answering one request body (a call or a batch).
    pub fn answer_body(&self, body: &[u8]) -> (u16, String) {
        let parsed: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return (500, envelope(Value::Null, Err(fail(RPC_PARSE_ERROR, e.to_string()))))
            }
        };
        match parsed {
            Value::Array(calls) if calls.len() > MAX_BATCH => {
                let why = format!("at most {MAX_BATCH} calls per batch, got {}", calls.len());
                (500, envelope(Value::Null, Err(fail(RPC_INVALID_PARAMS, why))))
            }
            Value::Array(calls) => {
                let answers: Vec<String> = calls.iter().map(|c| self.answer_call(c).1).collect();
                (200, format!("[{}]", answers.join(",")))
            }
            call => self.answer_call(&call),
        }
    }

    fn answer_call(&self, call: &Value) -> (u16, String) {
        let id = call.get("id").cloned().unwrap_or(Value::Null);
        let Some(method) = call.get("method").and_then(Value::as_str) else {
            return (500, envelope(id, Err(fail(RPC_INVALID_PARAMS, "no method"))));
        };
        let params = match call.get("params") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(p)) => p.as_slice(),
            Some(_) => {
                let why = "params must be an array (named parameters are not served)";
                return (500, envelope(id, Err(fail(RPC_INVALID_PARAMS, why))));
            }
        };
        let answer = self.call(method, params);
        let status = match &answer {
            Ok(_) => 200,
            Err(e) if e.code == RPC_METHOD_NOT_FOUND => 404,
            Err(_) => 500,
        };
        (status, envelope(id, answer))
    }

    /// Answers one call.
    pub fn call(&self, method: &str, params: &[Value]) -> Result<Value, RpcFailure> {
        let ledger = &self.ledger;
        let tip = tip(ledger);
        match method {
            "getblockchaininfo" => Ok(json!({
                "chain": self.network.to_core_arg(),
                "blocks": tip,
                "headers": tip,
                "bestblockhash": self.block_hash(tip).to_string(),
                "initialblockdownload": false,
            })),
            "getnetworkinfo" => {
                Ok(json!({ "version": VERSION, "subversion": "/Cohort dev ledger/" }))
            }
            "getblockcount" => Ok(json!(tip)),
            "getmempoolinfo" => Ok(json!({
                "loaded": true,
                "size": ledger.mempool().len(),
                "mempoolminfee": btc_per_kvb(FeeRate::BROADCAST_MIN),
                "minrelaytxfee": btc_per_kvb(FeeRate::BROADCAST_MIN),
            })),
            "getblockhash" => {
                let height = u32_param(params, 0, "height")?;
                if height > tip {
                    return Err(fail(RPC_INVALID_PARAMETER, "Block height out of range"));
                }
                Ok(json!(self.block_hash(height).to_string()))
            }
            "getblockheader" => {
                let height = self.height_of(params)?;
                Ok(json!({
                    "hash": self.block_hash(height).to_string(),
                    "height": height,
                    "confirmations": tip - height + 1,
                    "time": cohort_common::ledger::GENESIS_TIME
                        + cohort_common::ledger::BLOCK_INTERVAL * u64::from(height),
                }))
            }
            "getblock" => {
                let height = self.height_of(params)?;
                if opt_param(params, 1).and_then(Value::as_u64).unwrap_or(1) != 1 {
                    return Err(fail(RPC_INVALID_PARAMETER, "only verbosity 1 is served"));
                }
                let txids = ledger.block_txids(height).unwrap_or_default();
                let tx: Vec<String> = txids.iter().map(ToString::to_string).collect();
                Ok(json!({
                    "hash": self.block_hash(height).to_string(),
                    "height": height,
                    "confirmations": tip - height + 1,
                    "tx": tx,
                }))
            }
            "gettxout" => {
                let txid = txid_param(params, 0)?;
                let vout = u32_param(params, 1, "n")?;
                let mempool = opt_param(params, 2).and_then(Value::as_bool).unwrap_or(true);
                let outpoint = OutPoint { txid, vout };
                let utxo = if mempool {
                    ledger.utxo(&outpoint).map_err(chain_failure)?
                } else {
                    ledger.confirmed_utxo(&outpoint)
                };
                Ok(match utxo {
                    None => Value::Null,
                    Some(u) => json!({
                        "bestblock": self.block_hash(tip).to_string(),
                        "confirmations": u.height.map_or(0, |h| tip.saturating_sub(h) + 1),
                        "value": u.txout.value.to_btc(),
                        "scriptPubKey": { "hex": u.txout.script_pubkey.to_hex_string() },
                        "coinbase": false,
                    }),
                })
            }
            "scantxoutset" => self.scan(params, tip),
            "getrawmempool" => {
                let txids: Vec<String> = ledger.mempool().iter().map(ToString::to_string).collect();
                Ok(json!(txids))
            }
            "getrawtransaction" => {
                let txid = txid_param(params, 0)?;
                let verbose = match opt_param(params, 1) {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(Value::Number(n)) => n.as_u64() != Some(0),
                    Some(_) => return Err(fail(RPC_INVALID_PARAMS, "verbose: a bool or a number")),
                };
                let Some((tx, height)) = ledger.transaction_at(&txid) else {
                    return Err(fail(
                        RPC_INVALID_ADDRESS_OR_KEY,
                        "No such mempool or blockchain transaction",
                    ));
                };
                let hex = serialize_hex(&tx);
                if !verbose {
                    return Ok(json!(hex));
                }
                let mut reply = json!({
                    "txid": txid.to_string(),
                    "hash": tx.compute_wtxid().to_string(),
                    "hex": hex,
                });
                if let Some(h) = height {
                    reply["confirmations"] = json!(tip.saturating_sub(h) + 1);
                    reply["blockhash"] = json!(self.block_hash(h).to_string());
                }
                Ok(reply)
            }
            "sendrawtransaction" => {
                let tx = tx_param(params, 0)?;
                let txid = tx.compute_txid();
                match ledger.broadcast(&tx) {
                    Ok(sent) => Ok(json!(sent.to_string())),
                    Err(e) => Err(refusal(ledger, e, txid)),
                }
            }
            "submitpackage" => self.submit_package(params),
            "estimatesmartfee" => {
                let blocks = u32_param(params, 0, "conf_target")?;
                let rate = ledger.fee_rate().map_err(chain_failure)?;
                Ok(json!({ "feerate": btc_per_kvb(rate), "blocks": blocks.max(1) }))
            }
            "generatetoaddress" => {
                let blocks = u32_param(params, 0, "nblocks")?;
                self.address_param(params, 1)?;
                if blocks > MAX_BLOCKS_PER_CALL {
                    return Err(fail(
                        RPC_INVALID_PARAMETER,
                        format!(
                            "at most {MAX_BLOCKS_PER_CALL} blocks per call, asked for {blocks}"
                        ),
                    ));
                }
                let first = tip + 1;
                let new_tip = ledger.mine(blocks);
                let hashes: Vec<String> =
                    (first..=new_tip).map(|h| self.block_hash(h).to_string()).collect();
                Ok(json!(hashes))
            }
            "generateblock" => {
                self.address_param(params, 0)?;
                match opt_param(params, 1) {
                    Some(Value::Array(txs)) if txs.is_empty() => {}
                    _ => {
                        return Err(fail(
                            RPC_INVALID_PARAMETER,
                            "the dev ledger mines only empty blocks this way (`[]`); \
                             generatetoaddress mines the mempool",
                        ))
                    }
                }
                let height = ledger.mine_empty();
                Ok(json!({ "hash": self.block_hash(height).to_string() }))
            }
            "devfaucet" => {
                let script = ScriptBuf::from_hex(str_param(params, 0, "script")?)
                    .map_err(|e| fail(RPC_INVALID_PARAMETER, format!("script: {e}")))?;
                let sats = opt_param(params, 1)
                    .and_then(Value::as_u64)
                    .ok_or_else(|| fail(RPC_INVALID_PARAMS, "amount: whole satoshis"))?;
                let outpoint =
                    ledger.faucet(&script, Amount::from_sat(sats)).map_err(chain_failure)?;
                Ok(json!({ "txid": outpoint.txid.to_string(), "vout": outpoint.vout }))
            }
            other => Err(fail(
                RPC_METHOD_NOT_FOUND,
                format!("Method not found (the dev ledger does not serve {other})"),
            )),
        }
    }

    /// A made-up block hash: the ledger's id, then the height (big-endian) in the last
    /// four bytes, so the hash tells its height back and another ledger's hashes differ.
    pub fn block_hash(&self, height: u32) -> BlockHash {
        let mut bytes = [0u8; 32];
        bytes[..16].copy_from_slice(&self.ledger.id());
        bytes[28..].copy_from_slice(&height.to_be_bytes());
        BlockHash::from_byte_array(bytes)
    }

    /// The height of the block named by the first parameter.
    fn height_of(&self, params: &[Value]) -> Result<u32, RpcFailure> {
        let hash: BlockHash = str_param(params, 0, "blockhash")?
            .parse()
            .map_err(|e| fail(RPC_INVALID_PARAMETER, format!("blockhash: {e}")))?;
        let bytes = hash.to_byte_array();
        let mut height = [0u8; 4];
        height.copy_from_slice(&bytes[28..]);
        let height = u32::from_be_bytes(height);
        if self.block_hash(height) != hash || height > tip(&self.ledger) {
            return Err(fail(RPC_INVALID_ADDRESS_OR_KEY, "Block not found"));
        }
        Ok(height)
    }

    fn address_param(&self, params: &[Value], index: usize) -> Result<ScriptBuf, RpcFailure> {
        let text = str_param(params, index, "address")?;
        let address = text
            .parse::<Address<_>>()
            .and_then(|a| a.require_network(self.network))
            .map_err(|e| fail(RPC_INVALID_ADDRESS_OR_KEY, format!("Invalid address: {e}")))?;
        Ok(address.script_pubkey())
    }

    fn scan(&self, params: &[Value], tip: u32) -> Result<Value, RpcFailure> {
        if str_param(params, 0, "action")? != "start" {
            return Err(fail(RPC_INVALID_PARAMETER, "the dev ledger serves only `start`"));
        }
        let Some(Value::Array(objects)) = opt_param(params, 1) else {
            return Err(fail(RPC_INVALID_PARAMS, "scanobjects: an array of descriptors"));
        };
        let mut unspents = Vec::new();
        let mut total = Amount::ZERO;
        for object in objects {
            let desc = object.as_str().unwrap_or_default();
            let hex = desc
                .strip_prefix("raw(")
                .and_then(|d| d.split('#').next())
                .and_then(|d| d.strip_suffix(')'))
                .ok_or_else(|| {
                    fail(RPC_INVALID_PARAMETER, "the dev ledger scans only raw(HEX) descriptors")
                })?;
            let script = ScriptBuf::from_hex(hex)
                .map_err(|e| fail(RPC_INVALID_PARAMETER, format!("raw(): {e}")))?;
            for (outpoint, utxo) in self.ledger.confirmed_script_utxos(&script) {
                total = total.checked_add(utxo.txout.value).unwrap_or(Amount::MAX);
                unspents.push(json!({
                    "txid": outpoint.txid.to_string(),
                    "vout": outpoint.vout,
                    "scriptPubKey": utxo.txout.script_pubkey.to_hex_string(),
                    "desc": desc,
                    "amount": utxo.txout.value.to_btc(),
                    "coinbase": false,
                    "height": utxo.height.unwrap_or(tip),
                }));
            }
        }
        Ok(json!({
            "success": true,
            "txouts": unspents.len(),
            "height": tip,
            "bestblock": self.block_hash(tip).to_string(),
            "unspents": unspents,
            "total_amount": total.to_btc(),
        }))
    }

    fn submit_package(&self, params: &[Value]) -> Result<Value, RpcFailure> {
        let Some(Value::Array(hexes)) = opt_param(params, 0) else {
            return Err(fail(RPC_INVALID_PARAMS, "package: an array of raw transactions"));
        };
        let txs = hexes
            .iter()
            .map(|h| {
                let hex = h.as_str().ok_or_else(|| fail(RPC_INVALID_PARAMS, "a hex string"))?;
                decode_tx(hex)
            })
            .collect::<Result<Vec<Transaction>, _>>()?;
        if txs.is_empty() || txs.len() > 2 {
            return Err(fail(
                RPC_INVALID_PARAMETER,
                "the dev ledger takes one transaction or a parent and its child",
            ));
        }
        let known = |txid: &Txid| self.ledger.transaction_at(txid).is_some();
        // As Core does, what is already there is skipped: a parent in the mempool with a
        // new child is the child alone (which may replace the parent's old child).
        let fresh: Vec<&Transaction> = txs.iter().filter(|t| !known(&t.compute_txid())).collect();
        let result = match fresh.as_slice() {
            [] => Ok(()),
            [tx] => self.ledger.broadcast(tx).map(|_| ()),
            [parent, child] => self.ledger.broadcast_package(parent, child).map(|_| ()),
            _ => Ok(()),
        };
        let ids: Vec<(Wtxid, Txid)> =
            txs.iter().map(|t| (t.compute_wtxid(), t.compute_txid())).collect();
        let error = match result {
            Ok(()) => None,
            // Resent as a whole, already there: Core reports success.
            Err(ChainError::Rejected(RejectReason::AlreadyKnown { .. }))
                if ids.iter().all(|(_, t)| known(t)) =>
            {
                None
            }
            Err(ChainError::Rejected(reason)) => Some(reason.to_string()),
            Err(other) => return Err(chain_failure(other)),
        };
        let mut results = serde_json::Map::new();
        for (wtxid, txid) in &ids {
            let mut entry = json!({ "txid": txid.to_string() });
            if let Some(e) = &error {
                entry["error"] = json!(e);
            }
            results.insert(wtxid.to_string(), entry);
        }
        let message = if error.is_some() { "transaction failed" } else { "success" };
        Ok(json!({ "package_msg": message, "tx-results": results }))
    }
}

fn tip(ledger: &Ledger) -> u32 {
    ledger.tip_height().unwrap_or(0)
}

/// A rate in BTC per 1,000 vB, as Core gives it.
fn btc_per_kvb(rate: FeeRate) -> f64 {
    Amount::from_sat(rate.to_sat_per_kwu().saturating_mul(4)).to_btc()
}

/// The JSON-RPC reply to a call with `id`.
fn envelope(id: Value, answer: Result<Value, RpcFailure>) -> String {
    let reply = match answer {
        Ok(result) => json!({ "result": result, "error": null, "id": id }),
        Err(e) => json!({
            "result": null,
            "error": { "code": e.code, "message": e.message },
            "id": id,
        }),
    };
    reply.to_string()
}

/// A refused broadcast, in Core's words and codes.
fn refusal(ledger: &Ledger, error: ChainError, txid: Txid) -> RpcFailure {
    match error {
        ChainError::Rejected(RejectReason::AlreadyKnown { .. }) => {
            match ledger.transaction_at(&txid) {
                Some((_, Some(_))) => {
                    fail(RPC_VERIFY_ALREADY_IN_CHAIN, "Transaction already in block chain")
                }
                _ => fail(RPC_VERIFY_REJECTED, "txn-already-in-mempool"),
            }
        }
        ChainError::Rejected(RejectReason::MissingInput { .. }) => {
            fail(RPC_VERIFY_ERROR, format!("bad-txns-inputs-missingorspent: {error}"))
        }
        ChainError::Rejected(reason) => fail(RPC_VERIFY_REJECTED, reason.to_string()),
        other => chain_failure(other),
    }
}

fn chain_failure(error: ChainError) -> RpcFailure {
    match error {
        ChainError::Rejected(reason) => fail(RPC_VERIFY_REJECTED, reason.to_string()),
        other => fail(RPC_MISC_ERROR, other.to_string()),
    }
}

fn opt_param(params: &[Value], index: usize) -> Option<&Value> {
    params.get(index).filter(|v| !v.is_null())
}

fn str_param<'a>(params: &'a [Value], index: usize, name: &str) -> Result<&'a str, RpcFailure> {
    opt_param(params, index)
        .and_then(Value::as_str)
        .ok_or_else(|| fail(RPC_INVALID_PARAMS, format!("{name}: a string")))
}

fn u32_param(params: &[Value], index: usize, name: &str) -> Result<u32, RpcFailure> {
    opt_param(params, index)
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| fail(RPC_INVALID_PARAMS, format!("{name}: a number up to 2^32 - 1")))
}

fn txid_param(params: &[Value], index: usize) -> Result<Txid, RpcFailure> {
    str_param(params, index, "txid")?
        .parse()
        .map_err(|e| fail(RPC_INVALID_PARAMETER, format!("txid: {e}")))
}

fn tx_param(params: &[Value], index: usize) -> Result<Transaction, RpcFailure> {
    decode_tx(str_param(params, index, "hexstring")?)
}

fn decode_tx(hex: &str) -> Result<Transaction, RpcFailure> {
    deserialize_hex(hex)
        .map_err(|e| fail(RPC_DESERIALIZATION_ERROR, format!("TX decode failed: {e}")))
}

/// One HTTP request: its body and whether the client asked to close after it.
struct Request {
    body: Vec<u8>,
    close: bool,
}

/// Why a request is refused before it is read whole: the status and a word.
struct Refused(u16, &'static str);

/// Reads one request; `None` at a clean end of the connection.
async fn read_request(stream: &mut BufReader<TcpStream>) -> Result<Option<Request>, Refused> {
    let mut head = Vec::with_capacity(512);
    loop {
        let mut line = Vec::new();
        let n = (&mut *stream)
            .take((MAX_HEAD + 1 - head.len().min(MAX_HEAD)) as u64)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|_| Refused(400, "bad request\n"))?;
        if n == 0 {
            return if head.is_empty() { Ok(None) } else { Err(Refused(400, "bad request\n")) };
        }
        if head.len() + line.len() > MAX_HEAD {
            return Err(Refused(431, "request head too large\n"));
        }
        let blank = line == b"\r\n" || line == b"\n";
        head.extend_from_slice(&line);
        if blank {
            break;
        }
    }
    let head = String::from_utf8(head).map_err(|_| Refused(400, "bad request\n"))?;
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default();
    if !request_line.starts_with("POST ") {
        return Err(Refused(405, "JSON-RPC over POST only\n"));
    }
    let mut length = None;
    let mut close = request_line.ends_with("HTTP/1.0");
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "content-length" {
            length = Some(value.parse::<usize>().map_err(|_| Refused(400, "bad length\n"))?);
        } else if name == "connection" {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let length = length.ok_or(Refused(411, "content-length required\n"))?;
    if length > MAX_BODY {
        return Err(Refused(413, "request body too large\n"));
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.map_err(|_| Refused(400, "body cut short\n"))?;
    Ok(Some(Request { body, close }))
}

/// Reads and drops what a refused client still sends (at most 64 KiB, for at most 1 s),
/// so it reads the refusal rather than a connection reset.
async fn linger(stream: &mut BufReader<TcpStream>) {
    let mut sink = [0u8; 4096];
    let drain = async {
        let mut left = 64 * 1024usize;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

async fn respond(
    stream: &mut TcpStream,
    code: u16,
    body: &[u8],
    close: bool,
) -> std::io::Result<()> {
    let status = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    };
    let kind =
        if code == 200 || code == 404 || code == 500 { "application/json" } else { "text/plain" };
    let connection = if close { "close" } else { "keep-alive" };
    let head = format!(
        "HTTP/1.1 {code} {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\n\
         connection: {connection}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    if close {
        stream.shutdown().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rpc() -> DevRpc {
        DevRpc::new(Arc::new(Ledger::new()), Network::Regtest)
    }

    /// Sends `bytes` on a new connection and reads until the server closes it or
    /// `replies` responses came.
    async fn exchange(addr: SocketAddr, bytes: &[u8], replies: usize) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        while String::from_utf8_lossy(&got).matches("HTTP/1.1 ").count() < replies
            || !String::from_utf8_lossy(&got).ends_with('}')
        {
            match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Err(_) => break,
                Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
                Ok(Err(_)) => break,
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    #[tokio::test]
    async fn the_http_side_keeps_a_connection_and_refuses_what_it_cannot_take() {
        let (addr, task) = rpc().serve(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let call = |id: u32| {
            let body = format!(r#"{{"jsonrpc":"1.0","id":{id},"method":"getblockcount"}}"#);
            format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len())
        };
        // Two calls on one connection, both answered.
        let both = exchange(addr, format!("{}{}", call(1), call(2)).as_bytes(), 2).await;
        assert_eq!(both.matches("HTTP/1.1 200 OK").count(), 2, "{both}");
        assert!(both.contains(r#""id":2"#), "{both}");
        // Not POST, no length, too long a body, too long a head: refused, never read.
        let get = exchange(addr, b"GET / HTTP/1.1\r\n\r\n", 1).await;
        assert!(get.starts_with("HTTP/1.1 405"), "{get}");
        let no_length = exchange(addr, b"POST / HTTP/1.1\r\n\r\n", 1).await;
        assert!(no_length.starts_with("HTTP/1.1 411"), "{no_length}");
        let huge = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1);
        let huge = exchange(addr, huge.as_bytes(), 1).await;
        assert!(huge.starts_with("HTTP/1.1 413"), "{huge}");
        let head = format!("POST / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        let head = exchange(addr, head.as_bytes(), 1).await;
        assert!(head.starts_with("HTTP/1.1 431"), "{head}");
        // The server still answers.
        let after = exchange(addr, call(3).as_bytes(), 1).await;
        assert!(after.contains(r#""result":0"#), "{after}");
        task.abort();
    }

    #[test]
    fn block_hashes_tell_their_height_and_no_other_ledger_s() {
        let dev = rpc();
        dev.ledger.mine(3);
        let hash = dev.block_hash(2);
        assert_eq!(dev.height_of(&[json!(hash.to_string())]), Ok(2));
        let other = rpc();
        other.ledger.mine(3);
        assert_eq!(other.height_of(&[json!(hash.to_string())]).unwrap_err().code, -5);
        let above = dev.block_hash(9);
        assert_eq!(dev.height_of(&[json!(above.to_string())]).unwrap_err().code, -5);
    }

    #[test]
    fn bad_calls_get_core_s_codes_not_a_panic() {
        let dev = rpc();
        assert_eq!(dev.call("stop", &[]).unwrap_err().code, RPC_METHOD_NOT_FOUND);
        assert_eq!(dev.call("getblockhash", &[json!(5)]).unwrap_err().code, -8);
        assert_eq!(dev.call("getblockhash", &[json!("x")]).unwrap_err().code, RPC_INVALID_PARAMS);
        assert_eq!(dev.call("sendrawtransaction", &[json!("00")]).unwrap_err().code, -22);
        let desc = [json!("start"), json!(["addr(bcrt1q)"])];
        assert_eq!(dev.call("scantxoutset", &desc).unwrap_err().code, -8);
        let many =
            [json!(MAX_BLOCKS_PER_CALL + 1), json!("bcrt1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq")];
        assert!(dev.call("generatetoaddress", &many).is_err());
        let (status, body) = dev.answer_body(b"{not json");
        assert_eq!(status, 500);
        assert!(body.contains("-32700"), "{body}");
        let (status, body) = dev.answer_body(br#"[{"method":"getblockcount","id":1},{"id":2}]"#);
        assert_eq!(status, 200);
        let replies: Vec<Value> = serde_json::from_str(&body).unwrap();
        assert_eq!(replies[0]["result"], json!(0));
        assert_eq!(replies[1]["error"]["code"], json!(RPC_INVALID_PARAMS));
    }

    #[test]
    fn the_faucet_pays_a_confirmed_output_gettxout_and_scans_see() {
        let dev = rpc();
        let script = ScriptBuf::new_p2wsh(&bitcoin::WScriptHash::hash(&[0x51]));
        let paid = dev.call("devfaucet", &[json!(script.to_hex_string()), json!(50_000)]).unwrap();
        let txid = paid["txid"].as_str().unwrap();
        let out = dev.call("gettxout", &[json!(txid), json!(0), json!(false)]).unwrap();
        assert_eq!(out["value"], json!(0.0005));
        assert_eq!(out["confirmations"], json!(1));
        let scan = dev
            .call(
                "scantxoutset",
                &[json!("start"), json!([format!("raw({})", script.to_hex_string())])],
            )
            .unwrap();
        assert_eq!(scan["unspents"][0]["txid"], json!(txid));
        assert_eq!(scan["unspents"][0]["height"], json!(1));
        let block =
            dev.call("getblock", &[json!(dev.block_hash(1).to_string()), json!(1)]).unwrap();
        assert_eq!(block["tx"], json!([txid]));
        let dust = dev.call("devfaucet", &[json!(script.to_hex_string()), json!(1)]);
        assert!(dust.is_err());
    }
}
