//! The crash matrix (issue 8, item 7): each persisted step of a full round, on either
//! side, killed before its write reaches SQLite and right after it commits; the side is
//! then rebuilt from its own SQLite file through the product's start-up path (the
//! coordinator's `CoordinatorService::start`, which runs `recover`; the wallet's
//! `Client::open` and `Client::deposits`), the round is retried until it settles, and
//! what "loses nothing" means is checked concretely (see `check_settled`). The
//! coordinator is also killed a second time while it restarts, and at every write of a
//! faulty round (a wallet dies after storing its exit paths: exclusion, ban, retry).
//!
//! Run it: `cargo test --release -p cohort-coordinator --test crash_matrix -- --nocapture`
//! (`--nocapture` prints the steps enumerated and each case's outcome).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod crash;

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::{OutPoint, Txid};
use cohort_common::chain::Chain;
use cohort_coordinator::store::{BatchStatus, CoordinatorStore, RegistrationStatus};
use cohort_participant::client::JoinRequest;
use cohort_participant::store::{DepositStatus, ParticipantStore};
use tokio::task::JoinHandle;

use crash::{CoordinatorHome, Kill, WalletHome, When, WALLETS};

/// Which side is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Coordinator,
    /// The first wallet; the others stay honest and alive.
    Wallet,
}

/// One cell of the matrix.
#[derive(Debug, Clone, Copy)]
struct Case {
    side: Side,
    /// The 1-based index of the write, counted from the service's start (coordinator) or
    /// from the start of the wallet's join.
    k: usize,
    when: When,
    /// For the coordinator: killed again at this write of the restarted process (its
    /// recovery, or what it resumes), before it is restarted for good.
    again: Option<(usize, When)>,
    /// For the coordinator: in a round where the first wallet is killed at [`FAULT`], so
    /// that the writes only faults make (exclusion, ban, aborted attempt, the retry) are
    /// among the steps.
    faulty: bool,
}

/// Where the first wallet dies in a faulty round: its exit paths stored, its deposit not
/// signed (the coordinator excludes and bans it and retries the batch without it).
const FAULT: (usize, When) = (4, When::After);

impl std::fmt::Display for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} write {} {:?}", self.side, self.k, self.when)?;
        if let Some((j, when)) = self.again {
            write!(f, ", restart write {j} {when:?}")?;
        }
        if self.faulty {
            write!(f, ", faulty round")?;
        }
        Ok(())
    }
}

/// How many cases run at once (each has its own coordinator, chain and wallets).
const PARALLEL: usize = 6;

/// How many rounds the survivors may take to settle after the crash.
const SETTLE_PASSES: usize = 4;

fn base_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cohort-crash-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A join of one wallet, run as its own task (a kill unwinds only that task).
fn spawn_join(client: crash::WalletClient) -> JoinHandle<Result<String, String>> {
    tokio::spawn(async move {
        let report = client.join(JoinRequest::default()).await;
        report.map(|r| format!("{:?}", r.outcome)).map_err(|e| e.to_string())
    })
}

async fn wait_all(joins: Vec<JoinHandle<Result<String, String>>>) -> Vec<String> {
    let mut ended = Vec::new();
    for j in joins {
        let out = tokio::time::timeout(Duration::from_secs(60), j).await.expect("a join ends");
        ended.push(match out {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => format!("error: {e}"),
            Err(e) if e.is_panic() => "killed".to_owned(),
            Err(e) => format!("task: {e}"),
        });
    }
    ended
}

/// What a run found, for the matrix's summary.
#[derive(Debug)]
struct Ran {
    /// The coordinator's writes in order, up to the end of round 1 (reference run).
    coordinator_writes: Vec<&'static str>,
    /// The first wallet's writes during its join (reference run).
    wallet_writes: Vec<&'static str>,
    /// Which write the kill fell on.
    fell_on: Option<&'static str>,
    /// Which write of the restarted coordinator the second kill fell on.
    again_fell_on: Option<&'static str>,
    /// Rounds the survivors needed after the crash.
    settle_passes: usize,
}

/// Runs one case (or, with `None`, the reference run that counts the writes, in a faulty
/// round if `faulty`).
async fn run_case(dir: &Path, case: Option<Case>, faulty: bool) -> Ran {
    let home = CoordinatorHome::new(&dir.join("coordinator"));
    let coordinator_kill = match case {
        Some(Case { side: Side::Coordinator, k, when, .. }) => Kill::at(k, when),
        _ => Kill::counting(),
    };
    let (service, uri) = home.start(coordinator_kill.clone());
    let uri = uri.to_string();
    let mut wallets = Vec::new();
    for i in 0..WALLETS {
        wallets.push(WalletHome::create(&dir.join(format!("wallet{i}")), &uri).await);
    }
    let wallet_kill = match case {
        Some(Case { side: Side::Wallet, k, when, .. }) => Kill::at(k, when),
        _ if faulty => Kill::at(FAULT.0, FAULT.1),
        _ => Kill::counting(),
    };
    let mut joins = Vec::new();
    for (i, w) in wallets.iter().enumerate() {
        let kill = if i == 0 { wallet_kill.clone() } else { Kill::counting() };
        joins.push(spawn_join(w.open(&uri, kill).await));
    }

    let mut service = Some(service);
    let mut uri = uri;
    let mut paths_at_kill: Option<BTreeSet<Txid>> = None;
    let mut again_fell_on = None;
    match case.map(|c| c.side) {
        Some(Side::Coordinator) => {
            // Until the kill falls (the joins may end first: the last writes follow the
            // `Confirmed` the wallets hear).
            let deadline = Instant::now() + Duration::from_secs(30);
            while !coordinator_kill.dead() {
                assert!(Instant::now() < deadline, "{case:?}: the kill never fell");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // The process is gone: its sockets close with it.
            service.take().unwrap().shutdown("killed").await;
            wait_all(joins).await;
            check_after_coordinator_kill(&home, &wallets);
            if let Some((j, when)) = case.and_then(|c| c.again) {
                again_fell_on = kill_again(&home, j, when).await;
                check_after_coordinator_kill(&home, &wallets);
            }
            let before = home.read().unfinished_batches().unwrap();
            let (restarted, new_uri) = home.start(Kill::counting());
            check_recovery(&restarted, &before);
            service = Some(restarted);
            uri = new_uri.to_string();
        }
        Some(Side::Wallet) => {
            let outcomes = wait_all(joins).await;
            assert!(wallet_kill.dead(), "{case:?}: the kill never fell: {outcomes:?}");
            // The killed wallet's file as it restarts from it: every funding txid its
            // deposit is recorded signed into has the wallet's exit paths.
            let file = wallets[0].read();
            let paths = file.exit_paths().unwrap();
            let status = file.deposit(&wallets[0].deposit).unwrap().unwrap().status;
            if let DepositStatus::InBatch { funding_txids } = &status {
                for t in funding_txids {
                    assert!(
                        paths.iter().any(|p| p.funding_txid == *t && p.leaf_key_index.is_some()),
                        "{case:?}: recorded signed into {t} without its paths"
                    );
                }
            }
            paths_at_kill = Some(paths.iter().map(|p| p.funding_txid).collect());
        }
        None => {
            let outcomes = wait_all(joins).await;
            for (i, o) in outcomes.iter().enumerate() {
                if faulty && i == 0 {
                    // Killed in its store task (the exit paths are written off the
                    // runtime): the join ends with that task's error.
                    assert!(wallet_kill.dead(), "reference run: {outcomes:?}");
                } else {
                    assert!(o.starts_with("Confirmed"), "reference run: {outcomes:?}");
                }
            }
        }
    }
    let mut wallet_writes = wallet_kill.log();
    if case.is_none() {
        // The coordinator's round 1 ends with its `Finished` state.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !coordinator_kill.log().contains(&"set_round_state(Finished)") {
            assert!(Instant::now() < deadline, "round 1 never finished");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        wallet_writes = wallet_kill.log();
    }
    let mut coordinator_writes = coordinator_kill.log();
    if let Some(end) = coordinator_writes.iter().position(|w| *w == "set_round_state(Finished)") {
        coordinator_writes.truncate(end + 1);
    }
    let fell_on = match case.map(|c| c.side) {
        Some(Side::Coordinator) => coordinator_kill.fell_on(),
        Some(Side::Wallet) => wallet_kill.fell_on(),
        None => None,
    };

    let settle_passes = settle(&home, &wallets, &uri, case).await;
    check_settled(&home, &wallets, case, paths_at_kill.as_ref()).await;
    if let Some(Case { side: Side::Wallet, .. }) = case {
        check_exit(&wallets[0], &uri).await;
    }
    if let Some(service) = service {
        service.shutdown("case over").await;
    }
    Ran { coordinator_writes, wallet_writes, fell_on, again_fell_on, settle_passes }
}

/// Starts the killed coordinator again and kills it at write `j` of that process: in
/// `recover` (on the starting thread, before it serves anything) or in what the engine
/// thread resumes. Returns the write it fell on.
async fn kill_again(home: &CoordinatorHome, j: usize, when: When) -> Option<&'static str> {
    let kill = Kill::at(j, when);
    let started = std::panic::catch_unwind(AssertUnwindSafe(|| home.start(kill.clone())));
    match started {
        Ok((service, _)) => {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !kill.dead() {
                assert!(Instant::now() < deadline, "the second kill never fell");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            service.shutdown("killed again").await;
        }
        Err(_) => assert!(kill.dead(), "the start failed without the kill"),
    }
    kill.fell_on()
}

/// Every wallet restarts from its file (`Client::open`, then `deposits`, which settles
/// what the chain shows and releases interrupted registrations) and joins again while its
/// deposit is still its own, until every deposit is in a confirmed batch. Returns how many
/// passes it took.
async fn settle(
    home: &CoordinatorHome,
    wallets: &[WalletHome],
    uri: &str,
    case: Option<Case>,
) -> usize {
    let mut outcomes = Vec::new();
    for pass in 0..SETTLE_PASSES {
        // The chain moves on: a funding transaction a restarted coordinator broadcast
        // again waits in the mempool for a block (the dev chain mines one only after a
        // round's own broadcast).
        home.ledger.mine(1);
        let mut joins = Vec::new();
        for w in wallets {
            let client = w.open(uri, Kill::counting()).await;
            client.deposits().await.unwrap();
            let status = client.store().deposit(&w.deposit).unwrap().unwrap().status;
            match status {
                DepositStatus::Batched { .. } => {}
                // Still the wallet's: offered again (a deposit signed into an attempt
                // that never reached the chain counts as offerable).
                DepositStatus::Unspent | DepositStatus::InBatch { .. } => {
                    joins.push(spawn_join(client));
                }
                other => panic!("{case:?}: wallet deposit left {other:?} after a restart"),
            }
        }
        if joins.is_empty() {
            return pass;
        }
        let ended = wait_all(joins).await;
        if ended.iter().any(|o| o.starts_with("Refused")) {
            // A wallet killed inside a batch is banned for a while (`ban_duration`).
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        outcomes.push(ended);
    }
    panic!("{case:?}: not settled after {SETTLE_PASSES} rounds: {outcomes:?}");
}

/// Right after the coordinator's kill, before any restart: every funding transaction the
/// chain knows is one the coordinator's file holds as complete (it never broadcasts
/// before its store write), and every deposit the chain shows spent was spent by one.
fn check_after_coordinator_kill(home: &CoordinatorHome, wallets: &[WalletHome]) {
    let store = home.read();
    let batches: Vec<_> = store
        .recent_rounds(10)
        .unwrap()
        .iter()
        .flat_map(|r| store.batches_of_round(r.round).unwrap())
        .collect();
    for b in &batches {
        let txid = b.funding_tx.compute_txid();
        if home.ledger.confirmations(&txid).unwrap().is_some() {
            assert!(
                b.status.is_committed() || matches!(b.status, BatchStatus::Confirmed { .. }),
                "the chain knows {txid}, stored {:?}",
                b.status
            );
        }
    }
    for w in wallets {
        if home.ledger.utxo(&w.deposit).unwrap().is_none() {
            let spender =
                batches.iter().find(|b| spends(home, &b.funding_tx.compute_txid(), &w.deposit));
            assert!(
                spender.is_some(),
                "deposit {} spent by a tx the coordinator forgot",
                w.deposit
            );
        }
    }
}

/// The restarted coordinator's recovery matches its file: every attempt stored complete
/// is resumed (rebroadcast), every other unfinished attempt aborted.
fn check_recovery(
    service: &cohort_coordinator::service::CoordinatorService,
    before: &[cohort_coordinator::store::BatchRecord],
) {
    let recovery = service.recovery();
    let committed: Vec<_> = before.iter().filter(|b| b.status.is_committed()).cloned().collect();
    assert_eq!(recovery.rebroadcast, committed, "resumed attempts");
    let aborted: Vec<_> = before
        .iter()
        .filter(|b| !b.status.is_committed())
        .map(|b| (b.round, b.batch, b.attempt))
        .collect();
    assert_eq!(recovery.aborted, aborted, "aborted attempts");
}

/// Whether `txid`, known to the chain, spends `deposit`.
fn spends(home: &CoordinatorHome, txid: &Txid, deposit: &OutPoint) -> bool {
    home.ledger
        .transaction(txid)
        .is_some_and(|tx| tx.input.iter().any(|i| i.previous_output == *deposit))
}

/// After settling: nothing is lost.
///
/// - every wallet's deposit is spent by a funding transaction `T` confirmed on the chain,
///   its stored status says `Batched { T }`, and it holds exit paths for `T` (its own leaf
///   among them, every path rooted at `T:0`, every node fully signed);
/// - the killed wallet, when `T` comes from the round it was killed in, already held those
///   paths in its file at the kill (it never signs a deposit without them);
/// - the coordinator's file holds `T` as a confirmed attempt with its signed tree and its
///   members' registrations completed, and no two attempts it did not abort spend the same
///   deposit in different transactions (nothing conflicting co-signed after a restart).
async fn check_settled(
    home: &CoordinatorHome,
    wallets: &[WalletHome],
    case: Option<Case>,
    paths_at_kill: Option<&BTreeSet<Txid>>,
) {
    // The coordinator records a confirmation at its next poll after the block: wait for
    // it (bounded) before reading its file.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !coordinator_caught_up(home, wallets) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let store = home.read();
    let rounds = store.recent_rounds(100).unwrap();
    let mut by_txid = BTreeMap::new();
    let mut spent_by: BTreeMap<OutPoint, BTreeSet<Txid>> = BTreeMap::new();
    for r in &rounds {
        for b in store.batches_of_round(r.round).unwrap() {
            let txid = b.funding_tx.compute_txid();
            if !matches!(b.status, BatchStatus::Aborted { .. }) {
                for i in &b.funding_tx.input {
                    spent_by.entry(i.previous_output).or_default().insert(txid);
                }
            }
            by_txid.insert(txid, b);
        }
    }
    for (deposit, txids) in &spent_by {
        assert_eq!(txids.len(), 1, "{case:?}: {deposit} in several live attempts: {txids:?}");
    }
    for (i, w) in wallets.iter().enumerate() {
        let file = w.read();
        let status = file.deposit(&w.deposit).unwrap().unwrap().status;
        assert!(home.ledger.utxo(&w.deposit).unwrap().is_none(), "{case:?}: wallet {i} unspent");
        let DepositStatus::Batched { funding_txid: t } = status else {
            panic!("{case:?}: wallet {i}'s deposit is {status:?}, not batched")
        };
        assert!(home.ledger.confirmations(&t).unwrap().unwrap_or(0) >= 1, "{case:?}: {t}");
        assert!(spends(home, &t, &w.deposit), "{case:?}: {t} does not spend wallet {i}'s deposit");
        let paths = w.exit_paths_for(t);
        assert!(
            paths.iter().any(|p| p.leaf_key_index.is_some()),
            "{case:?}: wallet {i} holds no exit path to its own leaf in {t}: {paths:?}"
        );
        for p in &paths {
            let root = p.path.first().expect("a path has a root");
            assert_eq!(root.input[0].previous_output, OutPoint { txid: t, vout: 0 });
            assert!(p.path.iter().all(|n| n.input.iter().all(|i| !i.witness.is_empty())));
        }
        let batch = by_txid.get(&t).unwrap_or_else(|| panic!("{case:?}: coordinator forgot {t}"));
        assert!(matches!(batch.status, BatchStatus::Confirmed { .. }), "{case:?}: {batch:?}");
        let tree = store.signed_tree(batch.round, batch.batch).unwrap();
        assert!(tree.is_some_and(|t| !t.is_empty()), "{case:?}: signed tree of {t} lost");
        let regs = store.registrations_of_round(batch.round).unwrap();
        let member = regs.iter().find(|r| r.deposits.contains(&w.deposit)).expect("registered");
        assert_eq!(member.status, RegistrationStatus::Completed, "{case:?}: wallet {i}");
        if i == 0 && batch.round == 1 {
            if let Some(at_kill) = paths_at_kill {
                assert!(at_kill.contains(&t), "{case:?}: deposit signed into {t} without paths");
            }
        }
    }
}

/// Whether the coordinator's file shows every wallet's batch confirmed with its
/// registrations completed.
fn coordinator_caught_up(home: &CoordinatorHome, wallets: &[WalletHome]) -> bool {
    let store = home.read();
    let Ok(rounds) = store.recent_rounds(100) else { return false };
    wallets.iter().all(|w| {
        let Ok(Some(d)) = w.read().deposit(&w.deposit) else { return false };
        let DepositStatus::Batched { funding_txid } = d.status else { return false };
        rounds.iter().any(|r| {
            let batches = store.batches_of_round(r.round).unwrap_or_default();
            let regs = store.registrations_of_round(r.round).unwrap_or_default();
            batches.iter().any(|b| {
                b.funding_tx.compute_txid() == funding_txid
                    && matches!(b.status, BatchStatus::Confirmed { .. })
            }) && regs
                .iter()
                .filter(|r| r.deposits.contains(&w.deposit))
                .any(|r| r.status == RegistrationStatus::Completed)
        })
    })
}

/// The killed wallet, restarted, takes its own leaf out of its confirmed batch alone,
/// with the paths it stored (the real exit tool on the dev chain, mining what it waits
/// for): the paths are complete and valid, not only present.
async fn check_exit(wallet: &WalletHome, uri: &str) {
    let client = wallet.open(uri, Kill::counting()).await;
    let status = client.store().deposit(&wallet.deposit).unwrap().unwrap().status;
    let DepositStatus::Batched { funding_txid } = status else { panic!("{status:?}") };
    let own = wallet.exit_paths_for(funding_txid);
    let own = own.iter().find(|p| p.leaf_key_index.is_some()).expect("an own leaf");
    let report = client.exit_mining(funding_txid, own.leaf, Default::default()).await.unwrap();
    assert!(report.reclaim_txid.is_some(), "the own leaf was not swept: {report:?}");
}

/// Every case of one side, `PARALLEL` at a time; returns each case with what it found.
async fn run_matrix(name: &str, cases: Vec<Case>) -> Vec<(Case, Result<Ran, String>)> {
    let base = base_dir(name);
    let semaphore = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
    let mut tasks = Vec::new();
    for case in cases {
        let permit = semaphore.clone().acquire_owned().await.unwrap();
        let dir = base.join(case.to_string().replace([' ', ','], "-"));
        tasks.push(tokio::spawn(async move {
            let ran = run_caught(dir, case).await;
            drop(permit);
            (case, ran)
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let _ = std::fs::remove_dir_all(&base);
    results
}

/// Runs one case in its own task, a failure as its panic message.
async fn run_caught(dir: PathBuf, case: Case) -> Result<Ran, String> {
    let ran = tokio::spawn(async move {
        let ran = run_case(&dir, Some(case), case.faulty).await;
        let _ = std::fs::remove_dir_all(&dir);
        ran
    })
    .await;
    ran.map_err(|e| match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a kill outside the case".to_owned()),
        Err(e) => e.to_string(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_at_every_write_loses_nothing() {
    let started = Instant::now();
    let base = base_dir("reference");
    let reference = run_case(&base.join("plain"), None, false).await;
    let faulty = run_case(&base.join("faulty"), None, true).await;
    let _ = std::fs::remove_dir_all(&base);
    println!("coordinator writes in a faulty round: {:?}", faulty.coordinator_writes);
    println!("coordinator writes in a round: {:?}", reference.coordinator_writes);
    println!("wallet writes in a join: {:?}", reference.wallet_writes);
    assert!(reference.coordinator_writes.len() >= 10, "{reference:?}");
    assert!(reference.wallet_writes.contains(&"store_exit_paths"), "{reference:?}");
    let both = [When::Before, When::After];
    let (coordinator, wallet) = (&reference.coordinator_writes, &reference.wallet_writes);
    let mut cases = Vec::new();
    for k in 1..=coordinator.len() {
        for when in both {
            cases.push(Case { side: Side::Coordinator, k, when, again: None, faulty: false });
        }
    }
    // Killed again while restarting: a kill before write k leaves the file a kill after
    // write k - 1 does, so every state the file can be in is one after a write.
    for k in 1..=coordinator.len() {
        for j in 1..=2 {
            for again in both {
                let when = When::After;
                let again = Some((j, again));
                cases.push(Case { side: Side::Coordinator, k, when, again, faulty: false });
            }
        }
    }
    for k in 1..=wallet.len() {
        for when in both {
            cases.push(Case { side: Side::Wallet, k, when, again: None, faulty: false });
        }
    }
    let faulty_steps = &faulty.coordinator_writes;
    for k in 1..=faulty_steps.len() {
        for when in both {
            cases.push(Case { side: Side::Coordinator, k, when, again: None, faulty: true });
        }
    }
    let all = run_matrix("cases", cases).await;
    let mut failed = Vec::new();
    for (case, ran) in &all {
        let steps = match (case.side, case.faulty) {
            (Side::Coordinator, false) => coordinator,
            (Side::Coordinator, true) => faulty_steps,
            (Side::Wallet, _) => wallet,
        };
        let want = steps[case.k - 1];
        match ran {
            Ok(ran) if ran.fell_on == Some(want) => println!(
                "{case}: fell on {want}{}, settled in {} more round(s)",
                ran.again_fell_on.map(|w| format!(", then on {w}")).unwrap_or_default(),
                ran.settle_passes
            ),
            Ok(ran) => {
                println!("{case}: FAILED: fell on {:?}, not {want}", ran.fell_on);
                failed.push(case.to_string());
            }
            Err(why) => {
                println!("{case}: FAILED: {why}");
                failed.push(case.to_string());
            }
        }
    }
    println!("{} cases in {:.1} s", all.len(), started.elapsed().as_secs_f64());
    assert!(failed.is_empty(), "{} case(s) lost something: {failed:?}", failed.len());
}
