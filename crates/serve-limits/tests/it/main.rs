//! `serve` against real sockets: each limit closes what it should, and nothing else.

use std::{net::SocketAddr, time::Duration};

use axum::{Router, body::Body, extract::ConnectInfo, routing::get};
use serve_limits::{ServerLimits, serve};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::oneshot,
    task::JoinHandle,
    time::{Instant, sleep, timeout},
};

/// Generous bound for "closed within the timeout": the machine may be busy.
const SLACK: Duration = Duration::from_secs(3);

const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: t\r\n\r\n";

fn app() -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        )
        .route(
            "/slow-stream",
            get(|| async {
                // Five chunks, 200 ms apart: longer than the timers of the tests that use it.
                let chunks = futures_util::stream::unfold(0u32, |sent| async move {
                    if sent == 5 {
                        return None;
                    }
                    sleep(Duration::from_millis(200)).await;
                    Some((Ok::<_, std::io::Error>("chunk\n"), sent + 1))
                });
                Body::from_stream(chunks)
            }),
        )
}

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start(limits: ServerLimits) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, app(), limits, async move {
        let _ = stopped.await;
    }));
    Server {
        addr,
        stop: Some(stop),
        task,
    }
}

fn limits(header_read: Duration, idle: Duration) -> ServerLimits {
    ServerLimits::default()
        .with_header_read_timeout(header_read)
        .with_idle_timeout(idle)
}

/// Reads one response with a `content-length` body; `None` if the connection closed first.
async fn read_response(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= head_end + 4 + length {
                return Some(text);
            }
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Waits for the server to close `stream` (EOF or reset), returning how long that took.
async fn closed_within(stream: &mut TcpStream, bound: Duration) -> Duration {
    let started = Instant::now();
    let mut chunk = [0u8; 1024];
    timeout(bound, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the server should have closed the connection");
    started.elapsed()
}

async fn still_open(stream: &mut TcpStream, for_: Duration) -> bool {
    let mut chunk = [0u8; 1];
    timeout(for_, stream.read(&mut chunk)).await.is_err()
}

#[tokio::test]
async fn a_half_sent_request_head_is_closed_after_the_header_read_timeout() {
    let server = start(limits(Duration::from_millis(400), Duration::from_secs(60))).await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nhost: t\r\nx-a: ")
        .await
        .unwrap();
    // Trickling more header bytes does not extend it.
    for _ in 0..3 {
        sleep(Duration::from_millis(100)).await;
        let _ = slow.write_all(b"a").await;
    }
    let took = closed_within(&mut slow, SLACK).await;
    assert!(took < SLACK, "{took:?}");
    // A complete request on another connection is served.
    let mut ok = TcpStream::connect(server.addr).await.unwrap();
    ok.write_all(GET).await.unwrap();
    assert!(read_response(&mut ok).await.unwrap().ends_with("ok"));
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_read_timeout() {
    let server = start(limits(Duration::from_millis(300), Duration::from_secs(60))).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    closed_within(&mut silent, SLACK).await;
    drop(server);
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_after_the_idle_timeout_not_the_header_one() {
    let server = start(limits(
        Duration::from_millis(200),
        Duration::from_millis(1500),
    ))
    .await;
    let mut client = TcpStream::connect(server.addr).await.unwrap();
    client.write_all(GET).await.unwrap();
    assert!(read_response(&mut client).await.unwrap().ends_with("ok"));
    // Idle for well over the header-read timeout: still open, and serves the next request.
    assert!(still_open(&mut client, Duration::from_millis(700)).await);
    client.write_all(GET).await.unwrap();
    assert!(read_response(&mut client).await.unwrap().ends_with("ok"));
    // Then idle past the idle timeout: closed.
    let took = closed_within(&mut client, Duration::from_millis(1500) + SLACK).await;
    assert!(
        took >= Duration::from_millis(1000),
        "closed early: {took:?}"
    );
}

#[tokio::test]
async fn a_response_streaming_for_longer_than_both_timeouts_is_not_cut() {
    let server = start(limits(
        Duration::from_millis(150),
        Duration::from_millis(150),
    ))
    .await;
    let mut client = TcpStream::connect(server.addr).await.unwrap();
    client
        .write_all(b"GET /slow-stream HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    timeout(Duration::from_secs(10), client.read_to_string(&mut body))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(body.matches("\r\nchunk\n").count(), 5, "{body}");
}

#[tokio::test]
async fn connections_over_the_cap_wait_until_one_closes() {
    let server = start(ServerLimits::default().with_max_connections(2)).await;
    let mut first = TcpStream::connect(server.addr).await.unwrap();
    let mut second = TcpStream::connect(server.addr).await.unwrap();
    for client in [&mut first, &mut second] {
        client.write_all(GET).await.unwrap();
        assert!(read_response(client).await.is_some());
    }
    // The kernel completes the third handshake, but the server does not take it.
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    third.write_all(GET).await.unwrap();
    let waiting = timeout(Duration::from_millis(500), read_response(&mut third)).await;
    assert!(waiting.is_err(), "served over the cap: {waiting:?}");
    drop(first);
    let served = timeout(SLACK, read_response(&mut third)).await.unwrap();
    assert!(served.unwrap().ends_with("ok"));
}

#[tokio::test]
async fn handlers_see_the_peer_address() {
    let server = start(ServerLimits::default()).await;
    let mut client = TcpStream::connect(server.addr).await.unwrap();
    client
        .write_all(b"GET /peer HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    let response = read_response(&mut client).await.unwrap();
    assert!(
        response.ends_with(&client.local_addr().unwrap().to_string()),
        "{response}"
    );
}

#[tokio::test]
async fn shutdown_lets_in_flight_responses_finish_and_closes_idle_connections() {
    let mut server = start(ServerLimits::default()).await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(GET).await.unwrap();
    assert!(read_response(&mut idle).await.is_some());
    let mut streaming = TcpStream::connect(server.addr).await.unwrap();
    streaming
        .write_all(b"GET /slow-stream HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    sleep(Duration::from_millis(100)).await;
    server.stop.take().unwrap().send(()).unwrap();
    closed_within(&mut idle, SLACK).await;
    let mut body = String::new();
    timeout(SLACK, streaming.read_to_string(&mut body))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(body.matches("\r\nchunk\n").count(), 5, "{body}");
    timeout(SLACK, &mut server.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // No longer accepting.
    assert!(TcpStream::connect(server.addr).await.is_err());
}

#[tokio::test]
async fn settings_that_cannot_work_are_refused() {
    let listener = || async { TcpListener::bind("127.0.0.1:0").await.unwrap() };
    for bad in [
        ServerLimits::default().with_header_read_timeout(Duration::ZERO),
        ServerLimits::default().with_idle_timeout(Duration::ZERO),
        ServerLimits::default().with_max_connections(0),
    ] {
        let err = serve(listener().await, app(), bad, std::future::pending())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    }
}
