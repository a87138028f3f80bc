//! Drain and batch: [`QueueListener`], the one background thread of a queue.
//!
//! It takes records off the ring in batches, formats each once, appends it to the
//! buffer of every sink whose level accepts it, writes each buffer with one call, and
//! syncs as the [`SyncPolicy`] says (group commit by default: one sync per batch).
//! Control requests (flush barriers, stop) come over a crossbeam channel; the listener
//! sleeps on the queue's eventfd, with a timeout, when there is nothing to do.
//!
//! It is born with every asynchronous signal blocked, so no signal handler (that might
//! log) ever runs on it. When it has something to say about itself (records dropped,
//! a sink failing) it writes the line into the sinks' buffers directly, never through
//! its own queue.
//!
//! # Failures
//!
//! * Every sink call runs under `catch_unwind`: a sink that panics fails that call
//!   (counted in [`Stats::sink_panics`]) and the other sinks are served as usual.
//! * A failed write (disk full) loses that batch for that sink: counted in
//!   [`Stats::lost`], and the sink is left alone with exponential backoff (10 ms
//!   doubling to 1 s; records meanwhile are lost to it too). The first write that
//!   succeeds again starts with one line `quelog: N records lost (reason)`.
//! * A failed sync (fsyncgate): the listener keeps every byte written to a sink since
//!   its last good sync (up to `MAX_KEPT_BYTES`, 16 MiB); after a failure it calls
//!   [`Sink::prepare_rewrite`] (reopen; [`crate::FileSink`] also cuts back to the last
//!   good sync), rewrites them, and syncs again ([`Stats::sync_rewrites`], and a line
//!   `quelog: sync failed (reason); rewrote ...`). If that fails too, those records
//!   are counted lost.
//! * Each failure is the answer of every flush barrier pending when it happened and of
//!   the barriers answered next; a failed sync is reported even when the rewrite
//!   succeeded (the message says so). Once answered, a failure is not repeated: a
//!   thread that flushes later sees `Ok`, and the counters and the log line remain.
//!
//! # The crash drain
//!
//! The listener holds the ring's consuming token (see [`crate::ring`]) from taking
//! records until they are written and synced. It publishes the descriptor of its first
//! file sink for the fatal-signal drain when it starts, again after a reopen (holding
//! the token), and withdraws it before its sinks close.

use std::collections::HashMap;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::LevelFilter;

use crate::error::Error;
use crate::format::TextFormatter;
use crate::handler::{mark_listener_thread, QueueHandler};
use crate::queue::{Control, Shared};
use crate::record::{self, RecordView};
use crate::ring::{Consumer, Pop};
use crate::sink::Sink;
use crate::stats::{Counters, Dropped, Stats};

/// When the listener makes written records durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// Write and sync each record on its own: slowest, smallest loss window.
    EveryRecord,
    /// Group commit: one sync per drained batch, however many records it holds (the
    /// default). Under load a batch holds many records, so the cost per record falls
    /// as the rate rises.
    #[default]
    EveryBatch,
    /// Sync at most once per interval, when something was written.
    Interval(Duration),
    /// Never sync in the background; only `flush()` and shutdown sync.
    Never,
}

/// Settings of a listener. [`crate::Builder`] fills these for you.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// When to sync.
    pub sync: SyncPolicy,
    /// Timestamps in local time with an offset instead of UTC.
    pub local_time: bool,
    /// The most records taken off the ring before writing them out.
    pub max_batch: usize,
    /// How long a stop waits for records that are claimed but not yet published
    /// (their producer was interrupted) before giving up on them.
    pub stop_grace: Duration,
    #[doc(hidden)]
    /// Test hooks; not part of the API.
    pub hooks: ListenerHooks,
}

/// Test hooks of a listener (not part of the API; for quelog's own tests).
#[doc(hidden)]
#[derive(Debug, Clone, Default)]
pub struct ListenerHooks {
    /// While set, the listener takes nothing off the ring (until a stop is requested).
    pub hold: Option<Arc<AtomicBool>>,
    /// Once set, the listener thread panics outside any `catch_unwind` and dies.
    pub die: Option<Arc<AtomicBool>>,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            sync: SyncPolicy::EveryBatch,
            local_time: false,
            max_batch: 4096,
            stop_grace: Duration::from_secs(2),
            hooks: ListenerHooks::default(),
        }
    }
}

/// The longest the listener sleeps when idle; also bounds how late a record can be
/// written when its producer's wake-up raced the listener falling asleep.
const MAX_IDLE_SLEEP: Duration = Duration::from_millis(50);

/// How long a failing sink is left alone at most before the next attempt.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(1);

/// The first backoff after a failed write.
const FIRST_RETRY_BACKOFF: Duration = Duration::from_millis(10);

/// The most bytes written to one sink since its last good sync that the listener keeps
/// to rewrite after a failed sync. Past it (`SyncPolicy::Never` or a long interval
/// under load), the copy is dropped, and a failed sync then counts the records since
/// the last good sync as lost instead of rewriting them.
pub(crate) const MAX_KEPT_BYTES: usize = 16 << 20;

/// A sink with its level filter and what the listener tracks about it.
struct SinkSlot {
    sink: Box<dyn Sink>,
    level: LevelFilter,
    /// Lines formatted for this sink and not yet written.
    buffer: Vec<u8>,
    /// Records in `buffer`.
    buffered: u64,
    /// Bytes written since the last good sync, to rewrite if the next sync fails.
    kept: Vec<u8>,
    /// Records in `kept` (also counted when `kept` overflowed).
    kept_records: u64,
    /// `kept` holds everything written since the last good sync.
    kept_complete: bool,
    /// Written since the last sync.
    dirty: bool,
    /// Records lost since the sink last wrote successfully, and why.
    lost_unreported: u64,
    last_error: Option<String>,
    last_error_kind: io::ErrorKind,
    /// While failing: no attempt before this instant.
    retry_at: Option<Instant>,
    backoff: Duration,
}

impl SinkSlot {
    fn new(sink: Box<dyn Sink>, level: LevelFilter) -> SinkSlot {
        SinkSlot {
            sink,
            level,
            buffer: Vec::new(),
            buffered: 0,
            kept: Vec::new(),
            kept_records: 0,
            kept_complete: true,
            dirty: false,
            lost_unreported: 0,
            last_error: None,
            last_error_kind: io::ErrorKind::Other,
            retry_at: None,
            backoff: FIRST_RETRY_BACKOFF,
        }
    }

    /// Starts the backoff after a failure.
    fn back_off(&mut self, now: Instant, kind: io::ErrorKind, reason: String) {
        self.last_error = Some(reason);
        self.last_error_kind = kind;
        self.retry_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_RETRY_BACKOFF);
    }

    /// Forgets the bytes kept for a rewrite: synced, or beyond saving.
    fn forget_kept(&mut self) {
        self.kept.clear();
        self.kept_records = 0;
        self.kept_complete = true;
    }
}

/// The text of an I/O error without Rust's " (os error N)" suffix: "No space left on
/// device".
pub(crate) fn reason(error: &io::Error) -> String {
    let text = error.to_string();
    match error.raw_os_error() {
        Some(code) => {
            let suffix = format!(" (os error {code})");
            text.strip_suffix(&suffix).unwrap_or(&text).to_owned()
        }
        None => text,
    }
}

/// Calls a sink, turning a panic into an error (and counting it).
fn guarded<T>(counters: &Counters, call: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    catch_unwind(AssertUnwindSafe(call)).unwrap_or_else(|payload| {
        Counters::add(&counters.sink_panics, 1);
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string payload".to_owned());
        Err(io::Error::other(format!("sink panicked: {what}")))
    })
}

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
}

impl QueueListener {
    /// Starts the listener thread for `handler`'s queue, writing to `sinks`, each with
    /// its own level filter (a record goes to every sink whose filter accepts it).
    ///
    /// Fails with [`Error::AlreadyListening`] if the queue has a listener already.
    pub fn start(
        handler: &QueueHandler,
        sinks: Vec<(Box<dyn Sink>, LevelFilter)>,
        config: ListenerConfig,
    ) -> Result<QueueListener, Error> {
        let shared = Arc::clone(&handler.shared);
        if shared
            .listener_running
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(Error::AlreadyListening);
        }
        let slots: Vec<SinkSlot> = sinks
            .into_iter()
            .map(|(sink, level)| SinkSlot::new(sink, level))
            .collect();
        // No consumer runs on this ring now (the flag above), so the crash drain's
        // descriptor may be set without the consuming token; the sinks it names live
        // until the listener ends, which resets it.
        publish_crash_fd(&shared, &slots);
        let thread_shared = Arc::clone(&shared);
        let spawned = with_signals_blocked(|| {
            std::thread::Builder::new()
                .name("quelog-listener".into())
                .spawn(move || run(thread_shared, slots, config))
        });
        match spawned {
            Ok(thread) => Ok(QueueListener {
                handler: handler.clone(),
                thread: Some(thread),
            }),
            Err(e) => {
                shared.crash_fd.store(-1, Ordering::Relaxed);
                shared.listener_running.store(false, Ordering::Release);
                Err(Error::Spawn(e))
            }
        }
    }

    /// A durable barrier: returns once every record queued before the call is written
    /// to its sinks and synced, or the error that prevented it. Never hangs if the
    /// listener dies; returns [`Error::WouldDeadlock`] at once if called from inside a
    /// log call or on the listener thread.
    ///
    /// Concurrent flushes share syncs (group commit); a failure is the answer of every
    /// flush waiting when it happens and of the flushes answered next (see the module
    /// docs).
    pub fn flush(&self) -> Result<(), Error> {
        self.handler.flush_barrier(None)
    }

    /// [`QueueListener::flush`] that gives up with [`Error::Timeout`] after `timeout`.
    pub fn flush_timeout(&self, timeout: Duration) -> Result<(), Error> {
        self.handler.flush_barrier(Some(timeout))
    }

    /// The queue's counters.
    pub fn stats(&self) -> Stats {
        self.handler.stats()
    }

    /// Drains the queue, syncs, and stops the thread. Records logged afterwards stay
    /// in the ring for a later listener (or are dropped and counted once it is full).
    pub fn stop(mut self) -> Result<Stats, Error> {
        self.stop_in_place()
    }

    pub(crate) fn stop_in_place(&mut self) -> Result<Stats, Error> {
        let Some(thread) = self.thread.take() else {
            return Ok(self.stats());
        };
        if crate::handler::waiting_here_could_deadlock() {
            // Joining from inside a log call or from the listener itself would wait
            // forever; leave the thread to finish on its own.
            let _ = self.handler.shared.control_tx.send(Control::Stop);
            self.handler.shared.waker.wake();
            return Err(Error::WouldDeadlock);
        }
        let _ = self.handler.shared.control_tx.send(Control::Stop);
        self.handler.shared.waker.wake();
        let joined = thread.join();
        match joined {
            Ok(()) => Ok(self.stats()),
            Err(_) => Err(Error::ListenerStopped),
        }
    }

    /// [`QueueListener::stop_in_place`] that waits at most `timeout` for the thread to
    /// finish; [`Error::Timeout`] if it did not (it is left to finish on its own).
    pub(crate) fn stop_within(&mut self, timeout: Duration) -> Result<Stats, Error> {
        let Some(thread) = self.thread.take() else {
            return Ok(self.stats());
        };
        let _ = self.handler.shared.control_tx.send(Control::Stop);
        self.handler.shared.waker.wake();
        if crate::handler::waiting_here_could_deadlock() {
            return Err(Error::WouldDeadlock);
        }
        let deadline = Instant::now() + timeout;
        while !thread.is_finished() {
            if Instant::now() >= deadline {
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
        let _ = self.stop_in_place();
    }
}

/// Runs `f` with every asynchronous signal blocked in the calling thread, so a thread
/// spawned inside inherits the mask from its first instruction.
fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    let mut all: libc::sigset_t = unsafe_zeroed_sigset();
    let mut old: libc::sigset_t = unsafe_zeroed_sigset();
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

fn unsafe_zeroed_sigset() -> libc::sigset_t {
    // SAFETY: sigset_t is a plain bit array for which all-zero is a valid (empty) set.
    unsafe { std::mem::zeroed() }
}

/// Sets the descriptor and level the fatal-signal drain writes with: the first sink
/// that has a descriptor (a [`crate::FileSink`]), or none.
fn publish_crash_fd(shared: &Shared, sinks: &[SinkSlot]) {
    let found = sinks
        .iter()
        .find_map(|slot| slot.sink.raw_fd().map(|fd| (fd, slot.level)));
    let (fd, level) = found.unwrap_or((-1, LevelFilter::Off));
    shared.crash_level.store(level as usize, Ordering::Relaxed);
    shared.crash_fd.store(fd, Ordering::Relaxed);
}

/// Clears `listener_running` and answers every queued control request when the
/// listener thread ends, however it ends (a panic included).
struct RunningFlag<'a>(&'a Shared);

impl Drop for RunningFlag<'_> {
    fn drop(&mut self) {
        self.0.listener_running.store(false, Ordering::Release);
        while let Ok(request) = self.0.control_rx.try_recv() {
            if let Control::Flush { ack, .. } = request {
                let _ = ack.send(Err(Error::ListenerStopped));
            }
        }
    }
}

fn run(shared: Arc<Shared>, sinks: Vec<SinkSlot>, config: ListenerConfig) {
    mark_listener_thread();
    let _running = RunningFlag(&shared);
    let Some(consumer) = shared.ring.take_consumer() else {
        shared.crash_fd.store(-1, Ordering::Relaxed);
        return;
    };
    let mut listener = Listener {
        shared: &shared,
        consumer,
        sinks,
        formatter: TextFormatter::new(config.local_time),
        thread_names: ThreadNames::default(),
        record: Vec::new(),
        line: Vec::new(),
        reported_drops: Dropped::default(),
        pending_flushes: Vec::new(),
        failure_since_ack: None,
        last_sync: Instant::now(),
        config,
    };
    listener.run();
}

/// A flush barrier waiting for the listener.
struct PendingFlush {
    /// Ring position: everything before it must be written and synced.
    upto: u64,
    ack: crossbeam_channel::Sender<Result<(), Error>>,
    /// The first failure while it waited.
    error: Option<Error>,
}

struct Listener<'a> {
    shared: &'a Shared,
    consumer: Consumer<'a>,
    sinks: Vec<SinkSlot>,
    formatter: TextFormatter,
    thread_names: ThreadNames,
    /// The record being decoded (reused).
    record: Vec<u8>,
    /// The line being formatted (reused).
    line: Vec<u8>,
    reported_drops: Dropped,
    pending_flushes: Vec<PendingFlush>,
    /// The first failure since the last barriers were answered, for barriers that
    /// arrive after it.
    failure_since_ack: Option<Error>,
    last_sync: Instant,
    config: ListenerConfig,
}

impl Drop for Listener<'_> {
    fn drop(&mut self) {
        // The sinks close after this: the crash drain must not use their descriptor.
        // Under the token, so a drain starting later sees -1; if a drain owns the ring
        // already, let it finish with the descriptor and give the ring back first
        // (bounded).
        let deadline = Instant::now() + crate::crash::LISTENER_WAIT;
        while !self.consumer.hold() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.shared.crash_fd.store(-1, Ordering::Relaxed);
    }
}

fn flag_set(flag: &Option<Arc<AtomicBool>>) -> bool {
    flag.as_ref().is_some_and(|f| f.load(Ordering::Acquire))
}

impl Listener<'_> {
    fn run(&mut self) {
        let mut stop_requested: Option<Instant> = None;
        let mut idle_sleep = Duration::from_millis(1);
        loop {
            while let Ok(request) = self.shared.control_rx.try_recv() {
                match request {
                    Control::Flush { upto, ack } => self.pending_flushes.push(PendingFlush {
                        upto,
                        ack,
                        error: None,
                    }),
                    Control::Stop => {
                        stop_requested.get_or_insert_with(Instant::now);
                    }
                }
            }
            if flag_set(&self.config.hooks.die) {
                // Not caught: the thread ends as if quelog itself had a bug.
                panic!("quelog test hook: the listener thread dies");
            }
            if stop_requested.is_none() && flag_set(&self.config.hooks.hold) {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            if !self.consumer.hold() {
                // A fatal-signal handler owns the ring: the process is about to end,
                // or the handler gives the ring back and we resume where it stopped.
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }

            let (taken, next) = self.drain_batch();
            self.write_out(false);
            let position = self.consumer.position();
            let barrier_due = self.pending_flushes.iter().any(|p| p.upto <= position);
            if barrier_due || self.sync_due(taken) {
                self.sync_all();
            }
            let finished = stop_requested.is_some_and(|since| {
                let out_of_time = since.elapsed() >= self.config.stop_grace;
                self.consumer.is_empty() || (next == Pop::Pending && out_of_time)
            });
            if finished {
                // Last chance for a failing sink to say what it lost.
                self.write_out(true);
                self.sync_all();
            }
            self.consumer.release();
            self.answer_flushes();
            if finished {
                return;
            }

            if taken > 0 {
                idle_sleep = Duration::from_millis(1);
                continue;
            }
            if next == Pop::Pending {
                // A producer is between claim and publish; it will be done in a moment
                // unless a signal handler is running on it.
                std::thread::sleep(Duration::from_micros(50));
                continue;
            }
            let timeout = self.sleep_budget(idle_sleep);
            self.shared.waker.prepare_sleep();
            if !self.consumer.is_empty() || !self.shared.control_rx.is_empty() {
                self.shared.waker.cancel_sleep();
                continue;
            }
            self.shared.waker.sleep(timeout);
            idle_sleep = (idle_sleep * 2).min(MAX_IDLE_SLEEP);
        }
    }

    /// How long the listener may sleep: no longer than the next interval sync.
    fn sleep_budget(&self, idle_sleep: Duration) -> Duration {
        match self.config.sync {
            SyncPolicy::Interval(every) if self.sinks.iter().any(|s| s.dirty) => {
                let due = every.saturating_sub(self.last_sync.elapsed());
                idle_sleep.min(due).max(Duration::from_millis(1))
            }
            _ => idle_sleep,
        }
    }

    /// Whether the sync policy asks for a sync now, after taking `taken` records.
    fn sync_due(&self, taken: usize) -> bool {
        match self.config.sync {
            SyncPolicy::EveryRecord | SyncPolicy::EveryBatch => taken > 0,
            SyncPolicy::Interval(every) => self.last_sync.elapsed() >= every,
            SyncPolicy::Never => false,
        }
    }

    /// Takes up to one batch off the ring into the sinks' buffers. Returns how many
    /// records it took and what stopped it.
    fn drain_batch(&mut self) -> (usize, Pop) {
        let limit = match self.config.sync {
            SyncPolicy::EveryRecord => 1,
            _ => self.config.max_batch.max(1),
        };
        self.report_drops();
        let mut taken = 0;
        while taken < limit {
            match self.consumer.pop_into(&mut self.record) {
                Pop::Record => {
                    taken += 1;
                    Counters::add(&self.shared.counters.enqueued, 1);
                    self.route_record();
                }
                other => return (taken, other),
            }
        }
        (taken, Pop::Record)
    }

    fn route_record(&mut self) {
        let Some(view) = record::decode(&self.record) else {
            // The handler wrote it, so this is memory corruption; count, do not panic.
            Counters::add(&self.shared.counters.lost, 1);
            return;
        };
        let level = view.level;
        self.line.clear();
        let name = self.thread_names.name(view.thread_id);
        self.formatter.write(&view, name, &mut self.line);
        let mut accepted = false;
        for slot in &mut self.sinks {
            if level <= slot.level {
                slot.buffer.extend_from_slice(&self.line);
                slot.buffered += 1;
                accepted = true;
            }
        }
        if !accepted {
            Counters::add(&self.shared.counters.filtered, 1);
        }
    }

    /// Writes one line per drop reason whose count grew, before the next records.
    fn report_drops(&mut self) {
        let now = self.shared.counters.dropped();
        let reasons = [
            (now.queue_full, self.reported_drops.queue_full, "queue full"),
            (now.contended, self.reported_drops.contended, "contended"),
        ];
        for (total, reported, reason) in reasons {
            if total > reported {
                let text = format!("{} records dropped ({reason})", total - reported);
                let line = self.notice_line(log::Level::Warn, &text);
                for slot in &mut self.sinks {
                    slot.buffer.extend_from_slice(&line);
                }
            }
        }
        self.reported_drops = now;
    }

    /// Formats a line from quelog itself: level, target `quelog`, thread `quelog/0`.
    fn notice_line(&mut self, level: log::Level, text: &str) -> Vec<u8> {
        let view = RecordView {
            timestamp_nanos: now_nanos(),
            thread_id: 0,
            level,
            target: "quelog",
            module_path: None,
            file: None,
            line: None,
            message: text.as_bytes(),
            message_full_len: text.len() as u32,
            nested: false,
            format_error: false,
        };
        let mut line = Vec::new();
        self.formatter.write(&view, Some("quelog"), &mut line);
        line
    }

    /// Records a failure: the answer of every barrier waiting now, and of the barriers
    /// answered next.
    fn fail(&mut self, error: Error) {
        for pending in &mut self.pending_flushes {
            pending.error.get_or_insert_with(|| error.duplicate());
        }
        self.failure_since_ack.get_or_insert(error);
    }

    /// Writes every sink's buffer with one call each. `final_attempt` (at stop): also
    /// write a pending "records lost" line, backoff or not.
    fn write_out(&mut self, final_attempt: bool) {
        let shared = self.shared;
        let mut lost_in_batch = 0;
        let mut accepted_in_batch = 0;
        for index in 0..self.sinks.len() {
            let Some(slot) = self.sinks.get(index) else {
                continue;
            };
            let report_loss = slot.lost_unreported > 0;
            if slot.buffer.is_empty() && !(final_attempt && report_loss) {
                continue;
            }
            let now = Instant::now();
            if !final_attempt && slot.retry_at.is_some_and(|at| now < at) {
                // Still backing off: these records are lost to this sink.
                let Some(slot) = self.sinks.get_mut(index) else {
                    continue;
                };
                let buffered = slot.buffered;
                accepted_in_batch = accepted_in_batch.max(buffered);
                lost_in_batch = lost_in_batch.max(buffered);
                slot.lost_unreported += buffered;
                slot.buffer.clear();
                slot.buffered = 0;
                if buffered > 0 {
                    let why = slot.last_error.clone().unwrap_or_default();
                    let kind = slot.last_error_kind;
                    self.fail(Error::Sink {
                        kind,
                        message: format!("{buffered} records lost: sink failing ({why})"),
                    });
                }
                continue;
            }
            let notice = if report_loss {
                let why = slot.last_error.clone().unwrap_or_default();
                let text = format!("{} records lost ({why})", slot.lost_unreported);
                Some(self.notice_line(log::Level::Error, &text))
            } else {
                None
            };
            let Some(slot) = self.sinks.get_mut(index) else {
                continue;
            };
            if let Some(notice) = notice {
                slot.buffer.splice(0..0, notice);
            }
            accepted_in_batch = accepted_in_batch.max(slot.buffered);
            let result = guarded(&shared.counters, || slot.sink.write_batch(&slot.buffer));
            match result {
                Ok(()) => {
                    Counters::add(&shared.counters.bytes, slot.buffer.len() as u64);
                    slot.dirty = true;
                    slot.lost_unreported = 0;
                    slot.retry_at = None;
                    slot.backoff = FIRST_RETRY_BACKOFF;
                    // Keep what was written until it is synced (fsyncgate). Usually
                    // nothing is kept yet, and the buffers just trade places.
                    if slot.kept_complete {
                        if slot.kept.is_empty() {
                            std::mem::swap(&mut slot.kept, &mut slot.buffer);
                        } else {
                            slot.kept.extend_from_slice(&slot.buffer);
                        }
                        if slot.kept.len() > MAX_KEPT_BYTES {
                            slot.kept = Vec::new();
                            slot.kept_complete = false;
                        }
                    }
                    slot.kept_records += slot.buffered;
                }
                Err(error) => {
                    Counters::add(&shared.counters.write_errors, 1);
                    slot.lost_unreported += slot.buffered;
                    lost_in_batch = lost_in_batch.max(slot.buffered);
                    slot.back_off(now, error.kind(), reason(&error));
                    self.fail(Error::sink(&error));
                }
            }
            let Some(slot) = self.sinks.get_mut(index) else {
                continue;
            };
            slot.buffer.clear();
            slot.buffered = 0;
        }
        let counters = &shared.counters;
        Counters::add(&counters.lost, lost_in_batch);
        Counters::add(&counters.written, accepted_in_batch - lost_in_batch);
    }

    /// Syncs every sink written since its last sync; a failed sync is recovered from
    /// as the module docs say.
    fn sync_all(&mut self) {
        let shared = self.shared;
        for index in 0..self.sinks.len() {
            let Some(slot) = self.sinks.get_mut(index) else {
                continue;
            };
            if !slot.dirty {
                continue;
            }
            let started = Instant::now();
            let result = guarded(&shared.counters, || slot.sink.sync());
            shared.counters.sync_latency.record(started.elapsed());
            match result {
                Ok(()) => {
                    Counters::add(&shared.counters.syncs, 1);
                    slot.dirty = false;
                    slot.forget_kept();
                }
                Err(error) => {
                    Counters::add(&shared.counters.sync_errors, 1);
                    self.recover_sync(index, &error);
                }
            }
        }
        self.last_sync = Instant::now();
    }

    /// After a failed sync of sink `index`: reopen, rewrite everything since the last
    /// good sync, sync again; or count those records lost.
    fn recover_sync(&mut self, index: usize, error: &io::Error) {
        let shared = self.shared;
        let why = reason(error);
        let Some(slot) = self.sinks.get_mut(index) else {
            return;
        };
        let records = slot.kept_records;
        let bytes = slot.kept.len();
        let outcome = if slot.kept_complete {
            guarded(&shared.counters, || slot.sink.prepare_rewrite())
                .and_then(|()| {
                    let written = guarded(&shared.counters, || slot.sink.write_batch(&slot.kept));
                    if written.is_err() {
                        Counters::add(&shared.counters.write_errors, 1);
                    }
                    written
                })
                .and_then(|()| {
                    let started = Instant::now();
                    let synced = guarded(&shared.counters, || slot.sink.sync());
                    shared.counters.sync_latency.record(started.elapsed());
                    if synced.is_err() {
                        Counters::add(&shared.counters.sync_errors, 1);
                    }
                    synced
                })
        } else {
            Err(io::Error::other(format!(
                "more than {MAX_KEPT_BYTES} bytes since the last good sync, not kept"
            )))
        };
        slot.dirty = false;
        slot.forget_kept();
        // The sink may have a new descriptor; we hold the consuming token here.
        publish_crash_fd(shared, &self.sinks);
        match outcome {
            Ok(()) => {
                Counters::add(&shared.counters.sync_rewrites, 1);
                Counters::add(&shared.counters.syncs, 1);
                let text = format!(
                    "sync failed ({why}); rewrote the {bytes} bytes ({records} records) \
                     written since the last good sync and synced them again"
                );
                let line = self.notice_line(log::Level::Warn, &text);
                if let Some(slot) = self.sinks.get_mut(index) {
                    slot.buffer.extend_from_slice(&line);
                }
                self.fail(Error::Sink {
                    kind: error.kind(),
                    message: format!(
                        "sync failed ({why}); the records since the last good sync were \
                         rewritten and synced again"
                    ),
                });
            }
            Err(again) => {
                shared.counters.written_became_lost(records);
                if let Some(slot) = self.sinks.get_mut(index) {
                    slot.lost_unreported += records;
                    slot.back_off(Instant::now(), error.kind(), why.clone());
                }
                self.fail(Error::Sink {
                    kind: error.kind(),
                    message: format!(
                        "sync failed ({why}) and so did the rewrite ({}); {records} records \
                         since the last good sync are not durable",
                        reason(&again)
                    ),
                });
            }
        }
    }

    /// Answers the flush barriers whose records have all been taken off the ring (and,
    /// by now, written and synced: the caller synced if any was due).
    fn answer_flushes(&mut self) {
        let position = self.consumer.position();
        if !self.pending_flushes.iter().any(|p| p.upto <= position) {
            return;
        }
        let failure = self.failure_since_ack.take();
        let counters = &self.shared.counters;
        self.pending_flushes.retain_mut(|pending| {
            if pending.upto > position {
                return true;
            }
            let answer = match (pending.error.take(), &failure) {
                (Some(error), _) => Err(error),
                (None, Some(error)) => Err(error.duplicate()),
                (None, None) => Ok(()),
            };
            Counters::add(&counters.flushes, 1);
            let _ = pending.ack.send(answer);
            false
        });
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Thread names by kernel thread id, read from `/proc/self/task/<tid>/comm` on the
/// listener (the producer path must not call `thread::current()`). Entries expire
/// after a second, since thread ids are reused.
#[derive(Default)]
struct ThreadNames {
    names: HashMap<u32, (Option<String>, Instant)>,
}

impl ThreadNames {
    fn name(&mut self, thread_id: u32) -> Option<&str> {
        let now = Instant::now();
        let fresh = self
            .names
            .get(&thread_id)
            .is_some_and(|(_, at)| now.duration_since(*at) < Duration::from_secs(1));
        if !fresh {
            if self.names.len() > 4096 {
                self.names.clear();
            }
            let name = std::fs::read_to_string(format!("/proc/self/task/{thread_id}/comm"))
                .ok()
                .map(|s| s.trim_end().to_owned())
                .filter(|s| !s.is_empty());
            self.names.insert(thread_id, (name, now));
        }
        self.names
            .get(&thread_id)
            .and_then(|(name, _)| name.as_deref())
    }
}
