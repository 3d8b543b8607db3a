//! The cargo-fuzz side of Cohort's fuzz targets: the bodies and what they share are the
//! workspace crate `cohort-fuzz-checks` (re-exported here); this library installs its
//! counting allocator, so every libFuzzer binary that calls a target measures heap.

pub use cohort_fuzz_checks::*;

#[global_allocator]
static COUNTING: heap::Counting = heap::Counting;
