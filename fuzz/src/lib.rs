//! The cargo-fuzz side of Cohort's fuzz targets: the bodies and what they share are the
//! workspace crate `cohort-fuzz-checks` (re-exported here); this library installs its
//! counting allocator, so every libFuzzer binary that calls a target measures heap.

pub use cohort_fuzz_checks::*;

#[global_allocator]
static COUNTING: heap::Counting = heap::Counting;

// Every binary of this crate links libFuzzer through this library, the `seeds` binary too:
// code built with cargo-fuzz's coverage flags needs libFuzzer's `__sancov_*` symbols.
pub use libfuzzer_sys;
