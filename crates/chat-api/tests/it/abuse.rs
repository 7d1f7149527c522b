//! Abusive clients: floods of made-up tokens are rate limited before any lookup and leave nothing
//! in Redis, and look-alike user names cannot register beside the names they imitate.

use std::time::{Duration, Instant};

use axum::http::Method;
use chat_api::{
    config::{CacheBackendKind, SecretString},
    ratelimit::{Bucket, WINDOW},
};
use serde_json::json;
use ulid::Ulid;
use upstash_gateway::testing::TestGateway;

use crate::support::{Db, TestApp, on_both_databases};

/// A token of the right shape for a user that does not exist.
fn made_up_token() -> String {
    made_up_token_for(&Ulid::new().to_string())
}

/// A token of the right shape claiming `user`, with a secret that is not theirs.
fn made_up_token_for(user: &str) -> String {
    format!("{user}.{:032x}{:032x}", Ulid::new().0, Ulid::new().0)
}

/// The most store lookups `AuthFailures` may let through from one address since `start`: its
/// limit per window begun (the test may straddle windows on a slow machine).
fn failure_budget(start: Instant) -> u64 {
    let windows = 1 + start.elapsed().as_millis() / WINDOW.as_millis();
    u64::from(Bucket::AuthFailures.limit()) * u64::try_from(windows).unwrap()
}

async fn limited_app() -> TestApp {
    TestApp::start_configured(Db::Sqlite, |c| chat_api::Config {
        rate_limit: true,
        ..c
    })
    .await
    .unwrap()
}

/// 60 made-up tokens from one address: at most the failure bucket's budget of them is looked up
/// in the database, the rest are 429 with no lookup; tokens that are not even well-formed are
/// never looked up; a forged token for a real user spends nothing of that user's budget; and the
/// real user behind the same address, verified from memory, goes on working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_flood_costs_at_most_the_failure_budget() {
    let app = limited_app().await;
    let ann = app.register("ann").await;
    let first = app.get("/api/v1/users/me", &ann.token).await.expect(200);
    assert_eq!(first.headers["x-ratelimit-bucket"], "read");
    let remaining = |r: &crate::support::TestResponse| -> u32 {
        r.headers["x-ratelimit-remaining"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let ann_remaining = remaining(&first);

    // Malformed tokens: no lookup at all, charged to the address's route bucket.
    let before = app.queries_of("user_auth");
    for token in ["garbage", "x.y", &format!("{}.{}", ann.id, "Z".repeat(64))] {
        let response = app
            .get("/api/v1/users/me", token)
            .await
            .expect_error(401, "unauthorized");
        assert_eq!(response.headers["x-ratelimit-bucket"], "read");
    }
    assert_eq!(app.queries_of("user_auth"), before, "malformed tokens");

    let start = Instant::now();
    let (mut unauthorized, mut limited) = (0, 0);
    for _ in 0..60 {
        let response = app.get("/api/v1/users/me", &made_up_token()).await;
        match response.status.as_u16() {
            401 => unauthorized += 1,
            429 => {
                limited += 1;
                assert_eq!(response.headers["x-ratelimit-bucket"], "auth_failures");
                assert_eq!(
                    response.headers["x-ratelimit-limit"],
                    Bucket::AuthFailures.limit().to_string().as_str()
                );
            }
            other => panic!("a made-up token answered {other}"),
        }
    }
    let lookups = app.queries_of("user_auth") - before;
    assert_eq!(lookups, unauthorized, "one lookup per 401, none per 429");
    assert!(
        lookups <= failure_budget(start),
        "{lookups} lookups for 60 made-up tokens"
    );
    assert!(
        limited >= 60 - failure_budget(start),
        "{limited} answered 429"
    );

    // Forged tokens for ann: refused without spending ann's budget.
    for _ in 0..5 {
        let response = app
            .get("/api/v1/users/me", &made_up_token_for(&ann.id))
            .await;
        assert!(
            matches!(response.status.as_u16(), 401 | 429),
            "{}",
            response.status
        );
    }
    let again = app.get("/api/v1/users/me", &ann.token).await.expect(200);
    assert_eq!(again.body["id"], ann.id.as_str());
    assert_eq!(again.headers["x-ratelimit-bucket"], "read");
    assert_eq!(
        remaining(&again),
        ann_remaining - 1,
        "ann's own requests only"
    );
    let metrics = app
        .call(Method::GET, "/metrics", None, None)
        .await
        .expect(200);
    assert!(
        metrics
            .text
            .contains(r#"chat_rate_limited_total{bucket="auth_failures"}"#),
        "429s of the failure bucket are counted"
    );
}

/// The WebSocket upgrade also takes its token as a query parameter: made-up ones there are
/// limited like header tokens (a 401 costs one lookup, the failure budget bounds them), and a
/// good one still opens the way (426 here, since the request is not an upgrade).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_query_tokens_are_limited_like_header_tokens() {
    let app = limited_app().await;
    let ann = app.register("ann").await;
    let ws = |token: &str| format!("/api/v1/ws?token={token}");
    app.call(Method::GET, &ws(&ann.token), None, None)
        .await
        .expect_error(426, "upgrade_required");
    let before = app.queries_of("user_auth");
    let start = Instant::now();
    let (mut unauthorized, mut limited) = (0, 0);
    for _ in 0..60 {
        let response = app
            .call(Method::GET, &ws(&made_up_token()), None, None)
            .await;
        match response.status.as_u16() {
            401 => unauthorized += 1,
            429 => limited += 1,
            other => panic!("a made-up token answered {other}"),
        }
    }
    let lookups = app.queries_of("user_auth") - before;
    assert_eq!(lookups, unauthorized, "one lookup per 401");
    assert!(lookups <= failure_budget(start), "{lookups} lookups");
    assert!(limited > 0);
    // A percent-encoded token is the same token.
    let encoded = made_up_token().replace('.', "%2E");
    app.call(Method::GET, &ws(&encoded), None, None)
        .await
        .expect_error(429, "rate_limited");
    assert_eq!(app.queries_of("user_auth") - before, lookups);
    app.call(Method::GET, &ws(&ann.token), None, None)
        .await
        .expect_error(426, "upgrade_required");
}

/// The keys Redis holds whose name contains `auth-user`.
fn auth_user_keys(gateway: &TestGateway) -> Vec<String> {
    let reply = gateway.redis().raw_command(&[b"KEYS", b"*auth-user*"]);
    String::from_utf8_lossy(&reply)
        .split("\r\n")
        .filter(|line| !line.is_empty() && !line.starts_with(['*', '$']))
        .map(str::to_owned)
        .collect()
}

/// Tiered cache on a real upstash-gateway: made-up tokens leave no key in Redis (no cached "no
/// such user"), and cost no more database lookups than the failure budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_tokens_leave_nothing_in_redis() {
    let gateway = TestGateway::start().await;
    let (url, token) = (gateway.url(), gateway.token().to_owned());
    let app = TestApp::start_with(
        Db::Sqlite,
        move |c| chat_api::Config {
            cache_backend: CacheBackendKind::Tiered,
            upstash_url: Some(url),
            upstash_token: SecretString::new(token),
            rate_limit: true,
            cache_prefix: format!("chat-test-{}", Ulid::new().to_string().to_lowercase()),
            ..c
        },
        |config| chat_api::cache::build_backend(config).expect("backend"),
    )
    .await
    .unwrap();
    assert_eq!(app.state.cache().cache().backend().name(), "tiered");
    let ann = app.register("ann").await;
    app.get("/api/v1/users/me", &ann.token).await.expect(200);
    // The fill reaches Redis just after the answer.
    let cached = format!(":auth-user:{}", ann.id);
    let deadline = Instant::now() + Duration::from_secs(10);
    let known = loop {
        let keys = auth_user_keys(&gateway);
        if keys.iter().any(|k| k.ends_with(&cached)) {
            break keys;
        }
        assert!(
            Instant::now() < deadline,
            "ann never cached in Redis: {keys:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let before = app.queries_of("user_auth");
    let start = Instant::now();
    let ids: Vec<String> = (0..30).map(|_| Ulid::new().to_string()).collect();
    for id in &ids {
        let status = app
            .get("/api/v1/users/me", &made_up_token_for(id))
            .await
            .status;
        assert!(matches!(status.as_u16(), 401 | 429), "{status}");
    }
    let keys = auth_user_keys(&gateway);
    assert_eq!(keys, known, "made-up ids added keys to Redis");
    for id in &ids {
        assert!(!keys.iter().any(|k| k.contains(id.as_str())));
    }
    let lookups = app.queries_of("user_auth") - before;
    assert!(
        (1..=failure_budget(start)).contains(&lookups),
        "{lookups} lookups"
    );
    gateway.shutdown().await;
}

/// Look-alike names: NFKC-normalized, mixed scripts refused, uniqueness ignoring case and
/// confusable characters. On both databases: the uniqueness is the schema's.
async fn look_alike_names_cannot_register(db: Db) {
    let Some(app) = TestApp::start(db).await else {
        return;
    };
    let register = |name: &str| {
        app.call(
            Method::POST,
            "/api/v1/users",
            None,
            Some(json!({ "name": name })),
        )
    };
    let alice = register("alice").await.expect(201);
    assert_eq!(alice.body["user"]["name"], "alice");
    // Cyrillic а (U+0430) among Latin letters.
    let mixed = register("\u{430}lice")
        .await
        .expect_error(400, "validation_failed");
    assert!(mixed.text.contains("scripts"), "{}", mixed.text);
    // Full-width letters are `alice` after NFKC; a capital is the same name.
    for taken in ["ａｌｉｃｅ", "Alice", "ALICE"] {
        register(taken).await.expect_error(409, "name_taken");
    }
    // All-Cyrillic асе (a single script) looks like Latin `ace`.
    register("ace").await.expect(201);
    register("\u{430}\u{441}\u{435}")
        .await
        .expect_error(409, "name_taken");
    // Stored and shown normalized.
    let zoe = register("Zoe\u{308}").await.expect(201);
    assert_eq!(zoe.body["user"]["name"], "Zo\u{eb}");
    let me = app
        .get("/api/v1/users/me", zoe.body["token"].as_str().unwrap())
        .await
        .expect(200);
    assert_eq!(me.body["name"], "Zo\u{eb}");
    // Names in other scripts still register.
    register("иван").await.expect(201);
    register("山田").await.expect(201);
}

on_both_databases! {
    look_alike_names_cannot_register;
}

/// Users registered before names had a key get one when the store opens, so their look-alikes
/// are refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_registered_before_keys_get_one_at_startup() {
    let Some(app) = TestApp::start(Db::Sqlite).await else {
        return;
    };
    app.register("ann").await;
    let url = app.state.config().database_url.clone();
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("UPDATE users SET name_key = NULL")
        .execute(&pool)
        .await
        .unwrap();
    // Without a key, only the exact spelling is taken.
    app.register("Ann").await;
    sqlx::query("DELETE FROM users WHERE name = 'Ann'")
        .execute(&pool)
        .await
        .unwrap();
    chat_api::store::SqlStore::connect(app.state.config())
        .await
        .expect("reopen the store");
    let key: Option<String> = sqlx::query_scalar("SELECT name_key FROM users WHERE name = 'ann'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(key.as_deref(), Some("ann"));
    app.call(
        Method::POST,
        "/api/v1/users",
        None,
        Some(json!({ "name": "ANN" })),
    )
    .await
    .expect_error(409, "name_taken");
    pool.close().await;
}

/// `identify` frames are charged like tokens in a header: 40 WebSocket sessions from one address,
/// each identifying with a made-up token, cost at most the failure budget in lookups; the rest
/// are closed with 4029 without one, while the real user, verified from memory, still gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_frames_are_charged_like_header_tokens() {
    use futures_util::SinkExt as _;
    use tokio_tungstenite::tungstenite::Message;

    use crate::ws::{connect, hello_and_ready, next_close_code, next_json, serve};

    let app = limited_app().await;
    let addr = serve(&app).await;
    let ann = app.register("ann").await;
    // Ann's token is in the in-process cache from here on.
    app.get("/api/v1/users/me", &ann.token).await.expect(200);
    let before = app.queries_of("user_auth");
    let start = Instant::now();
    let (mut unauthorized, mut limited) = (0u64, 0u64);
    for _ in 0..40 {
        let mut socket = connect(addr, None, "").await;
        assert_eq!(next_json(&mut socket).await["op"], "hello");
        let identify = json!({"op": "identify", "token": made_up_token()}).to_string();
        socket.send(Message::text(identify)).await.unwrap();
        match next_close_code(&mut socket).await {
            chat_api::CLOSE_UNAUTHORIZED => unauthorized += 1,
            chat_api::CLOSE_RATE_LIMITED => limited += 1,
            other => panic!("closed with {other}"),
        }
    }
    let lookups = app.queries_of("user_auth") - before;
    assert_eq!(lookups, unauthorized, "one lookup per 4001, none per 4029");
    assert!(lookups <= failure_budget(start), "{lookups} lookups");
    assert!(
        limited >= 40 - failure_budget(start),
        "{limited} closed 4029"
    );

    let mut socket = connect(addr, None, "").await;
    let identify = json!({"op": "identify", "token": ann.token}).to_string();
    socket.send(Message::text(identify)).await.unwrap();
    hello_and_ready(&mut socket).await;
    assert_eq!(app.queries_of("user_auth") - before, lookups);
}

/// Per-address limits key on the client a trusted proxy names in `X-Forwarded-For`, and on the
/// peer when the peer is not trusted (a client cannot escape its limit by sending the header).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    use crate::support::{Server, TestDb};

    let limit = Bucket::Register.limit();
    let client = reqwest::Client::new();
    let register = |server: &Server, name: String, forwarded: &'static str| {
        client
            .post(server.api("/users"))
            .header("x-forwarded-for", forwarded)
            .json(&json!({ "name": name }))
            .send()
    };

    let db = TestDb::create(Db::Sqlite).await.unwrap();
    let trusting = Server::start(
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("RATE_LIMIT", "on"),
            ("TRUSTED_PROXIES", "127.0.0.1, ::1"),
        ],
        None,
    )
    .await;
    let start = Instant::now();
    for i in 0..limit {
        let response = register(&trusting, format!("a{i}"), "1.1.1.1")
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let response = register(&trusting, "a-over".into(), "1.1.1.1")
        .await
        .unwrap();
    if start.elapsed() < WINDOW {
        assert_eq!(
            response.status(),
            429,
            "the forwarded client's bucket is full"
        );
    }
    let response = register(&trusting, "b0".into(), "2.2.2.2").await.unwrap();
    assert_eq!(response.status(), 201, "another client behind the proxy");

    let db = TestDb::create(Db::Sqlite).await.unwrap();
    let untrusting = Server::start(
        &[("DATABASE_URL", db.url.as_str()), ("RATE_LIMIT", "on")],
        None,
    )
    .await;
    let start = Instant::now();
    let spoofed = ["1.0.0.1", "1.0.0.2", "1.0.0.3", "1.0.0.4", "1.0.0.5"];
    for i in 0..limit {
        let forwarded = spoofed[usize::try_from(i).unwrap() % spoofed.len()];
        let response = register(&untrusting, format!("c{i}"), forwarded)
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let response = register(&untrusting, "c-over".into(), "9.9.9.9")
        .await
        .unwrap();
    if start.elapsed() < WINDOW {
        assert_eq!(response.status(), 429, "a spoofed header escapes nothing");
    }
}
