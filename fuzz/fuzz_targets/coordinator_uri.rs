//! libFuzzer binary for the `coordinator_uri` target; the body and what it asserts are
//! `cohort_fuzz_checks::targets::coordinator_uri` (`fuzz-checks/src/targets/coordinator_uri.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cohort_fuzz::targets::coordinator_uri::run(data));
