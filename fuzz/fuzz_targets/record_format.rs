//! Arbitrary bytes as a ring record: decoding never panics, formatting always makes
//! exactly one line. `cargo +nightly fuzz run record_format`
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    quelog::fuzzing::decode_and_format(data);
});
