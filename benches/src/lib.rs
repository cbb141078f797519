//! Benchmarks for wzp.
