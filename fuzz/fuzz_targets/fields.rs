//! Arbitrary bytes as a record's typed field section: decoding never panics, what
//! decodes re-encodes to the same bytes, and its text never splits a line.
//! `cargo +nightly fuzz run fields`
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    quelog::fuzzing::fields_round_trip(data);
});
