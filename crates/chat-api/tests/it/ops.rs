//! Operations: `/health`, `/stats` and `/metrics` (one snapshot, two renderings that agree), the
//! OpenAPI document (checked against the router's route table), request ids, rate limits, and
//! secrets staying out of responses and metrics.

use std::collections::BTreeSet;

use axum::{
    body::Body,
    http::{Method, Request, header},
};
use serde_json::json;

use crate::support::{Db, TestApp};

/// The value of the one sample line of `/metrics` that starts with `series ` (name and labels).
fn sample(text: &str, series: &str) -> u64 {
    let values: Vec<u64> = text
        .lines()
        .filter_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .collect();
    assert_eq!(values.len(), 1, "one {series:?} sample in\n{text}");
    values[0]
}

#[tokio::test]
async fn stats_and_metrics_are_one_snapshot_rendered_twice() {
    let app = TestApp::start(Db::Sqlite).await.unwrap();
    let ann = app.register("ann").await;
    let channel = app.create_channel(&ann, "general", "public").await;
    app.post_message(&ann, &channel, "hello").await;
    for _ in 0..3 {
        app.get(&format!("/api/v1/channels/{channel}/messages"), &ann.token)
            .await
            .expect(200);
    }
    app.get("/api/v1/channels/not-an-id/messages", &ann.token)
        .await
        .expect(400);

    let response = app
        .call(Method::GET, "/stats", None, None)
        .await
        .expect(200);
    assert!(
        response.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    // Read through the shared types, as cachectl and chat-bench do.
    let stats = chat_stats::parse(response.text.as_bytes()).unwrap();
    assert_eq!(stats.version, chat_stats::VERSION);
    let tier = &stats.cache.tiers[0];
    assert_eq!(
        (tier.tier.as_str(), tier.backend.as_str()),
        ("memory", "memory")
    );
    // Token lookups and three reads of the latest page: loads, then hits.
    assert!(stats.cache.lookups.loads >= 1, "{stats:?}");
    assert!(stats.cache.lookups.hits >= 2, "{stats:?}");
    assert!(tier.hits >= 2 && tier.entries.is_some(), "{stats:?}");
    assert!(stats.cache.breaker.is_none(), "memory has no breaker");
    // The document says what cache-core and the store count (no field mixed up on the way).
    let core = app.state.cache().cache().stats();
    let core_tier = &core.tiers[0];
    assert_eq!(
        (
            tier.hits,
            tier.misses,
            tier.errors,
            tier.timeouts,
            tier.skipped
        ),
        (
            core_tier.hits,
            core_tier.misses,
            core_tier.errors,
            core_tier.timeouts,
            core_tier.skipped
        )
    );
    let l = stats.cache.lookups;
    assert_eq!(
        [l.hits, l.misses, l.loads, l.load_errors, l.coalesced],
        [
            core.loads.hits,
            core.loads.misses,
            core.loads.loads,
            core.loads.load_errors,
            core.loads.coalesced
        ]
    );
    assert_eq!(stats.db.queries, app.queries());
    assert_eq!(
        stats.db.queries_by_op["messages"],
        app.queries_of("messages")
    );
    assert_eq!(stats.db.queries_by_op["post_message"], 1);
    assert_eq!(
        stats.db.queries,
        stats.db.queries_by_op.values().sum::<u64>()
    );
    assert_eq!(stats.http.responses.client_error, 1);
    assert_eq!(stats.http.responses.server_error, 0);
    // register, create channel, post, three reads, the 400.
    assert!(stats.http.responses.success >= 6, "{stats:?}");
    assert_eq!(stats.ws_sessions, 0);
    assert!(!response.text.contains(&channel) && !response.text.contains(&ann.token));

    // No request touched the cache or the database since: /metrics shows the same counts.
    let text = app
        .call(Method::GET, "/metrics", None, None)
        .await
        .expect(200)
        .text;
    let labels = r#"{tier="memory",backend="memory"}"#;
    assert_eq!(
        sample(&text, &format!("chat_cache_hits_total{labels}")),
        tier.hits
    );
    assert_eq!(
        sample(&text, &format!("chat_cache_misses_total{labels}")),
        tier.misses
    );
    // Entries are an estimate that settles as background cache writes finish: present is enough.
    sample(&text, &format!("chat_cache_entries{labels}"));
    assert_eq!(
        sample(&text, "chat_cache_lookup_hits_total"),
        stats.cache.lookups.hits
    );
    assert_eq!(
        sample(&text, "chat_cache_loads_total"),
        stats.cache.lookups.loads
    );
    // Per kind: three reads of the latest page, the first a load (the post dropped the page).
    let latest = stats
        .cache
        .kinds
        .iter()
        .find(|k| k.kind == "latest_page")
        .expect("latest_page in cache.kinds");
    assert_eq!((latest.lookups, latest.loads), (3, 1), "{latest:?}");
    for kind in &stats.cache.kinds {
        let labels = format!("{{kind=\"{}\"}}", kind.kind);
        assert_eq!(
            sample(&text, &format!("chat_cache_kind_lookups_total{labels}")),
            kind.lookups
        );
        assert_eq!(
            sample(&text, &format!("chat_cache_kind_loads_total{labels}")),
            kind.loads
        );
    }
    for (op, count) in &stats.db.queries_by_op {
        assert_eq!(
            sample(&text, &format!("chat_db_queries_total{{op=\"{op}\"}}")),
            *count
        );
    }
    assert_eq!(
        sample(
            &text,
            r#"chat_http_responses_total{method="GET",route="/api/v1/channels/{cid}/messages",status="4xx"}"#
        ),
        stats.http.responses.client_error
    );
}

#[tokio::test]
async fn health_reports_database_cache_and_breaker() {
    let app = TestApp::start(Db::Sqlite).await.unwrap();
    let health = app
        .call(Method::GET, "/health", None, None)
        .await
        .expect(200);
    assert_eq!(health.body["status"], "ok");
    assert_eq!(health.body["database"]["status"], "ok");
    assert_eq!(health.body["database"]["kind"], "sqlite");
    assert_eq!(health.body["cache"]["backend"], "memory");
    assert_eq!(health.body["cache"]["status"], "ok");
    assert!(
        health.body["cache"]["breaker"].is_null(),
        "memory has no breaker"
    );
}

#[tokio::test]
async fn metrics_cover_http_cache_and_database() {
    let app = TestApp::start(Db::Sqlite).await.unwrap();
    let ann = app.register("ann").await;
    let channel = app.create_channel(&ann, "general", "public").await;
    app.post_message(&ann, &channel, "hello").await;
    for _ in 0..3 {
        app.get(&format!("/api/v1/channels/{channel}/messages"), &ann.token)
            .await
            .expect(200);
    }
    let metrics = app
        .call(Method::GET, "/metrics", None, None)
        .await
        .expect(200);
    // OpenMetrics, which Prometheus asks for first and parses natively.
    assert_eq!(
        metrics.headers[header::CONTENT_TYPE],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = metrics.text;
    assert!(
        text.ends_with("# EOF\n"),
        "an OpenMetrics body ends with # EOF"
    );
    for needle in [
        // prometheus-client writes `le` first; label order means nothing to Prometheus.
        r#"chat_http_request_duration_seconds_bucket{le="+Inf",method="GET",route="/api/v1/channels/{cid}/messages"} 3"#,
        r#"chat_http_request_duration_seconds_count{method="GET",route="/api/v1/channels/{cid}/messages"} 3"#,
        r#"chat_http_responses_total{method="POST",route="/api/v1/users",status="2xx"} 1"#,
        r#"chat_cache_hits_total{tier="memory",backend="memory"}"#,
        r#"chat_cache_misses_total{tier="memory",backend="memory"}"#,
        r#"chat_cache_entries{tier="memory",backend="memory"}"#,
        r#"chat_cache_bytes{tier="memory",backend="memory"}"#,
        "chat_cache_loads_total ",
        "chat_cache_load_errors_total 0",
        "chat_cache_coalesced_total ",
        "chat_cache_stale_served_total 0",
        "chat_cache_failsafe_served_total 0",
        r#"chat_db_queries_total{op="messages"} 1"#,
        r#"chat_db_queries_total{op="post_message"} 1"#,
        "chat_ws_sessions 0\n",
        "chat_cache_pending_invalidations 0\n",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    // Ids and tokens never become labels.
    assert!(!text.contains(&channel));
    assert!(!text.contains(&ann.token));
    let secret = ann.token.split_once('.').unwrap().1;
    assert!(!text.contains(secret));
}

#[tokio::test]
async fn the_openapi_document_matches_the_routes() {
    let app = TestApp::start(Db::Sqlite).await.unwrap();
    let doc = app
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await
        .expect(200);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = BTreeSet::new();
    for (path, item) in doc.body["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "put", "post", "delete", "patch", "head", "options"]
                .contains(&method.as_str())
            {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let served: BTreeSet<_> = chat_api::api_route_table()
        .into_iter()
        .map(|route| (route.method.to_string(), route.path.to_owned()))
        .collect();
    assert_eq!(documented, served);
    assert!(doc.body["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc.body["components"]["schemas"]["Message"].is_object());
    assert!(doc.body["components"]["schemas"]["ErrorBody"].is_object());

    // Every documented route answers (not the router's 404 or 405).
    for (method, path) in &served {
        let concrete = path
            .replace("{cid}", &ulid::Ulid::new().to_string())
            .replace("{mid}", &ulid::Ulid::new().to_string())
            .replace("{uid}", &ulid::Ulid::new().to_string())
            .replace("{emoji}", "ok");
        let response = app
            .call(method.parse().unwrap(), &concrete, None, None)
            .await;
        assert!(
            !matches!(
                response.body["error"]["code"].as_str(),
                Some("not_found" | "method_not_allowed")
            ),
            "{method} {path}: {}",
            response.text
        );
    }
}

#[tokio::test]
async fn requests_carry_an_id() {
    let app = TestApp::start(Db::Sqlite).await.unwrap();
    let response = app
        .call(Method::GET, "/health", None, None)
        .await
        .expect(200);
    let id = response.headers["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 26);
    let request = Request::get("/health")
        .header("x-request-id", "client-chosen-1")
        .body(Body::empty())
        .unwrap();
    let response = app.send(request).await.expect(200);
    assert_eq!(response.headers["x-request-id"], "client-chosen-1");
}

#[tokio::test]
async fn rate_limits_answer_429_with_headers() {
    let app = TestApp::start_configured(Db::Sqlite, |c| chat_api::Config {
        rate_limit: true,
        ..c
    })
    .await
    .unwrap();
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let limit = chat_api::ratelimit::Bucket::Channels.limit();
    for i in 0..limit {
        let response = app
            .post(
                "/api/v1/channels",
                &ann.token,
                json!({"name": format!("c{i}")}),
            )
            .await
            .expect(201);
        assert_eq!(
            response.headers["x-ratelimit-limit"],
            limit.to_string().as_str()
        );
        assert_eq!(
            response.headers["x-ratelimit-remaining"],
            (limit - i - 1).to_string().as_str()
        );
        assert_eq!(response.headers["x-ratelimit-bucket"], "channels");
        assert!(response.headers.contains_key("x-ratelimit-reset-after"));
    }
    let limited = app
        .post(
            "/api/v1/channels",
            &ann.token,
            json!({"name": "one too many"}),
        )
        .await
        .expect_error(429, "rate_limited");
    let retry_after: u64 = limited.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry_after));
    // Per user and per bucket: bob can still create, ann can still read.
    app.post("/api/v1/channels", &bob.token, json!({"name": "bobs"}))
        .await
        .expect(201);
    app.get("/api/v1/users/me/channels", &ann.token)
        .await
        .expect(200);
    let metrics = app
        .call(Method::GET, "/metrics", None, None)
        .await
        .expect(200);
    assert!(
        metrics
            .text
            .contains(r#"chat_rate_limited_total{bucket="channels"} 1"#)
    );
}

/// The middleware counts every route of the table in the bucket declared beside it: a route
/// whose bucket the limiter cannot find, or finds wrong, fails here.
#[tokio::test]
async fn every_route_is_limited_by_the_bucket_its_table_row_declares() {
    let app = TestApp::start_configured(Db::Sqlite, |c| chat_api::Config {
        rate_limit: true,
        ..c
    })
    .await
    .unwrap();
    let ann = app.register("ann").await;
    let channel = app
        .post("/api/v1/channels", &ann.token, json!({"name": "general"}))
        .await
        .expect(201);
    let cid = channel.body["id"].as_str().unwrap().to_owned();
    let message = app
        .post(
            &format!("/api/v1/channels/{cid}/messages"),
            &ann.token,
            json!({"content": "hi"}),
        )
        .await
        .expect(201);
    let mid = message.body["id"].as_str().unwrap().to_owned();
    for route in chat_api::api_route_table() {
        let path = route
            .path
            .replace("{cid}", &cid)
            .replace("{mid}", &mid)
            .replace("{uid}", &ann.id)
            .replace("{emoji}", "%F0%9F%91%8D");
        // Whatever the handler answers (a 404 after a delete, a 426 without an upgrade), the
        // route matched and was counted.
        let response = app
            .call(
                route.method.clone(),
                &path,
                Some(&ann.token),
                Some(json!({})),
            )
            .await;
        assert_eq!(
            response.headers["x-ratelimit-bucket"],
            route.bucket.as_str(),
            "{} {} answered {}",
            route.method,
            route.path,
            response.status
        );
        assert_eq!(
            response.headers["x-ratelimit-limit"],
            route.bucket.limit().to_string().as_str()
        );
    }
}

#[tokio::test]
async fn rate_limits_can_be_turned_off() {
    let app = TestApp::start(Db::Sqlite).await.unwrap();
    let ann = app.register("ann").await;
    for i in 0..chat_api::ratelimit::Bucket::Channels.limit() + 5 {
        let response = app
            .post(
                "/api/v1/channels",
                &ann.token,
                json!({"name": format!("c{i}")}),
            )
            .await
            .expect(201);
        assert!(!response.headers.contains_key("x-ratelimit-limit"));
    }
}
