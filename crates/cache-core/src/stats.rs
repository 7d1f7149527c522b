//! Counters, gauges and latency histograms of the cache, per tier (hits, misses, stale
//! serves, loads, load errors, L2 errors, timeouts, breaker state and transitions, bytes, entries,
//! evictions, REST requests and billed commands), as plain snapshots that `chat-api` serves as its
//! `/stats` document and as Prometheus text, and `cachectl` shows as tables or JSON.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use serde::Serialize;

use crate::breaker::BreakerState;

/// Everything a cache reports: one [`TierStats`] per tier, the facade's load counters, and the
/// breaker of a tiered cache.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct CacheStats {
    /// One row per tier (`memory`; or `l1` and `l2` for a tiered cache).
    pub tiers: Vec<TierStats>,
    /// Loads through `get_or_load` (filled by the [`Cache`](crate::Cache) facade).
    pub loads: LoadStats,
    /// The L2 circuit breaker, for a tiered cache.
    pub breaker: Option<BreakerStats>,
    /// Invalidations waiting to be replayed on L2.
    pub pending_invalidations: u64,
    /// The backplane of a tiered cache that has one.
    pub backplane: Option<crate::BackplaneStats>,
}

impl CacheStats {
    /// Stats of a single tier.
    pub fn single(tier: TierStats) -> Self {
        CacheStats {
            tiers: vec![tier],
            ..CacheStats::default()
        }
    }
}

/// Counters of one tier. Gauges a backend cannot know are `None`.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct TierStats {
    /// `memory`, `upstash`, or `l1`/`l2` in a tiered cache.
    pub tier: String,
    /// The backend's name.
    pub backend: String,
    /// Reads that found a valid entry.
    pub hits: u64,
    /// Reads that found nothing valid.
    pub misses: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Calls that timed out.
    pub timeouts: u64,
    /// Calls skipped because the breaker was open.
    pub skipped: u64,
    /// Stored bytes that could not be decoded (foreign or corrupt), counted as misses.
    pub decode_errors: u64,
    /// Entries stored (approximate for moka).
    pub entries: Option<u64>,
    /// Bytes stored (approximate for moka).
    pub bytes: Option<u64>,
    /// Entries evicted for space.
    pub evictions: Option<u64>,
    /// HTTP requests sent (Upstash).
    pub requests: Option<u64>,
    /// Redis commands sent (what Upstash bills).
    pub commands: Option<u64>,
    /// Latency of calls to this tier.
    pub latency: Option<HistogramSnapshot>,
}

impl TierStats {
    /// Empty counters for `tier` served by `backend` (fill the rest field by field).
    pub fn new(tier: impl Into<String>, backend: impl Into<String>) -> Self {
        TierStats {
            tier: tier.into(),
            backend: backend.into(),
            ..TierStats::default()
        }
    }
}

/// Counters of `get_or_load`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
#[non_exhaustive]
pub struct LoadStats {
    /// Reads through the facade that were answered by a fresh entry.
    pub hits: u64,
    /// Reads that found no usable entry.
    pub misses: u64,
    /// Loader runs.
    pub loads: u64,
    /// Loader runs that failed.
    pub load_errors: u64,
    /// Callers that waited for another caller's load instead of running their own.
    pub coalesced: u64,
    /// Stale values served while a background refresh ran.
    pub stale_served: u64,
    /// Stale values served because the loader failed (fail-safe).
    pub failsafe_served: u64,
    /// Cached bytes that could not be decoded (treated as misses).
    pub decode_errors: u64,
    /// Cache backend errors hidden from the caller (the request went on without the cache).
    pub backend_errors: u64,
}

/// The L2 circuit breaker.
#[derive(Debug, Clone, Copy, Serialize)]
#[non_exhaustive]
pub struct BreakerStats {
    /// The current state.
    pub state: BreakerState,
    /// Times the breaker opened.
    pub opened: u64,
    /// Times the breaker closed again after a successful probe.
    pub closed: u64,
}

/// Upper bounds of the latency buckets, in microseconds.
const BUCKETS_MICROS: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];

/// A fixed-bucket latency histogram, lock-free.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS_MICROS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn record(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = BUCKETS_MICROS
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(BUCKETS_MICROS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// A snapshot with cumulative bucket counts, as Prometheus wants them.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(BUCKETS_MICROS.len());
        for (i, bound) in BUCKETS_MICROS.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            buckets.push((*bound as f64 / 1e6, cumulative));
        }
        cumulative += self.counts[BUCKETS_MICROS.len()].load(Ordering::Relaxed);
        HistogramSnapshot {
            buckets,
            count: cumulative,
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// A histogram snapshot: cumulative counts per upper bound (seconds), total count and sum.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, observations at or under it)`, ascending.
    pub buckets: Vec<(f64, u64)>,
    /// All observations (the `+Inf` bucket).
    pub count: u64,
    /// The sum of all observations in seconds.
    pub sum_seconds: f64,
}

impl HistogramSnapshot {
    /// An estimate of quantile `q` (0..=1): the upper bound of the bucket that holds it.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64;
        self.buckets
            .iter()
            .find(|(_, c)| *c >= rank.max(1))
            .map(|(b, _)| *b)
            .or(Some(f64::INFINITY))
    }
}

/// A relaxed atomic counter.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.record(Duration::from_micros(50));
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(10));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets[0], (0.0001, 1));
        assert_eq!(s.buckets.last().unwrap().1, 2);
        assert_eq!(s.quantile(0.5), Some(0.005));
        assert_eq!(s.quantile(1.0), Some(f64::INFINITY));
    }
}
