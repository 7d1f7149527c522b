//! `subscribe`/`psubscribe` against a real gateway (ordering, payloads, the gateway and Redis
//! restarted mid-stream, heartbeat timeouts), and against servers that misbehave on purpose: a
//! hand-written one that stalls or only sends keep-alives, wiremock for error statuses and
//! malformed streams.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use cache_upstash::{ErrorKind, Redis, SubscribeOptions, Subscription, SubscriptionEvent};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use upstash_gateway::{
    Gateway, RunningGateway,
    testing::{RedisServer, TestGateway, random_token},
};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{header, method, path},
};

use crate::{client_for, gateway};

/// How long any single expected event may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(15);

fn fast() -> SubscribeOptions {
    SubscribeOptions::new().reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
}

async fn next(sub: &mut Subscription) -> SubscriptionEvent {
    tokio::time::timeout(PATIENCE, sub.next())
        .await
        .expect("an event in time")
        .expect("the subscription is still running")
}

/// Waits for `Subscribed` on every target, skipping interruptions of failed attempts.
async fn until_subscribed(sub: &mut Subscription) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut confirmed = 0;
    while confirmed < sub.targets().len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not subscribed in time"
        );
        match next(sub).await {
            SubscriptionEvent::Subscribed { .. } => confirmed += 1,
            SubscriptionEvent::Interrupted { .. } => confirmed = 0,
            other => panic!("unexpected {other:?} before subscribed"),
        }
    }
}

/// The next event, which must be a message on `channel`; returns its payload.
async fn message(sub: &mut Subscription, channel: &str) -> Bytes {
    match next(sub).await {
        SubscriptionEvent::Message {
            channel: got,
            payload,
        } => {
            assert_eq!(got, channel);
            payload
        }
        other => panic!("expected a message on {channel}, got {other:?}"),
    }
}

/// The next event, which must be an interruption; returns its error kind.
async fn interrupted(sub: &mut Subscription) -> ErrorKind {
    match next(sub).await {
        SubscriptionEvent::Interrupted { reason, retry_in } => {
            assert!(retry_in.is_some(), "a transient failure is retried");
            reason.kind()
        }
        other => panic!("expected an interruption, got {other:?}"),
    }
}

#[tokio::test]
async fn messages_arrive_in_order() {
    let (_env, redis) = gateway().await;
    let mut sub = redis.subscribe(&["chat"]);
    match next(&mut sub).await {
        SubscriptionEvent::Subscribed { channel, count } => {
            assert_eq!((channel.as_str(), count), ("chat", 1));
        }
        other => panic!("expected subscribed, got {other:?}"),
    }
    let mut pipe = redis.pipeline();
    for i in 0..200 {
        pipe.publish("chat", format!("m{i}"));
    }
    pipe.publish("elsewhere", "not for us");
    pipe.exec().await.unwrap();
    assert_eq!(redis.publish("chat", "last").await.unwrap(), 1);
    for i in 0..200 {
        assert_eq!(message(&mut sub, "chat").await, format!("m{i}"));
    }
    assert_eq!(message(&mut sub, "chat").await, "last");
}

#[tokio::test]
async fn one_stream_for_several_channels() {
    let (_env, redis) = gateway().await;
    let mut sub = redis.subscribe(&["a", "b:c"]);
    let mut counts = Vec::new();
    for _ in 0..2 {
        match next(&mut sub).await {
            SubscriptionEvent::Subscribed { count, .. } => counts.push(count),
            other => panic!("expected subscribed, got {other:?}"),
        }
    }
    assert_eq!(counts, vec![1, 2]);
    redis.publish("b:c", "1").await.unwrap();
    redis.publish("a", "2").await.unwrap();
    assert_eq!(message(&mut sub, "b:c").await, "1");
    assert_eq!(message(&mut sub, "a").await, "2");
}

/// What the SSE protocol carries: text. Line breaks, commas, unicode and empty payloads arrive as
/// published; `\r\n` arrives as `\n`; bytes that are not UTF-8 arrive as U+FFFD.
#[tokio::test]
async fn payloads_with_newlines_unicode_and_binary() {
    let (_env, redis) = gateway().await;
    let mut sub = redis.subscribe(&["p"]);
    until_subscribed(&mut sub).await;
    let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (
            b"line1\nline2\n\nline4".to_vec(),
            b"line1\nline2\n\nline4".to_vec(),
        ),
        (b"trailing\n".to_vec(), b"trailing\n".to_vec()),
        (b"\n".to_vec(), b"\n".to_vec()),
        (b"".to_vec(), b"".to_vec()),
        (b"a,b,,c".to_vec(), b"a,b,,c".to_vec()),
        (
            "h\u{e9}llo \u{1F30D}, w\u{f6}rld \u{4E2D}\u{6587}"
                .as_bytes()
                .to_vec(),
            "h\u{e9}llo \u{1F30D}, w\u{f6}rld \u{4E2D}\u{6587}"
                .as_bytes()
                .to_vec(),
        ),
        (
            b"{\"json\":[1,\"x\\ny\"]}".to_vec(),
            b"{\"json\":[1,\"x\\ny\"]}".to_vec(),
        ),
        (
            b"data: not a field\n: nor a comment".to_vec(),
            b"data: not a field\n: nor a comment".to_vec(),
        ),
        (b"crlf\r\nline".to_vec(), b"crlf\nline".to_vec()),
        (b"lone\rcr".to_vec(), b"lone\rcr".to_vec()),
        (
            vec![0xff, 0xfe, b'x', 0x00, b'y'],
            "\u{FFFD}\u{FFFD}x\u{0}y".as_bytes().to_vec(),
        ),
    ];
    for (sent, _) in &cases {
        redis.publish("p", Bytes::from(sent.clone())).await.unwrap();
    }
    for (sent, expected) in &cases {
        let got = message(&mut sub, "p").await;
        assert_eq!(
            got.as_ref(),
            expected.as_slice(),
            "published {:?}",
            String::from_utf8_lossy(sent)
        );
    }
}

#[tokio::test]
async fn psubscribe_matches_patterns() {
    let (_env, redis) = gateway().await;
    let mut sub = redis.psubscribe(&["room:*"]);
    match next(&mut sub).await {
        SubscriptionEvent::Subscribed { channel, count } => {
            assert_eq!((channel.as_str(), count), ("room:*", 1));
        }
        other => panic!("expected subscribed, got {other:?}"),
    }
    redis.publish("room:1", "hello, room").await.unwrap();
    redis.publish("lobby", "not matched").await.unwrap();
    redis.publish("room:2", "a\nb").await.unwrap();
    for (want_channel, want_payload) in [("room:1", "hello, room"), ("room:2", "a\nb")] {
        match next(&mut sub).await {
            SubscriptionEvent::PatternMessage {
                pattern,
                channel,
                payload,
            } => {
                assert_eq!(pattern, "room:*");
                assert_eq!(channel, want_channel);
                assert_eq!(payload, want_payload);
            }
            other => panic!("expected a pattern message, got {other:?}"),
        }
    }
}

async fn start_gateway(redis: &RedisServer, token: &str, bind: &str) -> RunningGateway {
    Gateway::builder()
        .redis_url(redis.url())
        .token(token.to_owned())
        .bind(bind)
        .connect_timeout(Duration::from_secs(1))
        .redis_timeout(Duration::from_secs(2))
        .start()
        .await
        .expect("start the gateway")
}

#[tokio::test]
async fn gateway_killed_and_restarted_mid_stream() {
    let redis_server = RedisServer::start();
    let token = random_token();
    let gw = start_gateway(&redis_server, &token, "127.0.0.1:0").await;
    let addr = gw.addr();
    let redis = Redis::builder()
        .url(gw.url())
        .token(token.as_str())
        .retry(crate::fast_retries())
        .build()
        .unwrap();
    let mut sub = redis.subscribe_with(&["chat"], fast());
    until_subscribed(&mut sub).await;
    redis.publish("chat", "before").await.unwrap();
    assert_eq!(message(&mut sub, "chat").await, "before");

    // Dropping the gateway stops it without waiting: its streams end, its port closes.
    drop(gw);
    assert_eq!(interrupted(&mut sub).await, ErrorKind::Transport);
    // While it is down, every attempt fails and is reported; none yields anything else.
    let kind = interrupted(&mut sub).await;
    assert!(
        matches!(kind, ErrorKind::NotSent | ErrorKind::Transport),
        "{kind:?}"
    );

    let gw = start_gateway(&redis_server, &token, &addr.to_string()).await;
    until_subscribed(&mut sub).await;
    redis.publish("chat", "after").await.unwrap();
    assert_eq!(message(&mut sub, "chat").await, "after");
    gw.shutdown().await;
}

#[tokio::test]
async fn redis_restarted_behind_the_gateway() {
    let env = TestGateway::start_on(RedisServer::start_persistent(), |b| b).await;
    let redis = client_for(&env).build().unwrap();
    let mut sub = redis.subscribe_with(&["chat"], fast());
    until_subscribed(&mut sub).await;
    env.redis().kill();
    assert_eq!(interrupted(&mut sub).await, ErrorKind::Transport);
    env.redis().restart();
    until_subscribed(&mut sub).await;
    redis.publish("chat", "back").await.unwrap();
    assert_eq!(message(&mut sub, "chat").await, "back");
}

#[tokio::test]
async fn an_outage_answers_503_until_it_ends() {
    let (env, redis) = gateway().await;
    env.faults().start_outage(Duration::from_secs(600));
    let mut sub = redis.subscribe_with(&["chat"], fast());
    for _ in 0..3 {
        assert_eq!(interrupted(&mut sub).await, ErrorKind::Http);
    }
    env.faults().end_outage();
    until_subscribed(&mut sub).await;
    redis.publish("chat", "up").await.unwrap();
    assert_eq!(message(&mut sub, "chat").await, "up");
}

/// The gateway sends a keep-alive only every 15 s: an idle stream with a shorter heartbeat
/// timeout is declared dead, reopened, and still works.
#[tokio::test]
async fn idle_stream_past_the_heartbeat_timeout_is_reopened() {
    let (_env, redis) = gateway().await;
    let options = fast().heartbeat_timeout(Duration::from_millis(300));
    let mut sub = redis.subscribe_with(&["chat"], options);
    until_subscribed(&mut sub).await;
    match next(&mut sub).await {
        SubscriptionEvent::Interrupted { reason, .. } => {
            assert_eq!(reason.kind(), ErrorKind::Timeout);
            assert!(reason.to_string().contains("300ms"), "{reason}");
        }
        other => panic!("expected a heartbeat timeout, got {other:?}"),
    }
    until_subscribed(&mut sub).await;
}

#[tokio::test]
async fn dropping_the_subscription_unsubscribes() {
    let (_env, redis) = gateway().await;
    let mut sub = redis.subscribe(&["gone"]);
    until_subscribed(&mut sub).await;
    let numsub = || async {
        let reply: Vec<cache_upstash::Value> = redis
            .query(
                cache_upstash::Command::new("PUBSUB")
                    .arg("NUMSUB")
                    .arg("gone"),
            )
            .await
            .unwrap();
        match &reply[1] {
            cache_upstash::Value::Int(n) => *n,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(numsub().await, 1);
    drop(sub);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while numsub().await != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream stayed open"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn no_channels_is_an_error_and_the_end() {
    let (_env, redis) = gateway().await;
    for mut sub in [redis.subscribe(&[]), redis.psubscribe(&["ok", ""])] {
        match next(&mut sub).await {
            SubscriptionEvent::Interrupted { reason, retry_in } => {
                assert_eq!(reason.kind(), ErrorKind::InvalidRequest);
                assert_eq!(retry_in, None);
            }
            other => panic!("expected the error, got {other:?}"),
        }
        assert!(sub.next().await.is_none());
    }
}

/// A hand-written SSE server: answers each connection with the event-stream headers, then
/// `script` (pieces written with a pause between them), then holds the connection open.
async fn sse_server(
    script: Vec<(Duration, &'static str)>,
) -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let script = script.clone();
            tokio::spawn(async move {
                let mut request = vec![0u8; 4096];
                let mut read = 0;
                // Headers and the `[]` body.
                while !request[..read].ends_with(b"[]") {
                    match socket.read(&mut request[read..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read += n,
                    }
                }
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                            cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for (pause, piece) in script {
                    tokio::time::sleep(pause).await;
                    let chunk = format!("{:x}\r\n{piece}\r\n", piece.len());
                    if socket.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                }
                // Stall: never another byte, never closed (until the client goes).
                let _ = socket.read(&mut request).await;
            });
        }
    });
    (url, connections, task)
}

#[tokio::test]
async fn a_stalled_stream_is_detected_and_reopened() {
    let (url, connections, server) = sse_server(vec![(
        Duration::ZERO,
        "data: subscribe,chat,1\n\ndata: message,chat,hi\n\n",
    )])
    .await;
    let redis = Redis::builder().url(url).token("t").build().unwrap();
    let options = fast().heartbeat_timeout(Duration::from_millis(300));
    let mut sub = redis.subscribe_with(&["chat"], options);
    until_subscribed(&mut sub).await;
    assert_eq!(message(&mut sub, "chat").await, "hi");
    assert_eq!(interrupted(&mut sub).await, ErrorKind::Timeout);
    until_subscribed(&mut sub).await;
    assert_eq!(message(&mut sub, "chat").await, "hi");
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    server.abort();
}

/// Keep-alive comments are bytes: a stream that only sends them, for far longer than the
/// heartbeat timeout, stays up.
#[tokio::test]
async fn keepalive_comments_count_as_heartbeat() {
    let mut script = vec![(Duration::ZERO, "data: subscribe,chat,1\n\n")];
    // 1.5 s of keep-alives every 100 ms, against a 400 ms heartbeat timeout.
    script.extend(std::iter::repeat_n(
        (Duration::from_millis(100), ": keepalive\n\n"),
        15,
    ));
    script.push((Duration::ZERO, "data: message,chat,still here\n\n"));
    let (url, connections, server) = sse_server(script).await;
    let redis = Redis::builder().url(url).token("t").build().unwrap();
    let options = fast().heartbeat_timeout(Duration::from_millis(400));
    let mut sub = redis.subscribe_with(&["chat"], options);
    until_subscribed(&mut sub).await;
    // Any interruption before this message would fail the test here.
    assert_eq!(message(&mut sub, "chat").await, "still here");
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    server.abort();
}

const TOKEN: &str = "subscribe-secret-token";

fn mock_client(server: &MockServer) -> Redis {
    Redis::builder()
        .url(server.uri())
        .token(TOKEN)
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap()
}

#[tokio::test]
async fn request_shape_and_error_statuses() {
    let server = MockServer::start().await;
    // The headers and method of `@upstash/redis`'s subscriber.
    Mock::given(method("POST"))
        .and(path("/subscribe/chat"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(header("accept", "text/event-stream"))
        .respond_with(
            ResponseTemplate::new(503).set_body_json(serde_json::json!({"error": "ERR busy"})),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/subscribe/chat"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(serde_json::json!({"error": "Unauthorized"})),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/subscribe/chat"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            "data: subscribe,chat,1\n\ndata: message,chat,ok\n\n",
            "text/event-stream",
        ))
        .mount(&server)
        .await;
    let redis = mock_client(&server);
    let mut sub = redis.subscribe_with(&["chat"], fast());
    let mut reasons = Vec::new();
    for expected in [ErrorKind::Http, ErrorKind::Unauthorized] {
        match next(&mut sub).await {
            SubscriptionEvent::Interrupted { reason, retry_in } => {
                assert_eq!(reason.kind(), expected);
                assert!(retry_in.is_some());
                reasons.push(reason);
            }
            other => panic!("expected {expected:?}, got {other:?}"),
        }
    }
    until_subscribed(&mut sub).await;
    assert_eq!(message(&mut sub, "chat").await, "ok");
    // The body ended: the server closed the stream.
    assert_eq!(interrupted(&mut sub).await, ErrorKind::Transport);
    let shown = format!(
        "{reasons:?} {} {} {sub:?} {redis:?}",
        reasons[0], reasons[1]
    );
    assert!(
        shown.contains("503") && shown.contains("Unauthorized"),
        "{shown}"
    );
    assert!(!shown.contains(TOKEN), "{shown}");
}

#[tokio::test]
async fn malformed_streams_interrupt() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/subscribe/chat"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"result": 1})))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/subscribe/chat"))
        .respond_with(
            ResponseTemplate::new(200)
                // A message without a payload separator: it cannot be told what it carried.
                .set_body_raw(
                    "data: subscribe,chat,1\n\ndata: message,chat\n\n",
                    "text/event-stream",
                ),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/subscribe/chat"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            format!("data: message,chat,{}\n\n", "x".repeat(200)),
            "text/event-stream",
        ))
        .mount(&server)
        .await;
    let redis = mock_client(&server);
    let mut sub = redis.subscribe_with(&["chat"], fast().max_event_bytes(100));
    assert_eq!(interrupted(&mut sub).await, ErrorKind::UnexpectedResponse);
    until_subscribed(&mut sub).await;
    assert_eq!(interrupted(&mut sub).await, ErrorKind::UnexpectedResponse);
    // Oversized event.
    assert_eq!(interrupted(&mut sub).await, ErrorKind::UnexpectedResponse);
}
