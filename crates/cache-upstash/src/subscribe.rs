//! Pub/sub over Upstash's server-sent-event streams: [`Redis::subscribe`] and
//! [`Redis::psubscribe`] open `POST /subscribe/<channel>` (`/psubscribe/<pattern>`) the way
//! `@upstash/redis` does and turn the stream into typed [`SubscriptionEvent`]s, with heartbeat
//! detection and reconnection.
//!
//! # The protocol, and what it can carry
//!
//! Each Redis push is one SSE event whose data is its parts joined by commas:
//! `subscribe,chat,1`, `message,chat,<payload>`, `pmessage,<pattern>,<channel>,<payload>`.
//! Comment lines (`: keepalive`) keep idle streams alive. The payload is everything after the
//! channel, commas included; a payload with line breaks arrives as several `data:` lines and is
//! joined again with `\n`.
//!
//! The stream is UTF-8 text, so this is what a subscriber receives for a published payload:
//!
//! - valid UTF-8 (unicode, commas, JSON, `\n`): exactly what was published;
//! - `\r\n` inside the payload: `\n` (the server splits the event into lines there);
//! - a lone `\r`: kept (only `\n` ends a line here, unlike strict SSE, so such payloads survive);
//! - bytes that are not UTF-8: each invalid sequence becomes U+FFFD on the server, so binary
//!   data must be encoded (base64, as [`UpstashTransport`](crate::UpstashTransport) does).
//!
//! # Interruptions
//!
//! A stream breaks when the server ends it, the connection fails, an event cannot be parsed, or
//! no byte at all (keep-alive comments included) arrives for [`SubscribeOptions::heartbeat_timeout`].
//! The subscription then yields [`SubscriptionEvent::Interrupted`] — messages published until the
//! next [`SubscriptionEvent::Subscribed`] may be lost — and reconnects after an exponential
//! backoff with jitter. A subscriber that must not miss anything refetches its state on
//! `Interrupted`.

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures_util::Stream;
use percent_encoding::utf8_percent_encode;
use tokio::{sync::mpsc, task::AbortHandle};

use crate::{
    client::{Redis, classify_status},
    error::{Error, Result},
    wire,
};

/// Settings of a [`Subscription`].
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    heartbeat_timeout: Duration,
    reconnect_min: Duration,
    reconnect_max: Duration,
    max_event_bytes: usize,
    buffer: usize,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            heartbeat_timeout: Duration::from_secs(45),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(10),
            max_event_bytes: 4 * 1024 * 1024,
            buffer: 1024,
        }
    }
}

impl SubscribeOptions {
    /// The defaults: heartbeat timeout 45 s, reconnect backoff 100 ms doubling to 10 s, events
    /// of at most 4 MiB, 1,024 events buffered.
    pub fn new() -> Self {
        SubscribeOptions::default()
    }

    /// Without a single byte for this long, the stream counts as dead and is reopened
    /// (default 45 s: three of the 15 s keep-alive comments `upstash-gateway` sends). Values
    /// below 1 ms are raised to 1 ms.
    #[must_use]
    pub fn heartbeat_timeout(mut self, timeout: Duration) -> Self {
        self.heartbeat_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The first reconnect delay and the most it doubles to (defaults 100 ms and 10 s). Each
    /// delay is drawn uniformly from its upper half, so that many subscribers that lost the
    /// same server do not come back in lockstep. The delay starts over from `min` only after a
    /// stream stayed up for `max`, so a server that drops streams right after subscribing is
    /// retried ever more slowly rather than in a tight loop.
    #[must_use]
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min.max(Duration::from_millis(1));
        self.reconnect_max = max.max(self.reconnect_min);
        self
    }

    /// The largest event accepted (default 4 MiB); a larger one interrupts the stream (its
    /// message is lost, which the interruption says).
    #[must_use]
    pub fn max_event_bytes(mut self, bytes: usize) -> Self {
        self.max_event_bytes = bytes.max(64);
        self
    }

    /// Events buffered for a slow consumer before the stream stops being read (default 1,024).
    #[must_use]
    pub fn buffer(mut self, events: usize) -> Self {
        self.buffer = events.max(1);
        self
    }

    /// The delay before reconnect attempt `attempt` (0-based).
    fn backoff(&self, attempt: u32) -> Duration {
        let doubled = self
            .reconnect_min
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.reconnect_max);
        let half = doubled / 2;
        let jitter = u64::try_from(half.as_micros()).unwrap_or(u64::MAX);
        half + Duration::from_micros(fastrand::u64(0..=jitter))
    }
}

/// What a [`Subscription`] yields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SubscriptionEvent {
    /// The server confirmed a channel (or, for [`Redis::psubscribe`], a pattern): messages
    /// published to it from now on arrive. Comes once per channel after every (re)connect.
    Subscribed {
        /// The channel or pattern.
        channel: String,
        /// How many channels this stream is subscribed to now.
        count: u64,
    },
    /// A message on a subscribed channel.
    Message {
        /// The channel it was published to.
        channel: String,
        /// The payload (see the module docs for what survives the text protocol).
        payload: Bytes,
    },
    /// A message on a channel matching a subscribed pattern.
    PatternMessage {
        /// The pattern that matched.
        pattern: String,
        /// The channel it was published to.
        channel: String,
        /// The payload.
        payload: Bytes,
    },
    /// The stream broke (or could not be opened): messages may have been lost. The subscription
    /// retries after `retry_in` and says [`SubscriptionEvent::Subscribed`] again once back.
    Interrupted {
        /// Why: a heartbeat [`Error::Timeout`], a [`Error::Transport`] failure or end of stream,
        /// an HTTP or auth error, an [`Error::UnexpectedResponse`]. Never contains the token.
        reason: Error,
        /// How long until the next attempt; `None` when the subscription gives up (invalid
        /// channels), after which it ends.
        retry_in: Option<Duration>,
    },
}

/// Whether a stream subscribes to channels or patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Channels,
    Patterns,
}

/// A live subscription: a stream of [`SubscriptionEvent`]s fed by a background task that keeps
/// the SSE stream open. Dropping it closes the stream and stops the task.
///
/// Read it with [`Subscription::next`] or as a [`Stream`]. It ends (`None`) only after an
/// `Interrupted` whose `retry_in` is `None`.
pub struct Subscription {
    events: mpsc::Receiver<SubscriptionEvent>,
    task: AbortHandle,
    targets: Vec<String>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("targets", &self.targets)
            .field("running", &!self.task.is_finished())
            .finish_non_exhaustive()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Subscription {
    /// The next event; `None` once the subscription gave up.
    pub async fn next(&mut self) -> Option<SubscriptionEvent> {
        self.events.recv().await
    }

    /// The channels or patterns of this subscription.
    pub fn targets(&self) -> &[String] {
        &self.targets
    }
}

impl Stream for Subscription {
    type Item = SubscriptionEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().events.poll_recv(cx)
    }
}

impl Redis {
    /// Subscribes to `channels` over one SSE stream (`POST /subscribe/<channel>/…`), with the
    /// default [`SubscribeOptions`].
    ///
    /// Returns at once; the stream is opened in the background and its first events are
    /// [`SubscriptionEvent::Subscribed`], one per channel. Must be called within a Tokio runtime.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use cache_upstash::SubscriptionEvent;
    /// # async fn demo(redis: cache_upstash::Redis) {
    /// let mut sub = redis.subscribe(&["chat"]);
    /// while let Some(event) = sub.next().await {
    ///     match event {
    ///         SubscriptionEvent::Message { payload, .. } => println!("{payload:?}"),
    ///         SubscriptionEvent::Interrupted { .. } => { /* refetch: messages may be lost */ }
    ///         _ => {}
    ///     }
    /// }
    /// # }
    /// ```
    pub fn subscribe(&self, channels: &[&str]) -> Subscription {
        self.subscribe_with(channels, SubscribeOptions::default())
    }

    /// [`subscribe`](Self::subscribe) with options.
    pub fn subscribe_with(&self, channels: &[&str], options: SubscribeOptions) -> Subscription {
        self.open_subscription(Kind::Channels, channels, options)
    }

    /// Subscribes to channels matching `patterns` (`POST /psubscribe/<pattern>/…`); messages
    /// arrive as [`SubscriptionEvent::PatternMessage`].
    pub fn psubscribe(&self, patterns: &[&str]) -> Subscription {
        self.psubscribe_with(patterns, SubscribeOptions::default())
    }

    /// [`psubscribe`](Self::psubscribe) with options.
    pub fn psubscribe_with(&self, patterns: &[&str], options: SubscribeOptions) -> Subscription {
        self.open_subscription(Kind::Patterns, patterns, options)
    }

    fn open_subscription(
        &self,
        kind: Kind,
        targets: &[&str],
        options: SubscribeOptions,
    ) -> Subscription {
        let targets: Vec<String> = targets.iter().map(|&t| t.to_owned()).collect();
        let (tx, events) = mpsc::channel(options.buffer);
        let task = tokio::spawn(run(self.clone(), kind, targets.clone(), options, tx));
        Subscription {
            events,
            task: task.abort_handle(),
            targets,
        }
    }
}

fn stream_path(kind: Kind, targets: &[String]) -> String {
    let mut path = String::from(match kind {
        Kind::Channels => "subscribe",
        Kind::Patterns => "psubscribe",
    });
    for target in targets {
        path.push('/');
        path.extend(utf8_percent_encode(target, wire::UNRESERVED));
    }
    path
}

/// The background task: open, read until broken, report, back off, repeat; until the
/// [`Subscription`] is dropped.
async fn run(
    redis: Redis,
    kind: Kind,
    targets: Vec<String>,
    options: SubscribeOptions,
    tx: mpsc::Sender<SubscriptionEvent>,
) {
    if targets.is_empty() || targets.iter().any(String::is_empty) {
        let reason = Error::invalid_request("subscribe needs at least one non-empty channel");
        let _ = tx
            .send(SubscriptionEvent::Interrupted {
                reason,
                retry_in: None,
            })
            .await;
        return;
    }
    let path = stream_path(kind, &targets);
    let mut failures: u32 = 0;
    loop {
        let mut stream = StreamState {
            kind,
            targets: &targets,
            options: &options,
            tx: &tx,
            confirmed: 0,
            up_since: None,
        };
        let reason = match stream.read(&redis, &path).await {
            Ok(()) => return, // the subscriber is gone
            Err(reason) => reason,
        };
        if stream
            .up_since
            .is_some_and(|since| since.elapsed() >= options.reconnect_max)
        {
            // It was up for a while: a fresh break, retried quickly. A stream that breaks right
            // after subscribing keeps backing off instead, so a flapping server is not hammered.
            failures = 0;
        }
        let retry_in = options.backoff(failures);
        failures = failures.saturating_add(1);
        tracing::debug!(error = %reason, ?retry_in, "upstash subscription interrupted");
        let interrupted = SubscriptionEvent::Interrupted {
            reason,
            retry_in: Some(retry_in),
        };
        if tx.send(interrupted).await.is_err() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(retry_in) => {}
            () = tx.closed() => return,
        }
    }
}

/// One connection's worth of reading.
struct StreamState<'a> {
    kind: Kind,
    targets: &'a [String],
    options: &'a SubscribeOptions,
    tx: &'a mpsc::Sender<SubscriptionEvent>,
    /// Subscribe confirmations seen on this connection.
    confirmed: usize,
    /// When every target was confirmed.
    up_since: Option<std::time::Instant>,
}

impl StreamState<'_> {
    /// Reads the stream until it breaks (`Err(why)`) or the subscriber is gone (`Ok`).
    async fn read(&mut self, redis: &Redis, path: &str) -> Result<()> {
        let open_timeout = redis.request_timeout();
        let send = redis.stream_request(path).send();
        let mut response = tokio::select! {
            opened = tokio::time::timeout(open_timeout, send) => match opened {
                Ok(Ok(response)) => response,
                Ok(Err(err)) => return Err(redis.transport_error(err)),
                Err(_) => return Err(Error::Timeout { after: open_timeout }),
            },
            () = self.tx.closed() => return Ok(()),
        };
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let body = tokio::time::timeout(open_timeout, response.bytes())
                .await
                .ok()
                .and_then(std::result::Result::ok)
                .unwrap_or_default();
            return Err(match classify_status(status, body.clone()) {
                Err(err) => err,
                // A 400 with a Redis error in the body.
                Ok(_) => Error::Http {
                    status,
                    message: wire::error_text(&body).unwrap_or_else(|| wire::body_prefix(&body)),
                },
            });
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        if !content_type.starts_with("text/event-stream") {
            return Err(Error::UnexpectedResponse {
                message: format!("expected an event stream, got content type {content_type:?}"),
                status: Some(status),
                body: None,
            });
        }
        let heartbeat = self.options.heartbeat_timeout;
        let mut parser = SseParser::new(self.options.max_event_bytes);
        loop {
            let chunk = tokio::select! {
                chunk = tokio::time::timeout(heartbeat, response.chunk()) => chunk,
                () = self.tx.closed() => return Ok(()),
            };
            let bytes = match chunk {
                Err(_) => return Err(Error::Timeout { after: heartbeat }),
                Ok(Err(err)) => return Err(redis.transport_error(err)),
                Ok(Ok(None)) => {
                    return Err(Error::Transport {
                        message: "the server ended the event stream".to_owned(),
                        source: None,
                    });
                }
                Ok(Ok(Some(bytes))) => bytes,
            };
            for data in parser.push(&bytes)? {
                let Some(event) = self.parse(&data)? else {
                    continue;
                };
                if matches!(event, SubscriptionEvent::Subscribed { .. }) {
                    self.confirmed += 1;
                    if self.confirmed == self.targets.len() {
                        self.up_since = Some(std::time::Instant::now());
                    }
                }
                if self.tx.send(event).await.is_err() {
                    return Ok(());
                }
            }
        }
    }

    /// The event of one SSE data block; `None` for kinds a subscriber does not need.
    fn parse(&self, data: &[u8]) -> Result<Option<SubscriptionEvent>> {
        let malformed = || {
            Error::unexpected(format!(
                "malformed subscription event {:?}",
                String::from_utf8_lossy(&data[..data.len().min(80)])
            ))
        };
        let Some(comma) = data.iter().position(|&b| b == b',') else {
            return Ok(None);
        };
        let (kind, rest) = (&data[..comma], &data[comma + 1..]);
        match kind {
            b"subscribe" | b"psubscribe" => {
                let (channel, count) = rsplit_comma(rest).ok_or_else(malformed)?;
                let count = std::str::from_utf8(count)
                    .ok()
                    .and_then(|c| c.trim().parse().ok())
                    .ok_or_else(malformed)?;
                Ok(Some(SubscriptionEvent::Subscribed {
                    channel: text(channel),
                    count,
                }))
            }
            b"message" if self.kind == Kind::Channels => {
                let (channel, payload) = split_known(rest, self.targets).ok_or_else(malformed)?;
                Ok(Some(SubscriptionEvent::Message {
                    channel,
                    payload: Bytes::copy_from_slice(payload),
                }))
            }
            b"pmessage" if self.kind == Kind::Patterns => {
                let (pattern, rest) = split_known(rest, self.targets).ok_or_else(malformed)?;
                // Channel names with a comma cannot be told apart from the payload here; the
                // protocol has no escaping. The first comma ends the channel.
                let comma = rest.iter().position(|&b| b == b',').ok_or_else(malformed)?;
                Ok(Some(SubscriptionEvent::PatternMessage {
                    pattern,
                    channel: text(&rest[..comma]),
                    payload: Bytes::copy_from_slice(&rest[comma + 1..]),
                }))
            }
            // unsubscribe/punsubscribe confirmations and kinds this client does not know.
            _ => Ok(None),
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Splits `name,tail` where the name is one of `known` (so names containing commas still parse),
/// or else ends at the first comma.
fn split_known<'d>(data: &'d [u8], known: &[String]) -> Option<(String, &'d [u8])> {
    for name in known {
        let name_bytes = name.as_bytes();
        if data.len() > name_bytes.len()
            && data.starts_with(name_bytes)
            && data[name_bytes.len()] == b','
        {
            return Some((name.clone(), &data[name_bytes.len() + 1..]));
        }
    }
    let comma = data.iter().position(|&b| b == b',')?;
    Some((text(&data[..comma]), &data[comma + 1..]))
}

fn rsplit_comma(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let comma = data.iter().rposition(|&b| b == b',')?;
    Some((&data[..comma], &data[comma + 1..]))
}

/// An incremental parser of an SSE body into the data of its events.
///
/// Lines end at `\n` (a `\r` before it is dropped); a lone `\r` is kept as data, which strict SSE
/// would treat as a line end, because the server never sends one as such and payloads may hold
/// it. Fields other than `data` and comment lines are ignored; an empty line ends an event.
#[derive(Debug)]
pub(crate) struct SseParser {
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    max: usize,
}

impl SseParser {
    pub(crate) fn new(max: usize) -> Self {
        SseParser {
            line: Vec::new(),
            data: Vec::new(),
            has_data: false,
            max,
        }
    }

    /// Feeds bytes; returns the data of every event they completed.
    pub(crate) fn push(&mut self, mut bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut events = Vec::new();
        while let Some(newline) = bytes.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&bytes[..newline]);
            bytes = &bytes[newline + 1..];
            self.check_size()?;
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.is_empty() {
                if self.has_data {
                    events.push(std::mem::take(&mut self.data));
                    self.has_data = false;
                }
            } else if line[0] != b':' {
                let (field, value) = match line.iter().position(|&b| b == b':') {
                    Some(colon) => {
                        let value = &line[colon + 1..];
                        (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
                    }
                    None => (&line[..], &[][..]),
                };
                if field == b"data" {
                    if self.has_data {
                        self.data.push(b'\n');
                    }
                    self.data.extend_from_slice(value);
                    self.has_data = true;
                }
            }
            // Reuse the allocation for the next line.
            line.clear();
            self.line = line;
        }
        self.line.extend_from_slice(bytes);
        self.check_size()?;
        Ok(events)
    }

    fn check_size(&self) -> Result<()> {
        if self.line.len() + self.data.len() > self.max {
            return Err(Error::unexpected(format!(
                "an event of the stream exceeds {} bytes",
                self.max
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(parser: &mut SseParser, input: &str) -> Vec<String> {
        parser
            .push(input.as_bytes())
            .unwrap()
            .into_iter()
            .map(|data| String::from_utf8(data).unwrap())
            .collect()
    }

    #[test]
    fn joins_data_lines_and_skips_comments() {
        let mut parser = SseParser::new(1024);
        assert_eq!(
            events(
                &mut parser,
                ": keepalive\n\ndata: message,c,a\ndata: b\r\n\ndata:x\n\n"
            ),
            vec!["message,c,a\nb", "x"]
        );
        assert!(events(&mut parser, "event: ignored\nid: 3\n\n").is_empty());
        assert_eq!(events(&mut parser, "data: \n\n"), vec![""]);
        assert_eq!(events(&mut parser, "data: a\rb\n\n"), vec!["a\rb"]);
    }

    #[test]
    fn events_split_across_chunks() {
        let mut parser = SseParser::new(1024);
        let input = "data: subscribe,chat,1\n\ndata: message,chat,héllo\ndata: two\n\n";
        let mut seen = Vec::new();
        for byte in input.as_bytes() {
            seen.extend(parser.push(std::slice::from_ref(byte)).unwrap());
        }
        let seen: Vec<String> = seen
            .into_iter()
            .map(|d| String::from_utf8(d).unwrap())
            .collect();
        assert_eq!(seen, vec!["subscribe,chat,1", "message,chat,héllo\ntwo"]);
    }

    #[test]
    fn oversized_events_are_an_error() {
        let mut parser = SseParser::new(64);
        let long = format!("data: {}\n", "x".repeat(40));
        assert!(parser.push(long.as_bytes()).is_ok());
        let err = parser.push(long.as_bytes()).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::UnexpectedResponse);
        let mut parser = SseParser::new(64);
        assert!(parser.push("y".repeat(100).as_bytes()).is_err());
    }

    #[test]
    fn message_kinds() {
        let targets = vec!["a,b".to_owned(), "chat".to_owned()];
        let (tx, _rx) = mpsc::channel(1);
        let options = SubscribeOptions::default();
        let state = StreamState {
            kind: Kind::Channels,
            targets: &targets,
            options: &options,
            tx: &tx,
            confirmed: 0,
            up_since: None,
        };
        assert!(matches!(
            state.parse(b"message,a,b,x,y").unwrap(),
            Some(SubscriptionEvent::Message { channel, payload })
                if channel == "a,b" && payload == "x,y"
        ));
        assert!(matches!(
            state.parse(b"subscribe,a,b,2").unwrap(),
            Some(SubscriptionEvent::Subscribed { channel, count: 2 }) if channel == "a,b"
        ));
        assert!(state.parse(b"unsubscribe,chat,0").unwrap().is_none());
        assert!(state.parse(b"hello").unwrap().is_none());
        assert!(state.parse(b"message,nochannel").is_err());
        assert!(state.parse(b"subscribe,chat,x").is_err());
        let state = StreamState {
            kind: Kind::Patterns,
            ..state
        };
        assert!(matches!(
            state.parse(b"pmessage,chat,chat,1").unwrap(),
            Some(SubscriptionEvent::PatternMessage { pattern, channel, payload })
                if pattern == "chat" && channel == "chat" && payload == "1"
        ));
    }

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let options = SubscribeOptions::new()
            .reconnect_backoff(Duration::from_millis(100), Duration::from_secs(1));
        for attempt in 0..30 {
            let delay = options.backoff(attempt);
            let cap = Duration::from_millis(100)
                .saturating_mul(1 << attempt.min(20))
                .min(Duration::from_secs(1));
            assert!(delay >= cap / 2 && delay <= cap, "{attempt}: {delay:?}");
        }
    }

    #[test]
    fn paths_are_percent_encoded() {
        assert_eq!(
            stream_path(Kind::Patterns, &["chat:*".into(), "a/b".into()]),
            "psubscribe/chat%3A%2A/a%2Fb"
        );
    }
}
