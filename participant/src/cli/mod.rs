//! The `cohort` commands as library functions: each opens the wallet in a data directory,
//! reaches its chain source and the coordinator if it must, and returns a report that
//! prints as text ([`std::fmt::Display`]) or as one JSON object (`serde`).
//!
//! The chain source is the wallet's `chain` setting ([`ChainSetting`]), chosen at `init`
//! or replaced by the [`ChainArgs`] of any command that uses the chain.

mod chain_args;
mod report;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::{Amount, Network, OutPoint, Txid};
use cohort_common::messages::{SideRequest, SideResponse};
use cohort_transport::{Client, CoordinatorUri, Limits};

use crate::chain::{ChainSetting, ChainSource, ChainSourceError, DevChain, ProbeError};
use crate::driver::{spawn_reader, Driver, DriverError, Outcome, Progress};
use crate::exit::{
    exit_leaf, exit_leaf_dev, reclaim_deposits, reclaim_deposits_dev, status_when_gone, ExitReport,
    ExitToolError,
};
use crate::store::{DepositRecord, DepositStatus, ParticipantStore, SqliteStore, StoreError};
use crate::wallet::{CoordinatorInfo, Wallet, WalletError};

use chain_args::open_chain;
pub use chain_args::{ChainArgs, ChainKind, WalletChain};
pub use report::{
    AddressReport, DepositRow, DepositsReport, ExitPathRow, FundReport, InitReport, JoinReport,
    MineReport, ReclaimReport, StatusReport,
};

/// The store file inside a data directory.
pub const STORE_FILE: &str = "wallet.sqlite";

/// The lock file inside a data directory (see [`Context::lock`]).
pub const LOCK_FILE: &str = "wallet.lock";

/// Default `--max-fee`, in sat.
pub const DEFAULT_MAX_FEE_SAT: u64 = 50_000;

/// How many history events `status` shows.
pub const STATUS_HISTORY: usize = 10;

/// Errors of the commands.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The coordinator URI does not parse.
    #[error("bad coordinator URI {uri:?}: {why} (expected cohort://<64 hex>@host:port)")]
    BadUri {
        /// What was given.
        uri: String,
        /// Why it was refused.
        why: String,
    },
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
    /// Another command holds the wallet.
    #[error(
        "the wallet in {data_dir} is in use by another cohort command (a join still running?); \
         `cohort status` reads it without waiting"
    )]
    Busy {
        /// The data directory.
        data_dir: String,
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
    /// The wallet's chain source failed.
    #[error("chain: {0}")]
    Chain(#[from] ChainSourceError),
    /// Connecting or talking to the coordinator failed.
    #[error("coordinator: {0}")]
    Transport(#[from] cohort_transport::TransportError),
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
}

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
    CoordinatorUri::from_str(uri)
        .map_err(|e| CliError::BadUri { uri: uri.to_owned(), why: e.to_string() })
}

/// How long a command waits for the coordinator's handshake before saying it is down: a
/// handshake on any working path takes well under a second.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

async fn connect(uri: &str) -> Result<Client, CliError> {
    let limits = Limits { connect_timeout: CONNECT_TIMEOUT, ..Limits::default() };
    Ok(Client::connect(&parse_uri(uri)?, &limits).await?)
}

/// Connects to the wallet's coordinator at `uri` and checks that it is that coordinator
/// (its key) on the wallet's network: a wallet never talks for its deposits to another.
async fn connect_checked(ours: &CoordinatorInfo, uri: &str) -> Result<Client, CliError> {
    let client = connect(uri).await?;
    let checked = async {
        let info = server_info(&client).await?;
        if info.coordinator_key != ours.key {
            return Err(CliError::WrongCoordinator {
                uri: uri.to_owned(),
                expected: ours.key.to_string(),
                got: info.coordinator_key.to_string(),
            });
        }
        if info.network != ours.network {
            return Err(CliError::WrongNetwork {
                uri: uri.to_owned(),
                expected: ours.network,
                got: info.network,
            });
        }
        if ours.dev_chain.is_some() && info.dev_chain != ours.dev_chain {
            return Err(CliError::DevChainReset { uri: uri.to_owned() });
        }
        Ok(())
    }
    .await;
    match checked {
        Ok(()) => Ok(client),
        Err(e) => {
            client.close("wrong coordinator");
            Err(e)
        }
    }
}

async fn server_info(client: &Client) -> Result<cohort_common::messages::ServerInfo, CliError> {
    match client.request(&SideRequest::Info).await? {
        SideResponse::Info(info) => Ok(info),
        SideResponse::Error(reason) => Err(DriverError::Remote(reason.as_str().to_owned()).into()),
        other => {
            Err(DriverError::UnexpectedAnswer { request: "info", got: format!("{other:?}") }.into())
        }
    }
}

/// `cohort init --coordinator URI`: a new wallet remembering that coordinator and its
/// chain source: the context's chain options, else the dev coordinator's chain for a
/// `--dev` coordinator, else a local node with its default cookie. A node is probed
/// before anything is written.
pub async fn init(ctx: &Context, uri: &str) -> Result<InitReport, CliError> {
    let parsed = parse_uri(uri)?;
    let _lock = ctx.lock()?;
    let store = ctx.store()?;
    if store.seed()?.is_some() {
        return Err(WalletError::Exists.into());
    }
    let client = connect(uri).await?;
    let info = server_info(&client).await;
    client.close("done");
    let info = CoordinatorInfo::from_server(&parsed.to_string(), &info?);
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

/// Asks the chain for the address's outputs and brings the stored deposits up to date:
/// new outputs are added, stored ones that left the UTXO set without a batch are spent,
/// and registrations left by an interrupted `join` are released.
async fn refresh_deposits(
    store: &dyn ParticipantStore,
    wallet: &Wallet,
    chain: &impl ChainSource,
) -> Result<(Vec<DepositRecord>, u32, Vec<(OutPoint, Option<u32>)>), CliError> {
    let script = wallet.deposit_script()?.script_pubkey();
    let utxos = chain.script_utxos(&script).await?;
    let tip = chain.tip_height().await?;
    for u in &utxos {
        match store.deposit(&u.outpoint)? {
            None => store.put_deposit(&DepositRecord {
                outpoint: u.outpoint,
                txout: u.txout.clone(),
                key_index: 0,
                deposit_csv: wallet.coordinator().deposit_csv,
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
            DepositStatus::Batched { .. } | DepositStatus::Spent | DepositStatus::Reclaimed { .. }
        );
        if !on_chain && !settled {
            let status = status_when_gone(chain, &d.status).await?;
            if status != d.status {
                store.set_deposit_status(&d.outpoint, &status)?;
            }
        }
    }
    let heights = utxos.iter().map(|u| (u.outpoint, u.height)).collect();
    Ok((store.deposits()?, tip, heights))
}

fn confirmations(tip: u32, height: Option<u32>) -> u32 {
    height.map_or(0, |h| tip.saturating_sub(h).saturating_add(1))
}

/// `cohort deposits`: the address's deposits as the chain and the store see them.
pub async fn deposits(ctx: &Context) -> Result<DepositsReport, CliError> {
    let (_lock, store, wallet) = ctx.locked_wallet()?;
    let chain =
        open_chain(ctx, store.as_ref(), wallet.coordinator(), &wallet.coordinator().uri).await?;
    let result = refresh_deposits(store.as_ref(), &wallet, &chain).await;
    chain.close();
    let (records, tip, heights) = result?;
    let rows = records
        .into_iter()
        .map(|d| {
            let height = heights.iter().find(|(o, _)| *o == d.outpoint).and_then(|(_, h)| *h);
            DepositRow::new(&d, height.map(|h| confirmations(tip, Some(h))))
        })
        .collect();
    Ok(DepositsReport { tip, deposits: rows })
}

/// `cohort join`: waits for the next round, registers every confirmed unspent deposit and
/// follows the round to its end. Deposits are found, and the batch's confirmation is
/// checked ([`JoinReport::own_confirmations`]), on the wallet's own chain source, not on
/// the coordinator's word. `observer` sees each step as it happens (`Break` stops the
/// driver there, as a kill would).
pub async fn join(
    ctx: &Context,
    uri: Option<&str>,
    max_fee: Option<Amount>,
    mut observer: impl FnMut(&Progress) -> ControlFlow<()> + Send,
) -> Result<JoinReport, CliError> {
    let (_lock, store, wallet) = ctx.locked_wallet()?;
    let uri = uri.unwrap_or(&wallet.coordinator().uri).to_owned();
    let chain = open_chain(ctx, store.as_ref(), wallet.coordinator(), &uri).await?;
    let client = match &chain {
        WalletChain::CoordinatorDev(remote) => remote.side().clone(),
        WalletChain::Node(_) => match connect_checked(wallet.coordinator(), &uri).await {
            Ok(client) => Arc::new(client),
            Err(e) => {
                chain.close();
                return Err(e);
            }
        },
    };
    let result = async {
        let (records, _, heights) = refresh_deposits(store.as_ref(), &wallet, &chain).await?;
        let offered: Vec<DepositRecord> = records
            .into_iter()
            // Signed into batches none of which reached the chain (the deposit is still
            // unspent): offered again; every earlier funding txid keeps its exit paths.
            .filter(|d| matches!(d.status, DepositStatus::Unspent | DepositStatus::InBatch { .. }))
            .filter(|d| heights.iter().any(|(o, h)| *o == d.outpoint && h.is_some()))
            .collect();
        let max_fee = max_fee.unwrap_or(Amount::from_sat(DEFAULT_MAX_FEE_SAT));
        let store_dyn: Arc<dyn ParticipantStore> = store.clone();
        let driver = Driver::new(store_dyn, &wallet, &offered, max_fee)?;
        let leaf_index = driver.leaf_index();
        let (mut send, recv) = client.open_session().await?;
        let (mut inbox, reader) = spawn_reader(recv);
        let mut steps = Vec::new();
        let outcome = driver
            .run(&mut send, &mut inbox, |p| {
                steps.push(p.clone());
                observer(p)
            })
            .await;
        reader.abort();
        let outcome = outcome?;
        let own_confirmations = match &outcome {
            // The batch is done and stored whatever the chain source says now: one that
            // cannot answer (a dev coordinator that has just shut down, a node gone) leaves
            // the confirmation unseen, and `join` says so, rather than failing.
            Outcome::Confirmed { funding_txid: Some(txid), .. } => {
                match own_confirmations(&chain, *txid).await {
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
            deposited_sat: offered.iter().map(|d| d.txout.value.to_sat()).sum(),
            leaf_key_index: leaf_index,
            steps,
            outcome,
            own_confirmations,
        })
    }
    .await;
    client.close("done");
    chain.close();
    result
}

/// How long `join` waits for its own chain source to show the confirmation the
/// coordinator announced (a node may be a block behind).
pub const OWN_CONFIRMATION_WAIT: Duration = Duration::from_secs(10);

/// The funding transaction's confirmations on the wallet's own chain source, asked until
/// it shows at least one or [`OWN_CONFIRMATION_WAIT`] has passed.
async fn own_confirmations(chain: &impl ChainSource, txid: Txid) -> Result<Option<u32>, CliError> {
    let deadline = tokio::time::Instant::now() + OWN_CONFIRMATION_WAIT;
    loop {
        let seen = chain.confirmations(txid).await?;
        if seen.is_some_and(|n| n >= 1) || tokio::time::Instant::now() >= deadline {
            return Ok(seen);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `cohort status`: deposits, exit paths and recent history, from the store alone.
pub fn status(ctx: &Context) -> Result<StatusReport, CliError> {
    ctx.chain.refuse_on("status")?;
    let (store, wallet) = ctx.wallet()?;
    let deposits = store.deposits()?.iter().map(|d| DepositRow::new(d, None)).collect();
    let mut exit_paths = Vec::new();
    for (i, p) in store.exit_paths()?.into_iter().enumerate() {
        let exited = store.is_exited(&p.funding_txid, p.leaf)?;
        exit_paths.push(ExitPathRow::new(i + 1, &p, exited));
    }
    Ok(StatusReport {
        coordinator: wallet.coordinator().uri.clone(),
        address: wallet.address()?.to_string(),
        deposits,
        exit_paths,
        history: store.history(STATUS_HISTORY)?,
    })
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

/// `cohort exit LEAF`: publishes the leaf's exit path and reclaims the leaf through the
/// wallet's own chain source (the coordinator is not needed). On a dev coordinator's
/// chain it mines every block it needs; elsewhere it goes as far as the chain allows and
/// says at which height to run it again.
pub async fn exit(ctx: &Context, leaf: &str) -> Result<ExitReport, CliError> {
    let (_lock, store, wallet) = ctx.locked_wallet()?;
    let (funding_txid, leaf) = resolve_leaf(store.as_ref(), leaf)?;
    let chain =
        open_chain(ctx, store.as_ref(), wallet.coordinator(), &wallet.coordinator().uri).await?;
    let store = store.as_ref();
    let result = match &chain {
        WalletChain::CoordinatorDev(dev) => {
            exit_leaf_dev(store, &wallet, dev, funding_txid, leaf).await
        }
        WalletChain::Node(node) => exit_leaf(store, &wallet, node, funding_txid, leaf).await,
    };
    chain.close();
    Ok(result?)
}

/// `cohort reclaim [--mine]`: spends every unspent deposit through its timeout path,
/// through the wallet's own chain source. `mine` needs a dev chain: the dev
/// coordinator's, or a regtest node.
pub async fn reclaim(ctx: &Context, mine: bool) -> Result<ReclaimReport, CliError> {
    let (_lock, store, wallet) = ctx.locked_wallet()?;
    if mine && !wallet.coordinator().dev && wallet.coordinator().network != Network::Regtest {
        return Err(CliError::NeedsDevChain { command: "reclaim --mine", regtest_node_ok: true });
    }
    let chain =
        open_chain(ctx, store.as_ref(), wallet.coordinator(), &wallet.coordinator().uri).await?;
    let store = store.as_ref();
    let result = match (&chain, mine) {
        (WalletChain::CoordinatorDev(dev), true) => {
            reclaim_deposits_dev(store, &wallet, dev).await.map_err(CliError::from)
        }
        (WalletChain::Node(node), true) => match node.regtest() {
            Some(dev) => reclaim_deposits_dev(store, &wallet, &dev).await.map_err(CliError::from),
            None => {
                Err(CliError::NeedsDevChain { command: "reclaim --mine", regtest_node_ok: true })
            }
        },
        (chain, false) => reclaim_deposits(store, &wallet, chain).await.map_err(CliError::from),
    };
    chain.close();
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
        chain.close();
        return Err(CliError::NeedsDevChain { command: "dev fund", regtest_node_ok: false });
    };
    let script = wallet.deposit_script()?.script_pubkey();
    let result = dev.faucet(&script, amount).await;
    chain.close();
    let outpoint = result?;
    store.put_deposit(&DepositRecord {
        outpoint,
        txout: bitcoin::TxOut { value: amount, script_pubkey: script },
        key_index: 0,
        deposit_csv: wallet.coordinator().deposit_csv,
        status: DepositStatus::Unspent,
    })?;
    Ok(FundReport { outpoint, amount_sat: amount.to_sat(), address: wallet.address()?.to_string() })
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
    let result = match &chain {
        WalletChain::CoordinatorDev(dev) => dev.mine(n).await.map_err(CliError::from),
        WalletChain::Node(node) => match node.regtest() {
            Some(dev) => dev.mine(n).await.map_err(CliError::from),
            None => Err(CliError::NeedsDevChain { command: "dev mine", regtest_node_ok: true }),
        },
    };
    chain.close();
    Ok(MineReport { mined: n, height: result? })
}
