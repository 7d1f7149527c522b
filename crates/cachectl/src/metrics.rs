//! chat-api's `/metrics` (Prometheus text format), parsed and summarized for `cachectl stats`.
//!
//! The metric names are chat-api's (`crates/chat-api/src/metrics.rs`, rendered from
//! `cache_core::CacheStats`): per tier `chat_cache_{hits,misses,errors,timeouts,skipped}_total`,
//! `chat_cache_{entries,bytes}`, `chat_cache_evictions_total`, `chat_cache_{requests,commands}_total`
//! (labels `tier`, `backend`); for `get_or_load` `chat_cache_lookup_{hits,misses}_total`,
//! `chat_cache_loads_total`, `chat_cache_load_errors_total` and friends;
//! `chat_cache_breaker_state` (0 closed, 1 open, 2 half-open),
//! `chat_cache_breaker_transitions_total{to}`, `chat_cache_pending_invalidations`, and
//! `chat_http_responses_total{status}` for HTTP errors.

use std::collections::BTreeMap;

use serde::Serialize;

/// One sample line: `name{label="value",…} value`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub(crate) name: String,
    pub(crate) labels: Vec<(String, String)>,
    pub(crate) value: f64,
}

impl Sample {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the samples of a Prometheus text exposition; comments and malformed lines are skipped.
pub(crate) fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let (parsed, remainder) = parse_labels(after_brace)?;
        labels = parsed;
        rest = remainder;
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// `k="v",k2="v2"}` → the labels and what follows the `}`.
fn parse_labels(mut text: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        text = text.trim_start_matches([',', ' ']);
        if let Some(rest) = text.strip_prefix('}') {
            return Some((labels, rest));
        }
        let eq = text.find('=')?;
        let key = text[..eq].trim().to_owned();
        let mut chars = text[eq + 1..].strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.push((key, value));
        text = &text[eq + 1 + 1 + end + 1..];
    }
}

/// The cache counters of one tier.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct TierRow {
    pub(crate) tier: String,
    pub(crate) backend: String,
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    /// hits / (hits + misses), when there were reads.
    pub(crate) hit_ratio: Option<f64>,
    pub(crate) errors: u64,
    pub(crate) timeouts: u64,
    pub(crate) skipped: u64,
    pub(crate) entries: Option<u64>,
    pub(crate) bytes: Option<u64>,
    pub(crate) evictions: Option<u64>,
    /// HTTP requests sent to Upstash.
    pub(crate) requests: Option<u64>,
    /// Redis commands sent: what Upstash bills.
    pub(crate) commands: Option<u64>,
}

/// The counters of `get_or_load` (cache-aside reads).
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Lookups {
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    pub(crate) hit_ratio: Option<f64>,
    pub(crate) loads: u64,
    pub(crate) load_errors: u64,
    pub(crate) coalesced: u64,
    pub(crate) stale_served: u64,
    pub(crate) failsafe_served: u64,
    pub(crate) decode_errors: u64,
    pub(crate) backend_errors: u64,
}

/// The L2 circuit breaker of a tiered cache.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Breaker {
    /// `closed`, `open` or `half_open`.
    pub(crate) state: String,
    pub(crate) opened: u64,
    pub(crate) closed: u64,
}

/// What `stats` shows of a chat-api.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct ServerStats {
    pub(crate) tiers: Vec<TierRow>,
    pub(crate) lookups: Lookups,
    pub(crate) breaker: Option<Breaker>,
    pub(crate) pending_invalidations: Option<u64>,
    /// HTTP responses answered so far, and how many were 5xx.
    pub(crate) http_responses: u64,
    pub(crate) http_server_errors: u64,
}

fn ratio(hits: u64, misses: u64) -> Option<f64> {
    let total = hits + misses;
    (total > 0).then(|| hits as f64 / total as f64)
}

/// Counters are floats in the text format; ours are whole numbers.
fn count(value: f64) -> u64 {
    if value.is_finite() && value > 0.0 {
        value.round() as u64
    } else {
        0
    }
}

/// Summarizes parsed samples.
///
/// # Errors
/// When no `chat_cache_` metric is there: the URL is not a chat-api.
pub(crate) fn summarize(samples: &[Sample]) -> anyhow::Result<ServerStats> {
    if !samples.iter().any(|s| s.name.starts_with("chat_cache_")) {
        anyhow::bail!("the answer has no chat_cache_* metrics: is this chat-api's /metrics?");
    }
    let mut tiers: BTreeMap<(String, String), TierRow> = BTreeMap::new();
    let mut stats = ServerStats::default();
    let mut breaker_state = None;
    let mut transitions = (0, 0);
    for sample in samples {
        let value = count(sample.value);
        if let (Some(tier), Some(backend)) = (sample.label("tier"), sample.label("backend")) {
            // Histogram series also carry tier labels; only the per-tier counters matter here.
            let row = || TierRow {
                tier: tier.to_owned(),
                backend: backend.to_owned(),
                ..TierRow::default()
            };
            let entry = tiers
                .entry((tier.to_owned(), backend.to_owned()))
                .or_insert_with(row);
            match sample.name.as_str() {
                "chat_cache_hits_total" => entry.hits = value,
                "chat_cache_misses_total" => entry.misses = value,
                "chat_cache_errors_total" => entry.errors = value,
                "chat_cache_timeouts_total" => entry.timeouts = value,
                "chat_cache_skipped_total" => entry.skipped = value,
                "chat_cache_entries" => entry.entries = Some(value),
                "chat_cache_bytes" => entry.bytes = Some(value),
                "chat_cache_evictions_total" => entry.evictions = Some(value),
                "chat_cache_requests_total" => entry.requests = Some(value),
                "chat_cache_commands_total" => entry.commands = Some(value),
                _ => {}
            }
            continue;
        }
        let lookups = &mut stats.lookups;
        match sample.name.as_str() {
            "chat_cache_lookup_hits_total" => lookups.hits = value,
            "chat_cache_lookup_misses_total" => lookups.misses = value,
            "chat_cache_loads_total" => lookups.loads = value,
            "chat_cache_load_errors_total" => lookups.load_errors = value,
            "chat_cache_coalesced_total" => lookups.coalesced = value,
            "chat_cache_stale_served_total" => lookups.stale_served = value,
            "chat_cache_failsafe_served_total" => lookups.failsafe_served = value,
            "chat_cache_decode_errors_total" => lookups.decode_errors = value,
            "chat_cache_backend_errors_total" => lookups.backend_errors = value,
            "chat_cache_pending_invalidations" => stats.pending_invalidations = Some(value),
            "chat_cache_breaker_state" => breaker_state = Some(value),
            "chat_cache_breaker_transitions_total" => match sample.label("to") {
                Some("open") => transitions.0 = value,
                Some("closed") => transitions.1 = value,
                _ => {}
            },
            "chat_http_responses_total" => {
                stats.http_responses += value;
                if sample.label("status") == Some("5xx") {
                    stats.http_server_errors += value;
                }
            }
            _ => {}
        }
    }
    stats.lookups.hit_ratio = ratio(stats.lookups.hits, stats.lookups.misses);
    stats.tiers = tiers
        .into_values()
        .map(|mut row| {
            row.hit_ratio = ratio(row.hits, row.misses);
            row
        })
        .collect();
    stats.breaker = breaker_state.map(|state| Breaker {
        state: match state {
            0 => "closed".to_owned(),
            1 => "open".to_owned(),
            2 => "half_open".to_owned(),
            other => format!("unknown ({other})"),
        },
        opened: transitions.0,
        closed: transitions.1,
    });
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An excerpt of chat-api's `/metrics` in tiered mode.
    const SAMPLE: &str = r#"# HELP chat_cache_hits_total Reads that found a valid entry.
# TYPE chat_cache_hits_total counter
chat_cache_hits_total{tier="l1",backend="memory"} 90
chat_cache_hits_total{tier="l2",backend="upstash"} 8
chat_cache_misses_total{tier="l1",backend="memory"} 10
chat_cache_misses_total{tier="l2",backend="upstash"} 2
chat_cache_errors_total{tier="l2",backend="upstash"} 1
chat_cache_entries{tier="l1",backend="memory"} 12
chat_cache_requests_total{tier="l2",backend="upstash"} 14
chat_cache_commands_total{tier="l2",backend="upstash"} 15
chat_cache_latency_seconds_bucket{tier="l2",backend="upstash",le="0.001"} 3
chat_cache_lookup_hits_total 95
chat_cache_lookup_misses_total 5
chat_cache_loads_total 5
chat_cache_pending_invalidations 0
chat_cache_breaker_state 1
chat_cache_breaker_transitions_total{to="open"} 2
chat_cache_breaker_transitions_total{to="closed"} 1
chat_http_responses_total{method="GET",route="/api/v1/channels/{cid}/messages",status="2xx"} 40
chat_http_responses_total{method="GET",route="/health",status="5xx"} 2
"#;

    #[test]
    fn lines_with_labels_escapes_and_specials_parse() {
        let samples = parse(
            "a_total{k=\"x\\\"y\",route=\"/a,b}\"} 3\nb 1.5 1700000000\n# c 1\nbad\nd{le=\"+Inf\"} +Inf",
        );
        assert_eq!(samples.len(), 3);
        assert_eq!(
            samples[0].labels,
            vec![
                ("k".into(), "x\"y".into()),
                ("route".into(), "/a,b}".into())
            ]
        );
        assert_eq!(samples[0].value, 3.0);
        assert_eq!(samples[1].value, 1.5);
        assert!(samples[2].value.is_infinite());
    }

    #[test]
    fn a_chat_api_sample_summarizes_per_tier() {
        let stats = summarize(&parse(SAMPLE)).unwrap();
        assert_eq!(stats.tiers.len(), 2);
        let l1 = &stats.tiers[0];
        assert_eq!(
            (l1.tier.as_str(), l1.hits, l1.misses, l1.entries),
            ("l1", 90, 10, Some(12))
        );
        assert_eq!(l1.hit_ratio, Some(0.9));
        let l2 = &stats.tiers[1];
        assert_eq!(
            (l2.requests, l2.commands, l2.errors),
            (Some(14), Some(15), 1)
        );
        assert_eq!(stats.lookups.hit_ratio, Some(0.95));
        let breaker = stats.breaker.unwrap();
        assert_eq!(
            (breaker.state.as_str(), breaker.opened, breaker.closed),
            ("open", 2, 1)
        );
        assert_eq!((stats.http_responses, stats.http_server_errors), (42, 2));
        assert!(summarize(&parse("up 1")).is_err());
    }
}
