//! The time rotation reads: the system clock, or (tests) a fake one.

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{NaiveDateTime, Offset, TimeZone, Timelike};

/// Where a rotating sink reads the time.
#[derive(Debug, Clone, Default)]
pub(crate) enum Clock {
    /// The system clock, with the local time zone from chrono.
    #[default]
    System,
    /// A clock the test moves ([`crate::test_hooks::FakeClock`]).
    #[cfg(feature = "test-hooks")]
    Fake(crate::test_hooks::FakeClock),
}

impl Clock {
    pub(crate) fn now(&self) -> SystemTime {
        match self {
            Clock::System => SystemTime::now(),
            #[cfg(feature = "test-hooks")]
            Clock::Fake(fake) => fake.now(),
        }
    }

    /// Seconds east of UTC of local time at `at`.
    pub(crate) fn utc_offset_at(&self, at: SystemTime) -> i32 {
        match self {
            Clock::System => {
                let utc = chrono::DateTime::<chrono::Utc>::from(at).naive_utc();
                chrono::Local
                    .offset_from_utc_datetime(&utc)
                    .fix()
                    .local_minus_utc()
            }
            #[cfg(feature = "test-hooks")]
            Clock::Fake(fake) => fake.utc_offset(),
        }
    }
}

/// Seconds since the epoch, negative before it.
fn unix_seconds(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_secs() as i64,
        Err(before) => -(before.duration().as_secs() as i64) - 1,
    }
}

/// The start of the hour or day holding `at`, on a wall clock `offset` seconds east of
/// UTC.
pub(super) fn period_start(at: SystemTime, offset: i32, hourly: bool) -> NaiveDateTime {
    let wall = unix_seconds(at).saturating_add(i64::from(offset));
    let Some(time) = chrono::DateTime::from_timestamp(wall, 0).map(|t| t.naive_utc()) else {
        return NaiveDateTime::MIN;
    };
    let start = if hourly {
        time.with_minute(0).and_then(|t| t.with_second(0))
    } else {
        time.date().and_hms_opt(0, 0, 0)
    };
    start.unwrap_or(time)
}
