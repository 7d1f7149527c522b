//! `cargo xtask ci`: every check CI makes, runnable locally: formatting, clippy with
//! `-D warnings` on all targets and features, then what `.ci/run` runs: the official-SDK
//! conformance check of `upstash-gateway`, the fuzz targets (30 s each), the Redis outage check,
//! the test suite (the README's test command) and schemathesis against chat-api.
//!
//! `--tests-only` skips formatting and clippy.

use crate::{
    api_fuzz, conformance, e2e, fuzz,
    util::{cargo, run_cmd},
};

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let tests_only = args.iter().any(|a| a == "--tests-only");
    if !tests_only {
        let mut fmt = cargo();
        fmt.args(["fmt", "--all", "--", "--check"]);
        run_cmd(fmt)?;
        let mut clippy = cargo();
        clippy.args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ]);
        run_cmd(clippy)?;
        // The fuzz targets are a workspace of their own.
        let mut clippy = cargo();
        clippy
            .args(["clippy", "--manifest-path"])
            .arg(crate::util::project_root().join("fuzz").join("Cargo.toml"))
            .args(["--all-targets", "--", "-D", "warnings"]);
        run_cmd(clippy)?;
    }
    conformance::run(&[])?;
    fuzz::run(&["--time".into(), "30".into()])?;
    e2e::run(&e2e::Settings::outage_check())?;
    let mut test = cargo();
    test.args(["test", "--workspace"]);
    run_cmd(test)?;
    api_fuzz::run(&["--time".into(), "60".into(), "--no-build".into()])
}
