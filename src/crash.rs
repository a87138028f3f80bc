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

use crate::direct::{push_decimal, timestamp, StackWriter};
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
