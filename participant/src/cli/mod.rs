//! The `cohort` commands as library functions, built on [`crate::client::Client`]: each
//! opens the wallet in a data directory (under its lock), reaches its chain source and the
//! coordinator if it must, and returns a report that prints as text
//! ([`std::fmt::Display`]) or as one JSON object (`serde`).
//!
//! The chain source is the wallet's `chain` setting ([`ChainSetting`]), chosen at `init`
//! or replaced by the [`ChainArgs`] of any command that uses the chain.

mod chain_args;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::{Amount, FeeRate, Network, OutPoint, Txid};
use cohort_transport::CoordinatorUri;

use crate::chain::{ChainSetting, ChainSourceError, DevChain, ProbeError};
use crate::client::{fetch_info, Client, ClientError, DepositChoice, JoinRequest, WithdrawRequest};
use crate::driver::{DriverError, Progress};
use crate::exit::{ExitFees, ExitReport, ExitToolError};
use crate::session::ProposalLimits;
use crate::store::{ParticipantStore, SqliteStore, StoreError};
use crate::wallet::{Wallet, WalletError};

pub use crate::client::{CONNECT_TIMEOUT, DEFAULT_MAX_FEE_SAT, OWN_CONFIRMATION_WAIT};
pub use crate::report::{
    AddressReport, DepositRow, DepositsReport, ExitAllReport, ExitPathRow, FundReport, InitReport,
    JoinReport, MineReport, ReclaimReport, SendReport, StatusReport, WithdrawReport,
};
use chain_args::open_chain;
pub use chain_args::{ChainArgs, ChainKind, WalletChain};

/// The store file inside a data directory.
pub const STORE_FILE: &str = "wallet.sqlite";

/// The lock file inside a data directory (see [`Context::lock`]).
pub const LOCK_FILE: &str = "wallet.lock";

/// Errors of the commands.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The leaf argument does not name a stored exit path.
    #[error("unknown leaf {0:?}: give <funding_txid>:<leaf> or the number `cohort status` shows")]
    UnknownLeaf(String),
    /// The data directory cannot be created.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Another command holds the wallet.
    #[error(
        "the wallet in {data_dir} is in use by another cohort command (a join still running?); \
         `cohort status` reads it without waiting"
    )]
    Busy {
        /// The data directory.
        data_dir: String,
    },
    /// The command needs a `--dev` coordinator.
    #[error("the coordinator does not run a dev chain (start it with --dev)")]
    NotDev,
    /// The command needs a dev chain, and the wallet's chain source is not one.
    #[error(
        "{command} needs a dev chain: the dev coordinator's (--chain coordinator-dev){}",
        if *regtest_node_ok { " or a regtest node" } else { "" }
    )]
    NeedsDevChain {
        /// The command.
        command: &'static str,
        /// Whether a regtest node would do.
        regtest_node_ok: bool,
    },
    /// The wallet's own node runs another network than the wallet's.
    #[error("bitcoind at {url} runs on {node}, but this wallet is for {expected}")]
    NodeWrongNetwork {
        /// The node's RPC endpoint.
        url: String,
        /// The node's chain name (`main`, `test`, `signet`, `regtest`, ...).
        node: String,
        /// The wallet's network.
        expected: bitcoin::Network,
    },
    /// The wallet's own node cannot be used (down, credentials refused, not synced, too
    /// old).
    #[error(transparent)]
    Node(ProbeError),
    /// The chain source settings do not fit together or with the command.
    #[error("{0}")]
    ChainSettings(String),
    /// An argument does not parse or does not fit the wallet.
    #[error("{0}")]
    BadArgument(String),
    /// What the wallet's client could not do (the coordinator, the chain, the store).
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Errors of the client's parts reach a command as [`CliError::Client`].
macro_rules! through_client {
    ($($from:ty),*) => {$(
        impl From<$from> for CliError {
            fn from(e: $from) -> Self {
                CliError::Client(e.into())
            }
        }
    )*};
}
through_client!(
    ChainSourceError,
    cohort_transport::TransportError,
    WalletError,
    StoreError,
    DriverError,
    ExitToolError,
    crate::withdraw::WithdrawError,
    crate::send::SendError
);

/// Where a command keeps its state, and the chain options it was given.
#[derive(Debug, Clone)]
pub struct Context {
    /// The data directory.
    pub data_dir: PathBuf,
    /// `--chain` and `--bitcoind-*` (empty: the wallet's stored setting).
    pub chain: ChainArgs,
}

impl Context {
    /// A context on `data_dir`, using the wallet's stored chain source.
    pub fn new(data_dir: impl AsRef<Path>) -> Self {
        Context { data_dir: data_dir.as_ref().to_path_buf(), chain: ChainArgs::default() }
    }

    /// The same context with chain options (a command that uses the chain stores them
    /// as the wallet's setting once the source answers).
    pub fn with_chain(mut self, chain: ChainArgs) -> Self {
        self.chain = chain;
        self
    }

    /// Opens (creating the directory and file if needed) the wallet's store.
    pub fn store(&self) -> Result<Arc<SqliteStore>, CliError> {
        std::fs::create_dir_all(&self.data_dir).map_err(|source| CliError::DataDir {
            path: self.data_dir.display().to_string(),
            source,
        })?;
        Ok(Arc::new(SqliteStore::open(self.data_dir.join(STORE_FILE))?))
    }

    /// Opens an existing wallet (never creates one: a command other than `init` on an
    /// empty directory says so and leaves nothing behind).
    fn wallet(&self) -> Result<(Arc<SqliteStore>, Wallet), CliError> {
        if !self.data_dir.join(STORE_FILE).is_file() {
            return Err(WalletError::NoSeed.into());
        }
        let store = self.store()?;
        let wallet = Wallet::load(store.as_ref())?;
        Ok((store, wallet))
    }

    /// Takes the wallet's lock: one command that writes the wallet or talks for it runs at
    /// a time (two `join`s on one wallet would register the same deposits twice).
    /// Released when the guard drops, or by the system when the process dies.
    pub fn lock(&self) -> Result<WalletLock, CliError> {
        std::fs::create_dir_all(&self.data_dir).map_err(|source| CliError::DataDir {
            path: self.data_dir.display().to_string(),
            source,
        })?;
        let path = self.data_dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| CliError::DataDir { path: path.display().to_string(), source })?;
        // Asked again for a moment before `Busy`: a process being spawned from one that
        // held the lock keeps a copy of its descriptor (and so the lock) until it execs.
        let deadline = Instant::now() + LOCK_PATIENCE;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(WalletLock { _file: file }),
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(CliError::Busy { data_dir: self.data_dir.display().to_string() })
                }
                Err(std::fs::TryLockError::Error(source)) => {
                    return Err(CliError::DataDir { path: path.display().to_string(), source })
                }
            }
        }
    }

    /// The lock, then the wallet.
    fn locked_wallet(&self) -> Result<(WalletLock, Arc<SqliteStore>, Wallet), CliError> {
        let lock = self.lock()?;
        let (store, wallet) = self.wallet()?;
        Ok((lock, store, wallet))
    }
}

/// How long [`Context::lock`] asks again before it says the wallet is busy.
const LOCK_PATIENCE: Duration = Duration::from_millis(500);

/// Holds a wallet's lock (see [`Context::lock`]).
#[derive(Debug)]
pub struct WalletLock {
    _file: std::fs::File,
}

/// Parses a `cohort://<pin>@host:port` URI.
pub fn parse_uri(uri: &str) -> Result<CoordinatorUri, CliError> {
    Ok(crate::client::parse_uri(uri)?)
}

/// `cohort init --coordinator URI`: a new wallet remembering that coordinator and its
/// chain source: the context's chain options, else the dev coordinator's chain for a
/// `--dev` coordinator, else a local node with its default cookie. A node is probed
/// before anything is written.
pub async fn init(ctx: &Context, uri: &str) -> Result<InitReport, CliError> {
    parse_uri(uri)?;
    let _lock = ctx.lock()?;
    let store = ctx.store()?;
    if store.seed()?.is_some() {
        return Err(WalletError::Exists.into());
    }
    let info = fetch_info(uri).await?;
    let setting = match ctx.chain.setting(info.network)? {
        Some(setting) => setting,
        None if info.dev => ChainSetting::CoordinatorDev,
        None => ctx
            .chain
            .clone()
            .with_kind(ChainKind::Node)
            .setting(info.network)?
            .ok_or_else(|| CliError::ChainSettings("no chain source".into()))?,
    };
    chain_args::check_setting(&setting, &info).await?;
    let wallet = Wallet::create(store.as_ref(), info)?;
    setting.save(store.as_ref())?;
    Ok(InitReport {
        data_dir: ctx.data_dir.display().to_string(),
        coordinator: wallet.coordinator().clone(),
        address: wallet.address()?.to_string(),
        descriptor: wallet.descriptor()?,
    })
}

/// `cohort address`: the static deposit address and its descriptor.
pub fn address(ctx: &Context) -> Result<AddressReport, CliError> {
    ctx.chain.refuse_on("address")?;
    let (_, wallet) = ctx.wallet()?;
    Ok(AddressReport {
        address: wallet.address()?.to_string(),
        descriptor: wallet.descriptor()?,
        network: wallet.coordinator().network.to_string(),
        deposit_csv: wallet.coordinator().deposit_csv,
        fee_address: bitcoin::Address::from_script(
            &wallet.fee_script(),
            wallet.coordinator().network,
        )
        .map_err(|e| CliError::ChainSettings(format!("the fee key has no address: {e}")))?
        .to_string(),
    })
}

/// `cohort deposits`: the address's deposits as the chain and the store see them.
pub async fn deposits(ctx: &Context) -> Result<DepositsReport, CliError> {
    let (_lock, store, wallet) = ctx.locked_wallet()?;
    let uri = wallet.coordinator().uri.clone();
    let chain = open_chain(ctx, store.as_ref(), wallet.coordinator(), &uri).await?;
    let result = Client::new(store, wallet, &chain).deposits().await;
    Ok(result?)
}

/// `cohort watch` (one look): what needs attention in the wallet's deposits, alarms and
/// exit paths, through its own chain source ([`Client::watch`]). The wallet is locked only
/// while it looks, so other commands can run between two looks.
pub async fn watch(ctx: &Context) -> Result<crate::watch::WatchReport, CliError> {
    let (_lock, store, wallet) = ctx.locked_wallet()?;
    let uri = wallet.coordinator().uri.clone();
    let chain = open_chain(ctx, store.as_ref(), wallet.coordinator(), &uri).await?;
    let result = Client::new(store, wallet, &chain).watch().await;
    Ok(result?)
}

/// What `cohort join` asks for beyond the defaults of [`JoinRequest`].
#[derive(Debug, Clone, Default)]
pub struct JoinArgs {
    /// Reach the coordinator at this URI instead of the remembered one.
    pub coordinator: Option<String>,
    /// The largest total fee accepted (default [`DEFAULT_MAX_FEE_SAT`]).
    pub max_fee: Option<Amount>,
    /// The most transactions on an own exit path (default
    /// [`ProposalLimits::default`]'s).
    pub max_depth: Option<u8>,
}

/// `cohort join`: waits for the next round, registers every confirmed unspent deposit and
/// follows the round to its end ([`Client::join`]). `observer` sees each step as it
/// happens (`Break` stops the driver there, as a kill would).
pub async fn join(
    ctx: &Context,
    args: &JoinArgs,
    observer: impl FnMut(&Progress) -> ControlFlow<()> + Send,
) -> Result<JoinReport, CliError> {
    join_cancellable(ctx, args, &crate::driver::SignGate::new(), observer).await
}

/// [`join`], cancelled (before deposit signatures) through `cancel` (what Ctrl-C does).
pub async fn join_cancellable(
    ctx: &Context,
    args: &JoinArgs,
    cancel: &crate::driver::SignGate,
    observer: impl FnMut(&Progress) -> ControlFlow<()> + Send,
) -> Result<JoinReport, CliError> {
    let (_lock, store, wallet) = ctx.locked_wallet()?;
    let uri = args.coordinator.clone().unwrap_or_else(|| wallet.coordinator().uri.clone());
    let chain = open_chain(ctx, store.as_ref(), wallet.coordinator(), &uri).await?;
    let mut limits = ProposalLimits::default();
    if let Some(depth) = args.max_depth {
        limits.max_depth = depth;
    }
    let request = JoinRequest {
        max_fee: args.max_fee.unwrap_or(Amount::from_sat(DEFAULT_MAX_FEE_SAT)),
        limits,
        ..JoinRequest::default()
    };
    let client =
        Client::new(store, wallet, &chain).with_coordinator(&uri).with_gate(cancel.clone());
    let result = client.join_observed(request, observer).await;
    drop(client);
    Ok(result?)
}

/// `cohort status`: deposits, exit paths and recent history, from the store alone.
pub fn status(ctx: &Context) -> Result<StatusReport, CliError> {
    ctx.chain.refuse_on("status")?;
    let (store, wallet) = ctx.wallet()?;
    Ok(Client::new(store, wallet, ()).status()?)
}

/// Resolves `<funding_txid>:<leaf>` or a 1-based number from `status` to a stored path.
pub fn resolve_leaf(store: &dyn ParticipantStore, arg: &str) -> Result<(Txid, u32), CliError> {
    let unknown = || CliError::UnknownLeaf(arg.to_owned());
    if let Some((txid, leaf)) = arg.split_once(':') {
        let txid = Txid::from_str(txid).map_err(|_| unknown())?;
        let leaf = leaf.parse::<u32>().map_err(|_| unknown())?;
        store.exit_path(&txid, leaf)?.ok_or_else(unknown)?;
        return Ok((txid, leaf));
    }
    let n = arg.parse::<usize>().map_err(|_| unknown())?;
    let path = n
        .checked_sub(1)
        .and_then(|i| store.exit_paths().ok().and_then(|all| all.into_iter().nth(i)))
        .ok_or_else(unknown)?;
    Ok((path.funding_txid, path.leaf))
}

/// How `cohort exit` prices the CPFP children, as typed.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExitArgs {
    /// Package fee rate in sat/vB (`None`: the chain source's estimate).
    pub fee_rate: Option<u64>,
    /// Fee rate cap in sat/vB (`None`: [`crate::withdraw::DEFAULT_MAX_FEE_RATE_SAT_VB`]).
    pub max_fee_rate: Option<u64>,
    /// `--mine`: mine every block the exit waits for (a dev chain or a regtest node).
    pub mine: bool,
}

impl ExitArgs {
    /// The fees to pay; a rate asked above the cap is refused.
    pub fn fees(&self) -> Result<ExitFees, CliError> {
        let cap = self.max_fee_rate.unwrap_or(crate::withdraw::DEFAULT_MAX_FEE_RATE_SAT_VB);
        if let Some(rate) = self.fee_rate.filter(|r| *r > cap) {
            return Err(CliError::BadArgument(format!(
                "--fee-rate {rate} is above the cap of {cap} sat/vB (--max-fee-rate)"
            )));
        }
        Ok(ExitFees { fee_rate: self.fee_rate.map(sat_per_vb), max_fee_rate: sat_per_vb(cap) })
    }
}

/// `cohort exit LEAF`: publishes the leaf's exit path and reclaims the leaf through the
/// wallet's own chain source (the coordinator is not needed). It goes as far as the
/// chain allows and says at which height to run it again; with `--mine` (a dev chain or
/// a regtest node) it mines every block it waits for and finishes.
pub async fn exit(ctx: &Context, leaf: &str, args: &ExitArgs) -> Result<ExitReport, CliError> {
    let fees = args.fees()?;
    let (_lock, store, wallet) = ctx.locked_wallet()?;
    mine_allowed(&wallet, args.mine, "exit --mine")?;
    let (funding_txid, leaf) = resolve_leaf(store.as_ref(), leaf)?;
    let chain =
        open_chain(ctx, store.as_ref(), wallet.coordinator(), &wallet.coordinator().uri).await?;
    let result = match (dev_chain_of(&chain, args.mine, "exit --mine")?, &chain) {
        (Some(dev), _) => {
            Client::new(store, wallet, &dev).exit_mining(funding_txid, leaf, fees).await
        }
        (None, chain) => Client::new(store, wallet, chain).exit(funding_txid, leaf, fees).await,
    };
    Ok(result?)
}

/// Refuses `--mine` where no chain can mine: neither a dev coordinator's nor regtest.
fn mine_allowed(wallet: &Wallet, mine: bool, command: &'static str) -> Result<(), CliError> {
    let coordinator = wallet.coordinator();
    if mine && !coordinator.dev && coordinator.network != Network::Regtest {
        return Err(CliError::NeedsDevChain { command, regtest_node_ok: true });
    }
    Ok(())
}

/// The chain as a dev chain when `mine` is asked (`None` when it is not); refused when
/// the chain cannot mine.
fn dev_chain_of(
    chain: &WalletChain,
    mine: bool,
    command: &'static str,
) -> Result<Option<crate::chain::RegtestNodeChain>, CliError> {
    if !mine {
        return Ok(None);
    }
    let dev = match chain {
        WalletChain::CoordinatorDev(dev) => Some(dev.clone()),
        WalletChain::Node(node) => node.regtest(),
    };
    dev.map(Some).ok_or(CliError::NeedsDevChain { command, regtest_node_ok: true })
}

/// What `cohort withdraw` was given, as typed.
#[derive(Debug, Clone, Default)]
pub struct WithdrawArgs {
    /// The destination address (not with `bump`).
    pub address: Option<String>,
    /// `TXID:VOUT` of the deposits to withdraw (empty: every confirmed free one).
    pub deposits: Vec<String>,
    /// Fee rate in sat/vB (`None`: the chain source's estimate).
    pub fee_rate: Option<u64>,
    /// Fee rate cap in sat/vB (`None`: [`crate::withdraw::DEFAULT_MAX_FEE_RATE_SAT_VB`]).
    pub max_fee_rate: Option<u64>,
    /// The withdrawal to replace at a higher fee.
    pub bump: Option<String>,
}

/// `cohort withdraw ADDRESS` / `cohort withdraw --bump TXID`: a cooperative withdrawal
/// through the coordinator ([`Client::withdraw`], [`Client::bump_withdrawal`]), published
/// through the wallet's own chain source.
pub async fn withdraw(ctx: &Context, args: &WithdrawArgs) -> Result<WithdrawReport, CliError> {
    let (_lock, store, wallet) = ctx.locked_wallet()?;
    let network = wallet.coordinator().network;
    let fee_rate = args.fee_rate.map(sat_per_vb);
    let max_fee_rate =
        sat_per_vb(args.max_fee_rate.unwrap_or(crate::withdraw::DEFAULT_MAX_FEE_RATE_SAT_VB));
    let bump = match &args.bump {
        Some(t) => Some(
            Txid::from_str(t)
                .map_err(|_| CliError::BadArgument(format!("--bump {t:?} is not a txid")))?,
        ),
        None => None,
    };
    let destination = match &args.address {
        Some(a) => Some(parse_address(a, network)?),
        None => None,
    };
    let mut wanted = std::collections::BTreeSet::new();
    for d in &args.deposits {
        let outpoint = OutPoint::from_str(d)
            .map_err(|_| CliError::BadArgument(format!("--deposit {d:?} is not TXID:VOUT")))?;
        wanted.insert(outpoint);
    }
    let chain =
        open_chain(ctx, store.as_ref(), wallet.coordinator(), &wallet.coordinator().uri).await?;
    let client = Client::new(store, wallet, &chain);
    let result = match (bump, destination) {
        (Some(txid), _) => client.bump_withdrawal(txid, fee_rate, max_fee_rate).await,
        (None, Some(destination)) => {
            let deposits = if wanted.is_empty() {
                DepositChoice::AllConfirmed
            } else {
                DepositChoice::Only(wanted)
            };
            let request = WithdrawRequest { deposits, destination, fee_rate, max_fee_rate };
            client.withdraw(request).await
        }
        (None, None) => Err(CliError::BadArgument("give an address or --bump TXID".into()))?,
    };
    drop(client);
    Ok(result?)
}

/// `cohort send ADDRESS (--amount SAT | --all)`: pays the wallet's own confirmed coins
/// (exit and reclaim outputs, the fee wallet) to an address ([`Client::send`]).
pub async fn send(
    ctx: &Context,
    address: &str,
    amount: Option<Amount>,
    fee_rate: Option<u64>,
    max_fee_rate: Option<u64>,
) -> Result<SendReport, CliError> {
    let (_lock, store, wallet) = ctx.locked_wallet()?;
    let destination = parse_address(address, wallet.coordinator().network)?;
    let cap = sat_per_vb(max_fee_rate.unwrap_or(crate::withdraw::DEFAULT_MAX_FEE_RATE_SAT_VB));
    let amount = amount.map_or(crate::send::SendAmount::All, crate::send::SendAmount::Exactly);
    let chain =
        open_chain(ctx, store.as_ref(), wallet.coordinator(), &wallet.coordinator().uri).await?;
    let result = Client::new(store, wallet, &chain)
        .send(destination, amount, fee_rate.map(sat_per_vb), cap)
        .await;
    Ok(result?)
}

/// A fee rate given in sat/vB on the command line.
fn sat_per_vb(sat_vb: u64) -> FeeRate {
    FeeRate::from_sat_per_kwu(sat_vb.saturating_mul(250))
}

/// An address on the wallet's network, as its script.
fn parse_address(text: &str, network: Network) -> Result<bitcoin::ScriptBuf, CliError> {
    let unchecked = bitcoin::Address::from_str(text)
        .map_err(|e| CliError::BadArgument(format!("{text:?} is not an address: {e}")))?;
    let address = unchecked.require_network(network).map_err(|_| {
        CliError::BadArgument(format!(
            "{text} is not an address on {network}, the wallet's network"
        ))
    })?;
    Ok(address.script_pubkey())
}

/// `cohort exit --all`: [`exit`] for every leaf not exited yet.
pub async fn exit_all(ctx: &Context, args: &ExitArgs) -> Result<ExitAllReport, CliError> {
    let fees = args.fees()?;
    let (_lock, store, wallet) = ctx.locked_wallet()?;
    mine_allowed(&wallet, args.mine, "exit --all --mine")?;
    let chain =
        open_chain(ctx, store.as_ref(), wallet.coordinator(), &wallet.coordinator().uri).await?;
    let result = match (dev_chain_of(&chain, args.mine, "exit --all --mine")?, &chain) {
        (Some(dev), _) => Client::new(store, wallet, &dev).exit_all_mining(fees).await,
        (None, chain) => Client::new(store, wallet, chain).exit_all(fees).await,
    };
    Ok(result?)
}

/// `cohort reclaim [--mine]`: spends every unspent deposit through its timeout path,
/// through the wallet's own chain source. `mine` needs a dev chain: the dev
/// coordinator's, or a regtest node.
pub async fn reclaim(ctx: &Context, mine: bool) -> Result<ReclaimReport, CliError> {
    let (_lock, store, wallet) = ctx.locked_wallet()?;
    mine_allowed(&wallet, mine, "reclaim --mine")?;
    let chain =
        open_chain(ctx, store.as_ref(), wallet.coordinator(), &wallet.coordinator().uri).await?;
    let result = match (dev_chain_of(&chain, mine, "reclaim --mine")?, &chain) {
        (Some(dev), _) => Client::new(store, wallet, &dev).reclaim_mining().await,
        (None, chain) => Client::new(store, wallet, chain).reclaim().await,
    };
    Ok(ReclaimReport { deposits: result? })
}

/// `cohort dev fund AMOUNT`: a confirmed faucet output to the own deposit address (the
/// dev coordinator's chain only).
pub async fn dev_fund(ctx: &Context, amount: Amount) -> Result<FundReport, CliError> {
    let (_lock, store, wallet) = ctx.locked_wallet()?;
    if !wallet.coordinator().dev {
        return Err(CliError::NotDev);
    }
    let chain =
        open_chain(ctx, store.as_ref(), wallet.coordinator(), &wallet.coordinator().uri).await?;
    let WalletChain::CoordinatorDev(dev) = &chain else {
        return Err(CliError::NeedsDevChain { command: "dev fund", regtest_node_ok: false });
    };
    let address = wallet.address()?.to_string();
    let result = Client::new(store, wallet, dev).dev_fund(amount).await;
    Ok(FundReport { outpoint: result?, amount_sat: amount.to_sat(), address })
}

/// `cohort dev mine N`: mines `n` blocks on the dev coordinator's chain, or on a regtest
/// node (`generatetoaddress`, paying an anyone-can-spend script).
pub async fn dev_mine(ctx: &Context, n: u32) -> Result<MineReport, CliError> {
    let (store, wallet) = ctx.wallet()?;
    if !wallet.coordinator().dev && wallet.coordinator().network != Network::Regtest {
        return Err(CliError::NeedsDevChain { command: "dev mine", regtest_node_ok: true });
    }
    let chain =
        open_chain(ctx, store.as_ref(), wallet.coordinator(), &wallet.coordinator().uri).await?;
    let result = match dev_chain_of(&chain, true, "dev mine") {
        Ok(Some(dev)) => dev.mine(n).await.map_err(CliError::from),
        Ok(None) => Err(CliError::NeedsDevChain { command: "dev mine", regtest_node_ok: true }),
        Err(e) => Err(e),
    };
    Ok(MineReport { mined: n, height: result? })
}
