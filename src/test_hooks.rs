//! Hooks for quelog's own tests, fuzz targets and examples: only with the cargo
//! feature `test-hooks`, which the crate's dev-dependency on itself turns on. A user's
//! build never has any of this.
//!
//! They reach states a test cannot reliably produce from outside, like a producer
//! stopped between its claim and its publish, or a listener that takes nothing. A held
//! claim is stamped (aborted) when it is dropped, as any claim.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::handler::QueueHandler;
use crate::listener::ListenerConfig;
use crate::ring::Claim;

/// A claim on a queue's ring, held open: neither published nor given up. This is what
/// a producer leaves behind while a signal handler runs on it between claim and
/// publish: the listener cannot read past it, and a lap later producers find its slot
/// taken. Dropping it gives the claim up (the listener skips it). At a stop whose grace
/// period it outlasts, it counts as one abandoned record, like the interrupted log
/// call it stands for.
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

/// Test hooks of a listener.
#[derive(Debug, Clone, Default)]
pub struct ListenerHooks {
    /// While set, the listener takes nothing off the ring (until a stop is requested).
    pub hold: Option<Arc<AtomicBool>>,
    /// Once set, the listener thread panics outside any `catch_unwind` and dies.
    pub die: Option<Arc<AtomicBool>>,
}

impl ListenerHooks {
    /// Called by the listener once per loop: dies if told to; `true` (after a short
    /// sleep) while held.
    pub(crate) fn held(&self, stop_requested: bool) -> bool {
        let set = |flag: &Option<Arc<AtomicBool>>| {
            flag.as_ref().is_some_and(|f| f.load(Ordering::Acquire))
        };
        if set(&self.die) {
            // Not caught: the thread ends as if quelog itself had a bug.
            panic!("quelog test hook: the listener thread dies");
        }
        if !stop_requested && set(&self.hold) {
            std::thread::sleep(Duration::from_millis(1));
            return true;
        }
        false
    }
}

/// `config` with `hooks`.
pub fn with_hooks(mut config: ListenerConfig, hooks: ListenerHooks) -> ListenerConfig {
    config.hooks = hooks;
    config
}

impl crate::Builder {
    /// The listener's test hooks.
    pub fn listener_hooks(mut self, hooks: ListenerHooks) -> crate::Builder {
        self.listener.hooks = hooks;
        self
    }
}

/// A wall clock for rotation tests ([`crate::Rotation::clock`]): the test sets and
/// moves it, and sets its UTC offset (to play a DST change), instead of waiting hours.
#[derive(Debug, Clone, Default)]
pub struct FakeClock(Arc<FakeTime>);

#[derive(Debug, Default)]
struct FakeTime {
    unix_seconds: std::sync::atomic::AtomicI64,
    utc_offset: std::sync::atomic::AtomicI32,
}

impl FakeClock {
    /// A clock at `unix_seconds`, offset 0.
    pub fn at(unix_seconds: i64) -> FakeClock {
        let clock = FakeClock::default();
        clock.set(unix_seconds);
        clock
    }

    /// Sets the time.
    pub fn set(&self, unix_seconds: i64) {
        self.0.unix_seconds.store(unix_seconds, Ordering::SeqCst);
    }

    /// Moves the time by `seconds` (negative: back).
    pub fn advance(&self, seconds: i64) {
        self.0.unix_seconds.fetch_add(seconds, Ordering::SeqCst);
    }

    /// Sets local time's offset east of UTC, in seconds.
    pub fn set_utc_offset(&self, seconds: i32) {
        self.0.utc_offset.store(seconds, Ordering::SeqCst);
    }

    pub(crate) fn now(&self) -> std::time::SystemTime {
        let seconds = self.0.unix_seconds.load(Ordering::SeqCst);
        let by = Duration::from_secs(seconds.unsigned_abs());
        let epoch = std::time::UNIX_EPOCH;
        let at = if seconds >= 0 {
            epoch.checked_add(by)
        } else {
            epoch.checked_sub(by)
        };
        at.unwrap_or(epoch)
    }

    pub(crate) fn utc_offset(&self) -> i32 {
        self.0.utc_offset.load(Ordering::SeqCst)
    }
}
