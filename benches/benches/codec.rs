//! The proposal body of N leaves: encoding it once per batch, decoding it (each
//! participant), and framing one participant's proposal around the already-encoded
//! body (a copy of its bytes).

use std::hint::black_box;
use std::time::Duration;

use cohort_benches::{funding_requests, proposal, proposal_body, Batch, BATCH_SIZES};
use cohort_common::codec::{self, Encoded};
use cohort_common::messages::{ProposalBody, ToParticipant};
use cohort_common::params::DEFAULT_MAX_FRAME;
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};

fn fixture(n: usize) -> (ProposalBody, Encoded<ProposalBody>, ToParticipant) {
    let batch = Batch::new(n);
    let built = proposal_body(&batch, &funding_requests(n)).and_then(|body| {
        let encoded = Encoded::new(&body)?;
        let message = proposal(&batch, &encoded, batch.scoped_leaf())?;
        Ok((body, encoded, message))
    });
    match built {
        Ok(fixture) => fixture,
        Err(e) => panic!("proposal of {n} leaves: {e}"),
    }
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    // Decoding 1,700 leaves takes ~10 ms: flat sampling keeps 20 samples inside 2 s.
    group.sampling_mode(SamplingMode::Flat);
    let limit = DEFAULT_MAX_FRAME as usize;
    for n in BATCH_SIZES {
        let (body, encoded, message) = fixture(n);
        group.throughput(Throughput::Bytes(encoded.len() as u64));
        group.bench_with_input(BenchmarkId::new("encode_body", n), &body, |b, body| {
            b.iter(|| black_box(Encoded::new(body)))
        });
        group.bench_with_input(BenchmarkId::new("decode_body", n), &encoded, |b, encoded| {
            b.iter(|| black_box(encoded.decode(limit)))
        });
        group.bench_with_input(BenchmarkId::new("frame_proposal", n), &message, |b, message| {
            b.iter(|| black_box(codec::encode_frame(message, DEFAULT_MAX_FRAME)))
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
    targets = codec
}
criterion_main!(benches);
