//! Wall-clock timestamps for entries and tag stamps, and the [`Clock`] that makes them.
//!
//! Timestamps are microseconds since the Unix epoch so that instances sharing an L2 can compare
//! them. Within one process [`SystemClock`] never returns the same value twice, which is what
//! makes "created after the last invalidation" a strict, race-free comparison.

use std::{
    fmt,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Microseconds since the Unix epoch.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The epoch itself; older than any real timestamp.
    pub const ZERO: Timestamp = Timestamp(0);

    /// A timestamp from microseconds since the epoch.
    pub const fn from_micros(micros: u64) -> Self {
        Timestamp(micros)
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// This timestamp moved forward by `d`, saturating.
    pub fn saturating_add(self, d: Duration) -> Self {
        Timestamp(
            self.0
                .saturating_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        )
    }

    /// How long from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({}µs)", self.0)
    }
}

/// A source of timestamps. Tests use `testing::ManualClock`.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time. Successive calls in one process must not go backwards.
    fn now(&self) -> Timestamp;

    /// The current time for expiry checks, where ordering between threads does not matter.
    /// Cheaper than [`Clock::now`] for clocks that have to enforce that ordering.
    fn now_for_expiry(&self) -> Timestamp {
        self.now()
    }
}

/// The system clock, made strictly increasing within the process.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

// Shared by every `SystemClock` so that timestamps from the facade and the backends of one process
// are totally ordered.
static LAST_MICROS: AtomicU64 = AtomicU64::new(0);

fn wall_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

impl Clock for SystemClock {
    fn now_for_expiry(&self) -> Timestamp {
        Timestamp(wall_micros())
    }

    fn now(&self) -> Timestamp {
        let wall = wall_micros();
        let mut last = LAST_MICROS.load(Ordering::Relaxed);
        loop {
            let next = wall.max(last + 1);
            match LAST_MICROS.compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Timestamp(next),
                Err(actual) => last = actual,
            }
        }
    }
}

/// The system clock moved by an offset that a clock-sync task keeps current (for example the
/// difference to the shared Redis's `TIME`), so that stamps and entry times of instances on
/// different hosts compare on one time line. Strictly increasing within the process, like
/// [`SystemClock`], even when the offset moves backwards.
#[derive(Debug, Default)]
pub struct OffsetClock {
    _todo: (),
}

impl OffsetClock {
    /// A clock with offset zero.
    pub fn new() -> Self {
        todo!("backplane: OffsetClock::new")
    }

    /// Sets the offset, in microseconds, added to the system clock.
    pub fn set_offset_micros(&self, offset: i64) {
        let _ = offset;
        todo!("backplane: OffsetClock::set_offset_micros")
    }

    /// The offset now, in microseconds.
    pub fn offset_micros(&self) -> i64 {
        todo!("backplane: OffsetClock::offset_micros")
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> Timestamp {
        todo!("backplane: OffsetClock::now")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_is_strictly_increasing() {
        let clock = SystemClock;
        let mut prev = clock.now();
        for _ in 0..10_000 {
            let next = clock.now();
            assert!(next > prev);
            prev = next;
        }
    }
}
