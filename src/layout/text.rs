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
    /// The start of the last line (`2026-11-22T04:14:35.123456Z  INFO
    /// [worker-1/4242] app::db: `), kept while its second, level, thread id
    /// ([`HeadKey`]), thread name and target stay: a run of lines from one thread
    /// copies it and rewrites the six digits of the microseconds. Its first
    /// `head_thread_len` bytes go up to the thread (the span chain goes there, before
    /// the target); the target part follows if `head_target` is set.
    head: Vec<u8>,
    head_thread_len: usize,
    head_key: Option<HeadKey>,
    head_name: Option<String>,
    head_target: Option<String>,
}

/// What [`TextFormatter`]'s cached line start is for: second, level, thread id.
type HeadKey = (u64, u8, u32);

impl TextFormatter {
    pub(crate) fn new(local_time: bool) -> TextFormatter {
        TextFormatter {
            local_time,
            cached_second: None,
            cached_prefix: String::new(),
            cached_offset: String::new(),
            head: Vec::new(),
            head_thread_len: 0,
            head_key: None,
            head_name: None,
            head_target: None,
        }
    }

    /// Brings the kept line start up to `record` as far as its thread: its
    /// microseconds if only they changed, else the whole of it (then without target).
    fn refresh_head(&mut self, record: &RecordView<'_>, thread_name: Option<&str>) {
        let nanos = record.timestamp_nanos;
        let level = record::level_to_u8(record.level);
        let key = (nanos / 1_000_000_000, level, record.thread_id);
        let same_name = match (self.head_name.as_deref(), thread_name) {
            (Some(kept), Some(name)) => crate::scan::same_bytes(kept.as_bytes(), name.as_bytes()),
            (kept, name) => kept.is_none() && name.is_none(),
        };
        if self.head_key == Some(key) && same_name {
            // Same second: only the microseconds differ, right after "HH:MM:SS.".
            let at = self.cached_prefix.len() + 1;
            if let Some(digits) = self.head.get_mut(at..at + 6) {
                let micros = (nanos % 1_000_000_000) / 1_000;
                let pairs = [micros / 10_000, micros / 100 % 100, micros % 100];
                for (pair, value) in digits.chunks_exact_mut(2).zip(pairs) {
                    if let [tens, ones] = pair {
                        *tens = b'0' + (value / 10) as u8;
                        *ones = b'0' + (value % 10) as u8;
                    }
                }
            }
            return;
        }
        let mut head = std::mem::take(&mut self.head);
        head.clear();
        self.timestamp(nanos, &mut head);
        head.push(b' ');
        head.extend_from_slice(record::level_label(level));
        head.extend_from_slice(b" [");
        if let Some(name) = thread_name {
            push_escaped(&mut head, name.as_bytes());
            head.push(b'/');
        }
        push_decimal(&mut head, u64::from(record.thread_id), 1);
        head.extend_from_slice(b"] ");
        self.head_thread_len = head.len();
        self.head = head;
        self.head_key = Some(key);
        self.head_target = None;
        match (&mut self.head_name, thread_name) {
            (Some(kept), Some(name)) => {
                kept.clear();
                kept.push_str(name);
            }
            (kept, name) => *kept = name.map(str::to_owned),
        }
    }

    /// Appends the start of the line for `record` up to its message (`...] app::db: `),
    /// with the span chain of `spans` before the target if it has one. Returns where
    /// the bytes not yet known to be UTF-8 start (the kept start is: it is made of
    /// strings, escaped, and ends in ASCII).
    fn push_head(
        &mut self,
        record: &RecordView<'_>,
        thread_name: Option<&str>,
        spans: Option<&mut Spans>,
        out: &mut Vec<u8>,
    ) -> usize {
        self.refresh_head(record, thread_name);
        if let (Some(spans), Some(id)) = (spans, Spans::context_of(record)) {
            out.extend_from_slice(self.head.get(..self.head_thread_len).unwrap_or_default());
            let unchecked = out.len();
            push_span_chain(spans, id, out);
            push_escaped(out, record.target.as_bytes());
            out.extend_from_slice(b": ");
            return unchecked;
        }
        let target = record.target.as_bytes();
        let kept = self
            .head_target
            .as_ref()
            .is_some_and(|kept| crate::scan::same_bytes(kept.as_bytes(), target));
        if !kept {
            self.head.truncate(self.head_thread_len);
            push_escaped(&mut self.head, target);
            self.head.extend_from_slice(b": ");
            match &mut self.head_target {
                Some(kept) => {
                    kept.clear();
                    kept.push_str(record.target);
                }
                none => *none = Some(record.target.to_owned()),
            }
        }
        out.extend_from_slice(&self.head);
        out.len()
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
        let unchecked = self.push_head(record, thread_name, spans, out);
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
        // here, once per line, from where the kept line start ends (it is made of
        // strings): a record that reached here with other bytes gets them
        // replaced. Escaping first gives the same line as replacing first, since it
        // only turns ASCII bytes into ASCII, and those always end an invalid sequence.
        if let (Some(line), Some(unchecked)) = (out.get(start..), out.get(unchecked..)) {
            if !crate::scan::is_ascii(unchecked) && std::str::from_utf8(unchecked).is_err() {
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
    fn the_kept_line_start_follows_time_level_and_thread() {
        // One formatter through a run of records that each change one part of the
        // line start, against a fresh formatter (nothing kept) for each.
        let mut kept = TextFormatter::new(false);
        let mut record = view(b"m");
        let steps: [(u64, log::Level, u32, Option<&str>, &str); 11] = [
            (
                1_700_000_000_123_456_789,
                log::Level::Info,
                7,
                Some("a"),
                "app::db",
            ),
            (
                1_700_000_000_999_999_000,
                log::Level::Info,
                7,
                Some("a"),
                "app::db",
            ),
            (
                1_700_000_000_000_001_000,
                log::Level::Warn,
                7,
                Some("a"),
                "app::db",
            ),
            (
                1_700_000_000_000_001_000,
                log::Level::Warn,
                8,
                Some("a"),
                "app::db",
            ),
            (
                1_700_000_000_000_001_000,
                log::Level::Warn,
                8,
                Some("b"),
                "app::db",
            ),
            (
                1_700_000_000_000_001_000,
                log::Level::Warn,
                8,
                None,
                "app::db",
            ),
            (
                1_700_000_000_000_001_000,
                log::Level::Warn,
                8,
                Some("b\n"),
                "app::db",
            ),
            // Another target of the same length, one to escape, a longer one.
            (
                1_700_000_000_000_001_000,
                log::Level::Warn,
                8,
                Some("b\n"),
                "app::dc",
            ),
            (
                1_700_000_000_000_001_000,
                log::Level::Warn,
                8,
                Some("b\n"),
                "app\t:dc",
            ),
            (
                1_700_000_000_000_001_000,
                log::Level::Warn,
                8,
                Some("b\n"),
                "app::dc::x",
            ),
            (
                1_700_000_001_000_001_000,
                log::Level::Warn,
                8,
                Some("b\n"),
                "app::dc::x",
            ),
        ];
        for (nanos, level, thread_id, name, target) in steps {
            record.timestamp_nanos = nanos;
            record.level = level;
            record.thread_id = thread_id;
            record.target = target;
            let mut out = Vec::new();
            kept.write(&record, name, None, &mut out);
            let mut fresh = Vec::new();
            TextFormatter::new(false).write(&record, name, None, &mut fresh);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                String::from_utf8(fresh).unwrap()
            );
        }
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
