//! Nonce aggregation of a root node: the N+1 public nonces of every leaf's cosigner
//! key plus the batch key.

use std::hint::black_box;
use std::time::Duration;

use cohort_benches::{pubnonces, Batch, BATCH_SIZES};
use cohort_common::musig::{self, Point};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn nonce_agg(c: &mut Criterion) {
    let mut group = c.benchmark_group("nonce_agg");
    for n in BATCH_SIZES {
        let batch = Batch::new(n);
        let mut signers: Vec<Point> = batch.leaves.iter().map(|l| l.cosigner).collect();
        signers.push(batch.batch_key);
        let nonces = pubnonces(&signers);
        group.throughput(Throughput::Elements(nonces.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &nonces, |b, nonces| {
            b.iter(|| black_box(musig::nonce_agg(nonces)))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = nonce_agg
}
criterion_main!(benches);
