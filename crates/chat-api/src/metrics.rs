//! `/metrics` in the Prometheus text format: HTTP latency histograms per matched route, the cache
//! metrics of SPEC §3.6 (rendered from `Cache::stats()`), database statement counts, WebSocket
//! sessions and rate-limit rejections.
//!
//! Routes are labelled by their pattern (`/api/v1/channels/{cid}/messages`), never by the raw
//! path, so label cardinality is bounded and no id or token reaches the metrics.

use std::{
    collections::HashMap,
    fmt::Write as _,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request, State},
    http::Method,
    middleware::Next,
    response::Response,
};
use cache_core::stats::{CacheStats, Histogram, HistogramSnapshot};

use crate::{ratelimit::Bucket, state::AppState, store::QueryCounts};

#[derive(Debug, Default)]
struct RouteStats {
    latency: Histogram,
    // Responses by status class: 1xx … 5xx.
    by_class: [AtomicU64; 5],
}

/// HTTP and rate-limit counters.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    routes: RwLock<HashMap<(Method, String), Arc<RouteStats>>>,
    rate_limited: RwLock<HashMap<&'static str, Arc<AtomicU64>>>,
}

impl HttpMetrics {
    fn route(&self, method: &Method, route: &str) -> Arc<RouteStats> {
        let key = (method.clone(), route.to_owned());
        if let Some(stats) = self
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Arc::clone(stats);
        }
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        Arc::clone(routes.entry(key).or_default())
    }

    /// Counts a request answered 429.
    pub fn rate_limited(&self, bucket: Bucket) {
        let counter = {
            let map = self.rate_limited.read().unwrap_or_else(|e| e.into_inner());
            map.get(bucket.as_str()).cloned()
        };
        let counter = counter.unwrap_or_else(|| {
            let mut map = self.rate_limited.write().unwrap_or_else(|e| e.into_inner());
            Arc::clone(map.entry(bucket.as_str()).or_default())
        });
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Middleware: times every request and counts it by route and status class.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let response = next.run(request).await;
    let stats = state.metrics().route(&method, &route);
    stats.latency.record(started.elapsed());
    let class = usize::from(response.status().as_u16() / 100).clamp(1, 5) - 1;
    stats.by_class[class].fetch_add(1, Ordering::Relaxed);
    response
}

/// Escapes a label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &HistogramSnapshot) {
    let sep = if labels.is_empty() { "" } else { "," };
    for (bound, count) in &h.buckets {
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum_seconds);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
}

/// Renders everything as Prometheus text.
pub fn render(
    http: &HttpMetrics,
    cache: &CacheStats,
    queries: &QueryCounts,
    sessions: usize,
) -> String {
    let mut out = String::with_capacity(16 * 1024);
    render_http(&mut out, http);
    render_cache(&mut out, cache);

    out.push_str("# HELP chat_db_queries_total Database statements run, by store operation.\n");
    out.push_str("# TYPE chat_db_queries_total counter\n");
    for (op, count) in &queries.by_op {
        let _ = writeln!(out, "chat_db_queries_total{{op=\"{op}\"}} {count}");
    }
    out.push_str("# HELP chat_ws_sessions WebSocket sessions connected now.\n");
    out.push_str("# TYPE chat_ws_sessions gauge\n");
    let _ = writeln!(out, "chat_ws_sessions {sessions}");
    out
}

fn render_http(out: &mut String, http: &HttpMetrics) {
    let mut routes: Vec<_> = http
        .routes
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|((m, r), s)| (m.clone(), r.clone(), Arc::clone(s)))
        .collect();
    routes.sort_by(|a, b| (&a.1, a.0.as_str()).cmp(&(&b.1, b.0.as_str())));
    out.push_str("# HELP chat_http_request_duration_seconds HTTP request latency by route.\n");
    out.push_str("# TYPE chat_http_request_duration_seconds histogram\n");
    for (method, route, stats) in &routes {
        let labels = format!("method=\"{method}\",route=\"{}\"", label(route));
        histogram(
            out,
            "chat_http_request_duration_seconds",
            &labels,
            &stats.latency.snapshot(),
        );
    }
    out.push_str("# HELP chat_http_responses_total HTTP responses by route and status class.\n");
    out.push_str("# TYPE chat_http_responses_total counter\n");
    for (method, route, stats) in &routes {
        for (i, count) in stats.by_class.iter().enumerate() {
            let count = count.load(Ordering::Relaxed);
            if count > 0 {
                let _ = writeln!(
                    out,
                    "chat_http_responses_total{{method=\"{method}\",route=\"{}\",status=\"{}xx\"}} {count}",
                    label(route),
                    i + 1
                );
            }
        }
    }
    out.push_str("# HELP chat_rate_limited_total Requests answered 429, by bucket.\n");
    out.push_str("# TYPE chat_rate_limited_total counter\n");
    for (bucket, count) in http
        .rate_limited
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        let _ = writeln!(
            out,
            "chat_rate_limited_total{{bucket=\"{bucket}\"}} {}",
            count.load(Ordering::Relaxed)
        );
    }
}

fn render_cache(out: &mut String, stats: &CacheStats) {
    type Field = fn(&cache_core::stats::TierStats) -> Option<u64>;
    let tier_metrics: [(&str, &str, &str, Field); 11] = [
        (
            "chat_cache_hits_total",
            "counter",
            "Reads that found a valid entry.",
            |t| Some(t.hits),
        ),
        (
            "chat_cache_misses_total",
            "counter",
            "Reads that found nothing valid.",
            |t| Some(t.misses),
        ),
        (
            "chat_cache_errors_total",
            "counter",
            "Backend calls that failed.",
            |t| Some(t.errors),
        ),
        (
            "chat_cache_timeouts_total",
            "counter",
            "Backend calls that timed out.",
            |t| Some(t.timeouts),
        ),
        (
            "chat_cache_skipped_total",
            "counter",
            "Calls skipped while the breaker was open.",
            |t| Some(t.skipped),
        ),
        (
            "chat_cache_bytes",
            "gauge",
            "Bytes stored (approximate).",
            |t| t.bytes,
        ),
        (
            "chat_cache_entries",
            "gauge",
            "Entries stored (approximate).",
            |t| t.entries,
        ),
        (
            "chat_cache_evictions_total",
            "counter",
            "Entries evicted for space.",
            |t| t.evictions,
        ),
        (
            "chat_cache_requests_total",
            "counter",
            "HTTP requests sent to Upstash.",
            |t| t.requests,
        ),
        (
            "chat_cache_commands_total",
            "counter",
            "Redis commands sent (what Upstash bills).",
            |t| t.commands,
        ),
        (
            "chat_cache_tier_info",
            "gauge",
            "The backend of each tier.",
            |_| Some(1),
        ),
    ];
    for (name, kind, help, field) in tier_metrics {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for tier in &stats.tiers {
            if let Some(value) = field(tier) {
                let _ = writeln!(
                    out,
                    "{name}{{tier=\"{}\",backend=\"{}\"}} {value}",
                    label(&tier.tier),
                    label(&tier.backend)
                );
            }
        }
    }
    out.push_str("# HELP chat_cache_latency_seconds Latency of calls to a cache tier.\n");
    out.push_str("# TYPE chat_cache_latency_seconds histogram\n");
    for tier in &stats.tiers {
        if let Some(latency) = &tier.latency {
            let labels = format!(
                "tier=\"{}\",backend=\"{}\"",
                label(&tier.tier),
                label(&tier.backend)
            );
            histogram(out, "chat_cache_latency_seconds", &labels, latency);
        }
    }

    let loads = &stats.loads;
    let load_metrics: [(&str, &str, u64); 9] = [
        (
            "chat_cache_lookup_hits_total",
            "get_or_load calls answered by a fresh entry.",
            loads.hits,
        ),
        (
            "chat_cache_lookup_misses_total",
            "get_or_load calls that found no usable entry.",
            loads.misses,
        ),
        (
            "chat_cache_loads_total",
            "Loader runs (database loads through the cache).",
            loads.loads,
        ),
        (
            "chat_cache_load_errors_total",
            "Loader runs that failed.",
            loads.load_errors,
        ),
        (
            "chat_cache_coalesced_total",
            "Callers that waited for another caller's load.",
            loads.coalesced,
        ),
        (
            "chat_cache_stale_served_total",
            "Stale values served while refreshing.",
            loads.stale_served,
        ),
        (
            "chat_cache_failsafe_served_total",
            "Stale values served because the loader failed.",
            loads.failsafe_served,
        ),
        (
            "chat_cache_decode_errors_total",
            "Cached bytes that could not be decoded.",
            loads.decode_errors,
        ),
        (
            "chat_cache_backend_errors_total",
            "Cache failures hidden from requests.",
            loads.backend_errors,
        ),
    ];
    for (name, help, value) in load_metrics {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP chat_cache_pending_invalidations Invalidations waiting to be replayed on L2.\n\
         # TYPE chat_cache_pending_invalidations gauge\nchat_cache_pending_invalidations {}",
        stats.pending_invalidations
    );
    if let Some(breaker) = &stats.breaker {
        let _ = writeln!(
            out,
            "# HELP chat_cache_breaker_state L2 circuit breaker: 0 closed, 1 open, 2 half-open.\n\
             # TYPE chat_cache_breaker_state gauge\nchat_cache_breaker_state {}",
            breaker.state.as_gauge()
        );
        let _ = writeln!(
            out,
            "# HELP chat_cache_breaker_transitions_total Breaker transitions, by new state.\n\
             # TYPE chat_cache_breaker_transitions_total counter\n\
             chat_cache_breaker_transitions_total{{to=\"open\"}} {}\n\
             chat_cache_breaker_transitions_total{{to=\"closed\"}} {}",
            breaker.opened, breaker.closed
        );
    }
}
