//! The fatal-signal drain: [`crate::Builder::drain_on_crash`].
//!
//! On SIGSEGV, SIGBUS, SIGILL, SIGFPE or SIGABRT that is fatal, the handler writes the
//! records that producers published but the listener has not taken yet straight to the
//! file of the first [`crate::FileSink`], with `write(2)`, then `fsync(2)`s it, frees
//! their slots and lets the signal end the process as it would have without quelog.
//!
//! Everything here is async-signal-safe: atomics, reads of the ring, `write`, `fsync`,
//! `clock_gettime`, `nanosleep`, `sigaction`, `raise`; no allocation, no lock, no
//! panic. Lines are formatted into a 512-byte buffer on the stack without chrono:
//! `2026-11-22T04:14:35.123456Z ERROR [4242] target: message`, the regular text
//! format with the thread id alone (no name) and UTC always.
//!
//! # Fault handlers are shared
//!
//! Wasm runtimes, JITs and garbage collectors handle SIGSEGV and SIGBUS themselves (a
//! guard page made writable, a trap turned into an exception) and return, so the
//! faulting instruction runs again; Rust's own handler reports stack overflows. quelog
//! installs its handler after theirs and chains to them:
//!
//! * **A synchronous fault** (SIGSEGV, SIGBUS, SIGILL or SIGFPE with `si_code > 0`: the
//!   kernel raised it for the instruction that faulted) with a handler installed before
//!   ours: that handler runs **first**, and the ring is not touched. When it returns, the
//!   action installed now for the signal (`sigaction(sig, NULL, &cur)`) says what it
//!   decided:
//!   * still ours: it resolved the fault. We return, the instruction runs again, and
//!     if it faults again we come back here: exactly what happens without quelog. No
//!     drain, no claim: the process and the logger are as they were.
//!   * `SIG_DFL` or `SIG_IGN`: it gave up (Rust's handler does so for a fault outside a
//!     guard page, then returns). The fault is fatal: we drain, then return; the
//!     instruction faults again and the default action ends the process (for a fault
//!     the kernel raises, an ignored or blocked signal is reset to the default).
//!   * another handler: that handler owns the signal now; we return without draining.
//!
//!   If the previous handler jumps out (`siglongjmp`) or aborts (Rust's stack overflow
//!   report), we had claimed nothing; an abort drains in its own SIGABRT. A previous
//!   action with `SA_RESETHAND` has its action reset to `SIG_DFL` before it runs, as
//!   the kernel would have done.
//! * **Otherwise** (SIGABRT, a fault signal sent with `kill` or `raise`, or no handler
//!   before ours): fatal. We drain first, then call the previous handler if there was
//!   one, then restore the default action and raise the signal again: it stays pending
//!   (every signal is blocked while our handler runs) and ends the process when we
//!   return.
//!
//! The previous handler runs with our signal mask (every signal blocked), not its own.
//!
//! # Coordination with the listener
//!
//! The ring's consuming token (see [`crate::ring`]) decides who writes a record. The
//! handler claims the ring, then waits, at most [`LISTENER_WAIT`], for the listener to
//! finish the batch it is writing. If the listener does not let go in time, or the
//! crash happened on the listener thread itself while it held the token, the handler
//! writes nothing: it skips rather than risk writing a record twice. It drains up to
//! the end of the ring as it was when it started (other threads may go on logging: a
//! drain that chased them would never end), and its last line counts exactly the
//! records it wrote. A record whose producer claimed it but never published it (the
//! crash hit inside a log call) ends the drain after [`PENDING_WAIT`]: what follows it
//! cannot be found without its length.
//!
//! When the drain is over the handler gives the ring back ([`crate::ring`]'s
//! `crash_release`), with the listener's position where the drain stopped. The
//! process is about to end; but if a previous handler jumps out of the signal, the
//! listener resumes after the records the drain wrote instead of finding the ring
//! claimed for ever (those records went to the first file sink only, and count as
//! enqueued and written). A thread that crashes while another thread's drain runs
//! waits for it (same bound), then drains what was logged since, never at the same
//! time.
//!
//! # Stacks
//!
//! The handler runs on the thread's alternate signal stack when it has one, so a stack
//! overflow is drained too. Rust gives each thread one of `SIGSTKSZ` (8 KiB), and a
//! stack overflow nests two signal frames in it: the SIGSEGV that Rust's handler
//! reports, then the SIGABRT of its `abort()`, where we drain. A signal frame takes
//! `AT_MINSIGSTKSZ` bytes, 3376 on an x86-64 machine with AVX-512: measured there,
//! our SIGABRT handler started with about 850 bytes left (debug build; 1070 in
//! release), and the drain needs about 2.9 KiB (debug; 1.0 KiB in release), so it
//! overflowed. On x86-64 the drain therefore runs on a stack of its own,
//! [`CRASH_STACK_BYTES`] mapped at install above a guard page: only the holder of the
//! crash claim uses it, so one serves every thread. Elsewhere it runs on the handler's
//! stack.

use std::sync::atomic::AtomicUsize;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::error::Error;
use crate::queue::Shared;

mod drain;

pub(crate) use drain::drain;

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

/// Bytes of the stack the drain runs on (see "Stacks" in the module docs).
#[cfg(target_arch = "x86_64")]
const CRASH_STACK_BYTES: usize = 64 << 10;

/// The top of that stack, 16-byte aligned; 0 if it could not be mapped (the drain then
/// runs on the handler's stack).
#[cfg(target_arch = "x86_64")]
static CRASH_STACK_TOP: AtomicUsize = AtomicUsize::new(0);

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
    #[cfg(target_arch = "x86_64")]
    CRASH_STACK_TOP.store(map_crash_stack(), Ordering::Release);
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

/// Maps [`CRASH_STACK_BYTES`] of stack above a guard page, for the rest of the
/// process; returns its top, or 0.
#[cfg(target_arch = "x86_64")]
fn map_crash_stack() -> usize {
    // SAFETY: sysconf has no preconditions.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        size if size > 0 => size as usize,
        _ => 4096,
    };
    let len = CRASH_STACK_BYTES + page;
    // SAFETY: a fresh private anonymous mapping that nothing else refers to.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return 0;
    }
    // SAFETY: the lowest page of the mapping just made becomes a guard page: a drain
    // that overflows faults (and, every signal blocked, ends the process) instead of
    // writing below it.
    if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
        // SAFETY: unmaps what we mapped above, which nobody uses.
        unsafe { libc::munmap(base, len) };
        return 0;
    }
    (base as usize + len) & !15
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
    let shared = if target.is_null() {
        None
    } else {
        // SAFETY: `TARGET` holds a reference leaked at install and never released.
        Some(unsafe { &*target })
    };
    if is_synchronous_fault(signal, info) {
        if let Some(previous) = previous_action(signal).filter(|a| is_handler(a)) {
            // The previous handler may resolve the fault (a guard page made writable, a
            // JIT's trap): ask it first, touching nothing of the ring. If it jumps out,
            // we claimed nothing.
            if previous.sa_flags & libc::SA_RESETHAND != 0 {
                // What the kernel would have done before calling it.
                set_default(signal);
            }
            call_previous(previous, signal, info, context);
            match current_action(signal) {
                // Still ours: the previous handler resolved the fault. Return, and the
                // instruction runs again (and comes back here if it faults again).
                Some(Current::Ours) => {}
                // It gave up on the fault (Rust's handler does so for a fault outside a
                // guard page): fatal. Drain, then return: the instruction faults again
                // and the default action ends the process, as it would without us.
                Some(Current::DefaultOrIgnore) => {
                    if let Some(shared) = shared {
                        drain(shared, signal);
                    }
                }
                // It installed a handler of its own, which owns the signal now.
                Some(Current::Other) | None => {}
            }
            return;
        }
    }
    // Fatal as far as we can tell: SIGABRT, a fault signal sent with kill or raise, or
    // nothing installed before us that could resolve it.
    if let Some(shared) = shared {
        drain(shared, signal);
    }
    if let Some(previous) = previous_action(signal).filter(|a| is_handler(a)) {
        call_previous(previous, signal, info, context);
    }
    set_default(signal);
    // SAFETY: raises the signal again: it stays pending (blocked while this handler
    // runs) and ends the process by the default action when we return. A fault
    // re-executes its instruction and ends it the same way.
    unsafe { libc::raise(signal) };
}

/// Whether `signal` is a fault the kernel raised for the instruction that made it
/// (`si_code > 0`), not one sent with `kill`, `raise` or `sigqueue` (`si_code <= 0`).
fn is_synchronous_fault(signal: libc::c_int, info: *const libc::siginfo_t) -> bool {
    if info.is_null() {
        return false;
    }
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler; null checked.
    let code = unsafe { (*info).si_code };
    matches!(
        signal,
        libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE
    ) && code > 0
}

/// The action installed for `signal` before ours.
fn previous_action(signal: libc::c_int) -> Option<&'static libc::sigaction> {
    let previous = PREVIOUS.get()?;
    FATAL_SIGNALS
        .iter()
        .position(|s| *s == signal)
        .and_then(|i| previous.get(i))
}

/// Whether `action` is a function to call (not `SIG_DFL` or `SIG_IGN`).
fn is_handler(action: &libc::sigaction) -> bool {
    action.sa_sigaction != libc::SIG_DFL && action.sa_sigaction != libc::SIG_IGN
}

/// What is installed for a signal now, after a previous handler ran.
enum Current {
    /// Our handler.
    Ours,
    /// `SIG_DFL` or `SIG_IGN`.
    DefaultOrIgnore,
    /// Another handler.
    Other,
}

fn current_action(signal: libc::c_int) -> Option<Current> {
    let mut current = zeroed_action();
    // SAFETY: reads the current action into a live local; async-signal-safe.
    if unsafe { libc::sigaction(signal, std::ptr::null(), &mut current) } != 0 {
        return None;
    }
    let ours = on_fatal_signal as *const () as libc::sighandler_t;
    Some(if current.sa_sigaction == ours {
        Current::Ours
    } else if is_handler(&current) {
        Current::Other
    } else {
        Current::DefaultOrIgnore
    })
}

/// Restores the default action of `signal`.
fn set_default(signal: libc::c_int) {
    let default = zeroed_action();
    // SAFETY: installs SIG_DFL from a live local; async-signal-safe.
    unsafe { libc::sigaction(signal, &default, std::ptr::null_mut()) };
}

/// Calls `action`, the handler that was installed before ours.
fn call_previous(
    action: &libc::sigaction,
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    let handler = action.sa_sigaction;
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
