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

use std::{collections::HashSet, time::Duration};

use axum::{
    extract::{
        State,
        ws::{
            CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket, WebSocketUpgrade,
            rejection::WebSocketUpgradeRejection,
        },
    },
    http::HeaderMap,
    response::Response,
};
use futures_util::{SinkExt, StreamExt, stream::SplitSink};
use serde::Deserialize;
use serde_json::json;
use tokio::{sync::broadcast::error::RecvError, time::Instant};
use ulid::Ulid;

use crate::{
    auth::{CurrentUser, authenticate, bearer_token},
    error::{AppError, ErrorBody, Query},
    events::EventKind,
    model::UserRef,
    state::AppState,
};

/// Close code: authentication failed.
pub const CLOSE_UNAUTHORIZED: u16 = 4001;
/// Close code: events may have been lost (the session fell behind the event stream, or the
/// backplane was interrupted): reconnect and refetch.
pub const CLOSE_LAGGED: u16 = 4008;
/// Close code: no heartbeat.
pub const CLOSE_HEARTBEAT: u16 = 4009;
/// Close code: server shutting down.
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// Read buffer of a session's socket (see `upgrade`).
const SESSION_READ_BUFFER: usize = 4 * 1024;

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
    )
)]
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    Query(query): Query<WsQuery>,
    headers: HeaderMap,
    known: Option<axum::Extension<CurrentUser>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    // A bad token is a 401 whether or not the request is a proper upgrade.
    let user = match (known, bearer_token(&headers).or(query.token.as_deref())) {
        (Some(axum::Extension(CurrentUser(user))), _) => Some(user),
        (None, Some(token)) => Some(authenticate(&state, token).await?),
        (None, None) => None,
    };
    let ws = ws
        .map_err(|_| AppError::UpgradeRequired)?
        // tungstenite allocates its whole read buffer per connection up front (128 KiB by
        // default), which made that buffer most of a session's memory; client frames are small
        // (identify, ping), and a larger one still grows the buffer as needed.
        .read_buffer_size(SESSION_READ_BUFFER);
    Ok(ws.on_upgrade(move |socket| async move {
        let _guard = state.hub().session_guard();
        run(socket, state, user).await;
    }))
}

type Sink = SplitSink<WebSocket, WsMessage>;

async fn send_json(sink: &mut Sink, value: serde_json::Value) -> bool {
    sink.send(WsMessage::Text(Utf8Bytes::from(value.to_string())))
        .await
        .is_ok()
}

async fn close(sink: &mut Sink, code: u16, reason: &'static str) {
    let _ = sink
        .send(WsMessage::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        })))
        .await;
}

async fn run(socket: WebSocket, state: AppState, user: Option<UserRef>) {
    let heartbeat = state.config().ws_heartbeat;
    let (mut sink, mut stream) = socket.split();
    let session_id = Ulid::new();
    let hello = json!({"op": "hello", "data": {
        "heartbeat_interval_ms": u64::try_from(heartbeat.as_millis()).unwrap_or(u64::MAX),
        "session_id": session_id,
    }});
    if !send_json(&mut sink, hello).await {
        return;
    }
    let user = match user {
        Some(user) => user,
        None => match identify(&state, &mut stream, heartbeat).await {
            Some(user) => user,
            None => {
                close(&mut sink, CLOSE_UNAUTHORIZED, "unauthorized").await;
                return;
            }
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
            close(&mut sink, 1011, "internal error").await;
            return;
        }
    };
    let mut member_of: HashSet<Ulid> = channels.iter().map(|c| c.id).collect();
    let ready = json!({"op": "ready", "data": {"user": &user, "channels": &*channels}});
    if !send_json(&mut sink, ready).await {
        return;
    }
    tracing::debug!(user_id = %user.id, %session_id, "websocket session ready");

    let mut seq: u64 = 0;
    let mut last_seen = Instant::now();
    let mut ticker = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    loop {
        tokio::select! {
            frame = stream.next() => {
                let Some(Ok(frame)) = frame else { break };
                last_seen = Instant::now();
                match frame {
                    WsMessage::Text(text) => {
                        if let Ok(ClientFrame::Ping { nonce }) = serde_json::from_str(text.as_str()) {
                            if !send_json(&mut sink, json!({"op": "pong", "data": {"nonce": nonce}})).await {
                                break;
                            }
                        }
                    }
                    WsMessage::Close(_) => break,
                    _ => {}
                }
            }
            event = events.recv() => {
                let event = match event {
                    Ok(event) => event,
                    Err(RecvError::Lagged(_)) => {
                        close(&mut sink, CLOSE_LAGGED, "too far behind; reconnect").await;
                        break;
                    }
                    Err(RecvError::Closed) => break,
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
                if sink.send(WsMessage::Text(Utf8Bytes::from(frame))).await.is_err() {
                    break;
                }
            }
            _ = ticker.tick() => {
                if last_seen.elapsed() > heartbeat * 2 {
                    close(&mut sink, CLOSE_HEARTBEAT, "heartbeat timeout").await;
                    break;
                }
                if sink.send(WsMessage::Ping(bytes::Bytes::new())).await.is_err() {
                    break;
                }
            }
            _ = resync.changed() => {
                close(&mut sink, CLOSE_LAGGED, "events may have been lost; reconnect").await;
                break;
            }
            _ = shutdown.changed() => {
                close(&mut sink, CLOSE_GOING_AWAY, "server shutting down").await;
                break;
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

/// Waits for an `identify` frame and checks its token.
async fn identify(
    state: &AppState,
    stream: &mut futures_util::stream::SplitStream<WebSocket>,
    within: Duration,
) -> Option<UserRef> {
    let frame = tokio::time::timeout(within, async {
        loop {
            match stream.next().await? {
                Ok(WsMessage::Text(text)) => return Some(text),
                Ok(WsMessage::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()??;
    match serde_json::from_str(frame.as_str()) {
        Ok(ClientFrame::Identify { token }) => authenticate(state, &token).await.ok(),
        _ => None,
    }
}
