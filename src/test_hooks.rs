//! Hooks for quelog's own integration tests (`tests/reentrancy.rs`). Hidden and
//! unstable: not part of the API.
//!
//! They reach states a test cannot reliably produce from outside, like a producer
//! stopped between its claim and its publish. Nothing here can break memory safety or
//! the accounting: a held claim is stamped (aborted) when it is dropped, as any claim.

#![doc(hidden)]

use crate::handler::QueueHandler;
use crate::ring::Claim;

/// A claim on a queue's ring, held open: neither published nor given up. This is what
/// a producer leaves behind while a signal handler runs on it between claim and
/// publish: the listener cannot read past it, and a lap later producers find its slot
/// taken. Dropping it gives the claim up (the listener skips it; it was never a
/// record, so it is not counted anywhere).
pub struct HeldClaim<'a> {
    _claim: Claim<'a>,
}

impl std::fmt::Debug for HeldClaim<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldClaim").finish_non_exhaustive()
    }
}

/// Claims room for a payload of `payload_len` bytes on `handler`'s ring and holds it
/// open; `None` if the ring has no room for it.
pub fn hold_claim(handler: &QueueHandler, payload_len: usize) -> Option<HeldClaim<'_>> {
    handler
        .shared
        .ring
        .try_claim(payload_len)
        .ok()
        .map(|claim| HeldClaim { _claim: claim })
}

/// Slots of 64 bytes in `handler`'s ring.
pub fn ring_slots(handler: &QueueHandler) -> usize {
    handler.shared.ring.slots()
}
