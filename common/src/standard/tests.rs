//! Unit tests of the shared relay rules: the honest builders pass, each rule refuses
//! its violation, and the weight formulas match real signed transactions.

use std::sync::Arc;

use bitcoin::hashes::Hash;
use bitcoin::{ScriptBuf, TxIn, Txid, Witness};

use super::*;
use crate::exit::{cpfp_child, p2tr_single, FeeInput};
use crate::fees::{funding_tx, plan_funding, FundingRequest};
use crate::keys::Keypair;
use crate::params::{FeeSchedule, LeafOutput, TreeParams};
use crate::scripts::anchor_output;
use crate::tree::{Tree, TreeLeaf};

fn p2tr(tag: u8) -> ScriptBuf {
    let mut bytes = vec![0x51, 0x20];
    bytes.extend([tag; 32]);
    ScriptBuf::from_bytes(bytes)
}

fn p2pkh() -> ScriptBuf {
    ScriptBuf::new_p2pkh(&bitcoin::PubkeyHash::all_zeros())
}

/// An honest funding tx of two registrations and its prevouts.
fn honest_funding() -> (Transaction, Vec<TxOut>, FeeSchedule) {
    let request = |tag: u8, values: &[u64]| FundingRequest {
        deposits: values
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let outpoint = OutPoint { txid: Txid::from_byte_array([tag; 32]), vout: i as u32 };
                (outpoint, TxOut { value: Amount::from_sat(v), script_pubkey: p2tr(tag) })
            })
            .collect(),
        requested: Amount::from_sat(10_000),
        remainder_script: p2tr(tag),
        max_fee: Amount::from_sat(100_000),
    };
    let reqs = vec![request(1, &[50_000, 60_000]), request(2, &[70_000])];
    let schedule = FeeSchedule::default();
    let plan = plan_funding(&reqs, &schedule, &p2tr(9)).unwrap();
    let batch = TxOut { value: plan.batch_amount, script_pubkey: p2tr(7) };
    let tx = funding_tx(&reqs, &plan, batch, &p2tr(9));
    let prevouts = reqs.iter().flat_map(|r| r.deposits.iter().map(|(_, o)| o.clone())).collect();
    (tx, prevouts, schedule)
}

fn funding_err(
    tamper: impl FnOnce(&mut Transaction, &mut Vec<TxOut>),
) -> Result<Amount, FundingRuleError> {
    let (mut tx, mut prevouts, schedule) = honest_funding();
    tamper(&mut tx, &mut prevouts);
    check_funding_tx(&tx, &prevouts, schedule.fee_rate)
}

#[test]
fn the_honest_funding_tx_passes_with_the_announced_rate() {
    let (tx, prevouts, schedule) = honest_funding();
    assert_eq!(tx.version, FUNDING_VERSION);
    assert_eq!(tx.lock_time, FUNDING_LOCK_TIME);
    assert!(tx.input.iter().all(|i| i.sequence == FUNDING_SEQUENCE));
    let fee = check_funding_tx(&tx, &prevouts, schedule.fee_rate).unwrap();
    // Exactly the announced rate: one more sat per kwu is too much to ask.
    let higher = FeeRate::from_sat_per_kwu(schedule.fee_rate.to_sat_per_kwu() + 10);
    assert!(matches!(
        check_funding_tx(&tx, &prevouts, higher),
        Err(FundingRuleError::FeeRateTooLow { .. })
    ));
    assert!(fee > Amount::ZERO);
}

#[test]
fn the_signed_weight_is_the_weight_of_real_key_path_witnesses() {
    let (mut tx, _, _) = honest_funding();
    let predicted = key_path_signed_weight(&tx);
    for input in &mut tx.input {
        input.witness = Witness::from_slice(&[[7u8; 64]]);
    }
    assert_eq!(predicted, tx.weight());
}

#[test]
fn every_funding_rule_refuses_its_violation() {
    use FundingRuleError as E;
    let e = funding_err(|_, p| p[1].script_pubkey = p2pkh());
    assert_eq!(e, Err(E::NonWitnessInput { input: 1 }));
    let e = funding_err(|t, _| t.input[2].script_sig = ScriptBuf::from_bytes(vec![0x51]));
    assert_eq!(e, Err(E::ScriptSig { input: 2 }));
    let e = funding_err(|t, _| t.version = Version(3));
    assert_eq!(e, Err(E::Version { got: 3 }));
    let e = funding_err(|t, _| t.lock_time = LockTime::from_consensus(900_000));
    assert_eq!(e, Err(E::LockTime { got: 900_000 }));
    let e = funding_err(|t, _| t.input[0].sequence = Sequence::from_height(1_000));
    assert_eq!(e, Err(E::Sequence { input: 0, got: 1_000 }));
    let e = funding_err(|t, _| t.input[0].sequence = Sequence::MAX);
    assert!(matches!(e, Err(E::Sequence { input: 0, .. })));
    let e = funding_err(|t, p| {
        t.input[1].previous_output = t.input[0].previous_output;
        p[1] = p[0].clone();
    });
    assert!(matches!(e, Err(E::DuplicateInput { first: 0, second: 1, .. })));
    let e = funding_err(|_, p| {
        p.pop();
    });
    assert_eq!(e, Err(E::PrevoutCount { inputs: 3, prevouts: 2 }));
    let e = funding_err(|t, _| t.output[0].value = Amount::MAX_MONEY + Amount::from_sat(1));
    assert!(matches!(e, Err(E::OutputMoneyRange(MoneyRangeError::Amount { index: 0, .. }))));
    let e = funding_err(|_, p| {
        p[0].value = Amount::MAX_MONEY;
        p[1].value = Amount::MAX_MONEY;
    });
    assert_eq!(e, Err(E::PrevoutMoneyRange(MoneyRangeError::Sum)));
    let e = funding_err(|t, _| t.output[1].script_pubkey = ScriptBuf::from_bytes(vec![0x51]));
    assert_eq!(e, Err(E::NonStandardOutput { output: 1 }));
    let e = funding_err(|t, _| t.output[1].value = Amount::from_sat(100));
    assert!(matches!(e, Err(E::DustOutput { output: 1, .. })));
    let e = funding_err(|t, _| t.output[1].value += Amount::from_sat(1_000_000));
    assert!(matches!(e, Err(E::OutputsExceedInputs { .. })));
    // The coordinator keeps the mining fee: the fee rate falls below the announced one.
    let e = funding_err(|t, _| t.output[1].value += Amount::from_sat(300));
    assert!(matches!(e, Err(E::FeeRateTooLow { .. })));
}

#[test]
fn a_funding_tx_above_the_standard_weight_is_refused() {
    let e = funding_err(|t, p| {
        for i in 0..1_800u32 {
            t.input.push(TxIn {
                previous_output: OutPoint { txid: Txid::from_byte_array([3; 32]), vout: i },
                script_sig: ScriptBuf::new(),
                sequence: FUNDING_SEQUENCE,
                witness: Witness::new(),
            });
            p.push(TxOut { value: Amount::from_sat(10_000), script_pubkey: p2tr(3) });
        }
    });
    assert!(matches!(e, Err(FundingRuleError::TooHeavy { .. })), "{e:?}");
}

#[test]
fn money_sums_stop_at_the_supply() {
    assert_eq!(money_sum([Amount::MAX_MONEY]), Ok(Amount::MAX_MONEY));
    assert_eq!(money_sum([Amount::MAX_MONEY, Amount::from_sat(1)]), Err(MoneyRangeError::Sum));
    assert_eq!(
        money_sum([Amount::ZERO, Amount::MAX]),
        Err(MoneyRangeError::Amount { index: 1, amount: Amount::MAX })
    );
}

#[test]
fn standard_scripts_are_classified() {
    assert!(is_standard_leaf(&p2tr(1)));
    assert!(is_standard_leaf(&ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::all_zeros())));
    assert!(is_standard_leaf(&ScriptBuf::new_p2wsh(&bitcoin::WScriptHash::all_zeros())));
    assert!(!is_standard_leaf(&p2pkh()));
    assert!(!is_standard_leaf(&ScriptBuf::new_p2a()));
    assert!(is_anchor(&anchor_output().script_pubkey));
    assert!(is_standard_output(&p2pkh()));
    assert!(is_standard_output(&ScriptBuf::new_p2a()));
    assert!(!is_standard_output(&ScriptBuf::from_bytes(vec![0x51])));
    assert!(!is_standard_output(&ScriptBuf::from_bytes(vec![0x00, 0x03, 1, 2, 3])));
    assert!(is_standard_output(&ScriptBuf::from_bytes(vec![0x6a; 83])));
    assert!(!is_standard_output(&ScriptBuf::from_bytes(vec![0x6a; 84])));
    assert_eq!(dust_limit(&p2tr(1)), Amount::from_sat(330));
    assert_eq!(dust_limit(&ScriptBuf::new_p2a()), Amount::from_sat(240));
}

#[test]
fn the_cpfp_child_weight_is_the_real_childs() {
    let (tx, _, _) = honest_funding();
    let mut parent = tx;
    parent.version = NODE_VERSION;
    parent.output.push(anchor_output());
    let key = Keypair::random();
    let fee = FeeInput {
        outpoint: OutPoint { txid: Txid::from_byte_array([5; 32]), vout: 0 },
        txout: TxOut { value: Amount::from_sat(100_000), script_pubkey: p2tr_single(&key) },
        key,
    };
    let child = cpfp_child(&parent, &fee, FeeRate::from_sat_per_kwu(500)).unwrap();
    assert_eq!(cpfp_child_weight(34), child.weight());
    assert!(cpfp_child_vsize() <= TRUC_CHILD_MAX_VSIZE);
}

fn tree(n: usize) -> Tree {
    let leaves: Vec<TreeLeaf> = (0..n)
        .map(|i| TreeLeaf {
            output: LeafOutput {
                script_pubkey: p2tr(i as u8),
                amount: Amount::from_sat(10_000 + i as u64),
            },
            cosigner: Keypair::random().point,
        })
        .collect();
    let funding = OutPoint { txid: Txid::all_zeros(), vout: 0 };
    let params = TreeParams { radix: 4, max_depth: 4 };
    Tree::build(Arc::from(leaves), Keypair::random().point, params, None, |_| funding).unwrap()
}

#[test]
fn every_honest_node_relays_and_its_cost_adds_up() {
    let tree = tree(19);
    let mut costs = Vec::new();
    for (_, node) in tree.built_nodes() {
        let cost = check_exit_node(&node.tx, &node.prevout).unwrap();
        let mut signed = node.tx.clone();
        signed.input[0].witness = Witness::from_slice(&[[7u8; 64]]);
        assert_eq!(cost.vsize, signed.vsize() as u64);
        costs.push(cost);
    }
    let rate = FeeRate::from_sat_per_kwu(750);
    let vsize: u64 = costs.iter().map(NodeCost::package_vsize).sum();
    assert_eq!(exit_cost(costs, rate), Amount::from_sat(3 * vsize));
}

fn node_err(tamper: impl FnOnce(&mut Transaction, &mut TxOut)) -> Result<NodeCost, RelayError> {
    let tree = tree(3);
    let node = tree.node(0).unwrap();
    let (mut tx, mut prevout) = (node.tx.clone(), node.prevout.clone());
    tamper(&mut tx, &mut prevout);
    check_exit_node(&tx, &prevout)
}

#[test]
fn every_relay_rule_refuses_its_violation() {
    use RelayError as E;
    assert_eq!(node_err(|t, _| t.version = Version::TWO), Err(E::NotTruc { got: 2 }));
    assert_eq!(
        node_err(|t, _| t.output[1].script_pubkey = p2pkh()),
        Err(E::NonStandardOutput { output: 1 })
    );
    assert_eq!(
        node_err(|t, _| t.output[0].script_pubkey = ScriptBuf::new_p2a()),
        Err(E::Anchor { count: 2 })
    );
    assert_eq!(node_err(|t, _| drop(t.output.pop())), Err(E::Anchor { count: 0 }));
    assert_eq!(node_err(|t, _| t.output.swap(0, 3)), Err(E::Anchor { count: 1 }));
    let e = node_err(|t, p| {
        t.output[0].value = Amount::from_sat(200);
        p.value -= Amount::from_sat(10_000 - 200);
    });
    assert!(matches!(e, Err(E::Dust { output: 0, .. })), "{e:?}");
    // The anchor may be dust only while the node pays no fee.
    let e = node_err(|_, p| p.value += Amount::from_sat(1));
    assert!(matches!(e, Err(E::Dust { output: 3, .. })), "{e:?}");
    let e = node_err(|_, p| p.value -= Amount::from_sat(1));
    assert!(matches!(e, Err(E::OutputsExceedInput { .. })), "{e:?}");
    let e = node_err(|t, p| {
        t.output[0].value = Amount::MAX_MONEY;
        p.value = Amount::MAX_MONEY;
    });
    assert_eq!(e, Err(E::MoneyRange(MoneyRangeError::Sum)));
    let e = node_err(|t, p| {
        for _ in 0..300 {
            t.output.insert(0, TxOut { value: Amount::from_sat(1_000), script_pubkey: p2tr(1) });
            p.value += Amount::from_sat(1_000);
        }
    });
    assert!(matches!(e, Err(E::TooLarge { .. })), "{e:?}");
}
