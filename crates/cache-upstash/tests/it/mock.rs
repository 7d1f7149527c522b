//! wiremock: failures a real server cannot be made to produce on demand. One `MockServer` per
//! test; `.expect(n)` is verified when the server drops.

use std::time::Duration;

use bytes::Bytes;
use cache_upstash::{Command, ErrorKind, Redis, RetryPolicy, Value};
use serde_json::json;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{body_bytes, body_json, header, method, path},
};

use crate::fast_retries;

const TOKEN: &str = "mock-secret-token";

fn client(server: &MockServer) -> Redis {
    client_with(server, fast_retries().max_retries(2))
}

fn client_with(server: &MockServer, retry: RetryPolicy) -> Redis {
    Redis::builder()
        .url(server.uri())
        .token(TOKEN)
        .retry(retry)
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client")
}

fn ok(result: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({ "result": result }))
}

#[tokio::test]
async fn request_shape_json_body_auth_and_base64_header() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(header("upstash-encoding", "base64"))
        .and(body_json(json!(["SET", "k", "v", "PX", "1500"])))
        .respond_with(ok(json!("OK")))
        .expect(1)
        .mount(&server)
        .await;
    let redis = client(&server);
    let written = redis
        .set_with("k", "v", cache_upstash::SetOptions::new().px(1500))
        .await
        .unwrap();
    assert!(written);
}

#[tokio::test]
async fn unauthorized_is_typed_not_retried_and_never_shows_the_token() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"error": "WRONGPASS invalid or missing auth token"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let redis = client(&server);
    let err = redis.get("k").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized);
    assert!(!err.is_retryable());
    for text in [err.to_string(), format!("{err:?}"), format!("{redis:?}")] {
        assert!(!text.contains(TOKEN), "token leaked: {text}");
    }
}

#[tokio::test]
async fn server_errors_retry_reads_but_never_incr() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_json(json!(["GET", "k"])))
        .respond_with(ResponseTemplate::new(503).set_body_json(json!({"error": "ERR gateway"})))
        .expect(3) // 1 + 2 retries
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(body_json(json!(["INCR", "k"])))
        .respond_with(ResponseTemplate::new(503).set_body_json(json!({"error": "ERR gateway"})))
        .expect(1) // may have run: never re-sent
        .mount(&server)
        .await;
    let redis = client(&server);
    let err = redis.get("k").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Http);
    assert!(err.is_retryable());
    let err = redis.incr("k").await.unwrap_err();
    assert!(matches!(
        err,
        cache_upstash::Error::Http { status: 503, .. }
    ));
    let stats = redis.stats();
    assert_eq!((stats.requests, stats.retries, stats.failures), (4, 2, 2));
}

#[tokio::test]
async fn a_retry_that_succeeds_returns_the_value() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(502))
        .up_to_n_times(1)
        .expect(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ok(json!("dg==")))
        .expect(1)
        .mount(&server)
        .await;
    let value = client(&server).get("k").await.unwrap();
    assert_eq!(value.as_deref(), Some(&b"v"[..]));
}

#[tokio::test]
async fn pipelines_with_a_write_are_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/pipeline"))
        .respond_with(ResponseTemplate::new(500))
        .expect(1)
        .mount(&server)
        .await;
    let redis = client(&server);
    let mut pipe = redis.pipeline();
    pipe.get("a");
    pipe.lpush("list", ["x"]);
    assert_eq!(pipe.exec().await.unwrap_err().kind(), ErrorKind::Http);
}

#[tokio::test]
async fn read_only_pipelines_are_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/pipeline"))
        .respond_with(ResponseTemplate::new(500))
        .expect(3)
        .mount(&server)
        .await;
    let redis = client(&server);
    let mut pipe = redis.pipeline();
    pipe.get("a");
    pipe.ttl("a");
    assert!(pipe.exec().await.is_err());
}

#[tokio::test]
async fn malformed_and_truncated_bodies_are_unexpected_responses() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_json(json!(["GET", "html"])))
        .respond_with(ResponseTemplate::new(200).set_body_raw("<html>oops</html>", "text/html"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(body_json(json!(["GET", "cut"])))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(r#"{"result":"YWJj"#, "application/json"),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(body_json(json!(["GET", "shape"])))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": 1})))
        .mount(&server)
        .await;
    let redis = client_with(&server, RetryPolicy::none());
    for key in ["html", "cut", "shape"] {
        let err = redis.get(key).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnexpectedResponse, "{key}: {err}");
    }
    // A reply of the wrong shape for the typed command.
    Mock::given(method("POST"))
        .and(body_json(json!(["INCR", "n"])))
        .respond_with(ok(json!(["YQ=="])))
        .mount(&server)
        .await;
    let err = redis.incr("n").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnexpectedResponse);
}

#[tokio::test]
async fn slow_answers_time_out_reads_are_retried_incr_is_not() {
    let server = MockServer::start().await;
    let slow = ResponseTemplate::new(200)
        .set_body_json(json!({"result": 1}))
        .set_delay(Duration::from_secs(2));
    Mock::given(body_json(json!(["GET", "k"])))
        .respond_with(slow.clone())
        .expect(3)
        .mount(&server)
        .await;
    Mock::given(body_json(json!(["INCR", "k"])))
        .respond_with(slow)
        .expect(1)
        .mount(&server)
        .await;
    let redis = client(&server);
    let started = std::time::Instant::now();
    let err = redis.get("k").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.may_have_executed());
    let err = redis.incr("k").await.unwrap_err();
    assert!(err.is_timeout());
    // 3 + 1 attempts of 300 ms, not 4 × 2 s.
    assert!(
        started.elapsed() < Duration::from_millis(1800),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn connection_refused_is_not_sent_and_retried_even_for_incr() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redis = Redis::builder()
        .url(format!("http://127.0.0.1:{port}"))
        .token(TOKEN)
        .retry(fast_retries().max_retries(3))
        .build()
        .unwrap();
    let err = redis.incr("k").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotSent, "{err}");
    assert!(!err.may_have_executed());
    let stats = redis.stats();
    assert_eq!(
        (stats.requests, stats.retries),
        (0, 3),
        "never-sent requests are not billed"
    );
}

#[tokio::test]
async fn the_sync_token_goes_out_on_the_very_next_request() {
    let server = MockServer::start().await;
    Mock::given(header("upstash-sync-token", "tok-2"))
        .respond_with(ok(json!("OK")).insert_header("upstash-sync-token", "tok-3"))
        .expect(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(header("upstash-sync-token", "tok-1"))
        .respond_with(ok(json!("OK")).insert_header("upstash-sync-token", "tok-2"))
        .expect(1)
        .with_priority(1)
        .mount(&server)
        .await;
    // Only the first request carries no token.
    Mock::given(method("POST"))
        .respond_with(ok(json!("OK")).insert_header("upstash-sync-token", "tok-1"))
        .expect(1)
        .with_priority(5)
        .mount(&server)
        .await;
    let redis = client(&server);
    redis.set("a", "1").await.unwrap();
    redis.set("a", "2").await.unwrap();
    redis.set("a", "3").await.unwrap();
    assert_eq!(redis.sync_token().as_deref(), Some("tok-3"));
}

#[tokio::test]
async fn read_your_writes_off_sends_no_token() {
    let server = MockServer::start().await;
    Mock::given(header("upstash-sync-token", "tok-1"))
        .respond_with(ok(json!("OK")))
        .expect(0)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ok(json!("OK")).insert_header("upstash-sync-token", "tok-1"))
        .expect(2)
        .mount(&server)
        .await;
    let redis = Redis::builder()
        .url(server.uri())
        .token(TOKEN)
        .read_your_writes(false)
        .build()
        .unwrap();
    redis.set("a", "1").await.unwrap();
    redis.set("a", "2").await.unwrap();
}

#[tokio::test]
async fn base64_decoding_of_nested_arrays() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ok(json!(["YQ==", ["/w==", null, 5, ["T0s="]], "OK", []])))
        .mount(&server)
        .await;
    let value: Value = client(&server)
        .query(Command::new("XRANGE").arg("s").arg("-").arg("+"))
        .await
        .unwrap();
    let data = |b: &'static [u8]| Value::Data(Bytes::from_static(b));
    assert_eq!(
        value,
        Value::Array(vec![
            data(b"a"),
            Value::Array(vec![
                data(&[0xff]),
                Value::Nil,
                Value::Int(5),
                Value::Array(vec![data(b"OK")])
            ]),
            data(b"OK"),
            Value::Array(vec![]),
        ])
    );
}

#[tokio::test]
async fn quota_errors_have_their_own_kind() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            json!({"error": "ERR max daily request limit exceeded. Limit: 10000, Usage: 10001"}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server).get("k").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Quota);
    assert!(err.is_quota() && !err.is_retryable());
    assert!(err.to_string().contains("Limit: 10000"));
}

#[tokio::test]
async fn redis_errors_name_the_command_not_its_arguments() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            json!({"error": "WRONGTYPE Operation against a key holding the wrong kind of value"}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server).incr("secret-key-name").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Redis);
    assert_eq!(err.redis_code(), Some("WRONGTYPE"));
    assert!(err.to_string().contains("INCR") && !err.to_string().contains("secret-key-name"));
}

#[tokio::test]
async fn binary_values_go_in_the_body_of_a_path_form_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/SET/bin%3Akey"))
        .and(body_bytes(vec![0xff, 0x00, 0xfe]))
        .and(header("content-type", "application/octet-stream"))
        .respond_with(ok(json!("OK")))
        .expect(1)
        .mount(&server)
        .await;
    let written = client(&server)
        .set_with(
            "bin:key",
            &[0xff, 0x00, 0xfe][..],
            cache_upstash::SetOptions::new().px(100),
        )
        .await;
    // The query carries `PX=100`; wiremock's `path` ignores the query.
    assert!(written.unwrap());
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests[0].url.query(), Some("PX=100"));
}

#[tokio::test]
async fn discarded_transactions_fail_as_a_whole() {
    let server = MockServer::start().await;
    Mock::given(path("/multi-exec"))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            json!({"error": "EXECABORT Transaction discarded because of previous errors."}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let redis = client(&server);
    let mut tx = redis.multi();
    tx.set("a", "1");
    tx.add_raw(Command::new("NOSUCHCOMMAND"));
    let err = tx.exec().await.unwrap_err();
    assert_eq!(err.redis_code(), Some("EXECABORT"));
}

#[tokio::test]
async fn configuration_errors_are_clear() {
    let err = Redis::builder().token("t").build().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("UPSTASH_REDIS_REST_URL"));
    let err = Redis::builder()
        .url("https://x.upstash.io")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("UPSTASH_REDIS_REST_TOKEN"));
    let err = Redis::builder()
        .url("redis://x:6379")
        .token("t")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("https://"));
}
