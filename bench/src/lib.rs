//! quelog beside its peers. `cargo run --release --bin compare` runs the comparison
//! (see `src/bin/compare.rs`); `cargo bench` runs the producer-path micro-benchmarks.

pub mod backends;
pub mod drain;
pub mod measure;
pub mod plot;
pub mod report;
