//! The round fuzzer: the input is a schedule of faults (drop, duplicate, reorder, delay,
//! tampered or forged coordinator messages, crash and restart of the coordinator engine or
//! of a participant) over a whole round of the real coordinator engine and real participant
//! sessions on the embedded ledger; afterwards the harness asserts that no participant
//! signed a deposit without verified exit paths stored for that funding tx, that no deposit
//! went anywhere else, and that every participant can exit or reclaim.
//!
//! The harness and the test kit it drives are the participant crate's test files
//! (`participant/src/session/roundfuzz.rs`, `testkit.rs`), included by path exactly as
//! `participant/tests/round_fuzz.rs` includes them; they name the session's types through
//! `super::`, hence the imports below.

#![no_main]

#[allow(unused_imports)]
use cohort_participant::session::{
    Event, ExitPath, OwnedDeposit, PhaseName, ProposalError, Randomness, Session, SessionConfig,
    SessionError, SharedCaches, BODY_DECODE_LIMIT,
};
use libfuzzer_sys::fuzz_target;

#[path = "../../participant/src/session/testkit.rs"]
mod testkit;

// Only `Fuzz::run` is used here; the seed schedules are the `seeds` binary's.
#[allow(dead_code)]
#[path = "../../participant/src/session/roundfuzz.rs"]
mod roundfuzz;

fuzz_target!(|data: &[u8]| {
    roundfuzz::Fuzz::run(data);
});
