//! Configuration of a [`crate::BitcoindChain`]: the node's URL, credentials, network,
//! timeouts, retry policy and fee estimation.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bitcoin::{FeeRate, Network};

/// How to authenticate to the node's RPC server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcAuth {
    /// The `.cookie` file `bitcoind` writes at start (re-read when the node restarts).
    Cookie(PathBuf),
    /// `-rpcuser`/`-rpcpassword` (or an `-rpcauth` entry).
    UserPass {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
}

impl RpcAuth {
    /// The cookie file of a node with data directory `datadir` on `network`.
    pub fn cookie_in(datadir: &Path, network: Network) -> Self {
        RpcAuth::Cookie(network_dir(datadir, network).join(".cookie"))
    }
}

/// Where a node keeps the files of `network` inside its data directory.
pub fn network_dir(datadir: &Path, network: Network) -> PathBuf {
    match network {
        Network::Bitcoin => datadir.to_path_buf(),
        Network::Testnet => datadir.join("testnet3"),
        Network::Testnet4 => datadir.join("testnet4"),
        Network::Signet => datadir.join("signet"),
        Network::Regtest => datadir.join("regtest"),
    }
}

/// Bitcoin Core's default RPC port on `network`.
pub fn default_rpc_port(network: Network) -> u16 {
    match network {
        Network::Bitcoin => 8332,
        Network::Testnet => 18332,
        Network::Testnet4 => 48332,
        Network::Signet => 38332,
        Network::Regtest => 18443,
    }
}

/// Retries of calls that failed for a reason that may pass: the node unreachable,
/// warming up, restarting (cookie missing or changed), its work queue full, a scan
/// already running. Delays double from `first_delay` up to `max_delay`; the call gives
/// up once `give_up_after` has passed since its first attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the first retry.
    pub first_delay: Duration,
    /// Longest delay between two attempts.
    pub max_delay: Duration,
    /// Time after which a call stops retrying and fails.
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            give_up_after: Duration::from_secs(30),
        }
    }
}

/// Everything a [`crate::BitcoindChain`] needs to reach and trust a node.
#[derive(Debug, Clone, PartialEq)]
pub struct BitcoindConfig {
    /// The RPC endpoint, e.g. `http://127.0.0.1:18443`.
    pub url: String,
    /// Credentials.
    pub auth: RpcAuth,
    /// The network the node must be on (checked with `getblockchaininfo`).
    pub network: Network,
    /// Timeout of one HTTP request.
    pub timeout: Duration,
    /// Timeout of one `scantxoutset` (a scan of the whole UTXO set).
    pub scan_timeout: Duration,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// Confirmation target, in blocks, of `estimatesmartfee`.
    pub conf_target: u16,
    /// Fee rate used when the node has no estimate (a fresh regtest or signet node).
    pub fallback_fee_rate: FeeRate,
    /// Blocks below the tip scanned for a transaction this backend did not broadcast
    /// when its confirmations cannot be read from the node directly.
    pub watch_depth: u32,
}

impl BitcoindConfig {
    /// A configuration with default timeouts (30 s per request, 10 min per UTXO set
    /// scan), retries ([`RetryPolicy::default`]), a 6-block fee target with a 2 sat/vB
    /// fallback, and a 144-block watch depth.
    pub fn new(url: impl Into<String>, auth: RpcAuth, network: Network) -> Self {
        BitcoindConfig {
            url: url.into(),
            auth,
            network,
            timeout: Duration::from_secs(30),
            scan_timeout: Duration::from_secs(600),
            retry: RetryPolicy::default(),
            conf_target: 6,
            fallback_fee_rate: FeeRate::from_sat_per_vb_u32(2),
            watch_depth: 144,
        }
    }

    /// A local node on `network` with its default port and the cookie of `datadir`.
    pub fn local(datadir: &Path, network: Network) -> Self {
        let url = format!("http://127.0.0.1:{}", default_rpc_port(network));
        BitcoindConfig::new(url, RpcAuth::cookie_in(datadir, network), network)
    }
}
