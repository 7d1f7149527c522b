//! `cargo xtask`: the project's task runner (see matklad/cargo-xtask).
//!
//! Every task is plain Rust so it runs wherever `cargo` runs. One module per task.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a developer tool that reports progress on the terminal"
)]

mod api_fuzz;
mod bench;
mod browser;
mod ci;
mod cluster;
mod conformance;
mod e2e;
mod examples;
mod fuzz;
mod p2;
mod public_api;
mod setup_env;
mod util;

use std::process::ExitCode;

const HELP: &str = "\
cargo xtask <TASK> [ARGS]

Tasks:
  bench       criterion benches, then the end-to-end chat benchmark (report under target/bench);
              --quick, --scenario NAME, --criterion-only, --e2e-only
  browser     the web client and the dashboard in headless Chromium (chromedriver): two users
              chat live, the dashboard follows the load; screenshots in target/browser;
              --no-build
  conformance the official @upstash/redis and upstash-redis SDKs against upstash-gateway
  api-fuzz    schemathesis against chat-api's OpenAPI document (fuzz/api); --time SECS, --no-build
  outage      Redis killed under load (and restarted with its data) in tiered and upstash mode,
              every read checked against the acknowledged writes and the database (debug builds;
              report under target/outage); --scenario tiered|upstash runs one mode
  cluster     three chat-api instances on PostgreSQL, the gateway and Redis (debug builds):
              WebSocket fan-out, cross-instance staleness, kill -9 of an instance and of the
              gateway, then the same through nginx if installed (report under target/cluster);
              --no-build, --no-nginx, --backplane-off (the control: the checks must fail);
              --fanout USERS [--release]: USERS sessions on every instance, fan-out latency
              and memory per session instead
  examples    the library crates' examples, the cache-upstash ones against a local
              upstash-gateway in front of redis-server
  ci          the one list of CI checks (--list prints it; --tests-only skips fmt and clippy)
  fuzz        coverage-guided fuzzing of the decoders and parsers (fuzz/), bounded in time;
              --time SECS (per target, default 30), TARGET…
  public-api  the published crates' public API against the snapshots in public-api/ (the diff if
              not); --bless rewrites them
  setup-env   write .env.local with Upstash (or local gateway) credentials, checked by PING
  help        this text
";

fn main() -> ExitCode {
    if let Some(code) = public_api::run_as_rustdoc() {
        return code;
    }
    let mut args = std::env::args().skip(1);
    let task = args.next();
    let rest: Vec<String> = args.collect();
    let result = match task.as_deref() {
        Some("ci") => ci::run(&rest),
        Some("bench") => bench::run(&rest),
        Some("browser") => browser::run(&rest),
        Some("conformance") => conformance::run(&rest),
        Some("examples") => examples::run(&rest),
        Some("fuzz") => fuzz::run(&rest),
        Some("api-fuzz") => api_fuzz::run(&rest),
        Some("outage") => e2e::outage(&rest),
        Some("cluster") => cluster::run(&rest),
        Some("setup-env") => setup_env::run(&rest),
        Some("public-api") => public_api::run(&rest),
        None | Some("help" | "--help" | "-h") => {
            print!("{HELP}");
            Ok(())
        }
        Some(other) => Err(anyhow::anyhow!("unknown task `{other}`\n\n{HELP}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
