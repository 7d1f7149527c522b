//! The L2 circuit breaker: after consecutive failures it opens and L2 is skipped entirely, so an
//! outage costs at most one timeout per probe interval instead of one per request.
//!
//! Closed → (N consecutive failures) → Open → (after `open_for`) → one caller probes (HalfOpen) →
//! success closes it, failure opens it again. If the probing caller is cancelled, the breaker goes
//! back to Open with an expired deadline so the next caller probes.

use std::{sync::Mutex, time::Duration};

use serde::Serialize;
use tokio::time::Instant;

use crate::stats::{BreakerStats, Counter};

/// When the breaker opens and for how long: `BreakerConfig::default()`, changed with the
/// `with_*` methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (default 3).
    pub failure_threshold: u32,
    /// How long it stays open before a probe (default 5 s).
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 3,
            open_for: Duration::from_secs(5),
        }
    }
}

impl BreakerConfig {
    /// Sets how many consecutive failures open the breaker.
    #[must_use]
    pub fn with_failure_threshold(mut self, failures: u32) -> Self {
        self.failure_threshold = failures;
        self
    }

    /// Sets how long the breaker stays open before a probe.
    #[must_use]
    pub fn with_open_for(mut self, open_for: Duration) -> Self {
        self.open_for = open_for;
        self
    }
}

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// L2 is used.
    Closed,
    /// L2 is skipped.
    Open,
    /// One caller is probing L2.
    HalfOpen,
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

/// What a caller may do now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Permit {
    /// Use L2.
    Allow,
    /// Use L2 as the probe: report the outcome with `on_success`/`on_failure` (or drop the
    /// [`ProbeGuard`] to give the probe up).
    Probe,
    /// Skip L2.
    Deny,
}

#[derive(Debug)]
pub(crate) struct Breaker {
    config: BreakerConfig,
    state: Mutex<State>,
    opened: Counter,
    closed: Counter,
}

impl Breaker {
    pub(crate) fn new(config: BreakerConfig) -> Self {
        Breaker {
            config,
            state: Mutex::new(State::Closed { failures: 0 }),
            opened: Counter::default(),
            closed: Counter::default(),
        }
    }

    pub(crate) fn permit(&self) -> Permit {
        let mut state = self.state.lock().expect("breaker lock");
        match *state {
            State::Closed { .. } => Permit::Allow,
            State::Open { until } if Instant::now() >= until => {
                *state = State::HalfOpen;
                Permit::Probe
            }
            State::Open { .. } | State::HalfOpen => Permit::Deny,
        }
    }

    pub(crate) fn on_success(&self) {
        let mut state = self.state.lock().expect("breaker lock");
        if !matches!(*state, State::Closed { .. }) {
            self.closed.inc();
            tracing::info!("cache L2 circuit breaker closed");
        }
        *state = State::Closed { failures: 0 };
    }

    pub(crate) fn on_failure(&self) {
        let mut state = self.state.lock().expect("breaker lock");
        let open = match *state {
            State::Closed { failures } => failures + 1 >= self.config.failure_threshold,
            State::HalfOpen => true,
            State::Open { .. } => false,
        };
        if open {
            self.opened.inc();
            tracing::warn!(
                open_for = ?self.config.open_for,
                "cache L2 circuit breaker opened; serving from L1"
            );
            *state = State::Open {
                until: Instant::now() + self.config.open_for,
            };
        } else if let State::Closed { failures } = &mut *state {
            *failures += 1;
        }
    }

    /// How long until [`Breaker::permit`] may let a call through: zero unless open.
    pub(crate) fn until_permit(&self) -> Duration {
        match *self.state.lock().expect("breaker lock") {
            State::Open { until } => until.saturating_duration_since(Instant::now()),
            State::Closed { .. } | State::HalfOpen => Duration::ZERO,
        }
    }

    /// Lets the next call probe at once if the breaker is open (something outside the breaker
    /// suggests L2 is back).
    pub(crate) fn probe_soon(&self) {
        let mut state = self.state.lock().expect("breaker lock");
        if let State::Open { until } = &mut *state {
            *until = (*until).min(Instant::now());
        }
    }

    /// Gives up a probe without an outcome (the prober was cancelled).
    pub(crate) fn abandon_probe(&self) {
        let mut state = self.state.lock().expect("breaker lock");
        if matches!(*state, State::HalfOpen) {
            *state = State::Open {
                until: Instant::now(),
            };
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        match *self.state.lock().expect("breaker lock") {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen => BreakerState::HalfOpen,
        }
    }

    pub(crate) fn stats(&self) -> BreakerStats {
        BreakerStats {
            state: self.state(),
            opened: self.opened.get(),
            closed: self.closed.get(),
        }
    }
}

/// Abandons a probe on drop unless it was resolved.
pub(crate) struct ProbeGuard<'a> {
    breaker: &'a Breaker,
    armed: bool,
}

impl<'a> ProbeGuard<'a> {
    pub(crate) fn new(breaker: &'a Breaker) -> Self {
        ProbeGuard {
            breaker,
            armed: true,
        }
    }
    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.breaker.abandon_probe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_and_probes_after_open_for() {
        let breaker = Breaker::new(BreakerConfig {
            failure_threshold: 2,
            open_for: Duration::from_secs(5),
        });
        assert_eq!(breaker.permit(), Permit::Allow);
        breaker.on_failure();
        assert_eq!(breaker.state(), BreakerState::Closed);
        breaker.on_failure();
        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(breaker.permit(), Permit::Deny);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(breaker.permit(), Permit::Probe);
        assert_eq!(breaker.permit(), Permit::Deny, "only one probe at a time");
        breaker.on_failure();
        assert_eq!(breaker.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(breaker.permit(), Permit::Probe);
        breaker.on_success();
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(breaker.stats().opened, 2);
        assert_eq!(breaker.stats().closed, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_failure_count() {
        let breaker = Breaker::new(BreakerConfig {
            failure_threshold: 2,
            open_for: Duration::from_secs(5),
        });
        breaker.on_failure();
        breaker.on_success();
        breaker.on_failure();
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_lets_the_next_caller_probe() {
        let breaker = Breaker::new(BreakerConfig {
            failure_threshold: 1,
            open_for: Duration::from_secs(1),
        });
        breaker.on_failure();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(breaker.permit(), Permit::Probe);
        drop(ProbeGuard::new(&breaker));
        assert_eq!(breaker.permit(), Permit::Probe);
    }
}
