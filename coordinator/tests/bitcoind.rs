//! Whole rounds on a real `bitcoind -regtest`, Bitcoin Core's own validation and relay
//! policy judging every transaction: deposits paid from a coinbase, the coordinator
//! service on the bitcoind backend over QUIC, participants running the participant's own
//! driver; the funding transaction enters the node's mempool and confirms.
//!
//! - Twenty participants: then the whole signed tree is published level by level, each
//!   node (TRUC, zero fee, P2A anchor) with a CPFP child as a package, one level per
//!   block, until every leaf output is confirmed on the node: every user's unilateral
//!   exit, on Core.
//! - The node stopped and started again in the middle of a round: the coordinator's
//!   calls wait for it (retries with back-off), and the round still confirms for all.
//!
//! The binary comes from `COHORT_BITCOIND` or `PATH` (`scripts/bitcoind.sh` builds one);
//! without one the test skips with a message, unless `CI` is set: then it fails.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::{Amount, OutPoint, TxOut};
use cohort_chain_rpc::regtest::{find_bitcoind, mine, spend, RegtestNode};
use cohort_chain_rpc::BitcoindChain;
use cohort_common::chain::Chain;
use cohort_common::exit::{cpfp_child, p2tr_single, FeeInput};
use cohort_common::keys::Keypair;
use cohort_common::params::TreeParams;
use cohort_common::scripts::DepositScript;
use cohort_coordinator::service::ChainBackend;
use cohort_coordinator::store::{BatchStatus, CoordinatorStore, SqliteStore};
use cohort_participant::driver::Outcome;
use cohort_participant::session::OwnedDeposit;
use rand::SeedableRng;
use tokio::sync::mpsc::UnboundedReceiver;

use support::{next_report, Fixture, Mode, Report, N};

/// A regtest node with mature coinbases and `users` deposits paid and confirmed on it.
struct Funded {
    node: RegtestNode,
    chain: Arc<BitcoindChain>,
    miner: Keypair,
    miner_spk: bitcoin::ScriptBuf,
    /// The miner's other mature coinbases, oldest first.
    coins: std::vec::IntoIter<(OutPoint, TxOut)>,
    fx: Fixture,
    deposits: Vec<OwnedDeposit>,
}

impl Funded {
    fn new(bin: &std::path::Path, name: &str, users: usize, seed: u64) -> Funded {
        let node = RegtestNode::start(bin).unwrap();
        let chain = Arc::new(node.chain().unwrap());
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let miner = Keypair::from_rng(&mut rng);
        let miner_spk = p2tr_single(&miner);
        // 150 blocks: the coinbases of the first 50 are mature.
        mine(&chain, 150, &miner_spk).unwrap();
        let mut coins = chain.script_utxos(&miner_spk).unwrap();
        coins.sort_by_key(|(_, u)| u.height);
        let mut coins: Vec<_> = coins.into_iter().map(|(o, u)| (o, u.txout)).collect();
        let coin = coins.remove(0);

        // One coinbase pays every user's static deposit address.
        let fx = Fixture::new(name);
        let keys: Vec<Keypair> = (0..users).map(|_| Keypair::from_rng(&mut rng)).collect();
        let scripts: Vec<DepositScript> = keys
            .iter()
            .map(|u| DepositScript::new(u.public, fx.key.public, 1_000).unwrap())
            .collect();
        let mut outputs: Vec<TxOut> = scripts
            .iter()
            .enumerate()
            .map(|(i, s)| TxOut {
                value: Amount::from_sat(200_000 + 1_000 * i as u64),
                script_pubkey: s.script_pubkey(),
            })
            .collect();
        let paid: Amount = outputs.iter().map(|o| o.value).sum();
        let change = coin.1.value - paid - Amount::from_sat(5_000);
        outputs.push(TxOut { value: change, script_pubkey: miner_spk.clone() });
        let deposit_tx = spend(&[coin], outputs.clone(), &miner).unwrap();
        let deposit_txid = chain.broadcast(&deposit_tx).unwrap();
        mine(&chain, 1, &miner_spk).unwrap();
        let deposits = keys
            .into_iter()
            .zip(scripts)
            .enumerate()
            .map(|(i, (key, script))| OwnedDeposit {
                outpoint: OutPoint { txid: deposit_txid, vout: i as u32 },
                txout: outputs[i].clone(),
                script,
                key,
            })
            .collect();
        Funded { node, chain, miner, miner_spk, coins: coins.into_iter(), fx, deposits }
    }

    /// Waits for round 1's batch to be stored finalized and returns its funding txid.
    async fn finalized(store: &SqliteStore) -> bitcoin::Txid {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Some(b) = store.batches_of_round(1).unwrap().pop() {
                if let BatchStatus::Finalized { txid } = b.status {
                    return txid;
                }
            }
            assert!(Instant::now() < deadline, "no funding transaction finalized");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every participant's driver reported its batch confirmed in `txid`.
    async fn all_confirmed(&self, rx: &mut UnboundedReceiver<Report>, txid: bitcoin::Txid) {
        let mut confirmed = 0;
        while confirmed < self.deposits.len() {
            match next_report(rx).await {
                Report::Done(Ok(Outcome::Confirmed { funding_txid, .. })) => {
                    assert_eq!(funding_txid, Some(txid));
                    confirmed += 1;
                }
                Report::Done(other) => panic!("participant ended with {other:?}"),
                _ => {}
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_of_twenty_and_every_exit_on_bitcoind() {
    const USERS: usize = 20;
    let Some(bin) = find_bitcoind() else { return };
    let started = Instant::now();
    let mut f = Funded::new(&bin, "bitcoind", USERS, 11);
    let chain = f.chain.clone();
    // Two leaves per user, four children per node: 40 leaves three levels deep.
    let tree = TreeParams { radix: 4, max_depth: 4 };
    let (service, store, uri) = f.fx.start_with(ChainBackend::External(chain.clone()), USERS, tree);
    let mut rx = support::start_participants(&uri, &f.deposits, &[Mode::Honest; USERS]).await;

    // Core accepted the funding transaction into its mempool.
    let txid = Funded::finalized(&store).await;
    assert_eq!(store.batches_of_round(1).unwrap().len(), 1, "one batch for all");
    assert_eq!(chain.confirmations(&txid).unwrap(), Some(0));
    for d in &f.deposits {
        assert_eq!(chain.utxo(&d.outpoint).unwrap(), None, "spent by the funding transaction");
    }
    mine(&chain, 1, &f.miner_spk).unwrap();
    f.all_confirmed(&mut rx, txid).await;
    service.shutdown("test over").await;

    // Every node, level by level: a package per node, one block per level (TRUC).
    let nodes = store.signed_tree(1, 0).unwrap().expect("signed tree stored");
    let mut on_chain: HashSet<bitcoin::Txid> = HashSet::from([txid]);
    let mut levels = 0;
    while on_chain.len() <= nodes.len() {
        let ready: Vec<_> = nodes
            .iter()
            .filter(|n| !on_chain.contains(&n.compute_txid()))
            .filter(|n| n.input.iter().all(|i| on_chain.contains(&i.previous_output.txid)))
            .collect();
        assert!(!ready.is_empty(), "no publishable node left at level {levels}");
        let rate = chain.fee_rate().unwrap();
        for node in &ready {
            let (outpoint, txout) = f.coins.next().unwrap();
            let fee = FeeInput { outpoint, txout, key: f.miner.clone() };
            let child = cpfp_child(node, &fee, rate).unwrap();
            chain.broadcast_package(node, &child).unwrap();
        }
        mine(&chain, 1, &f.miner_spk).unwrap();
        on_chain.extend(ready.iter().map(|n| n.compute_txid()));
        levels += 1;
    }
    assert!(levels >= 3, "{levels} levels");
    // Every leaf output (fixed leaf and remainder of each user) is confirmed and unspent.
    let spent: HashSet<OutPoint> =
        nodes.iter().flat_map(|n| n.input.iter().map(|i| i.previous_output)).collect();
    let mut leaves = 0;
    for n in &nodes {
        let txid = n.compute_txid();
        // The last output is the P2A anchor, spent by the CPFP child.
        for vout in 0..n.output.len() as u32 - 1 {
            let outpoint = OutPoint { txid, vout };
            if !spent.contains(&outpoint) {
                let utxo = chain.utxo(&outpoint).unwrap().expect("leaf output on the node");
                assert!(utxo.height.is_some());
                leaves += 1;
            }
        }
    }
    assert_eq!(leaves, 2 * USERS, "one fixed leaf and one remainder per user");
    eprintln!(
        "a_round_of_twenty_and_every_exit_on_bitcoind: {} nodes, {levels} levels in {:?}",
        nodes.len(),
        started.elapsed()
    );
    let _ = std::fs::remove_dir_all(&f.fx.dir);
    f.node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bitcoind_restart_mid_round_loses_nothing() {
    let Some(bin) = find_bitcoind() else { return };
    let started = Instant::now();
    let mut f = Funded::new(&bin, "bitcoind-restart", N, 12);
    let chain = f.chain.clone();
    let (service, store, uri) = f.fx.start_on(ChainBackend::External(chain.clone()));
    let mut rx = support::start_participants(&uri, &f.deposits, &[Mode::Honest; N]).await;

    // Every deposit was looked up on the node; then the node goes away while the round
    // builds, signs and broadcasts its funding transaction, and comes back on the same
    // data directory (a new cookie, the mempool reloaded from disk).
    let mut registered = 0;
    while registered < N {
        if let Report::Registered = next_report(&mut rx).await {
            registered += 1;
        }
    }
    tokio::task::block_in_place(|| f.node.stop());
    let before = store.batches_of_round(1).unwrap().pop().map(|b| b.status);
    tokio::time::sleep(Duration::from_secs(3)).await;
    f.node.spawn().unwrap();
    eprintln!("batch status when the node was stopped: {before:?}");

    let txid = Funded::finalized(&store).await;
    // The restarted node has the funding transaction, whether it was broadcast before the
    // stop (and reloaded from mempool.dat) or after the start.
    let deadline = Instant::now() + Duration::from_secs(60);
    while chain.confirmations(&txid).unwrap() != Some(0) {
        assert!(Instant::now() < deadline, "the funding transaction never reached the node");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    mine(&chain, 1, &f.miner_spk).unwrap();
    f.all_confirmed(&mut rx, txid).await;
    for d in &f.deposits {
        assert_eq!(chain.utxo(&d.outpoint).unwrap(), None, "spent by the funding transaction");
    }
    service.shutdown("test over").await;
    eprintln!("a_bitcoind_restart_mid_round_loses_nothing: {:?}", started.elapsed());
    let _ = std::fs::remove_dir_all(&f.fx.dir);
}
