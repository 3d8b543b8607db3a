//! Tree building: the coordinator's full build, a participant's one-path build, and the
//! same participant build against a warm shared key-aggregation cache (the simulator).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use cohort_benches::{funding_outpoint, Batch, BATCH_SIZES};
use cohort_common::musig::KeyAggCache;
use cohort_common::tree::{Scope, Tree, TreePlan};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};

fn full(batch: &Batch) -> Tree {
    let built = Tree::build(Arc::clone(&batch.leaves), batch.batch_key, batch.params, None, |_| {
        funding_outpoint()
    });
    match built {
        Ok(tree) => tree,
        Err(e) => panic!("full tree of {} leaves: {e}", batch.len()),
    }
}

fn scoped(batch: &Batch, cache: Option<&KeyAggCache>) -> Tree {
    let scope = Scope::Paths(vec![batch.scoped_leaf()]);
    let built =
        TreePlan::new(Arc::clone(&batch.leaves), batch.batch_key, batch.params, &scope, cache)
            .and_then(|plan| plan.finish(funding_outpoint()));
    match built {
        Ok(tree) => tree,
        Err(e) => panic!("scoped tree of {} leaves: {e}", batch.len()),
    }
}

fn tree_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("tree_build");
    // A full build of 1,700 leaves takes a good part of a second: one iteration per sample.
    group.sampling_mode(SamplingMode::Flat);
    for n in BATCH_SIZES {
        let batch = Batch::new(n);
        group.bench_with_input(BenchmarkId::new("full", n), &batch, |b, batch| {
            b.iter(|| black_box(full(batch)))
        });
        group.bench_with_input(BenchmarkId::new("scoped_cold", n), &batch, |b, batch| {
            b.iter(|| black_box(scoped(batch, None)))
        });
        // Warmed by the coordinator's full build, as in the simulator where every
        // participant of the process shares one cache.
        let cache = KeyAggCache::new();
        let warm = Tree::build(
            Arc::clone(&batch.leaves),
            batch.batch_key,
            batch.params,
            Some(&cache),
            |_| funding_outpoint(),
        );
        if let Err(e) = warm {
            panic!("warming the cache for {n} leaves: {e}");
        }
        group.bench_with_input(BenchmarkId::new("scoped_warm", n), &batch, |b, batch| {
            b.iter(|| black_box(scoped(batch, Some(&cache))))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        // 10 flat samples of a full 1,700-leaf build take about 1.7 s.
        .measurement_time(Duration::from_secs(3));
    targets = tree_build
}
criterion_main!(benches);
