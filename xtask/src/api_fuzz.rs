//! `cargo xtask api-fuzz`: schemathesis (PyPI) against chat-api's own OpenAPI document.
//!
//! Starts chat-api on a free port with a fresh SQLite database, the memory cache and rate limits
//! off; registers a user and creates a channel with a message, so generated requests reach real
//! resources; installs the pinned schemathesis into `target/api-fuzz/venv`; and runs it for a
//! bounded time with schemathesis's default checks, all of them (no 5xx, responses match the
//! document, schema-valid input is accepted and invalid input refused, auth is enforced), with the
//! exceptions `fuzz/api/schemathesis.toml` gives and explains.
//!
//! `cargo xtask api-fuzz [--time SECS] [--no-build]`: 60 s by default; `--no-build` uses the
//! chat-api binary already in the target directory (CI builds it for the tests just before).

use std::process::Command;

use anyhow::{Context, bail};

use crate::util::{
    debug_chat_api, http_json, json_string_field, project_root, python_venv, run_cmd, seconds_arg,
    start_test_chat_api, target_dir,
};

const USAGE: &str = "usage: cargo xtask api-fuzz [--time SECS] [--no-build]";

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let mut seconds: u64 = 60;
    let mut build = true;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--time" => seconds = seconds_arg(args.next(), USAGE)?,
            "--no-build" => build = false,
            _ => bail!(USAGE),
        }
    }
    let root = project_root();
    let bin = debug_chat_api(build)?;
    let python = python_venv(
        "api-fuzz",
        &root.join("fuzz").join("api").join("requirements.txt"),
    )?;

    let work = target_dir().join("api-fuzz").join("run");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let (server, port) = start_test_chat_api(&bin, &work, &work.join("chat-api.log"))?;

    // A user with a channel and a message, for the parameters in schemathesis.toml.
    let (status, body) = http_json(
        port,
        "POST",
        "/api/v1/users",
        None,
        Some(r#"{"name":"fuzzer"}"#),
    )?;
    anyhow::ensure!(status == 201, "registering: {status} {body}");
    let token = json_string_field(&body, "token").context("no token in the registration")?;
    let uid = json_string_field(&body, "id").context("no user id in the registration")?;
    let (status, body) = http_json(
        port,
        "POST",
        "/api/v1/channels",
        Some(&token),
        Some(r#"{"name":"fuzzing"}"#),
    )?;
    anyhow::ensure!(status == 201, "creating a channel: {status} {body}");
    let cid = json_string_field(&body, "id").context("no channel id")?;
    let (status, body) = http_json(
        port,
        "POST",
        &format!("/api/v1/channels/{cid}/messages"),
        Some(&token),
        Some(r#"{"content":"hello, fuzzer"}"#),
    )?;
    anyhow::ensure!(status == 201, "posting: {status} {body}");
    let mid = json_string_field(&body, "id").context("no message id")?;

    let base = format!("http://127.0.0.1:{port}");
    let mut schemathesis = Command::new(python.with_file_name("schemathesis"));
    schemathesis
        .current_dir(&work)
        .arg("--config-file")
        .arg(root.join("fuzz").join("api").join("schemathesis.toml"))
        .arg("run")
        .arg(format!("{base}/api/v1/openapi.json"))
        .args(["--url", &base])
        .args(["--max-time", &seconds.to_string()])
        .arg("--continue-on-failure")
        .args(["--report", "junit"])
        .arg("--report-dir")
        .arg(&work)
        .env("CHAT_TOKEN", &token)
        .env("CHAT_CID", &cid)
        .env("CHAT_MID", &mid)
        .env("CHAT_UID", &uid)
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .env("NO_COLOR", "1");
    let outcome = run_cmd(schemathesis);
    drop(server);
    let log = std::fs::read_to_string(work.join("chat-api.log")).unwrap_or_default();
    if log.contains("panicked") {
        bail!(
            "chat-api panicked during the run; see {}",
            work.join("chat-api.log").display()
        );
    }
    outcome.context("schemathesis found failures (report and server log in target/api-fuzz/run)")
}
