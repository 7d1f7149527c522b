//! Test support for backends and applications (feature `testing`): a manual clock, a reference
//! in-memory backend, a fault-injecting wrapper and the backend conformance suite.

mod chaos;
pub mod conformance;
mod map;

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

pub use chaos::{ChaosBackend, ChaosControl, Fault};
pub use map::MapBackend;

use crate::time::{Clock, Timestamp};

/// A clock that moves only when told to (and by 1 µs per reading, so readings stay distinct).
#[derive(Debug)]
pub struct ManualClock {
    micros: AtomicU64,
}

impl Default for ManualClock {
    fn default() -> Self {
        // A realistic epoch offset, so timestamps look like real ones in failures.
        ManualClock::starting_at(Timestamp::from_micros(1_700_000_000_000_000))
    }
}

impl ManualClock {
    /// A clock reading `start`.
    pub fn starting_at(start: Timestamp) -> Self {
        ManualClock {
            micros: AtomicU64::new(start.as_micros()),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.micros.fetch_add(
            u64::try_from(by.as_micros()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_micros(self.micros.fetch_add(1, Ordering::SeqCst))
    }
}

impl Clock for std::sync::Arc<ManualClock> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}
