//! Our BIP-327 implementation against the `musig2` crate, in one run: key aggregation
//! (sorted KeyAgg plus the Taproot tweak) of a 2,000-key node and of small nodes, and
//! one partial signature; and what the coordinator does per deposit input (its partial
//! signature on a 2-of-2 key, then the combination with the user's and the final
//! check). Throughput is in keys for aggregation, so the time per key reads directly
//! off the report.

use std::hint::black_box;
use std::time::Duration;

use cohort_benches::keypairs;
use cohort_common::musig::{self, Point};
use cohort_common::musig2;
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};

/// Node sizes: a 2,000-key node (the target), a mid-tree node, a bottom node and a
/// 2-of-2 deposit key.
const NODE_KEYS: [usize; 4] = [2_000, 64, 3, 2];

fn sorted_keys(n: usize) -> Vec<Point> {
    let mut keys: Vec<Point> = keypairs(n).iter().map(|k| k.point).collect();
    musig::key_sort(&mut keys);
    keys
}

fn key_agg(c: &mut Criterion) {
    let mut group = c.benchmark_group("own_key_agg");
    group.sampling_mode(SamplingMode::Flat);
    for n in NODE_KEYS {
        let keys = sorted_keys(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("musig2", n), &keys, |b, keys| {
            b.iter(|| {
                black_box(
                    musig2::KeyAggContext::new(keys.iter().copied())
                        .ok()
                        .and_then(|ctx| ctx.with_unspendable_taproot_tweak().ok()),
                )
            })
        });
        group.bench_with_input(BenchmarkId::new("ours", n), &keys, |b, keys| {
            b.iter(|| black_box(musig::taproot_context(keys, None)))
        });
    }
    group.finish();
}

fn sign_partial(c: &mut Criterion) {
    let mut group = c.benchmark_group("own_sign_partial");
    let signers = keypairs(16);
    let points: Vec<Point> = signers.iter().map(|k| k.point).collect();
    let ours = match musig::taproot_context(&points, None) {
        Ok(ctx) => ctx,
        Err(e) => panic!("context: {e}"),
    };
    let mut sorted = points.clone();
    musig::key_sort(&mut sorted);
    let theirs = match musig2::KeyAggContext::new(sorted)
        .map_err(|e| e.to_string())
        .and_then(|ctx| ctx.with_unspendable_taproot_tweak().map_err(|e| e.to_string()))
    {
        Ok(ctx) => ctx,
        Err(e) => panic!("musig2 context: {e}"),
    };
    let secnonces: Vec<_> = points
        .iter()
        .enumerate()
        .map(|(i, p)| musig::secnonce_from_seed([i as u8 + 1; 32], p))
        .collect();
    let pubnonces: Vec<_> = secnonces.iter().map(|s| s.public_nonce()).collect();
    let agg_nonce = match musig::nonce_agg(&pubnonces) {
        Ok(a) => a,
        Err(e) => panic!("nonces: {e}"),
    };
    let message = [0x42; 32];
    let secret = signers[0].scalar();
    group.bench_function("musig2", |b| {
        b.iter(|| {
            black_box(musig2::sign_partial::<musig2::PartialSignature>(
                &theirs,
                secret,
                secnonces[0].clone(),
                &agg_nonce,
                message,
            ))
        })
    });
    group.bench_function("ours", |b| {
        b.iter(|| {
            black_box(musig::sign_partial(
                &ours,
                &signers[0],
                secnonces[0].clone(),
                &agg_nonce,
                &message,
            ))
        })
    });
    group.finish();
}

/// The coordinator's side of one deposit input: given the user's nonce and partial
/// signature, its own partial signature and the combination with its final check.
fn deposit_sign_combine(c: &mut Criterion) {
    let keys = keypairs(2);
    let (user, coordinator) = (&keys[0], &keys[1]);
    let ctx = match musig::taproot_context(&[user.point, coordinator.point], None) {
        Ok(ctx) => ctx,
        Err(e) => panic!("context: {e}"),
    };
    let message = [0x24; 32];
    let user_nonce = musig::secnonce_from_seed([1; 32], &user.point);
    let own_nonce = musig::secnonce_from_seed([2; 32], &coordinator.point);
    let pubnonces = [user_nonce.public_nonce(), own_nonce.public_nonce()];
    let agg = match musig::nonce_agg(&pubnonces) {
        Ok(a) => a,
        Err(e) => panic!("nonces: {e}"),
    };
    let user_psig = match musig::sign_partial(&ctx, user, user_nonce, &agg, &message) {
        Ok(p) => p,
        Err(e) => panic!("user signature: {e}"),
    };
    c.bench_function("own_deposit_sign_combine", |b| {
        b.iter(|| {
            // One session for its signature and the combination, as the coordinator does.
            let session = musig::SigningSession::new(&ctx, &agg, &message);
            let own = session.sign(&ctx, coordinator, own_nonce.clone());
            let contributions = own.map(|psig| {
                [
                    musig::Contribution {
                        signer: user.point,
                        pubnonce: pubnonces[0].clone(),
                        psig: user_psig,
                    },
                    musig::Contribution {
                        signer: coordinator.point,
                        pubnonce: pubnonces[1].clone(),
                        psig,
                    },
                ]
            });
            black_box(contributions.map(|c| session.combine(&ctx, &c)))
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = key_agg, sign_partial, deposit_sign_combine
}
criterion_main!(benches);
