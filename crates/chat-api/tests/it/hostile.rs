//! Hostile input (SPEC R4): malformed ids, absurd limits, broken JSON, wrong content types,
//! oversized bodies, control characters. Every answer is a 4xx with the error shape, never a 5xx.

use axum::{
    body::Body,
    http::{Method, Request, header},
};
use serde_json::json;

use crate::support::{Db, TestApp, assert_error_shape};

#[tokio::test]
async fn hostile_requests_get_4xx_with_the_error_shape() {
    let app = TestApp::start(Db::Sqlite).await.unwrap();
    let ann = app.register("ann").await;
    let channel = app.create_channel(&ann, "general", "public").await;
    let mid = app.post_message(&ann, &channel, "hello").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let auth = format!("Bearer {}", ann.token);
    let messages = format!("/api/v1/channels/{channel}/messages");

    let raw = |method: Method, uri: String, content_type: Option<&str>, body: Body| {
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, &auth);
        if let Some(content_type) = content_type {
            builder = builder.header(header::CONTENT_TYPE, content_type);
        }
        builder.body(body).unwrap()
    };
    let json_body = |text: &str| Body::from(text.to_owned());
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let huge = format!(r#"{{"content":"{}"}}"#, "x".repeat(100 * 1024));

    let cases: Vec<(Request<Body>, u16)> = vec![
        // Ids and query parameters.
        (
            raw(
                Method::GET,
                format!("{messages}?limit=1000000"),
                None,
                Body::empty(),
            ),
            400,
        ),
        (
            raw(
                Method::GET,
                format!("{messages}?limit=99999999999999999999999"),
                None,
                Body::empty(),
            ),
            400,
        ),
        (
            raw(
                Method::GET,
                format!("{messages}?limit=-5"),
                None,
                Body::empty(),
            ),
            400,
        ),
        (
            raw(
                Method::GET,
                format!("{messages}?limit=%00"),
                None,
                Body::empty(),
            ),
            400,
        ),
        (
            raw(
                Method::GET,
                format!("{messages}?before=01ARZ3NDEKTSV4RRFFQ69G5FA"),
                None,
                Body::empty(),
            ),
            400,
        ),
        (
            raw(
                Method::GET,
                format!("{messages}?before=ZZZZZZZZZZZZZZZZZZZZZZZZZZ"),
                None,
                Body::empty(),
            ),
            400,
        ),
        (
            raw(
                Method::GET,
                format!(
                    "{messages}?around=%F0%9F%98%80%F0%9F%98%80%F0%9F%98%80%F0%9F%98%80%F0%9F%98%80%F0%9F%98%80ab"
                ),
                None,
                Body::empty(),
            ),
            400,
        ),
        (
            raw(
                Method::GET,
                format!("{messages}?after={}", "1".repeat(5000)),
                None,
                Body::empty(),
            ),
            400,
        ),
        (
            raw(
                Method::GET,
                "/api/v1/channels/not-a-ulid/messages".into(),
                None,
                Body::empty(),
            ),
            400,
        ),
        (
            raw(
                Method::GET,
                "/api/v1/channels/%00%00/messages".into(),
                None,
                Body::empty(),
            ),
            400,
        ),
        (
            raw(
                Method::GET,
                format!("/api/v1/channels/{}", "A".repeat(4000)),
                None,
                Body::empty(),
            ),
            400,
        ),
        (
            raw(
                Method::GET,
                format!("{messages}/%27%20OR%201=1%20--"),
                None,
                Body::empty(),
            ),
            400,
        ),
        (
            raw(
                Method::PUT,
                format!("{messages}/{mid}/reactions/%00"),
                None,
                Body::empty(),
            ),
            400,
        ),
        (
            raw(
                Method::PUT,
                format!("/api/v1/channels/{channel}/ack/..%2F..%2Fetc"),
                None,
                Body::empty(),
            ),
            400,
        ),
        // Bodies.
        (
            raw(
                Method::POST,
                messages.clone(),
                Some("application/json"),
                json_body("{not json"),
            ),
            400,
        ),
        (
            raw(
                Method::POST,
                messages.clone(),
                Some("application/json"),
                json_body(""),
            ),
            400,
        ),
        (
            raw(
                Method::POST,
                messages.clone(),
                Some("application/json"),
                json_body("[]"),
            ),
            400,
        ),
        (
            raw(
                Method::POST,
                messages.clone(),
                Some("application/json"),
                json_body(r#"{"content": 42}"#),
            ),
            400,
        ),
        (
            raw(
                Method::POST,
                messages.clone(),
                Some("application/json"),
                json_body(r#"{"content": "\u0000"}"#),
            ),
            400,
        ),
        (
            raw(
                Method::POST,
                messages.clone(),
                Some("application/json"),
                json_body(r#"{"content": "\ud800"}"#),
            ),
            400,
        ),
        (
            raw(
                Method::POST,
                messages.clone(),
                Some("application/json"),
                json_body(&deep),
            ),
            400,
        ),
        (
            raw(
                Method::POST,
                messages.clone(),
                Some("application/json"),
                Body::from(vec![0xff, 0xfe, 0x00]),
            ),
            400,
        ),
        (
            raw(
                Method::POST,
                messages.clone(),
                Some("text/plain"),
                json_body(r#"{"content":"x"}"#),
            ),
            415,
        ),
        (
            raw(
                Method::POST,
                messages.clone(),
                None,
                json_body(r#"{"content":"x"}"#),
            ),
            415,
        ),
        (
            raw(
                Method::POST,
                messages.clone(),
                Some("application/json"),
                Body::from(huge),
            ),
            413,
        ),
        (
            raw(
                Method::POST,
                "/api/v1/channels".into(),
                Some("application/json"),
                json_body(r#"{"name": "x", "kind": ["public"]}"#),
            ),
            400,
        ),
        // Routes and methods.
        (
            raw(Method::GET, "/api/v1/nope".into(), None, Body::empty()),
            404,
        ),
        (
            raw(
                Method::POST,
                format!("/api/v1/channels/{channel}"),
                None,
                Body::empty(),
            ),
            405,
        ),
    ];
    for (request, status) in cases {
        let description = format!("{} {}", request.method(), request.uri());
        let response = app.send(request).await;
        assert_eq!(
            response.status.as_u16(),
            status,
            "{description}: {}",
            response.text
        );
        assert_error_shape(&response);
    }

    // Odd authorization headers are plain 401s.
    for value in [
        "Bearer",
        "Bearer ",
        "Bearer x.y",
        "Bearer ....",
        "Basic YTpi",
        &format!("Bearer {}", "9".repeat(10_000)),
    ] {
        let request = Request::get("/api/v1/users/me")
            .header(header::AUTHORIZATION, value)
            .body(Body::empty())
            .unwrap();
        app.send(request).await.expect_error(401, "unauthorized");
    }
    // A user name with a NUL byte is a validation error, not a database error.
    app.call(
        Method::POST,
        "/api/v1/users",
        None,
        Some(json!({"name": "a\u{0}b"})),
    )
    .await
    .expect_error(400, "validation_failed");
}
