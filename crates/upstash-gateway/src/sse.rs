//! Streaming endpoints as server-sent events, in Upstash's format:
//! `/subscribe/<channel>…`, `/psubscribe/<pattern>…` and `/monitor`.
//!
//! Each stream gets its own Redis connection (outside the pool: a subscribed connection cannot run
//! other commands). Every Redis push becomes one event whose data is the push's parts joined by
//! commas — `subscribe,chat,1`, `message,chat,hello`, `pmessage,c*,chat,hello` — which is what the
//! `@upstash/redis` subscriber parses (the message is everything after the 2nd, or for `pmessage`
//! the 3rd, comma). Data is plain UTF-8 text (lossy), never base64, whatever `Upstash-Encoding`
//! says: the SDK sends that header on streams too and does not decode events. `/monitor` sends
//! `"OK"` first and then Redis's monitor lines as they are.
//!
//! A line break inside a message (`\n`, `\r\n` or a lone `\r`) starts a new `data:` line, as the
//! SSE format requires, so a spec-following reader (an `EventSource`, cache-upstash) re-joins the
//! lines with `\n` and gets the message back with its line breaks normalised to `\n`. Writing the
//! break raw instead would end the `data:` field early for every such reader, and a continuation
//! line that happened to start with `data:` would be taken for an event of its own. (The
//! `@upstash/redis` subscriber does not join `data:` lines, so it gets such a message cut at the
//! first break either way. Upstash does not document its own framing for this case;
//! `conformance/node/sse-probe.mjs` prints any server's bytes for it.)
//!
//! Two tasks per stream, so that a slow reader cannot make the gateway buffer without bound nor
//! leave Redis buffering for it: a pump reads Redis replies as fast as Redis sends them into a
//! queue, and the response body takes them out as fast as the client reads. When the queue holds
//! more than the configured byte budget the reader is too far behind to catch up: the pump closes
//! the Redis connection (Redis unsubscribes) and the stream ends, so the client reconnects and
//! knows it may have missed messages, which beats delivering them late or buffering them forever.
//!
//! The body sends a `: keepalive` comment after each quiet interval (configurable, 15 s by
//! default): proxies do not time the stream out, clients can tell a quiet stream from a dead one,
//! and a client that went away is noticed at the latest by that write — the body is dropped, the
//! pump sees its queue closed and closes the Redis connection, and the stream slot is freed.
//!
//! The Redis side is watched the same way: a subscribed connection gets a `PING` every keep-alive
//! interval (its `pong` is not forwarded), and a Redis that does not answer within the longer of
//! that interval and the command timeout is taken for gone — a partition or a frozen server sends
//! no FIN, and a stream that stayed open with nothing behind it would be a silent gap for a
//! subscriber that relies on the stream ending to know it missed something.
//!
//! The stream ends when the client disconnects, when Redis goes away or stops answering (the
//! events already queued are delivered first), when the reader falls too far behind, or when the
//! gateway shuts down.

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    http::{HeaderValue, StatusCode, header},
    response::Response,
};
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};

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

/// How streams behave; set through the gateway builder.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamSettings {
    /// Quiet time after which a `: keepalive` comment is sent.
    pub(crate) keepalive: Duration,
    /// Bytes of events a stream may hold for a reader that is behind before it is cut off.
    pub(crate) max_buffered_bytes: usize,
}

const KEEPALIVE_EVENT: &[u8] = b": keepalive\n\n";

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
    // Refused at once rather than queued: a subscriber that waits here would believe it is
    // subscribed while messages go past it.
    let Ok(permit) = Arc::clone(&state.stream_slots).try_acquire_owned() else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "ERR gateway overloaded: all {} stream slots are in use (--max-streams)",
                state.max_streams
            ),
            state,
        );
    };

    let timeouts = state.pool.timeouts();
    let setup = async {
        let mut conn = RedisConnection::connect(state.pool.target(), timeouts).await?;
        conn.send(&[command]).await?;
        Ok::<_, crate::error::RedisError>(conn)
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

    let settings = state.streams;
    let (events, queue) = mpsc::unbounded_channel();
    let shared = Arc::new(Backlog::default());
    tokio::spawn(
        Pump {
            conn,
            kind,
            events,
            backlog: Arc::clone(&shared),
            max_buffered_bytes: settings.max_buffered_bytes,
            // MONITOR takes no commands, so only subscriptions can be pinged.
            ping_every: (kind != StreamKind::Monitor).then_some(settings.keepalive),
            pong_within: settings.keepalive.max(timeouts.command),
            shutdown: state.shutdown.clone(),
            _permit: permit,
        }
        .run(),
    );
    let stream = EventStream {
        queue,
        backlog: shared,
        keepalive: settings.keepalive,
        shutdown: state.shutdown.clone(),
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

/// What the pump and the body share about the queue between them.
#[derive(Debug, Default)]
struct Backlog {
    /// Bytes of events queued and not yet taken by the body.
    bytes: AtomicUsize,
    /// Set by the pump when the reader fell too far behind: the body ends without the backlog.
    overflowed: AtomicBool,
}

/// Reads the stream's Redis connection into the queue. Owns the connection and the stream slot,
/// so both are released as soon as the pump ends, whatever the HTTP side is doing.
struct Pump {
    conn: RedisConnection,
    kind: StreamKind,
    events: mpsc::UnboundedSender<Bytes>,
    backlog: Arc<Backlog>,
    max_buffered_bytes: usize,
    /// How often to check that Redis still answers; `None` for MONITOR.
    ping_every: Option<Duration>,
    /// How long Redis may take to answer such a check.
    pong_within: Duration,
    shutdown: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
}

impl Pump {
    async fn run(mut self) {
        let mut ping_sent: Option<Instant> = None;
        let mut ticks = self.ping_every.map(|every| {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks
        });
        loop {
            if *self.shutdown.borrow() {
                return;
            }
            let tick = async {
                match ticks.as_mut() {
                    Some(ticks) => {
                        ticks.tick().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                // `read_reply` is cancel-safe: bytes read so far stay in the connection's buffer.
                reply = self.conn.read_reply() => match reply {
                    Ok(reply) if is_pong(&reply) => ping_sent = None,
                    Ok(reply) => {
                        let event = Bytes::from(sse_event(&event_text(self.kind, &reply)));
                        if !self.enqueue(event) {
                            return;
                        }
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, "stream ended: redis connection closed");
                        return;
                    }
                },
                () = tick => match ping_sent {
                    Some(sent) if sent.elapsed() > self.pong_within => {
                        tracing::warn!(
                            waited = ?sent.elapsed(),
                            "stream ended: redis stopped answering on a subscribed connection"
                        );
                        return;
                    }
                    Some(_) => {}
                    None => {
                        if let Err(err) = self.conn.send(&[vec![Bytes::from_static(b"PING")]]).await {
                            tracing::debug!(error = %err, "stream ended: redis connection closed");
                            return;
                        }
                        ping_sent = Some(Instant::now());
                    }
                },
                // The body was dropped: the client went away.
                () = self.events.closed() => return,
                _ = self.shutdown.changed() => return,
            }
        }
    }

    /// Queues one event; `false` ends the stream.
    fn enqueue(&mut self, event: Bytes) -> bool {
        let len = event.len();
        let queued = self.backlog.bytes.fetch_add(len, Ordering::AcqRel) + len;
        if queued > self.max_buffered_bytes {
            tracing::warn!(
                queued_bytes = queued,
                limit = self.max_buffered_bytes,
                "stream closed: the client reads too slowly to keep up"
            );
            self.backlog.overflowed.store(true, Ordering::Release);
            return false;
        }
        self.events.send(event).is_ok()
    }
}

/// The response body's side of a stream.
struct EventStream {
    queue: mpsc::UnboundedReceiver<Bytes>,
    backlog: Arc<Backlog>,
    keepalive: Duration,
    shutdown: watch::Receiver<bool>,
}

impl EventStream {
    /// The next chunk of the SSE body, or `None` to end the stream.
    async fn next_event(&mut self) -> Option<Bytes> {
        if *self.shutdown.borrow() || self.backlog.overflowed.load(Ordering::Acquire) {
            return None;
        }
        tokio::select! {
            event = self.queue.recv() => {
                // `None`: the pump ended (Redis went away) and everything it queued was sent.
                let event = event?;
                self.backlog.bytes.fetch_sub(event.len(), Ordering::AcqRel);
                if self.backlog.overflowed.load(Ordering::Acquire) {
                    return None;
                }
                Some(event)
            }
            _ = self.shutdown.changed() => None,
            () = tokio::time::sleep(self.keepalive) => Some(Bytes::from_static(KEEPALIVE_EVENT)),
        }
    }
}

/// The answer to the pump's own `PING` on a subscribed connection: `["pong", ""]`.
fn is_pong(reply: &Reply) -> bool {
    matches!(reply, Reply::Array(parts) if matches!(parts.first(), Some(Reply::Bulk(kind)) if &kind[..] == b"pong"))
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

/// Frames `data` as one SSE event: every line break the SSE format knows (`\r\n`, `\n`, a lone
/// `\r`) starts a new `data:` line, so none can end the field or the event early.
fn sse_event(data: &str) -> String {
    let mut out = String::with_capacity(data.len() + 16);
    let mut rest = data;
    loop {
        out.push_str("data: ");
        match rest.find(['\r', '\n']) {
            Some(at) => {
                out.push_str(&rest[..at]);
                out.push('\n');
                let skip = if rest[at..].starts_with("\r\n") { 2 } else { 1 };
                rest = &rest[at + skip..];
            }
            None => {
                out.push_str(rest);
                out.push('\n');
                break;
            }
        }
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
    fn only_the_pong_of_a_ping_is_held_back() {
        assert!(is_pong(&Reply::Array(vec![bulk("pong"), bulk("")])));
        // A message on a channel called "pong", or whose text is "pong", is a message.
        assert!(!is_pong(&Reply::Array(vec![
            bulk("message"),
            bulk("pong"),
            bulk("pong")
        ])));
        assert!(!is_pong(&Reply::Status("PONG".into())));
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
    fn every_line_break_starts_a_data_line() {
        assert_eq!(sse_event("a\r\nb"), "data: a\ndata: b\n\n");
        assert_eq!(sse_event("a\nb"), "data: a\ndata: b\n\n");
        assert_eq!(sse_event("a\rb"), "data: a\ndata: b\n\n");
        assert_eq!(sse_event("a\n\nb"), "data: a\ndata: \ndata: b\n\n");
        assert_eq!(sse_event("a\n"), "data: a\ndata: \n\n");
        assert_eq!(sse_event("\r\r\n"), "data: \ndata: \ndata: \n\n");
        assert_eq!(sse_event(""), "data: \n\n");
        assert_eq!(sse_event("é,\u{2028}👋"), "data: é,\u{2028}👋\n\n");
    }

    /// What a reader following the SSE format makes of a framed event.
    fn spec_reader(event: &str) -> String {
        let body = event.strip_suffix("\n\n").expect("event terminator");
        body.split('\n')
            .map(|line| line.strip_prefix("data: ").expect("only data lines"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn a_spec_reader_gets_the_data_back_with_line_breaks_as_lf() {
        for data in [
            "plain",
            "one\ntwo",
            "crlf\r\nline",
            "lone\rcr",
            "\n\nleading and trailing\n",
            "data: not an event\ndata: nor this",
        ] {
            let expected = data.replace("\r\n", "\n").replace('\r', "\n");
            assert_eq!(spec_reader(&sse_event(data)), expected, "{data:?}");
        }
    }
}
