//! The embedded ledger against real deposit spends: the cooperative MuSig2(U, C)
//! key-path spend, a flipped signature bit, a double spend, and the CSV reclaim.

// Helpers outside #[test] functions are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bitcoin::absolute::LockTime;
use bitcoin::transaction::Version;
use bitcoin::{Amount, FeeRate, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness};
use rand::SeedableRng;

use cohort_common::chain::{Chain, ChainError};
use cohort_common::exit::{p2tr_single, reclaim_tx};
use cohort_common::keys::Keypair;
use cohort_common::ledger::Ledger;
use cohort_common::musig::{combine, new_secnonce, nonce_agg, sign_partial, Contribution};
use cohort_common::scripts::{key_spend_sighash, key_spend_witness, DepositScript};

struct Setup {
    ledger: Ledger,
    user: Keypair,
    coordinator: Keypair,
    deposit: DepositScript,
    outpoint: OutPoint,
    txout: TxOut,
}

fn setup(csv: u16) -> Setup {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let (user, coordinator) = (Keypair::from_rng(&mut rng), Keypair::from_rng(&mut rng));
    let deposit = DepositScript::new(user.public, coordinator.public, csv).unwrap();
    let ledger = Ledger::new();
    let amount = Amount::from_sat(100_000);
    let outpoint = ledger.faucet(&deposit.script_pubkey(), amount).unwrap();
    let txout = TxOut { value: amount, script_pubkey: deposit.script_pubkey() };
    Setup { ledger, user, coordinator, deposit, outpoint, txout }
}

/// A cooperative spend of the deposit to `to`, signed with MuSig2(U, C).
fn cooperative_spend(s: &Setup, to: ScriptBuf) -> Transaction {
    let mut tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: s.outpoint,
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
            witness: Witness::new(),
        }],
        output: vec![TxOut { value: Amount::from_sat(99_000), script_pubkey: to }],
    };
    let ctx = s.deposit.signing_context().unwrap();
    let msg = key_spend_sighash(&tx, 0, std::slice::from_ref(&s.txout)).unwrap();
    let signers = [&s.user, &s.coordinator];
    let secnonces: Vec<_> =
        signers.iter().map(|k| new_secnonce(&k.point, Some(&k.scalar()), Some(&msg))).collect();
    let pubnonces: Vec<_> = secnonces.iter().map(|n| n.public_nonce()).collect();
    let agg = nonce_agg(&pubnonces).unwrap();
    let contributions: Vec<_> = signers
        .iter()
        .zip(secnonces)
        .zip(&pubnonces)
        .map(|((k, sn), pn)| Contribution {
            signer: k.point,
            pubnonce: pn.clone(),
            psig: sign_partial(&ctx, k, sn, &agg, &msg).unwrap(),
        })
        .collect();
    let sig = combine(&ctx, &agg, &msg, &contributions).unwrap();
    tx.input[0].witness = key_spend_witness(&sig);
    tx
}

#[test]
fn musig_key_path_spend_of_a_deposit_is_accepted_once() {
    let s = setup(14_400);
    let to = p2tr_single(&s.user);
    let tx = cooperative_spend(&s, to.clone());

    // One flipped signature bit: refused by Core's interpreter (libbitcoinkernel).
    let mut bad = tx.clone();
    let mut sig = bad.input[0].witness.to_vec()[0].clone();
    sig[10] ^= 0x01;
    bad.input[0].witness = Witness::from_slice(&[sig]);
    assert!(matches!(s.ledger.broadcast(&bad), Err(ChainError::Rejected(_))));

    let txid = s.ledger.broadcast(&tx).expect("valid MuSig2 key-path spend");
    s.ledger.mine(1);
    assert_eq!(s.ledger.confirmations(&txid).unwrap(), Some(1));

    // The same deposit again: a double spend.
    let mut again = cooperative_spend(&s, p2tr_single(&s.coordinator));
    again.output[0].value = Amount::from_sat(98_000);
    assert!(matches!(s.ledger.broadcast(&again), Err(ChainError::Rejected(_))));
}

#[test]
fn reclaim_waits_for_deposit_csv() {
    let csv = 20;
    let s = setup(csv);
    let rate = FeeRate::from_sat_per_vb(2).unwrap();
    let tx =
        reclaim_tx(&s.deposit, &s.user, s.outpoint, &s.txout, p2tr_single(&s.user), rate).unwrap();
    // Confirmed at height h; spendable in block h + csv, so tip must reach h + csv - 1.
    s.ledger.mine(u32::from(csv) - 2);
    assert!(matches!(s.ledger.broadcast(&tx), Err(ChainError::Rejected(_))), "one block early");
    s.ledger.mine(1);
    let txid = s.ledger.broadcast(&tx).expect("reclaim after deposit_csv");
    s.ledger.mine(1);
    assert_eq!(s.ledger.confirmations(&txid).unwrap(), Some(1));
}
