//! Lines written straight to a descriptor with `write(2)`, no allocation: the crash
//! drain ([`crate::crash`]) and the forked child ([`crate::fork`]).
//!
//! Both write where no listener can: inside a fatal-signal handler, and in a child
//! process that `fork()` left without one. So everything here is async-signal-safe
//! and allocation-free: a fixed buffer on the stack ([`StackWriter`]), decimal digits
//! and the calendar by hand (no chrono), `write(2)` and nothing else. The lines are the
//! regular text format ([`crate::format`]) with two differences: the thread is its id
//! alone (`[4242]`: names live in `/proc`, read by the listener), and the time is
//! always UTC.
//!
//! ```text
//! 2026-11-22T04:14:35.123456Z ERROR [4242] target: message
//! ```

/// A buffer of `N` bytes on the stack (512 unless said otherwise) that `write(2)`s
/// itself to `fd` when full and on [`StackWriter::flush`]. A line that fits goes out
/// in one `write(2)`: with `O_APPEND`, whole, never interleaved with another writer's.
pub(crate) struct StackWriter<const N: usize = 512> {
    fd: libc::c_int,
    buf: [u8; N],
    len: usize,
    /// A write failed (disk full): drop the rest.
    failed: bool,
    /// The `errno` of the write that failed.
    errno: libc::c_int,
    /// Bytes the kernel took.
    written: u64,
}

impl<const N: usize> StackWriter<N> {
    pub(crate) fn new(fd: libc::c_int) -> StackWriter<N> {
        StackWriter {
            fd,
            buf: [0; N],
            len: 0,
            failed: false,
            errno: 0,
            written: 0,
        }
    }

    pub(crate) fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.len == self.buf.len() {
                self.flush();
            }
            let room = self.buf.len() - self.len;
            let take = room.min(bytes.len());
            let (now, rest) = bytes.split_at(take);
            if let Some(dst) = self.buf.get_mut(self.len..self.len + take) {
                dst.copy_from_slice(now);
            }
            self.len += take;
            bytes = rest;
        }
    }

    /// Appends `bytes`, escaping control characters as the regular text format does.
    pub(crate) fn push_escaped(&mut self, bytes: &[u8]) {
        push_escaped(self, bytes);
    }

    /// Writes out what is buffered (retrying after EINTR and short writes). After a
    /// failure, everything pushed later is dropped.
    pub(crate) fn flush(&mut self) {
        let mut from = 0;
        while from < self.len && !self.failed {
            let Some(rest) = self.buf.get(from..self.len) else {
                break;
            };
            // SAFETY: writes from a live stack buffer; the length is the slice's.
            let n = unsafe { libc::write(self.fd, rest.as_ptr().cast(), rest.len()) };
            if n < 0 {
                // SAFETY: reads this thread's errno; async-signal-safe.
                let errno = unsafe { *libc::__errno_location() };
                if errno == libc::EINTR {
                    continue;
                }
                self.failed = true;
                self.errno = errno;
            } else if n == 0 {
                // Nothing taken for a non-empty buffer: trying again could loop for
                // ever. Count it as an I/O error.
                self.failed = true;
                self.errno = libc::EIO;
            } else {
                from += n as usize;
                self.written += n as u64;
            }
        }
        self.len = 0;
    }

    /// The `errno` of the write that failed, if one did.
    pub(crate) fn failure(&self) -> Option<libc::c_int> {
        self.failed.then_some(self.errno)
    }

    /// Bytes written so far.
    pub(crate) fn written(&self) -> u64 {
        self.written
    }
}

/// Where the allocation-free formatting helpers append: a [`StackWriter`] here, and
/// the listener's line buffers (the text layout uses the same helpers, so the two
/// kinds of line cannot drift apart).
pub(crate) trait Out {
    fn put(&mut self, bytes: &[u8]);
}

impl<const N: usize> Out for StackWriter<N> {
    fn put(&mut self, bytes: &[u8]) {
        self.push(bytes);
    }
}

impl Out for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Appends `bytes` to `out`, escaping control characters (`\n`, `\r`, `\t`, `\x1b`,
/// ...) so a record can never forge or split lines; runs without one are copied in
/// one piece. Bytes are passed through otherwise (the caller deals with invalid
/// UTF-8 where it can afford to). Scans sixteen bytes at a time ([`crate::scan`]):
/// a message rarely has anything to escape, so the usual cost is one test per sixteen
/// bytes and one copy.
pub(crate) fn push_escaped<O: Out + ?Sized>(out: &mut O, bytes: &[u8]) {
    use crate::scan::find_escape;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut clean_from = 0;
    while let Some(at) = find_escape(bytes, clean_from) {
        let byte = bytes.get(at).copied().unwrap_or(b' ');
        out.put(bytes.get(clean_from..at).unwrap_or_default());
        match byte {
            b'\n' => out.put(b"\\n"),
            b'\r' => out.put(b"\\r"),
            b'\t' => out.put(b"\\t"),
            _ => {
                let hi = HEX.get(usize::from(byte >> 4)).copied().unwrap_or(b'0');
                let lo = HEX.get(usize::from(byte & 15)).copied().unwrap_or(b'0');
                out.put(&[b'\\', b'x', hi, lo]);
            }
        }
        clean_from = at + 1;
    }
    out.put(bytes.get(clean_from..).unwrap_or_default());
}

/// Decimal digits of `value`, zero-padded to `width`. Two digits per division, from
/// a table (the itoa way), into a stack buffer copied out once.
pub(crate) fn push_decimal<O: Out + ?Sized>(out: &mut O, value: u64, width: usize) {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    let mut n = value;
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        start -= 2;
        if let (Some(dst), Some(src)) =
            (digits.get_mut(start..start + 2), PAIRS.get(pair..pair + 2))
        {
            dst.copy_from_slice(src);
        }
    }
    if n >= 10 {
        let pair = n as usize * 2;
        start -= 2;
        if let (Some(dst), Some(src)) =
            (digits.get_mut(start..start + 2), PAIRS.get(pair..pair + 2))
        {
            dst.copy_from_slice(src);
        }
    } else {
        start -= 1;
        if let Some(d) = digits.get_mut(start) {
            *d = b'0' + n as u8;
        }
    }
    // The buffer is pre-filled with zeros: padding is a matter of where to start.
    let start = start.min(digits.len().saturating_sub(width));
    out.put(digits.get(start..).unwrap_or_default());
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` for nanoseconds since the Unix epoch, computed by
/// hand (the proleptic Gregorian calendar, UTC).
pub(crate) fn timestamp<O: Out + ?Sized>(out: &mut O, nanos: u64) {
    let seconds = nanos / 1_000_000_000;
    let micros = (nanos % 1_000_000_000) / 1_000;
    let (year, month, day) = civil_from_days(seconds / 86_400);
    let in_day = seconds % 86_400;
    push_decimal(out, year, 4);
    out.put(b"-");
    push_decimal(out, month, 2);
    out.put(b"-");
    push_decimal(out, day, 2);
    out.put(b"T");
    push_decimal(out, in_day / 3600, 2);
    out.put(b":");
    push_decimal(out, in_day / 60 % 60, 2);
    out.put(b":");
    push_decimal(out, in_day % 60, 2);
    out.put(b".");
    push_decimal(out, micros, 6);
    out.put(b"Z");
}

/// Year, month (1-12) and day (1-31) of the day `days` after 1970-01-01.
///
/// Counts in 400-year eras starting on 0000-03-01, so the leap day is the last day of
/// a "year" and months have a fixed pattern: an era has 146097 days; within it, a
/// year of the era has 365 days plus one every 4 years, minus one every 100, plus one
/// every 400.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Days from 0000-03-01 to 1970-01-01.
    let days = days + 719_468;
    let era = days / 146_097;
    let day_of_era = days % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months from March: 31, 30, 31, 30, 31, 31, 30, 31, 30, 31, 31, 28/29 follow the
    // 153-days-per-5-months pattern.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

/// The start of a line in the text format, up to the target: `timestamp LEVEL [tid] `.
/// `level` is the stored byte ([`crate::record::level_label`]).
pub(crate) fn push_line_start<const N: usize>(
    out: &mut StackWriter<N>,
    timestamp_nanos: u64,
    level: u8,
    thread_id: u32,
) {
    timestamp(out, timestamp_nanos);
    out.push(b" ");
    out.push(crate::record::level_label(level));
    out.push(b" [");
    push_decimal(out, u64::from(thread_id), 1);
    out.push(b"] ");
}

/// The end of a line: the markers of a failed format and of a cut message (`cut_at`:
/// the bytes kept), then the newline.
pub(crate) fn push_line_end<const N: usize>(
    out: &mut StackWriter<N>,
    format_failed: bool,
    cut_at: Option<u64>,
) {
    if format_failed {
        out.push(b" [quelog: formatting failed here]");
    }
    if let Some(kept) = cut_at {
        out.push(b" [quelog: message cut at ");
        push_decimal(out, kept, 1);
        out.push(b" bytes]");
    }
    out.push(b"\n");
}

/// Appends the typed fields in `fields` ([`crate::record::fields`]) as text,
/// `name=value` each preceded by a space: strings quoted (with `"` and `\\`
/// escaped), `Debug` and `Display` values as they are, numbers and bools plainly; span
/// bookkeeping entries are skipped. Control characters are escaped as everywhere.
/// Allocation-free (floats go through `core::fmt`, which does not allocate), so the
/// forked child's direct lines use it too.
pub(crate) fn push_fields<O: Out + ?Sized>(out: &mut O, fields: &[u8]) {
    use crate::record::fields::{entries, Entry};
    for entry in entries(fields) {
        let Entry::Field { name, value } = entry else {
            continue;
        };
        out.put(b" ");
        push_escaped(out, name);
        out.put(b"=");
        push_value(out, value);
    }
}

/// One value, as [`push_fields`] prints it.
pub(crate) fn push_value<O: Out + ?Sized>(out: &mut O, value: crate::record::fields::Value<'_>) {
    use crate::record::fields::Value;
    match value {
        Value::I64(n) => {
            if n < 0 {
                out.put(b"-");
            }
            push_decimal(out, n.unsigned_abs(), 1);
        }
        Value::U64(n) => push_decimal(out, n, 1),
        Value::I128(n) => push_formatted(out, format_args!("{n}")),
        Value::U128(n) => push_formatted(out, format_args!("{n}")),
        Value::F64(n) => push_formatted(out, format_args!("{n}")),
        Value::Bool(b) => out.put(if b { b"true" } else { b"false" }),
        Value::Str(text) => {
            out.put(b"\"");
            let mut clean_from = 0;
            for (at, &byte) in text.iter().enumerate() {
                if byte == b'"' || byte == b'\\' {
                    push_escaped(out, text.get(clean_from..at).unwrap_or_default());
                    out.put(&[b'\\', byte]);
                    clean_from = at + 1;
                }
            }
            push_escaped(out, text.get(clean_from..).unwrap_or_default());
            out.put(b"\"");
        }
        Value::Debug(text) | Value::Display(text) => push_escaped(out, text),
    }
}

/// `args` through `core::fmt` into `out`, escaped. No allocation.
fn push_formatted<O: Out + ?Sized>(out: &mut O, args: std::fmt::Arguments<'_>) {
    struct Escaping<'o, O: Out + ?Sized>(&'o mut O);
    impl<O: Out + ?Sized> std::fmt::Write for Escaping<'_, O> {
        fn write_str(&mut self, text: &str) -> std::fmt::Result {
            push_escaped(self.0, text.as_bytes());
            Ok(())
        }
    }
    let _ = std::fmt::write(&mut Escaping(out), args);
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Datelike, Utc};

    #[test]
    fn hand_computed_dates_match_chrono() {
        // Every day from 1970 to 2200, and a few far ones.
        let days = (0..84_000u64).chain([100_000, 1_000_000, 2_932_896]);
        for day in days {
            let expected = DateTime::<Utc>::from_timestamp((day * 86_400) as i64, 0).unwrap();
            let (y, m, d) = civil_from_days(day);
            assert_eq!(
                (y as i32, m as u32, d as u32),
                (expected.year(), expected.month(), expected.day()),
                "day {day}"
            );
        }
    }

    #[test]
    fn timestamp_matches_the_regular_format() {
        // The text format's own example instant: 2023-11-14T22:13:20.123456Z.
        let mut out: StackWriter = StackWriter::new(-1);
        timestamp(&mut out, 1_700_000_000_123_456_789);
        push_decimal(&mut out, 7, 3);
        out.push_escaped(b"a\nb\x1b");
        let len = out.len;
        out.len = 0; // no flush to fd -1
        assert_eq!(&out.buf[..len], b"2023-11-14T22:13:20.123456Z007a\\nb\\x1b");
    }

    /// The escaping the word-at-a-time scan must match: one byte at a time.
    fn escaped_bytewise(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for &byte in bytes {
            match byte {
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                0..0x20 | 0x7f => out.extend_from_slice(format!("\\x{byte:02x}").as_bytes()),
                _ => out.push(byte),
            }
        }
        out
    }

    #[test]
    fn escaping_finds_every_byte_at_every_position() {
        // Every byte value at every offset of words and tails, next to neighbours that
        // provoke the borrow tricks' false flags (0x20, 0x7e, 0x80, 0xff).
        for len in 1..20 {
            for at in 0..len {
                for byte in 0..=255u8 {
                    for filler in [b'a', 0x20, 0x7e, 0x80, 0xff] {
                        let mut bytes = vec![filler; len];
                        bytes[at] = byte;
                        if at + 2 < len {
                            bytes[at + 2] = 0x01;
                        }
                        let mut out = Vec::new();
                        push_escaped(&mut out, &bytes);
                        assert_eq!(out, escaped_bytewise(&bytes), "{bytes:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn decimals_match_the_standard_formatter() {
        let values = (0..2000u64).chain([u64::MAX, u64::MAX / 3, 10_000_000_000, 99_999]);
        for value in values {
            for width in [1, 2, 4, 6] {
                let mut out = Vec::new();
                push_decimal(&mut out, value, width);
                assert_eq!(out, format!("{value:0width$}").into_bytes());
            }
        }
    }

    #[test]
    fn a_failed_write_is_remembered_and_drops_the_rest() {
        let mut out: StackWriter<8> = StackWriter::new(-1);
        out.push(b"0123456789");
        out.flush();
        assert_eq!(out.failure(), Some(libc::EBADF));
        assert_eq!(out.written(), 0);
    }

    #[test]
    fn lines_longer_than_the_buffer_go_out_in_pieces() {
        let mut fds = [0; 2];
        // SAFETY: creates a pipe into a live two-element array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let mut out: StackWriter<8> = StackWriter::new(fds[1]);
        out.push(b"0123456789abcdef!");
        out.flush();
        assert_eq!(out.failure(), None);
        assert_eq!(out.written(), 17);
        let mut read = [0u8; 32];
        // SAFETY: reads into a live buffer of the given length.
        let n = unsafe { libc::read(fds[0], read.as_mut_ptr().cast(), read.len()) };
        assert_eq!(&read[..n as usize], b"0123456789abcdef!");
        // SAFETY: closes the two descriptors made above.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }
}
