//! What the server reports about itself, from one [`Snapshot`] rendered two ways:
//! - `GET /stats`: the typed, versioned [`chat_stats::Stats`] document as JSON, which
//!   `cachectl stats` and `chat-bench` read back through the same types;
//! - `GET /metrics`: OpenMetrics text for Prometheus, encoded by `prometheus-client` from a
//!   collector over the snapshot: HTTP latency histograms and responses per matched route, the
//!   cache (per tier, `get_or_load`, breaker; read from `Cache::stats()` at scrape time), database
//!   statements, WebSocket sessions and rate-limit rejections.
//!
//! The Prometheus names live only here; the JSON names only in `chat-stats`. Every field of the
//! document is destructured without `..` below, so a field added there does not compile here
//! until it is exported (or deliberately skipped).
//!
//! Routes are labelled by their pattern (`/api/v1/channels/{cid}/messages`), never by the raw
//! path, so label cardinality is bounded and no id or token reaches the metrics.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use axum::{
    Json,
    extract::{MatchedPath, Request, State},
    http::{HeaderValue, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use cache_core::stats::{Histogram, HistogramSnapshot};
use chat_stats::{
    BackplaneState, BackplaneStats, BreakerState, BreakerStats, CacheStats, DbStats, HttpStats,
    KindStats, LookupStats, Stats, StatusClasses, TierStats,
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::MetricType,
    registry::Registry,
};

use crate::{ratelimit::Bucket, state::AppState, store::QueryCounts};

/// The content type of `/metrics`: OpenMetrics text, which Prometheus negotiates and scrapes.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Default)]
struct RouteStats {
    latency: Histogram,
    // Responses by status class: 1xx … 5xx.
    by_class: [AtomicU64; 5],
}

/// HTTP and rate-limit counters.
#[derive(Debug)]
pub struct HttpMetrics {
    routes: RwLock<HashMap<(Method, String), Arc<RouteStats>>>,
    rate_limited: RwLock<HashMap<&'static str, Arc<AtomicU64>>>,
    started: Instant,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            routes: RwLock::default(),
            rate_limited: RwLock::default(),
            started: Instant::now(),
        }
    }
}

impl HttpMetrics {
    /// Time since these counters started (with the app).
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

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

/// `GET /stats`: the [`Stats`] document as JSON.
pub async fn stats(State(state): State<AppState>) -> Json<Stats> {
    Json(Snapshot::take(&state).stats)
}

/// `GET /metrics`: the same snapshot as OpenMetrics text.
pub async fn prometheus(State(state): State<AppState>) -> Response {
    let mut response = Snapshot::take(&state).to_openmetrics().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(METRICS_CONTENT_TYPE),
    );
    response
}

/// One reading of every counter: the [`Stats`] document plus what only Prometheus gets
/// (latency histograms and per-route response counts).
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The document served at `/stats`.
    pub stats: Stats,
    routes: Vec<RouteSnapshot>,
    tier_latency: Vec<TierLatency>,
}

#[derive(Debug, Clone)]
struct RouteSnapshot {
    method: String,
    route: String,
    latency: HistogramSnapshot,
    responses: StatusClasses,
}

#[derive(Debug, Clone)]
struct TierLatency {
    tier: String,
    backend: String,
    latency: HistogramSnapshot,
}

impl Snapshot {
    /// Reads the counters of a running app.
    pub fn take(state: &AppState) -> Snapshot {
        Snapshot::from_parts(
            state.metrics(),
            &state.cache().cache().stats(),
            &state.cache().kind_stats(),
            &state.store().query_counts(),
            state.hub().sessions(),
            backplane_document(state),
        )
    }

    fn from_parts(
        http: &HttpMetrics,
        cache: &cache_core::stats::CacheStats,
        kinds: &[crate::cache::KindStats],
        queries: &QueryCounts,
        sessions: usize,
        backplane: Option<BackplaneStats>,
    ) -> Snapshot {
        // Responses over every route, summed while the routes are read.
        let mut responses = StatusClasses::default();
        let mut routes: Vec<RouteSnapshot> = http
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|((method, route), stats)| {
                let mut route_responses = StatusClasses::default();
                for (i, count) in (1u16..).zip(&stats.by_class) {
                    let count = count.load(Ordering::Relaxed);
                    route_responses.record(i * 100, count);
                    responses.record(i * 100, count);
                }
                RouteSnapshot {
                    method: method.to_string(),
                    route: route.clone(),
                    latency: stats.latency.snapshot(),
                    responses: route_responses,
                }
            })
            .collect();
        routes.sort_by(|a, b| (&a.route, &a.method).cmp(&(&b.route, &b.method)));
        let rate_limited = http
            .rate_limited
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(bucket, count)| ((*bucket).to_owned(), count.load(Ordering::Relaxed)))
            .collect();
        let tier_latency = cache
            .tiers
            .iter()
            .filter_map(|t| {
                Some(TierLatency {
                    tier: t.tier.clone(),
                    backend: t.backend.clone(),
                    latency: t.latency.clone()?,
                })
            })
            .collect();
        Snapshot {
            stats: Stats {
                version: chat_stats::VERSION,
                cache: CacheStats {
                    kinds: kinds
                        .iter()
                        .map(|k| KindStats {
                            kind: k.kind.as_str().to_owned(),
                            lookups: k.lookups,
                            loads: k.loads,
                        })
                        .collect(),
                    ..cache_document(cache)
                },
                db: DbStats {
                    queries: queries.total,
                    queries_by_op: queries
                        .by_op
                        .iter()
                        .map(|(op, n)| ((*op).to_owned(), *n))
                        .collect(),
                },
                http: HttpStats { responses },
                rate_limited,
                ws_sessions: u64::try_from(sessions).unwrap_or(u64::MAX),
                backplane,
            },
            routes,
            tier_latency,
        }
    }

    /// Per route: method, route pattern, latency histogram and responses by status class.
    pub(crate) fn routes(
        &self,
    ) -> impl Iterator<Item = (&str, &str, &HistogramSnapshot, &StatusClasses)> {
        self.routes.iter().map(|r| {
            (
                r.method.as_str(),
                r.route.as_str(),
                &r.latency,
                &r.responses,
            )
        })
    }

    /// The latency histogram of a cache tier that times its calls.
    pub(crate) fn tier_latency(&self, tier: &str) -> Option<&HistogramSnapshot> {
        self.tier_latency
            .iter()
            .find(|t| t.tier == tier)
            .map(|t| &t.latency)
    }

    /// The snapshot in the OpenMetrics text format (ends with `# EOF`).
    pub fn to_openmetrics(self) -> String {
        // A registry per scrape over this snapshot: no global recorder, so the many apps of a
        // test process never share counters, and nothing is registered twice.
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail; encoding our own names cannot either.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// cache-core's stats as the document's cache section.
fn cache_document(stats: &cache_core::stats::CacheStats) -> CacheStats {
    let tiers = stats
        .tiers
        .iter()
        .map(|t| TierStats {
            tier: t.tier.clone(),
            backend: t.backend.clone(),
            hits: t.hits,
            misses: t.misses,
            errors: t.errors,
            timeouts: t.timeouts,
            skipped: t.skipped,
            decode_errors: t.decode_errors,
            entries: t.entries,
            bytes: t.bytes,
            evictions: t.evictions,
            requests: t.requests,
            commands: t.commands,
        })
        .collect();
    let l = &stats.loads;
    CacheStats {
        tiers,
        lookups: LookupStats {
            hits: l.hits,
            misses: l.misses,
            loads: l.loads,
            load_errors: l.load_errors,
            coalesced: l.coalesced,
            stale_served: l.stale_served,
            failsafe_served: l.failsafe_served,
            decode_errors: l.decode_errors,
            backend_errors: l.backend_errors,
        },
        breaker: stats.breaker.map(|b| BreakerStats {
            state: match b.state {
                cache_core::BreakerState::Closed => BreakerState::Closed,
                cache_core::BreakerState::Open => BreakerState::Open,
                cache_core::BreakerState::HalfOpen => BreakerState::HalfOpen,
            },
            opened: b.opened,
            closed: b.closed,
        }),
        pending_invalidations: stats.pending_invalidations,
        kinds: Vec::new(),
    }
}

/// The backplane section: the bus's own counters plus the hub's realtime traffic on it.
fn backplane_document(state: &AppState) -> Option<BackplaneStats> {
    let backplane = state.backplane()?;
    let cache_core::BackplaneStats {
        transport,
        connected: _,
        published,
        publish_errors,
        dropped,
        queued,
        received,
        rejected,
        gaps,
        interruptions,
        resets,
        last_lag_micros,
        ..
    } = backplane.stats();
    let hub = state.hub().bus_stats();
    Some(BackplaneStats {
        transport,
        state: match backplane.state() {
            cache_core::BackplaneState::Connecting => BackplaneState::Connecting,
            cache_core::BackplaneState::Connected => BackplaneState::Connected,
            // A state a later cache-core may add: not one to rely on.
            cache_core::BackplaneState::Disconnected | _ => BackplaneState::Disconnected,
        },
        published,
        publish_errors,
        dropped,
        queued,
        received,
        rejected,
        gaps,
        interruptions,
        resets,
        lag_micros: last_lag_micros,
        events_sent: hub.sent,
        events_received: hub.received,
        events_rejected: hub.rejected,
        ws_resyncs: hub.resyncs,
    })
}

/// The backplane state gauge: 0 connecting, 1 connected, 2 disconnected.
fn backplane_gauge(state: BackplaneState) -> u64 {
    match state {
        BackplaneState::Connecting => 0,
        BackplaneState::Connected => 1,
        BackplaneState::Disconnected => 2,
    }
}

/// The breaker gauge: 0 closed, 1 open, 2 half-open.
fn breaker_gauge(state: BreakerState) -> u64 {
    match state {
        BreakerState::Closed => 0,
        BreakerState::Open => 1,
        BreakerState::HalfOpen => 2,
    }
}

/// Escapes a label value (the encoder writes values verbatim).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

type Labels = Vec<(&'static str, String)>;

/// A counter family; `name` without `_total`, which the encoder appends.
fn counters(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, u64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in rows {
        metric
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, u64, u64>(&value, None)?;
    }
    Ok(())
}

fn counter(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, u64, u64>(&value, None)
}

fn gauges(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, u64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        metric.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

fn gauge(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

/// A histogram family from cumulative snapshots.
fn histograms<'a>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, &'a HistogramSnapshot)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in rows {
        // The encoder wants per-bucket counts and accumulates them; `f64::MAX` is its `+Inf`.
        let mut buckets = Vec::with_capacity(h.buckets.len() + 1);
        let mut below = 0;
        for &(bound, cumulative) in &h.buckets {
            buckets.push((bound, cumulative.saturating_sub(below)));
            below = cumulative;
        }
        buckets.push((f64::MAX, h.count.saturating_sub(below)));
        metric
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &buckets, None)?;
    }
    Ok(())
}

/// The per-tier series of one tier: name, kind, help, value (`None`: not known for this
/// backend). Destructured without `..`: a field added to the document fails to compile here
/// until it is exported.
fn tier_fields(t: &TierStats) -> [(&'static str, MetricType, &'static str, Option<u64>); 11] {
    let TierStats {
        tier: _,
        backend: _,
        hits,
        misses,
        errors,
        timeouts,
        skipped,
        decode_errors,
        entries,
        bytes,
        evictions,
        requests,
        commands,
    } = *t;
    use MetricType::{Counter, Gauge};
    [
        (
            "chat_cache_hits",
            Counter,
            "Reads that found a valid entry.",
            Some(hits),
        ),
        (
            "chat_cache_misses",
            Counter,
            "Reads that found nothing valid.",
            Some(misses),
        ),
        (
            "chat_cache_errors",
            Counter,
            "Backend calls that failed.",
            Some(errors),
        ),
        (
            "chat_cache_timeouts",
            Counter,
            "Backend calls that timed out.",
            Some(timeouts),
        ),
        (
            "chat_cache_skipped",
            Counter,
            "Calls skipped while the breaker was open.",
            Some(skipped),
        ),
        (
            "chat_cache_tier_decode_errors",
            Counter,
            "Stored bytes a tier could not decode.",
            Some(decode_errors),
        ),
        (
            "chat_cache_bytes",
            Gauge,
            "Bytes stored (approximate).",
            bytes,
        ),
        (
            "chat_cache_entries",
            Gauge,
            "Entries stored (approximate).",
            entries,
        ),
        (
            "chat_cache_evictions",
            Counter,
            "Entries evicted for space.",
            evictions,
        ),
        (
            "chat_cache_requests",
            Counter,
            "HTTP requests sent to Upstash.",
            requests,
        ),
        (
            "chat_cache_commands",
            Counter,
            "Redis commands sent (what Upstash bills).",
            commands,
        ),
    ]
}

fn tier_labels(t: &TierStats) -> Labels {
    vec![("tier", label(&t.tier)), ("backend", label(&t.backend))]
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        self.encode_http(&mut encoder)?;
        self.encode_cache(&mut encoder)?;
        let Stats {
            version: _,
            cache: _,
            db: DbStats {
                queries: _,
                queries_by_op,
            },
            http: _,
            rate_limited,
            ws_sessions,
            backplane,
        } = &self.stats;
        if let Some(backplane) = backplane {
            encode_backplane(&mut encoder, backplane)?;
        }
        counters(
            &mut encoder,
            "chat_db_queries",
            "Database statements run, by store operation.",
            queries_by_op
                .iter()
                .map(|(op, n)| (vec![("op", label(op))], *n)),
        )?;
        counters(
            &mut encoder,
            "chat_rate_limited",
            "Requests answered 429, by bucket.",
            rate_limited
                .iter()
                .map(|(bucket, n)| (vec![("bucket", label(bucket))], *n)),
        )?;
        gauge(
            &mut encoder,
            "chat_ws_sessions",
            "WebSocket sessions connected now.",
            *ws_sessions,
        )
    }
}

/// The `chat_backplane_*` series. Destructured without `..`: a field added to the document fails
/// to compile here until it is exported.
fn encode_backplane(encoder: &mut DescriptorEncoder<'_>, b: &BackplaneStats) -> fmt::Result {
    let BackplaneStats {
        transport,
        state,
        published,
        publish_errors,
        dropped,
        queued,
        received,
        rejected,
        gaps,
        interruptions,
        resets,
        lag_micros,
        events_sent,
        events_received,
        events_rejected,
        ws_resyncs,
    } = b;
    gauges(
        encoder,
        "chat_backplane_state",
        "Backplane: 0 connecting, 1 connected, 2 disconnected.",
        [(
            vec![("transport", label(transport))],
            backplane_gauge(*state),
        )],
    )?;
    for (name, help, value) in [
        (
            "chat_backplane_messages_published",
            "Messages published on the bus (notices, events, heartbeats).",
            published,
        ),
        (
            "chat_backplane_messages_received",
            "Messages received from other instances.",
            received,
        ),
        (
            "chat_backplane_publish_errors",
            "Failed publish attempts (retried).",
            publish_errors,
        ),
        (
            "chat_backplane_messages_dropped",
            "Messages dropped from a full outbox.",
            dropped,
        ),
        (
            "chat_backplane_messages_rejected",
            "Malformed or foreign-version messages ignored.",
            rejected,
        ),
        (
            "chat_backplane_gaps",
            "Sequence gaps detected (messages of another instance lost).",
            gaps,
        ),
        (
            "chat_backplane_interruptions",
            "Subscription interruptions, each followed by a reconnect.",
            interruptions,
        ),
        (
            "chat_backplane_resets",
            "Resets of L1 and realtime sessions after an interruption or gap.",
            resets,
        ),
        (
            "chat_backplane_events_rejected",
            "Realtime events from the bus that did not decode.",
            events_rejected,
        ),
        (
            "chat_ws_resyncs",
            "Times every WebSocket session was closed with 4008 to resync.",
            ws_resyncs,
        ),
    ] {
        counter(encoder, name, help, *value)?;
    }
    counters(
        encoder,
        "chat_backplane_events",
        "Realtime events on the bus, by direction.",
        [
            (vec![("direction", "out".to_owned())], *events_sent),
            (vec![("direction", "in".to_owned())], *events_received),
        ],
    )?;
    gauge(
        encoder,
        "chat_backplane_queued",
        "Messages waiting in the outbox.",
        *queued,
    )?;
    if let Some(lag) = lag_micros {
        encoder
            .encode_descriptor(
                "chat_backplane_lag_seconds",
                "Publish-to-receipt time of the last message from another instance.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&(*lag as f64 / 1e6))?;
    }
    Ok(())
}

impl Snapshot {
    fn encode_http(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let route_labels = |r: &RouteSnapshot| -> Labels {
            vec![("method", label(&r.method)), ("route", label(&r.route))]
        };
        histograms(
            encoder,
            "chat_http_request_duration_seconds",
            "HTTP request latency by route.",
            self.routes.iter().map(|r| (route_labels(r), &r.latency)),
        )?;
        let mut rows = Vec::new();
        for r in &self.routes {
            let StatusClasses {
                informational,
                success,
                redirection,
                client_error,
                server_error,
            } = r.responses;
            for (class, n) in [
                ("1xx", informational),
                ("2xx", success),
                ("3xx", redirection),
                ("4xx", client_error),
                ("5xx", server_error),
            ] {
                if n > 0 {
                    let mut labels = route_labels(r);
                    labels.push(("status", class.to_owned()));
                    rows.push((labels, n));
                }
            }
        }
        counters(
            encoder,
            "chat_http_responses",
            "HTTP responses by route and status class.",
            rows,
        )
    }

    fn encode_cache(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let CacheStats {
            tiers,
            lookups,
            breaker,
            pending_invalidations,
            kinds,
        } = &self.stats.cache;
        counters(
            encoder,
            "chat_cache_kind_lookups",
            "get_or_load calls, by kind of cached data.",
            kinds
                .iter()
                .map(|k| (vec![("kind", label(&k.kind))], k.lookups)),
        )?;
        counters(
            encoder,
            "chat_cache_kind_loads",
            "Loader runs (database reads through the cache), by kind of cached data.",
            kinds
                .iter()
                .map(|k| (vec![("kind", label(&k.kind))], k.loads)),
        )?;
        let rows: Vec<_> = tiers
            .iter()
            .map(|t| (tier_labels(t), tier_fields(t)))
            .collect();
        // The names and kinds do not depend on the values; read them off an empty row.
        for (i, (name, kind, help, _)) in tier_fields(&TierStats::default()).into_iter().enumerate()
        {
            let values = rows
                .iter()
                .filter_map(|(labels, fields)| Some((labels.clone(), fields[i].3?)));
            if matches!(kind, MetricType::Counter) {
                counters(encoder, name, help, values)?;
            } else {
                gauges(encoder, name, help, values)?;
            }
        }
        {
            let mut info = encoder.encode_descriptor(
                "chat_cache_tier",
                "The backend of each tier.",
                None,
                MetricType::Info,
            )?;
            for t in tiers {
                info.encode_info(&tier_labels(t))?;
            }
        }
        histograms(
            encoder,
            "chat_cache_latency_seconds",
            "Latency of calls to a cache tier.",
            self.tier_latency.iter().map(|t| {
                (
                    vec![("tier", label(&t.tier)), ("backend", label(&t.backend))],
                    &t.latency,
                )
            }),
        )?;

        let LookupStats {
            hits,
            misses,
            loads,
            load_errors,
            coalesced,
            stale_served,
            failsafe_served,
            decode_errors,
            backend_errors,
        } = *lookups;
        for (name, help, value) in [
            (
                "chat_cache_lookup_hits",
                "get_or_load calls answered by a fresh entry.",
                hits,
            ),
            (
                "chat_cache_lookup_misses",
                "get_or_load calls that found no usable entry.",
                misses,
            ),
            (
                "chat_cache_loads",
                "Loader runs (database loads through the cache).",
                loads,
            ),
            (
                "chat_cache_load_errors",
                "Loader runs that failed.",
                load_errors,
            ),
            (
                "chat_cache_coalesced",
                "Callers that waited for another caller's load.",
                coalesced,
            ),
            (
                "chat_cache_stale_served",
                "Stale values served while refreshing.",
                stale_served,
            ),
            (
                "chat_cache_failsafe_served",
                "Stale values served because the loader failed.",
                failsafe_served,
            ),
            (
                "chat_cache_decode_errors",
                "Cached bytes that could not be decoded.",
                decode_errors,
            ),
            (
                "chat_cache_backend_errors",
                "Cache failures hidden from requests.",
                backend_errors,
            ),
        ] {
            counter(encoder, name, help, value)?;
        }
        gauge(
            encoder,
            "chat_cache_pending_invalidations",
            "Invalidations waiting to be replayed on L2.",
            *pending_invalidations,
        )?;
        if let Some(BreakerStats {
            state,
            opened,
            closed,
        }) = *breaker
        {
            gauge(
                encoder,
                "chat_cache_breaker_state",
                "L2 circuit breaker: 0 closed, 1 open, 2 half-open.",
                breaker_gauge(state),
            )?;
            counters(
                encoder,
                "chat_cache_breaker_transitions",
                "Breaker transitions, by new state.",
                [
                    (vec![("to", "open".to_owned())], opened),
                    (vec![("to", "closed".to_owned())], closed),
                ],
            )?;
        }
        Ok(())
    }
}
