//! The other readers of the ring, besides the listener's [`super::Consumer`]: a
//! fatal-signal handler's drain ([`CrashDrain`], async-signal-safe), and a stop that
//! gave up on a stuck listener and counts what is left ([`Ring::abandon`],
//! [`Ring::count_unread`]). Both coordinate with the listener through the `consuming`
//! word (see the module docs of [`crate::ring`]).

use super::{Look, Ring, ABANDONED, CONSUMER_ACTIVE, CONSUMER_WRITING, CRASH_CLAIMED};
use super::{FRAME_ABORTED, FRAME_BYTES, FRAME_CORRUPT, SLOT_BYTES};
use crate::sync::Ordering;

/// Payload bytes [`Ring::count_unread`] shows its `counts` per record.
pub(crate) const PEEK_BYTES: usize = 64;

impl Ring {
    /// Fatal-signal side: claims the ring for a crash drain. Returns `false` if another
    /// crash holds the claim. Async-signal-safe (one `fetch_or`).
    pub(crate) fn crash_claim(&self) -> bool {
        self.consuming.fetch_or(CRASH_CLAIMED, Ordering::AcqRel) & CRASH_CLAIMED == 0
    }

    /// Fatal-signal side: whether the listener still has records out of the ring
    /// (taking them, or writing them to its sinks). After [`Ring::crash_claim`] it
    /// cannot take the token again, so once this is `false` it stays `false` until
    /// [`Ring::crash_release`].
    pub(crate) fn consumer_active(&self) -> bool {
        self.consuming.load(Ordering::Acquire) & (CONSUMER_ACTIVE | CONSUMER_WRITING) != 0
    }

    /// Stop side, when the listener did not finish in time: forbids it to take records
    /// again ([`super::Consumer::hold`] fails from now on). Once
    /// [`Ring::consumer_taking`] is `false` (it finished taking the batch it was
    /// taking, a bounded in-memory step), the ring may be counted with
    /// [`Ring::count_unread`].
    pub(crate) fn abandon(&self) {
        self.consuming.fetch_or(ABANDONED, Ordering::AcqRel);
    }

    /// Whether the listener is taking records off the ring right now. After
    /// [`Ring::abandon`], once `false` it stays `false`. Acquire: its position and frees
    /// are visible then.
    pub(crate) fn consumer_taking(&self) -> bool {
        self.consuming.load(Ordering::Acquire) & CONSUMER_ACTIVE != 0
    }

    /// Published records that `counts`, and runs of claimed-but-unpublished slots
    /// (each at least one interrupted claim), between the last reader's position and
    /// `tail`; read only. `counts` gets the first [`PEEK_BYTES`] of each record's
    /// payload (all of it if shorter) and says whether it is one to count (the queue
    /// counts records, not the tracing subscriber's span bookkeeping); a record whose
    /// frame is corrupt is counted without asking. Call only after [`Ring::close`] and
    /// a successful [`Ring::abandon`]: nobody claims, nobody consumes, and published
    /// bytes no longer change.
    pub(crate) fn count_unread(&self, mut counts: impl FnMut(&[u8]) -> bool) -> (u64, u64) {
        let mut records = 0;
        let from = self.resume_at.load(Ordering::Acquire);
        let pending = self.scan(from, self.tail(), |pos, len, flags| {
            if flags & FRAME_ABORTED != 0 {
                return;
            }
            if flags & FRAME_CORRUPT != 0 {
                records += 1;
                return;
            }
            let mut head = [0u8; PEEK_BYTES];
            let mut at = 0;
            // Nobody writes or frees published bytes any more (see above).
            self.read_record(
                pos,
                FRAME_BYTES,
                len.min(FRAME_BYTES + PEEK_BYTES),
                |bytes| {
                    if let Some(dst) = head.get_mut(at..at + bytes.len()) {
                        dst.copy_from_slice(bytes);
                    }
                    at += bytes.len();
                },
            );
            if counts(head.get(..at).unwrap_or_default()) {
                records += 1;
            }
        });
        (records, pending)
    }

    /// Fatal-signal side: the records not yet taken by the listener, for the thread
    /// whose [`Ring::crash_claim`] returned `true`. `None` while the listener holds the
    /// token or if the ring was not claimed for a crash.
    pub(crate) fn crash_drain(&self) -> Option<CrashDrain<'_>> {
        // Acquire pairs with the consumer's release of the token: its last position and
        // the slots it freed are visible.
        let state = self.consuming.load(Ordering::Acquire);
        if state & CRASH_CLAIMED == 0 || state & CONSUMER_ACTIVE != 0 {
            return None;
        }
        let head = self.resume_at.load(Ordering::Relaxed);
        Some(CrashDrain {
            ring: self,
            head,
            // The end of the ring now: the drain stops there even if other threads keep
            // logging (each record it frees makes room for one more). Claims are whole
            // records, so `end` is a record boundary, and `head <= end` (`resume_at`
            // never passes `tail`, which only grows).
            end: self.tail(),
        })
    }

    /// Fatal-signal side: gives the ring back after a drain (or after giving up on
    /// one). `resume_at` stays where the drain stopped, so the listener, if the
    /// process goes on, resumes after the records the drain wrote.
    pub(crate) fn crash_release(&self) {
        // Release: the listener's acquire in `Consumer::hold` sees `resume_at` and the
        // slots the drain freed.
        self.consuming.fetch_and(!CRASH_CLAIMED, Ordering::Release);
    }

    /// Whether a crash drain holds the claim now.
    pub(crate) fn crash_claimed(&self) -> bool {
        self.consuming.load(Ordering::Acquire) & CRASH_CLAIMED != 0
    }
}

/// One published record found by a crash drain.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CrashRecord {
    pos: u64,
    /// Frame plus payload bytes.
    len: usize,
    aborted: bool,
}

impl CrashRecord {
    /// Payload bytes.
    pub(crate) fn payload_len(&self) -> usize {
        self.len - FRAME_BYTES
    }
}

/// What [`CrashDrain::next`] found.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CrashNext {
    /// A published record (maybe an aborted claim: skip it with `free`).
    Record(CrashRecord),
    /// Nothing claimed past the drain, or it reached the end of its snapshot.
    Empty,
    /// The next record is claimed but not published.
    Pending,
}

/// The reader a fatal-signal handler uses instead of the listener's [`Consumer`]. No
/// allocation, no lock: async-signal-safe.
pub(crate) struct CrashDrain<'a> {
    ring: &'a Ring,
    head: u64,
    /// `tail` when the drain started: it reads no further.
    end: u64,
}

impl CrashDrain<'_> {
    /// The record at the drain's position, if published. [`CrashNext::Empty`] at the
    /// end of the ring as it was when the drain started.
    pub(crate) fn next(&self) -> CrashNext {
        let pos = self.head;
        if pos >= self.end {
            return CrashNext::Empty;
        }
        let (len, flags) = match self.ring.look(pos) {
            Look::Published { len, flags } => (len, flags),
            Look::Empty => return CrashNext::Empty,
            // The handler cannot search safely for the next record start; a damaged
            // frame ends the drain like a pending claim.
            Look::Pending | Look::Corrupt => return CrashNext::Pending,
        };
        CrashNext::Record(CrashRecord {
            pos,
            len,
            aborted: flags & FRAME_ABORTED != 0,
        })
    }

    /// Whether `record` is an aborted claim, to skip.
    pub(crate) fn is_aborted(record: &CrashRecord) -> bool {
        record.aborted
    }

    /// Calls `f` with the payload bytes `[from, to)` of `record`, piece by piece.
    pub(crate) fn read(&self, record: &CrashRecord, from: usize, to: usize, f: impl FnMut(&[u8])) {
        let to = to.min(record.payload_len());
        if from < to {
            self.ring
                .read_record(record.pos, FRAME_BYTES + from, FRAME_BYTES + to, f);
        }
    }

    /// Marks `record` as written: frees its slots and moves past it.
    pub(crate) fn free(&mut self, record: &CrashRecord) {
        let slots = record.len.div_ceil(SLOT_BYTES) as u64;
        self.ring.free_record(record.pos, slots);
        self.head = record.pos + slots;
        self.ring.resume_at.store(self.head, Ordering::Relaxed);
    }
}
