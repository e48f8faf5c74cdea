//! Criterion throughput benchmarks for otapack; the benchmarks live in `benches/` and run with
//! `cargo bench -p otapack-benches` (see `README.md`). This library is intentionally empty.
