//! A producer's claim on the slots of one record: written into, then published (or
//! dropped, which stamps it aborted so the consumer never waits on it).

use super::{Ring, FRAME_ABORTED, SLOT_BYTES};
use crate::sync::Ordering;

/// Exclusive ownership of the slots of one record between claim and publish.
///
/// Dropping a claim without [`Claim::publish`] still stamps it, marked aborted, so the
/// consumer is never left waiting on it.
pub(crate) struct Claim<'a> {
    pub(super) ring: &'a Ring,
    pub(super) pos: u64,
    /// Frame plus payload bytes.
    pub(super) len: usize,
    /// Bytes written so far, frame included.
    pub(super) cursor: usize,
    pub(super) published: bool,
}

impl Claim<'_> {
    /// Appends `bytes` to the record. Bytes past the claimed length are ignored (the
    /// caller sized the claim from the same bytes, so this does not happen).
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        let room = self.len - self.cursor;
        let mut rest = bytes.get(..room).unwrap_or(bytes);
        while !rest.is_empty() {
            let slot = self.pos + (self.cursor / SLOT_BYTES) as u64;
            let offset = self.cursor % SLOT_BYTES;
            let take = self.ring.with_run_mut(slot, offset, |dst, available| {
                let take = rest.len().min(available);
                // SAFETY: the claim owns every slot touched (CAS on `tail`; `rest` ends
                // inside it), freed before we claimed (acquire on the stamp), and
                // `take <= available` keeps the copy inside the run handed out.
                unsafe { std::ptr::copy_nonoverlapping(rest.as_ptr(), dst, take) };
                take
            });
            self.cursor += take;
            rest = rest.get(take..).unwrap_or_default();
        }
    }

    /// Makes the record visible to the consumer.
    pub(crate) fn publish(mut self) {
        self.published = true;
        // Drop stamps it.
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !self.published {
            let flags = FRAME_ABORTED.to_le_bytes();
            self.ring.chunk(self.pos).with_mut(|chunk| {
                // SAFETY: as in `write`: the claim still owns its first slot, and bytes
                // 4..8 are inside it.
                unsafe {
                    std::ptr::copy_nonoverlapping(flags.as_ptr(), chunk.cast::<u8>().add(4), 4)
                }
            });
        }
        // Release: the consumer's acquire load of this stamp makes every byte written
        // into the claim visible before it reads them.
        self.ring
            .store_seq(self.pos, self.pos + 1, Ordering::Release);
    }
}
