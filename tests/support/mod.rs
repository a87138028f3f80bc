//! Helpers shared by the integration tests (and, by path, `examples/storm.rs`).

#![allow(dead_code)]

pub mod common;
pub mod rotated;
pub mod storm;
