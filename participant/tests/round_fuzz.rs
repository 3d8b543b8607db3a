//! The round fuzzer as CI runs it: seeded random schedules of faults over the real
//! coordinator engine and real sessions, plus every committed input of the cargo-fuzz
//! target (`fuzz/corpus/round/`, `fuzz/regressions/round/`); each schedule ends with the
//! invariants checked (`participant/src/session/roundfuzz.rs`).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;

use cohort_participant::session::{
    Event, ExitPath, OwnedDeposit, PhaseName, ProposalError, Randomness, Session, SessionConfig,
    SessionError, SharedCaches, BODY_DECODE_LIMIT,
};
use rand::{Rng, SeedableRng};

#[path = "../src/session/testkit.rs"]
mod testkit;

#[path = "../src/session/roundfuzz.rs"]
mod roundfuzz;

use roundfuzz::{Fuzz, Outcome};

/// How many random schedules one test run executes (`ROUND_FUZZ_SCHEDULES` overrides it,
/// and `ROUND_FUZZ_FIRST` the first seed, for a longer search outside CI).
const SCHEDULES: u64 = 300;

#[test]
fn a_schedule_without_faults_confirms_and_every_participant_can_exit() {
    for n in 0..5u8 {
        let outcome = Fuzz::run(&[n, 9]);
        let parties = 2 + usize::from(n);
        assert_eq!(outcome.participants, parties);
        assert_eq!(outcome.deposit_sigs, parties, "{outcome:?}");
        assert_eq!(outcome.signers, (0..parties).collect::<Vec<_>>(), "{outcome:?}");
        assert_eq!(outcome.exited, parties, "{outcome:?}");
        assert_eq!(outcome.reclaimable, 0);
    }
}

#[test]
fn a_coordinator_crash_before_any_signature_leaves_every_deposit_reclaimable() {
    // 3 parties; crash the engine (op 19, party byte, crash kind 0) with the proposals in flight.
    let outcome = Fuzz::run(&[1, 4, 19, 0, 0]);
    assert_eq!(outcome.coordinator_crashes, 1);
    assert_eq!(outcome.deposit_sigs, 0, "{outcome:?}");
    assert_eq!(outcome.reclaimable, 3, "{outcome:?}");
}

#[test]
fn a_tampered_signed_tree_gets_no_deposit_signature_from_its_victim() {
    // 2 parties: party 0 gets its proposal and signs the tree, the engine gets both tree
    // signatures, then party 0's signed tree arrives with one signature's byte flipped.
    let steps = [0, 0, 0, 1, 4, 0, 4, 1, 13, 0, 4, 7];
    let outcome = Fuzz::run(&[[0, 3].as_slice(), &steps].concat());
    assert_eq!(outcome.tampered, 1, "{outcome:?}");
    // Party 0 never signs its deposit (it keeps it); the engine excludes it when its
    // deposit signatures do not come and runs the batch again with party 1 alone.
    assert_eq!(outcome.signers, [1], "{outcome:?}");
    assert_eq!(outcome.exited, 1, "{outcome:?}");
    assert_eq!(outcome.reclaimable, 1, "{outcome:?}");
}

#[test]
fn one_input_replays_the_same_schedule() {
    // A crash input must reproduce: keys, secrets and the engine's randomness all come
    // from the input.
    for seed in 0..20 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1_000 + seed);
        let data: Vec<u8> = (0..120).map(|_| rng.gen()).collect();
        assert_eq!(Fuzz::run(&data), Fuzz::run(&data), "seed {seed}");
    }
}

#[test]
fn seeded_random_schedules_keep_every_invariant() {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let count = var("ROUND_FUZZ_SCHEDULES").unwrap_or(SCHEDULES);
    let first = var("ROUND_FUZZ_FIRST").unwrap_or(0);
    let mut total = Outcome::default();
    for seed in first..first + count {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let len = rng.gen_range(2..160);
        let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        let o = Fuzz::run(&data);
        total.steps += o.steps;
        total.exited += o.exited;
        total.reclaimable += o.reclaimable;
        total.deposit_sigs += o.deposit_sigs;
        total.coordinator_crashes += o.coordinator_crashes;
        total.participant_crashes += o.participant_crashes;
        total.tampered += o.tampered;
    }
    eprintln!("{count} schedules from seed {first}: {total:?}");
    // The schedules reach every ending: funds exited, funds reclaimable, crashes on both
    // sides, tampered messages.
    assert!(total.exited > 0 && total.reclaimable > 0, "{total:?}");
    assert!(total.coordinator_crashes > 0 && total.participant_crashes > 0, "{total:?}");
    assert!(total.tampered > 0, "{total:?}");
}

#[test]
fn the_committed_seed_corpus_is_the_harness_seed_schedules() {
    let dir = fuzz_dir().join("corpus/round");
    for (name, bytes) in roundfuzz::seed_schedules() {
        let path = dir.join(format!("seed-{name}"));
        let stored = std::fs::read(&path).unwrap_or_else(|e| {
            panic!("{}: {e}; write the seeds again (docs/FUZZING.md)", path.display())
        });
        assert_eq!(stored, bytes, "{} is stale; write the seeds again", path.display());
    }
}

#[test]
fn every_committed_fuzz_input_keeps_every_invariant() {
    let mut seen = 0;
    for dir in ["corpus/round", "regressions/round"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir().join(dir)) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| Fuzz::run(&data));
            assert!(outcome.is_ok(), "{} breaks an invariant (see above)", path.display());
            seen += 1;
        }
    }
    assert!(seen >= roundfuzz::seed_schedules().len(), "only {seen} committed inputs");
}

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}
