//! libFuzzer binary for the `to_participant` target; the body and what it asserts are
//! `cohort_fuzz_checks::targets::to_participant` (`fuzz-checks/src/targets/to_participant.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cohort_fuzz::targets::to_participant::run(data));
