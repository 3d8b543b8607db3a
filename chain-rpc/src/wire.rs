//! The parts of `bitcoind`'s replies the backend reads (only the fields it uses, so
//! replies of any Core version from 28 on decode).

use std::collections::HashMap;

use bitcoin::{Amount, BlockHash, FeeRate, ScriptBuf, Txid};
use serde::Deserialize;

/// `getblockchaininfo`.
#[derive(Debug, Deserialize)]
pub struct BlockchainInfo {
    pub chain: String,
    pub blocks: u64,
    pub headers: u64,
    pub initialblockdownload: bool,
}

/// `getnetworkinfo`.
#[derive(Debug, Deserialize)]
pub struct NetworkInfo {
    pub version: u64,
}

/// A `scriptPubKey` object.
#[derive(Debug, Deserialize)]
pub struct ScriptPubKey {
    pub hex: ScriptBuf,
}

/// `gettxout`.
#[derive(Debug, Deserialize)]
pub struct TxOutReply {
    pub bestblock: BlockHash,
    pub confirmations: u32,
    #[serde(with = "bitcoin::amount::serde::as_btc")]
    pub value: Amount,
    #[serde(rename = "scriptPubKey")]
    pub script_pubkey: ScriptPubKey,
}

/// `getblockheader` (verbose).
#[derive(Debug, Deserialize)]
pub struct BlockHeader {
    pub height: u32,
}

/// `scantxoutset start`.
#[derive(Debug, Deserialize)]
pub struct Scan {
    pub success: bool,
    pub unspents: Vec<ScanUnspent>,
}

/// One output `scantxoutset` found.
#[derive(Debug, Deserialize)]
pub struct ScanUnspent {
    pub txid: Txid,
    pub vout: u32,
    #[serde(rename = "scriptPubKey")]
    pub script_pubkey: ScriptBuf,
    #[serde(with = "bitcoin::amount::serde::as_btc")]
    pub amount: Amount,
    pub height: u32,
}

/// `estimatesmartfee`.
#[derive(Debug, Deserialize)]
pub struct FeeEstimate {
    /// BTC per 1,000 vB.
    pub feerate: Option<f64>,
}

/// `getmempoolinfo`.
#[derive(Debug, Deserialize)]
pub struct MempoolInfo {
    /// BTC per 1,000 vB.
    pub mempoolminfee: f64,
}

/// `getrawtransaction` (verbose).
#[derive(Debug, Deserialize)]
pub struct RawTxVerbose {
    /// Absent while the transaction is in the mempool.
    pub confirmations: Option<u32>,
}

/// `submitpackage`.
#[derive(Debug, Deserialize)]
pub struct PackageReply {
    pub package_msg: String,
    #[serde(rename = "tx-results", default)]
    pub tx_results: HashMap<String, PackageTx>,
}

/// One transaction's result in `submitpackage`.
#[derive(Debug, Deserialize)]
pub struct PackageTx {
    pub txid: Txid,
    #[serde(default)]
    pub error: Option<String>,
}

/// `getblock` at verbosity 1 (the txids only).
#[derive(Debug, Deserialize)]
pub struct BlockTxids {
    pub tx: Vec<Txid>,
}

/// A fee rate given in BTC per 1,000 vB, rounded up to whole sat per 1,000 WU.
pub fn btc_per_kvb(rate: f64) -> FeeRate {
    let sat_per_kvb = (rate * 1e8).round().max(0.0) as u64;
    FeeRate::from_sat_per_kwu(sat_per_kvb.div_ceil(4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fee_rates_convert_from_btc_per_kvb() {
        assert_eq!(btc_per_kvb(0.00001), FeeRate::from_sat_per_vb_u32(1));
        assert_eq!(btc_per_kvb(0.00012345), FeeRate::from_sat_per_kwu(3087));
        assert_eq!(btc_per_kvb(0.0), FeeRate::ZERO);
    }

    #[test]
    fn gettxout_reply_decodes() {
        let json = r#"{"bestblock":"0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206",
            "confirmations":3,"value":0.00012345,
            "scriptPubKey":{"asm":"","hex":"51024e73","type":"anchor"},"coinbase":false}"#;
        let r: TxOutReply = serde_json::from_str(json).expect("decodes");
        assert_eq!(r.value, Amount::from_sat(12_345));
        assert_eq!(r.script_pubkey.hex.as_bytes(), [0x51, 0x02, 0x4e, 0x73]);
        assert_eq!(r.confirmations, 3);
    }
}
