//! Choosing and opening the wallet's chain source: the `--chain` and `--bitcoind-*`
//! options ([`ChainArgs`]), the stored setting they replace, and [`WalletChain`], the
//! source a command then uses.

use std::path::PathBuf;
use std::str::FromStr;

use bitcoin::{FeeRate, OutPoint, ScriptBuf, Transaction, Txid};
use cohort_common::messages::UtxoInfo;

use super::{CliError, Context};
use crate::chain::{
    ChainSetting, ChainSource, ChainSourceError, NodeAuth, NodeChain, NodeSettings, ProbeError,
    RegtestNodeChain,
};
use crate::client::{connect_checked, dev_chain_of, server_info};
use crate::store::ParticipantStore;
use crate::wallet::CoordinatorInfo;

/// Which chain source (`--chain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainKind {
    /// `node`: the participant's own `bitcoind`.
    Node,
    /// `coordinator-dev`: the embedded chain of a `--dev` coordinator.
    CoordinatorDev,
}

impl FromStr for ChainKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "node" => Ok(ChainKind::Node),
            "coordinator-dev" => Ok(ChainKind::CoordinatorDev),
            other => Err(format!("unknown chain source {other:?}: node or coordinator-dev")),
        }
    }
}

/// The chain options of a command; all empty means "the wallet's stored setting".
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ChainArgs {
    /// `--chain`.
    pub chain: Option<ChainKind>,
    /// `--bitcoind-url` (default: `http://127.0.0.1:<the network's RPC port>`).
    pub bitcoind_url: Option<String>,
    /// `--bitcoind-cookie`: the node's `.cookie` file.
    pub bitcoind_cookie: Option<PathBuf>,
    /// `--bitcoind-datadir`: the node's data directory, for its cookie (default
    /// `~/.bitcoin`).
    pub bitcoind_datadir: Option<PathBuf>,
    /// `--bitcoind-user`.
    pub bitcoind_user: Option<String>,
    /// `--bitcoind-password`.
    pub bitcoind_password: Option<String>,
}

impl std::fmt::Debug for ChainArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainArgs")
            .field("chain", &self.chain)
            .field("bitcoind_url", &self.bitcoind_url)
            .field("bitcoind_cookie", &self.bitcoind_cookie)
            .field("bitcoind_datadir", &self.bitcoind_datadir)
            .field("bitcoind_user", &self.bitcoind_user)
            .field("bitcoind_password", &self.bitcoind_password.as_ref().map(|_| "…"))
            .finish()
    }
}

fn settings_error(why: &str) -> CliError {
    CliError::ChainSettings(why.to_owned())
}

impl ChainArgs {
    /// Whether any `--bitcoind-*` option is given.
    fn has_node_options(&self) -> bool {
        self.bitcoind_url.is_some()
            || self.bitcoind_cookie.is_some()
            || self.bitcoind_datadir.is_some()
            || self.bitcoind_user.is_some()
            || self.bitcoind_password.is_some()
    }

    /// The same options with `--chain` set to `kind`.
    pub fn with_kind(mut self, kind: ChainKind) -> Self {
        self.chain = Some(kind);
        self
    }

    /// Refuses the options on a command that does not use the chain (an option that
    /// would do nothing).
    pub fn refuse_on(&self, command: &str) -> Result<(), CliError> {
        if self.chain.is_some() || self.has_node_options() {
            return Err(CliError::ChainSettings(format!(
                "`cohort {command}` does not use the chain: --chain and --bitcoind-* would do \
                 nothing there"
            )));
        }
        Ok(())
    }

    /// The setting these options describe for a wallet on `network`; `None` when none is
    /// given. `--bitcoind-*` alone means `--chain node`.
    pub fn setting(&self, network: bitcoin::Network) -> Result<Option<ChainSetting>, CliError> {
        match (self.chain, self.has_node_options()) {
            (None, false) => return Ok(None),
            (Some(ChainKind::CoordinatorDev), true) => {
                return Err(settings_error(
                    "--bitcoind-* options do nothing with --chain coordinator-dev",
                ))
            }
            (Some(ChainKind::CoordinatorDev), false) => {
                return Ok(Some(ChainSetting::CoordinatorDev))
            }
            _ => {}
        }
        let cookie = self.bitcoind_cookie.clone();
        let datadir = self.bitcoind_datadir.as_deref();
        let auth = match (&self.bitcoind_user, &self.bitcoind_password) {
            (Some(user), Some(password)) if cookie.is_none() && datadir.is_none() => {
                NodeAuth::UserPassword { user: user.clone(), password: password.clone() }
            }
            (Some(_), Some(_)) => {
                return Err(settings_error(
                    "give --bitcoind-user/--bitcoind-password or a cookie (--bitcoind-cookie, \
                     --bitcoind-datadir), not both",
                ))
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(settings_error("--bitcoind-user and --bitcoind-password go together"))
            }
            (None, None) => {
                match (cookie, datadir) {
                    (Some(_), Some(_)) => return Err(settings_error(
                        "--bitcoind-cookie and --bitcoind-datadir both name the cookie: give one",
                    )),
                    (Some(path), None) => NodeAuth::Cookie { path },
                    (None, datadir) => {
                        NodeSettings::local(network, datadir)
                            .ok_or_else(|| {
                                settings_error(
                                    "HOME is not set: give --bitcoind-datadir or --bitcoind-cookie",
                                )
                            })?
                            .auth
                    }
                }
            }
        };
        let url = match &self.bitcoind_url {
            Some(url) => url.clone(),
            None => {
                format!("http://127.0.0.1:{}", cohort_chain_rpc::config::default_rpc_port(network))
            }
        };
        Ok(Some(ChainSetting::Node(NodeSettings { url, auth })))
    }
}

/// The chain source a command uses.
#[derive(Debug)]
pub enum WalletChain {
    /// The wallet's own node.
    Node(NodeChain),
    /// A dev coordinator's chain, through the `bitcoind` JSON-RPC endpoint it serves it
    /// on: the same client and code path as a node.
    CoordinatorDev(RegtestNodeChain),
}

impl From<ProbeError> for CliError {
    fn from(e: ProbeError) -> Self {
        match e {
            ProbeError::WrongNetwork { url, node, expected } => {
                CliError::NodeWrongNetwork { url, node, expected }
            }
            other => CliError::Node(other),
        }
    }
}

/// Checks that `setting` fits the coordinator `info` and, for a node, probes it.
pub(super) async fn check_setting(
    setting: &ChainSetting,
    info: &CoordinatorInfo,
) -> Result<Option<NodeChain>, CliError> {
    match setting {
        ChainSetting::CoordinatorDev if !info.dev => Err(CliError::NotDev),
        ChainSetting::CoordinatorDev => Ok(None),
        ChainSetting::Node(_) if info.dev => Err(settings_error(
            "the --dev coordinator serves its chain on a port it announces at every start: \
             use --chain coordinator-dev",
        )),
        ChainSetting::Node(node) => Ok(Some(NodeChain::probe(node, info.network).await?)),
    }
}

/// Opens the wallet's chain source: the command's options if given (stored once the
/// source answers), else the stored setting, else the dev coordinator's chain for a wallet
/// made on one. A dev chain is reached through the coordinator at `uri`.
pub(super) async fn open_chain(
    ctx: &Context,
    store: &dyn ParticipantStore,
    info: &CoordinatorInfo,
    uri: &str,
) -> Result<WalletChain, CliError> {
    let given = ctx.chain.setting(info.network)?;
    let stored = ChainSetting::load(store)?;
    let setting = match (&given, &stored) {
        (Some(s), _) | (None, Some(s)) => s.clone(),
        (None, None) if info.dev => ChainSetting::CoordinatorDev,
        (None, None) => {
            return Err(settings_error(
                "this wallet has no chain source: give --chain node (with --bitcoind-* unless \
                 the node is local with its default cookie)",
            ))
        }
    };
    let chain = match check_setting(&setting, info).await? {
        Some(node) => WalletChain::Node(node),
        None => WalletChain::CoordinatorDev(dev_ledger(info, uri).await?),
    };
    if let Some(given) = given {
        if stored.as_ref() != Some(&given) {
            given.save(store)?;
        }
    }
    Ok(chain)
}

/// The chain endpoint of the dev coordinator at `uri` (checked to be the wallet's, on
/// its dev chain), probed like a node.
async fn dev_ledger(info: &CoordinatorInfo, uri: &str) -> Result<RegtestNodeChain, CliError> {
    let link = connect_checked(info, uri).await?;
    let server = server_info(&link).await;
    link.close("done");
    let server = server?;
    if server.dev_rpc_port.is_none() {
        return Err(CliError::NotDev);
    }
    Ok(dev_chain_of(uri, &server).await?)
}

impl ChainSource for WalletChain {
    async fn tip_height(&self) -> Result<u32, ChainSourceError> {
        match self {
            WalletChain::Node(c) => c.tip_height().await,
            WalletChain::CoordinatorDev(c) => c.tip_height().await,
        }
    }
    async fn utxo(&self, outpoint: OutPoint) -> Result<Option<UtxoInfo>, ChainSourceError> {
        match self {
            WalletChain::Node(c) => c.utxo(outpoint).await,
            WalletChain::CoordinatorDev(c) => c.utxo(outpoint).await,
        }
    }
    async fn script_utxos(&self, script: &ScriptBuf) -> Result<Vec<UtxoInfo>, ChainSourceError> {
        match self {
            WalletChain::Node(c) => c.script_utxos(script).await,
            WalletChain::CoordinatorDev(c) => c.script_utxos(script).await,
        }
    }
    async fn fee_rate(&self) -> Result<FeeRate, ChainSourceError> {
        match self {
            WalletChain::Node(c) => c.fee_rate().await,
            WalletChain::CoordinatorDev(c) => c.fee_rate().await,
        }
    }
    async fn confirmations(&self, txid: Txid) -> Result<Option<u32>, ChainSourceError> {
        match self {
            WalletChain::Node(c) => c.confirmations(txid).await,
            WalletChain::CoordinatorDev(c) => c.confirmations(txid).await,
        }
    }
    async fn broadcast(&self, tx: &Transaction) -> Result<Txid, ChainSourceError> {
        match self {
            WalletChain::Node(c) => c.broadcast(tx).await,
            WalletChain::CoordinatorDev(c) => c.broadcast(tx).await,
        }
    }
    async fn broadcast_package(
        &self,
        parent: &Transaction,
        child: &Transaction,
    ) -> Result<(Txid, Txid), ChainSourceError> {
        match self {
            WalletChain::Node(c) => c.broadcast_package(parent, child).await,
            WalletChain::CoordinatorDev(c) => c.broadcast_package(parent, child).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::Network;

    fn args() -> ChainArgs {
        ChainArgs::default()
    }

    #[test]
    fn options_that_would_do_nothing_or_contradict_are_refused() {
        assert_eq!(args().setting(Network::Regtest).ok(), Some(None));
        let dev_with_url = ChainArgs {
            chain: Some(ChainKind::CoordinatorDev),
            bitcoind_url: Some("http://x".into()),
            ..args()
        };
        assert!(dev_with_url.setting(Network::Regtest).is_err());
        let user_only = ChainArgs { bitcoind_user: Some("u".into()), ..args() };
        assert!(user_only.setting(Network::Regtest).is_err());
        let both_cookies = ChainArgs {
            bitcoind_cookie: Some("/c".into()),
            bitcoind_datadir: Some("/d".into()),
            ..args()
        };
        assert!(both_cookies.setting(Network::Regtest).is_err());
        let mixed = ChainArgs {
            bitcoind_user: Some("u".into()),
            bitcoind_password: Some("p".into()),
            bitcoind_cookie: Some("/c".into()),
            ..args()
        };
        assert!(mixed.setting(Network::Regtest).is_err());
        assert!(ChainArgs { chain: Some(ChainKind::Node), ..args() }.refuse_on("status").is_err());
        assert!(args().refuse_on("status").is_ok());
    }

    #[test]
    fn node_options_make_a_node_setting() {
        let a = ChainArgs { bitcoind_datadir: Some("/d".into()), ..args() };
        let Ok(Some(ChainSetting::Node(n))) = a.setting(Network::Signet) else {
            panic!("a node setting")
        };
        assert_eq!(n.url, "http://127.0.0.1:38332");
        assert_eq!(n.auth, NodeAuth::Cookie { path: "/d/signet/.cookie".into() });
        let a = ChainArgs {
            chain: Some(ChainKind::Node),
            bitcoind_url: Some("http://h:1".into()),
            bitcoind_user: Some("u".into()),
            bitcoind_password: Some("p".into()),
            ..args()
        };
        let Ok(Some(ChainSetting::Node(n))) = a.setting(Network::Bitcoin) else {
            panic!("a node setting")
        };
        assert_eq!(n.url, "http://h:1");
        assert!(!format!("{a:?}").contains("\"p\""));
        assert_eq!("coordinator-dev".parse(), Ok(ChainKind::CoordinatorDev));
        assert!("dev".parse::<ChainKind>().is_err());
    }
}
