//! Opt-in fault and latency injection.

use std::time::{Duration, Instant};

use serde_json::json;
use upstash_gateway::{FaultConfig, testing::TestGateway};

use crate::client::{Client, send};

#[tokio::test]
async fn no_faults_by_default_and_latency_is_added_when_asked() {
    let env = TestGateway::start().await;
    let client = Client::new(&env);
    assert_eq!(env.faults().config(), FaultConfig::default());
    for _ in 0..20 {
        client.ok(json!(["PING"])).await;
    }

    env.faults().set(
        FaultConfig::default()
            .with_latency(Duration::from_millis(150))
            .with_jitter(Duration::from_millis(50)),
    );
    let started = Instant::now();
    client.ok(json!(["PING"])).await;
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
    env.shutdown().await;
}

#[tokio::test]
async fn failure_rate_answers_503_without_touching_redis() {
    let env = TestGateway::start_with(|builder| {
        builder.faults(FaultConfig::default().with_failure_rate(1.0))
    })
    .await;
    let client = Client::new(&env);
    let response = client.cmd(json!(["SET", "k", "v"])).await;
    assert_eq!(response.status, 503);
    assert!(
        response.error().contains("simulated failure"),
        "{}",
        response.error()
    );
    env.faults().clear();
    assert_eq!(
        client.ok(json!(["EXISTS", "k"])).await,
        json!(0),
        "the failed request never reached Redis"
    );

    // A partial rate fails some and passes some.
    env.faults()
        .set(FaultConfig::default().with_failure_rate(0.5));
    let mut statuses = Vec::new();
    for _ in 0..60 {
        statuses.push(client.cmd(json!(["PING"])).await.status);
    }
    assert!(
        statuses.contains(&200) && statuses.contains(&503),
        "{statuses:?}"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn outage_through_the_admin_endpoint() {
    let env = TestGateway::start_with(|builder| builder.admin_token("admin-secret")).await;
    let client = Client::new(&env);
    let admin = [("Authorization", "Bearer admin-secret")];

    // The REST token is not the admin token.
    let rest_auth = format!("Bearer {}", client.token);
    let refused = send(
        client.addr,
        "POST",
        "/__gateway/fault",
        &[("Authorization", &rest_auth)],
        br#"{"outage_ms":1000}"#,
    )
    .await;
    assert_eq!(refused.status, 401);

    let started = send(
        client.addr,
        "POST",
        "/__gateway/fault",
        &admin,
        br#"{"outage_ms":60000}"#,
    )
    .await;
    assert_eq!(started.status, 200);
    assert!(started.json()["outage_remaining_ms"].as_u64().unwrap() > 50_000);
    let during = client.cmd(json!(["PING"])).await;
    assert_eq!(during.status, 503);
    assert!(during.error().contains("simulated outage"));
    // The gateway's own endpoints keep working during an outage.
    assert_eq!(
        send(client.addr, "GET", "/__gateway/health", &[], b"")
            .await
            .status,
        200
    );

    let ended = send(
        client.addr,
        "POST",
        "/__gateway/fault",
        &admin,
        br#"{"outage_ms":0,"latency_ms":5}"#,
    )
    .await;
    assert_eq!(
        ended.json(),
        json!({"latency_ms": 5, "jitter_ms": 0, "failure_rate": 0.0, "outage_remaining_ms": 0})
    );
    assert_eq!(client.ok(json!(["PING"])).await, json!("PONG"));
    let cleared = send(client.addr, "DELETE", "/__gateway/fault", &admin, b"").await;
    assert_eq!(cleared.json()["latency_ms"], json!(0));
    let invalid = send(
        client.addr,
        "POST",
        "/__gateway/fault",
        &admin,
        br#"{"latency":5}"#,
    )
    .await;
    assert_eq!(invalid.status, 400);

    // An outage set from the handle expires by itself.
    env.faults().start_outage(Duration::from_millis(300));
    assert_eq!(client.cmd(json!(["PING"])).await.status, 503);
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.cmd(json!(["PING"])).await.status != 200 {
        assert!(Instant::now() < deadline, "the outage never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(client.ok(json!(["PING"])).await, json!("PONG"));
    env.shutdown().await;
}

#[tokio::test]
async fn admin_endpoint_is_absent_without_an_admin_token() {
    let env = TestGateway::start().await;
    let client = Client::new(&env);
    let auth = format!("Bearer {}", client.token);
    let response = send(
        client.addr,
        "POST",
        "/__gateway/fault",
        &[("Authorization", &auth)],
        br#"{"outage_ms":1000}"#,
    )
    .await;
    assert_eq!(response.status, 404);
    assert_eq!(client.ok(json!(["PING"])).await, json!("PONG"));
    env.shutdown().await;
}
