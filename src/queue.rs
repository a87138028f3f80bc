//! What a handler and its listener share: the ring, the counters, the wake-up and the
//! control channel. The record path is the ring; crossbeam-channel carries only
//! control messages (flush barriers, reopen, stop), where blocking is fine.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::LevelFilter;

use crate::error::Error;
use crate::handler::message::ScratchPool;
use crate::ring::{Ring, MAX_SLOTS, MIN_SLOTS, SLOT_BYTES};
use crate::stats::Counters;
use crate::wake::Waker;

/// What a producer does when the ring has no room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Drop the record and count it (the default). Never waits.
    #[default]
    Drop,
    /// An ordinary thread waits for room, up to `timeout`, then drops and counts.
    /// It spins for a few microseconds, then sleeps on a futex the listener signals
    /// as it frees slots (never a timed sleep-and-poll), so it resumes as soon as
    /// there is room. It does not wait while no listener runs (before one starts,
    /// after it stopped or died), and a stop wakes every waiter.
    ///
    /// A signal handler that interrupted ordinary code waits like any caller (the
    /// futex, `clock_gettime` and the claim are async-signal-safe), bounded by
    /// `timeout`: keep it short if handlers log. A thread already inside a log call (a signal handler or `Drop` that interrupted
    /// one, a `Display` that logs) and the listener thread never wait, whatever this
    /// says: they could be waiting for their own thread's unfinished record.
    Block {
        /// The longest one call waits.
        timeout: Duration,
    },
}

/// Settings of one queue (the handler side). [`crate::Builder`] fills these for you; to
/// set them by hand, start from the default:
///
/// ```
/// let mut config = quelog::QueueConfig::default();
/// config.capacity = 1 << 20;
/// let handler = quelog::QueueHandler::new(&config)?;
/// # Ok::<(), quelog::Error>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct QueueConfig {
    /// Bytes of record space in the ring, rounded up to a power of two of 64-byte
    /// slots. From 1 KiB to 1 GiB; default 32 MiB.
    ///
    /// Why 32 MiB: a caller logs in about 120 ns, faster than any listener writes a
    /// file, so a burst is kept whole only if the ring holds most of it. A record of a
    /// short message takes two slots (128 bytes), so 32 MiB holds 262,144 of them:
    /// a 200,000-record burst from one thread, and twice tracing-appender's default
    /// channel of 128,000 lines. The memory is what it says, and no more up front: the
    /// slot bytes are fresh zero pages, resident once a record first reaches them
    /// (RSS grows to the capacity once that much has been logged, then stays); the
    /// stamps (an eighth of it, 4 MiB) are written at start. Besides the ring, the
    /// listener holds the lines written since the last sync, up to 1 MiB under load
    /// (for the fsyncgate rewrite), and a batch being formatted.
    pub capacity: usize,
    /// What producers do when the ring is full.
    pub overflow: Overflow,
    /// Records above this level are ignored before any work is done. With
    /// [`crate::Builder::filter`] (or `RUST_LOG`), the filter decides instead.
    pub level: LevelFilter,
    /// The most message bytes one record carries; longer messages are cut with a
    /// visible marker and counted. From 64 bytes to 16 MiB; default 64 KiB. Also
    /// capped at half the ring.
    pub max_record: usize,
    /// Preallocated buffers for formatting messages longer than 512 bytes, each of
    /// `max_record` bytes: how many threads may format a long message at once before
    /// further long messages are cut. Up to 64; default 4.
    pub scratch_buffers: usize,
    /// The share of the ring only `Warn` and `Error` records may use, so a flood of
    /// `Info`, `Debug` or `Trace` can never take the last room from an error. From 0.0
    /// to 0.5; default 0.125 (1/8).
    pub severity_reserve: f64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            capacity: 32 << 20,
            overflow: Overflow::Drop,
            level: LevelFilter::Trace,
            max_record: 64 << 10,
            scratch_buffers: 4,
            severity_reserve: 0.125,
        }
    }
}

impl QueueConfig {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let (min, max) = (MIN_SLOTS * SLOT_BYTES, MAX_SLOTS * SLOT_BYTES);
        if !(min..=max).contains(&self.capacity) {
            return Err(Error::InvalidConfig(format!(
                "capacity {} bytes is outside {min}..={max}",
                self.capacity
            )));
        }
        if !(64..=16 << 20).contains(&self.max_record) {
            return Err(Error::InvalidConfig(format!(
                "max_record {} bytes is outside 64..=16777216",
                self.max_record
            )));
        }
        if !(0.0..=0.5).contains(&self.severity_reserve) {
            return Err(Error::InvalidConfig(format!(
                "severity_reserve {} is outside 0.0..=0.5",
                self.severity_reserve
            )));
        }
        if self.scratch_buffers > 64 {
            return Err(Error::InvalidConfig(format!(
                "scratch_buffers {} is more than 64",
                self.scratch_buffers
            )));
        }
        Ok(())
    }
}

/// Requests to the listener. Never sent from the record path.
pub(crate) enum Control {
    /// Write and sync everything before ring position `upto`, then answer.
    /// Barriers that are answered together share one sync (group commit).
    Flush {
        upto: u64,
        /// The drop counters when the barrier was asked for.
        dropped: crate::stats::Dropped,
        ack: Sender<Result<(), Error>>,
    },
    /// Write and sync everything before ring position `upto` to the files open now,
    /// then reopen every sink, then answer.
    Reopen {
        upto: u64,
        ack: Sender<Result<(), Error>>,
    },
    /// Drain, sync and exit.
    Stop,
}

/// The state a handler and its listener share.
pub(crate) struct Shared {
    pub(crate) ring: Ring,
    pub(crate) scratch: ScratchPool,
    pub(crate) waker: Waker,
    /// Where Block-mode callers wait for the listener to free slots.
    pub(crate) room: crate::wake::Room,
    pub(crate) counters: Counters,
    /// The most verbose level the filter enables: the fast check before it.
    pub(crate) level: LevelFilter,
    /// Which targets log at which level, compiled at build; immutable.
    pub(crate) filter: crate::filter::Filter,
    /// A line for the listener to write first to every sink (a malformed `RUST_LOG`).
    pub(crate) startup_warning: Option<String>,
    pub(crate) overflow: Overflow,
    pub(crate) max_message: usize,
    /// Slots that records below `Warn` must leave free (the severity reserve).
    pub(crate) reserve_slots: usize,
    /// The raw descriptor of the file a fatal-signal drain writes to (-1: none), kept
    /// current by the listener while it holds the ring's consuming token. A forked
    /// child writes its records there too ([`crate::fork`]).
    pub(crate) crash_fd: AtomicI32,
    /// The level filter of that file's sink, as `LevelFilter as usize`.
    pub(crate) crash_level: AtomicUsize,
    /// The fork generation this queue was created in: a different current generation
    /// means this process is a forked child of the one that created it
    /// ([`crate::fork::forked`]).
    pub(crate) generation: u64,
    /// Records a forked child failed to write since its last flush, for that flush to
    /// report; and the `errno` of the last such failure.
    pub(crate) direct_lost: AtomicU64,
    pub(crate) direct_errno: AtomicI32,
    /// A listener thread is serving this queue.
    pub(crate) listener_running: AtomicBool,
    /// Some output prints the source file and line: the producer stores them (and
    /// the module path). True until a listener starts with outputs that do not.
    pub(crate) capture_source: AtomicBool,
    /// The tracing subscriber's span ids.
    pub(crate) spans: crate::spans::SpanTable,
    /// Records of the batch the listener is writing right now, not yet counted as
    /// written or lost: a stop that runs out of time takes them as abandoned (whoever
    /// swaps it to zero first counts them).
    pub(crate) in_flight: AtomicU64,
    /// A reopen was asked for by a signal handler (SIGHUP with
    /// [`crate::Builder::reopen_on_sighup`]): set there, with a wake-up, and taken by
    /// the listener, which serves it as a [`Control::Reopen`] without an answer.
    pub(crate) reopen_requested: AtomicBool,
    /// The listener's [`crate::ListenerConfig::shutdown_timeout`] in nanoseconds
    /// (`u64::MAX`: none), for waits on the handler side.
    shutdown_timeout_nanos: AtomicU64,
    pub(crate) control_tx: Sender<Control>,
    pub(crate) control_rx: Receiver<Control>,
}

impl Shared {
    pub(crate) fn new(config: &QueueConfig) -> Result<Shared, Error> {
        Shared::with_filter(config, crate::filter::Filter::level(config.level), None)
    }

    /// A queue whose records pass `filter` (which replaces `config.level`), and whose
    /// listener writes `startup_warning` first.
    pub(crate) fn with_filter(
        config: &QueueConfig,
        filter: crate::filter::Filter,
        startup_warning: Option<String>,
    ) -> Result<Shared, Error> {
        config.validate()?;
        crate::handler::clock::init();
        let ring = Ring::with_slots(config.capacity.div_ceil(SLOT_BYTES));
        let max_message = config.max_record.min(ring.max_payload());
        let reserve_slots = (ring.slots() as f64 * config.severity_reserve) as usize;
        let (control_tx, control_rx) = crossbeam_channel::unbounded();
        let generation = crate::fork::generation()?;
        Ok(Shared {
            ring,
            scratch: ScratchPool::new(config.scratch_buffers, max_message),
            waker: Waker::new().map_err(|e| Error::InvalidConfig(format!("eventfd: {e}")))?,
            room: crate::wake::Room::default(),
            counters: Counters::default(),
            level: filter.max(),
            filter,
            startup_warning,
            overflow: config.overflow,
            max_message,
            reserve_slots,
            crash_fd: AtomicI32::new(-1),
            crash_level: AtomicUsize::new(LevelFilter::Off as usize),
            generation,
            direct_lost: AtomicU64::new(0),
            direct_errno: AtomicI32::new(0),
            listener_running: AtomicBool::new(false),
            capture_source: AtomicBool::new(true),
            spans: crate::spans::SpanTable::with_capacity(crate::spans::DEFAULT_CAPACITY),
            in_flight: AtomicU64::new(0),
            reopen_requested: AtomicBool::new(false),
            shutdown_timeout_nanos: AtomicU64::new(
                crate::listener::DEFAULT_SHUTDOWN_TIMEOUT.as_nanos() as u64,
            ),
            control_tx,
            control_rx,
        })
    }
}

impl Shared {
    pub(crate) fn set_shutdown_timeout(&self, timeout: Duration) {
        let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        self.shutdown_timeout_nanos.store(nanos, Ordering::Relaxed);
    }

    /// How long waits for the listener last at most; `None`: no limit.
    pub(crate) fn shutdown_timeout(&self) -> Option<Duration> {
        match self.shutdown_timeout_nanos.load(Ordering::Relaxed) {
            u64::MAX => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }
}

impl Shared {
    /// Asks the listener to write and sync everything queued before this call, and
    /// waits for the answer up to `timeout` (`None`: up to the shutdown timeout), never
    /// past the listener's death. The control plane: it may block, but never where
    /// waiting could be for this very thread.
    pub(crate) fn flush_barrier(&self, timeout: Option<Duration>) -> Result<(), Error> {
        if crate::fork::forked(self) {
            // No listener here, and every record was written synchronously: sync the
            // file, never wait.
            return crate::fork::flush(self);
        }
        self.listener_may_answer()?;
        let (ack, answer) = crossbeam_channel::bounded(1);
        let upto = self.ring.tail();
        let dropped = self.counters.dropped();
        self.request(Control::Flush { upto, dropped, ack }, &answer, timeout)
    }

    /// Asks the listener to write and sync everything queued before this call into
    /// the files it has open, then reopen every sink; waits for the answer as
    /// [`Shared::flush_barrier`] does. A forked child has no listener, nothing to ask:
    /// [`Error::ListenerStopped`].
    pub(crate) fn reopen_barrier(&self, timeout: Option<Duration>) -> Result<(), Error> {
        if crate::fork::forked(self) {
            return Err(Error::ListenerStopped);
        }
        self.listener_may_answer()?;
        let (ack, answer) = crossbeam_channel::bounded(1);
        let upto = self.ring.tail();
        self.request(Control::Reopen { upto, ack }, &answer, timeout)
    }

    /// Whether this thread may wait for the listener's answer: not on the listener
    /// itself (or inside its sink, layout, ...: it would wait for itself), and not
    /// once the listener is gone.
    fn listener_may_answer(&self) -> Result<(), Error> {
        if crate::handler::waiting_here_could_deadlock() {
            return Err(Error::WouldDeadlock);
        }
        if !self.listener_running.load(Ordering::Acquire) {
            return Err(Error::ListenerStopped);
        }
        Ok(())
    }

    /// Sends `request` and waits for its `answer` up to `timeout` (`None`: up to the
    /// shutdown timeout), never past the listener's death.
    fn request(
        &self,
        request: Control,
        answer: &Receiver<Result<(), Error>>,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        self.control_tx
            .send(request)
            .map_err(|_| Error::ListenerStopped)?;
        self.waker.wake();
        let limit = timeout.or_else(|| self.shutdown_timeout());
        // A limit past the clock's range is no limit.
        let deadline = limit.and_then(|t| Instant::now().checked_add(t));
        loop {
            match answer.recv_timeout(Duration::from_millis(50)) {
                Ok(result) => return result,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return Err(Error::ListenerStopped)
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    if !self.listener_running.load(Ordering::Acquire) {
                        return Err(Error::ListenerStopped);
                    }
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(Error::Timeout);
                    }
                }
            }
        }
    }

    /// The SIGHUP action ([`crate::Builder::reopen_on_sighup`]): asks for a reopen and
    /// wakes the listener. Async-signal-safe: an atomic store and a `write(2)`.
    pub(crate) fn request_reopen_from_signal(&self) {
        self.reopen_requested.store(true, Ordering::SeqCst);
        self.waker.wake();
    }
}

impl Shared {
    /// The queue's counters, with the span table's own.
    pub(crate) fn stats(&self) -> crate::stats::Stats {
        let mut stats = self.counters.snapshot();
        stats.spans.leaked = self.spans.leaked();
        stats
    }
}
