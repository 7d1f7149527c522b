//! Secrets: the configured secrets — the Upstash token and users' bearer tokens — never
//! appear in the server's logs (at trace level), in error bodies, or in `/metrics`. Runs the real
//! binary in tiered mode against a real redis-server behind upstash-gateway, and feeds it good,
//! bad and broken credentials.

use std::io::Read;

use serde_json::{Value, json};
use upstash_gateway::testing::TestGateway;

use crate::support::{Db, Server, TestDb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_logs_error_bodies_or_metrics() {
    let database = TestDb::create(Db::Sqlite).await.expect("sqlite");
    let gateway = TestGateway::start().await;
    let upstash_token = gateway.token().to_owned();
    let log_path = std::env::temp_dir().join(format!("chat-api-secrets-{}.log", ulid::Ulid::new()));
    let log = std::fs::File::create(&log_path).expect("log file");
    let gateway_url = gateway.url();
    let server = Server::start(
        &[
            ("DATABASE_URL", database.url.as_str()),
            ("CACHE_BACKEND", "tiered"),
            ("UPSTASH_REDIS_REST_URL", gateway_url.as_str()),
            ("UPSTASH_REDIS_REST_TOKEN", upstash_token.as_str()),
            ("RUST_LOG", "trace"),
        ],
        Some(log),
    )
    .await;
    let base = server.base.clone();
    let api = |path: &str| server.api(path);
    let client = reqwest::Client::new();

    let mut bodies = Vec::new();
    let registered: Value = client
        .post(api("/users"))
        .json(&json!({ "name": "secretive" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = registered["token"].as_str().unwrap().to_owned();
    let channel: Value = client
        .post(api("/channels"))
        .bearer_auth(&token)
        .json(&json!({ "name": "vault", "kind": "private" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cid = channel["id"].as_str().unwrap().to_owned();
    let messages = api(&format!("/channels/{cid}/messages"));
    for _ in 0..3 {
        client
            .post(&messages)
            .bearer_auth(&token)
            .json(&json!({ "content": "hello" }))
            .send()
            .await
            .unwrap();
        let page = client
            .get(&messages)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        bodies.push(page.text().await.unwrap());
    }
    // Wrong, truncated and mangled credentials, a malformed request, a non-member's request.
    let wrong = format!("{token}x");
    let truncated = token[..token.len() / 2].to_owned();
    for bad in [wrong.as_str(), truncated.as_str(), upstash_token.as_str()] {
        let res = client.get(&messages).bearer_auth(bad).send().await.unwrap();
        assert_eq!(res.status(), 401);
        bodies.push(res.text().await.unwrap());
    }
    let res = client
        .get(&messages)
        .header("authorization", format!("Basic {token}"))
        .send()
        .await
        .unwrap();
    bodies.push(res.text().await.unwrap());
    let res = client
        .post(&messages)
        .bearer_auth(&token)
        .body(format!("{{\"content\": \"{token}\""))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    bodies.push(res.text().await.unwrap());
    bodies.push(
        client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    bodies.push(
        client
            .get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );

    drop(server);
    let mut logs = String::new();
    std::fs::File::open(&log_path)
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    let _ = std::fs::remove_file(&log_path);

    assert!(
        logs.len() > 1000,
        "trace logging ran ({} bytes)",
        logs.len()
    );
    for (what, secret) in [
        ("user token", token.as_str()),
        ("Upstash token", upstash_token.as_str()),
        ("wrong token", wrong.as_str()),
        ("truncated token", truncated.as_str()),
    ] {
        assert!(!logs.contains(secret), "the {what} appears in the logs");
        for body in &bodies {
            assert!(
                !body.contains(secret),
                "the {what} appears in a response: {body:.200}"
            );
        }
    }
}
