//! Per-sink state, owned by the sink's slot: the lines waiting for it, its backoff
//! after a failure, the bytes kept since its last good sync (for the fsyncgate
//! rewrite), what it lost and which drops it has not been told about yet.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use log::LevelFilter;

use super::durability::reason;
use super::notice;
use crate::error::Error;
use crate::layout::{Layout, LayoutSpec};
use crate::queue::Shared;
use crate::sink::Sink;
use crate::stats::{Counters, Dropped};

/// How long a failing sink is left alone at most before the next attempt.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(1);

/// The first backoff after a failed write.
const FIRST_RETRY_BACKOFF: Duration = Duration::from_millis(10);

/// The most bytes written to one sink since its last good sync that the listener keeps
/// to rewrite after a failed sync. Past it (`SyncPolicy::Never` or a long interval
/// under load), the copy is dropped, and a failed sync then counts the records since
/// the last good sync as lost instead of rewriting them. Two group commits' worth
/// ([`super::durability`]'s 1 MiB under load, reached at a batch's end): it covers
/// `EveryBatch` whole, and keeps the listener's memory within a few MiB of the ring's
/// under any policy.
pub(crate) const MAX_KEPT_BYTES: usize = 2 << 20;

/// Emptied buffers a sink keeps for reuse: enough for the batches between two syncs
/// under load (1 MiB of batches of `max_batch` lines), not the whole 2 MiB.
const MAX_SPARE_BUFFERS: usize = 4;

/// A sink with its level filter, its layout, and what the listener tracks about it.
pub(super) struct SinkSlot {
    pub(super) sink: Box<dyn Sink>,
    pub(super) level: LevelFilter,
    pub(super) layout: LayoutSpec,
    /// Lines formatted for this sink and not yet written.
    buffer: Vec<u8>,
    /// Records in `buffer`.
    buffered: u64,
    /// Bytes written since the last good sync, to rewrite if the next sync fails.
    kept: Vec<Vec<u8>>,
    /// Bytes in `kept`.
    kept_bytes: usize,
    /// Emptied buffers from `kept`, reused for the next batches (no copy into `kept`,
    /// no fresh pages per batch).
    spare: Vec<Vec<u8>>,
    /// Records in `kept` that are not counted lost already (another sink failed them).
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
    /// The drop counts this sink's log already tells.
    drops_told: Dropped,
    /// What the sink said about itself ([`Sink::take_notices`]), not written yet.
    sink_notices: Vec<String>,
}

/// What one write round did at one sink.
#[derive(Default)]
pub(super) struct Written {
    /// Records that were waiting for this sink.
    pub(super) accepted: u64,
    /// Of those, lost (write failed, or the sink is backing off).
    pub(super) lost: u64,
    /// The failure to report to flush barriers.
    pub(super) error: Option<Error>,
    /// The sink's descriptor changed (it rotated): the crash drain's needs publishing.
    pub(super) fd_changed: bool,
}

/// After a failed sync: what the rewrite did.
pub(super) enum Recovered {
    /// Rewritten and synced again: `bytes` bytes, `records` records.
    Rewrote { bytes: usize, records: u64 },
    /// The rewrite failed too (or the bytes were not kept): `records` are not durable.
    Lost { records: u64, again: io::Error },
}

impl SinkSlot {
    pub(super) fn new(sink: Box<dyn Sink>, level: LevelFilter, layout: LayoutSpec) -> SinkSlot {
        SinkSlot {
            sink,
            level,
            layout,
            buffer: Vec::new(),
            buffered: 0,
            kept: Vec::new(),
            kept_bytes: 0,
            spare: Vec::new(),
            kept_records: 0,
            kept_complete: true,
            dirty: false,
            lost_unreported: 0,
            last_error: None,
            last_error_kind: io::ErrorKind::Other,
            retry_at: None,
            backoff: FIRST_RETRY_BACKOFF,
            drops_told: Dropped::default(),
            sink_notices: Vec::new(),
        }
    }

    pub(super) fn accepts(&self, level: log::Level) -> bool {
        level <= self.level
    }

    /// Queues one record's line.
    pub(super) fn push_record(&mut self, line: &[u8]) {
        self.buffer.extend_from_slice(line);
        self.buffered += 1;
    }

    /// Queues one record's line, laid out by `layout` straight into the buffer.
    pub(super) fn push_record_with(&mut self, layout: impl FnOnce(&mut Vec<u8>)) {
        layout(&mut self.buffer);
        self.buffered += 1;
    }

    /// Appends a line from quelog itself (not a record) to what is waiting.
    pub(super) fn push_notice_bytes(&mut self, line: &[u8]) {
        self.buffer.extend_from_slice(line);
    }

    /// Puts a line from quelog itself before what is waiting.
    pub(super) fn prepend_notice_bytes(&mut self, line: &[u8]) {
        self.buffer.splice(0..0, line.iter().copied());
    }

    /// [`Sink::reopen`], a panic turned into an error.
    pub(super) fn reopen(&mut self, counters: &Counters) -> io::Result<()> {
        guarded(counters, || self.sink.reopen())
    }

    /// [`Sink::detached`]; a sink that panics in it is taken as not detached.
    pub(super) fn detached(&self, counters: &Counters) -> Option<crate::sink::Detached> {
        guarded(counters, || Ok(self.sink.detached())).unwrap_or(None)
    }

    /// Records waiting to be written.
    pub(super) fn buffered(&self) -> u64 {
        self.buffered
    }

    pub(super) fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Writes what is waiting with one call, preceded by the notices this sink owes
    /// (records it lost, drops up to `drops_now`). While backing off, the records are
    /// lost to it instead. `final_attempt` (at stop): try even while backing off.
    pub(super) fn write_out(
        &mut self,
        layout: &mut Layout,
        counters: &Counters,
        drops_now: Dropped,
        final_attempt: bool,
    ) -> Written {
        let owes_drops = drops_now.queue_full > self.drops_told.queue_full
            || drops_now.contended > self.drops_told.contended;
        self.sink.take_notices(&mut self.sink_notices);
        let owes_notice = self.lost_unreported > 0 || owes_drops || !self.sink_notices.is_empty();
        if self.buffer.is_empty() && !owes_notice {
            return Written::default();
        }
        let now = Instant::now();
        let accepted = self.buffered;
        if !final_attempt && self.retry_at.is_some_and(|at| now < at) {
            // Still backing off: these records are lost to this sink; the notices wait.
            self.lost_unreported += accepted;
            self.clear_buffer();
            let error = (accepted > 0).then(|| Error::Sink {
                kind: self.last_error_kind,
                message: format!(
                    "{accepted} records lost: sink failing ({})",
                    self.last_error.as_deref().unwrap_or_default()
                ),
            });
            return Written {
                accepted,
                lost: accepted,
                error,
                fd_changed: false,
            };
        }
        if owes_notice {
            let mut notices = Vec::new();
            if self.lost_unreported > 0 {
                let why = self.last_error.as_deref().unwrap_or_default();
                notice::push_loss_notice(layout, self.lost_unreported, why, &mut notices);
            }
            notice::push_drop_notices(layout, self.drops_told, drops_now, &mut notices);
            for text in &self.sink_notices {
                notice::push_notice(layout, log::Level::Warn, text, &mut notices);
            }
            self.buffer.splice(0..0, notices);
        }
        let fd_before = self.sink.raw_fd();
        let result = guarded(counters, || self.sink.write_batch(&self.buffer));
        let fd_changed = self.sink.raw_fd() != fd_before;
        let outcome = match result {
            Ok(()) => {
                Counters::add(&counters.bytes, self.buffer.len() as u64);
                self.dirty = true;
                self.lost_unreported = 0;
                self.drops_told = drops_now;
                self.sink_notices.clear();
                self.retry_at = None;
                self.backoff = FIRST_RETRY_BACKOFF;
                self.keep_written();
                self.kept_records += accepted;
                Written {
                    accepted,
                    lost: 0,
                    error: None,
                    fd_changed,
                }
            }
            Err(error) => {
                Counters::add(&counters.write_errors, 1);
                self.lost_unreported += accepted;
                self.back_off(now, error.kind(), reason(&error));
                Written {
                    accepted,
                    lost: accepted,
                    error: Some(Error::sink(&error)),
                    fd_changed,
                }
            }
        };
        self.clear_buffer();
        outcome
    }

    /// `lost` records of the batch just written here were lost at another sink and
    /// are counted lost already; a later failed sync here must not count them again.
    /// Level filters nest, so the overlap with this sink's `written` is the smaller.
    pub(super) fn discount_lost_elsewhere(&mut self, written: u64, lost: u64) {
        self.kept_records = self.kept_records.saturating_sub(written.min(lost));
    }

    /// Keeps what was written until it is synced (fsyncgate): the written buffer itself
    /// joins the kept ones, and a spare one takes its place.
    fn keep_written(&mut self) {
        if !self.kept_complete {
            return;
        }
        let next = self.spare.pop().unwrap_or_default();
        let written = std::mem::replace(&mut self.buffer, next);
        self.kept_bytes += written.len();
        self.kept.push(written);
        if self.kept_bytes > MAX_KEPT_BYTES {
            self.recycle_kept();
            self.kept_complete = false;
        }
    }

    /// Empties the kept buffers into the spares (a few; the rest are freed).
    fn recycle_kept(&mut self) {
        for mut buffer in self.kept.drain(..) {
            if self.spare.len() < MAX_SPARE_BUFFERS {
                buffer.clear();
                self.spare.push(buffer);
            }
        }
        self.kept_bytes = 0;
    }

    fn clear_buffer(&mut self) {
        self.buffer.clear();
        self.buffered = 0;
    }

    /// Syncs the sink if it was written since its last sync. `Err`: the sync failed;
    /// call [`SinkSlot::recover_sync`].
    pub(super) fn sync(&mut self, counters: &Counters) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let started = Instant::now();
        let result = guarded(counters, || self.sink.sync());
        counters.sync_latency.record(started.elapsed());
        match &result {
            Ok(()) => {
                Counters::add(&counters.syncs, 1);
                self.dirty = false;
                self.forget_kept();
            }
            Err(_) => Counters::add(&counters.sync_errors, 1),
        }
        result
    }

    /// After a failed sync: reopen, rewrite everything since the last good sync, sync
    /// again. On failure the sink backs off, and its records count as lost to it.
    pub(super) fn recover_sync(&mut self, counters: &Counters, error: &io::Error) -> Recovered {
        let records = self.kept_records;
        let bytes = self.kept_bytes;
        let outcome = if self.kept_complete {
            guarded(counters, || self.sink.prepare_rewrite())
                .and_then(|()| {
                    // Rare: one copy of it all, for one rewrite.
                    let all = self.kept.concat();
                    let written = guarded(counters, || self.sink.write_batch(&all));
                    if written.is_err() {
                        Counters::add(&counters.write_errors, 1);
                    }
                    written
                })
                .and_then(|()| {
                    let started = Instant::now();
                    let synced = guarded(counters, || self.sink.sync());
                    counters.sync_latency.record(started.elapsed());
                    if synced.is_err() {
                        Counters::add(&counters.sync_errors, 1);
                    }
                    synced
                })
        } else {
            Err(io::Error::other(format!(
                "more than {MAX_KEPT_BYTES} bytes since the last good sync, not kept"
            )))
        };
        self.dirty = false;
        self.forget_kept();
        match outcome {
            Ok(()) => {
                Counters::add(&counters.sync_rewrites, 1);
                Counters::add(&counters.syncs, 1);
                Recovered::Rewrote { bytes, records }
            }
            Err(again) => {
                self.lost_unreported += records;
                self.back_off(Instant::now(), error.kind(), reason(error));
                Recovered::Lost { records, again }
            }
        }
    }

    /// Starts the backoff after a failure.
    fn back_off(&mut self, now: Instant, kind: io::ErrorKind, reason: String) {
        self.last_error = Some(reason);
        self.last_error_kind = kind;
        self.retry_at = now.checked_add(self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_RETRY_BACKOFF);
    }

    /// Forgets the bytes kept for a rewrite: synced, or beyond saving.
    fn forget_kept(&mut self) {
        self.recycle_kept();
        self.kept_records = 0;
        self.kept_complete = true;
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

/// Sets the descriptor and level the fatal-signal drain (and a forked child) writes
/// with: the first text sink that has a descriptor (a [`crate::FileSink`]), else the
/// first JSON one (those direct lines are text: a known gap), or none.
pub(super) fn publish_crash_fd(shared: &Shared, sinks: &[SinkSlot]) {
    let with_fd = |text: bool| {
        sinks
            .iter()
            .filter(|slot| matches!(slot.layout, LayoutSpec::Text { .. }) == text)
            .find_map(|slot| slot.sink.raw_fd().map(|fd| (fd, slot.level)))
    };
    let found = with_fd(true).or_else(|| with_fd(false));
    let (fd, level) = found.unwrap_or((-1, LevelFilter::Off));
    shared.crash_level.store(level as usize, Ordering::Relaxed);
    shared.crash_fd.store(fd, Ordering::Relaxed);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::layout::JsonStyle;
    use crate::sink::FileSink;

    fn dir() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("quelog-crash-fd-{}", std::process::id()))
    }

    fn file_slot(name: &str, layout: LayoutSpec) -> (SinkSlot, i32) {
        let dir = dir();
        let sink = FileSink::open(dir.join(name)).unwrap();
        let fd = sink.raw_fd().unwrap();
        (SinkSlot::new(Box::new(sink), LevelFilter::Info, layout), fd)
    }

    #[test]
    fn the_crash_drain_prefers_a_text_file_to_a_json_one() {
        let shared = Shared::new(&crate::queue::QueueConfig::default()).unwrap();
        let json = LayoutSpec::Json {
            style: JsonStyle::Plain,
            source: false,
        };
        let text = LayoutSpec::Text { local_time: false };
        let (first, json_fd) = file_slot("a.json", json);
        let (second, text_fd) = file_slot("b.log", text);
        let mut slots = vec![first, second];
        publish_crash_fd(&shared, &slots);
        assert_eq!(shared.crash_fd.load(Ordering::Relaxed), text_fd);
        slots.truncate(1);
        publish_crash_fd(&shared, &slots);
        assert_eq!(shared.crash_fd.load(Ordering::Relaxed), json_fd);
        drop(slots);
        let _ = std::fs::remove_dir_all(dir());
    }
}
