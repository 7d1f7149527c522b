//! The chat HTTP and WebSocket server on the tiered cache.
//!
//! A real chat backend: users with bearer tokens, public and private channels, keyset-paginated
//! messages with reactions and read markers, and a WebSocket event stream. The database (SQLite
//! or PostgreSQL) is the source of truth; channel lists, latest pages, token and membership
//! lookups come from `cache_core::Cache::get_or_load` and are invalidated by tag after every
//! committed write.
//!
//! # Layout
//! - [`config`]: flags and environment → [`Config`].
//! - [`state`]: [`AppState`], built from a config or from parts (tests).
//! - [`store`]: the [`store::Store`] trait and its SQL implementation; migrations in `migrations/`.
//! - [`cache`]: backend selection, every cache key and tag, the cached reads.
//! - [`routes`]: the `/api/v1` handlers and their request/response types; [`api_route_table`] lists
//!   what they serve and who may call it.
//! - `ws` + [`events`]: the realtime session and the in-process event hub.
//! - `web`: the chat client at `/` and the cache dashboard at `/dashboard` (files under `web/`,
//!   embedded in the binary), served with a strict Content-Security-Policy; `dashboard`: the
//!   dashboard's live data (`/dashboard/stream`, Server-Sent Events).
//! - [`auth`], [`ratelimit`], [`metrics`], `ops`, `openapi`: cross-cutting pieces.
//! - [`error`]: [`AppError`], the one error shape.
//!
//! # Use
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = chat_api::Config::default();
//! let state = chat_api::AppState::from_config(config).await?;
//! let listener = tokio::net::TcpListener::bind(state.config().addr).await?;
//! let limits = state.config().server;
//! chat_api::serve(listener, chat_api::app(state), limits, chat_api::shutdown_signal()).await?;
//! # Ok(()) }
//! ```

pub mod auth;
pub mod cache;
pub mod client_ip;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod events;
pub mod metrics;
pub mod model;
mod openapi;
mod ops;
pub mod ratelimit;
pub mod routes;
pub mod state;
pub mod store;
pub mod validate;
mod web;
mod ws;

use std::{any::Any, future::Future, time::Duration};

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request, State},
    http::{HeaderValue, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    sensitive_headers::SetSensitiveRequestHeadersLayer,
    trace::TraceLayer,
};

pub use config::{Cli, Config};
pub use error::AppError;
pub use openapi::document as openapi_document;
pub use routes::api_route_table;
pub use serve_limits::ServerLimits;
pub use state::AppState;
pub use ws::{
    CLOSE_GOING_AWAY, CLOSE_HEARTBEAT, CLOSE_LAGGED, CLOSE_RATE_LIMITED, CLOSE_TOO_BIG,
    CLOSE_TOO_MANY_SESSIONS, CLOSE_UNAUTHORIZED,
};

/// The whole HTTP application: `/api/v1`, `/health`, `/stats` (JSON), `/metrics` (Prometheus), with request ids, tracing,
/// panics turned into 500s, request timeouts, body limits, metrics and rate limits.
pub fn app(state: AppState) -> Router {
    let config = state.config();
    let (api, buckets) = routes::api_router();
    let api = api.route_layer(middleware::from_fn_with_state(
        (state.clone(), buckets),
        ratelimit::rate_limit,
    ));
    let layers = ServiceBuilder::new()
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
        ]))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUlid))
        .layer(TraceLayer::new_for_http().make_span_with(make_span))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn_with_state(
            config.request_timeout,
            request_timeout,
        ))
        .layer(DefaultBodyLimit::max(config.max_body_bytes));
    Router::new()
        .merge(api)
        .merge(web::router())
        .merge(dashboard::router())
        .route("/api/v1/openapi.json", get(ops::openapi_json))
        .route("/health", get(ops::health))
        .route(chat_stats::PATH, get(metrics::stats))
        .route("/metrics", get(metrics::prometheus))
        .fallback(|| async { AppError::RouteNotFound })
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(layers)
        .with_state(state)
}

/// Serves `app` on `listener` under `limits` (header-read and idle timeouts, a connection cap;
/// `Config::server` holds the configured ones) until `shutdown` resolves, then drains in-flight
/// requests. Handlers get the peer address as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_limits::serve(listener, app, limits, shutdown).await
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Request ids are ULIDs (sortable by time, like every other id here).
#[derive(Clone, Copy, Debug)]
struct MakeRequestUlid;

impl MakeRequestId for MakeRequestUlid {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&ulid::Ulid::new().to_string())
            .ok()
            .map(RequestId::new)
    }
}

/// The request span: method, path (never the query string, which may hold a token) and id.
fn make_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %request_id,
    )
}

fn panic_response(_: Box<dyn Any + Send + 'static>) -> Response {
    AppError::Internal("handler panicked".into()).into_response()
}

async fn request_timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => AppError::Timeout.into_response(),
    }
}
