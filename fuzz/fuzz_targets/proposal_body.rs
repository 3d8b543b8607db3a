//! libFuzzer binary for the `proposal_body` target; the body and what it asserts are
//! `cohort_fuzz_checks::targets::proposal_body` (`fuzz-checks/src/targets/proposal_body.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cohort_fuzz::targets::proposal_body::run(data));
