//! The WebSocket session over a real listener: hello, ready, events to members only, the three
//! ways to authenticate, heartbeat timeouts and shutdown.

use std::{net::SocketAddr, time::Duration};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{self, Message, client::IntoClientRequest},
};

use crate::support::{Db, TestApp};

pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub(crate) async fn serve(app: &TestApp) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app.router.clone();
    tokio::spawn(chat_api::serve(
        listener,
        router,
        chat_api::ServerLimits::default(),
        std::future::pending(),
    ));
    addr
}

pub(crate) async fn connect(addr: SocketAddr, token: Option<&str>, query: &str) -> Socket {
    let mut request = format!("ws://{addr}/api/v1/ws{query}")
        .into_client_request()
        .unwrap();
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    connect_async(request).await.expect("upgrade").0
}

/// The next JSON text frame (pings are answered by tungstenite while reading).
pub(crate) async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a frame within 10 s")
            .expect("the socket is open")
            .expect("a valid frame");
        match frame {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => {}
        }
    }
}

pub(crate) async fn next_close_code(socket: &mut Socket) -> u16 {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a frame")
        {
            Some(Ok(Message::Close(Some(frame)))) => return frame.code.into(),
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

pub(crate) async fn hello_and_ready(socket: &mut Socket) -> Value {
    let hello = next_json(socket).await;
    assert_eq!(hello["op"], "hello");
    assert!(hello["data"]["heartbeat_interval_ms"].as_u64().unwrap() > 0);
    assert_eq!(hello["data"]["session_id"].as_str().unwrap().len(), 26);
    let ready = next_json(socket).await;
    assert_eq!(ready["op"], "ready");
    ready
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_receives_the_message_another_member_posts() {
    let app = TestApp::start(Db::Sqlite).await.unwrap();
    let addr = serve(&app).await;
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let dave = app.register("dave").await;
    let channel = app.create_channel(&ann, "general", "public").await;
    app.put(
        &format!("/api/v1/channels/{channel}/members/me"),
        &bob.token,
    )
    .await
    .expect(204);
    let daves = app.create_channel(&dave, "daves", "public").await;

    let mut bob_socket = connect(addr, Some(&bob.token), "").await;
    let ready = hello_and_ready(&mut bob_socket).await;
    assert_eq!(ready["data"]["user"]["id"], bob.id.as_str());
    assert_eq!(ready["data"]["channels"][0]["id"], channel.as_str());
    let mut dave_socket = connect(addr, Some(&dave.token), "").await;
    hello_and_ready(&mut dave_socket).await;

    let posted = app.post_message(&ann, &channel, "hello bob").await;
    let event = next_json(&mut bob_socket).await;
    assert_eq!(event["op"], "event");
    assert_eq!(event["type"], "message_create");
    assert_eq!(event["seq"], 1);
    assert_eq!(event["data"], posted);
    assert_eq!(event["data"]["content"], "hello bob");
    assert_eq!(event["data"]["author"]["name"], "ann");

    // Dave is not a member: the first event he gets is from his own channel.
    app.post_message(&dave, &daves, "dave's own").await;
    let event = next_json(&mut dave_socket).await;
    assert_eq!(event["data"]["content"], "dave's own");
    assert_eq!(event["seq"], 1);

    // Reactions, edits, deletes and membership changes reach members too.
    let mid = posted["id"].as_str().unwrap();
    app.put(
        &format!("/api/v1/channels/{channel}/messages/{mid}/reactions/ok"),
        &ann.token,
    )
    .await
    .expect(204);
    let event = next_json(&mut bob_socket).await;
    assert_eq!(event["type"], "reaction_add");
    assert_eq!(event["data"]["emoji"], "ok");
    app.delete(
        &format!("/api/v1/channels/{channel}/messages/{mid}"),
        &ann.token,
    )
    .await
    .expect(204);
    let event = next_json(&mut bob_socket).await;
    assert_eq!(event["type"], "message_delete");
    assert_eq!(event["data"]["id"], mid);
    app.put(
        &format!("/api/v1/channels/{channel}/members/me"),
        &dave.token,
    )
    .await
    .expect(204);
    let event = next_json(&mut bob_socket).await;
    assert_eq!(event["type"], "member_join");
    assert_eq!(event["data"]["user"]["name"], "dave");
    // Dave now follows the channel he joined (his own join event first).
    let event = next_json(&mut dave_socket).await;
    assert_eq!(event["type"], "member_join");
    app.post_message(&ann, &channel, "welcome dave").await;
    let event = next_json(&mut dave_socket).await;
    assert_eq!(event["data"]["content"], "welcome dave");

    // Ping → pong.
    bob_socket
        .send(Message::text(json!({"op": "ping", "nonce": 7}).to_string()))
        .await
        .unwrap();
    loop {
        let frame = next_json(&mut bob_socket).await;
        if frame["op"] == "pong" {
            assert_eq!(frame["data"]["nonce"], 7);
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_authenticate_by_query_or_identify_frame() {
    let app = TestApp::start(Db::Sqlite).await.unwrap();
    let addr = serve(&app).await;
    let ann = app.register("ann").await;

    let mut by_query = connect(addr, None, &format!("?token={}", ann.token)).await;
    let ready = hello_and_ready(&mut by_query).await;
    assert_eq!(ready["data"]["user"]["name"], "ann");

    let mut by_frame = connect(addr, None, "").await;
    let hello = next_json(&mut by_frame).await;
    assert_eq!(hello["op"], "hello");
    by_frame
        .send(Message::text(
            json!({"op": "identify", "token": ann.token}).to_string(),
        ))
        .await
        .unwrap();
    let ready = next_json(&mut by_frame).await;
    assert_eq!(ready["op"], "ready");

    let mut bad_frame = connect(addr, None, "").await;
    next_json(&mut bad_frame).await;
    bad_frame
        .send(Message::text(
            json!({"op": "identify", "token": "nope"}).to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(
        next_close_code(&mut bad_frame).await,
        chat_api::CLOSE_UNAUTHORIZED
    );

    // A bad token on the upgrade request is an HTTP 401 with the error shape.
    let mut request = format!("ws://{addr}/api/v1/ws")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        "Bearer 01ARZ3NDEKTSV4RRFFQ69G5FAV.00".parse().unwrap(),
    );
    match connect_async(request).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "unauthorized");
        }
        other => panic!("expected a 401, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_time_out_and_shutdown_closes_sessions() {
    let app = TestApp::start_configured(Db::Sqlite, |c| chat_api::Config {
        ws_heartbeat: Duration::from_millis(300),
        ..c
    })
    .await
    .unwrap();
    let addr = serve(&app).await;
    let ann = app.register("ann").await;

    // Not reading means not answering pings: closed after two silent intervals.
    let mut silent = connect(addr, Some(&ann.token), "").await;
    hello_and_ready(&mut silent).await;
    assert_eq!(app.state.hub().sessions(), 1);
    // Wait (without reading, which would answer the pings) until the server ends the session.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.state.hub().sessions() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a silent client was never disconnected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        next_close_code(&mut silent).await,
        chat_api::CLOSE_HEARTBEAT
    );

    // A client that keeps reading answers pings and stays; shutdown closes it with 1001.
    let mut live = connect(addr, Some(&ann.token), "").await;
    hello_and_ready(&mut live).await;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1200);
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(100), live.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => panic!("closed early: {frame:?}"),
            Ok(None) => panic!("socket ended early"),
            _ => {}
        }
    }
    assert_eq!(app.state.hub().sessions(), 1);
    app.state.hub().close_all();
    assert_eq!(next_close_code(&mut live).await, chat_api::CLOSE_GOING_AWAY);
}
