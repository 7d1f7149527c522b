//! SSE endpoints: `/subscribe`, `/psubscribe`, `/monitor` — the format, and how streams hold up
//! as the transport of a multi-instance backplane: keep-alives, clients that go away, hundreds of
//! subscribers, slow readers, line breaks in messages, Redis and the gateway going away.

use std::time::Duration;

use serde_json::json;
use tokio::{io::AsyncReadExt, net::TcpStream};
use upstash_gateway::testing::TestGateway;

use crate::{
    client::{Client, open},
    probe::{DEADLINE, eventually, gateway_connections, redis},
};

/// Reads an SSE response from a raw HTTP stream, de-chunking the body.
struct SseReader {
    stream: TcpStream,
    raw: Vec<u8>,
    head: Option<String>,
    text: String,
    /// The terminating zero-size chunk arrived: the server ended the stream cleanly.
    ended: bool,
    /// The socket reached EOF.
    eof: bool,
}

impl SseReader {
    async fn open(client: &Client, path: &str) -> SseReader {
        let auth = format!("Bearer {}", client.token);
        let headers = [
            ("Authorization", auth.as_str()),
            ("Accept", "text/event-stream"),
            ("Upstash-Encoding", "base64"),
        ];
        let stream = open(client.addr, "POST", path, &headers, b"[]").await;
        SseReader {
            stream,
            raw: Vec::new(),
            head: None,
            text: String::new(),
            ended: false,
            eof: false,
        }
    }

    /// Reads more from the socket and decodes what it can; `false` at EOF.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            self.eof = true;
            return false;
        }
        self.raw.extend_from_slice(&chunk[..n]);
        self.decode();
        true
    }

    fn decode(&mut self) {
        if self.head.is_none() {
            let Some(end) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                return;
            };
            self.head = Some(String::from_utf8_lossy(&self.raw[..end]).into_owned());
            self.raw.drain(..end + 4);
        }
        while !self.ended {
            let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let size_text = String::from_utf8_lossy(&self.raw[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
            if self.raw.len() < line_end + 2 + size + 2 {
                return;
            }
            let data = self.raw[line_end + 2..line_end + 2 + size].to_vec();
            self.raw.drain(..line_end + 2 + size + 2);
            if size == 0 {
                self.ended = true;
            } else {
                self.text
                    .push_str(std::str::from_utf8(&data).expect("events are UTF-8"));
            }
        }
    }

    async fn head(&mut self) -> String {
        tokio::time::timeout(DEADLINE, async {
            while self.head.is_none() {
                assert!(self.fill().await, "stream ended before the head");
            }
        })
        .await
        .expect("response head in time");
        self.head.clone().expect("head")
    }

    /// The next line of the body (without its `\n`), or `None` when the stream ended.
    async fn next_line(&mut self) -> Option<String> {
        tokio::time::timeout(DEADLINE, async {
            loop {
                if let Some(end) = self.text.find('\n') {
                    let line: String = self.text.drain(..=end).collect();
                    return Some(line[..line.len() - 1].to_owned());
                }
                if self.ended || !self.fill().await {
                    return None;
                }
            }
        })
        .await
        .expect("a line of the stream in time")
    }

    /// The lines of the next event (comments included), or `None` when the stream ended.
    async fn next_event(&mut self) -> Option<Vec<String>> {
        let mut lines = Vec::new();
        loop {
            match self.next_line().await {
                Some(line) if line.is_empty() && lines.is_empty() => {}
                Some(line) if line.is_empty() => return Some(lines),
                Some(line) => lines.push(line),
                None => {
                    assert!(lines.is_empty(), "stream ended inside an event: {lines:?}");
                    return None;
                }
            }
        }
    }

    /// The data of the next event that has data, its `data:` lines joined with `\n` as the SSE
    /// format says; comments (keep-alives) are skipped.
    async fn next_data(&mut self) -> String {
        // One deadline for the whole wait: keep-alives alone must not keep a test waiting.
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let Some(event) = self.next_event().await else {
                panic!(
                    "an event, not the end of the stream (response head: {:?}, unread: {:?})",
                    self.head,
                    String::from_utf8_lossy(&self.raw)
                );
            };
            let data: Vec<&str> = event
                .iter()
                .filter_map(|line| line.strip_prefix("data: "))
                .collect();
            if !data.is_empty() {
                return data.join("\n");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "only keep-alives for {DEADLINE:?}"
            );
        }
    }

    /// Reads until the server closes; returns how many body bytes were still to come.
    async fn read_to_end(&mut self) -> usize {
        let before = self.raw.len() + self.text.len();
        let mut total = 0;
        tokio::time::timeout(DEADLINE, async {
            let mut chunk = [0u8; 64 * 1024];
            loop {
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        })
        .await
        .expect("the server closes the stream in time");
        self.eof = true;
        before + total
    }
}

fn is_subscriber(line: &str) -> bool {
    line.split(' ')
        .any(|field| field.starts_with("sub=") && field != "sub=0")
}

#[tokio::test]
async fn subscribe_streams_published_messages_in_upstash_format() {
    let env = TestGateway::start().await;
    let client = Client::new(&env);
    let mut events = SseReader::open(&client, "/subscribe/chat").await;
    let head = events.head().await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );
    assert_eq!(events.next_data().await, "subscribe,chat,1");

    let published = client
        .ok(json!(["PUBLISH", "chat", "{\"text\":\"hi, there\"}"]))
        .await;
    assert_eq!(published, json!(1));
    // Not base64, even though the request asked for it: the SDK does not decode events.
    assert_eq!(
        events.next_data().await,
        "message,chat,{\"text\":\"hi, there\"}"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn psubscribe_and_monitor_stream_too() {
    let env = TestGateway::start().await;
    let client = Client::new(&env);
    let mut pattern = SseReader::open(&client, "/psubscribe/room:*").await;
    assert_eq!(pattern.next_data().await, "psubscribe,room:*,1");
    let mut monitor = SseReader::open(&client, "/monitor").await;
    assert_eq!(monitor.next_data().await, "\"OK\"");

    client.ok(json!(["PUBLISH", "room:42", "hello"])).await;
    assert_eq!(pattern.next_data().await, "pmessage,room:*,room:42,hello");
    let line = monitor.next_data().await;
    assert!(line.contains("\"PUBLISH\" \"room:42\" \"hello\""), "{line}");
    env.shutdown().await;
}

#[tokio::test]
async fn streams_require_auth_and_end_on_shutdown() {
    let env = TestGateway::start().await;
    let client = Client::new(&env);
    let stranger = Client {
        addr: client.addr,
        token: "wrong".into(),
    };
    let mut refused = SseReader::open(&stranger, "/subscribe/chat").await;
    assert!(refused.head().await.starts_with("HTTP/1.1 401"));

    let mut events = SseReader::open(&client, "/subscribe/chat").await;
    assert_eq!(events.next_data().await, "subscribe,chat,1");
    // Graceful shutdown must not wait forever on an open stream.
    tokio::time::timeout(Duration::from_secs(5), env.shutdown())
        .await
        .expect("shutdown ends open streams");
    assert_eq!(events.next_event().await, None);
    assert!(events.ended, "the stream ended cleanly, not cut off");
}

#[tokio::test]
async fn an_idle_stream_gets_keepalive_comments_at_the_configured_interval() {
    let env = TestGateway::start_with(|b| b.stream_keepalive(Duration::from_millis(100))).await;
    let client = Client::new(&env);
    let mut events = SseReader::open(&client, "/subscribe/quiet").await;
    assert_eq!(events.next_data().await, "subscribe,quiet,1");
    // Nothing is published: the next events can only be keep-alives, and they keep coming.
    for _ in 0..3 {
        assert_eq!(
            events.next_event().await,
            Some(vec![": keepalive".to_owned()])
        );
    }
    // A message still gets through between them.
    client.ok(json!(["PUBLISH", "quiet", "now"])).await;
    assert_eq!(events.next_data().await, "message,quiet,now");
    env.shutdown().await;
}

#[tokio::test]
async fn a_client_that_went_away_frees_its_redis_connection_and_stream_slot() {
    let env = TestGateway::start_with(|b| {
        b.max_streams(1)
            .stream_keepalive(Duration::from_millis(100))
    })
    .await;
    let client = Client::new(&env);
    let mut events = SseReader::open(&client, "/subscribe/gone").await;
    assert_eq!(events.next_data().await, "subscribe,gone,1");
    let subscribers = gateway_connections(&env).await;
    assert_eq!(
        subscribers.iter().filter(|c| is_subscriber(c)).count(),
        1,
        "{subscribers:#?}"
    );
    let full = client.request("POST", "/subscribe/other", b"[]").await;
    assert_eq!(full.status, 503, "the only slot is taken");

    drop(events);
    eventually("redis loses the dead client's subscription", || async {
        !gateway_connections(&env)
            .await
            .iter()
            .any(|c| is_subscriber(c))
    })
    .await;
    // The slot is free again: a new subscriber gets a live stream.
    let mut again = SseReader::open(&client, "/subscribe/gone").await;
    assert!(again.head().await.starts_with("HTTP/1.1 200"));
    assert_eq!(again.next_data().await, "subscribe,gone,1");
    env.shutdown().await;
}

#[tokio::test]
async fn line_breaks_commas_and_unicode_in_messages_survive_sse_framing() {
    let env = TestGateway::start().await;
    let client = Client::new(&env);
    let mut events = SseReader::open(&client, "/subscribe/text").await;
    assert_eq!(events.next_data().await, "subscribe,text,1");
    let mut pattern = SseReader::open(&client, "/psubscribe/te*").await;
    assert_eq!(pattern.next_data().await, "psubscribe,te*,1");

    let cases = [
        ("one\ntwo", "one\ntwo"),
        ("crlf\r\nline", "crlf\nline"),
        ("lone\rcr", "lone\ncr"),
        ("\n\nblank lines\n\n", "\n\nblank lines\n\n"),
        (
            "data: forged,text,x\ndata: y",
            "data: forged,text,x\ndata: y",
        ),
        ("a, b,, c", "a, b,, c"),
        ("{\"t\":\"x\\ny\"}", "{\"t\":\"x\\ny\"}"),
        ("héllo, 👋 \u{2028} 世界", "héllo, 👋 \u{2028} 世界"),
    ];
    for (sent, _) in &cases {
        assert_eq!(client.ok(json!(["PUBLISH", "text", sent])).await, json!(2));
    }
    for (sent, expected) in &cases {
        assert_eq!(
            events.next_data().await,
            format!("message,text,{expected}"),
            "{sent:?}"
        );
        assert_eq!(
            pattern.next_data().await,
            format!("pmessage,te*,text,{expected}"),
            "{sent:?}"
        );
    }
    // Bytes that are not UTF-8 cannot be SSE text: each invalid sequence becomes U+FFFD.
    let binary = client.request("POST", "/publish/text/%FF%FEok", b"").await;
    assert_eq!(binary.json(), json!({"result": 2}));
    assert_eq!(events.next_data().await, "message,text,\u{FFFD}\u{FFFD}ok");
    // Each event is exactly one event: nothing was split off into an event of its own.
    client.ok(json!(["PUBLISH", "text", "end"])).await;
    assert_eq!(events.next_data().await, "message,text,end");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_subscribers_each_receive_every_message_in_order() {
    const SUBSCRIBERS: usize = 300;
    const MESSAGES: usize = 100;
    // Generous setup limits: hundreds of Redis connections open at once on a busy machine.
    let env = TestGateway::start_with(|b| {
        b.max_streams(SUBSCRIBERS)
            .connect_timeout(Duration::from_secs(10))
            .redis_timeout(Duration::from_secs(10))
    })
    .await;
    let client = Client::new(&env);

    let mut readers = Vec::with_capacity(SUBSCRIBERS);
    for _ in 0..SUBSCRIBERS {
        let client = Client {
            addr: client.addr,
            token: client.token.clone(),
        };
        readers.push(tokio::spawn(async move {
            let mut events = SseReader::open(&client, "/subscribe/burst").await;
            assert_eq!(events.next_data().await, "subscribe,burst,1");
            events
        }));
    }
    let mut subscribed = Vec::with_capacity(SUBSCRIBERS);
    for reader in readers {
        subscribed.push(reader.await.expect("subscriber task"));
    }
    // The cap is exact, and one more is a clear 503 at once, not a hang.
    let over = client.request("POST", "/subscribe/burst", b"[]").await;
    assert_eq!(over.status, 503);
    assert!(over.error().contains("stream slots"), "{}", over.error());

    let burst: Vec<serde_json::Value> = (0..MESSAGES)
        .map(|i| json!(["PUBLISH", "burst", format!("m{i}")]))
        .collect();
    let published = client
        .post_json("/pipeline", &serde_json::Value::Array(burst), &[])
        .await;
    let receivers: Vec<serde_json::Value> = published
        .json()
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["result"].clone())
        .collect();
    assert_eq!(receivers, vec![json!(SUBSCRIBERS); MESSAGES]);

    let mut checks = Vec::with_capacity(SUBSCRIBERS);
    for mut events in subscribed {
        checks.push(tokio::spawn(async move {
            for i in 0..MESSAGES {
                assert_eq!(events.next_data().await, format!("message,burst,m{i}"));
            }
        }));
    }
    for check in checks {
        check
            .await
            .expect("every subscriber got every message in order");
    }
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_too_far_behind_is_disconnected_instead_of_buffered() {
    const BUFFER: usize = 256 * 1024;
    let env = TestGateway::start_with(|b| b.max_streams(1).stream_buffer_bytes(BUFFER)).await;
    // Redis's own limit for slow subscribers is switched off: only the gateway's can act.
    assert_eq!(
        redis(
            env.redis().addr(),
            &[
                b"CONFIG",
                b"SET",
                b"client-output-buffer-limit",
                b"pubsub 0 0 0"
            ]
        )
        .await,
        b"+OK\r\n"
    );
    let client = Client::new(&env);
    let mut slow = SseReader::open(&client, "/subscribe/firehose").await;
    assert_eq!(slow.next_data().await, "subscribe,firehose,1");

    // The reader stops reading. Publish until Redis reports nobody is subscribed any more: the
    // gateway closed its Redis connection. Far more than socket buffers can hold is allowed
    // before that counts as unbounded buffering.
    let message = vec![b'x'; 64 * 1024];
    let limit = 256 * 1024 * 1024;
    let mut published = 0;
    loop {
        let receivers = redis(env.redis().addr(), &[b"PUBLISH", b"firehose", &message]).await;
        published += message.len();
        if receivers == b":0\r\n" {
            break;
        }
        assert_eq!(receivers, b":1\r\n");
        assert!(
            published < limit,
            "the gateway kept buffering for a reader that does not read ({published} bytes)"
        );
    }
    // The slot is free for a reader that keeps up.
    let mut fresh = SseReader::open(&client, "/subscribe/firehose").await;
    assert_eq!(fresh.next_data().await, "subscribe,firehose,1");
    client.ok(json!(["PUBLISH", "firehose", "hi"])).await;
    assert_eq!(fresh.next_data().await, "message,firehose,hi");

    // The slow reader gets what was already on its way, then the end of the stream.
    let rest = slow.read_to_end().await;
    assert!(rest < published, "got {rest} of {published} bytes");
    env.shutdown().await;
}

#[tokio::test]
async fn a_stream_ends_cleanly_when_redis_goes_away() {
    let env = TestGateway::start().await;
    let client = Client::new(&env);
    let mut events = SseReader::open(&client, "/subscribe/chat").await;
    assert_eq!(events.next_data().await, "subscribe,chat,1");
    client.ok(json!(["PUBLISH", "chat", "before"])).await;
    // Redis writes PUBLISH's reply before the subscriber's message; a second round trip makes
    // sure that write happened too (all pending replies go out before the next command is read),
    // so the kill cannot land between the two on a loaded machine.
    assert_eq!(redis(env.redis().addr(), &[b"PING"]).await, b"+PONG\r\n");
    env.redis().kill();
    // What was sent before Redis died is delivered, then the stream ends (the client then
    // reconnects, and gets a 503 until Redis is back).
    assert_eq!(events.next_data().await, "message,chat,before");
    assert_eq!(events.next_event().await, None);
    assert!(
        events.ended,
        "the stream ended with the last chunk, not a reset"
    );
    let refused = client.request("POST", "/subscribe/chat", b"[]").await;
    assert_eq!(refused.status, 503);

    env.redis().restart();
    let mut again = SseReader::open(&client, "/subscribe/chat").await;
    assert_eq!(again.next_data().await, "subscribe,chat,1");
    env.shutdown().await;
}

#[tokio::test]
async fn a_stream_ends_when_redis_stops_answering_without_closing() {
    // A frozen Redis (SIGSTOP) keeps its sockets open and sends nothing, like a partition: only
    // the gateway's own PING on the subscribed connection can tell.
    let env = TestGateway::start_with(|b| b.stream_keepalive(Duration::from_millis(100))).await;
    let client = Client::new(&env);
    let mut events = SseReader::open(&client, "/subscribe/chat").await;
    assert_eq!(events.next_data().await, "subscribe,chat,1");
    let mut monitor = SseReader::open(&client, "/monitor").await;
    assert_eq!(monitor.next_data().await, "\"OK\"");
    // Pings are answered and their pongs are not events: only keep-alives show while quiet.
    for _ in 0..3 {
        assert_eq!(
            events.next_event().await,
            Some(vec![": keepalive".to_owned()])
        );
    }
    env.redis().freeze();
    // Keep-alives keep coming while the gateway waits for its PING's answer; then the end.
    let deadline = std::time::Instant::now() + DEADLINE;
    while let Some(event) = events.next_event().await {
        assert_eq!(event, vec![": keepalive".to_owned()]);
        assert!(
            std::time::Instant::now() < deadline,
            "the stream stays open with a frozen redis behind it"
        );
    }
    assert!(
        events.ended,
        "the stream ended with the last chunk, not a reset"
    );
    env.redis().thaw();
    let mut again = SseReader::open(&client, "/subscribe/chat").await;
    assert_eq!(again.next_data().await, "subscribe,chat,1");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_many_open_streams_without_waiting_for_them() {
    let env = TestGateway::start().await;
    let client = Client::new(&env);
    let mut streams = Vec::new();
    for i in 0..50 {
        let mut events = SseReader::open(&client, &format!("/subscribe/c{i}")).await;
        assert_eq!(events.next_data().await, format!("subscribe,c{i},1"));
        streams.push(events);
    }
    // Far less than the 10 s grace for in-flight requests: open streams are not waited for.
    tokio::time::timeout(Duration::from_secs(5), env.shutdown())
        .await
        .expect("shutdown does not hang on open streams");
    for events in &mut streams {
        assert_eq!(events.next_event().await, None);
        assert!(events.ended);
    }
}
