//! R3 (SPEC §10): the real chat-api binary is killed with SIGKILL in the middle of a stream of
//! posts. After a restart on the same database, every message answered 201 is there exactly once,
//! and retrying any post with its nonce (whether or not it was answered) never makes a duplicate.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::support::{Db, Server, TestDb, on_both_databases};

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

/// Every message id of a channel, newest first, paging with `before`.
async fn all_ids(client: &reqwest::Client, messages_url: &str, token: &str) -> Vec<String> {
    let mut stored = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(before) => format!("{messages_url}?limit=100&before={before}"),
            None => format!("{messages_url}?limit=100"),
        };
        let page: Value = client
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ids: Vec<String> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect();
        stored.extend(ids.iter().cloned());
        if page["has_more_before"] != json!(true) || ids.is_empty() {
            return stored;
        }
        cursor = ids.last().cloned();
    }
}

on_both_databases! {
    killed_under_write_load_loses_no_acknowledged_message;
}

async fn killed_under_write_load_loses_no_acknowledged_message(db: Db) {
    let Some(database) = TestDb::create(db).await else {
        return;
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let server = Server::start(&[("DATABASE_URL", database.url.as_str())], None).await;
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
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..4 {
        let (client, url, token) = (client.clone(), messages_url.clone(), token.clone());
        let (acked, attempted) = (acked.clone(), attempted.clone());
        writers.spawn(async move {
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
    // Let a few hundred posts through, then kill the server mid-stream.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 200 {
        assert!(Instant::now() < deadline, "posts are too slow");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(server);
    while writers.join_next().await.is_some() {}
    let acked = acked.lock().unwrap().clone();
    let attempted = attempted.lock().unwrap().clone();

    // Restart on the same database and read every message back.
    let server = Server::start(&[("DATABASE_URL", database.url.as_str())], None).await;
    let messages_url = server.api(&format!(
        "/channels/{}/messages",
        channel["id"].as_str().unwrap()
    ));
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
    assert_eq!(
        all_ids(&client, &messages_url, &token).await.len(),
        attempted.len(),
        "every attempted post exists exactly once"
    );
}
