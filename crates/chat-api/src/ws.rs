//! `GET /api/v1/ws`: the realtime session.
//!
//! # Protocol (JSON text frames)
//!
//! 1. Authenticate with `Authorization: Bearer <token>` on the upgrade request, or `?token=<token>`
//!    (browsers cannot set headers), or, with neither, by sending
//!    `{"op":"identify","token":"<token>"}` as the first frame within one heartbeat interval.
//!    A bad token on the upgrade request is a 401 before the upgrade; a bad `identify` closes the
//!    socket with code 4001.
//! 2. Server: `{"op":"hello","data":{"heartbeat_interval_ms":30000,"session_id":"…"}}` at once.
//! 3. Server, once authenticated: `{"op":"ready","data":{"user":{…},"channels":[…]}}` (the channel
//!    list of `GET /users/me/channels`, from the cache).
//! 4. Server: `{"op":"event","seq":1,"type":"message_create","data":{…}}` for every event of the
//!    user's channels (`message_create/update/delete`, `reaction_add/remove`, `channel_create`,
//!    `member_join/leave`, `channel_ack`); `seq` counts from 1 per session.
//! 5. Client: `{"op":"ping","nonce":…}` → server `{"op":"pong","data":{"nonce":…}}`.
//!
//! Heartbeat: the server sends a WebSocket ping every interval; a client that sends nothing (no
//! frame, no pong) for two intervals is closed with 4009. On shutdown sessions get 1001.
//!
//! Resync: close code 4008 means "events may have been lost: reconnect and refetch" (the latest
//! page of open channels, the channel list). The server sends it when the session fell too far
//! behind the event stream, and, when several instances share a backplane, when this instance's
//! bus was interrupted or lost a message (every session of the instance gets it at once, since
//! none can know which events it missed). Events of every instance reach every session exactly
//! once and in order per channel while the bus holds; 4008 is how a session learns it did not.
//!
//! # Limits
//!
//! What a client can make the server hold is bounded, before and after it authenticates:
//! - Frame and message size: a session whose upgrade request carries a token may send frames of
//!   up to 16 KiB (the largest legitimate one is a ping with its nonce); a session that must
//!   `identify` gets 4 KiB for its whole life (an `identify` is under 200 bytes, and the limit
//!   is fixed at the upgrade: pings after it must fit too). A frame over the limit is refused
//!   from its header, before its payload is read, and the socket is closed with 1009.
//! - Sessions per user: `WS_MAX_SESSIONS_PER_USER` (16) on each instance. One more is a 429
//!   `too_many_sessions` before the upgrade when the token comes with it, close code 4030 after
//!   an `identify`.
//! - Frame rate: `WS_MAX_FRAMES_PER_SEC` (20) per session, in bursts of as many, counting every
//!   frame (pings, pongs, binary). A frame over the rate is not answered; a client whose excess
//!   reaches another second's worth is closed with 4029.
//! - Failed authentications: an `identify` token is charged to the client's address like a token
//!   in a header (the `auth_failures` bucket, see `ratelimit`): once the address has failed too
//!   often in a window, further `identify` frames are closed with 4029 without a lookup.
//! - Slow readers: every frame the server sends must be taken by the client within
//!   `WS_SEND_TIMEOUT_MS` (10 s); a client that stops reading is dropped then (with no close
//!   frame, there being no room for one), so it holds at most its socket buffers and one frame,
//!   and its session ends instead of waiting forever on a write.
//!
//! After sending a close frame the server waits up to 1 s for the client's, discarding what the
//! client still sends, so that a client still writing (a flood, an oversized frame) receives the
//! close code instead of a connection reset. A fragmented message counts against the size limit
//! as a whole; a malformed frame closes the socket with 1002.

use std::{collections::HashSet, net::SocketAddr, time::Duration};

use axum::{
    extract::{
        ConnectInfo, State,
        ws::{
            CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket, WebSocketUpgrade,
            rejection::WebSocketUpgradeRejection,
        },
    },
    http::HeaderMap,
    response::Response,
};
use futures_util::{
    SinkExt, StreamExt,
    stream::{SplitSink, SplitStream},
};
use serde::Deserialize;
use serde_json::json;
use tokio::{sync::broadcast::error::RecvError, time::Instant};
use ulid::Ulid;

use crate::{
    auth::{CurrentUser, authenticate, bearer_token},
    error::{AppError, ErrorBody, Query},
    events::{EventKind, UserSessionGuard},
    model::UserRef,
    ratelimit::authenticate_charged,
    state::AppState,
};

/// Close code: authentication failed.
pub const CLOSE_UNAUTHORIZED: u16 = 4001;
/// Close code: events may have been lost (the session fell behind the event stream, or the
/// backplane was interrupted): reconnect and refetch.
pub const CLOSE_LAGGED: u16 = 4008;
/// Close code: no heartbeat.
pub const CLOSE_HEARTBEAT: u16 = 4009;
/// Close code: the client sent frames faster than the session's rate limit for too long.
pub const CLOSE_RATE_LIMITED: u16 = 4029;
/// Close code: the user identified on a session over the per-user session cap.
pub const CLOSE_TOO_MANY_SESSIONS: u16 = 4030;
/// Close code: a frame or message over the size limit.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code: server shutting down.
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// Read buffer of a session's socket (see `upgrade`).
const SESSION_READ_BUFFER: usize = 4 * 1024;
/// Largest frame and message of a session whose upgrade request carried a token.
const MAX_CLIENT_FRAME: usize = 16 * 1024;
/// Largest frame and message of a session that must `identify` (see the module docs).
const MAX_CLIENT_FRAME_UNAUTHENTICATED: usize = 4 * 1024;

/// Query of the upgrade request.
#[derive(Debug, Deserialize)]
pub(crate) struct WsQuery {
    /// A bearer token, for clients that cannot set headers.
    token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum ClientFrame {
    Identify { token: String },
    Ping { nonce: Option<serde_json::Value> },
}

/// Upgrades to a realtime session. See the module docs for the protocol.
#[utoipa::path(
    get, path = "/api/v1/ws", tag = "realtime",
    params(("token" = Option<String>, Query, description = "Bearer token, if not in a header")),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 401, description = "Bad token", body = ErrorBody),
        (status = 426, description = "Not a WebSocket upgrade", body = ErrorBody),
        (status = 429, description = "The user holds the most sessions allowed", body = ErrorBody),
    )
)]
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    Query(query): Query<WsQuery>,
    headers: HeaderMap,
    known: Option<axum::Extension<CurrentUser>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    let address = crate::ratelimit::address_subject(&state, peer.as_ref().map(|p| &p.0), &headers);
    // A bad token is a 401 whether or not the request is a proper upgrade.
    let user = match (known, bearer_token(&headers).or(query.token.as_deref())) {
        (Some(axum::Extension(user)), _) => Some(user.user().clone()),
        (None, Some(token)) => Some(authenticate(&state, token).await?.user().clone()),
        (None, None) => None,
    };
    let ws = ws.map_err(|_| AppError::UpgradeRequired)?;
    // Taken before the upgrade, so a user at the cap gets a typed 429 instead of a socket.
    let user = match user {
        Some(user) => {
            let limit = state.config().ws_max_sessions_per_user;
            let slot = state
                .hub()
                .user_session(user.id, limit)
                .ok_or(AppError::TooManySessions { limit })?;
            Some((user, slot))
        }
        None => None,
    };
    // The limits are fixed here for the socket's life: a session that must identify keeps the
    // small one (see the module docs).
    let max_frame = if user.is_some() {
        MAX_CLIENT_FRAME
    } else {
        MAX_CLIENT_FRAME_UNAUTHENTICATED
    };
    let ws = ws
        // tungstenite allocates its whole read buffer per connection up front (128 KiB by
        // default), which made that buffer most of a session's memory; client frames are small
        // (identify, ping), and a larger one still grows the buffer up to the frame limit.
        .read_buffer_size(SESSION_READ_BUFFER)
        .max_frame_size(max_frame)
        .max_message_size(max_frame);
    Ok(ws.on_upgrade(move |socket| async move {
        let _guard = state.hub().session_guard();
        run(socket, state, user, address).await;
    }))
}

type Sink = SplitSink<WebSocket, WsMessage>;
type Stream = SplitStream<WebSocket>;

/// The sending half of a session: every frame must be taken by the client within the send
/// timeout, so a client that stops reading cannot hold the session (see the module docs).
struct Outbox {
    sink: Sink,
    timeout: Duration,
}

impl Outbox {
    /// Sends one frame; false when the client is gone or did not take it in time.
    async fn send(&mut self, message: WsMessage) -> bool {
        matches!(
            tokio::time::timeout(self.timeout, self.sink.send(message)).await,
            Ok(Ok(()))
        )
    }

    async fn send_json(&mut self, value: serde_json::Value) -> bool {
        self.send(WsMessage::Text(Utf8Bytes::from(value.to_string())))
            .await
    }

    async fn close(&mut self, code: u16, reason: &'static str) -> bool {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        self.send(WsMessage::Close(Some(frame))).await
    }
}

/// What to do with a frame the client sent, by the session's frame budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Within the rate: handle it.
    Handle,
    /// Over the rate: ignore it.
    Ignore,
    /// Over the rate for another second's worth of frames: close the session.
    Close,
}

/// A token bucket over the frames a client sends: `rate` tokens a second, at most `rate` saved
/// up (the burst). A frame takes a token; without one it is ignored and the bucket goes into
/// debt, and a debt of `rate` frames (a second of excess, net of what refilled meanwhile) closes
/// the session. A client that exceeds the rate briefly recovers; one that keeps on does not.
#[derive(Debug)]
struct FrameBudget {
    rate: f64,
    tokens: f64,
    refilled: Instant,
}

impl FrameBudget {
    fn new(rate: u32) -> Self {
        let rate = f64::from(rate);
        FrameBudget {
            rate,
            tokens: rate,
            refilled: Instant::now(),
        }
    }

    fn take(&mut self) -> Verdict {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.refilled = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Verdict::Handle
        } else if self.tokens > -self.rate {
            Verdict::Ignore
        } else {
            Verdict::Close
        }
    }
}

/// The close for a frame the socket refused to read. tungstenite refuses a frame over the size
/// limit from its header, before reading its payload, with a capacity error; axum hides the
/// error type, so it is recognized by its text (a test pins the 1009).
fn read_error_close(err: &axum::Error) -> Close {
    let (code, reason) = if err.to_string().contains("Space limit exceeded") {
        (CLOSE_TOO_BIG, "frame too big")
    } else {
        (1002, "protocol error")
    };
    // Never read again after an error: the refused frame's payload would be.
    Close {
        code,
        reason,
        readable: false,
    }
}

/// A close frame to send when a session ends.
#[derive(Debug, Clone, Copy)]
struct Close {
    code: u16,
    reason: &'static str,
    // False after a read error: the stream must not be read again (see `linger`).
    readable: bool,
}

impl Close {
    fn new(code: u16, reason: &'static str) -> Self {
        Close {
            code,
            reason,
            readable: true,
        }
    }
}

/// How long a session that sent its close frame waits for the client's (see `linger`).
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Waits, at most [`CLOSE_LINGER`], for the client to answer the close frame, discarding what
/// it still sends. Dropping a socket with unread input resets the connection, and a client that
/// was still writing (a flood, an oversized frame) would lose the close frame to the reset and
/// never learn why it was closed. After a read error the stream is not read (that would read the
/// refused payload): the session just waits.
async fn linger(stream: &mut Stream, readable: bool) {
    let drain = async {
        if readable {
            while let Some(Ok(_)) = stream.next().await {}
        } else {
            std::future::pending::<()>().await;
        }
    };
    let _ = tokio::time::timeout(CLOSE_LINGER, drain).await;
}

async fn run(
    socket: WebSocket,
    state: AppState,
    user: Option<(UserRef, UserSessionGuard)>,
    address: String,
) {
    let (sink, mut stream) = socket.split();
    let mut out = Outbox {
        sink,
        timeout: state.config().ws_send_timeout,
    };
    if let Some(close) = session(&state, &address, &mut out, &mut stream, user).await {
        if out.close(close.code, close.reason).await {
            linger(&mut stream, close.readable).await;
        }
    }
}

/// The session until it ends: the close frame to send, or `None` when the client is gone or
/// stopped reading.
async fn session(
    state: &AppState,
    address: &str,
    out: &mut Outbox,
    stream: &mut Stream,
    user: Option<(UserRef, UserSessionGuard)>,
) -> Option<Close> {
    let config = state.config();
    let heartbeat = config.ws_heartbeat;
    let mut budget = FrameBudget::new(config.ws_max_frames_per_sec);
    let session_id = Ulid::new();
    let hello = json!({"op": "hello", "data": {
        "heartbeat_interval_ms": u64::try_from(heartbeat.as_millis()).unwrap_or(u64::MAX),
        "session_id": session_id,
    }});
    if !out.send_json(hello).await {
        return None;
    }
    // The slot lives as long as this function: the user's session count drops when it ends.
    let (user, _slot) = match user {
        Some(user) => user,
        None => match identify(state, address, stream, &mut budget, heartbeat).await {
            Identified::User(user) => {
                let limit = config.ws_max_sessions_per_user;
                match state.hub().user_session(user.id, limit) {
                    Some(slot) => (user, slot),
                    None => return Some(Close::new(CLOSE_TOO_MANY_SESSIONS, "too many sessions")),
                }
            }
            Identified::Refused(close) => return Some(close),
            Identified::Gone => return None,
        },
    };
    // Subscribe before reading the channel list, so no event between the two is lost.
    let mut events = state.hub().subscribe();
    let mut shutdown = state.hub().shutdown_signal();
    let mut resync = state.hub().resync_signal();
    let channels = match state.cache().user_channels(user.id).await {
        Ok(channels) => channels,
        Err(err) => {
            tracing::warn!(error = %err, "ready: channel list unavailable");
            return Some(Close::new(1011, "internal error"));
        }
    };
    let mut member_of: HashSet<Ulid> = channels.iter().map(|c| c.id).collect();
    let ready = json!({"op": "ready", "data": {"user": &user, "channels": &*channels}});
    if !out.send_json(ready).await {
        return None;
    }
    tracing::debug!(user_id = %user.id, %session_id, "websocket session ready");

    let mut seq: u64 = 0;
    let mut last_seen = Instant::now();
    let mut ticker = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    loop {
        tokio::select! {
            frame = stream.next() => {
                let frame = match frame {
                    Some(Ok(frame)) => frame,
                    Some(Err(err)) => return Some(read_error_close(&err)),
                    None => return None,
                };
                last_seen = Instant::now();
                if let WsMessage::Close(_) = frame {
                    return None;
                }
                match budget.take() {
                    Verdict::Handle => {}
                    Verdict::Ignore => continue,
                    Verdict::Close => return Some(Close::new(CLOSE_RATE_LIMITED, "too many frames")),
                }
                if let WsMessage::Text(text) = frame {
                    if let Ok(ClientFrame::Ping { nonce }) = serde_json::from_str(text.as_str()) {
                        if !out.send_json(json!({"op": "pong", "data": {"nonce": nonce}})).await {
                            return None;
                        }
                    }
                }
            }
            event = events.recv() => {
                let event = match event {
                    Ok(event) => event,
                    Err(RecvError::Lagged(_)) => {
                        return Some(Close::new(CLOSE_LAGGED, "too far behind; reconnect"));
                    }
                    Err(RecvError::Closed) => return None,
                };
                if !event.is_for(user.id, |c| member_of.contains(&c)) {
                    continue;
                }
                if event.user == Some(user.id) {
                    if let Some(channel) = event_channel(&event) {
                        match event.kind {
                            EventKind::MemberJoin | EventKind::ChannelCreate => { member_of.insert(channel); }
                            EventKind::MemberLeave => { member_of.remove(&channel); }
                            _ => {}
                        }
                    }
                }
                seq += 1;
                let frame = format!(
                    r#"{{"op":"event","seq":{seq},"type":"{}","data":{}}}"#,
                    event.kind.as_str(),
                    event.data
                );
                if !out.send(WsMessage::Text(Utf8Bytes::from(frame))).await {
                    return None;
                }
            }
            _ = ticker.tick() => {
                if last_seen.elapsed() > heartbeat * 2 {
                    return Some(Close::new(CLOSE_HEARTBEAT, "heartbeat timeout"));
                }
                if !out.send(WsMessage::Ping(bytes::Bytes::new())).await {
                    return None;
                }
            }
            _ = resync.changed() => {
                return Some(Close::new(CLOSE_LAGGED, "events may have been lost; reconnect"));
            }
            _ = shutdown.changed() => {
                return Some(Close::new(CLOSE_GOING_AWAY, "server shutting down"));
            }
        }
    }
}

/// The channel an event is about: its audience channel, or the id in a `channel_create`.
fn event_channel(event: &crate::events::Event) -> Option<Ulid> {
    event.channel.or_else(|| {
        #[derive(Deserialize)]
        struct WithId {
            id: Ulid,
        }
        (event.kind == EventKind::ChannelCreate)
            .then(|| {
                serde_json::from_str::<WithId>(&event.data)
                    .ok()
                    .map(|c| c.id)
            })
            .flatten()
    })
}

/// How an `identify` wait ended.
enum Identified {
    /// A good token.
    User(UserRef),
    /// Close the session so.
    Refused(Close),
    /// The client left (or the socket failed with nothing to say).
    Gone,
}

/// Waits for an `identify` frame and checks its token. Frames before it count against the
/// session's frame budget like any other.
async fn identify(
    state: &AppState,
    address: &str,
    stream: &mut Stream,
    budget: &mut FrameBudget,
    within: Duration,
) -> Identified {
    let unauthorized = Identified::Refused(Close::new(CLOSE_UNAUTHORIZED, "unauthorized"));
    let frame = tokio::time::timeout(within, async {
        loop {
            let frame = match stream.next().await {
                Some(Ok(WsMessage::Close(_))) | None => return Err(Identified::Gone),
                Some(Ok(frame)) => frame,
                Some(Err(err)) => return Err(Identified::Refused(read_error_close(&err))),
            };
            match (budget.take(), frame) {
                (Verdict::Close, _) => {
                    let close = Close::new(CLOSE_RATE_LIMITED, "too many frames");
                    return Err(Identified::Refused(close));
                }
                (Verdict::Handle, WsMessage::Text(text)) => return Ok(text),
                _ => {}
            }
        }
    })
    .await;
    let text = match frame {
        Ok(Ok(text)) => text,
        Ok(Err(identified)) => return identified,
        Err(_elapsed) => return unauthorized,
    };
    match serde_json::from_str(text.as_str()) {
        // Charged to the client's address like a token in a header, so a flood of sessions with
        // made-up tokens costs at most the address's failure budget in lookups.
        Ok(ClientFrame::Identify { token }) => {
            match authenticate_charged(state, address, &token).await {
                Ok(user) => Identified::User(user),
                Err(AppError::RateLimited { .. }) => Identified::Refused(Close::new(
                    CLOSE_RATE_LIMITED,
                    "too many failed authentications; retry later",
                )),
                Err(_) => unauthorized,
            }
        }
        _ => unauthorized,
    }
}
