//! The record layout in the ring: what the handler captures and the listener decodes.
//!
//! A little-endian header ([`header`]: the full one, or the short one of a raw
//! record) followed by the variable parts, in this order: target, module path, file,
//! message, typed fields. The ring adds its own frame in front; see [`crate::ring`].
//!
//! A *raw* record (from quelog's macros, [`args`]) holds raw arguments where the
//! message would be, and names its callsite ([`callsite`]), which holds the format
//! string, the module path, the file and the line: the record stores none of them,
//! and its target only when the call named one (else [`FLAG_MODULE_IS_TARGET`] says
//! the target is the callsite's module path). The listener formats its message
//! ([`decode_rendering`]).

// Without the tracing subscriber, `log` records use only the span-context entry.
pub(crate) mod args;
pub(crate) mod callsite;
#[cfg_attr(not(feature = "tracing"), allow(dead_code))]
pub(crate) mod fields;
mod header;

pub(crate) use header::{Header, HEADER_LEN, SHORT_HEADER_LEN};
/// The longest raw section the producer writes: the crash drain renders raw records
/// from a copy of that size on its stack.
pub(crate) const MAX_RAW_SECTION: usize = 1024;

/// Flag: the caller's message was longer than what was stored.
pub(crate) const FLAG_TRUNCATED: u8 = 1;
/// Flag: the module path equals the target and is not stored again.
pub(crate) const FLAG_MODULE_IS_TARGET: u8 = 2;
/// Flag: logged while another log call was running on the same thread (a `Display`
/// that logs, a signal handler that interrupted a log call).
pub(crate) const FLAG_NESTED: u8 = 4;
/// Flag: formatting the message failed (a `Display` impl returned an error or panicked).
pub(crate) const FLAG_FORMAT_ERROR: u8 = 8;
/// Flag: typed fields ([`fields`]) follow the message, up to the end of the record.
pub(crate) const FLAG_FIELDS: u8 = 16;
/// The two bits of the flags that say what kind of record this is ([`Kind`]).
const KIND_SHIFT: u8 = 5;
const KIND_MASK: u8 = 0b11 << KIND_SHIFT;
/// Flag: some fields did not fit and were left out.
pub(crate) const FLAG_FIELDS_CUT: u8 = 128;

/// What a record is. Events (and `log` records) are written to the sinks; the span
/// kinds are the tracing subscriber's bookkeeping, which the listener keeps to print
/// an event's span chain, and are never written themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A log record or a tracing event.
    Event,
    /// A new span: its name is the message; its fields and parent are the fields.
    SpanNew,
    /// More fields for a span (`Span::record`, `follows_from`).
    SpanRecord,
    /// The last handle to a span was dropped.
    SpanClose,
}

impl Kind {
    /// The flag bits for this kind.
    pub(crate) fn flags(self) -> u8 {
        let bits = match self {
            Kind::Event => 0,
            Kind::SpanNew => 1,
            Kind::SpanRecord => 2,
            Kind::SpanClose => 3,
        };
        bits << KIND_SHIFT
    }

    pub(crate) fn from_flags(flags: u8) -> Kind {
        match (flags & KIND_MASK) >> KIND_SHIFT {
            0 => Kind::Event,
            1 => Kind::SpanNew,
            2 => Kind::SpanRecord,
            _ => Kind::SpanClose,
        }
    }
}

/// A decoded record, borrowing the bytes the listener copied out of the ring. The text
/// layout prints some fields; the rest are decoded for the layouts to come (JSON
/// prints the source location on request) and checked by the tests.
#[derive(Debug, Clone, Copy)]
#[allow(dead_code)]
pub(crate) struct RecordView<'a> {
    /// Nanoseconds since the Unix epoch, taken on the calling thread.
    pub(crate) timestamp_nanos: u64,
    /// The calling thread's kernel thread id.
    pub(crate) thread_id: u32,
    /// Severity.
    pub(crate) level: log::Level,
    /// The record's target (by default the module path).
    pub(crate) target: &'a str,
    /// The module path, if the caller's record had one.
    pub(crate) module_path: Option<&'a str>,
    /// The source file, if the caller's record had one.
    pub(crate) file: Option<&'a str>,
    /// The source line, if the caller's record had one.
    pub(crate) line: Option<u32>,
    /// The formatted message. Valid UTF-8 up to a possible cut, which the formatter
    /// shows; invalid sequences are never produced by the handler.
    pub(crate) message: &'a [u8],
    /// Bytes the caller's message had; more than `message.len()` when truncated.
    pub(crate) message_full_len: u32,
    /// Logged while another log call was running on the same thread.
    pub(crate) nested: bool,
    /// Formatting the message failed part way (a `Display` returned an error or
    /// panicked); `message` holds what was produced before.
    pub(crate) format_error: bool,
    /// What the record is.
    pub(crate) kind: Kind,
    /// The encoded typed fields ([`fields::entries`] reads them); empty if none.
    pub(crate) fields: &'a [u8],
    /// Some fields did not fit and were left out.
    pub(crate) fields_cut: bool,
}

impl RecordView<'_> {
    /// Whether the message was cut to fit the record size limit.
    pub(crate) fn truncated(&self) -> bool {
        self.message_full_len as usize > self.message.len()
    }
}

fn level_from_u8(level: u8) -> log::Level {
    match level {
        1 => log::Level::Error,
        2 => log::Level::Warn,
        3 => log::Level::Info,
        4 => log::Level::Debug,
        _ => log::Level::Trace,
    }
}

pub(crate) fn level_to_u8(level: log::Level) -> u8 {
    level as usize as u8
}

/// The level as the text layouts print it, padded to five: `ERROR`, ` WARN`, ` INFO`,
/// `DEBUG`, `TRACE`, from its stored byte (anything unknown reads as `TRACE`, as
/// [`level_from_u8`] does). The one table for the listener and the crash drain.
pub(crate) fn level_label(level: u8) -> &'static [u8; 5] {
    match level {
        1 => b"ERROR",
        2 => b" WARN",
        3 => b" INFO",
        4 => b"DEBUG",
        _ => b"TRACE",
    }
}

/// Whether the record that starts with `start` (its header at least) is an event, a
/// `log` record or a tracing event, rather than span bookkeeping: what the queue's
/// record counters count. `true` if `start` is too short to tell: the listener counts
/// a record it cannot decode too (as damaged).
pub(crate) fn is_event(start: &[u8]) -> bool {
    // What a stop that gave up shows this per record is enough to tell.
    const _: () = assert!(crate::ring::PEEK_BYTES >= HEADER_LEN);
    match start.get(header::FLAGS_AT) {
        Some(&flags) => Kind::from_flags(flags) == Kind::Event,
        None => true,
    }
}

/// Decodes a record, or `None` if the bytes are not a record the handler wrote or are
/// a raw one ([`decode_rendering`] reads those too). Never panics on any input (it is
/// a fuzz target).
#[cfg_attr(not(any(test, feature = "test-hooks")), allow(dead_code))]
pub(crate) fn decode(bytes: &[u8]) -> Option<RecordView<'_>> {
    if Header::decode(bytes)?.raw {
        return None;
    }
    decode_parts(bytes)
}

/// What the listener keeps from one record to the next for [`decode_rendering`]: the
/// buffer a raw record's message is formatted into, and the target, module path and
/// file last checked as UTF-8. Targets and files repeat from record to record, so
/// bytes equal to the last ones checked are not checked again (only bytes equal to
/// ones already checked: any other bytes, damaged or not, are checked in full).
#[derive(Debug, Default)]
pub(crate) struct Decoding {
    message: Vec<u8>,
    target: String,
    module: String,
    file: String,
}

/// `bytes` as a string, `None` if they are not UTF-8: `last` itself when it holds the
/// same bytes, else checked and kept in `last` for the next record.
fn checked_once(last: &mut String, bytes: &[u8]) -> Option<()> {
    // (Empty names are read as "" without the cache: they would evict the last one.)
    if !bytes.is_empty() && !crate::scan::same_bytes(last.as_bytes(), bytes) {
        let text = std::str::from_utf8(bytes).ok()?;
        last.clear();
        last.push_str(text);
    }
    Some(())
}

/// [`decode`], and a raw record's message formatted into `decoding`'s buffer, its
/// names taken from its callsite: what the listener reads every record with. `None`
/// for a record the handler did not write, or that names no registered callsite, or
/// whose arguments do not fit its format string.
pub(crate) fn decode_rendering<'a>(
    bytes: &'a [u8],
    decoding: &'a mut Decoding,
) -> Option<RecordView<'a>> {
    let parts = split(bytes)?;
    let header = &parts.header;
    let module_is_target = header.flags & FLAG_MODULE_IS_TARGET != 0;
    checked_once(&mut decoding.target, parts.target)?;
    if !module_is_target {
        checked_once(&mut decoding.module, parts.module)?;
    }
    checked_once(&mut decoding.file, parts.file)?;
    let mut rendered = None;
    let mut site = None;
    if header.raw {
        let index = args::callsite_of(parts.message)?;
        let found = callsite::lookup(index)?;
        decoding.message.clear();
        let section = parts.message.get(args::CALLSITE_BYTES..)?;
        rendered = Some(args::render(
            found.format(),
            section,
            &mut decoding.message,
        )?);
        site = Some(found);
    }
    // Everything `decoding` keeps is set: from here on it is only read.
    let decoding: &'a Decoding = decoding;
    let target = if parts.target.is_empty() {
        ""
    } else {
        decoding.target.as_str()
    };
    let module_path = if module_is_target {
        Some(target)
    } else {
        (!parts.module.is_empty()).then_some(decoding.module.as_str())
    };
    let file = (!parts.file.is_empty()).then_some(decoding.file.as_str());
    let mut view = parts.view(target, module_path, file);
    if let (Some(site), Some(rendered)) = (site, rendered) {
        if module_is_target {
            view.target = site.module_path();
        }
        view.module_path = Some(site.module_path());
        view.file = Some(site.file());
        view.line = (site.line() != 0).then_some(site.line());
        view.message = &decoding.message;
        view.message_full_len = view.message.len().min(u32::MAX as usize) as u32;
        view.format_error = rendered == args::Rendered::FormatFailed;
    }
    Some(view)
}

/// A record cut into its parts, the names not yet checked as UTF-8.
struct Parts<'a> {
    header: Header,
    target: &'a [u8],
    module: &'a [u8],
    file: &'a [u8],
    message: &'a [u8],
    fields: &'a [u8],
}

impl<'a> Parts<'a> {
    #[inline(always)]
    fn view(
        &self,
        target: &'a str,
        module_path: Option<&'a str>,
        file: Option<&'a str>,
    ) -> RecordView<'a> {
        let header = &self.header;
        RecordView {
            timestamp_nanos: header.wall_nanos(),
            thread_id: header.thread_id,
            level: level_from_u8(header.level),
            target,
            module_path,
            file,
            line: (header.line != 0).then_some(header.line),
            message: self.message,
            message_full_len: header.message_full_len.max(header.message_len),
            nested: header.flags & FLAG_NESTED != 0,
            format_error: header.flags & FLAG_FORMAT_ERROR != 0,
            kind: Kind::from_flags(header.flags),
            fields: self.fields,
            fields_cut: header.flags & FLAG_FIELDS_CUT != 0,
        }
    }
}

#[inline(always)]
fn split(bytes: &[u8]) -> Option<Parts<'_>> {
    let header = Header::decode(bytes)?;
    let rest = bytes.get(header.len()..)?;
    let has_fields = header.flags & FLAG_FIELDS != 0;
    if header.record_len() > bytes.len() || (!has_fields && header.record_len() != bytes.len()) {
        return None;
    }
    let (target, rest) = rest.split_at_checked(header.target_len as usize)?;
    let (module, rest) = rest.split_at_checked(header.module_len as usize)?;
    let (file, rest) = rest.split_at_checked(header.file_len as usize)?;
    let (message, fields) = rest.split_at_checked(header.message_len as usize)?;
    Some(Parts {
        header,
        target,
        module,
        file,
        message,
        fields,
    })
}

fn decode_parts(bytes: &[u8]) -> Option<RecordView<'_>> {
    let parts = split(bytes)?;
    let target = std::str::from_utf8(parts.target).ok()?;
    let module_path = if parts.header.flags & FLAG_MODULE_IS_TARGET != 0 {
        Some(target)
    } else if parts.module.is_empty() {
        None
    } else {
        Some(std::str::from_utf8(parts.module).ok()?)
    };
    let file = if parts.file.is_empty() {
        None
    } else {
        Some(std::str::from_utf8(parts.file).ok()?)
    };
    Some(parts.view(target, module_path, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(target: &str, module: &str, file: &str, message: &str, flags: u8) -> Vec<u8> {
        let parts = [target, module, file, message].map(str::as_bytes);
        record_bytes(parts[0], parts[1], parts[2], parts[3], flags)
    }

    fn record_bytes(
        target: &[u8],
        module: &[u8],
        file: &[u8],
        message: &[u8],
        flags: u8,
    ) -> Vec<u8> {
        let header = Header {
            timestamp_nanos: 1_700_000_000_123_456_789,
            thread_id: 42,
            line: 7,
            message_len: message.len() as u32,
            message_full_len: message.len() as u32,
            target_len: target.len() as u16,
            module_len: module.len() as u16,
            file_len: file.len() as u16,
            level: level_to_u8(log::Level::Warn),
            flags,
            raw: false,
            ticks: false,
            short: false,
        };
        let mut bytes = header.encode()[..header.len()].to_vec();
        for part in [target, module, file, message] {
            bytes.extend_from_slice(part);
        }
        bytes
    }

    #[test]
    fn header_round_trips() {
        let bytes = record(
            "app::db",
            "app::db::pool",
            "src/db.rs",
            "hello",
            FLAG_NESTED,
        );
        let view = decode(&bytes).unwrap();
        assert_eq!(view.timestamp_nanos, 1_700_000_000_123_456_789);
        assert_eq!(view.thread_id, 42);
        assert_eq!(view.level, log::Level::Warn);
        assert_eq!(view.target, "app::db");
        assert_eq!(view.module_path, Some("app::db::pool"));
        assert_eq!(view.file, Some("src/db.rs"));
        assert_eq!(view.line, Some(7));
        assert_eq!(view.message, b"hello");
        assert!(view.nested && !view.truncated() && !view.format_error);
    }

    #[test]
    fn module_equal_to_target_is_stored_once() {
        let bytes = record("app", "", "", "m", FLAG_MODULE_IS_TARGET);
        let view = decode(&bytes).unwrap();
        assert_eq!(view.module_path, Some("app"));
        assert_eq!(view.file, None);
    }

    #[test]
    fn is_event_reads_the_kind_from_the_header() {
        for (kind, event) in [
            (Kind::Event, true),
            (Kind::SpanNew, false),
            (Kind::SpanRecord, false),
            (Kind::SpanClose, false),
        ] {
            let bytes = record("t", "", "", "m", kind.flags() | FLAG_FIELDS);
            assert_eq!(is_event(&bytes), event, "{kind:?}");
            assert_eq!(is_event(&bytes[..HEADER_LEN]), event, "{kind:?}");
        }
        // Too short to tell: counted, as the listener counts a record it cannot read.
        assert!(is_event(&[0xff; 1]));
    }

    #[test]
    fn every_level_round_trips() {
        for level in log::Level::iter() {
            assert_eq!(level_from_u8(level_to_u8(level)), level);
        }
    }

    #[test]
    fn repeated_names_are_read_as_stored_and_changed_ones_checked_again() {
        let mut decoding = Decoding::default();
        let steps: [(&[u8], &[u8], &[u8]); 6] = [
            (b"app::aa", b"app::aa::m", b"src/a.rs"),
            (b"app::aa", b"app::aa::m", b"src/a.rs"),
            // Same lengths, other bytes.
            (b"app::bb", b"app::bb::m", b"src/b.rs"),
            (b"", b"", b""),
            (b"app::bb", b"app::bb::m", b"src/b.rs"),
            (b"\xc3\xa9t\xc3\xa9", b"m\xc3\xa9", b"f\xc3\xa9"),
        ];
        for (target, module, file) in steps {
            let bytes = record_bytes(target, module, file, b"msg", 0);
            let view = decode_rendering(&bytes, &mut decoding).unwrap();
            let expected = decode(&bytes).unwrap();
            assert_eq!(view.target.as_bytes(), target);
            assert_eq!(view.module_path, expected.module_path);
            assert_eq!(view.file, expected.file);
            assert_eq!(view.message, b"msg");
        }
    }

    #[test]
    fn damaged_names_are_refused_even_right_after_good_ones() {
        let mut decoding = Decoding::default();
        let good = record_bytes(b"app::\xc3\xa9", b"mod", b"file.rs", b"m", 0);
        assert!(decode_rendering(&good, &mut decoding).is_some());
        // The same length, one byte damaged, in each name.
        for (target, module, file) in [
            (&b"app::\xc3\xc3"[..], &b"mod"[..], &b"file.rs"[..]),
            (b"app::\xc3\xa9", b"mo\xff", b"file.rs"),
            (b"app::\xc3\xa9", b"mod", b"file.r\x80"),
        ] {
            let bad = record_bytes(target, module, file, b"m", 0);
            assert!(decode_rendering(&bad, &mut decoding).is_none());
            assert!(decode(&bad).is_none());
            // And the good one still reads after it.
            assert!(decode_rendering(&good, &mut decoding).is_some());
        }
    }

    #[test]
    fn malformed_input_is_refused_without_panic() {
        let good = record("t", "m", "f", "message", 0);
        for cut in 0..good.len() {
            assert!(decode(&good[..cut]).is_none(), "cut at {cut}");
        }
        let mut long = good.clone();
        long.push(b'x');
        assert!(decode(&long).is_none());
        let mut bad_utf8 = record("tt", "", "", "", 0);
        let at = HEADER_LEN;
        bad_utf8[at] = 0xff;
        assert!(decode(&bad_utf8).is_none());
    }
}
