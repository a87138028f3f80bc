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

/// A record built from fuzz input, formatted in every JSON style, with what a JSON
/// parser must read back from each line. The check itself (with a real parser) lives
/// with the fuzz target and the tests: `fuzz/json_check.rs`.
#[derive(Debug, Default)]
pub struct JsonCase {
    /// One line per style: quelog's keys, ECS, Google Cloud; each must be one JSON
    /// object ending in `\n`.
    pub lines: Vec<Vec<u8>>,
    /// The key of the message in each line.
    pub message_keys: Vec<&'static str>,
    /// The message, as it must read back (invalid UTF-8 replaced).
    pub message: String,
    /// The string fields (name, value) in order, as they must read back: each under
    /// its name, or `fields.<name>` (`fields.<name>#N`) when that was taken.
    pub strings: Vec<(String, String)>,
    /// More lines that must parse (the input decoded as a raw record, when it
    /// decodes), without expectations about their content.
    pub other_lines: Vec<Vec<u8>>,
}

/// Key names the fuzz input can pick by index, to collide with the layouts' own.
const FUZZ_NAMES: [&str; 12] = [
    "message",
    "timestamp",
    "level",
    "target",
    "spans",
    "quelog",
    "fields.message",
    "@timestamp",
    "severity",
    "name",
    "log.level",
    "thread_id",
];

/// Reads the fuzz input: length-prefixed chunks, numbers, flags; zeros past its end.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().map_or((0, &[][..]), |(f, r)| (*f, r));
        self.0 = rest;
        first
    }
    fn chunk(&mut self) -> &'a [u8] {
        let len = usize::from(self.byte()).min(self.0.len());
        let (now, rest) = self.0.split_at(len);
        self.0 = rest;
        now
    }
    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |n, _| n << 8 | u64::from(self.byte()))
    }
    fn name(&mut self) -> String {
        let pick = self.byte();
        match FUZZ_NAMES.get(usize::from(pick)) {
            Some(name) => (*name).to_owned(),
            None => {
                let name = String::from_utf8_lossy(self.chunk()).into_owned();
                crate::handler::clip(&name, crate::record::fields::MAX_NAME).to_owned()
            }
        }
    }
}

/// Builds a record (message, target, thread name, file and line, typed fields of
/// every kind with arbitrary strings, a span chain) from `data` and formats it with
/// every JSON style. Also formats `data` decoded as a raw record, when it decodes.
pub fn format_json(data: &[u8]) -> JsonCase {
    use crate::layout::{JsonFormatter, JsonStyle};
    use crate::record::fields::Encoder;

    let mut input = Cursor(data);
    let flags = input.byte();
    let message = input.chunk();
    let target = String::from_utf8_lossy(input.chunk()).into_owned();
    let thread = String::from_utf8_lossy(input.chunk()).into_owned();
    let file = String::from_utf8_lossy(input.chunk()).into_owned();
    let mut spans = Spans::default();
    let span_count = (flags >> 4) & 3;
    for id in 1..=u64::from(span_count) {
        let name = input.chunk();
        let mut fields = Vec::new();
        let mut encoder = Encoder::new(&mut fields);
        encoder.span_context(id);
        encoder.span_parent(id - 1);
        let field_name = input.name();
        encoder.str_bytes(&field_name, input.chunk());
        let view = json_view(name, "span", &fields, record::Kind::SpanNew, flags);
        spans.apply(&view);
    }
    let mut fields = Vec::new();
    let mut encoder = Encoder::new(&mut fields);
    if span_count > 0 {
        encoder.span_context(u64::from(span_count));
    }
    let mut strings = Vec::new();
    while !input.0.is_empty() {
        let kind = input.byte();
        let name = input.name();
        match kind % 9 {
            0 => encoder.i64(&name, input.u64() as i64),
            1 => encoder.u64(&name, input.u64()),
            2 => encoder.i128(&name, (i128::from(input.u64() as i64)) << (kind % 64)),
            3 => encoder.u128(&name, u128::from(input.u64()) << (kind % 64)),
            4 => encoder.f64(&name, f64::from_bits(input.u64())),
            5 => encoder.bool(&name, kind & 16 != 0),
            6 => {
                let text = String::from_utf8_lossy(input.chunk()).into_owned();
                encoder.debug(&name, &text);
            }
            7 => {
                let text = String::from_utf8_lossy(input.chunk()).into_owned();
                encoder.display(&name, &text);
                strings.push((name, text));
            }
            _ => {
                let value = input.chunk();
                encoder.str_bytes(&name, value);
                strings.push((name, String::from_utf8_lossy(value).into_owned()));
            }
        }
    }
    let mut view = json_view(message, &target, &fields, record::Kind::Event, flags);
    view.file = (flags & 1 != 0).then_some(file.as_str());
    view.line = (flags & 2 != 0).then_some(u32::from(flags));
    let thread = (flags & 4 != 0).then_some(thread.as_str());
    let mut case = JsonCase {
        message: String::from_utf8_lossy(message).into_owned(),
        strings,
        ..JsonCase::default()
    };
    for (style, key) in [
        (JsonStyle::Plain, "message"),
        (JsonStyle::Ecs, "message"),
        (JsonStyle::Gcp, "message"),
    ] {
        let mut line = Vec::new();
        JsonFormatter::new(style, flags & 8 != 0).write(&view, thread, Some(&mut spans), &mut line);
        case.lines.push(line);
        case.message_keys.push(key);
    }
    if let Some(raw) = record::decode(data) {
        let mut spans = Spans::default();
        if !spans.apply(&raw) {
            let mut line = Vec::new();
            JsonFormatter::new(JsonStyle::Plain, true).write(
                &raw,
                Some("t"),
                Some(&mut spans),
                &mut line,
            );
            case.other_lines.push(line);
        }
    }
    case
}

/// An event or span record for [`format_json`].
fn json_view<'a>(
    message: &'a [u8],
    target: &'a str,
    fields: &'a [u8],
    kind: record::Kind,
    flags: u8,
) -> record::RecordView<'a> {
    record::RecordView {
        timestamp_nanos: u64::from(flags).wrapping_mul(0x0123_4567_89ab_cdef),
        thread_id: u32::from(flags),
        level: log::Level::iter()
            .nth(usize::from(flags % 5))
            .unwrap_or(log::Level::Info),
        target,
        module_path: None,
        file: None,
        line: None,
        message,
        message_full_len: (message.len() as u32).saturating_add(u32::from(flags >> 7)),
        nested: false,
        format_error: flags & 64 != 0,
        kind,
        fields,
        fields_cut: flags & 32 != 0,
    }
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
        let mut next = pseudo_random();
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
            level: 0x3f,
            flags: 0xff,
            raw: false,
            ticks: false,
            short: false,
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

/// The `env_filter` crate's reading of `spec` (`None`: it refuses it): the reference
/// the fuzz target and the replay test compare quelog's filter with.
pub fn env_filter_reference(spec: &str) -> Option<ReferenceFilter> {
    let mut builder = env_filter::Builder::new();
    builder.try_parse(spec).ok()?;
    let filter = builder.build();
    Some(Box::new(move |level, target| {
        filter.enabled(&log::Metadata::builder().level(level).target(target).build())
    }))
}

/// Deterministic pseudo-random numbers (xorshift64*, fixed seed) for the replays
/// that stand in for the fuzzer in `cargo test`, without a dependency.
pub fn pseudo_random() -> impl FnMut() -> u64 {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

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
        for level in log::Level::iter() {
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
