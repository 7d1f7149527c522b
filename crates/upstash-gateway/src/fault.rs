//! Opt-in fault and latency injection, for benchmarks and failure tests. Off by default.
//!
//! Three knobs, applied to every REST request before authentication (they stand for the network
//! and the remote service, not for Redis):
//! - added latency: a fixed delay plus a uniformly random jitter in `0..=jitter`, slept before the
//!   request is handled (acts like a remote region's round trip);
//! - a failure rate: that fraction of requests is answered `503` with
//!   `{"error": "ERR gateway fault injection: simulated failure"}` without touching Redis;
//! - an outage: until it ends, every request is answered `503` with `… simulated outage`.
//!
//! Failures are answered with 503 rather than by dropping the TCP connection: a status is
//! deterministic for tests, and a client's transport-error path can be exercised by killing the
//! gateway or Redis instead (see `testing`). The admin endpoint `/__gateway/fault` and
//! [`FaultHandle`] change the knobs at run time.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// Latency and failure settings. The default injects nothing.
///
/// Build one from [`FaultConfig::default`] with the setters; more kinds of fault may be added,
/// so the struct cannot be written as a literal outside this crate.
///
/// ```
/// use std::time::Duration;
/// use upstash_gateway::FaultConfig;
///
/// let faults = FaultConfig::default()
///     .with_latency(Duration::from_millis(40))
///     .with_jitter(Duration::from_millis(10))
///     .with_failure_rate(0.01);
/// assert_eq!((faults.latency_ms, faults.jitter_ms), (40, 10));
/// assert_ne!(faults, FaultConfig::default());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct FaultConfig {
    /// Fixed delay added to every request, in milliseconds.
    pub latency_ms: u64,
    /// Extra random delay, uniform in `0..=jitter_ms` milliseconds.
    pub jitter_ms: u64,
    /// Fraction of requests (0.0–1.0) answered with a simulated 503.
    pub failure_rate: f64,
}

impl FaultConfig {
    /// Adds `latency` to every request (whole milliseconds; finer parts are dropped).
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Adds a uniformly random `0..=jitter` on top of the fixed latency (whole milliseconds).
    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        self.jitter_ms = u64::try_from(jitter.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Answers this fraction of requests with a simulated 503. A gateway clamps it to 0.0–1.0
    /// (NaN counts as 0.0) when it takes the settings.
    pub fn with_failure_rate(mut self, rate: f64) -> Self {
        self.failure_rate = rate;
        self
    }

    fn validated(mut self) -> Self {
        self.failure_rate = if self.failure_rate.is_nan() {
            0.0
        } else {
            self.failure_rate.clamp(0.0, 1.0)
        };
        self
    }
}

/// What the injector decided for one request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Handle the request normally (after the delay already slept).
    Pass,
    /// Answer 503 with this message.
    Fail(&'static str),
}

#[derive(Debug, Default)]
struct FaultState {
    config: FaultConfig,
    outage_until: Option<Instant>,
}

/// Changes fault injection of a running gateway, from
/// [`RunningGateway::faults`](crate::RunningGateway::faults); cheap to clone, every clone acts on
/// the same gateway. Changes apply to requests that arrive afterwards.
// No public `Default`: a handle not taken from a gateway would control nothing.
#[derive(Clone, Debug)]
pub struct FaultHandle {
    state: Arc<Mutex<FaultState>>,
}

impl FaultHandle {
    pub(crate) fn new(config: FaultConfig) -> Self {
        let handle = FaultHandle {
            state: Arc::default(),
        };
        handle.set(config);
        handle
    }

    /// Replaces the latency and failure settings (the failure rate clamped to 0.0–1.0); an
    /// ongoing outage is kept.
    pub fn set(&self, config: FaultConfig) {
        self.lock().config = config.validated();
    }

    /// The current latency and failure settings.
    pub fn config(&self) -> FaultConfig {
        self.lock().config
    }

    /// Answers every request with 503 for `duration` from now, replacing any outage under way.
    pub fn start_outage(&self, duration: Duration) {
        self.lock().outage_until = Some(Instant::now() + duration);
    }

    /// Ends an outage early.
    pub fn end_outage(&self) {
        self.lock().outage_until = None;
    }

    /// Time left in the current outage, if any.
    pub fn outage_remaining(&self) -> Option<Duration> {
        let until = self.lock().outage_until?;
        until
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
    }

    /// Turns all injection off: latency, failure rate and any outage.
    pub fn clear(&self) {
        let mut state = self.lock();
        state.config = FaultConfig::default();
        state.outage_until = None;
    }

    /// Sleeps the configured latency, then decides whether the request fails.
    pub(crate) async fn apply(&self) -> Verdict {
        let (delay, failure_rate) = {
            let state = self.lock();
            if state
                .outage_until
                .is_some_and(|until| Instant::now() < until)
            {
                return Verdict::Fail("ERR gateway fault injection: simulated outage");
            }
            let jitter = if state.config.jitter_ms == 0 {
                0
            } else {
                fastrand::u64(0..=state.config.jitter_ms)
            };
            (
                Duration::from_millis(state.config.latency_ms.saturating_add(jitter)),
                state.config.failure_rate,
            )
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if failure_rate > 0.0 && fastrand::f64() < failure_rate {
            Verdict::Fail("ERR gateway fault injection: simulated failure")
        } else {
            Verdict::Pass
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.state.lock().expect("fault state lock poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn default_injects_nothing() {
        let faults = FaultHandle::new(FaultConfig::default());
        for _ in 0..100 {
            assert_eq!(faults.apply().await, Verdict::Pass);
        }
    }

    #[tokio::test]
    async fn failure_rate_one_always_fails_and_zero_never() {
        let faults = FaultHandle::new(FaultConfig::default().with_failure_rate(7.0));
        assert_eq!(faults.config().failure_rate, 1.0);
        assert!(
            matches!(faults.apply().await, Verdict::Fail(m) if m.contains("simulated failure"))
        );
        faults.set(FaultConfig::default());
        assert_eq!(faults.apply().await, Verdict::Pass);
    }

    #[tokio::test]
    async fn outage_fails_until_ended() {
        let faults = FaultHandle::new(FaultConfig::default());
        faults.start_outage(Duration::from_secs(60));
        assert!(faults.outage_remaining().is_some());
        assert!(matches!(faults.apply().await, Verdict::Fail(m) if m.contains("outage")));
        faults.end_outage();
        assert_eq!(faults.apply().await, Verdict::Pass);
    }

    #[tokio::test(start_paused = true)]
    async fn latency_is_slept() {
        let faults =
            FaultHandle::new(FaultConfig::default().with_latency(Duration::from_millis(250)));
        let start = tokio::time::Instant::now();
        faults.apply().await;
        assert!(start.elapsed() >= Duration::from_millis(250));
    }
}
