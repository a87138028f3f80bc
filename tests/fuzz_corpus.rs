//! Replays the committed fuzz corpora on stable, as the fuzz targets do: every file of
//! `filter_parse` (and every regression input) against the `env_filter` crate, and
//! every file of `fields` through the field encoding's round trip.

use std::path::Path;

use quelog::fuzzing::env_filter_reference as reference;

#[test]
fn every_fields_corpus_file_round_trips() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/fields");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).expect("the fields corpus") {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        quelog::fuzzing::fields_round_trip(&data);
        replayed += 1;
    }
    assert!(replayed >= 10, "only {replayed} corpus files");
}

#[test]
fn every_corpus_file_agrees_with_env_filter() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/filter_parse");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).expect("the filter_parse corpus") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        quelog::fuzzing::filter_against_reference(&data, &reference);
        replayed += 1;
    }
    assert!(replayed >= 10, "only {replayed} corpus files");
}

/// Pseudo-random directive lists from a small vocabulary: a stable stand-in for the
/// fuzzer between fuzzing sessions.
#[test]
fn random_directive_lists_agree_with_env_filter() {
    const PIECES: &[&str] = &[
        "info",
        "debug",
        "trace",
        "warn",
        "error",
        "off",
        "OFF",
        "Info",
        "a",
        "a::b",
        "a_b",
        "my_crate",
        "my_crate::db",
        "=",
        "==",
        ",",
        ", ",
        " ",
        "x",
        "loud",
        "[s]",
        "{f}",
        "/r",
        "é",
        "::",
        "5",
    ];
    let mut next = quelog::fuzzing::pseudo_random();
    for _ in 0..20_000 {
        let mut spec = String::new();
        for _ in 0..(next() % 8) {
            spec.push_str(PIECES[(next() % PIECES.len() as u64) as usize]);
        }
        quelog::fuzzing::filter_against_reference(spec.as_bytes(), &reference);
    }
}
