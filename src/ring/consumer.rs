//! The listener's reader: [`Consumer`], which takes records in order and frees their
//! slots, and hands the `consuming` token around (see the module docs of
//! [`crate::ring`]).

use super::{Look, Ring, ABANDONED, CONSUMER_ACTIVE, CONSUMER_WRITING, CRASH_CLAIMED};
use super::{FRAME_ABORTED, FRAME_BYTES, FRAME_CORRUPT, SLOT_BYTES};
use crate::sync::Ordering;

/// What [`Consumer::pop_into`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pop {
    /// A record was copied out and its slots freed.
    Record,
    /// Nothing claimed past the consumer.
    Empty,
    /// The next record is claimed but not yet published: its producer is between
    /// claim and publish (perhaps interrupted by a signal). Try again later.
    Pending,
    /// A record with an impossible frame (memory corruption elsewhere) was skipped, up
    /// to the next record start: count it lost.
    Damaged,
}

/// The single consumer. Only one exists per ring at a time.
pub(crate) struct Consumer<'a> {
    pub(super) ring: &'a Ring,
    pub(super) head: u64,
    /// Holds the `consuming` token (see the module docs).
    pub(super) holding: bool,
}

impl Consumer<'_> {
    /// Takes the `consuming` token, if it does not hold it already: `false` while a
    /// crash drain holds the ring (see [`Ring::crash_release`]).
    pub(crate) fn hold(&mut self) -> bool {
        if !self.holding {
            // Only from a state without a crash claim or an abandon; `CONSUMER_WRITING`
            // may be set (the listener's own previous batch). Acquire pairs with the
            // release of the token by the last reader (this consumer, or a crash drain
            // that gave the ring back).
            let state = self.ring.consuming.load(Ordering::Relaxed);
            self.holding = state & (CRASH_CLAIMED | ABANDONED | CONSUMER_ACTIVE) == 0
                && self
                    .ring
                    .consuming
                    .compare_exchange(
                        state,
                        state | CONSUMER_ACTIVE,
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_ok();
            if self.holding {
                // A crash drain may have read on from where this consumer let go.
                // Without one, this is the position `release` stored.
                self.head = self.ring.resume_at.load(Ordering::Relaxed);
            }
        }
        self.holding
    }

    /// Done taking records for now, about to write them to the sinks: trades
    /// `CONSUMER_ACTIVE` for `CONSUMER_WRITING`, so a crash drain still waits for the
    /// batch while a stop that gives up may count the ring. Setting the writing bit
    /// first means there is no moment with neither.
    pub(crate) fn begin_write(&mut self) {
        if self.holding {
            self.ring
                .consuming
                .fetch_or(CONSUMER_WRITING, Ordering::Relaxed);
            self.release();
        }
    }

    /// The records taken before [`Consumer::begin_write`] are written: the listener has
    /// nothing out of the ring any more.
    pub(crate) fn end_write(&mut self) {
        // Release: a crash drain that sees the bit clear sees the sinks' writes as done.
        self.ring
            .consuming
            .fetch_and(!CONSUMER_WRITING, Ordering::Release);
    }

    /// Whether a stop gave up on this consumer ([`Ring::abandon`]).
    pub(crate) fn abandoned(&self) -> bool {
        self.ring.consuming.load(Ordering::Acquire) & ABANDONED != 0
    }

    /// At a final stop, once the ring is closed and the records before a claim that
    /// was never published have waited long enough: takes every published record
    /// behind such claims, in position order, calling `take` with each payload, and
    /// frees them. Returns the number of unpublished runs stepped over (each at least
    /// one interrupted log call, whose record will never be read). Afterwards the
    /// consumer is at the end of the ring.
    pub(crate) fn take_behind_pending(
        &mut self,
        out: &mut Vec<u8>,
        mut take: impl FnMut(&[u8]),
    ) -> u64 {
        if !self.hold() {
            return 0;
        }
        let ring = self.ring;
        let end = ring.tail();
        let pending = ring.scan(self.head, end, |pos, len, flags| {
            if flags & (FRAME_ABORTED | FRAME_CORRUPT) == 0 {
                out.clear();
                ring.read_record(pos, FRAME_BYTES, len, |bytes| out.extend_from_slice(bytes));
                take(out);
            }
            // Out of order, which is harmless only because the ring is closed: nobody
            // will claim these slots again.
            ring.free_record(pos, len.div_ceil(SLOT_BYTES) as u64);
        });
        self.head = end;
        pending
    }

    /// Gives the token back, publishing the position: call once everything taken out
    /// since [`Consumer::hold`] is written. [`Consumer::pop_into`] takes it again.
    pub(crate) fn release(&mut self) {
        if self.holding {
            self.holding = false;
            self.ring.resume_at.store(self.head, Ordering::Relaxed);
            // Release: a crash drain that sees the bit clear sees `resume_at` and every
            // slot freed before it.
            self.ring
                .consuming
                .fetch_and(!CONSUMER_ACTIVE, Ordering::Release);
        }
    }

    /// Position of the next record to read.
    pub(crate) fn position(&self) -> u64 {
        self.head
    }

    /// Slots neither claimed nor waiting to be read: the room a producer finds now.
    pub(crate) fn free_slots(&self) -> usize {
        let used = self.ring.tail().saturating_sub(self.head) as usize;
        self.ring.slots().saturating_sub(used)
    }

    /// Whether every claimed slot has been read.
    pub(crate) fn is_empty(&self) -> bool {
        self.ring.tail() == self.head
    }

    /// Copies the next published record's payload into `out` (cleared first) and frees
    /// its slots. Skips aborted claims. Takes the `consuming` token first if it does not
    /// hold it (see [`Consumer::hold`]); reports [`Pop::Pending`] if a crash drain owns
    /// the ring.
    pub(crate) fn pop_into(&mut self, out: &mut Vec<u8>) -> Pop {
        if !self.hold() {
            return Pop::Pending;
        }
        loop {
            let pos = self.head;
            let (len, flags) = match self.ring.look(pos) {
                Look::Published { len, flags } => (len, flags),
                Look::Empty => return Pop::Empty,
                Look::Pending => return Pop::Pending,
                Look::Corrupt => return self.skip_damaged(),
            };
            let slots = len.div_ceil(SLOT_BYTES) as u64;

            out.clear();
            out.reserve(len - FRAME_BYTES);
            self.ring
                .read_record(pos, FRAME_BYTES, len, |bytes| out.extend_from_slice(bytes));

            self.ring.free_record(pos, slots);
            self.head = pos + slots;

            if flags & FRAME_ABORTED == 0 {
                return Pop::Record;
            }
        }
    }
}

impl Consumer<'_> {
    /// The record at `head` has an impossible frame, so its length is unknown: move to
    /// the next record start that is published (found by its stamp, see
    /// [`Ring::scan`]), freeing the slots in between as the damaged record's. If no
    /// record after it is published yet, wait ([`Pop::Pending`]) rather than guess.
    fn skip_damaged(&mut self) -> Pop {
        let ring = self.ring;
        let pos = self.head;
        let end = ring.tail();
        let mut next = None;
        let mut at = pos + 1;
        while at < end {
            if ring.load_seq(at, Ordering::Acquire) == at + 1 {
                next = Some(at);
                break;
            }
            at += 1;
        }
        let Some(next) = next else {
            return Pop::Pending;
        };
        // The slots up to `next` were claimed for this lap (they lie before `tail`).
        // Usually they are the damaged record's continuation; if one was another
        // producer's unpublished claim, memory was corrupt anyway.
        ring.free_record(pos, next - pos);
        self.head = next;
        Pop::Damaged
    }
}

impl Drop for Consumer<'_> {
    fn drop(&mut self) {
        self.release();
        self.ring.resume_at.store(self.head, Ordering::Relaxed);
        self.ring.consumer_taken.store(false, Ordering::Release);
    }
}
