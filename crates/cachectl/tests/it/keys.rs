//! `ping`, `get`, `set`, `del`, `ttl`, `scan` and `latency` against the gateway.

use std::{sync::Arc, time::Duration};

use cache_core::{Cache, Namespace, TtlPolicy};
use cache_upstash::UpstashBackend;
use predicates::prelude::*;

use crate::support::{Env, json, json_lines, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_reports_pong_and_latency() {
    let env = Env::start().await;
    env.cmd()
        .arg("ping")
        .assert()
        .success()
        .stdout(predicate::str::contains("PONG from http://127.0.0.1:"));
    let out = env.cmd().args(["ping", "--json"]).assert().success();
    let doc = json(&out.get_output().stdout);
    assert_eq!(doc["reply"], "PONG");
    assert_eq!(doc["url"], env.gateway.url());
    assert!(doc["latency_ms"].as_f64().unwrap() > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_get_ttl_del_round_trip_with_exit_codes() {
    let env = Env::start().await;
    env.cmd()
        .args(["set", "greeting", "hello", "--ttl", "30s"])
        .assert()
        .success()
        .stdout(predicate::str::contains("OK greeting"));
    env.cmd()
        .args(["get", "greeting"])
        .assert()
        .success()
        .stdout("hello\n");
    let doc = json(
        &env.cmd()
            .args(["get", "greeting", "--json"])
            .assert()
            .success()
            .get_output()
            .stdout,
    );
    assert_eq!(
        (
            doc["found"].as_bool(),
            doc["value"].as_str(),
            doc["bytes"].as_u64()
        ),
        (Some(true), Some("hello"), Some(5))
    );

    let doc = json(
        &env.cmd()
            .args(["ttl", "greeting", "--json"])
            .assert()
            .success()
            .get_output()
            .stdout,
    );
    let ttl_ms = doc["ttl_ms"].as_u64().unwrap();
    assert!(ttl_ms > 0 && ttl_ms <= 30_000, "{doc}");
    env.cmd()
        .args(["ttl", "greeting"])
        .assert()
        .success()
        .stdout(predicate::str::contains("ms)"));

    env.cmd().args(["set", "forever", "x"]).assert().success();
    env.cmd()
        .args(["ttl", "forever"])
        .assert()
        .success()
        .stdout("no expiry\n");

    let doc = json(
        &env.cmd()
            .args(["del", "greeting", "missing", "--json"])
            .assert()
            .success()
            .get_output()
            .stdout,
    );
    assert_eq!(
        (doc["deleted"].as_u64(), doc["requested"].as_u64()),
        (Some(1), Some(2))
    );

    env.cmd()
        .args(["get", "greeting"])
        .assert()
        .code(1)
        .stdout("")
        .stderr(predicate::str::contains("key \"greeting\" not found"));
    let out = env
        .cmd()
        .args(["get", "greeting", "--json"])
        .assert()
        .code(1);
    assert_eq!(json(&out.get_output().stdout)["found"], false);
    env.cmd().args(["ttl", "greeting"]).assert().code(1);
    let out = env
        .cmd()
        .args(["ttl", "greeting", "--json"])
        .assert()
        .code(1);
    assert_eq!(json(&out.get_output().stdout)["found"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_values_go_in_through_stdin_and_out_with_raw() {
    let env = Env::start().await;
    let value: Vec<u8> = vec![0x00, 0xff, b'\n', 0x80, b'a', 0x01];
    env.cmd()
        .args(["set", "blob", "-"])
        .write_stdin(value.clone())
        .assert()
        .success();
    env.cmd()
        .args(["set", "piped"])
        .write_stdin("from stdin")
        .assert()
        .success();
    let out = env.cmd().args(["get", "blob", "--raw"]).assert().success();
    assert_eq!(
        out.get_output().stdout,
        value,
        "--raw writes the exact bytes"
    );
    let doc = json(
        &env.cmd()
            .args(["get", "blob", "--json"])
            .assert()
            .success()
            .get_output()
            .stdout,
    );
    assert!(doc["value"].is_null());
    assert_eq!(doc["value_base64"], "AP8KgGEB");
    env.cmd()
        .args(["get", "blob"])
        .assert()
        .success()
        .stdout(predicate::str::contains("\\x00\\xff\n\\x80a\\x01"));
    env.cmd()
        .args(["get", "piped"])
        .assert()
        .success()
        .stdout("from stdin\n");
    env.cmd()
        .args(["get", "blob", "--raw", "--json"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot be combined"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_decodes_entries_written_by_the_cache() {
    let env = Env::start().await;
    let cache = Cache::new(Arc::new(UpstashBackend::new(env.redis())));
    let ns = Namespace::new("chat", 1).unwrap();
    let small = ns.key("channel", &[&"c1"]);
    let large = ns.key("channel-messages", &[&"c1", &50]);
    let policy = TtlPolicy::new(Duration::from_secs(120));
    cache
        .set(&small, &serde_json::json!({"name": "general"}), &policy)
        .await
        .unwrap();
    let page: Vec<String> = (0..500).map(|i| format!("message number {i}")).collect();
    cache.set(&large, &page, &policy).await.unwrap();

    env.cmd()
        .args(["get", small.as_str()])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "cache entry, wire format v1 (plain JSON",
        ))
        .stdout(predicate::str::contains("\"name\": \"general\""))
        .stdout(predicate::str::contains("fresh until"));
    let doc = json(
        &env.cmd()
            .args(["get", large.as_str(), "--json"])
            .assert()
            .success()
            .get_output()
            .stdout,
    );
    assert_eq!(doc["entry"]["compressed"], true);
    assert_eq!(doc["entry"]["value"][499], "message number 499");
    assert!(
        doc["value_base64"].is_string(),
        "a compressed frame is binary"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_walks_cursors_with_pattern_and_limit() {
    let env = Env::start().await;
    let redis = env.redis();
    for i in 0..25 {
        redis.set(format!("scan:{i}"), "v").await.unwrap();
    }
    redis.set("other", "v").await.unwrap();
    let out = env
        .cmd()
        .args(["scan", "--pattern", "scan:*", "--count", "3"])
        .assert()
        .success()
        .stderr(predicate::str::contains("25 keys"));
    let mut keys: Vec<String> = text(&out.get_output().stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 25);
    assert!(keys.iter().all(|k| k.starts_with("scan:")));

    let out = env
        .cmd()
        .args(["scan", "--limit", "4", "--json"])
        .assert()
        .success();
    let lines = json_lines(&out.get_output().stdout);
    assert_eq!(lines.len(), 4);
    assert!(lines.iter().all(|line| line["key"].is_string()));
    env.cmd()
        .args(["keys", "--pattern", "other"])
        .assert()
        .success()
        .stdout("other\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_summarizes_n_probes() {
    let env = Env::start().await;
    let doc = json(
        &env.cmd()
            .args(["latency", "-n", "7", "--json"])
            .assert()
            .success()
            .get_output()
            .stdout,
    );
    assert_eq!(doc["probes"], 7);
    let ms = |name: &str| doc[name].as_f64().unwrap();
    assert!(
        ms("min_ms") <= ms("p50_ms")
            && ms("p50_ms") <= ms("p99_ms")
            && ms("p99_ms") <= ms("max_ms"),
        "{doc}"
    );
    env.cmd()
        .args(["latency", "-n", "3"])
        .assert()
        .success()
        .stdout(predicate::str::contains("probes  min"))
        .stdout(predicate::str::contains("p99"));
}
