//! Scraping chat-api's `/metrics` (Prometheus text) before and after a run, and the derived
//! numbers the report needs: database queries, hits per tier, Upstash requests and billed commands.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::api::Client;

/// Every sample of one scrape: `name{labels}` → value.
pub(crate) type Samples = BTreeMap<String, f64>;

pub(crate) async fn scrape(client: &Client) -> Samples {
    match client.metrics().await {
        Ok(text) => parse(&text),
        Err(err) => {
            eprintln!("warning: could not read /metrics: {err:#}");
            Samples::new()
        }
    }
}

pub(crate) fn parse(text: &str) -> Samples {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// What the run changed, from two scrapes.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Delta {
    pub(crate) db_queries: f64,
    pub(crate) db_queries_by_op: BTreeMap<String, f64>,
    pub(crate) cache_hits: BTreeMap<String, f64>,
    pub(crate) cache_misses: BTreeMap<String, f64>,
    pub(crate) upstash_requests: f64,
    pub(crate) upstash_commands: f64,
    pub(crate) loads: f64,
    pub(crate) coalesced: f64,
    pub(crate) l2_errors: f64,
    pub(crate) l2_timeouts: f64,
    pub(crate) l2_skipped: f64,
    pub(crate) breaker_state_after: Option<f64>,
}

fn label<'a>(series: &'a str, name: &str) -> Option<&'a str> {
    let start = series.find(&format!("{name}=\""))? + name.len() + 2;
    let end = series[start..].find('"')? + start;
    Some(&series[start..end])
}

pub(crate) fn delta(before: &Samples, after: &Samples) -> Delta {
    let mut d = Delta::default();
    for (series, value) in after {
        let change = value - before.get(series).copied().unwrap_or(0.0);
        let name = series.split('{').next().unwrap_or(series);
        let tier = || label(series, "tier").unwrap_or("?").to_owned();
        match name {
            "chat_db_queries_total" => {
                d.db_queries += change;
                if change != 0.0 {
                    let op = label(series, "op").unwrap_or("?").to_owned();
                    *d.db_queries_by_op.entry(op).or_default() += change;
                }
            }
            "chat_cache_hits_total" => *d.cache_hits.entry(tier()).or_default() += change,
            "chat_cache_misses_total" => *d.cache_misses.entry(tier()).or_default() += change,
            "chat_cache_requests_total" => d.upstash_requests += change,
            "chat_cache_commands_total" => d.upstash_commands += change,
            "chat_cache_loads_total" => d.loads += change,
            "chat_cache_coalesced_total" => d.coalesced += change,
            "chat_cache_errors_total" => d.l2_errors += change,
            "chat_cache_timeouts_total" => d.l2_timeouts += change,
            "chat_cache_skipped_total" => d.l2_skipped += change,
            "chat_cache_breaker_state" => d.breaker_state_after = Some(*value),
            _ => {}
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_are_summed_per_tier() {
        let before = parse(
            "# TYPE x counter\nchat_db_queries_total{op=\"page\"} 10\nchat_cache_hits_total{tier=\"l1\",backend=\"memory\"} 5\n",
        );
        let after = parse(
            "chat_db_queries_total{op=\"page\"} 13\nchat_db_queries_total{op=\"list\"} 2\nchat_cache_hits_total{tier=\"l1\",backend=\"memory\"} 50\nchat_cache_requests_total{tier=\"l2\",backend=\"upstash\"} 7\n",
        );
        let d = delta(&before, &after);
        assert_eq!(d.db_queries, 5.0);
        assert_eq!(d.cache_hits["l1"], 45.0);
        assert_eq!(d.upstash_requests, 7.0);
    }
}
