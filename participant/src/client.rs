//! The participant as a library, for wallets and swap clients: a [`Client`] holds a
//! wallet's store, its own chain source and its pinned coordinator, and offers what the
//! `cohort` commands do ([`Client::join`], [`Client::deposits`], [`Client::status`],
//! [`Client::exit`], [`Client::reclaim`], [`Client::withdraw`]) with a stream of [`Progress`] events
//! ([`Client::subscribe`]) and cancellation before deposit signatures
//! ([`Client::cancel`], or dropping the join's future).
//!
//! The `cohort` command line ([`crate::cli`]) is built on it: it adds the data directory,
//! the wallet's file lock and the choice of chain source from flags.
//!
//! # Example
//!
//! `participant/examples/join_dev.rs` joins a round of a `--dev` coordinator this way:
//!
//! ```no_run
//! # async fn demo(uri: &str) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use cohort_participant::client::{Client, JoinRequest};
//! use cohort_participant::store::SqliteStore;
//!
//! let store = Arc::new(SqliteStore::open("wallet.sqlite")?);
//! // A dev coordinator's chain; a wallet on a real chain passes its node (`NodeChain`).
//! let chain = cohort_participant::client::dev_chain(uri).await?;
//! let client = Client::create(store, chain, uri).await?;
//! let mut progress = client.subscribe();
//! tokio::spawn(async move {
//!     while let Ok(step) = progress.recv().await {
//!         println!("{step}");
//!     }
//! });
//! let report = client.join(JoinRequest::default()).await?;
//! println!("{report}");
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitcoin::{Amount, FeeRate, OutPoint, ScriptBuf, TxOut, Txid};
use cohort_common::messages::{ServerInfo, SideRequest, SideResponse};
use cohort_common::params::LeafOutput;
use cohort_transport::{Client as Link, CoordinatorUri, Limits};
use tokio::sync::broadcast;

use crate::chain::{
    ChainSource, ChainSourceError, DevChain, NodeChain, NodeSettings, RegtestNodeChain,
};
use crate::driver::{
    now_ms, spawn_reader, CancelError, Driver, DriverError, DriverSetup, Outcome, Progress,
    SignGate,
};
use crate::exit::{
    exit_leaf, exit_leaf_dev, reclaim_deposits, reclaim_deposits_dev, status_when_gone, ExitFees,
    ExitReport, ExitToolError, ReclaimItem,
};
use crate::report::{
    DepositRow, DepositsReport, ExitAllItem, ExitAllReport, ExitPathRow, JoinReport, SendReport,
    StatusReport, WithdrawReport,
};
use crate::session::{OwnedDeposit, ProposalLimits, SessionConfig};
use crate::store::{
    DepositRecord, DepositStatus, HistoryEvent, ParticipantStore, StoreError, WithdrawalRecord,
};
use crate::wallet::{CoordinatorInfo, Wallet, WalletError};
use crate::withdraw::{self, WithdrawError, DEFAULT_MAX_FEE_RATE_SAT_VB};

/// Default [`JoinRequest::max_fee`], in sat.
pub const DEFAULT_MAX_FEE_SAT: u64 = 50_000;

/// How many history events [`Client::status`] shows.
pub const STATUS_HISTORY: usize = 10;

/// How long a connection waits for the coordinator's handshake before saying it is down:
/// a handshake on any working path takes well under a second.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`Client::join`] waits for its own chain source to show the confirmation the
/// coordinator announced (a node may be a block behind).
pub const OWN_CONFIRMATION_WAIT: Duration = Duration::from_secs(10);

/// How long a join's end waits for the coordinator to read the session's last messages
/// and close the connection before closing it from this side.
pub const SESSION_LINGER: Duration = Duration::from_secs(2);

/// How many progress events a slow [`Client::subscribe`] receiver may fall behind before
/// it skips the oldest ([`broadcast::error::RecvError::Lagged`]).
pub const PROGRESS_BUFFER: usize = 256;

/// Errors of the [`Client`].
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The coordinator URI does not parse.
    #[error("bad coordinator URI {uri:?}: {why} (expected cohort://<64 hex>@host:port)")]
    BadUri {
        /// What was given.
        uri: String,
        /// Why it was refused.
        why: String,
    },
    /// The coordinator at the given URI is not the wallet's.
    #[error("the coordinator at {uri} has key {got}, but this wallet was made for {expected}")]
    WrongCoordinator {
        /// The URI.
        uri: String,
        /// The wallet's coordinator key.
        expected: String,
        /// The key it announced.
        got: String,
    },
    /// The coordinator is on another network than the wallet.
    #[error("the coordinator at {uri} runs on {got}, but this wallet is for {expected}")]
    WrongNetwork {
        /// The URI.
        uri: String,
        /// The wallet's network.
        expected: bitcoin::Network,
        /// The coordinator's.
        got: bitcoin::Network,
    },
    /// The dev coordinator now runs another dev chain than the one this wallet was made on
    /// (it was restarted: its embedded chain lives in memory only).
    #[error(
        "the dev coordinator at {uri} runs a new dev chain: it was restarted, and the chain \
         this wallet's deposits and batches were on is gone (make a new wallet with \
         `cohort init` in another data directory)"
    )]
    DevChainReset {
        /// The URI.
        uri: String,
    },
    /// A deposit the caller asked to join with cannot be offered.
    #[error("deposit {outpoint} cannot join a round: {why}")]
    DepositNotOffered {
        /// The deposit.
        outpoint: OutPoint,
        /// Why (unknown, unconfirmed, or not unspent).
        why: &'static str,
    },
    /// The fixed leaves asked for pay as much as the deposits or more.
    #[error("the leaves ask for {leaves} sat, but the deposits hold only {deposits} sat")]
    LeavesExceedDeposits {
        /// The leaves' total.
        leaves: u64,
        /// The deposits' total.
        deposits: u64,
    },
    /// A join is already running on this client (one round at a time per wallet).
    #[error("a join is already running on this client")]
    JoinRunning,
    /// The coordinator serves no dev chain (it runs without `--dev`).
    #[error("the coordinator at {uri} serves no dev chain (start it with --dev)")]
    NoDevChain {
        /// Its URI.
        uri: String,
    },
    /// The dev coordinator's chain endpoint cannot be used.
    #[error("the dev chain: {0}")]
    DevChain(#[source] crate::chain::ProbeError),
    /// Connecting or talking to the coordinator failed.
    #[error("coordinator: {0}")]
    Transport(#[from] cohort_transport::TransportError),
    /// The wallet's chain source failed.
    #[error("chain: {0}")]
    Chain(#[from] ChainSourceError),
    /// The wallet failed.
    #[error(transparent)]
    Wallet(#[from] WalletError),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The round driver failed.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// The exit tools failed.
    #[error(transparent)]
    Exit(#[from] ExitToolError),
    /// The wallet's own coins cannot pay what `send` asks.
    #[error(transparent)]
    Send(#[from] crate::send::SendError),
    /// A cooperative withdrawal failed before anything was published.
    #[error(transparent)]
    Withdraw(#[from] WithdrawError),
    /// A cooperative withdrawal is signed and stored, but the chain did not take it.
    #[error(
        "withdrawal {txid} is signed and stored, but the chain source refused it: {reason}; \
         `cohort withdraw --bump {txid}` replaces it at a higher fee, and the deposits can \
         still be reclaimed after their timeout"
    )]
    NotPublished {
        /// The withdrawal.
        txid: Txid,
        /// What the chain source said.
        reason: String,
    },
}

/// Parses a `cohort://<pin>@host:port` URI.
pub fn parse_uri(uri: &str) -> Result<CoordinatorUri, ClientError> {
    CoordinatorUri::from_str(uri)
        .map_err(|e| ClientError::BadUri { uri: uri.to_owned(), why: e.to_string() })
}

/// Connects to the coordinator at `uri`, its TLS identity pinned by the URI, waiting at
/// most [`CONNECT_TIMEOUT`] for the handshake.
pub async fn connect(uri: &str) -> Result<Link, ClientError> {
    let limits = Limits { connect_timeout: CONNECT_TIMEOUT, ..Limits::default() };
    Ok(Link::connect(&parse_uri(uri)?, &limits).await?)
}

/// Asks a coordinator what it is (its key, network and timeouts).
pub async fn server_info(link: &Link) -> Result<ServerInfo, ClientError> {
    match link.request(&SideRequest::Info).await? {
        SideResponse::Info(info) => Ok(info),
        SideResponse::Error(reason) => Err(DriverError::Remote(reason.as_str().to_owned()).into()),
    }
}

/// Reaches the chain of the `--dev` coordinator at `uri`: the JSON-RPC endpoint it
/// announces, on the URI's host, probed like a node. A wallet on a real chain passes its
/// own node instead ([`crate::chain::NodeChain`]).
pub async fn dev_chain(uri: &str) -> Result<RegtestNodeChain, ClientError> {
    let link = connect(uri).await?;
    let info = server_info(&link).await;
    link.close("done");
    dev_chain_of(uri, &info?).await
}

/// The dev chain endpoint that `info`, the answer of the coordinator at `uri`, announces,
/// probed like a node.
pub async fn dev_chain_of(uri: &str, info: &ServerInfo) -> Result<RegtestNodeChain, ClientError> {
    let port = info.dev_rpc_port.ok_or_else(|| ClientError::NoDevChain { uri: uri.to_owned() })?;
    let settings = NodeSettings::dev_ledger(&parse_uri(uri)?.host, port);
    let node = NodeChain::probe(&settings, info.network).await.map_err(ClientError::DevChain)?;
    Ok(node.dev_ledger())
}

/// Connects to the wallet's coordinator at `uri` and checks that it is that coordinator
/// (its key) on the wallet's network, on the same dev chain: a wallet never talks for its
/// deposits to another.
pub async fn connect_checked(ours: &CoordinatorInfo, uri: &str) -> Result<Link, ClientError> {
    let link = connect(uri).await?;
    let checked = async {
        let info = server_info(&link).await?;
        if info.coordinator_key != ours.key {
            return Err(ClientError::WrongCoordinator {
                uri: uri.to_owned(),
                expected: ours.key.to_string(),
                got: info.coordinator_key.to_string(),
            });
        }
        if info.network != ours.network {
            return Err(ClientError::WrongNetwork {
                uri: uri.to_owned(),
                expected: ours.network,
                got: info.network,
            });
        }
        if ours.dev_chain.is_some() && info.dev_chain != ours.dev_chain {
            return Err(ClientError::DevChainReset { uri: uri.to_owned() });
        }
        Ok(())
    }
    .await;
    match checked {
        Ok(()) => Ok(link),
        Err(e) => {
            link.close("wrong coordinator");
            Err(e)
        }
    }
}

/// Which deposits a join offers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DepositChoice {
    /// Every confirmed deposit that is unspent, or signed only into batches none of which
    /// reached the chain.
    #[default]
    AllConfirmed,
    /// Exactly these (each must be offerable, or the join is refused before connecting).
    Only(BTreeSet<OutPoint>),
}

/// What a join asks for: which deposits, which fixed leaves, and the limits of what this
/// wallet signs. The remainder (deposits minus leaves minus fees) is paid to a fresh
/// leaf key of the wallet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    /// The deposits to offer.
    pub deposits: DepositChoice,
    /// Fixed leaves, in order (a payment to someone else, or to another wallet of ours).
    pub leaves: Vec<LeafOutput>,
    /// The largest total fee accepted (own deposits minus own leaves and remainder).
    pub max_fee: Amount,
    /// Limits on the batch signed: leaves, depth, exit cost.
    pub limits: ProposalLimits,
}

impl Default for JoinRequest {
    /// Every confirmed deposit, no fixed leaf, [`DEFAULT_MAX_FEE_SAT`], default limits.
    fn default() -> Self {
        JoinRequest {
            deposits: DepositChoice::AllConfirmed,
            leaves: Vec::new(),
            max_fee: Amount::from_sat(DEFAULT_MAX_FEE_SAT),
            limits: ProposalLimits::default(),
        }
    }
}

/// What [`Client::withdraw`] spends, where, and at what fee rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WithdrawRequest {
    /// The deposits to spend: every confirmed one not in a round or a withdrawal, or the
    /// ones named.
    pub deposits: DepositChoice,
    /// Where the withdrawal pays (all of it, less the mining fee).
    pub destination: ScriptBuf,
    /// The fee rate (`None`: the chain source's estimate).
    pub fee_rate: Option<FeeRate>,
    /// The highest fee rate accepted, whatever the estimate says.
    pub max_fee_rate: FeeRate,
}

impl WithdrawRequest {
    /// Every confirmed deposit to `destination` at the estimated rate, capped at
    /// [`DEFAULT_MAX_FEE_RATE_SAT_VB`].
    pub fn to(destination: ScriptBuf) -> Self {
        WithdrawRequest {
            deposits: DepositChoice::AllConfirmed,
            destination,
            fee_rate: None,
            max_fee_rate: FeeRate::from_sat_per_kwu(DEFAULT_MAX_FEE_RATE_SAT_VB * 250),
        }
    }
}

/// A wallet as a library: its store, its chain source `C`, its coordinator.
///
/// Share it in an `Arc` to [`Client::cancel`] a join from another task. The client takes
/// no file lock: one process should drive one wallet (the `cohort` commands lock the data
/// directory).
pub struct Client<C> {
    store: Arc<dyn ParticipantStore>,
    wallet: Wallet,
    chain: C,
    uri: String,
    progress: broadcast::Sender<Progress>,
    fixed_gate: Option<SignGate>,
    /// The running join's gate (`None`: no join running).
    running: Mutex<Option<SignGate>>,
}

impl<C> std::fmt::Debug for Client<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("wallet", &self.wallet)
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

impl<C> Client<C> {
    /// Opens the wallet in `store` (made earlier by [`Client::create`] or `cohort init`),
    /// with `chain` as its chain source. The coordinator is reached only when a command
    /// needs it, at the wallet's remembered URI.
    pub fn open(store: Arc<dyn ParticipantStore>, chain: C) -> Result<Self, ClientError> {
        let wallet = Wallet::load(store.as_ref())?;
        Ok(Client::new(store, wallet, chain))
    }

    /// A client of `wallet`, already loaded from `store`.
    pub fn new(store: Arc<dyn ParticipantStore>, wallet: Wallet, chain: C) -> Self {
        Client {
            store,
            uri: wallet.coordinator().uri.clone(),
            wallet,
            chain,
            progress: broadcast::channel(PROGRESS_BUFFER).0,
            fixed_gate: None,
            running: Mutex::new(None),
        }
    }

    /// Joins pass `gate` (shared with whoever may cancel them, a signal handler say)
    /// instead of a fresh gate each: [`SignGate::cancel`] on it is [`Client::cancel`].
    /// Once a join has sent deposit signatures, later joins cannot be cancelled through
    /// it; give each join its own client.
    pub fn with_gate(mut self, gate: SignGate) -> Self {
        self.fixed_gate = Some(gate);
        self
    }

    /// Reaches the coordinator at `uri` instead of the remembered one (its key, network
    /// and dev chain are still checked against the wallet's).
    pub fn with_coordinator(mut self, uri: &str) -> Self {
        self.uri = uri.to_owned();
        self
    }

    /// The wallet.
    pub fn wallet(&self) -> &Wallet {
        &self.wallet
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn ParticipantStore> {
        &self.store
    }

    /// The chain source.
    pub fn chain(&self) -> &C {
        &self.chain
    }

    /// A stream of the [`Progress`] steps of every join from now on, with the step names
    /// of the `cohort join` output and the stored history. A receiver that falls more
    /// than [`PROGRESS_BUFFER`] steps behind skips the oldest.
    pub fn subscribe(&self) -> broadcast::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// Cancels the running join unless it has sent deposit signatures: it then ends
    /// [`Outcome::Cancelled`] with nothing more sent, and its deposits are offered to no
    /// round. After deposit signatures the round runs to its end and this answers
    /// [`CancelError::DepositsSigned`].
    pub fn cancel(&self) -> Result<(), CancelError> {
        match lock(&self.running).as_ref() {
            Some(gate) => gate.cancel(),
            None => Err(CancelError::NotRunning),
        }
    }

    /// Deposits, exit paths and recent history, from the store alone.
    pub fn status(&self) -> Result<StatusReport, ClientError> {
        let deposits = self.store.deposits()?.iter().map(|d| DepositRow::new(d, None)).collect();
        let mut exit_paths = Vec::new();
        for (i, p) in self.store.exit_paths()?.into_iter().enumerate() {
            let exited = self.store.is_exited(&p.funding_txid, p.leaf)?;
            exit_paths.push(ExitPathRow::new(i + 1, &p, exited));
        }
        Ok(StatusReport {
            coordinator: self.wallet.coordinator().uri.clone(),
            address: self.wallet.address()?.to_string(),
            deposits,
            exit_paths,
            history: self.store.history(STATUS_HISTORY)?,
        })
    }
}

impl<C: ChainSource> Client<C> {
    /// Makes a new wallet in `store` for the coordinator at `uri` (refused if `store`
    /// already holds one): connects, reads what the coordinator is, and remembers it.
    pub async fn create(
        store: Arc<dyn ParticipantStore>,
        chain: C,
        uri: &str,
    ) -> Result<Self, ClientError> {
        let info = fetch_info(uri).await?;
        if store.seed()?.is_some() {
            return Err(WalletError::Exists.into());
        }
        let wallet = Wallet::create(store.as_ref(), info)?;
        Ok(Client::new(store, wallet, chain))
    }

    /// The wallet's deposits as its chain source and its store see them: new outputs to
    /// the deposit address are added, stored ones that left the UTXO set are settled
    /// (batched, spent), and registrations left by an interrupted join are released.
    pub async fn deposits(&self) -> Result<DepositsReport, ClientError> {
        let (records, tip, heights) = self.refresh_deposits().await?;
        let rows = records
            .into_iter()
            .map(|d| {
                let height = heights.iter().find(|(o, _)| *o == d.outpoint).and_then(|(_, h)| *h);
                DepositRow::new(&d, height.map(|h| confirmations(tip, Some(h))))
            })
            .collect();
        Ok(DepositsReport { tip, deposits: rows })
    }

    /// Publishes the stored exit path of `leaf` in batch `funding_txid` through the own
    /// chain source, and reclaims the leaf once its timeout has passed. It goes as far as
    /// the chain allows and says at which height to call it again; the coordinator is not
    /// needed.
    ///
    /// `fees` prices the CPFP children; a child that has not confirmed after a block is
    /// replaced at a higher rate on the next call.
    pub async fn exit(
        &self,
        funding_txid: Txid,
        leaf: u32,
        fees: ExitFees,
    ) -> Result<ExitReport, ClientError> {
        let store = self.store.as_ref();
        Ok(exit_leaf(store, &self.wallet, &self.chain, funding_txid, leaf, fees).await?)
    }

    /// [`Client::exit`] for every stored leaf not exited yet, each as far as the chain
    /// allows; a leaf that cannot start (its batch attempt never reached the chain) is
    /// reported, not fatal.
    pub async fn exit_all(&self, fees: ExitFees) -> Result<ExitAllReport, ClientError> {
        let mut leaves = Vec::new();
        for path in self.store.pending_exit_paths()? {
            let result = self.exit(path.funding_txid, path.leaf, fees).await;
            leaves.push(exit_item(path.funding_txid, path.leaf, result)?);
        }
        Ok(ExitAllReport { leaves })
    }

    /// Spends every unspent deposit whose timeout has passed back through its timeout
    /// path (the coordinator is not needed).
    pub async fn reclaim(&self) -> Result<Vec<ReclaimItem>, ClientError> {
        Ok(reclaim_deposits(self.store.as_ref(), &self.wallet, &self.chain).await?)
    }

    /// Spends deposits to an address at once with the coordinator's co-signature (a
    /// MuSig2 key-path spend, no timeout to wait for), through the wallet's own chain
    /// source: built and checked here, co-signed by the coordinator after its checks,
    /// stored, then published. Deposits in a round, a batch that may still confirm, or
    /// another withdrawal are not offered; [`Client::bump_withdrawal`] replaces a
    /// withdrawal that does not confirm.
    pub async fn withdraw(&self, request: WithdrawRequest) -> Result<WithdrawReport, ClientError> {
        let (records, _, heights) = self.refresh_deposits().await?;
        let chosen = choose_withdrawable(&request.deposits, records, &heights)?;
        let deposits: Vec<(OutPoint, TxOut)> =
            chosen.iter().map(|d| (d.outpoint, d.txout.clone())).collect();
        let rate = match request.fee_rate {
            Some(rate) => rate,
            None => self.chain.fee_rate().await?,
        };
        let plan = withdraw::plan(&deposits, &request.destination, rate)?;
        self.cosign_and_publish(plan, request.max_fee_rate, None).await
    }

    /// Pays `amount` of the wallet's own confirmed coins (what exits and reclaims paid
    /// it, and its fee wallet: all at the fee key's address) to `destination` at
    /// `fee_rate` (`None`: the chain's estimate), through the wallet's own chain source.
    pub async fn send(
        &self,
        destination: ScriptBuf,
        amount: crate::send::SendAmount,
        fee_rate: Option<FeeRate>,
        max_fee_rate: FeeRate,
    ) -> Result<SendReport, ClientError> {
        let coins: Vec<(OutPoint, TxOut)> = self
            .chain
            .script_utxos(&self.wallet.fee_script())
            .await?
            .into_iter()
            .filter(|u| u.height.is_some())
            .map(|u| (u.outpoint, u.txout))
            .collect();
        let rate = match fee_rate {
            Some(rate) => rate,
            None => self.chain.fee_rate().await?,
        };
        let (cap, asked) = (max_fee_rate.to_sat_per_vb_ceil(), rate.to_sat_per_vb_ceil());
        if asked > cap {
            return Err(WithdrawError::FeeRateTooHigh { rate: asked, cap }.into());
        }
        let sent = crate::send::send(&self.wallet.fee_key(), &coins, &destination, amount, rate)?;
        let txid = self.chain.broadcast(&sent.tx).await?;
        let to = bitcoin::Address::from_script(&destination, self.wallet.coordinator().network)
            .map_or_else(|_| destination.to_hex_string(), |a| a.to_string());
        self.history("sent", &format!("{txid}: {} sat to {to}", sent.amount.to_sat()))?;
        Ok(SendReport {
            txid,
            destination: to,
            amount_sat: sent.amount.to_sat(),
            fee_sat: sent.fee.to_sat(),
            change_sat: sent.change.to_sat(),
            inputs: sent.tx.input.len(),
        })
    }

    /// Replaces the withdrawal `txid` (not confirmed yet) by one with the same deposits
    /// and destination at `fee_rate` (`None`: the chain's estimate), raised if need be to
    /// the lowest fee a node relays as a replacement.
    pub async fn bump_withdrawal(
        &self,
        txid: Txid,
        fee_rate: Option<FeeRate>,
        max_fee_rate: FeeRate,
    ) -> Result<WithdrawReport, ClientError> {
        let (records, _, _) = self.refresh_deposits().await?;
        let stored = self
            .store
            .withdrawals()?
            .into_iter()
            .find(|w| w.tx.compute_txid() == txid)
            .ok_or(WithdrawError::UnknownWithdrawal(txid))?;
        let mut prevouts = Vec::with_capacity(stored.tx.input.len());
        for input in &stored.tx.input {
            let not_pending = |why| WithdrawError::NotPending { txid, why };
            let d = records
                .iter()
                .find(|d| d.outpoint == input.previous_output)
                .ok_or(not_pending("a deposit it spends is not in the wallet"))?;
            match &d.status {
                DepositStatus::Withdrawing { txids } if txids.last() == Some(&txid) => {}
                DepositStatus::Withdrawing { .. } => {
                    return Err(not_pending("a later withdrawal replaced it; bump that one").into())
                }
                DepositStatus::Withdrawn { .. } => {
                    return Err(not_pending("a withdrawal of its deposits confirmed").into())
                }
                _ => return Err(not_pending("its deposits are no longer withdrawing").into()),
            }
            prevouts.push(d.txout.clone());
        }
        let rate = match fee_rate {
            Some(rate) => rate,
            None => self.chain.fee_rate().await?,
        };
        let plan = withdraw::bump_plan(&stored.tx, &prevouts, rate)?;
        self.cosign_and_publish(plan, max_fee_rate, Some(txid)).await
    }

    /// Gets `plan` co-signed, stores it and marks its deposits withdrawing, then
    /// publishes it.
    async fn cosign_and_publish(
        &self,
        plan: withdraw::Plan,
        max_fee_rate: FeeRate,
        replaces: Option<Txid>,
    ) -> Result<WithdrawReport, ClientError> {
        let rate = withdraw::rate_sat_vb(&plan);
        let cap = max_fee_rate.to_sat_per_vb_ceil();
        if rate > cap {
            return Err(WithdrawError::FeeRateTooHigh { rate, cap }.into());
        }
        let link = connect_checked(self.wallet.coordinator(), &self.uri).await?;
        let signed = withdraw::cosign(&link, &self.wallet, &plan).await;
        link.close("done");
        let tx = signed?;
        let txid = tx.compute_txid();
        // Stored before it is published: a crash after leaves it to publish again.
        self.store.put_withdrawal(&WithdrawalRecord { tx: tx.clone(), at_ms: now_ms() })?;
        for input in &tx.input {
            let outpoint = input.previous_output;
            let mut txids = match self.store.deposit(&outpoint)?.map(|d| d.status) {
                Some(DepositStatus::Withdrawing { txids }) => txids,
                _ => Vec::new(),
            };
            txids.push(txid);
            self.store.set_deposit_status(&outpoint, &DepositStatus::Withdrawing { txids })?;
        }
        let destination = bitcoin::Address::from_script(
            &plan.tx.output[0].script_pubkey,
            self.wallet.coordinator().network,
        )
        .map_or_else(|_| plan.tx.output[0].script_pubkey.to_hex_string(), |a| a.to_string());
        let detail = format!(
            "{txid}: {} sat to {destination}, fee {} sat{}",
            plan.amount.to_sat(),
            plan.fee.to_sat(),
            replaces.map(|r| format!(", replaces {r}")).unwrap_or_default()
        );
        self.history("withdrawal_signed", &detail)?;
        if let Err(e) = self.chain.broadcast(&tx).await {
            let reason = e.to_string();
            self.history("withdrawal_not_published", &format!("{txid}: {reason}"))?;
            return Err(ClientError::NotPublished { txid, reason });
        }
        self.history("withdrawal_broadcast", &txid.to_string())?;
        Ok(WithdrawReport {
            txid,
            replaces,
            deposits: tx.input.iter().map(|i| i.previous_output).collect(),
            destination,
            amount_sat: plan.amount.to_sat(),
            fee_sat: plan.fee.to_sat(),
            vsize: plan.vsize,
            fee_rate_sat_vb: rate,
        })
    }

    fn history(&self, kind: &str, detail: &str) -> Result<(), StoreError> {
        self.store.append_history(&HistoryEvent {
            at_ms: now_ms(),
            round: None,
            kind: kind.to_owned(),
            detail: detail.to_owned(),
        })
    }

    /// Joins the next round with `request` and follows it to its end: the deposits are
    /// found, and the batch's confirmation checked ([`JoinReport::own_confirmations`]),
    /// on the wallet's own chain source. Every step goes to [`Client::subscribe`]rs.
    ///
    /// Dropping the future stops the round where it is: before deposit signatures the
    /// deposits stay the wallet's (they are released at once); after them, the stored
    /// exit paths keep them safe. [`Client::cancel`] does the first cleanly.
    pub async fn join(&self, request: JoinRequest) -> Result<JoinReport, ClientError> {
        self.join_observed(request, |_| ControlFlow::Continue(())).await
    }

    /// [`Client::join`] with an `observer` that sees each step before the subscribers;
    /// returning `Break` stops the driver right there, as killing the process would
    /// (what crash tests use).
    pub async fn join_observed(
        &self,
        request: JoinRequest,
        mut observer: impl FnMut(&Progress) -> ControlFlow<()> + Send,
    ) -> Result<JoinReport, ClientError> {
        let gate = {
            let mut running = lock(&self.running);
            if running.is_some() {
                return Err(ClientError::JoinRunning);
            }
            let gate = self.fixed_gate.clone().unwrap_or_default();
            *running = Some(gate.clone());
            gate
        };
        let mut guard =
            JoinGuard { running: &self.running, store: &self.store, offered: Vec::new() };
        let (records, _, heights) = self.refresh_deposits().await?;
        let offered = choose(&request.deposits, records, &heights)?;
        guard.offered = offered.iter().map(|d| d.outpoint).collect();
        let deposited: u64 = offered.iter().map(|d| d.txout.value.to_sat()).sum();
        let leaves: u64 = request.leaves.iter().map(|l| l.amount.to_sat()).sum();
        if !offered.is_empty() && leaves >= deposited {
            return Err(ClientError::LeavesExceedDeposits { leaves, deposits: deposited });
        }
        let (setup, leaf_index) = self.setup(&offered, &request)?;
        // A connection per join: the coordinator ends it with the session.
        let link = connect_checked(self.wallet.coordinator(), &self.uri).await?;
        let result = async {
            let driver = Driver::with_setup(self.store.clone(), setup).with_gate(gate);
            let (mut send, recv) = link.open_session().await?;
            let (mut inbox, reader) = spawn_reader(recv);
            let mut steps = Vec::new();
            let outcome = driver
                .run(&mut send, &mut inbox, |p| {
                    steps.push(p.clone());
                    let flow = observer(p);
                    // No subscriber is not an error.
                    let _ = self.progress.send(p.clone());
                    flow
                })
                .await;
            reader.abort();
            // End the session cleanly: the coordinator reads all that was sent (a
            // `Cancel` above all, so leaving costs no ban) before it sees the end, and then
            // closes the connection itself.
            let linger = async {
                if send.finish().await.is_ok() {
                    link.closed().await;
                }
            };
            let _ = tokio::time::timeout(SESSION_LINGER, linger).await;
            Ok::<_, ClientError>((outcome?, steps))
        }
        .await;
        link.close("done");
        if matches!(result, Err(ClientError::Driver(DriverError::Stopped(_)))) {
            // Stopped as a kill would: the store stays as the kill would leave it.
            guard.offered.clear();
        }
        let (outcome, steps) = result?;
        let own_confirmations = match &outcome {
            // The batch is done and stored whatever the chain source says now: one that
            // cannot answer (a dev coordinator that has just shut down, a node gone) leaves
            // the confirmation unseen, and the report says so, rather than failing.
            Outcome::Confirmed { funding_txid: Some(txid), .. } => {
                match own_confirmations(&self.chain, *txid).await {
                    Ok(seen) => seen,
                    Err(e) => {
                        tracing::warn!(%txid, error = %e, "own chain source cannot confirm the batch");
                        None
                    }
                }
            }
            _ => None,
        };
        Ok(JoinReport {
            deposits: offered.iter().map(|d| d.outpoint).collect(),
            deposited_sat: deposited,
            leaf_key_index: leaf_index,
            steps,
            outcome,
            own_confirmations,
        })
    }

    /// The driver's setup: the wallet's deposit key and script on every offered deposit,
    /// the request's leaves, and the remainder paid to the next leaf key's virtual
    /// deposit.
    fn setup(
        &self,
        offered: &[DepositRecord],
        request: &JoinRequest,
    ) -> Result<(DriverSetup, u32), ClientError> {
        if offered.is_empty() {
            return Err(DriverError::NoDeposits.into());
        }
        let script = self.wallet.deposit_script()?;
        let key = self.wallet.deposit_key();
        let deposits = offered
            .iter()
            .map(|d| OwnedDeposit {
                outpoint: d.outpoint,
                txout: d.txout.clone(),
                script: script.clone(),
                key: key.clone(),
            })
            .collect();
        let leaf_index = self.store.next_key_index()?;
        let remainder_script = self.wallet.leaf_script(leaf_index)?.script_pubkey();
        let session = SessionConfig {
            deposits,
            leaves: request.leaves.clone(),
            remainder_script,
            max_fee: request.max_fee,
            limits: request.limits,
        };
        let setup = DriverSetup::new(session, leaf_index, self.wallet.coordinator().exit_csv);
        Ok((setup, leaf_index))
    }

    /// Brings the stored deposits up to date with the chain (see [`Client::deposits`]):
    /// the records, the tip, and each unspent deposit's confirmation height.
    async fn refresh_deposits(
        &self,
    ) -> Result<(Vec<DepositRecord>, u32, Vec<(OutPoint, Option<u32>)>), ClientError> {
        let store = self.store.as_ref();
        let script = self.wallet.deposit_script()?.script_pubkey();
        let utxos = self.chain.script_utxos(&script).await?;
        let tip = self.chain.tip_height().await?;
        for u in &utxos {
            match store.deposit(&u.outpoint)? {
                None => store.put_deposit(&DepositRecord {
                    outpoint: u.outpoint,
                    txout: u.txout.clone(),
                    key_index: 0,
                    deposit_csv: self.wallet.coordinator().deposit_csv,
                    status: DepositStatus::Unspent,
                })?,
                Some(d) if matches!(d.status, DepositStatus::Registered { .. }) => {
                    store.set_deposit_status(&u.outpoint, &DepositStatus::Unspent)?;
                }
                Some(_) => {}
            }
        }
        for d in store.deposits()? {
            let on_chain = utxos.iter().any(|u| u.outpoint == d.outpoint);
            let settled = matches!(
                d.status,
                DepositStatus::Batched { .. }
                    | DepositStatus::Spent
                    | DepositStatus::Reclaimed { .. }
                    | DepositStatus::Withdrawn { .. }
            );
            if !on_chain && !settled {
                let status = status_when_gone(&self.chain, &d.status).await?;
                if status != d.status {
                    store.set_deposit_status(&d.outpoint, &status)?;
                }
            }
        }
        let heights = utxos.iter().map(|u| (u.outpoint, u.height)).collect();
        Ok((store.deposits()?, tip, heights))
    }
}

impl<C: DevChain> Client<C> {
    /// [`Client::exit`] on a dev chain: mines every block it waits for (and takes the
    /// CPFP children's fee output from the faucet if need be), finishing in one call.
    pub async fn exit_mining(
        &self,
        funding_txid: Txid,
        leaf: u32,
        fees: ExitFees,
    ) -> Result<ExitReport, ClientError> {
        let store = self.store.as_ref();
        Ok(exit_leaf_dev(store, &self.wallet, &self.chain, funding_txid, leaf, fees).await?)
    }

    /// [`Client::exit_all`] on a dev chain, mining as [`Client::exit_mining`] does.
    pub async fn exit_all_mining(&self, fees: ExitFees) -> Result<ExitAllReport, ClientError> {
        let mut leaves = Vec::new();
        for path in self.store.pending_exit_paths()? {
            let result = self.exit_mining(path.funding_txid, path.leaf, fees).await;
            leaves.push(exit_item(path.funding_txid, path.leaf, result)?);
        }
        Ok(ExitAllReport { leaves })
    }

    /// [`Client::reclaim`] on a dev chain, mining until the last deposit is spendable.
    pub async fn reclaim_mining(&self) -> Result<Vec<ReclaimItem>, ClientError> {
        Ok(reclaim_deposits_dev(self.store.as_ref(), &self.wallet, &self.chain).await?)
    }

    /// A confirmed faucet output of `amount` to the wallet's deposit address, recorded
    /// as an unspent deposit (dev chains only).
    pub async fn dev_fund(&self, amount: Amount) -> Result<OutPoint, ClientError> {
        let script = self.wallet.deposit_script()?.script_pubkey();
        let outpoint = self.chain.faucet(&script, amount).await?;
        self.store.put_deposit(&DepositRecord {
            outpoint,
            txout: bitcoin::TxOut { value: amount, script_pubkey: script },
            key_index: 0,
            deposit_csv: self.wallet.coordinator().deposit_csv,
            status: DepositStatus::Unspent,
        })?;
        Ok(outpoint)
    }
}

/// Connects to `uri` and reads what the coordinator is, as a wallet remembers it.
pub async fn fetch_info(uri: &str) -> Result<CoordinatorInfo, ClientError> {
    let parsed = parse_uri(uri)?;
    let link = connect(uri).await?;
    let info = server_info(&link).await;
    link.close("done");
    Ok(CoordinatorInfo::from_server(&parsed.to_string(), &info?))
}

/// Ends a join however it ends (returned, failed, or its future dropped): the client
/// takes joins again, and deposits still only registered (no deposit signature sent)
/// are the wallet's to offer again at once.
struct JoinGuard<'a> {
    running: &'a Mutex<Option<SignGate>>,
    store: &'a Arc<dyn ParticipantStore>,
    offered: Vec<OutPoint>,
}

impl Drop for JoinGuard<'_> {
    fn drop(&mut self) {
        for outpoint in &self.offered {
            if let Ok(Some(d)) = self.store.deposit(outpoint) {
                if matches!(d.status, DepositStatus::Registered { .. }) {
                    if let Err(e) = self.store.set_deposit_status(outpoint, &DepositStatus::Unspent)
                    {
                        tracing::warn!(%outpoint, error = %e, "cannot release a registered deposit");
                    }
                }
            }
        }
        *lock(self.running) = None;
    }
}

/// The deposits a join offers: signed into batches none of which reached the chain (the
/// deposit is still unspent) counts as offerable; every earlier funding txid keeps its
/// exit paths.
fn choose(
    choice: &DepositChoice,
    records: Vec<DepositRecord>,
    heights: &[(OutPoint, Option<u32>)],
) -> Result<Vec<DepositRecord>, ClientError> {
    let confirmed =
        |d: &DepositRecord| heights.iter().any(|(o, h)| *o == d.outpoint && h.is_some());
    let offerable = |d: &DepositRecord| {
        matches!(d.status, DepositStatus::Unspent | DepositStatus::InBatch { .. })
    };
    match choice {
        DepositChoice::AllConfirmed => {
            Ok(records.into_iter().filter(|d| offerable(d) && confirmed(d)).collect())
        }
        DepositChoice::Only(wanted) => {
            let mut chosen = Vec::with_capacity(wanted.len());
            for &outpoint in wanted {
                let Some(d) = records.iter().find(|d| d.outpoint == outpoint) else {
                    return Err(ClientError::DepositNotOffered {
                        outpoint,
                        why: "not a deposit of this wallet on its chain source",
                    });
                };
                if !offerable(d) {
                    return Err(ClientError::DepositNotOffered {
                        outpoint,
                        why: "not unspent (batched, spent, reclaimed or registered)",
                    });
                }
                if !confirmed(d) {
                    return Err(ClientError::DepositNotOffered { outpoint, why: "not confirmed" });
                }
                chosen.push(d.clone());
            }
            Ok(chosen)
        }
    }
}

/// The deposits a withdrawal spends: unspent ones, and ones signed into batches none of
/// which reached the chain (the coordinator refuses those still in its running round).
fn choose_withdrawable(
    choice: &DepositChoice,
    records: Vec<DepositRecord>,
    heights: &[(OutPoint, Option<u32>)],
) -> Result<Vec<DepositRecord>, WithdrawError> {
    let on_chain = |d: &DepositRecord| heights.iter().find(|(o, _)| *o == d.outpoint);
    let free = |d: &DepositRecord| {
        matches!(d.status, DepositStatus::Unspent | DepositStatus::InBatch { .. })
    };
    let chosen: Vec<DepositRecord> = match choice {
        DepositChoice::AllConfirmed => records
            .into_iter()
            .filter(|d| free(d) && on_chain(d).is_some_and(|(_, h)| h.is_some()))
            .collect(),
        DepositChoice::Only(wanted) => {
            let mut chosen = Vec::with_capacity(wanted.len());
            for &outpoint in wanted {
                let not = |why| WithdrawError::NotWithdrawable { outpoint, why };
                let d = records
                    .iter()
                    .find(|d| d.outpoint == outpoint)
                    .ok_or(not("not a deposit of this wallet on its chain source"))?;
                if !free(d) {
                    return Err(not("in a round, a withdrawal, or spent"));
                }
                if on_chain(d).is_none() {
                    return Err(not("not unspent on the chain source"));
                }
                chosen.push(d.clone());
            }
            chosen
        }
    };
    if chosen.is_empty() {
        return Err(WithdrawError::NoDeposits);
    }
    Ok(chosen)
}

/// One leaf's line of `exit --all`: what it did, or why it could not start; a failing
/// store or chain source stops the whole command.
fn exit_item(
    funding_txid: Txid,
    leaf: u32,
    result: Result<ExitReport, ClientError>,
) -> Result<ExitAllItem, ClientError> {
    match result {
        Ok(report) => Ok(ExitAllItem { funding_txid, leaf, report: Some(report), error: None }),
        Err(ClientError::Exit(
            e @ (ExitToolError::FundingMissing(_) | ExitToolError::AlreadyExited { .. }),
        )) => Ok(ExitAllItem { funding_txid, leaf, report: None, error: Some(e.to_string()) }),
        Err(e) => Err(e),
    }
}

/// Locks `m`; a holder that panicked left nothing half-written in these slots.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn confirmations(tip: u32, height: Option<u32>) -> u32 {
    height.map_or(0, |h| tip.saturating_sub(h).saturating_add(1))
}

/// The funding transaction's confirmations on the wallet's own chain source, asked until
/// it shows at least one or [`OWN_CONFIRMATION_WAIT`] has passed.
async fn own_confirmations(
    chain: &impl ChainSource,
    txid: Txid,
) -> Result<Option<u32>, ClientError> {
    let deadline = tokio::time::Instant::now() + OWN_CONFIRMATION_WAIT;
    loop {
        let seen = chain.confirmations(txid).await?;
        if seen.is_some_and(|n| n >= 1) || tokio::time::Instant::now() >= deadline {
            return Ok(seen);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
