//! Tokens, refused commands and the sync token.

use std::time::{Duration, Instant};

use serde_json::json;
use upstash_gateway::testing::TestGateway;

use crate::client::{Client, send};

const UNAUTHORIZED: &str = "WRONGPASS invalid or missing auth token";

#[tokio::test]
async fn missing_or_wrong_tokens_get_401_with_upstash_text() {
    let env = TestGateway::start().await;
    let client = Client::new(&env);
    let body = br#"["SET","k","v"]"#;
    let wrong = format!("Bearer {}x", client.token);
    let cases: [(&str, Vec<(&str, &str)>); 5] = [
        ("/", vec![]),
        ("/", vec![("Authorization", wrong.as_str())]),
        ("/", vec![("Authorization", "Basic Zm9vOmJhcg==")]),
        ("/?_token=nope", vec![]),
        ("/pipeline", vec![("Authorization", "Bearer ")]),
    ];
    for (target, headers) in cases {
        let response = send(client.addr, "POST", target, &headers, body).await;
        assert_eq!(response.status, 401, "{target} {headers:?}");
        assert_eq!(response.error(), UNAUTHORIZED);
    }
    // Nothing was written by the refused requests.
    assert_eq!(client.ok(json!(["EXISTS", "k"])).await, json!(0));

    // `?_token=` works in place of the header, in both forms.
    let target = format!("/?_token={}", client.token);
    assert_eq!(
        send(client.addr, "POST", &target, &[], body).await.status,
        200
    );
    let target = format!("/get/k?_token={}", client.token);
    assert_eq!(
        send(client.addr, "GET", &target, &[], b"").await.json(),
        json!({"result": "v"})
    );
    env.shutdown().await;
}

#[tokio::test]
async fn read_only_token_reads_but_cannot_write() {
    let env = TestGateway::start_with(|builder| builder.read_only_token("read-only-secret")).await;
    let writer = Client::new(&env);
    let reader = Client {
        addr: writer.addr,
        token: "read-only-secret".into(),
    };
    writer.ok(json!(["SET", "k", "v"])).await;

    assert_eq!(reader.ok(json!(["GET", "k"])).await, json!("v"));
    assert_eq!(reader.ok(json!(["SCAN", 0])).await[1], json!(["k"]));
    for write in [
        json!(["SET", "k", "x"]),
        json!(["DEL", "k"]),
        json!(["EVAL", "return 1", 0]),
        json!(["FLUSHALL"]),
    ] {
        let response = reader.cmd(write.clone()).await;
        assert_eq!(response.status, 400, "{write}");
        assert!(
            response.error().starts_with("NOPERM"),
            "{write}: {}",
            response.error()
        );
    }
    let path_write = reader.request("GET", "/del/k", b"").await;
    assert_eq!(path_write.status, 400);

    // In a pipeline only the writes fail; in a transaction the whole thing is refused.
    let pipeline = reader
        .post_json("/pipeline", &json!([["GET", "k"], ["SET", "k", "x"]]), &[])
        .await;
    let results = pipeline.json();
    assert_eq!(results[0], json!({"result": "v"}));
    assert!(results[1]["error"].as_str().unwrap().starts_with("NOPERM"));
    let multi = reader
        .post_json(
            "/multi-exec",
            &json!([["GET", "k"], ["SET", "k", "x"]]),
            &[],
        )
        .await;
    assert_eq!(multi.status, 400);
    assert_eq!(writer.ok(json!(["GET", "k"])).await, json!("v"));
    env.shutdown().await;
}

#[tokio::test]
async fn sync_token_header_advances_on_writes_and_is_accepted_back() {
    let env = TestGateway::start().await;
    let client = Client::new(&env);
    let token_of = |response: &crate::client::HttpResponse| -> u64 {
        response
            .header("upstash-sync-token")
            .expect("sync token header")
            .parse()
            .expect("numeric sync token")
    };
    let first = token_of(&client.cmd(json!(["SET", "k", "1"])).await);
    let after_read = client
        .post_json(
            "/",
            &json!(["GET", "k"]),
            &[("upstash-sync-token", &first.to_string())],
        )
        .await;
    assert_eq!(after_read.status, 200);
    assert_eq!(
        token_of(&after_read),
        first,
        "a read does not move the token"
    );
    let after_write = token_of(
        &client
            .post_json("/pipeline", &json!([["INCR", "k"]]), &[])
            .await,
    );
    assert!(after_write > first);
    // Errors carry it too, and an empty or odd presented token is fine (one Redis: nothing to wait for).
    let unauthorized = send(client.addr, "POST", "/", &[], b"[]").await;
    assert!(unauthorized.header("upstash-sync-token").is_some());
    let odd = client
        .post_json("/", &json!(["GET", "k"]), &[("upstash-sync-token", "")])
        .await;
    assert_eq!(odd.status, 200);
    env.shutdown().await;
}

#[tokio::test]
async fn blocking_and_connection_state_commands_are_refused_without_waiting() {
    let env = TestGateway::start().await;
    let client = Client::new(&env);
    let started = Instant::now();
    for command in [
        json!(["BLPOP", "q", 0]),
        json!(["BRPOP", "q", 0]),
        json!(["BLMOVE", "a", "b", "LEFT", "RIGHT", 0]),
        json!(["BZPOPMIN", "z", 0]),
        json!(["XREAD", "BLOCK", 0, "STREAMS", "s", "$"]),
        json!(["WAIT", 1, 0]),
    ] {
        let response = client.cmd(command.clone()).await;
        assert_eq!(response.status, 400, "{command}");
        assert!(
            response.error().contains("blocking command"),
            "{command}: {}",
            response.error()
        );
    }
    for command in [
        json!(["SUBSCRIBE", "c"]),
        json!(["SELECT", 1]),
        json!(["HELLO", 3]),
        json!(["MULTI"]),
        json!(["CLIENT", "KILL", "TYPE", "normal"]),
    ] {
        let response = client.cmd(command.clone()).await;
        assert_eq!(response.status, 400, "{command}");
        assert!(
            response.error().contains("not supported"),
            "{command}: {}",
            response.error()
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refusals must not wait on Redis"
    );
    // Refused commands in a pipeline fail in place; the rest runs.
    let pipeline = client
        .post_json("/pipeline", &json!([["BLPOP", "q", 0], ["PING"]]), &[])
        .await;
    let results = pipeline.json();
    assert!(results[0]["error"].as_str().unwrap().contains("blocking"));
    assert_eq!(results[1], json!({"result": "PONG"}));
    // And the pooled connections were not switched to another database or protocol.
    assert_eq!(client.ok(json!(["SET", "still", "db0"])).await, json!("OK"));
    assert_eq!(
        env.redis().raw_command(&[b"GET", b"still"]),
        b"$3\r\ndb0\r\n"
    );
    env.shutdown().await;
}
