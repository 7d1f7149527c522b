//! The access matrix (SPEC R5): every route × (no token, bad token, non-member, member, author),
//! in a public and a private channel, on both databases. Only what is allowed succeeds; every
//! refusal has the error shape and its stable code.

use axum::http::Method;
use serde_json::{Value, json};

use crate::support::{Db, TestApp, TestResponse, assert_error_shape, on_both_databases};

on_both_databases! {
    access_matrix;
}

const ACTORS: [&str; 5] = ["no token", "bad token", "non-member", "member", "author"];

struct Case {
    method: Method,
    path: String,
    body: Option<Value>,
    /// Expected status per actor, in the order of [`ACTORS`].
    expected: [u16; 5],
}

fn code_for(status: u16, private: bool) -> Option<&'static str> {
    match status {
        401 => Some("unauthorized"),
        404 if private => Some("channel_not_found"),
        _ => None,
    }
}

async fn access_matrix(db: Db) {
    let Some(app) = TestApp::start(db).await else {
        return;
    };
    let owner = app.register("owner").await;
    let author = app.register("author").await;
    let member = app.register("member").await;
    let outsider = app.register("outsider").await;
    let bad_token = format!("{}.{}", author.id, "f".repeat(64));
    let tokens: [Option<&str>; 5] = [
        None,
        Some(&bad_token),
        Some(&outsider.token),
        Some(&member.token),
        Some(&author.token),
    ];

    for private in [false, true] {
        let kind = if private { "private" } else { "public" };
        let channel = app
            .create_channel(&owner, &format!("{kind}-room"), kind)
            .await;
        for user in [&author, &member] {
            if private {
                app.put(
                    &format!("/api/v1/channels/{channel}/members/{}", user.id),
                    &owner.token,
                )
                .await
                .expect(204);
            } else {
                app.put(
                    &format!("/api/v1/channels/{channel}/members/me"),
                    &user.token,
                )
                .await
                .expect(204);
            }
        }
        let message = app.post_message(&author, &channel, "by the author").await;
        let mid = message["id"].as_str().unwrap();
        let c = format!("/api/v1/channels/{channel}");
        // What a non-member gets in this channel: 403 in a public one, 404 in a private one.
        let x = if private { 404 } else { 403 };
        let cases = [
            Case {
                method: Method::GET,
                path: c.clone(),
                body: None,
                expected: [401, 401, if private { 404 } else { 200 }, 200, 200],
            },
            Case {
                method: Method::GET,
                path: format!("{c}/members"),
                body: None,
                expected: [401, 401, x, 200, 200],
            },
            Case {
                method: Method::GET,
                path: format!("{c}/messages"),
                body: None,
                expected: [401, 401, x, 200, 200],
            },
            Case {
                method: Method::GET,
                path: format!("{c}/messages?limit=5&before={mid}"),
                body: None,
                expected: [401, 401, x, 200, 200],
            },
            Case {
                method: Method::GET,
                path: format!("{c}/messages/{mid}"),
                body: None,
                expected: [401, 401, x, 200, 200],
            },
            Case {
                method: Method::POST,
                path: format!("{c}/messages"),
                body: Some(json!({"content": "hi"})),
                expected: [401, 401, x, 201, 201],
            },
            Case {
                method: Method::PATCH,
                path: format!("{c}/messages/{mid}"),
                body: Some(json!({"content": "edited"})),
                expected: [401, 401, x, 403, 200],
            },
            Case {
                method: Method::PUT,
                path: format!("{c}/messages/{mid}/reactions/ok"),
                body: None,
                expected: [401, 401, x, 204, 204],
            },
            Case {
                method: Method::DELETE,
                path: format!("{c}/messages/{mid}/reactions/ok"),
                body: None,
                expected: [401, 401, x, 204, 204],
            },
            Case {
                method: Method::PUT,
                path: format!("{c}/ack/{mid}"),
                body: None,
                expected: [401, 401, x, 204, 204],
            },
            Case {
                method: Method::PUT,
                path: format!("{c}/members/{}", outsider.id),
                body: None,
                expected: [401, 401, x, 403, 403],
            },
            Case {
                method: Method::GET,
                path: "/api/v1/users/me".into(),
                body: None,
                expected: [401, 401, 200, 200, 200],
            },
            Case {
                method: Method::GET,
                path: "/api/v1/users/me/channels".into(),
                body: None,
                expected: [401, 401, 200, 200, 200],
            },
            Case {
                method: Method::POST,
                path: "/api/v1/channels".into(),
                body: Some(json!({"name": "mine"})),
                expected: [401, 401, 201, 201, 201],
            },
            Case {
                method: Method::GET,
                path: "/api/v1/ws".into(),
                body: None,
                expected: [426, 401, 426, 426, 426],
            },
            // Destructive cases last: joining, deleting, leaving.
            Case {
                method: Method::PUT,
                path: format!("{c}/members/me"),
                body: None,
                expected: [401, 401, if private { 404 } else { 204 }, 204, 204],
            },
            Case {
                method: Method::DELETE,
                path: format!("{c}/messages/{mid}"),
                body: None,
                expected: [401, 401, x, 403, 204],
            },
            Case {
                method: Method::DELETE,
                path: format!("{c}/members/me"),
                body: None,
                expected: [401, 401, if private { 404 } else { 204 }, 204, 204],
            },
        ];
        for case in cases {
            for (actor, token) in ACTORS.iter().zip(tokens) {
                let expected = case.expected[ACTORS.iter().position(|a| a == actor).unwrap()];
                let response: TestResponse = app
                    .call(case.method.clone(), &case.path, token, case.body.clone())
                    .await;
                assert_eq!(
                    response.status.as_u16(),
                    expected,
                    "{kind} channel: {} {} as {actor}: {}",
                    case.method,
                    case.path,
                    response.text
                );
                if expected >= 400 {
                    assert_error_shape(&response);
                    if let Some(code) = code_for(expected, private) {
                        assert_eq!(
                            response.body["error"]["code"], code,
                            "{} {} as {actor}",
                            case.method, case.path
                        );
                    }
                }
            }
        }
    }
}
