//! libFuzzer binary for the `side_request` target; the body and what it asserts are
//! `cohort_fuzz_checks::targets::side_request` (`fuzz-checks/src/targets/side_request.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cohort_fuzz::targets::side_request::run(data));
