//! Integration tests of `cache-upstash`, in one binary.
//!
//! - `mock`: wiremock servers for what a real server cannot be made to do (401, 5xx, bad bodies,
//!   slow answers, retry counts, sync tokens, quota errors).
//! - `commands`, `batches`: every typed command, pipelines, transactions, auto-pipelining and
//!   binary values against a real `redis-server` behind `upstash-gateway`.
//! - `backend`: the `cache-core` conformance suite on `UpstashBackend`, and its request counts.
//! - `subscribe`: SSE subscriptions against the gateway (restarts, heartbeats, payloads), a
//!   hand-written stalling server, and wiremock (error statuses, malformed streams).
//! - `clock`: `TIME` and clock-offset measurement.
//! - `transport`: `UpstashTransport`, the backplane transport.
//!
//! Tests that need Redis start their own `redis-server` (the gateway's `testing` fixture panics
//! with instructions when it is not installed).

mod backend;
mod batches;
mod clock;
mod commands;
mod mock;
mod subscribe;
mod transport;

use cache_upstash::{Redis, RetryPolicy};
use upstash_gateway::testing::TestGateway;

/// A fresh Redis behind a gateway, and a client for it.
async fn gateway() -> (TestGateway, Redis) {
    let env = TestGateway::start().await;
    let redis = client_for(&env).build().expect("client");
    (env, redis)
}

/// A builder pointed at `env`, with fast retries.
fn client_for(env: &TestGateway) -> cache_upstash::RedisBuilder {
    Redis::builder()
        .url(env.url())
        .token(env.token())
        .retry(fast_retries())
}

fn fast_retries() -> RetryPolicy {
    RetryPolicy::default()
        .base_delay(std::time::Duration::from_millis(1))
        .max_delay(std::time::Duration::from_millis(5))
}
