//! `stats`: backend numbers, chat-api's `/metrics` (served by a stub with chat-api's metric
//! names), `--watch` as JSON lines, and a quiet exit when the reader goes away.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use predicates::prelude::*;

use crate::support::{Env, bin, json, metrics_server};

/// What chat-api's `/metrics` renders in tiered mode (names from `chat_api::metrics`).
const METRICS: &str = r#"# HELP chat_cache_hits_total Reads that found a valid entry.
# TYPE chat_cache_hits_total counter
chat_cache_hits_total{tier="l1",backend="memory"} 900
chat_cache_hits_total{tier="l2",backend="upstash"} 80
# HELP chat_cache_misses_total Reads that found nothing valid.
# TYPE chat_cache_misses_total counter
chat_cache_misses_total{tier="l1",backend="memory"} 100
chat_cache_misses_total{tier="l2",backend="upstash"} 20
chat_cache_errors_total{tier="l1",backend="memory"} 0
chat_cache_errors_total{tier="l2",backend="upstash"} 3
chat_cache_timeouts_total{tier="l2",backend="upstash"} 1
chat_cache_skipped_total{tier="l2",backend="upstash"} 0
chat_cache_bytes{tier="l1",backend="memory"} 48213
chat_cache_entries{tier="l1",backend="memory"} 37
chat_cache_requests_total{tier="l2",backend="upstash"} 130
chat_cache_commands_total{tier="l2",backend="upstash"} 142
chat_cache_tier_info{tier="l1",backend="memory"} 1
chat_cache_latency_seconds_bucket{tier="l2",backend="upstash",le="0.001"} 90
chat_cache_latency_seconds_bucket{tier="l2",backend="upstash",le="+Inf"} 130
chat_cache_lookup_hits_total 950
chat_cache_lookup_misses_total 50
chat_cache_loads_total 50
chat_cache_load_errors_total 2
chat_cache_coalesced_total 7
chat_cache_pending_invalidations 0
# HELP chat_cache_breaker_state L2 circuit breaker: 0 closed, 1 open, 2 half-open.
chat_cache_breaker_state 0
chat_cache_breaker_transitions_total{to="open"} 1
chat_cache_breaker_transitions_total{to="closed"} 1
chat_http_responses_total{method="GET",route="/api/v1/channels/{cid}/messages",status="2xx"} 990
chat_http_responses_total{method="POST",route="/api/v1/channels/{cid}/messages",status="5xx"} 1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_reads_the_backend_and_chat_api_metrics() {
    let env = Env::start().await;
    env.redis().set("k1", "v").await.unwrap();
    env.redis()
        .set_with("k2", "v", cache_upstash::SetOptions::new().ex(60))
        .await
        .unwrap();
    let server = metrics_server(METRICS).await;

    let out = env
        .cmd()
        .args(["stats", "--json", "--server", &server])
        .assert()
        .success();
    let doc = json(&out.get_output().stdout);
    assert_eq!(doc["backend"]["keys"], 2);
    assert_eq!(doc["backend"]["keyspace"][0]["expires"], 1);
    assert!(doc["backend"]["memory"]["used_bytes"].as_u64().unwrap() > 0);
    let tiers = doc["server"]["tiers"].as_array().unwrap();
    assert_eq!(tiers[0]["tier"], "l1");
    assert_eq!(tiers[0]["hit_ratio"], 0.9);
    assert_eq!(tiers[1]["commands"], 142);
    assert_eq!(tiers[1]["requests"], 130);
    assert_eq!(doc["server"]["lookups"]["hit_ratio"], 0.95);
    assert_eq!(doc["server"]["lookups"]["load_errors"], 2);
    assert_eq!(doc["server"]["breaker"]["state"], "closed");
    assert_eq!(doc["server"]["http_server_errors"], 1);

    env.cmd()
        .args(["stats", "--server", &server])
        .assert()
        .success()
        .stdout(predicate::str::contains("hit ratio"))
        .stdout(predicate::str::contains("90.0%"))
        .stdout(predicate::str::contains("upstash"))
        .stdout(predicate::str::contains("closed (opened 1x, closed 1x)"))
        .stdout(predicate::str::contains("keys  with ttl"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_fails_for_an_explicit_server_that_is_not_chat_api() {
    let env = Env::start().await;
    let not_chat_api = metrics_server("up 1\n").await;
    env.cmd()
        .args(["stats", "--server", &not_chat_api])
        .assert()
        .code(2)
        .stdout(predicate::str::contains("chat-api failed"))
        .stdout(predicate::str::contains("no chat_cache_* metrics"));
    env.cmd()
        .args(["stats", "--server", "http://127.0.0.1:1", "--timeout", "1s"])
        .assert()
        .code(2)
        .stdout(predicate::str::contains("could not connect"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_watch_streams_json_lines_and_a_closed_pipe_exits_quietly() {
    let env = Env::start().await;
    let server = metrics_server(METRICS).await;
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
        assert_eq!(doc["server"]["tiers"][0]["hits"], 900);
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
