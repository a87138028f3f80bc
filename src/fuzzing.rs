//! Entry points for the cargo-fuzz targets in `fuzz/`. Not a public API: hidden from
//! the docs and free to change. The unit tests below run the same checks over
//! pseudo-random inputs, so `cargo test` keeps them honest between fuzzing sessions.

use std::collections::VecDeque;

use crate::layout::{Spans, TextFormatter};
use crate::record;
use crate::ring::{Claim, ClaimError, Pop, Ring, SLOT_BYTES};

/// Decodes arbitrary bytes as a record; if they decode, formats them as text and
/// panics unless the result is exactly one valid UTF-8 line.
pub fn decode_and_format(data: &[u8]) {
    let Some(view) = record::decode(data) else {
        return;
    };
    let mut out = Vec::new();
    // Span bookkeeping goes to a registry, as on the listener; an event naming a span
    // gets the chain that registry knows.
    let mut spans = Spans::default();
    if spans.apply(&view) {
        return;
    }
    TextFormatter::new(false).write(
        &view,
        Some("name\nwith newline"),
        Some(&mut spans),
        &mut out,
    );
    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1, "{out:?}");
    assert_eq!(out.last(), Some(&b'\n'));
    assert!(std::str::from_utf8(&out).is_ok());
}

/// What the model expects of a record between claim and pop.
struct ModelRecord {
    id: usize,
    slots: u64,
    payload: Vec<u8>,
    state: State,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Held,
    Published,
    Aborted,
}

/// Drives a 16-slot ring with operations decoded from `data` (push, hold a claim,
/// publish or abort a held claim, pop) and panics where it differs from a simple
/// model of what the ring promises: claims succeed exactly when the slots are free,
/// pops return published records in claim order, never pass a held claim, and skip
/// aborted ones.
pub fn ring_against_model(data: &[u8]) {
    let ring = Ring::with_slots(16);
    let lap = ring.slots() as u64;
    let Some(mut consumer) = ring.take_consumer() else {
        return;
    };
    // Records from head to tail, in position order; `held` maps to their claims.
    let mut model: VecDeque<ModelRecord> = VecDeque::new();
    let mut held: Vec<(usize, Claim<'_>)> = Vec::new();
    let mut next_id = 0usize;
    let (mut head, mut tail) = (0u64, 0u64);
    let mut out = Vec::new();
    let mut bytes = data.iter().copied();
    while let Some(op) = bytes.next() {
        match op % 5 {
            0 | 1 => {
                let len = (bytes.next().unwrap_or(0) as usize * 3) % (ring.max_payload() + 40);
                let payload: Vec<u8> = (0..len).map(|i| (i + next_id) as u8).collect();
                let need = (8 + len).div_ceil(SLOT_BYTES) as u64;
                let expected = if len > ring.max_payload() {
                    Err(ClaimError::TooLarge)
                } else if tail + need - head > lap {
                    Err(ClaimError::Full)
                } else {
                    Ok(())
                };
                match (ring.try_claim(len), expected) {
                    (Ok(mut claim), Ok(())) => {
                        claim.write(&payload);
                        tail += need;
                        let hold = op % 5 == 1 && held.len() < 3;
                        model.push_back(ModelRecord {
                            id: next_id,
                            slots: need,
                            payload,
                            state: if hold { State::Held } else { State::Published },
                        });
                        if hold {
                            held.push((next_id, claim));
                        } else {
                            claim.publish();
                        }
                        next_id += 1;
                    }
                    (Err(got), Err(want)) => assert_eq!(got, want),
                    (got, want) => panic!(
                        "claim of {len} bytes: ring said {:?}, model {want:?}",
                        got.map(|_| ())
                    ),
                }
            }
            2 | 3 => {
                if held.is_empty() {
                    continue;
                }
                let pick = bytes.next().unwrap_or(0) as usize % held.len();
                let (id, claim) = held.remove(pick);
                let publish = op % 5 == 2;
                if let Some(record) = model.iter_mut().find(|r| r.id == id) {
                    record.state = if publish {
                        State::Published
                    } else {
                        State::Aborted
                    };
                }
                if publish {
                    claim.publish();
                } else {
                    drop(claim);
                }
            }
            _ => {
                // Aborted records at the front are skipped silently by the ring.
                while model.front().is_some_and(|r| r.state == State::Aborted) {
                    head += model.pop_front().map_or(0, |r| r.slots);
                }
                let got = consumer.pop_into(&mut out);
                match model.front().map(|r| r.state) {
                    None => assert_eq!(got, Pop::Empty),
                    Some(State::Held) => assert_eq!(got, Pop::Pending),
                    Some(_) => {
                        assert_eq!(got, Pop::Record);
                        let record = model.pop_front().expect("front exists");
                        assert_eq!(out, record.payload);
                        head += record.slots;
                    }
                }
                assert_eq!(consumer.position(), head);
            }
        }
    }
}

/// Decodes arbitrary bytes as a typed field section: never a panic; the text of the
/// fields never has a line break; and re-encoding the entries that decoded gives back
/// exactly the bytes they were read from (one spelling per value).
pub fn fields_round_trip(data: &[u8]) {
    use crate::record::fields::{entries, Encoder, Entry, Value};
    let mut again = Vec::new();
    let mut encoder = Encoder::new(&mut again);
    for entry in entries(data) {
        match entry {
            Entry::SpanContext(id) => encoder.span_context(id),
            Entry::SpanParent(id) => encoder.span_parent(id),
            Entry::Follows(id) => encoder.follows(id),
            Entry::Field { name, value } => {
                // Names and texts that are not UTF-8 cannot come from the encoder: the
                // round trip stops there.
                let Ok(name) = std::str::from_utf8(name) else {
                    break;
                };
                match value {
                    Value::I64(n) => encoder.i64(name, n),
                    Value::U64(n) => encoder.u64(name, n),
                    Value::I128(n) => encoder.i128(name, n),
                    Value::U128(n) => encoder.u128(name, n),
                    Value::F64(n) => encoder.f64(name, n),
                    Value::Bool(b) => encoder.bool(name, b),
                    Value::Str(text) | Value::Debug(text) | Value::Display(text) => {
                        let Ok(text) = std::str::from_utf8(text) else {
                            break;
                        };
                        match value {
                            Value::Str(_) => encoder.str(name, text),
                            Value::Debug(_) => encoder.debug(name, &AsIs(text)),
                            _ => encoder.display(name, &text),
                        }
                    }
                }
            }
        }
    }
    assert!(!encoder.cut());
    assert_eq!(
        again.as_slice(),
        data.get(..again.len()).unwrap_or_default()
    );
    let mut text = Vec::new();
    crate::direct::push_fields(&mut text, data);
    assert!(!text.contains(&b'\n'), "{text:?}");
}

/// Debug-formats as the text it holds (a value formatted earlier).
struct AsIs<'a>(&'a str);

impl std::fmt::Debug for AsIs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// xorshift64*: deterministic inputs without a dependency.
    fn inputs(count: usize, max_len: usize) -> impl Iterator<Item = Vec<u8>> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        (0..count).map(move |_| {
            let len = (next() as usize) % max_len;
            (0..len).map(|_| next() as u8).collect()
        })
    }

    #[test]
    fn ring_matches_its_model_on_random_operations() {
        let runs = if cfg!(miri) { 20 } else { 3000 };
        for input in inputs(runs, 400) {
            ring_against_model(&input);
        }
    }

    #[test]
    fn arbitrary_bytes_never_format_to_more_than_one_line() {
        let runs = if cfg!(miri) { 50 } else { 20_000 };
        for input in inputs(runs, 200) {
            decode_and_format(&input);
        }
        // And records that do decode, with hostile content.
        let header = record::Header {
            timestamp_nanos: u64::MAX,
            thread_id: u32::MAX,
            line: 0,
            message_len: 6,
            message_full_len: u32::MAX,
            target_len: 3,
            module_len: 0,
            file_len: 0,
            level: 200,
            flags: 0xff,
        };
        let mut bytes = header.encode().to_vec();
        bytes.extend_from_slice(b"a\nb\r\n\x00\xff\xfe\n");
        decode_and_format(&bytes);
        // Valid records whose typed fields are arbitrary bytes (every kind: events,
        // span bookkeeping), and fields that decode, with hostile strings.
        let mut typed = Vec::new();
        let mut encoder = crate::record::fields::Encoder::new(&mut typed);
        encoder.span_context(1);
        encoder.str("s", "x\n\"y\"\\z\u{1b}");
        encoder.debug("d", &"a\nb");
        encoder.f64("nan", f64::NAN);
        for (i, tail) in inputs(runs, 120).chain([typed]).enumerate() {
            let mut header = header;
            header.message_len = 3;
            header.message_full_len = 3;
            header.flags = record::FLAG_FIELDS | ((i as u8 % 4) << 5);
            let mut bytes = header.encode().to_vec();
            bytes.extend_from_slice(b"tgtmsg");
            bytes.extend_from_slice(&tail);
            decode_and_format(&bytes);
        }
    }

    #[test]
    fn arbitrary_field_sections_round_trip() {
        let runs = if cfg!(miri) { 50 } else { 20_000 };
        for input in inputs(runs, 300) {
            fields_round_trip(&input);
        }
        // And sections the encoder wrote, which decode whole.
        let mut bytes = Vec::new();
        let mut encoder = crate::record::fields::Encoder::new(&mut bytes);
        encoder.span_context(9);
        encoder.str("s", "x\ny");
        encoder.bool("b", false);
        encoder.debug("d", &[1, 2]);
        encoder.f64("f", -0.0);
        fields_round_trip(&bytes);
    }
}

/// A reference filter for [`filter_against_reference`]: whether `level` at `target`
/// is enabled.
pub type ReferenceFilter = Box<dyn Fn(log::Level, &str) -> bool>;

/// Parses arbitrary bytes as filter directives ([`crate::Builder::filter`]) and
/// panics unless the result is either a clear error (a non-empty reason, a token
/// taken from the input) or a filter that agrees with `reference` on every level at
/// sample targets built from the input. `reference` parses the same text (`None`:
/// it refuses it); the fuzz target and the replay test pass the `env_filter` crate.
///
/// The comparison covers the inputs both accept. quelog refuses some that
/// env_filter takes: span and field directives (`[`, `]`, `{`, `}`), regex filters
/// (`/`), whitespace inside a target, an empty target (`=info`), a filter without
/// directives, more than 256 directives and targets past 512 bytes. Whatever
/// env_filter refuses, quelog must refuse too.
pub fn filter_against_reference(data: &[u8], reference: &dyn Fn(&str) -> Option<ReferenceFilter>) {
    let Ok(spec) = std::str::from_utf8(data) else {
        return;
    };
    let ours = crate::filter::Filter::parse(spec);
    let theirs = reference(spec);
    let filter = match (ours, theirs) {
        (Err(bad), _) => {
            assert!(!bad.reason.is_empty());
            assert!(spec.contains(bad.token.as_str()), "{bad:?} not in {spec:?}");
            return;
        }
        (Ok(_), None) => panic!("quelog accepts {spec:?}, which env_filter refuses"),
        (Ok(filter), Some(theirs)) => (filter, theirs),
    };
    let (filter, theirs) = filter;
    let mut targets: Vec<String> = ["", "a", "other", "x::y", "my_crate::db"]
        .iter()
        .map(|t| t.to_string())
        .collect();
    for token in spec.split(',') {
        let name = token.split('=').next().unwrap_or_default().trim();
        if name.is_empty() || name.len() > 600 {
            continue;
        }
        targets.push(name.to_owned());
        targets.push(format!("{name}::inner"));
        targets.push(format!("{name}_more"));
        let mut shorter = name.to_owned();
        shorter.pop();
        targets.push(shorter);
    }
    for target in &targets {
        for level in [
            log::Level::Error,
            log::Level::Warn,
            log::Level::Info,
            log::Level::Debug,
            log::Level::Trace,
        ] {
            assert_eq!(
                filter.enabled(level, target),
                theirs(level, target),
                "{spec:?} at {level} for {target:?}"
            );
        }
    }
    // The level `log` is given never hides what the filter passes.
    for target in &targets {
        assert!(filter.level_of(target) <= filter.max());
    }
}
