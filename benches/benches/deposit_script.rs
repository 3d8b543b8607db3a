//! A registration's deposit script: derived (the 2-of-2 key aggregation and the Taproot
//! tweak, what every registration paid before stop 23) against the coordinator's
//! `DepositScripts`, which keeps it for an address that comes back.

use std::hint::black_box;
use std::time::Duration;

use cohort_benches::keypairs;
use cohort_common::scripts::DepositScript;
use cohort_coordinator::engine::DepositScripts;
use criterion::{criterion_group, criterion_main, Criterion};

fn deposit_script(c: &mut Criterion) {
    let keys = keypairs(2);
    let (user, coordinator) = (keys[0].public, keys[1].public);
    let mut group = c.benchmark_group("deposit_script");
    group.bench_function("derived", |b| {
        b.iter(|| black_box(DepositScript::new(user, coordinator, 4_320)))
    });
    let mut known = DepositScripts::default();
    group.bench_function("returning_address", |b| {
        b.iter(|| black_box(known.get(user, coordinator, 4_320)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = deposit_script
}
criterion_main!(benches);
