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
//!   per thread), `write(2)` to an eventfd when the listener sleeps and, after the
//!   listener stopped, `writev(2)` to standard error;
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
//! call, not the listener) may then sleep while the ring is full, up to the timeout.
//!
//! # Accounting
//!
//! Every record the handler accepts is either enqueued or dropped with a reason;
//! every enqueued record is written, filtered out by every sink's level, or lost with
//! the sink's error. After a clean stop:
//! `enqueued + dropped.total() == accepted` and `enqueued == written + filtered + lost`.
//!
//! # Durability
//!
//! [`SyncPolicy`] says when the listener syncs (`fdatasync`): every record, every
//! batch (group commit, the default), at an interval, or never. [`Guard::flush`] is a
//! barrier: it returns once everything logged before it is written and synced, or
//! with the error that prevented it.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]

mod error;
mod format;
#[doc(hidden)]
pub mod fuzzing;
mod handler;
mod listener;
mod queue;
mod record;
mod ring;
mod sink;
mod stats;
mod sync;
mod wake;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub use error::Error;
pub use format::Format;
pub use handler::QueueHandler;
pub use listener::{ListenerConfig, QueueListener, SyncPolicy};
pub use log::LevelFilter;
pub use queue::{Overflow, QueueConfig};
pub use record::{decode as decode_record, RecordView};
pub use sink::{FileSink, Sink, StderrSink};
pub use stats::{Dropped, Stats};

/// Where a configured sink writes, before it is opened.
enum SinkSpec {
    File(PathBuf, Option<LevelFilter>),
    Stderr(Option<LevelFilter>),
    Custom(Box<dyn Sink>, Option<LevelFilter>),
}

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
    sinks: Vec<SinkSpec>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// Defaults: 4 MiB ring, drop on overflow, level `Info`, group commit, UTC.
    pub fn new() -> Builder {
        Builder {
            queue: QueueConfig {
                level: LevelFilter::Info,
                ..QueueConfig::default()
            },
            listener: ListenerConfig::default(),
            sinks: Vec::new(),
        }
    }

    /// Appends to the file at `path` (created with its parent directories), at the
    /// global level.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Builder {
        self.sinks.push(SinkSpec::File(path.into(), None));
        self
    }

    /// Appends to the file at `path`, only records at `level` or more severe.
    pub fn file_with_level(mut self, path: impl Into<PathBuf>, level: LevelFilter) -> Builder {
        self.sinks.push(SinkSpec::File(path.into(), Some(level)));
        self
    }

    /// Also writes records at `level` or more severe to standard error.
    pub fn stderr(mut self, level: LevelFilter) -> Builder {
        self.sinks.push(SinkSpec::Stderr(Some(level)));
        self
    }

    /// Adds a sink of your own, with its level filter.
    pub fn sink(mut self, sink: impl Sink + 'static, level: LevelFilter) -> Builder {
        self.sinks
            .push(SinkSpec::Custom(Box::new(sink), Some(level)));
        self
    }

    /// When to sync (default [`SyncPolicy::EveryBatch`]).
    pub fn sync(mut self, policy: SyncPolicy) -> Builder {
        self.listener.sync = policy;
        self
    }

    /// Bytes of ring space (default 4 MiB; 1 KiB to 1 GiB, else an error at build).
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

    /// Builds the queue and starts its listener without installing anything globally:
    /// log through the returned handler (it implements [`log::Log`]).
    pub fn build(self) -> Result<(QueueHandler, QueueListener), Error> {
        let level = self.queue.level;
        let handler = QueueHandler::new(&self.queue)?;
        if self.sinks.is_empty() {
            return Err(Error::InvalidConfig(
                "no sink: add .file(path), .stderr(level) or .sink(..)".into(),
            ));
        }
        let mut sinks: Vec<(Box<dyn Sink>, LevelFilter)> = Vec::new();
        for spec in self.sinks {
            sinks.push(match spec {
                SinkSpec::File(path, sink_level) => {
                    (Box::new(FileSink::open(path)?), sink_level.unwrap_or(level))
                }
                SinkSpec::Stderr(sink_level) => {
                    (Box::new(StderrSink::new()), sink_level.unwrap_or(level))
                }
                SinkSpec::Custom(sink, sink_level) => (sink, sink_level.unwrap_or(level)),
            });
        }
        let listener = QueueListener::start(&handler, sinks, self.listener)?;
        Ok((handler, listener))
    }

    /// Builds, starts the listener and installs the handler as the global `log`
    /// logger. A second install in one process is [`Error::AlreadyInstalled`].
    pub fn install(self) -> Result<Guard, Error> {
        let level = self.queue.level;
        let (handler, listener) = self.build()?;
        if log::set_boxed_logger(Box::new(handler)).is_err() {
            // Nothing was logged through it; stopping drains an empty ring.
            let _ = listener.stop();
            return Err(Error::AlreadyInstalled);
        }
        log::set_max_level(level);
        Ok(Guard {
            listener: Some(listener),
        })
    }
}

/// Keeps the global logger's listener running. Dropping it drains the queue, syncs
/// and joins the listener; log calls after that go to standard error (counted as
/// [`Dropped::after_stop`]).
#[must_use = "dropping the guard stops the logger"]
#[derive(Debug)]
pub struct Guard {
    listener: Option<QueueListener>,
}

impl Guard {
    /// A durable barrier: returns once every record logged before the call is written
    /// and synced, or the error that prevented it. Never hangs if the listener died.
    pub fn flush(&self) -> Result<(), Error> {
        self.listener
            .as_ref()
            .map_or(Err(Error::ListenerStopped), QueueListener::flush)
    }

    /// [`Guard::flush`] that gives up with [`Error::Timeout`] after `timeout`.
    pub fn flush_timeout(&self, timeout: Duration) -> Result<(), Error> {
        self.listener
            .as_ref()
            .map_or(Err(Error::ListenerStopped), |l| l.flush_timeout(timeout))
    }

    /// The queue's counters.
    pub fn stats(&self) -> Stats {
        self.listener
            .as_ref()
            .map(QueueListener::stats)
            .unwrap_or_default()
    }

    /// Stops the logger now and returns the final counters (what dropping does,
    /// with the result).
    pub fn stop(mut self) -> Result<Stats, Error> {
        self.stop_in_place()
    }

    fn stop_in_place(&mut self) -> Result<Stats, Error> {
        let Some(mut listener) = self.listener.take() else {
            return Err(Error::ListenerStopped);
        };
        listener
            .handler()
            .shared
            .closed
            .store(true, Ordering::Relaxed);
        listener.stop_in_place()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.stop_in_place();
    }
}
