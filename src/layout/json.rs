//! The JSON lines layout ([`crate::Format::Json`] and its presets), on the listener
//! thread.
//!
//! One object per line, always valid JSON whatever the record holds:
//!
//! ```text
//! {"timestamp":"2026-11-22T04:14:35.123456Z","level":"INFO","message":"connected","target":"app::db","thread":"worker-1","thread_id":4242,"peer":"10.0.0.7","ms":3,"spans":[{"name":"request","id":7}]}
//! ```
//!
//! * The fixed keys come first, in this order: time, level, message, target, thread
//!   name (absent for an unnamed thread), thread id, the preset's constant keys
//!   (`ecs.version`), and the source location when asked for.
//! * The record's typed fields follow at the top level with their types: integers and
//!   finite floats as numbers (an `i128`/`u128` is written in full: valid JSON, which
//!   parsers may read as a float), bools as bools, `NaN`, `Infinity` and `-Infinity`
//!   as strings, strings and `Debug`/`Display` values as strings.
//! * A field whose name is taken (a key of the layout, or an earlier field of the same
//!   record) is written as `fields.<name>` (then `fields.<name>#2`, `#3`, ...): never
//!   dropped, never overwriting.
//! * `spans`: the event's span chain, outermost first, each `{"name": ..., <its
//!   fields>}` (a span's field called `name` becomes `fields.name`); a span whose
//!   bookkeeping was lost is `{"name":"?"}`. Absent outside spans.
//! * `quelog`: present only when something happened to the record:
//!   `{"format_error":true}` (a `Display` failed part way), `"message_bytes":N` (the
//!   message was cut; N is what the caller produced), `"fields_cut":true`.
//! * Strings escape `"`, `\`, every control character (U+0000 to U+001F and U+007F)
//!   and U+2028/U+2029 (valid JSON, but line breaks to JavaScript); invalid UTF-8
//!   (only possible from a sink or test writing raw bytes) becomes U+FFFD.
//!
//! Time is always UTC with `Z` (`Builder::local_time` applies to text only).

use std::collections::HashSet;
use std::io::Write as _;

use super::Spans;
use crate::direct::{self, push_decimal};
use crate::record::fields::{entries, Entry, Value};
use crate::record::RecordView;

/// Which key names a JSON layout uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonStyle {
    /// quelog's own keys (`timestamp`, `level`, `message`, ...).
    Plain,
    /// Elastic Common Schema (`@timestamp`, `log.level`, `ecs.version`, ...).
    Ecs,
    /// Google Cloud Logging's structured payload (`time`, `severity`, ...).
    Gcp,
}

/// The key names of one style.
struct Keys {
    timestamp: &'static str,
    level: &'static str,
    message: &'static str,
    target: &'static str,
    thread: &'static str,
    thread_id: &'static str,
    /// Keys with constant values, already JSON.
    constants: &'static [(&'static str, &'static str)],
    /// The keys of the source location (file, line): top-level ones, or (GCP) the
    /// object holding both.
    file: &'static str,
    line: &'static str,
}

const PLAIN: Keys = Keys {
    timestamp: "timestamp",
    level: "level",
    message: "message",
    target: "target",
    thread: "thread",
    thread_id: "thread_id",
    constants: &[],
    file: "file",
    line: "line",
};

/// The ECS version the preset's keys follow (ecs-logging's reference version).
const ECS: Keys = Keys {
    timestamp: "@timestamp",
    level: "log.level",
    message: "message",
    target: "log.logger",
    thread: "process.thread.name",
    thread_id: "process.thread.id",
    constants: &[("ecs.version", "\"1.6.0\"")],
    file: "log.origin.file.name",
    line: "log.origin.file.line",
};

const GCP: Keys = Keys {
    timestamp: "time",
    level: "severity",
    message: "message",
    target: "target",
    thread: "thread",
    thread_id: "thread_id",
    constants: &[],
    file: GCP_SOURCE,
    line: GCP_SOURCE,
};

/// Google Cloud's key for `{"file": ..., "line": "..."}`.
const GCP_SOURCE: &str = "logging.googleapis.com/sourceLocation";

/// Keys every style keeps for itself.
const ALWAYS_RESERVED: [&str; 2] = ["spans", "quelog"];

impl JsonStyle {
    fn keys(self) -> &'static Keys {
        match self {
            JsonStyle::Plain => &PLAIN,
            JsonStyle::Ecs => &ECS,
            JsonStyle::Gcp => &GCP,
        }
    }

    fn level(self, level: log::Level) -> &'static str {
        match (self, level) {
            (_, log::Level::Error) => "ERROR",
            (JsonStyle::Gcp, log::Level::Warn) => "WARNING",
            (_, log::Level::Warn) => "WARN",
            (_, log::Level::Info) => "INFO",
            (_, log::Level::Debug) => "DEBUG",
            // Google Cloud has no level below DEBUG.
            (JsonStyle::Gcp, log::Level::Trace) => "DEBUG",
            (_, log::Level::Trace) => "TRACE",
        }
    }

    /// Whether `key` is one of this style's own keys (with or without file/line on).
    fn reserved(self, key: &[u8]) -> bool {
        let k = self.keys();
        let own = [
            k.timestamp,
            k.level,
            k.message,
            k.target,
            k.thread,
            k.thread_id,
            k.file,
            k.line,
        ];
        own.iter()
            .chain(&ALWAYS_RESERVED)
            .chain(k.constants.iter().map(|(key, _)| key))
            .any(|own| own.as_bytes() == key)
    }
}

/// Formats records as JSON lines.
#[derive(Debug)]
pub(crate) struct JsonFormatter {
    style: JsonStyle,
    /// Write the source file and line when the record has them.
    source: bool,
    /// The keys used so far in the object being written (reused).
    seen: HashSet<Vec<u8>>,
}

impl JsonFormatter {
    pub(crate) fn new(style: JsonStyle, source: bool) -> JsonFormatter {
        JsonFormatter {
            style,
            source,
            seen: HashSet::new(),
        }
    }

    /// Appends one whole line (an object and `\n`) for `record` to `out`.
    pub(crate) fn write(
        &mut self,
        record: &RecordView<'_>,
        thread_name: Option<&str>,
        spans: Option<&mut Spans>,
        out: &mut Vec<u8>,
    ) {
        let style = self.style;
        let keys = style.keys();
        out.push(b'{');
        push_key(out, keys.timestamp, true);
        out.push(b'"');
        direct::timestamp(out, record.timestamp_nanos);
        out.push(b'"');
        push_key(out, keys.level, false);
        push_str(out, style.level(record.level).as_bytes());
        push_key(out, keys.message, false);
        push_str(out, record.message);
        push_key(out, keys.target, false);
        push_str(out, record.target.as_bytes());
        if let Some(name) = thread_name {
            push_key(out, keys.thread, false);
            push_str(out, name.as_bytes());
        }
        push_key(out, keys.thread_id, false);
        push_decimal(out, u64::from(record.thread_id), 1);
        for (key, value) in keys.constants {
            push_key(out, key, false);
            out.extend_from_slice(value.as_bytes());
        }
        if self.source {
            self.push_source(record, out);
        }
        self.seen.clear();
        push_fields(out, record.fields, &mut self.seen, |key| {
            style.reserved(key)
        });
        if let (Some(spans), Some(id)) = (spans, Spans::context_of(record)) {
            push_key(out, "spans", false);
            push_spans(spans, id, &mut self.seen, out);
        }
        if record.format_error || record.truncated() || record.fields_cut {
            push_key(out, "quelog", false);
            let mut first = true;
            let mut flag = |out: &mut Vec<u8>, key: &str| {
                push_key(out, key, first);
                first = false;
            };
            out.push(b'{');
            if record.format_error {
                flag(out, "format_error");
                out.extend_from_slice(b"true");
            }
            if record.truncated() {
                flag(out, "message_bytes");
                push_decimal(out, u64::from(record.message_full_len), 1);
            }
            if record.fields_cut {
                flag(out, "fields_cut");
                out.extend_from_slice(b"true");
            }
            out.push(b'}');
        }
        out.extend_from_slice(b"}\n");
    }

    fn push_source(&self, record: &RecordView<'_>, out: &mut Vec<u8>) {
        let keys = self.style.keys();
        if self.style == JsonStyle::Gcp {
            if record.file.is_none() && record.line.is_none() {
                return;
            }
            push_key(out, GCP_SOURCE, false);
            out.push(b'{');
            let mut first = true;
            if let Some(file) = record.file {
                push_key(out, "file", true);
                push_str(out, file.as_bytes());
                first = false;
            }
            if let Some(line) = record.line {
                // Google's LogEntrySourceLocation.line is an int64: a string in JSON.
                push_key(out, "line", first);
                out.push(b'"');
                push_decimal(out, u64::from(line), 1);
                out.push(b'"');
            }
            out.push(b'}');
            return;
        }
        if let Some(file) = record.file {
            push_key(out, keys.file, false);
            push_str(out, file.as_bytes());
        }
        if let Some(line) = record.line {
            push_key(out, keys.line, false);
            push_decimal(out, u64::from(line), 1);
        }
    }
}

/// `,"key":` (no comma when `first`).
fn push_key(out: &mut Vec<u8>, key: &str, first: bool) {
    if !first {
        out.push(b',');
    }
    push_str(out, key.as_bytes());
    out.push(b':');
}

/// The typed fields of `fields`, each as `,"name":value`, under a name not yet in
/// `seen` and not `reserved` (see the module docs); `seen` gets the names used.
fn push_fields(
    out: &mut Vec<u8>,
    fields: &[u8],
    seen: &mut HashSet<Vec<u8>>,
    reserved: impl Fn(&[u8]) -> bool,
) {
    for entry in entries(fields) {
        let Entry::Field { name, value } = entry else {
            continue;
        };
        let name = String::from_utf8_lossy(name).into_owned().into_bytes();
        let key = free_key(name, seen, &reserved);
        out.push(b',');
        push_str(out, &key);
        out.push(b':');
        push_value(out, value);
        seen.insert(key);
    }
}

/// `name`, or `fields.<name>`, `fields.<name>#2`, ...: the first that is free. Ends:
/// each candidate differs, and at most `seen.len()` of them are taken by fields (and
/// no reserved key starts with `fields.`).
fn free_key(name: Vec<u8>, seen: &HashSet<Vec<u8>>, reserved: &impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let taken = |key: &[u8]| reserved(key) || seen.contains(key);
    if !taken(&name) {
        return name;
    }
    let mut prefixed = b"fields.".to_vec();
    prefixed.extend_from_slice(&name);
    let base = prefixed.len();
    let mut n = 1u64;
    while taken(&prefixed) {
        n += 1;
        prefixed.truncate(base);
        prefixed.push(b'#');
        push_decimal(&mut prefixed, n, 1);
    }
    prefixed
}

/// `[{"name":"outer",...},...]` for the chain ending at span `id`.
fn push_spans(spans: &mut Spans, id: u64, seen: &mut HashSet<Vec<u8>>, out: &mut Vec<u8>) {
    out.push(b'[');
    let mut first = true;
    spans.chain(id, |span| {
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(b"{\"name\":");
        match span {
            Some(span) => {
                push_str(out, span.name.as_bytes());
                seen.clear();
                push_fields(out, &span.fields, seen, |key| key == b"name");
            }
            None => out.extend_from_slice(b"\"?\""),
        }
        out.push(b'}');
    });
    out.push(b']');
}

/// One typed value as JSON.
fn push_value(out: &mut Vec<u8>, value: Value<'_>) {
    match value {
        // Integers and bools read the same in JSON as in the text layout.
        Value::I64(_) | Value::U64(_) | Value::I128(_) | Value::U128(_) | Value::Bool(_) => {
            crate::direct::push_value(out, value)
        }
        Value::F64(n) if n.is_nan() => out.extend_from_slice(b"\"NaN\""),
        Value::F64(n) if n.is_infinite() => {
            let text: &[u8] = if n > 0.0 {
                b"\"Infinity\""
            } else {
                b"\"-Infinity\""
            };
            out.extend_from_slice(text);
        }
        // `Debug` for a finite f64 is JSON's number syntax: `1.5`, `-0.0`, `1e300`.
        Value::F64(n) => {
            let _ = write!(out, "{n:?}");
        }
        Value::Str(text) | Value::Debug(text) | Value::Display(text) => push_str(out, text),
    }
}

/// `bytes` as a JSON string, quoted and escaped; invalid UTF-8 becomes U+FFFD (one per
/// maximal invalid sequence, as `String::from_utf8_lossy` does).
pub(crate) fn push_str(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    for chunk in bytes.utf8_chunks() {
        push_escaped(out, chunk.valid().as_bytes());
        if !chunk.invalid().is_empty() {
            out.extend_from_slice("\u{fffd}".as_bytes());
        }
    }
    out.push(b'"');
}

/// Valid UTF-8 `text`, escaped for the inside of a JSON string; clean runs are copied
/// in one piece.
fn push_escaped(out: &mut Vec<u8>, text: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut clean_from = 0;
    let mut skip = 0;
    for (at, &byte) in text.iter().enumerate() {
        if skip > 0 {
            skip -= 1;
            continue;
        }
        let unicode: [u8; 6];
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f | 0x7f => {
                let hi = HEX.get(usize::from(byte >> 4)).copied().unwrap_or(b'0');
                let lo = HEX.get(usize::from(byte & 15)).copied().unwrap_or(b'0');
                unicode = [b'\\', b'u', b'0', b'0', hi, lo];
                &unicode
            }
            // U+2028 and U+2029 (E2 80 A8/A9).
            0xe2 if matches!(text.get(at + 1..at + 3), Some([0x80, 0xa8 | 0xa9])) => {
                skip = 2;
                if text.get(at + 2) == Some(&0xa8) {
                    b"\\u2028"
                } else {
                    b"\\u2029"
                }
            }
            _ => continue,
        };
        out.extend_from_slice(text.get(clean_from..at).unwrap_or_default());
        out.extend_from_slice(escape);
        clean_from = at + 1 + skip;
    }
    out.extend_from_slice(text.get(clean_from..).unwrap_or_default());
}

#[cfg(test)]
#[path = "json_tests.rs"]
mod tests;
