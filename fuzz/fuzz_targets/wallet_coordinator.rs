//! libFuzzer binary for the `wallet_coordinator` target; the body and what it asserts are
//! `cohort_fuzz_checks::targets::wallet_coordinator` (`fuzz-checks/src/targets/wallet_coordinator.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cohort_fuzz::targets::wallet_coordinator::run(data));
