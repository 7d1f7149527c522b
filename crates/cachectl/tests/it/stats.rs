//! `stats`: backend numbers and a real chat-api's `/stats` (started in process, with traffic),
//! checked against what that chat-api holds; answers that are not a current stats document;
//! `--watch` as JSON lines, and a quiet exit when the reader goes away.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use predicates::prelude::*;

use crate::support::{Env, bin, json, stub_server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_shows_what_a_real_chat_api_counted() {
    let env = Env::start().await;
    let chat = env.chat_api().await;
    chat.traffic(3).await;
    // Cache writes finish after the answers (a slow L2 never delays one): wait for the first.
    let redis = env.redis();
    let deadline = Instant::now() + Duration::from_secs(20);
    let keys = loop {
        let keys = redis.dbsize().await.unwrap();
        if keys > 0 {
            break keys;
        }
        assert!(
            Instant::now() < deadline,
            "the tiered cache never wrote to L2"
        );
        tokio::task::yield_now().await;
    };

    let out = env
        .cmd()
        .args(["stats", "--json", "--server", &chat.url])
        .assert()
        .success();
    let doc = json(&out.get_output().stdout);
    assert!(doc["backend"]["keys"].as_u64().unwrap() >= keys);
    assert!(doc["backend"]["memory"]["used_bytes"].as_u64().unwrap() > 0);
    // The "server" part is chat-api's document as served: read it with the shared types and
    // compare with what cache-core and the store count, so no field is lost or mixed up between
    // them, chat-api and cachectl.
    let shown: chat_stats::Stats = serde_json::from_value(doc["server"].clone()).unwrap();
    let core = chat.cache_stats();
    assert_eq!(shown.version, chat_stats::VERSION);
    assert_eq!(shown.db.queries, chat.queries());
    let l = shown.cache.lookups;
    assert_eq!(
        [
            l.hits,
            l.misses,
            l.loads,
            l.load_errors,
            l.coalesced,
            l.backend_errors
        ],
        [
            core.loads.hits,
            core.loads.misses,
            core.loads.loads,
            core.loads.load_errors,
            core.loads.coalesced,
            core.loads.backend_errors
        ]
    );
    let tiers: Vec<_> = shown.cache.tiers.iter().map(|t| t.tier.as_str()).collect();
    assert_eq!(tiers, ["l1", "l2"]);
    for (shown, core) in shown.cache.tiers.iter().zip(&core.tiers) {
        // Reads are counted before they are answered; cache writes (L2 requests and commands)
        // may still be finishing, and entries and bytes are estimates that settle.
        assert_eq!(
            (shown.hits, shown.misses, shown.errors, shown.timeouts),
            (core.hits, core.misses, core.errors, core.timeouts),
            "{}",
            shown.tier
        );
        assert!(shown.commands <= core.commands && shown.requests <= core.requests);
        assert_eq!(shown.backend, core.backend);
    }
    // And what the traffic must have produced, so equal zeros cannot pass.
    assert_eq!(shown.db.queries_by_op.get("post_message"), Some(&1));
    let l1 = &shown.cache.tiers[0];
    // Entries are counted (an estimate that may still read 0 right after the writes).
    assert!(l1.hits >= 2 && l1.entries.is_some(), "{l1:?}");
    let l2 = &shown.cache.tiers[1];
    assert!(
        l2.commands.is_some_and(|n| n > 0) && l2.requests.is_some_and(|n| n > 0),
        "{l2:?}"
    );
    assert!(shown.cache.lookups.loads >= 1);
    assert_eq!(
        shown.cache.breaker.map(|b| b.state),
        Some(chat_stats::BreakerState::Closed)
    );
    assert!(shown.http.responses.success >= 6);

    let lookups = chat.cache_stats().loads;
    let ratio = lookups.hits as f64 / (lookups.hits + lookups.misses) as f64 * 100.0;
    env.cmd()
        .args(["stats", "--server", &chat.url])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!(
            "{} / {} ({ratio:.1}% hit ratio)",
            lookups.hits, lookups.misses
        )))
        .stdout(predicate::str::contains(format!(
            "{} ({} failed, {} callers coalesced)",
            lookups.loads, lookups.load_errors, lookups.coalesced
        )))
        .stdout(predicate::str::contains("closed (opened 0x, closed 0x)"))
        .stdout(predicate::str::contains("upstash"))
        .stdout(predicate::str::contains("keys  with ttl"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_fails_for_an_explicit_server_that_is_not_a_current_chat_api() {
    let env = Env::start().await;
    let prometheus_only = stub_server("/stats", "up 1\n").await;
    env.cmd()
        .args(["stats", "--server", &prometheus_only])
        .assert()
        .code(2)
        .stdout(predicate::str::contains("chat-api failed"))
        .stdout(predicate::str::contains("is this chat-api's address?"));
    let newer = stub_server("/stats", r#"{"version": 99, "cache": {}}"#).await;
    env.cmd()
        .args(["stats", "--server", &newer])
        .assert()
        .code(2)
        .stdout(predicate::str::contains("version 99 is not supported"));
    let no_stats = stub_server("/metrics", "").await;
    env.cmd()
        .args(["stats", "--server", &no_stats])
        .assert()
        .code(2)
        .stdout(predicate::str::contains("answered 404"));
    env.cmd()
        .args(["stats", "--server", "http://127.0.0.1:1", "--timeout", "1s"])
        .assert()
        .code(2)
        .stdout(predicate::str::contains("could not connect"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_watch_streams_json_lines_and_a_closed_pipe_exits_quietly() {
    let env = Env::start().await;
    let chat = env.chat_api().await;
    chat.traffic(1).await;
    let server = chat.url.clone();
    let mut child = Command::new(bin())
        .current_dir(env.dir.path())
        .env("UPSTASH_REDIS_REST_URL", env.gateway.url())
        .env("UPSTASH_REDIS_REST_TOKEN", env.gateway.token())
        .args(["stats", "--json", "--server", &server, "--watch", "100ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..2 {
        let line = lines.next().expect("a line per refresh").unwrap();
        let doc: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(doc["server"]["version"], chat_stats::VERSION);
        assert_eq!(doc["server"]["cache"]["tiers"][0]["tier"], "l1");
    }
    // Like `cachectl stats --watch | head -2`: the reader goes away.
    drop(lines);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "cachectl kept running after its reader left"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        status.success(),
        "a broken pipe exits 0, got {status}; stderr: {stderr}"
    );
    assert!(stderr.is_empty(), "and quietly: {stderr}");
}
