//! `cargo xtask examples`: every example of the library crates runs to the end, and each asserts
//! what it shows, so a change that breaks what an example teaches fails here.
//!
//! The `cache-core` and `cache-memory` examples need nothing. The `cache-upstash` examples talk to
//! Upstash: they run against `upstash-gateway` in front of a private `redis-server`, both on free
//! loopback ports and both stopped when the task ends, whether it passed or not.

use crate::util::{RedisServer, build_gateway, cargo, run_cmd, start_gateway};

/// The `cache-upstash` examples, each run with `UPSTASH_REDIS_REST_URL`/`_TOKEN` set.
const UPSTASH_EXAMPLES: &[&str] = &["upstash_redis_readme", "cached_axum_handler"];

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    anyhow::ensure!(args.is_empty(), "usage: cargo xtask examples");
    run_example(
        &["-p", "cache-core", "--features", "testing"],
        "tiered_fallback",
    )?;
    run_example(&["-p", "cache-memory"], "bounded_by_bytes")?;
    upstash_examples()
}

fn upstash_examples() -> anyhow::Result<()> {
    // Build first, so that the servers are up only while the examples run.
    let gateway_bin = build_gateway()?;
    let mut build = cargo();
    build.args(["build", "-p", "cache-upstash", "--examples"]);
    run_cmd(build)?;

    let redis = RedisServer::ephemeral()?;
    let token = format!("examples-{}-{}", std::process::id(), redis.port());
    let (gateway, gateway_port) = start_gateway(&gateway_bin, &redis, &token)?;
    eprintln!(
        "redis-server on :{}, upstash-gateway on :{gateway_port}",
        redis.port()
    );
    for example in UPSTASH_EXAMPLES {
        let mut run = cargo();
        run.args(["run", "-p", "cache-upstash", "--example", example])
            .env(
                "UPSTASH_REDIS_REST_URL",
                format!("http://127.0.0.1:{gateway_port}"),
            )
            .env("UPSTASH_REDIS_REST_TOKEN", &token);
        // On failure `?` returns at once: dropping the gateway and Redis kills them.
        run_cmd(run)?;
    }
    drop(gateway);
    drop(redis);
    Ok(())
}

fn run_example(package: &[&str], example: &str) -> anyhow::Result<()> {
    let mut run = cargo();
    run.arg("run").args(package).args(["--example", example]);
    run_cmd(run)
}
