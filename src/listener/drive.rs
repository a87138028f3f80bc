//! The drive loop: take a batch off the ring, route it to the sinks, write, sync as
//! due, answer barriers, sleep when idle; and the end of a stop.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::durability::PendingFlush;
use super::outputs::SinkSlot;
use super::reopen::PendingReopen;
use super::ListenerConfig;
use crate::error::Error;
use crate::handler::mark_listener_thread;
use crate::layout::{Layout, Spans, ThreadNames};
use crate::queue::{Control, Shared};
use crate::record;
use crate::ring::{Consumer, Pop};
use crate::stats::{Counters, Dropped};

/// The longest the listener sleeps when idle; also bounds how late a record can be
/// written when its producer's wake-up raced the listener falling asleep.
const MAX_IDLE_SLEEP: Duration = Duration::from_millis(50);

/// After catching up, the listener looks for records this many times, [`QUIET_POLL`]
/// apart, before it sleeps until woken: about a millisecond in all.
const QUIET_POLLS: u32 = 10;

/// The pause between two of those looks.
const QUIET_POLL: Duration = Duration::from_micros(100);

/// While a Block-mode caller sleeps for room, the listener looks whether to wake it
/// after every this many records it takes (each frees a slot or two): a look at the
/// free room per so many records while someone waits, one load otherwise.
const ROOM_NOTIFY_EVERY: usize = 32;

/// Block-mode callers asleep for room are woken, while the listener drains, once this
/// part of the ring (one over it) is free beyond the severity reserve (see
/// [`crate::wake::Room`] for why in bulk).
const ROOM_WAKE_SHARE: usize = 8;

/// The listener thread's body.
pub(super) fn run(shared: Arc<Shared>, sinks: Vec<SinkSlot>, config: ListenerConfig) {
    mark_listener_thread();
    let _running = RunningFlag(&shared);
    let Some(consumer) = shared.ring.take_consumer() else {
        shared.crash_fd.store(-1, Ordering::Relaxed);
        return;
    };
    // One layout per distinct spec; each sink points at its own.
    let mut specs = Vec::new();
    let mut sink_layout = Vec::new();
    for slot in &sinks {
        let index = specs
            .iter()
            .position(|s| *s == slot.layout)
            .unwrap_or_else(|| {
                specs.push(slot.layout);
                specs.len() - 1
            });
        sink_layout.push(index);
    }
    // A layout that feeds one sink is laid out straight into that sink's buffer.
    let layout_shared = sink_layout
        .iter()
        .map(|&layout| sink_layout.iter().filter(|&&l| l == layout).count() > 1)
        .collect();
    let mut listener = Listener {
        shared: &shared,
        consumer,
        sinks,
        lines: vec![Vec::new(); specs.len()],
        layouts: specs.into_iter().map(Layout::new).collect(),
        sink_layout,
        layout_shared,
        thread_names: ThreadNames::default(),
        batch_started: Instant::now(),
        spans: Spans::default(),
        record: Vec::new(),
        decoding: record::Decoding::default(),
        drops_at_batch: Dropped::default(),
        pending_flushes: Vec::new(),
        pending_reopens: Vec::new(),
        last_detached_check: Instant::now(),
        failure_since_ack: None,
        barrier_drops: Dropped::default(),
        last_sync: Instant::now(),
        bytes_at_sync: 0,
        config,
    };
    if let Some(text) = &shared.startup_warning {
        // Before any record: a malformed `RUST_LOG` is the first thing each sink says.
        for (slot, &layout) in listener.sinks.iter_mut().zip(&listener.sink_layout) {
            let mut line = Vec::new();
            super::notice::push_notice(
                &mut listener.layouts[layout],
                log::Level::Warn,
                text,
                &mut line,
            );
            slot.push_notice_bytes(&line);
        }
    }
    listener.run();
}

/// Clears `listener_running` and answers every queued control request when the
/// listener thread ends, however it ends (a panic included).
struct RunningFlag<'a>(&'a Shared);

impl Drop for RunningFlag<'_> {
    fn drop(&mut self) {
        self.0.listener_running.store(false, Ordering::Release);
        // Block-mode callers asleep for room: nobody will make any now.
        self.0.room.wake_all();
        while let Ok(request) = self.0.control_rx.try_recv() {
            match request {
                Control::Flush { ack, .. } | Control::Reopen { ack, .. } => {
                    let _ = ack.send(Err(Error::ListenerStopped));
                }
                Control::Stop => {}
            }
        }
    }
}

pub(super) struct Listener<'a> {
    pub(super) shared: &'a Shared,
    pub(super) consumer: Consumer<'a>,
    pub(super) sinks: Vec<SinkSlot>,
    /// The distinct layouts, and the line each formatted for the current record.
    layouts: Vec<Layout>,
    lines: Vec<Vec<u8>>,
    /// For each sink, the index of its layout.
    sink_layout: Vec<usize>,
    /// For each sink, whether another sink has the same layout (then the line is
    /// formatted once into `lines` and copied to each; else straight into the sink's
    /// buffer).
    layout_shared: Vec<bool>,
    thread_names: ThreadNames,
    /// When the current batch started: the time thread names are fresh as of.
    batch_started: Instant,
    /// The tracing spans alive, rebuilt from their bookkeeping records.
    spans: Spans,
    /// The record being decoded (reused).
    record: Vec<u8>,
    /// A raw record's message, formatted here, and the names last checked (reused).
    decoding: record::Decoding,
    /// The drop counters when the current batch started: what its notices tell.
    drops_at_batch: Dropped,
    pub(super) pending_flushes: Vec<PendingFlush>,
    pub(super) pending_reopens: Vec<PendingReopen>,
    /// When the sinks were last asked whether their file went away.
    pub(super) last_detached_check: Instant,
    /// The first failure since the last barriers were answered, for barriers that
    /// arrive after it.
    pub(super) failure_since_ack: Option<Error>,
    /// The drop counters the last answered barrier accounted for.
    pub(super) barrier_drops: Dropped,
    pub(super) last_sync: Instant,
    /// [`Counters::bytes`] at the last sync: what group commit has not synced yet.
    pub(super) bytes_at_sync: u64,
    pub(super) config: ListenerConfig,
}

impl Drop for Listener<'_> {
    fn drop(&mut self) {
        // The sinks close after this: the crash drain must not use their descriptor.
        // Withdrawn under the token, so a drain starting later sees -1. If a drain holds
        // the ring, let it finish and give the ring back first (bounded). If it still
        // has not, the process is about to end anyway: never close the descriptors
        // under it (a new file could get the same number and receive its lines).
        let deadline = Instant::now() + crate::crash::LISTENER_WAIT;
        let mut held = self.consumer.hold();
        while !held && self.shared.ring.crash_claimed() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
            held = self.consumer.hold();
        }
        self.shared.crash_fd.store(-1, Ordering::Relaxed);
        if held {
            self.consumer.release();
        } else if self.shared.ring.crash_claimed() {
            std::mem::forget(std::mem::take(&mut self.sinks));
        }
    }
}

impl Listener<'_> {
    fn run(&mut self) {
        let mut stop_requested: Option<Instant> = None;
        let mut idle_sleep = Duration::from_millis(1);
        let mut quiet_polls = 0;
        loop {
            self.shared.ring.populate_ahead();
            while let Ok(request) = self.shared.control_rx.try_recv() {
                match request {
                    Control::Flush { upto, dropped, ack } => {
                        self.pending_flushes.push(PendingFlush {
                            upto,
                            dropped,
                            ack,
                            error: None,
                        })
                    }
                    Control::Reopen { upto, ack } => self.pending_reopens.push(PendingReopen {
                        upto,
                        ack: Some(ack),
                    }),
                    Control::Stop => {
                        stop_requested.get_or_insert_with(Instant::now);
                    }
                }
            }
            self.take_signal_reopen();
            #[cfg(feature = "test-hooks")]
            if self.config.hooks.held(stop_requested.is_some()) {
                continue;
            }
            if !self.consumer.hold() {
                if self.consumer.abandoned() {
                    // A stop gave up on us and counted what is left: touch nothing.
                    return;
                }
                // A fatal-signal handler owns the ring: the process is about to end, or
                // the handler gives the ring back and we resume where it stopped.
                if stop_requested.is_some_and(|since| since.elapsed() >= self.config.stop_grace) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }

            let (taken, next) = self.drain_batch();
            self.consumer.begin_write();
            if self.detached_check_due(taken) {
                self.follow_detached();
            }
            self.write_all(false);
            if self.barrier_due() || self.reopen_due() || self.sync_due(taken, next) {
                // A sync may take milliseconds: callers asleep for room use them.
                self.shared.room.notify_fenced();
                self.sync_all();
            }
            self.serve_reopens();
            let finished = stop_requested.is_some_and(|since| {
                let out_of_time = since.elapsed() >= self.config.stop_grace;
                self.consumer.is_empty() || (next == Pop::Pending && out_of_time)
            });
            if finished {
                self.finish();
            }
            self.consumer.end_write();
            self.answer_flushes();
            if finished {
                return;
            }

            if taken > 0 {
                idle_sleep = Duration::from_millis(1);
                quiet_polls = 0;
                continue;
            }
            if next == Pop::Pending {
                // A producer is between claim and publish; it will be done in a moment
                // unless a signal handler is running on it.
                std::thread::sleep(Duration::from_micros(50));
                continue;
            }
            if quiet_polls < QUIET_POLLS && self.shared.control_rx.is_empty() {
                // Caught up with a stream of records: look again in a moment without
                // announcing a sleep. An announced sleep makes the next log call pay a
                // `write(2)` to wake us, and a listener that keeps catching up would
                // have every call pay one.
                quiet_polls += 1;
                std::thread::sleep(QUIET_POLL);
                continue;
            }
            let timeout = self.sleep_budget(idle_sleep);
            self.shared.waker.prepare_sleep();
            let reopen_asked = self.shared.reopen_requested.load(Ordering::SeqCst);
            if !self.consumer.is_empty() || !self.shared.control_rx.is_empty() || reopen_asked {
                self.shared.waker.cancel_sleep();
                continue;
            }
            self.shared.waker.sleep(timeout);
            idle_sleep = (idle_sleep * 2).min(MAX_IDLE_SLEEP);
        }
    }

    /// The end of a stop (the ring is closed, so its tail is final). Records published
    /// behind a claim that stayed unpublished for the whole grace period are written
    /// anyway; each such claim counts as one abandoned record (its log call was
    /// interrupted and will publish into a ring nobody reads). Then a last chance for a
    /// failing sink to say what it lost, and a last sync.
    fn finish(&mut self) {
        if !self.consumer.is_empty() {
            let mut record = std::mem::take(&mut self.record);
            let mut taken = Vec::new();
            let interrupted = self
                .consumer
                .take_behind_pending(&mut record, |payload| taken.push(payload.to_vec()));
            self.record = record;
            let counters = &self.shared.counters;
            Counters::add(&counters.enqueued, interrupted);
            Counters::add(&counters.abandoned, interrupted);
            for payload in taken {
                self.record = payload;
                if self.route_record() {
                    Counters::add(&self.shared.counters.enqueued, 1);
                }
            }
        }
        self.drops_at_batch = self.shared.counters.dropped();
        self.write_all(true);
        self.sync_all();
    }

    /// Takes up to one batch off the ring into the sinks' buffers. Returns how many
    /// records it took and what stopped it.
    fn drain_batch(&mut self) -> (usize, Pop) {
        let limit = match self.config.sync {
            super::SyncPolicy::EveryRecord => 1,
            _ => self.config.max_batch.max(1),
        };
        // Drops counted by now happened before the records that follow.
        self.drops_at_batch = self.shared.counters.dropped();
        self.batch_started = Instant::now();
        let mut taken = 0;
        let stopped = loop {
            if taken >= limit {
                break Pop::Record;
            }
            if taken % ROOM_NOTIFY_EVERY == ROOM_NOTIFY_EVERY - 1 {
                // Block-mode callers asleep for room get it while the batch goes on.
                self.shared.room.notify_if(|| self.roomy());
            }
            match self.consumer.pop_into(&mut self.record) {
                Pop::Record => {
                    taken += 1;
                    if self.route_record() {
                        Counters::add(&self.shared.counters.enqueued, 1);
                    }
                }
                Pop::Damaged => {
                    // A record whose frame was overwritten: it cannot be read.
                    let counters = &self.shared.counters;
                    Counters::add(&counters.enqueued, 1);
                    Counters::add(&counters.lost, 1);
                    Counters::add(&counters.damaged, 1);
                }
                other => break other,
            }
        };
        // Before the write: nobody asleep for room may miss these frees. While more
        // records wait, the listener goes on draining after the write and wakes them
        // once the ring is roomy; else it stops draining and wakes them now.
        let more = stopped == Pop::Record;
        self.shared.room.notify_fenced_if(|| !more || self.roomy());
        (taken, stopped)
    }

    /// Whether the ring has room enough to wake Block-mode callers asleep for it.
    fn roomy(&self) -> bool {
        let wanted = self.shared.reserve_slots + self.shared.ring.slots() / ROOM_WAKE_SHARE;
        self.consumer.free_slots() >= wanted
    }

    /// Formats the record in `self.record` once per layout some accepting sink uses,
    /// and queues the line at each of those sinks; span bookkeeping goes to the span
    /// registry instead. Returns whether it was a record (an event), which counts.
    fn route_record(&mut self) -> bool {
        let Some(view) = record::decode_rendering(&self.record, &mut self.decoding) else {
            // The handler wrote it, so this is memory corruption; count, do not panic.
            let counters = &self.shared.counters;
            Counters::add(&counters.lost, 1);
            Counters::add(&counters.damaged, 1);
            return true;
        };
        if self.spans.apply(&view) {
            return false;
        }
        for line in &mut self.lines {
            line.clear();
        }
        let mut accepted = false;
        let now = self.batch_started;
        for ((slot, &layout), &shared) in self
            .sinks
            .iter_mut()
            .zip(&self.sink_layout)
            .zip(&self.layout_shared)
        {
            if !slot.accepts(view.level) {
                continue;
            }
            let (Some(line), Some(formatter)) =
                (self.lines.get_mut(layout), self.layouts.get_mut(layout))
            else {
                continue;
            };
            let name = self.thread_names.name(view.thread_id, now);
            if !shared {
                slot.push_record_with(|buffer| {
                    formatter.write(&view, name, Some(&mut self.spans), buffer);
                });
            } else {
                if line.is_empty() {
                    formatter.write(&view, name, Some(&mut self.spans), line);
                }
                slot.push_record(line);
            }
            accepted = true;
        }
        if !accepted {
            Counters::add(&self.shared.counters.filtered, 1);
        }
        true
    }

    /// The layout sink `index` uses.
    pub(super) fn layout_of(&mut self, index: usize) -> Option<&mut Layout> {
        let layout = self.sink_layout.get(index).copied()?;
        self.layouts.get_mut(layout)
    }

    /// Writes every sink's buffer with one call each, and counts the batch: a record is
    /// written if every sink that accepted it wrote it, else lost (once, however many
    /// sinks failed it). `final_attempt` (at stop): also write a pending notice,
    /// backoff or not.
    fn write_all(&mut self, final_attempt: bool) {
        let shared = self.shared;
        let counters = &shared.counters;
        let mut accepted = 0;
        let mut lost = 0;
        let mut failures = Vec::new();
        let mut fd_changed = false;
        let mut written_at = vec![0; self.sinks.len()];
        // Level filters nest, so the largest count of any sink is the union.
        let in_batch = self.sinks_buffered_max();
        shared.in_flight.store(in_batch, Ordering::Release);
        for index in 0..self.sinks.len() {
            let drops = self.drops_at_batch;
            let layout_index = self.sink_layout.get(index).copied().unwrap_or(0);
            let (Some(slot), Some(layout)) = (
                self.sinks.get_mut(index),
                self.layouts.get_mut(layout_index),
            ) else {
                continue;
            };
            let outcome = slot.write_out(layout, counters, drops, final_attempt);
            accepted = accepted.max(outcome.accepted);
            lost = lost.max(outcome.lost);
            if let Some(written) = written_at.get_mut(index) {
                *written = outcome.accepted - outcome.lost;
            }
            failures.extend(outcome.error);
            fd_changed |= outcome.fd_changed;
        }
        if fd_changed {
            // A sink rotated: its old descriptor is closed. The listener holds its
            // writing bit, so no crash drain uses the descriptor meanwhile.
            super::outputs::publish_crash_fd(shared, &self.sinks);
        }
        for (slot, written) in self.sinks.iter_mut().zip(written_at) {
            slot.discount_lost_elsewhere(written, lost);
        }
        // The batch is ours to count unless a stop that gave up on us counted it.
        if shared.in_flight.swap(0, Ordering::AcqRel) == in_batch {
            Counters::add(&counters.lost, lost);
            Counters::add(&counters.written, accepted - lost);
        }
        for failure in failures {
            self.fail(failure);
        }
    }

    fn sinks_buffered_max(&self) -> u64 {
        self.sinks.iter().map(SinkSlot::buffered).max().unwrap_or(0)
    }
}
