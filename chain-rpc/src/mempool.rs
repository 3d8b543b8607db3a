//! An incremental index of the node's mempool: which outpoints its transactions spend
//! and which outputs they create. Each refresh asks for the txid list and fetches only
//! the transactions not seen before, in batches.

use std::collections::{HashMap, HashSet};

use bitcoin::consensus::encode::deserialize_hex;
use bitcoin::{OutPoint, Script, Transaction, TxOut, Txid};
use serde_json::Value;

use crate::client::RpcClient;
// "Not found": the transaction left the mempool meanwhile.
use crate::codes::RPC_INVALID_ADDRESS_OR_KEY;
use crate::error::RpcError;

/// Transactions fetched per batch request.
const BATCH: usize = 500;

/// What the index keeps of one mempool transaction.
#[derive(Debug)]
struct Entry {
    inputs: Vec<OutPoint>,
    outputs: Vec<TxOut>,
}

/// The mempool as last seen.
#[derive(Debug, Default)]
pub struct MempoolIndex {
    txs: HashMap<Txid, Entry>,
}

impl MempoolIndex {
    /// Brings the index up to date with the node's mempool.
    pub fn refresh(&mut self, rpc: &RpcClient) -> Result<(), RpcError> {
        let txids: Vec<Txid> = rpc.call("getrawmempool", &[])?;
        let live: HashSet<Txid> = txids.iter().copied().collect();
        self.txs.retain(|txid, _| live.contains(txid));
        let new: Vec<Txid> = txids.into_iter().filter(|t| !self.txs.contains_key(t)).collect();
        for chunk in new.chunks(BATCH) {
            let params: Vec<Vec<Value>> =
                chunk.iter().map(|t| vec![Value::String(t.to_string())]).collect();
            let answers = rpc.batch("getrawtransaction", &params)?;
            for (txid, answer) in chunk.iter().zip(answers) {
                let raw = match answer {
                    Ok(raw) => raw,
                    Err(e) if e.rpc_code() == Some(RPC_INVALID_ADDRESS_OR_KEY) => continue,
                    Err(e) => return Err(e),
                };
                let tx = decode_tx(raw.get())?;
                let inputs = tx.input.iter().map(|i| i.previous_output).collect();
                self.txs.insert(*txid, Entry { inputs, outputs: tx.output });
            }
        }
        Ok(())
    }

    /// Every outpoint some mempool transaction spends.
    pub fn spent(&self) -> HashSet<OutPoint> {
        self.txs.values().flat_map(|e| e.inputs.iter().copied()).collect()
    }

    /// Outputs of mempool transactions paying `script`, spent or not.
    pub fn paying(&self, script: &Script) -> Vec<(OutPoint, TxOut)> {
        let mut found = Vec::new();
        for (txid, entry) in &self.txs {
            for (vout, out) in entry.outputs.iter().enumerate() {
                if out.script_pubkey.as_script() == script {
                    found.push((OutPoint { txid: *txid, vout: vout as u32 }, out.clone()));
                }
            }
        }
        found
    }
}

/// Decodes a JSON string holding a transaction's hex.
pub fn decode_tx(json: &str) -> Result<Transaction, RpcError> {
    let decode = |detail: String| RpcError::Decode { method: "getrawtransaction".into(), detail };
    let hex: String = serde_json::from_str(json).map_err(|e| decode(e.to_string()))?;
    deserialize_hex(&hex).map_err(|e| decode(e.to_string()))
}
