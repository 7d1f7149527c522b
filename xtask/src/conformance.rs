//! `cargo xtask conformance`: the official Upstash SDKs, unmodified, against `upstash-gateway`.
//!
//! Builds the gateway binary, starts `redis-server` and the gateway on free loopback ports,
//! installs `@upstash/redis` (npm, `conformance/node`) and `upstash-redis` (PyPI, into
//! `target/conformance/venv`) when they are missing, runs `conformance/node/conformance.mjs` and
//! `conformance/python/conformance.py`, and reports. Fails if either script reports a mismatch.
//!
//! `--only node` / `--only python` runs one of them.

use std::{path::Path, process::Command};

use anyhow::{Context, bail};

use crate::util::{
    RedisServer, build_gateway, project_root, python_venv, run_cmd, start_gateway, summarize,
};

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let only = match args {
        [] => None,
        [flag, which] if flag == "--only" && (which == "node" || which == "python") => {
            Some(which.as_str())
        }
        _ => bail!("usage: cargo xtask conformance [--only node|python]"),
    };
    let root = project_root();

    let gateway_bin = build_gateway()?;
    let redis = RedisServer::ephemeral()?;
    let redis_port = redis.port();
    let token = format!("conformance-{}-{}", std::process::id(), redis_port);
    let (gateway, gateway_port) = start_gateway(&gateway_bin, &redis, &token)?;
    let gateway_url = format!("http://127.0.0.1:{gateway_port}");
    eprintln!("redis-server on :{redis_port}, upstash-gateway at {gateway_url}");

    let mut outcomes = Vec::new();
    if only.is_none_or(|o| o == "node") {
        outcomes.push((
            "@upstash/redis (npm)",
            run_node(&root, &gateway_url, &token).map(|()| String::new()),
        ));
    }
    if only.is_none_or(|o| o == "python") {
        outcomes.push((
            "upstash-redis (PyPI)",
            run_python(&root, &gateway_url, &token).map(|()| String::new()),
        ));
    }
    drop(gateway);
    drop(redis);

    summarize("conformance summary", "SDK conformance runs", &outcomes)
}

fn run_node(root: &Path, url: &str, token: &str) -> anyhow::Result<()> {
    let dir = root.join("conformance").join("node");
    if !dir
        .join("node_modules")
        .join("@upstash")
        .join("redis")
        .is_dir()
    {
        let mut install = Command::new("npm");
        install
            .current_dir(&dir)
            .args(["ci", "--no-audit", "--no-fund"]);
        run_cmd(install).context("installing @upstash/redis (needs node and npm)")?;
    }
    let mut script = Command::new("node");
    script
        .current_dir(&dir)
        .arg("conformance.mjs")
        .env("UPSTASH_REDIS_REST_URL", url)
        .env("UPSTASH_REDIS_REST_TOKEN", token)
        .env("UPSTASH_DISABLE_TELEMETRY", "1");
    run_cmd(script)
}

fn run_python(root: &Path, url: &str, token: &str) -> anyhow::Result<()> {
    let requirements = root
        .join("conformance")
        .join("python")
        .join("requirements.txt");
    let python = python_venv("conformance", &requirements)?;
    let mut script = Command::new(&python);
    script
        .arg(
            root.join("conformance")
                .join("python")
                .join("conformance.py"),
        )
        .env("UPSTASH_REDIS_REST_URL", url)
        .env("UPSTASH_REDIS_REST_TOKEN", token);
    run_cmd(script)
}
