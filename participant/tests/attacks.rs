//! Attacks on an honest participant's money and exit, each built against the public
//! session API: the participant refuses with a typed reason and sends no signature.
//! The malleable-funding attack also runs end to end on the embedded ledger, with a
//! participant that lacks the whole-funding check, to show what the check prevents.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Arc;

use bitcoin::hashes::Hash;
use bitcoin::secp256k1::{Message, SECP256K1};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{
    Amount, FeeRate, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness,
};
use cohort_common::chain::{Chain, ChainError, RejectReason};
use cohort_common::codec::Encoded;
use cohort_common::exit::{cpfp_child, p2tr_single, FeeInput};
use cohort_common::keys::Keypair;
use cohort_common::messages::{
    DepositPartial, DepositSigs, NodeNonce, NodePartial, ProposalBody, ToParticipant, TreeLeaf,
    TreeSigs,
};
use cohort_common::musig::{self, PubNonce, SecNonce};
use cohort_common::params::LeafOutput;
use cohort_common::scripts::key_spend_sighash;
use cohort_common::standard::{FundingRuleError, MoneyRangeError, RelayError, FUNDING_SEQUENCE};
use cohort_common::tree::{Scope, TreePlan, TreeShape};
use cohort_participant::session::{
    Event, ExitPath, OwnedDeposit, PhaseName, ProposalError, ProposalLimits, Session,
    SessionConfig, SessionError, SharedCaches,
};

#[cfg(test)]
#[path = "../src/session/testkit.rs"]
mod testkit;

use testkit::{Batch, Kit};

/// Sends party 0 (of `n`) a proposal whose body `tamper` changed after an honest build.
fn refused_body(n: usize, tamper: impl FnOnce(&mut ProposalBody, &Batch, &Kit)) -> ProposalError {
    let mut kit = Kit::new(n, None);
    kit.register_all();
    let batch = kit.build_batch(1);
    let mut body = batch.body.clone();
    tamper(&mut body, &batch, &kit);
    kit.tamper = Kit::body_for(0, body);
    kit.propose(&batch);
    kit.refusal()
}

/// Sends party 0 (of two) a coherent batch whose funding tx `tamper` changed before
/// the tree was built on its txid (so everything else checks out).
fn refused_funding(tamper: impl FnOnce(&Kit, &mut Transaction, &mut Vec<TxOut>)) -> ProposalError {
    let mut kit = Kit::new(2, None);
    kit.register_all();
    let batch = kit.build_batch_with(1, |tx, prevouts| tamper(&kit, tx, prevouts));
    kit.propose(&batch);
    kit.refusal()
}

/// A coordinator-owned UTXO on the ledger and its key.
fn coordinator_utxo(kit: &Kit, script: ScriptBuf, value: Amount) -> (OutPoint, TxOut) {
    let outpoint = kit.ledger.faucet(&script, value).unwrap();
    (outpoint, TxOut { value, script_pubkey: script })
}

/// A P2PKH script of `key` (legacy: its scriptSig is filled in after everyone signed).
fn p2pkh(key: &Keypair) -> ScriptBuf {
    ScriptBuf::new_p2pkh(&bitcoin::PublicKey::new(key.public).pubkey_hash())
}

/// Adds the coordinator's input `(outpoint, prevout)` to a funding tx and pays its value
/// (less 2,000 sats of extra fee for the extra weight) to the coordinator's output.
fn add_input(tx: &mut Transaction, prevouts: &mut Vec<TxOut>, utxo: (OutPoint, TxOut)) {
    let (outpoint, prevout) = utxo;
    tx.input.push(TxIn {
        previous_output: outpoint,
        script_sig: ScriptBuf::new(),
        sequence: FUNDING_SEQUENCE,
        witness: Witness::new(),
    });
    tx.output[1].value += prevout.value - Amount::from_sat(2_000);
    prevouts.push(prevout);
}

/// Signs a P2PKH input in place: this is what changes the funding txid.
fn sign_p2pkh(tx: &mut Transaction, input: usize, key: &Keypair, script: &ScriptBuf) {
    let hash = SighashCache::new(&*tx)
        .legacy_signature_hash(input, script, EcdsaSighashType::All.to_u32())
        .unwrap();
    let msg = Message::from_digest(hash.to_byte_array());
    let sig = bitcoin::ecdsa::Signature {
        signature: SECP256K1.sign_ecdsa(&msg, &key.secret),
        sighash_type: EcdsaSighashType::All,
    };
    let pk = bitcoin::PublicKey::new(key.public);
    tx.input[input].script_sig =
        ScriptBuf::builder().push_slice(sig.serialize()).push_key(&pk).into_script();
}

// ---------------------------------------------------------------------------------
// 1. The funding transaction as a whole.
// ---------------------------------------------------------------------------------

#[test]
fn a_malleable_non_witness_input_is_refused() {
    for kind in ["p2pkh", "p2sh", "bare"] {
        let reason = refused_funding(|kit, tx, prevouts| {
            let key = Keypair::random();
            let script = match kind {
                "p2pkh" => p2pkh(&key),
                "p2sh" => ScriptBuf::new_p2sh(&ScriptBuf::from_bytes(vec![0x51]).script_hash()),
                _ => ScriptBuf::from_bytes(vec![0x51]),
            };
            let utxo = coordinator_utxo(kit, script, Amount::from_sat(100_000));
            add_input(tx, prevouts, utxo);
        });
        assert_eq!(reason, ProposalError::Funding(FundingRuleError::NonWitnessInput { input: 2 }));
    }
}

#[test]
fn a_script_sig_the_coordinator_would_strip_is_refused() {
    // The participants would sign the txid with the scriptSig; the coordinator then
    // broadcasts it without (a witness input's scriptSig must be empty to be valid).
    let reason = refused_funding(|_, tx, _| {
        tx.input[1].script_sig = ScriptBuf::from_bytes(vec![0x01, 0x01]);
    });
    assert_eq!(reason, ProposalError::Funding(FundingRuleError::ScriptSig { input: 1 }));
}

#[test]
fn a_funding_tx_held_as_an_option_is_refused() {
    // A locktime far ahead, final sequences disabled: the coordinator could hold the
    // signed funding tx and publish it when it suits it.
    let reason = refused_funding(|_, tx, _| {
        tx.lock_time = bitcoin::absolute::LockTime::from_consensus(2_000_000);
    });
    assert_eq!(reason, ProposalError::Funding(FundingRuleError::LockTime { got: 2_000_000 }));
    let reason = refused_funding(|_, tx, _| {
        tx.lock_time = bitcoin::absolute::LockTime::from_consensus(1_900_000_000);
    });
    assert!(matches!(reason, ProposalError::Funding(FundingRuleError::LockTime { .. })));
    // A BIP-68 relative lock on one input does the same.
    let reason = refused_funding(|_, tx, _| tx.input[1].sequence = Sequence::from_height(4_000));
    assert_eq!(reason, ProposalError::Funding(FundingRuleError::Sequence { input: 1, got: 4_000 }));
    let reason = refused_funding(|_, tx, _| tx.version = bitcoin::transaction::Version::ONE);
    assert_eq!(reason, ProposalError::Funding(FundingRuleError::Version { got: 1 }));
}

#[test]
fn a_funding_tx_below_the_announced_fee_rate_is_refused() {
    // The coordinator keeps most of the mining fee: the batch would never confirm and
    // the deposits would stay tied up until the coordinator pleases.
    let reason = refused_funding(|_, tx, _| tx.output[1].value += Amount::from_sat(200));
    assert!(
        matches!(reason, ProposalError::Funding(FundingRuleError::FeeRateTooLow { .. })),
        "{reason:?}"
    );
}

#[test]
fn a_non_standard_funding_weight_is_refused() {
    let reason = refused_funding(|_, tx, prevouts| {
        for vout in 0..1_800u32 {
            let txid = Txid::from_byte_array([9; 32]);
            tx.input.push(TxIn {
                previous_output: OutPoint { txid, vout },
                script_sig: ScriptBuf::new(),
                sequence: FUNDING_SEQUENCE,
                witness: Witness::new(),
            });
            let script = p2tr_single(&Keypair::random());
            prevouts.push(TxOut { value: Amount::from_sat(1_000), script_pubkey: script });
        }
    });
    assert!(
        matches!(reason, ProposalError::Funding(FundingRuleError::TooHeavy { .. })),
        "{reason:?}"
    );
}

#[test]
fn a_duplicated_input_is_refused() {
    let reason = refused_funding(|_, tx, prevouts| {
        tx.input.push(tx.input[1].clone());
        prevouts.push(prevouts[1].clone());
    });
    assert!(
        matches!(reason, ProposalError::Funding(FundingRuleError::DuplicateInput { .. })),
        "{reason:?}"
    );
}

// ---------------------------------------------------------------------------------
// 2. Every exit path relays.
// ---------------------------------------------------------------------------------

/// With three parties at radix 2, party 0's leaves 0 and 1 share node 2, and node 1
/// on their path also pays party 1's first leaf (leaf 2) directly.
fn sibling_leaf_script(script: ScriptBuf) -> ProposalError {
    refused_body(3, |body, batch, _| {
        assert_eq!(batch.tree.shape().leaf_output(2), Some((1, 1)));
        body.leaves[2].output.script_pubkey = script;
    })
}

#[test]
fn a_non_standard_output_next_to_an_own_leaf_is_refused() {
    let key = Keypair::random();
    let op_return = ScriptBuf::from_bytes(vec![0x6a, 0x01, 0x00]);
    for script in [p2pkh(&key), ScriptBuf::from_bytes(vec![0x51]), op_return] {
        let reason = sibling_leaf_script(script);
        let expected = RelayError::NonStandardOutput { output: 1 };
        assert_eq!(reason, ProposalError::ExitNotRelayable { node: 1, reason: expected });
    }
}

#[test]
fn a_second_anchor_next_to_an_own_leaf_is_refused() {
    let reason = sibling_leaf_script(ScriptBuf::new_p2a());
    let expected = RelayError::NonStandardOutput { output: 1 };
    assert_eq!(reason, ProposalError::ExitNotRelayable { node: 1, reason: expected });
}

#[test]
fn a_dust_leaf_next_to_an_own_leaf_is_refused() {
    // Cheaper than the relay check: the tree builder refuses dust leaves outright.
    let reason = refused_body(3, |body, _, _| {
        let taken = body.leaves[2].output.amount - Amount::from_sat(1);
        body.leaves[2].output.amount = Amount::from_sat(1);
        body.funding_tx.output[0].value -= taken;
    });
    assert!(matches!(reason, ProposalError::TreeBuild(_)), "{reason:?}");
}

#[test]
fn a_non_standard_leaf_elsewhere_in_the_batch_does_not_concern_us() {
    // Party 2's leaves are on no node of party 0's paths: party 0 signs (party 2's own
    // check refuses the batch, which is its business).
    let mut kit = Kit::new(3, None);
    kit.register_all();
    let batch = kit.build_batch(1);
    let mut body = batch.body.clone();
    body.leaves[5].output.script_pubkey = ScriptBuf::from_bytes(vec![0x51]);
    let encoded = Encoded::new(&body).unwrap();
    kit.deliver(0, ToParticipant::Proposal(Kit::proposal(&batch, 0, &encoded)));
    kit.deliver(2, ToParticipant::Proposal(Kit::proposal(&batch, 2, &encoded)));
    assert!(kit.parties[0].sent_tree_sigs());
    assert!(!kit.parties[2].sent_tree_sigs());
}

// ---------------------------------------------------------------------------------
// 3. Bounded work and bounded exit cost.
// ---------------------------------------------------------------------------------

fn with_limits(kit: &mut Kit, limits: ProposalLimits) {
    kit.reconfigure(0, |config, _| config.limits = limits);
}

#[test]
fn a_batch_above_the_leaf_limit_is_refused_before_key_aggregation() {
    let mut kit = Kit::new(2, None);
    with_limits(&mut kit, ProposalLimits { max_batch_leaves: 3, ..ProposalLimits::default() });
    kit.register_all();
    let batch = kit.build_batch(1);
    // Also break the root script, which only key aggregation could reveal: the limit
    // is what refuses it, so no aggregation ran.
    let mut body = batch.body.clone();
    body.funding_tx.output[0].script_pubkey = p2tr_single(&Keypair::random());
    let encoded = Encoded::new(&body).unwrap();
    kit.deliver(0, ToParticipant::Proposal(Kit::proposal(&batch, 0, &encoded)));
    assert_eq!(kit.refusal(), ProposalError::BatchTooLarge { leaves: 4, max: 3 });
}

/// Pads the batch with `n` coordinator leaves of 1,000 sats funded by a new
/// coordinator input: a coherent batch whose own paths are deeper.
fn pad(body: &mut ProposalBody, kit: &Kit, n: usize) {
    for _ in 0..n {
        body.leaves.push(TreeLeaf {
            output: LeafOutput {
                script_pubkey: p2tr_single(&Keypair::random()),
                amount: Amount::from_sat(1_000),
            },
            cosigner: Keypair::random().point,
        });
    }
    let leaves: Arc<[TreeLeaf]> = body.leaves.clone().into();
    let plan = TreePlan::new(leaves, body.batch_key, body.tree, &Scope::Full, None).unwrap();
    body.funding_tx.output[0] = plan.root_output().unwrap();
    let value = Amount::from_sat(1_000 * n as u64 + 4_000);
    let utxo = coordinator_utxo(kit, p2tr_single(&Keypair::random()), value);
    let (tx, prevouts) = (&mut body.funding_tx, &mut body.funding_prevouts);
    tx.input.push(TxIn {
        previous_output: utxo.0,
        script_sig: ScriptBuf::new(),
        sequence: FUNDING_SEQUENCE,
        witness: Witness::new(),
    });
    prevouts.push(utxo.1);
    tx.output[1].value += Amount::from_sat(2_000);
}

fn padded(limits: ProposalLimits, n: usize) -> (Kit, ProposalError) {
    let mut kit = Kit::new(2, None);
    with_limits(&mut kit, limits);
    kit.register_all();
    let batch = kit.build_batch(1);
    let mut body = batch.body.clone();
    pad(&mut body, &kit, n);
    let encoded = Encoded::new(&body).unwrap();
    let mut proposal = Kit::proposal(&batch, 0, &encoded);
    // Nonces for exactly the padded tree's own path nodes, as a real attacker sends.
    let shape = TreeShape::new(body.leaves.len(), body.tree).unwrap();
    let nodes: BTreeSet<usize> =
        batch.your_leaves[0].iter().flat_map(|&l| shape.path(l as usize).unwrap()).collect();
    let nonce = batch.agg_nonces[0].clone();
    proposal.node_nonces = nodes
        .into_iter()
        .map(|node| NodeNonce { node: node as u32, nonce: nonce.clone() })
        .collect();
    kit.deliver(0, ToParticipant::Proposal(proposal));
    let reason = kit.refusal();
    (kit, reason)
}

#[test]
fn a_batch_padded_past_the_depth_limit_is_refused() {
    let limits = ProposalLimits { max_depth: 2, ..ProposalLimits::default() };
    let (_, reason) = padded(limits, 4);
    assert_eq!(reason, ProposalError::PathTooDeep { leaf: 0, depth: 3, max: 2 });
}

#[test]
fn a_batch_padded_until_the_exit_costs_too_much_is_refused() {
    // At 10 sat/vB an exit may take a fifth of the leaf: the honest batch (depth 2)
    // passes, the batch padded to depth 4 does not.
    let limits = ProposalLimits {
        exit_fee_rate: FeeRate::from_sat_per_kwu(2_500),
        max_exit_cost_percent: 20,
        ..ProposalLimits::default()
    };
    let mut kit = Kit::new(2, None);
    with_limits(&mut kit, limits);
    kit.register_all();
    let batch = kit.build_batch(1);
    kit.propose(&batch);
    assert!(kit.parties[0].sent_tree_sigs(), "the honest batch is within the limit");

    let (_, reason) = padded(limits, 12);
    match reason {
        ProposalError::ExitTooExpensive { leaf: 0, cost, value, max, percent: 20 } => {
            assert_eq!(value, Amount::from_sat(50_000));
            assert_eq!(max, Amount::from_sat(10_000));
            assert!(cost > max);
        }
        other => panic!("expected ExitTooExpensive, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------
// 4. The money range.
// ---------------------------------------------------------------------------------

#[test]
fn a_leaf_above_the_money_supply_is_refused() {
    let reason = refused_body(2, |body, _, _| {
        body.leaves[2].output.amount = Amount::MAX_MONEY + Amount::from_sat(1);
        let sum = body.leaves.iter().map(|l| l.output.amount.to_sat()).sum::<u64>();
        body.funding_tx.output[0].value = Amount::from_sat(sum);
    });
    assert_eq!(
        reason,
        ProposalError::LeafMoneyRange(MoneyRangeError::Amount {
            index: 2,
            amount: Amount::MAX_MONEY + Amount::from_sat(1)
        })
    );
}

#[test]
fn declared_prevouts_summing_past_the_money_supply_are_refused() {
    // Issue 8, item 9: dev-faucet deposits summing past 21 M BTC were signed and then
    // refused at broadcast. An honest engine now refuses them at registration
    // (`coordinator/tests/registration.rs`); a malicious coordinator can still propose a
    // funding transaction whose declared prevouts sum past the supply, here with one extra
    // input declared to hold all 21 M BTC next to the participant's own deposit.
    let mut kit = Kit::new(1, None);
    kit.register_all();
    let batch = kit.build_batch(1);
    let mut body = batch.body.clone();
    body.funding_tx.input.push(TxIn {
        previous_output: OutPoint { txid: Txid::from_byte_array([7; 32]), vout: 0 },
        script_sig: ScriptBuf::new(),
        sequence: FUNDING_SEQUENCE,
        witness: Witness::new(),
    });
    body.funding_prevouts
        .push(TxOut { value: Amount::MAX_MONEY, script_pubkey: p2tr_single(&Keypair::random()) });
    let encoded = Encoded::new(&body).unwrap();
    kit.deliver(0, ToParticipant::Proposal(Kit::proposal(&batch, 0, &encoded)));
    assert_eq!(
        kit.refusal(),
        ProposalError::Funding(FundingRuleError::PrevoutMoneyRange(MoneyRangeError::Sum))
    );
}

// ---------------------------------------------------------------------------------
// End to end on the ledger.
// ---------------------------------------------------------------------------------

/// The secrets of a participant played by the test itself, signing with the session's
/// primitives but without the session's whole-funding checks (as before issue 8).
struct UncheckedSigner {
    leaf_keys: Vec<Keypair>,
    leaf_nonces: Vec<Vec<Option<SecNonce>>>,
    deposit_nonce: Option<SecNonce>,
}

impl UncheckedSigner {
    /// Replaces party `i`'s registered keys and nonces (as the kit saw them) by its own.
    fn install(kit: &mut Kit, i: usize) -> Self {
        let depth = usize::from(kit.params.tree.max_depth);
        let party = &mut kit.parties[i];
        let (mut leaf_keys, mut leaf_nonces, mut published) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..=party.config.leaves.len() {
            let key = Keypair::random();
            let nonces: Vec<SecNonce> =
                (0..depth).map(|_| musig::new_secnonce(&key.point, None, None)).collect();
            let public: Vec<PubNonce> = nonces.iter().map(SecNonce::public_nonce).collect();
            published.push((key.point, public));
            leaf_nonces.push(nonces.into_iter().map(Some).collect());
            leaf_keys.push(key);
        }
        party.leaf_keys = published;
        let deposit = musig::new_secnonce(&party.config.deposits[0].key.point, None, None);
        party.deposit_nonces = vec![deposit.public_nonce()];
        UncheckedSigner { leaf_keys, leaf_nonces, deposit_nonce: Some(deposit) }
    }

    /// Partial signatures of every node on its paths.
    fn tree_sigs(&mut self, batch: &Batch, i: usize) -> TreeSigs {
        let mut sigs = Vec::new();
        for (own, &leaf) in batch.your_leaves[i].iter().enumerate() {
            for node in batch.tree.shape().path(leaf as usize).unwrap() {
                let n = batch.tree.node(node).unwrap();
                let depth = usize::from(batch.tree.shape().nodes()[node].depth);
                let sn = self.leaf_nonces[own][depth - 1].take().unwrap();
                let key = &self.leaf_keys[own];
                let psig =
                    musig::sign_partial(&n.key, key, sn, &batch.agg_nonces[node], &n.sighash)
                        .unwrap();
                sigs.push(NodePartial { node: node as u32, leaf, psig });
            }
        }
        TreeSigs { batch: batch.body.batch, attempt: batch.body.attempt, sigs }
    }

    /// The exit paths it would store.
    fn exit_paths(batch: &Batch, i: usize) -> Vec<ExitPath> {
        let lookup = |n: usize| batch.node_sigs.get(&n).copied();
        batch.your_leaves[i]
            .iter()
            .map(|&leaf| {
                let (node, vout) = batch.tree.shape().leaf_output(leaf as usize).unwrap();
                let path = batch.tree.signed_path(leaf as usize, &lookup).unwrap();
                let leaf_output = path.last().unwrap().output[vout as usize].clone();
                ExitPath { leaf, leaf_output, node: node as u32, vout, path }
            })
            .collect()
    }

    /// Its deposit's partial signature on the funding tx as proposed.
    fn deposit_sigs(&mut self, kit: &Kit, batch: &Batch, i: usize) -> DepositSigs {
        let deposit = &kit.parties[i].config.deposits[0];
        let input = batch.deposit_inputs[i][0];
        let ctx = deposit.script.signing_context().unwrap();
        let ours = kit.parties[i].deposit_nonces[0].clone();
        let agg = musig::nonce_agg(&[ours, batch.coord_pubnonces[input as usize].clone()]).unwrap();
        let tx = &batch.body.funding_tx;
        let msg = key_spend_sighash(tx, input as usize, &batch.body.funding_prevouts).unwrap();
        let sn = self.deposit_nonce.take().unwrap();
        let psig = musig::sign_partial(&ctx, &deposit.key, sn, &agg, &msg).unwrap();
        let sigs = vec![DepositPartial { input, psig }];
        DepositSigs { batch: batch.body.batch, attempt: batch.body.attempt, sigs }
    }
}

/// Publishes the first transaction of `path` with a CPFP child.
fn publish_root(kit: &Kit, path: &ExitPath) -> Result<(Txid, Txid), ChainError> {
    let key = Keypair::random();
    let amount = Amount::from_sat(50_000);
    let outpoint = kit.ledger.faucet(&p2tr_single(&key), amount).unwrap();
    let txout = TxOut { value: amount, script_pubkey: p2tr_single(&key) };
    let child =
        cpfp_child(&path.path[0], &FeeInput { outpoint, txout, key }, kit.ledger.fee_rate()?)
            .unwrap();
    kit.ledger.broadcast_package(&path.path[0], &child)
}

/// One round with a participant lacking the whole-funding check; with `malleable` the
/// coordinator adds its own P2PKH input and signs it after everyone else. Returns the
/// exit paths, the funding txid everyone signed and the one that confirmed.
fn unchecked_round(malleable: bool) -> (Kit, Vec<ExitPath>, Txid, Txid) {
    let mut kit = Kit::new(1, None);
    kit.register_all();
    let mut signer = UncheckedSigner::install(&mut kit, 0);
    let key = Keypair::random();
    let script = p2pkh(&key);
    let utxo = coordinator_utxo(&kit, script.clone(), Amount::from_sat(100_000));
    let mut batch = kit.build_batch_with(1, |tx, prevouts| {
        if malleable {
            add_input(tx, prevouts, utxo);
        }
    });
    let signed_txid = batch.body.funding_tx.compute_txid();
    let sigs = signer.tree_sigs(&batch, 0);
    kit.combine_tree(&mut batch, &[sigs]);
    let paths = UncheckedSigner::exit_paths(&batch, 0);
    let dsigs = signer.deposit_sigs(&kit, &batch, 0);
    let mut funding = kit.complete_funding(&mut batch, &[dsigs]);
    if malleable {
        sign_p2pkh(&mut funding, 1, &key, &script);
    }
    let confirmed = kit.ledger.broadcast(&funding).expect("the funding tx is valid");
    kit.ledger.mine(1);
    (kit, paths, signed_txid, confirmed)
}

#[test]
fn the_malleable_input_attack_end_to_end() {
    // Control: the same participant and harness without the attack exit fine.
    let (kit, paths, signed, confirmed) = unchecked_round(false);
    assert_eq!(signed, confirmed);
    kit.publish_paths(&paths);

    // The attack against a participant without the check: the funding tx confirms
    // under another txid, every exit path spends an output that never exists, and the
    // batch output (all of the participant's money) is locked to keys it deleted.
    let (kit, paths, signed, confirmed) = unchecked_round(true);
    assert_ne!(signed, confirmed, "filling the scriptSig changed the txid");
    assert_eq!(kit.ledger.confirmations(&confirmed).unwrap(), Some(1));
    let root_input = paths[0].path[0].input[0].previous_output;
    assert_eq!(root_input, OutPoint { txid: signed, vout: 0 });
    assert!(kit.ledger.utxo(&root_input).unwrap().is_none());
    assert!(kit.ledger.utxo(&OutPoint { txid: confirmed, vout: 0 }).unwrap().is_some());
    assert!(kit.ledger.utxo(&kit.parties[0].config.deposits[0].outpoint).unwrap().is_none());
    for path in &paths {
        let err = publish_root(&kit, path).unwrap_err();
        assert!(matches!(err, ChainError::Rejected(RejectReason::MissingInput { .. })), "{err:?}");
    }

    // The real session refuses the same coherent batch before signing anything.
    let mut kit = Kit::new(1, None);
    kit.register_all();
    let utxo = coordinator_utxo(&kit, p2pkh(&Keypair::random()), Amount::from_sat(100_000));
    let batch = kit.build_batch_with(1, |tx, prevouts| add_input(tx, prevouts, utxo));
    kit.propose(&batch);
    assert_eq!(
        kit.refusal(),
        ProposalError::Funding(FundingRuleError::NonWitnessInput { input: 1 })
    );
}

#[test]
fn a_lie_about_a_prevout_only_invalidates_the_funding_tx() {
    // The coordinator declares its P2PKH input as a P2TR output. The participant's
    // signature commits to the declared prevouts (BIP-341), so the real funding tx
    // cannot confirm: the deposit stays the participant's.
    let mut kit = Kit::new(1, None);
    kit.register_all();
    let key = Keypair::random();
    let script = p2pkh(&key);
    let (outpoint, real) = coordinator_utxo(&kit, script.clone(), Amount::from_sat(100_000));
    let lie = TxOut { value: real.value, script_pubkey: p2tr_single(&Keypair::random()) };
    let mut batch =
        kit.build_batch_with(1, |tx, prevouts| add_input(tx, prevouts, (outpoint, lie)));
    kit.propose(&batch);
    let sigs = vec![kit.take_tree_sigs(0)];
    kit.combine_tree(&mut batch, &sigs);
    kit.deliver(0, ToParticipant::SignedTree(Kit::signed_tree(&batch, 0)));
    kit.persist(0);
    let dsigs = vec![kit.take_deposit_sigs(0)];
    let mut funding = kit.complete_funding(&mut batch, &dsigs);
    sign_p2pkh(&mut funding, 1, &key, &script);
    let err = kit.ledger.broadcast(&funding).unwrap_err();
    assert!(matches!(err, ChainError::Rejected(RejectReason::Script { input: 0, .. })), "{err:?}");
    let deposit = kit.parties[0].config.deposits[0].outpoint;
    assert!(kit.ledger.utxo(&deposit).unwrap().is_some(), "the deposit is still unspent");
}

#[test]
fn shared_caches_do_not_skip_the_new_checks() {
    let caches = Arc::new(SharedCaches::new());
    let mut kit = Kit::new(2, Some(caches));
    kit.register_all();
    let key = Keypair::random();
    let utxo = coordinator_utxo(&kit, p2pkh(&key), Amount::from_sat(100_000));
    let batch = kit.build_batch_with(1, |tx, prevouts| add_input(tx, prevouts, utxo));
    kit.propose(&batch);
    for party in &kit.parties {
        assert!(!party.sent_tree_sigs());
        assert!(!party.sent_deposit_sigs());
    }
}
