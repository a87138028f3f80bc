//! The record's timestamp: the time-stamp counter on the caller where it is invariant,
//! converted to wall-clock time on the listener; `clock_gettime` elsewhere.
//!
//! On this kind of machine (a VM on an x86-64 host) `clock_gettime(CLOCK_REALTIME)`
//! costs several times an `rdtsc` (measured by `examples/latency`; see the README),
//! most of a log call that formats nothing. With an invariant TSC (CPUID leaf
//! 0x8000_0007, EDX bit 8: constant rate, never stops) the producer stores raw ticks
//! (flagged in the record, [`crate::record::Header::ticks`]) and the reader converts
//! them: `wall = reference wall + (ticks - reference ticks) * ns per tick`, with the
//! reference re-taken (one `rdtsc` and one `clock_gettime`) whenever a record is more
//! than [`REFERENCE_NS`] newer than it, so the wall clock's steps and slewing are
//! followed, and the rate measured against `CLOCK_MONOTONIC` over the whole life of
//! the process (re-measured whenever that life has doubled). Older records (a
//! backlog) are converted from the reference without taking a new one. Everything here is
//! async-signal-safe (atomics, a const thread-local without destructor, `rdtsc`,
//! `clock_gettime`): the crash drain converts too.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use super::clock_nanos;

/// A record newer than the reference by this much, in nanoseconds, re-takes it.
const REFERENCE_NS: f64 = 1_000_000.0;
/// The rate is measured over at least this much time (the first conversion waits for
/// it, on the listener or the crash drain, never on a caller).
const MIN_CALIBRATION_NS: u64 = 1_000_000;

const UNDECIDED: u8 = 0;
const TSC: u8 = 1;
const CLOCK: u8 = 2;
static SOURCE: AtomicU8 = AtomicU8::new(UNDECIDED);
/// The process's calibration start: ticks and `CLOCK_MONOTONIC` nanoseconds.
static BASE_TICKS: AtomicU64 = AtomicU64::new(0);
static BASE_MONO: AtomicU64 = AtomicU64::new(0);
/// Nanoseconds per tick (`f64` bits), and the monotonic span it was measured over.
static NS_PER_TICK: AtomicU64 = AtomicU64::new(0);
static MEASURED_OVER: AtomicU64 = AtomicU64::new(0);

/// A thread's reference for converting ticks, and the last tick it holds for: what
/// [`wall_from_ticks`] needs for each record, so that a record within it costs a
/// compare and a multiply-add (no atomics, no division).
#[derive(Clone, Copy)]
struct Reference {
    ticks: u64,
    /// Wall nanoseconds at `ticks`; 0 until taken.
    wall: u64,
    /// Nanoseconds per tick in fixed point, 32 fraction bits: a record converts with
    /// an integer multiply.
    ns_per_tick_fixed: u64,
    /// Records up to this tick are neither [`REFERENCE_NS`] newer than the reference
    /// nor past the rate's measure ([`rate`]): they use the reference as it is.
    valid_until: u64,
}

const NO_REFERENCE: Reference = Reference {
    ticks: 0,
    wall: 0,
    ns_per_tick_fixed: 0,
    valid_until: 0,
};

thread_local! {
    /// This thread's reference, [`NO_REFERENCE`] until taken.
    static REFERENCE: Cell<Reference> = const { Cell::new(NO_REFERENCE) };
}

/// Chooses the clock, once per process (every queue calls it when it is built, so it
/// is decided before any caller logs).
pub(crate) fn init() {
    if SOURCE.load(Ordering::Acquire) != UNDECIDED {
        return;
    }
    // (Miri has neither CPUID nor the TSC.)
    let source = if !cfg!(miri) && invariant_tsc() {
        BASE_MONO.store(clock_nanos(libc::CLOCK_MONOTONIC), Ordering::Relaxed);
        BASE_TICKS.store(read_tsc(), Ordering::Relaxed);
        TSC
    } else {
        CLOCK
    };
    // Release: the base is set before anyone sees `TSC`.
    let _ = SOURCE.compare_exchange(UNDECIDED, source, Ordering::Release, Ordering::Relaxed);
}

/// The caller's timestamp: `(ticks, true)` on an invariant TSC, else `(wall
/// nanoseconds, false)`.
#[inline]
pub(crate) fn stamp() -> (u64, bool) {
    if SOURCE.load(Ordering::Relaxed) == TSC {
        (read_tsc(), true)
    } else {
        (super::now_nanos(), false)
    }
}

/// Wall-clock nanoseconds for `ticks` of a record stamped on this process's TSC.
pub(crate) fn wall_from_ticks(ticks: u64) -> u64 {
    let mut reference = REFERENCE.try_with(Cell::get).unwrap_or(NO_REFERENCE);
    if reference.wall == 0 || ticks > reference.valid_until {
        reference = renewed(reference, ticks);
        let _ = REFERENCE.try_with(|r| r.set(reference));
    }
    reference.convert(ticks)
}

impl Reference {
    fn new(ticks: u64, wall: u64, ns_per_tick: f64, valid_until: u64) -> Reference {
        Reference {
            ticks,
            wall,
            ns_per_tick_fixed: (ns_per_tick * (1u64 << 32) as f64) as u64,
            valid_until,
        }
    }

    /// Wall nanoseconds at `ticks`, by this reference: records after it (the usual
    /// case under load) and before it (a backlog, drained after the reference was
    /// taken) alike, in integers. u128 holds any product.
    fn convert(&self, ticks: u64) -> u64 {
        let scaled = |ticks: u64| {
            let nanos = (u128::from(ticks) * u128::from(self.ns_per_tick_fixed)) >> 32;
            u64::try_from(nanos).unwrap_or(u64::MAX)
        };
        match ticks.checked_sub(self.ticks) {
            Some(after) => self.wall.saturating_add(scaled(after)),
            None => self.wall.saturating_sub(scaled(self.ticks - ticks)),
        }
    }
}

/// The reference for a record at `ticks` past `reference`'s validity: the rate checked
/// (re-measured if need be), and a new reference taken if the record is more than
/// [`REFERENCE_NS`] newer than the old one (or there was none).
#[cold]
fn renewed(reference: Reference, ticks: u64) -> Reference {
    let ns_per_tick = rate(ticks);
    let (mut ref_ticks, mut ref_wall) = (reference.ticks, reference.wall);
    let newer = (ticks as f64 - ref_ticks as f64) * ns_per_tick;
    if ref_wall == 0 || newer > REFERENCE_NS {
        (ref_ticks, ref_wall) = (read_tsc(), clock_nanos(libc::CLOCK_REALTIME));
    }
    // The rate holds while the process's age stays under twice its measure (`rate`).
    let measured_over = MEASURED_OVER.load(Ordering::Relaxed) as f64;
    let rate_until = BASE_TICKS
        .load(Ordering::Relaxed)
        .saturating_add((2.0 * measured_over / ns_per_tick) as u64);
    let reference_until = ref_ticks.saturating_add((REFERENCE_NS / ns_per_tick) as u64);
    // One tick short of each bound, so that rounding can only renew early.
    let valid_until = rate_until.min(reference_until).saturating_sub(1);
    Reference::new(ref_ticks, ref_wall, ns_per_tick, valid_until)
}

/// Forgets this thread's reference: the crash drain takes a fresh one (it may have
/// interrupted this thread while it was updating it).
pub(crate) fn reset_reference() {
    let _ = REFERENCE.try_with(|r| r.set(NO_REFERENCE));
}

/// Nanoseconds per tick, measured over the process's life so far (at least
/// [`MIN_CALIBRATION_NS`]; re-measured once a record at `ticks` shows that life has
/// doubled). Reads no clock while the measure stands.
fn rate(ticks: u64) -> f64 {
    let base_mono = BASE_MONO.load(Ordering::Relaxed);
    let cached = f64::from_bits(NS_PER_TICK.load(Ordering::Relaxed));
    let over = MEASURED_OVER.load(Ordering::Relaxed) as f64;
    let age = ticks.saturating_sub(BASE_TICKS.load(Ordering::Relaxed)) as f64 * cached;
    if cached > 0.0 && age < 2.0 * over {
        return cached;
    }
    let mut now = clock_nanos(libc::CLOCK_MONOTONIC);
    while now.saturating_sub(base_mono) < MIN_CALIBRATION_NS {
        std::hint::spin_loop();
        now = clock_nanos(libc::CLOCK_MONOTONIC);
    }
    let ticks = read_tsc().saturating_sub(BASE_TICKS.load(Ordering::Relaxed));
    let span = now.saturating_sub(base_mono);
    if ticks == 0 {
        return if cached > 0.0 { cached } else { 1.0 };
    }
    let measured = span as f64 / ticks as f64;
    NS_PER_TICK.store(measured.to_bits(), Ordering::Relaxed);
    MEASURED_OVER.store(span, Ordering::Relaxed);
    measured
}

#[cfg(target_arch = "x86_64")]
fn invariant_tsc() -> bool {
    use std::arch::x86_64::__cpuid;
    // Leaf 0x8000_0000 gives the highest extended leaf: 0x8000_0007 is asked only
    // where it exists.
    __cpuid(0x8000_0000).eax >= 0x8000_0007 && __cpuid(0x8000_0007).edx & (1 << 8) != 0
}

#[cfg(not(target_arch = "x86_64"))]
fn invariant_tsc() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn read_tsc() -> u64 {
    // SAFETY: rdtsc is a baseline x86-64 instruction without operands or memory
    // effects; Linux lets user mode run it (unless the process itself turned that
    // off with prctl(PR_SET_TSC), which nothing here does).
    unsafe { std::arch::x86_64::_rdtsc() }
}

#[cfg(not(target_arch = "x86_64"))]
fn read_tsc() -> u64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_convert_exactly_in_fixed_point_either_side_of_the_reference() {
        let wall: u64 = 1_700_000_000_123_456_789;
        for ns_per_tick in [0.25, 0.333_333_333, 0.417_1, 1.0, 2.5] {
            let reference = Reference::new(1_000_000, wall, ns_per_tick, u64::MAX);
            for ticks in [0u64, 1, 3, 1_000, 123_457, 999_999, 2_700_000, 4_000_000] {
                // The offset is small enough for an f64 to hold it exactly; the wall
                // time is not (an f64 holds it to 256 ns).
                let offset = (ticks as f64 - 1_000_000.0) * ns_per_tick;
                let exact = wall as i128 + offset.round() as i128;
                let converted = reference.convert(ticks);
                // Within a nanosecond (the fixed point's rounding).
                assert!(
                    (converted as i128 - exact).abs() <= 1,
                    "{ns_per_tick} ns/tick, at {ticks}: {converted} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn ticks_convert_to_the_wall_clock() {
        init();
        if SOURCE.load(Ordering::Relaxed) != TSC {
            return;
        }
        let (ticks, is_ticks) = stamp();
        assert!(is_ticks);
        let wall = clock_nanos(libc::CLOCK_REALTIME);
        let converted = wall_from_ticks(ticks);
        // Within a millisecond of the clock read right after it.
        assert!(
            converted.abs_diff(wall) < 1_000_000,
            "{converted} vs {wall}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (later, _) = stamp();
        let wall = clock_nanos(libc::CLOCK_REALTIME);
        assert!(wall_from_ticks(later).abs_diff(wall) < 1_000_000);
        // And an old stamp still converts to its own time, 20 ms before.
        let back = wall_from_ticks(ticks);
        assert!(
            back.abs_diff(converted) < 1_000_000,
            "{back} vs {converted}"
        );
    }
}
