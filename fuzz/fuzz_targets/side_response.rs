//! libFuzzer binary for the `side_response` target; the body and what it asserts are
//! `cohort_fuzz_checks::targets::side_response` (`fuzz-checks/src/targets/side_response.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cohort_fuzz::targets::side_response::run(data));
