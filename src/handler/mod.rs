//! Capture on the caller: [`QueueHandler`], the producer path.
//!
//! Everything here may run inside a signal handler, a `Drop` during unwinding, a
//! thread-local destructor, the `Display` of another log call's argument on the same
//! thread, or on the listener thread. So, per `../shared/DESIGN.md`:
//!
//! 1. no lock, no allocation, no `thread::current()`, no lazily initialised
//!    thread-local, no panic;
//! 2. bounded steps: a record that cannot be placed is dropped and counted;
//! 3. only async-signal-safe system calls (`clock_gettime`, `gettid` once per thread,
//!    `write(2)` to wake a sleeping listener or, after a stop, `poll(2)` and `writev(2)`
//!    to standard error; in a
//!    forked child, `write(2)` of the line to the log file, see [`crate::fork`]; in
//!    Block mode, `futex(2)` to wait for room, see [`crate::wake::Room`]).

pub(crate) mod capture;
pub(crate) mod clock;
mod kv;
pub(crate) mod message;
pub(crate) mod raw;
// Without the tracing subscriber nothing enters spans; `log` records still look.
#[cfg_attr(not(feature = "tracing"), allow(dead_code))]
pub(crate) mod span_stack;

use std::cell::Cell;
use std::sync::Arc;

use log::{LevelFilter, Metadata, Record};

use crate::error::Error;
use crate::queue::{QueueConfig, Shared};
use crate::record;
use crate::stats::Stats;

/// Longest target, module path or file name stored; longer ones are cut.
const MAX_NAME_BYTES: usize = 512;

/// Per-thread state of the producer path: const-initialised and without a destructor,
/// so reading it never allocates, never registers a destructor, and works inside
/// signal handlers and other thread-locals' destructors.
struct ThreadContext {
    /// Log calls running on this thread right now (more than 1: nested).
    depth: Cell<u32>,
    /// Cached kernel thread id; 0 until first used.
    thread_id: Cell<u32>,
    /// This is a listener thread.
    is_listener: Cell<bool>,
}

thread_local! {
    static CONTEXT: ThreadContext = const {
        ThreadContext {
            depth: Cell::new(0),
            thread_id: Cell::new(0),
            is_listener: Cell::new(false),
        }
    };
}

/// What the producer path knows about the calling thread.
struct Caller {
    thread_id: u32,
    /// Another log call is running on this thread (we interrupted or were called by it).
    nested: bool,
    is_listener: bool,
}

/// Marks entry into the producer path; leaving it (drop) undoes the depth count.
struct Entered(Caller);

impl Entered {
    fn new() -> Entered {
        let caller = CONTEXT
            .try_with(|ctx| {
                let depth = ctx.depth.get();
                ctx.depth.set(depth.saturating_add(1));
                let mut thread_id = ctx.thread_id.get();
                if thread_id == 0 {
                    thread_id = gettid();
                    ctx.thread_id.set(thread_id);
                }
                Caller {
                    thread_id,
                    nested: depth > 0,
                    is_listener: ctx.is_listener.get(),
                }
            })
            // Cannot happen for a destructor-less const thread-local; if it did,
            // assume the worst: never wait.
            // (`unwrap_or_else`: an eager `unwrap_or` would make the gettid system
            // call on every log call.)
            .unwrap_or_else(|_| Caller {
                thread_id: gettid(),
                nested: true,
                is_listener: false,
            });
        Entered(caller)
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        let _ = CONTEXT.try_with(|ctx| ctx.depth.set(ctx.depth.get().saturating_sub(1)));
    }
}

fn gettid() -> u32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

/// The `pthread_atfork` child handler's part: the one thread a forked child has is a
/// new kernel thread (its cached id is the parent's thread's) and serves no listener.
/// Async-signal-safe (a const thread-local without destructor).
pub(crate) fn forget_thread_after_fork() {
    let _ = CONTEXT.try_with(|ctx| {
        ctx.thread_id.set(0);
        ctx.is_listener.set(false);
    });
}

/// Marks the calling thread as a listener: its log calls never wait.
pub(crate) fn mark_listener_thread() {
    let _ = CONTEXT.try_with(|ctx| ctx.is_listener.set(true));
}

/// Whether the calling thread is a listener. Async-signal-safe (a const thread-local
/// without destructor).
pub(crate) fn on_listener_thread() -> bool {
    CONTEXT
        .try_with(|ctx| ctx.is_listener.get())
        .unwrap_or(false)
}

/// Whether a blocking call made here could wait for this very thread: inside a log
/// call or on a listener thread.
pub(crate) fn waiting_here_could_deadlock() -> bool {
    CONTEXT
        .try_with(|ctx| ctx.depth.get() > 0 || ctx.is_listener.get())
        .unwrap_or(true)
}

/// Wall-clock time in nanoseconds since the Unix epoch; 0 if the clock fails.
fn now_nanos() -> u64 {
    clock_nanos(libc::CLOCK_REALTIME)
}

/// Nanoseconds on `clock`; 0 if it fails. Async-signal-safe (`clock_gettime`), so the
/// crash handler uses it too.
pub(crate) fn clock_nanos(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into a live local; async-signal-safe.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// The longest prefix of `text` of at most `max` bytes that ends on a char boundary.
pub(crate) fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

/// The producer side of a queue: implements [`log::Log`], so it can be the global
/// logger, and is cheap to clone into as many places as you like.
///
/// [`log::Log::log`] on it is wait-free, lock-free and allocation-free (see the crate
/// docs for the exact contract). [`crate::Builder::install`] sets one up as the global
/// logger; build one yourself with [`QueueHandler::new`] to wire several queues.
///
/// ```
/// use quelog::{QueueConfig, QueueHandler};
/// use log::Log;
///
/// let handler = QueueHandler::new(&QueueConfig::default())?;
/// handler.log(&log::Record::builder().args(format_args!("queued, not yet written")).build());
/// // No listener yet: the record waits in the ring for one.
/// # Ok::<(), quelog::Error>(())
/// ```
#[derive(Clone)]
pub struct QueueHandler {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for QueueHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueHandler")
            .field("level", &self.shared.level)
            .field("slots", &self.shared.ring.slots())
            .finish_non_exhaustive()
    }
}

impl QueueHandler {
    /// A new queue. Nothing is written until a [`crate::QueueListener`] serves it;
    /// records logged before that wait in the ring (or are dropped and counted once it
    /// is full).
    pub fn new(config: &QueueConfig) -> Result<QueueHandler, Error> {
        Ok(QueueHandler {
            shared: Arc::new(Shared::new(config)?),
        })
    }

    /// The counters of this queue.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// The level above which records are ignored: with a filter, the most verbose
    /// level any of its directives enables.
    pub fn level(&self) -> LevelFilter {
        self.shared.level
    }

    /// A forked child's producer path: formats the record and writes it straight to
    /// the log file, one `write(2)` (see [`crate::fork`]).
    fn write_direct(&self, record: &Record<'_>) {
        let entered = Entered::new();
        let timestamp_nanos = now_nanos();
        let target = clip(record.target(), MAX_NAME_BYTES);
        crate::fork::write_record(
            &self.shared,
            record,
            target,
            entered.0.thread_id,
            timestamp_nanos,
        );
    }

    /// Queues one `log` record: the whole producer path (see [`capture`]).
    fn enqueue(&self, record: &Record<'_>) {
        let what = capture::Capture {
            level: record.level(),
            kind: record::Kind::Event,
            target: record.target(),
            module: record.module_path(),
            file: record.file(),
            line: record.line(),
            raw: None,
        };
        self.push(
            &what,
            |message| message.format(record.args()),
            |fields| {
                if let Some(span) = span_stack::current() {
                    fields.span_context(span);
                }
                kv::encode(record, fields);
            },
        );
    }
}

/// After a stop there is no listener: write the record straight to standard error,
/// one `writev(2)`, no formatting machinery, and only if standard error can take it
/// without blocking (a pipe nobody reads must not stop the caller).
fn write_after_stop(level: log::Level, target: &str, message: &[u8]) {
    let level = level.as_str().as_bytes();
    crate::sink::write_stderr_if_ready(&[
        b"quelog (stopped) ",
        level,
        b" ",
        target.as_bytes(),
        b": ",
        message,
        b"\n",
    ]);
}

impl log::Log for QueueHandler {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        if self.answer_probe(metadata.target()) {
            return true;
        }
        // The level first (a plain compare); the target table only for a record at a
        // level some directive enables.
        metadata.level() <= self.shared.level
            && self
                .shared
                .filter
                .enabled(metadata.level(), metadata.target())
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // One relaxed load of a static only a fork changes: free on the fast path. A
        // stopped logger stays stopped in a child: `enqueue` finds the ring closed.
        if crate::fork::forked(&self.shared) && !self.shared.ring.is_closed() {
            self.write_direct(record);
        } else {
            self.enqueue(record);
        }
    }

    /// A durable flush, bounded by the shutdown timeout; does nothing where waiting
    /// could deadlock (inside a log call, on the listener thread). Use
    /// [`crate::Guard::flush`] to see errors.
    fn flush(&self) {
        let _ = self.shared.flush_barrier(None);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::queue::Overflow;
    use crate::ring::Pop;
    use log::Log;
    use std::time::{Duration, Instant};

    fn handler(capacity: usize) -> QueueHandler {
        QueueHandler::new(&QueueConfig {
            capacity,
            ..QueueConfig::default()
        })
        .unwrap()
    }

    fn log_at(handler: &QueueHandler, level: log::Level, args: std::fmt::Arguments<'_>) {
        handler.log(
            &Record::builder()
                .level(level)
                .target("test::target")
                .module_path(Some("test::target"))
                .file(Some("src/x.rs"))
                .line(Some(12))
                .args(args)
                .build(),
        );
    }

    #[test]
    fn captures_every_field() {
        let handler = handler(4096);
        log_at(&handler, log::Level::Info, format_args!("n={}", 5));
        let mut consumer = handler.shared.ring.take_consumer().unwrap();
        let mut out = Vec::new();
        assert_eq!(consumer.pop_into(&mut out), Pop::Record);
        let view = record::decode(&out).unwrap();
        assert_eq!(view.level, log::Level::Info);
        assert_eq!(view.target, "test::target");
        assert_eq!(view.module_path, Some("test::target"));
        assert_eq!(view.file, Some("src/x.rs"));
        assert_eq!(view.line, Some(12));
        assert_eq!(view.message, b"n=5");
        assert_eq!(view.thread_id, gettid());
        assert!(!view.nested);
        let now = now_nanos();
        assert!(view.timestamp_nanos <= now && now - view.timestamp_nanos < 60_000_000_000);
    }

    /// Takes every batch and keeps nothing.
    struct Discard;

    impl crate::Sink for Discard {
        fn write_batch(&mut self, _: &[u8]) -> std::io::Result<()> {
            Ok(())
        }
        fn sync(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_source_location_is_stored_only_while_some_output_prints_it() {
        use crate::{Format, ListenerConfig, Output, QueueListener};
        for (output, source) in [
            (Output::sink(Discard), false),
            (Output::sink(Discard).format(Format::Json), false),
            (
                Output::sink(Discard)
                    .format(Format::Json)
                    .source_location(true),
                true,
            ),
        ] {
            let handler = handler(4096);
            let listener =
                QueueListener::start_outputs(&handler, vec![output], ListenerConfig::default())
                    .unwrap();
            assert_eq!(
                handler
                    .shared
                    .capture_source
                    .load(std::sync::atomic::Ordering::Relaxed),
                source
            );
            listener.stop().unwrap();
        }
        let handler = handler(4096);
        handler
            .shared
            .capture_source
            .store(false, std::sync::atomic::Ordering::Relaxed);
        log_at(&handler, log::Level::Info, format_args!("n={}", 5));
        let mut consumer = handler.shared.ring.take_consumer().unwrap();
        let mut out = Vec::new();
        assert_eq!(consumer.pop_into(&mut out), Pop::Record);
        let view = record::decode(&out).unwrap();
        assert_eq!((view.file, view.line), (None, None));
        // The module path equals the target: one flag, no bytes.
        assert_eq!(view.module_path, Some("test::target"));
        assert_eq!(out.len(), record::HEADER_LEN + "test::target".len() + 3);
    }

    #[test]
    fn level_filter_applies_before_any_work() {
        let handler = QueueHandler::new(&QueueConfig {
            level: LevelFilter::Warn,
            ..QueueConfig::default()
        })
        .unwrap();
        log_at(&handler, log::Level::Info, format_args!("ignored"));
        assert_eq!(handler.shared.ring.tail(), 0);
    }

    #[test]
    fn full_ring_drops_and_counts() {
        let handler = handler(1024);
        for i in 0..100 {
            log_at(&handler, log::Level::Info, format_args!("record {i}"));
        }
        let stats = handler.stats();
        assert!(stats.dropped.queue_full > 0);
        let mut consumer = handler.shared.ring.take_consumer().unwrap();
        let mut queued = 0;
        while consumer.pop_into(&mut Vec::new()) == Pop::Record {
            queued += 1;
        }
        assert_eq!(queued + stats.dropped.queue_full, 100);
    }

    #[test]
    fn display_that_logs_is_marked_nested_and_both_arrive() {
        struct Loud<'a>(&'a QueueHandler);
        impl std::fmt::Display for Loud<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                log_at(self.0, log::Level::Warn, format_args!("inner"));
                f.write_str("outer-arg")
            }
        }
        let handler = handler(4096);
        log_at(
            &handler,
            log::Level::Info,
            format_args!("{}", Loud(&handler)),
        );
        let mut consumer = handler.shared.ring.take_consumer().unwrap();
        let mut out = Vec::new();
        assert_eq!(consumer.pop_into(&mut out), Pop::Record);
        let inner = record::decode(&out).unwrap();
        assert_eq!(inner.message, b"inner");
        assert!(inner.nested);
        assert_eq!(consumer.pop_into(&mut out), Pop::Record);
        let outer = record::decode(&out).unwrap();
        assert_eq!(outer.message, b"outer-arg");
        assert!(!outer.nested);
    }

    #[test]
    fn block_mode_never_waits_when_nested() {
        let handler = QueueHandler::new(&QueueConfig {
            capacity: 1024,
            overflow: Overflow::Block {
                timeout: Duration::from_secs(3600),
            },
            ..QueueConfig::default()
        })
        .unwrap();
        struct Flood<'a>(&'a QueueHandler);
        impl std::fmt::Display for Flood<'_> {
            fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                for _ in 0..100 {
                    log_at(self.0, log::Level::Info, format_args!("nested flood"));
                }
                Ok(())
            }
        }
        let start = Instant::now();
        // The outer call formats first, so the nested flood fills the ring; the nested
        // calls must drop, not wait an hour. The outer call may wait (it is an
        // ordinary call) until the drain below makes room.
        let mut consumer = handler.shared.ring.take_consumer().unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                log_at(
                    &handler,
                    log::Level::Info,
                    format_args!("{}", Flood(&handler)),
                )
            });
            // Drain slowly so the outer call eventually gets room.
            let mut seen = 0;
            while seen < 2 || !consumer.is_empty() {
                if consumer.pop_into(&mut Vec::new()) == Pop::Record {
                    seen += 1;
                }
                if start.elapsed() > Duration::from_secs(30) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        assert!(start.elapsed() < Duration::from_secs(30));
        assert!(handler.stats().dropped.queue_full > 0);
    }

    #[test]
    fn long_target_and_tiny_ring_still_fit() {
        let handler = handler(1024);
        let target = "t".repeat(5000);
        handler.log(
            &Record::builder()
                .target(&target)
                .file(Some(&"f".repeat(5000)))
                .args(format_args!("{}", "m".repeat(5000)))
                .build(),
        );
        let mut consumer = handler.shared.ring.take_consumer().unwrap();
        let mut out = Vec::new();
        assert_eq!(consumer.pop_into(&mut out), Pop::Record);
        let view = record::decode(&out).unwrap();
        assert!(view.truncated());
        assert!(view.target.len() <= MAX_NAME_BYTES);
        assert_eq!(handler.stats().truncated, 1);
    }

    #[test]
    fn clip_never_splits_a_character() {
        assert_eq!(clip("héllo", 2), "h");
        assert_eq!(clip("héllo", 3), "hé");
        assert_eq!(clip("abc", 10), "abc");
    }
}
