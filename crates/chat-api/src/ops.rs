//! Operations endpoints outside `/api/v1`: `/health` (database, cache backend, breaker,
//! backplane) and the OpenAPI document at `/api/v1/openapi.json`. `/stats` and `/metrics` are in
//! `metrics`.

use std::time::Duration;

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use cache_core::BackplaneState;
use serde_json::json;

use crate::{error::AppError, openapi, state::AppState};

/// How long a health probe waits for the database or the cache.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /health`: 200 when the database answers (the cache may be degraded: requests still
/// succeed without it), 503 with the error shape and the checks when it does not.
///
/// A backplane that is not connected makes the status `degraded`, still with 200: the instance
/// serves correct data (L1 falls back to its short cap, WebSocket sessions were told to resync),
/// only with more Upstash traffic and without other instances' realtime events. The bus is
/// shared, so when it is down it is down for every instance: a load balancer that drained
/// instances on it would turn a degraded cluster into an outage.
pub(crate) async fn health(State(state): State<AppState>) -> Response {
    let store = state.store();
    let db_ok = matches!(
        tokio::time::timeout(PROBE_TIMEOUT, store.ping()).await,
        Ok(Ok(()))
    );
    let cache = state.cache().cache();
    let cache_ok = matches!(
        tokio::time::timeout(PROBE_TIMEOUT, cache.backend().ping()).await,
        Ok(Ok(_))
    );
    let stats = cache.stats();
    let backplane = state.backplane().map(|b| (b.state(), b.stats()));
    let bus_ok = backplane
        .as_ref()
        .is_none_or(|(state, _)| *state == BackplaneState::Connected);
    let checks = json!({
        "database": {"kind": store.kind(), "status": if db_ok { "ok" } else { "unavailable" }},
        "cache": {
            "backend": cache.backend().name(),
            "status": if cache_ok { "ok" } else { "degraded" },
            "breaker": stats.breaker.map(|b| b.state),
            "pending_invalidations": stats.pending_invalidations,
        },
        "backplane": backplane.map(|(state, stats)| json!({
            "state": state,
            "transport": stats.transport,
            "lag_ms": stats.last_lag_micros.map(|micros| micros as f64 / 1000.0),
            "interruptions": stats.interruptions,
            "gaps": stats.gaps,
            "queued": stats.queued,
        })),
        "ws_sessions": state.hub().sessions(),
    });
    if db_ok {
        let status = if cache_ok && bus_ok { "ok" } else { "degraded" };
        let mut body = json!({"status": status});
        if let (Some(body), Some(checks)) = (body.as_object_mut(), checks.as_object()) {
            body.extend(checks.clone());
        }
        (StatusCode::OK, axum::Json(body)).into_response()
    } else {
        let err = AppError::Unavailable("database".into());
        let mut body = serde_json::to_value(err.body()).unwrap_or_default();
        body["checks"] = checks;
        body["status"] = json!("unavailable");
        (err.status(), axum::Json(body)).into_response()
    }
}

/// `GET /api/v1/openapi.json`.
pub(crate) async fn openapi_json() -> Response {
    axum::Json(openapi::document()).into_response()
}
