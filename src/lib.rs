//! quelog: a logging backend that does not deadlock where others do.
//!
//! A [`QueueHandler`] (the producer side, a [`log::Log`]) puts records on a
//! preallocated ring; a [`QueueListener`] thread drains the ring into sinks, with
//! fsync. The names come from Python's `logging.handlers`, whose queue takes a
//! non-reentrant lock and freezes a program that logs from `__del__` or a signal
//! handler at the wrong moment. quelog's producer path takes no lock at all.
//!
//! ```no_run
//! let guard = quelog::Builder::new()
//!     .file("logs/app.log")
//!     .sync(quelog::SyncPolicy::EveryBatch)
//!     .level(log::LevelFilter::Info)
//!     .install()?;
//! log::info!("started with {} workers", 4);
//! guard.flush()?; // durable: written and synced
//! # Ok::<(), quelog::Error>(())
//! ```
//!
//! # Filters
//!
//! [`Builder::filter`] takes env_logger's directives (`"info,my_crate=debug"`; span
//! and field directives are not supported), and `RUST_LOG` replaces them when set
//! ([`Builder::env_var`]); a malformed `RUST_LOG` is reported in the log's first line,
//! never fatal. A record filtered out by level costs `log`'s one atomic load; by
//! target, a bounded scan of the compiled directives, without lock or allocation.
//!
//! # Outputs and formats
//!
//! Each [`Output`] (a file, standard error, standard output, a [`Sink`] of your own)
//! has its [`Format`] (text, or JSON lines with quelog's, Elastic's or Google
//! Cloud's keys) and level:
//!
//! ```no_run
//! use quelog::{Builder, Format, LevelFilter, Output};
//!
//! let guard = Builder::new()
//!     .level(LevelFilter::Debug)
//!     .stderr(LevelFilter::Warn)
//!     .output(Output::file("logs/app.json").format(Format::Json))
//!     .install()?;
//! # Ok::<(), quelog::Error>(())
//! ```
//!
//! # Rotation
//!
//! A file output rotates by size, hour or day, or a day with a size cap, keeps `n`
//! rotated files or those younger than an age, and gzips them on a thread of its own
//! (feature `compression`); see [`Rotation`] and [`Naming`]:
//!
//! ```no_run
//! use quelog::{Builder, Output, Rotation};
//!
//! let guard = Builder::new()
//!     .output(Output::file("logs/app.log").rotate(Rotation::daily().max_size(100 << 20).keep(7)))
//!     .install()?;
//! # Ok::<(), quelog::Error>(())
//! ```
//!
//! # The producer contract
//!
//! A log call through quelog (the *producer path*: everything `log::info!` runs on the
//! calling thread, from the level check to the return) is:
//!
//! * **lock-free and allocation-free**: no mutex, no `malloc`, no
//!   `thread::current()`, no lazily initialised thread-local;
//! * **wait-free in bounded steps**: it never waits for another thread. A record that
//!   cannot be placed after a bounded number of attempts is dropped and counted
//!   ([`Stats::dropped`]), and the listener writes a line saying so into the log;
//! * **async-signal-safe**: the only system calls are `clock_gettime`, `gettid` (once
//!   per thread), `write(2)` to an eventfd when the listener sleeps, after the
//!   listener stopped `poll(2)` and `writev(2)` to standard error (only when it can
//!   take the line without blocking) and, in a forked child (see "fork" below),
//!   `write(2)` of the line to the log file;
//! * **panic-free**: nothing in quelog's code on this path can panic; a `Display`
//!   that panics is caught and the record is marked.
//!
//! So it is safe to log from a signal handler, a `Drop` (during unwinding too), a
//! thread-local destructor, the `Display` of another log call's argument, a panic
//! hook, and from a sink running on the listener thread itself.
//!
//! What quelog cannot promise for you: the *arguments* you log are formatted on the
//! calling thread, by your `Display` and `Debug` impls. If those allocate or lock
//! (`format!`, a `String` field behind a mutex), a signal handler that logs them is
//! unsafe because of them. Log plain numbers and `&str` from signal handlers.
//!
//! The exception is [`Overflow::Block`]: an ordinary thread (not inside another log
//! call, not the listener) may then sleep while the ring is full and a listener is
//! draining it, up to the timeout (`Duration::MAX`: no limit), on a futex the
//! listener signals as it frees slots. With no listener running (before it starts,
//! after it died or stopped) nobody will make room, so nobody waits. A signal handler
//! that interrupted ordinary code is such a thread too: it may wait, bounded by the
//! timeout (the wait is async-signal-safe).
//!
//! # Formatting on the listener
//!
//! quelog's own macros, [`info!`], [`warn!`], [`error!`], [`debug!`], [`trace!`] and
//! [`log!`], take `log`'s syntax (`target: "..."` included) and write the same line
//! as `log::info!` with the same arguments, byte for byte in every format, but leave
//! the formatting to the listener: integers, floats, bools, chars, `&str` and
//! `String` arguments are handed over as they are, with the format string, module
//! path, file and line in a per-callsite `static`; arguments of other types are
//! formatted on the caller (`Display`, into the record). The caller formats the whole
//! message, as `log::info!` does, when the format string has anything but `{}`,
//! `{:?}`, `{{` and `}}` (a width, `{0}`, `{name}`: decided once per callsite), for a
//! named argument, a `Debug`-only argument, key-values, a message that could need
//! cutting, in a forked child, and when quelog is not `log`'s global logger (the
//! record then goes through `log` to whatever logger is; a logger wrapping a
//! [`QueueHandler`] gets every record that way, its `log` sees them all). `log`'s
//! `STATIC_MAX_LEVEL`, `max_level()` and quelog's filter apply exactly as to
//! `log::info!`; arguments are evaluated once, and not at all for a disabled level.
//!
//! ```no_run
//! let guard = quelog::Builder::new().file("logs/app.log").install()?;
//! let (id, us, name) = (41u64, 997u64, "worker-7");
//! quelog::info!("request {} handled in {} us by {}", id, us, name);
//! quelog::warn!(target: "app::pool", "{} of {} busy ({:?})", 15, 16, 0.9375);
//! # Ok::<(), quelog::Error>(())
//! ```
//!
//! The producer contract above holds for them too. The record names its callsite by
//! an index into a fixed registry (a callsite registers with one CAS on its first
//! enabled call; the listener and the crash drain accept only registered indexes,
//! never a pointer read from the ring), so a damaged record cannot make a reader
//! follow a wild pointer.
//!
//! # Accounting
//!
//! Every record the handler accepts is either enqueued or dropped with a reason;
//! every enqueued record is written, filtered out by every sink's level, lost with the
//! sink's error, or abandoned at a stop. After any stop:
//! `enqueued + dropped.total() == accepted` and
//! `enqueued == written + filtered + lost + abandoned`.
//!
//! A stop is final: it closes the queue, so every log call lands before it (and is
//! written) or after it (and goes to standard error, counted as
//! [`Dropped::after_stop`]). A log call interrupted between claiming its room and
//! publishing it for longer than the stop's grace period is abandoned (the records
//! behind it are written); a stop that runs out of time ([`Builder::shutdown_timeout`],
//! default 5 s: a sink that never returns) abandons what the listener holds and what
//! is still queued. Either way the count is in [`Stats::abandoned`] and said on
//! standard error.
//!
//! # Durability
//!
//! [`SyncPolicy`] says when the listener syncs (`fdatasync`): every record, every
//! batch (group commit, the default), at an interval, or never. [`Guard::flush`] is a
//! barrier: it returns `Ok` once everything logged before it is written and synced,
//! and only then. Otherwise it returns the error that prevented it: a sink's failure
//! ([`Error::Sink`]), or [`Error::Dropped`] with how many records logged before it
//! (since the previous barrier) were dropped, and why, after writing and syncing
//! everything else. Threads that flush at the same time share syncs
//! (group commit): compare [`Stats::flushes`] with [`Stats::syncs`];
//! [`Stats::sync_latency`] has the p50, p99 and max of the syncs.
//!
//! When a sink fails, records are lost and counted ([`Stats::lost`]), never waited
//! for: producers do not notice.
//!
//! * **Write fails** (disk full): the batch is lost to that sink, which is retried
//!   with backoff (10 ms doubling to 1 s; records meanwhile are lost too). The first
//!   successful write starts with one line, written by quelog with target `quelog`:
//!   `2026-11-22T04:14:35.123456Z ERROR [quelog/0] quelog: 7 records lost (No space
//!   left on device)`.
//! * **Sync fails** (EIO): after a failed fsync Linux may have dropped the data and a
//!   retried fsync "succeeds" (fsyncgate). The listener keeps every byte written since
//!   the last good sync (up to 2 MiB per sink), calls [`Sink::prepare_rewrite`]
//!   ([`FileSink`]: reopen, cut back to the last good sync), rewrites them and syncs
//!   again: [`Stats::sync_rewrites`], and a line `quelog: sync failed (Input/output
//!   error); rewrote the 1140 bytes (15 records) written since the last good sync and
//!   synced them again`. If that fails too, the records are counted lost and reported
//!   as above.
//! * **flush() tells**: a failure is the answer of every flush pending when it
//!   happens and of the flushes answered next, as [`Error::Sink`] (not of flushes
//!   after those: the counters and the log line remain). A failed sync is
//!   reported even when the rewrite succeeded (the message says the records were
//!   rewritten and synced again): the disk said EIO, and you should know.
//! * **A sink that panics** fails that call ([`Stats::sink_panics`]); the other sinks
//!   are served. If the listener thread dies anyway, `flush()` returns
//!   [`Error::ListenerStopped`] and producers go on, dropping once the ring is full.
//! * **Severity reserve**: 1/8 of the ring ([`Builder::severity_reserve`]) takes only
//!   `Warn` and `Error` records, so a flood of debug records cannot push out an error.
//!
//! How the process ends decides what reaches the file:
//!
//! * **SIGKILL** (or power loss, for synced data): every record whose `flush()`
//!   returned `Ok` is in the file. [`FileSink`] writes whole batches with one
//!   `write(2)`, so at most the last line is torn; reopening the file ends a torn last
//!   line with a newline.
//! * **Fatal signals**, with [`Builder::drain_on_crash`]: SIGSEGV, SIGBUS, SIGILL,
//!   SIGFPE and SIGABRT write the records still in the ring to the first file sink
//!   (the first text one, if any: these lines are text)
//!   (`write(2)`, no allocation, UTC timestamps, thread id without name) and fsync it,
//!   with a last line `quelog: fatal signal 6 (SIGABRT): the crash handler wrote N
//!   records left in the queue`; then the signal ends the process. The drain writes
//!   the ring as it was when it started, so it ends even while other threads keep
//!   logging, and N is exactly what it wrote. The listener and the handler never both
//!   write a record: the handler waits up to 2 s for the listener to finish the batch
//!   it is writing, and writes nothing if it does not (or if the crash is on the
//!   listener thread).
//! * **Fault handlers installed before quelog** (wasm runtimes, JITs, garbage
//!   collectors, Rust's stack overflow report) are chained. On a fault the kernel
//!   raised for the instruction (SIGSEGV, SIGBUS, SIGILL, SIGFPE with `si_code > 0`),
//!   the previous handler runs first, before quelog touches anything: if it resolves
//!   the fault and returns with quelog's handler still installed, the instruction runs
//!   again and nothing is drained; if it resets the action to `SIG_DFL` or `SIG_IGN`
//!   and returns (what Rust's handler does for a fault outside a guard page), the
//!   fault is fatal and is drained; if it installs another handler, that one decides.
//!   SIGABRT, and fault signals sent with `kill` or `raise`, are drained first, then
//!   the previous handler runs, then the signal's default action. If a previous
//!   handler jumps out (`siglongjmp`), the ring is not left claimed: the listener goes
//!   on after what the drain wrote (to the first file sink only). A real stack
//!   overflow in a Rust thread is reported by Rust and drained in the SIGABRT that
//!   follows; on x86-64 the drain runs on a stack of its own (64 KiB, mapped at
//!   install), because the 8 KiB alternate signal stack Rust gives each thread has no
//!   room left for it after two nested signal frames.
//! * **Panics**: a panic hook (on by default, [`Builder::flush_on_panic`]) logs the
//!   panic with target `panic` and flushes (at most the shutdown timeout) before the
//!   previous hook, so before unwinding, and before the abort of `panic = "abort"`
//!   (which runs the hooks first). Its cost is one record and one durable flush (an
//!   fdatasync, typically 0.1 to a few ms) per panic, which a thread pool that catches
//!   panics on purpose pays per panic; turn it off with `flush_on_panic(false)`. Once
//!   the logger stopped, the hook passes panics straight to the previous one.
//! * **SIGTERM and SIGINT**, with [`Builder::handle_termination`]: drained, synced
//!   (within the shutdown timeout), then ended by the signal (status 143 or 130 in a
//!   shell).
//! * **`std::process::exit`** runs no destructors: the [`Guard`] does not stop the
//!   logger, and what is still queued is lost. Call [`shutdown`] (or [`Guard::flush`])
//!   first.
//! * Dropping the [`Guard`], [`Guard::stop`] and [`shutdown`] drain, sync and join,
//!   within the shutdown timeout.
//!
//! # Files moved under quelog (logrotate)
//!
//! [`FileSink`] appends with `O_APPEND` and reads the file's length before every cut,
//! so logrotate's `copytruncate` leaves no NUL bytes (it still loses what is written
//! between its copy and its truncate: inherent to that mode). For its `create` mode,
//! [`Builder::reopen_on_sighup`] with `postrotate kill -HUP <pid>`, or
//! [`Guard::reopen`] from code: what was logged before is written and synced into
//! the renamed file, then the path is reopened. Without either, a file renamed away
//! or deleted is noticed before the next batch (at most every 10 ms, and before every
//! `flush()` answer), synced and reopened, and the new file starts with a line saying
//! so ([`Stats::detached_reopens`]). The crash drain follows the reopened file; a
//! child forked earlier keeps writing to the file it inherited.
//!
//! # tracing
//!
//! With the `tracing` feature (default on), [`Builder::install`] also sets quelog as
//! the global default tracing subscriber (`TracingSubscriber`): tracing events and
//! `log` records share one queue and one file, each written once (no `LogTracer`; do
//! not enable the `tracing` crate's `log-always` feature, which would write each
//! event twice). The subscriber keeps the producer contract above where tracing lets
//! it: recording an event, entering and exiting a span take no lock, allocate nothing
//! and cannot panic; creating a span may allocate while the span table grows. What
//! tracing does not let it keep: its macros register callsites on first use (a lock,
//! an allocation), so **tracing macros are not signal-safe; `log` macros through
//! quelog are**. Use `log` in signal handlers.
//!
//! To share tracing-subscriber's registry with other layers (OpenTelemetry, Sentry),
//! the `tracing-layer` feature (off by default) adds `TracingLayer`
//! (`QueueHandler::tracing_layer()`), a `tracing_subscriber::Layer` writing the same
//! records; install with `Builder::tracing(false)` and set the registry yourself. The
//! registry's own limits then apply (see `TracingLayer`).
//!
//! # fork
//!
//! Daemons and pre-fork servers: fork (or daemonize) first, then install quelog. The
//! child then has its own queue and listener, and everything above holds in it.
//!
//! `fork()` copies only the calling thread, so a process that installed quelog and
//! then forks has a child with the queue but without its listener. quelog notices (a
//! `pthread_atfork` handler counts forks; a log call compares that count with its
//! queue's, one relaxed load), and in the child records skip the ring: each is
//! formatted on the calling thread, still without lock or allocation, and written to
//! the first file sink (the first text one, if any: these lines are text) with one
//! `write(2)`, at that sink's level (without a file sink, to standard error). Lines up to 1 KiB are one write, so with `O_APPEND` they
//! interleave whole with the parent's. There is no group commit: a system call per
//! record, done before the log call returns. [`Guard::flush`] syncs the file
//! (`fdatasync`) and never waits; dropping the guard, [`Guard::stop`], [`shutdown`]
//! and [`QueueListener::stop`] sync too, never join the parent's listener thread nor
//! take a lock a parent thread may have held, and return the counters;
//! [`Overflow::Block`] never waits. The parent is unaffected, and writes the records
//! it had queued before the fork.
//!
//! In such a child the thread field is the kernel thread id alone and the time is UTC
//! (as in the crash drain's lines); other sinks get nothing; a child keeps the
//! descriptor it inherited, so after the parent reopens the file (rotation) it writes
//! to the old one; and with [`Builder::handle_termination`], SIGTERM and SIGINT get
//! back the actions they had before quelog's handling (the signal thread is not
//! there to act on them): the default action ends the child at once. Only `fork()`
//! runs atfork handlers: a child made by a raw `clone(2)` system call must not log
//! through the inherited queue.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]

mod crash;
mod direct;
mod error;
mod filter;
mod filter_config;
mod fork;
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub mod fuzzing;
mod global;
mod handler;
#[cfg(feature = "tracing-layer")]
mod layer;
mod layout;
mod listener;
mod macros;
mod output;
mod queue;
mod record;
mod ring;
#[cfg(all(test, loom))]
mod ring_loom;
mod scan;
mod sink;
// The span table serves the tracing subscriber; without it the table is dead code.
#[cfg_attr(not(feature = "tracing"), allow(dead_code))]
mod spans;
#[cfg(all(test, loom))]
mod spans_loom;
mod stats;
#[cfg(feature = "tracing")]
mod subscriber;
mod sync;
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub mod test_hooks;
mod wake;

use std::path::PathBuf;
use std::time::Duration;

pub use error::Error;
pub use global::shutdown;
pub use handler::QueueHandler;
#[cfg(feature = "tracing-layer")]
pub use layer::TracingLayer;
pub use listener::{ListenerConfig, QueueListener, SyncPolicy};
pub use log::LevelFilter;
#[doc(hidden)]
pub use macros::__private;
pub use output::{Format, Output};
pub use queue::{Overflow, QueueConfig};
pub use sink::{Detached, FileSink, Naming, Rotation, Sink, StderrSink, StdoutSink};
pub use stats::{Dropped, RotationStats, SpanStats, Stats, SyncLatency};
#[cfg(feature = "tracing")]
pub use subscriber::TracingSubscriber;

/// Sets up a queue, its listener and sinks, and installs it as the global `log`
/// logger.
///
/// ```no_run
/// use std::time::Duration;
/// use quelog::{Builder, LevelFilter, Overflow, SyncPolicy};
///
/// let guard = Builder::new()
///     .file("logs/app.log")                  // everything at the global level
///     .stderr(LevelFilter::Warn)             // warnings and errors also here
///     .sync(SyncPolicy::Interval(Duration::from_millis(100)))
///     .capacity(8 << 20)                     // bytes of ring
///     .overflow(Overflow::Drop)
///     .level(LevelFilter::Debug)
///     .install()?;
/// # Ok::<(), quelog::Error>(())
/// ```
pub struct Builder {
    queue: QueueConfig,
    listener: ListenerConfig,
    sinks: Vec<Output>,
    drain_on_crash: bool,
    handle_termination: bool,
    reopen_on_sighup: bool,
    flush_on_panic: bool,
    tracing: bool,
    /// Directives given with [`Builder::filter`], parsed at build.
    filter: Option<String>,
    /// The variable whose directives replace them (default `RUST_LOG`).
    env_var: Option<String>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// Defaults: 32 MiB ring (see [`QueueConfig::capacity`] for why), drop on overflow, level `Info`, group commit, UTC.
    pub fn new() -> Builder {
        Builder {
            queue: QueueConfig {
                level: LevelFilter::Info,
                ..QueueConfig::default()
            },
            listener: ListenerConfig::default(),
            sinks: Vec::new(),
            drain_on_crash: false,
            handle_termination: false,
            reopen_on_sighup: false,
            flush_on_panic: true,
            tracing: cfg!(feature = "tracing"),
            filter: None,
            env_var: Some("RUST_LOG".into()),
        }
    }

    /// Adds an output: a file, standard error or output, or a sink of your own, each
    /// with its format and level (see [`Output`] for the everyday set-ups).
    ///
    /// ```no_run
    /// use quelog::{Builder, Format, Output};
    ///
    /// let guard = Builder::new()
    ///     .output(Output::file("logs/app.json").format(Format::Json))
    ///     .install()?;
    /// # Ok::<(), quelog::Error>(())
    /// ```
    pub fn output(mut self, output: Output) -> Builder {
        self.sinks.push(output);
        self
    }

    /// Appends text to the file at `path` (created with its parent directories), at
    /// the global level: `.output(Output::file(path))`.
    pub fn file(self, path: impl Into<PathBuf>) -> Builder {
        self.output(Output::file(path))
    }

    /// Appends text to the file at `path`, only records at `level` or more severe:
    /// `.output(Output::file(path).level(level))`.
    pub fn file_with_level(self, path: impl Into<PathBuf>, level: LevelFilter) -> Builder {
        self.output(Output::file(path).level(level))
    }

    /// Also writes records at `level` or more severe to standard error, as text:
    /// `.output(Output::stderr().level(level))`.
    pub fn stderr(self, level: LevelFilter) -> Builder {
        self.output(Output::stderr().level(level))
    }

    /// Adds a sink of your own, with its level filter, as text:
    /// `.output(Output::sink(sink).level(level))`.
    pub fn sink(self, sink: impl Sink + 'static, level: LevelFilter) -> Builder {
        self.output(Output::sink(sink).level(level))
    }

    /// When to sync (default [`SyncPolicy::EveryBatch`]).
    pub fn sync(mut self, policy: SyncPolicy) -> Builder {
        self.listener.sync = policy;
        self
    }

    /// Bytes of ring space (default 32 MiB, see [`QueueConfig::capacity`]; 1 KiB to
    /// 1 GiB, else an error at build).
    pub fn capacity(mut self, bytes: usize) -> Builder {
        self.queue.capacity = bytes;
        self
    }

    /// What producers do when the ring is full (default [`Overflow::Drop`]).
    pub fn overflow(mut self, overflow: Overflow) -> Builder {
        self.queue.overflow = overflow;
        self
    }

    /// The most verbose level logged (default `Info`).
    pub fn level(mut self, level: LevelFilter) -> Builder {
        self.queue.level = level;
        self
    }

    /// The most message bytes per record (default 64 KiB); longer ones are cut with
    /// a marker and counted.
    pub fn max_record(mut self, bytes: usize) -> Builder {
        self.queue.max_record = bytes;
        self
    }

    /// Timestamps in local time with an offset instead of UTC.
    pub fn local_time(mut self, local: bool) -> Builder {
        self.listener.local_time = local;
        self
    }

    /// The share of the ring only `Warn` and `Error` records may use (default 1/8;
    /// 0.0 to 0.5): a flood of less severe records is dropped (and counted as
    /// [`Dropped::queue_full`]) before it can take the last room from an error.
    pub fn severity_reserve(mut self, share: f64) -> Builder {
        self.queue.severity_reserve = share;
        self
    }

    /// On SIGSEGV, SIGBUS, SIGILL, SIGFPE and SIGABRT, write the records still in the
    /// queue straight to the first file sink and fsync it, then let the signal end the
    /// process as before (default off). A fault that a handler installed before quelog
    /// resolves is left to it. Once per process. See the crate docs, "Durability".
    pub fn drain_on_crash(mut self, on: bool) -> Builder {
        self.drain_on_crash = on;
        self
    }

    /// With [`Builder::install`]: on SIGTERM or SIGINT, drain the queue, sync and stop
    /// the listener (as [`shutdown`] does, within [`Builder::shutdown_timeout`]), then end the
    /// process by the signal's default action (status 128 + the signal's number in a
    /// shell). A signal-hook thread does the work, not the signal handler. Default off.
    ///
    /// A forked child has no such thread: there, SIGTERM and SIGINT get back the
    /// actions they had before (see "fork" in the crate docs).
    pub fn handle_termination(mut self, on: bool) -> Builder {
        self.handle_termination = on;
        self
    }

    /// On SIGHUP, reopen every output, for logrotate's `create` mode with
    /// `postrotate kill -HUP <pid>` (default off): what was logged before the signal
    /// is written and synced into the files open then (the rotated ones), then each
    /// file sink reopens its path, as [`Guard::reopen`] does. The signal handler only
    /// sets a flag and wakes the listener. Until the logger stops; after that SIGHUP
    /// is ignored (signal-hook keeps its handler), not the default, which would end
    /// the process. A forked child ignores it too.
    ///
    /// Without it, a file renamed away or deleted is still noticed within 10 ms of
    /// the next record and reopened (see [`Sink::detached`]); the signal makes the
    /// switch happen at a known point.
    ///
    /// ```no_run
    /// let guard = quelog::Builder::new()
    ///     .file("/var/log/app/app.log")
    ///     .reopen_on_sighup(true)
    ///     .install()?;
    /// # Ok::<(), quelog::Error>(())
    /// ```
    pub fn reopen_on_sighup(mut self, on: bool) -> Builder {
        self.reopen_on_sighup = on;
        self
    }

    /// With [`Builder::install`]: a panic hook, chained before the previous one, logs
    /// the panic as an error (target `panic`) and flushes, at most the shutdown
    /// timeout, before the thread unwinds or the process aborts. Default on. It costs
    /// a record and a durable flush per panic while the logger runs; after a stop it
    /// passes panics straight on.
    pub fn flush_on_panic(mut self, on: bool) -> Builder {
        self.flush_on_panic = on;
        self
    }

    /// With [`Builder::install`]: also set quelog as the global default tracing
    /// subscriber (default on with the `tracing` feature). Off: tracing is left alone,
    /// for programs that set their own subscriber (with quelog's `Layer`, say).
    pub fn tracing(mut self, on: bool) -> Builder {
        self.tracing = on && cfg!(feature = "tracing");
        self
    }

    /// The longest anything waits for the listener (default 5 seconds;
    /// `Duration::MAX`: no limit): dropping the [`Guard`], [`Guard::stop`],
    /// [`shutdown`], SIGTERM and SIGINT with [`Builder::handle_termination`], a
    /// [`Guard::flush`] without a timeout, and the panic hook's flush. A stop that runs
    /// out of time (a sink that never returns: a pipe nobody reads, a hung mount)
    /// abandons what the listener holds and what is still queued, counts it in
    /// [`Stats::abandoned`] and says so on standard error, so the process can still
    /// exit.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Builder {
        self.listener.shutdown_timeout = timeout;
        self
    }

    /// Builds the queue and starts its listener without installing anything globally:
    /// log through the returned handler (it implements [`log::Log`]), and with the
    /// `tracing` feature get the subscriber for the same queue from
    /// `QueueHandler::tracing_subscriber` to set it yourself.
    pub fn build(self) -> Result<(QueueHandler, QueueListener), Error> {
        let has_stderr = self.sinks.iter().any(Output::is_stderr);
        let (filter, warning) = filter_config::resolve(
            self.filter.as_deref(),
            self.queue.level,
            self.env_var.as_deref(),
            has_stderr,
        )?;
        // Sinks without a level of their own take every record the filter passes.
        let level = filter.max();
        let handler = QueueHandler {
            shared: std::sync::Arc::new(queue::Shared::with_filter(&self.queue, filter, warning)?),
        };
        if self.sinks.is_empty() {
            return Err(Error::InvalidConfig(
                "no sink: add .output(..), .file(path), .stderr(level) or .sink(..)".into(),
            ));
        }
        let mut listener =
            QueueListener::start_outputs_at(&handler, self.sinks, level, self.listener)?;
        if self.reopen_on_sighup {
            listener.reopen_on_sighup()?;
        }
        if self.drain_on_crash {
            crash::install(&handler.shared)?;
        }
        Ok((handler, listener))
    }

    /// Builds, starts the listener and installs the handler as the global `log`
    /// logger and (with the `tracing` feature, on by default) as the global default
    /// tracing subscriber (`TracingSubscriber`): both go to the same queue, each
    /// record once, no `LogTracer` needed. If the `log` logger is taken:
    /// [`Error::AlreadyInstalled`]; if a tracing subscriber is: [`Error::TracingAlreadySet`]
    /// (see [`Builder::tracing`]). Either way nothing is installed.
    pub fn install(self) -> Result<Guard, Error> {
        let (flush_on_panic, handle_termination) = (self.flush_on_panic, self.handle_termination);
        let tracing = self.tracing;
        let (handler, listener) = self.build()?;
        // `log`'s own check: the most verbose level any directive enables.
        let level = handler.level();
        let installed = global::install(handler, listener, tracing)?;
        log::set_max_level(level);
        if flush_on_panic {
            global::install_panic_hook();
        }
        if handle_termination {
            global::handle_termination()?;
        }
        Ok(Guard { installed })
    }
}

/// Keeps the global logger's listener running. Dropping it drains the queue, syncs
/// and joins the listener; log calls after that go to standard error (counted as
/// [`Dropped::after_stop`]). [`shutdown`] does the same from anywhere.
///
/// `std::process::exit` runs no destructors: call [`shutdown`] (or [`Guard::flush`])
/// before it, or what is still in the queue is lost.
#[must_use = "dropping the guard stops the logger"]
#[derive(Debug)]
pub struct Guard {
    installed: &'static global::Installed,
}

impl Guard {
    /// A durable barrier: returns `Ok` once every record logged before the call is
    /// written and synced; otherwise the error that prevented it, or
    /// [`Error::Dropped`] when records logged before it (since the previous barrier)
    /// were dropped. Waits at most the shutdown timeout ([`Error::Timeout`]); never
    /// hangs if the listener died.
    ///
    /// Threads that flush at the same time share syncs (group commit): the listener
    /// answers every barrier its last sync covers. A write or sync failure is the
    /// answer of every barrier waiting when it happens and of the barriers answered
    /// next, even if the listener rewrote and synced the records again (see
    /// "Durability" in the crate docs).
    ///
    /// In a child forked after install, records were written when logged: this syncs
    /// the file and returns (see "fork" in the crate docs).
    pub fn flush(&self) -> Result<(), Error> {
        self.installed.handler.shared.flush_barrier(None)
    }

    /// [`Guard::flush`] that gives up with [`Error::Timeout`] after `timeout`.
    pub fn flush_timeout(&self, timeout: Duration) -> Result<(), Error> {
        self.installed.handler.shared.flush_barrier(Some(timeout))
    }

    /// Reopens every output (for files: their path, after logrotate or another
    /// program moved them away) and returns once done: everything logged before the
    /// call is first written and synced into the files open now, then each sink
    /// reopens. Records logged meanwhile land in the old or the new file, each once.
    /// Waits at most the shutdown timeout ([`Error::Timeout`]). A sink that cannot
    /// reopen keeps writing where it did, says so in its file, and makes this an
    /// [`Error::Sink`]. SIGHUP can ask for the same: [`Builder::reopen_on_sighup`].
    ///
    /// In a child forked after install there is no listener to ask:
    /// [`Error::ListenerStopped`] (the child writes to the descriptor it inherited).
    pub fn reopen(&self) -> Result<(), Error> {
        self.installed.handler.shared.reopen_barrier(None)
    }

    /// The queue's counters.
    pub fn stats(&self) -> Stats {
        self.installed.handler.stats()
    }

    /// Stops the logger now and returns the final counters (what dropping does,
    /// with the result): [`Error::Timeout`] if the listener did not finish within the
    /// shutdown timeout (what it abandoned is in the counters, which [`shutdown`] then
    /// returns). After [`shutdown`], the same counters again.
    pub fn stop(self) -> Result<Stats, Error> {
        global::stop(self.installed)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = global::stop(self.installed);
    }
}
