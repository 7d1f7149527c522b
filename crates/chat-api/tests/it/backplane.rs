//! Several chat-api instances in one test process on one database and one L2 (a real
//! upstash-gateway in front of a real redis-server), sharing a backplane: a
//! [`LocalTransport`] in process, and the Upstash transport over the gateway's `PUBLISH` and SSE
//! `/subscribe`.
//!
//! Every instance's L1 cap (`l1_max_ttl`) is set far above any deadline here, and the backplane
//! keeps L1 entries for their whole TTL while connected: another instance's write can only
//! become visible through its invalidation notice, so these tests fail without the backplane
//! (the `off` test shows the stale copy that the notice removes).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use cache_core::{BackplaneTransport as _, LocalTransport, OffsetClock, TransportEvent};
use chat_api::{
    CLOSE_LAGGED,
    cache::build_cache_on,
    config::{BackplaneMode, CacheBackendKind, SecretString},
    ratelimit::Bucket,
};
use serde_json::Value;
use upstash_gateway::testing::TestGateway;

use crate::{
    support::{Db, Server, TestApp, TestDb, TestUser, ids, on_both_databases},
    ws::{Socket, connect, hello_and_ready, next_close_code, next_json, serve},
};

/// Far above every deadline of these tests: an L1 copy outlives them unless a notice drops it.
const L1_CAP: Duration = Duration::from_secs(120);
/// How long a poll waits for something the bus delivers in milliseconds.
const DEADLINE: Duration = Duration::from_secs(10);

/// Instances of one test: the gateway (L2 and, for Upstash, the bus), the shared database.
struct Cluster {
    apps: Vec<TestApp>,
    gateway: TestGateway,
}

/// The settings of every instance: tiered through `gateway`, one key prefix (so one L2 and one
/// bus channel), the backplane as `mode` says.
fn cluster_config(
    gateway: &TestGateway,
    prefix: &str,
    mode: BackplaneMode,
) -> impl Fn(chat_api::Config) -> chat_api::Config + use<> {
    let (url, token, prefix) = (gateway.url(), gateway.token().to_owned(), prefix.to_owned());
    move |c| chat_api::Config {
        cache_backend: CacheBackendKind::Tiered,
        upstash_url: Some(url.clone()),
        upstash_token: SecretString::new(token.clone()),
        cache_prefix: prefix.clone(),
        l1_max_ttl: L1_CAP,
        backplane: mode,
        ..c
    }
}

fn unique_prefix() -> String {
    format!("chat-bp-{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// `n` instances on `db` on one in-process bus, connected.
async fn local_cluster(db: Db, n: usize, mode: BackplaneMode) -> Option<(Cluster, LocalTransport)> {
    local_cluster_with(db, n, mode, |c| c).await
}

/// [`local_cluster`] with the settings adjusted by `adjust`.
async fn local_cluster_with(
    db: Db,
    n: usize,
    mode: BackplaneMode,
    adjust: impl Fn(chat_api::Config) -> chat_api::Config,
) -> Option<(Cluster, LocalTransport)> {
    let gateway = TestGateway::start().await;
    let db = Arc::new(TestDb::create(db).await?);
    let local = LocalTransport::new();
    let base = cluster_config(&gateway, &unique_prefix(), mode);
    let configure = |c| adjust(base(c));
    let mut apps = Vec::new();
    for _ in 0..n {
        let transport = Arc::new(local.clone());
        apps.push(
            TestApp::start_on(&db, &configure, |config| {
                build_cache_on(config, transport, Arc::new(OffsetClock::new())).expect("cache")
            })
            .await,
        );
    }
    let cluster = Cluster { apps, gateway };
    if mode == BackplaneMode::Auto {
        cluster.wait_connected().await;
    }
    Some((cluster, local))
}

/// `n` instances on `db` on the Upstash transport through the gateway, as the server builds
/// them (`connect_cache`), connected.
async fn upstash_cluster(db: Db, n: usize) -> Option<Cluster> {
    let gateway = TestGateway::start().await;
    let db = Arc::new(TestDb::create(db).await?);
    let configure = cluster_config(&gateway, &unique_prefix(), BackplaneMode::Auto);
    let mut apps = Vec::new();
    for _ in 0..n {
        let parts = chat_api::cache::connect_cache(&configure(chat_api::Config::default()))
            .await
            .expect("cache");
        apps.push(TestApp::start_on(&db, &configure, move |_| parts).await);
    }
    let cluster = Cluster { apps, gateway };
    cluster.wait_connected().await;
    Some(cluster)
}

impl Cluster {
    /// Polls until every instance's backplane is connected.
    async fn wait_connected(&self) {
        for app in &self.apps {
            let backplane = app.state.backplane().expect("the backplane is on");
            poll(format!("{} connected", backplane.instance_id()), || async {
                backplane.state() == cache_core::BackplaneState::Connected
            })
            .await;
        }
    }
}

/// Polls `check` until it holds, panicking with `what` after [`DEADLINE`].
async fn poll<F, Fut>(what: impl std::fmt::Display, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Ann creates the public channel `general` on `a`; Bob registers and joins it on `b`.
async fn ann_and_bob(a: &TestApp, b: &TestApp) -> (TestUser, String, TestUser) {
    let ann = a.register("ann").await;
    let channel = a.create_channel(&ann, "general", "public").await;
    let bob = member(b, "bob", &channel).await;
    (ann, channel, bob)
}

/// A user `name` registered on `on`, member of `channel` (through `on`, too).
async fn member(on: &TestApp, name: &str, channel: &str) -> TestUser {
    let user = on.register(name).await;
    on.put(
        &format!("/api/v1/channels/{channel}/members/me"),
        &user.token,
    )
    .await
    .expect(204);
    user
}

async fn latest_ids(app: &TestApp, user: &TestUser, channel: &str) -> Vec<String> {
    ids(&app
        .get(&format!("/api/v1/channels/{channel}/messages"), &user.token)
        .await
        .expect(200)
        .body)
}

fn id(message: &Value) -> String {
    message["id"].as_str().unwrap().to_owned()
}

async fn stats(app: &TestApp) -> Value {
    app.call(axum::http::Method::GET, "/stats", None, None)
        .await
        .expect(200)
        .body
}

/// A post on one instance is in the next reads on the others, without waiting for any TTL:
/// `reader` holds the page in L1 (a read runs no query), and only the notice drops it.
async fn a_post_is_read_on_every_other_instance(cluster: &Cluster) {
    let [a, b, c] = [&cluster.apps[0], &cluster.apps[1], &cluster.apps[2]];
    let ann = a.register("ann").await;
    let channel = a.create_channel(&ann, "general", "public").await;
    // Users registered and joined on other instances: token records (with memberships) cross too.
    let bob = member(b, "bob", &channel).await;
    let cid = member(c, "cid", &channel).await;
    let mut sockets = Vec::new();
    for (app, user) in [(b, &bob), (c, &cid)] {
        let mut socket = connect(serve(app).await, Some(&user.token), "").await;
        hello_and_ready(&mut socket).await;
        sockets.push(socket);
    }
    let first = id(&a.post_message(&ann, &channel, "one").await);
    // Once the post's event arrived, so did its notice (it went first on the same bus): the reads
    // below fill L1 after it, and nothing but the next notice may drop their copies.
    for socket in &mut sockets {
        assert_eq!(creates_until(socket, "one").await, ["one"]);
    }
    for (app, user) in [(b, &bob), (c, &cid)] {
        assert_eq!(
            latest_ids(app, user, &channel).await,
            std::slice::from_ref(&first)
        );
        poll("the fill is stored", || async {
            app.state.cache().cache().loads_in_flight() == 0
        })
        .await;
        let queries = app.queries();
        assert_eq!(
            latest_ids(app, user, &channel).await,
            std::slice::from_ref(&first)
        );
        assert_eq!(
            app.queries(),
            queries,
            "the page is served from this instance's L1"
        );
    }

    for (writer, author, round) in [(a, &ann, "two"), (b, &bob, "three"), (c, &cid, "four")] {
        let posted = id(&writer.post_message(author, &channel, round).await);
        for (app, user) in [(a, &ann), (b, &bob), (c, &cid)] {
            poll(format!("{round} visible"), || async {
                latest_ids(app, user, &channel).await.first() == Some(&posted)
            })
            .await;
        }
    }
    for app in &cluster.apps {
        let stats = stats(app).await;
        assert!(
            stats["backplane"]["received"].as_u64().unwrap() > 0,
            "{stats}"
        );
        assert_eq!(stats["backplane"]["gaps"], 0, "{stats}");
    }
}

async fn reads_are_coherent_across_instances_on_a_local_bus(db: Db) {
    let Some((cluster, _local)) = local_cluster(db, 3, BackplaneMode::Auto).await else {
        return;
    };
    a_post_is_read_on_every_other_instance(&cluster).await;
    cluster.gateway.shutdown().await;
}

async fn reads_are_coherent_across_instances_on_upstash(db: Db) {
    let Some(cluster) = upstash_cluster(db, 3).await else {
        return;
    };
    a_post_is_read_on_every_other_instance(&cluster).await;
    let stats = stats(&cluster.apps[1]).await;
    assert_eq!(stats["backplane"]["transport"], "upstash");
    assert_eq!(stats["backplane"]["state"], "connected");
    cluster.gateway.shutdown().await;
}

on_both_databases! {
    reads_are_coherent_across_instances_on_a_local_bus;
    reads_are_coherent_across_instances_on_upstash;
}

/// The control: with `CACHE_BACKPLANE=off` nothing goes on the bus, and another instance keeps
/// serving the page its L1 holds (the staleness the backplane removes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_backplane_off_nothing_is_published() {
    let (cluster, local) = local_cluster(Db::Sqlite, 2, BackplaneMode::Off)
        .await
        .unwrap();
    let [a, b] = [&cluster.apps[0], &cluster.apps[1]];
    assert!(a.state.backplane().is_none());
    let mut probe = local.subscribe();
    assert_eq!(probe.recv().await, Some(TransportEvent::Connected));

    let (ann, channel, bob) = ann_and_bob(a, b).await;
    let first = id(&a.post_message(&ann, &channel, "one").await);
    assert_eq!(
        latest_ids(b, &bob, &channel).await,
        std::slice::from_ref(&first)
    );
    let second = id(&a.post_message(&ann, &channel, "two").await);
    assert_eq!(latest_ids(a, &ann, &channel).await[0], second);
    assert_eq!(
        latest_ids(b, &bob, &channel).await[0],
        first,
        "without the backplane B serves its L1 copy until the L1 cap"
    );

    // Whatever the instances published would be on the bus ahead of this marker.
    local
        .publish(&[Bytes::from_static(b"marker")])
        .await
        .unwrap();
    assert_eq!(
        probe.recv().await,
        Some(TransportEvent::Message(Bytes::from_static(b"marker"))),
        "nothing was published before the marker"
    );
    for app in [a, b] {
        assert_eq!(stats(app).await["backplane"], Value::Null);
        assert_eq!(health(app).await["backplane"], Value::Null);
    }
    cluster.gateway.shutdown().await;
}

/// Reads `message_create` events until one has `content` `last`; returns the contents in order
/// and asserts the session's `seq` has no hole.
async fn creates_until(socket: &mut Socket, last: &str) -> Vec<String> {
    let mut contents = Vec::new();
    let mut seq = None;
    loop {
        let frame = next_json(socket).await;
        assert_eq!(frame["op"], "event", "{frame}");
        let this = frame["seq"].as_u64().unwrap();
        if let Some(previous) = seq {
            assert_eq!(this, previous + 1, "seq counts up by one");
        }
        seq = Some(this);
        if frame["type"] != "message_create" {
            continue;
        }
        let content = frame["data"]["content"].as_str().unwrap().to_owned();
        let done = content == last;
        contents.push(content);
        if done {
            return contents;
        }
    }
}

/// Sessions on every instance receive each `message_create` of a burst on one instance exactly
/// once and in order, the poster's own instance included, and a read after the event is fresh on
/// every instance (the notice goes out before the event on the same ordered bus).
async fn events_reach_sessions_on_every_instance(cluster: &Cluster) {
    let [a, b, c] = [&cluster.apps[0], &cluster.apps[1], &cluster.apps[2]];
    let (ann, channel, bob) = ann_and_bob(a, b).await;
    let mut sockets = Vec::new();
    for app in [a, b, c] {
        let mut socket = connect(serve(app).await, Some(&bob.token), "").await;
        hello_and_ready(&mut socket).await;
        sockets.push(socket);
    }
    // Cache the page on every instance first: the reads after the events must not be first reads.
    let first = id(&a.post_message(&ann, &channel, "first").await);
    for app in [a, b, c] {
        assert_eq!(
            latest_ids(app, &bob, &channel).await,
            std::slice::from_ref(&first)
        );
    }
    for socket in &mut sockets {
        assert_eq!(creates_until(socket, "first").await, ["first"]);
    }

    let burst: Vec<String> = (0..20).map(|i| format!("burst {i}")).collect();
    let before = [b, c].map(|app| app.state.hub().bus_stats().received);
    for content in &burst {
        a.post_message(&ann, &channel, content).await;
    }
    // B and C have every event of the burst before C posts: C's post comes after on every
    // instance's bus, so anything of A's arriving twice would show before it.
    for (app, before) in [b, c].into_iter().zip(before) {
        poll("the burst delivered", || async {
            app.state.hub().bus_stats().received >= before + 20
        })
        .await;
    }
    let end = id(&c.post_message(&bob, &channel, "end").await);
    let mut expected = burst.clone();
    expected.push("end".into());
    for (socket, app) in sockets.iter_mut().zip([a, b, c]) {
        assert_eq!(creates_until(socket, "end").await, expected);
        // The event came after the notice of its write on the same bus: no wait needed.
        assert_eq!(latest_ids(app, &bob, &channel).await[0], end);
    }
}

async fn events_reach_sessions_on_every_instance_on_a_local_bus(db: Db) {
    let Some((cluster, _local)) = local_cluster(db, 3, BackplaneMode::Auto).await else {
        return;
    };
    events_reach_sessions_on_every_instance(&cluster).await;
    cluster.gateway.shutdown().await;
}

on_both_databases! {
    events_reach_sessions_on_every_instance_on_a_local_bus;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_sessions_on_every_instance_on_upstash() {
    let cluster = upstash_cluster(Db::Sqlite, 3).await.unwrap();
    events_reach_sessions_on_every_instance(&cluster).await;
    cluster.gateway.shutdown().await;
}

/// An interrupted bus (messages may have been lost) closes every session with 4008; after the
/// reconnect a new session gets the other instance's events again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_bus_makes_sessions_resync() {
    let (cluster, local) = local_cluster(Db::Sqlite, 2, BackplaneMode::Auto)
        .await
        .unwrap();
    let [a, b] = [&cluster.apps[0], &cluster.apps[1]];
    let (ann, channel, bob) = ann_and_bob(a, b).await;
    let (addr_a, addr_b) = (serve(a).await, serve(b).await);
    let mut sockets = Vec::new();
    for addr in [addr_a, addr_b] {
        let mut socket = connect(addr, Some(&bob.token), "").await;
        hello_and_ready(&mut socket).await;
        sockets.push(socket);
    }

    local.interrupt();
    for socket in &mut sockets {
        assert_eq!(next_close_code(socket).await, CLOSE_LAGGED);
    }
    cluster.wait_connected().await;
    for app in [a, b] {
        let stats = stats(app).await;
        let backplane = &stats["backplane"];
        assert!(backplane["interruptions"].as_u64().unwrap() >= 1, "{stats}");
        assert!(backplane["ws_resyncs"].as_u64().unwrap() >= 1, "{stats}");
    }

    let mut socket = connect(addr_b, Some(&bob.token), "").await;
    hello_and_ready(&mut socket).await;
    a.post_message(&ann, &channel, "after").await;
    assert_eq!(creates_until(&mut socket, "after").await, ["after"]);
    cluster.gateway.shutdown().await;
}

/// A message lost on the bus (a gap in A's sequence) makes B resync its sessions and drop its
/// L1, so the write whose notice was lost is not hidden by B's copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_message_makes_the_other_instance_resync() {
    let (cluster, local) = local_cluster(Db::Sqlite, 2, BackplaneMode::Auto)
        .await
        .unwrap();
    let [a, b] = [&cluster.apps[0], &cluster.apps[1]];
    let (ann, channel, bob) = ann_and_bob(a, b).await;
    let first = id(&a.post_message(&ann, &channel, "one").await);
    assert_eq!(latest_ids(b, &bob, &channel).await, [first]);
    let mut socket = connect(serve(b).await, Some(&bob.token), "").await;
    hello_and_ready(&mut socket).await;

    // The invalidation notice of the next post is lost; its event (the next message) shows the gap.
    local.lose_next(1);
    let second = id(&a.post_message(&ann, &channel, "two").await);
    assert_eq!(next_close_code(&mut socket).await, CLOSE_LAGGED);
    poll("B dropped its L1 copy", || async {
        latest_ids(b, &bob, &channel).await[0] == second
    })
    .await;
    let stats = stats(b).await;
    assert!(stats["backplane"]["gaps"].as_u64().unwrap() >= 1, "{stats}");
    assert!(
        stats["backplane"]["resets"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    cluster.gateway.shutdown().await;
}

/// `/health`, `/stats` and `/metrics` show the backplane and its counters moving; a bus that is
/// down leaves `/health` at 200, `degraded`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_stats_and_metrics_show_the_backplane() {
    let (cluster, local) = local_cluster(Db::Sqlite, 2, BackplaneMode::Auto)
        .await
        .unwrap();
    let [a, b] = [&cluster.apps[0], &cluster.apps[1]];
    let body = health(b).await;
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["backplane"]["state"], "connected", "{body}");
    assert_eq!(body["backplane"]["transport"], "local", "{body}");

    let ann = a.register("ann").await;
    let channel = a.create_channel(&ann, "general", "public").await;
    a.post_message(&ann, &channel, "one").await;
    poll("B received A's event", || async {
        stats(b).await["backplane"]["events_received"].as_u64() >= Some(1)
    })
    .await;
    let sent = stats(a).await;
    let sent = &sent["backplane"];
    assert!(sent["published"].as_u64().unwrap() >= 2, "{sent}");
    assert!(sent["events_sent"].as_u64().unwrap() >= 1, "{sent}");
    assert_eq!(sent["state"], "connected");
    let received = stats(b).await;
    assert!(
        received["backplane"]["received"].as_u64().unwrap() >= 2,
        "{received}"
    );
    let metrics = b
        .call(axum::http::Method::GET, "/metrics", None, None)
        .await
        .expect(200)
        .text;
    for line in [
        "chat_backplane_state{transport=\"local\"} 1",
        "chat_backplane_messages_received_total ",
        "chat_backplane_messages_published_total ",
        "chat_backplane_gaps_total 0",
        "chat_backplane_interruptions_total 0",
        "chat_backplane_events_total{direction=\"in\"} ",
        "chat_ws_resyncs_total 0",
    ] {
        assert!(metrics.contains(line), "{line} missing in:\n{metrics}");
    }
    let received_total = metrics
        .lines()
        .find_map(|l| l.strip_prefix("chat_backplane_messages_received_total "))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap();
    assert!(received_total >= 2);

    local.set_down(true);
    poll("B sees the bus down", || async {
        health(b).await["backplane"]["state"] != "connected"
    })
    .await;
    let body = health(b).await;
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["database"]["status"], "ok", "{body}");
    local.set_down(false);
    poll("B reconnected", || async {
        health(b).await["status"] == "ok"
    })
    .await;
    assert!(
        stats(b).await["backplane"]["interruptions"]
            .as_u64()
            .unwrap()
            >= 1
    );
    cluster.gateway.shutdown().await;
}

async fn health(app: &TestApp) -> Value {
    app.call(axum::http::Method::GET, "/health", None, None)
        .await
        .expect(200)
        .body
}

/// The real binary, configured only by the environment as an operator would
/// (`CACHE_BACKEND=tiered` and Upstash credentials, nothing about the backplane): two processes
/// join the bus on their own, and a post on one is read on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_join_the_backplane_by_default() {
    let gateway = TestGateway::start().await;
    let db = TestDb::create(Db::Sqlite).await.unwrap();
    let prefix = unique_prefix();
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("CACHE_BACKEND", "tiered"),
        ("UPSTASH_REDIS_REST_URL", &gateway.url()),
        ("UPSTASH_REDIS_REST_TOKEN", gateway.token()),
        ("CACHE_PREFIX", &prefix),
        ("CACHE_L1_MAX_TTL_MS", "120000"),
    ];
    let a = Server::start(&env, None).await;
    let b = Server::start(&env, None).await;
    let client = reqwest::Client::new();
    for server in [&a, &b] {
        poll("the process's backplane connected", || async {
            let health: Value = client
                .get(format!("{}/health", server.base))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            health["backplane"]["state"] == "connected" && health["status"] == "ok"
        })
        .await;
    }
    let call = |method: reqwest::Method, url: String, token: Option<&str>, body: Option<Value>| {
        let mut request = client.request(method, url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.unwrap();
            assert!(response.status().is_success(), "{}", response.status());
            response.json::<Value>().await.unwrap_or(Value::Null)
        }
    };
    let ann = call(
        reqwest::Method::POST,
        a.api("/users"),
        None,
        Some(serde_json::json!({"name": "ann"})),
    )
    .await;
    let token = ann["token"].as_str().unwrap();
    let channel = call(
        reqwest::Method::POST,
        a.api("/channels"),
        Some(token),
        Some(serde_json::json!({"name": "general", "kind": "public"})),
    )
    .await;
    let page = format!("/channels/{}/messages", channel["id"].as_str().unwrap());
    let post = |content: &str| {
        call(
            reqwest::Method::POST,
            a.api(&page),
            Some(token),
            Some(serde_json::json!({ "content": content })),
        )
    };
    let first = id(&post("one").await);
    let read_on_b =
        || async { ids(&call(reqwest::Method::GET, b.api(&page), Some(token), None).await) };
    poll("B reads the first post", || async {
        read_on_b().await == [first.clone()]
    })
    .await;
    let second = id(&post("two").await);
    poll("B reads the second post", || async {
        read_on_b().await.first() == Some(&second)
    })
    .await;
    let stats: Value = client
        .get(format!("{}/stats", b.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["backplane"]["transport"], "upstash", "{stats}");
    assert!(
        stats["backplane"]["received"].as_u64().unwrap() > 0,
        "{stats}"
    );
    drop((a, b));
    gateway.shutdown().await;
}

/// Per-user rate limits hold across instances: what one instance allowed counts on the others
/// once it shared its counts on the bus, with no Redis command per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_hold_across_instances() {
    let (cluster, _local) =
        local_cluster_with(Db::Sqlite, 2, BackplaneMode::Auto, |c| chat_api::Config {
            rate_limit: true,
            ..c
        })
        .await
        .unwrap();
    let [a, b] = [&cluster.apps[0], &cluster.apps[1]];
    let ann = a.register("ann").await;
    let limit = Bucket::Channels.limit();
    let on_a = limit - 5;
    for i in 0..on_a {
        a.create_channel(&ann, &format!("a{i}"), "public").await;
    }
    let subject = format!("user:{}", ann.id);
    poll("B heard A's counts", || async {
        b.state.limiter().used(&subject, Bucket::Channels) >= on_a
    })
    .await;
    let mut allowed = 0;
    loop {
        let response = b
            .post(
                "/api/v1/channels",
                &ann.token,
                serde_json::json!({"name": format!("b{allowed}"), "kind": "public"}),
            )
            .await;
        if response.status == 429 {
            break;
        }
        response.expect(201);
        allowed += 1;
        assert!(allowed <= limit, "B ignored A's counts");
    }
    assert_eq!(allowed, 5, "B allowed only what was left of the limit");
    // And back: A hears B's five.
    poll("A heard B's counts", || async {
        a.state.limiter().used(&subject, Bucket::Channels) >= limit
    })
    .await;
    a.post(
        "/api/v1/channels",
        &ann.token,
        serde_json::json!({"name": "over", "kind": "public"}),
    )
    .await
    .expect_error(429, "rate_limited");
    cluster.gateway.shutdown().await;
}

/// `CACHE_BACKEND=upstash` (no L1) is on the backplane too: there is nothing to keep coherent,
/// but realtime events still cross instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_l1_the_backplane_still_carries_events() {
    let (cluster, _local) =
        local_cluster_with(Db::Sqlite, 2, BackplaneMode::Auto, |c| chat_api::Config {
            cache_backend: CacheBackendKind::Upstash,
            ..c
        })
        .await
        .unwrap();
    let [a, b] = [&cluster.apps[0], &cluster.apps[1]];
    assert_eq!(b.state.cache().cache().backend().name(), "upstash");
    let (ann, channel, bob) = ann_and_bob(a, b).await;
    let mut socket = connect(serve(b).await, Some(&bob.token), "").await;
    hello_and_ready(&mut socket).await;
    let posted = id(&a.post_message(&ann, &channel, "hello").await);
    assert_eq!(creates_until(&mut socket, "hello").await, ["hello"]);
    assert_eq!(latest_ids(b, &bob, &channel).await, [posted]);
    cluster.gateway.shutdown().await;
}
