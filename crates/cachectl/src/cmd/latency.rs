//! `cachectl latency`: N `PING` round trips on one connection, summarized.

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use crate::{
    cmd::Context,
    error::Outcome,
    output::{self, Table},
};

/// Measure round-trip latency with N PINGs (min, p50, p99, max)
///
/// One PING first opens the connection (TCP, TLS) and is not counted; then N PINGs run one after
/// another, each bounded by --timeout. Upstash bills each PING as a command.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  cachectl latency\n  cachectl latency -n 200 --json")]
pub(crate) struct Cmd {
    /// Number of PINGs to time
    #[arg(short = 'n', long = "probes", value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) probes: u32,
}

/// min, p50, p99, max and mean of some round trips.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Summary {
    pub(crate) min: Duration,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) max: Duration,
    pub(crate) mean: Duration,
}

impl Summary {
    /// Nearest-rank percentiles of `samples` (not empty).
    pub(crate) fn of(samples: &mut [Duration]) -> Summary {
        samples.sort_unstable();
        let rank = |q: f64| {
            let index = (q * samples.len() as f64).ceil() as usize;
            samples[index.clamp(1, samples.len()) - 1]
        };
        let total: Duration = samples.iter().sum();
        Summary {
            min: samples[0],
            p50: rank(0.50),
            p99: rank(0.99),
            max: samples[samples.len() - 1],
            mean: total / u32::try_from(samples.len()).unwrap_or(u32::MAX),
        }
    }
}

impl Cmd {
    pub(crate) async fn run(&self, ctx: &Context) -> anyhow::Result<Outcome> {
        let redis = ctx.redis()?;
        ctx.bounded("PING (connecting)", redis.ping()).await?;
        let mut samples = Vec::with_capacity(self.probes as usize);
        for _ in 0..self.probes {
            let started = Instant::now();
            ctx.bounded("PING", redis.ping()).await?;
            samples.push(started.elapsed());
        }
        let summary = Summary::of(&mut samples);
        if ctx.out.is_json() {
            ctx.out.json_line(&json!({
                "url": redis.url(),
                "probes": self.probes,
                "min_ms": output::ms_f64(summary.min),
                "p50_ms": output::ms_f64(summary.p50),
                "p99_ms": output::ms_f64(summary.p99),
                "max_ms": output::ms_f64(summary.max),
                "mean_ms": output::ms_f64(summary.mean),
            }))?;
        } else {
            let mut table = Table::new(&["probes", "min", "p50", "p99", "max", "mean"]);
            table.plain_row([
                self.probes.to_string(),
                output::millis(summary.min),
                output::millis(summary.p50),
                output::millis(summary.p99),
                output::millis(summary.max),
                output::millis(summary.mean),
            ]);
            ctx.out.text(&format!(
                "PING round trips to {}\n{}",
                redis.url(),
                table.render(ctx.out.style())
            ))?;
        }
        Ok(Outcome::Success)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let s = Summary::of(&mut samples);
        assert_eq!(s.min, Duration::from_millis(1));
        assert_eq!(s.p50, Duration::from_millis(50));
        assert_eq!(s.p99, Duration::from_millis(99));
        assert_eq!(s.max, Duration::from_millis(100));
        let mut one = vec![Duration::from_millis(7)];
        assert_eq!(Summary::of(&mut one).p99, Duration::from_millis(7));
    }
}
