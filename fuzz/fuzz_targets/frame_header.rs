//! libFuzzer binary for the `frame_header` target; the body and what it asserts are
//! `cohort_fuzz_checks::targets::frame_header` (`fuzz-checks/src/targets/frame_header.rs`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cohort_fuzz::targets::frame_header::run(data));
