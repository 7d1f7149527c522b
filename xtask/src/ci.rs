//! `cargo xtask ci`: every check CI makes, runnable locally: formatting, clippy with
//! `-D warnings` on all targets and features, the official-SDK conformance check of
//! `upstash-gateway`, and the test suite (the README's test command, which `.ci/run` runs too).
//!
//! `--tests-only` skips formatting and clippy.

use crate::{
    conformance,
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
    }
    conformance::run(&[])?;
    let mut test = cargo();
    test.args(["test", "--workspace"]);
    run_cmd(test)
}
