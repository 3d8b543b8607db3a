//! Script-checking a funding-like transaction (every input a signed P2TR key-path
//! spend) with [`cohort_common::consensus::verify_tx`], Bitcoin Core's interpreter.

use std::hint::black_box;
use std::time::Duration;

use cohort_common::bitcoin::hashes::Hash as _;
use cohort_common::bitcoin::key::{Keypair, TapTweak as _};
use cohort_common::bitcoin::secp256k1::{Message, Secp256k1};
use cohort_common::bitcoin::sighash::{Prevouts, SighashCache, TapSighashType};
use cohort_common::bitcoin::transaction::Version;
use cohort_common::bitcoin::{
    absolute, Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness,
};
use cohort_common::consensus::verify_tx;
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};

/// Inputs of the transactions checked: a small batch and a full 400,000 WU one.
const INPUTS: [usize; 2] = [100, 1700];

/// A funding-like transaction of `n` signed P2TR key-path inputs (one deposit per
/// registration) and `n + 2` P2TR outputs (root, one remainder each, coordinator fee),
/// with the outputs it spends.
fn funding_like(n: usize) -> (Transaction, Vec<TxOut>) {
    let secp = Secp256k1::new();
    let keys: Vec<Keypair> = (0..n)
        .map(|i| {
            let mut secret = [0x11u8; 32];
            secret[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
            Keypair::from_seckey_slice(&secp, &secret)
                .unwrap_or_else(|e| panic!("fixture key {i}: {e}"))
        })
        .collect();
    let p2tr = |k: &Keypair| ScriptBuf::new_p2tr(&secp, k.x_only_public_key().0, None);
    let spent: Vec<TxOut> = keys
        .iter()
        .map(|k| TxOut { value: Amount::from_sat(100_000), script_pubkey: p2tr(k) })
        .collect();
    let mut output =
        vec![TxOut { value: Amount::from_sat(50_000 * n as u64), script_pubkey: p2tr(&keys[0]) }];
    output.extend(
        keys.iter().map(|k| TxOut { value: Amount::from_sat(40_000), script_pubkey: p2tr(k) }),
    );
    output.push(TxOut { value: Amount::from_sat(5_000), script_pubkey: p2tr(&keys[n - 1]) });
    let mut tx = Transaction {
        version: Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: (0..n)
            .map(|i| TxIn {
                previous_output: OutPoint::new(Txid::from_byte_array([0xd0; 32]), i as u32),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                ..TxIn::default()
            })
            .collect(),
        output,
    };
    let prevouts = Prevouts::All(&spent);
    let mut cache = SighashCache::new(&tx);
    let sigs: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let hash = cache
                .taproot_key_spend_signature_hash(i, &prevouts, TapSighashType::Default)
                .unwrap_or_else(|e| panic!("sighash of input {i}: {e}"));
            let tweaked = k.tap_tweak(&secp, None).to_keypair();
            secp.sign_schnorr_no_aux_rand(&Message::from_digest(hash.to_byte_array()), &tweaked)
        })
        .collect();
    for (input, sig) in tx.input.iter_mut().zip(sigs) {
        input.witness = Witness::from_slice(&[sig.as_ref().as_slice()]);
    }
    (tx, spent)
}

fn consensus(c: &mut Criterion) {
    let mut group = c.benchmark_group("consensus_verify_tx");
    // One check of 1,700 inputs took seconds before libbitcoinkernel: flat sampling
    // keeps the run at `sample_size` iterations instead of 55.
    group.sampling_mode(SamplingMode::Flat);
    for n in INPUTS {
        let (tx, spent) = funding_like(n);
        if let Err(e) = verify_tx(&tx, &spent) {
            panic!("fixture of {n} inputs does not verify: {e}");
        }
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &(tx, spent), |b, (tx, spent)| {
            b.iter(|| black_box(verify_tx(tx, spent)))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(3));
    targets = consensus
}
criterion_main!(benches);
