//! [`TtlPolicy`]: how long an entry is fresh, how much that is jittered, and how long it may be
//! served stale (grace) when refreshing it is slow or fails.

use std::time::Duration;

use crate::{
    error::{Error, Result},
    time::Timestamp,
};

/// Freshness, jitter and grace for one kind of entry.
///
/// ```
/// use std::time::Duration;
/// use cache_core::TtlPolicy;
///
/// // Channel lists: fresh for 5 minutes ±10 %, served stale for up to 1 hour if the database fails.
/// let policy = TtlPolicy::new(Duration::from_secs(300)).with_grace(Duration::from_secs(3600));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TtlPolicy {
    ttl: Duration,
    jitter: f64,
    grace: Duration,
    failsafe_throttle: Duration,
}

impl TtlPolicy {
    /// Fresh for `ttl` (±10 % jitter), no grace period.
    pub fn new(ttl: Duration) -> Self {
        TtlPolicy {
            ttl,
            jitter: 0.1,
            grace: Duration::ZERO,
            failsafe_throttle: Duration::from_secs(10),
        }
    }

    /// Sets the jitter ratio (0 to 0.5): each entry's TTL is drawn uniformly from
    /// `ttl × (1 ± jitter)` so keys written together do not expire together.
    pub fn with_jitter(mut self, ratio: f64) -> Self {
        self.jitter = ratio;
        self
    }

    /// Keeps entries for `grace` past their freshness. A read in grace returns the stale value at
    /// once and refreshes it in the background; a failed refresh serves the stale value instead of
    /// an error (fail-safe).
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// After a failed load served a stale value, treat that value as fresh for this long, so a
    /// failing source is not called on every request (default 10 s).
    pub fn with_failsafe_throttle(mut self, throttle: Duration) -> Self {
        self.failsafe_throttle = throttle;
        self
    }

    /// The nominal time to live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The jitter ratio.
    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// The grace period.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// The fail-safe throttle.
    pub fn failsafe_throttle(&self) -> Duration {
        self.failsafe_throttle
    }

    /// Checks the policy: a non-zero TTL and a jitter ratio in `0..=0.5`.
    pub fn validate(&self) -> Result<()> {
        if self.ttl.is_zero() {
            return Err(Error::Config("ttl must be greater than zero".into()));
        }
        if !(0.0..=0.5).contains(&self.jitter) {
            return Err(Error::Config(format!(
                "jitter ratio {} is outside 0..=0.5",
                self.jitter
            )));
        }
        Ok(())
    }

    /// The TTL for one entry, jittered.
    pub fn jittered_ttl(&self) -> Duration {
        if self.jitter <= 0.0 {
            return self.ttl;
        }
        let factor = 1.0 + self.jitter * (fastrand::f64() * 2.0 - 1.0);
        self.ttl.mul_f64(factor.max(0.0))
    }

    /// `(fresh_until, expires_at)` for an entry whose data was read at `created_at`.
    pub fn entry_times(&self, created_at: Timestamp) -> (Timestamp, Timestamp) {
        let fresh_until = created_at.saturating_add(self.jittered_ttl());
        (fresh_until, fresh_until.saturating_add(self.grace))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_bounds_and_spreads() {
        let policy = TtlPolicy::new(Duration::from_secs(100)).with_jitter(0.1);
        let ttls: Vec<Duration> = (0..1000).map(|_| policy.jittered_ttl()).collect();
        assert!(
            ttls.iter()
                .all(|t| *t >= Duration::from_secs(90) && *t <= Duration::from_secs(110))
        );
        let min = ttls.iter().min().unwrap();
        let max = ttls.iter().max().unwrap();
        assert!(
            *max - *min > Duration::from_secs(10),
            "jitter should spread TTLs"
        );
    }

    #[test]
    fn zero_jitter_is_exact() {
        let policy = TtlPolicy::new(Duration::from_secs(5)).with_jitter(0.0);
        assert_eq!(policy.jittered_ttl(), Duration::from_secs(5));
    }

    #[test]
    fn grace_extends_physical_expiry() {
        let policy = TtlPolicy::new(Duration::from_secs(10))
            .with_jitter(0.0)
            .with_grace(Duration::from_secs(60));
        let (fresh, expires) = policy.entry_times(Timestamp::from_micros(0));
        assert_eq!(fresh, Timestamp::from_micros(10_000_000));
        assert_eq!(expires, Timestamp::from_micros(70_000_000));
    }

    #[test]
    fn invalid_policies_are_rejected() {
        assert!(TtlPolicy::new(Duration::ZERO).validate().is_err());
        assert!(
            TtlPolicy::new(Duration::from_secs(1))
                .with_jitter(0.9)
                .validate()
                .is_err()
        );
        assert!(TtlPolicy::new(Duration::from_secs(1)).validate().is_ok());
    }
}
