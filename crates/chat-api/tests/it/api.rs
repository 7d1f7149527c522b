//! Every endpoint's behaviour (success and validation), on SQLite and on PostgreSQL.

use axum::http::Method;
use serde_json::json;

use crate::support::{Db, TestApp, ids, on_both_databases};

on_both_databases! {
    registration;
    channels_and_memberships;
    message_pages;
    message_lifecycle;
}

async fn registration(db: Db) {
    let Some(app) = TestApp::start(db).await else {
        return;
    };
    let response = app
        .call(
            Method::POST,
            "/api/v1/users",
            None,
            Some(json!({"name": "ann"})),
        )
        .await
        .expect(201);
    let user = &response.body["user"];
    assert_eq!(user["name"], "ann");
    assert_eq!(user["id"].as_str().unwrap().len(), 26);
    assert!(user["created_at"].is_string());
    let token = response.body["token"].as_str().unwrap();
    assert!(token.len() >= 26 + 1 + 32, "at least 128 random bits");

    let me = app.get("/api/v1/users/me", token).await.expect(200);
    assert_eq!(me.body["name"], "ann");
    assert_eq!(me.body["id"], user["id"]);

    app.call(
        Method::POST,
        "/api/v1/users",
        None,
        Some(json!({"name": "ann"})),
    )
    .await
    .expect_error(409, "name_taken");
    for bad in [
        json!({"name": ""}),
        json!({"name": "a b"}),
        json!({"name": "x".repeat(33)}),
    ] {
        app.call(Method::POST, "/api/v1/users", None, Some(bad))
            .await
            .expect_error(400, "validation_failed");
    }
    app.call(Method::POST, "/api/v1/users", None, Some(json!({})))
        .await
        .expect_error(400, "invalid_json");
    app.call(
        Method::POST,
        "/api/v1/users",
        None,
        Some(json!({"name": 5})),
    )
    .await
    .expect_error(400, "invalid_json");

    // A token is shown once and stored hashed: the same name cannot log in with a guess.
    let forged = format!("{}.{}", user["id"].as_str().unwrap(), "0".repeat(64));
    app.get("/api/v1/users/me", &forged)
        .await
        .expect_error(401, "unauthorized");
}

async fn channels_and_memberships(db: Db) {
    let Some(app) = TestApp::start(db).await else {
        return;
    };
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;

    let created = app
        .post(
            "/api/v1/channels",
            &ann.token,
            json!({"name": "general", "kind": "public"}),
        )
        .await
        .expect(201);
    assert_eq!(created.body["name"], "general");
    assert_eq!(created.body["kind"], "public");
    assert_eq!(created.body["owner_id"], ann.id.as_str());
    let general = created.body["id"].as_str().unwrap().to_owned();
    // Kind defaults to public.
    let default_kind = app
        .post("/api/v1/channels", &ann.token, json!({"name": "random"}))
        .await
        .expect(201);
    assert_eq!(default_kind.body["kind"], "public");
    let secret = app.create_channel(&ann, "secret", "private").await;

    for bad in [
        json!({"name": ""}),
        json!({"name": " padded"}),
        json!({"name": "x".repeat(65)}),
    ] {
        app.post("/api/v1/channels", &ann.token, bad)
            .await
            .expect_error(400, "validation_failed");
    }
    app.post(
        "/api/v1/channels",
        &ann.token,
        json!({"name": "x", "kind": "secret"}),
    )
    .await
    .expect_error(400, "invalid_json");

    // The creator is a member (owner) of all three.
    let mine = app
        .get("/api/v1/users/me/channels", &ann.token)
        .await
        .expect(200);
    let channels = mine.body["channels"].as_array().unwrap();
    assert_eq!(channels.len(), 3);
    assert!(channels.iter().all(|c| c["role"] == "owner"));
    assert_eq!(channels[0]["id"], general.as_str());
    assert!(channels[0]["name"].is_string() && channels[0]["kind"].is_string());

    // Get: public for everyone, private for members only (404 otherwise).
    let got = app
        .get(&format!("/api/v1/channels/{general}"), &bob.token)
        .await
        .expect(200);
    assert_eq!(got.body["id"], general.as_str());
    app.get(&format!("/api/v1/channels/{secret}"), &bob.token)
        .await
        .expect_error(404, "channel_not_found");
    app.get(
        &format!("/api/v1/channels/{}", ulid::Ulid::new()),
        &bob.token,
    )
    .await
    .expect_error(404, "channel_not_found");

    // Join is idempotent and shows at once in the channel list.
    app.put(
        &format!("/api/v1/channels/{general}/members/me"),
        &bob.token,
    )
    .await
    .expect(204);
    app.put(
        &format!("/api/v1/channels/{general}/members/me"),
        &bob.token,
    )
    .await
    .expect(204);
    let bobs = app
        .get("/api/v1/users/me/channels", &bob.token)
        .await
        .expect(200);
    assert_eq!(bobs.body["channels"].as_array().unwrap().len(), 1);
    assert_eq!(bobs.body["channels"][0]["role"], "member");
    // Private channels cannot be joined, only added to by the owner.
    app.put(&format!("/api/v1/channels/{secret}/members/me"), &bob.token)
        .await
        .expect_error(404, "channel_not_found");
    app.put(
        &format!("/api/v1/channels/{secret}/members/{}", bob.id),
        &bob.token,
    )
    .await
    .expect_error(404, "channel_not_found");
    app.put(
        &format!("/api/v1/channels/{secret}/members/{}", ulid::Ulid::new()),
        &ann.token,
    )
    .await
    .expect_error(404, "user_not_found");
    app.put(
        &format!("/api/v1/channels/{secret}/members/{}", bob.id),
        &ann.token,
    )
    .await
    .expect(204);
    app.get(&format!("/api/v1/channels/{secret}"), &bob.token)
        .await
        .expect(200);

    // Members, paged by user id.
    let page = app
        .get(
            &format!("/api/v1/channels/{general}/members?limit=1"),
            &ann.token,
        )
        .await
        .expect(200);
    let first = page.body["members"].as_array().unwrap();
    assert_eq!(first.len(), 1);
    let next = page.body["next_after"].as_str().unwrap().to_owned();
    let rest = app
        .get(
            &format!("/api/v1/channels/{general}/members?after={next}"),
            &ann.token,
        )
        .await
        .expect(200);
    assert_eq!(rest.body["members"].as_array().unwrap().len(), 1);
    assert!(rest.body["next_after"].is_null());
    let mut names: Vec<_> = [&first[0], &rest.body["members"][0]]
        .iter()
        .map(|m| m["user"]["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["ann", "bob"]);
    app.get(
        &format!("/api/v1/channels/{general}/members?limit=0"),
        &ann.token,
    )
    .await
    .expect_error(400, "invalid_param");

    // Leave, and leaving twice is "not a member".
    app.delete(
        &format!("/api/v1/channels/{general}/members/me"),
        &bob.token,
    )
    .await
    .expect(204);
    app.delete(
        &format!("/api/v1/channels/{general}/members/me"),
        &bob.token,
    )
    .await
    .expect_error(403, "not_a_member");
    let bobs = app
        .get("/api/v1/users/me/channels", &bob.token)
        .await
        .expect(200);
    let ids: Vec<_> = bobs.body["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].clone())
        .collect();
    assert_eq!(ids, [json!(secret)]);
}

async fn message_pages(db: Db) {
    let Some(app) = TestApp::start(db).await else {
        return;
    };
    let ann = app.register("ann").await;
    let channel = app.create_channel(&ann, "general", "public").await;
    let mut posted = Vec::new();
    for i in 0..7 {
        posted.push(
            app.post_message(&ann, &channel, &format!("m{i}")).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let newest_first: Vec<String> = posted.iter().rev().cloned().collect();
    let url = |q: &str| format!("/api/v1/channels/{channel}/messages{q}");

    let all = app.get(&url(""), &ann.token).await.expect(200);
    assert_eq!(ids(&all.body), newest_first);
    assert_eq!(all.body["has_more_before"], false);
    assert_eq!(all.body["has_more_after"], false);
    let message = &all.body["messages"][0];
    assert_eq!(message["content"], "m6");
    assert_eq!(message["channel_id"], channel.as_str());
    assert_eq!(message["author"]["id"], ann.id.as_str());
    assert_eq!(message["author"]["name"], "ann");
    assert!(message["created_at"].is_string());
    assert!(message["edited_at"].is_null());

    // Newest first, then older pages by `before`.
    let p1 = app.get(&url("?limit=3"), &ann.token).await.expect(200);
    assert_eq!(ids(&p1.body), newest_first[0..3]);
    assert_eq!(p1.body["has_more_before"], true);
    assert_eq!(p1.body["has_more_after"], false);
    let p2 = app
        .get(
            &url(&format!("?limit=3&before={}", newest_first[2])),
            &ann.token,
        )
        .await
        .expect(200);
    assert_eq!(ids(&p2.body), newest_first[3..6]);
    assert_eq!(p2.body["has_more_before"], true);
    assert_eq!(p2.body["has_more_after"], true);
    let p3 = app
        .get(
            &url(&format!("?limit=3&before={}", newest_first[5])),
            &ann.token,
        )
        .await
        .expect(200);
    assert_eq!(ids(&p3.body), newest_first[6..7]);
    assert_eq!(p3.body["has_more_before"], false);
    assert_eq!(p3.body["has_more_after"], true);

    // `after`: the messages closest to the cursor, still newest first.
    let after = app
        .get(&url(&format!("?limit=3&after={}", posted[0])), &ann.token)
        .await
        .expect(200);
    assert_eq!(
        ids(&after.body),
        [posted[3].clone(), posted[2].clone(), posted[1].clone()]
    );
    assert_eq!(after.body["has_more_after"], true);
    assert_eq!(after.body["has_more_before"], true);
    let tail = app
        .get(&url(&format!("?limit=3&after={}", posted[4])), &ann.token)
        .await
        .expect(200);
    assert_eq!(ids(&tail.body), [posted[6].clone(), posted[5].clone()]);
    assert_eq!(tail.body["has_more_after"], false);

    // `around`: the anchor and its neighbours in one sorted list.
    let around = app
        .get(&url(&format!("?limit=3&around={}", posted[3])), &ann.token)
        .await
        .expect(200);
    assert_eq!(
        ids(&around.body),
        [posted[4].clone(), posted[3].clone(), posted[2].clone()]
    );
    assert_eq!(around.body["has_more_before"], true);
    assert_eq!(around.body["has_more_after"], true);
    let edge = app
        .get(&url(&format!("?limit=4&around={}", posted[6])), &ann.token)
        .await
        .expect(200);
    assert_eq!(ids(&edge.body), [posted[6].clone(), posted[5].clone()]);
    assert_eq!(edge.body["has_more_after"], false);

    // Validation.
    for bad in [
        "?limit=0",
        "?limit=101",
        "?limit=x",
        "?before=nope",
        "?after=1",
        "?around=",
        &format!("?before={0}&after={0}", posted[0]),
    ] {
        app.get(&url(bad), &ann.token)
            .await
            .expect_error(400, "invalid_param");
    }
    let max = app.get(&url("?limit=100"), &ann.token).await.expect(200);
    assert_eq!(ids(&max.body).len(), 7);
}

async fn message_lifecycle(db: Db) {
    let Some(app) = TestApp::start(db).await else {
        return;
    };
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let channel = app.create_channel(&ann, "general", "public").await;
    app.put(
        &format!("/api/v1/channels/{channel}/members/me"),
        &bob.token,
    )
    .await
    .expect(204);
    let messages = format!("/api/v1/channels/{channel}/messages");

    // Post with a nonce; a retry returns the same message instead of a duplicate.
    let first = app
        .post(
            &messages,
            &ann.token,
            json!({"content": "hello", "nonce": "n-1"}),
        )
        .await
        .expect(201);
    assert_eq!(first.body["nonce"], "n-1");
    assert_eq!(first.body["reactions"], json!([]));
    let mid = first.body["id"].as_str().unwrap().to_owned();
    let retry = app
        .post(
            &messages,
            &ann.token,
            json!({"content": "hello", "nonce": "n-1"}),
        )
        .await
        .expect(200);
    assert_eq!(retry.body["id"], mid.as_str());
    let page = app.get(&messages, &ann.token).await.expect(200);
    assert_eq!(ids(&page.body), std::slice::from_ref(&mid));

    for bad in [
        json!({"content": ""}),
        json!({"content": "   "}),
        json!({"content": "x".repeat(2001)}),
        json!({"content": "a\u{0}b"}),
        json!({"content": "x", "nonce": "has space"}),
        json!({"content": "x", "nonce": "n".repeat(65)}),
    ] {
        app.post(&messages, &ann.token, bad)
            .await
            .expect_error(400, "validation_failed");
    }
    app.post(&messages, &ann.token, json!({"nonce": "x"}))
        .await
        .expect_error(400, "invalid_json");

    // Get one.
    let one = app
        .get(&format!("{messages}/{mid}"), &bob.token)
        .await
        .expect(200);
    assert_eq!(one.body["content"], "hello");
    app.get(&format!("{messages}/{}", ulid::Ulid::new()), &bob.token)
        .await
        .expect_error(404, "message_not_found");

    // Edit: author only.
    let edit = |token: &str, content: &str| {
        let (app, path, token, content) = (
            &app,
            format!("{messages}/{mid}"),
            token.to_owned(),
            content.to_owned(),
        );
        async move {
            app.call(
                Method::PATCH,
                &path,
                Some(&token),
                Some(json!({"content": content})),
            )
            .await
        }
    };
    let edited = edit(&ann.token, "hello, world").await.expect(200);
    assert_eq!(edited.body["content"], "hello, world");
    assert!(edited.body["edited_at"].is_string());
    edit(&bob.token, "hijack")
        .await
        .expect_error(403, "not_author");
    edit(&ann.token, "")
        .await
        .expect_error(400, "validation_failed");

    // Reactions: idempotent, visible in pages with counts and users.
    let reaction = format!("{messages}/{mid}/reactions/%F0%9F%91%8D");
    app.put(&reaction, &ann.token).await.expect(204);
    app.put(&reaction, &ann.token).await.expect(204);
    app.put(&reaction, &bob.token).await.expect(204);
    app.put(&format!("{messages}/{mid}/reactions/party"), &bob.token)
        .await
        .expect(204);
    let page = app.get(&messages, &ann.token).await.expect(200);
    let reactions = &page.body["messages"][0]["reactions"];
    assert_eq!(reactions[0]["emoji"], "👍");
    assert_eq!(reactions[0]["count"], 2);
    assert_eq!(reactions[0]["user_ids"], json!([ann.id, bob.id]));
    assert_eq!(reactions[1]["emoji"], "party");
    app.delete(&reaction, &bob.token).await.expect(204);
    app.delete(&reaction, &bob.token).await.expect(204);
    let page = app.get(&messages, &ann.token).await.expect(200);
    assert_eq!(page.body["messages"][0]["reactions"][0]["count"], 1);
    app.put(
        &format!("{messages}/{mid}/reactions/{}", "x".repeat(33)),
        &ann.token,
    )
    .await
    .expect_error(400, "validation_failed");
    app.put(&format!("{messages}/{mid}/reactions/a%20b"), &ann.token)
        .await
        .expect_error(400, "validation_failed");
    app.put(
        &format!("{messages}/{}/reactions/ok", ulid::Ulid::new()),
        &ann.token,
    )
    .await
    .expect_error(404, "message_not_found");

    // Read marker: forward only, shown in the channel list.
    let second = app.post_message(&ann, &channel, "second").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.put(
        &format!("/api/v1/channels/{channel}/ack/{second}"),
        &bob.token,
    )
    .await
    .expect(204);
    app.put(&format!("/api/v1/channels/{channel}/ack/{mid}"), &bob.token)
        .await
        .expect(204);
    let list = app
        .get("/api/v1/users/me/channels", &bob.token)
        .await
        .expect(200);
    assert_eq!(list.body["channels"][0]["last_read_id"], second.as_str());
    app.put(
        &format!("/api/v1/channels/{channel}/ack/{}", ulid::Ulid::new()),
        &bob.token,
    )
    .await
    .expect_error(404, "message_not_found");

    // Delete: author only; gone afterwards, reactions with it.
    app.delete(&format!("{messages}/{mid}"), &bob.token)
        .await
        .expect_error(403, "not_author");
    app.delete(&format!("{messages}/{mid}"), &ann.token)
        .await
        .expect(204);
    app.get(&format!("{messages}/{mid}"), &ann.token)
        .await
        .expect_error(404, "message_not_found");
    app.delete(&format!("{messages}/{mid}"), &ann.token)
        .await
        .expect_error(404, "message_not_found");
    let page = app.get(&messages, &ann.token).await.expect(200);
    assert_eq!(ids(&page.body), [second]);
}

#[tokio::test]
async fn registration_can_be_closed() {
    let app = TestApp::start_configured(Db::Sqlite, |c| chat_api::Config {
        registration_open: false,
        ..c
    })
    .await
    .unwrap();
    app.call(
        Method::POST,
        "/api/v1/users",
        None,
        Some(json!({"name": "ann"})),
    )
    .await
    .expect_error(403, "registration_closed");
}
