//! libFuzzer binary for the `participant_store` target; the body and what it asserts are
//! `cohort_fuzz_checks::targets::participant_store` (`fuzz-checks/src/targets/participant_store.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cohort_fuzz::targets::participant_store::run(data));
