//! `cargo xtask bench`: runs the criterion benchmarks of the cache crates.
//!
//! - `cache-core/benches/codec.rs`: codec cost and compression ratio (none, LZ4, Zstandard) at
//!   1, 16 and 256 KiB.
//! - `cache-memory/benches/l1_hit.rs`: P1, an L1 hit through the facade vs a raw moka get, and
//!   `get_or_load` under 1/8/64 concurrent callers.
//!
//! Criterion writes its reports under `target/criterion`. Extra arguments go to criterion, e.g.
//! `cargo xtask bench -- --quick` or a benchmark name filter. The end-to-end benchmark of the chat
//! server (issue 7) will be added here.

use crate::util::{cargo, run_cmd};

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let mut bench = cargo();
    bench.args([
        "bench",
        "-p",
        "cache-core",
        "-p",
        "cache-memory",
        "--features",
        "cache-core/zstd",
        "--",
    ]);
    bench.args(args.iter().filter(|a| a.as_str() != "--"));
    run_cmd(bench)
}
