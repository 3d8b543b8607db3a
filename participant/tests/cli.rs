//! The `cohort` commands (as library functions) against an in-process dev coordinator
//! service over loopback QUIC: three wallets join one round and one exits on the dev
//! ledger; participants killed at phase boundaries keep what they stored and lose nothing.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::hashes::Hash;
use bitcoin::{Amount, OutPoint};
use cohort_common::chain::Chain;
use cohort_common::exit::p2tr_single;
use cohort_common::keys::Keypair;
use cohort_common::ledger::Ledger;
use cohort_common::params::{LeafOutput, TreeParams};
use cohort_coordinator::admin::{self, AdminRequest, AdminResponse};
use cohort_coordinator::engine::CoordinatorConfig;
use cohort_coordinator::service::{ChainBackend, CoordinatorService, ServiceConfig};
use cohort_coordinator::store::{CoordinatorStore, MemoryStore};
use cohort_participant::chain::RegtestNodeChain;
use cohort_participant::cli::{self, CliError, Context};
use cohort_participant::client::{self, Client, ClientError, DepositChoice, JoinRequest};
use cohort_participant::driver::CancelError;
use cohort_participant::driver::{DriverError, Outcome, Progress};
use cohort_participant::exit::ExitToolError;
use cohort_participant::store::{DepositStatus, ParticipantStore, SqliteStore};
use cohort_participant::wallet::WalletError;
use cohort_participant::watch::Advice;
use cohort_participant::withdraw::WithdrawError;
use cohort_transport::Identity;
use tokio::sync::broadcast;

const FUND: Amount = Amount::from_sat(300_000);

struct Dev {
    service: CoordinatorService,
    store: Arc<MemoryStore>,
    ledger: Arc<Ledger>,
    uri: String,
    dir: PathBuf,
}

/// A `--dev` coordinator service on loopback whose rounds close once `participants`
/// have registered (or after the window).
fn start(name: &str, participants: usize) -> Dev {
    start_with(name, participants, Keypair::random(), bitcoin::Network::Regtest)
}

/// As [`start`], with the coordinator key `key` and addresses of `network`.
fn start_with(name: &str, participants: usize, key: Keypair, network: bitcoin::Network) -> Dev {
    let dir = std::env::temp_dir().join(format!("cohort-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut engine = CoordinatorConfig::new(p2tr_single(&Keypair::random()));
    engine.tree = TreeParams { radix: 2, max_depth: 4 };
    engine.exit_csv = 20;
    engine.registration_window = Duration::from_secs(30);
    engine.max_registrations = participants;
    engine.phase_timeout = Duration::from_secs(3);
    let config = ServiceConfig {
        network,
        deposit_csv: 200,
        admin_socket: Some(dir.join("admin.sock")),
        ..ServiceConfig::local(engine)
    };
    let ledger = Arc::new(Ledger::new());
    let store = Arc::new(MemoryStore::new());
    let service = CoordinatorService::start(
        config,
        &Identity::generate().unwrap(),
        key,
        store.clone(),
        ChainBackend::Dev(ledger.clone()),
    )
    .unwrap();
    let uri = service.uri("127.0.0.1").unwrap().to_string();
    Dev { service, store, ledger, uri, dir }
}

impl Dev {
    /// A wallet with one funded deposit.
    async fn wallet(&self, name: &str) -> (Context, OutPoint) {
        let ctx = Context::new(self.dir.join(name));
        let init = cli::init(&ctx, &self.uri).await.unwrap();
        assert!(init.coordinator.dev);
        let address = cli::address(&ctx).unwrap();
        assert_eq!(address.address, init.address);
        assert!(address.address.starts_with("bcrt1p"));
        let funded = cli::dev_fund(&ctx, FUND).await.unwrap();
        let deposits = cli::deposits(&ctx).await.unwrap();
        assert_eq!(deposits.deposits.len(), 1);
        assert_eq!(deposits.deposits[0].outpoint, funded.outpoint);
        assert_eq!(deposits.deposits[0].confirmations, Some(1));
        (ctx, funded.outpoint)
    }

    fn unspent(&self, outpoint: &OutPoint) -> bool {
        self.ledger.utxo(outpoint).unwrap().is_some()
    }
}

/// `join` arguments reaching the coordinator at `uri`.
fn via(uri: &str) -> cli::JoinArgs {
    cli::JoinArgs { coordinator: Some(uri.to_owned()), ..cli::JoinArgs::default() }
}

/// Joins, stopping (as a kill would) at the first step `stop` matches.
async fn join_until(
    ctx: &Context,
    stop: impl Fn(&Progress) -> bool + Send,
) -> Result<cli::JoinReport, CliError> {
    cli::join(ctx, &cli::JoinArgs::default(), move |p| {
        if stop(p) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_wallets_join_a_round_and_one_exits() {
    let dev = start("three", 3);
    let (a, da) = dev.wallet("a").await;
    let (b, _) = dev.wallet("b").await;
    let (c, _) = dev.wallet("c").await;

    // Errors are clear, not panics.
    assert!(matches!(
        cli::init(&a, &dev.uri).await,
        Err(CliError::Client(ClientError::Wallet(WalletError::Exists)))
    ));
    assert!(matches!(
        cli::init(&Context::new(dev.dir.join("x")), "cohort://zz@h:1").await,
        Err(CliError::Client(ClientError::BadUri { .. }))
    ));
    assert!(matches!(
        cli::status(&Context::new(dev.dir.join("empty"))),
        Err(CliError::Client(ClientError::Wallet(WalletError::NoSeed)))
    ));
    assert!(!dev.dir.join("empty").exists(), "status created a wallet");
    // One command at a time per wallet: a second join is refused by name, not by SQLite.
    let held = a.lock().unwrap();
    let busy = join_until(&a, |_| false).await;
    assert!(matches!(busy, Err(CliError::Busy { .. })), "{busy:?}");
    drop(held);

    let never = |_: &Progress| false;
    let (ra, rb, rc) =
        tokio::join!(join_until(&a, never), join_until(&b, never), join_until(&c, never));
    let (ra, rb, rc) = (ra.unwrap(), rb.unwrap(), rc.unwrap());
    for r in [&ra, &rb, &rc] {
        assert!(matches!(r.outcome, Outcome::Confirmed { funding_txid: Some(_), .. }), "{r:?}");
        let phases: Vec<_> = r.steps.iter().map(|s| format!("{s}")).collect();
        for want in [
            "registered",
            "proposal checked",
            "tree signed",
            "exit paths stored",
            "deposits signed",
            "finalized",
            "confirmed",
        ] {
            assert!(phases.iter().any(|p| p.starts_with(want)), "missing {want} in {phases:?}");
        }
    }
    assert!(!dev.unspent(&da));

    let status = cli::status(&a).unwrap();
    assert_eq!(status.exit_paths.len(), 1);
    let path = &status.exit_paths[0];
    assert_eq!(path.leaf_key_index, Some(ra.leaf_key_index));
    assert_eq!(path.exit_csv, Some(20));
    assert!(!path.exited);
    let Outcome::Confirmed { funding_txid: Some(funding), .. } = ra.outcome else { unreachable!() };
    assert!(
        matches!(status.deposits[0].status, DepositStatus::Batched { funding_txid } if funding_txid == funding)
    );

    // Unknown leaves are refused by name.
    assert!(matches!(
        cli::exit(&a, "7", &cli::ExitArgs::default()).await,
        Err(CliError::UnknownLeaf(_))
    ));
    assert!(matches!(
        cli::exit(&a, "nonsense:1", &cli::ExitArgs::default()).await,
        Err(CliError::UnknownLeaf(_))
    ));

    // Nothing needs b's attention while its batch is confirmed and untouched.
    let quiet = cli::watch(&b).await.unwrap();
    assert!(quiet.advice.is_empty(), "{quiet}");
    let mine = cli::ExitArgs { mine: true, ..cli::ExitArgs::default() };
    let report = cli::exit(&a, "1", &mine).await.unwrap();
    assert!(report.exited, "{report:?}");
    // a's exit published the root, which is on b's path too: b's watch says so.
    let seen = cli::watch(&b).await.unwrap();
    assert!(
        matches!(
            &seen.advice[..],
            [Advice::NodePublishedByOthers { node, confirmed: true, .. }]
                if *node == report.published[0]
        ),
        "{seen}"
    );
    let reclaim = report.reclaim_txid.expect("the leaf was reclaimed");
    assert!(dev.ledger.confirmations(&reclaim).unwrap().unwrap() >= 1);
    assert!(!report.published.is_empty());
    assert!(cli::status(&a).unwrap().exit_paths[0].exited);
    assert!(matches!(
        cli::exit(&a, &path.id, &cli::ExitArgs::default()).await,
        Err(CliError::Client(ClientError::Exit(ExitToolError::AlreadyExited { .. })))
    ));

    // `exit --all` takes every leaf not exited yet: b's one, then none.
    let all = cli::exit_all(&b, &mine).await.unwrap();
    assert_eq!(all.leaves.len(), 1, "{all}");
    assert!(all.leaves[0].report.as_ref().is_some_and(|r| r.exited), "{all}");
    let none = cli::exit_all(&b, &mine).await.unwrap();
    let quiet = cli::watch(&b).await.unwrap();
    assert!(quiet.advice.is_empty(), "{quiet}");
    assert!(none.leaves.is_empty());
    assert_eq!(none.to_string(), "no leaf left to exit");

    // What the exit paid the wallet can be sent on: part of it, then all the rest.
    let to = p2tr_single(&Keypair::random());
    let address =
        bitcoin::Address::from_script(&to, bitcoin::Network::Regtest).unwrap().to_string();
    let part =
        cli::send(&a, &address, Some(Amount::from_sat(20_000)), Some(2), None).await.unwrap();
    assert_eq!(part.amount_sat, 20_000);
    assert!(part.change_sat > 0, "{part}");
    dev.ledger.mine(1);
    let rest = cli::send(&a, &address, None, Some(2), None).await.unwrap();
    assert_eq!(rest.change_sat, 0);
    dev.ledger.mine(1);
    let paid = dev.ledger.script_utxos(&to).unwrap();
    assert_eq!(paid.len(), 2);
    let r = cli::send(&a, &address, None, None, None).await;
    assert!(matches!(r, Err(CliError::Client(ClientError::Send(_)))), "{r:?}");
    dev.service.shutdown("test over").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_before_deposit_signatures_keeps_paths_and_money() {
    let dev = start("kill", 3);
    let (honest, dh) = dev.wallet("honest").await;
    let (stored, ds) = dev.wallet("stored").await;
    let (early, de) = dev.wallet("early").await;

    let (rh, rs, re) = tokio::join!(
        join_until(&honest, |_| false),
        join_until(&stored, |p| matches!(p, Progress::ExitPathsStored { .. })),
        join_until(&early, |p| matches!(p, Progress::TreeSigned { .. })),
    );
    assert!(matches!(rh.unwrap().outcome, Outcome::Confirmed { .. }));
    assert!(matches!(rs, Err(CliError::Client(ClientError::Driver(DriverError::Stopped(_))))));
    assert!(matches!(re, Err(CliError::Client(ClientError::Driver(DriverError::Stopped(_))))));
    assert!(!dev.unspent(&dh));
    // Neither killed participant's deposit was signed, so neither was spent.
    assert!(dev.unspent(&ds));
    assert!(dev.unspent(&de));

    // A fresh process on the same file finds the stored paths.
    let fresh = SqliteStore::open(stored.data_dir.join(cli::STORE_FILE)).unwrap();
    let paths = fresh.exit_paths().unwrap();
    assert_eq!(paths.len(), 1);
    assert!(paths[0].leaf_key_index.is_some());
    let early_store = SqliteStore::open(early.data_dir.join(cli::STORE_FILE)).unwrap();
    assert!(early_store.exit_paths().unwrap().is_empty());
    // That batch attempt never confirmed: exit says so, and the deposit is reclaimable.
    let id = format!("{}:{}", paths[0].funding_txid, paths[0].leaf);
    assert!(matches!(
        cli::exit(&stored, &id, &cli::ExitArgs::default()).await,
        Err(CliError::Client(ClientError::Exit(ExitToolError::FundingMissing(_))))
    ));
    let reclaimed = cli::reclaim(&stored, true).await.unwrap();
    assert!(
        matches!(reclaimed.deposits[..], [cohort_participant::exit::ReclaimItem::Reclaimed { outpoint, .. }] if outpoint == ds)
    );
    assert!(!dev.unspent(&ds));
    dev.service.shutdown("test over").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_after_finalized_exits_from_a_fresh_process() {
    let dev = start("late", 2);
    let (honest, _) = dev.wallet("honest").await;
    let (late, dl) = dev.wallet("late").await;
    let (rh, rl) = tokio::join!(
        join_until(&honest, |_| false),
        // Killed once the funding tx is out, before its confirmation arrives. (Killing it
        // right after its own deposit signatures, while others still sign, makes today's
        // coordinator abort the attempt: the disconnect counts as a missed deadline.)
        join_until(&late, |p| matches!(p, Progress::Finalized { .. })),
    );
    let rh = rh.unwrap();
    assert!(matches!(rh.outcome, Outcome::Confirmed { .. }));
    assert!(matches!(rl, Err(CliError::Client(ClientError::Driver(DriverError::Stopped(_))))));
    assert!(!dev.unspent(&dl));

    // The restarted participant (new handles on the same file) exits on its own.
    let restarted = Context::new(&late.data_dir);
    let status = cli::status(&restarted).unwrap();
    assert_eq!(status.exit_paths.len(), 1);
    let mine = cli::ExitArgs { mine: true, ..cli::ExitArgs::default() };
    let report = cli::exit(&restarted, "1", &mine).await.unwrap();
    assert!(report.exited && report.reclaim_txid.is_some(), "{report:?}");
    dev.service.shutdown("test over").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_that_is_not_there_is_reported_within_the_connect_timeout() {
    // A port nobody listens on: QUIC hears nothing back, so only the timeout can tell.
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = std::env::temp_dir().join(format!("cohort-cli-absent-{}", std::process::id()));
    let uri = format!("cohort://{}@127.0.0.1:{port}", "ab".repeat(32));
    let err = cli::init(&Context::new(&dir), &uri).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("is the coordinator running"), "{text}");
    assert!(text.contains(&format!("{} s", cli::CONNECT_TIMEOUT.as_secs())), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mining_a_deposit_timeout_at_once_and_the_faucet_refuses_dust() {
    // `reclaim --mine` with the default 14,400-block deposit timeout asks for 14,399
    // blocks: one `generatetoaddress` on the dev chain's endpoint.
    let dev = start("mine", 1);
    let (a, _) = dev.wallet("a").await;
    let before = dev.ledger.tip_height().unwrap();
    let mined = cli::dev_mine(&a, 14_399).await.unwrap();
    assert_eq!(mined.height, before + 14_399);
    let err = cli::dev_fund(&a, Amount::from_sat(1)).await.unwrap_err();
    assert!(err.to_string().contains("dust"), "{err}");
    dev.service.shutdown("test over").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_on_another_network_or_with_another_key_is_refused() {
    let key = Keypair::random();
    let home = start_with("net-home", 1, key.clone(), bitcoin::Network::Regtest);
    let (a, _) = home.wallet("a").await;
    // The same key, on signet: the wallet's deposits and addresses are regtest ones.
    let signet = start_with("net-signet", 1, key, bitcoin::Network::Signet);
    let err = cli::join(&a, &via(&signet.uri), |_| ControlFlow::Continue(())).await;
    assert!(matches!(err, Err(CliError::Client(ClientError::WrongNetwork { .. }))), "{err:?}");
    let other = start("net-other", 1);
    let err = cli::join(&a, &via(&other.uri), |_| ControlFlow::Continue(())).await;
    assert!(matches!(err, Err(CliError::Client(ClientError::WrongCoordinator { .. }))), "{err:?}");
    for dev in [home, signet, other] {
        dev.service.shutdown("test over").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_dev_coordinator_on_a_fresh_chain_is_named_as_such() {
    // The dev chain lives in the coordinator's memory: a restart starts a new one, on
    // which this wallet's deposit does not exist. Saying so beats showing it "spent".
    let key = Keypair::random();
    let first = start_with("reset-1", 1, key.clone(), bitcoin::Network::Regtest);
    let (a, deposit) = first.wallet("a").await;
    first.service.shutdown("restart").await;
    let second = start_with("reset-2", 1, key, bitcoin::Network::Regtest);
    let err = cli::join(&a, &via(&second.uri), |_| ControlFlow::Continue(())).await;
    assert!(matches!(err, Err(CliError::Client(ClientError::DevChainReset { .. }))), "{err:?}");
    let status = cli::status(&a).unwrap();
    assert_eq!(status.deposits[0].outpoint, deposit);
    assert_eq!(status.deposits[0].status, DepositStatus::Unspent, "nothing was marked spent");
    second.service.shutdown("test over").await;
}

/// The wallet example, `participant/examples/join_dev.rs`, run here as a library.
#[path = "../examples/join_dev.rs"]
#[allow(dead_code)]
mod join_dev;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_library_example_joins_a_round_against_a_dev_coordinator() {
    let dev = start("example", 2);
    let run = |name: &str| {
        let (uri, dir) = (dev.uri.clone(), dev.dir.join(name));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            join_dev::join_once(&uri, &dir, move |p| sink.lock().unwrap().push(p.clone())).await
        });
        (task, seen)
    };
    let ((ta, seen_a), (tb, seen_b)) = (run("a"), run("b"));
    for (task, seen) in [(ta, seen_a), (tb, seen_b)] {
        let report = task.await.unwrap().unwrap();
        assert!(report.confirmed(), "{report}");
        assert_eq!(report.deposited_sat, join_dev::DEPOSIT.to_sat());
        // The progress stream carried every step the report lists, in order.
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen, report.steps);
        assert!(matches!(seen.first(), Some(Progress::Announced { .. })), "{seen:?}");
        assert!(matches!(seen.last(), Some(Progress::Confirmed { .. })), "{seen:?}");
        let Outcome::Confirmed { funding_txid: Some(txid), .. } = report.outcome else {
            panic!("{:?}", report.outcome)
        };
        assert!(dev.ledger.confirmations(&txid).unwrap().is_some_and(|n| n >= 1));
    }
    dev.service.shutdown("test over").await;
}

/// A library client on `dev`'s chain for a new wallet in `name`, with one funded deposit.
async fn library_wallet(dev: &Dev, name: &str) -> (Arc<Client<RegtestNodeChain>>, OutPoint) {
    let dir = dev.dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let store = Arc::new(SqliteStore::open(dir.join("wallet.sqlite")).unwrap());
    let chain = client::dev_chain(&dev.uri).await.unwrap();
    let client = Client::create(store, chain, &dev.uri).await.unwrap();
    let deposit = client.dev_fund(FUND).await.unwrap();
    (Arc::new(client), deposit)
}

/// Waits on `progress` for the first step `want` matches.
async fn wait_for(progress: &mut broadcast::Receiver<Progress>, want: fn(&Progress) -> bool) {
    let step = async {
        loop {
            match progress.recv().await {
                Ok(p) if want(&p) => return,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("progress stream closed"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), step).await.expect("the step came");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_library_join_is_cancelled_or_dropped_before_deposit_signatures_and_not_after() {
    let dev = start("cancel", 2);
    let (a, deposit) = library_wallet(&dev, "a").await;
    assert_eq!(a.cancel(), Err(CancelError::NotRunning));

    // Bad requests are refused before the coordinator is asked anything.
    let unknown = OutPoint { txid: bitcoin::Txid::from_byte_array([7; 32]), vout: 0 };
    let only = |o: OutPoint| JoinRequest {
        deposits: DepositChoice::Only([o].into_iter().collect()),
        ..JoinRequest::default()
    };
    let err = a.join(only(unknown)).await;
    assert!(matches!(err, Err(ClientError::DepositNotOffered { .. })), "{err:?}");
    let greedy = JoinRequest {
        leaves: vec![LeafOutput { script_pubkey: p2tr_single(&Keypair::random()), amount: FUND }],
        ..JoinRequest::default()
    };
    let err = a.join(greedy).await;
    assert!(matches!(err, Err(ClientError::LeavesExceedDeposits { .. })), "{err:?}");

    // 1. Dropping the join's future once registered: the deposit is the wallet's again.
    let mut progress = a.subscribe();
    let task = tokio::spawn({
        let a = a.clone();
        async move { a.join(JoinRequest::default()).await }
    });
    wait_for(&mut progress, |p| matches!(p, Progress::Registered { .. })).await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_eq!(a.status().unwrap().deposits[0].status, DepositStatus::Unspent);

    // 2. cancel() once registered: the join ends Cancelled, nothing signed.
    let task = tokio::spawn({
        let a = a.clone();
        async move { a.join(only(deposit)).await }
    });
    wait_for(&mut progress, |p| matches!(p, Progress::Registered { .. })).await;
    assert_eq!(a.cancel(), Ok(()));
    let report = task.await.unwrap().unwrap();
    assert!(matches!(report.outcome, Outcome::Cancelled { .. }), "{:?}", report.outcome);
    assert!(!report.steps.iter().any(|p| matches!(p, Progress::TreeSigned { .. })));
    assert_eq!(a.status().unwrap().deposits[0].status, DepositStatus::Unspent);
    assert!(dev.unspent(&deposit));
    assert_eq!(a.cancel(), Err(CancelError::NotRunning));

    // 3. The same deposit joins the next round with another wallet; a cancel after the
    //    deposit signatures is refused and the batch confirms.
    let (b, _) = dev.wallet("b").await;
    let refused = std::sync::Mutex::new(None);
    let joined = a.join_observed(JoinRequest::default(), |p| {
        if matches!(p, Progress::DepositsSigned { .. }) {
            *refused.lock().unwrap() = Some(a.cancel());
        }
        ControlFlow::Continue(())
    });
    let args = cli::JoinArgs::default();
    let (ra, rb) = tokio::join!(joined, cli::join(&b, &args, |_| ControlFlow::Continue(())));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(ra.confirmed() && rb.confirmed(), "{ra}\n{rb}");
    assert_eq!(*refused.lock().unwrap(), Some(Err(CancelError::DepositsSigned)));
    assert!(!dev.unspent(&deposit));
    dev.service.shutdown("test over").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_cancels_a_cohort_join_before_deposit_signatures() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dev = start("sigint", 2);
    let (a, deposit) = dev.wallet("a").await;
    let data_dir = a.data_dir.clone();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cohort"))
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("join")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut seen = String::new();
        // The round waits for a second participant that never comes: registered, then
        // nothing until Ctrl-C.
        while !seen.contains("registered (") {
            let mut line = String::new();
            assert!(out.read_line(&mut line).unwrap() > 0, "join ended early: {seen}");
            seen.push_str(&line);
        }
        let pid = child.id().to_string();
        assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
        let status = child.wait().unwrap();
        std::io::Read::read_to_string(&mut out, &mut seen).unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        (status.code(), seen, err)
    })
    .await
    .unwrap();
    assert_eq!(code, Some(4), "{stdout}\n{stderr}");
    assert!(stderr.contains("cancelling: no deposit signature was sent"), "{stderr}");
    assert!(stdout.contains("cancelled in phase"), "{stdout}");
    let status = cli::status(&a).unwrap();
    assert_eq!(status.deposits[0].outpoint, deposit);
    assert_eq!(status.deposits[0].status, DepositStatus::Unspent);
    dev.service.shutdown("test over").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_after_the_proposal_costs_the_others_one_retry_and_the_canceller_no_ban() {
    use cohort_coordinator::store::CoordinatorStore;
    let dev = start("late-cancel", 3);
    let (a, deposit) = library_wallet(&dev, "a").await;
    let (b, _) = dev.wallet("b").await;
    let (c, _) = dev.wallet("c").await;
    let joined = a.join_observed(JoinRequest::default(), |p| {
        if matches!(p, Progress::TreeSigned { .. }) {
            assert_eq!(a.cancel(), Ok(()), "tree signatures are not deposit signatures");
        }
        ControlFlow::Continue(())
    });
    let args = cli::JoinArgs::default();
    let go = |_: &Progress| ControlFlow::Continue(());
    let (ra, rb, rc) = tokio::join!(joined, cli::join(&b, &args, go), cli::join(&c, &args, go));
    let ra = ra.unwrap();
    assert!(matches!(ra.outcome, Outcome::Cancelled { .. }), "{:?}", ra.outcome);
    assert!(!ra.steps.iter().any(|p| matches!(p, Progress::DepositsSigned { .. })));
    for report in [rb.unwrap(), rc.unwrap()] {
        assert!(report.confirmed(), "{report}");
        // The batch was proposed again without the canceller.
        assert!(report.steps.iter().any(|p| matches!(p, Progress::Aborted { .. })), "{report}");
    }
    assert!(dev.unspent(&deposit), "the canceller's deposit is still its own");
    assert_eq!(a.status().unwrap().deposits[0].status, DepositStatus::Unspent);
    let bans = dev.store.bans(cohort_participant::driver::now_ms()).unwrap();
    assert!(
        bans.is_empty(),
        "a cancel before deposit signatures is not banned: {bans:?} (ours {deposit})"
    );
    dev.service.shutdown("test over").await;
}

/// `cohort withdraw` with the wallet's arguments and these changes.
fn withdraw_args(address: &str, change: impl FnOnce(&mut cli::WithdrawArgs)) -> cli::WithdrawArgs {
    let mut args = cli::WithdrawArgs { address: Some(address.to_owned()), ..Default::default() };
    change(&mut args);
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_withdrawal_spends_a_deposit_at_once_and_the_deposit_joins_no_round() {
    let dev = start("withdraw", 2);
    let (a, first) = dev.wallet("a").await;
    let second = cli::dev_fund(&a, FUND).await.unwrap().outpoint;
    let (b, _) = dev.wallet("b").await;
    let to = p2tr_single(&Keypair::random());
    let address =
        bitcoin::Address::from_script(&to, bitcoin::Network::Regtest).unwrap().to_string();
    let first_only = |args: &mut cli::WithdrawArgs| args.deposits = vec![first.to_string()];

    // Refused before anything is signed: an address of another network, a deposit that is
    // not the wallet's, a fee rate above the cap, deposits too small for the fee.
    let mainnet = bitcoin::Address::from_script(&to, bitcoin::Network::Bitcoin).unwrap();
    let r = cli::withdraw(&a, &withdraw_args(&mainnet.to_string(), |_| {})).await;
    assert!(matches!(r, Err(CliError::BadArgument(_))), "{r:?}");
    let stranger = OutPoint { vout: 9, ..first };
    let r =
        cli::withdraw(&a, &withdraw_args(&address, |w| w.deposits = vec![stranger.to_string()]))
            .await;
    assert!(
        matches!(
            r,
            Err(CliError::Client(ClientError::Withdraw(WithdrawError::NotWithdrawable { .. })))
        ),
        "{r:?}"
    );
    let r = cli::withdraw(
        &a,
        &withdraw_args(&address, |w| {
            first_only(w);
            w.fee_rate = Some(50);
            w.max_fee_rate = Some(10);
        }),
    )
    .await;
    assert!(
        matches!(
            r,
            Err(CliError::Client(ClientError::Withdraw(WithdrawError::FeeRateTooHigh {
                rate: 50,
                cap: 10
            })))
        ),
        "{r:?}"
    );
    let r = cli::withdraw(
        &a,
        &withdraw_args(&address, |w| {
            first_only(w);
            w.fee_rate = Some(100_000);
            w.max_fee_rate = Some(100_000);
        }),
    )
    .await;
    assert!(
        matches!(r, Err(CliError::Client(ClientError::Withdraw(WithdrawError::TooSmall { .. })))),
        "{r:?}"
    );
    assert!(dev.store.withdrawals().unwrap().is_empty(), "the coordinator signed nothing");

    // The first deposit, at 2 sat/vB: co-signed, published, paying the address.
    let report = cli::withdraw(
        &a,
        &withdraw_args(&address, |w| {
            first_only(w);
            w.fee_rate = Some(2);
        }),
    )
    .await
    .unwrap();
    assert_eq!(report.deposits, vec![first]);
    assert_eq!(report.amount_sat + report.fee_sat, FUND.to_sat());
    assert_eq!(report.fee_sat, 2 * report.vsize);
    let tx = dev.ledger.transaction(&report.txid).expect("the ledger has the withdrawal");
    assert_eq!(
        tx.output,
        vec![bitcoin::TxOut {
            value: Amount::from_sat(report.amount_sat),
            script_pubkey: to.clone()
        }]
    );
    assert!(!dev.unspent(&first) && dev.unspent(&second));
    let recorded = dev.store.withdrawals().unwrap();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].tx.compute_txid(), report.txid);
    let status = |ctx: &Context, outpoint: OutPoint| {
        let status = cli::status(ctx).unwrap();
        status.deposits.into_iter().find(|d| d.outpoint == outpoint).unwrap().status
    };
    assert_eq!(status(&a, first), DepositStatus::Withdrawing { txids: vec![report.txid] });
    // Nothing is left to withdraw twice.
    let r = cli::withdraw(&a, &withdraw_args(&address, first_only)).await;
    assert!(
        matches!(
            r,
            Err(CliError::Client(ClientError::Withdraw(WithdrawError::NotWithdrawable { .. })))
        ),
        "{r:?}"
    );

    // Replaced at a higher fee on the dev chain as on a node: the first one is evicted.
    let bump = cli::WithdrawArgs {
        bump: Some(report.txid.to_string()),
        fee_rate: Some(4),
        ..Default::default()
    };
    let bumped = cli::withdraw(&a, &bump).await.unwrap();
    assert_eq!(bumped.replaces, Some(report.txid));
    assert!(bumped.fee_sat >= report.fee_sat + bumped.vsize, "{bumped}");
    assert_eq!(dev.ledger.confirmations(&report.txid).unwrap(), None);
    assert_eq!(dev.ledger.confirmations(&bumped.txid).unwrap(), Some(0));
    // The operator sees both co-signed withdrawals, newest first.
    let request = AdminRequest::Withdrawals { limit: 10 };
    let listed = admin::request(&dev.dir.join("admin.sock"), &request, Duration::from_secs(10))
        .await
        .unwrap();
    let AdminResponse::Withdrawals(views) = &listed else { panic!("{listed}") };
    let txids: Vec<_> = views.iter().map(|v| v.txid).collect();
    assert_eq!(txids, vec![bumped.txid, report.txid]);
    assert_eq!(views[0].deposits, vec![first]);
    assert_eq!(views[0].in_sat, FUND.to_sat());
    assert_eq!(views[0].out_sat, bumped.amount_sat);
    assert!(listed.to_string().contains(&format!("deposits {first}")), "{listed}");
    assert_eq!(
        status(&a, first),
        DepositStatus::Withdrawing { txids: vec![report.txid, bumped.txid] }
    );
    assert_eq!(dev.store.withdrawals().unwrap().len(), 2);

    // Confirmed, it is withdrawn; the next round takes only the other deposit.
    dev.ledger.mine(1);
    let deposits = cli::deposits(&a).await.unwrap();
    let row = deposits.deposits.iter().find(|d| d.outpoint == first).unwrap();
    assert_eq!(row.status, DepositStatus::Withdrawn { txid: bumped.txid });
    assert!(row.to_string().contains("withdrawn by"), "{row}");
    let never = |_: &Progress| false;
    let (ra, rb) = tokio::join!(join_until(&a, never), join_until(&b, never));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.deposits, vec![second]);
    assert!(matches!(ra.outcome, Outcome::Confirmed { .. }), "{ra:?}");
    assert!(matches!(rb.outcome, Outcome::Confirmed { .. }), "{rb:?}");
    // A batched deposit is not withdrawable.
    let r = cli::withdraw(&a, &withdraw_args(&address, |_| {})).await;
    assert!(
        matches!(r, Err(CliError::Client(ClientError::Withdraw(WithdrawError::NoDeposits)))),
        "{r:?}"
    );

    // A deposit whose timeout (200 blocks here) nears is shown expiring, then timed out.
    let third = cli::dev_fund(&b, FUND).await.unwrap().outpoint;
    let row = |report: &cli::DepositsReport| {
        report.deposits.iter().find(|d| d.outpoint == third).unwrap().clone()
    };
    let fresh = row(&cli::deposits(&b).await.unwrap());
    assert_eq!((fresh.timeout_in, fresh.expiring), (Some(199), false));
    dev.ledger.mine(60);
    let near = row(&cli::deposits(&b).await.unwrap());
    assert_eq!((near.timeout_in, near.expiring), (Some(139), true));
    assert!(near.to_string().contains("expiring: times out in 139 blocks"), "{near}");
    let watched = cli::watch(&b).await.unwrap();
    assert!(
        watched.advice.contains(&Advice::DepositExpiring { outpoint: third, blocks_left: 139 }),
        "{watched}"
    );
    assert!(watched.to_string().contains("withdraw it now"), "{watched}");
    dev.ledger.mine(139);
    let due = row(&cli::deposits(&b).await.unwrap());
    assert_eq!(due.timeout_in, Some(0));
    assert!(due.to_string().contains("timed out: reclaim it"), "{due}");
    let watched = cli::watch(&b).await.unwrap();
    assert!(watched.advice.contains(&Advice::DepositReclaimable { outpoint: third }), "{watched}");
    dev.service.shutdown("test over").await;
}
