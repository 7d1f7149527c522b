//! The Upstash and tiered backends behind a real `upstash-gateway` and `redis-server` (started by
//! the gateway's test fixture on free ports): reads go through L2, and when Redis is cut off or
//! dies every request still succeeds, and after it returns no stale page is served.
//!
//! The outages keep Redis's data (a partition in front of the gateway, a Redis with an append-only
//! file), so the page cached before the outage is still in L2 afterwards: only replaying the
//! invalidations missed meanwhile keeps it from being served.

use std::time::{Duration, Instant};

use chat_api::config::{CacheBackendKind, SecretString};
use upstash_gateway::testing::{RedisServer, TcpProxy, TestGateway};

use crate::support::{Db, TestApp, TestUser, ids};

async fn app_on(gateway: &TestGateway, kind: CacheBackendKind) -> TestApp {
    app_at(gateway.url(), gateway, kind).await
}

/// The app with its Upstash URL set to `url` (the gateway's, or a proxy's in front of it).
async fn app_at(url: String, gateway: &TestGateway, kind: CacheBackendKind) -> TestApp {
    let token = gateway.token().to_owned();
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

/// The number of keys in Redis.
fn dbsize(redis: &RedisServer) -> u64 {
    let reply = redis.raw_command(&[b"DBSIZE"]);
    let text = String::from_utf8_lossy(&reply);
    text.trim()
        .strip_prefix(':')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("DBSIZE replied {text:?}"))
}

/// An app in tiered mode behind a proxy in front of the gateway, with one message posted and its
/// page cached in Redis. Returns the app, the proxy, the user, the channel and the message id.
async fn tiered_app_with_a_cached_page(
    gateway: &TestGateway,
) -> (TestApp, TcpProxy, TestUser, String, String) {
    let proxy = TcpProxy::start(gateway.gateway().addr());
    let app = app_at(proxy.url(), gateway, CacheBackendKind::Tiered).await;
    assert_eq!(app.state.cache().cache().backend().name(), "tiered");
    let ann = app.register("ann").await;
    let channel = app.create_channel(&ann, "general", "public").await;
    let first = app.post_message(&ann, &channel, "one").await;
    let first = first["id"].as_str().unwrap().to_owned();
    read_for(&app, &ann, &channel, &first, Duration::from_millis(300)).await;
    let health = app
        .call(axum::http::Method::GET, "/health", None, None)
        .await
        .expect(200);
    assert_eq!(health.body["cache"]["breaker"], "closed");
    assert!(
        proxy.forwarded() > 0,
        "the app reaches L2 through the proxy"
    );
    assert!(
        dbsize(gateway.redis()) > 0,
        "the first page is cached in Redis"
    );
    (app, proxy, ann, channel, first)
}

/// R1, partition: Redis cut off (every request to it lost, not delayed): no request fails, and
/// once it is back no stale page appears, although the page cached before is still in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiered_survives_a_partition_without_stale_reads() {
    let gateway = TestGateway::start().await;
    let (app, proxy, ann, channel, _) = tiered_app_with_a_cached_page(&gateway).await;
    let cached = dbsize(gateway.redis());

    // The invalidation of the post never reaches Redis, which keeps the old page.
    proxy.partition();
    let second = app.post_message(&ann, &channel, "two").await;
    let second = second["id"].as_str().unwrap();
    read_for(&app, &ann, &channel, second, Duration::from_secs(2)).await;
    let health = app
        .call(axum::http::Method::GET, "/health", None, None)
        .await
        .expect(200);
    assert_eq!(health.body["status"], "degraded");
    assert!(
        app.state.cache().cache().stats().pending_invalidations > 0,
        "the missed invalidation is remembered"
    );
    assert_eq!(
        dbsize(gateway.redis()),
        cached,
        "Redis saw nothing meanwhile"
    );
    proxy.heal();
    // Long enough for L1 entries to expire and the breaker to probe L2 again (5 s).
    read_for(&app, &ann, &channel, second, Duration::from_secs(7)).await;
    let stats = app.state.cache().cache().stats();
    let breaker = stats.breaker.expect("a tiered cache has a breaker");
    assert!(breaker.opened >= 1 && breaker.closed >= 1, "{breaker:?}");
    assert_eq!(stats.pending_invalidations, 0);
    gateway.shutdown().await;
}

/// R1, crash: Redis killed, then restarted with its data (an append-only file): no request
/// fails, and once it is back no stale page appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiered_survives_a_redis_restart_without_stale_reads() {
    let gateway = TestGateway::start_on(RedisServer::start_persistent(), |builder| builder).await;
    let (app, _proxy, ann, channel, _) = tiered_app_with_a_cached_page(&gateway).await;

    gateway.redis().kill();
    let second = app.post_message(&ann, &channel, "two").await;
    let second = second["id"].as_str().unwrap();
    read_for(&app, &ann, &channel, second, Duration::from_secs(1)).await;
    gateway.redis().restart();
    assert!(dbsize(gateway.redis()) > 0, "Redis kept its data");
    // Long enough for L1 entries to expire and the breaker to probe L2 again (5 s); on a loaded
    // machine the probe can come later, so reads go on (never stale) until it closed, bounded.
    read_for(&app, &ann, &channel, second, Duration::from_secs(7)).await;
    for _ in 0..10 {
        let closed = app
            .state
            .cache()
            .cache()
            .stats()
            .breaker
            .is_some_and(|b| b.state == cache_core::BreakerState::Closed);
        if closed {
            break;
        }
        read_for(&app, &ann, &channel, second, Duration::from_secs(1)).await;
    }
    assert_eq!(app.state.cache().cache().stats().pending_invalidations, 0);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_both_tiers_and_what_upstash_bills() {
    let gateway = TestGateway::start().await;
    let app = app_on(&gateway, CacheBackendKind::Tiered).await;
    let ann = app.register("ann").await;
    let channel = app.create_channel(&ann, "general", "public").await;
    let addr = crate::ws::serve(&app).await;
    let response = reqwest::Client::new()
        .get(format!("http://{addr}/dashboard/stream?interval_ms=200"))
        .send()
        .await
        .unwrap();
    let mut frames = crate::web::Frames(response);
    frames.next().await;
    // Posts invalidate on Upstash; the reads after each fill L2 and then hit L1.
    let page = format!("/api/v1/channels/{channel}/messages");
    for i in 0..5 {
        app.post_message(&ann, &channel, &format!("m{i}")).await;
        for _ in 0..3 {
            app.get(&page, &ann.token).await.expect(200);
        }
    }
    let frame = loop {
        let frame = frames.next().await;
        if frame["upstash"]["commands_per_min"].as_f64() > Some(0.0) {
            break frame;
        }
    };
    assert_eq!(frame["cache_backend"], "tiered");
    let tiers = frame["cache"]["tiers"].as_array().unwrap();
    let names: Vec<&str> = tiers.iter().map(|t| t["tier"].as_str().unwrap()).collect();
    assert_eq!(names, ["l1", "l2"]);
    assert!(
        tiers[1]["p99_ms"].as_f64().unwrap() > 0.0,
        "L2 calls are timed: {frame}"
    );
    assert!(tiers[0]["p99_ms"].is_null(), "L1 is not timed");
    assert_eq!(frame["cache"]["breaker"]["state"], "closed");
    let upstash = &frame["upstash"];
    let per_min = upstash["commands_per_min"].as_f64().unwrap();
    let cost = upstash["monthly_cost_usd"].as_f64().unwrap();
    // 30 days of this rate at $0.20 per 100,000 commands.
    assert!(
        (cost - per_min * 60.0 * 24.0 * 30.0 / 100_000.0 * 0.20).abs() < 1e-9,
        "{upstash}"
    );
    assert!(
        upstash["requests_per_min"].as_f64().unwrap() > 0.0,
        "{upstash}"
    );
    // No credential in the frame.
    assert!(!frame.to_string().contains(gateway.token()));
}
