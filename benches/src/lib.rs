//! Criterion benches for Lookout live in `benches/benches/`.
