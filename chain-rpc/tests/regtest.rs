//! The bitcoind backend against real `bitcoind -regtest` processes, each on its own
//! port and data directory and stopped at the end: UTXOs, broadcast, a TRUC zero-fee
//! tree node with its P2A CPFP child as a package, confirmations (also of transactions
//! whose outputs are all spent), a node on the wrong network, a node restart.
//!
//! The binary comes from `COHORT_BITCOIND` or `PATH` (`scripts/bitcoind.sh` builds
//! one). Without one the tests skip with a message, unless `CI` is set: then they fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bitcoin::transaction::Version;
use bitcoin::{Amount, Network, OutPoint, ScriptBuf, Transaction, TxOut};
use cohort_chain_rpc::regtest::{self, find_bitcoind, free_port, RegtestNode};
use cohort_chain_rpc::{BitcoindChain, BitcoindConfig, RetryPolicy, RpcAuth, RpcError};
use cohort_common::chain::{Chain, ChainError, Utxo};
use cohort_common::exit::{cpfp_child, p2tr_single, FeeInput};
use cohort_common::keys::Keypair;
use cohort_common::musig::{self, Contribution};
use cohort_common::params::{LeafOutput, TreeParams};
use cohort_common::tree::{Tree, TreeLeaf};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

/// The `bitcoind` to run, or `None` when the tests should skip.
fn bitcoind() -> Option<PathBuf> {
    find_bitcoind()
}

/// A throwaway regtest node.
type Node = RegtestNode;

fn mine(chain: &BitcoindChain, blocks: u32, script: &ScriptBuf) {
    regtest::mine(chain, blocks, script).unwrap();
}

fn key(rng: &mut StdRng) -> Keypair {
    Keypair::from_rng(rng)
}

/// A version-2 transaction spending `inputs` (key-path outputs of `signer`) to `outputs`.
fn spend(inputs: &[(OutPoint, TxOut)], outputs: Vec<TxOut>, signer: &Keypair) -> Transaction {
    regtest::spend(inputs, outputs, signer).unwrap()
}

/// The confirmed coinbase outputs paying `script`, lowest height first.
fn coinbases(chain: &BitcoindChain, script: &ScriptBuf) -> Vec<(OutPoint, Utxo)> {
    let mut all = chain.script_utxos(script).unwrap();
    all.sort_by_key(|(_, u)| u.height);
    all
}

#[test]
fn finds_utxos_broadcasts_and_sees_confirmations() {
    let Some(bin) = bitcoind() else { return };
    let started = Instant::now();
    let node = Node::start(&bin).unwrap();
    let chain = node.chain().unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    let (a, b) = (key(&mut rng), key(&mut rng));
    let (script_a, script_b) = (p2tr_single(&a), p2tr_single(&b));
    mine(&chain, 101, &script_a);
    assert_eq!(chain.tip_height().unwrap(), 101);

    let utxos = coinbases(&chain, &script_a);
    assert_eq!(utxos.len(), 101);
    assert_eq!(utxos[0].1.height, Some(1));
    assert_eq!(utxos[100].1.height, Some(101));
    let (coinbase, utxo) = utxos[0].clone();
    assert_eq!(chain.utxo(&coinbase).unwrap(), Some(utxo.clone()));

    let pay = TxOut {
        value: utxo.txout.value - Amount::from_sat(1_000),
        script_pubkey: script_b.clone(),
    };
    let tx = spend(&[(coinbase, utxo.txout.clone())], vec![pay.clone()], &a);
    let txid = chain.broadcast(&tx).unwrap();
    assert_eq!(txid, tx.compute_txid());
    assert_eq!(chain.confirmations(&txid).unwrap(), Some(0));
    assert_eq!(chain.utxo(&coinbase).unwrap(), None, "spent in the mempool");
    let new = OutPoint { txid, vout: 0 };
    assert_eq!(
        chain.script_utxos(&script_b).unwrap(),
        vec![(new, Utxo { txout: pay.clone(), height: None })]
    );
    assert_eq!(chain.script_utxos(&script_a).unwrap().len(), 100, "the mempool spend is left out");

    // A conflicting spend paying less fee is refused by the node (one paying more would
    // replace it: Core relays full-RBF replacements).
    let other = TxOut { value: pay.value + Amount::from_sat(500), script_pubkey: script_a.clone() };
    let conflict = spend(&[(coinbase, utxo.txout.clone())], vec![other], &a);
    assert!(matches!(chain.broadcast(&conflict), Err(ChainError::Rejected(_))));

    mine(&chain, 1, &script_a);
    assert_eq!(chain.confirmations(&txid).unwrap(), Some(1));
    assert_eq!(chain.utxo(&new).unwrap().unwrap().height, Some(102));

    // Once every output is spent, the node no longer knows the transaction by txid:
    // the watch finds its block.
    let back =
        TxOut { value: pay.value - Amount::from_sat(1_000), script_pubkey: script_a.clone() };
    let spend_b = spend(&[(new, pay)], vec![back], &b);
    chain.broadcast(&spend_b).unwrap();
    mine(&chain, 2, &script_a);
    assert_eq!(chain.confirmations(&txid).unwrap(), Some(3));
    assert_eq!(chain.confirmations(&spend_b.compute_txid()).unwrap(), Some(2));
    assert_eq!(chain.confirmations(&conflict.compute_txid()).unwrap(), None);
    // A fresh regtest node has no estimate: the fallback.
    assert_eq!(chain.fee_rate().unwrap(), chain.config().fallback_fee_rate);
    eprintln!("finds_utxos_broadcasts_and_sees_confirmations: {:?}", started.elapsed());
}

/// Signs a tree node with every key of its set (all held here).
fn sign_node(
    tree: &Tree,
    index: usize,
    keys: &[&Keypair],
    rng: &mut StdRng,
) -> bitcoin::secp256k1::schnorr::Signature {
    let node = tree.node(index).unwrap();
    let signers: Vec<&Keypair> = tree
        .key_set(index)
        .unwrap()
        .iter()
        .map(|p| *keys.iter().find(|k| k.point == *p).unwrap())
        .collect();
    let secnonces: Vec<_> =
        signers.iter().map(|k| musig::secnonce_from_seed(rng.gen(), &k.point)).collect();
    let pubnonces: Vec<_> = secnonces.iter().map(|s| s.public_nonce()).collect();
    let agg = musig::nonce_agg(&pubnonces).unwrap();
    let contributions: Vec<Contribution> = signers
        .iter()
        .zip(secnonces)
        .zip(pubnonces)
        .map(|((k, secnonce), pubnonce)| Contribution {
            signer: k.point,
            pubnonce,
            psig: musig::sign_partial(&node.key, k, secnonce, &agg, &node.sighash).unwrap(),
        })
        .collect();
    musig::combine(&node.key, &agg, &node.sighash, &contributions).unwrap()
}

#[test]
fn truc_zero_fee_node_and_p2a_cpfp_child_as_a_package() {
    let Some(bin) = bitcoind() else { return };
    let started = Instant::now();
    let node = Node::start(&bin).unwrap();
    let chain = node.chain().unwrap();
    let mut rng = StdRng::seed_from_u64(2);
    let (funder, fee_key) = (key(&mut rng), key(&mut rng));
    let (c1, c2, batch) = (key(&mut rng), key(&mut rng), key(&mut rng));
    mine(&chain, 1, &p2tr_single(&fee_key));
    mine(&chain, 100, &p2tr_single(&funder));
    let (coin, coin_utxo) = coinbases(&chain, &p2tr_single(&funder))[0].clone();
    let (fee_coin, fee_utxo) = coinbases(&chain, &p2tr_single(&fee_key))[0].clone();

    let leaves: Vec<TreeLeaf> = [&c1, &c2]
        .iter()
        .map(|c| TreeLeaf {
            output: LeafOutput { script_pubkey: p2tr_single(c), amount: Amount::from_sat(100_000) },
            cosigner: c.point,
        })
        .collect();
    let mut funding = None;
    let tree = Tree::build(
        leaves.into(),
        batch.point,
        TreeParams { radix: 4, max_depth: 8 },
        None,
        |root| {
            let change = TxOut {
                value: coin_utxo.txout.value - root.value - Amount::from_sat(2_000),
                script_pubkey: p2tr_single(&funder),
            };
            let tx = spend(&[(coin, coin_utxo.txout.clone())], vec![root, change], &funder);
            let outpoint = OutPoint { txid: tx.compute_txid(), vout: 0 };
            funding = Some(tx);
            outpoint
        },
    )
    .unwrap();
    let funding = funding.unwrap();
    chain.broadcast(&funding).unwrap();
    mine(&chain, 1, &p2tr_single(&funder));

    let root = tree.shape().path(0).unwrap()[0];
    let sig = sign_node(&tree, root, &[&c1, &c2, &batch], &mut rng);
    let path = tree.signed_path(0, &|i| (i == root).then_some(sig)).unwrap();
    let parent = path[0].clone();
    assert_eq!(parent.version, Version(3));
    // Zero fee: the node refuses it alone.
    assert!(matches!(chain.broadcast(&parent), Err(ChainError::Rejected(_))));

    let fee = FeeInput { outpoint: fee_coin, txout: fee_utxo.txout, key: fee_key };
    let child = cpfp_child(&parent, &fee, chain.fee_rate().unwrap()).unwrap();
    let (ptxid, ctxid) = chain.broadcast_package(&parent, &child).unwrap();
    assert_eq!((ptxid, ctxid), (parent.compute_txid(), child.compute_txid()));
    assert_eq!(chain.confirmations(&ptxid).unwrap(), Some(0));
    assert_eq!(chain.confirmations(&ctxid).unwrap(), Some(0));
    mine(&chain, 1, &p2tr_single(&funder));
    assert_eq!(chain.confirmations(&ptxid).unwrap(), Some(1));
    assert_eq!(chain.confirmations(&ctxid).unwrap(), Some(1));
    let leaf = chain.utxo(&OutPoint { txid: ptxid, vout: 0 }).unwrap().unwrap();
    assert_eq!(leaf.height, Some(chain.tip_height().unwrap()));
    eprintln!("truc_zero_fee_node_and_p2a_cpfp_child_as_a_package: {:?}", started.elapsed());
}

#[test]
fn refuses_a_node_on_another_network() {
    let Some(bin) = bitcoind() else { return };
    let node = Node::start(&bin).unwrap();
    let err = BitcoindChain::connect(node.config(Network::Signet)).unwrap_err();
    assert_eq!(err, RpcError::WrongNetwork { expected: Network::Signet, node: "regtest".into() });
}

#[test]
fn survives_a_bitcoind_restart() {
    let Some(bin) = bitcoind() else { return };
    let started = Instant::now();
    let mut node = Node::start(&bin).unwrap();
    let chain = Arc::new(node.chain().unwrap());
    let mut rng = StdRng::seed_from_u64(3);
    mine(&chain, 5, &p2tr_single(&key(&mut rng)));
    node.stop();
    // Down: the call retries until the node is back (with a new cookie).
    let restarter = thread::spawn(move || {
        thread::sleep(Duration::from_secs(2));
        node.spawn().unwrap();
        node
    });
    assert_eq!(chain.tip_height().unwrap(), 5);
    let _node = restarter.join().unwrap();
    assert_eq!(chain.fee_rate().unwrap(), chain.config().fallback_fee_rate);
    eprintln!("survives_a_bitcoind_restart: {:?}", started.elapsed());
}

#[test]
fn a_node_that_is_down_is_reported_unreachable() {
    let url = format!("http://127.0.0.1:{}", free_port().unwrap());
    let auth = RpcAuth::UserPass { user: "u".into(), password: "p".into() };
    let mut config = BitcoindConfig::new(url, auth, Network::Regtest);
    config.retry = RetryPolicy {
        first_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
        give_up_after: Duration::from_millis(500),
    };
    match BitcoindChain::connect(config) {
        Err(RpcError::Unreachable { attempts, .. }) => assert!(attempts >= 3, "{attempts}"),
        other => panic!("expected Unreachable, got {other:?}"),
    }
}
