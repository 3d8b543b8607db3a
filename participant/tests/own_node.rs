//! A participant with its own `bitcoind -regtest`: `cohort init --chain node` on the
//! node, a deposit paid on the node and found there, a round with a coordinator running
//! on the same node (`--chain bitcoind`), the confirmation seen on the participant's own
//! node, then an exit and a reclaim with the coordinator shut down; a node on another
//! network is refused, and a node that is down is reported within seconds.
//!
//! The same participant steps run again against a `--dev` coordinator's embedded ledger,
//! through the `bitcoind` JSON-RPC endpoint it serves: one participant code path, two
//! chains (the test's own calls go through the same RPC client too).
//!
//! The binary comes from `COHORT_BITCOIND` or `PATH` (`scripts/bitcoind.sh` builds one);
//! without one the test skips with a message, unless `CI` is set: then it fails.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::{Amount, Network, ScriptBuf, TxOut};
use cohort_chain_rpc::regtest::{find_bitcoind, free_port, mine, spend, RegtestNode};
use cohort_chain_rpc::{BitcoindChain, RpcError};
use cohort_common::chain::Chain;
use cohort_common::exit::p2tr_single;
use cohort_common::keys::Keypair;
use cohort_common::ledger::Ledger;
use cohort_common::params::TreeParams;
use cohort_coordinator::engine::CoordinatorConfig;
use cohort_coordinator::service::{ChainBackend, CoordinatorService, ServiceConfig};
use cohort_coordinator::store::MemoryStore;
use cohort_participant::chain::{ChainSetting, NodeSettings, ProbeError};
use cohort_participant::cli::{self, ChainArgs, ChainKind, CliError, Context};
use cohort_participant::client::ClientError;
use cohort_participant::driver::Outcome;
use cohort_participant::exit::ReclaimItem;
use cohort_participant::store::DepositStatus;
use cohort_participant::store::{ParticipantStore, SqliteStore};
use cohort_participant::wallet::Wallet;
use cohort_participant::withdraw::WithdrawError;
use cohort_transport::Identity;

const DEPOSIT_CSV: u16 = 200;
const EXIT_CSV: u16 = 20;

/// A coordinator service on `chain` whose rounds close once `participants` registered.
fn coordinator(chain: ChainBackend, participants: usize, network: Network) -> CoordinatorService {
    let mut engine = CoordinatorConfig::new(p2tr_single(&Keypair::random()));
    engine.tree = TreeParams { radix: 2, max_depth: 4 };
    engine.exit_csv = EXIT_CSV;
    engine.registration_window = Duration::from_secs(30);
    engine.max_registrations = participants;
    engine.phase_timeout = Duration::from_secs(5);
    let config =
        ServiceConfig { network, deposit_csv: DEPOSIT_CSV, ..ServiceConfig::local(engine) };
    CoordinatorService::start(
        config,
        &Identity::generate().unwrap(),
        Keypair::random(),
        Arc::new(MemoryStore::new()),
        chain,
    )
    .unwrap()
}

/// The chain options naming `node` by URL and data directory (its cookie).
fn node_args(node: &RegtestNode) -> ChainArgs {
    ChainArgs {
        chain: Some(ChainKind::Node),
        bitcoind_url: Some(node.url()),
        bitcoind_datadir: Some(node.datadir().to_path_buf()),
        ..ChainArgs::default()
    }
}

fn wallet(ctx: &Context) -> Wallet {
    let store = SqliteStore::open(ctx.data_dir.join(cli::STORE_FILE)).unwrap();
    Wallet::load(&store).unwrap()
}

/// Where the test's coins come from.
enum Funds {
    /// The miner's mature coinbases on a `bitcoind` node (the oldest last, for `pop`).
    Coinbases { miner: Keypair, coins: Vec<(bitcoin::OutPoint, TxOut)> },
    /// The dev ledger's faucet.
    Faucet(Arc<Ledger>),
}

impl Funds {
    /// Matures coinbases for `miner` on the node of `chain`.
    fn coinbases(chain: &BitcoindChain, miner: Keypair) -> Funds {
        let spk = p2tr_single(&miner);
        mine(chain, 110, &spk).unwrap();
        let mut coins: Vec<_> = chain
            .script_utxos(&spk)
            .unwrap()
            .into_iter()
            .map(|(o, u)| (u.height, o, u.txout))
            .collect();
        coins.sort_by_key(|(h, _, _)| std::cmp::Reverse(*h));
        Funds::Coinbases { miner, coins: coins.into_iter().map(|(_, o, t)| (o, t)).collect() }
    }

    /// Pays each script its amount in one new block.
    fn pay(&mut self, chain: &BitcoindChain, to: &[(ScriptBuf, Amount)]) {
        let (miner, coins) = match self {
            Funds::Faucet(ledger) => {
                ledger.faucet_many(to).unwrap();
                return;
            }
            Funds::Coinbases { miner, coins } => (miner, coins),
        };
        let coin = coins.pop().unwrap();
        let mut outputs: Vec<TxOut> =
            to.iter().map(|(s, a)| TxOut { value: *a, script_pubkey: s.clone() }).collect();
        let paid: Amount = outputs.iter().map(|o| o.value).sum();
        let change = coin.1.value - paid - Amount::from_sat(5_000);
        outputs.push(TxOut { value: change, script_pubkey: p2tr_single(miner) });
        let tx = spend(&[coin], outputs, miner).unwrap();
        chain.broadcast(&tx).unwrap();
        mine(chain, 1, &p2tr_single(miner)).unwrap();
    }
}

/// Mines a block every 500 ms until dropped.
struct Miner {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Miner {
    fn start(chain: Arc<BitcoindChain>, script: ScriptBuf) -> Miner {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(500));
                mine(&chain, 1, &script).unwrap();
            }
        });
        Miner { stop, thread: Some(thread) }
    }
}

impl Drop for Miner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_participant_uses_its_own_node_for_everything() {
    let Some(bin) = find_bitcoind() else { return };
    let started = Instant::now();
    let node = RegtestNode::start(&bin).unwrap();
    let chain = Arc::new(node.chain().unwrap());
    let funds = Funds::coinbases(&chain, Keypair::random());
    let service = coordinator(ChainBackend::External(chain.clone()), 5, Network::Regtest);
    let dir = everything(&chain, funds, service, Some(&node)).await;
    the_node_s_own_refusals(&node, &chain, &dir).await;
    eprintln!("a_participant_uses_its_own_node_for_everything: {:?}", started.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_participant_steps_pass_on_a_dev_coordinator_s_chain() {
    let started = Instant::now();
    let ledger = Arc::new(Ledger::new());
    let service = coordinator(ChainBackend::Dev(ledger.clone()), 5, Network::Regtest);
    let addr = service.dev_rpc_addr().expect("a dev coordinator serves its chain");
    let settings = NodeSettings::dev_ledger(&addr.ip().to_string(), addr.port());
    let chain = Arc::new(BitcoindChain::connect(settings.config(Network::Regtest)).unwrap());
    let dir = everything(&chain, Funds::Faucet(ledger), service, None).await;
    eprintln!(
        "the_same_participant_steps_pass_on_a_dev_coordinator_s_chain: {:?}",
        started.elapsed()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The participant's steps on `chain`: on `node` (wallets given `--chain node`) or, with
/// `None`, on the dev coordinator `service`'s chain (wallets take its default). Returns
/// the wallets' directory.
async fn everything(
    chain: &Arc<BitcoindChain>,
    mut funds: Funds,
    service: CoordinatorService,
    node: Option<&RegtestNode>,
) -> PathBuf {
    let dev = node.is_none();
    let miner_spk = p2tr_single(&Keypair::random());
    let label = if dev { "dev" } else { "node" };
    let dir: PathBuf =
        std::env::temp_dir().join(format!("cohort-own-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let uri = service.uri("127.0.0.1").unwrap().to_string();

    // Seven wallets on the chain: a, b, e, f and g join a round (five leaves, so some exit
    // paths are three nodes deep), c only reclaims, d withdraws.
    let mut ctxs = Vec::new();
    for name in ["a", "b", "c", "d", "e", "f", "g"] {
        let ctx = match node {
            Some(node) => Context::new(dir.join(name)).with_chain(node_args(node)),
            None => Context::new(dir.join(name)),
        };
        let init = cli::init(&ctx, &uri).await.unwrap();
        assert_eq!(init.coordinator.dev, dev);
        let store = SqliteStore::open(ctx.data_dir.join(cli::STORE_FILE)).unwrap();
        let setting = ChainSetting::load(&store).unwrap();
        if dev {
            assert_eq!(setting, Some(ChainSetting::CoordinatorDev));
        } else {
            assert!(matches!(setting, Some(ChainSetting::Node(_))));
        }
        // Later commands use the stored setting.
        ctxs.push(Context::new(dir.join(name)));
    }
    let (a, b, c, d) = (&ctxs[0], &ctxs[1], &ctxs[2], &ctxs[3]);
    let (e, f, g) = (&ctxs[4], &ctxs[5], &ctxs[6]);
    let mut payments = Vec::new();
    for ctx in &ctxs {
        let w = wallet(ctx);
        payments.push((w.deposit_script().unwrap().script_pubkey(), Amount::from_sat(300_000)));
        payments.push((w.fee_script(), Amount::from_sat(200_000)));
    }
    funds.pay(chain, &payments);

    // Each finds its deposit on its own chain source (the coordinator's QUIC endpoint
    // serves no chain requests).
    for ctx in &ctxs {
        let found = cli::deposits(ctx).await.unwrap();
        assert_eq!(found.deposits.len(), 1, "{found}");
        assert_eq!(found.deposits[0].confirmations, Some(1));
    }
    if !dev {
        // The dev faucet is not on a node.
        let fund = cli::dev_fund(a, Amount::from_sat(10_000)).await;
        assert!(matches!(fund, Err(CliError::NotDev)));
    }
    // Both mine on request.
    let tip = chain.tip_height().unwrap();
    assert_eq!(cli::dev_mine(c, 2).await.unwrap().height, tip + 2);

    // a, b, e, f and g join; blocks come while they do, and each sees the batch on its
    // own node.
    let blocks = Miner::start(chain.clone(), miner_spk.clone());
    let go = |_: &_| ControlFlow::Continue(());
    let args = cli::JoinArgs::default();
    let (ra, rb, re, rf, rg) = tokio::join!(
        cli::join(a, &args, go),
        cli::join(b, &args, go),
        cli::join(e, &args, go),
        cli::join(f, &args, go),
        cli::join(g, &args, go)
    );
    drop(blocks);
    for report in [ra.unwrap(), rb.unwrap(), re.unwrap(), rf.unwrap(), rg.unwrap()] {
        let Outcome::Confirmed { funding_txid: Some(txid), .. } = report.outcome else {
            panic!("{report}")
        };
        assert!(report.confirmed(), "{report}");
        assert!(report.own_confirmations.unwrap() >= 1);
        assert!(chain.confirmations(&txid).unwrap().unwrap() >= 1);
    }

    // d withdraws its deposit cooperatively, then replaces the withdrawal at a higher fee:
    // the node takes the replacement and drops the first.
    let to = p2tr_single(&Keypair::random());
    let address = bitcoin::Address::from_script(&to, Network::Regtest).unwrap().to_string();
    let args = cli::WithdrawArgs {
        address: Some(address),
        fee_rate: Some(2),
        ..cli::WithdrawArgs::default()
    };
    let first = cli::withdraw(d, &args).await.unwrap();
    assert_eq!(chain.confirmations(&first.txid).unwrap(), Some(0), "in the node's mempool");
    let bump = cli::WithdrawArgs {
        bump: Some(first.txid.to_string()),
        fee_rate: Some(5),
        ..cli::WithdrawArgs::default()
    };
    let second = cli::withdraw(d, &bump).await.unwrap();
    assert_eq!(second.replaces, Some(first.txid));
    assert_eq!(
        (second.deposits.clone(), second.destination.clone()),
        (first.deposits.clone(), first.destination.clone())
    );
    assert!(second.fee_sat >= first.fee_sat + second.vsize, "{second}");
    assert_eq!(chain.confirmations(&first.txid).unwrap(), None, "replaced");
    assert_eq!(chain.confirmations(&second.txid).unwrap(), Some(0));
    mine(chain, 1, &miner_spk).unwrap();
    let deposits = cli::deposits(d).await.unwrap();
    assert_eq!(deposits.deposits[0].status, DepositStatus::Withdrawn { txid: second.txid });
    let r = cli::withdraw(d, &bump).await;
    assert!(
        matches!(r, Err(CliError::Client(ClientError::Withdraw(WithdrawError::NotPending { .. })))),
        "{r:?}"
    );
    // On a node the coordinator goes; on the dev chain it is the chain, and stays (the
    // exit asks it nothing but its chain endpoint's port).
    let service = if dev {
        Some(service)
    } else {
        service.shutdown("test over").await;
        None
    };

    // A joiner whose path is three nodes deep exits with the coordinator gone, one step
    // per block: each node with its CPFP child paid from its own fee wallet, then the
    // leaf to its wallet.
    let deep = [a, b, e, f, g]
        .into_iter()
        .find(|ctx| cli::status(ctx).unwrap().exit_paths.iter().any(|p| p.depth == 3))
        .expect("a leaf three nodes deep");
    let mut published = 0;
    let first = cli::exit(deep, "1", &cli::ExitArgs::default()).await.unwrap();
    assert_eq!(first.published.len(), 1, "{first}");
    published += 1;
    let root = first.published[0];
    let child_of = |node| {
        let store = SqliteStore::open(deep.data_dir.join(cli::STORE_FILE)).unwrap();
        store.exit_child(&node).unwrap().expect("the child is stored").child.compute_txid()
    };
    let child = child_of(root);
    assert_eq!(chain.confirmations(&child).unwrap(), Some(0));
    // Asked again at the same rate, in the same block: nothing to do.
    let again = cli::exit(deep, "1", &cli::ExitArgs::default()).await.unwrap();
    assert!(again.published.is_empty() && again.replaced.is_empty(), "{again}");
    // A higher rate asked: the child is replaced; the node takes the new one.
    let higher = cli::ExitArgs { fee_rate: Some(first.fee_rate_sat_vb + 10), ..Default::default() };
    let bumped = cli::exit(deep, "1", &higher).await.unwrap();
    assert_eq!(bumped.replaced, vec![root], "{bumped}");
    let second = child_of(root);
    assert_eq!(chain.confirmations(&child).unwrap(), None, "replaced");
    assert_eq!(chain.confirmations(&second).unwrap(), Some(0));
    // A block passes without it (an empty one): replaced again, at the estimate or more.
    let address = bitcoin::Address::from_script(&miner_spk, Network::Regtest).unwrap();
    let _: serde_json::Value = chain
        .rpc()
        .call("generateblock", &[serde_json::json!(address.to_string()), serde_json::json!([])])
        .unwrap();
    let stale = cli::exit(deep, "1", &cli::ExitArgs::default()).await.unwrap();
    assert_eq!(stale.replaced, vec![root], "{stale}");
    let third = child_of(root);
    assert_eq!(chain.confirmations(&second).unwrap(), None, "replaced");
    assert_eq!(chain.confirmations(&third).unwrap(), Some(0));
    // The cap is a cap: a rate asked above it is refused before anything is done.
    let above = cli::ExitArgs { fee_rate: Some(50), max_fee_rate: Some(40), mine: false };
    assert!(matches!(cli::exit(deep, "1", &above).await, Err(CliError::BadArgument(_))));
    mine(chain, 1, &miner_spk).unwrap();
    assert_eq!(chain.confirmations(&third).unwrap(), Some(1));

    let mut rounds = 0;
    let exited = loop {
        let report = cli::exit(deep, "1", &cli::ExitArgs::default()).await.unwrap();
        published += report.published.len();
        if report.exited {
            break report;
        }
        let tip = chain.tip_height().unwrap();
        let wait = report.waiting_for_height.expect("a height to come back at");
        mine(chain, wait.saturating_sub(tip + 1).max(1), &miner_spk).unwrap();
        rounds += 1;
        assert!(rounds < 20, "exit does not finish: {report}");
    };
    assert_eq!(published, 3, "a path three nodes deep: {exited}");
    let reclaim = exited.reclaim_txid.expect("the leaf reclaimed to the wallet");
    assert_eq!(chain.confirmations(&reclaim).unwrap(), Some(0), "in the node's mempool");

    // c reclaims its deposit: not yet, then with --mine (regtest node) it is.
    let early = cli::reclaim(c, false).await.unwrap();
    assert!(matches!(early.deposits[..], [ReclaimItem::Waiting { .. }]), "{early}");
    let done = cli::reclaim(c, true).await.unwrap();
    let [ReclaimItem::Reclaimed { txid, .. }] = done.deposits[..] else { panic!("{done}") };
    assert_eq!(chain.confirmations(&txid).unwrap(), Some(1));
    if let Some(service) = service {
        service.shutdown("test over").await;
    }
    dir
}

/// What only a node shows: one that is down, options that would do nothing, one on
/// another network.
async fn the_node_s_own_refusals(node: &RegtestNode, chain: &Arc<BitcoindChain>, dir: &Path) {
    let (a, b) = (&Context::new(dir.join("a")), &Context::new(dir.join("b")));
    // A node that is down: a clear error within seconds, and the stored setting stays.
    let down = ChainArgs {
        chain: Some(ChainKind::Node),
        bitcoind_url: Some(format!("http://127.0.0.1:{}", free_port().unwrap())),
        bitcoind_user: Some("u".into()),
        bitcoind_password: Some("p".into()),
        ..ChainArgs::default()
    };
    let asked = Instant::now();
    let err = cli::deposits(&b.clone().with_chain(down)).await.unwrap_err();
    assert!(asked.elapsed() < Duration::from_secs(10), "{:?}", asked.elapsed());
    assert!(
        matches!(
            err,
            CliError::Node(ProbeError::Unusable { error: RpcError::Unreachable { .. }, .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("unreachable"), "{err}");
    assert_eq!(cli::deposits(b).await.unwrap().deposits.len(), 1);

    // Options that would do nothing are refused.
    let useless = a.clone().with_chain(node_args(node));
    assert!(matches!(cli::status(&useless), Err(CliError::ChainSettings(_))));

    // A node on another network than the wallet's: refused, no wallet written.
    let signet = coordinator(ChainBackend::External(chain.clone()), 1, Network::Signet);
    // (The cookie named by file: a data directory would be searched for signet's.)
    let regtest_cookie = node.datadir().join("regtest").join(".cookie");
    let wrong = Context::new(dir.join("wrong")).with_chain(ChainArgs {
        chain: Some(ChainKind::Node),
        bitcoind_url: Some(node.url()),
        bitcoind_cookie: Some(regtest_cookie),
        ..ChainArgs::default()
    });
    let err = cli::init(&wrong, &signet.uri("127.0.0.1").unwrap().to_string()).await.unwrap_err();
    match &err {
        CliError::NodeWrongNetwork { node, expected, .. } => {
            assert_eq!(node, "regtest");
            assert_eq!(*expected, Network::Signet);
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("runs on regtest, but this wallet is for signet"), "{err}");
    let store = SqliteStore::open(wrong.data_dir.join(cli::STORE_FILE)).unwrap();
    assert_eq!(store.seed().unwrap(), None);
    signet.shutdown("test over").await;
}
