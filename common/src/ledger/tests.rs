//! Tests of the regtest ledger with real Schnorr signatures.

use bitcoin::hashes::Hash;
use bitcoin::key::{Keypair, TapTweak, UntweakedPublicKey};
use bitcoin::opcodes::all::{OP_CHECKSIGVERIFY, OP_CSV};
use bitcoin::script::Builder;
use bitcoin::secp256k1::{Message, SECP256K1};
use bitcoin::sighash::{Prevouts, SighashCache, TapSighashType};
use bitcoin::taproot::{LeafVersion, TapLeafHash, TaprootBuilder, TaprootSpendInfo};
use bitcoin::transaction::Version;
use bitcoin::{absolute, Sequence, TxIn, TxOut, Witness};

use super::*;

fn key(i: u8) -> Keypair {
    Keypair::from_seckey_slice(SECP256K1, &[i; 32]).expect("valid key")
}

fn p2tr(k: &Keypair) -> ScriptBuf {
    ScriptBuf::new_p2tr(SECP256K1, k.x_only_public_key().0, None)
}

fn sats(n: u64) -> Amount {
    Amount::from_sat(n)
}

fn tx(version: i32, inputs: &[(OutPoint, Sequence)], outputs: Vec<TxOut>) -> Transaction {
    Transaction {
        version: Version::non_standard(version),
        lock_time: absolute::LockTime::ZERO,
        input: inputs
            .iter()
            .map(|&(previous_output, sequence)| TxIn {
                previous_output,
                sequence,
                ..TxIn::default()
            })
            .collect(),
        output: outputs,
    }
}

fn out(script: ScriptBuf, value: u64) -> TxOut {
    TxOut { value: sats(value), script_pubkey: script }
}

/// Signs input `i` by key path with `k` (BIP-86 style tweak, no script tree).
fn sign_key(tx: &mut Transaction, prevouts: &[TxOut], i: usize, k: &Keypair) {
    let hash = SighashCache::new(&*tx)
        .taproot_key_spend_signature_hash(i, &Prevouts::All(prevouts), TapSighashType::Default)
        .expect("sighash");
    let tweaked = k.tap_tweak(SECP256K1, None).to_keypair();
    let sig =
        SECP256K1.sign_schnorr_no_aux_rand(&Message::from_digest(hash.to_byte_array()), &tweaked);
    tx.input[i].witness = Witness::from_slice(&[sig.as_ref().as_slice()]);
}

/// Funds `k`'s P2TR with `value` and returns the outpoint and output.
fn fund(ledger: &Ledger, k: &Keypair, value: u64) -> (OutPoint, TxOut) {
    let txout = out(p2tr(k), value);
    let op = ledger.faucet(&txout.script_pubkey, txout.value).expect("faucet");
    (op, txout)
}

/// A signed key-path spend of `prev` by `k` paying `value` to `to`.
fn spend(prev: &(OutPoint, TxOut), k: &Keypair, to: ScriptBuf, value: u64) -> Transaction {
    let mut t = tx(2, &[(prev.0, Sequence::MAX)], vec![out(to, value)]);
    sign_key(&mut t, std::slice::from_ref(&prev.1), 0, k);
    t
}

fn rejected(result: Result<impl std::fmt::Debug, ChainError>) -> RejectReason {
    match result {
        Err(ChainError::Rejected(reason)) => reason,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn key_path_spend_accepted_then_mined() {
    let ledger = Ledger::new();
    let (a, b) = (key(1), key(2));
    let prev = fund(&ledger, &a, 100_000);
    assert_eq!(ledger.tip_height().unwrap(), 1);
    assert_eq!(
        ledger.utxo(&prev.0).unwrap(),
        Some(Utxo { txout: prev.1.clone(), height: Some(1) })
    );

    let t = spend(&prev, &a, p2tr(&b), 99_000);
    let txid = ledger.broadcast(&t).unwrap();
    assert_eq!(ledger.confirmations(&txid).unwrap(), Some(0));
    assert_eq!(ledger.utxo(&prev.0).unwrap(), None, "spent by the mempool");
    let new = OutPoint::new(txid, 0);
    assert_eq!(ledger.utxo(&new).unwrap().unwrap().height, None);
    assert_eq!(ledger.script_utxos(&p2tr(&b)).unwrap().len(), 1);
    assert!(ledger.script_utxos(&p2tr(&a)).unwrap().is_empty());

    assert_eq!(ledger.mine(3), 4);
    assert_eq!(ledger.confirmations(&txid).unwrap(), Some(3));
    assert_eq!(ledger.utxo(&new).unwrap().unwrap().height, Some(2));
    assert_eq!(ledger.transaction(&txid), Some(t));
    assert!(ledger.mempool().is_empty());
    assert_eq!(ledger.confirmations(&Txid::all_zeros()).unwrap(), None);
}

#[test]
fn flipped_signature_bit_rejected() {
    let ledger = Ledger::new();
    let a = key(1);
    let prev = fund(&ledger, &a, 100_000);
    let mut t = spend(&prev, &a, p2tr(&a), 99_000);
    let mut sig = t.input[0].witness.to_vec().remove(0);
    sig[10] ^= 0x04;
    t.input[0].witness = Witness::from_slice(&[sig]);
    assert_eq!(
        rejected(ledger.broadcast(&t)),
        RejectReason::Script { input: 0, error: crate::consensus::ScriptError::Invalid }
    );
    assert!(ledger.mempool().is_empty());
}

#[test]
fn a_conflict_replaces_only_when_it_pays_more_and_never_once_mined() {
    let ledger = Ledger::new();
    let (a, b) = (key(1), key(2));
    let prev = fund(&ledger, &a, 100_000);
    let first_tx = spend(&prev, &a, p2tr(&b), 99_000);
    let first = ledger.broadcast(&first_tx).unwrap();
    // A child of the first: a replacement evicts it too, and must pay for it as well.
    let child_prev = (OutPoint::new(first, 0), first_tx.output[0].clone());
    let child = ledger.broadcast(&spend(&child_prev, &b, p2tr(&b), 98_500)).unwrap();

    // Less than the fees it evicts (1,000 + 500 sat) plus 1 sat/vB of its own size.
    let cheap = spend(&prev, &a, p2tr(&a), 98_500);
    let reason = rejected(ledger.broadcast(&cheap));
    assert!(
        matches!(reason, RejectReason::ReplacementTooCheap { needed, .. } if needed == sats(1_500 + cheap.vsize() as u64)),
        "{reason:?}"
    );
    assert_eq!(ledger.mempool(), vec![first, child]);

    let better = spend(&prev, &a, p2tr(&a), 98_000);
    let replacement = ledger.broadcast(&better).unwrap();
    assert_eq!(ledger.mempool(), vec![replacement]);
    assert_eq!(ledger.confirmations(&first).unwrap(), None, "evicted");
    assert_eq!(ledger.confirmations(&child).unwrap(), None, "evicted with its parent");
    assert_eq!(ledger.utxo(&child_prev.0).unwrap(), None, "its outputs are gone");
    assert!(ledger.script_utxos(&p2tr(&b)).unwrap().is_empty());

    // Once mined, a conflict is a double spend.
    ledger.mine(1);
    let late = spend(&prev, &a, p2tr(&b), 90_000);
    assert_eq!(
        rejected(ledger.broadcast(&late)),
        RejectReason::DoubleSpend {
            input: 0,
            outpoint: prev.0,
            spender: replacement,
            confirmed: true
        }
    );
}

/// A static deposit address: key path `internal`, one leaf `<U> CHECKSIGVERIFY <csv> CSV`.
fn deposit(internal: &Keypair, user: &Keypair, csv: u16) -> (ScriptBuf, TaprootSpendInfo) {
    let leaf = Builder::new()
        .push_x_only_key(&user.x_only_public_key().0)
        .push_opcode(OP_CHECKSIGVERIFY)
        .push_int(i64::from(csv))
        .push_opcode(OP_CSV)
        .into_script();
    let internal: UntweakedPublicKey = internal.x_only_public_key().0;
    let info = TaprootBuilder::new()
        .add_leaf(0, leaf.clone())
        .expect("leaf")
        .finalize(SECP256K1, internal)
        .expect("finalize");
    (leaf, info)
}

fn reclaim(
    prev: &(OutPoint, TxOut),
    user: &Keypair,
    leaf: &ScriptBuf,
    info: &TaprootSpendInfo,
    seq: u16,
) -> Transaction {
    let mut t = tx(2, &[(prev.0, Sequence::from_height(seq))], vec![out(p2tr(user), 90_000)]);
    let leaf_hash = TapLeafHash::from_script(leaf, LeafVersion::TapScript);
    let hash = SighashCache::new(&t)
        .taproot_script_spend_signature_hash(
            0,
            &Prevouts::All(&[&prev.1]),
            leaf_hash,
            TapSighashType::Default,
        )
        .expect("sighash");
    let sig = SECP256K1.sign_schnorr_no_aux_rand(&Message::from_digest(hash.to_byte_array()), user);
    let control =
        info.control_block(&(leaf.clone(), LeafVersion::TapScript)).expect("control block");
    t.input[0].witness =
        Witness::from_slice(&[sig.as_ref().as_slice(), leaf.as_bytes(), &control.serialize()]);
    t
}

#[test]
fn csv_script_path_waits_for_confirmations() {
    let ledger = Ledger::new();
    let (server, user) = (key(7), key(8));
    let csv = 10u16;
    let (leaf, info) = deposit(&server, &user, csv);
    let script = ScriptBuf::new_p2tr_tweaked(info.output_key());
    let op = ledger.faucet(&script, sats(100_000)).unwrap();
    let prev = (op, out(script, 100_000));
    let conf = ledger.tip_height().unwrap();

    let t = reclaim(&prev, &user, &leaf, &info, csv);
    let premature = rejected(ledger.broadcast(&t));
    assert!(
        matches!(premature, RejectReason::PrematureRelativeLock { input: 0, conf_height: Some(h), .. } if h == conf),
        "{premature:?}"
    );
    // Mined in block conf + csv at the earliest: tip must reach conf + csv - 1.
    ledger.mine(u32::from(csv) - 2);
    assert!(matches!(rejected(ledger.broadcast(&t)), RejectReason::PrematureRelativeLock { .. }));
    ledger.mine(1);
    // nSequence below the script's csv fails OP_CHECKSEQUENCEVERIFY itself.
    let short = reclaim(&prev, &user, &leaf, &info, csv - 1);
    assert!(matches!(rejected(ledger.broadcast(&short)), RejectReason::Script { input: 0, .. }));
    // A wrong signer fails the script too.
    let thief = reclaim(&prev, &key(9), &leaf, &info, csv);
    assert!(matches!(rejected(ledger.broadcast(&thief)), RejectReason::Script { input: 0, .. }));
    ledger.broadcast(&t).unwrap();
}

#[test]
fn time_based_relative_lock_uses_median_time_past() {
    let ledger = Ledger::new();
    let a = key(1);
    let prev = fund(&ledger, &a, 100_000);
    let mut t =
        tx(2, &[(prev.0, Sequence::from_512_second_intervals(2))], vec![out(p2tr(&a), 99_000)]);
    sign_key(&mut t, std::slice::from_ref(&prev.1), 0, &a);
    assert!(matches!(rejected(ledger.broadcast(&t)), RejectReason::PrematureRelativeLock { .. }));
    // The coin's time is the median time past before its block (genesis); the tip's
    // median time past lags the tip by up to five blocks.
    ledger.mine(1);
    assert!(matches!(rejected(ledger.broadcast(&t)), RejectReason::PrematureRelativeLock { .. }));
    ledger.mine(1); // median time past of block 3 is block 2's time: 1,200 s >= 1,024 s
    ledger.broadcast(&t).unwrap();
}

#[test]
fn unconfirmed_output_with_height_lock_is_premature() {
    let ledger = Ledger::new();
    let a = key(1);
    let prev = fund(&ledger, &a, 100_000);
    let parent = spend(&prev, &a, p2tr(&a), 99_000);
    let ptxid = ledger.broadcast(&parent).unwrap();
    let pprev = (OutPoint::new(ptxid, 0), parent.output[0].clone());
    let mut child = tx(2, &[(pprev.0, Sequence::from_height(1))], vec![out(p2tr(&a), 98_000)]);
    sign_key(&mut child, std::slice::from_ref(&pprev.1), 0, &a);
    assert_eq!(
        rejected(ledger.broadcast(&child)),
        RejectReason::PrematureRelativeLock {
            input: 0,
            lock: Sequence::from_height(1).to_relative_lock_time().unwrap(),
            conf_height: None,
            next_height: 2,
        }
    );
    let chained = spend(&pprev, &a, p2tr(&a), 98_000);
    ledger.broadcast(&chained).unwrap();
}

/// A zero-fee v3 node transaction: spends `prev`, pays it all to `to`, plus a 0-value anchor.
fn node_tx(prev: &(OutPoint, TxOut), k: &Keypair, to: ScriptBuf) -> Transaction {
    let value = prev.1.value.to_sat();
    let mut t =
        tx(3, &[(prev.0, Sequence::ZERO)], vec![out(to, value), out(ScriptBuf::new_p2a(), 0)]);
    sign_key(&mut t, std::slice::from_ref(&prev.1), 0, k);
    t
}

/// A v3 CPFP child spending `parent`'s anchor (vout 1) and a fee input of `k`.
fn cpfp(parent: &Transaction, fee_in: &(OutPoint, TxOut), k: &Keypair, change: u64) -> Transaction {
    let anchor = (OutPoint::new(parent.compute_txid(), 1), parent.output[1].clone());
    let mut t = tx(
        3,
        &[(anchor.0, Sequence::ZERO), (fee_in.0, Sequence::ZERO)],
        vec![out(p2tr(k), change)],
    );
    sign_key(&mut t, &[anchor.1, fee_in.1.clone()], 1, k);
    t
}

#[test]
fn zero_fee_v3_parent_needs_anchor_spending_child() {
    let ledger = Ledger::new();
    let (a, b, c) = (key(1), key(2), key(3));
    let prev = fund(&ledger, &a, 100_000);
    let fee_in = fund(&ledger, &c, 10_000);
    let parent = node_tx(&prev, &a, p2tr(&b));
    let alone = rejected(ledger.broadcast(&parent));
    assert!(
        matches!(alone, RejectReason::FeeBelowMinimum { fee, .. } if fee == Amount::ZERO),
        "{alone:?}"
    );

    // A child spending the leaf output but not the anchor.
    let leaf = (OutPoint::new(parent.compute_txid(), 0), parent.output[0].clone());
    let mut wrong = tx(3, &[(leaf.0, Sequence::ZERO)], vec![out(p2tr(&b), 99_000)]);
    sign_key(&mut wrong, std::slice::from_ref(&leaf.1), 0, &b);
    assert!(matches!(
        rejected(ledger.broadcast_package(&parent, &wrong)),
        RejectReason::AnchorNotSpent { .. }
    ));

    // A child too cheap for the package.
    let cheap = cpfp(&parent, &fee_in, &c, 9_999);
    assert!(matches!(
        rejected(ledger.broadcast_package(&parent, &cheap)),
        RejectReason::PackageFeeTooLow { .. }
    ));

    let child = cpfp(&parent, &fee_in, &c, 9_000);
    let (ptxid, first) = ledger.broadcast_package(&parent, &child).unwrap();
    assert_eq!(ledger.mempool(), vec![ptxid, first]);
    // The child paid again, as Core takes it: more fee on the same anchor and fee input
    // replaces it; not enough more is refused.
    let stingy = cpfp(&parent, &fee_in, &c, 8_990);
    assert!(matches!(
        rejected(ledger.broadcast(&stingy)),
        RejectReason::ReplacementTooCheap { .. }
    ));
    let bumped = cpfp(&parent, &fee_in, &c, 8_000);
    let ctxid = ledger.broadcast(&bumped).unwrap();
    assert_eq!(ledger.mempool(), vec![ptxid, ctxid]);
    assert_eq!(ledger.confirmations(&first).unwrap(), None);
    ledger.mine(1);
    assert_eq!(ledger.confirmations(&ptxid).unwrap(), Some(1));
    assert_eq!(ledger.confirmations(&ctxid).unwrap(), Some(1));
    assert_eq!(ledger.utxo(&leaf.0).unwrap().unwrap().height, Some(3));
    assert_eq!(ledger.utxo(&OutPoint::new(ptxid, 1)).unwrap(), None);
}

#[test]
fn truc_parent_takes_one_child_of_the_same_version() {
    let ledger = Ledger::new();
    let (a, c) = (key(1), key(3));
    let prev = fund(&ledger, &a, 100_000);
    let fee_in = fund(&ledger, &c, 10_000);
    let parent = node_tx(&prev, &a, p2tr(&a));
    let ptxid = parent.compute_txid();
    ledger.broadcast_package(&parent, &cpfp(&parent, &fee_in, &c, 9_000)).unwrap();
    // A second, non-v3 child of the unconfirmed v3 parent.
    let leaf = (OutPoint::new(ptxid, 0), parent.output[0].clone());
    let v2 = spend(&leaf, &a, p2tr(&a), 99_000);
    assert!(matches!(rejected(ledger.broadcast(&v2)), RejectReason::TrucVersionMismatch { .. }));
    let mut v3 = tx(3, &[(leaf.0, Sequence::ZERO)], vec![out(p2tr(&a), 99_000)]);
    sign_key(&mut v3, std::slice::from_ref(&leaf.1), 0, &a);
    assert!(matches!(rejected(ledger.broadcast(&v3)), RejectReason::TrucDescendantExists { .. }));
    ledger.mine(1);
    ledger.broadcast(&v3).unwrap();
}

#[test]
fn value_creation_rejected() {
    let ledger = Ledger::new();
    let a = key(1);
    let prev = fund(&ledger, &a, 100_000);
    let t = spend(&prev, &a, p2tr(&a), 100_001);
    assert_eq!(
        rejected(ledger.broadcast(&t)),
        RejectReason::ValueOutExceedsIn { input: sats(100_000), output: sats(100_001) }
    );
}

#[test]
fn overweight_rejected() {
    let ledger = Ledger::new();
    let a = key(1);
    let prev = fund(&ledger, &a, 100_000);
    let mut t = spend(&prev, &a, p2tr(&a), 50_000);
    t.output.push(TxOut {
        value: sats(1_000),
        script_pubkey: ScriptBuf::from_bytes(vec![0x6a; 100_000]),
    });
    assert!(matches!(rejected(ledger.broadcast(&t)), RejectReason::TooHeavy { .. }));
}

#[test]
fn missing_input_rejected() {
    let ledger = Ledger::new();
    let a = key(1);
    let ghost = (OutPoint::new(Txid::all_zeros(), 3), out(p2tr(&a), 100_000));
    let t = spend(&ghost, &a, p2tr(&a), 50_000);
    assert_eq!(
        rejected(ledger.broadcast(&t)),
        RejectReason::MissingInput { input: 0, outpoint: ghost.0 }
    );
}

#[test]
fn non_final_locktime_rejected() {
    let ledger = Ledger::new();
    let a = key(1);
    let prev = fund(&ledger, &a, 100_000);
    let mut t = tx(2, &[(prev.0, Sequence::ENABLE_LOCKTIME_NO_RBF)], vec![out(p2tr(&a), 99_000)]);
    t.lock_time = absolute::LockTime::from_height(3).unwrap();
    sign_key(&mut t, std::slice::from_ref(&prev.1), 0, &a);
    assert!(matches!(
        rejected(ledger.broadcast(&t)),
        RejectReason::NonFinal { next_height: 2, .. }
    ));
    ledger.mine(2);
    ledger.broadcast(&t).unwrap();
}

#[test]
fn faucet_many_funds_ten_thousand_scripts_in_one_block() {
    let ledger = Ledger::new();
    let requests: Vec<(ScriptBuf, Amount)> = (0..10_000u32)
        .map(|i| {
            let mut program = [0u8; 32];
            program[..4].copy_from_slice(&(i % 9_999).to_le_bytes());
            (
                ScriptBuf::new_p2wsh(&bitcoin::WScriptHash::from_byte_array(program)),
                sats(1_000 + u64::from(i)),
            )
        })
        .collect();
    let outpoints = ledger.faucet_many(&requests).unwrap();
    assert_eq!(ledger.tip_height().unwrap(), 1);
    assert_eq!(outpoints.len(), requests.len());
    let unique: std::collections::HashSet<_> = outpoints.iter().collect();
    assert_eq!(unique.len(), outpoints.len());
    for (op, (script, amount)) in outpoints.iter().zip(&requests) {
        let utxo = ledger.utxo(op).unwrap().unwrap();
        assert_eq!(
            (&utxo.txout.script_pubkey, utxo.txout.value, utxo.height),
            (script, *amount, Some(1))
        );
    }
    // Scripts 0 and 9,999 coincide: the index returns both.
    let both = ledger.script_utxos(&requests[0].0).unwrap();
    assert_eq!(
        both.iter().map(|(op, _)| *op).collect::<std::collections::HashSet<_>>(),
        [outpoints[0], outpoints[9_999]].into_iter().collect()
    );
    assert!(matches!(
        ledger.faucet_many(&[
            (requests[0].0.clone(), Amount::MAX_MONEY),
            (requests[1].0.clone(), sats(1))
        ]),
        Err(ChainError::FaucetAmount { .. })
    ));
}

#[test]
fn the_faucet_pays_no_dust_and_never_past_the_supply() {
    let ledger = Ledger::new();
    let script = ScriptBuf::new_p2a();
    let p2tr = crate::exit::p2tr_single(&crate::keys::Keypair::random());
    for amount in [0, 1, 329] {
        assert!(matches!(
            ledger.faucet(&p2tr, sats(amount)),
            Err(ChainError::FaucetDust { index: 0, dust, .. }) if dust == sats(330)
        ));
    }
    assert!(ledger.faucet(&p2tr, sats(330)).is_ok());
    assert!(matches!(ledger.faucet(&script, sats(239)), Err(ChainError::FaucetDust { .. })));
    // Twice 20 M BTC: each request is in range, together they are not.
    let twenty_million = sats(20_000_000 * 100_000_000);
    assert!(ledger.faucet(&p2tr, twenty_million).is_ok());
    let tip = ledger.tip_height().unwrap();
    assert!(matches!(ledger.faucet(&p2tr, twenty_million), Err(ChainError::FaucetAmount { .. })));
    assert_eq!(ledger.tip_height().unwrap(), tip, "a refused request mines nothing");
}

#[test]
fn fee_rate_is_configurable_and_arc_dyn_chain_works() {
    let ledger = std::sync::Arc::new(Ledger::new());
    let chain: std::sync::Arc<dyn Chain> = ledger.clone();
    assert_eq!(chain.fee_rate().unwrap(), FeeRate::from_sat_per_vb_u32(2));
    ledger.set_fee_rate(FeeRate::from_sat_per_vb_u32(7));
    assert_eq!(chain.fee_rate().unwrap(), FeeRate::from_sat_per_vb_u32(7));
}
