//! Arbitrary record contents and fields through every JSON style: each line parses
//! with serde_json, has no duplicate keys, and gives back the message and string
//! fields. The committed seeds are in `corpus/format_json` (replayed by `cargo test`);
//! give libFuzzer a scratch corpus first so it does not add to them:
//! `cargo +nightly fuzz run format_json /tmp/format_json corpus/format_json`
#![no_main]

#[path = "../json_check.rs"]
mod json_check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    json_check::check(&quelog::fuzzing::format_json(data));
});
