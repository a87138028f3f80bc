//! The span id table of the coming `tracing_core::Subscriber`: an id, a reference count
//! and one word of data per live span, without a lock.
//!
//! `tracing` calls the subscriber's `new_span`, `clone_span`, `try_close` and its
//! lookups from any thread, signal handlers included, so this table keeps the producer
//! contract of the crate docs: no lock, bounded steps, no panic, and no allocation
//! except while creating a span grows the table.
//!
//! # Algorithm
//!
//! * **Slots in doubling segments.** Slot `index` lives in segment `k`, which holds
//!   `first << k` slots (`first` is the first segment's length, a power of two). Each
//!   segment is a boxed slice behind an [`AtomicPtr`], installed by compare-and-swap
//!   when its first slot is handed out (a thread that loses the race frees its own
//!   allocation and uses the winner's). Segments are freed only when the table drops,
//!   so a `&Slot` stays valid for as long as the `&SpanTable` it came from: no hazard
//!   pointers or epochs are needed. At most [`MAX_LIVE`] slots in all.
//! * **One state word per slot**: `generation << 32 | references`. A span is live while
//!   its references are not zero. Every change is one compare-and-swap on that word
//!   that checks the generation in the same step, so a stale id cannot touch a later
//!   span in its slot, and a clone that finds zero references fails instead of
//!   bringing a closed span back. The release that takes the count from one to zero
//!   bumps the generation in that same CAS: from then on every old id is refused.
//! * **Ids** are `generation << 32 | (index + 1)`: never zero, and different for every
//!   life of a slot (until its generation wraps, after 2^32 spans in that one slot).
//! * **Free list**: a Treiber stack of slot indices (each free slot holds the next
//!   one's index in `next`) whose head packs `tag << 32 | (index + 1)` into one
//!   [`AtomicU64`]. Every push and pop increments the tag, so a pop that read head `A`
//!   and `A.next == B` cannot succeed after others popped `A` and `B` and pushed `A`
//!   back (ABA): the head's value changed even though its index did not. Slots never
//!   used come from a bump counter when the list is empty.
//!
//! # Bounded steps
//!
//! Every CAS loop gives up after [`ATTEMPTS`] lost races. Each lost race means another
//! thread's operation succeeded, so the table as a whole always progresses, and a
//! signal handler that interrupted an operation of its own thread cannot spin on it.
//! Giving up means: [`SpanTable::create`] returns `None`, [`SpanTable::clone_ref`]
//! `false`, [`SpanTable::release`] [`Release::Unknown`] (the span stays open: leaked,
//! never closed early), and a closed slot that cannot be pushed on the free list is
//! leaked and counted ([`SpanTable::leaked`]). The caller counts the others.

use std::num::NonZeroU64;
use std::ptr;

use crate::sync::{AtomicPtr, AtomicU32, AtomicU64, CachePadded, Ordering};

/// Live spans the first segment holds unless the subscriber asks otherwise.
pub(crate) const DEFAULT_CAPACITY: usize = 4096;

/// The most slots a table ever has (so the most live spans): the hard maximum at which
/// [`SpanTable::create`] returns `None`. 2^24 slots of 24 bytes: 384 MiB at most.
pub(crate) const MAX_LIVE: u32 = 1 << 24;

/// How many lost races a CAS loop accepts before it gives up (see the module docs).
pub(crate) const ATTEMPTS: u32 = 64;

/// Segments enough for [`MAX_LIVE`] slots even when the first holds one slot: segments
/// `0..k` hold `first * (2^k - 1)` slots, and `2^25 - 1 >= 2^24`.
const SEGMENTS: usize = 25;

// `2^SEGMENTS - 1 >= MAX_LIVE`, checked at compile time.
const _: () = assert!((1u64 << SEGMENTS) > MAX_LIVE as u64);

/// The low half of a state word: the reference count.
const REFS: u64 = 0xffff_ffff;

/// One in the generation half of a state word (and in the tag half of the free list's
/// head).
const ONE_UP: u64 = 1 << 32;

/// What [`SpanTable::release`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Release {
    /// That was the last reference: the span is closed and its id is dead.
    Closed,
    /// Other references remain.
    StillOpen,
    /// The id is not live (closed already, never handed out, or not from this table),
    /// or the release lost [`ATTEMPTS`] races in a row and did nothing.
    Unknown,
}

/// One span's place in the table.
struct Slot {
    /// `generation << 32 | references`. Zero references: free (or leaked).
    state: AtomicU64,
    /// The creator's word (the subscriber: its `&'static Metadata` as an address).
    /// Atomic because a lookup through a stale id may read it while a new span in the
    /// slot writes it; the generation check after the read discards such a value.
    data: AtomicU64,
    /// While the slot is on the free list: the next free slot's index + 1 (0: none).
    next: AtomicU32,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            state: AtomicU64::new(0),
            data: AtomicU64::new(0),
            next: AtomicU32::new(0),
        }
    }
}

/// The table: see the module docs.
pub(crate) struct SpanTable {
    /// Segment `k`: null until its first slot is handed out, then the first element of
    /// a boxed slice of `segment_len(k)` slots, until the table drops.
    segments: [AtomicPtr<Slot>; SEGMENTS],
    /// log2 of the first segment's length.
    shift: u32,
    /// No slot index reaches this (at most [`MAX_LIVE`]).
    max: u32,
    /// The free list's head: `tag << 32 | (index + 1)`, 0 in the low half when empty.
    free: CachePadded<AtomicU64>,
    /// Slots handed out at least once: the next never used slot's index.
    bumped: AtomicU32,
    /// Slots lost for good (see the module docs): closed slots whose push onto the
    /// free list gave up, and fresh slots whose segment could not be allocated.
    leaked: AtomicU64,
}

impl SpanTable {
    /// A table whose first segment, allocated now, holds `capacity` live spans (rounded
    /// up to a power of two, at least one, at most [`MAX_LIVE`]). More spans than that
    /// allocate further segments, each twice as long as the one before.
    pub(crate) fn with_capacity(capacity: usize) -> SpanTable {
        SpanTable::with_limit(capacity, MAX_LIVE)
    }

    /// [`SpanTable::with_capacity`] with a hard maximum of `max` slots (clamped to
    /// `1..=MAX_LIVE`) instead of [`MAX_LIVE`]: tests reach it without 2^24 spans.
    pub(crate) fn with_limit(capacity: usize, max: u32) -> SpanTable {
        let max = max.clamp(1, MAX_LIVE);
        // `max as usize` <= 2^24: the power of two cannot overflow.
        let first = capacity.clamp(1, max as usize).next_power_of_two();
        let table = SpanTable {
            segments: std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
            shift: first.trailing_zeros(),
            max,
            free: CachePadded(AtomicU64::new(0)),
            bumped: AtomicU32::new(0),
            leaked: AtomicU64::new(0),
        };
        // Preallocated, so the first `first` spans never allocate. If the allocation
        // fails the first `create` tries again (and fails the same way: `None`).
        table.install(0);
        table
    }

    /// Creates a live span with one reference and `data`, and returns its id; `None`
    /// when the table holds [`MAX_LIVE`] slots and none is free (or a segment could
    /// not be allocated, or [`ATTEMPTS`] lost races): the caller counts it.
    ///
    /// Reuses a free slot if there is one, else takes a never used slot, allocating
    /// its segment if it is the segment's first one handed out. That allocation is the
    /// only one in this table after `with_capacity`, and the only step that is not
    /// async-signal-safe: a span created in a signal handler while the preallocated
    /// slots are all live calls `malloc`.
    pub(crate) fn create(&self, data: u64) -> Option<NonZeroU64> {
        // A free list that is empty, or too contended, leaves a never used slot.
        let index = match self.pop_free() {
            Some(index) => index,
            None => self.bump()?,
        };
        let Some(slot) = self.slot(index) else {
            // Unreachable: a popped slot was live before, and `bump` installed the
            // segment of a fresh one. Leak the index rather than fail louder.
            self.leaked.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        // The slot is ours alone now: off the free list (or never used), zero
        // references, so no CAS elsewhere can succeed on it. Relaxed: the pop's acquire
        // (or the segment's) made the close that bumped the generation visible.
        let generation = slot.state.load(Ordering::Relaxed) & !REFS;
        // Release pairs with the acquire in `data`: a lookup that reads this value
        // also sees the state stores before it, in particular the close of the
        // slot's previous life (see `data`).
        slot.data.store(data, Ordering::Release);
        // Release pairs with the acquire in `data`: a lookup that sees the span live
        // sees its data.
        slot.state.store(generation | 1, Ordering::Release);
        NonZeroU64::new(generation | (u64::from(index) + 1))
    }

    /// Adds a reference to the live span `id`: `true` if it did, `false` if `id` is not
    /// live (closed, zero references, never handed out), its count is at `u32::MAX`, or
    /// after [`ATTEMPTS`] lost races. Never allocates.
    pub(crate) fn clone_ref(&self, id: NonZeroU64) -> bool {
        let Some(slot) = self.lookup(id) else {
            return false;
        };
        let generation = id.get() & !REFS;
        // Relaxed, as `Arc::clone`: a new reference is made from one the caller holds,
        // which orders it after the span's creation; the CAS checks the word anyway.
        let mut state = slot.state.load(Ordering::Relaxed);
        for _ in 0..ATTEMPTS {
            let refs = state & REFS;
            // Another life of the slot, or closed: never resurrect. A full count stays
            // full rather than wrap to zero.
            if state & !REFS != generation || refs == 0 || refs == REFS {
                return false;
            }
            // The CAS succeeds only if nothing changed since the load: in particular
            // not the release that closes the span.
            match slot.state.compare_exchange(
                state,
                state + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => state = now,
            }
        }
        false
    }

    /// Drops a reference to the live span `id`: [`Release::Closed`] if it was the last
    /// one (the id is dead from then on and the slot free for another span),
    /// [`Release::StillOpen`] if not, [`Release::Unknown`] if `id` is not live (or after
    /// [`ATTEMPTS`] lost races, having done nothing). Never allocates.
    pub(crate) fn release(&self, id: NonZeroU64) -> Release {
        let Some(slot) = self.lookup(id) else {
            return Release::Unknown;
        };
        let generation = id.get() & !REFS;
        let mut state = slot.state.load(Ordering::Relaxed);
        for _ in 0..ATTEMPTS {
            let refs = state & REFS;
            if state & !REFS != generation || refs == 0 {
                return Release::Unknown;
            }
            if refs == 1 {
                // The last reference: zero references and the next generation in one
                // step, so no clone can slip in between (it would find zero, or
                // another generation). AcqRel, as `Arc`'s last drop: acquire pairs with
                // the release of every other reference's drop, so what their holders
                // did with the span (the subscriber's own per-span state too) comes
                // before the slot's next life; release passes that on through the free
                // list.
                let closed = generation.wrapping_add(ONE_UP);
                match slot.state.compare_exchange(
                    state,
                    closed,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        self.push_free(id_index(id));
                        return Release::Closed;
                    }
                    Err(now) => state = now,
                }
            } else {
                // Not the last: release, as `Arc`'s drop, for the closer's acquire.
                match slot.state.compare_exchange(
                    state,
                    state - 1,
                    Ordering::Release,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Release::StillOpen,
                    Err(now) => state = now,
                }
            }
        }
        Release::Unknown
    }

    /// The data `id` was created with, if it is live. Never allocates.
    ///
    /// A seqlock read: check the state, read the data, check the state again. A stale
    /// id may read the data of a later span in its slot; that span's creation came after
    /// the close that changed the generation, so the second check fails.
    pub(crate) fn data(&self, id: NonZeroU64) -> Option<u64> {
        let slot = self.lookup(id)?;
        let generation = id.get() & !REFS;
        let live = |state: u64| state & !REFS == generation && state & REFS != 0;
        // Acquire pairs with the release in `create`: a live state means its data is
        // visible.
        if !live(slot.state.load(Ordering::Acquire)) {
            return None;
        }
        // Acquire pairs with the release store in `create`: if this reads the data of a
        // later life of the slot, the close before that life happened before this load,
        // so the load below cannot read an older state than the close.
        let data = slot.data.load(Ordering::Acquire);
        // Relaxed: ordered after the data by the acquire above.
        live(slot.state.load(Ordering::Relaxed)).then_some(data)
    }

    /// Slots lost for good (see the module docs: a closed slot whose push onto the free
    /// list gave up, a fresh one whose segment could not be allocated), for the
    /// subscriber's counters.
    pub(crate) fn leaked(&self) -> u64 {
        self.leaked.load(Ordering::Relaxed)
    }

    /// The slot `id` names, if its segment exists; whether the span is live is for the
    /// state word to say.
    fn lookup(&self, id: NonZeroU64) -> Option<&Slot> {
        // Index 0 in the id is `index + 1` = 0: never handed out.
        (id.get() as u32)
            .checked_sub(1)
            .and_then(|index| self.slot(index))
    }

    /// Pops a slot off the free list: `None` if it is empty or after [`ATTEMPTS`] lost
    /// races.
    fn pop_free(&self) -> Option<u32> {
        // Acquire pairs with the release of the push that made this the head: the
        // slot's `next`, and the close before the push, are visible.
        let mut head = self.free.load(Ordering::Acquire);
        for _ in 0..ATTEMPTS {
            let index = (head as u32).checked_sub(1)?;
            let slot = self.slot(index)?;
            // Relaxed: the acquire above ordered this after the push's store. If the
            // slot was popped (and pushed again) since, this may read a newer link, but
            // then the head's tag changed and the CAS fails.
            let next = slot.next.load(Ordering::Relaxed);
            let popped = (head & !REFS).wrapping_add(ONE_UP) | u64::from(next);
            // Acquire on failure too: the head read then is the next one tried.
            match self
                .free
                .compare_exchange(head, popped, Ordering::Acquire, Ordering::Acquire)
            {
                Ok(_) => return Some(index),
                Err(now) => head = now,
            }
        }
        None
    }

    /// Pushes the slot just closed onto the free list; leaks it (counted) after
    /// [`ATTEMPTS`] lost races.
    fn push_free(&self, index: u32) {
        let Some(slot) = self.slot(index) else {
            return;
        };
        // Relaxed: only the value is used, as the new head's link.
        let mut head = self.free.load(Ordering::Relaxed);
        for _ in 0..ATTEMPTS {
            // The slot is ours until the CAS below publishes it: nobody reads this link
            // before a pop acquires the new head.
            slot.next.store(head as u32, Ordering::Relaxed);
            let pushed = (head & !REFS).wrapping_add(ONE_UP) | (u64::from(index) + 1);
            // Release pairs with the acquire in `pop_free`: the link above and the close
            // before it happen before the slot's next life.
            match self
                .free
                .compare_exchange(head, pushed, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
        self.leaked.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes a never used slot and makes sure its segment exists: `None` at the hard
    /// maximum, after [`ATTEMPTS`] lost races, or if the segment cannot be allocated
    /// (that index is then leaked, counted).
    fn bump(&self) -> Option<u32> {
        // Relaxed: the counter only hands out distinct numbers; the segment has its
        // own synchronisation.
        let mut bumped = self.bumped.load(Ordering::Relaxed);
        for _ in 0..ATTEMPTS {
            // A compare-and-swap, not `fetch_add`: a full table that keeps being asked
            // must not wrap the counter.
            if bumped >= self.max {
                return None;
            }
            match self.bumped.compare_exchange(
                bumped,
                bumped + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    let (segment, _) = self.locate(bumped);
                    if self.install(segment) {
                        return Some(bumped);
                    }
                    self.leaked.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                Err(now) => bumped = now,
            }
        }
        None
    }

    /// Makes sure segment `k` exists: `false` if it does not and cannot be allocated.
    fn install(&self, k: usize) -> bool {
        let Some(segment) = self.segments.get(k) else {
            return false;
        };
        // Acquire pairs with the installing CAS below: the slots' initial values are
        // visible.
        if !segment.load(Ordering::Acquire).is_null() {
            return true;
        }
        let len = self.segment_len(k);
        let Some(fresh) = allocate(len) else {
            return false;
        };
        // Release: whoever loads the pointer sees the slots initialised. Acquire on
        // failure: the winner's, which we use from now on.
        match segment.compare_exchange(ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(_) => {
                // SAFETY: `fresh` came from `allocate(len)` just above and the failed
                // CAS never published it: nobody else has seen it.
                unsafe { free_segment(fresh, len) };
                true
            }
        }
    }

    /// Slot `index`, if its segment exists.
    fn slot(&self, index: u32) -> Option<&Slot> {
        if index >= self.max {
            return None;
        }
        let (k, offset) = self.locate(index);
        // Acquire pairs with the installing CAS in `install`.
        let base = self.segments.get(k)?.load(Ordering::Acquire);
        if base.is_null() || offset >= self.segment_len(k) {
            return None;
        }
        // A non-null segment is a boxed slice of `segment_len(k)` slots (`install`),
        // freed only by `Drop`, which needs `&mut self`: not while this borrow lives.
        // SAFETY: so the slot outlives the borrow; `offset` is inside the slice
        // (checked above); slots are only ever shared (atomics).
        Some(unsafe { &*base.add(offset) })
    }

    /// Segment and offset in it of slot `index` (< `max`). Segment `k` starts at
    /// `first * (2^k - 1)`, so `index / first + 1` has its highest bit at `k`.
    fn locate(&self, index: u32) -> (usize, usize) {
        let q = (u64::from(index) >> self.shift) + 1;
        let k = 63 - q.leading_zeros();
        let start = ((1u64 << k) - 1) << self.shift;
        (k as usize, (u64::from(index) - start) as usize)
    }

    /// Slots in segment `k`: `first << k`, less what would pass `max` (0 for segments
    /// past it).
    fn segment_len(&self, k: usize) -> usize {
        // k < SEGMENTS and shift <= 24: no shift here reaches 64 bits.
        let start = ((1u64 << k) - 1) << self.shift;
        let full = 1u64 << (k as u32 + self.shift);
        full.min(u64::from(self.max).saturating_sub(start)) as usize
    }
}

impl Drop for SpanTable {
    fn drop(&mut self) {
        for (k, segment) in self.segments.iter().enumerate() {
            // `&mut self`: no other thread holds the table, any ordering would do.
            let base = segment.load(Ordering::Acquire);
            if !base.is_null() {
                // SAFETY: a non-null pointer was installed by `install` from
                // `allocate(self.segment_len(k))`, and is freed only here, once.
                unsafe { free_segment(base, self.segment_len(k)) };
            }
        }
    }
}

/// The slot index of an id (meaningful only after [`SpanTable::lookup`] found it).
fn id_index(id: NonZeroU64) -> u32 {
    (id.get() as u32).wrapping_sub(1)
}

/// A boxed slice of `len` free slots, as a pointer to its first one; `None` if the
/// allocator refuses (never the abort of an infallible allocation).
fn allocate(len: usize) -> Option<*mut Slot> {
    let mut slots = Vec::new();
    slots.try_reserve_exact(len).ok()?;
    slots.extend((0..len).map(|_| Slot::new()));
    // Capacity is exactly `len`: no reallocation here.
    Some(Box::into_raw(slots.into_boxed_slice()).cast::<Slot>())
}

/// Frees what [`allocate`] returned.
///
/// # Safety
///
/// `base` came from `allocate(len)`, with this `len`, is freed once, and nothing
/// borrows its slots any more.
unsafe fn free_segment(base: *mut Slot, len: usize) {
    // SAFETY: by the contract above, `base..base + len` is the boxed slice `allocate`
    // leaked, with its original provenance.
    drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(base, len)) });
}

#[cfg(test)]
#[cfg_attr(loom, allow(dead_code))] // the loom models use only some of these
impl SpanTable {
    /// The free list, head first, walking at most one link more than there are slots
    /// (a cycle shows as a repeated index). Only while no other thread uses the table.
    pub(crate) fn free_indices(&self) -> Vec<u32> {
        let mut out = Vec::new();
        let mut link = self.free.load(Ordering::Acquire) as u32;
        while let Some(index) = link.checked_sub(1) {
            if out.len() > self.bumped() as usize {
                break;
            }
            out.push(index);
            link = self
                .slot(index)
                .map_or(0, |slot| slot.next.load(Ordering::Relaxed));
        }
        out
    }

    /// Slots handed out at least once.
    pub(crate) fn bumped(&self) -> u32 {
        self.bumped.load(Ordering::Relaxed)
    }

    /// Segments allocated.
    pub(crate) fn segments_installed(&self) -> usize {
        self.segments
            .iter()
            .filter(|segment| !segment.load(Ordering::Acquire).is_null())
            .count()
    }

    /// References of slot `index` (`None`: no such slot).
    pub(crate) fn refs(&self, index: u32) -> Option<u64> {
        self.slot(index)
            .map(|slot| slot.state.load(Ordering::Acquire) & REFS)
    }
}

/// The slot index an id names (tests check slots against ids).
#[cfg(test)]
pub(crate) fn index_of(id: NonZeroU64) -> u32 {
    id_index(id)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::collections::{HashSet, VecDeque};
    use std::sync::atomic::AtomicU64 as StdAtomicU64;
    use std::sync::Arc;

    /// Every slot ever handed out is free, on the free list exactly once.
    fn assert_all_free(table: &SpanTable) {
        let free = table.free_indices();
        let distinct: HashSet<u32> = free.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            free.len(),
            "a slot is on the free list twice"
        );
        assert_eq!(
            free.len() as u64 + table.leaked(),
            u64::from(table.bumped()),
            "free {} + leaked {} != handed out {}",
            free.len(),
            table.leaked(),
            table.bumped()
        );
        for index in 0..table.bumped() {
            assert_eq!(table.refs(index), Some(0), "slot {index} still referenced");
        }
    }

    #[test]
    fn create_clone_release() {
        let table = SpanTable::with_capacity(DEFAULT_CAPACITY);
        let id = table.create(0xfeed).unwrap();
        assert_eq!(table.data(id), Some(0xfeed));
        assert!(table.clone_ref(id));
        assert_eq!(table.release(id), Release::StillOpen);
        assert_eq!(table.data(id), Some(0xfeed));
        assert_eq!(table.release(id), Release::Closed);
        // Dead: refused, and nothing brings it back.
        assert_eq!(table.data(id), None);
        assert!(!table.clone_ref(id));
        assert_eq!(table.release(id), Release::Unknown);
        assert_all_free(&table);
    }

    #[test]
    fn a_reused_slot_gives_another_id_and_refuses_the_old_one() {
        let table = SpanTable::with_capacity(4);
        let old = table.create(1).unwrap();
        assert_eq!(table.release(old), Release::Closed);
        let new = table.create(2).unwrap();
        assert_eq!(index_of(new), index_of(old), "the freed slot is reused");
        assert_ne!(new, old);
        assert_eq!(table.data(old), None);
        assert!(!table.clone_ref(old));
        assert_eq!(table.release(old), Release::Unknown);
        // The stale id did not touch the new span.
        assert_eq!(table.data(new), Some(2));
        assert_eq!(table.refs(index_of(new)), Some(1));
        assert_eq!(table.release(new), Release::Closed);
        assert_all_free(&table);
    }

    #[test]
    fn unknown_ids_are_refused() {
        let table = SpanTable::with_limit(4, 64);
        let live = table.create(9).unwrap();
        let generation = live.get() & !REFS;
        let forged = [
            // Index 0 in the id: never handed out.
            NonZeroU64::new(1 << 32).unwrap(),
            // A slot of the first segment never handed out.
            NonZeroU64::new(generation | 3).unwrap(),
            // A slot of a segment never allocated.
            NonZeroU64::new(generation | 40).unwrap(),
            // Past the hard maximum.
            NonZeroU64::new(generation | 65).unwrap(),
            NonZeroU64::new(generation | 0xffff_ffff).unwrap(),
            // The live slot, another generation.
            NonZeroU64::new(live.get().wrapping_add(7 << 32)).unwrap(),
        ];
        for id in forged {
            assert_eq!(table.data(id), None, "{id:#x}");
            assert!(!table.clone_ref(id), "{id:#x}");
            assert_eq!(table.release(id), Release::Unknown, "{id:#x}");
        }
        assert_eq!(table.data(live), Some(9));
        assert_eq!(table.refs(index_of(live)), Some(1));
    }

    #[test]
    fn grows_past_the_first_segment() {
        let spans = if cfg!(miri) { 100 } else { 10_000 };
        let table = SpanTable::with_capacity(8);
        assert_eq!(table.segments_installed(), 1);
        let ids: Vec<NonZeroU64> = (0..spans).map(|i| table.create(i).unwrap()).collect();
        // 8 + 16 + 32 + ...: 8 * (2^k - 1) >= spans.
        assert!(table.segments_installed() > 1);
        assert_eq!(table.bumped(), spans as u32);
        let distinct: HashSet<NonZeroU64> = ids.iter().copied().collect();
        assert_eq!(distinct.len(), ids.len());
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(table.data(*id), Some(i as u64));
        }
        for id in &ids {
            assert_eq!(table.release(*id), Release::Closed);
        }
        assert_all_free(&table);
        // Everything is reused before the table grows again.
        let again: Vec<NonZeroU64> = (0..spans).map(|i| table.create(i).unwrap()).collect();
        assert_eq!(table.bumped(), spans as u32);
        assert!(again.iter().all(|id| !distinct.contains(id)));
    }

    #[test]
    fn segments_double() {
        let table = SpanTable::with_capacity(4);
        // Segments of 4, 8, 16: slot 3 is the last of the first, 4 the first of the
        // second, 12 the first of the third.
        assert_eq!(table.locate(0), (0, 0));
        assert_eq!(table.locate(3), (0, 3));
        assert_eq!(table.locate(4), (1, 0));
        assert_eq!(table.locate(11), (1, 7));
        assert_eq!(table.locate(12), (2, 0));
        assert_eq!(table.segment_len(2), 16);
        // The last segment stops at the hard maximum.
        let full = SpanTable::with_limit(4, 20);
        assert_eq!(full.segment_len(2), 8);
        assert_eq!(full.segment_len(3), 0);
        let whole: usize = (0..SEGMENTS).map(|k| full.segment_len(k)).sum();
        assert_eq!(whole, 20);
        // Enough segments for the whole maximum, from the smallest first segment and
        // from the default one.
        for first in [1, DEFAULT_CAPACITY] {
            let big = SpanTable::with_limit(first, u32::MAX);
            let whole: usize = (0..SEGMENTS).map(|k| big.segment_len(k)).sum();
            assert_eq!(whole, MAX_LIVE as usize);
            assert_eq!(
                big.locate(MAX_LIVE - 1).0,
                (0..SEGMENTS)
                    .rev()
                    .find(|&k| big.segment_len(k) > 0)
                    .unwrap()
            );
        }
    }

    #[test]
    fn the_hard_maximum_refuses_then_recovers() {
        let table = SpanTable::with_limit(4, 10);
        let ids: Vec<NonZeroU64> = (0..10).map(|i| table.create(i).unwrap()).collect();
        assert_eq!(table.create(10), None);
        assert_eq!(table.create(10), None);
        assert_eq!(
            table.bumped(),
            10,
            "a refused create does not move the counter"
        );
        assert_eq!(table.release(ids[3]), Release::Closed);
        let reused = table.create(11).unwrap();
        assert_eq!(index_of(reused), index_of(ids[3]));
        assert_eq!(table.create(12), None);
    }

    #[test]
    fn a_full_count_stays_full() {
        let table = SpanTable::with_capacity(1);
        let id = table.create(5).unwrap();
        let slot = table.slot(index_of(id)).unwrap();
        let generation = id.get() & !REFS;
        slot.state.store(generation | (REFS - 1), Ordering::Relaxed);
        assert!(table.clone_ref(id));
        assert!(!table.clone_ref(id), "the count would wrap to zero");
        assert_eq!(table.release(id), Release::StillOpen);
        assert_eq!(table.refs(index_of(id)), Some(REFS - 1));
    }

    #[test]
    fn the_generation_wraps_without_a_panic() {
        let table = SpanTable::with_capacity(1);
        let id = table.create(5).unwrap();
        let slot = table.slot(index_of(id)).unwrap();
        slot.state.store(!REFS | 1, Ordering::Relaxed);
        let last = NonZeroU64::new(!REFS | (id.get() & REFS)).unwrap();
        assert_eq!(table.release(last), Release::Closed);
        let wrapped = table.create(6).unwrap();
        assert_eq!(wrapped.get() >> 32, 0);
        assert_eq!(table.data(wrapped), Some(6));
        assert_eq!(table.data(last), None);
    }

    /// 8 threads create, clone and release spans in a loop, each keeping a window of
    /// up to 32 live spans (so the table grows from its 8-slot first segment while
    /// others free and reuse slots). Every id handed out is live for its holder alone:
    /// `owners[index]` records who holds each slot, and a create that returned a slot
    /// someone else holds would find it taken. At the end every slot is free.
    #[test]
    fn threads_create_clone_release() {
        const THREADS: u64 = 8;
        const WINDOW: usize = 32;
        const MAX: u32 = 4096;
        let rounds: u64 = if cfg!(miri) { 150 } else { 100_000 };
        let table = Arc::new(SpanTable::with_limit(8, MAX));
        let owners: Arc<Vec<StdAtomicU64>> =
            Arc::new((0..MAX).map(|_| StdAtomicU64::new(0)).collect());
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let table = Arc::clone(&table);
                let owners = Arc::clone(&owners);
                std::thread::spawn(move || {
                    let mut live: VecDeque<(NonZeroU64, u64)> = VecDeque::new();
                    let mut held: HashSet<NonZeroU64> = HashSet::new();
                    let close = |(id, tag): (NonZeroU64, u64), held: &mut HashSet<_>| {
                        assert_eq!(table.data(id), Some(tag));
                        let owner = &owners[index_of(id) as usize];
                        // Given back before the slot can be handed out again.
                        assert_eq!(owner.swap(0, Ordering::SeqCst), tag);
                        assert!(held.remove(&id));
                        assert_eq!(table.release(id), Release::Closed);
                    };
                    for round in 0..rounds {
                        let tag = (t + 1) << 40 | (round + 1);
                        let id = table.create(tag).expect("room, and few lost races");
                        assert!(held.insert(id), "{id:#x} handed out twice to one thread");
                        let owner = &owners[index_of(id) as usize];
                        let before = owner.swap(tag, Ordering::SeqCst);
                        assert_eq!(before, 0, "{id:#x} handed out while {before:#x} holds it");
                        assert!(table.clone_ref(id));
                        assert_eq!(table.data(id), Some(tag));
                        assert_eq!(table.release(id), Release::StillOpen);
                        live.push_back((id, tag));
                        // A window that ramps up and drops, out of step between
                        // threads: 0..=WINDOW spans kept live.
                        let keep = ((round / 16 + t * 5) % (WINDOW as u64 + 1)) as usize;
                        while live.len() > keep {
                            if let Some(oldest) = live.pop_front() {
                                close(oldest, &mut held);
                            }
                        }
                    }
                    while let Some(oldest) = live.pop_front() {
                        close(oldest, &mut held);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_all_free(&table);
        assert_eq!(table.leaked(), 0);
        println!(
            "{} threads x {rounds} spans: {} slots in {} segments, {} leaked",
            THREADS,
            table.bumped(),
            table.segments_installed(),
            table.leaked()
        );
    }

    /// One span, held by the main thread, cloned and released by 4 threads at once:
    /// every clone succeeds (its thread holds a reference), no release closes it, and
    /// the main thread's release does at the end.
    #[test]
    fn clones_and_releases_of_one_span_race() {
        let rounds = if cfg!(miri) { 100 } else { 100_000 };
        let table = Arc::new(SpanTable::with_capacity(4));
        let id = table.create(77).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let table = Arc::clone(&table);
                std::thread::spawn(move || {
                    assert!(table.clone_ref(id));
                    for _ in 0..rounds {
                        assert!(table.clone_ref(id));
                        assert_eq!(table.data(id), Some(77));
                        assert_eq!(table.release(id), Release::StillOpen);
                    }
                    assert_eq!(table.release(id), Release::StillOpen);
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(table.refs(index_of(id)), Some(1));
        assert_eq!(table.release(id), Release::Closed);
        assert_all_free(&table);
    }
}
