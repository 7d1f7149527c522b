//! `cargo xtask ci`: the same steps as `.ci/run` and the GitHub workflow, runnable locally.

use crate::util::{cargo, run_cmd};

fn run_ci(skip_lints: bool) -> anyhow::Result<()> {
    if !skip_lints {
        let mut fmt = cargo();
        fmt.args(["fmt", "--all", "--", "--check"]);
        run_cmd(fmt)?;
        let mut clippy = cargo();
        clippy.args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]);
        run_cmd(clippy)?;
    }
    let mut test = cargo();
    test.args(["test", "--workspace"]);
    run_cmd(test)
}

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let skip_lints = args.iter().any(|a| a == "--tests-only");
    run_ci(skip_lints)
}
