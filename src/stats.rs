//! Counters: every record is accounted for, by the side that knows its fate.
//!
//! Producers touch these only on their slow paths (a drop, a cut), never per record:
//! a shared counter bumped by every call would bounce one cache line between cores.
//! The listener counts what it takes off the ring.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Records dropped before they reached the queue, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
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

    /// The drops counted since `earlier`, reason by reason.
    pub(crate) fn since(&self, earlier: Dropped) -> Dropped {
        Dropped {
            queue_full: self.queue_full.saturating_sub(earlier.queue_full),
            contended: self.contended.saturating_sub(earlier.contended),
            after_stop: self.after_stop.saturating_sub(earlier.after_stop),
        }
    }

    /// The larger count of each reason.
    pub(crate) fn max(&self, other: Dropped) -> Dropped {
        Dropped {
            queue_full: self.queue_full.max(other.queue_full),
            contended: self.contended.max(other.contended),
            after_stop: self.after_stop.max(other.after_stop),
        }
    }
}

impl std::fmt::Display for Dropped {
    /// `"12 records (queue full: 10, contended: 2)"`, naming only the reasons that
    /// count.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} records (", self.total())?;
        let reasons = [
            ("queue full", self.queue_full),
            ("contended", self.contended),
            ("after stop", self.after_stop),
        ];
        let mut first = true;
        for (name, count) in reasons.into_iter().filter(|(_, n)| *n > 0) {
            if !first {
                f.write_str(", ")?;
            }
            write!(f, "{name}: {count}")?;
            first = false;
        }
        f.write_str(")")
    }
}

/// A snapshot of a queue's counters.
///
/// After any stop, `enqueued + dropped.total()` is every record the handler accepted
/// (it passed the level filter), and
/// `enqueued == written + filtered + lost + abandoned`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Records the listener took off the queue. Records still in the ring are not yet
    /// counted; after `flush()` or a stop this is every record enqueued before it. In
    /// a child forked after install (see "fork" in the crate docs), records written
    /// straight to the file are counted here as they are written.
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
    /// sink), or whose sync failed and could not be rewritten and synced again.
    /// Reported in the log itself once the sink recovers. Includes `damaged`.
    pub lost: u64,
    /// Records in the ring whose bytes were found overwritten (memory corruption
    /// elsewhere in the process) and could not be read; counted in `lost` too.
    pub damaged: u64,
    /// Records given up at a stop: a log call interrupted between claiming its room
    /// and publishing it for longer than the stop's grace period, and, when a stop ran
    /// out of time ([`crate::ListenerConfig::shutdown_timeout`]), what the listener
    /// held and what was still queued. Said on standard error when it happens.
    pub abandoned: u64,
    /// Bytes written to sinks.
    pub bytes: u64,
    /// Successful `sync` calls (fsync of data) across sinks.
    pub syncs: u64,
    /// Flush barriers answered (`flush()` calls that reached the listener). With
    /// several threads flushing at once, one sync serves many barriers (group
    /// commit): compare with [`Stats::syncs`].
    pub flushes: u64,
    /// How long sink syncs took (successful and failed), measured on the listener.
    pub sync_latency: SyncLatency,
    /// Failed sink writes.
    pub write_errors: u64,
    /// Failed sink syncs.
    pub sync_errors: u64,
    /// Failed syncs after which the listener rewrote everything written since the
    /// last good sync (kept in memory for this), reopened the sink, and synced again
    /// successfully. A failed sync whose rewrite also failed counts its records in
    /// [`Stats::lost`] instead.
    pub sync_rewrites: u64,
    /// Sink calls that panicked (caught; counted as failed writes or syncs too).
    pub sink_panics: u64,
    /// Reopen requests the listener served ([`crate::Guard::reopen`],
    /// [`crate::QueueListener::reopen`], SIGHUP with
    /// [`crate::Builder::reopen_on_sighup`]): each reopens every sink once.
    pub reopens: u64,
    /// Times the listener found a sink's file deleted or renamed away under it
    /// ([`crate::Sink::detached`]) and reopened its path, creating the file again if
    /// needed. Each one is also a line in the new file.
    pub detached_reopens: u64,
    /// The tracing subscriber's spans.
    pub spans: SpanStats,
    /// What file rotation did ([`crate::Rotation`]), over every rotating output.
    pub rotation: RotationStats,
}

/// What rotating file outputs did. Every failure here is also said in the log, as a
/// `quelog` line in the output concerned; the records themselves keep going to the
/// live file, so none is lost by a failed rotation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RotationStats {
    /// Rotations done (the live file renamed and created again).
    pub rotations: u64,
    /// Rotations that failed (the directory not writable, disk full): the live file
    /// kept growing, and the rotation was tried again later.
    pub failed: u64,
    /// Rotated files compressed.
    pub compressed: u64,
    /// Compressions that failed (the file is left uncompressed).
    pub compression_failed: u64,
    /// Rotated files removed by retention.
    pub removed: u64,
    /// Rotated files retention could not remove.
    pub removal_failed: u64,
    /// How long each rotation kept the listener from draining (the sync before it,
    /// the renames, the create, retention; compression runs on its own thread and is
    /// not in it), failed attempts included. Same histogram as [`Stats::sync_latency`].
    pub duration: SyncLatency,
}

/// What the tracing subscriber (or layer) did with spans. Spans are not records: they are not in
/// the record counters above.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpanStats {
    /// Spans created.
    pub created: u64,
    /// Spans whose last handle was dropped.
    pub closed: u64,
    /// Spans not created because the span table was at its limit (their events show
    /// an unknown span).
    pub refused: u64,
    /// Span bookkeeping records (new, record, close) dropped because the ring had no
    /// room: the events of those spans show them as `?` or miss their late fields.
    pub lost: u64,
    /// Spans entered deeper than the per-thread depth (64) on some thread; the deeper
    /// ones are not shown as the current span.
    pub depth_overflows: u64,
    /// Span table slots given up after too many lost races (bounded steps): never
    /// reused, so never a wrong span; the table grows past them.
    pub leaked: u64,
}

/// Sync latency from a fixed histogram on the listener (no allocation).
///
/// Percentiles are the upper bound of the histogram bucket holding them: at most
/// 25% above the true value, never below it. `max` is exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncLatency {
    /// Syncs measured.
    pub count: u64,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// The longest.
    pub max: Duration,
}

/// Buckets of [`LatencyHistogram`]: 4 per power of two of microseconds, up to 2^40 us.
const LATENCY_BUCKETS: usize = 4 + 4 * 39;

/// A log-linear histogram of durations in microseconds: values below 4 us have a
/// bucket each, then every power of two is split in 4 equal parts.
#[derive(Debug)]
pub(crate) struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS],
    max_nanos: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: [const { AtomicU64::new(0) }; LATENCY_BUCKETS],
            max_nanos: AtomicU64::new(0),
        }
    }
}

impl LatencyHistogram {
    fn bucket(micros: u64) -> usize {
        if micros < 4 {
            return micros as usize;
        }
        let exponent = 63 - micros.leading_zeros() as usize; // >= 2
        let quarter = ((micros >> (exponent - 2)) & 3) as usize;
        (4 + (exponent - 2) * 4 + quarter).min(LATENCY_BUCKETS - 1)
    }

    /// The smallest value in microseconds above every value of bucket `index`.
    fn upper_bound(index: usize) -> u64 {
        if index < 4 {
            return index as u64 + 1;
        }
        let exponent = (index - 4) / 4 + 2;
        let quarter = ((index - 4) % 4) as u64;
        (4 + quarter + 1) << (exponent - 2)
    }

    pub(crate) fn record(&self, elapsed: Duration) {
        let nanos = elapsed.as_nanos().min(u64::MAX as u128) as u64;
        if let Some(bucket) = self.buckets.get(Self::bucket(nanos / 1_000)) {
            bucket.fetch_add(1, Relaxed);
        }
        self.max_nanos.fetch_max(nanos, Relaxed);
    }

    fn snapshot(&self) -> SyncLatency {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let count: u64 = counts.iter().sum();
        let max = Duration::from_nanos(self.max_nanos.load(Relaxed));
        let percentile = |per_mille: u64| {
            if count == 0 {
                return Duration::ZERO;
            }
            // The rank of the value, 1-based, rounded up.
            let rank = (count * per_mille).div_ceil(1000).max(1);
            let mut seen = 0;
            for (index, n) in counts.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    let bound = Duration::from_micros(Self::upper_bound(index));
                    return bound.min(max);
                }
            }
            max
        };
        SyncLatency {
            count,
            p50: percentile(500),
            p99: percentile(990),
            max,
        }
    }
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
    pub(crate) damaged: AtomicU64,
    pub(crate) abandoned: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) syncs: AtomicU64,
    pub(crate) flushes: AtomicU64,
    pub(crate) sync_latency: LatencyHistogram,
    pub(crate) write_errors: AtomicU64,
    pub(crate) sync_errors: AtomicU64,
    pub(crate) sync_rewrites: AtomicU64,
    pub(crate) sink_panics: AtomicU64,
    pub(crate) reopens: AtomicU64,
    pub(crate) detached_reopens: AtomicU64,
    /// Span bookkeeping entries (new, record, close) that found no room in the ring.
    pub(crate) span_entries_lost: AtomicU64,
    pub(crate) spans_created: AtomicU64,
    pub(crate) spans_closed: AtomicU64,
    pub(crate) spans_refused: AtomicU64,
    /// Shared with every rotating sink (and its compressor thread).
    pub(crate) rotation: std::sync::Arc<RotationCounters>,
}

/// The live counters behind [`RotationStats`].
#[derive(Debug, Default)]
pub(crate) struct RotationCounters {
    pub(crate) rotations: AtomicU64,
    pub(crate) rotation_errors: AtomicU64,
    pub(crate) compressed: AtomicU64,
    pub(crate) compression_errors: AtomicU64,
    pub(crate) removed: AtomicU64,
    pub(crate) removal_errors: AtomicU64,
    pub(crate) latency: LatencyHistogram,
}

impl RotationCounters {
    fn snapshot(&self) -> RotationStats {
        RotationStats {
            rotations: self.rotations.load(Relaxed),
            failed: self.rotation_errors.load(Relaxed),
            compressed: self.compressed.load(Relaxed),
            compression_failed: self.compression_errors.load(Relaxed),
            removed: self.removed.load(Relaxed),
            removal_failed: self.removal_errors.load(Relaxed),
            duration: self.latency.snapshot(),
        }
    }
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
            damaged: self.damaged.load(Relaxed),
            abandoned: self.abandoned.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            syncs: self.syncs.load(Relaxed),
            flushes: self.flushes.load(Relaxed),
            sync_latency: self.sync_latency.snapshot(),
            write_errors: self.write_errors.load(Relaxed),
            sync_errors: self.sync_errors.load(Relaxed),
            sync_rewrites: self.sync_rewrites.load(Relaxed),
            sink_panics: self.sink_panics.load(Relaxed),
            reopens: self.reopens.load(Relaxed),
            detached_reopens: self.detached_reopens.load(Relaxed),
            spans: SpanStats {
                created: self.spans_created.load(Relaxed),
                closed: self.spans_closed.load(Relaxed),
                refused: self.spans_refused.load(Relaxed),
                lost: self.span_entries_lost.load(Relaxed),
                depth_overflows: crate::handler::span_stack::depth_overflows(),
                // The span table counts these itself: `Shared::stats` fills it in.
                leaked: 0,
            },
            rotation: self.rotation.snapshot(),
        }
    }

    /// Moves `n` records from written to lost (a sync failed and their rewrite did
    /// too).
    pub(crate) fn written_became_lost(&self, n: u64) {
        let _ = self
            .written
            .fetch_update(Relaxed, Relaxed, |w| Some(w.saturating_sub(n)));
        self.lost.fetch_add(n, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_bounds_cover_their_values() {
        let mut last = 0;
        for micros in (0..100_000u64).chain([1 << 20, 1 << 30, 1 << 39, u64::MAX / 1000]) {
            let index = LatencyHistogram::bucket(micros);
            assert!(index >= last, "{micros}");
            last = index;
            assert!(LatencyHistogram::upper_bound(index) > micros || index == LATENCY_BUCKETS - 1);
            if index > 0 {
                assert!(
                    LatencyHistogram::upper_bound(index - 1) <= micros,
                    "{micros}"
                );
            }
        }
    }

    #[test]
    fn percentiles_are_never_below_the_true_value_nor_25_percent_above() {
        let histogram = LatencyHistogram::default();
        // 1..=1000 us: p50 = 500 us, p99 = 990 us, max = 1000 us.
        for micros in 1..=1000u64 {
            histogram.record(Duration::from_micros(micros));
        }
        let latency = histogram.snapshot();
        assert_eq!(latency.count, 1000);
        assert_eq!(latency.max, Duration::from_micros(1000));
        let p50 = latency.p50.as_micros() as u64;
        let p99 = latency.p99.as_micros() as u64;
        assert!((500..=625).contains(&p50), "{latency:?}");
        assert!((990..=1000).contains(&p99), "{latency:?}");
    }

    #[test]
    fn empty_histogram_is_zero() {
        assert_eq!(
            LatencyHistogram::default().snapshot(),
            SyncLatency::default()
        );
    }
}
