//! Durability: when to sync (the [`SyncPolicy`]), the syncs themselves with the
//! fsyncgate rewrite after a failure, and the flush barriers they answer.
//!
//! A barrier is answered once the consumer has passed the ring position it names and
//! the sinks are synced: every barrier the same sync covers is answered together
//! (group commit). Its answer is the first sink failure since it arrived (or since
//! the last answer), else [`Error::Dropped`] if records logged before it, since the
//! previous barrier, were dropped, else `Ok`.

use std::io;
use std::time::{Duration, Instant};

use super::drive::Listener;
use super::outputs::Recovered;
use super::SyncPolicy;
use crate::error::Error;
use crate::ring::Pop;
use crate::stats::{Counters, Dropped};

/// Group commit under load: the most bytes written before a sync while the ring still
/// holds more. Small enough that the fsyncgate copy ([`super::outputs::MAX_KEPT_BYTES`])
/// keeps all of them and the listener's memory stays near the ring's, large enough that
/// a sync (about a millisecond here) is paid once per some 10,000 lines of 100 bytes,
/// not once per `max_batch`.
pub(super) const GROUP_COMMIT_BYTES: u64 = 1 << 20;

/// A flush barrier waiting for the listener.
pub(super) struct PendingFlush {
    /// Ring position: everything before it must be written and synced.
    pub(super) upto: u64,
    /// The drop counters when the barrier was asked for.
    pub(super) dropped: Dropped,
    pub(super) ack: crossbeam_channel::Sender<Result<(), Error>>,
    /// The first failure while it waited.
    pub(super) error: Option<Error>,
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

impl Listener<'_> {
    /// How long the listener may sleep: no longer than the next interval sync.
    pub(super) fn sleep_budget(&self, idle_sleep: Duration) -> Duration {
        match self.config.sync {
            SyncPolicy::Interval(every) if self.sinks.iter().any(|s| s.is_dirty()) => {
                let due = every.saturating_sub(self.last_sync.elapsed());
                idle_sleep.min(due).max(Duration::from_millis(1))
            }
            _ => idle_sleep,
        }
    }

    /// Whether the sync policy asks for a sync now, after taking `taken` records and
    /// stopping at `next`. Group commit ([`SyncPolicy::EveryBatch`]) syncs once the
    /// listener has caught up with the ring, or every [`GROUP_COMMIT_BYTES`] while it
    /// has not: under load, a batch of `max_batch` records is written out as soon as
    /// it is formatted, but one sync covers several.
    pub(super) fn sync_due(&self, taken: usize, next: Pop) -> bool {
        match self.config.sync {
            SyncPolicy::EveryRecord => taken > 0,
            SyncPolicy::EveryBatch => {
                let caught_up = next != Pop::Record;
                let unsynced = self
                    .shared
                    .counters
                    .bytes
                    .load(std::sync::atomic::Ordering::Relaxed)
                    - self.bytes_at_sync;
                self.sinks.iter().any(|s| s.is_dirty())
                    && (caught_up || unsynced >= GROUP_COMMIT_BYTES)
            }
            SyncPolicy::Interval(every) => self.last_sync.elapsed() >= every,
            SyncPolicy::Never => false,
        }
    }

    /// Whether a pending barrier's records have all been taken off the ring.
    pub(super) fn barrier_due(&self) -> bool {
        let position = self.consumer.position();
        self.pending_flushes.iter().any(|p| p.upto <= position)
    }

    /// Records a failure: the answer of every barrier waiting now, and of the barriers
    /// answered next.
    pub(super) fn fail(&mut self, error: Error) {
        for pending in &mut self.pending_flushes {
            pending.error.get_or_insert_with(|| error.duplicate());
        }
        self.failure_since_ack.get_or_insert(error);
    }

    /// Syncs every sink written since its last sync; a failed sync is recovered from
    /// as the module docs say. Records whose rewrite failed move from written to lost,
    /// once however many sinks failed them (level filters nest: the most is the union).
    pub(super) fn sync_all(&mut self) {
        let counters = &self.shared.counters;
        let mut lost = 0;
        let mut failures = Vec::new();
        for index in 0..self.sinks.len() {
            let Some(slot) = self.sinks.get_mut(index) else {
                continue;
            };
            let Err(error) = slot.sync(counters) else {
                continue;
            };
            let why = reason(&error);
            let recovered = slot.recover_sync(counters, &error);
            match recovered {
                Recovered::Rewrote { bytes, records } => {
                    let text = format!(
                        "sync failed ({why}); rewrote the {bytes} bytes ({records} records) \
                         written since the last good sync and synced them again"
                    );
                    let mut line = Vec::new();
                    if let Some(layout) = self.layout_of(index) {
                        super::notice::push_notice(layout, log::Level::Warn, &text, &mut line);
                    }
                    if let Some(slot) = self.sinks.get_mut(index) {
                        slot.push_notice_bytes(&line);
                    }
                    failures.push(Error::Sink {
                        kind: error.kind(),
                        message: format!(
                            "sync failed ({why}); the records since the last good sync were \
                             rewritten and synced again"
                        ),
                    });
                }
                Recovered::Lost { records, again } => {
                    lost = lost.max(records);
                    failures.push(Error::Sink {
                        kind: error.kind(),
                        message: format!(
                            "sync failed ({why}) and so did the rewrite ({}); {records} records \
                             since the last good sync are not durable",
                            reason(&again)
                        ),
                    });
                }
            }
            // The sink may have a new descriptor; the listener holds its writing bit.
            super::outputs::publish_crash_fd(self.shared, &self.sinks);
        }
        if lost > 0 {
            self.shared.counters.written_became_lost(lost);
        }
        for failure in failures {
            self.fail(failure);
        }
        self.last_sync = Instant::now();
        self.bytes_at_sync = self
            .shared
            .counters
            .bytes
            .load(std::sync::atomic::Ordering::Relaxed);
    }

    /// Answers the flush barriers whose records have all been taken off the ring (and,
    /// by now, written and synced: the caller synced if any was due).
    pub(super) fn answer_flushes(&mut self) {
        if !self.barrier_due() {
            return;
        }
        let position = self.consumer.position();
        let failure = self.failure_since_ack.take();
        let counters = &self.shared.counters;
        let mut told = self.barrier_drops;
        self.pending_flushes.retain_mut(|pending| {
            if pending.upto > position {
                return true;
            }
            let dropped = pending.dropped.since(told);
            told = told.max(pending.dropped);
            let answer = match (pending.error.take(), &failure) {
                (Some(error), _) => Err(error),
                (None, Some(error)) => Err(error.duplicate()),
                (None, None) if dropped.total() > 0 => Err(Error::Dropped(dropped)),
                (None, None) => Ok(()),
            };
            Counters::add(&counters.flushes, 1);
            let _ = pending.ack.send(answer);
            false
        });
        self.barrier_drops = told;
    }
}
