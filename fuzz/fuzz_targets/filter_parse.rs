//! Filter directives (`Builder::filter`, `RUST_LOG`) against the `env_filter` crate:
//! a clear error or the same answers on sample targets, never a panic.
//! `cargo +nightly fuzz run filter_parse`
#![no_main]


libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    quelog::fuzzing::filter_against_reference(data, &quelog::fuzzing::env_filter_reference);
});
