//! Streaming endpoints as server-sent events, in Upstash's format:
//! `/subscribe/<channel>…`, `/psubscribe/<pattern>…` and `/monitor`.
//!
//! Each stream gets its own Redis connection (outside the pool: a subscribed connection cannot run
//! other commands). Every Redis push becomes one event whose data is the push's parts joined by
//! commas — `subscribe,chat,1`, `message,chat,hello`, `pmessage,c*,chat,hello` — which is what the
//! `@upstash/redis` subscriber parses (the message is everything after the 2nd, or for `pmessage`
//! the 3rd, comma). Data is plain UTF-8 text (lossy), never base64, whatever `Upstash-Encoding`
//! says: the SDK sends that header on streams too and does not decode events. `/monitor` sends
//! `"OK"` first and then Redis's monitor lines as they are. A comment line every 15 s keeps
//! proxies from timing the stream out and notices clients that went away. The stream ends when the
//! client disconnects (the Redis connection is then closed, which unsubscribes), when Redis goes
//! away, or when the gateway shuts down.

use std::{io, sync::Arc, time::Duration};

use axum::{
    body::Body,
    http::{HeaderValue, StatusCode, header},
    response::Response,
};
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, watch};

use crate::{
    auth::Access,
    http::{AppState, error_response, with_sync_header},
    redis::RedisConnection,
    resp::Reply,
};

/// Which streaming endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StreamKind {
    Subscribe,
    PSubscribe,
    Monitor,
}

const KEEPALIVE: Duration = Duration::from_secs(15);

/// Opens the Redis side of a stream and returns the SSE response.
pub(crate) async fn open(
    state: &Arc<AppState>,
    kind: StreamKind,
    path: &str,
    access: Access,
) -> Response {
    let targets: Vec<Bytes> = path
        .trim_matches('/')
        .split('/')
        .skip(1)
        .filter(|s| !s.is_empty())
        .map(|s| Bytes::from(percent_encoding::percent_decode_str(s).collect::<Vec<u8>>()))
        .collect();
    let command: Vec<Bytes> = match kind {
        StreamKind::Subscribe | StreamKind::PSubscribe if targets.is_empty() => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "ERR missing channel: use /subscribe/<channel> or /psubscribe/<pattern>",
                state,
            );
        }
        StreamKind::Subscribe => std::iter::once(Bytes::from_static(b"SUBSCRIBE"))
            .chain(targets)
            .collect(),
        StreamKind::PSubscribe => std::iter::once(Bytes::from_static(b"PSUBSCRIBE"))
            .chain(targets)
            .collect(),
        // MONITOR shows every command with its values: not for a read-only token.
        StreamKind::Monitor if access == Access::ReadOnly => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "NOPERM this user has no permissions to run the 'monitor' command (read-only token)",
                state,
            );
        }
        StreamKind::Monitor => vec![Bytes::from_static(b"MONITOR")],
    };
    let Ok(permit) = Arc::clone(&state.stream_slots).try_acquire_owned() else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "ERR gateway overloaded: too many open streams",
            state,
        );
    };

    let timeouts = state.pool.timeouts();
    let setup = async {
        let mut conn = RedisConnection::connect(state.pool.target(), timeouts).await?;
        conn.send(&[command]).await?;
        Ok::<_, crate::Error>(conn)
    };
    let conn = match tokio::time::timeout(timeouts.command, setup).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(err)) => {
            let message = format!("ERR gateway: {err}");
            return error_response(StatusCode::SERVICE_UNAVAILABLE, &message, state);
        }
        Err(_) => {
            return error_response(
                StatusCode::GATEWAY_TIMEOUT,
                "ERR gateway: redis did not answer in time",
                state,
            );
        }
    };

    let stream = EventStream {
        conn,
        kind,
        shutdown: state.shutdown.clone(),
        _permit: permit,
    };
    let body = futures_util::stream::unfold(stream, |mut stream| async move {
        let event = stream.next_event().await?;
        Some((Ok::<_, io::Error>(event), stream))
    });
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tell reverse proxies (nginx) not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    with_sync_header(response, state.sync_token.current())
}

struct EventStream {
    conn: RedisConnection,
    kind: StreamKind,
    shutdown: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
}

impl EventStream {
    /// The next chunk of the SSE body, or `None` to end the stream.
    async fn next_event(&mut self) -> Option<Bytes> {
        if *self.shutdown.borrow() {
            return None;
        }
        tokio::select! {
            // `read_reply` is cancel-safe: bytes read so far stay in the connection's buffer.
            reply = self.conn.read_reply() => match reply {
                Ok(reply) => Some(Bytes::from(sse_event(&event_text(self.kind, &reply)))),
                Err(err) => {
                    tracing::debug!(error = %err, "stream ended: redis connection closed");
                    None
                }
            },
            _ = self.shutdown.changed() => None,
            () = tokio::time::sleep(KEEPALIVE) => Some(Bytes::from_static(b": keepalive\n\n")),
        }
    }
}

/// The data of one event.
fn event_text(kind: StreamKind, reply: &Reply) -> String {
    match (kind, reply) {
        (StreamKind::Monitor, Reply::Status(text)) if &text[..] == b"OK" => "\"OK\"".to_owned(),
        (_, Reply::Array(parts)) => parts.iter().map(part_text).collect::<Vec<_>>().join(","),
        (_, other) => part_text(other),
    }
}

fn part_text(reply: &Reply) -> String {
    match reply {
        Reply::Status(text) | Reply::Bulk(text) | Reply::Error(text) => {
            String::from_utf8_lossy(text).into_owned()
        }
        Reply::Integer(n) => n.to_string(),
        Reply::Nil => String::new(),
        Reply::Array(parts) => parts.iter().map(part_text).collect::<Vec<_>>().join(","),
    }
}

/// Frames `data` as one SSE event. A line break inside the data starts a new `data:` line, as the
/// SSE format requires (the JS SDK will then see the text after it as a separate line).
fn sse_event(data: &str) -> String {
    let mut out = String::with_capacity(data.len() + 16);
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line.strip_suffix('\r').unwrap_or(line));
        out.push('\n');
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn formats_pushes_like_upstash() {
        let subscribed = Reply::Array(vec![bulk("subscribe"), bulk("chat"), Reply::Integer(1)]);
        assert_eq!(
            sse_event(&event_text(StreamKind::Subscribe, &subscribed)),
            "data: subscribe,chat,1\n\n"
        );
        let message = Reply::Array(vec![bulk("message"), bulk("chat"), bulk("hello, world")]);
        assert_eq!(
            event_text(StreamKind::Subscribe, &message),
            "message,chat,hello, world"
        );
        let pmessage = Reply::Array(vec![
            bulk("pmessage"),
            bulk("c*"),
            bulk("chat"),
            bulk("{\"a\":1}"),
        ]);
        assert_eq!(
            event_text(StreamKind::PSubscribe, &pmessage),
            "pmessage,c*,chat,{\"a\":1}"
        );
    }

    #[test]
    fn monitor_lines() {
        assert_eq!(
            event_text(StreamKind::Monitor, &Reply::Status("OK".into())),
            "\"OK\""
        );
        let line = Reply::Status("1721284005.242090 [0 127.0.0.1:5000] \"GET\" \"k\"".into());
        assert_eq!(
            event_text(StreamKind::Monitor, &line),
            "1721284005.242090 [0 127.0.0.1:5000] \"GET\" \"k\""
        );
    }

    #[test]
    fn multi_line_data_is_framed() {
        assert_eq!(sse_event("a\r\nb"), "data: a\ndata: b\n\n");
    }
}
