//! libFuzzer binary for the `coordinator_store` target; the body and what it asserts are
//! `cohort_fuzz_checks::targets::coordinator_store` (`fuzz-checks/src/targets/coordinator_store.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cohort_fuzz::targets::coordinator_store::run(data));
