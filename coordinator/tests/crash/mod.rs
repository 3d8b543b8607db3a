//! The crash matrix's machinery: store wrappers that kill their side at its k-th write
//! (before the write reaches SQLite, or right after it commits), and a world of one
//! coordinator service and a few wallets, each on its own SQLite file, that can be killed
//! and rebuilt from those files through the product's own start-up paths.
//!
//! A kill is a panic raised with `resume_unwind` (no hook, no message) on the thread that
//! made the write: the coordinator's engine thread, or the wallet's join task (or its
//! store task). Nothing after that point reaches the file: every later call of the killed
//! side's store fails, so clean-up code that unwinding runs (a join's guard releasing its
//! deposits) writes nothing, as after kill -9. What the unwinding does beyond the file
//! (connections closed at once rather than timing out) only changes when the peer notices.
// The matrix binary uses all of it; keep the same allowances as `tests/support`.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::panic::resume_unwind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitcoin::{OutPoint, Transaction, Txid};
use cohort_common::exit::p2tr_single;
use cohort_common::keys::Keypair;
use cohort_common::ledger::Ledger;
use cohort_common::params::TreeParams;
use cohort_coordinator::engine::CoordinatorConfig;
use cohort_coordinator::service::{ChainBackend, CoordinatorService, ServiceConfig};
use cohort_coordinator::store::{
    BanRecord, BatchRecord, BatchStatus, CoordinatorStore, RegistrationRecord, RegistrationStatus,
    RoundRecord, RoundState, SqliteStore, StoreError, WithdrawalRecord,
};
use cohort_participant::chain::RegtestNodeChain;
use cohort_participant::client::{self, Client};
use cohort_participant::store::{
    DepositRecord, DepositStatus, ExitChildRecord, ExitPathRecord, HistoryEvent, ParticipantStore,
    SqliteStore as WalletSqlite, WithdrawalRecord as WalletWithdrawal,
};
use cohort_transport::{CoordinatorUri, Identity};

/// Where the kill falls relative to the chosen write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// The write never reaches SQLite.
    Before,
    /// The write has committed.
    After,
}

/// The panic payload of a kill.
#[derive(Debug)]
pub struct Killed;

#[derive(Debug, Default)]
struct KillState {
    /// Counting (and killing) only once armed.
    armed: bool,
    target: Option<(usize, When)>,
    writes: usize,
    /// Every counted write's name, in order.
    log: Vec<&'static str>,
    dead: bool,
}

/// One side's kill switch, shared by its store wrapper and the test.
#[derive(Debug, Default)]
pub struct Kill {
    state: Mutex<KillState>,
}

fn killed() -> StoreError {
    StoreError::Sqlite("killed".into())
}

impl Kill {
    /// A switch that counts from now and kills at write `k` (1-based), `when`.
    pub fn at(k: usize, when: When) -> Arc<Kill> {
        let kill = Kill::default();
        kill.arm(Some((k, when)));
        Arc::new(kill)
    }

    /// A switch that counts from now and never kills.
    pub fn counting() -> Arc<Kill> {
        let kill = Kill::default();
        kill.arm(None);
        Arc::new(kill)
    }

    /// A switch that neither counts nor kills until [`Kill::arm`].
    pub fn idle() -> Arc<Kill> {
        Arc::new(Kill::default())
    }

    /// Starts counting writes from zero, killing at `target` if given.
    pub fn arm(&self, target: Option<(usize, When)>) {
        let mut s = self.state.lock().unwrap();
        s.armed = true;
        s.target = target;
        s.writes = 0;
        s.log.clear();
    }

    /// Whether the side was killed.
    pub fn dead(&self) -> bool {
        self.state.lock().unwrap().dead
    }

    /// The names of the writes counted so far.
    pub fn log(&self) -> Vec<&'static str> {
        self.state.lock().unwrap().log.clone()
    }

    /// The name of the write the kill fell on, if it fell.
    pub fn fell_on(&self) -> Option<&'static str> {
        let s = self.state.lock().unwrap();
        if s.dead {
            s.log.last().copied()
        } else {
            None
        }
    }

    /// Runs one write through the switch.
    fn write<T>(
        &self,
        what: &'static str,
        write: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let when = {
            let mut s = self.state.lock().unwrap();
            if s.dead {
                return Err(killed());
            }
            if !s.armed {
                None
            } else {
                s.writes += 1;
                s.log.push(what);
                match s.target {
                    Some((k, when)) if k == s.writes => {
                        if when == When::Before {
                            s.dead = true;
                        }
                        Some(when)
                    }
                    _ => None,
                }
            }
        };
        match when {
            None => write(),
            Some(When::Before) => resume_unwind(Box::new(Killed)),
            Some(When::After) => {
                let _ = write();
                self.state.lock().unwrap().dead = true;
                resume_unwind(Box::new(Killed))
            }
        }
    }

    /// Runs one read: a dead side reads nothing.
    fn read<T>(&self, read: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        if self.dead() {
            return Err(killed());
        }
        read()
    }
}

/// The coordinator's SQLite store behind a kill switch.
pub struct KillableCoordinatorStore {
    pub inner: SqliteStore,
    pub kill: Arc<Kill>,
}

impl CoordinatorStore for KillableCoordinatorStore {
    fn put_round(&self, round: &RoundRecord) -> Result<(), StoreError> {
        self.kill.write("put_round", || self.inner.put_round(round))
    }
    fn set_round_state(&self, round: u64, state: RoundState) -> Result<(), StoreError> {
        let what = match state {
            RoundState::Registering => "set_round_state(Registering)",
            RoundState::Signing => "set_round_state(Signing)",
            RoundState::Finished => "set_round_state(Finished)",
            RoundState::Aborted => "set_round_state(Aborted)",
        };
        self.kill.write(what, || self.inner.set_round_state(round, state))
    }
    fn round(&self, round: u64) -> Result<Option<RoundRecord>, StoreError> {
        self.kill.read(|| self.inner.round(round))
    }
    fn recent_rounds(&self, limit: usize) -> Result<Vec<RoundRecord>, StoreError> {
        self.kill.read(|| self.inner.recent_rounds(limit))
    }
    fn latest_round(&self) -> Result<Option<RoundRecord>, StoreError> {
        self.kill.read(|| self.inner.latest_round())
    }
    fn put_registration(&self, r: &RegistrationRecord) -> Result<(), StoreError> {
        self.kill.write("put_registration", || self.inner.put_registration(r))
    }
    fn set_registration_status(
        &self,
        round: u64,
        registration: u64,
        status: RegistrationStatus,
    ) -> Result<(), StoreError> {
        let what = match status {
            RegistrationStatus::Accepted => "set_registration_status(Accepted)",
            RegistrationStatus::InBatch(_) => "set_registration_status(InBatch)",
            RegistrationStatus::Excluded => "set_registration_status(Excluded)",
            RegistrationStatus::Cancelled => "set_registration_status(Cancelled)",
            RegistrationStatus::Completed => "set_registration_status(Completed)",
        };
        self.kill.write(what, || self.inner.set_registration_status(round, registration, status))
    }
    fn registration(
        &self,
        round: u64,
        registration: u64,
    ) -> Result<Option<RegistrationRecord>, StoreError> {
        self.kill.read(|| self.inner.registration(round, registration))
    }
    fn registrations_of_round(&self, round: u64) -> Result<Vec<RegistrationRecord>, StoreError> {
        self.kill.read(|| self.inner.registrations_of_round(round))
    }
    fn registration_counts(
        &self,
        round: u64,
    ) -> Result<Vec<(RegistrationStatus, usize)>, StoreError> {
        self.kill.read(|| self.inner.registration_counts(round))
    }
    fn put_batch(&self, batch: &BatchRecord) -> Result<(), StoreError> {
        let what = match batch.status {
            BatchStatus::Signing => "put_batch(Signing)",
            BatchStatus::TreeSigned => "put_batch(TreeSigned)",
            BatchStatus::Broadcasting => "put_batch(Broadcasting)",
            _ => "put_batch(other)",
        };
        self.kill.write(what, || self.inner.put_batch(batch))
    }
    fn set_batch_status(
        &self,
        round: u64,
        batch: u32,
        attempt: u32,
        status: &BatchStatus,
    ) -> Result<(), StoreError> {
        let what = match status {
            BatchStatus::Signing => "set_batch_status(Signing)",
            BatchStatus::TreeSigned => "set_batch_status(TreeSigned)",
            BatchStatus::Broadcasting => "set_batch_status(Broadcasting)",
            BatchStatus::Finalized { .. } => "set_batch_status(Finalized)",
            BatchStatus::Confirmed { .. } => "set_batch_status(Confirmed)",
            BatchStatus::Aborted { .. } => "set_batch_status(Aborted)",
        };
        self.kill.write(what, || self.inner.set_batch_status(round, batch, attempt, status))
    }
    fn batches_of_round(&self, round: u64) -> Result<Vec<BatchRecord>, StoreError> {
        self.kill.read(|| self.inner.batches_of_round(round))
    }
    fn unfinished_batches(&self) -> Result<Vec<BatchRecord>, StoreError> {
        self.kill.read(|| self.inner.unfinished_batches())
    }
    fn put_signed_tree(
        &self,
        round: u64,
        batch: u32,
        attempt: u32,
        nodes: &[Transaction],
    ) -> Result<(), StoreError> {
        self.kill
            .write("put_signed_tree", || self.inner.put_signed_tree(round, batch, attempt, nodes))
    }
    fn signed_tree(&self, round: u64, batch: u32) -> Result<Option<Vec<Transaction>>, StoreError> {
        self.kill.read(|| self.inner.signed_tree(round, batch))
    }
    fn ban(
        &self,
        outpoint: &OutPoint,
        until_ms: u64,
        offences: u32,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.kill.write("ban", || self.inner.ban(outpoint, until_ms, offences, reason))
    }
    fn is_banned(&self, outpoint: &OutPoint, now_ms: u64) -> Result<bool, StoreError> {
        self.kill.read(|| self.inner.is_banned(outpoint, now_ms))
    }
    fn bans(&self, now_ms: u64) -> Result<Vec<BanRecord>, StoreError> {
        self.kill.read(|| self.inner.bans(now_ms))
    }
    fn lift_ban(&self, outpoint: &OutPoint, now_ms: u64, reason: &str) -> Result<bool, StoreError> {
        self.kill.write("lift_ban", || self.inner.lift_ban(outpoint, now_ms, reason))
    }
    fn purge_expired_bans(&self, now_ms: u64) -> Result<usize, StoreError> {
        self.kill.write("purge_expired_bans", || self.inner.purge_expired_bans(now_ms))
    }
    fn put_withdrawal(&self, withdrawal: &WithdrawalRecord) -> Result<(), StoreError> {
        self.kill.write("put_withdrawal", || self.inner.put_withdrawal(withdrawal))
    }
    fn withdrawals(&self) -> Result<Vec<WithdrawalRecord>, StoreError> {
        self.kill.read(|| self.inner.withdrawals())
    }
}

/// A wallet's SQLite store behind a kill switch.
pub struct KillableWalletStore {
    pub inner: WalletSqlite,
    pub kill: Arc<Kill>,
}

fn deposit_status_name(status: &DepositStatus) -> &'static str {
    match status {
        DepositStatus::Unspent => "set_deposit_status(Unspent)",
        DepositStatus::Registered { .. } => "set_deposit_status(Registered)",
        DepositStatus::InBatch { .. } => "set_deposit_status(InBatch)",
        DepositStatus::Batched { .. } => "set_deposit_status(Batched)",
        DepositStatus::Spent => "set_deposit_status(Spent)",
        DepositStatus::Reclaimed { .. } => "set_deposit_status(Reclaimed)",
        DepositStatus::Withdrawing { .. } => "set_deposit_status(Withdrawing)",
        DepositStatus::Withdrawn { .. } => "set_deposit_status(Withdrawn)",
    }
}

impl ParticipantStore for KillableWalletStore {
    fn init_seed(&self, seed: [u8; 32]) -> Result<(), StoreError> {
        self.kill.write("init_seed", || self.inner.init_seed(seed))
    }
    fn seed(&self) -> Result<Option<[u8; 32]>, StoreError> {
        self.kill.read(|| self.inner.seed())
    }
    fn next_key_index(&self) -> Result<u32, StoreError> {
        self.kill.write("next_key_index", || self.inner.next_key_index())
    }
    fn put_deposit(&self, deposit: &DepositRecord) -> Result<(), StoreError> {
        self.kill.write("put_deposit", || self.inner.put_deposit(deposit))
    }
    fn deposit(&self, outpoint: &OutPoint) -> Result<Option<DepositRecord>, StoreError> {
        self.kill.read(|| self.inner.deposit(outpoint))
    }
    fn deposits(&self) -> Result<Vec<DepositRecord>, StoreError> {
        self.kill.read(|| self.inner.deposits())
    }
    fn set_deposit_status(
        &self,
        outpoint: &OutPoint,
        status: &DepositStatus,
    ) -> Result<(), StoreError> {
        self.kill
            .write(deposit_status_name(status), || self.inner.set_deposit_status(outpoint, status))
    }
    fn store_exit_paths(&self, paths: &[ExitPathRecord]) -> Result<(), StoreError> {
        self.kill.write("store_exit_paths", || self.inner.store_exit_paths(paths))
    }
    fn exit_paths(&self) -> Result<Vec<ExitPathRecord>, StoreError> {
        self.kill.read(|| self.inner.exit_paths())
    }
    fn pending_exit_paths(&self) -> Result<Vec<ExitPathRecord>, StoreError> {
        self.kill.read(|| self.inner.pending_exit_paths())
    }
    fn exit_path(
        &self,
        funding_txid: &Txid,
        leaf: u32,
    ) -> Result<Option<ExitPathRecord>, StoreError> {
        self.kill.read(|| self.inner.exit_path(funding_txid, leaf))
    }
    fn mark_exited(&self, funding_txid: &Txid, leaf: u32) -> Result<(), StoreError> {
        self.kill.write("mark_exited", || self.inner.mark_exited(funding_txid, leaf))
    }
    fn is_exited(&self, funding_txid: &Txid, leaf: u32) -> Result<bool, StoreError> {
        self.kill.read(|| self.inner.is_exited(funding_txid, leaf))
    }
    fn append_history(&self, event: &HistoryEvent) -> Result<(), StoreError> {
        self.kill.write("append_history", || self.inner.append_history(event))
    }
    fn history(&self, limit: usize) -> Result<Vec<HistoryEvent>, StoreError> {
        self.kill.read(|| self.inner.history(limit))
    }
    fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.kill.write("set_setting", || self.inner.set_setting(key, value))
    }
    fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.kill.read(|| self.inner.setting(key))
    }
    fn put_withdrawal(&self, withdrawal: &WalletWithdrawal) -> Result<(), StoreError> {
        self.kill.write("put_withdrawal", || self.inner.put_withdrawal(withdrawal))
    }
    fn withdrawals(&self) -> Result<Vec<WalletWithdrawal>, StoreError> {
        self.kill.read(|| self.inner.withdrawals())
    }
    fn put_exit_child(&self, record: &ExitChildRecord) -> Result<(), StoreError> {
        self.kill.write("put_exit_child", || self.inner.put_exit_child(record))
    }
    fn exit_child(&self, node_txid: &Txid) -> Result<Option<ExitChildRecord>, StoreError> {
        self.kill.read(|| self.inner.exit_child(node_txid))
    }
}

/// A wallet's client with its chain reached through the (dev) coordinator.
pub type WalletClient = Client<RegtestNodeChain>;

/// The coordinator's data directory, identity, key and chain, which outlive its process.
pub struct CoordinatorHome {
    pub dir: PathBuf,
    pub identity: Identity,
    pub key: Keypair,
    pub ledger: Arc<Ledger>,
    pub payout: Keypair,
}

/// How many wallets join each round.
pub const WALLETS: usize = 2;

impl CoordinatorHome {
    pub fn new(dir: &Path) -> CoordinatorHome {
        std::fs::create_dir_all(dir).unwrap();
        let identity = Identity::load_or_create(dir).unwrap();
        CoordinatorHome {
            dir: dir.to_owned(),
            identity,
            key: Keypair::random(),
            ledger: Arc::new(Ledger::new()),
            payout: Keypair::random(),
        }
    }

    /// The store file, as the service opens it.
    pub fn store_path(&self) -> PathBuf {
        self.dir.join("coordinator.sqlite")
    }

    /// Starts the `--dev`-equivalent service on its SQLite file behind `kill`: recovery
    /// runs first, as at every start.
    pub fn start(&self, kill: Arc<Kill>) -> (CoordinatorService, CoordinatorUri) {
        let mut engine = CoordinatorConfig::new(p2tr_single(&self.payout));
        engine.tree = TreeParams { radix: 2, max_depth: 4 };
        engine.registration_window = Duration::from_millis(1_500);
        engine.max_registrations = WALLETS;
        engine.phase_timeout = Duration::from_millis(1_500);
        // A wallet killed after its tree signatures is banned; short enough that it
        // registers again in the next round (a longer ban leaves it the reclaim path).
        engine.ban_duration = Duration::from_millis(300);
        let config = ServiceConfig {
            round_interval: Duration::from_millis(200),
            confirmation_poll: Duration::from_millis(100),
            deposit_csv: 500,
            ..ServiceConfig::local(engine)
        };
        let inner = SqliteStore::open(self.store_path()).unwrap();
        let store = Arc::new(KillableCoordinatorStore { inner, kill });
        let service = CoordinatorService::start(
            config,
            &self.identity,
            self.key.clone(),
            store,
            ChainBackend::Dev(self.ledger.clone()),
        )
        .unwrap();
        let uri = service.uri("127.0.0.1").unwrap();
        (service, uri)
    }

    /// The coordinator's SQLite file, read as a restarted process would (a fresh
    /// connection, no wrapper).
    pub fn read(&self) -> SqliteStore {
        SqliteStore::open(self.store_path()).unwrap()
    }
}

/// A wallet's home: its SQLite file and the one deposit it owns.
pub struct WalletHome {
    pub dir: PathBuf,
    pub deposit: OutPoint,
}

impl WalletHome {
    pub fn store_path(&self) -> PathBuf {
        self.dir.join("wallet.sqlite")
    }

    /// Makes the wallet for the coordinator at `uri` and funds one deposit from the dev
    /// faucet.
    pub async fn create(dir: &Path, uri: &str) -> WalletHome {
        std::fs::create_dir_all(dir).unwrap();
        let inner = WalletSqlite::open(dir.join("wallet.sqlite")).unwrap();
        let store = Arc::new(KillableWalletStore { inner, kill: Kill::idle() });
        let chain = client::dev_chain(uri).await.unwrap();
        let client = Client::create(store, chain, uri).await.unwrap();
        let deposit = client.dev_fund(bitcoin::Amount::from_sat(200_000)).await.unwrap();
        WalletHome { dir: dir.to_owned(), deposit }
    }

    /// Opens the wallet from its file, as `cohort` does at every start, behind `kill`,
    /// reaching the coordinator (and its dev chain) at `uri`.
    pub async fn open(&self, uri: &str, kill: Arc<Kill>) -> WalletClient {
        let inner = WalletSqlite::open(self.store_path()).unwrap();
        let store = Arc::new(KillableWalletStore { inner, kill });
        let chain = client::dev_chain(uri).await.unwrap();
        Client::open(store, chain).unwrap().with_coordinator(uri)
    }

    /// The wallet's SQLite file, read as a restarted process would.
    pub fn read(&self) -> WalletSqlite {
        WalletSqlite::open(self.store_path()).unwrap()
    }

    /// The exit paths this wallet's file holds for the funding transaction `funding_txid`.
    pub fn exit_paths_for(&self, funding_txid: Txid) -> Vec<ExitPathRecord> {
        let paths = self.read().exit_paths().unwrap();
        paths.into_iter().filter(|p| p.funding_txid == funding_txid).collect()
    }
}
