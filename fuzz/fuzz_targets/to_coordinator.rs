//! libFuzzer binary for the `to_coordinator` target; the body and what it asserts are
//! `cohort_fuzz_checks::targets::to_coordinator` (`fuzz-checks/src/targets/to_coordinator.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cohort_fuzz::targets::to_coordinator::run(data));
