//! libFuzzer binary for the `config_file` target; the body and what it asserts are
//! `cohort_fuzz_checks::targets::config_file` (`fuzz-checks/src/targets/config_file.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cohort_fuzz::targets::config_file::run(data));
