//! `GET /dashboard/stream`: the live data of the cache dashboard (the page is `/dashboard`, see
//! `web`), as Server-Sent Events: one JSON [`Frame`] per interval (500 ms by default), each the
//! difference of two [`Snapshot`]s of the counters `/stats` and `/metrics` read, over a window of
//! about two seconds, so rates and ratios move with the load instead of averaging since start.
//!
//! Access (`DASHBOARD`, `DASHBOARD_TOKEN`): off answers 404; with a token, the request must carry
//! it as `Authorization: Bearer` (401 `dashboard_token_required` otherwise); without one, only a
//! request from this machine is served (a loopback peer that sent no forwarding header: a proxy
//! in front would make every remote client look local), 403 `dashboard_local_only` otherwise.
//! A frame holds aggregate counters only: no user, token, key or Upstash credential.

use std::{
    collections::VecDeque,
    convert::Infallible,
    net::SocketAddr,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    extract::{ConnectInfo, Query, Request, State},
    http::{HeaderMap, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::get,
};
use cache_core::stats::HistogramSnapshot;
use chat_stats::StatusClasses;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;

use crate::{AppError, AppState, config::DashboardAccess, metrics::Snapshot};

/// Where the stream is served.
pub const STREAM_PATH: &str = "/dashboard/stream";

/// What Upstash's pay-as-you-go plan bills per 100,000 commands, in US dollars; the dashboard
/// extrapolates the current command rate to a 30-day month with it.
pub const USD_PER_100K_COMMANDS: f64 = 0.20;

/// The frames' rates cover about this much time.
const WINDOW: Duration = Duration::from_secs(2);
const DEFAULT_INTERVAL: Duration = Duration::from_millis(500);
const MIN_INTERVAL_MS: u64 = 200;
const MAX_INTERVAL_MS: u64 = 5_000;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route(STREAM_PATH, get(stream))
}

#[derive(Debug, Deserialize)]
struct StreamParams {
    interval_ms: Option<u64>,
}

async fn stream(
    State(state): State<AppState>,
    Query(params): Query<StreamParams>,
    request: Request,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    if let Err(err) = check_access(&state.config().dashboard, peer, request.headers()) {
        return err.into_response();
    }
    let interval = params.interval_ms.map_or(DEFAULT_INTERVAL, |ms| {
        Duration::from_millis(ms.clamp(MIN_INTERVAL_MS, MAX_INTERVAL_MS))
    });
    let window_frames = usize::try_from(WINDOW.as_millis() / interval.as_millis())
        .unwrap_or(1)
        .max(1);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut history = VecDeque::with_capacity(window_frames + 1);
    history.push_back((Instant::now(), Snapshot::take(&state)));
    let feed = Feed {
        shutdown: state.hub().shutdown_signal(),
        state,
        history,
        ticks,
        window_frames,
    };
    let frames = futures_util::stream::unfold(feed, |mut feed| async move {
        let frame = feed.next().await?;
        Some((Ok::<_, Infallible>(Event::default().data(frame)), feed))
    });
    Sse::new(frames)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The producer of one stream's frames: the snapshots of the last window, and the clock.
struct Feed {
    state: AppState,
    history: VecDeque<(Instant, Snapshot)>,
    ticks: tokio::time::Interval,
    window_frames: usize,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Feed {
    /// The next frame as JSON, or `None` when the server shuts down (graceful shutdown waits
    /// for open responses, so the stream must end by itself).
    async fn next(&mut self) -> Option<String> {
        if *self.shutdown.borrow() {
            return None;
        }
        tokio::select! {
            _ = self.ticks.tick() => {}
            _ = self.shutdown.changed() => return None,
        }
        self.history
            .push_back((Instant::now(), Snapshot::take(&self.state)));
        while self.history.len() > self.window_frames + 1 {
            self.history.pop_front();
        }
        let (from_at, from) = self.history.front()?;
        let (to_at, to) = self.history.back()?;
        let frame = Frame::between(from, to, to_at.duration_since(*from_at), &self.state);
        serde_json::to_string(&frame).ok()
    }
}

/// Who may read: see the module docs.
fn check_access(
    access: &DashboardAccess,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Result<(), AppError> {
    match access {
        DashboardAccess::Off => Err(AppError::RouteNotFound),
        DashboardAccess::Token(token) => {
            let sent = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or_default();
            if bool::from(sent.as_bytes().ct_eq(token.expose().as_bytes())) {
                Ok(())
            } else {
                Err(AppError::DashboardTokenRequired)
            }
        }
        DashboardAccess::Local => {
            let forwarded = ["forwarded", "x-forwarded-for", "x-real-ip"]
                .iter()
                .any(|name| headers.contains_key(*name));
            match peer {
                Some(peer) if peer.ip().to_canonical().is_loopback() && !forwarded => Ok(()),
                _ => Err(AppError::DashboardLocalOnly),
            }
        }
    }
}

/// One update of the dashboard. Rates are per second over `window_secs`; ratios over the same
/// window unless named `_total`; `None` (JSON `null`) where nothing happened or nothing applies.
#[derive(Debug, Clone, Serialize)]
pub struct Frame {
    /// The format of this document.
    pub version: u32,
    /// Server wall clock, Unix milliseconds.
    pub time_ms: u64,
    /// The time the rates cover.
    pub window_secs: f64,
    /// Time since the server started.
    pub uptime_secs: f64,
    /// The cache backend's name.
    pub cache_backend: String,
    /// HTTP traffic.
    pub http: HttpFrame,
    /// The cache.
    pub cache: CacheFrame,
    /// The backplane, when there is one.
    pub backplane: Option<BackplaneFrame>,
    /// What the cache sends to Upstash, when it uses Upstash.
    pub upstash: Option<UpstashFrame>,
    /// The database.
    pub db: DbFrame,
    /// WebSocket sessions connected now.
    pub ws_sessions: u64,
}

/// HTTP traffic in the window.
#[derive(Debug, Clone, Serialize)]
pub struct HttpFrame {
    /// All responses.
    pub requests_per_sec: f64,
    /// 5xx responses.
    pub server_errors_per_sec: f64,
    /// Every route seen since start, busiest in the window first.
    pub routes: Vec<RouteFrame>,
}

/// One route in the window.
#[derive(Debug, Clone, Serialize)]
pub struct RouteFrame {
    /// The method.
    pub method: String,
    /// The route pattern (`/api/v1/channels/{cid}/messages`), never a concrete path.
    pub route: String,
    /// Responses.
    pub requests_per_sec: f64,
    /// Median latency (upper bound of its histogram bucket).
    pub p50_ms: Option<f64>,
    /// 99th percentile latency (upper bound of its histogram bucket).
    pub p99_ms: Option<f64>,
}

/// The cache in the window.
#[derive(Debug, Clone, Serialize)]
pub struct CacheFrame {
    /// `get_or_load` hit ratio.
    pub hit_ratio: Option<f64>,
    /// The same since start.
    pub hit_ratio_total: Option<f64>,
    /// `get_or_load` calls.
    pub lookups_per_sec: f64,
    /// Loader runs (database reads through the cache).
    pub loads_per_sec: f64,
    /// Per kind of cached data.
    pub kinds: Vec<KindFrame>,
    /// Per tier.
    pub tiers: Vec<TierFrame>,
    /// The L2 breaker of a tiered cache.
    pub breaker: Option<chat_stats::BreakerStats>,
    /// Invalidations waiting to be replayed on L2.
    pub pending_invalidations: u64,
}

/// One kind of cached data in the window.
#[derive(Debug, Clone, Serialize)]
pub struct KindFrame {
    /// `latest_page`, `membership`, …
    pub kind: String,
    /// `get_or_load` calls.
    pub lookups_per_sec: f64,
    /// Share of those that ran no loader.
    pub hit_ratio: Option<f64>,
    /// The same since start.
    pub hit_ratio_total: Option<f64>,
}

/// One cache tier in the window.
#[derive(Debug, Clone, Serialize)]
pub struct TierFrame {
    /// `memory`, `upstash`, `l1`, `l2`.
    pub tier: String,
    /// The backend serving it.
    pub backend: String,
    /// Hits over hits and misses.
    pub hit_ratio: Option<f64>,
    /// Reads that found a valid entry.
    pub hits_per_sec: f64,
    /// Reads that found none.
    pub misses_per_sec: f64,
    /// Failed or timed-out calls.
    pub errors_per_sec: f64,
    /// Entries now (approximate in memory).
    pub entries: Option<u64>,
    /// Bytes now (approximate in memory).
    pub bytes: Option<u64>,
    /// Evictions since start.
    pub evictions: Option<u64>,
    /// Median call latency, for tiers that time their calls.
    pub p50_ms: Option<f64>,
    /// 99th percentile call latency.
    pub p99_ms: Option<f64>,
}

/// The backplane in the window.
#[derive(Debug, Clone, Serialize)]
pub struct BackplaneFrame {
    /// `connecting`, `connected`, `disconnected`.
    pub state: chat_stats::BackplaneState,
    /// Messages published.
    pub published_per_sec: f64,
    /// Messages received from other instances.
    pub received_per_sec: f64,
    /// Publish-to-receipt time of the last message from another instance.
    pub lag_ms: Option<f64>,
    /// Sequence gaps since start.
    pub gaps: u64,
    /// Subscription interruptions since start.
    pub interruptions: u64,
    /// L1 and session resets since start.
    pub resets: u64,
}

/// Upstash traffic in the window, and what it would bill.
#[derive(Debug, Clone, Serialize)]
pub struct UpstashFrame {
    /// HTTP requests a minute.
    pub requests_per_min: f64,
    /// Redis commands a minute (what Upstash bills).
    pub commands_per_min: f64,
    /// That command rate for 30 days at [`USD_PER_100K_COMMANDS`].
    pub monthly_cost_usd: f64,
}

/// The database in the window.
#[derive(Debug, Clone, Serialize)]
pub struct DbFrame {
    /// Statements a second.
    pub queries_per_sec: f64,
}

impl Frame {
    /// The frame for what changed from `from` to `to`, `elapsed` apart.
    pub fn between(from: &Snapshot, to: &Snapshot, elapsed: Duration, state: &AppState) -> Frame {
        let secs = elapsed.as_secs_f64().max(1e-3);
        let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
        let (f, t) = (&from.stats, &to.stats);

        let mut routes: Vec<RouteFrame> = to
            .routes()
            .map(|(method, route, latency, responses)| {
                let before = from.routes().find(|r| r.0 == method && r.1 == route);
                let window = match before {
                    Some((_, _, old, _)) => histogram_delta(old, latency),
                    None => latency.clone(),
                };
                let count = responses.total().saturating_sub(
                    before.map_or(0, |(_, _, _, r): (_, _, _, &StatusClasses)| r.total()),
                );
                RouteFrame {
                    method: method.to_owned(),
                    route: route.to_owned(),
                    requests_per_sec: count as f64 / secs,
                    p50_ms: window.quantile(0.5).map(to_ms),
                    p99_ms: window.quantile(0.99).map(to_ms),
                }
            })
            .collect();
        routes.sort_by(|a, b| {
            b.requests_per_sec
                .total_cmp(&a.requests_per_sec)
                .then_with(|| a.route.cmp(&b.route))
        });

        let (fl, tl) = (&f.cache.lookups, &t.cache.lookups);
        let kinds = t
            .cache
            .kinds
            .iter()
            .map(|k| {
                let before = f.cache.kinds.iter().find(|o| o.kind == k.kind);
                let lookups = k.lookups - before.map_or(0, |o| o.lookups.min(k.lookups));
                let loads = k.loads - before.map_or(0, |o| o.loads.min(k.loads));
                KindFrame {
                    kind: k.kind.clone(),
                    lookups_per_sec: lookups as f64 / secs,
                    hit_ratio: share(lookups.saturating_sub(loads), lookups),
                    hit_ratio_total: k.hit_ratio(),
                }
            })
            .collect();
        let tiers = t
            .cache
            .tiers
            .iter()
            .map(|tier| {
                let before = f.cache.tiers.iter().find(|o| o.tier == tier.tier);
                let old = |pick: fn(&chat_stats::TierStats) -> u64| before.map_or(0, pick);
                let hits = tier.hits.saturating_sub(old(|o| o.hits));
                let misses = tier.misses.saturating_sub(old(|o| o.misses));
                let errors =
                    (tier.errors + tier.timeouts).saturating_sub(old(|o| o.errors + o.timeouts));
                let latency =
                    to.tier_latency(&tier.tier)
                        .map(|now| match from.tier_latency(&tier.tier) {
                            Some(old) => histogram_delta(old, now),
                            None => now.clone(),
                        });
                TierFrame {
                    tier: tier.tier.clone(),
                    backend: tier.backend.clone(),
                    hit_ratio: share(hits, hits + misses),
                    hits_per_sec: hits as f64 / secs,
                    misses_per_sec: misses as f64 / secs,
                    errors_per_sec: errors as f64 / secs,
                    entries: tier.entries,
                    bytes: tier.bytes,
                    evictions: tier.evictions,
                    p50_ms: latency.as_ref().and_then(|l| l.quantile(0.5)).map(to_ms),
                    p99_ms: latency.as_ref().and_then(|l| l.quantile(0.99)).map(to_ms),
                }
            })
            .collect();

        // Upstash: the tiers that count requests (one, whether alone or as L2).
        let upstash_tiers = |s: &chat_stats::Stats| {
            s.cache
                .tiers
                .iter()
                .filter_map(|t| Some((t.requests?, t.commands.unwrap_or(0))))
                .reduce(|(r1, c1), (r2, c2)| (r1 + r2, c1 + c2))
        };
        let upstash = upstash_tiers(t).map(|(requests, commands)| {
            let (old_requests, old_commands) = upstash_tiers(f).unwrap_or_default();
            let commands_per_min = rate(old_commands, commands) * 60.0;
            UpstashFrame {
                requests_per_min: rate(old_requests, requests) * 60.0,
                commands_per_min,
                monthly_cost_usd: commands_per_min * 60.0 * 24.0 * 30.0 / 100_000.0
                    * USD_PER_100K_COMMANDS,
            }
        });

        let backplane = t.backplane.as_ref().map(|b| {
            let old = f.backplane.clone().unwrap_or_default();
            BackplaneFrame {
                state: b.state,
                published_per_sec: rate(old.published, b.published),
                received_per_sec: rate(old.received, b.received),
                lag_ms: b.lag_micros.map(|us| us as f64 / 1e3),
                gaps: b.gaps,
                interruptions: b.interruptions,
                resets: b.resets,
            }
        });

        Frame {
            version: 1,
            time_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            window_secs: secs,
            uptime_secs: state.metrics().uptime().as_secs_f64(),
            cache_backend: state.cache().cache().backend().name().to_owned(),
            http: HttpFrame {
                requests_per_sec: rate(f.http.responses.total(), t.http.responses.total()),
                server_errors_per_sec: rate(
                    f.http.responses.server_error,
                    t.http.responses.server_error,
                ),
                routes,
            },
            cache: CacheFrame {
                hit_ratio: {
                    let hits = tl.hits.saturating_sub(fl.hits);
                    let misses = tl.misses.saturating_sub(fl.misses);
                    share(hits, hits + misses)
                },
                hit_ratio_total: tl.hit_ratio(),
                lookups_per_sec: rate(fl.hits + fl.misses, tl.hits + tl.misses),
                loads_per_sec: rate(fl.loads, tl.loads),
                kinds,
                tiers,
                breaker: t.cache.breaker,
                pending_invalidations: t.cache.pending_invalidations,
            },
            backplane,
            upstash,
            db: DbFrame {
                queries_per_sec: rate(f.db.queries, t.db.queries),
            },
            ws_sessions: t.ws_sessions,
        }
    }
}

fn share(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

fn to_ms(seconds: f64) -> f64 {
    seconds * 1e3
}

/// The observations between two snapshots of one histogram (same buckets, cumulative counts).
fn histogram_delta(old: &HistogramSnapshot, new: &HistogramSnapshot) -> HistogramSnapshot {
    HistogramSnapshot {
        buckets: new
            .buckets
            .iter()
            .zip(&old.buckets)
            .map(|(&(bound, n), &(_, o))| (bound, n.saturating_sub(o)))
            .collect(),
        count: new.count.saturating_sub(old.count),
        sum_seconds: (new.sum_seconds - old.sum_seconds).max(0.0),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use axum::http::HeaderValue;

    use super::*;
    use crate::config::SecretString;

    fn peer(ip: impl Into<std::net::IpAddr>) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.into(), 40_000))
    }

    #[test]
    fn local_access_is_for_loopback_peers_without_forwarding_headers() {
        let local = DashboardAccess::Local;
        let none = HeaderMap::new();
        assert!(check_access(&local, peer(Ipv4Addr::LOCALHOST), &none).is_ok());
        assert!(check_access(&local, peer(Ipv6Addr::LOCALHOST), &none).is_ok());
        // An IPv4 client on a dual-stack socket.
        assert!(check_access(&local, peer(Ipv4Addr::LOCALHOST.to_ipv6_mapped()), &none).is_ok());
        for remote in [peer(Ipv4Addr::new(192, 168, 1, 5)), None] {
            assert!(matches!(
                check_access(&local, remote, &none),
                Err(AppError::DashboardLocalOnly)
            ));
        }
        for name in ["x-forwarded-for", "forwarded", "x-real-ip"] {
            let mut proxied = HeaderMap::new();
            proxied.insert(name, HeaderValue::from_static("203.0.113.9"));
            assert!(matches!(
                check_access(&local, peer(Ipv4Addr::LOCALHOST), &proxied),
                Err(AppError::DashboardLocalOnly)
            ));
        }
    }

    #[test]
    fn token_access_wants_the_exact_bearer_token_from_anywhere() {
        let access = DashboardAccess::Token(SecretString::new("0123456789abcdef-dash"));
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            headers
        };
        let remote = peer(Ipv4Addr::new(198, 51, 100, 7));
        assert!(check_access(&access, remote, &with("Bearer 0123456789abcdef-dash")).is_ok());
        for wrong in [
            "Bearer 0123456789abcdef-das",
            "Bearer 0123456789abcdef-dash2",
            "0123456789abcdef-dash",
            "Basic 0123456789abcdef-dash",
        ] {
            assert!(matches!(
                check_access(&access, remote, &with(wrong)),
                Err(AppError::DashboardTokenRequired)
            ));
        }
        // Local requests need it too once a token is set.
        assert!(matches!(
            check_access(&access, peer(Ipv4Addr::LOCALHOST), &HeaderMap::new()),
            Err(AppError::DashboardTokenRequired)
        ));
        assert!(matches!(
            check_access(
                &DashboardAccess::Off,
                peer(Ipv4Addr::LOCALHOST),
                &HeaderMap::new()
            ),
            Err(AppError::RouteNotFound)
        ));
    }

    #[test]
    fn histogram_delta_keeps_only_the_window() {
        let old = HistogramSnapshot {
            buckets: vec![(0.001, 90), (0.01, 100)],
            count: 100,
            sum_seconds: 0.2,
        };
        // 10 new observations, all slow.
        let new = HistogramSnapshot {
            buckets: vec![(0.001, 90), (0.01, 110)],
            count: 110,
            sum_seconds: 0.3,
        };
        let window = histogram_delta(&old, &new);
        assert_eq!(window.count, 10);
        assert_eq!(window.quantile(0.5), Some(0.01));
        // Since start, the median is fast.
        assert_eq!(new.quantile(0.5), Some(0.001));
    }
}
