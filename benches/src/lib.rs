//! Criterion benches for the hot path live in `benches/benches/`; each one
//! measures a baseline in the same run so results read as ratios. Run them
//! with `cargo bench -p benches`; figures are kept in `docs/PERFORMANCE.md`.
