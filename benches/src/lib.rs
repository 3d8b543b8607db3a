//! Criterion benchmarks of Cohort hot paths (see `benches/`).
