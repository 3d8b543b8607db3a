//! A whole batch built and signed in one process with local keys, no network: the
//! foundation's end-to-end check that the tree, fees, MuSig2 helpers and ledger agree.

use std::collections::HashMap;

use anyhow::{anyhow, Context, Result};
use bitcoin::secp256k1::schnorr;
use bitcoin::{Amount, FeeRate, OutPoint, ScriptBuf, Transaction, TxOut};
use rand::Rng;
use rayon::prelude::*;

use cohort_common::batch::{self, BatchMember, UnsignedBatch};
use cohort_common::exit::{cpfp_child, p2tr_single, reclaim_tx, FeeInput};
use cohort_common::fees::FundingPlan;
use cohort_common::keys::Keypair;
use cohort_common::musig::{
    new_secnonce, nonce_agg, Contribution, KeyAggContext, Point, SigningSession,
};
use cohort_common::params::{FeeSchedule, LeafOutput, TreeParams};
use cohort_common::scripts::{key_spend_sighashes, key_spend_witness, DepositScript};
use cohort_common::tree::Tree;

/// One simulated user: its deposit and the keys it signs with.
#[derive(Debug, Clone)]
pub struct User {
    /// The deposit key U (also the key of its virtual-deposit leaf).
    pub key: Keypair,
    /// Its static deposit script.
    pub deposit: DepositScript,
    /// Its confirmed deposit.
    pub outpoint: OutPoint,
    /// What the deposit holds.
    pub txout: TxOut,
    /// An optional extra fixed leaf it asks for (a plain P2TR payment).
    pub extra_leaf: Option<LeafOutput>,
}

/// A signed batch.
#[derive(Debug)]
pub struct SignedBatch {
    /// The funding transaction, with every deposit input signed.
    pub funding: Transaction,
    /// The outputs its inputs spend.
    pub prevouts: Vec<TxOut>,
    /// The fees.
    pub plan: FundingPlan,
    /// The tree.
    pub tree: Tree,
    /// The final signature of every node.
    pub node_sigs: Vec<schnorr::Signature>,
    /// For each leaf, the index (in the batch's user slice) of its owner.
    pub leaf_owner: Vec<usize>,
    /// For each user of the batch, its remainder leaf.
    pub remainder_leaf: Vec<usize>,
}

impl SignedBatch {
    /// The fully signed path of a leaf.
    pub fn signed_path(&self, leaf: usize) -> Result<Vec<Transaction>> {
        Ok(self.tree.signed_path(leaf, &|i| self.node_sigs.get(i).copied())?)
    }

    /// Every node transaction, signed.
    pub fn signed_nodes(&self) -> Vec<Transaction> {
        self.tree
            .built_nodes()
            .map(|(i, node)| {
                let mut tx = node.tx.clone();
                if let Some(sig) = self.node_sigs.get(i) {
                    tx.input[0].witness = key_spend_witness(sig);
                }
                tx
            })
            .collect()
    }
}

/// Time spent in each phase of building a batch (in milliseconds as JSON).
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct BatchTimings {
    /// Fees, funding transaction, node keys and node transactions.
    #[serde(rename = "build_ms", serialize_with = "crate::run::as_ms")]
    pub build: std::time::Duration,
    /// Nonces, partial signatures and aggregate-first combination of every node.
    #[serde(rename = "sign_tree_ms", serialize_with = "crate::run::as_ms")]
    pub sign_tree: std::time::Duration,
    /// The MuSig2(U, C) signature of every deposit input.
    #[serde(rename = "sign_deposits_ms", serialize_with = "crate::run::as_ms")]
    pub sign_deposits: std::time::Duration,
}

/// Signs `message` under `ctx` with every secret in `signers`, aggregate-first.
pub fn sign_locally(
    ctx: &KeyAggContext,
    message: &[u8; 32],
    signers: &[&Keypair],
) -> Result<schnorr::Signature> {
    let secnonces: Vec<_> =
        signers.iter().map(|k| new_secnonce(&k.point, Some(&k.scalar()), Some(message))).collect();
    let pubnonces: Vec<_> = secnonces.iter().map(|n| n.public_nonce()).collect();
    // One session for every signature and the combination: its final nonce once.
    let session = SigningSession::new(ctx, &nonce_agg(&pubnonces)?, message);
    let contributions = signers
        .iter()
        .zip(secnonces)
        .zip(pubnonces)
        .map(|((signer, secnonce), pubnonce)| {
            Ok(Contribution {
                signer: signer.point,
                pubnonce,
                psig: session.sign(ctx, signer, secnonce)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(session.combine(ctx, &contributions)?)
}

/// Builds and signs one batch of `users`: the batch itself comes from the one batch
/// builder (`common::batch`, as the coordinator's engine builds it); then every node
/// signature and every deposit signature with the users' keys held locally.
#[allow(clippy::too_many_arguments)]
pub fn build_batch<R: Rng>(
    rng: &mut R,
    users: &[User],
    coordinator: &Keypair,
    coordinator_script: &ScriptBuf,
    tree_params: TreeParams,
    schedule: &FeeSchedule,
    exit_csv: u16,
    timings: &mut BatchTimings,
) -> Result<SignedBatch> {
    let start = std::time::Instant::now();
    // The batch key C_b, then a fresh cosigner key for every leaf, in leaf order.
    let batch_key = Keypair::from_rng(rng);
    let mut secrets: HashMap<Point, Keypair> = HashMap::new();
    secrets.insert(batch_key.point, batch_key.clone());
    let members = users
        .iter()
        .map(|user| {
            let fixed: Vec<LeafOutput> = user.extra_leaf.iter().cloned().collect();
            let leaf_keys = (0..=fixed.len())
                .map(|_| {
                    let cosigner = Keypair::from_rng(rng);
                    let point = cosigner.point;
                    secrets.insert(point, cosigner);
                    point
                })
                .collect();
            Ok(BatchMember {
                deposits: vec![(user.outpoint, user.txout.clone())],
                fixed,
                remainder_script: leaf_script(user, coordinator, exit_csv)?,
                max_fee: Amount::from_sat(50_000),
                leaf_keys,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<&BatchMember> = members.iter().collect();
    let UnsignedBatch { plan, mut funding, prevouts, tree, leaf_ranges, leaf_member, .. } =
        batch::build(&refs, batch_key.point, coordinator_script, tree_params, schedule)?;
    let remainder_leaf = leaf_ranges.iter().map(|r| r.end.saturating_sub(1)).collect();
    timings.build += start.elapsed();

    // Every cosigner of every node signs; nodes in parallel.
    let start = std::time::Instant::now();
    let node_sigs = tree
        .built_nodes()
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|(i, node)| {
            let signers: Vec<&Keypair> = node
                .key
                .pubkeys()
                .iter()
                .map(|p| secrets.get(p).ok_or_else(|| anyhow!("no secret for a key of node {i}")))
                .collect::<Result<_>>()?;
            sign_locally(&node.key, &node.sighash, &signers).with_context(|| format!("node {i}"))
        })
        .collect::<Result<Vec<_>>>()?;
    timings.sign_tree += start.elapsed();

    // Deposit inputs: MuSig2(U, C) with the deposit's Taproot tweak.
    let start = std::time::Instant::now();
    let sighashes = key_spend_sighashes(&funding, &prevouts)?;
    let witnesses = users
        .par_iter()
        .zip(&sighashes)
        .map(|(user, sighash)| {
            let ctx = user.deposit.signing_context()?;
            let signers = [&user.key, coordinator];
            Ok(key_spend_witness(&sign_locally(&ctx, sighash, &signers)?))
        })
        .collect::<Result<Vec<_>>>()?;
    for (input, witness) in funding.input.iter_mut().zip(witnesses) {
        input.witness = witness;
    }
    timings.sign_deposits += start.elapsed();
    Ok(SignedBatch {
        funding,
        prevouts,
        plan,
        tree,
        node_sigs,
        leaf_owner: leaf_member,
        remainder_leaf,
    })
}

/// The virtual-deposit leaf script of a user: its key and the coordinator's, `exit_csv`.
pub fn leaf_script(user: &User, coordinator: &Keypair, exit_csv: u16) -> Result<ScriptBuf> {
    Ok(DepositScript::virtual_deposit(user.key.public, coordinator.public, exit_csv)?
        .script_pubkey())
}

/// What an exit cost on chain.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExitCost {
    /// Node transactions published for it (already-published ones are shared).
    pub nodes: usize,
    /// Virtual bytes of everything it published (nodes, CPFP children, the reclaim).
    pub vbytes: u64,
}

/// Publishes the path of `leaf` with CPFP children, one level per block, paying fees
/// from `fee`; nodes already on chain are skipped. Returns the updated fee input.
pub fn publish_path(
    chain: &cohort_common::ledger::Ledger,
    path: &[Transaction],
    mut fee: FeeInput,
    rate: FeeRate,
    cost: &mut ExitCost,
) -> Result<FeeInput> {
    use cohort_common::chain::Chain;
    for tx in path {
        let txid = tx.compute_txid();
        if chain.confirmations(&txid)?.is_some() {
            continue;
        }
        let child = cpfp_child(tx, &fee, rate)?;
        chain.broadcast_package(tx, &child).with_context(|| format!("publishing node {txid}"))?;
        chain.mine(1);
        cost.nodes += 1;
        cost.vbytes += tx.vsize() as u64 + child.vsize() as u64;
        fee = FeeInput {
            outpoint: OutPoint { txid: child.compute_txid(), vout: 0 },
            txout: child.output[0].clone(),
            key: fee.key,
        };
    }
    Ok(fee)
}

/// Spends a user's remainder leaf (a virtual deposit) through its script path after
/// `exit_csv`, to the user's own key-path address.
pub fn reclaim_leaf(
    chain: &cohort_common::ledger::Ledger,
    batch: &SignedBatch,
    user: &User,
    leaf: usize,
    coordinator: &Keypair,
    exit_csv: u16,
    rate: FeeRate,
) -> Result<Transaction> {
    use cohort_common::chain::Chain;
    let (node, vout) =
        batch.tree.shape().leaf_output(leaf).ok_or_else(|| anyhow!("no leaf {leaf}"))?;
    let node = batch.tree.node(node)?;
    let outpoint = OutPoint { txid: node.txid, vout };
    let txout = node.tx.output[vout as usize].clone();
    let script = DepositScript::virtual_deposit(user.key.public, coordinator.public, exit_csv)?;
    let tx = reclaim_tx(&script, &user.key, outpoint, &txout, p2tr_single(&user.key), rate)?;
    chain.broadcast(&tx).context("reclaiming the leaf")?;
    Ok(tx)
}
