//! [`Rotation`]: what a rotating output is told.

use std::time::Duration;

use super::clock::Clock;
use super::naming::Naming;
use super::retention::Retention;

/// The time periods a file can cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Period {
    Hourly,
    Daily,
}

/// When and how an [`crate::Output::file`] rotates.
///
/// * [`Rotation::size`]: when the file would grow past a size;
/// * [`Rotation::hourly`], [`Rotation::daily`]: when the hour or day changes, in UTC
///   or local time ([`Rotation::local_time`]; by default as the builder's
///   [`crate::Builder::local_time`]);
/// * both: [`Rotation::daily`]`.`[`max_size`](Rotation::max_size)`(bytes)`.
///
/// Retention is part of the rotation: [`Rotation::keep`] rotated files (the live file
/// is not counted) and/or [`Rotation::max_age`]; it is applied at start-up and after
/// every rotation, and only to files named as this output names them, so other files
/// in the directory are never touched.
///
/// Rotation happens when a batch is written: an idle program rotates when its next
/// record comes. A clock that jumps back never rotates (the live file keeps taking
/// records until the clock passes its period again), and names never go back in time,
/// so a jump never overwrites or prunes a newer file. In local time a DST change
/// cannot make two files collide: a repeated hour only makes one file cover both.
///
/// ```no_run
/// use quelog::{Builder, Output, Rotation};
///
/// let guard = Builder::new()
///     .output(Output::file("logs/app.log").rotate(Rotation::daily().max_size(100 << 20).keep(7)))
///     .install()?;
/// # drop(guard);
/// # Ok::<(), quelog::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Rotation {
    pub(super) period: Option<Period>,
    pub(super) max_size: Option<u64>,
    pub(super) retention: Retention,
    pub(super) naming: Naming,
    pub(super) local_time: Option<bool>,
    pub(super) on_start: bool,
    #[cfg_attr(not(feature = "compression"), allow(dead_code))]
    pub(super) compress: bool,
    pub(super) clock: Clock,
}

impl Rotation {
    fn new(period: Option<Period>, max_size: Option<u64>) -> Rotation {
        Rotation {
            period,
            max_size,
            retention: Retention::default(),
            naming: Naming::default(),
            local_time: None,
            on_start: false,
            compress: false,
            clock: Clock::default(),
        }
    }

    /// Rotates before the file would grow past `bytes` (a single line longer than
    /// that gets a file of its own).
    pub fn size(bytes: u64) -> Rotation {
        Rotation::new(None, Some(bytes.max(1)))
    }

    /// Rotates when the hour changes.
    pub fn hourly() -> Rotation {
        Rotation::new(Some(Period::Hourly), None)
    }

    /// Rotates when the day changes.
    pub fn daily() -> Rotation {
        Rotation::new(Some(Period::Daily), None)
    }

    /// Also rotates before the file would grow past `bytes`.
    pub fn max_size(mut self, bytes: u64) -> Rotation {
        self.max_size = Some(bytes.max(1));
        self
    }

    /// Keeps the `n` newest rotated files (beside the live one) and removes older
    /// ones. `keep(0)` keeps none.
    pub fn keep(mut self, n: usize) -> Rotation {
        self.retention.keep = Some(n);
        self
    }

    /// Removes rotated files last modified more than `age` ago.
    pub fn max_age(mut self, age: Duration) -> Rotation {
        self.retention.max_age = Some(age);
        self
    }

    /// How rotated files are named (default [`Naming::Dates`]).
    pub fn naming(mut self, naming: Naming) -> Rotation {
        self.naming = naming;
        self
    }

    /// Periods (and dates in names) in local time (`true`) or UTC (`false`). Without
    /// this, as the builder's [`crate::Builder::local_time`] (UTC by default).
    pub fn local_time(mut self, local: bool) -> Rotation {
        self.local_time = Some(local);
        self
    }

    /// Rotates a non-empty live file when the program starts (default off).
    pub fn rotate_on_start(mut self, on: bool) -> Rotation {
        self.on_start = on;
        self
    }

    /// Gzips rotated files (`app.2026-11-22.log.gz`) on a thread of its own (never in
    /// the listener's drain), crash safely: a temporary file, synced, renamed, then the
    /// original removed; a start-up finishes or cleans up what a crash left. At a stop
    /// the queued compressions get up to 2 seconds; the rest is done at the next
    /// start. Needs the crate feature `compression`. Default off.
    #[cfg(feature = "compression")]
    pub fn compress(mut self, on: bool) -> Rotation {
        self.compress = on;
        self
    }

    /// A fake clock, for tests that rotate by time without waiting for it.
    #[cfg(feature = "test-hooks")]
    pub fn clock(mut self, clock: crate::test_hooks::FakeClock) -> Rotation {
        self.clock = Clock::Fake(clock);
        self
    }
}
