//! Criterion benchmarks live in `benches/`; this library only hosts helpers they share.
