//! Wall-clock timestamps for entries and tag stamps, and the [`Clock`] that makes them.
//!
//! Timestamps are microseconds since the Unix epoch so that instances sharing an L2 can compare
//! them. Within one process [`SystemClock`] never returns the same value twice, which is what
//! makes "created after the last invalidation" a strict, race-free comparison.

use std::{
    fmt,
    sync::atomic::{AtomicI64, AtomicU64, Ordering},
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

/// The one guard that makes every clock of this process strictly increasing: `wall` if it is
/// ahead of every stamp handed out so far, else one microsecond after the last one. Shared by
/// [`SystemClock`] and [`OffsetClock`], so stamps from both stay totally ordered even when an
/// offset moves backwards.
fn monotonic(wall: u64) -> Timestamp {
    let mut last = LAST_MICROS.load(Ordering::Relaxed);
    loop {
        let next = wall.max(last + 1);
        match LAST_MICROS.compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return Timestamp(next),
            Err(actual) => last = actual,
        }
    }
}

impl Clock for SystemClock {
    fn now_for_expiry(&self) -> Timestamp {
        Timestamp(wall_micros())
    }

    fn now(&self) -> Timestamp {
        monotonic(wall_micros())
    }
}

/// The system clock moved by an offset that a clock-sync task keeps current (for example the
/// difference to the shared Redis's `TIME`), so that stamps and entry times of instances on
/// different hosts compare on one time line. Strictly increasing within the process, like
/// [`SystemClock`], even when the offset moves backwards.
///
/// # How much skew the stale-fill protection tolerates
///
/// An entry is rejected when a tag stamp is at or after its `created_at`. Across hosts that is
/// only right if both times come from clocks that agree: with raw wall clocks, a writer whose
/// clock runs `d` behind the invalidating host's produces fills that an invalidation up to `d`
/// later still rejects (harmless), while a writer running `d` *ahead* produces fills of data read
/// up to `d` before the invalidation that it does not reject (stale data kept until its TTL).
/// With every instance's `OffsetClock` set to one reference (Redis's `TIME`), the remaining
/// disagreement is each measurement's error, at most half the round trip of the `TIME` call that
/// measured it (RTT/2, typically well under a millisecond to a few milliseconds), so a fill whose
/// data was read more than that before an invalidation is rejected on every host. A caller that
/// measures a round trip above the skew it can accept should keep the previous offset.
#[derive(Debug, Default)]
pub struct OffsetClock {
    offset_micros: AtomicI64,
    // A base other than the system clock (a test's host clock), with its own monotonic guard:
    // the process-wide one belongs to the system clock's time line.
    base: Option<(std::sync::Arc<dyn Clock>, AtomicU64)>,
}

impl OffsetClock {
    /// A clock with offset zero.
    pub fn new() -> Self {
        OffsetClock::default()
    }

    /// An offset clock over `base` instead of the system clock (to model another host's clock
    /// in tests). Strictly increasing on its own, not ordered with the system clock.
    pub fn with_base(base: std::sync::Arc<dyn Clock>) -> Self {
        OffsetClock {
            offset_micros: AtomicI64::new(0),
            base: Some((base, AtomicU64::new(0))),
        }
    }

    /// Sets the offset, in microseconds, added to the system clock.
    pub fn set_offset_micros(&self, offset: i64) {
        self.offset_micros.store(offset, Ordering::Release);
    }

    /// The offset now, in microseconds.
    pub fn offset_micros(&self) -> i64 {
        self.offset_micros.load(Ordering::Acquire)
    }

    fn wall(&self) -> u64 {
        let base = match &self.base {
            Some((base, _)) => base.now_for_expiry().as_micros(),
            None => wall_micros(),
        };
        base.saturating_add_signed(self.offset_micros())
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> Timestamp {
        match &self.base {
            None => monotonic(self.wall()),
            Some((_, last)) => {
                let wall = self.wall();
                let prev = last
                    .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |last| {
                        Some(wall.max(last + 1))
                    })
                    .unwrap_or_default();
                Timestamp(wall.max(prev + 1))
            }
        }
    }

    fn now_for_expiry(&self) -> Timestamp {
        Timestamp(self.wall())
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

    #[test]
    fn offset_clock_adds_its_offset() {
        let clock = OffsetClock::new();
        assert_eq!(clock.offset_micros(), 0);
        clock.set_offset_micros(3_600_000_000);
        let wall = wall_micros();
        let shifted = clock.now_for_expiry().as_micros();
        assert!(shifted >= wall + 3_600_000_000, "{shifted} vs {wall}");
        assert!(shifted < wall + 3_601_000_000, "{shifted} vs {wall}");
        clock.set_offset_micros(-3_600_000_000);
        assert!(clock.now_for_expiry().as_micros() < wall);
    }

    #[test]
    fn offset_clock_stays_strictly_increasing_when_the_offset_moves_back() {
        let clock = OffsetClock::new();
        // Small offsets: the guard is process-wide, and other tests share it.
        clock.set_offset_micros(50_000);
        let ahead = clock.now();
        clock.set_offset_micros(-50_000);
        let mut prev = ahead;
        for _ in 0..1_000 {
            let next = clock.now();
            assert!(next > prev);
            prev = next;
        }
        // Stamps of the system clock in the same process come after the offset clock's.
        let system = SystemClock.now();
        assert!(system > prev);
        assert!(clock.now() > system);
    }
}
