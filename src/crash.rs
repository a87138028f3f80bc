//! The fatal-signal drain: [`crate::Builder::drain_on_crash`].
//!
//! On SIGSEGV, SIGBUS, SIGILL, SIGFPE or SIGABRT, the handler writes the records that
//! producers published but the listener has not taken yet straight to the file of the
//! first [`crate::FileSink`], with `write(2)`, then `fsync(2)`s it, frees their slots,
//! calls the handler that was installed before quelog's (if any: Rust's own stack
//! overflow report, say), restores the default action and raises the signal again, so
//! the process ends as it would have without quelog.
//!
//! Everything here is async-signal-safe: atomics, reads of the ring, `write`, `fsync`,
//! `clock_gettime`, `nanosleep`, `sigaction`, `raise`. Lines are formatted into a
//! 512-byte buffer on the stack (the handler runs on the thread's alternate signal
//! stack when it has one, so a stack overflow is drained too), without allocation and
//! without chrono: `2026-11-22T04:14:35.123456Z ERROR [4242] target: message`, the
//! regular text format with the thread id alone (no name) and UTC always.
//!
//! # Coordination with the listener
//!
//! The ring's consuming token (see [`crate::ring`]) decides who writes a record. The
//! handler claims the ring, then waits, at most [`LISTENER_WAIT`], for the listener to
//! finish the batch it is writing (it never takes the token again). If the listener
//! does not let go in time, or the crash happened on the listener thread itself while
//! it held the token, the handler writes nothing: it skips rather than risk writing a
//! record twice. A thread that crashes while another thread's drain runs waits for it
//! (same bound) and then dies. A record whose producer claimed it but never published
//! it (the crash hit inside a log call) ends the drain after [`PENDING_WAIT`]: what
//! follows it cannot be found without its length.

use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::error::Error;
use crate::handler::{clock_nanos, on_listener_thread};
use crate::queue::Shared;
use crate::record::HEADER_LEN;
use crate::ring::{CrashDrain, CrashNext, CrashRecord};

/// The signals drained on.
pub(crate) const FATAL_SIGNALS: [libc::c_int; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGABRT,
];

/// The longest the handler waits for the listener to finish writing its batch (or for
/// another thread's drain).
pub(crate) const LISTENER_WAIT: Duration = Duration::from_secs(2);

/// The longest the handler waits for a claimed record to be published.
pub(crate) const PENDING_WAIT: Duration = Duration::from_millis(100);

/// The queue the handler drains: one reference leaked at install, so it is valid for
/// the rest of the process.
static TARGET: AtomicPtr<Shared> = AtomicPtr::new(std::ptr::null_mut());

/// The actions installed before ours, in the order of [`FATAL_SIGNALS`].
static PREVIOUS: OnceLock<[libc::sigaction; FATAL_SIGNALS.len()]> = OnceLock::new();

/// Installs the handler for `shared`'s queue. Once per process:
/// [`Error::AlreadyInstalled`] the second time.
pub(crate) fn install(shared: &Arc<Shared>) -> Result<(), Error> {
    let raw = Arc::into_raw(Arc::clone(shared)).cast_mut();
    if TARGET
        .compare_exchange(
            std::ptr::null_mut(),
            raw,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
    {
        // SAFETY: `raw` came from `Arc::into_raw` just above and was not published.
        drop(unsafe { Arc::from_raw(raw) });
        return Err(Error::AlreadyInstalled);
    }
    let mut previous = [zeroed_action(); FATAL_SIGNALS.len()];
    for (signal, old) in FATAL_SIGNALS.iter().zip(previous.iter_mut()) {
        // SAFETY: reads the current action into a live local.
        unsafe { libc::sigaction(*signal, std::ptr::null(), old) };
    }
    let _ = PREVIOUS.set(previous);
    let mut action = zeroed_action();
    action.sa_sigaction = on_fatal_signal as *const () as libc::sighandler_t;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    // SAFETY: fills a live local; with every signal blocked while the handler runs, a
    // fault inside it kills the process instead of re-entering.
    unsafe { libc::sigfillset(&mut action.sa_mask) };
    for signal in FATAL_SIGNALS {
        // SAFETY: installs a handler that only makes async-signal-safe calls.
        if unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) } != 0 {
            return Err(Error::InvalidConfig(format!(
                "sigaction({signal}): {}",
                std::io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}

fn zeroed_action() -> libc::sigaction {
    // SAFETY: `sigaction` is a plain C struct for which all-zero is valid (SIG_DFL,
    // empty mask, no flags).
    unsafe { std::mem::zeroed() }
}

extern "C" fn on_fatal_signal(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    let target = TARGET.load(Ordering::Acquire);
    if !target.is_null() {
        // SAFETY: `TARGET` holds a reference leaked at install and never released.
        drain(unsafe { &*target }, signal);
    }
    call_previous(signal, info, context);
    let default = zeroed_action();
    // SAFETY: restores the default action, then raises the signal again: it stays
    // pending (blocked while this handler runs) and ends the process when we return.
    // A fault re-executes its instruction and ends it the same way.
    unsafe {
        libc::sigaction(signal, &default, std::ptr::null_mut());
        libc::raise(signal);
    }
}

/// Calls the action that was installed before ours, if it was a handler.
fn call_previous(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let Some(previous) = PREVIOUS.get() else {
        return;
    };
    let Some(action) = FATAL_SIGNALS
        .iter()
        .position(|s| *s == signal)
        .and_then(|i| previous.get(i))
    else {
        return;
    };
    let handler = action.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        return;
    }
    if action.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous owner installed this address as an SA_SIGINFO handler.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(handler) };
        f(signal, info, context);
    } else {
        // SAFETY: the previous owner installed this address as a plain handler.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        f(signal);
    }
}

fn monotonic_nanos() -> u64 {
    clock_nanos(libc::CLOCK_MONOTONIC)
}

fn realtime_nanos() -> u64 {
    clock_nanos(libc::CLOCK_REALTIME)
}

fn sleep_a_millisecond() {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 1_000_000,
    };
    // SAFETY: reads one timespec from a live local; async-signal-safe.
    unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
}

/// Polls `done` every millisecond until it says yes or `limit` passes.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = monotonic_nanos().saturating_add(limit.as_nanos() as u64);
    loop {
        if done() {
            return true;
        }
        if monotonic_nanos() >= until {
            return false;
        }
        sleep_a_millisecond();
    }
}

/// The drain itself. Async-signal-safe; never panics.
pub(crate) fn drain(shared: &Shared, signal: libc::c_int) {
    let ring = &shared.ring;
    if !ring.crash_claim() {
        // Another thread is draining: let it finish before this one ends the process.
        wait_until(LISTENER_WAIT, || ring.crash_finished());
        return;
    }
    if ring.consumer_active() {
        let released =
            !on_listener_thread() && wait_until(LISTENER_WAIT, || !ring.consumer_active());
        if !released {
            ring.crash_finish();
            return;
        }
    }
    let Some(mut drain) = ring.crash_drain() else {
        ring.crash_finish();
        return;
    };
    let fd = shared.crash_fd.load(Ordering::Relaxed);
    let level = shared.crash_level.load(Ordering::Relaxed);
    if fd < 0 {
        ring.crash_finish();
        return;
    }
    let mut out = StackWriter::new(fd);
    let mut written: u64 = 0;
    let mut pending_since: Option<u64> = None;
    loop {
        match drain.next() {
            CrashNext::Record(record) => {
                pending_since = None;
                if !CrashDrain::is_aborted(&record)
                    && write_record(&drain, &record, level, &mut out)
                {
                    written += 1;
                }
                drain.free(&record);
            }
            CrashNext::Empty => break,
            CrashNext::Pending => {
                let now = monotonic_nanos();
                let since = *pending_since.get_or_insert(now);
                if now.saturating_sub(since) >= PENDING_WAIT.as_nanos() as u64 {
                    break;
                }
                sleep_a_millisecond();
            }
        }
    }
    // One line of our own, so the reader knows where these came from.
    timestamp(&mut out, realtime_nanos());
    out.push(b" ERROR [quelog/0] quelog: fatal signal ");
    push_decimal(&mut out, signal as u64, 1);
    out.push(b" (");
    out.push(signal_name(signal));
    out.push(b"): the crash handler wrote ");
    push_decimal(&mut out, written, 1);
    out.push(b" records left in the queue\n");
    out.flush();
    // SAFETY: plain syscall on the descriptor the listener published; a failure is
    // ignored, there is nobody left to tell.
    unsafe { libc::fsync(fd) };
    ring.crash_finish();
}

fn signal_name(signal: libc::c_int) -> &'static [u8] {
    match signal {
        libc::SIGSEGV => b"SIGSEGV",
        libc::SIGBUS => b"SIGBUS",
        libc::SIGILL => b"SIGILL",
        libc::SIGFPE => b"SIGFPE",
        libc::SIGABRT => b"SIGABRT",
        _ => b"signal",
    }
}

/// Writes one record as a text line if its level passes `level` (a `LevelFilter` as
/// `usize`). Returns whether it wrote it.
fn write_record(
    drain: &CrashDrain<'_>,
    record: &CrashRecord,
    level: usize,
    out: &mut StackWriter,
) -> bool {
    let mut header = [0u8; HEADER_LEN];
    let mut at = 0;
    drain.read(record, 0, HEADER_LEN, |bytes| {
        if let Some(dst) = header.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
        at += bytes.len();
    });
    if at < HEADER_LEN {
        return false;
    }
    let header = CrashHeader::parse(&header);
    if header.level as usize > level || header.level == 0 {
        return false;
    }
    timestamp(out, header.timestamp_nanos);
    out.push(match header.level {
        1 => b" ERROR [",
        2 => b"  WARN [",
        3 => b"  INFO [",
        4 => b" DEBUG [",
        _ => b" TRACE [",
    });
    push_decimal(out, u64::from(header.thread_id), 1);
    out.push(b"] ");
    let target_end = HEADER_LEN + header.target_len;
    drain.read(record, HEADER_LEN, target_end, |bytes| {
        out.push_escaped(bytes)
    });
    out.push(b": ");
    let message_start = target_end + header.module_len + header.file_len;
    let message_end = message_start + header.message_len;
    drain.read(record, message_start, message_end, |bytes| {
        out.push_escaped(bytes)
    });
    if header.flags & crate::record::FLAG_FORMAT_ERROR != 0 {
        out.push(b" [quelog: formatting failed here]");
    }
    if header.message_full_len > header.message_len {
        out.push(b" [quelog: message cut at ");
        push_decimal(out, header.message_len as u64, 1);
        out.push(b" bytes]");
    }
    out.push(b"\n");
    true
}

/// The fields of a record header the drain needs (see [`crate::record`] for the
/// layout), read without indexing that could panic.
struct CrashHeader {
    timestamp_nanos: u64,
    thread_id: u32,
    message_len: usize,
    message_full_len: usize,
    target_len: usize,
    module_len: usize,
    file_len: usize,
    level: u8,
    flags: u8,
}

impl CrashHeader {
    fn parse(bytes: &[u8; HEADER_LEN]) -> CrashHeader {
        let [t0, t1, t2, t3, t4, t5, t6, t7, i0, i1, i2, i3, _l0, _l1, _l2, _l3, m0, m1, m2, m3, f0, f1, f2, f3, g0, g1, o0, o1, p0, p1, level, flags] =
            *bytes;
        CrashHeader {
            timestamp_nanos: u64::from_le_bytes([t0, t1, t2, t3, t4, t5, t6, t7]),
            thread_id: u32::from_le_bytes([i0, i1, i2, i3]),
            message_len: u32::from_le_bytes([m0, m1, m2, m3]) as usize,
            message_full_len: u32::from_le_bytes([f0, f1, f2, f3]) as usize,
            target_len: u16::from_le_bytes([g0, g1]) as usize,
            module_len: u16::from_le_bytes([o0, o1]) as usize,
            file_len: u16::from_le_bytes([p0, p1]) as usize,
            level,
            flags,
        }
    }
}

/// A 512-byte buffer on the stack that `write(2)`s itself to `fd` when full.
struct StackWriter {
    fd: libc::c_int,
    buf: [u8; 512],
    len: usize,
    /// A write failed (disk full): drop the rest.
    failed: bool,
}

impl StackWriter {
    fn new(fd: libc::c_int) -> StackWriter {
        StackWriter {
            fd,
            buf: [0; 512],
            len: 0,
            failed: false,
        }
    }

    fn push(&mut self, mut bytes: &[u8]) {
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

    fn push_byte(&mut self, byte: u8) {
        self.push(&[byte]);
    }

    /// Appends `bytes`, escaping control characters as the regular text format does.
    fn push_escaped(&mut self, bytes: &[u8]) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut clean_from = 0;
        for (at, &byte) in bytes.iter().enumerate() {
            if byte >= 0x20 && byte != 0x7f {
                continue;
            }
            self.push(bytes.get(clean_from..at).unwrap_or_default());
            match byte {
                b'\n' => self.push(b"\\n"),
                b'\r' => self.push(b"\\r"),
                b'\t' => self.push(b"\\t"),
                _ => {
                    let hi = HEX.get(usize::from(byte >> 4)).copied().unwrap_or(b'0');
                    let lo = HEX.get(usize::from(byte & 15)).copied().unwrap_or(b'0');
                    self.push(&[b'\\', b'x', hi, lo]);
                }
            }
            clean_from = at + 1;
        }
        self.push(bytes.get(clean_from..).unwrap_or_default());
    }

    fn flush(&mut self) {
        let mut from = 0;
        while from < self.len && !self.failed {
            let Some(rest) = self.buf.get(from..self.len) else {
                break;
            };
            // SAFETY: writes from a live stack buffer; the length is the slice's.
            let n = unsafe { libc::write(self.fd, rest.as_ptr().cast(), rest.len()) };
            if n < 0 {
                // SAFETY: reads this thread's errno; async-signal-safe.
                if unsafe { *libc::__errno_location() } == libc::EINTR {
                    continue;
                }
                self.failed = true;
            } else {
                from += n as usize;
            }
        }
        self.len = 0;
    }
}

/// Decimal digits of `value`, zero-padded to `width`.
fn push_decimal(out: &mut StackWriter, value: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut n = value;
    let mut len = 0;
    while (n > 0 || len < width.max(1)) && len < digits.len() {
        if let Some(d) = digits.get_mut(len) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        len += 1;
    }
    for i in (0..len).rev() {
        out.push_byte(digits.get(i).copied().unwrap_or(b'0'));
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` for nanoseconds since the Unix epoch, computed by
/// hand (the proleptic Gregorian calendar, UTC).
fn timestamp(out: &mut StackWriter, nanos: u64) {
    let seconds = nanos / 1_000_000_000;
    let micros = (nanos % 1_000_000_000) / 1_000;
    let (year, month, day) = civil_from_days(seconds / 86_400);
    let in_day = seconds % 86_400;
    push_decimal(out, year, 4);
    out.push_byte(b'-');
    push_decimal(out, month, 2);
    out.push_byte(b'-');
    push_decimal(out, day, 2);
    out.push_byte(b'T');
    push_decimal(out, in_day / 3600, 2);
    out.push_byte(b':');
    push_decimal(out, in_day / 60 % 60, 2);
    out.push_byte(b':');
    push_decimal(out, in_day % 60, 2);
    out.push_byte(b'.');
    push_decimal(out, micros, 6);
    out.push_byte(b'Z');
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
        let mut out = StackWriter::new(-1);
        timestamp(&mut out, 1_700_000_000_123_456_789);
        push_decimal(&mut out, 7, 3);
        out.push_escaped(b"a\nb\x1b");
        let len = out.len;
        out.len = 0; // no flush to fd -1
        assert_eq!(&out.buf[..len], b"2023-11-14T22:13:20.123456Z007a\\nb\\x1b");
    }
}
