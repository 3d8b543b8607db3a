//! The participant's chain source: everything it reads from and writes to the chain
//! (its deposits, confirmations, the tip, fee rates, broadcasts) behind one async trait.
//!
//! DESIGN §7: confirmations come from the participant's own chain source, never the
//! coordinator's word, and exits and reclaims never depend on the coordinator.
//!
//! # Layout
//!
//! - here: [`ChainSource`] (what every command needs), [`DevChain`] (mining and the
//!   faucet, which only a dev chain offers: production code takes a `ChainSource` and
//!   cannot reach them), [`ChainSourceError`].
//! - [`node`]: [`NodeChain`], the participant's own `bitcoind` over JSON-RPC (each call
//!   on a blocking thread, never on the async runtime), and its start-up probe; a
//!   `--dev` coordinator's chain is reached the same way, on the JSON-RPC endpoint it
//!   serves its embedded ledger on ([`RegtestNodeChain`], which adds mining and, there,
//!   the faucet).

pub mod node;

use std::future::Future;

use bitcoin::{Amount, FeeRate, OutPoint, ScriptBuf, Transaction, Txid};
use cohort_common::messages::UtxoInfo;

use serde::{Deserialize, Serialize};

use crate::store::ParticipantStore;
use crate::wallet::WalletError;

pub use node::{NodeAuth, NodeChain, NodeSettings, ProbeError, RegtestNodeChain};

/// The settings key under which the wallet's chain source is stored (JSON).
pub const CHAIN_SETTING: &str = "chain";

/// Which chain source a wallet uses (stored in its settings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum ChainSetting {
    /// The participant's own `bitcoind`.
    Node(NodeSettings),
    /// The embedded chain of a `--dev` coordinator, on the JSON-RPC endpoint it announces
    /// (its port changes at every start, so it is looked up each time).
    CoordinatorDev,
}

impl ChainSetting {
    /// The stored setting, if any.
    pub fn load(store: &dyn ParticipantStore) -> Result<Option<ChainSetting>, WalletError> {
        match store.setting(CHAIN_SETTING)? {
            None => Ok(None),
            Some(json) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|e| WalletError::BadSetting(format!("{CHAIN_SETTING}: {e}"))),
        }
    }

    /// Stores the setting, replacing the previous one.
    pub fn save(&self, store: &dyn ParticipantStore) -> Result<(), WalletError> {
        let json = serde_json::to_string(self)
            .map_err(|e| WalletError::BadSetting(format!("{CHAIN_SETTING}: {e}")))?;
        Ok(store.set_setting(CHAIN_SETTING, &json)?)
    }
}

/// Why a chain source could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ChainSourceError {
    /// The node (or the dev coordinator's chain endpoint) failed or refused (a rejected
    /// broadcast says why).
    #[error("bitcoind at {url}: {reason}")]
    Node {
        /// The node's RPC endpoint.
        url: String,
        /// What it said.
        reason: String,
    },
    /// The blocking task running a node call ended without an answer.
    #[error("bitcoind call did not finish: {0}")]
    Task(String),
    /// The operation exists only on a dev chain (or a regtest node).
    #[error("{0} is only available on a dev chain")]
    NotDev(&'static str),
}

/// Read and write access to the chain, as the participant needs it.
pub trait ChainSource: Send + Sync {
    /// The tip height.
    fn tip_height(&self) -> impl Future<Output = Result<u32, ChainSourceError>> + Send;
    /// One unspent output (confirmed or in the mempool), `None` if spent or unknown.
    fn utxo(
        &self,
        outpoint: OutPoint,
    ) -> impl Future<Output = Result<Option<UtxoInfo>, ChainSourceError>> + Send;
    /// Every unspent output paying `script` (its deposits, its fee outputs).
    fn script_utxos(
        &self,
        script: &ScriptBuf,
    ) -> impl Future<Output = Result<Vec<UtxoInfo>, ChainSourceError>> + Send;
    /// The fee rate to pay now.
    fn fee_rate(&self) -> impl Future<Output = Result<FeeRate, ChainSourceError>> + Send;
    /// Confirmations of a transaction (`None` unknown, `Some(0)` in the mempool).
    fn confirmations(
        &self,
        txid: Txid,
    ) -> impl Future<Output = Result<Option<u32>, ChainSourceError>> + Send;
    /// Broadcasts one transaction.
    fn broadcast(
        &self,
        tx: &Transaction,
    ) -> impl Future<Output = Result<Txid, ChainSourceError>> + Send;
    /// Broadcasts a parent with its CPFP child as a package.
    fn broadcast_package(
        &self,
        parent: &Transaction,
        child: &Transaction,
    ) -> impl Future<Output = Result<(Txid, Txid), ChainSourceError>> + Send;
}

/// A borrowed chain source is one: a [`crate::client::Client`] can use a chain it does
/// not own.
impl<T: ChainSource + ?Sized> ChainSource for &T {
    fn tip_height(&self) -> impl Future<Output = Result<u32, ChainSourceError>> + Send {
        (**self).tip_height()
    }
    fn utxo(
        &self,
        outpoint: OutPoint,
    ) -> impl Future<Output = Result<Option<UtxoInfo>, ChainSourceError>> + Send {
        (**self).utxo(outpoint)
    }
    fn script_utxos(
        &self,
        script: &ScriptBuf,
    ) -> impl Future<Output = Result<Vec<UtxoInfo>, ChainSourceError>> + Send {
        (**self).script_utxos(script)
    }
    fn fee_rate(&self) -> impl Future<Output = Result<FeeRate, ChainSourceError>> + Send {
        (**self).fee_rate()
    }
    fn confirmations(
        &self,
        txid: Txid,
    ) -> impl Future<Output = Result<Option<u32>, ChainSourceError>> + Send {
        (**self).confirmations(txid)
    }
    fn broadcast(
        &self,
        tx: &Transaction,
    ) -> impl Future<Output = Result<Txid, ChainSourceError>> + Send {
        (**self).broadcast(tx)
    }
    fn broadcast_package(
        &self,
        parent: &Transaction,
        child: &Transaction,
    ) -> impl Future<Output = Result<(Txid, Txid), ChainSourceError>> + Send {
        (**self).broadcast_package(parent, child)
    }
}

impl<T: DevChain + ?Sized> DevChain for &T {
    fn mine(&self, n: u32) -> impl Future<Output = Result<u32, ChainSourceError>> + Send {
        (**self).mine(n)
    }
    fn faucet(
        &self,
        script: &ScriptBuf,
        amount: Amount,
    ) -> impl Future<Output = Result<OutPoint, ChainSourceError>> + Send {
        (**self).faucet(script, amount)
    }
}

/// What only a dev chain offers: blocks on demand and coins from nowhere.
pub trait DevChain: ChainSource {
    /// Mines `n` blocks; the new tip height.
    fn mine(&self, n: u32) -> impl Future<Output = Result<u32, ChainSourceError>> + Send;
    /// A confirmed output of `amount` paying `script`.
    fn faucet(
        &self,
        script: &ScriptBuf,
        amount: Amount,
    ) -> impl Future<Output = Result<OutPoint, ChainSourceError>> + Send;
}

/// A [`DevChain`] that cannot exist: what production code passes where a dev chain may
/// be given, so it can never mine or take coins from a faucet.
#[derive(Debug)]
pub enum NoDevChain {}

impl ChainSource for NoDevChain {
    async fn tip_height(&self) -> Result<u32, ChainSourceError> {
        match *self {}
    }
    async fn utxo(&self, _: OutPoint) -> Result<Option<UtxoInfo>, ChainSourceError> {
        match *self {}
    }
    async fn script_utxos(&self, _: &ScriptBuf) -> Result<Vec<UtxoInfo>, ChainSourceError> {
        match *self {}
    }
    async fn fee_rate(&self) -> Result<FeeRate, ChainSourceError> {
        match *self {}
    }
    async fn confirmations(&self, _: Txid) -> Result<Option<u32>, ChainSourceError> {
        match *self {}
    }
    async fn broadcast(&self, _: &Transaction) -> Result<Txid, ChainSourceError> {
        match *self {}
    }
    async fn broadcast_package(
        &self,
        _: &Transaction,
        _: &Transaction,
    ) -> Result<(Txid, Txid), ChainSourceError> {
        match *self {}
    }
}

impl DevChain for NoDevChain {
    async fn mine(&self, _: u32) -> Result<u32, ChainSourceError> {
        match *self {}
    }
    async fn faucet(&self, _: &ScriptBuf, _: Amount) -> Result<OutPoint, ChainSourceError> {
        match *self {}
    }
}
