//! fork(): what a child process does with a queue its parent created.
//!
//! `fork()` copies the whole address space, and one thread: the one that called it.
//! A child of a process that installed quelog therefore has the queue (its ring, its
//! counters, the listener's `JoinHandle`, the mutexes) but no listener thread, and no
//! termination-signal thread. Anything that waits for the listener waits for ever:
//! a flush barrier, a guard drop (it joins the thread), `Overflow::Block` on a full
//! ring. And the ring is a copy: what the child puts there nobody will ever read,
//! while the records it holds from before the fork are the parent's, which the
//! parent's listener writes.
//!
//! # Detecting the child: the fork generation
//!
//! A process-wide [`FORK_GENERATION`] counter is incremented by a `pthread_atfork`
//! child handler, registered once per process when the first queue is created. Each
//! queue ([`Shared`]) records the generation it was created in. A queue whose
//! generation differs from the current one was inherited: this process is a forked
//! child of the one that created it ([`forked`]). On the producer path that is one
//! relaxed load of a static the parent never writes (its cache line stays shared and
//! clean) and a compare, right after the level check. A queue created *in* the child
//! has the child's generation and works as usual: daemons should fork first and
//! install afterwards, and then nothing here applies.
//!
//! The handler runs in the child before `fork()` returns, when the child has only the
//! forking thread; it makes only async-signal-safe calls (an atomic add, a
//! destructor-less thread-local, `sigaction`), as code after a fork of a
//! multi-threaded process must. It also forgets the forking thread's cached kernel
//! thread id (in the child it is the parent's thread's) and its listener mark.
//!
//! Only `fork()` (and `libc::fork`, which std's `Command` uses when it cannot use
//! `posix_spawn`) runs atfork handlers. A raw `clone(2)`/`SYS_fork` syscall or glibc's
//! `_Fork` does not, and leaves a child that looks like the parent to quelog: such a
//! child must not log through the inherited queue.
//!
//! # The child's producer path: direct writes
//!
//! In a child, a record does not go through the ring. It is formatted on the calling
//! thread, without allocation, into a [`LINE_BYTES`] buffer on the stack ([`crate::direct`]:
//! the regular text format with the thread id alone and UTC time, as the crash drain
//! writes) and written with one `write(2)` to the descriptor of the first file sink,
//! the one published for the crash drain ([`Shared::crash_fd`]), honouring that
//! sink's level. The file is open with `O_APPEND`, so the child's lines and the
//! parent's batches interleave whole. A line longer than the buffer goes out in
//! several writes, and may then be interleaved with another writer's. Without a file
//! sink the line goes to standard error. Other sinks (a stderr sink beside the file,
//! custom sinks) get nothing from a child: they live on the listener.
//!
//! This path is still lock-free, allocation-free and async-signal-safe, and bounded
//! (no retry but `EINTR` and short writes); it blocks only as long as the kernel takes
//! to accept the write, since nothing else can write for it: no time at all for a
//! file on a healthy disk, but for ever on a hung mount, or for standard error that is
//! a full pipe nobody reads (as the after-stop path, which writes there too). Every
//! record is written synchronously, so there is no group commit: each costs a system
//! call. [`Overflow::Block`](crate::Overflow::Block) never waits here,
//! since the ring is not used.
//!
//! Accounting stays consistent: a record is counted enqueued and then written,
//! filtered (the file sink's level refused it) or lost (the write failed: counted in
//! `write_errors` too, and reported by the next flush). A message longer than the
//! queue's `max_record` is cut with the same marker as in the parent. The child's
//! counters start as a copy of the parent's at the fork; records that were still in
//! the ring then are the parent's to count and write, never the child's.
//!
//! Do not start a listener for an inherited queue in the child: its ring holds the
//! parent's records, and the child's own never enter it. While the parent's listener
//! ran at the fork, [`crate::QueueListener::start`] refuses anyway
//! ([`Error::AlreadyListening`]). A queue created in the child works as usual.
//!
//! # Flush and stop in the child
//!
//! * A flush barrier (`Guard::flush`, `QueueListener::flush`, the panic hook) syncs
//!   the file with `fdatasync` and answers: everything was written before it. It
//!   never sends on the control channel (nobody reads it) nor waits. It reports
//!   records lost since the last flush, and a failed sync, as [`Error::Sink`]; a sync
//!   that fails cannot be answered with a rewrite here (the child keeps no copy).
//! * Stopping (`Guard` drop, `Guard::stop`, `shutdown()`, `QueueListener::stop` and
//!   drop) never joins the listener thread (it does not exist here: joining waits for
//!   ever) and never takes a mutex a parent thread may have held at the fork (it
//!   stays locked in the child). The `JoinHandle` is forgotten, the file synced, and
//!   the counters returned. The global stop also closes the child's copy of the ring,
//!   so, as after a stop in the parent, later log calls go to standard error.
//!
//! # Signals
//!
//! With [`crate::Builder::handle_termination`], SIGTERM and SIGINT are caught by
//! signal-hook, whose handler wakes the termination thread through a pipe. That
//! thread does not exist in a child, so the signals would be swallowed and the child
//! could not be terminated. The atfork child handler therefore puts back the action
//! that was installed before quelog's (`SIG_DFL`, unless the program had its own),
//! if signal-hook's handler is still the current one. A child ended by SIGTERM has
//! its records in the file (they were written synchronously), not necessarily synced.
//!
//! The fatal-signal drain ([`crate::Builder::drain_on_crash`]) must not drain an
//! inherited ring in a child: its records are the parent's. [`forked`] tells it.
//!
//! # What a child still shares with its parent
//!
//! The file. The parent's `FileSink` assumes it is the file's only writer when it
//! recovers from a failure: after a failed write (disk full) or a failed sync it cuts
//! the file back to the length it knows, which can remove lines a child appended
//! since. And a child keeps writing to the descriptor it inherited: after the parent
//! reopens the file (rotation), the child still writes to the old one.

use std::fmt;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering::Relaxed};
use std::sync::{Once, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::direct::{push_line_end, push_line_start, StackWriter};
use crate::error::Error;
use crate::handler::clip;
use crate::queue::Shared;
use crate::stats::{Counters, Stats};

/// Bytes of the stack buffer a forked child formats a line into: a line up to this
/// long is one `write(2)`.
pub(crate) const LINE_BYTES: usize = 1024;

/// Incremented in every forked child, by the `pthread_atfork` child handler.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Registers the atfork handler, once per process.
static REGISTER: Once = Once::new();

/// What `pthread_atfork` returned (0: registered).
static REGISTER_RESULT: AtomicI32 = AtomicI32::new(0);

/// The current fork generation, for a queue being created, after making sure the
/// atfork handler is registered. An error only if it cannot be (`ENOMEM`).
pub(crate) fn generation() -> Result<u64, Error> {
    REGISTER.call_once(|| {
        // SAFETY: registers a child handler that makes only async-signal-safe calls
        // (see `on_fork_child`); no prepare or parent handler.
        let code = unsafe { libc::pthread_atfork(None, None, Some(on_fork_child)) };
        REGISTER_RESULT.store(code, Relaxed);
    });
    match REGISTER_RESULT.load(Relaxed) {
        0 => Ok(FORK_GENERATION.load(Relaxed)),
        code => Err(Error::InvalidConfig(format!(
            "pthread_atfork: {}",
            io::Error::from_raw_os_error(code)
        ))),
    }
}

/// Whether this process is a forked child of the one that created `shared`'s queue
/// (the queue has no listener here). One relaxed load; async-signal-safe, for the
/// crash drain too.
pub(crate) fn forked(shared: &Shared) -> bool {
    FORK_GENERATION.load(Relaxed) != shared.generation
}

/// Runs in the child, before `fork()` returns there, with only the forking thread.
/// Async-signal-safe.
extern "C" fn on_fork_child() {
    FORK_GENERATION.fetch_add(1, Relaxed);
    crate::handler::forget_thread_after_fork();
    restore_termination_signals();
}

// ---------------------------------------------------------------------------------
// The producer path in a child

/// Writes one record as a text line to the first file sink (standard error without
/// one), if that sink's level takes it, and counts it. The child's producer path
/// after the level check: no lock, no allocation, no panic, async-signal-safe.
pub(crate) fn write_record(
    shared: &Shared,
    record: &log::Record<'_>,
    target: &str,
    thread_id: u32,
    timestamp_nanos: u64,
) {
    write_line(
        shared,
        record.level(),
        target,
        thread_id,
        timestamp_nanos,
        |out| {
            let mut message = Message {
                out,
                room: shared.max_message,
                kept: 0,
                cut: false,
            };
            let formatted = message.format(record.args());
            let (kept, cut) = (message.kept, message.cut);
            (formatted, cut.then_some(kept as u64))
        },
    );
}

/// [`write_record`] for a record the producer path already formatted (a tracing
/// event): its message as stored, and its typed fields printed as the text layout
/// prints them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_formatted(
    shared: &Shared,
    level: log::Level,
    target: &str,
    thread_id: u32,
    timestamp_nanos: u64,
    message: &[u8],
    cut_at: Option<u64>,
    formatted: bool,
    fields: &[u8],
) {
    write_line(shared, level, target, thread_id, timestamp_nanos, |out| {
        out.push_escaped(message);
        crate::direct::push_fields(out, fields);
        (formatted, cut_at)
    });
}

/// The line around what `body` writes (the message and what follows it; it returns
/// whether formatting succeeded and where the message was cut), its level check, its
/// `write(2)` and its counters.
fn write_line(
    shared: &Shared,
    record_level: log::Level,
    target: &str,
    thread_id: u32,
    timestamp_nanos: u64,
    body: impl FnOnce(&mut StackWriter<LINE_BYTES>) -> (bool, Option<u64>),
) {
    let counters = &shared.counters;
    let file = shared.crash_fd.load(Relaxed);
    let (fd, level) = if file >= 0 {
        (file, shared.crash_level.load(Relaxed))
    } else {
        (libc::STDERR_FILENO, shared.level as usize)
    };
    Counters::add(&counters.enqueued, 1);
    if record_level as usize > level {
        Counters::add(&counters.filtered, 1);
        return;
    }
    let mut out: StackWriter<LINE_BYTES> = StackWriter::new(fd);
    let level = crate::record::level_to_u8(record_level);
    push_line_start(&mut out, timestamp_nanos, level, thread_id);
    out.push_escaped(target.as_bytes());
    out.push(b": ");
    let (formatted, cut_at) = body(&mut out);
    if cut_at.is_some() {
        Counters::add(&counters.truncated, 1);
    }
    push_line_end(&mut out, !formatted, cut_at);
    out.flush();
    Counters::add(&counters.bytes, out.written());
    match out.failure() {
        None => Counters::add(&counters.written, 1),
        Some(errno) => {
            Counters::add(&counters.lost, 1);
            Counters::add(&counters.write_errors, 1);
            shared.direct_errno.store(errno, Relaxed);
            Counters::add(&shared.direct_lost, 1);
        }
    }
}

/// A message being formatted straight into the line, escaped, up to `room` bytes.
struct Message<'a> {
    out: &'a mut StackWriter<LINE_BYTES>,
    /// Message bytes still allowed.
    room: usize,
    /// Message bytes written into the line.
    kept: usize,
    /// The message was longer than allowed.
    cut: bool,
}

impl Message<'_> {
    /// Formats `args`. Returns `false` if a `Display` impl failed or panicked; what it
    /// produced before stays.
    fn format(&mut self, args: &fmt::Arguments<'_>) -> bool {
        if let Some(text) = args.as_str() {
            let _ = fmt::Write::write_str(self, text);
            return true;
        }
        // A `Display` that panics must not unwind through the logging call (it may be
        // a `Drop` during unwinding, where a second panic aborts).
        match catch_unwind(AssertUnwindSafe(|| fmt::write(self, *args))) {
            Ok(Ok(())) => true,
            // We stop formatting with an error ourselves once the message is cut.
            Ok(Err(fmt::Error)) => self.cut,
            Err(_panic) => false,
        }
    }
}

impl fmt::Write for Message<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        if self.cut {
            return Err(fmt::Error);
        }
        let head = clip(text, self.room);
        self.out.push_escaped(head.as_bytes());
        self.room -= head.len();
        self.kept += head.len();
        if head.len() < text.len() {
            self.cut = true;
            return Err(fmt::Error);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// Flush and stop in a child

/// A flush barrier in a child: every record was written synchronously, so sync the
/// file and answer. Never waits for another thread.
pub(crate) fn flush(shared: &Shared) -> Result<(), Error> {
    if shared.ring.is_closed() {
        // Stopped (here, or in the parent before the fork), as in the parent.
        return Err(Error::ListenerStopped);
    }
    let synced = sync(shared);
    Counters::add(&shared.counters.flushes, 1);
    synced?;
    let lost = shared.direct_lost.swap(0, Relaxed);
    if lost > 0 {
        let error = io::Error::from_raw_os_error(shared.direct_errno.load(Relaxed));
        return Err(Error::Sink {
            kind: error.kind(),
            message: format!(
                "{lost} records lost: a forked child could not write them ({})",
                crate::listener::reason(&error)
            ),
        });
    }
    Ok(())
}

/// The global stop in a child (`Guard` drop, `Guard::stop`, `shutdown()`): closes
/// this process's copy of the ring (log calls go to standard error from now on, as
/// after a stop in the parent), syncs the file, and answers the counters. Takes no
/// lock and joins nothing.
pub(crate) fn stop_global(shared: &Shared) -> Stats {
    shared.ring.close();
    let _ = sync(shared);
    shared.stats()
}

/// `QueueListener::stop` (or drop) in a child: the thread is the parent's, it does not
/// exist here, and joining it would wait for ever; its handle is forgotten. Syncs the
/// file and answers the counters.
pub(crate) fn abandon_listener(shared: &Shared, thread: Option<JoinHandle<()>>) -> Stats {
    std::mem::forget(thread);
    let _ = sync(shared);
    shared.stats()
}

/// Syncs the file the child writes to (nothing for standard error), counting it as
/// the listener counts its syncs.
fn sync(shared: &Shared) -> Result<(), Error> {
    let fd = shared.crash_fd.load(Relaxed);
    if fd < 0 {
        return Ok(());
    }
    let counters = &shared.counters;
    let started = Instant::now();
    let result = sync_fd(fd);
    counters.sync_latency.record(started.elapsed());
    match result {
        Ok(()) => {
            Counters::add(&counters.syncs, 1);
            Ok(())
        }
        Err(error) => {
            Counters::add(&counters.sync_errors, 1);
            Err(Error::Sink {
                kind: error.kind(),
                message: format!(
                    "sync failed ({}) in a forked child: what it wrote since its last \
                     good sync may not be durable",
                    crate::listener::reason(&error)
                ),
            })
        }
    }
}

/// `fdatasync(fd)`; a descriptor that cannot be synced (a pipe, `/dev/null`) has
/// nothing to make durable, as for [`crate::FileSink`].
fn sync_fd(fd: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: a plain syscall on a descriptor number; a stale one fails with an
        // error, never touches memory.
        if unsafe { libc::fdatasync(fd) } == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EINVAL) | Some(libc::EROFS) => return Ok(()),
            _ => return Err(error),
        }
    }
}

// ---------------------------------------------------------------------------------
// Termination signals

/// The signals [`crate::Builder::handle_termination`] catches.
const TERMINATION_SIGNALS: [libc::c_int; 2] = [libc::SIGTERM, libc::SIGINT];

/// What a child puts back for [`TERMINATION_SIGNALS`].
struct Termination {
    /// The actions before quelog's termination handling was installed.
    previous: [libc::sigaction; TERMINATION_SIGNALS.len()],
    /// The handlers it installed (signal-hook's).
    installed: [libc::sighandler_t; TERMINATION_SIGNALS.len()],
}

static TERMINATION: OnceLock<Termination> = OnceLock::new();

/// The current actions of SIGTERM and SIGINT: call before installing termination
/// handling, and give them to [`restore_termination_in_children`] after.
pub(crate) fn termination_actions() -> [libc::sigaction; TERMINATION_SIGNALS.len()] {
    TERMINATION_SIGNALS.map(|signal| {
        let mut action = zeroed_action();
        // SAFETY: reads the current action into a live local.
        unsafe { libc::sigaction(signal, std::ptr::null(), &mut action) };
        action
    })
}

/// Termination handling is installed (signal-hook's handler is in place): from now
/// on, a forked child puts `previous` back, while that handler is still current.
pub(crate) fn restore_termination_in_children(
    previous: [libc::sigaction; TERMINATION_SIGNALS.len()],
) {
    let installed = termination_actions().map(|action| action.sa_sigaction);
    let _ = TERMINATION.set(Termination {
        previous,
        installed,
    });
}

/// In the atfork child handler: SIGTERM and SIGINT get their previous action back,
/// where quelog's termination handling is still installed (its thread does not exist
/// in the child: the signals would be swallowed). Async-signal-safe.
fn restore_termination_signals() {
    let Some(saved) = TERMINATION.get() else {
        return;
    };
    let actions = saved.previous.iter().zip(saved.installed);
    for (signal, (previous, installed)) in TERMINATION_SIGNALS.into_iter().zip(actions) {
        let mut current = zeroed_action();
        // SAFETY: reads the current action into a live local; async-signal-safe.
        let read = unsafe { libc::sigaction(signal, std::ptr::null(), &mut current) };
        if read == 0 && current.sa_sigaction == installed {
            // SAFETY: installs an action read from the kernel earlier (a default, an
            // ignore, or the program's own handler, still loaded); async-signal-safe.
            unsafe { libc::sigaction(signal, previous, std::ptr::null_mut()) };
        }
    }
}

fn zeroed_action() -> libc::sigaction {
    // SAFETY: `sigaction` is a plain C struct for which all-zero is valid (SIG_DFL,
    // empty mask, no flags).
    unsafe { std::mem::zeroed() }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::queue::QueueConfig;
    use log::LevelFilter;

    /// A queue whose direct writes go into a pipe, and the pipe's read end.
    fn piped(level: LevelFilter, max_record: usize) -> (Shared, libc::c_int) {
        // In-crate, so a literal is fine even once the struct is non_exhaustive.
        let config = QueueConfig {
            max_record,
            ..QueueConfig::default()
        };
        let shared = Shared::new(&config).unwrap();
        let mut fds = [0; 2];
        // SAFETY: creates a pipe into a live two-element array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        shared.crash_fd.store(fds[1], Relaxed);
        shared.crash_level.store(level as usize, Relaxed);
        (shared, fds[0])
    }

    fn read_all(fd: libc::c_int) -> String {
        let mut buf = vec![0u8; 1 << 16];
        // SAFETY: reads into a live buffer of the given length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        String::from_utf8(buf[..n.max(0) as usize].to_vec()).unwrap()
    }

    fn log(shared: &Shared, level: log::Level, args: fmt::Arguments<'_>) {
        let record = log::Record::builder()
            .level(level)
            .target("app::db")
            .args(args)
            .build();
        write_record(shared, &record, "app::db", 4242, 1_700_000_000_123_456_789);
    }

    #[test]
    fn a_queue_made_here_is_not_forked() {
        let (shared, _) = piped(LevelFilter::Info, 1024);
        assert!(!forked(&shared));
    }

    #[test]
    fn lines_have_the_text_format_and_are_counted() {
        let (shared, read) = piped(LevelFilter::Info, 1024);
        log(&shared, log::Level::Warn, format_args!("n={} tab\there", 5));
        log(
            &shared,
            log::Level::Debug,
            format_args!("filtered by the sink"),
        );
        assert_eq!(
            read_all(read),
            "2023-11-14T22:13:20.123456Z  WARN [4242] app::db: n=5 tab\\there\n"
        );
        let stats = shared.counters.snapshot();
        assert_eq!((stats.enqueued, stats.written, stats.filtered), (2, 1, 1));
        assert_eq!(stats.bytes, 64);
    }

    #[test]
    fn long_messages_are_cut_with_the_marker_and_long_lines_still_arrive() {
        let (shared, read) = piped(LevelFilter::Info, 3000);
        let long = "é".repeat(2000); // 4000 bytes
        log(&shared, log::Level::Info, format_args!("{long}"));
        let line = read_all(read);
        let message = line.split_once("app::db: ").unwrap().1;
        assert_eq!(
            message,
            format!("{} [quelog: message cut at 3000 bytes]\n", "é".repeat(1500))
        );
        assert_eq!(shared.counters.snapshot().truncated, 1);
    }

    #[test]
    fn a_panicking_display_is_marked() {
        struct Boom;
        impl fmt::Display for Boom {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("before")?;
                panic!("boom");
            }
        }
        let (shared, read) = piped(LevelFilter::Info, 1024);
        // (The panic message goes to the test's captured output.)
        log(&shared, log::Level::Error, format_args!("{Boom}"));
        assert!(read_all(read).ends_with("before [quelog: formatting failed here]\n"));
    }

    #[test]
    fn a_failed_write_is_lost_and_reported_by_the_next_flush() {
        let (shared, read) = piped(LevelFilter::Info, 1024);
        // SAFETY: closes the read end made by `piped`: writes now fail with EPIPE
        // (SIGPIPE is ignored in Rust programs).
        unsafe { libc::close(read) };
        log(&shared, log::Level::Info, format_args!("nobody reads this"));
        let stats = shared.counters.snapshot();
        assert_eq!((stats.enqueued, stats.lost, stats.write_errors), (1, 1, 1));
        match flush(&shared) {
            Err(Error::Sink { kind, message }) => {
                assert_eq!(kind, io::ErrorKind::BrokenPipe);
                assert!(message.starts_with("1 records lost"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // Reported once; a pipe has nothing to sync.
        flush(&shared).unwrap();
    }
}
