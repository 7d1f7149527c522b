//! `cargo xtask bench`: the criterion benchmarks of the cache crates, then the end-to-end
//! benchmark of the chat server (see `e2e.rs`).
//!
//! - `cache-core/benches/codec.rs`: codec cost and compression ratio (none, LZ4, Zstandard).
//! - `cache-memory/benches/l1_hit.rs`: P1, an L1 hit through the facade vs a raw moka get, and
//!   `get_or_load` under 1/8/64 concurrent callers.
//!
//! Flags: `--quick` (small dataset, short runs: about a minute after the build), `--scenario NAME`
//! (repeatable; a substring of a scenario name), `--criterion-only`, `--e2e-only`.

use crate::{
    e2e,
    util::{cargo, run_cmd},
};

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let criterion_only = args.iter().any(|a| a == "--criterion-only");
    let e2e_only = args.iter().any(|a| a == "--e2e-only");
    let mut settings = e2e::Settings::new(quick);
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--scenario" {
            let name = iter
                .next()
                .ok_or_else(|| anyhow::anyhow!("--scenario needs a name"))?;
            settings.scenarios.push(name.clone());
        }
    }
    if !e2e_only && settings.scenarios.is_empty() {
        let mut bench = cargo();
        bench.args([
            "bench",
            "-p",
            "cache-core",
            "-p",
            "cache-memory",
            // Only the criterion targets: libtest would reject criterion's flags.
            "--benches",
            "--features",
            "cache-core/zstd",
            "--",
        ]);
        if quick {
            bench.args(["--warm-up-time", "0.5", "--measurement-time", "1"]);
        }
        run_cmd(bench)?;
    }
    if !criterion_only {
        e2e::run(&settings)?;
    }
    Ok(())
}
