//! The Upstash and tiered backends behind a real `upstash-gateway` and `redis-server` (started by
//! the gateway's test fixture on free ports): reads go through L2, and when Redis dies or hangs
//! every request still succeeds, and after it returns no stale page is served (SPEC R1).

use std::time::{Duration, Instant};

use chat_api::config::{CacheBackendKind, SecretString};
use upstash_gateway::testing::TestGateway;

use crate::support::{Db, TestApp, TestUser, ids};

async fn app_on(gateway: &TestGateway, kind: CacheBackendKind) -> TestApp {
    let (url, token) = (gateway.url(), gateway.token().to_owned());
    TestApp::start_with(
        Db::Sqlite,
        move |c| chat_api::Config {
            cache_backend: kind,
            upstash_url: Some(url),
            upstash_token: SecretString::new(token),
            l2_timeout: Duration::from_millis(300),
            l1_max_ttl: Duration::from_millis(300),
            // Unique per test: tests may share nothing, but keys stay readable in redis-cli.
            cache_prefix: format!("chat-test-{}", ulid::Ulid::new().to_string().to_lowercase()),
            ..c
        },
        |config| chat_api::cache::build_backend(config).expect("backend"),
    )
    .await
    .unwrap()
}

/// Reads the latest page as `user` for `duration`, asserting every read succeeds and starts with
/// `newest` (no stale page).
async fn read_for(
    app: &TestApp,
    user: &TestUser,
    channel: &str,
    newest: &str,
    duration: Duration,
) -> usize {
    let deadline = Instant::now() + duration;
    let mut reads = 0;
    while Instant::now() < deadline {
        let page = app
            .get(&format!("/api/v1/channels/{channel}/messages"), &user.token)
            .await
            .expect(200);
        assert_eq!(ids(&page.body)[0], newest, "a stale page was served");
        reads += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    reads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstash_backend_serves_pages_from_redis() {
    let gateway = TestGateway::start().await;
    let app = app_on(&gateway, CacheBackendKind::Upstash).await;
    assert_eq!(app.state.cache().cache().backend().name(), "upstash");
    let ann = app.register("ann").await;
    let channel = app.create_channel(&ann, "general", "public").await;
    let posted = app.post_message(&ann, &channel, "hello").await;
    let page = format!("/api/v1/channels/{channel}/messages");
    app.get(&page, &ann.token).await.expect(200);
    let before = app.queries();
    let cached = app.get(&page, &ann.token).await.expect(200);
    assert_eq!(ids(&cached.body), [posted["id"].as_str().unwrap()]);
    assert_eq!(app.queries(), before, "the second read comes from Redis");
    let second = app.post_message(&ann, &channel, "again").await;
    let fresh = app.get(&page, &ann.token).await.expect(200);
    assert_eq!(ids(&fresh.body)[0], second["id"].as_str().unwrap());
    let stats = app.state.cache().cache().stats();
    assert!(stats.tiers[0].requests.unwrap_or(0) > 0);
    gateway.shutdown().await;
}

/// R1: Redis killed, then hung: no request fails, and once it is back no stale page appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiered_survives_redis_outages_without_stale_reads() {
    let gateway = TestGateway::start().await;
    let app = app_on(&gateway, CacheBackendKind::Tiered).await;
    assert_eq!(app.state.cache().cache().backend().name(), "tiered");
    let ann = app.register("ann").await;
    let channel = app.create_channel(&ann, "general", "public").await;
    let first = app.post_message(&ann, &channel, "one").await;
    read_for(
        &app,
        &ann,
        &channel,
        first["id"].as_str().unwrap(),
        Duration::from_millis(300),
    )
    .await;
    let health = app
        .call(axum::http::Method::GET, "/health", None, None)
        .await
        .expect(200);
    assert_eq!(health.body["cache"]["breaker"], "closed");

    // Hung Redis: the page cached in L2 before the hang must not come back after it.
    gateway.redis().freeze();
    let second = app.post_message(&ann, &channel, "two").await;
    let second = second["id"].as_str().unwrap();
    read_for(&app, &ann, &channel, second, Duration::from_secs(2)).await;
    let health = app
        .call(axum::http::Method::GET, "/health", None, None)
        .await
        .expect(200);
    assert_eq!(health.body["status"], "degraded");
    gateway.redis().thaw();
    // Long enough for L1 entries to expire and the breaker to probe L2 again (5 s).
    read_for(&app, &ann, &channel, second, Duration::from_secs(7)).await;
    let stats = app.state.cache().cache().stats();
    let breaker = stats.breaker.expect("a tiered cache has a breaker");
    assert!(breaker.opened >= 1 && breaker.closed >= 1, "{breaker:?}");
    assert_eq!(stats.pending_invalidations, 0);

    // Killed Redis: writes and reads go on; after the restart (empty) nothing stale either.
    gateway.redis().kill();
    let third = app.post_message(&ann, &channel, "three").await;
    let third = third["id"].as_str().unwrap();
    read_for(&app, &ann, &channel, third, Duration::from_secs(1)).await;
    gateway.redis().restart();
    read_for(&app, &ann, &channel, third, Duration::from_secs(6)).await;
    let metrics = app
        .call(axum::http::Method::GET, "/metrics", None, None)
        .await
        .expect(200);
    assert!(
        metrics.text.contains("chat_cache_breaker_state 0"),
        "{}",
        metrics.text
    );
    assert!(
        metrics
            .text
            .contains(r#"chat_cache_breaker_transitions_total{to="open"}"#)
    );
    assert!(
        !metrics.text.contains(gateway.token()),
        "the Upstash token never reaches metrics"
    );
    gateway.shutdown().await;
}
