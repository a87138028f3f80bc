//! The transport: a bounded ring of fixed-size slots, many producers, one consumer.
//!
//! # Algorithm
//!
//! Dmitry Vyukov's bounded queue (a preallocated array of cells, each with a sequence
//! word, and a `tail` that producers advance with compare-and-swap), extended in two
//! ways:
//!
//! * A record occupies `n` consecutive slots of [`SLOT_BYTES`] each; records that run
//!   past the end of the array continue at its start.
//! * A producer never waits. Vyukov's producer spins while a slot of the previous lap
//!   is still unread; ours gives up (the ring is full), and it gives up after
//!   [`CLAIM_ATTEMPTS`] lost races too. A signal handler that runs on a thread holding
//!   an unpublished claim can therefore never wait for a slot only its own thread can
//!   release (the livelock `../shared/DESIGN.md` measured in crossbeam's `start_send`).
//!
//! Positions are `u64` counters that never wrap (at 10^9 slots a second they would
//! last 584 years); slot `p` lives at index `p & mask`.
//!
//! # The stamp protocol
//!
//! Each slot has a sequence word (`seq`). For the slot at position `p`:
//!
//! * `seq == p`: free for the lap `p` belongs to.
//! * `seq == p + 1`: only on the first slot of a record: published, the consumer may
//!   read the whole record.
//! * The consumer frees a record by storing `seq = q + slots` for every slot `q` of it,
//!   in increasing order: free for the next lap.
//!
//! Producers never stamp the continuation slots of a record, and never need to: the
//! consumer frees strictly in order, so if the *last* slot of a prospective claim is
//! free for this lap, every slot before it is too. That makes a claim one load and one
//! CAS whatever its length. A slot of the previous lap that is claimed but not yet
//! published (its producer stalled, perhaps interrupted by a signal) stays at
//! `seq == q` for its old lap, which reads as "not free" to this lap: drop, never spin.
//!
//! # The severity reserve
//!
//! [`Ring::try_claim_leaving`] takes a number of slots `reserve` that the claim must
//! leave free: instead of the claim's last slot `last`, it checks the slot at
//! `last + reserve`. By the same argument as above, `seq == last + reserve` means the
//! consumer has freed every position up to `last + reserve - lap`, so after the claim
//! at least `reserve` slots are still free for this lap. Ordinary records claim with a
//! reserve, warnings and errors without one, so a flood of the former cannot take the
//! last slots from the latter. A `seq` above `last + reserve` means someone claimed
//! past that position already (our `tail` is stale), one below means the slot still
//! belongs to the previous lap (full, for this claim).
//!
//! # Who consumes: the listener or a crash
//!
//! Records have one reader at a time. The listener's [`Consumer`] holds the
//! `consuming` token (bit `CONSUMER_ACTIVE`) while it takes records off the ring
//! ([`Consumer::hold`] .. [`Consumer::begin_write`] or [`Consumer::release`]), and
//! publishes its position in `resume_at` when it lets go. While it writes the records
//! it took into its sinks it holds `CONSUMER_WRITING` instead ([`Consumer::begin_write`]
//! .. [`Consumer::end_write`]): the ring itself is free then, but those records are in
//! the listener's hands.
//!
//! A fatal-signal handler sets `CRASH_CLAIMED` with one `fetch_or`: from then on the
//! listener cannot take the token again, and once both listener bits are clear the
//! handler owns the records from `resume_at` up to the end of the ring as it was when
//! the drain started ([`Ring::crash_drain`] snapshots `tail`: other threads may go on
//! logging, and a drain that chased them would never end). A record is therefore
//! written by the listener or by the crash handler, never by both: the listener's
//! records are out of the ring only while it holds one of its bits, and it clears the
//! last one only after they are written.
//!
//! When the drain is over, the handler gives the ring back ([`Ring::crash_release`]):
//! it clears `CRASH_CLAIMED` and leaves `resume_at` where the drain stopped. The
//! process normally ends a moment later; but a previous signal handler may jump out
//! of the signal (`siglongjmp`) and the process go on, and then the listener resumes
//! at `resume_at` the next time it takes the token ([`Consumer::hold`] reloads its
//! position), instead of finding the ring claimed for ever. While a drain holds the
//! claim, a second thread that crashes finds `CRASH_CLAIMED` set: it waits for the
//! release and never drains at the same time.
//!
//! A stop that runs out of time (a sink that never returns) sets `ABANDONED`
//! ([`Ring::abandon`]): the listener cannot take the token again, and once
//! `CONSUMER_ACTIVE` is clear the stopping thread counts what is left unread
//! ([`Ring::count_unread`]) without racing the listener for it.
//!
//! Every record starts with an 8-byte frame: its total length and flags, so the
//! consumer knows how many slots to read and free. The rest is opaque bytes; the
//! record layout belongs to [`crate::record`].

use crate::sync::{AtomicBool, AtomicU64, CachePadded, Ordering, UnsafeCell};

mod claim;
mod consumer;
mod readers;

pub(crate) use claim::Claim;
pub(crate) use consumer::{Consumer, Pop};
pub(crate) use readers::{CrashDrain, CrashNext, CrashRecord, PEEK_BYTES};

/// Bytes of record data per slot: one cache line.
pub(crate) const SLOT_BYTES: usize = 64;

/// How far ahead of the producers the listener makes the ring's memory resident:
/// some 65,000 records of two slots, tens of milliseconds of a burst.
#[cfg(not(loom))]
const POPULATE_AHEAD: usize = 8 << 20;

/// How many times a producer retries a claim that lost a race to another producer
/// before it drops the record. Each lost race means another producer succeeded, so the
/// ring as a whole always progresses; this bounds the steps of one call.
pub(crate) const CLAIM_ATTEMPTS: u32 = 64;

/// The fewest slots a ring may have.
pub(crate) const MIN_SLOTS: usize = 16;

/// The most slots a ring may have (1 GiB of record data).
pub(crate) const MAX_SLOTS: usize = 1 << 24;

/// `consuming` bit: the listener's consumer is taking records out and writing them.
const CONSUMER_ACTIVE: u64 = 1;
/// `consuming` bit: a fatal-signal handler claimed the ring; the listener cannot take
/// the token until the handler gives the ring back.
const CRASH_CLAIMED: u64 = 2;
/// `consuming` bit: the listener is writing records it took off the ring.
const CONSUMER_WRITING: u64 = 8;
/// `consuming` bit: a stop gave up on the listener; it never consumes again.
const ABANDONED: u64 = 16;

/// Bit of `tail` set by [`Ring::close`]: no claim succeeds any more. Positions never
/// reach it (2^63 slots).
const CLOSED: u64 = 1 << 63;

/// `[length: u32 LE][flags: u32 LE]` in front of every record.
const FRAME_BYTES: usize = 8;

/// Frame flag: the claim was dropped without being published; the consumer skips it.
const FRAME_ABORTED: u32 = 1;

/// Reader-side flag from [`Ring::read_frame`], never written by a producer: the frame's
/// length is impossible (memory corruption elsewhere).
const FRAME_CORRUPT: u32 = 1 << 31;

/// One slot's bytes, aligned so a one-slot record touches one cache line.
#[allow(dead_code)] // read and written through raw pointers only
#[repr(align(64))]
struct Chunk([u8; SLOT_BYTES]);

/// The slot bytes: under loom (whose cells track each access) a boxed slice; otherwise
/// anonymous memory mapped for the ring, zero pages until first written.
#[cfg(loom)]
type Chunks = Box<[UnsafeCell<Chunk>]>;
#[cfg(not(loom))]
type Chunks = mapped::MappedChunks;

#[cfg(not(loom))]
mod mapped;

/// Why a claim failed. Each is a reason a record is dropped and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClaimError {
    /// The slots the record needs still hold unread (or unpublished) records.
    Full,
    /// Lost the race for `tail` [`CLAIM_ATTEMPTS`] times in a row.
    Contended,
    /// The ring was closed: its listener stopped for good.
    Closed,
    /// The record is longer than [`Ring::max_payload`].
    TooLarge,
}

/// The shared ring. Producers call [`Ring::try_claim`]; the one consumer works through
/// the [`Consumer`] that [`Ring::take_consumer`] hands out once at a time.
pub(crate) struct Ring {
    /// Next position to claim. Producers CAS it forward by the slots they need.
    tail: CachePadded<AtomicU64>,
    consumer_taken: AtomicBool,
    /// Where the next reader starts: the consumer's position when it last released the
    /// `consuming` token (or ended).
    resume_at: AtomicU64,
    /// `CONSUMER_ACTIVE | CRASH_CLAIMED`: see the module docs.
    consuming: AtomicU64,
    seqs: Box<[AtomicU64]>,
    chunks: Chunks,
    mask: u64,
}

// SAFETY: slot bytes are written only by the owner of the claim covering them (the
// CAS on `tail`), read only by the reader that saw their stamp published (acquire on
// the producer's release); everything else is atomics.
unsafe impl Sync for Ring {}
// SAFETY: the ring owns plain bytes and atomics; nothing in it is tied to a thread.
unsafe impl Send for Ring {}

impl Ring {
    /// A ring of `slots` slots. `slots` must be a power of two within
    /// [`MIN_SLOTS`]..=[`MAX_SLOTS`]; the builder validates user input before this.
    pub(crate) fn with_slots(slots: usize) -> Ring {
        let slots = slots.clamp(MIN_SLOTS, MAX_SLOTS).next_power_of_two();
        // Every slot starts free for lap zero: seq == its own position, which the
        // stamps store as 0 (see `Ring::load_seq`).
        #[cfg(not(loom))]
        // SAFETY: zero is a valid `AtomicU64`, which is not zero-sized; `slots >=
        // MIN_SLOTS`.
        let (seqs, chunks) = (
            unsafe { mapped::zeroed_slice(slots) },
            Chunks::zeroed(slots),
        );
        #[cfg(loom)]
        let (seqs, chunks) = (
            (0..slots).map(|_| AtomicU64::new(0)).collect(),
            (0..slots)
                .map(|_| UnsafeCell::new(Chunk([0; SLOT_BYTES])))
                .collect(),
        );
        Ring {
            tail: CachePadded(AtomicU64::new(0)),
            consumer_taken: AtomicBool::new(false),
            resume_at: AtomicU64::new(0),
            consuming: AtomicU64::new(0),
            seqs,
            chunks,
            mask: slots as u64 - 1,
        }
    }

    /// Makes the slot memory the producers will reach next resident, a few MiB ahead
    /// of `tail` (see `mapped::MappedChunks::populate_upto`); the listener calls it
    /// between batches. Nothing to do after the first lap.
    #[cfg(not(loom))]
    pub(crate) fn populate_ahead(&self) {
        let used = (self.tail().min(self.slots() as u64) as usize) * SLOT_BYTES;
        self.chunks.populate_upto(used, used + POPULATE_AHEAD);
    }

    /// Under loom the slots are cells, nothing to populate.
    #[cfg(loom)]
    pub(crate) fn populate_ahead(&self) {}

    /// Makes the whole ring resident now, slots and stamps: no log call then takes the
    /// page fault of a slot's first use, some 2 to 15 us in a VM whose host backs a
    /// page only when the guest first writes it (the fault of a stamp page, every 256
    /// records of two slots, costs the claim most). For Block mode, where a caller
    /// waits anyway and the ring fills to its capacity under load.
    #[cfg(not(loom))]
    pub(crate) fn populate_all(&self) {
        self.chunks.populate_all();
        let stamps = std::mem::size_of_val::<[AtomicU64]>(&self.seqs);
        mapped::populate_bytes(self.seqs.as_ptr().cast(), stamps);
    }

    /// Under loom the slots are cells, nothing to populate.
    #[cfg(loom)]
    pub(crate) fn populate_all(&self) {}

    /// Number of slots.
    pub(crate) fn slots(&self) -> usize {
        self.seqs.len()
    }

    /// The longest payload one record may have: half the ring, so one huge record
    /// can never starve everyone else for a whole lap.
    pub(crate) fn max_payload(&self) -> usize {
        self.slots() / 2 * SLOT_BYTES - FRAME_BYTES
    }

    /// Position one past the last claimed slot.
    ///
    /// SeqCst, like the successful claim CAS, for the listener's sleep check (see
    /// [`crate::wake`]): either it sees a claim here, or the claiming producer sees the
    /// listener's "sleeping" flag. Free on x86, where every load is a plain `mov`.
    pub(crate) fn tail(&self) -> u64 {
        self.tail.load(Ordering::SeqCst) & !CLOSED
    }

    /// Refuses every claim from now on ([`ClaimError::Closed`]). Claims that succeeded
    /// before are ordered before the close in `tail`'s history, so once this returns,
    /// [`Ring::tail`] is final: a consumer that reaches it has seen every record.
    pub(crate) fn close(&self) {
        self.tail.fetch_or(CLOSED, Ordering::SeqCst);
    }

    /// Whether [`Ring::close`] was called. Once true, stays true.
    pub(crate) fn is_closed(&self) -> bool {
        self.tail.load(Ordering::Relaxed) & CLOSED != 0
    }

    /// The stamp (`seq`) of the slot at `pos`. Stored relative to the slot's index
    /// (`seq - (pos & mask)`, wrapping), which every stamp of that slot is congruent to:
    /// the initial stamps are then all zero, and the array comes from zeroed memory.
    fn load_seq(&self, pos: u64, order: Ordering) -> u64 {
        self.stamp(pos).load(order).wrapping_add(pos & self.mask)
    }

    /// Sets the stamp of the slot at `pos` to `seq` (see [`Ring::load_seq`]).
    fn store_seq(&self, pos: u64, seq: u64, order: Ordering) {
        self.stamp(pos)
            .store(seq.wrapping_sub(pos & self.mask), order);
    }

    fn stamp(&self, pos: u64) -> &AtomicU64 {
        // SAFETY: `pos & mask` < seqs.len() because the length is `mask + 1`.
        unsafe { self.seqs.get_unchecked((pos & self.mask) as usize) }
    }

    fn chunk(&self, pos: u64) -> &UnsafeCell<Chunk> {
        // SAFETY: `pos & mask` < chunks.len() because the length is `mask + 1`.
        unsafe { self.chunks.get_unchecked((pos & self.mask) as usize) }
    }

    /// Calls `f` with a pointer to byte `offset` (< [`SLOT_BYTES`]) of the slot at `pos`
    /// and how many bytes from there on are contiguous: up to the end of the array, so
    /// a record that does not wrap is copied in one piece. The caller must own every
    /// byte it touches (a claim, or a published record it reads).
    #[cfg(not(loom))]
    fn with_run_mut<R>(&self, pos: u64, offset: usize, f: impl FnOnce(*mut u8, usize) -> R) -> R {
        let index = (pos & self.mask) as usize;
        let available = (self.chunks.len() - index) * SLOT_BYTES - offset;
        // `UnsafeCell<Chunk>` is `Chunk` (repr(transparent)), 64 bytes with alignment
        // 64: the array is one run of bytes, and interior mutability allows writing it
        // through a pointer derived from the shared slice.
        let base = self.chunks.as_ptr().cast::<u8>().cast_mut();
        // SAFETY: `index * SLOT_BYTES + offset` < `chunks.len() * SLOT_BYTES`: inside
        // the allocation.
        f(unsafe { base.add(index * SLOT_BYTES + offset) }, available)
    }

    /// [`Ring::with_run_mut`] for reading.
    #[cfg(not(loom))]
    fn with_run<R>(&self, pos: u64, offset: usize, f: impl FnOnce(*const u8, usize) -> R) -> R {
        self.with_run_mut(pos, offset, |run, available| f(run.cast_const(), available))
    }

    /// [`Ring::with_run_mut`] for reading, under loom: one slot, a tracked read.
    #[cfg(loom)]
    fn with_run<R>(&self, pos: u64, offset: usize, f: impl FnOnce(*const u8, usize) -> R) -> R {
        self.chunk(pos).with(|chunk| {
            // SAFETY: `offset < SLOT_BYTES`, inside the chunk.
            f(
                unsafe { chunk.cast::<u8>().add(offset) },
                SLOT_BYTES - offset,
            )
        })
    }

    /// Under loom: one slot at a time, through loom's cell, so every access is tracked.
    #[cfg(loom)]
    fn with_run_mut<R>(&self, pos: u64, offset: usize, f: impl FnOnce(*mut u8, usize) -> R) -> R {
        self.chunk(pos).with_mut(|chunk| {
            // SAFETY: `offset < SLOT_BYTES`, inside the chunk.
            f(
                unsafe { chunk.cast::<u8>().add(offset) },
                SLOT_BYTES - offset,
            )
        })
    }

    /// Claims room for a record of `payload_len` bytes, or says why not.
    ///
    /// Bounded steps: at most [`CLAIM_ATTEMPTS`] loads and CASes; never waits for
    /// another thread, never allocates, never panics.
    #[cfg(any(test, feature = "test-hooks"))]
    pub(crate) fn try_claim(&self, payload_len: usize) -> Result<Claim<'_>, ClaimError> {
        self.try_claim_leaving(payload_len, 0)
    }

    /// [`Ring::try_claim`] that also leaves `reserve` slots free after the claim (the
    /// severity reserve, see the module docs); `reserve` is capped at half the ring.
    pub(crate) fn try_claim_leaving(
        &self,
        payload_len: usize,
        reserve: usize,
    ) -> Result<Claim<'_>, ClaimError> {
        if payload_len > self.max_payload() {
            return Err(ClaimError::TooLarge);
        }
        let len = FRAME_BYTES + payload_len;
        let need = len.div_ceil(SLOT_BYTES) as u64;
        // need <= slots / 2 (max_payload) and reserve <= slots / 2: the slot checked is
        // at most one lap past `tail`, where its stamp still means what we test.
        let reserve = reserve.min(self.slots() / 2) as u64;
        let mut tail = self.tail.load(Ordering::Relaxed);
        for _ in 0..CLAIM_ATTEMPTS {
            if tail & CLOSED != 0 {
                return Err(ClaimError::Closed);
            }
            let last = tail + need - 1;
            let guard = last + reserve;
            // Acquire pairs with the consumer's release when it freed `guard`: once we
            // see it free, the consumer is done reading every slot up to it.
            let seq = self.load_seq(guard, Ordering::Acquire);
            if seq == guard {
                // Free for this lap. The CAS makes the claim exclusive: it succeeds only
                // if nobody claimed from `tail` since we read it, and fails if the ring
                // was closed meanwhile (the bit changed `tail`). SeqCst: see `tail()`.
                match self.tail.compare_exchange_weak(
                    tail,
                    tail + need,
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        let mut claim = Claim {
                            ring: self,
                            pos: tail,
                            len,
                            cursor: 0,
                            published: false,
                        };
                        let [l0, l1, l2, l3] = (len as u32).to_le_bytes();
                        claim.write(&[l0, l1, l2, l3, 0, 0, 0, 0]);
                        return Ok(claim);
                    }
                    Err(now) => tail = now,
                }
            } else if seq < guard {
                // The slot still belongs to the previous lap: unread, or claimed and
                // not yet published. Either way it is not ours to wait for.
                return Err(ClaimError::Full);
            } else {
                // Someone claimed past `guard` already: our `tail` is stale.
                tail = self.tail.load(Ordering::Relaxed);
            }
        }
        Err(ClaimError::Contended)
    }

    /// Hands out the consumer, once: `None` while another [`Consumer`] is alive. A
    /// consumer takes over where the previous one stopped.
    pub(crate) fn take_consumer(&self) -> Option<Consumer<'_>> {
        if self.consumer_taken.swap(true, Ordering::Acquire) {
            return None;
        }
        Some(Consumer {
            ring: self,
            head: self.resume_at.load(Ordering::Acquire),
            holding: false,
        })
    }

    /// Visits, in order, every published record whose first slot lies in `[from, to)`
    /// with its position, total length and frame flags, stepping over claimed but
    /// unpublished slots one at a time. Only the first slot of a published record has
    /// `seq == pos + 1` (continuation slots are never stamped), so a record start is
    /// recognised wherever it is, even behind a claim whose length is unknown. Returns
    /// the number of unpublished runs stepped over.
    ///
    /// The caller must be the only reader of `[from, to)`, and every slot there must be
    /// claimed for this lap (`to` at most `tail`).
    fn scan(&self, from: u64, to: u64, mut visit: impl FnMut(u64, usize, u32)) -> u64 {
        let mut pos = from;
        let mut pending_runs = 0;
        let mut in_run = false;
        while pos < to {
            // Acquire pairs with the producer's release in `Claim::drop`.
            if self.load_seq(pos, Ordering::Acquire) == pos + 1 {
                let (len, flags) = self.read_frame(pos);
                visit(pos, len, flags);
                pos += len.div_ceil(SLOT_BYTES) as u64;
                in_run = false;
            } else {
                if !in_run {
                    pending_runs += 1;
                    in_run = true;
                }
                pos += 1;
            }
        }
        pending_runs
    }

    /// Calls `f` with the bytes `[from, to)` of the record whose first slot is at
    /// `pos` (frame included), one contiguous piece per slot.
    ///
    /// The caller must own the record: published (stamp seen with acquire) and not yet
    /// freed, and it must be the only reader (consumer or crash drain).
    fn read_record(&self, pos: u64, from: usize, to: usize, mut f: impl FnMut(&[u8])) {
        let mut offset = from;
        while offset < to {
            let slot = pos + (offset / SLOT_BYTES) as u64;
            let within = offset % SLOT_BYTES;
            let take = self.with_run(slot, within, |src, available| {
                let take = (to - offset).min(available);
                // SAFETY: the caller owns the published record (see above): nobody writes
                // these bytes now; `take <= available` keeps us inside the run.
                f(unsafe { std::slice::from_raw_parts(src, take) });
                take
            });
            offset += take;
        }
    }

    /// What the reader at `pos` (the consumer or a crash drain) finds there: the frame
    /// of a published record, or why there is none. The one place that reads the stamp
    /// protocol from the consumer's side.
    fn look(&self, pos: u64) -> Look {
        // Acquire pairs with the producer's release in `Claim::drop`: a published
        // record's bytes are visible once its stamp is.
        if self.load_seq(pos, Ordering::Acquire) == pos + 1 {
            let (len, flags) = self.read_frame(pos);
            if flags & FRAME_CORRUPT != 0 {
                return Look::Corrupt;
            }
            Look::Published { len, flags }
        } else if self.tail() == pos {
            Look::Empty
        } else {
            Look::Pending
        }
    }

    /// Reads the frame of the published record at `pos`: its total length (clamped to
    /// what a producer can write) and flags. Same ownership rule as `read_record`.
    fn read_frame(&self, pos: u64) -> (usize, u32) {
        let mut frame = [0u8; FRAME_BYTES];
        // The frame lies at the start of the record's first slot, never split.
        self.with_run(pos, 0, |src, available| {
            if available >= FRAME_BYTES {
                // SAFETY: the caller owns the published record (as in `read_record`),
                // and its first slot holds at least the frame's bytes from `src`.
                unsafe { std::ptr::copy_nonoverlapping(src, frame.as_mut_ptr(), FRAME_BYTES) };
            }
        });
        let [l0, l1, l2, l3, f0, f1, f2, f3] = frame;
        let len = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
        let flags = u32::from_le_bytes([f0, f1, f2, f3]);
        // A length the producer could not have written means memory corruption
        // elsewhere: say so (the reader then looks for the next record start) and
        // report one slot, never a length that runs off the claim.
        if (FRAME_BYTES..=FRAME_BYTES + self.max_payload()).contains(&len) {
            (len, flags & !FRAME_CORRUPT)
        } else {
            (SLOT_BYTES, flags | FRAME_CORRUPT)
        }
    }

    /// Frees the `slots` slots of the record at `pos` for the next lap, in increasing
    /// order. The release on the last one publishes the earlier ones too, to a producer
    /// that checks only one slot of its claim.
    fn free_record(&self, pos: u64, slots: u64) {
        let lap = self.mask + 1;
        for slot in pos..pos + slots {
            self.store_seq(slot, slot + lap, Ordering::Release);
        }
    }
}

/// What a reader finds at its position ([`Ring::look`]).
enum Look {
    /// A published record: total length (frame included) and frame flags.
    Published { len: usize, flags: u32 },
    /// Nothing claimed there yet.
    Empty,
    /// Claimed, not yet published.
    Pending,
    /// Published, with a frame no producer could have written.
    Corrupt,
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// How many of the pages of `len` bytes at `start` are resident (`mincore`).
    #[cfg(not(miri))]
    fn resident_pages(start: *const u8, len: usize) -> usize {
        let from = start as usize & !4095;
        let pages = (start as usize + len - from).div_ceil(4096);
        let mut map = vec![0u8; pages];
        // SAFETY: `from..from + pages * 4096` covers mapped memory of ours (the ring's);
        // `map` has one byte per page.
        let result = unsafe { libc::mincore(from as *mut libc::c_void, len, map.as_mut_ptr()) };
        assert_eq!(result, 0);
        map.iter().filter(|&&page| page & 1 != 0).count()
    }

    #[test]
    #[cfg(not(miri))]
    fn populate_all_makes_slots_and_stamps_resident() {
        let ring = Ring::with_slots(1 << 16); // 4 MiB of slots, 512 KiB of stamps
        let slots = (ring.chunks.as_ptr().cast::<u8>(), (1 << 16) * SLOT_BYTES);
        let stamps = (ring.seqs.as_ptr().cast::<u8>(), (1 << 16) * 8);
        assert!(resident_pages(slots.0, slots.1) < slots.1 / 4096 / 2);
        ring.populate_all();
        assert_eq!(resident_pages(slots.0, slots.1), slots.1 / 4096);
        assert!(resident_pages(stamps.0, stamps.1) >= stamps.1 / 4096);
    }

    fn push(ring: &Ring, bytes: &[u8]) -> Result<(), ClaimError> {
        let mut claim = ring.try_claim(bytes.len())?;
        claim.write(bytes);
        claim.publish();
        Ok(())
    }

    fn pop(consumer: &mut Consumer<'_>) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        match consumer.pop_into(&mut out) {
            Pop::Record => Some(out),
            _ => None,
        }
    }

    /// A payload that fills exactly `slots` slots.
    fn payload_for_slots(slots: usize, fill: u8) -> Vec<u8> {
        vec![fill; slots * SLOT_BYTES - FRAME_BYTES]
    }

    #[test]
    fn round_trip_in_order() {
        let ring = Ring::with_slots(16);
        let mut consumer = ring.take_consumer().unwrap();
        for i in 0..5u8 {
            push(&ring, &[i; 10]).unwrap();
        }
        for i in 0..5u8 {
            assert_eq!(pop(&mut consumer).unwrap(), vec![i; 10]);
        }
        assert_eq!(consumer.pop_into(&mut Vec::new()), Pop::Empty);
        assert!(consumer.is_empty());
    }

    #[test]
    fn empty_payload_takes_one_slot() {
        let ring = Ring::with_slots(16);
        let mut consumer = ring.take_consumer().unwrap();
        push(&ring, b"").unwrap();
        assert_eq!(ring.tail(), 1);
        assert_eq!(pop(&mut consumer).unwrap(), b"");
    }

    #[test]
    fn exactly_full_then_one_more_is_refused() {
        let ring = Ring::with_slots(16);
        let mut consumer = ring.take_consumer().unwrap();
        // Two records of 8 slots each fill the ring exactly.
        push(&ring, &payload_for_slots(8, 1)).unwrap();
        push(&ring, &payload_for_slots(8, 2)).unwrap();
        assert_eq!(ring.tail(), 16);
        assert_eq!(push(&ring, b"x"), Err(ClaimError::Full));
        // Freeing the first record makes exactly its 8 slots available again.
        assert_eq!(pop(&mut consumer).unwrap(), payload_for_slots(8, 1));
        push(&ring, &payload_for_slots(8, 3)).unwrap();
        assert_eq!(push(&ring, b"x"), Err(ClaimError::Full));
        assert_eq!(pop(&mut consumer).unwrap(), payload_for_slots(8, 2));
        assert_eq!(pop(&mut consumer).unwrap(), payload_for_slots(8, 3));
        assert!(pop(&mut consumer).is_none());
    }

    #[test]
    fn record_crossing_the_end_of_the_array_arrives_intact() {
        let ring = Ring::with_slots(16);
        let mut consumer = ring.take_consumer().unwrap();
        // Move head and tail to slot 13, then push a 6-slot record: slots 13, 14, 15,
        // 0, 1, 2.
        for _ in 0..13 {
            push(&ring, b"a").unwrap();
            pop(&mut consumer).unwrap();
        }
        let big: Vec<u8> = (0..6 * SLOT_BYTES - FRAME_BYTES)
            .map(|i| (i % 251) as u8)
            .collect();
        push(&ring, &big).unwrap();
        assert_eq!(ring.tail(), 19);
        assert_eq!(pop(&mut consumer).unwrap(), big);
    }

    #[test]
    fn wraps_many_laps_with_mixed_sizes() {
        let ring = Ring::with_slots(16);
        let mut consumer = ring.take_consumer().unwrap();
        // Under Miri, 10 000 laps take 11 minutes; 300 still cover 300 distinct sizes
        // (37 is prime to 504) and some 80 laps.
        let records = if cfg!(miri) { 300 } else { 10_000usize };
        for i in 0..records {
            let len = (i * 37) % ring.max_payload();
            let payload: Vec<u8> = (0..len).map(|j| (i + j) as u8).collect();
            push(&ring, &payload).unwrap();
            assert_eq!(pop(&mut consumer).unwrap(), payload);
        }
    }

    #[test]
    fn too_large_is_refused_up_front() {
        let ring = Ring::with_slots(16);
        assert_eq!(ring.max_payload(), 8 * SLOT_BYTES - FRAME_BYTES);
        assert!(push(&ring, &vec![0; ring.max_payload()]).is_ok());
        assert_eq!(
            push(&ring, &vec![0; ring.max_payload() + 1]),
            Err(ClaimError::TooLarge)
        );
    }

    #[test]
    fn unpublished_claim_blocks_the_consumer_not_the_producers() {
        let ring = Ring::with_slots(16);
        let mut consumer = ring.take_consumer().unwrap();
        let held = ring.try_claim(3).unwrap();
        // The same thread (a signal handler, say) keeps logging past the held claim.
        push(&ring, b"later").unwrap();
        assert_eq!(consumer.pop_into(&mut Vec::new()), Pop::Pending);
        drop(held); // never published: stamped as aborted
        assert_eq!(pop(&mut consumer).unwrap(), b"later");
    }

    #[test]
    fn wrap_onto_a_held_claim_drops_instead_of_spinning() {
        let ring = Ring::with_slots(16);
        let mut consumer = ring.take_consumer().unwrap();
        let mut held = ring.try_claim(3).unwrap();
        held.write(b"old");
        let mut pushed = 0;
        let mut refused = 0;
        // Far more than the ring holds; the consumer drains what it can in between.
        for _ in 0..100 {
            match push(&ring, b"y") {
                Ok(()) => pushed += 1,
                Err(ClaimError::Full) => refused += 1,
                Err(other) => panic!("unexpected {other:?}"),
            }
            assert_eq!(consumer.pop_into(&mut Vec::new()), Pop::Pending);
        }
        // One slot is held, so 15 fit and every other push was refused at once.
        assert_eq!(pushed, 15);
        assert_eq!(refused, 85);
        held.publish();
        assert_eq!(pop(&mut consumer).unwrap(), b"old");
        for _ in 0..15 {
            assert_eq!(pop(&mut consumer).unwrap(), b"y");
        }
        assert!(pop(&mut consumer).is_none());
    }

    #[test]
    fn close_refuses_later_claims_and_keeps_earlier_ones() {
        let ring = Ring::with_slots(16);
        let mut consumer = ring.take_consumer().unwrap();
        push(&ring, b"before").unwrap();
        let mut open = ring.try_claim(4).unwrap();
        ring.close();
        assert_eq!(push(&ring, b"after"), Err(ClaimError::Closed));
        assert_eq!(ring.tail(), 2, "the closed bit never shows in positions");
        assert_eq!(pop(&mut consumer).unwrap(), b"before");
        // A claim made before the close still completes and is read.
        assert_eq!(consumer.pop_into(&mut Vec::new()), Pop::Pending);
        open.write(b"open");
        open.publish();
        assert_eq!(pop(&mut consumer).unwrap(), b"open");
        assert!(consumer.is_empty());
    }

    #[test]
    fn consumer_is_handed_out_once_at_a_time() {
        let ring = Ring::with_slots(16);
        let mut first = ring.take_consumer().unwrap();
        assert!(ring.take_consumer().is_none());
        push(&ring, b"one").unwrap();
        push(&ring, b"two").unwrap();
        assert_eq!(pop(&mut first).unwrap(), b"one");
        drop(first);
        // The next consumer resumes after what the first one read.
        let mut second = ring.take_consumer().unwrap();
        assert_eq!(pop(&mut second).unwrap(), b"two");
    }

    fn push_leaving(ring: &Ring, bytes: &[u8], reserve: usize) -> Result<(), ClaimError> {
        let mut claim = ring.try_claim_leaving(bytes.len(), reserve)?;
        claim.write(bytes);
        claim.publish();
        Ok(())
    }

    #[test]
    fn reserve_is_left_to_privileged_claims_only() {
        let ring = Ring::with_slots(16);
        let mut consumer = ring.take_consumer().unwrap();
        // Ordinary records (1 slot each) leave 2 slots free.
        for _ in 0..14 {
            push_leaving(&ring, b"debug", 2).unwrap();
        }
        assert_eq!(push_leaving(&ring, b"debug", 2), Err(ClaimError::Full));
        // The reserve is there for the privileged, and only it.
        push_leaving(&ring, b"error 1", 0).unwrap();
        push_leaving(&ring, b"error 2", 0).unwrap();
        assert_eq!(push_leaving(&ring, b"error 3", 0), Err(ClaimError::Full));
        // Freeing one slot is not enough for an ordinary record: 2 must stay free.
        assert_eq!(pop(&mut consumer).unwrap(), b"debug");
        assert_eq!(push_leaving(&ring, b"debug", 2), Err(ClaimError::Full));
        push_leaving(&ring, b"error 3", 0).unwrap();
        for _ in 0..3 {
            pop(&mut consumer).unwrap();
        }
        // Three free now: one ordinary record fits, leaving two.
        push_leaving(&ring, b"debug", 2).unwrap();
        assert_eq!(push_leaving(&ring, b"debug", 2), Err(ClaimError::Full));
    }

    #[test]
    fn reserve_holds_for_multi_slot_records_across_laps() {
        let ring = Ring::with_slots(16);
        let mut consumer = ring.take_consumer().unwrap();
        for lap in 0..50usize {
            // Fill with 3-slot ordinary records until refused, then check the free
            // room is at least the reserve (4) and less than a record plus reserve.
            let mut pushed = 0;
            while push_leaving(&ring, &payload_for_slots(3, lap as u8), 4).is_ok() {
                pushed += 1;
            }
            let free = 16 - (ring.tail() - consumer.position()) as usize;
            assert!((4..7).contains(&free), "lap {lap}: free {free}");
            // Privileged records take what is left, one slot at a time.
            let mut privileged = 0;
            while push_leaving(&ring, b"e", 0).is_ok() {
                privileged += 1;
            }
            assert_eq!(privileged, free, "lap {lap}");
            for _ in 0..pushed + privileged {
                pop(&mut consumer).unwrap();
            }
            assert!(consumer.is_empty());
            // Shift the alignment for the next lap.
            push(&ring, b"x").unwrap();
            pop(&mut consumer).unwrap();
        }
    }

    #[test]
    fn crash_drain_takes_over_where_the_consumer_let_go() {
        let ring = Ring::with_slots(16);
        let mut consumer = ring.take_consumer().unwrap();
        for i in 0..5u8 {
            push(&ring, &[i; 70]).unwrap(); // 2 slots each
        }
        assert_eq!(pop(&mut consumer).unwrap(), vec![0; 70]);
        // The consumer holds the token (it took a record and has not released).
        assert!(ring.crash_claim());
        assert!(!ring.crash_claim(), "claimed once");
        assert!(ring.consumer_active());
        assert!(ring.crash_drain().is_none());
        consumer.release();
        assert!(!ring.consumer_active());
        // The listener cannot come back.
        assert_eq!(consumer.pop_into(&mut Vec::new()), Pop::Pending);
        assert!(!consumer.hold());
        let mut drain = ring.crash_drain().unwrap();
        for i in 1..5u8 {
            let CrashNext::Record(record) = drain.next() else {
                panic!("record {i}");
            };
            assert!(!CrashDrain::is_aborted(&record));
            assert_eq!(record.payload_len(), 70);
            let mut bytes = Vec::new();
            drain.read(&record, 0, 70, |piece| bytes.extend_from_slice(piece));
            assert_eq!(bytes, vec![i; 70]);
            let mut middle = Vec::new();
            drain.read(&record, 50, 60, |piece| middle.extend_from_slice(piece));
            assert_eq!(middle, vec![i; 10]);
            drain.free(&record);
        }
        assert!(matches!(drain.next(), CrashNext::Empty));
        assert!(ring.crash_claimed());
        ring.crash_release();
        assert!(!ring.crash_claimed());
        // Freed: producers can use the whole ring again.
        for _ in 0..8 {
            push(&ring, &[9; 70]).unwrap();
        }
        // Given back: the listener resumes after what the drain wrote.
        assert_eq!(pop(&mut consumer).unwrap(), vec![9; 70]);
        assert_eq!(consumer.position(), 10 + 2);
    }

    #[test]
    fn crash_drain_stops_at_the_tail_it_saw_when_it_started() {
        let ring = Ring::with_slots(16);
        let mut consumer = ring.take_consumer().unwrap();
        for i in 0..4u8 {
            push(&ring, &[i; 10]).unwrap();
        }
        assert!(ring.crash_claim());
        let mut drain = ring.crash_drain().unwrap();
        let mut drained = 0;
        // Another thread logs a record for every one the drain frees.
        while let CrashNext::Record(record) = drain.next() {
            drain.free(&record);
            drained += 1;
            push(&ring, &[9; 10]).unwrap();
        }
        assert_eq!(drained, 4);
        ring.crash_release();
        // The four logged during the drain are the listener's.
        for _ in 0..4 {
            assert_eq!(pop(&mut consumer).unwrap(), vec![9; 10]);
        }
        assert!(pop(&mut consumer).is_none());
    }

    #[test]
    fn a_second_claim_waits_for_the_release() {
        let ring = Ring::with_slots(16);
        let mut consumer = ring.take_consumer().unwrap();
        assert!(ring.crash_claim());
        assert!(!ring.crash_claim(), "one drain at a time");
        assert!(!consumer.hold());
        ring.crash_release();
        assert!(ring.crash_claim(), "free again once released");
        ring.crash_release();
        assert!(consumer.hold());
        // A claim while the listener holds the token succeeds, but reads nothing until
        // the listener lets go.
        assert!(ring.crash_claim());
        assert!(ring.crash_drain().is_none());
        consumer.release();
        assert!(ring.crash_drain().is_some());
    }

    #[test]
    fn crash_drain_stops_at_an_unpublished_claim_and_reads_across_the_end() {
        let ring = Ring::with_slots(16);
        let mut consumer = ring.take_consumer().unwrap();
        for _ in 0..14 {
            push(&ring, b"a").unwrap();
            pop(&mut consumer).unwrap();
        }
        consumer.release();
        let big: Vec<u8> = (0..4 * SLOT_BYTES - FRAME_BYTES).map(|i| i as u8).collect();
        push(&ring, &big).unwrap(); // slots 14, 15, 0, 1
        let held = ring.try_claim(3).unwrap();
        push(&ring, b"after").unwrap();
        assert!(ring.crash_claim());
        let mut drain = ring.crash_drain().unwrap();
        let CrashNext::Record(record) = drain.next() else {
            panic!("the big record");
        };
        let mut bytes = Vec::new();
        drain.read(&record, 0, usize::MAX, |piece| {
            bytes.extend_from_slice(piece)
        });
        assert_eq!(bytes, big);
        drain.free(&record);
        assert!(matches!(drain.next(), CrashNext::Pending));
        drop(held); // aborted, published as such
        let CrashNext::Record(aborted) = drain.next() else {
            panic!("the aborted claim");
        };
        assert!(CrashDrain::is_aborted(&aborted));
        drain.free(&aborted);
        let CrashNext::Record(after) = drain.next() else {
            panic!("the record after it");
        };
        let mut bytes = Vec::new();
        drain.read(&after, 0, usize::MAX, |piece| {
            bytes.extend_from_slice(piece)
        });
        assert_eq!(bytes, b"after");
    }

    #[test]
    fn slot_count_is_rounded_to_a_power_of_two_within_bounds() {
        assert_eq!(Ring::with_slots(0).slots(), MIN_SLOTS);
        assert_eq!(Ring::with_slots(17).slots(), 32);
    }

    #[test]
    fn concurrent_producers_lose_nothing_they_were_told_was_enqueued() {
        use std::sync::Arc;
        let ring = Arc::new(Ring::with_slots(64));
        let per_thread: u32 = if cfg!(miri) { 50 } else { 20_000 };
        let producers: Vec<_> = (0..3u8)
            .map(|id| {
                let ring = Arc::clone(&ring);
                std::thread::spawn(move || {
                    let mut accepted = Vec::new();
                    for seq in 0..per_thread {
                        let mut bytes = vec![id];
                        bytes.extend_from_slice(&seq.to_le_bytes());
                        // Vary the size so records span one to three slots.
                        bytes.resize(5 + (seq as usize % 3) * 60, id);
                        if push(&ring, &bytes).is_ok() {
                            accepted.push(seq);
                        }
                    }
                    accepted
                })
            })
            .collect();
        let mut seen: Vec<Vec<u32>> = vec![Vec::new(); 3];
        let mut consumer = ring.take_consumer().unwrap();
        let mut out = Vec::new();
        loop {
            match consumer.pop_into(&mut out) {
                Pop::Record => {
                    let id = out[0] as usize;
                    let seq = u32::from_le_bytes(out[1..5].try_into().unwrap());
                    assert!(out[5..].iter().all(|&b| b as usize == id));
                    seen[id].push(seq);
                }
                Pop::Pending => std::hint::spin_loop(),
                Pop::Damaged => panic!("no frame is corrupt here"),
                Pop::Empty => {
                    if producers.iter().all(|p| p.is_finished()) && consumer.is_empty() {
                        break;
                    }
                    std::thread::yield_now();
                }
            }
        }
        for (id, producer) in producers.into_iter().enumerate() {
            assert_eq!(seen[id], producer.join().unwrap(), "producer {id}");
        }
    }

    /// Overwrites the frame length of the record at `pos` (simulated memory corruption).
    fn corrupt_frame(ring: &Ring, pos: u64) {
        ring.with_run_mut(pos, 0, |frame, _| {
            // SAFETY: test only, single-threaded: nobody else touches the ring, and the
            // first four bytes of a slot are inside it.
            unsafe { std::ptr::copy_nonoverlapping(u32::MAX.to_le_bytes().as_ptr(), frame, 4) }
        });
    }

    #[test]
    fn a_corrupt_frame_is_skipped_up_to_the_next_record() {
        let ring = Ring::with_slots(16);
        let mut consumer = ring.take_consumer().unwrap();
        push(&ring, &payload_for_slots(3, 1)).unwrap(); // slots 0..3
        push(&ring, b"after").unwrap(); // slot 3
        corrupt_frame(&ring, 0);
        // Before the fix the consumer freed one slot and then waited for ever on the
        // unstamped continuation slot 1.
        assert_eq!(consumer.pop_into(&mut Vec::new()), Pop::Damaged);
        assert_eq!(consumer.position(), 3);
        assert_eq!(pop(&mut consumer).unwrap(), b"after");
        assert!(consumer.is_empty());
        // The skipped slots were freed for the next lap: the ring fills again fully.
        for _ in 0..16 {
            push(&ring, b"").unwrap();
        }
        assert_eq!(push(&ring, b""), Err(ClaimError::Full));
    }

    #[test]
    fn a_corrupt_last_record_waits_instead_of_guessing() {
        let ring = Ring::with_slots(16);
        let mut consumer = ring.take_consumer().unwrap();
        push(&ring, &payload_for_slots(2, 1)).unwrap();
        corrupt_frame(&ring, 0);
        assert_eq!(consumer.pop_into(&mut Vec::new()), Pop::Pending);
        push(&ring, b"next").unwrap();
        assert_eq!(consumer.pop_into(&mut Vec::new()), Pop::Damaged);
        assert_eq!(pop(&mut consumer).unwrap(), b"next");
    }

    #[test]
    fn take_behind_pending_reads_past_an_unpublished_claim() {
        let ring = Ring::with_slots(16);
        let mut consumer = ring.take_consumer().unwrap();
        push(&ring, b"first").unwrap();
        let held = ring.try_claim(100).unwrap(); // 2 slots, never published in time
        push(&ring, &payload_for_slots(2, 7)).unwrap();
        let aborted = ring.try_claim(3).unwrap();
        drop(aborted);
        push(&ring, b"last").unwrap();
        assert_eq!(pop(&mut consumer).unwrap(), b"first");
        assert_eq!(consumer.pop_into(&mut Vec::new()), Pop::Pending);
        ring.close();
        let mut taken = Vec::new();
        let pending = consumer.take_behind_pending(&mut Vec::new(), |p| taken.push(p.to_vec()));
        assert_eq!(pending, 1);
        assert_eq!(taken, vec![payload_for_slots(2, 7), b"last".to_vec()]);
        assert!(consumer.is_empty());
        drop(held);
    }

    #[test]
    fn an_abandoned_ring_is_counted_not_consumed() {
        let ring = Ring::with_slots(16);
        let mut consumer = ring.take_consumer().unwrap();
        push(&ring, b"taken").unwrap();
        assert_eq!(pop(&mut consumer).unwrap(), b"taken");
        // The listener goes off to write its batch and never comes back.
        consumer.begin_write();
        push(&ring, b"a").unwrap();
        let held = ring.try_claim(1).unwrap();
        push(&ring, &payload_for_slots(3, 2)).unwrap();
        ring.close();
        assert!(
            ring.consumer_active(),
            "a crash drain still waits for the batch"
        );
        ring.abandon();
        assert!(!ring.consumer_taking());
        assert_eq!(ring.count_unread(|_| true), (2, 1));
        // The filter sees each record's first bytes (a long one's first PEEK_BYTES)
        // and decides what counts.
        let mut seen = Vec::new();
        let counted = ring.count_unread(|start| {
            seen.push(start.to_vec());
            start == b"a"
        });
        assert_eq!(counted, (1, 1));
        assert_eq!(seen, vec![b"a".to_vec(), vec![2; readers::PEEK_BYTES]]);
        // If the listener ever returns, it takes nothing more.
        consumer.end_write();
        assert!(consumer.abandoned());
        assert!(!consumer.hold());
        drop(held);
    }

    #[test]
    fn abandon_waits_for_a_consumer_that_is_taking_records() {
        let ring = Ring::with_slots(16);
        let mut consumer = ring.take_consumer().unwrap();
        push(&ring, b"x").unwrap();
        assert!(consumer.hold());
        ring.abandon();
        assert!(
            ring.consumer_taking(),
            "still taking its batch: not yet countable"
        );
        consumer.release();
        assert!(!ring.consumer_taking());
        assert!(
            !consumer.hold(),
            "an abandoned ring is never consumed again"
        );
    }
}
