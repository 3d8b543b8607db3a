//! The `cohort` commands as library functions: each opens the wallet in a data directory,
//! talks to the coordinator if it must, and returns a report that prints as text
//! ([`std::fmt::Display`]) or as one JSON object (`serde`).

mod report;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::{Amount, OutPoint, Txid};
use cohort_common::messages::{SideRequest, SideResponse};
use cohort_transport::{Client, CoordinatorUri, Limits};

use crate::driver::{spawn_reader, Driver, DriverError, Progress};
use crate::exit::{
    exit_leaf, reclaim_deposits, status_when_gone, ExitReport, ExitToolError, RemoteChain,
};
use crate::store::{DepositRecord, DepositStatus, ParticipantStore, SqliteStore, StoreError};
use crate::wallet::{CoordinatorInfo, Wallet, WalletError};

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

/// Where a command keeps its state.
#[derive(Debug, Clone)]
pub struct Context {
    /// The data directory.
    pub data_dir: PathBuf,
}

impl Context {
    /// A context on `data_dir`.
    pub fn new(data_dir: impl AsRef<Path>) -> Self {
        Context { data_dir: data_dir.as_ref().to_path_buf() }
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
        match file.try_lock() {
            Ok(()) => Ok(WalletLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => {
                Err(CliError::Busy { data_dir: self.data_dir.display().to_string() })
            }
            Err(std::fs::TryLockError::Error(source)) => {
                Err(CliError::DataDir { path: path.display().to_string(), source })
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
async fn connect_checked(wallet: &Wallet, uri: &str) -> Result<Client, CliError> {
    let client = connect(uri).await?;
    let checked = async {
        let info = server_info(&client).await?;
        let ours = wallet.coordinator();
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

/// `cohort init --coordinator URI`: a new wallet remembering that coordinator.
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
    let wallet = Wallet::create(store.as_ref(), info)?;
    Ok(InitReport {
        data_dir: ctx.data_dir.display().to_string(),
        coordinator: wallet.coordinator().clone(),
        address: wallet.address()?.to_string(),
        descriptor: wallet.descriptor()?,
    })
}

/// `cohort address`: the static deposit address and its descriptor.
pub fn address(ctx: &Context) -> Result<AddressReport, CliError> {
    let (_, wallet) = ctx.wallet()?;
    Ok(AddressReport {
        address: wallet.address()?.to_string(),
        descriptor: wallet.descriptor()?,
        network: wallet.coordinator().network.to_string(),
        deposit_csv: wallet.coordinator().deposit_csv,
    })
}

/// Asks the chain for the address's outputs and brings the stored deposits up to date:
/// new outputs are added, stored ones that left the UTXO set without a batch are spent,
/// and registrations left by an interrupted `join` are released.
async fn refresh_deposits(
    store: &dyn ParticipantStore,
    wallet: &Wallet,
    client: &Client,
) -> Result<(Vec<DepositRecord>, u32, Vec<(OutPoint, Option<u32>)>), CliError> {
    let chain = RemoteChain::new(client);
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
            let status = status_when_gone(&chain, &d.status).await?;
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
    let client = connect_checked(&wallet, &wallet.coordinator().uri).await?;
    let result = refresh_deposits(store.as_ref(), &wallet, &client).await;
    client.close("done");
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
/// follows the round to its end. `observer` sees each step as it happens (`Break` stops
/// the driver there, as a kill would).
pub async fn join(
    ctx: &Context,
    uri: Option<&str>,
    max_fee: Option<Amount>,
    mut observer: impl FnMut(&Progress) -> ControlFlow<()> + Send,
) -> Result<JoinReport, CliError> {
    let (_lock, store, wallet) = ctx.locked_wallet()?;
    let uri = uri.unwrap_or(&wallet.coordinator().uri).to_owned();
    let client = connect_checked(&wallet, &uri).await?;
    let result = async {
        let (records, _, heights) = refresh_deposits(store.as_ref(), &wallet, &client).await?;
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
        Ok(JoinReport {
            deposits: offered.iter().map(|d| d.outpoint).collect(),
            deposited_sat: offered.iter().map(|d| d.txout.value.to_sat()).sum(),
            leaf_key_index: leaf_index,
            steps,
            outcome: outcome?,
        })
    }
    .await;
    client.close("done");
    result
}

/// `cohort status`: deposits, exit paths and recent history, from the store alone.
pub fn status(ctx: &Context) -> Result<StatusReport, CliError> {
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

/// `cohort exit LEAF`: publishes the leaf's exit path and reclaims the leaf (on a dev
/// coordinator it mines every block it needs).
pub async fn exit(ctx: &Context, leaf: &str) -> Result<ExitReport, CliError> {
    let (_lock, store, wallet) = ctx.locked_wallet()?;
    let (funding_txid, leaf) = resolve_leaf(store.as_ref(), leaf)?;
    let client = connect_checked(&wallet, &wallet.coordinator().uri).await?;
    let mine = wallet.coordinator().dev;
    let result = exit_leaf(store.as_ref(), &wallet, &client, funding_txid, leaf, mine).await;
    client.close("done");
    Ok(result?)
}

/// `cohort reclaim [--mine]`: spends every unspent deposit through its timeout path.
pub async fn reclaim(ctx: &Context, mine: bool) -> Result<ReclaimReport, CliError> {
    let (_lock, store, wallet) = ctx.locked_wallet()?;
    if mine && !wallet.coordinator().dev {
        return Err(CliError::NotDev);
    }
    let client = connect_checked(&wallet, &wallet.coordinator().uri).await?;
    let result = reclaim_deposits(store.as_ref(), &wallet, &client, mine).await;
    client.close("done");
    Ok(ReclaimReport { deposits: result? })
}

/// `cohort dev fund AMOUNT`: a confirmed faucet output to the own deposit address.
pub async fn dev_fund(ctx: &Context, amount: Amount) -> Result<FundReport, CliError> {
    let (_lock, store, wallet) = ctx.locked_wallet()?;
    if !wallet.coordinator().dev {
        return Err(CliError::NotDev);
    }
    let client = connect_checked(&wallet, &wallet.coordinator().uri).await?;
    let script = wallet.deposit_script()?.script_pubkey();
    let result = RemoteChain::new(&client).faucet(&script, amount).await;
    client.close("done");
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

/// `cohort dev mine N`: mines `n` blocks on the dev chain.
pub async fn dev_mine(ctx: &Context, n: u32) -> Result<MineReport, CliError> {
    let (_, wallet) = ctx.wallet()?;
    if !wallet.coordinator().dev {
        return Err(CliError::NotDev);
    }
    let client = connect_checked(&wallet, &wallet.coordinator().uri).await?;
    let result = RemoteChain::new(&client).mine(n).await;
    client.close("done");
    Ok(MineReport { mined: n, height: result? })
}
