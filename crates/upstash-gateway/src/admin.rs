//! The gateway's own endpoints under `/__gateway/` (not part of Upstash's protocol).
//!
//! - `GET /__gateway/health` — no auth; `200 {"status":"ok","redis":"ok"}` when a PING through the
//!   pool succeeds, else `503 {"status":"degraded","redis":"unavailable"}`. For scripts waiting on
//!   start. Anyone who can reach the port may ask, so the answer never says why (Redis's address
//!   and errors are logged at warn instead).
//! - `GET|POST|DELETE /__gateway/fault` — fault injection at run time. Exists only when the gateway
//!   was given an admin token (a token distinct from the REST tokens, so a client holding the
//!   REST token cannot switch failures on); `Authorization: Bearer <admin token>`.
//!   `POST` takes `{"latency_ms"?, "jitter_ms"?, "failure_rate"?, "outage_ms"?}` (fields left out
//!   stay as they are; `outage_ms: 0` ends an outage); `DELETE` clears everything. Each answers
//!   with the resulting settings.
//!
//! Fault injection never applies to these endpoints.

use std::time::Duration;

use axum::{
    extract::Request,
    http::{Method, StatusCode, header},
};
use serde::Deserialize;
use serde_json::json;

use crate::{
    auth::bearer_token,
    http::{
        AppState, BodyError, body_timeout_response, error_response, json_response, ping, read_body,
    },
};

pub(crate) async fn handle(state: &AppState, request: Request) -> axum::response::Response {
    match request.uri().path().trim_end_matches('/') {
        "/__gateway/health" => health(state).await,
        "/__gateway/fault" => fault(state, request).await,
        _ => error_response(StatusCode::NOT_FOUND, "ERR unknown gateway endpoint", state),
    }
}

async fn health(state: &AppState) -> axum::response::Response {
    if ping(state).await {
        json_response(
            StatusCode::OK,
            &json!({"status": "ok", "redis": "ok"}),
            state,
        )
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "degraded", "redis": "unavailable"}),
            state,
        )
    }
}

/// Fields of a `POST /__gateway/fault` body; absent ones are left unchanged.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultUpdate {
    latency_ms: Option<u64>,
    jitter_ms: Option<u64>,
    failure_rate: Option<f64>,
    outage_ms: Option<u64>,
}

async fn fault(state: &AppState, request: Request) -> axum::response::Response {
    let Some(admin_token) = &state.admin_token else {
        return error_response(
            StatusCode::NOT_FOUND,
            "ERR the fault admin endpoint is disabled: start the gateway with an admin token (--admin-token)",
            state,
        );
    };
    let authorized = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| bearer_token(value.as_bytes()))
        .is_some_and(|presented| admin_token.matches(presented));
    if !authorized {
        return error_response(
            StatusCode::UNAUTHORIZED,
            "WRONGPASS invalid or missing admin token",
            state,
        );
    }
    let faults = &state.faults;
    match *request.method() {
        Method::GET => {}
        Method::DELETE => faults.clear(),
        Method::POST | Method::PUT => {
            let body = match read_body(state, request.into_body(), 64 * 1024).await {
                Ok(body) => body,
                Err(BodyError::TooLarge) => {
                    return error_response(StatusCode::BAD_REQUEST, "ERR body too large", state);
                }
                Err(BodyError::TimedOut) => return body_timeout_response(state),
            };
            let update: FaultUpdate = match serde_json::from_slice(&body) {
                Ok(update) => update,
                Err(err) => {
                    return error_response(
                        StatusCode::BAD_REQUEST,
                        &format!("ERR invalid fault settings: {err}"),
                        state,
                    );
                }
            };
            let mut config = faults.config();
            config.latency_ms = update.latency_ms.unwrap_or(config.latency_ms);
            config.jitter_ms = update.jitter_ms.unwrap_or(config.jitter_ms);
            config.failure_rate = update.failure_rate.unwrap_or(config.failure_rate);
            faults.set(config);
            match update.outage_ms {
                Some(0) => faults.end_outage(),
                Some(ms) => faults.start_outage(Duration::from_millis(ms)),
                None => {}
            }
        }
        _ => {
            return error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "ERR method not allowed",
                state,
            );
        }
    }
    let config = faults.config();
    let outage_ms = faults.outage_remaining().map_or(0, |left| {
        u64::try_from(left.as_millis()).unwrap_or(u64::MAX)
    });
    json_response(
        StatusCode::OK,
        &json!({
            "latency_ms": config.latency_ms,
            "jitter_ms": config.jitter_ms,
            "failure_rate": config.failure_rate,
            "outage_remaining_ms": outage_ms,
        }),
        state,
    )
}
