//! The pages (`/`, `/dashboard`, `/assets/*`) and the dashboard's stream: security headers,
//! who may read the stream, and frames that follow the load. (The pages themselves run in a real
//! browser in `cargo xtask browser`.)

use std::time::Duration;

use axum::http::{Method, header};
use chat_api::config::{DashboardAccess, SecretString};
use serde_json::Value;

use crate::{
    support::{Db, TestApp},
    ws::serve,
};

const DASHBOARD_TOKEN: &str = "dashboard-token-for-tests-0123";

#[tokio::test]
async fn pages_and_assets_are_served_with_a_strict_csp() {
    let app = TestApp::start(Db::Sqlite).await.unwrap();
    for (path, content_type) in [
        ("/", "text/html"),
        ("/dashboard", "text/html"),
        ("/assets/app.js", "text/javascript"),
        ("/assets/dashboard.js", "text/javascript"),
        ("/assets/app.css", "text/css"),
        ("/assets/favicon.svg", "image/svg+xml"),
    ] {
        let response = app.call(Method::GET, path, None, None).await.expect(200);
        let header = |name| {
            response.headers[name]
                .to_str()
                .unwrap_or_else(|_| panic!("{path}: {name}"))
        };
        assert!(
            header(header::CONTENT_TYPE.as_str()).starts_with(content_type),
            "{path}"
        );
        let csp = header("content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert_eq!(header("x-frame-options"), "DENY");
        assert_eq!(header("referrer-policy"), "no-referrer");
    }
    let index = app.call(Method::GET, "/", None, None).await;
    assert!(index.text.contains("/assets/app.js"), "{}", index.text);
    // Only listed files, and HTML only at its page's path.
    for path in [
        "/assets/nope.js",
        "/assets/index.html",
        "/assets/..%2FCargo.toml",
        "/assets/",
    ] {
        app.call(Method::GET, path, None, None)
            .await
            .expect_error(404, "not_found");
    }
}

#[tokio::test]
async fn the_dashboard_stream_is_guarded() {
    // In process there is no peer address: not a local request.
    let local = TestApp::start(Db::Sqlite).await.unwrap();
    local
        .call(Method::GET, "/dashboard/stream", None, None)
        .await
        .expect_error(403, "dashboard_local_only");
    // The page itself is static and always served; it is the stream that holds the data.
    local
        .call(Method::GET, "/dashboard", None, None)
        .await
        .expect(200);

    let off = TestApp::start_configured(Db::Sqlite, |c| chat_api::Config {
        dashboard: DashboardAccess::Off,
        ..c
    })
    .await
    .unwrap();
    off.call(Method::GET, "/dashboard/stream", None, None)
        .await
        .expect_error(404, "not_found");

    let guarded = TestApp::start_configured(Db::Sqlite, |c| chat_api::Config {
        dashboard: DashboardAccess::Token(SecretString::new(DASHBOARD_TOKEN)),
        ..c
    })
    .await
    .unwrap();
    let user = guarded.register("ann").await;
    for token in [
        None,
        Some("wrong-token-wrong-token"),
        Some(user.token.as_str()),
    ] {
        guarded
            .call(Method::GET, "/dashboard/stream", token, None)
            .await
            .expect_error(401, "dashboard_token_required");
    }
    // With the token, from anywhere (a real listener, so the response can stay open).
    let addr = serve(&guarded).await;
    let response = reqwest::Client::new()
        .get(format!("http://{addr}/dashboard/stream?interval_ms=200"))
        .bearer_auth(DASHBOARD_TOKEN)
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let frame = Frames(response).next().await;
    assert_eq!(frame["version"], 1);
    // Aggregates only: the user's token is nowhere in it.
    assert!(!frame.to_string().contains(&user.token));
}

/// Reads `data:` frames off an SSE response.
pub(crate) struct Frames(pub(crate) reqwest::Response);

impl Frames {
    pub(crate) async fn next(&mut self) -> Value {
        let mut text = String::new();
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(end) = text.find("\n\n") {
                    let event: String = text.drain(..end + 2).collect();
                    if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                        return serde_json::from_str(data).expect("a JSON frame");
                    }
                    continue;
                }
                let chunk = self
                    .0
                    .chunk()
                    .await
                    .unwrap()
                    .expect("the stream stays open");
                text.push_str(std::str::from_utf8(&chunk).unwrap());
            }
        })
        .await
        .expect("a frame in time")
    }
}

fn kind<'a>(frame: &'a Value, name: &str) -> &'a Value {
    frame["cache"]["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == name)
        .unwrap_or_else(|| panic!("kind {name} in {frame}"))
}

#[tokio::test]
async fn dashboard_frames_follow_the_load_for_a_local_client() {
    let app = TestApp::start(Db::Sqlite).await.unwrap();
    let ann = app.register("ann").await;
    let channel = app.create_channel(&ann, "general", "public").await;
    app.post_message(&ann, &channel, "hello").await;
    let addr = serve(&app).await;
    let response = reqwest::Client::new()
        .get(format!("http://{addr}/dashboard/stream?interval_ms=200"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "a loopback client without a token");
    let mut frames = Frames(response);

    // Idle: nothing read the latest page in the window.
    let idle = frames.next().await;
    assert_eq!(idle["cache_backend"], "memory");
    assert!(idle["upstash"].is_null() && idle["backplane"].is_null());
    assert_eq!(kind(&idle, "latest_page")["lookups_per_sec"], 0.0);
    assert!(kind(&idle, "latest_page")["hit_ratio"].is_null());

    // A burst of reads of one page: one load, then hits.
    let client = reqwest::Client::new();
    for _ in 0..50 {
        let response = client
            .get(format!("http://{addr}/api/v1/channels/{channel}/messages"))
            .bearer_auth(&ann.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    // The first frame whose window holds the whole burst (frames may have been sent during it).
    let reads_in_window = |frame: &Value| {
        let rate = kind(frame, "latest_page")["lookups_per_sec"]
            .as_f64()
            .unwrap();
        (rate * frame["window_secs"].as_f64().unwrap()).round()
    };
    let busy = loop {
        let frame = frames.next().await;
        if reads_in_window(&frame) >= 50.0 {
            break frame;
        }
    };
    let latest = kind(&busy, "latest_page");
    assert_eq!(reads_in_window(&busy), 50.0, "{latest}");
    // The post dropped the page: one load, 49 hits.
    assert_eq!(latest["hit_ratio"].as_f64(), Some(49.0 / 50.0), "{latest}");
    assert!(busy["http"]["requests_per_sec"].as_f64().unwrap() > 0.0);
    let route = busy["http"]["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "/api/v1/channels/{cid}/messages")
        .unwrap();
    assert!(route["p99_ms"].as_f64().unwrap() > 0.0, "{route}");
    let memory = &busy["cache"]["tiers"][0];
    assert_eq!(memory["tier"], "memory");
    assert!(memory["entries"].as_u64().unwrap() >= 1, "{memory}");
}
