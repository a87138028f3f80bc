//! Drain, batch and durability: [`QueueListener`], the one background thread of a
//! queue. Its rooms, in the order a record passes through them:
//!
//! * [`drive`]: the loop. Takes records off the ring in batches, routes each to the
//!   sinks whose level accepts it (formatted once per distinct layout), sleeps on the
//!   queue's eventfd when there is nothing to do, and ends a stop.
//! * [`outputs`]: per-sink state, owned by the sink's slot: its buffer, its backoff
//!   after a failure, the bytes kept since its last good sync, what it lost and what it
//!   has not been told yet.
//! * [`durability`]: the sync policy, flush barriers and their answers (group commit),
//!   and the fsyncgate rewrite after a failed sync.
//! * [`reopen`]: following files other programs move: reopen requests (SIGHUP too),
//!   and files found deleted or renamed away under a sink.
//! * [`notice`]: the lines quelog writes about itself (drops, losses).
//!
//! It is born with every asynchronous signal blocked, so no signal handler (that might
//! log) ever runs on it. When it has something to say about itself it writes the line
//! into the sinks' buffers directly, never through its own queue. Control requests
//! (flush barriers, reopen, stop) come over a crossbeam channel.
//!
//! # Failures
//!
//! * Every sink call runs under `catch_unwind`: a sink that panics fails that call
//!   (counted in [`Stats::sink_panics`]) and the other sinks are served as usual.
//! * A failed write (disk full) loses that batch for that sink: counted in
//!   [`Stats::lost`], and the sink is left alone with exponential backoff (10 ms
//!   doubling to 1 s; records meanwhile are lost to it too). The first write that
//!   succeeds again starts with one line `quelog: N records lost (reason)`, and with
//!   any drop notice the sink missed meanwhile.
//! * A failed sync (fsyncgate): the listener keeps every byte written to a sink since
//!   its last good sync (up to `MAX_KEPT_BYTES`, 2 MiB); after a failure it calls
//!   [`Sink::prepare_rewrite`] (reopen; [`crate::FileSink`] also cuts back to the last
//!   good sync), rewrites them, and syncs again ([`Stats::sync_rewrites`], and a line
//!   `quelog: sync failed (reason); rewrote ...`). If that fails too, those records
//!   are counted lost.
//! * Each failure is the answer of every flush barrier pending when it happened and of
//!   the barriers answered next; a failed sync is reported even when the rewrite
//!   succeeded (the message says so). Once answered, a failure is not repeated.
//! * A barrier that has no sink failure to report still fails when records logged
//!   before it since the previous barrier were dropped ([`Error::Dropped`]).
//!
//! # Stopping
//!
//! A stop closes the ring first ([`crate::ring`]: every claim lands before or after
//! the close), so the listener's drain has a last record. A record whose producer
//! claimed it but was interrupted before publishing is waited for up to
//! [`ListenerConfig::stop_grace`]; then the records published behind it are written
//! anyway and the interrupted one is counted in [`Stats::abandoned`]. The stopping
//! thread waits at most [`ListenerConfig::shutdown_timeout`] for all of it: a sink that
//! never returns (a pipe nobody reads, a hung mount) is abandoned with what it holds
//! and what is still in the ring, counted and said on standard error.
//!
//! # The crash drain
//!
//! The listener holds the ring's consuming token (see [`crate::ring`]) while it takes
//! records and its writing bit until they are written. It publishes the descriptor of
//! its first file sink for the fatal-signal drain when it starts, after a reopen and
//! after a write that changed a sink's descriptor (a rotation),
//! and withdraws it before its sinks close; if a drain is still writing with it then,
//! the sinks are never closed (the process is about to end), so the descriptor number
//! cannot be reused under the drain.

mod drive;
mod durability;
mod notice;
mod outputs;
mod reopen;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::LevelFilter;

use crate::error::Error;
use crate::handler::QueueHandler;
use crate::output::Output;
use crate::queue::{Control, Shared};
use crate::sink::Sink;
use crate::stats::{Counters, Stats};
use outputs::SinkSlot;

pub(crate) use durability::reason;

/// When the listener makes written records durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// Write and sync each record on its own: slowest, smallest loss window.
    EveryRecord,
    /// Group commit: one sync each time the listener has written everything queued,
    /// however many records that is (the default). Under load that is many records,
    /// so the cost per record falls as the rate rises; while the ring never empties,
    /// one sync per 1 MiB written.
    #[default]
    EveryBatch,
    /// Sync at most once per interval, when something was written.
    Interval(Duration),
    /// Never sync in the background; only `flush()` and shutdown sync.
    Never,
}

/// Settings of a listener. [`crate::Builder`] fills these for you; to set them by
/// hand, start from the default:
///
/// ```
/// let mut config = quelog::ListenerConfig::default();
/// config.sync = quelog::SyncPolicy::Never;
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ListenerConfig {
    /// When to sync.
    pub sync: SyncPolicy,
    /// Timestamps in local time with an offset instead of UTC.
    pub local_time: bool,
    /// The most records taken off the ring before writing them out.
    pub max_batch: usize,
    /// How long a stop waits for records that are claimed but not yet published
    /// (their producer was interrupted) before writing what follows them without them.
    pub stop_grace: Duration,
    /// The longest anything waits for the listener: a stop (and so dropping the
    /// [`crate::Guard`], [`crate::shutdown`], SIGTERM with
    /// [`crate::Builder::handle_termination`]), a `flush()` without a timeout, and the
    /// panic hook's flush. Default 5 seconds; `Duration::MAX` means no limit.
    pub shutdown_timeout: Duration,
    #[cfg(feature = "test-hooks")]
    pub(crate) hooks: crate::test_hooks::ListenerHooks,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            sync: SyncPolicy::EveryBatch,
            local_time: false,
            max_batch: 4096,
            stop_grace: Duration::from_secs(2),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            #[cfg(feature = "test-hooks")]
            hooks: crate::test_hooks::ListenerHooks::default(),
        }
    }
}

/// [`ListenerConfig::shutdown_timeout`]'s default.
pub(crate) const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an abandoning stop waits for the listener to finish taking the batch it is
/// taking (an in-memory step) before it counts the ring without it.
const ABANDON_GRACE: Duration = Duration::from_millis(200);

/// The consumer of one queue: a thread that drains it into sinks.
///
/// ```
/// use log::{LevelFilter, Log};
/// use quelog::{ListenerConfig, QueueConfig, QueueHandler, QueueListener, StderrSink};
///
/// let handler = QueueHandler::new(&QueueConfig::default())?;
/// let listener = QueueListener::start(
///     &handler,
///     vec![(Box::new(StderrSink::new()), LevelFilter::Warn)],
///     ListenerConfig::default(),
/// )?;
/// handler.log(&log::Record::builder().level(log::Level::Warn).args(format_args!("hello")).build());
/// let stats = listener.stop()?;
/// assert_eq!(stats.written, 1);
/// # Ok::<(), quelog::Error>(())
/// ```
#[derive(Debug)]
pub struct QueueListener {
    handler: QueueHandler,
    thread: Option<JoinHandle<()>>,
    shutdown_timeout: Duration,
    /// The SIGHUP action asking this listener to reopen, unregistered at the stop.
    sighup: Option<signal_hook::SigId>,
}

impl QueueListener {
    /// Starts the listener thread for `handler`'s queue, writing to `sinks`, each with
    /// its own level filter (a record goes to every sink whose filter accepts it).
    ///
    /// Fails with [`Error::AlreadyListening`] if the queue has a listener already, and
    /// with [`Error::ListenerStopped`] if the queue was stopped (a stop is final).
    pub fn start(
        handler: &QueueHandler,
        sinks: Vec<(Box<dyn Sink>, LevelFilter)>,
        config: ListenerConfig,
    ) -> Result<QueueListener, Error> {
        let layout = crate::layout::LayoutSpec::Text {
            local_time: config.local_time,
        };
        let slots = sinks
            .into_iter()
            .map(|(sink, level)| SinkSlot::new(sink, level, layout))
            .collect();
        QueueListener::start_slots(handler, slots, config)
    }

    /// [`QueueListener::start`] with [`Output`]s: each opened (a file that cannot be
    /// opened is the error), with its own format and level (without one: every record
    /// the queue takes).
    ///
    /// ```
    /// use quelog::{Format, ListenerConfig, Output, QueueConfig, QueueHandler, QueueListener};
    ///
    /// let handler = QueueHandler::new(&QueueConfig::default())?;
    /// let listener = QueueListener::start_outputs(
    ///     &handler,
    ///     vec![Output::stderr().format(Format::Json)],
    ///     ListenerConfig::default(),
    /// )?;
    /// listener.stop()?;
    /// # Ok::<(), quelog::Error>(())
    /// ```
    pub fn start_outputs(
        handler: &QueueHandler,
        outputs: Vec<Output>,
        config: ListenerConfig,
    ) -> Result<QueueListener, Error> {
        QueueListener::start_outputs_at(handler, outputs, LevelFilter::Trace, config)
    }

    /// [`QueueListener::start_outputs`], `default_level` for outputs without a level.
    pub(crate) fn start_outputs_at(
        handler: &QueueHandler,
        outputs: Vec<Output>,
        default_level: LevelFilter,
        config: ListenerConfig,
    ) -> Result<QueueListener, Error> {
        let counters = &handler.shared.counters;
        let slots = open_outputs(outputs, default_level, config.local_time, counters)?;
        QueueListener::start_slots(handler, slots, config)
    }

    /// Starts the listener thread with sinks ready to be served.
    fn start_slots(
        handler: &QueueHandler,
        slots: Vec<SinkSlot>,
        config: ListenerConfig,
    ) -> Result<QueueListener, Error> {
        let shared = Arc::clone(&handler.shared);
        if shared.ring.is_closed() {
            return Err(Error::ListenerStopped);
        }
        if shared
            .listener_running
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(Error::AlreadyListening);
        }
        shared.set_shutdown_timeout(config.shutdown_timeout);
        let source = slots.iter().any(|slot| slot.layout.prints_source());
        shared.capture_source.store(source, Ordering::Relaxed);
        // No consumer runs on this ring now (the flag above), so the crash drain's
        // descriptor may be set without the consuming token; the sinks it names live
        // until the listener ends, which resets it.
        outputs::publish_crash_fd(&shared, &slots);
        let thread_shared = Arc::clone(&shared);
        let shutdown_timeout = config.shutdown_timeout;
        let spawned = with_signals_blocked(|| {
            std::thread::Builder::new()
                .name("quelog-listener".into())
                .spawn(move || drive::run(thread_shared, slots, config))
        });
        match spawned {
            Ok(thread) => Ok(QueueListener {
                handler: handler.clone(),
                thread: Some(thread),
                shutdown_timeout,
                sighup: None,
            }),
            Err(e) => {
                shared.crash_fd.store(-1, Ordering::Relaxed);
                shared.listener_running.store(false, Ordering::Release);
                Err(Error::Spawn(e))
            }
        }
    }

    /// A durable barrier: returns once every record queued before the call is written
    /// to its sinks and synced, or the error that prevented it: a sink's failure, or
    /// [`Error::Dropped`] when records logged before it (since the previous barrier)
    /// were dropped. Waits at most [`ListenerConfig::shutdown_timeout`]
    /// ([`Error::Timeout`]); never hangs if the listener dies; returns
    /// [`Error::WouldDeadlock`] at once if called from inside a log call or on the
    /// listener thread.
    ///
    /// Concurrent flushes share syncs (group commit); a failure is the answer of every
    /// flush waiting when it happens and of the flushes answered next (see the module
    /// docs).
    pub fn flush(&self) -> Result<(), Error> {
        self.handler.shared.flush_barrier(None)
    }

    /// [`QueueListener::flush`] that gives up with [`Error::Timeout`] after `timeout`.
    pub fn flush_timeout(&self, timeout: Duration) -> Result<(), Error> {
        self.handler.shared.flush_barrier(Some(timeout))
    }

    /// Asks the listener to reopen every sink (for files: their path, after logrotate
    /// moved them away), and returns once it did: everything queued before the call
    /// is first written and synced into the files open now, then each sink reopens.
    /// Records logged meanwhile land in the old or the new file, each once. Waits at
    /// most [`ListenerConfig::shutdown_timeout`] ([`Error::Timeout`]); a sink that
    /// cannot reopen keeps writing where it did, says so in its file, and makes this an
    /// [`Error::Sink`]. [`Error::WouldDeadlock`] from inside a log call or on the
    /// listener thread; [`Error::ListenerStopped`] after a stop and in a forked child.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("quelog-doc-reopen-{}", std::process::id()));
    /// use quelog::{ListenerConfig, Output, QueueConfig, QueueHandler, QueueListener};
    ///
    /// let handler = QueueHandler::new(&QueueConfig::default())?;
    /// let listener = QueueListener::start_outputs(
    ///     &handler,
    ///     vec![Output::file(dir.join("app.log"))],
    ///     ListenerConfig::default(),
    /// )?;
    /// std::fs::rename(dir.join("app.log"), dir.join("app.log.1")).unwrap();
    /// listener.reopen()?; // app.log again
    /// assert!(dir.join("app.log").exists());
    /// listener.stop()?;
    /// # std::fs::remove_dir_all(dir).unwrap();
    /// # Ok::<(), quelog::Error>(())
    /// ```
    pub fn reopen(&self) -> Result<(), Error> {
        self.handler.shared.reopen_barrier(None)
    }

    /// From now on, SIGHUP asks this listener to reopen its sinks, as
    /// [`QueueListener::reopen`] does, without an answer
    /// ([`crate::Builder::reopen_on_sighup`]); until the stop.
    pub(crate) fn reopen_on_sighup(&mut self) -> Result<(), Error> {
        if self.sighup.is_none() {
            self.sighup = Some(reopen::register_sighup(&self.handler.shared)?);
        }
        Ok(())
    }

    /// The queue's counters.
    pub fn stats(&self) -> Stats {
        self.handler.stats()
    }

    /// Closes the queue, drains it, syncs, and stops the thread, waiting at most
    /// [`ListenerConfig::shutdown_timeout`]. The stop is final: log calls through the
    /// queue's handlers afterwards go to standard error ([`crate::Dropped::after_stop`]).
    ///
    /// [`Error::Timeout`] when the listener did not finish in time (a sink that does not
    /// return): what it held and what was still queued is counted in
    /// [`Stats::abandoned`] and said on standard error, and the thread is left to end
    /// on its own.
    pub fn stop(mut self) -> Result<Stats, Error> {
        self.stop_within(Some(self.shutdown_timeout))
    }

    /// The stop itself, waiting at most `timeout` (`None`: no limit).
    pub(crate) fn stop_within(&mut self, timeout: Option<Duration>) -> Result<Stats, Error> {
        if crate::fork::forked(&self.handler.shared) {
            // A forked child: the thread is the parent's; joining it waits for ever.
            let thread = self.thread.take();
            return Ok(crate::fork::abandon_listener(&self.handler.shared, thread));
        }
        if let Some(id) = self.sighup.take() {
            // signal-hook keeps its handler installed: SIGHUP is ignored from now on,
            // rather than ending a process that is shutting down.
            signal_hook::low_level::unregister(id);
        }
        let Some(thread) = self.thread.take() else {
            return Ok(self.stats());
        };
        let shared = &*self.handler.shared;
        // Every claim lands before or after this: the listener's drain has an end.
        shared.ring.close();
        // Block-mode callers asleep for room: they find the ring closed and drop.
        shared.room.wake_all();
        let _ = shared.control_tx.send(Control::Stop);
        shared.waker.wake();
        if crate::handler::waiting_here_could_deadlock() {
            // Joining from inside a log call or from the listener itself would wait
            // for this very thread; it finishes on its own.
            return Err(Error::WouldDeadlock);
        }
        let started = Instant::now();
        let deadline = timeout.and_then(|t| started.checked_add(t));
        while !thread.is_finished() {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                abandon(shared, started.elapsed());
                return Err(Error::Timeout);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        match thread.join() {
            Ok(()) => Ok(self.stats()),
            Err(_) => Err(Error::ListenerStopped),
        }
    }
}

impl Drop for QueueListener {
    fn drop(&mut self) {
        let _ = self.stop_within(Some(self.shutdown_timeout));
    }
}

/// Opens `outputs` into sink slots, `default_level` for those without a level.
fn open_outputs(
    outputs: Vec<Output>,
    default_level: LevelFilter,
    local_time: bool,
    counters: &Counters,
) -> Result<Vec<SinkSlot>, Error> {
    outputs
        .into_iter()
        .map(|output| {
            let level = output.level_or(default_level);
            let layout = output.layout(local_time);
            Ok(SinkSlot::new(
                output.open(local_time, counters)?,
                level,
                layout,
            ))
        })
        .collect()
}

/// A stop ran out of time: takes the ring from the listener for good, counts what it
/// holds and what is still unread as abandoned, and says so on standard error. Returns
/// the number abandoned.
fn abandon(shared: &Shared, waited: Duration) -> u64 {
    let counters = &shared.counters;
    shared.ring.abandon();
    let since = Instant::now();
    while shared.ring.consumer_taking() && since.elapsed() < ABANDON_GRACE {
        std::thread::yield_now();
    }
    let ring_free = !shared.ring.consumer_taking();
    // Whoever swaps first owns the batch the listener is writing: the listener (it
    // counts it written or lost) or this stop (abandoned); never both.
    let in_flight = shared.in_flight.swap(0, Ordering::AcqRel);
    let unread = if ring_free {
        // Records, not span bookkeeping: spans are not in the record counters.
        let (records, interrupted) = shared.ring.count_unread(crate::record::is_event);
        records + interrupted
    } else {
        0
    };
    // Unread records were never taken off the ring: they count as enqueued too, so
    // that `enqueued == written + filtered + lost + abandoned` holds.
    Counters::add(&counters.enqueued, unread);
    Counters::add(&counters.abandoned, in_flight + unread);
    let total = in_flight + unread;
    let uncounted = if ring_free {
        ""
    } else {
        "; the listener was still taking records, so those left in the queue are not counted"
    };
    let text = format!(
        "quelog: the listener did not stop within {waited:.1?} (a sink is not returning); \
         abandoned {total} records ({in_flight} being written, {unread} still queued){uncounted}\n"
    );
    crate::sink::write_stderr_if_ready(&[text.as_bytes()]);
    total
}

/// Runs `f` with every asynchronous signal blocked in the calling thread, so a thread
/// spawned inside inherits the mask from its first instruction.
fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    let mut all: libc::sigset_t = zeroed_sigset();
    let mut old: libc::sigset_t = zeroed_sigset();
    // SAFETY: both sets are live locals; sigfillset/sigdelset/pthread_sigmask only
    // write them and the thread's mask.
    unsafe {
        libc::sigfillset(&mut all);
        // Synchronous signals are the thread's own faults; blocking them makes a fault
        // kill the process without a handler, so leave them deliverable.
        for signal in [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE] {
            libc::sigdelset(&mut all, signal);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
    }
    let result = f();
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    result
}

fn zeroed_sigset() -> libc::sigset_t {
    // SAFETY: sigset_t is a plain bit array for which all-zero is a valid (empty) set.
    unsafe { std::mem::zeroed() }
}
