//! `cargo xtask fuzz`: the coverage-guided fuzz targets in `fuzz/`, on the stable toolchain.
//!
//! Builds the targets with libFuzzer's SanitizerCoverage instrumentation (the flags `cargo fuzz`
//! passes, without AddressSanitizer, which needs nightly and finds little in code that forbids
//! `unsafe`; overflow checks and debug assertions stay on), then runs each target for a bounded
//! time starting from its seed corpus in `fuzz/corpus/<target>`. Every seed runs first, so the seed
//! corpus is also a regression suite. Inputs the fuzzer finds go to `target/fuzz/corpus/<target>`
//! (kept between runs, never written into the repository); a failing input is saved under
//! `target/fuzz/artifacts/<target>/` and fails the task with the command that reproduces it.
//!
//! `cargo xtask fuzz [--time SECS] [TARGET…]`: 30 s per target by default, all targets.
//! `cargo xtask fuzz --merge [TARGET…]`: instead of fuzzing, adds to `fuzz/corpus/<target>` the
//! inputs of `target/fuzz/corpus/<target>` that reach code the seeds do not (libFuzzer's
//! `-merge=1`), for review and commit.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context, bail};

use crate::util::{cargo, project_root, run_cmd, seconds_arg, summarize, target_dir};

/// Every target in `fuzz/Cargo.toml`, and what it fuzzes.
const TARGETS: &[(&str, &str)] = &[
    (
        "codec",
        "cache-core entry codec (wire format v1, lz4, zstd)",
    ),
    (
        "upstash_reply",
        "cache-upstash REST reply decoder and value conversions",
    ),
    (
        "gateway_request",
        "upstash-gateway JSON and path-form request parsers",
    ),
    (
        "gateway_resp",
        "upstash-gateway RESP2 reply parser and reply rendering (JSON, base64, RESP2)",
    ),
];

/// SanitizerCoverage as libFuzzer wants it; all stable `-C` options.
const COVERAGE_FLAGS: &[&str] = &[
    "--cfg=fuzzing",
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
];

const USAGE: &str = "usage: cargo xtask fuzz [--time SECS | --merge] [TARGET…]";

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let mut seconds: u64 = 30;
    let mut merge = false;
    let mut chosen: Vec<&str> = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--time" => seconds = seconds_arg(args.next(), USAGE)?,
            "--merge" => merge = true,
            name => match TARGETS.iter().find(|(target, _)| *target == name) {
                Some((target, _)) => chosen.push(target),
                None => bail!(
                    "unknown fuzz target `{name}`; targets: {}\n{USAGE}",
                    TARGETS
                        .iter()
                        .map(|(t, _)| *t)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
        }
    }
    if chosen.is_empty() {
        chosen = TARGETS.iter().map(|(target, _)| *target).collect();
    }

    let root = project_root();
    let out = target_dir().join("fuzz");
    let host = host_triple()?;
    let mut build = cargo();
    build
        .args(["build", "--release", "--bins", "--manifest-path"])
        .arg(root.join("fuzz").join("Cargo.toml"))
        // An explicit target keeps the flags off build scripts and proc macros.
        .args(["--target", &host])
        .env("CARGO_TARGET_DIR", &out)
        .env("RUSTFLAGS", COVERAGE_FLAGS.join(" "));
    run_cmd(build).context("building the fuzz targets")?;
    let bin_dir = out.join(&host).join("release");
    if merge {
        for target in &chosen {
            let seeds = root.join("fuzz").join("corpus").join(target);
            let found = out.join("corpus").join(target);
            std::fs::create_dir_all(&found)?;
            let mut cmd = Command::new(bin_dir.join(target));
            cmd.arg("-merge=1").arg(&seeds).arg(&found);
            run_cmd(cmd).with_context(|| format!("merging the corpus of {target}"))?;
        }
        eprintln!("merged; review and commit what was added under fuzz/corpus/");
        return Ok(());
    }

    let mut results = Vec::new();
    for target in &chosen {
        let outcome = fuzz_one(&root, &out, &bin_dir, target, seconds);
        if let Err(err) = &outcome {
            eprintln!("{target}: {err:#}");
        }
        results.push((*target, outcome));
    }

    summarize(
        &format!("fuzz summary ({seconds} s per target)"),
        "fuzz targets",
        &results,
    )
}

/// Runs one target; on success, a line of its final statistics.
fn fuzz_one(
    root: &Path,
    out: &Path,
    bin_dir: &Path,
    target: &str,
    seconds: u64,
) -> anyhow::Result<String> {
    let seeds = root.join("fuzz").join("corpus").join(target);
    let found = out.join("corpus").join(target);
    let artifacts = out.join("artifacts").join(target);
    let log = out.join("logs").join(format!("{target}.log"));
    for dir in [&found, &artifacts] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::create_dir_all(log.parent().expect("a logs directory"))?;
    let seed_count = std::fs::read_dir(&seeds)
        .with_context(|| format!("reading the seed corpus {}", seeds.display()))?
        .count();
    anyhow::ensure!(seed_count > 0, "no seeds in {}", seeds.display());

    let bin = bin_dir.join(target);
    eprintln!("fuzzing {target} for {seconds} s ({seed_count} seeds)");
    let log_file = std::fs::File::create(&log)?;
    let status = Command::new(&bin)
        .arg(format!("-max_total_time={seconds}"))
        .arg("-max_len=16384")
        // One input taking over 10 s, or over 2 GiB, is a finding too.
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        // The first directory receives new inputs; the seeds are only read.
        .arg(&found)
        .arg(&seeds)
        .stdout(Stdio::null())
        .stderr(log_file)
        .status()
        .with_context(|| format!("starting {}", bin.display()))?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    if !status.success() {
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(40)..];
        let input = text
            .lines()
            .find_map(|line| line.split("Test unit written to ").nth(1))
            .unwrap_or("(see the log)");
        bail!(
            "{status}; failing input: {input}\nreproduce: {} {input}\nlog: {}\n{}",
            bin.display(),
            log.display(),
            tail.join("\n")
        );
    }
    Ok(final_stats(&text))
}

/// `runs`, coverage and corpus size from libFuzzer's last status and final statistics.
fn final_stats(log: &str) -> String {
    let stat = |name: &str| {
        log.lines()
            .find_map(|line| line.strip_prefix(&format!("stat::{name}:")))
            .map_or("?", str::trim)
            .to_owned()
    };
    let coverage = log
        .lines()
        .rev()
        .find_map(|line| {
            let cov = line.split(" cov: ").nth(1)?.split_whitespace().next()?;
            let corp = line.split(" corp: ").nth(1)?.split_whitespace().next()?;
            Some(format!("edges {cov}, corpus {corp}"))
        })
        .unwrap_or_default();
    format!(
        "{} runs, {} runs/s, {coverage}",
        stat("number_of_executed_units"),
        stat("average_exec_per_sec")
    )
}

/// The host's target triple, from `rustc -vV`.
fn host_triple() -> anyhow::Result<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(rustc)
        .arg("-vV")
        .output()
        .context("running rustc -vV")?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_owned)
        .context("rustc -vV printed no host triple")
}
