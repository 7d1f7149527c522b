//! Failures an operator meets: missing configuration, unreachable or silent servers, a wrong
//! token; plus the help text and usage errors.

use std::time::{Duration, Instant};

use predicates::prelude::*;

use crate::support::{Env, cachectl_in};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_token_or_url_is_a_clear_error() {
    let env = Env::start().await;
    env.bare()
        .env("UPSTASH_REDIS_REST_URL", env.gateway.url())
        .arg("ping")
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::starts_with(
            "cachectl: error: no Upstash REST token configured\nhint: set UPSTASH_REDIS_REST_TOKEN",
        ));
    env.bare()
        .env("KV_REST_API_TOKEN", env.gateway.token())
        .args(["get", "k"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no Upstash REST URL configured"))
        .stderr(predicate::str::contains("hint: pass --url"));
    // The Vercel KV names are a fallback for both.
    env.bare()
        .env("KV_REST_API_URL", env.gateway.url())
        .env("KV_REST_API_TOKEN", env.gateway.token())
        .arg("ping")
        .assert()
        .success();
    env.bare()
        .args(["ping", "--url", "redis://127.0.0.1:6379", "--token", "t"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("must start with https://"));
}

#[test]
fn an_unreachable_url_fails_fast_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on: connection refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    cachectl_in(dir.path())
        .args([
            "ping",
            "--url",
            &format!("http://127.0.0.1:{port}"),
            "--token",
            "t",
            "--timeout",
            "2s",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "cachectl: error: PING: request not sent",
        ))
        .stderr(predicate::str::contains(
            "hint: nothing answers at that URL",
        ));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_silent_server_is_bounded_by_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    // Accepts connections (the kernel's backlog) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let started = Instant::now();
    cachectl_in(dir.path())
        .args(["get", "k", "--url", &url, "--token", "t", "--timeout", "1s"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cachectl: error: GET k"))
        .stderr(predicate::str::contains("hint:"));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(8),
        "{elapsed:?}"
    );
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_unauthorized_and_never_echoed() {
    let env = Env::start().await;
    let secret = "wrong-secret-token-1234";
    let out = env
        .bare()
        .env("UPSTASH_REDIS_REST_URL", env.gateway.url())
        .env("UPSTASH_REDIS_REST_TOKEN", secret)
        .args(["get", "k"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unauthorized"))
        .stderr(predicate::str::contains("hint: the token was refused"));
    let output = out.get_output();
    assert!(!String::from_utf8_lossy(&output.stderr).contains(secret));
    assert!(!String::from_utf8_lossy(&output.stdout).contains(secret));
    let out = env
        .bare()
        .args([
            "doctor",
            "--url",
            &env.gateway.url(),
            "--token",
            secret,
            "--timeout",
            "2s",
        ])
        .assert()
        .code(2)
        .stdout(predicate::str::contains("FAIL  connectivity"));
    assert!(!String::from_utf8_lossy(&out.get_output().stdout).contains(secret));
}

#[test]
fn help_reads_well_for_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    cachectl_in(dir.path())
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("Exit status: 0 ok, 1 not found"))
        .stdout(predicate::str::contains("Examples:"));
    for sub in [
        "ping",
        "get",
        "set",
        "del",
        "ttl",
        "scan",
        "invalidate",
        "flush",
        "stats",
        "doctor",
        "latency",
    ] {
        cachectl_in(dir.path())
            .args([sub, "--help"])
            .assert()
            .success()
            .stdout(predicate::str::contains("Examples:\n  cachectl"))
            .stdout(predicate::str::contains("--json"));
    }
    cachectl_in(dir.path())
        .args(["invalidate", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "A tag names a group of cache entries",
        ));
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    cachectl_in(dir.path()).arg("get").assert().code(2);
    cachectl_in(dir.path())
        .args(["set", "k", "v", "--ttl", "soon"])
        .assert()
        .code(2);
    cachectl_in(dir.path()).arg("frobnicate").assert().code(2);
}
