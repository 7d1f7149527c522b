//! Latency histograms per operation and the JSON summary they produce.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies (µs) and status counts of one operation.
#[derive(Debug, Clone)]
pub(crate) struct OpStats {
    latency: Histogram<u64>,
    errors: u64,
    statuses: BTreeMap<u16, u64>,
}

impl Default for OpStats {
    fn default() -> Self {
        OpStats {
            // 1 µs to 60 s at 3 significant digits.
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            errors: 0,
            statuses: BTreeMap::new(),
        }
    }
}

impl OpStats {
    pub(crate) fn record(&mut self, micros: u64, status: Option<u16>) {
        self.latency.saturating_record(micros.max(1));
        match status {
            Some(s) => {
                *self.statuses.entry(s).or_default() += 1;
                if !(200..400).contains(&s) {
                    self.errors += 1;
                }
            }
            None => self.errors += 1,
        }
    }

    pub(crate) fn merge(&mut self, other: &OpStats) {
        self.latency.add(&other.latency).expect("same bounds");
        self.errors += other.errors;
        for (s, n) in &other.statuses {
            *self.statuses.entry(*s).or_default() += n;
        }
    }

    pub(crate) fn summary(&self, seconds: f64) -> OpSummary {
        let h = &self.latency;
        let ms = |v: u64| v as f64 / 1000.0;
        OpSummary {
            requests: h.len(),
            errors: self.errors,
            rps: h.len() as f64 / seconds.max(1e-9),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
            statuses: self.statuses.clone(),
            // A coarse latency distribution for plots: (upper bound ms, count).
            distribution: h
                .iter_log(100, 2.0)
                .map(|v| (ms(v.value_iterated_to()), v.count_since_last_iteration()))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct OpSummary {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) rps: f64,
    pub(crate) mean_ms: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p95_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) statuses: BTreeMap<u16, u64>,
    pub(crate) distribution: Vec<(f64, u64)>,
}

/// Per-operation stats of one worker or of the whole run, and of all requests sent in a window
/// of interest (an outage).
#[derive(Debug, Clone, Default)]
pub(crate) struct RunStats {
    pub(crate) ops: BTreeMap<&'static str, OpStats>,
    pub(crate) window: OpStats,
}

impl RunStats {
    pub(crate) fn record(
        &mut self,
        op: &'static str,
        micros: u64,
        status: Option<u16>,
        in_window: bool,
    ) {
        self.ops.entry(op).or_default().record(micros, status);
        if in_window {
            self.window.record(micros, status);
        }
    }

    pub(crate) fn merge(&mut self, other: &RunStats) {
        for (op, stats) in &other.ops {
            self.ops.entry(op).or_default().merge(stats);
        }
        self.window.merge(&other.window);
    }

    pub(crate) fn total(&self) -> OpStats {
        let mut total = OpStats::default();
        for stats in self.ops.values() {
            total.merge(stats);
        }
        total
    }
}
