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

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
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
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            sync: SyncPolicy::EveryBatch,
            local_time: false,
            max_batch: 4096,
            stop_grace: Duration::from_secs(2),
        }
    }
}

/// The longest the listener sleeps when idle; also bounds how late a record can be
/// written when its producer's wake-up raced the listener falling asleep.
const MAX_IDLE_SLEEP: Duration = Duration::from_millis(50);

/// How long a failing sink is left alone at most before the next attempt.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(1);

/// A sink with its level filter and what the listener tracks about it.
struct SinkSlot {
    sink: Box<dyn Sink>,
    level: LevelFilter,
    buffer: Vec<u8>,
    /// Records in `buffer`.
    buffered: u64,
    /// Written since the last sync.
    dirty: bool,
    /// Records lost since the sink last wrote successfully, and why.
    lost_unreported: u64,
    last_error: Option<String>,
    /// While failing: no attempt before this instant.
    retry_at: Option<Instant>,
    backoff: Duration,
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
        let slots = sinks
            .into_iter()
            .map(|(sink, level)| SinkSlot {
                sink,
                level,
                buffer: Vec::new(),
                buffered: 0,
                dirty: false,
                lost_unreported: 0,
                last_error: None,
                retry_at: None,
                backoff: Duration::from_millis(10),
            })
            .collect();
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
                shared.listener_running.store(false, Ordering::Release);
                Err(Error::Spawn(e))
            }
        }
    }

    /// A durable barrier: returns once every record queued before the call is written
    /// to its sinks and synced, or the error that prevented it. Never hangs if the
    /// listener dies; returns [`Error::WouldDeadlock`] at once if called from inside a
    /// log call or on the listener thread.
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

    pub(crate) fn handler(&self) -> &QueueHandler {
        &self.handler
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
    /// Flush barriers waiting: ring position and where to answer.
    pending_flushes: Vec<(u64, crossbeam_channel::Sender<Result<(), Error>>)>,
    /// The first write or sync failure since the last barrier was answered.
    failure_since_ack: Option<Error>,
    last_sync: Instant,
    config: ListenerConfig,
}

impl Listener<'_> {
    fn run(&mut self) {
        let mut stop_requested: Option<Instant> = None;
        let mut idle_sleep = Duration::from_millis(1);
        loop {
            while let Ok(request) = self.shared.control_rx.try_recv() {
                match request {
                    Control::Flush { upto, ack } => self.pending_flushes.push((upto, ack)),
                    Control::Stop => {
                        stop_requested.get_or_insert_with(Instant::now);
                    }
                }
            }

            let (taken, next) = self.drain_batch();
            self.write_out();
            let synced = self.sync_by_policy(taken);
            self.answer_flushes(synced);

            if let Some(since) = stop_requested {
                let out_of_time = since.elapsed() >= self.config.stop_grace;
                if self.consumer.is_empty() || (next == Pop::Pending && out_of_time) {
                    self.sync_all();
                    self.answer_flushes(true);
                    return;
                }
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
                self.notice(log::Level::Warn, &text, None);
            }
        }
        self.reported_drops = now;
    }

    /// Formats a line from quelog itself into the sinks' buffers (all of them, or one).
    fn notice(&mut self, level: log::Level, text: &str, only: Option<usize>) {
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
        self.line.clear();
        self.formatter.write(&view, Some("quelog"), &mut self.line);
        for (index, slot) in self.sinks.iter_mut().enumerate() {
            if only.is_none_or(|i| i == index) {
                slot.buffer.extend_from_slice(&self.line);
            }
        }
    }

    /// Writes every sink's buffer with one call each.
    fn write_out(&mut self) {
        let mut lost_in_batch = 0;
        let mut accepted_in_batch = 0;
        for index in 0..self.sinks.len() {
            let Some(slot) = self.sinks.get_mut(index) else {
                continue;
            };
            if slot.buffer.is_empty() {
                continue;
            }
            accepted_in_batch = accepted_in_batch.max(slot.buffered);
            let now = Instant::now();
            if slot.retry_at.is_some_and(|at| now < at) {
                // Still backing off: these records are lost to this sink.
                slot.lost_unreported += slot.buffered;
                lost_in_batch = lost_in_batch.max(slot.buffered);
                slot.buffer.clear();
                slot.buffered = 0;
                continue;
            }
            if slot.lost_unreported > 0 {
                let why = slot.last_error.clone().unwrap_or_default();
                let text = format!("{} records lost ({why})", slot.lost_unreported);
                let pending = std::mem::take(&mut slot.buffer);
                self.notice(log::Level::Error, &text, Some(index));
                let Some(slot) = self.sinks.get_mut(index) else {
                    continue;
                };
                slot.buffer.extend_from_slice(&pending);
            }
            let Some(slot) = self.sinks.get_mut(index) else {
                continue;
            };
            let result = catch_unwind(AssertUnwindSafe(|| slot.sink.write_batch(&slot.buffer)))
                .unwrap_or_else(|_| Err(std::io::Error::other("sink panicked")));
            match result {
                Ok(()) => {
                    Counters::add(&self.shared.counters.bytes, slot.buffer.len() as u64);
                    slot.dirty = true;
                    slot.lost_unreported = 0;
                    slot.retry_at = None;
                    slot.backoff = Duration::from_millis(10);
                }
                Err(error) => {
                    Counters::add(&self.shared.counters.write_errors, 1);
                    slot.lost_unreported += slot.buffered;
                    lost_in_batch = lost_in_batch.max(slot.buffered);
                    slot.last_error = Some(error.to_string());
                    slot.retry_at = Some(now + slot.backoff);
                    slot.backoff = (slot.backoff * 2).min(MAX_RETRY_BACKOFF);
                    self.failure_since_ack
                        .get_or_insert_with(|| Error::sink(&error));
                }
            }
            slot.buffer.clear();
            slot.buffered = 0;
        }
        let counters = &self.shared.counters;
        Counters::add(&counters.lost, lost_in_batch);
        Counters::add(&counters.written, accepted_in_batch - lost_in_batch);
    }

    /// Syncs if the policy says so now; returns whether every dirty sink got synced.
    fn sync_by_policy(&mut self, taken: usize) -> bool {
        let due = match self.config.sync {
            SyncPolicy::EveryRecord | SyncPolicy::EveryBatch => taken > 0,
            SyncPolicy::Interval(every) => self.last_sync.elapsed() >= every,
            SyncPolicy::Never => false,
        };
        if due {
            self.sync_all();
        }
        due
    }

    fn sync_all(&mut self) {
        for slot in &mut self.sinks {
            if !slot.dirty {
                continue;
            }
            let result = catch_unwind(AssertUnwindSafe(|| slot.sink.sync()))
                .unwrap_or_else(|_| Err(std::io::Error::other("sink panicked in sync")));
            match result {
                Ok(()) => Counters::add(&self.shared.counters.syncs, 1),
                Err(error) => {
                    Counters::add(&self.shared.counters.sync_errors, 1);
                    self.failure_since_ack
                        .get_or_insert_with(|| Error::sink(&error));
                }
            }
            slot.dirty = false;
        }
        self.last_sync = Instant::now();
    }

    /// Answers the flush barriers whose records have all been taken off the ring (and,
    /// by now, written). Syncs first unless `synced` says that just happened.
    fn answer_flushes(&mut self, synced: bool) {
        let position = self.consumer.position();
        if !self
            .pending_flushes
            .iter()
            .any(|(upto, _)| *upto <= position)
        {
            return;
        }
        if !synced {
            self.sync_all();
        }
        let failure = self.failure_since_ack.take();
        self.pending_flushes.retain(|(upto, ack)| {
            if *upto > position {
                return true;
            }
            let answer = match &failure {
                None => Ok(()),
                Some(error) => Err(error.duplicate()),
            };
            let _ = ack.send(answer);
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
