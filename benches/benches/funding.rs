//! Pricing a batch of N registrations and building its unsigned funding transaction.

use std::hint::black_box;
use std::time::Duration;

use cohort_benches::{coordinator_script, funding_requests, BATCH_SIZES};
use cohort_common::bitcoin::{ScriptBuf, TxOut};
use cohort_common::fees::{self, FundingRequest};
use cohort_common::params::FeeSchedule;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn funding(c: &mut Criterion) {
    let mut group = c.benchmark_group("funding");
    let schedule = FeeSchedule::default();
    let coordinator = coordinator_script();
    // The root's script comes from the tree (benchmarked apart); any P2TR has its size.
    let root_script: ScriptBuf = coordinator.clone();
    for n in BATCH_SIZES {
        let requests: Vec<FundingRequest> = funding_requests(n);
        if let Err(e) = fees::plan_funding(&requests, &schedule, &coordinator) {
            panic!("pricing {n} registrations: {e}");
        }
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &requests, |b, requests| {
            b.iter(|| {
                black_box(fees::plan_funding(requests, &schedule, &coordinator).map(|plan| {
                    let root =
                        TxOut { value: plan.batch_amount, script_pubkey: root_script.clone() };
                    let tx = fees::funding_tx(requests, &plan, root, &coordinator);
                    (plan, tx)
                }))
            })
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
    targets = funding
}
criterion_main!(benches);
