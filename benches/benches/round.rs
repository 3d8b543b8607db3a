//! A whole round in memory through the real engines: registration, batching, tree and
//! deposit signing by every participant, aggregation, broadcast and confirmation on
//! the embedded ledger (exits left out), at N = 100 and 1,000 participants.

use std::hint::black_box;
use std::time::Duration;

use cohort_sim::round::{run_round, RoundConfig};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};

fn round(c: &mut Criterion) {
    let mut group = c.benchmark_group("round");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    for n in [100usize, 1000] {
        group.measurement_time(Duration::from_secs(if n >= 1000 { 40 } else { 8 }));
        let config = RoundConfig { exits: 0, ..RoundConfig::new(n) };
        group.bench_with_input(BenchmarkId::new("in_memory", n), &config, |b, config| {
            b.iter(|| match run_round(config) {
                Ok(outcome) => black_box(outcome.report.completed),
                Err(e) => panic!("round of {n}: {e}"),
            })
        });
    }
    group.finish();
}

criterion_group!(benches, round);
criterion_main!(benches);
