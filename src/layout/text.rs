//! The text layout, on the listener thread (it may allocate and take its time; the
//! caller already returned).
//!
//! The text format, one record per line, always:
//!
//! ```text
//! 2026-11-22T04:14:35.123456Z  INFO [worker-1/4242] app::db: connected in 3 ms
//! ```
//!
//! timestamp (RFC 3339, microseconds, UTC unless local time is chosen), level padded
//! to five, `[thread name/thread id]` (`[thread id]` for unnamed threads), target,
//! message. Control characters in the target and message are escaped (`\n`, `\r`,
//! `\t`, `\x1b`, ...) so a record can never forge or split lines; backslashes are left
//! alone, for readability of Windows paths and regexes. Invalid UTF-8 (only possible
//! from a sink or test that writes raw bytes) is replaced with U+FFFD.

use chrono::{DateTime, Local, SecondsFormat, Utc};

use super::Spans;
use crate::direct::{self, push_decimal};
use crate::record::{self, RecordView};

/// Formats records as text, caching the date and time part of the timestamp per
/// second (formatting it with chrono for every record would dominate the cost).
#[derive(Debug)]
pub(crate) struct TextFormatter {
    local_time: bool,
    cached_second: Option<i64>,
    /// "2026-11-22T04:14:35" for `cached_second`.
    cached_prefix: String,
    /// "Z" or "+01:00" for `cached_second`.
    cached_offset: String,
}

impl TextFormatter {
    pub(crate) fn new(local_time: bool) -> TextFormatter {
        TextFormatter {
            local_time,
            cached_second: None,
            cached_prefix: String::new(),
            cached_offset: String::new(),
        }
    }

    fn timestamp(&mut self, nanos: u64, out: &mut Vec<u8>) {
        let second = (nanos / 1_000_000_000) as i64;
        let micros = (nanos % 1_000_000_000) / 1_000;
        if self.cached_second != Some(second) {
            let utc = DateTime::<Utc>::from_timestamp(second, 0).unwrap_or_default();
            let text = if self.local_time {
                utc.with_timezone(&Local)
                    .to_rfc3339_opts(SecondsFormat::Secs, true)
            } else {
                utc.to_rfc3339_opts(SecondsFormat::Secs, true)
            };
            // "2026-11-22T04:14:35Z" or "2026-11-22T05:14:35+01:00": split at the
            // seconds so the fraction goes in between.
            let split = text
                .find('T')
                .map_or(text.len(), |t| (t + 9).min(text.len()));
            let (prefix, offset) = text.split_at(split);
            self.cached_prefix = prefix.to_owned();
            self.cached_offset = offset.to_owned();
            self.cached_second = Some(second);
        }
        out.extend_from_slice(self.cached_prefix.as_bytes());
        out.push(b'.');
        push_decimal(out, micros, 6);
        out.extend_from_slice(self.cached_offset.as_bytes());
    }

    /// Appends one whole line for `record` to `out`: like tracing-subscriber's fmt,
    /// the span chain (`outer{a=1}:inner{b="two"}: `) comes before the target, and the
    /// typed fields (`answer=42`) after the message.
    pub(crate) fn write(
        &mut self,
        record: &RecordView<'_>,
        thread_name: Option<&str>,
        spans: Option<&mut Spans>,
        out: &mut Vec<u8>,
    ) {
        let start = out.len();
        // One reservation for the usual line (nothing to escape), not one per piece.
        out.reserve(
            64 + thread_name.map_or(0, str::len) + record.target.len() + record.message.len(),
        );
        self.timestamp(record.timestamp_nanos, out);
        out.push(b' ');
        out.extend_from_slice(record::level_label(record::level_to_u8(record.level)));
        out.extend_from_slice(b" [");
        if let Some(name) = thread_name {
            push_escaped(out, name.as_bytes());
            out.push(b'/');
        }
        push_decimal(out, u64::from(record.thread_id), 1);
        out.extend_from_slice(b"] ");
        if let (Some(spans), Some(id)) = (spans, Spans::context_of(record)) {
            push_span_chain(spans, id, out);
        }
        push_escaped(out, record.target.as_bytes());
        out.extend_from_slice(b": ");
        push_escaped(out, record.message);
        if !record.fields.is_empty() {
            if record.message.is_empty() {
                // No message: the fields follow the target without a double space.
                let mut fields = Vec::new();
                direct::push_fields(&mut fields, record.fields);
                out.extend_from_slice(fields.strip_prefix(b" ").unwrap_or(&fields));
            } else {
                direct::push_fields(out, record.fields);
            }
        }
        if record.fields_cut {
            out.extend_from_slice(b" [quelog: fields cut]");
        }
        // Everything is copied as stored (the handler stores only UTF-8) and checked
        // here, once per line: a record that reached here with other bytes gets them
        // replaced. Escaping first gives the same line as replacing first, since it
        // only turns ASCII bytes into ASCII, and those always end an invalid sequence.
        if let Some(line) = out.get(start..) {
            if !direct::is_ascii(line) && std::str::from_utf8(line).is_err() {
                let fixed = String::from_utf8_lossy(line).into_owned();
                out.truncate(start);
                out.extend_from_slice(fixed.as_bytes());
            }
        }
        if record.format_error {
            out.extend_from_slice(b" [quelog: formatting failed here]");
        }
        if record.truncated() {
            out.extend_from_slice(b" [quelog: message cut at ");
            push_decimal(out, record.message.len() as u64, 1);
            out.extend_from_slice(b" bytes]");
        }
        out.push(b'\n');
    }
}

/// `outer{a=1}:inner{b="two"}: `, outermost first; `?` for a span whose bookkeeping was
/// lost.
fn push_span_chain(spans: &mut Spans, id: u64, out: &mut Vec<u8>) {
    let mut any = false;
    spans.chain(id, |span| {
        if any {
            out.push(b':');
        }
        any = true;
        match span {
            Some(span) => {
                push_escaped(out, span.name.as_bytes());
                let mut fields = Vec::new();
                direct::push_fields(&mut fields, &span.fields);
                if !fields.is_empty() {
                    out.push(b'{');
                    out.extend_from_slice(fields.strip_prefix(b" ").unwrap_or(&fields));
                    out.push(b'}');
                }
            }
            None => out.push(b'?'),
        }
    });
    if any {
        out.extend_from_slice(b": ");
    }
}

/// Appends `bytes` escaped as [`crate::direct::push_escaped`] does (one helper for
/// the listener's lines and the signal-safe ones). Invalid UTF-8 is left for
/// [`TextFormatter::write`]'s one check of the whole line.
fn push_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    direct::push_escaped(out, bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(message: &[u8]) -> RecordView<'_> {
        RecordView {
            // 2023-11-14T22:13:20.123456Z
            timestamp_nanos: 1_700_000_000_123_456_789,
            thread_id: 4242,
            level: log::Level::Info,
            target: "app::db",
            module_path: None,
            file: None,
            line: None,
            message,
            message_full_len: message.len() as u32,
            nested: false,
            format_error: false,
            kind: crate::record::Kind::Event,
            fields: &[],
            fields_cut: false,
        }
    }

    fn line(record: &RecordView<'_>, thread: Option<&str>) -> String {
        let mut out = Vec::new();
        TextFormatter::new(false).write(record, thread, None, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_line_layout() {
        assert_eq!(
            line(&view(b"connected"), Some("worker-1")),
            "2023-11-14T22:13:20.123456Z  INFO [worker-1/4242] app::db: connected\n"
        );
        assert_eq!(
            line(&view(b"x"), None),
            "2023-11-14T22:13:20.123456Z  INFO [4242] app::db: x\n"
        );
    }

    #[test]
    fn one_record_is_always_one_line() {
        let text = line(&view(b"a\nb\r\nc\td\x1b[31m\x7f\\e"), None);
        assert_eq!(text.matches('\n').count(), 1);
        assert!(
            text.ends_with("a\\nb\\r\\nc\\td\\x1b[31m\\x7f\\e\n"),
            "{text}"
        );
    }

    #[test]
    fn invalid_utf8_is_replaced_not_passed_through() {
        let text = line(&view(b"ok \xff\xfe end"), None);
        assert!(text.contains("ok \u{fffd}\u{fffd} end"));
    }

    #[test]
    fn truncation_and_format_failure_are_visible() {
        let mut record = view(b"abc");
        record.message_full_len = 100;
        record.format_error = true;
        let text = line(&record, None);
        assert!(text
            .ends_with("abc [quelog: formatting failed here] [quelog: message cut at 3 bytes]\n"));
    }

    #[test]
    fn microseconds_are_zero_padded_and_second_cache_follows_time() {
        let mut formatter = TextFormatter::new(false);
        let mut out = Vec::new();
        let mut record = view(b"m");
        record.timestamp_nanos = 1_700_000_000_000_007_000;
        formatter.write(&record, None, None, &mut out);
        record.timestamp_nanos = 1_700_000_001_000_000_000;
        formatter.write(&record, None, None, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("2023-11-14T22:13:20.000007Z"));
        assert!(text.contains("\n2023-11-14T22:13:21.000000Z"));
    }

    #[test]
    fn local_time_carries_an_offset() {
        let mut out = Vec::new();
        TextFormatter::new(true).write(&view(b"m"), None, None, &mut out);
        let text = String::from_utf8(out).unwrap();
        let stamp = text.split(' ').next().unwrap();
        assert!(DateTime::parse_from_rfc3339(stamp).is_ok(), "{stamp}");
    }
}
