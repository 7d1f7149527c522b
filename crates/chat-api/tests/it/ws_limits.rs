//! What a WebSocket client can make the server hold: frame and message sizes before and after
//! authentication (refused from the frame header, before the payload is read), sessions per user,
//! frames per second, and a client that never reads.

use std::{net::SocketAddr, time::Duration};

use chat_api::events::EventKind;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};
use tokio_tungstenite::{
    connect_async,
    tungstenite::{
        self, Message,
        client::IntoClientRequest,
        protocol::frame::{
            Frame,
            coding::{Data, OpCode},
        },
    },
};
use ulid::Ulid;

use crate::{
    support::{Db, TestApp},
    ws::{Socket, connect, hello_and_ready, next_close_code, next_json, serve},
};

/// A WebSocket client on a bare TCP stream, to write frames no client library would: a header
/// announcing a huge payload, followed by only part of it.
struct RawClient {
    tcp: TcpStream,
    // Bytes read past the last frame parsed.
    buffer: Vec<u8>,
}

impl RawClient {
    /// Upgrades `path` (with its query) and returns the client once the 101 is read.
    async fn connect(addr: SocketAddr, path: &str) -> RawClient {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut buffer = Vec::new();
        let end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0; 4096];
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the server closed during the handshake");
            buffer.extend_from_slice(&chunk[..n]);
        };
        assert!(buffer.starts_with(b"HTTP/1.1 101"), "not upgraded");
        buffer.drain(..end);
        RawClient { tcp, buffer }
    }

    /// The next frame from the server: (opcode, payload).
    async fn next_frame(&mut self) -> (u8, Vec<u8>) {
        loop {
            if let Some((opcode, payload, used)) = parse_server_frame(&self.buffer) {
                self.buffer.drain(..used);
                return (opcode, payload);
            }
            let mut chunk = [0; 4096];
            let n = tokio::time::timeout(Duration::from_secs(10), self.tcp.read(&mut chunk))
                .await
                .expect("a frame within 10 s")
                .expect("the socket reads");
            assert!(n > 0, "the server closed without a close frame");
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    /// Frames until a close frame; its code.
    async fn next_close_code(&mut self) -> u16 {
        loop {
            if let (0x8, payload) = self.next_frame().await {
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
    }

    /// Writes a masked frame header announcing `len` payload bytes.
    async fn write_header(&mut self, fin: bool, opcode: u8, len: u64) {
        self.tcp
            .write_all(&masked_header(fin, opcode, len))
            .await
            .unwrap();
    }
}

/// A frame header from a client (with an all-zero mask, which leaves the payload as written).
fn masked_header(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
    let mut header = vec![if fin { 0x80 } else { 0 } | opcode];
    match len {
        0..=125 => header.push(0x80 | len as u8),
        126..=0xFFFF => {
            header.push(0x80 | 126);
            header.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            header.push(0x80 | 127);
            header.extend_from_slice(&len.to_be_bytes());
        }
    }
    header.extend_from_slice(&[0; 4]);
    header
}

/// One unmasked frame at the start of `bytes`: (opcode, payload, bytes used).
fn parse_server_frame(bytes: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    let (&first, &second) = (bytes.first()?, bytes.get(1)?);
    let (len, start) = match second & 0x7F {
        126 => (
            u64::from(u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?])),
            4,
        ),
        127 => (u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?), 10),
        len => (u64::from(len), 2),
    };
    let end = start + usize::try_from(len).ok()?;
    let payload = bytes.get(start..end)?.to_vec();
    Some((first & 0x0F, payload, end))
}

/// Reads until the server ends the socket; panics after 10 s.
async fn until_closed(socket: &mut Socket) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Ok(None | Some(Err(_))) => return,
            Ok(Some(Ok(_))) => {}
            Err(_) => panic!("the socket stayed open"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_are_refused_from_their_header() {
    let app = TestApp::start(Db::Sqlite).await.unwrap();
    let addr = serve(&app).await;
    let ann = app.register("ann").await;

    // Before identify: a frame announcing 8 MiB (under the library's default limit of 16 MiB),
    // of which only 64 KiB are ever sent. The close arrives although the rest never does, so
    // the server refused it from the header.
    let mut raw = RawClient::connect(addr, "/api/v1/ws").await;
    let (opcode, hello) = raw.next_frame().await;
    assert_eq!(opcode, 0x1);
    assert_eq!(
        serde_json::from_slice::<Value>(&hello).unwrap()["op"],
        "hello"
    );
    raw.write_header(true, 0x1, 8 << 20).await;
    raw.tcp.write_all(&[b' '; 64 * 1024]).await.unwrap();
    assert_eq!(raw.next_close_code().await, chat_api::CLOSE_TOO_BIG);

    // Before identify, a message in small fragments is refused once it passes the limit.
    let mut fragmented = connect(addr, None, "").await;
    next_json(&mut fragmented).await;
    let chunk = " ".repeat(1024);
    let first = Frame::message(chunk.clone(), OpCode::Data(Data::Text), false);
    fragmented.send(Message::Frame(first)).await.unwrap();
    // 64 KiB in all; a write may fail once the server has closed; its answer is read below.
    for _ in 0..63 {
        let frame = Frame::message(chunk.clone(), OpCode::Data(Data::Continue), false);
        if fragmented.send(Message::Frame(frame)).await.is_err() {
            break;
        }
    }
    assert_eq!(
        next_close_code(&mut fragmented).await,
        chat_api::CLOSE_TOO_BIG
    );

    // With the token on the upgrade, pings with a nonce of 10 KiB are fine, 20 KiB are not.
    let mut socket = connect(addr, Some(&ann.token), "").await;
    hello_and_ready(&mut socket).await;
    let nonce = "n".repeat(10 * 1024);
    socket
        .send(Message::text(
            json!({"op": "ping", "nonce": nonce}).to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut socket).await["data"]["nonce"],
        nonce.as_str()
    );
    let nonce = "n".repeat(20 * 1024);
    socket
        .send(Message::text(
            json!({"op": "ping", "nonce": nonce}).to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(next_close_code(&mut socket).await, chat_api::CLOSE_TOO_BIG);

    // The same announcement after authenticating (by token): refused too.
    let mut raw = RawClient::connect(addr, &format!("/api/v1/ws?token={}", ann.token)).await;
    raw.write_header(true, 0x1, 8 << 20).await;
    raw.tcp.write_all(&[b' '; 64 * 1024]).await.unwrap();
    assert_eq!(raw.next_close_code().await, chat_api::CLOSE_TOO_BIG);

    // Legitimate clients are unaffected: identify still works.
    let mut by_frame = connect(addr, None, "").await;
    next_json(&mut by_frame).await;
    by_frame
        .send(Message::text(
            json!({"op": "identify", "token": ann.token}).to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(next_json(&mut by_frame).await["op"], "ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_per_user_are_capped() {
    let app = TestApp::start_configured(Db::Sqlite, |c| chat_api::Config {
        ws_max_sessions_per_user: 2,
        ..c
    })
    .await
    .unwrap();
    let addr = serve(&app).await;
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let ann_id: Ulid = ann.id.parse().unwrap();

    let mut first = connect(addr, Some(&ann.token), "").await;
    hello_and_ready(&mut first).await;
    let mut second = connect(addr, None, &format!("?token={}", ann.token)).await;
    hello_and_ready(&mut second).await;
    assert_eq!(app.state.hub().user_sessions(ann_id), 2);

    // A third with the token on the upgrade: a typed 429 before any socket.
    let mut request = format!("ws://{addr}/api/v1/ws")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", ann.token).parse().unwrap(),
    );
    match connect_async(request).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "too_many_sessions");
        }
        other => panic!("expected a 429, got {other:?}"),
    }
    // A third by identify: closed with its own code.
    let mut third = connect(addr, None, "").await;
    next_json(&mut third).await;
    third
        .send(Message::text(
            json!({"op": "identify", "token": ann.token}).to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(
        next_close_code(&mut third).await,
        chat_api::CLOSE_TOO_MANY_SESSIONS
    );
    // The cap is per user.
    let mut bobs = connect(addr, Some(&bob.token), "").await;
    hello_and_ready(&mut bobs).await;

    // A session that ends gives its slot back.
    first.close(None).await.unwrap();
    until_closed(&mut first).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.state.hub().user_sessions(ann_id) > 1 {
        assert!(Instant::now() < deadline, "the slot was never released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut again = connect(addr, Some(&ann.token), "").await;
    hello_and_ready(&mut again).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_is_answered_at_the_rate_then_closed() {
    let rate = 20;
    let app = TestApp::start_configured(Db::Sqlite, |c| chat_api::Config {
        ws_max_frames_per_sec: rate,
        ..c
    })
    .await
    .unwrap();
    let addr = serve(&app).await;
    let ann = app.register("ann").await;

    // A short burst over the rate: the excess is not answered, and the session stays.
    let mut socket = connect(addr, Some(&ann.token), "").await;
    hello_and_ready(&mut socket).await;
    let burst = rate + rate / 2;
    // Written at once, so the burst does not spread over time and refill the bucket.
    for nonce in 0..burst {
        let ping = json!({"op": "ping", "nonce": nonce}).to_string();
        socket.feed(Message::text(ping)).await.unwrap();
    }
    socket.flush().await.unwrap();
    // Once the bucket has refilled, a ping is answered again; count the pongs before it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ping = json!({"op": "ping", "nonce": "after"}).to_string();
    socket.send(Message::text(ping)).await.unwrap();
    let mut answered = 0;
    loop {
        let pong = next_json(&mut socket).await;
        if pong["data"]["nonce"] == "after" {
            break;
        }
        answered += 1;
    }
    assert!(
        (rate..burst).contains(&answered),
        "{answered} of {burst} pings answered at once"
    );

    // A flood: 5,000 pings in one write, before reading anything. At most the burst plus what
    // refilled meanwhile is answered, then the session is closed, and the close frame arrives
    // although the client was still writing when the server closed.
    let mut raw = RawClient::connect(addr, &format!("/api/v1/ws?token={}", ann.token)).await;
    let started = Instant::now();
    let mut flood = Vec::new();
    for nonce in 0..5_000 {
        let ping = json!({"op": "ping", "nonce": nonce}).to_string();
        flood.extend(masked_header(true, 0x1, ping.len() as u64));
        flood.extend(ping.as_bytes());
    }
    // The server may stop reading before the end; what it answered is read below.
    let _ = raw.tcp.write_all(&flood).await;
    let mut pongs = 0;
    let code = loop {
        match raw.next_frame().await {
            (0x1, text) => {
                let frame: Value = serde_json::from_slice(&text).unwrap();
                if frame["op"] == "pong" {
                    pongs += 1;
                }
            }
            (0x8, payload) => break u16::from_be_bytes([payload[0], payload[1]]),
            _ => {}
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(code, chat_api::CLOSE_RATE_LIMITED);
    let bound = f64::from(rate) * (1.0 + elapsed) + 1.0;
    assert!(
        f64::from(pongs) <= bound,
        "{pongs} pongs in {elapsed:.2} s (at most {bound:.0})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_dropped() {
    let app = TestApp::start_configured(Db::Sqlite, |c| chat_api::Config {
        ws_send_timeout: Duration::from_millis(300),
        ..c
    })
    .await
    .unwrap();
    let addr = serve(&app).await;
    let ann = app.register("ann").await;
    let ann_id: Ulid = ann.id.parse().unwrap();

    let mut socket = connect(addr, Some(&ann.token), "").await;
    hello_and_ready(&mut socket).await;
    assert_eq!(app.state.hub().sessions(), 1);
    // From here the client reads nothing: events pile up in the socket buffers until the
    // server's writes block. The session must end, not wait on its write forever.
    let pad = "x".repeat(32 * 1024);
    let hub = app.state.hub();
    let started = Instant::now();
    let mut published = 0_u64;
    while hub.sessions() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a client that never reads kept its session ({published} events of 32 KiB published)"
        );
        hub.publish(
            EventKind::ChannelAck,
            None,
            Some(ann_id),
            &json!({"pad": pad}),
        );
        published += 1;
        // Slow enough that the session never lags behind the hub: only the blocked write can
        // end it.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(hub.user_sessions(ann_id), 0, "the user's slot is released");
    // What the socket buffers held is readable, then the socket ends.
    until_closed(&mut socket).await;
}
