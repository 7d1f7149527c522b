//! Per-user rate limits by bucket (Revolt's design): a fixed 10-second window per
//! (user, bucket), `X-RateLimit-*` headers on every limited response, and 429 `rate_limited` with
//! `Retry-After` when a window is full.
//!
//! The bucket of a request is declared beside its route in the router table
//! (`routes::api_route_table`, column `bucket`) and looked up here by method and matched route
//! ([`RouteBuckets`]), so limits are one table, not attributes scattered over handlers or rules
//! guessed from the path. Windows live in a bounded moka cache and disappear when idle, so the
//! limiter cannot grow without bound. `RATE_LIMIT=off` removes it.
//!
//! # Before authentication
//!
//! A request is charged before its token is resolved, so a flood costs no cache or database
//! lookup once it is over its limit:
//!
//! - No token, or a token without the shape of one (`{ulid}.{64 hex}`): charged to the client
//!   address (`ip:…`); the token is never looked up.
//! - A well-formed token: charged to the user id it claims (`user:…`), then to the address's
//!   [`Bucket::AuthFailures`] as an unverified attempt, and only then resolved. Success refunds the
//!   attempt; failure refunds the claimed user's charge (a forged token must not spend someone
//!   else's budget) and charges the address's route bucket instead, as for no token. So at most
//!   [`Bucket::AuthFailures`]'s limit of failed (or in-flight) lookups per address and window, and
//!   a legitimate client sees exactly its route's bucket in the `X-RateLimit-*` headers.
//! - The token is the bearer header's, or on the WebSocket upgrade (which also accepts it as the
//!   `token` query parameter) the query parameter's: both are limited alike, and a bad one on the
//!   upgrade is answered 401 here, as the route's access rule says, without a second lookup.
//! - Once an address's failure bucket is full, its well-formed tokens are still accepted if the
//!   in-process cache alone can verify them (no remote lookup): many users behind one proxy
//!   address keep working while someone behind the same address sprays bad tokens. Others get 429
//!   with `X-RateLimit-Bucket: auth_failures`.
//!
//! # Several instances
//!
//! On a backplane, the per-user counts hold across instances without a Redis command per request:
//! each instance sums the requests it allowed per user and bucket and publishes the sums once per
//! [`SHARE_EVERY`] as one message on the bus (batched with whatever else goes out: at most one
//! billed `PUBLISH` per second per instance, however many requests), and adds the sums it hears
//! from the others to its own windows. A user spreading requests over N instances is therefore
//! held to the limit, give or take what the others allowed in the last second before they heard of
//! it. Per-address limits (unauthenticated requests, failed authentications) are not shared. The
//! address is the peer's, or behind a reverse proxy listed in `TRUSTED_PROXIES`, the client
//! address the proxy reports in `X-Forwarded-For` (without that setting every client behind the
//! proxy is one address).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{ConnectInfo, MatchedPath, Query, Request, State},
    http::{HeaderValue, Method},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{
    auth::{
        AuthFailed, CurrentUser, authenticate, authenticate_in_memory, bearer_token, claimed_user,
    },
    error::AppError,
    model::UserRef,
    routes::{Access, ApiRoute},
    state::AppState,
};

/// Length of a rate-limit window.
pub const WINDOW: Duration = Duration::from_secs(10);

/// A group of routes sharing a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// Registration (per IP).
    Register,
    /// Reads.
    Read,
    /// Posting, editing, deleting messages.
    Messages,
    /// Adding and removing reactions.
    Reactions,
    /// Creating, joining, leaving channels, adding members.
    Channels,
    /// Read markers.
    Acks,
    /// Unverified tokens per client address: failed authentications, and lookups in flight. Not
    /// a route's bucket; see the module docs.
    AuthFailures,
}

impl Bucket {
    /// Requests allowed per [`WINDOW`].
    pub fn limit(self) -> u32 {
        match self {
            Bucket::Register => 10,
            Bucket::Read => 600,
            Bucket::Messages => 30,
            Bucket::Reactions => 30,
            Bucket::Channels => 20,
            Bucket::Acks => 120,
            Bucket::AuthFailures => 20,
        }
    }

    /// The name in `X-RateLimit-Bucket`.
    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::Register => "register",
            Bucket::Read => "read",
            Bucket::Messages => "messages",
            Bucket::Reactions => "reactions",
            Bucket::Channels => "channels",
            Bucket::Acks => "acks",
            Bucket::AuthFailures => "auth_failures",
        }
    }
}

/// The bucket (and access rule) of every route of the router table, by method and matched path.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct RouteBuckets(Arc<HashMap<RouteId, (Bucket, Access)>>);

/// A route of the table: its method and path.
type RouteId = (Method, &'static str);

impl RouteBuckets {
    /// The buckets declared in `table`.
    pub fn new(table: &[ApiRoute]) -> Self {
        RouteBuckets(Arc::new(
            table
                .iter()
                .map(|route| {
                    (
                        (route.method.clone(), route.path),
                        (route.bucket, route.access),
                    )
                })
                .collect(),
        ))
    }

    /// The bucket of a request to the route `path` (as matched, `/api/v1/channels/{cid}`).
    /// `HEAD` is served by the `GET` route, so it counts like `GET`.
    pub fn get(&self, method: &Method, path: &str) -> Option<Bucket> {
        self.route(method, path).map(|(bucket, _)| bucket)
    }

    fn route(&self, method: &Method, path: &str) -> Option<(Bucket, Access)> {
        let method = if *method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        self.0.get(&(method.clone(), path)).copied()
    }
}

/// The `token` query parameter, which only the WebSocket upgrade accepts.
#[derive(serde::Deserialize)]
struct QueryToken {
    token: Option<String>,
}

/// The token a request presents: the bearer header, or on the WebSocket upgrade the `token`
/// query parameter (decoded as the handler decodes it), which then is limited like a header.
fn presented_token(request: &Request, access: Access) -> Option<String> {
    if let Some(token) = bearer_token(request.headers()) {
        return Some(token.to_owned());
    }
    if access != Access::WebSocket {
        return None;
    }
    Query::<QueryToken>::try_from_uri(request.uri())
        .ok()
        .and_then(|Query(query)| query.token)
}

/// How often an instance publishes the request counts it allowed since the last time.
pub const SHARE_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Window {
    started: Instant,
    // Requests allowed here, and requests other instances reported, in this window.
    used: u32,
    remote: u32,
}

impl Window {
    fn roll(&mut self, now: Instant) {
        if now.duration_since(self.started) >= WINDOW {
            self.started = now;
            self.used = 0;
            self.remote = 0;
        }
    }
}

/// One message of shared counts on the bus: `{"rl":[[subject, bucket, count], …]}`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct SharedCounts {
    rl: Vec<(String, String, u32)>,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy)]
pub struct Decision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// The bucket's limit.
    pub limit: u32,
    /// Requests left in this window.
    pub remaining: u32,
    /// When the window resets.
    pub reset_after: Duration,
    // The start of the window the request was counted in, so a refund finds the same window.
    window_started: Instant,
}

/// The limiter. Cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    windows: moka::sync::Cache<(String, Bucket), Arc<Mutex<Window>>>,
    // Counts allowed here and not yet shared; `None` when not on a backplane.
    unshared: Option<Arc<Mutex<Unshared>>>,
}

/// Requests allowed per (subject, bucket) since the counts were last shared.
type Unshared = HashMap<(String, Bucket), u32>;

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("windows", &self.windows.entry_count())
            .finish()
    }
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter {
            windows: moka::sync::Cache::builder()
                .max_capacity(200_000)
                .time_to_idle(WINDOW * 2)
                .build(),
            unshared: None,
        }
    }
}

impl Bucket {
    const ALL: [Bucket; 7] = [
        Bucket::Register,
        Bucket::Read,
        Bucket::Messages,
        Bucket::Reactions,
        Bucket::Channels,
        Bucket::Acks,
        Bucket::AuthFailures,
    ];

    fn from_name(name: &str) -> Option<Bucket> {
        Bucket::ALL.into_iter().find(|b| b.as_str() == name)
    }
}

/// Most distinct (user, bucket) sums one instance keeps unshared; beyond that new ones are not
/// shared (the limit then holds per instance for them), so a flood of users cannot grow memory.
const MAX_UNSHARED: usize = 100_000;

impl RateLimiter {
    /// A limiter whose per-user counts are shared with other instances through [`share_on`]
    /// (see the module docs).
    ///
    /// [`share_on`]: RateLimiter::share_on
    pub fn shared() -> Self {
        RateLimiter {
            unshared: Some(Arc::default()),
            ..RateLimiter::default()
        }
    }

    fn window(&self, subject: &str, bucket: Bucket) -> Arc<Mutex<Window>> {
        self.windows.get_with((subject.to_owned(), bucket), || {
            Arc::new(Mutex::new(Window {
                started: Instant::now(),
                used: 0,
                remote: 0,
            }))
        })
    }

    /// Counts one request of `subject` in `bucket`.
    pub fn check(&self, subject: &str, bucket: Bucket) -> Decision {
        let window = self.window(subject, bucket);
        let mut window = window.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        window.roll(now);
        let limit = bucket.limit();
        let reset_after = WINDOW.saturating_sub(now.duration_since(window.started));
        let used = window.used.saturating_add(window.remote);
        if used >= limit {
            return Decision {
                allowed: false,
                limit,
                remaining: 0,
                reset_after,
                window_started: window.started,
            };
        }
        window.used += 1;
        let window_started = window.started;
        drop(window);
        if let Some(unshared) = &self.unshared {
            if subject.starts_with("user:") {
                let mut unshared = unshared.lock().unwrap_or_else(|e| e.into_inner());
                let len = unshared.len();
                if let Some(n) = unshared.get_mut(&(subject.to_owned(), bucket)) {
                    *n += 1;
                } else if len < MAX_UNSHARED {
                    unshared.insert((subject.to_owned(), bucket), 1);
                }
            }
        }
        Decision {
            allowed: true,
            limit,
            remaining: limit - used - 1,
            reset_after,
            window_started,
        }
    }

    /// Takes back one request of `subject` in `bucket` that [`check`](RateLimiter::check)
    /// allowed with `charged`, unless its window has rolled since (the new window never held it).
    pub fn refund(&self, subject: &str, bucket: Bucket, charged: &Decision) {
        if !charged.allowed {
            return;
        }
        let Some(window) = self.windows.get(&(subject.to_owned(), bucket)) else {
            return;
        };
        let mut window = window.lock().unwrap_or_else(|e| e.into_inner());
        window.roll(Instant::now());
        if window.started != charged.window_started || window.used == 0 {
            return;
        }
        window.used -= 1;
        drop(window);
        if let Some(unshared) = &self.unshared {
            let mut unshared = unshared.lock().unwrap_or_else(|e| e.into_inner());
            let key = (subject.to_owned(), bucket);
            if let Some(n) = unshared.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    unshared.remove(&key);
                }
            }
        }
    }

    /// Requests of `subject` in `bucket` counted in its current window, here and (shared) on
    /// other instances.
    pub fn used(&self, subject: &str, bucket: Bucket) -> u32 {
        let Some(window) = self.windows.get(&(subject.to_owned(), bucket)) else {
            return 0;
        };
        let mut window = window.lock().unwrap_or_else(|e| e.into_inner());
        window.roll(Instant::now());
        window.used.saturating_add(window.remote)
    }

    /// The counts allowed since the last call, as one bus message, or `None` if there are none.
    fn take_unshared(&self) -> Option<Vec<u8>> {
        let unshared = self.unshared.as_ref()?;
        let taken = std::mem::take(&mut *unshared.lock().unwrap_or_else(|e| e.into_inner()));
        if taken.is_empty() {
            return None;
        }
        let message = SharedCounts {
            rl: taken
                .into_iter()
                .map(|((subject, bucket), n)| (subject, bucket.as_str().to_owned(), n))
                .collect(),
        };
        serde_json::to_vec(&message).ok()
    }

    /// Adds counts another instance shared to this instance's windows. Unknown buckets and
    /// subjects that are not users are ignored (another version of chat-api, or a bad message).
    pub(crate) fn add_shared(&self, counts: SharedCounts) {
        for (subject, bucket, n) in counts.rl {
            let Some(bucket) = Bucket::from_name(&bucket) else {
                continue;
            };
            if !subject.starts_with("user:") {
                continue;
            }
            let window = self.window(&subject, bucket);
            let mut window = window.lock().unwrap_or_else(|e| e.into_inner());
            window.roll(Instant::now());
            window.remote = window.remote.saturating_add(n);
        }
    }

    /// Publishes this limiter's counts on `backplane` every [`SHARE_EVERY`] (when there are any)
    /// until `shutdown` changes. Spawns on the current Tokio runtime; a limiter not built with
    /// [`RateLimiter::shared`] has nothing to share and spawns nothing.
    pub fn share_on(
        &self,
        backplane: cache_core::Backplane,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        if self.unshared.is_none() {
            return;
        }
        let limiter = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(SHARE_EVERY);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = shutdown.changed() => return,
                }
                if let Some(message) = limiter.take_unshared() {
                    backplane.publish_app(bytes::Bytes::from(message));
                }
            }
        });
    }
}

/// Middleware (a route layer, so the matched route is known): charges the request to the bucket
/// its route declares before resolving its token (see the module docs), authenticates the caller
/// if it can, and answers 429 when a bucket is full.
pub async fn rate_limit(
    State((state, buckets)): State<(AppState, RouteBuckets)>,
    mut request: Request,
    next: Next,
) -> Response {
    if !state.config().rate_limit {
        return next.run(request).await;
    }
    let route = request.extensions().get::<MatchedPath>();
    let Some((bucket, access)) =
        route.and_then(|route| buckets.route(request.method(), route.as_str()))
    else {
        // Only routes of the table get this layer, so this is a bug: fail closed and loudly.
        tracing::error!(route = ?route.map(MatchedPath::as_str), "route without a rate-limit bucket");
        return AppError::Internal("route without a rate-limit bucket".into()).into_response();
    };
    let address = address_subject(
        &state,
        request.extensions().get::<ConnectInfo<SocketAddr>>(),
        request.headers(),
    );
    let token = presented_token(&request, access);
    let claimed = token.as_deref().and_then(claimed_user);
    let (Some(token), Some(claimed)) = (token, claimed) else {
        // Nothing to look up: the address pays.
        let decision = state.limiter().check(&address, bucket);
        return finish(&state, decision, bucket, request, next).await;
    };
    match charge_and_authenticate(&state, &address, claimed, &token, bucket).await {
        Ok((user, decision)) => {
            let extensions = request.extensions_mut();
            if let Some(user) = user {
                extensions.insert(user);
            } else if access == Access::WebSocket && decision.allowed {
                // Its rule: a bad token is a 401. Answered here, since the upgrade handler would
                // otherwise look the token up again.
                let mut response = AppError::Unauthorized.into_response();
                set_headers(&mut response, decision, bucket);
                return response;
            } else {
                extensions.insert(AuthFailed);
            }
            finish(&state, decision, bucket, request, next).await
        }
        Err((err, decision, bucket)) => {
            let mut response = err.into_response();
            set_headers(&mut response, decision, bucket);
            response
        }
    }
}

/// The subject a client is limited as: `ip:<address>`, the address being the peer's or, behind a
/// trusted proxy, the one it forwards (`TRUSTED_PROXIES`, see `client_ip`); `ip:unknown` when the
/// server recorded no peer address (in-process tests).
pub(crate) fn address_subject(
    state: &AppState,
    peer: Option<&ConnectInfo<SocketAddr>>,
    headers: &axum::http::HeaderMap,
) -> String {
    state
        .config()
        .trusted_proxies
        .client_ip(peer.map(|c| c.0.ip()), headers)
        .map_or_else(|| "ip:unknown".to_owned(), |ip| format!("ip:{ip}"))
}

/// Why a request with a well-formed token stops before its handler: the error, and the bucket
/// decision to report in the headers.
type Stopped = (AppError, Decision, Bucket);

/// Charges a request with a well-formed token claiming `claimed` and resolves the token. `Ok`
/// with the caller (`None` for a bad token, then charged to `address` like no token) and the
/// decision of the route's bucket to report, which may deny.
/// Resolves a token this middleware never saw (the `identify` frame of a WebSocket session) as
/// it resolves one in a header: a malformed token costs no lookup, and a well-formed one is an
/// attempt of `address`'s [`Bucket::AuthFailures`], refunded on success; once the bucket is full,
/// only a token the in-process cache alone can verify passes (429 `rate_limited` otherwise). With
/// rate limits off it is plain [`authenticate`].
pub(crate) async fn authenticate_charged(
    state: &AppState,
    address: &str,
    token: &str,
) -> Result<UserRef, AppError> {
    if !state.config().rate_limit {
        return Ok(authenticate(state, token).await?.user().clone());
    }
    if claimed_user(token).is_none() {
        return Err(AppError::Unauthorized);
    }
    let limiter = state.limiter();
    let attempt = limiter.check(address, Bucket::AuthFailures);
    if !attempt.allowed {
        return authenticate_in_memory(state, token)
            .map(|user| user.user().clone())
            .ok_or_else(|| {
                state.metrics().rate_limited(Bucket::AuthFailures);
                AppError::RateLimited {
                    retry_after: attempt.reset_after,
                }
            });
    }
    let result = authenticate(state, token).await;
    if !matches!(result, Err(AppError::Unauthorized)) {
        // A success, or a cache or database failure (not the client's): no failure charged.
        limiter.refund(address, Bucket::AuthFailures, &attempt);
    }
    result.map(|user| user.user().clone())
}

async fn charge_and_authenticate(
    state: &AppState,
    address: &str,
    claimed: ulid::Ulid,
    token: &str,
    bucket: Bucket,
) -> Result<(Option<CurrentUser>, Decision), Stopped> {
    let limiter = state.limiter();
    let user_subject = format!("user:{claimed}");
    let decision = limiter.check(&user_subject, bucket);
    if !decision.allowed {
        // The claimed user's own limit: no lookup, whoever sent it.
        return Err(deny(state, decision, bucket));
    }
    let attempt = limiter.check(address, Bucket::AuthFailures);
    if !attempt.allowed {
        if let Some(user) = authenticate_in_memory(state, token) {
            return Ok((Some(user), decision));
        }
        limiter.refund(&user_subject, bucket, &decision);
        return Err(deny(state, attempt, Bucket::AuthFailures));
    }
    match authenticate(state, token).await {
        Ok(user) => {
            limiter.refund(address, Bucket::AuthFailures, &attempt);
            Ok((Some(user), decision))
        }
        Err(AppError::Unauthorized) => {
            // The attempt stays charged to the address; the claimed user gets its request back.
            limiter.refund(&user_subject, bucket, &decision);
            Ok((None, limiter.check(address, bucket)))
        }
        Err(err) => {
            // The cache or database failed, not the client: no failure on its address.
            limiter.refund(address, Bucket::AuthFailures, &attempt);
            Err((err, decision, bucket))
        }
    }
}

/// Counts a 429 of `bucket` and describes it.
fn deny(state: &AppState, decision: Decision, bucket: Bucket) -> Stopped {
    state.metrics().rate_limited(bucket);
    (
        AppError::RateLimited {
            retry_after: decision.reset_after,
        },
        decision,
        bucket,
    )
}

/// Runs the handler if `decision` allows it (429 otherwise) and adds the rate-limit headers.
async fn finish(
    state: &AppState,
    decision: Decision,
    bucket: Bucket,
    request: Request,
    next: Next,
) -> Response {
    let mut response = if decision.allowed {
        next.run(request).await
    } else {
        deny(state, decision, bucket).0.into_response()
    };
    set_headers(&mut response, decision, bucket);
    response
}

fn set_headers(response: &mut Response, decision: Decision, bucket: Bucket) {
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", HeaderValue::from(decision.limit));
    headers.insert(
        "x-ratelimit-remaining",
        HeaderValue::from(decision.remaining),
    );
    if let Ok(value) = HeaderValue::from_str(&format!("{:.3}", decision.reset_after.as_secs_f64()))
    {
        headers.insert("x-ratelimit-reset-after", value);
    }
    headers.insert(
        "x-ratelimit-bucket",
        HeaderValue::from_static(bucket.as_str()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_looked_up_by_method_and_matched_route() {
        let route = |method, path, bucket| ApiRoute {
            method,
            path,
            access: crate::routes::Access::Member,
            bucket,
        };
        let buckets = RouteBuckets::new(&[
            route(Method::GET, "/a/{id}", Bucket::Read),
            route(Method::PUT, "/a/{id}", Bucket::Reactions),
        ]);
        assert_eq!(buckets.get(&Method::GET, "/a/{id}"), Some(Bucket::Read));
        assert_eq!(buckets.get(&Method::HEAD, "/a/{id}"), Some(Bucket::Read));
        assert_eq!(
            buckets.get(&Method::PUT, "/a/{id}"),
            Some(Bucket::Reactions)
        );
        assert_eq!(buckets.get(&Method::POST, "/a/{id}"), None);
        assert_eq!(buckets.get(&Method::GET, "/a/1"), None);
    }

    #[test]
    fn a_full_window_denies_until_it_resets() {
        let limiter = RateLimiter::default();
        for i in 0..Bucket::Channels.limit() {
            let d = limiter.check("u", Bucket::Channels);
            assert!(d.allowed);
            assert_eq!(d.remaining, Bucket::Channels.limit() - i - 1);
        }
        let denied = limiter.check("u", Bucket::Channels);
        assert!(!denied.allowed);
        assert!(denied.reset_after <= WINDOW);
        // Other subjects and buckets are independent.
        assert!(limiter.check("v", Bucket::Channels).allowed);
        assert!(limiter.check("u", Bucket::Read).allowed);
    }

    #[test]
    fn refunds_take_back_one_request_of_the_same_window() {
        let limiter = RateLimiter::shared();
        let first = limiter.check("user:u", Bucket::Messages);
        limiter.check("user:u", Bucket::Messages);
        limiter.refund("user:u", Bucket::Messages, &first);
        assert_eq!(limiter.used("user:u", Bucket::Messages), 1);
        // Not shared with other instances either.
        let counts: SharedCounts =
            serde_json::from_slice(&limiter.take_unshared().unwrap()).unwrap();
        assert_eq!(counts.rl, [("user:u".to_owned(), "messages".to_owned(), 1)]);
        // A decision of another window, or a denial, takes nothing back.
        let elsewhere = Decision {
            window_started: Instant::now(),
            ..first
        };
        limiter.refund("user:u", Bucket::Messages, &elsewhere);
        let denied = Decision {
            allowed: false,
            ..first
        };
        limiter.refund("user:u", Bucket::Messages, &denied);
        assert_eq!(limiter.used("user:u", Bucket::Messages), 1);
        // Nothing to take back from a subject never seen.
        limiter.refund("user:v", Bucket::Messages, &first);
        assert_eq!(limiter.used("user:v", Bucket::Messages), 0);
    }

    #[test]
    fn shared_counts_fill_the_windows_of_other_instances() {
        let (here, there) = (RateLimiter::shared(), RateLimiter::shared());
        for _ in 0..15 {
            assert!(here.check("user:u", Bucket::Channels).allowed);
        }
        here.check("ip:10.0.0.1", Bucket::Register);
        let message = here.take_unshared().expect("counts to share");
        assert!(here.take_unshared().is_none(), "shared once");
        let counts: SharedCounts = serde_json::from_slice(&message).unwrap();
        assert_eq!(
            counts.rl,
            [("user:u".to_owned(), "channels".to_owned(), 15)]
        );
        there.add_shared(counts);
        assert_eq!(there.used("user:u", Bucket::Channels), 15);
        for _ in 0..5 {
            assert!(there.check("user:u", Bucket::Channels).allowed);
        }
        let denied = there.check("user:u", Bucket::Channels);
        assert!(!denied.allowed);
        assert_eq!(denied.remaining, 0);
        // Foreign names and anonymous subjects are ignored.
        there.add_shared(SharedCounts {
            rl: vec![
                ("user:v".into(), "nonsense".into(), 99),
                ("ip:10.0.0.1".into(), "register".into(), 99),
            ],
        });
        assert_eq!(there.used("user:v", Bucket::Channels), 0);
        assert_eq!(there.used("ip:10.0.0.1", Bucket::Register), 0);
        assert!(RateLimiter::default().take_unshared().is_none());
    }
}
