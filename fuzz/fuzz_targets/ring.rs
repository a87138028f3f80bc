//! Ring operations (push, hold, publish, abort, pop) checked against a model.
//! `cargo +nightly fuzz run ring`
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    quelog::fuzzing::ring_against_model(data);
});
