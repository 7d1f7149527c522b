//! `cargo xtask bench`: runs the criterion benchmarks of the cache crates.
//!
//! Criterion writes its reports under `target/criterion`. The end-to-end benchmark (issue 7) will
//! be added here.

use crate::util::{cargo, run_cmd};

fn run_bench(args: &[String]) -> anyhow::Result<()> {
    let mut bench = cargo();
    bench.args(["bench", "-p", "cache-core", "-p", "cache-memory", "--"]);
    bench.args(args);
    run_cmd(bench)
}

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    run_bench(args)
}
