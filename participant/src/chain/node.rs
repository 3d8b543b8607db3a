//! [`NodeChain`]: the participant's own `bitcoind`, over the JSON-RPC client of
//! `cohort-chain-rpc`. Every call blocks on the network, so each runs on tokio's
//! blocking pool, never on the async runtime. [`NodeChain::probe`] checks a node in a
//! few seconds before a command relies on it: reachable, on the wallet's network, synced.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bitcoin::hashes::Hash as _;
use bitcoin::{Amount, FeeRate, Network, OutPoint, ScriptBuf, Transaction, Txid, WScriptHash};
use cohort_chain_rpc::codes::RPC_METHOD_NOT_FOUND;
use cohort_chain_rpc::config::default_rpc_port;
use cohort_chain_rpc::{BitcoindChain, BitcoindConfig, RpcAuth, RpcError};
use cohort_common::chain::{Chain, ChainError};
use cohort_common::messages::UtxoInfo;
use serde::{Deserialize, Serialize};

use super::{ChainSource, ChainSourceError, DevChain};

/// How long the start-up probe waits for the node, in all (one request and its retries).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// How the wallet logs in to its node.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NodeAuth {
    /// The node's `.cookie` file.
    Cookie {
        /// Its path.
        path: PathBuf,
    },
    /// `-rpcuser` / `-rpcpassword`.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
}

impl std::fmt::Debug for NodeAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeAuth::Cookie { path } => f.debug_struct("Cookie").field("path", path).finish(),
            NodeAuth::UserPassword { user, .. } => {
                f.debug_struct("UserPassword").field("user", user).finish_non_exhaustive()
            }
        }
    }
}

/// Where the wallet's node is and how to log in (stored in the wallet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSettings {
    /// The RPC endpoint, e.g. `http://127.0.0.1:8332`.
    pub url: String,
    /// Credentials.
    pub auth: NodeAuth,
}

impl NodeSettings {
    /// A node on this machine on `network`: its default RPC port and the cookie of
    /// `datadir` (Bitcoin Core's `~/.bitcoin` when `None`, which needs `$HOME`).
    pub fn local(network: Network, datadir: Option<&Path>) -> Option<NodeSettings> {
        let datadir = match datadir {
            Some(d) => d.to_path_buf(),
            None => PathBuf::from(std::env::var_os("HOME")?).join(".bitcoin"),
        };
        let RpcAuth::Cookie(path) = RpcAuth::cookie_in(&datadir, network) else { return None };
        let url = format!("http://127.0.0.1:{}", default_rpc_port(network));
        Some(NodeSettings { url, auth: NodeAuth::Cookie { path } })
    }

    /// The JSON-RPC endpoint a `--dev` coordinator at `host` serves its embedded chain on
    /// (the port its [`ServerInfo`](cohort_common::messages::ServerInfo) announces; it
    /// takes any credentials).
    pub fn dev_ledger(host: &str, port: u16) -> NodeSettings {
        let host = if host.contains(':') { format!("[{host}]") } else { host.to_owned() };
        NodeSettings {
            url: format!("http://{host}:{port}"),
            auth: NodeAuth::UserPassword { user: "cohort".into(), password: "dev".into() },
        }
    }

    /// The RPC client's configuration, expecting `network`.
    pub fn config(&self, network: Network) -> BitcoindConfig {
        let auth = match &self.auth {
            NodeAuth::Cookie { path } => RpcAuth::Cookie(path.clone()),
            NodeAuth::UserPassword { user, password } => {
                RpcAuth::UserPass { user: user.clone(), password: password.clone() }
            }
        };
        BitcoindConfig::new(self.url.clone(), auth, network)
    }
}

/// Why a node cannot serve the wallet.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The node runs another network than the wallet's.
    #[error("bitcoind at {url} runs on {node}, but this wallet is for {expected}")]
    WrongNetwork {
        /// The node's RPC endpoint.
        url: String,
        /// The node's chain name (`main`, `test`, `signet`, `regtest`, ...).
        node: String,
        /// The wallet's network.
        expected: Network,
    },
    /// The node is down, refuses the credentials, is not synced or too old.
    #[error("bitcoind at {url} cannot be used: {error}")]
    Unusable {
        /// The node's RPC endpoint.
        url: String,
        /// Why.
        error: RpcError,
    },
    /// The blocking task of the probe ended without an answer.
    #[error("bitcoind probe did not finish: {0}")]
    Task(String),
}

/// The participant's own node as its chain source.
#[derive(Debug, Clone)]
pub struct NodeChain {
    chain: Arc<BitcoindChain>,
    url: String,
    network: Network,
}

impl NodeChain {
    /// A chain source on the node of `settings`, expecting `network` (nothing is checked:
    /// see [`NodeChain::probe`]).
    pub fn unchecked(settings: &NodeSettings, network: Network) -> NodeChain {
        NodeChain {
            chain: Arc::new(BitcoindChain::unchecked(settings.config(network))),
            url: settings.url.clone(),
            network,
        }
    }

    /// Checks the node within [`PROBE_TIMEOUT`] (reachable, on `network`, synced, Core 28
    /// or later), then gives the chain source on it.
    pub async fn probe(settings: &NodeSettings, network: Network) -> Result<NodeChain, ProbeError> {
        let mut quick = settings.config(network);
        quick.timeout = PROBE_TIMEOUT;
        quick.retry.first_delay = Duration::from_millis(100);
        quick.retry.max_delay = Duration::from_millis(500);
        quick.retry.give_up_after = PROBE_TIMEOUT;
        let url = settings.url.clone();
        let status = tokio::task::spawn_blocking(move || BitcoindChain::unchecked(quick).status())
            .await
            .map_err(|e| ProbeError::Task(e.to_string()))?;
        match status {
            Ok(_) => Ok(NodeChain::unchecked(settings, network)),
            Err(RpcError::WrongNetwork { expected, node }) => {
                Err(ProbeError::WrongNetwork { url, node, expected })
            }
            Err(error) => Err(ProbeError::Unusable { url, error }),
        }
    }

    /// The node's RPC endpoint.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A dev chain on this node if it runs regtest (`generatetoaddress`; the faucet only
    /// on a dev coordinator's chain).
    pub fn regtest(&self) -> Option<RegtestNodeChain> {
        (self.network == Network::Regtest).then(|| RegtestNodeChain(self.clone()))
    }

    /// This endpoint as a dev chain whatever its network: a `--dev` coordinator's chain.
    pub fn dev_ledger(self) -> RegtestNodeChain {
        RegtestNodeChain(self)
    }

    /// Runs `f` on the blocking pool.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&BitcoindChain) -> Result<T, ChainError> + Send + 'static,
    ) -> Result<T, ChainSourceError> {
        let chain = self.chain.clone();
        match tokio::task::spawn_blocking(move || f(&chain)).await {
            Ok(answer) => answer.map_err(|e| ChainSourceError::Node {
                url: self.url.clone(),
                reason: e.to_string(),
            }),
            Err(e) => Err(ChainSourceError::Task(e.to_string())),
        }
    }
}

impl ChainSource for NodeChain {
    async fn tip_height(&self) -> Result<u32, ChainSourceError> {
        self.call(|c| c.tip_height()).await
    }

    async fn utxo(&self, outpoint: OutPoint) -> Result<Option<UtxoInfo>, ChainSourceError> {
        let utxo = self.call(move |c| c.utxo(&outpoint)).await?;
        Ok(utxo.map(|u| UtxoInfo { outpoint, txout: u.txout, height: u.height }))
    }

    async fn script_utxos(&self, script: &ScriptBuf) -> Result<Vec<UtxoInfo>, ChainSourceError> {
        let script = script.clone();
        let all = self.call(move |c| c.script_utxos(&script)).await?;
        Ok(all
            .into_iter()
            .map(|(outpoint, u)| UtxoInfo { outpoint, txout: u.txout, height: u.height })
            .collect())
    }

    async fn fee_rate(&self) -> Result<FeeRate, ChainSourceError> {
        self.call(|c| c.fee_rate()).await
    }

    async fn confirmations(&self, txid: Txid) -> Result<Option<u32>, ChainSourceError> {
        self.call(move |c| c.confirmations(&txid)).await
    }

    async fn broadcast(&self, tx: &Transaction) -> Result<Txid, ChainSourceError> {
        let tx = tx.clone();
        self.call(move |c| c.broadcast(&tx)).await
    }

    async fn broadcast_package(
        &self,
        parent: &Transaction,
        child: &Transaction,
    ) -> Result<(Txid, Txid), ChainSourceError> {
        let (parent, child) = (parent.clone(), child.clone());
        self.call(move |c| c.broadcast_package(&parent, &child)).await
    }
}

/// A regtest node, or a `--dev` coordinator's chain endpoint, used as a dev chain: it
/// mines on demand (to an anyone-can-spend script, so no coinbase lands among the
/// wallet's own outputs); the faucet (`devfaucet`, not a Core method) is only on a dev
/// coordinator's chain.
#[derive(Debug, Clone)]
pub struct RegtestNodeChain(NodeChain);

/// Where regtest blocks mined for the wallet pay: P2WSH of `OP_TRUE`.
fn mining_script() -> ScriptBuf {
    ScriptBuf::new_p2wsh(&WScriptHash::hash(&[0x51]))
}

impl ChainSource for RegtestNodeChain {
    async fn tip_height(&self) -> Result<u32, ChainSourceError> {
        self.0.tip_height().await
    }
    async fn utxo(&self, outpoint: OutPoint) -> Result<Option<UtxoInfo>, ChainSourceError> {
        self.0.utxo(outpoint).await
    }
    async fn script_utxos(&self, script: &ScriptBuf) -> Result<Vec<UtxoInfo>, ChainSourceError> {
        self.0.script_utxos(script).await
    }
    async fn fee_rate(&self) -> Result<FeeRate, ChainSourceError> {
        self.0.fee_rate().await
    }
    async fn confirmations(&self, txid: Txid) -> Result<Option<u32>, ChainSourceError> {
        self.0.confirmations(txid).await
    }
    async fn broadcast(&self, tx: &Transaction) -> Result<Txid, ChainSourceError> {
        self.0.broadcast(tx).await
    }
    async fn broadcast_package(
        &self,
        parent: &Transaction,
        child: &Transaction,
    ) -> Result<(Txid, Txid), ChainSourceError> {
        self.0.broadcast_package(parent, child).await
    }
}

impl DevChain for RegtestNodeChain {
    async fn mine(&self, n: u32) -> Result<u32, ChainSourceError> {
        self.0
            .call(move |c| {
                cohort_chain_rpc::regtest::mine(c, n, &mining_script())
                    .map_err(ChainError::from)?;
                c.tip_height()
            })
            .await
    }

    async fn faucet(
        &self,
        script: &ScriptBuf,
        amount: Amount,
    ) -> Result<OutPoint, ChainSourceError> {
        #[derive(Deserialize)]
        struct Funded {
            txid: Txid,
            vout: u32,
        }
        let params =
            [serde_json::json!(script.to_hex_string()), serde_json::json!(amount.to_sat())];
        let reply = self.0.call(move |c| Ok(c.rpc().call::<Funded>("devfaucet", &params))).await?;
        match reply {
            Ok(f) => Ok(OutPoint { txid: f.txid, vout: f.vout }),
            Err(e) if e.rpc_code() == Some(RPC_METHOD_NOT_FOUND) => {
                Err(ChainSourceError::NotDev("the faucet"))
            }
            Err(e) => {
                Err(ChainSourceError::Node { url: self.0.url.clone(), reason: e.to_string() })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_without_showing_the_password() {
        let s = NodeSettings {
            url: "http://127.0.0.1:8332".into(),
            auth: NodeAuth::UserPassword { user: "u".into(), password: "secret".into() },
        };
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<NodeSettings>(&json).unwrap(), s);
        assert!(!format!("{s:?}").contains("secret"));
    }

    #[test]
    fn a_local_node_uses_the_network_s_port_and_cookie() {
        let s = NodeSettings::local(Network::Regtest, Some(Path::new("/d"))).unwrap();
        assert_eq!(s.url, "http://127.0.0.1:18443");
        assert_eq!(s.auth, NodeAuth::Cookie { path: PathBuf::from("/d/regtest/.cookie") });
    }
}
