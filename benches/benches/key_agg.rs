//! Key aggregation (sorted KeyAgg plus the Taproot tweak): the root's key set of N+1
//! keys, and every node of a batch one after the other. Throughput is in keys, so the
//! time per key per node reads directly off the report (DESIGN 10: about 22 µs).

use std::hint::black_box;
use std::time::Duration;

use cohort_benches::{Batch, BATCH_SIZES};
use cohort_common::musig::{self, KeyAggContext, MusigError};
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};

fn key_agg(c: &mut Criterion) {
    let mut group = c.benchmark_group("key_agg");
    group.sampling_mode(SamplingMode::Flat);
    for n in BATCH_SIZES {
        let sets = match Batch::new(n).node_key_sets() {
            Ok(sets) => sets,
            Err(e) => panic!("node key sets of {n} leaves: {e}"),
        };
        let root = &sets[0];
        group.throughput(Throughput::Elements(root.len() as u64));
        group.bench_with_input(BenchmarkId::new("root", n), root, |b, root| {
            b.iter(|| black_box(musig::taproot_context(root, None)))
        });
        // Sequential on purpose (the tree spreads nodes over rayon): the cost per key.
        let keys: usize = sets.iter().map(Vec::len).sum();
        group.throughput(Throughput::Elements(keys as u64));
        group.bench_with_input(BenchmarkId::new("all_nodes", n), &sets, |b, sets| {
            b.iter(|| {
                black_box(
                    sets.iter().map(|set| musig::taproot_context(set, None)).collect::<Result<
                        Vec<KeyAggContext>,
                        MusigError,
                    >>(
                    ),
                )
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
        // 10 flat samples of all 1,700-leaf nodes take about 3.4 s.
        .measurement_time(Duration::from_secs(4));
    targets = key_agg
}
criterion_main!(benches);
