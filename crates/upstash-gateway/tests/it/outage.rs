//! Redis going away under the gateway: clear errors, no hangs, recovery.

use std::time::{Duration, Instant};

use serde_json::json;
use upstash_gateway::testing::TestGateway;

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
    let (addr, token) = (client.addr, client.token.clone());
    let request =
        tokio::spawn(async move { Client { addr, token }.cmd(json!(["EVAL", busy, 0])).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
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
