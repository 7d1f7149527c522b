//! Hostile input: malformed ids, absurd limits, broken JSON, wrong content types,
//! oversized bodies, control characters. Every answer is a 4xx with the error shape, never a 5xx.
//! SQL-looking text is stored as text, and concurrent duplicate posts make one message.

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

crate::support::on_both_databases! {
    sql_looking_text_is_stored_as_text;
    concurrent_duplicate_posts_make_one_message;
}

/// SQL-looking names, contents, nonces and cursors are data, never SQL: stored and returned byte
/// for byte, or refused with 400 where the value is not allowed at all.
async fn sql_looking_text_is_stored_as_text(db: Db) {
    let Some(app) = TestApp::start(db).await else {
        return;
    };
    let ann = app.register("ann").await;
    let evil = "'; DROP TABLE messages; --";
    let channel = app.create_channel(&ann, evil, "public").await;
    let got = app
        .get(&format!("/api/v1/channels/{channel}"), &ann.token)
        .await
        .expect(200);
    assert_eq!(got.body["name"], evil);
    let messages = format!("/api/v1/channels/{channel}/messages");
    for content in [
        evil,
        "' OR '1'='1",
        "\" OR \"\"=\"",
        "1; SELECT pg_sleep(10)",
        "%_\\",
    ] {
        let posted = app
            .post(
                &messages,
                &ann.token,
                json!({"content": content, "nonce": format!("{content}x").replace(' ', "_")}),
            )
            .await
            .expect(201);
        assert_eq!(posted.body["content"], content);
    }
    let page = app.get(&messages, &ann.token).await.expect(200);
    assert_eq!(crate::support::ids(&page.body).len(), 5);
    assert_eq!(page.body["messages"][4]["content"], evil);
    app.post(
        "/api/v1/users",
        "",
        json!({"name": "robert'); DROP TABLE users;--"}),
    )
    .await
    .expect_error(400, "validation_failed");
    for cursor in ["before", "after", "around"] {
        let response = app
            .get(&format!("{messages}?{cursor}=1'%20OR%20'1'='1"), &ann.token)
            .await;
        assert_eq!(response.status.as_u16(), 400, "{cursor}: {}", response.text);
        assert_error_shape(&response);
    }
    // Everything still works: nothing was dropped.
    app.register("bob").await;
    app.get(&messages, &ann.token).await.expect(200);
}

/// Twenty concurrent posts with one nonce: one 201, the rest 200 with the same message, and the
/// channel holds it once.
async fn concurrent_duplicate_posts_make_one_message(db: Db) {
    let Some(app) = TestApp::start(db).await else {
        return;
    };
    let ann = app.register("ann").await;
    let channel = app.create_channel(&ann, "general", "public").await;
    let messages = format!("/api/v1/channels/{channel}/messages");
    let body = json!({"content": "only once", "nonce": "same-nonce"});
    let attempts = (0..20).map(|_| app.post(&messages, &ann.token, body.clone()));
    let responses = futures_util::future::join_all(attempts).await;
    let created = responses.iter().filter(|r| r.status == 201).count();
    assert_eq!(created, 1, "exactly one post creates the message");
    let first_id = &responses.iter().find(|r| r.status == 201).unwrap().body["id"];
    for response in &responses {
        assert!(
            matches!(response.status.as_u16(), 200 | 201),
            "{}",
            response.text
        );
        assert_eq!(&response.body["id"], first_id);
    }
    let page = app.get(&messages, &ann.token).await.expect(200);
    assert_eq!(
        crate::support::ids(&page.body),
        [first_id.as_str().unwrap()]
    );
}
