//! A participant alone, as a real wallet runs it (no caches shared with other
//! participants): from the coordinator's proposal for a batch of 2,000 leaves to its
//! tree signatures, i.e. every check of the proposal (the body decoded, each node of its
//! paths rebuilt, their cosigner keys aggregated, the funding transaction checked) and a
//! partial signature per node of its paths.
//!
//! The round is set up by the real coordinator engine (`session::testkit`): 1,000
//! parties with one deposit, one fixed leaf and a remainder leaf each, radix 4 (depth 6).
//! Only party 0's handling of its proposal is timed; every sample runs a fresh round, so
//! no nonce is used twice.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::hint::black_box;
use std::time::Duration;

use cohort_common::messages::ToParticipant;
use cohort_common::params::TreeParams;
// What the test kit names through `super::`.
#[allow(unused_imports)]
use cohort_participant::session::{
    Event, ExitPath, OwnedDeposit, PhaseName, ProposalError, Session, SessionConfig, SessionError,
    SharedCaches,
};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, SamplingMode};

#[path = "../src/session/testkit.rs"]
mod testkit;

use testkit::Kit;

/// Parties in the round: each brings two leaves.
const PARTIES: usize = 1_000;

/// A round of [`PARTIES`] registered, every proposal held back by the kit.
fn registered() -> Kit {
    let mut kit = Kit::new(PARTIES, None);
    kit.params.tree = TreeParams { radix: 4, max_depth: 8 };
    kit.register_all();
    kit
}

/// Checks once that the round is what the benchmark says: one batch of `2 × PARTIES`
/// leaves, party 0 with its two leaves and the nodes of its paths.
fn check_the_round() {
    let kit = registered();
    let Some(ToParticipant::Proposal(proposal)) = kit.held[0].front() else {
        panic!("party 0 holds no proposal")
    };
    let body: cohort_common::messages::ProposalBody =
        proposal.body.decode(1 << 23).expect("the engine's body decodes");
    assert_eq!(body.leaves.len(), 2 * PARTIES, "one batch of every leaf");
    assert_eq!(proposal.your_leaves.len(), 2);
    eprintln!(
        "participant_alone: a batch of {} leaves, {} deposit inputs, radix {}; party 0 signs \
         {} nodes",
        body.leaves.len(),
        body.funding_tx.input.len(),
        body.tree.radix,
        proposal.node_nonces.len()
    );
}

fn alone(c: &mut Criterion) {
    check_the_round();
    let mut group = c.benchmark_group("participant_alone");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(1));
    // Each sample sets a round of 1,000 up (about 3 s) before the timed part.
    group.measurement_time(Duration::from_secs(40));
    group.bench_function(BenchmarkId::new("check_and_sign", 2 * PARTIES), |b| {
        b.iter_batched(
            registered,
            |mut kit| {
                kit.release(0);
                black_box(kit.take_tree_sigs(0))
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, alone);
criterion_main!(benches);
