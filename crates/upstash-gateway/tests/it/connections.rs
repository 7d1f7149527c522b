//! Client connection limits: slow, silent and idle connections are closed, and the cap holds,
//! while a subscriber's long stream is never cut by them.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::{Instant, timeout},
};
use upstash_gateway::testing::TestGateway;

/// Generous bound on "closed within the timeout": the machine may be busy.
const SLACK: Duration = Duration::from_secs(4);

/// Reads until the gateway closes the connection; returns what it sent and how long it took.
async fn read_until_closed(stream: &mut TcpStream, bound: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    timeout(bound, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .expect("the gateway should have closed the connection");
    (
        String::from_utf8_lossy(&received).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn slow_silent_and_idle_connections_are_closed_but_streams_are_not() {
    let env = TestGateway::start_with(|b| {
        b.header_read_timeout(Duration::from_millis(500))
            .idle_timeout(Duration::from_secs(2))
            .stream_keepalive(Duration::from_secs(60))
    })
    .await;
    let addr = env.gateway().addr();
    let auth = format!("authorization: Bearer {}\r\n", env.token());

    let mut slowloris = TcpStream::connect(addr).await.unwrap();
    slowloris
        .write_all(b"POST / HTTP/1.1\r\nhost: t\r\nx-slow: ")
        .await
        .unwrap();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(
        format!("POST / HTTP/1.1\r\nhost: t\r\n{auth}content-length: 8\r\n\r\n[\"PING\"]")
            .as_bytes(),
    )
    .await
    .unwrap();
    // The PING is answered at once, so the idle timer starts about now.
    let idle_since = std::time::Instant::now();
    // A subscriber that hears nothing for longer than both timeouts stays subscribed.
    let mut subscriber = TcpStream::connect(addr).await.unwrap();
    subscriber
        .write_all(format!("POST /subscribe/quiet HTTP/1.1\r\nhost: t\r\n{auth}accept: text/event-stream\r\ncontent-length: 0\r\n\r\n").as_bytes())
        .await
        .unwrap();

    let (sent, _) = read_until_closed(&mut slowloris, SLACK).await;
    assert_eq!(sent, "");
    read_until_closed(&mut silent, SLACK).await;
    let (answer, _) = read_until_closed(&mut idle, SLACK + Duration::from_secs(2)).await;
    let idle_for = idle_since.elapsed();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#"{"result":"PONG"}"#), "{answer}");
    // Closed by the 2 s idle timeout, not by the 500 ms header-read one (a little slack for the
    // answer's own round trip, which the timer does not count).
    assert!(
        idle_for >= Duration::from_millis(1800),
        "closed after {idle_for:?} idle"
    );

    let mut chunk = [0u8; 4096];
    let mut heard = Vec::new();
    let quiet = timeout(Duration::from_millis(500), async {
        loop {
            let n = subscriber.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the stream was closed");
            heard.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    assert!(quiet.is_err());
    let heard = String::from_utf8_lossy(&heard);
    assert!(heard.starts_with("HTTP/1.1 200"), "{heard}");
}

#[tokio::test]
async fn client_connections_over_the_cap_wait() {
    let env = TestGateway::start_with(|b| b.max_connections(1)).await;
    let addr = env.gateway().addr();
    let request = format!(
        "POST / HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {}\r\ncontent-length: 8\r\n\r\n[\"PING\"]",
        env.token()
    );
    let mut first = TcpStream::connect(addr).await.unwrap();
    first.write_all(request.as_bytes()).await.unwrap();
    let mut chunk = [0u8; 4096];
    assert!(first.read(&mut chunk).await.unwrap() > 0);
    let mut second = TcpStream::connect(addr).await.unwrap();
    second.write_all(request.as_bytes()).await.unwrap();
    assert!(
        timeout(Duration::from_millis(500), second.read(&mut chunk))
            .await
            .is_err(),
        "served over the cap"
    );
    drop(first);
    let n = timeout(SLACK, second.read(&mut chunk))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&chunk[..n]).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn limits_that_cannot_work_are_refused_at_start() {
    for configure in [
        (|b: upstash_gateway::GatewayBuilder| b.max_connections(0))
            as fn(upstash_gateway::GatewayBuilder) -> upstash_gateway::GatewayBuilder,
        |b| b.header_read_timeout(Duration::ZERO),
        |b| b.idle_timeout(Duration::ZERO),
    ] {
        let err = configure(
            upstash_gateway::Gateway::builder()
                .token("t")
                .bind("127.0.0.1:0"),
        )
        .start()
        .await
        .unwrap_err();
        assert_eq!(err.kind(), upstash_gateway::ErrorKind::Config, "{err}");
    }
}
