//! The pool of Redis connections: a connection Redis closed (its `timeout`, a restart) is never
//! handed out, and connections idle longer than the pool's idle timeout are closed by the gateway.

use std::time::Duration;

use serde_json::json;
use upstash_gateway::testing::TestGateway;

use crate::{
    client::Client,
    probe::{eventually, gateway_connections, redis},
};

/// Holds a connection for ~50 ms inside Redis, so concurrent requests each need their own.
const SLOW_SCRIPT: &str = "local s = redis.call('TIME') \
    repeat local n = redis.call('TIME') until (n[1] - s[1]) * 1000000 + (n[2] - s[2]) > 50000 \
    return 1";

/// Runs `n` requests at once, each holding a connection for a while, so the pool ends up with
/// several idle connections, and checks that Redis sees them.
async fn fill_the_pool(env: &TestGateway, n: usize) {
    let client = Client::new(env);
    let requests: Vec<_> = (0..n)
        .map(|_| {
            let client = Client {
                addr: client.addr,
                token: client.token.clone(),
            };
            tokio::spawn(async move { client.ok(json!(["EVAL", SLOW_SCRIPT, "0"])).await })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.expect("request task"), json!(1));
    }
    let connections = gateway_connections(env).await.len();
    assert!(connections >= 2, "only {connections} pooled connection(s)");
}

/// `n` requests at once; every one must succeed.
async fn all_succeed(env: &TestGateway, n: usize) {
    let client = Client::new(env);
    let requests: Vec<_> = (0..n)
        .map(|i| {
            let client = Client {
                addr: client.addr,
                token: client.token.clone(),
            };
            tokio::spawn(async move {
                let response = client.cmd(json!(["SET", format!("k{i}"), "v"])).await;
                (
                    response.status,
                    String::from_utf8_lossy(&response.body).into_owned(),
                )
            })
        })
        .collect();
    for request in requests {
        assert_eq!(
            request.await.expect("request task"),
            (200, "{\"result\":\"OK\"}".to_owned())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_redis_closed_for_idleness_are_never_handed_out() {
    let env = TestGateway::start().await;
    fill_the_pool(&env, 8).await;
    assert_eq!(
        redis(env.redis().addr(), &[b"CONFIG", b"SET", b"timeout", b"1"]).await,
        b"+OK\r\n"
    );
    eventually("redis closes the idle pooled connections", || async {
        gateway_connections(&env).await.is_empty()
    })
    .await;
    // Every pooled connection is dead now; not one request may fail because of it.
    all_succeed(&env, 8).await;
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_are_replaced_after_a_redis_restart() {
    let env = TestGateway::start().await;
    fill_the_pool(&env, 8).await;
    env.redis().restart();
    all_succeed(&env, 8).await;
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_pooled_connections_are_closed_by_the_gateway() {
    let env = TestGateway::start_with(|b| b.pool_idle_timeout(Duration::from_millis(200))).await;
    fill_the_pool(&env, 8).await;
    // Redis's own `timeout` is off (0): only the gateway can close them.
    let timeout = redis(env.redis().addr(), &[b"CONFIG", b"GET", b"timeout"]).await;
    assert!(timeout.ends_with(b"$1\r\n0\r\n"), "{timeout:?}");
    eventually("the gateway closes its idle connections", || async {
        gateway_connections(&env).await.is_empty()
    })
    .await;
    all_succeed(&env, 4).await;
    env.shutdown().await;
}

#[tokio::test]
async fn stream_and_pool_settings_are_validated() {
    for configure in [
        (|b: upstash_gateway::GatewayBuilder| b.stream_keepalive(Duration::ZERO))
            as fn(upstash_gateway::GatewayBuilder) -> upstash_gateway::GatewayBuilder,
        |b| b.pool_idle_timeout(Duration::ZERO),
        |b| b.stream_buffer_bytes(0),
        |b| b.max_streams(0),
    ] {
        let err = configure(
            upstash_gateway::Gateway::builder()
                .token("t")
                .bind("127.0.0.1:0"),
        )
        .start()
        .await
        .expect_err("refused");
        assert!(err.is_config(), "{err}");
    }
}
