//! Shared helpers of the benchmarks (the benchmarks themselves are under `benches/`).
