//! What the coordinator service tests share: a service fixture on a data directory
//! (the `--dev` service on the embedded ledger, or on another chain backend), and
//! in-process participants running the participant's own driver over QUIC, stopped at
//! chosen steps.
// Each test binary uses a part of it.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::hashes::Hash;
use bitcoin::{Amount, TxOut};
use cohort_common::chain::Chain;
use cohort_common::exit::p2tr_single;
use cohort_common::keys::Keypair;
use cohort_common::ledger::Ledger;
use cohort_common::messages::{ToCoordinator, ToParticipant};
use cohort_common::params::{LeafOutput, TreeParams, DEFAULT_EXIT_CSV};
use cohort_common::scripts::DepositScript;
use cohort_coordinator::engine::CoordinatorConfig;
use cohort_coordinator::service::{ChainBackend, CoordinatorService, ServiceConfig};
use cohort_coordinator::store::SqliteStore;
use cohort_participant::driver::{
    spawn_reader, Driver, DriverError, DriverSetup, Inbox, Outcome, Progress, SessionSink,
};
use cohort_participant::session::{OwnedDeposit, SessionConfig};
use cohort_participant::store::{
    DepositRecord, DepositStatus, MemoryStore as ParticipantMemoryStore, ParticipantStore,
};
use cohort_transport::{Client, CoordinatorUri, FramedSend, Identity, Limits};
use tokio::sync::mpsc;

pub const N: usize = 5;

pub struct Fixture {
    pub dir: PathBuf,
    pub identity: Identity,
    pub key: Keypair,
    pub ledger: Arc<Ledger>,
}

impl Fixture {
    pub fn new(name: &str) -> Fixture {
        let dir =
            std::env::temp_dir().join(format!("cohort-service-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let identity = Identity::load_or_create(&dir).unwrap();
        Fixture { dir, identity, key: Keypair::random(), ledger: Arc::new(Ledger::new()) }
    }

    /// A `--dev`-equivalent service on this data dir, with its store.
    pub fn start(&self) -> (CoordinatorService, Arc<SqliteStore>, CoordinatorUri) {
        self.start_on(ChainBackend::Dev(self.ledger.clone()))
    }

    /// The same service on another chain backend.
    pub fn start_on(
        &self,
        chain: ChainBackend,
    ) -> (CoordinatorService, Arc<SqliteStore>, CoordinatorUri) {
        self.start_with(chain, N, TreeParams { radix: 2, max_depth: 4 })
    }

    /// The service on `chain` with rounds that close once `participants` registered,
    /// building trees of shape `tree`.
    pub fn start_with(
        &self,
        chain: ChainBackend,
        participants: usize,
        tree: TreeParams,
    ) -> (CoordinatorService, Arc<SqliteStore>, CoordinatorUri) {
        let mut engine = CoordinatorConfig::new(p2tr_single(&Keypair::random()));
        engine.tree = tree;
        engine.registration_window = Duration::from_secs(10);
        engine.max_registrations = participants;
        engine.phase_timeout = Duration::from_secs(5);
        let config = ServiceConfig {
            round_interval: Duration::from_secs(60),
            confirmation_poll: Duration::from_millis(200),
            deposit_csv: 1_000,
            metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
            admin_socket: Some(self.dir.join("admin.sock")),
            ..ServiceConfig::local(engine)
        };
        let store = Arc::new(SqliteStore::open(self.dir.join("coordinator.sqlite")).unwrap());
        let service = CoordinatorService::start(
            config,
            &self.identity,
            self.key.clone(),
            store.clone(),
            chain,
        )
        .unwrap();
        let uri = service.uri("127.0.0.1").unwrap();
        (service, store, uri)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Completes the round.
    Honest,
    /// Never confirms that its exit paths are stored (so never signs its deposits).
    StallAtPersist,
    /// Drops its connection once it has signed the tree.
    QuitAfterProposal,
    /// Checks the proposal, then never sends its tree signatures (stays connected).
    StallAtProposal,
    /// Honest, but hears `Finalized` name another txid than the batch's (a lying
    /// coordinator, played by rewriting the message on its way in).
    LiedToAtFinalized,
}

/// What a participant reports to the test.
#[derive(Debug)]
pub enum Report {
    Registered,
    Proposed,
    Persisting {
        attempt: u32,
    },
    /// Where the participant's stored deposits stand once its driver ended (sent just
    /// before `Done`).
    Deposits(Vec<DepositStatus>),
    /// The driver raised an alarm (the coordinator contradicted what it signed).
    Alarm(String),
    /// How the driver ended (its error as text).
    Done(Result<Outcome, String>),
}

/// Funds a deposit for a fresh user on the fixture's ledger (the dev side requests have
/// their own tests; a service on an external chain has none).
pub fn fund(fx: &Fixture, amount: Amount) -> OwnedDeposit {
    let user = Keypair::random();
    let script = DepositScript::new(user.public, fx.key.public, 1_000).unwrap();
    let spk = script.script_pubkey();
    let outpoint = fx.ledger.faucet(&spk, amount).unwrap();
    let utxo = fx.ledger.utxo(&outpoint).unwrap().expect("funded output");
    assert_eq!(utxo.txout, TxOut { value: amount, script_pubkey: spk });
    OwnedDeposit { outpoint, txout: utxo.txout, script, key: user }
}

pub fn session_config(deposit: OwnedDeposit) -> SessionConfig {
    SessionConfig {
        remainder_script: p2tr_single(&deposit.key),
        deposits: vec![deposit],
        leaves: vec![LeafOutput {
            script_pubkey: p2tr_single(&Keypair::random()),
            amount: Amount::from_sat(50_000),
        }],
        max_fee: Amount::from_sat(20_000),
        limits: cohort_participant::session::ProposalLimits::default(),
    }
}

/// The driver's link: what it sends goes out, except that a staller never sends its tree
/// signatures (it reports the proposal and holds the connection open, silent).
struct Link {
    send: FramedSend<ToCoordinator>,
    mode: Mode,
    reports: mpsc::UnboundedSender<Report>,
}

impl SessionSink for Link {
    async fn send_msg(&mut self, msg: ToCoordinator) -> Result<(), DriverError> {
        if self.mode == Mode::StallAtProposal && matches!(msg, ToCoordinator::TreeSigs(_)) {
            let _ = self.reports.send(Report::Proposed);
            std::future::pending::<()>().await;
        }
        self.send.send_msg(msg).await
    }
}

/// Runs one participant's driver (the one `cohort join` runs) over QUIC until it ends,
/// stopping it where `mode` says.
pub async fn drive(
    client: Client,
    config: SessionConfig,
    mode: Mode,
    reports: mpsc::UnboundedSender<Report>,
) {
    let (send, recv) = client.open_session().await.unwrap();
    let (mut inbox, _reader) = spawn_reader(recv);
    if mode == Mode::LiedToAtFinalized {
        inbox = lie_about_finalized(inbox);
    }
    // The participant's store holds its deposit, as a wallet's does after `fund`.
    let store = Arc::new(ParticipantMemoryStore::new());
    for d in &config.deposits {
        let deposit = DepositRecord {
            outpoint: d.outpoint,
            txout: d.txout.clone(),
            key_index: 0,
            deposit_csv: d.script.csv(),
            status: DepositStatus::Unspent,
        };
        store.put_deposit(&deposit).unwrap();
    }
    let outpoints: Vec<_> = config.deposits.iter().map(|d| d.outpoint).collect();
    let driver = Driver::with_setup(store.clone(), DriverSetup::new(config, 0, DEFAULT_EXIT_CSV));
    let observed = reports.clone();
    let mut attempt = 0;
    let observer = move |step: &Progress| {
        match step {
            Progress::Registered { .. } => {
                let _ = observed.send(Report::Registered);
            }
            // The tree signatures are sent before this step is reported.
            Progress::TreeSigned { attempt: a, .. } => {
                attempt = *a;
                if mode == Mode::QuitAfterProposal {
                    return ControlFlow::Break(());
                }
            }
            // Reported with the paths on disk, before any deposit signature.
            Progress::ExitPathsStored { .. } => {
                let _ = observed.send(Report::Persisting { attempt });
                if mode == Mode::StallAtPersist {
                    return ControlFlow::Break(());
                }
            }
            Progress::Alarm { what } => {
                let _ = observed.send(Report::Alarm(what.clone()));
            }
            _ => {}
        }
        ControlFlow::Continue(())
    };
    let mut link = Link { send, mode, reports: reports.clone() };
    let result = driver.run(&mut link, &mut inbox, observer).await;
    match mode {
        // Connected and silent from here on.
        Mode::StallAtPersist => std::future::pending::<()>().await,
        Mode::QuitAfterProposal => client.close("leaving"),
        Mode::Honest | Mode::StallAtProposal | Mode::LiedToAtFinalized => {}
    }
    let statuses = outpoints.iter().map(|o| store.deposit(o).unwrap().unwrap().status).collect();
    let _ = reports.send(Report::Deposits(statuses));
    let _ = reports.send(Report::Done(result.map_err(|e| e.to_string())));
}

/// Relays `inbox`, naming a made-up txid in every `Finalized`.
fn lie_about_finalized(mut inbox: Inbox) -> Inbox {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(mut item) = inbox.recv().await {
            if let Ok(ToParticipant::Finalized(f)) = &mut item {
                f.txid = bitcoin::Txid::from_byte_array([0xee; 32]);
            }
            if tx.send(item).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// Funds one deposit per mode on the fixture's ledger, then starts their participants.
pub async fn participants(
    fx: &Fixture,
    uri: &CoordinatorUri,
    modes: &[Mode],
) -> (Vec<OwnedDeposit>, mpsc::UnboundedReceiver<Report>) {
    let deposits: Vec<OwnedDeposit> =
        (0..modes.len()).map(|i| fund(fx, Amount::from_sat(200_000 + 1_000 * i as u64))).collect();
    let rx = start_participants(uri, &deposits, modes).await;
    (deposits, rx)
}

/// Connects one participant per deposit and starts its driver in `modes[i]`.
pub async fn start_participants(
    uri: &CoordinatorUri,
    deposits: &[OwnedDeposit],
    modes: &[Mode],
) -> mpsc::UnboundedReceiver<Report> {
    let (tx, rx) = mpsc::unbounded_channel();
    for (deposit, mode) in deposits.iter().zip(modes) {
        let client = Client::connect(uri, &Limits::default()).await.unwrap();
        tokio::spawn(drive(client, session_config(deposit.clone()), *mode, tx.clone()));
    }
    rx
}

pub async fn next_report(rx: &mut mpsc::UnboundedReceiver<Report>) -> Report {
    tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("a report in time")
        .expect("a report")
}

/// The first message of a fresh session must announce `round`.
pub async fn expect_announce(uri: &CoordinatorUri, round: u64) {
    let client = Client::connect(uri, &Limits::default()).await.unwrap();
    let (_send, mut recv) = client.open_session().await.unwrap();
    let Some(ToParticipant::RoundAnnounce(announce)) = recv.recv().await.unwrap() else {
        panic!("no announce")
    };
    assert_eq!(announce.round, round);
}
