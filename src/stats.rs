//! Counters: every record is accounted for, by the side that knows its fate.
//!
//! Producers touch these only on their slow paths (a drop, a cut), never per record:
//! a shared counter bumped by every call would bounce one cache line between cores.
//! The listener counts what it takes off the ring.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Records dropped before they reached the queue, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// The ring had no room (in `Overflow::Block` mode: not even after the timeout).
    pub queue_full: u64,
    /// Lost the race for a slot to other producers too many times in a row.
    pub contended: u64,
    /// Logged after the listener was stopped; written straight to standard error
    /// with `write(2)` instead of the sinks.
    pub after_stop: u64,
}

impl Dropped {
    /// All drops together.
    pub fn total(&self) -> u64 {
        self.queue_full + self.contended + self.after_stop
    }
}

/// A snapshot of a queue's counters.
///
/// After a clean stop, `enqueued + dropped.total()` is every record the handler
/// accepted (it passed the level filter), and `enqueued == written + filtered + lost`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records the listener took off the queue. Records still in the ring are not yet
    /// counted; after `flush()` or a stop this is every record enqueued before it.
    pub enqueued: u64,
    /// Records that never entered the queue.
    pub dropped: Dropped,
    /// Records whose message was cut to the size limit (they are also enqueued).
    pub truncated: u64,
    /// Records written to every sink whose level filter accepted them.
    pub written: u64,
    /// Records no sink's level filter accepted.
    pub filtered: u64,
    /// Records at least one sink failed to write (disk full, I/O error, a panicking
    /// sink). Reported in the log itself once the sink recovers.
    pub lost: u64,
    /// Bytes written to sinks.
    pub bytes: u64,
    /// Successful `sync` calls (fsync of data) across sinks.
    pub syncs: u64,
    /// Failed sink writes.
    pub write_errors: u64,
    /// Failed sink syncs.
    pub sync_errors: u64,
}

/// The live counters behind [`Stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) dropped_full: AtomicU64,
    pub(crate) dropped_contended: AtomicU64,
    pub(crate) dropped_after_stop: AtomicU64,
    pub(crate) truncated: AtomicU64,
    pub(crate) enqueued: AtomicU64,
    pub(crate) written: AtomicU64,
    pub(crate) filtered: AtomicU64,
    pub(crate) lost: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) syncs: AtomicU64,
    pub(crate) write_errors: AtomicU64,
    pub(crate) sync_errors: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn dropped(&self) -> Dropped {
        Dropped {
            queue_full: self.dropped_full.load(Relaxed),
            contended: self.dropped_contended.load(Relaxed),
            after_stop: self.dropped_after_stop.load(Relaxed),
        }
    }

    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            enqueued: self.enqueued.load(Relaxed),
            dropped: self.dropped(),
            truncated: self.truncated.load(Relaxed),
            written: self.written.load(Relaxed),
            filtered: self.filtered.load(Relaxed),
            lost: self.lost.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            syncs: self.syncs.load(Relaxed),
            write_errors: self.write_errors.load(Relaxed),
            sync_errors: self.sync_errors.load(Relaxed),
        }
    }
}
