//! The caching plan, measured by counting database statements: repeated reads cost nothing,
//! writes are visible to the very next read, a stampede on a just-invalidated page costs one query
//! (P7), a post invalidates one tag, the latest page carries an `ETag` answered with 304, and older
//! pages are cached until the channel's messages change.

use axum::{
    body::Body,
    http::{Request, header},
};
use futures_util::future::join_all;
use serde_json::json;

use chat_api::{
    model::{Millis, UserRef},
    store::{NewMessage, Posted},
};
use ulid::Ulid;

use crate::support::{Db, TestApp, TestUser, ids, on_both_databases};

on_both_databases! {
    repeated_reads_are_served_without_a_query;
    writes_are_visible_to_the_next_read;
    the_newest_message_mark_only_rises;
}

async fn repeated_reads_are_served_without_a_query(db: Db) {
    let Some(app) = TestApp::start(db).await else {
        return;
    };
    let ann = app.register("ann").await;
    let channel = app.create_channel(&ann, "general", "public").await;
    app.post_message(&ann, &channel, "hello").await;
    let page = format!("/api/v1/channels/{channel}/messages");

    // First reads load (token, membership, page, list, channel) …
    app.get(&page, &ann.token).await.expect(200);
    app.get("/api/v1/users/me/channels", &ann.token)
        .await
        .expect(200);
    app.get(&format!("/api/v1/channels/{channel}"), &ann.token)
        .await
        .expect(200);
    let before = app.queries();
    // … repeated reads do not touch the database at all.
    for _ in 0..5 {
        app.get(&page, &ann.token).await.expect(200);
        app.get(&format!("{page}?limit=50"), &ann.token)
            .await
            .expect(200);
        app.get("/api/v1/users/me/channels", &ann.token)
            .await
            .expect(200);
        app.get(&format!("/api/v1/channels/{channel}"), &ann.token)
            .await
            .expect(200);
        app.get("/api/v1/users/me", &ann.token).await.expect(200);
    }
    assert_eq!(
        app.queries(),
        before,
        "{:?}",
        app.state.store().query_counts()
    );
    // A different page size is a different key: one load, then cached too.
    app.get(&format!("{page}?limit=10"), &ann.token)
        .await
        .expect(200);
    app.get(&format!("{page}?limit=10"), &ann.token)
        .await
        .expect(200);
    assert_eq!(app.queries(), before + 1);
}

async fn writes_are_visible_to_the_next_read(db: Db) {
    let Some(app) = TestApp::start(db).await else {
        return;
    };
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let channel = app.create_channel(&ann, "general", "public").await;
    let page = format!("/api/v1/channels/{channel}/messages");
    app.put(
        &format!("/api/v1/channels/{channel}/members/me"),
        &bob.token,
    )
    .await
    .expect(204);

    // Warm every cached read, then write, then read once: the write must show.
    let first = app.post_message(&ann, &channel, "one").await;
    let mid = first["id"].as_str().unwrap().to_owned();
    app.get(&page, &bob.token).await.expect(200);
    let second = app.post_message(&ann, &channel, "two").await;
    let read = app.get(&page, &bob.token).await.expect(200);
    assert_eq!(ids(&read.body)[0], second["id"].as_str().unwrap());

    app.call(
        axum::http::Method::PATCH,
        &format!("{page}/{mid}"),
        Some(&ann.token),
        Some(json!({"content": "one, edited"})),
    )
    .await
    .expect(200);
    let read = app.get(&page, &bob.token).await.expect(200);
    assert_eq!(read.body["messages"][1]["content"], "one, edited");

    app.put(&format!("{page}/{mid}/reactions/ok"), &bob.token)
        .await
        .expect(204);
    let read = app.get(&page, &bob.token).await.expect(200);
    assert_eq!(read.body["messages"][1]["reactions"][0]["count"], 1);

    app.delete(&format!("{page}/{mid}"), &ann.token)
        .await
        .expect(204);
    let read = app.get(&page, &bob.token).await.expect(200);
    assert_eq!(ids(&read.body).len(), 1);

    // Channel list and membership: join, leave, create.
    app.get("/api/v1/users/me/channels", &bob.token)
        .await
        .expect(200);
    app.delete(
        &format!("/api/v1/channels/{channel}/members/me"),
        &bob.token,
    )
    .await
    .expect(204);
    let list = app
        .get("/api/v1/users/me/channels", &bob.token)
        .await
        .expect(200);
    assert_eq!(list.body["channels"], json!([]));
    app.get(&page, &bob.token)
        .await
        .expect_error(403, "not_a_member");
    app.put(
        &format!("/api/v1/channels/{channel}/members/me"),
        &bob.token,
    )
    .await
    .expect(204);
    app.get(&page, &bob.token).await.expect(200);
    let other = app.create_channel(&bob, "bobs", "private").await;
    let list = app
        .get("/api/v1/users/me/channels", &bob.token)
        .await
        .expect(200);
    assert_eq!(list.body["channels"].as_array().unwrap().len(), 2);
    assert_eq!(list.body["channels"][1]["id"], other.as_str());
    // The owner's token record, read before, lists the new channel at once.
    app.get(&format!("/api/v1/channels/{other}/messages"), &bob.token)
        .await
        .expect(200);
}

/// P7: 1,000 concurrent requests for one just-invalidated page cost exactly one query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stampede_on_an_invalidated_page_costs_one_query() {
    let app = TestApp::start(Db::Sqlite).await.unwrap();
    let ann = app.register("ann").await;
    let channel = app.create_channel(&ann, "general", "public").await;
    let page = format!("/api/v1/channels/{channel}/messages");
    app.post_message(&ann, &channel, "before").await;
    app.get(&page, &ann.token).await.expect(200);
    // The post invalidates the page (one tag); the token record (with memberships) stays cached.
    let latest = app.post_message(&ann, &channel, "after").await;
    let before = app.queries();

    let requests = (0..1000).map(|_| {
        let request = Request::get(&page)
            .header(header::AUTHORIZATION, format!("Bearer {}", ann.token))
            .body(Body::empty())
            .unwrap();
        let app = &app;
        async move { app.send(request).await }
    });
    let responses = join_all(requests).await;
    for response in &responses {
        assert_eq!(response.status, 200, "{}", response.text);
        assert_eq!(ids(&response.body)[0], latest["id"].as_str().unwrap());
    }
    assert_eq!(
        app.queries() - before,
        1,
        "{:?}",
        app.state.store().query_counts()
    );
    let stats = app.state.cache().cache().stats();
    assert!(stats.loads.coalesced + stats.loads.hits >= 999);
}

/// A post invalidates one tag, not O(members) keys: the channel lists of members stay cached.
#[tokio::test]
async fn a_post_does_not_touch_member_channel_lists() {
    let app = TestApp::start(Db::Sqlite).await.unwrap();
    let owner = app.register("owner").await;
    let channel = app.create_channel(&owner, "big", "public").await;
    let mut members = Vec::new();
    for i in 0..20 {
        let user = app.register(&format!("user{i}")).await;
        app.put(
            &format!("/api/v1/channels/{channel}/members/me"),
            &user.token,
        )
        .await
        .expect(204);
        app.get("/api/v1/users/me/channels", &user.token)
            .await
            .expect(200);
        members.push(user);
    }
    app.post_message(&owner, &channel, "hello everyone").await;
    let before = app.queries_of("user_channels");
    for user in &members {
        app.get("/api/v1/users/me/channels", &user.token)
            .await
            .expect(200);
    }
    assert_eq!(app.queries_of("user_channels"), before);
}

#[tokio::test]
async fn the_latest_page_has_an_etag_and_answers_304() {
    let app = TestApp::start(Db::Sqlite).await.unwrap();
    let ann = app.register("ann").await;
    let channel = app.create_channel(&ann, "general", "public").await;
    app.post_message(&ann, &channel, "hello").await;
    let page = format!("/api/v1/channels/{channel}/messages");
    let first = app.get(&page, &ann.token).await.expect(200);
    let etag = first.headers[header::ETAG].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'));

    let conditional = |etag: String| {
        Request::get(&page)
            .header(header::AUTHORIZATION, format!("Bearer {}", ann.token))
            .header(header::IF_NONE_MATCH, etag)
            .body(Body::empty())
            .unwrap()
    };
    let before = app.queries();
    let not_modified = app.send(conditional(etag.clone())).await.expect(304);
    assert_eq!(not_modified.headers[header::ETAG], etag.as_str());
    assert!(not_modified.text.is_empty());
    assert_eq!(app.queries(), before, "a 304 is served from the cache");

    app.post_message(&ann, &channel, "news").await;
    let changed = app.send(conditional(etag.clone())).await.expect(200);
    assert_ne!(changed.headers[header::ETAG], etag.as_str());
    // Pages after a cursor are not cached and carry no ETag.
    let mid = ids(&changed.body)[0].clone();
    let newer = app
        .get(&format!("{page}?after={mid}"), &ann.token)
        .await
        .expect(200);
    assert!(newer.headers.get(header::ETAG).is_none());
}

/// Scrolling back: an older page (before a cursor) is read from the database once, then served
/// from the cache (with an ETag and 304) to every reader, until a write to the channel's
/// messages, whose effect the next read shows, whichever page the message is on.
#[tokio::test]
async fn older_pages_are_cached_until_the_channel_changes() {
    let app = TestApp::start(Db::Sqlite).await.unwrap();
    let (ann, bob, channel, posted) = channel_with_messages(&app, 25).await;
    let page = format!("/api/v1/channels/{channel}/messages");
    let latest = app
        .get(&format!("{page}?limit=10"), &ann.token)
        .await
        .expect(200);
    let cursor = ids(&latest.body)[9].clone();
    let older_url = format!("{page}?before={cursor}&limit=10");

    let first = app.get(&older_url, &ann.token).await.expect(200);
    assert_eq!(
        ids(&first.body),
        posted[5..15].iter().rev().cloned().collect::<Vec<_>>()
    );
    assert_eq!(first.body["has_more_before"], true);
    assert_eq!(first.body["has_more_after"], true);
    let etag = first.headers[header::ETAG].to_str().unwrap().to_owned();

    // Every later read, by anyone, costs no query; a conditional one is a 304.
    let before = app.queries_of("messages");
    let again = app.get(&older_url, &bob.token).await.expect(200);
    assert_eq!(again.body, first.body);
    let conditional = Request::get(&older_url)
        .header(header::AUTHORIZATION, format!("Bearer {}", bob.token))
        .header(header::IF_NONE_MATCH, etag.clone())
        .body(Body::empty())
        .unwrap();
    app.send(conditional).await.expect(304);
    assert_eq!(app.queries_of("messages"), before, "served from the cache");

    // An edit of a message on the older page shows on the next read.
    let edited = &posted[10];
    app.call(
        axum::http::Method::PATCH,
        &format!("{page}/{edited}"),
        Some(&ann.token),
        Some(json!({"content": "m10, edited"})),
    )
    .await
    .expect(200);
    let read = app.get(&older_url, &bob.token).await.expect(200);
    assert_eq!(read.body["messages"][4]["content"], "m10, edited");
    assert_ne!(read.headers[header::ETAG], etag.as_str());
    // So do a reaction and a delete.
    app.put(&format!("{page}/{edited}/reactions/ok"), &bob.token)
        .await
        .expect(204);
    let read = app.get(&older_url, &bob.token).await.expect(200);
    assert_eq!(read.body["messages"][4]["reactions"][0]["count"], 1);
    app.delete(&format!("{page}/{edited}"), &ann.token)
        .await
        .expect(204);
    let read = app.get(&older_url, &bob.token).await.expect(200);
    assert!(!ids(&read.body).contains(edited));
    assert_eq!(ids(&read.body).len(), 10);
}

/// A member's page read costs two cache lookups: the token (whose record lists the user's
/// memberships) and the page. A membership implies its channel, which is looked up only to tell
/// a stranger 404 from 403.
#[tokio::test]
async fn a_members_page_read_looks_up_token_and_page_only() {
    use chat_api::cache::Kind;
    let app = TestApp::start(Db::Sqlite).await.unwrap();
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let channel = app.create_channel(&ann, "general", "public").await;
    let page = format!("/api/v1/channels/{channel}/messages");
    let lookups = || -> Vec<(Kind, u64)> {
        app.state
            .cache()
            .kind_stats()
            .iter()
            .map(|k| (k.kind, k.lookups))
            .collect()
    };
    let delta = |before: &[(Kind, u64)]| -> Vec<Kind> {
        lookups()
            .iter()
            .zip(before)
            .flat_map(|((kind, after), (_, before))| {
                std::iter::repeat_n(*kind, (after - before) as usize)
            })
            .collect()
    };
    app.get(&page, &ann.token).await.expect(200);
    let before = lookups();
    app.get(&page, &ann.token).await.expect(200);
    assert_eq!(delta(&before), [Kind::UserAuth, Kind::LatestPage]);
    // Not a member: the channel tells which error.
    let before = lookups();
    app.get(&page, &bob.token).await.expect(403);
    assert_eq!(delta(&before), [Kind::UserAuth, Kind::Channel]);
}

/// Jumping to a message: a page around it is cached like an older page (ETag, 304, no query
/// for later readers, kept across posts in order, dropped by an edit), except when the next post
/// could change it: around the newest message, the page would gain the post.
#[tokio::test]
async fn around_pages_are_cached_unless_a_post_could_change_them() {
    let app = TestApp::start(Db::Sqlite).await.unwrap();
    let (ann, bob, channel, posted) = channel_with_messages(&app, 25).await;
    let page = format!("/api/v1/channels/{channel}/messages");
    let around_url = format!("{page}?around={}&limit=10", posted[10]);

    let first = app.get(&around_url, &ann.token).await.expect(200);
    assert_eq!(
        ids(&first.body),
        posted[6..16].iter().rev().cloned().collect::<Vec<_>>()
    );
    assert_eq!(first.body["has_more_before"], true);
    assert_eq!(first.body["has_more_after"], true);
    let etag = first.headers[header::ETAG].to_str().unwrap().to_owned();

    let queries = app.queries_of("messages");
    let again = app.get(&around_url, &bob.token).await.expect(200);
    assert_eq!(again.body, first.body);
    let conditional = Request::get(&around_url)
        .header(header::AUTHORIZATION, format!("Bearer {}", bob.token))
        .header(header::IF_NONE_MATCH, etag.clone())
        .body(Body::empty())
        .unwrap();
    app.send(conditional).await.expect(304);
    app.post_message(&ann, &channel, "newest").await;
    let after_post = app.get(&around_url, &bob.token).await.expect(200);
    assert_eq!(after_post.body, first.body);
    assert_eq!(
        app.queries_of("messages"),
        queries,
        "served from the cache, across a post in order"
    );

    let edited = &posted[12];
    app.call(
        axum::http::Method::PATCH,
        &format!("{page}/{edited}"),
        Some(&ann.token),
        Some(json!({"content": "m12, edited"})),
    )
    .await
    .expect(200);
    let read = app.get(&around_url, &bob.token).await.expect(200);
    assert_eq!(read.body["messages"][3]["content"], "m12, edited");
    assert_ne!(read.headers[header::ETAG], etag.as_str());

    // Around the newest message there is nothing after the page: the next post belongs to it.
    let newest = app.get(&page, &bob.token).await.expect(200);
    let newest_id = ids(&newest.body)[0].clone();
    let edge_url = format!("{page}?around={newest_id}&limit=10");
    let edge = app.get(&edge_url, &bob.token).await.expect(200);
    assert_eq!(edge.body["has_more_after"], false);
    let new = app.post_message(&ann, &channel, "one more").await;
    let edge = app.get(&edge_url, &bob.token).await.expect(200);
    assert_eq!(ids(&edge.body)[0], new["id"].as_str().unwrap());
    assert_eq!(edge.body["has_more_after"], false);
}

/// A message by `author` with the id `id`, as the post handler would store it.
fn new_message(author: &TestUser, channel: Ulid, id: Ulid) -> NewMessage {
    NewMessage {
        id,
        channel_id: channel,
        author: UserRef {
            id: author.id.parse().unwrap(),
            name: "ann".into(),
        },
        content: format!("message {id}"),
        nonce: None,
        created_at: Millis::now(),
    }
}

/// A channel with `count` messages by `author`, oldest first, and a second member.
async fn channel_with_messages(
    app: &TestApp,
    count: usize,
) -> (TestUser, TestUser, String, Vec<String>) {
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let channel = app.create_channel(&ann, "general", "public").await;
    app.put(
        &format!("/api/v1/channels/{channel}/members/me"),
        &bob.token,
    )
    .await
    .expect(204);
    let mut posted = Vec::new();
    for i in 0..count {
        let message = app.post_message(&ann, &channel, &format!("m{i}")).await;
        posted.push(message["id"].as_str().unwrap().to_owned());
    }
    (ann, bob, channel, posted)
}

/// A new message is newer than every message before it, so it belongs to no older page: posts
/// leave the cached history alone (the mixed workload's scroll-back reads stay cached while the
/// channel is busy), while the latest page shows each post at once.
#[tokio::test]
async fn posts_in_order_leave_older_pages_cached() {
    let app = TestApp::start(Db::Sqlite).await.unwrap();
    let (ann, bob, channel, posted) = channel_with_messages(&app, 25).await;
    let page = format!("/api/v1/channels/{channel}/messages");
    let older_url = format!("{page}?before={}&limit=10", posted[15]);
    let first = app.get(&older_url, &bob.token).await.expect(200);
    assert_eq!(ids(&first.body)[0], posted[14]);

    let new = app.post_message(&ann, &channel, "newest").await;
    let queries = app.queries_of("messages");
    let again = app.get(&older_url, &bob.token).await.expect(200);
    assert_eq!(again.body, first.body);
    assert_eq!(
        app.queries_of("messages"),
        queries,
        "the post left it cached"
    );
    let latest = app.get(&page, &bob.token).await.expect(200);
    assert_eq!(ids(&latest.body)[0], new["id"].as_str().unwrap());
}

/// Pages that the next post would change are not cached: a cursor above every message (the page
/// would gain the post), and a cursor with nothing left after it (its `has_more_after` would
/// turn true).
#[tokio::test]
async fn older_pages_a_post_could_change_are_read_every_time() {
    let app = TestApp::start(Db::Sqlite).await.unwrap();
    let (ann, bob, channel, posted) = channel_with_messages(&app, 5).await;
    let page = format!("/api/v1/channels/{channel}/messages");

    // A cursor from the future: everything so far, and then the next post too.
    let future = Ulid::from_parts(Ulid::new().timestamp_ms() + 3_600_000, 0);
    let future_url = format!("{page}?before={future}");
    let read = app.get(&future_url, &bob.token).await.expect(200);
    assert_eq!(ids(&read.body).len(), 5);
    assert_eq!(read.body["has_more_after"], false);
    let new = app
        .post_message(&ann, &channel, "after the cursor was read")
        .await;
    let read = app.get(&future_url, &bob.token).await.expect(200);
    assert_eq!(ids(&read.body)[0], new["id"].as_str().unwrap());

    // The newest message deleted: nothing at or after that cursor, until the next post.
    let newest = new["id"].as_str().unwrap();
    app.delete(&format!("{page}/{newest}"), &ann.token)
        .await
        .expect(204);
    let cursor_url = format!("{page}?before={newest}");
    let read = app.get(&cursor_url, &bob.token).await.expect(200);
    assert_eq!(read.body["has_more_after"], false);
    assert_eq!(ids(&read.body)[0], posted[4]);
    app.post_message(&ann, &channel, "one more").await;
    let read = app.get(&cursor_url, &bob.token).await.expect(200);
    assert_eq!(read.body["has_more_after"], true, "{}", read.body);
}

/// A post out of order (its id below a message already there: another instance's clock, or a
/// slower concurrent post) may land inside a cached older page: the channel's high-water mark
/// says so, and the post's invalidation then drops the older pages too.
#[tokio::test]
async fn a_post_out_of_order_drops_older_pages() {
    let app = TestApp::start(Db::Sqlite).await.unwrap();
    let (ann, bob, channel, posted) = channel_with_messages(&app, 10).await;
    let page = format!("/api/v1/channels/{channel}/messages");
    let older_url = format!("{page}?before={}", posted[8]);
    let cached = app.get(&older_url, &bob.token).await.expect(200);
    assert_eq!(ids(&cached.body).len(), 8);

    // A message whose id sorts between the 6th and the 7th, as an instance with a slow clock
    // would have made it.
    let low: Ulid = posted[5].parse().unwrap();
    let id = Ulid(low.0 + 1);
    let store = app.state.store();
    let cid: Ulid = channel.parse().unwrap();
    let posted = store
        .post_message(new_message(&ann, cid, id))
        .await
        .unwrap();
    let Posted::Created { newest, .. } = posted else {
        panic!("{posted:?}");
    };
    assert!(!newest, "a newer message was already there");
    app.state.cache().message_posted(cid, newest).await;

    let read = app.get(&older_url, &bob.token).await.expect(200);
    assert_eq!(ids(&read.body).len(), 9);
    assert!(ids(&read.body).contains(&id.to_string()));
}

async fn the_newest_message_mark_only_rises(db: Db) {
    let Some(app) = TestApp::start(db).await else {
        return;
    };
    let (ann, _, channel, posted) = channel_with_messages(&app, 3).await;
    let store = app.state.store();
    let cid: Ulid = channel.parse().unwrap();
    // Every post through the API raised it.
    assert_eq!(
        store.newest_message(cid).await.unwrap(),
        Some(posted[2].parse().unwrap())
    );
    let newest: Ulid = posted[2].parse().unwrap();
    for (id, raises) in [
        (Ulid(newest.0 - 1), false),
        (Ulid(newest.0 + 1), true),
        (Ulid(newest.0 + 3), true),
        (Ulid(newest.0 + 2), false),
    ] {
        let stored = store
            .post_message(new_message(&ann, cid, id))
            .await
            .unwrap();
        assert!(
            matches!(stored, Posted::Created { newest, .. } if newest == raises),
            "{id}: {stored:?}"
        );
    }
    assert_eq!(
        store.newest_message(cid).await.unwrap(),
        Some(Ulid(newest.0 + 3))
    );
    // Deleting messages does not lower it.
    for id in posted
        .iter()
        .cloned()
        .chain((1..=3).map(|n| Ulid(newest.0 + n).to_string()))
    {
        app.delete(
            &format!("/api/v1/channels/{channel}/messages/{id}"),
            &ann.token,
        )
        .await
        .expect(204);
    }
    assert_eq!(
        store.newest_message(cid).await.unwrap(),
        Some(Ulid(newest.0 + 3))
    );
    assert_eq!(store.newest_message(Ulid::new()).await.unwrap(), None);
}

/// A burst of concurrent posts to one channel (SQLite: committed in groups by one writer): every
/// post is stored and answered, all commit in id order (none counts as out of order, so the
/// channel's cached history survives the burst), and the latest page shows them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_posts_commit_in_id_order() {
    let app = TestApp::start(Db::Sqlite).await.unwrap();
    let (ann, bob, channel, posted) = channel_with_messages(&app, 5).await;
    let page = format!("/api/v1/channels/{channel}/messages");
    let older_url = format!("{page}?before={}", posted[3]);
    app.get(&older_url, &bob.token).await.expect(200);

    let texts: Vec<String> = (0..40).map(|i| format!("burst {i}")).collect();
    let burst = join_all(
        texts
            .iter()
            .map(|text| app.post_message(&ann, &channel, text)),
    )
    .await;
    let mut burst_ids: Vec<String> = burst
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    burst_ids.sort();
    let queries = app.queries_of("messages");
    app.get(&older_url, &bob.token).await.expect(200);
    assert_eq!(
        app.queries_of("messages"),
        queries,
        "no post of the burst was out of order"
    );
    let latest = app
        .get(&format!("{page}?limit=100"), &bob.token)
        .await
        .expect(200);
    let mut shown = ids(&latest.body);
    shown.reverse();
    assert_eq!(shown[5..], burst_ids[..]);
    let cid: Ulid = channel.parse().unwrap();
    assert_eq!(
        app.state.store().newest_message(cid).await.unwrap(),
        Some(burst_ids.last().unwrap().parse().unwrap())
    );
}
