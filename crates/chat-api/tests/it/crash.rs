//! Crash safety: the real chat-api binary is killed with SIGKILL in the middle of a stream of
//! posts (and of reads of the latest page). After a restart on the same database, every message
//! answered 201 is there exactly once, and retrying any post with its nonce (whether or not it was
//! answered) never makes a duplicate.
//!
//! With the tiered cache, Redis (behind upstash-gateway) outlives the crash, and so do the pages
//! cached in it: the latest page read through the cache after the restart must show every
//! acknowledged message the database has, i.e. a crash leaves no stale page hiding them.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use upstash_gateway::testing::TestGateway;

use crate::support::{Db, Server, TestDb};

/// The cache the server runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CacheMode {
    /// In process: gone with the process.
    Memory,
    /// L1 in process, L2 in a Redis behind upstash-gateway that survives the crash.
    Tiered,
}

/// The largest ULID: `before` it is the newest page, read from the database (only the latest
/// page, without a cursor, comes from the cache).
const MAX_ULID: &str = "7ZZZZZZZZZZZZZZZZZZZZZZZZZ";

async fn post(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    nonce: &str,
) -> Result<(u16, Value), reqwest::Error> {
    let res = client
        .post(url)
        .bearer_auth(token)
        .json(&json!({ "content": format!("message {nonce}"), "nonce": nonce }))
        .send()
        .await?;
    let status = res.status().as_u16();
    Ok((status, res.json().await.unwrap_or(Value::Null)))
}

/// One page of 100 message ids, newest first, and whether older ones exist. Without `before`,
/// this is the latest page, which comes from the cache.
async fn page(
    client: &reqwest::Client,
    messages_url: &str,
    token: &str,
    before: Option<&str>,
) -> (Vec<String>, bool) {
    let url = match before {
        Some(before) => format!("{messages_url}?limit=100&before={before}"),
        None => format!("{messages_url}?limit=100"),
    };
    let response = client.get(url).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200, "read a page");
    let page: Value = response.json().await.unwrap();
    let ids = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    (ids, page["has_more_before"] == json!(true))
}

/// Every message id of a channel, newest first: the latest page (through the cache), then pages
/// `before` its oldest message (from the database).
async fn all_ids(client: &reqwest::Client, messages_url: &str, token: &str) -> Vec<String> {
    let mut stored = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let (ids, more) = page(client, messages_url, token, cursor.as_deref()).await;
        stored.extend(ids.iter().cloned());
        if !more || ids.is_empty() {
            return stored;
        }
        cursor = ids.last().cloned();
    }
}

/// Asserts that the latest page as the cache serves it holds every message of the newest page in
/// the database for which `expected` holds (all of them, or the acknowledged ones).
async fn assert_latest_page_is_fresh(
    client: &reqwest::Client,
    messages_url: &str,
    token: &str,
    expected: impl Fn(&str) -> bool,
    when: &str,
) {
    let (cached, _) = page(client, messages_url, token, None).await;
    let (database, _) = page(client, messages_url, token, Some(MAX_ULID)).await;
    for id in database.iter().filter(|id| expected(id)) {
        assert!(
            cached.contains(id),
            "{when}: the cached latest page hides {id}\ncached:   {cached:?}\ndatabase: {database:?}"
        );
    }
}

/// The sum of a counter's samples for the L2 tier in `/metrics`.
async fn l2_counter(client: &reqwest::Client, server: &Server, name: &str) -> u64 {
    let text = client
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("{name}{{tier=\"l2\"");
    text.lines()
        .filter(|line| line.starts_with(&prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

mod killed_under_write_load_loses_no_acknowledged_message {
    use super::{CacheMode, killed_under_write_load_loses_no_acknowledged_message as run};
    use crate::support::Db;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        run(Db::Sqlite, CacheMode::Memory).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        run(Db::Postgres, CacheMode::Memory).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_tiered() {
        run(Db::Sqlite, CacheMode::Tiered).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_tiered() {
        run(Db::Postgres, CacheMode::Tiered).await;
    }
}

async fn killed_under_write_load_loses_no_acknowledged_message(db: Db, cache: CacheMode) {
    let Some(database) = TestDb::create(db).await else {
        return;
    };
    // One gateway (and Redis) for both lives of the server: the cache outlives the crash.
    let gateway = match cache {
        CacheMode::Memory => None,
        CacheMode::Tiered => Some(TestGateway::start().await),
    };
    let (gateway_url, gateway_token) = gateway
        .as_ref()
        .map(|g| (g.url(), g.token().to_owned()))
        .unwrap_or_default();
    let mut env = vec![("DATABASE_URL", database.url.as_str())];
    if cache == CacheMode::Tiered {
        env.extend([
            ("CACHE_BACKEND", "tiered"),
            ("UPSTASH_REDIS_REST_URL", gateway_url.as_str()),
            ("UPSTASH_REDIS_REST_TOKEN", gateway_token.as_str()),
        ]);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let server = Server::start(&env, None).await;
    let registered: Value = client
        .post(server.api("/users"))
        .json(&json!({ "name": "writer" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = registered["token"].as_str().unwrap().to_owned();
    let channel: Value = client
        .post(server.api("/channels"))
        .bearer_auth(&token)
        .json(&json!({ "name": "crash", "kind": "public" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let messages_url = server.api(&format!(
        "/channels/{}/messages",
        channel["id"].as_str().unwrap()
    ));

    // Four writers post until the server dies; each remembers what was acknowledged.
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let attempted: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut load = tokio::task::JoinSet::new();
    for w in 0..4 {
        let (client, url, token) = (client.clone(), messages_url.clone(), token.clone());
        let (acked, attempted) = (acked.clone(), attempted.clone());
        load.spawn(async move {
            for i in 0.. {
                let nonce = format!("w{w}-{i}");
                attempted.lock().unwrap().push(nonce.clone());
                match post(&client, &url, &token, &nonce).await {
                    Ok((201, message)) => {
                        let id = message["id"].as_str().unwrap().to_owned();
                        acked.lock().unwrap().insert(nonce, id);
                    }
                    Ok((status, body)) => panic!("post answered {status}: {body}"),
                    Err(_) => return, // the server is gone
                }
            }
        });
    }
    // A reader keeps the latest page cached (in Redis too, in tiered mode) while posts land.
    {
        let (client, url, token) = (client.clone(), messages_url.clone(), token.clone());
        load.spawn(async move {
            loop {
                match client
                    .get(format!("{url}?limit=100"))
                    .bearer_auth(&token)
                    .send()
                    .await
                {
                    Ok(res) => assert_eq!(res.status().as_u16(), 200, "read the latest page"),
                    Err(_) => return, // the server is gone
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
    }
    // Let a few hundred posts through, then kill the server mid-stream.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 200 {
        assert!(Instant::now() < deadline, "posts are too slow");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(server);
    // A task's panic (an unexpected status) fails the test.
    while let Some(task) = load.join_next().await {
        task.expect("a writer or the reader failed");
    }
    let acked = acked.lock().unwrap().clone();
    let attempted = attempted.lock().unwrap().clone();

    // Restart on the same database and read every message back.
    let server = Server::start(&env, None).await;
    let messages_url = server.api(&format!(
        "/channels/{}/messages",
        channel["id"].as_str().unwrap()
    ));
    let acked_ids: std::collections::HashSet<&str> = acked.values().map(String::as_str).collect();
    assert_latest_page_is_fresh(
        &client,
        &messages_url,
        &token,
        |id| acked_ids.contains(id),
        "after the restart",
    )
    .await;
    let stored = all_ids(&client, &messages_url, &token).await;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in &stored {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    assert!(
        counts.values().all(|n| *n == 1),
        "a message is stored twice"
    );
    for (nonce, id) in &acked {
        assert_eq!(
            counts.get(id.as_str()),
            Some(&1),
            "acknowledged post {nonce} ({id}) is missing"
        );
    }

    // Retrying every attempted post with its nonce never duplicates: answered posts come back as
    // they were (200), posts lost in the crash are created once (201).
    for nonce in &attempted {
        let (status, message) = post(&client, &messages_url, &token, nonce).await.unwrap();
        match acked.get(nonce) {
            Some(id) => {
                assert_eq!(status, 200, "retry of acknowledged {nonce}");
                assert_eq!(message["id"].as_str(), Some(id.as_str()));
            }
            None => assert!(status == 200 || status == 201, "retry of {nonce}: {status}"),
        }
    }
    // Now every post is acknowledged: the latest page shows all of the newest ones.
    assert_latest_page_is_fresh(
        &client,
        &messages_url,
        &token,
        |_| true,
        "after the retries",
    )
    .await;
    assert_eq!(
        all_ids(&client, &messages_url, &token).await.len(),
        attempted.len(),
        "every attempted post exists exactly once"
    );
    if cache == CacheMode::Tiered {
        // The reads after the restart really went through Redis.
        assert!(
            l2_counter(&client, &server, "chat_cache_hits_total").await > 0,
            "no read after the restart was served by L2"
        );
        assert_eq!(
            l2_counter(&client, &server, "chat_cache_errors_total").await
                + l2_counter(&client, &server, "chat_cache_timeouts_total").await,
            0,
            "L2 failed during the test"
        );
    }
}
