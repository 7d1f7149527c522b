//! The HTTP side: one handler that routes every request the way Upstash does.
//!
//! Order of checks, each with Upstash's status: method (405), the gateway's own `/__gateway/*`
//! endpoints (their own auth), fault injection (503), token (401), response-format headers (400),
//! body size (400) and body read time (408, then the connection is closed), then the command
//! forms, whose parsers stop at the first command or argument past the request limits (400).
//! Redis errors are 400 `{"error": …}`; the gateway's own trouble reaching Redis is 503
//! (unreachable, connection lost, overloaded), 504 (Redis did not answer in time) or 502 (Redis
//! spoke garbage) — Upstash documents no 5xx for Redis REST, but a 4xx would tell clients the
//! command was wrong when it was the server that failed, and SDKs treat any non-2xx alike.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::Response,
};
use bytes::{Bytes, BytesMut};
use serde_json::Value;
use tokio::sync::{Semaphore, watch};

use crate::{
    admin,
    auth::{Access, Secret, Tokens, bearer_token},
    command::{self, Args, CommandPolicy},
    error::RedisError,
    fault::{FaultHandle, Verdict},
    redis::RedisPool,
    request::{self, BadRequest, RequestLimits},
    resp::Reply,
    response::{self, Encoding},
    sse,
};

/// Everything the handler needs; shared by all requests.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) pool: Arc<RedisPool>,
    pub(crate) tokens: Tokens,
    pub(crate) admin_token: Option<Secret>,
    pub(crate) faults: FaultHandle,
    pub(crate) max_body_bytes: usize,
    pub(crate) body_read_timeout: Duration,
    pub(crate) limits: RequestLimits,
    pub(crate) commands: CommandPolicy,
    pub(crate) request_slots: Semaphore,
    pub(crate) stream_slots: Arc<Semaphore>,
    pub(crate) max_streams: usize,
    pub(crate) streams: sse::StreamSettings,
    pub(crate) sync_token: SyncToken,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// The `upstash-sync-token` value.
///
/// Upstash uses it for read-your-writes across read replicas: a client echoes the last token and a
/// replica waits until it has caught up that far. Behind this gateway there is one Redis server,
/// so every read already sees every acknowledged write and a presented token is trivially
/// satisfied (and ignored). The value still behaves like Upstash's — it changes after each request
/// that may write and never goes backwards — so clients that track it are exercised. It starts at
/// the current time in microseconds so that it also keeps growing across gateway restarts.
#[derive(Debug)]
pub(crate) struct SyncToken(AtomicU64);

impl SyncToken {
    pub(crate) fn new() -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        SyncToken(AtomicU64::new(
            u64::try_from(now.as_micros()).unwrap_or(u64::MAX / 2),
        ))
    }

    pub(crate) fn current(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    /// Records a (possible) write and returns the new value.
    fn advance(&self) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Advances if any of `commands` may write.
    fn after(&self, commands: &[Args]) -> u64 {
        if commands
            .iter()
            .any(|args| !command::is_read_only(&command::name_of(args)))
        {
            self.advance()
        } else {
            self.current()
        }
    }
}

pub(crate) const SYNC_TOKEN_HEADER: &str = "upstash-sync-token";
const UNAUTHORIZED: &str = "WRONGPASS invalid or missing auth token";

/// The single entry point for every request.
pub(crate) async fn handle(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    if path.starts_with("/__gateway/") || path == "/__gateway" {
        return admin::handle(&state, request).await;
    }
    if !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::POST | Method::PUT
    ) {
        let mut response = json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &response::error_body("ERR method not allowed"),
            &state,
        );
        response.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT"),
        );
        return response;
    }
    if let Verdict::Fail(message) = state.faults.apply().await {
        return error_response(StatusCode::SERVICE_UNAVAILABLE, message, &state);
    }
    let query = request.uri().query().map(str::to_owned);
    let Some(access) = authenticate(&state.tokens, request.headers(), query.as_deref()) else {
        return error_response(StatusCode::UNAUTHORIZED, UNAUTHORIZED, &state);
    };
    let format = match ResponseFormat::from_headers(request.headers()) {
        Ok(format) => format,
        Err(BadRequest(message)) => {
            return error_response(StatusCode::BAD_REQUEST, &message, &state);
        }
    };

    let route = Route::of(&path);
    if let Route::Stream(kind) = route {
        // The body of a streaming request (the JS SDK sends `[]`) carries nothing.
        return sse::open(&state, kind, &path, access).await;
    }

    // Bounded concurrency: wait a while for a slot rather than queueing without limit.
    let slot_wait = state.pool.timeouts().pool_wait;
    let Ok(Ok(_slot)) = tokio::time::timeout(slot_wait, state.request_slots.acquire()).await else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "ERR gateway overloaded: too many concurrent requests",
            &state,
        );
    };
    let body = match read_body(&state, request.into_body(), state.max_body_bytes).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            let message = format!(
                "ERR max request size exceeded. Limit: {} bytes",
                state.max_body_bytes
            );
            return error_response(StatusCode::BAD_REQUEST, &message, &state);
        }
        Err(BodyError::TimedOut) => return body_timeout_response(&state),
    };

    let outcome = match route {
        Route::Root => match request::parse_json_command(&body, state.limits) {
            Ok(args) => run_single(&state, access, format, args).await,
            Err(BadRequest(message)) => Err(Failure::bad_request(message)),
        },
        Route::Pipeline => run_pipeline(&state, access, format, &body).await,
        Route::Transaction => run_transaction(&state, access, format, &body).await,
        Route::PathCommand => match request::parse_path_command(&path, query.as_deref(), body) {
            Ok(args) => run_single(&state, access, format, args).await,
            Err(BadRequest(message)) => Err(Failure::bad_request(message)),
        },
        Route::Stream(_) => unreachable!("handled above"),
    };
    match outcome {
        Ok(response) => response,
        Err(failure) => error_response(failure.status, &failure.message, &state),
    }
}

/// Why a request body could not be read.
pub(crate) enum BodyError {
    /// Over the size limit — or a read error, almost always the same thing (a client that hangs
    /// up mid-body never sees the answer anyway), so it gets Upstash's size-limit text.
    TooLarge,
    /// Not all there within the body read timeout.
    TimedOut,
}

/// Reads the whole body, at most `limit` bytes and within the body read timeout: a client that
/// sends its headers and then trickles (or stalls) the body would otherwise hold a request slot,
/// and its connection, for as long as it likes.
pub(crate) async fn read_body(
    state: &AppState,
    body: Body,
    limit: usize,
) -> Result<Bytes, BodyError> {
    match tokio::time::timeout(state.body_read_timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(_)) => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::TimedOut),
    }
}

/// 408 with `Connection: close`: the rest of the body may still be on its way, so the connection
/// cannot carry another request and is closed once this answer is sent.
pub(crate) fn body_timeout_response(state: &AppState) -> Response {
    let message = format!(
        "ERR request body not received within {} ms",
        state.body_read_timeout.as_millis()
    );
    let mut response = error_response(StatusCode::REQUEST_TIMEOUT, &message, state);
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The token from `Authorization: Bearer …`, or else from `?_token=`.
fn authenticate(tokens: &Tokens, headers: &HeaderMap, query: Option<&str>) -> Option<Access> {
    let presented = match headers.get(header::AUTHORIZATION) {
        Some(value) => Bytes::copy_from_slice(bearer_token(value.as_bytes())?),
        None => request::query_token(query)?,
    };
    tokens.check(&presented)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Root,
    Pipeline,
    Transaction,
    Stream(sse::StreamKind),
    PathCommand,
}

impl Route {
    fn of(path: &str) -> Route {
        let trimmed = path.trim_end_matches('/');
        let first = trimmed
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or("");
        match trimmed {
            "" => return Route::Root,
            "/pipeline" => return Route::Pipeline,
            "/multi-exec" => return Route::Transaction,
            _ => {}
        }
        if first.eq_ignore_ascii_case("subscribe") {
            Route::Stream(sse::StreamKind::Subscribe)
        } else if first.eq_ignore_ascii_case("psubscribe") {
            Route::Stream(sse::StreamKind::PSubscribe)
        } else if first.eq_ignore_ascii_case("monitor") {
            Route::Stream(sse::StreamKind::Monitor)
        } else {
            Route::PathCommand
        }
    }
}

/// JSON (optionally base64 strings) or raw RESP2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ResponseFormat {
    Json(Encoding),
    Resp2,
}

impl ResponseFormat {
    fn from_headers(headers: &HeaderMap) -> Result<Self, BadRequest> {
        let base64 = headers
            .get("upstash-encoding")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"base64"));
        let format = headers
            .get("upstash-response-format")
            .map(|v| v.as_bytes().to_ascii_lowercase());
        match format.as_deref() {
            None | Some(b"json") => Ok(ResponseFormat::Json(if base64 { Encoding::Base64 } else { Encoding::Utf8Lossy })),
            Some(b"resp2") if base64 => Err(BadRequest(
                "ERR Upstash-Response-Format: resp2 cannot be combined with Upstash-Encoding: base64".into(),
            )),
            Some(b"resp2") => Ok(ResponseFormat::Resp2),
            Some(_) => Err(BadRequest("ERR invalid Upstash-Response-Format: expected json or resp2".into())),
        }
    }
}

/// A request that ends in an error status.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    message: String,
}

impl Failure {
    fn bad_request(message: impl Into<String>) -> Self {
        Failure {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl From<RedisError> for Failure {
    fn from(err: RedisError) -> Self {
        let status = match &err {
            RedisError::RedisTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            RedisError::RedisHandshake(_) | RedisError::Protocol(_) => StatusCode::BAD_GATEWAY,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        // The client is told what failed, never where Redis is: the address goes to the log only.
        let what = match &err {
            RedisError::RedisUnavailable { .. } => "redis is unavailable".to_owned(),
            other => other.to_string(),
        };
        let mut message = format!("ERR gateway: {what}");
        if let Some(source) = std::error::Error::source(&err) {
            message.push_str(&format!(": {source}"));
        }
        if matches!(
            err,
            RedisError::RedisConnectionLost(_) | RedisError::RedisTimeout(_)
        ) {
            message.push_str(" (the command may or may not have run)");
        }
        tracing::warn!(error = %err, detail = %message, "request failed reaching redis");
        Failure { status, message }
    }
}

/// Why the gateway will not run `args` for this token, if it will not.
fn refuse(args: &[Bytes], access: Access, policy: CommandPolicy) -> Option<String> {
    command::refusal(args, policy).or_else(|| match access {
        Access::Full => None,
        Access::ReadOnly => command::read_only_refusal(args),
    })
}

async fn run_single(
    state: &AppState,
    access: Access,
    format: ResponseFormat,
    args: Args,
) -> Result<Response, Failure> {
    if let Some(message) = refuse(&args, access, state.commands) {
        return Err(Failure::bad_request(message));
    }
    let mut conn = state.pool.get().await?;
    let commands = [args];
    let reply = conn
        .exchange(&commands)
        .await?
        .pop()
        .expect("one reply per command");
    drop(conn);
    let sync = state.sync_token.after(&commands);
    let status = if reply.as_error().is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok(match format {
        ResponseFormat::Json(encoding) => {
            json_response_with_sync(status, &response::envelope(&reply, encoding), sync)
        }
        ResponseFormat::Resp2 => {
            let mut body = BytesMut::new();
            reply.write_resp(&mut body);
            let mut response = Response::new(Body::from(body.freeze()));
            *response.status_mut() = status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            with_sync_header(response, sync)
        }
    })
}

fn json_only(format: ResponseFormat, endpoint: &str) -> Result<Encoding, Failure> {
    match format {
        ResponseFormat::Json(encoding) => Ok(encoding),
        ResponseFormat::Resp2 => Err(Failure::bad_request(format!(
            "ERR Upstash-Response-Format: resp2 is not supported for {endpoint}"
        ))),
    }
}

/// `/pipeline`: every command runs, in order, on one connection; refused commands get their error
/// in place without being sent. Not atomic (Upstash's pipelines are not either).
///
/// The request side is bounded (body size, command and argument counts); the answer is not: it
/// holds every reply at once, so a pipeline of `GET`s of big values makes a big response.
async fn run_pipeline(
    state: &AppState,
    access: Access,
    format: ResponseFormat,
    body: &Bytes,
) -> Result<Response, Failure> {
    let encoding = json_only(format, "/pipeline")?;
    let commands = request::parse_json_commands(body, state.limits)
        .map_err(|BadRequest(m)| Failure::bad_request(m))?;
    let mut refusals: Vec<Option<String>> = Vec::with_capacity(commands.len());
    let mut allowed: Vec<Args> = Vec::with_capacity(commands.len());
    for args in commands {
        let refusal = refuse(&args, access, state.commands);
        if refusal.is_none() {
            allowed.push(args);
        }
        refusals.push(refusal);
    }
    let mut replies = if allowed.is_empty() {
        Vec::new()
    } else {
        let mut conn = state.pool.get().await?;
        conn.exchange(&allowed).await?
    }
    .into_iter();
    let sync = state.sync_token.after(&allowed);
    let results: Vec<Value> = refusals
        .into_iter()
        .map(|refusal| match refusal {
            Some(message) => response::error_body(&message),
            None => response::envelope(
                &replies.next().expect("one reply per sent command"),
                encoding,
            ),
        })
        .collect();
    Ok(json_response_with_sync(
        StatusCode::OK,
        &Value::Array(results),
        sync,
    ))
}

/// `/multi-exec`: `MULTI`, the commands, `EXEC` on one exclusively borrowed connection, so no other
/// request's command can run in between. Runtime errors of single commands come back in place
/// (Redis semantics); a command Redis refuses to queue, or the gateway refuses to send, discards
/// the whole transaction with one `{"error": …}` (400).
async fn run_transaction(
    state: &AppState,
    access: Access,
    format: ResponseFormat,
    body: &Bytes,
) -> Result<Response, Failure> {
    let encoding = json_only(format, "/multi-exec")?;
    let commands = request::parse_json_commands(body, state.limits)
        .map_err(|BadRequest(m)| Failure::bad_request(m))?;
    for (index, args) in commands.iter().enumerate() {
        if let Some(message) = refuse(args, access, state.commands) {
            return Err(Failure::bad_request(format!(
                "{message} (command {index}); transaction discarded"
            )));
        }
    }
    let mut wrapped = Vec::with_capacity(commands.len() + 2);
    wrapped.push(vec![Bytes::from_static(b"MULTI")]);
    wrapped.extend(commands.iter().cloned());
    wrapped.push(vec![Bytes::from_static(b"EXEC")]);

    let mut conn = state.pool.get().await?;
    let replies = conn.exchange(&wrapped).await?;
    drop(conn);
    let sync = state.sync_token.after(&commands);

    if let Some(message) = replies[0].as_error() {
        return Err(Failure::bad_request(
            String::from_utf8_lossy(message).into_owned(),
        ));
    }
    let first_queue_error = replies[1..replies.len() - 1]
        .iter()
        .find_map(Reply::as_error);
    let exec = replies.last().expect("EXEC's reply");
    match exec {
        Reply::Array(results) => {
            let results: Vec<Value> = results
                .iter()
                .map(|reply| response::envelope(reply, encoding))
                .collect();
            Ok(json_response_with_sync(
                StatusCode::OK,
                &Value::Array(results),
                sync,
            ))
        }
        Reply::Error(message) => {
            let mut message = String::from_utf8_lossy(message).into_owned();
            if let Some(cause) = first_queue_error {
                message.push_str(&format!(": {}", String::from_utf8_lossy(cause)));
            }
            Err(Failure::bad_request(message))
        }
        other => Err(Failure::bad_request(format!(
            "ERR transaction aborted (EXEC replied {other:?})"
        ))),
    }
}

pub(crate) fn error_response(status: StatusCode, message: &str, state: &AppState) -> Response {
    json_response(status, &response::error_body(message), state)
}

pub(crate) fn json_response(status: StatusCode, body: &Value, state: &AppState) -> Response {
    json_response_with_sync(status, body, state.sync_token.current())
}

fn json_response_with_sync(status: StatusCode, body: &Value, sync: u64) -> Response {
    let bytes = serde_json::to_vec(body).expect("a serde_json::Value always serializes");
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    with_sync_header(response, sync)
}

pub(crate) fn with_sync_header(mut response: Response, sync: u64) -> Response {
    response
        .headers_mut()
        .insert(SYNC_TOKEN_HEADER, HeaderValue::from(sync));
    response
}

/// Used by the health endpoint: one PING through the pool. The reason for a failure is logged
/// (warn), not returned: the endpoint needs no token, so what it says must not describe the
/// network behind the gateway (Redis's address, its error texts).
pub(crate) async fn ping(state: &AppState) -> bool {
    let attempt = async {
        let mut conn = state.pool.get().await?;
        conn.exchange(&[vec![Bytes::from_static(b"PING")]]).await
    };
    let why = match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(replies)) if replies.first() == Some(&Reply::Status(Bytes::from_static(b"PONG"))) => {
            return true;
        }
        Ok(Ok(replies)) => format!("unexpected reply to PING: {replies:?}"),
        Ok(Err(err)) => {
            let mut why = err.to_string();
            if let Some(source) = std::error::Error::source(&err) {
                why.push_str(&format!(": {source}"));
            }
            why
        }
        Err(_) => "PING timed out".into(),
    };
    tracing::warn!(error = %why, "health check: redis unavailable");
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(Route::of("/"), Route::Root);
        assert_eq!(Route::of(""), Route::Root);
        assert_eq!(Route::of("/pipeline"), Route::Pipeline);
        assert_eq!(Route::of("/pipeline/"), Route::Pipeline);
        assert_eq!(Route::of("/multi-exec"), Route::Transaction);
        assert_eq!(
            Route::of("/subscribe/chat"),
            Route::Stream(sse::StreamKind::Subscribe)
        );
        assert_eq!(
            Route::of("/PSUBSCRIBE/c*"),
            Route::Stream(sse::StreamKind::PSubscribe)
        );
        assert_eq!(
            Route::of("/monitor"),
            Route::Stream(sse::StreamKind::Monitor)
        );
        assert_eq!(Route::of("/get/pipeline"), Route::PathCommand);
    }

    #[test]
    fn response_format_headers() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            ResponseFormat::from_headers(&headers).unwrap(),
            ResponseFormat::Json(Encoding::Utf8Lossy)
        );
        headers.insert("upstash-encoding", HeaderValue::from_static("BASE64"));
        assert_eq!(
            ResponseFormat::from_headers(&headers).unwrap(),
            ResponseFormat::Json(Encoding::Base64)
        );
        headers.insert("upstash-response-format", HeaderValue::from_static("resp2"));
        assert!(ResponseFormat::from_headers(&headers).is_err());
        headers.remove("upstash-encoding");
        assert_eq!(
            ResponseFormat::from_headers(&headers).unwrap(),
            ResponseFormat::Resp2
        );
        headers.insert("upstash-response-format", HeaderValue::from_static("xml"));
        assert!(ResponseFormat::from_headers(&headers).is_err());
    }

    #[test]
    fn sync_token_advances_only_for_writes() {
        let token = SyncToken::new();
        let start = token.current();
        let read: Args = vec!["GET".into(), "k".into()];
        let write: Args = vec!["SET".into(), "k".into(), "v".into()];
        assert_eq!(token.after(std::slice::from_ref(&read)), start);
        assert_eq!(token.after(&[read, write]), start + 1);
    }
}
