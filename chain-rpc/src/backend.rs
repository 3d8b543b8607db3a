//! [`BitcoindChain`]: the [`Chain`] trait over a `bitcoind` node's JSON-RPC.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bitcoin::consensus::encode::serialize_hex;
use bitcoin::{BlockHash, FeeRate, Network, OutPoint, Script, Transaction, TxOut, Txid};
use cohort_common::chain::{Chain, ChainError, RejectReason, Utxo};
use serde_json::json;

use crate::client::{RpcClient, Timeout};
use crate::codes::{
    RPC_INVALID_ADDRESS_OR_KEY, RPC_VERIFY_ALREADY_IN_CHAIN, RPC_VERIFY_ERROR, RPC_VERIFY_REJECTED,
};
use crate::config::BitcoindConfig;
use crate::error::RpcError;
use crate::mempool::MempoolIndex;
use crate::watch::Watch;
use crate::wire;

/// The oldest Core with TRUC, P2A and package relay (28.0).
const MIN_VERSION: u64 = 280_000;

/// What the node says about itself (`getblockchaininfo`, `getnetworkinfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// The chain name (`main`, `test`, `testnet4`, `signet`, `regtest`).
    pub chain: String,
    /// Blocks validated.
    pub blocks: u64,
    /// Headers known.
    pub headers: u64,
    /// Whether the node is in initial block download.
    pub initial_block_download: bool,
    /// Core's version number (e.g. `319900`).
    pub version: u64,
}

/// A [`Chain`] backed by a `bitcoind` node. Share it as `Arc<BitcoindChain>`; every
/// method blocks on the network.
#[derive(Debug)]
pub struct BitcoindChain {
    rpc: RpcClient,
    config: BitcoindConfig,
    /// Height of the last best block seen by `gettxout` (saves a header lookup).
    best: Mutex<Option<(BlockHash, u32)>>,
    mempool: Mutex<MempoolIndex>,
    watch: Mutex<Watch>,
}

impl BitcoindChain {
    /// Connects and checks the node: reachable (with retries), on `config.network`,
    /// synced, and recent enough (28.0 or later).
    pub fn connect(config: BitcoindConfig) -> Result<Self, RpcError> {
        let chain = BitcoindChain::unchecked(config);
        chain.status()?;
        Ok(chain)
    }

    /// A backend that has not talked to the node yet (nothing is checked).
    pub fn unchecked(config: BitcoindConfig) -> Self {
        BitcoindChain {
            rpc: RpcClient::new(&config),
            config,
            best: Mutex::new(None),
            mempool: Mutex::new(MempoolIndex::default()),
            watch: Mutex::new(Watch::default()),
        }
    }

    /// The node's status, failing with [`RpcError::WrongNetwork`],
    /// [`RpcError::NotSynced`] or [`RpcError::TooOld`] when it cannot be used. A
    /// regtest node counts as synced once its blocks reach its headers (it stays in
    /// "initial block download" until a block is mined).
    pub fn status(&self) -> Result<NodeStatus, RpcError> {
        let info: wire::BlockchainInfo = self.rpc.call("getblockchaininfo", &[])?;
        let expected = self.config.network;
        if Network::from_core_arg(&info.chain).ok() != Some(expected) {
            return Err(RpcError::WrongNetwork { expected, node: info.chain });
        }
        let lagging = info.blocks < info.headers;
        if lagging || (info.initialblockdownload && expected != Network::Regtest) {
            return Err(RpcError::NotSynced {
                blocks: info.blocks,
                headers: info.headers,
                initial_block_download: info.initialblockdownload,
            });
        }
        let net: wire::NetworkInfo = self.rpc.call("getnetworkinfo", &[])?;
        if net.version < MIN_VERSION {
            return Err(RpcError::TooOld { version: net.version });
        }
        Ok(NodeStatus {
            chain: info.chain,
            blocks: info.blocks,
            headers: info.headers,
            initial_block_download: info.initialblockdownload,
            version: net.version,
        })
    }

    /// The JSON-RPC client (for calls the [`Chain`] trait does not cover, e.g.
    /// `generatetoaddress` on regtest).
    pub fn rpc(&self) -> &RpcClient {
        &self.rpc
    }

    /// The configuration.
    pub fn config(&self) -> &BitcoindConfig {
        &self.config
    }

    /// Watches `txid` for confirmations from the current tip on (done for every
    /// transaction broadcast through this backend).
    pub fn watch(&self, txid: Txid) -> Result<(), RpcError> {
        let tip = self.tip()?;
        lock(&self.watch).add(txid, tip);
        Ok(())
    }

    fn tip(&self) -> Result<u32, RpcError> {
        let count: u64 = self.rpc.call("getblockcount", &[])?;
        u32::try_from(count).map_err(|_| RpcError::Decode {
            method: "getblockcount".into(),
            detail: count.to_string(),
        })
    }

    fn height_of(&self, hash: BlockHash) -> Result<u32, RpcError> {
        if let Some((h, height)) = *lock(&self.best) {
            if h == hash {
                return Ok(height);
            }
        }
        let header: wire::BlockHeader =
            self.rpc.call("getblockheader", &[json!(hash.to_string()), json!(true)])?;
        *lock(&self.best) = Some((hash, header.height));
        Ok(header.height)
    }

    fn gettxout(
        &self,
        outpoint: &OutPoint,
        mempool: bool,
    ) -> Result<Option<wire::TxOutReply>, RpcError> {
        let params = [json!(outpoint.txid.to_string()), json!(outpoint.vout), json!(mempool)];
        self.rpc.call("gettxout", &params)
    }

    /// Confirmed outputs paying `script` (`scantxoutset`).
    fn scan(&self, script: &Script) -> Result<Vec<(OutPoint, Utxo)>, RpcError> {
        let desc = format!("raw({})", script.to_hex_string());
        let scan: wire::Scan =
            self.rpc.call_with(Timeout::Scan, "scantxoutset", &[json!("start"), json!([desc])])?;
        if !scan.success {
            let detail = "scan reported no success".to_string();
            return Err(RpcError::Decode { method: "scantxoutset".into(), detail });
        }
        Ok(scan
            .unspents
            .into_iter()
            .map(|u| {
                let txout = TxOut { value: u.amount, script_pubkey: u.script_pubkey };
                (OutPoint { txid: u.txid, vout: u.vout }, Utxo { txout, height: Some(u.height) })
            })
            .collect())
    }

    fn watch_broadcast(&self, txids: &[Txid]) {
        // A failure here only costs a deeper scan later.
        if let Ok(tip) = self.tip() {
            let mut watch = lock(&self.watch);
            for txid in txids {
                watch.add(*txid, tip);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Maps a refused `sendrawtransaction`/`submitpackage` onto [`ChainError`].
fn refused(e: RpcError, txid: Txid) -> ChainError {
    match &e {
        RpcError::Rpc { code: RPC_VERIFY_ALREADY_IN_CHAIN, .. } => {
            RejectReason::AlreadyKnown { txid }.into()
        }
        RpcError::Rpc { code: RPC_VERIFY_REJECTED | RPC_VERIFY_ERROR, message, .. } => {
            if message.contains("txn-already-known") || message.contains("txn-already-in-mempool") {
                RejectReason::AlreadyKnown { txid }.into()
            } else {
                RejectReason::Node { reason: message.clone() }.into()
            }
        }
        _ => e.into(),
    }
}

impl Chain for BitcoindChain {
    fn tip_height(&self) -> Result<u32, ChainError> {
        Ok(self.tip()?)
    }

    fn utxo(&self, outpoint: &OutPoint) -> Result<Option<Utxo>, ChainError> {
        let Some(reply) = self.gettxout(outpoint, true)? else {
            return Ok(None);
        };
        let height = match reply.confirmations {
            0 => None,
            c => Some(self.height_of(reply.bestblock)? + 1 - c),
        };
        let txout = TxOut { value: reply.value, script_pubkey: reply.script_pubkey.hex };
        Ok(Some(Utxo { txout, height }))
    }

    fn script_utxos(&self, script: &Script) -> Result<Vec<(OutPoint, Utxo)>, ChainError> {
        // Mempool first: a transaction confirming meanwhile then shows up confirmed.
        let mut mempool = lock(&self.mempool);
        mempool.refresh(&self.rpc)?;
        let spent = mempool.spent();
        let pending = mempool.paying(script);
        drop(mempool);
        let mut found: HashMap<OutPoint, Utxo> = HashMap::new();
        for (outpoint, txout) in pending {
            found.insert(outpoint, Utxo { txout, height: None });
        }
        for (outpoint, utxo) in self.scan(script)? {
            found.insert(outpoint, utxo);
        }
        let mut all: Vec<(OutPoint, Utxo)> =
            found.into_iter().filter(|(o, _)| !spent.contains(o)).collect();
        all.sort_by_key(|(o, u)| (u.height.unwrap_or(u32::MAX), o.txid, o.vout));
        Ok(all)
    }

    fn broadcast(&self, tx: &Transaction) -> Result<Txid, ChainError> {
        let txid = tx.compute_txid();
        let reply: Result<Txid, RpcError> =
            self.rpc.call("sendrawtransaction", &[json!(serialize_hex(tx))]);
        let sent = reply.map_err(|e| refused(e, txid))?;
        self.watch_broadcast(&[sent]);
        Ok(sent)
    }

    fn broadcast_package(
        &self,
        parent: &Transaction,
        child: &Transaction,
    ) -> Result<(Txid, Txid), ChainError> {
        let (ptxid, ctxid) = (parent.compute_txid(), child.compute_txid());
        let package = json!([serialize_hex(parent), serialize_hex(child)]);
        let reply: wire::PackageReply =
            self.rpc.call("submitpackage", &[package]).map_err(|e| refused(e, ctxid))?;
        if reply.package_msg != "success" {
            let mut errors: Vec<String> = reply
                .tx_results
                .values()
                .filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.txid)))
                .collect();
            errors.sort();
            let reason = format!("{} ({})", reply.package_msg, errors.join("; "));
            return Err(RejectReason::Node { reason }.into());
        }
        self.watch_broadcast(&[ptxid, ctxid]);
        Ok((ptxid, ctxid))
    }

    fn fee_rate(&self) -> Result<FeeRate, ChainError> {
        let estimate: wire::FeeEstimate =
            self.rpc.call("estimatesmartfee", &[json!(self.config.conf_target)])?;
        let info: wire::MempoolInfo = self.rpc.call("getmempoolinfo", &[])?;
        let rate = estimate.feerate.map(wire::btc_per_kvb).unwrap_or(self.config.fallback_fee_rate);
        Ok(rate.max(wire::btc_per_kvb(info.mempoolminfee)))
    }

    fn confirmations(&self, txid: &Txid) -> Result<Option<u32>, ChainError> {
        // The mempool, or any block with -txindex.
        let params = [json!(txid.to_string()), json!(true)];
        match self.rpc.call::<wire::RawTxVerbose>("getrawtransaction", &params) {
            Ok(tx) => return Ok(Some(tx.confirmations.unwrap_or(0))),
            Err(e) if e.rpc_code() == Some(RPC_INVALID_ADDRESS_OR_KEY) => {}
            Err(e) => return Err(e.into()),
        }
        // An unspent first output tells its confirmations directly.
        if let Some(out) = self.gettxout(&OutPoint { txid: *txid, vout: 0 }, false)? {
            return Ok(Some(out.confirmations));
        }
        let tip = self.tip()?;
        Ok(lock(&self.watch).confirmations(&self.rpc, *txid, tip, self.config.watch_depth)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rpc(code: i32, message: &str) -> RpcError {
        RpcError::Rpc { method: "sendrawtransaction".into(), code, message: message.into() }
    }

    #[test]
    fn node_refusals_map_to_reject_reasons() {
        let txid = Txid::from_raw_hash(bitcoin::hashes::Hash::all_zeros());
        assert_eq!(
            refused(rpc(-27, "Transaction outputs already in utxo set"), txid),
            ChainError::Rejected(RejectReason::AlreadyKnown { txid })
        );
        assert_eq!(
            refused(rpc(-26, "min relay fee not met, 0 < 110"), txid),
            ChainError::Rejected(RejectReason::Node {
                reason: "min relay fee not met, 0 < 110".into()
            })
        );
        assert!(matches!(refused(rpc(-1, "boom"), txid), ChainError::Backend(_)));
    }
}
