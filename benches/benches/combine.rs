//! Combining one node's partial signatures: aggregate-first (one BIP-340 check of the
//! sum) against verifying every partial first, on the same honest inputs.

use std::hint::black_box;
use std::time::Duration;

use cohort_benches::{SignedNode, SIGNER_COUNTS};
use cohort_common::musig;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};

fn combine(c: &mut Criterion) {
    let mut group = c.benchmark_group("combine");
    group.sampling_mode(SamplingMode::Flat);
    for n in SIGNER_COUNTS {
        let node = match SignedNode::new(n) {
            Ok(node) => node,
            Err(e) => panic!("signing session of {n} signers: {e}"),
        };
        group.bench_with_input(BenchmarkId::new("aggregate_first", n), &node, |b, node| {
            b.iter(|| {
                black_box(musig::combine(
                    &node.ctx,
                    &node.agg_nonce,
                    &node.message,
                    &node.contributions,
                ))
            })
        });
        group.bench_with_input(BenchmarkId::new("verify_each", n), &node, |b, node| {
            b.iter(|| {
                black_box(musig::combine_verify_each(
                    &node.ctx,
                    &node.agg_nonce,
                    &node.message,
                    &node.contributions,
                ))
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = combine
}
criterion_main!(benches);
