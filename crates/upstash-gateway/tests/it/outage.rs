//! Redis going away under the gateway: clear errors, no hangs, recovery. And the outage fixtures
//! themselves: a persistent Redis keeps its data across a kill, a partition loses requests.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use upstash_gateway::testing::{RedisServer, TcpProxy, TestGateway};

use crate::client::{Client, send};

#[tokio::test]
async fn redis_down_gives_503_fast_and_recovers_after_restart() {
    let env = TestGateway::start().await;
    let client = Client::new(&env);
    client.ok(json!(["SET", "k", "v"])).await;

    env.redis().kill();
    let started = Instant::now();
    let response = client.cmd(json!(["GET", "k"])).await;
    assert_eq!(
        response.status,
        503,
        "{:?}",
        String::from_utf8_lossy(&response.body)
    );
    let error = response.error();
    assert!(
        error.starts_with("ERR gateway:") && error.contains("redis"),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    let pipeline = client.post_json("/pipeline", &json!([["PING"]]), &[]).await;
    assert_eq!(pipeline.status, 503);
    let health = send(client.addr, "GET", "/__gateway/health", &[], b"").await;
    assert_eq!(
        (health.status, health.json()["status"].clone()),
        (503, json!("degraded"))
    );

    env.redis().restart();
    // The first request after the restart already works: dead pooled connections are skipped.
    assert_eq!(
        client.ok(json!(["GET", "k"])).await,
        serde_json::Value::Null,
        "restarted redis is empty"
    );
    assert_eq!(client.ok(json!(["SET", "k", "again"])).await, json!("OK"));
    let transaction = client
        .post_json("/multi-exec", &json!([["GET", "k"]]), &[])
        .await;
    assert_eq!(transaction.json(), json!([{"result": "again"}]));
    env.shutdown().await;
}

#[tokio::test]
async fn redis_killed_mid_request_gives_a_clear_error_not_a_hang() {
    let env =
        TestGateway::start_with(|builder| builder.redis_timeout(Duration::from_secs(10))).await;
    let client = Client::new(&env);
    // A script that keeps Redis busy for seconds: the request is in flight when Redis dies.
    let busy = "local t = redis.call('TIME'); local start = t[1] * 1000000 + t[2]; \
                while true do t = redis.call('TIME'); if t[1] * 1000000 + t[2] - start > 5000000 then break end end; return 1";
    // Redis answers BUSY to anything else while a script has run longer than this.
    env.redis()
        .raw_command(&[b"CONFIG", b"SET", b"busy-reply-threshold", b"20"]);
    let (addr, token) = (client.addr, client.token.clone());
    let request =
        tokio::spawn(async move { Client { addr, token }.cmd(json!(["EVAL", busy, 0])).await });
    // Kill only once the script runs (the request is in flight), not on a guess of when it does.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !env.redis().raw_command(&[b"PING"]).starts_with(b"-BUSY") {
        assert!(Instant::now() < deadline, "the script never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed_at = Instant::now();
    env.redis().kill();
    let response = request.await.unwrap();
    assert!(
        killed_at.elapsed() < Duration::from_secs(3),
        "took {:?} after the kill",
        killed_at.elapsed()
    );
    assert_eq!(response.status, 503);
    let error = response.error();
    assert!(
        error.contains("lost the connection to redis") && error.contains("may or may not have run"),
        "{error}"
    );

    env.redis().restart();
    assert_eq!(client.ok(json!(["PING"])).await, json!("PONG"));
    env.shutdown().await;
}

#[tokio::test]
async fn frozen_redis_times_out_with_504_and_recovers() {
    let env = TestGateway::start_with(|builder| {
        builder
            .redis_timeout(Duration::from_millis(500))
            .pool_size(2)
    })
    .await;
    let client = Client::new(&env);
    client.ok(json!(["SET", "k", "v"])).await;

    env.redis().freeze();
    let started = Instant::now();
    let response = client.cmd(json!(["GET", "k"])).await;
    env.redis().thaw();
    assert_eq!(response.status, 504);
    assert!(
        response.error().contains("did not answer"),
        "{}",
        response.error()
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );

    // The timed-out connection was discarded, so no stale reply leaks into later requests.
    for i in 0..5 {
        assert_eq!(
            client.ok(json!(["ECHO", format!("hello {i}")])).await,
            json!(format!("hello {i}"))
        );
    }
    assert_eq!(client.ok(json!(["GET", "k"])).await, json!("v"));
    env.shutdown().await;
}

#[tokio::test]
async fn a_persistent_redis_keeps_its_data_across_a_kill() {
    let env = TestGateway::start_on(RedisServer::start_persistent(), |builder| builder).await;
    assert!(env.redis().is_persistent());
    let client = Client::new(&env);
    client.ok(json!(["SET", "k", "v"])).await;
    env.redis().kill();
    assert_eq!(client.cmd(json!(["GET", "k"])).await.status, 503);
    env.redis().restart();
    assert_eq!(client.ok(json!(["GET", "k"])).await, json!("v"));
    env.shutdown().await;
}

/// Writes `command` (body form) through the proxy and returns whatever comes back within 500 ms:
/// nothing, when the proxy is cut (writes may fail too: the proxy may have closed already).
async fn send_through(proxy: &TcpProxy, token: &str, command: &serde_json::Value) -> Vec<u8> {
    let body = command.to_string();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(proxy.addr())
        .await
        .expect("the proxy accepts connections");
    let _ = stream.write_all(request.as_bytes()).await;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_millis(500), stream.read_to_end(&mut reply)).await;
    reply
}

#[tokio::test]
async fn a_partition_loses_requests_while_redis_keeps_its_data() {
    let env = TestGateway::start().await;
    let direct = Client::new(&env);
    let proxy = TcpProxy::start(env.gateway().addr());
    let through = Client {
        addr: proxy.addr(),
        token: env.token().to_owned(),
    };
    assert_eq!(through.ok(json!(["SET", "k", "v"])).await, json!("OK"));
    assert_eq!(proxy.forwarded(), 1);

    proxy.partition();
    let reply = send_through(&proxy, env.token(), &json!(["SET", "k", "lost"])).await;
    assert!(reply.is_empty(), "{}", String::from_utf8_lossy(&reply));
    proxy.refuse();
    let reply = send_through(&proxy, env.token(), &json!(["SET", "k", "refused"])).await;
    assert!(reply.is_empty(), "{}", String::from_utf8_lossy(&reply));
    assert_eq!(proxy.forwarded(), 1, "nothing went through");
    assert_eq!(
        direct.ok(json!(["GET", "k"])).await,
        json!("v"),
        "neither write reached Redis"
    );

    proxy.heal();
    assert_eq!(through.ok(json!(["GET", "k"])).await, json!("v"));
    assert_eq!(proxy.forwarded(), 2);
    env.shutdown().await;
}
