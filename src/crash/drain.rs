//! The drain itself, run by whichever thread holds the ring's crash claim: wait for
//! the listener to let go (bounded), write what the ring holds up to its snapshot with
//! `write(2)` on the crash stack, fsync, and give the ring back. Async-signal-safe
//! throughout.

use std::sync::atomic::Ordering;
use std::time::Duration;

#[cfg(target_arch = "x86_64")]
use super::CRASH_STACK_TOP;
use super::{LISTENER_WAIT, PENDING_WAIT};
use crate::direct::{push_decimal, push_line_end, push_line_start, timestamp, Out, StackWriter};
use crate::handler::{clock_nanos, on_listener_thread};
use crate::queue::Shared;
use crate::record::{args, callsite};
use crate::record::{Header, Kind, FLAG_MODULE_IS_TARGET, HEADER_LEN, MAX_RAW_SECTION};
use crate::ring::{CrashDrain, CrashNext, CrashRecord};
use crate::stats::Counters;

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

/// The drain itself: claims the ring, writes what it holds, gives it back.
/// Async-signal-safe; never panics.
pub(crate) fn drain(shared: &Shared, signal: libc::c_int) {
    if crate::fork::forked(shared) {
        // A forked child wrote its own records directly; the ring holds the parent's,
        // which the parent writes. Draining them here would write them twice.
        return;
    }
    let ring = &shared.ring;
    if !ring.crash_claim() {
        // Another thread is draining: wait for it, then drain what it left (records
        // logged after its snapshot, this thread's last ones perhaps). Never at the
        // same time as it.
        if !wait_until(LISTENER_WAIT, || !ring.crash_claimed()) || !ring.crash_claim() {
            return;
        }
    }
    drain_on_crash_stack(shared, signal);
    ring.crash_release();
}

/// Runs [`drain_claimed`] on the crash stack, if there is one. Only the holder of the
/// ring's crash claim gets here, and it is back on its own stack before it gives the
/// claim up: one stack serves every thread.
fn drain_on_crash_stack(shared: &Shared, signal: libc::c_int) {
    #[cfg(target_arch = "x86_64")]
    {
        let top = CRASH_STACK_TOP.load(Ordering::Acquire);
        if top != 0 {
            let call = DrainCall { shared, signal };
            let arg = (&call as *const DrainCall<'_>)
                .cast_mut()
                .cast::<libc::c_void>();
            // SAFETY: `top` is the aligned top of the stack mapped at install, which
            // nobody else uses now (we hold the crash claim); `call` lives on this frame
            // until `drain_trampoline` returns.
            unsafe { call_on_stack(top, drain_trampoline, arg) };
            return;
        }
    }
    drain_claimed(shared, signal);
}

/// The arguments of [`drain_claimed`], passed through [`call_on_stack`].
#[cfg(target_arch = "x86_64")]
struct DrainCall<'a> {
    shared: &'a Shared,
    signal: libc::c_int,
}

#[cfg(target_arch = "x86_64")]
extern "C" fn drain_trampoline(arg: *mut libc::c_void) {
    // SAFETY: `drain_on_crash_stack` passes a `DrainCall` that outlives this call.
    let call = unsafe { &*arg.cast_const().cast::<DrainCall<'_>>() };
    drain_claimed(call.shared, call.signal);
}

/// Calls `f(arg)` with the stack pointer at `top`, then switches back.
///
/// # Safety
///
/// `top` must be the 16-byte aligned top of mapped, writable memory that nothing else
/// uses while `f` runs, with room for everything `f` does.
#[cfg(target_arch = "x86_64")]
unsafe fn call_on_stack(top: usize, f: extern "C" fn(*mut libc::c_void), arg: *mut libc::c_void) {
    // The old stack pointer waits in r12, which a C-ABI function preserves; at the
    // `call` the stack pointer is `top`, 16-byte aligned as the ABI wants. `f` takes
    // `arg` in rdi (clobber_abi covers the rest of what it may change).
    // SAFETY: the caller vouches for the stack; `f` cannot unwind (extern "C" aborts).
    unsafe {
        std::arch::asm!(
            "mov r12, rsp",
            "mov rsp, {top}",
            "call {f}",
            "mov rsp, r12",
            top = in(reg) top,
            f = in(reg) f,
            out("r12") _,
            in("rdi") arg,
            clobber_abi("C"),
        );
    }
}

/// [`drain`] once the ring is claimed.
fn drain_claimed(shared: &Shared, signal: libc::c_int) {
    let ring = &shared.ring;
    if ring.consumer_active() {
        let released =
            !on_listener_thread() && wait_until(LISTENER_WAIT, || !ring.consumer_active());
        if !released {
            return;
        }
    }
    let Some(mut drain) = ring.crash_drain() else {
        return;
    };
    let fd = shared.crash_fd.load(Ordering::Relaxed);
    let level = shared.crash_level.load(Ordering::Relaxed);
    if fd < 0 {
        return;
    }
    let mut out = StackWriter::new(fd);
    crate::handler::clock::reset_reference();
    let mut written: u64 = 0;
    let mut pending_since: Option<u64> = None;
    loop {
        match drain.next() {
            CrashNext::Record(record) => {
                pending_since = None;
                if !CrashDrain::is_aborted(&record) {
                    // Counted as the listener counts, for a process that goes on.
                    Counters::add(&shared.counters.enqueued, 1);
                    if write_record(&drain, &record, level, &mut out) {
                        Counters::add(&shared.counters.written, 1);
                        written += 1;
                    } else {
                        Counters::add(&shared.counters.filtered, 1);
                    }
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
    let Some(header) = Header::decode(header.get(..at).unwrap_or_default()) else {
        return false;
    };
    if usize::from(header.level) > level || header.level == 0 {
        return false;
    }
    if Kind::from_flags(header.flags) != Kind::Event {
        // A tracing span's bookkeeping, not a line. (An event's typed fields are not
        // printed here either: the drain reads the ring piece by piece and has no room
        // to decode them; its message is.)
        return false;
    }
    let target_end = header.len() + usize::from(header.target_len);
    let message_start = target_end + usize::from(header.module_len) + usize::from(header.file_len);
    let message_end = message_start + header.message_len as usize;
    if header.raw {
        return write_raw(drain, record, &header, target_end, message_start, out);
    }
    push_line_start(out, header.wall_nanos(), header.level, header.thread_id);
    drain.read(record, header.len(), target_end, |bytes| {
        out.push_escaped(bytes)
    });
    out.push(b": ");
    drain.read(record, message_start, message_end, |bytes| {
        out.push_escaped(bytes)
    });
    let cut = header.message_full_len > header.message_len;
    push_line_end(
        out,
        header.flags & crate::record::FLAG_FORMAT_ERROR != 0,
        cut.then_some(u64::from(header.message_len)),
    );
    true
}

/// [`write_record`] of a raw record (quelog's macros, [`crate::record::args`]): its
/// arguments copied to the stack (the producer keeps them within
/// [`MAX_RAW_SECTION`]), the message formatted from its callsite's format string.
/// `false` (nothing written) if it names no registered callsite or does not fit it.
fn write_raw(
    drain: &CrashDrain<'_>,
    record: &CrashRecord,
    header: &Header,
    target_end: usize,
    message_start: usize,
    out: &mut StackWriter,
) -> bool {
    let mut section = [0u8; MAX_RAW_SECTION];
    let len = header.message_len as usize;
    if len > section.len() {
        return false;
    }
    let mut at = 0;
    drain.read(record, message_start, message_start + len, |bytes| {
        if let Some(dst) = section.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
        at += bytes.len();
    });
    let section = section.get(..at.min(len)).unwrap_or_default();
    let Some(site) = args::callsite_of(section).and_then(callsite::lookup) else {
        return false;
    };
    let values = section.get(args::CALLSITE_BYTES..).unwrap_or_default();
    // Formats into nowhere first: a damaged record must not leave half a line.
    if args::render(site.format(), values, &mut Discard).is_none() {
        return false;
    }
    push_line_start(out, header.wall_nanos(), header.level, header.thread_id);
    if header.flags & FLAG_MODULE_IS_TARGET != 0 {
        out.push_escaped(site.module_path().as_bytes());
    } else {
        drain.read(record, header.len(), target_end, |bytes| {
            out.push_escaped(bytes)
        });
    }
    out.push(b": ");
    let rendered = args::render(site.format(), values, &mut Escaping(out));
    push_line_end(out, rendered == Some(args::Rendered::FormatFailed), None);
    true
}

/// An [`Out`] that drops what it gets.
struct Discard;

impl Out for Discard {
    fn put(&mut self, _: &[u8]) {}
}

/// An [`Out`] that escapes into the drain's line as the text format does.
struct Escaping<'a>(&'a mut StackWriter);

impl Out for Escaping<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.0.push_escaped(bytes);
    }
}
