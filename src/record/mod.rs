//! The record layout in the ring: what the handler captures and the listener decodes.
//!
//! A fixed little-endian header followed by the variable parts, in this order:
//! target, module path, file, message. The ring adds its own frame in front; see
//! [`crate::ring`].
//!
//! ```text
//! offset  size  field
//!      0     8  timestamp, nanoseconds since the Unix epoch (UTC)
//!      8     4  thread id (gettid)
//!     12     4  line (0: unknown)
//!     16     4  message length stored
//!     20     4  message length the caller produced (more than stored: truncated)
//!     24     2  target length
//!     26     2  module path length
//!     28     2  file length
//!     30     1  level (1 = Error .. 5 = Trace); bit 7: raw (see below); bit 6:
//!                 the timestamp is in TSC ticks (`handler::clock`)
//!     31     1  flags
//! ```
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

/// Bytes of the fixed header.
pub(crate) const HEADER_LEN: usize = 32;

/// The level byte's bit that marks a raw record.
const LEVEL_RAW: u8 = 0x80;
/// The level byte's bit that says the timestamp is in TSC ticks
/// ([`crate::handler::clock`]), converted when decoded.
const LEVEL_TICKS: u8 = 0x40;
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

/// The fixed part of a record, as captured on the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) timestamp_nanos: u64,
    pub(crate) thread_id: u32,
    pub(crate) line: u32,
    pub(crate) message_len: u32,
    pub(crate) message_full_len: u32,
    pub(crate) target_len: u16,
    pub(crate) module_len: u16,
    pub(crate) file_len: u16,
    pub(crate) level: u8,
    pub(crate) flags: u8,
    /// The message section holds raw arguments ([`args`]).
    pub(crate) raw: bool,
    /// `timestamp_nanos` holds TSC ticks ([`Header::wall_nanos`] converts them).
    pub(crate) ticks: bool,
}

impl Header {
    /// Bytes of the whole record: header plus variable parts.
    pub(crate) fn record_len(&self) -> usize {
        HEADER_LEN
            + self.target_len as usize
            + self.module_len as usize
            + self.file_len as usize
            + self.message_len as usize
    }

    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            if let Some(dst) = out.get_mut(at..at + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
            at += bytes.len();
        };
        put(&self.timestamp_nanos.to_le_bytes());
        put(&self.thread_id.to_le_bytes());
        put(&self.line.to_le_bytes());
        put(&self.message_len.to_le_bytes());
        put(&self.message_full_len.to_le_bytes());
        put(&self.target_len.to_le_bytes());
        put(&self.module_len.to_le_bytes());
        put(&self.file_len.to_le_bytes());
        let mut level = self.level;
        if self.raw {
            level |= LEVEL_RAW;
        }
        if self.ticks {
            level |= LEVEL_TICKS;
        }
        put(&[level, self.flags]);
        out
    }

    /// The header in `bytes`. Any bytes decode (no panic, no indexing): the crash
    /// drain runs this in a signal handler, on whatever the ring holds.
    pub(crate) fn decode(bytes: &[u8; HEADER_LEN]) -> Header {
        let [t0, t1, t2, t3, t4, t5, t6, t7, i0, i1, i2, i3, l0, l1, l2, l3, m0, m1, m2, m3, f0, f1, f2, f3, g0, g1, o0, o1, p0, p1, level, flags] =
            *bytes;
        Header {
            timestamp_nanos: u64::from_le_bytes([t0, t1, t2, t3, t4, t5, t6, t7]),
            thread_id: u32::from_le_bytes([i0, i1, i2, i3]),
            line: u32::from_le_bytes([l0, l1, l2, l3]),
            message_len: u32::from_le_bytes([m0, m1, m2, m3]),
            message_full_len: u32::from_le_bytes([f0, f1, f2, f3]),
            target_len: u16::from_le_bytes([g0, g1]),
            module_len: u16::from_le_bytes([o0, o1]),
            file_len: u16::from_le_bytes([p0, p1]),
            level: level & !(LEVEL_RAW | LEVEL_TICKS),
            flags,
            raw: level & LEVEL_RAW != 0,
            ticks: level & LEVEL_TICKS != 0,
        }
    }

    /// The timestamp in nanoseconds since the Unix epoch. Async-signal-safe.
    pub(crate) fn wall_nanos(&self) -> u64 {
        if self.ticks {
            crate::handler::clock::wall_from_ticks(self.timestamp_nanos)
        } else {
            self.timestamp_nanos
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
    match start.get(HEADER_LEN - 1) {
        Some(&flags) => Kind::from_flags(flags) == Kind::Event,
        None => true,
    }
}

/// Decodes a record, or `None` if the bytes are not a record the handler wrote or are
/// a raw one ([`decode_rendering`] reads those too). Never panics on any input (it is
/// a fuzz target).
#[cfg_attr(not(any(test, feature = "test-hooks")), allow(dead_code))]
pub(crate) fn decode(bytes: &[u8]) -> Option<RecordView<'_>> {
    let (header, _) = bytes.split_first_chunk::<HEADER_LEN>()?;
    if Header::decode(header).raw {
        return None;
    }
    decode_parts(bytes)
}

/// [`decode`], and a raw record's message formatted into `message` (cleared first),
/// its names taken from its callsite: what the listener reads every record with.
/// `None` for a record the handler did not write, or that names no registered
/// callsite, or whose arguments do not fit its format string.
pub(crate) fn decode_rendering<'a>(
    bytes: &'a [u8],
    message: &'a mut Vec<u8>,
) -> Option<RecordView<'a>> {
    let mut view = decode_parts(bytes)?;
    let (header, _) = bytes.split_first_chunk::<HEADER_LEN>()?;
    let header = Header::decode(header);
    if !header.raw {
        return Some(view);
    }
    let index = args::callsite_of(view.message)?;
    let site = callsite::lookup(index)?;
    message.clear();
    let section = view.message.get(args::CALLSITE_BYTES..)?;
    let rendered = args::render(site.format(), section, message)?;
    if header.flags & FLAG_MODULE_IS_TARGET != 0 {
        view.target = site.module_path();
    }
    view.module_path = Some(site.module_path());
    view.file = Some(site.file());
    view.line = (site.line() != 0).then_some(site.line());
    view.message = message;
    view.message_full_len = view.message.len().min(u32::MAX as usize) as u32;
    view.format_error = rendered == args::Rendered::FormatFailed;
    Some(view)
}

fn decode_parts(bytes: &[u8]) -> Option<RecordView<'_>> {
    let (header, rest) = bytes.split_first_chunk::<HEADER_LEN>()?;
    let header = Header::decode(header);
    let has_fields = header.flags & FLAG_FIELDS != 0;
    if header.record_len() > bytes.len() || (!has_fields && header.record_len() != bytes.len()) {
        return None;
    }
    let (target, rest) = rest.split_at_checked(header.target_len as usize)?;
    let (module, rest) = rest.split_at_checked(header.module_len as usize)?;
    let (file, rest) = rest.split_at_checked(header.file_len as usize)?;
    let (message, fields) = rest.split_at_checked(header.message_len as usize)?;
    let target = std::str::from_utf8(target).ok()?;
    let module_path = if header.flags & FLAG_MODULE_IS_TARGET != 0 {
        Some(target)
    } else if module.is_empty() {
        None
    } else {
        Some(std::str::from_utf8(module).ok()?)
    };
    let file = if file.is_empty() {
        None
    } else {
        Some(std::str::from_utf8(file).ok()?)
    };
    Some(RecordView {
        timestamp_nanos: header.wall_nanos(),
        thread_id: header.thread_id,
        level: level_from_u8(header.level),
        target,
        module_path,
        file,
        line: (header.line != 0).then_some(header.line),
        message,
        message_full_len: header.message_full_len.max(header.message_len),
        nested: header.flags & FLAG_NESTED != 0,
        format_error: header.flags & FLAG_FORMAT_ERROR != 0,
        kind: Kind::from_flags(header.flags),
        fields,
        fields_cut: header.flags & FLAG_FIELDS_CUT != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(target: &str, module: &str, file: &str, message: &str, flags: u8) -> Vec<u8> {
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
        };
        let mut bytes = header.encode().to_vec();
        for part in [target, module, file, message] {
            bytes.extend_from_slice(part.as_bytes());
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
        assert!(is_event(&[0xff; HEADER_LEN - 1]));
    }

    #[test]
    fn every_level_round_trips() {
        for level in log::Level::iter() {
            assert_eq!(level_from_u8(level_to_u8(level)), level);
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
