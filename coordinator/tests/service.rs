//! The coordinator service over loopback QUIC with in-process participants driving the
//! real session engine: a full round on the dev ledger, and kill-and-restart at each
//! phase boundary (registration open, after the proposals, after the tree is signed and
//! before deposit signatures, after `Finalized`).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::{Amount, TxOut};
use cohort_common::chain::Chain;
use cohort_common::exit::p2tr_single;
use cohort_common::keys::Keypair;
use cohort_common::ledger::Ledger;
use cohort_common::messages::{RefusalReason, SideRequest, SideResponse, ToParticipant};
use cohort_common::params::{LeafOutput, TreeParams};
use cohort_common::scripts::DepositScript;
use cohort_coordinator::engine::CoordinatorConfig;
use cohort_coordinator::service::{
    now_ms, ChainBackend, CoordinatorService, ServiceConfig, RESTART_REASON,
};
use cohort_coordinator::store::{BatchStatus, CoordinatorStore, SqliteStore};
use cohort_participant::session::{Event, OwnedDeposit, Session, SessionConfig};
use cohort_transport::{Client, CoordinatorUri, Identity, Limits};
use tokio::sync::mpsc;

const N: usize = 5;

struct Fixture {
    dir: PathBuf,
    identity: Identity,
    key: Keypair,
    ledger: Arc<Ledger>,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let dir =
            std::env::temp_dir().join(format!("cohort-service-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let identity = Identity::load_or_create(&dir).unwrap();
        Fixture { dir, identity, key: Keypair::random(), ledger: Arc::new(Ledger::new()) }
    }

    /// A `--dev`-equivalent service on this data dir, with its store.
    fn start(&self) -> (CoordinatorService, Arc<SqliteStore>, CoordinatorUri) {
        let mut engine = CoordinatorConfig::new(p2tr_single(&Keypair::random()));
        engine.tree = TreeParams { radix: 2, max_depth: 4 };
        engine.registration_window = Duration::from_secs(10);
        engine.max_registrations = N;
        engine.phase_timeout = Duration::from_secs(5);
        let config = ServiceConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            engine,
            round_interval: Duration::from_secs(60),
            limits: Limits::default(),
            confirmation_poll: Duration::from_millis(200),
            network: bitcoin::Network::Regtest,
            deposit_csv: 1_000,
        };
        let store = Arc::new(SqliteStore::open(self.dir.join("coordinator.sqlite")).unwrap());
        let service = CoordinatorService::start(
            config,
            &self.identity,
            self.key.clone(),
            store.clone(),
            ChainBackend::Dev(self.ledger.clone()),
        )
        .unwrap();
        let uri = service.uri("127.0.0.1").unwrap();
        (service, store, uri)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Completes the round.
    Honest,
    /// Never confirms that its exit paths are stored (so never signs its deposits).
    StallAtPersist,
    /// Drops its connection once it has signed the tree.
    QuitAfterProposal,
    /// Checks the proposal, then never sends its tree signatures (stays connected).
    StallAtProposal,
}

/// What a participant reports to the test.
#[derive(Debug)]
enum Report {
    Registered,
    Proposed,
    Persisting { attempt: u32 },
    Done(Event),
}

/// Funds a deposit for a fresh user through the dev side requests.
async fn fund(client: &Client, amount: Amount) -> OwnedDeposit {
    let user = Keypair::random();
    let SideResponse::Info(info) = client.request(&SideRequest::Info).await.unwrap() else {
        panic!("no info")
    };
    assert!(info.dev);
    let script = DepositScript::new(user.public, info.coordinator_key, 1_000).unwrap();
    let spk = script.script_pubkey();
    let SideResponse::Funded(outpoint) =
        client.request(&SideRequest::Faucet(spk.clone(), amount)).await.unwrap()
    else {
        panic!("faucet refused")
    };
    let SideResponse::Utxo(Some(utxo)) =
        client.request(&SideRequest::Utxo(outpoint)).await.unwrap()
    else {
        panic!("funded output not found")
    };
    assert_eq!(utxo.txout, TxOut { value: amount, script_pubkey: spk });
    OwnedDeposit { outpoint, txout: utxo.txout, script, key: user }
}

fn session_config(deposit: OwnedDeposit) -> SessionConfig {
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

/// Drives one session over QUIC until it ends (or the connection does).
async fn drive(
    client: Client,
    config: SessionConfig,
    mode: Mode,
    reports: mpsc::UnboundedSender<Report>,
) {
    let (mut send, mut recv) = client.open_session().await.unwrap();
    let mut session = Session::new(config, None);
    loop {
        while let Some(msg) = session.poll_transmit() {
            if mode == Mode::StallAtProposal
                && matches!(msg, cohort_common::messages::ToCoordinator::TreeSigs(_))
            {
                let _ = reports.send(Report::Proposed);
                // Hold the connection open without ever answering.
                std::future::pending::<()>().await;
            }
            if send.send(&msg).await.is_err() {
                return;
            }
        }
        if let Some(event) = session.poll_event() {
            match event {
                Event::Registered { .. } => {
                    let _ = reports.send(Report::Registered);
                }
                Event::PersistExitPaths { batch, attempt, .. } => {
                    let _ = reports.send(Report::Persisting { attempt });
                    if mode != Mode::StallAtPersist {
                        session.exit_paths_persisted(Instant::now(), batch, attempt);
                    }
                }
                Event::ProposalAccepted { .. } if mode == Mode::QuitAfterProposal => {
                    while let Some(msg) = session.poll_transmit() {
                        let _ = send.send(&msg).await;
                    }
                    client.close("leaving");
                    let _ = reports.send(Report::Done(event));
                    return;
                }
                e @ (Event::Confirmed { .. } | Event::Refused(_) | Event::Failed(_)) => {
                    let _ = reports.send(Report::Done(e));
                    return;
                }
                _ => {}
            }
            // Messages the event released go out before anything else happens.
            continue;
        }
        let deadline = session.poll_timeout();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = recv.recv() => match msg {
                Ok(Some(msg)) => session.handle_message(Instant::now(), msg),
                _ => return,
            },
            _ = sleep => session.handle_timeout(Instant::now()),
        }
    }
}

/// Connects and funds one participant per mode, then starts their sessions.
async fn participants(
    uri: &CoordinatorUri,
    modes: &[Mode],
) -> (Vec<OwnedDeposit>, mpsc::UnboundedReceiver<Report>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut deposits = Vec::new();
    for (i, mode) in modes.iter().enumerate() {
        let client = Client::connect(uri, &Limits::default()).await.unwrap();
        let deposit = fund(&client, Amount::from_sat(200_000 + 1_000 * i as u64)).await;
        deposits.push(deposit.clone());
        tokio::spawn(drive(client, session_config(deposit), *mode, tx.clone()));
    }
    (deposits, rx)
}

async fn next_report(rx: &mut mpsc::UnboundedReceiver<Report>) -> Report {
    tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("a report in time")
        .expect("a report")
}

/// The first message of a fresh session must announce `round`.
async fn expect_announce(uri: &CoordinatorUri, round: u64) {
    let client = Client::connect(uri, &Limits::default()).await.unwrap();
    let (_send, mut recv) = client.open_session().await.unwrap();
    let Some(ToParticipant::RoundAnnounce(announce)) = recv.recv().await.unwrap() else {
        panic!("no announce")
    };
    assert_eq!(announce.round, round);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_completes_and_survives_a_restart() {
    let fx = Fixture::new("complete");
    let (service, store, uri) = fx.start();
    let (deposits, mut rx) = participants(&uri, &[Mode::Honest; N]).await;
    let mut confirmed = 0;
    while confirmed < N {
        match next_report(&mut rx).await {
            Report::Done(Event::Confirmed { batch: 0, .. }) => confirmed += 1,
            Report::Done(other) => panic!("participant ended with {other:?}"),
            Report::Persisting { .. } | Report::Registered | Report::Proposed => {}
        }
    }
    for d in &deposits {
        assert!(fx.ledger.utxo(&d.outpoint).unwrap().is_none(), "deposit spent by the funding tx");
    }
    let batches = store.batches_of_round(1).unwrap();
    let last = batches.last().unwrap().clone();
    assert!(matches!(last.status, BatchStatus::Confirmed { .. }), "{:?}", last.status);
    let tree = store.signed_tree(1, 0).unwrap().expect("signed tree stored");
    assert!(!tree.is_empty());
    service.shutdown("test restart").await;
    drop(store);

    // Restarted after the round: the batch and its tree are still known, nothing is
    // aborted, the URI (pin) is the same, and the numbering continues.
    let (service, store, uri2) = fx.start();
    assert_eq!(uri2.pin, uri.pin);
    assert!(service.recovery().aborted.is_empty());
    assert_eq!(service.recovery().last_round, Some(1));
    assert_eq!(store.batches_of_round(1).unwrap().last().unwrap().status, last.status);
    assert_eq!(store.signed_tree(1, 0).unwrap().unwrap(), tree);
    expect_announce(&uri2, 2).await;
    service.shutdown("test over").await;
    let _ = std::fs::remove_dir_all(&fx.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_round_aborts_and_keeps_bans() {
    let fx = Fixture::new("midround");
    let (service, store, uri) = fx.start();
    let mut modes = [Mode::StallAtPersist; N];
    modes[0] = Mode::QuitAfterProposal;
    let (deposits, mut rx) = participants(&uri, &modes).await;
    // The quitter leaves after signing the tree (banned); the others get a second
    // attempt, sign its tree and stall before their deposit signatures.
    let mut persisting = 0;
    while persisting < N - 1 {
        match next_report(&mut rx).await {
            Report::Persisting { attempt: 2 } => persisting += 1,
            Report::Persisting { .. }
            | Report::Registered
            | Report::Proposed
            | Report::Done(Event::ProposalAccepted { .. }) => {}
            Report::Done(other) => panic!("participant ended with {other:?}"),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let batches = store.batches_of_round(1).unwrap();
        if batches.iter().any(|b| b.attempt == 2 && b.status == BatchStatus::TreeSigned) {
            break;
        }
        assert!(Instant::now() < deadline, "tree never recorded: {batches:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let banned = deposits[0].outpoint;
    assert!(store.is_banned(&banned, now_ms()).unwrap());
    service.shutdown("killed").await;
    drop(store);

    let (service, store, uri) = fx.start();
    assert_eq!(service.recovery().aborted, vec![(1, 0, 2)]);
    assert_eq!(service.recovery().bans, 1);
    for b in store.batches_of_round(1).unwrap() {
        assert!(matches!(b.status, BatchStatus::Aborted { .. }), "{b:?}");
        if b.attempt == 2 {
            assert_eq!(b.status, BatchStatus::Aborted { reason: RESTART_REASON.into() });
        }
    }
    // Every deposit is still unspent: its owner can reclaim it or join again.
    for d in &deposits {
        assert!(fx.ledger.utxo(&d.outpoint).unwrap().is_some(), "deposit must be unspent");
    }
    // The numbering continues, and the restarted engine enforces the ban.
    expect_announce(&uri, 2).await;
    let client = Client::connect(&uri, &Limits::default()).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(drive(client, session_config(deposits[0].clone()), Mode::Honest, tx));
    match next_report(&mut rx).await {
        Report::Done(Event::Refused(RefusalReason::Banned(op))) => assert_eq!(op, banned),
        other => panic!("expected a ban refusal, got {other:?}"),
    }
    service.shutdown("test over").await;
    let _ = std::fs::remove_dir_all(&fx.dir);
}

/// Killed with registration still open: the round is aborted on restart, nothing is
/// banned, every deposit is unspent and registers again in the next round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_registration_loses_nothing() {
    let fx = Fixture::new("registration");
    let (service, store, uri) = fx.start();
    // Fewer than N: registration stays open.
    let (deposits, mut rx) = participants(&uri, &[Mode::Honest; 3]).await;
    let mut registered = 0;
    while registered < 3 {
        if let Report::Registered = next_report(&mut rx).await {
            registered += 1;
        }
    }
    service.shutdown("killed").await;
    drop(store);

    let (service, store, uri) = fx.start();
    assert_eq!(service.recovery().last_round, Some(1));
    assert!(service.recovery().aborted.is_empty(), "no batch existed yet");
    assert_eq!(service.recovery().bans, 0);
    for d in &deposits {
        assert!(fx.ledger.utxo(&d.outpoint).unwrap().is_some(), "deposit must be unspent");
        assert!(!store.is_banned(&d.outpoint, now_ms()).unwrap());
    }
    expect_announce(&uri, 2).await;
    // The same deposit registers again in round 2.
    let client = Client::connect(&uri, &Limits::default()).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(drive(client, session_config(deposits[0].clone()), Mode::Honest, tx));
    assert!(matches!(next_report(&mut rx).await, Report::Registered));
    service.shutdown("test over").await;
    let _ = std::fs::remove_dir_all(&fx.dir);
}

/// Killed after the proposals, before any tree signature: the attempt is aborted on
/// restart, nobody is banned (nobody misbehaved), every deposit is unspent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_proposals_aborts_the_attempt() {
    let fx = Fixture::new("proposals");
    let (service, store, uri) = fx.start();
    let (deposits, mut rx) = participants(&uri, &[Mode::StallAtProposal; N]).await;
    let mut proposed = 0;
    while proposed < N {
        if let Report::Proposed = next_report(&mut rx).await {
            proposed += 1;
        }
    }
    assert!(store.batches_of_round(1).unwrap().iter().all(|b| b.status == BatchStatus::Signing));
    service.shutdown("killed").await;
    drop(store);

    let (service, store, uri) = fx.start();
    assert_eq!(service.recovery().aborted, vec![(1, 0, 1)]);
    assert_eq!(service.recovery().bans, 0);
    let batch = store.batches_of_round(1).unwrap().pop().unwrap();
    assert_eq!(batch.status, BatchStatus::Aborted { reason: RESTART_REASON.into() });
    for d in &deposits {
        assert!(fx.ledger.utxo(&d.outpoint).unwrap().is_some(), "deposit must be unspent");
    }
    expect_announce(&uri, 2).await;
    service.shutdown("test over").await;
    let _ = std::fs::remove_dir_all(&fx.dir);
}
