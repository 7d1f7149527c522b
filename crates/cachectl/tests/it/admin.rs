//! `invalidate` (through cache-core, in chat-api's namespace) and `flush`.

use std::{sync::Arc, time::Duration};

use cache_core::{Cache, Namespace, TtlPolicy};
use cache_upstash::UpstashBackend;
use chat_api::cache::{FORMAT_VERSION, KEY_PREFIX};
use predicates::prelude::*;

use crate::support::{Env, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_hides_the_entries_of_a_tag_in_chat_apis_namespace() {
    let env = Env::start().await;
    let cache = Cache::new(Arc::new(UpstashBackend::new(env.redis())));
    let ns = Namespace::new(KEY_PREFIX, FORMAT_VERSION).unwrap();
    let policy = TtlPolicy::new(Duration::from_secs(120));
    let page = |channel: &str| {
        ns.key("channel-messages", &[&channel, &50])
            .tagged(&[ns.tag("channel-messages", &[&channel])])
    };
    cache
        .set(&page("c1"), &"page of c1".to_owned(), &policy)
        .await
        .unwrap();
    cache
        .set(&page("c2"), &"page of c2".to_owned(), &policy)
        .await
        .unwrap();

    let out = env
        .cmd()
        .args(["invalidate", "--tag", "channel-messages:c1", "--json"])
        .assert()
        .success();
    let doc = json(&out.get_output().stdout);
    assert_eq!(doc["namespace"], format!("chat:v{FORMAT_VERSION}"));
    assert_eq!(
        doc["tags"][0],
        format!("chat:v{FORMAT_VERSION}:#channel-messages:c1")
    );
    assert_eq!(cache.get::<String>(&page("c1")).await.unwrap(), None);
    assert_eq!(
        cache.get::<String>(&page("c2")).await.unwrap().as_deref(),
        Some("page of c2")
    );

    env.cmd()
        .args(["invalidate", "--tag", "*"])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!(
            "invalidated 1 tag in namespace chat:v{FORMAT_VERSION}"
        )))
        .stdout(predicate::str::contains(format!(
            "chat:v{FORMAT_VERSION}:#*"
        )));
    assert_eq!(cache.get::<String>(&page("c2")).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_follows_cache_prefix_and_namespace_override() {
    let env = Env::start().await;
    std::fs::write(env.dir.path().join(".env.local"), "CACHE_PREFIX=myapp\n").unwrap();
    let doc = json(
        &env.cmd()
            .args(["invalidate", "--tag", "user-channels:u1", "--json"])
            .assert()
            .success()
            .get_output()
            .stdout,
    );
    assert_eq!(
        doc["tags"][0],
        format!("myapp:v{FORMAT_VERSION}:#user-channels:u1")
    );
    let doc = json(
        &env.cmd()
            .args([
                "invalidate",
                "--namespace",
                "other:v3",
                "--tag",
                "other:v3:#channel:9",
                "--tag",
                "membership:c:u",
                "--json",
            ])
            .assert()
            .success()
            .get_output()
            .stdout,
    );
    assert_eq!(
        doc["tags"],
        serde_json::json!(["other:v3:#channel:9", "other:v3:#membership:c:u"])
    );
    env.cmd()
        .args(["invalidate", "--tag", "chat:v9:#channel:1"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("belongs to namespace chat:v9"))
        .stderr(predicate::str::contains("hint: pass --namespace chat:v9"));
    env.cmd()
        .args(["invalidate", "--namespace", "nope"])
        .args(["--tag", "x"])
        .assert()
        .code(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_refuses_without_a_terminal_and_flushes_with_yes() {
    let env = Env::start().await;
    let redis = env.redis();
    redis.set("keep", "me").await.unwrap();
    // assert_cmd gives the child no terminal: stdin is a pipe.
    env.cmd()
        .arg("flush")
        .write_stdin("yes\n")
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "cachectl: error: refusing to flush",
        ))
        .stderr(predicate::str::contains("hint: pass --yes"));
    assert_eq!(redis.dbsize().await.unwrap(), 1, "nothing was flushed");
    let doc = json(
        &env.cmd()
            .args(["flush", "--yes", "--json"])
            .assert()
            .success()
            .get_output()
            .stdout,
    );
    assert_eq!(
        (doc["flushed"].as_bool(), doc["keys_before"].as_u64()),
        (Some(true), Some(1))
    );
    assert_eq!(redis.dbsize().await.unwrap(), 0);
}
