//! Connection limits of the real binary (`HTTP_HEADER_READ_TIMEOUT_SECS`, `HTTP_IDLE_TIMEOUT_SECS`,
//! `REQUEST_TIMEOUT_SECS`, `MAX_CONNECTIONS`): slow, silent and idle connections are closed,
//! a trickled body is cut, and connections (WebSocket sessions included) are capped.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::{Instant, sleep, timeout},
};

use crate::support::{Db, Server, TestDb};

/// Generous bound on "closed within the timeout": the machine may be busy.
const SLACK: Duration = Duration::from_secs(4);

fn addr(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection; returns what it sent and how long it took.
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
    .expect("the server should have closed the connection");
    (
        String::from_utf8_lossy(&received).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn slow_silent_and_idle_connections_are_closed_and_trickled_bodies_cut() {
    let db = TestDb::create(Db::Sqlite).await.unwrap();
    let server = Server::start(
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("HTTP_HEADER_READ_TIMEOUT_SECS", "1"),
            ("HTTP_IDLE_TIMEOUT_SECS", "3"),
            ("REQUEST_TIMEOUT_SECS", "1"),
        ],
        None,
    )
    .await;
    let addr = addr(&server);

    // Half a request head, then nothing.
    let mut slowloris = TcpStream::connect(&addr).await.unwrap();
    slowloris
        .write_all(b"GET /health HTTP/1.1\r\nhost: t\r\nx-slow: ")
        .await
        .unwrap();
    // Connected, nothing sent.
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    // A complete head announcing a body that never comes in full.
    let mut trickle = TcpStream::connect(&addr).await.unwrap();
    trickle
        .write_all(
            b"POST /api/v1/users HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"name\":",
        )
        .await
        .unwrap();
    // One request answered, then idle.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    // Answered at once, so the idle timer starts about now.
    let idle_since = std::time::Instant::now();

    let (sent, _) = read_until_closed(&mut slowloris, SLACK).await;
    assert_eq!(sent, "", "no answer to half a head");
    read_until_closed(&mut silent, SLACK).await;
    let (answer, _) = read_until_closed(&mut trickle, SLACK).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains(r#""code":"timeout""#), "{answer}");
    // The idle connection outlives the header-read timeout and closes after the idle one.
    let (answer, _) = read_until_closed(&mut idle, SLACK + Duration::from_secs(3)).await;
    let idle_for = idle_since.elapsed();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Closed by the 3 s idle timeout, not by a 1 s one (slack for the answer's round trip).
    assert!(
        idle_for >= Duration::from_millis(2500),
        "closed after {idle_for:?} idle"
    );
}

#[tokio::test]
async fn websocket_sessions_count_against_the_connection_cap() {
    let db = TestDb::create(Db::Sqlite).await.unwrap();
    let server = Server::start(
        &[("DATABASE_URL", db.url.as_str()), ("MAX_CONNECTIONS", "2")],
        None,
    )
    .await;
    // Let the readiness probe's connection go (it is dropped with its client).
    sleep(Duration::from_millis(200)).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let registered: Value = client
        .post(server.api("/users"))
        .json(&json!({"name": "capped"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = registered["token"].as_str().unwrap().to_owned();
    let ws_url = format!("ws://{}/api/v1/ws?token={token}", addr(&server));
    let (first, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    let (second, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();

    let health = || client.get(format!("{}/health", server.base)).send();
    let waiting = timeout(Duration::from_millis(700), health()).await;
    assert!(waiting.is_err(), "served over the cap: {waiting:?}");
    drop(first);
    let served = timeout(SLACK, health())
        .await
        .expect("served once a slot frees");
    assert!(served.unwrap().status().is_success());
    drop(second);
}
