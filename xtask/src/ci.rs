//! `cargo xtask ci`: the one list of checks CI makes (`.ci/run` only prepares the machine and
//! calls it; the GitHub workflow runs `.ci/run`). Runs [`STEPS`] in order and stops at the first
//! failure.
//!
//! - `--tests-only` skips the lint steps (formatting, clippy).
//! - `--list` prints the steps and runs nothing.

use std::time::Instant;

use crate::{
    api_fuzz, cluster, conformance, e2e, examples, fuzz, public_api,
    util::{cargo, project_root, run_cmd},
};

/// One check: its name, whether it is a lint (skipped by `--tests-only`), and how to run it.
struct Step {
    name: &'static str,
    lint: bool,
    run: fn() -> anyhow::Result<()>,
}

/// Cheap checks first, so a formatting slip fails in seconds; the README's test command runs
/// exactly as written there; api-fuzz reuses the chat-api binary the tests built.
const STEPS: &[Step] = &[
    Step {
        name: "cargo fmt --all -- --check",
        lint: true,
        run: || cargo_cmd(&["fmt", "--all", "--", "--check"]),
    },
    Step {
        name: "cargo clippy --workspace --all-targets --all-features -- -D warnings",
        lint: true,
        run: || {
            cargo_cmd(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--all-features",
                "--",
                "-D",
                "warnings",
            ])
        },
    },
    Step {
        name: "cargo clippy --manifest-path fuzz/Cargo.toml --all-targets -- -D warnings",
        lint: true,
        // The fuzz targets are a workspace of their own.
        run: || {
            let mut clippy = cargo();
            clippy
                .args(["clippy", "--manifest-path"])
                .arg(project_root().join("fuzz").join("Cargo.toml"))
                .args(["--all-targets", "--", "-D", "warnings"]);
            run_cmd(clippy)
        },
    },
    // The published crates: their docs build with `-D warnings` and their public API is the
    // committed snapshot (public-api/), so an API change is always a reviewed diff.
    Step {
        name: "cargo xtask public-api (rustdoc -D warnings, API snapshots)",
        lint: true,
        run: || public_api::run(&[]),
    },
    Step {
        name: "cargo xtask conformance",
        lint: false,
        run: || conformance::run(&[]),
    },
    Step {
        name: "cargo xtask fuzz --time 30",
        lint: false,
        run: || fuzz::run(&["--time".into(), "30".into()]),
    },
    Step {
        name: "cargo xtask outage",
        lint: false,
        run: || e2e::run(&e2e::Settings::outage_check()),
    },
    // Reuses the debug binaries the outage check just built.
    Step {
        name: "cargo xtask cluster",
        lint: false,
        run: || cluster::run(&[]),
    },
    Step {
        name: "cargo test --workspace",
        lint: false,
        run: || cargo_cmd(&["test", "--workspace"]),
    },
    // Feature-gated tests (the Zstandard codec) that the default features leave out; only the
    // crate that has them, not a second build of the whole workspace.
    Step {
        name: "cargo test -p cache-core --all-features",
        lint: false,
        run: || cargo_cmd(&["test", "-p", "cache-core", "--all-features"]),
    },
    // The library crates' examples run to the end (each asserts what it shows), the
    // cache-upstash ones against a local upstash-gateway.
    Step {
        name: "cargo xtask examples",
        lint: false,
        run: || examples::run(&[]),
    },
    // The published crates package and build from their package contents alone, in
    // dependency order (each resolves the ones before it from the local packages).
    Step {
        name: "cargo package (library crates)",
        lint: false,
        run: || {
            let mut package = cargo();
            package.arg("package");
            for krate in public_api::CRATES {
                package.args(["-p", krate]);
            }
            run_cmd(package)
        },
    },
    Step {
        name: "cargo xtask api-fuzz --time 60 --no-build",
        lint: false,
        run: || api_fuzz::run(&["--time".into(), "60".into(), "--no-build".into()]),
    },
];

fn cargo_cmd(args: &[&str]) -> anyhow::Result<()> {
    let mut cmd = cargo();
    cmd.args(args);
    run_cmd(cmd)
}

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let mut tests_only = false;
    let mut list = false;
    for arg in args {
        match arg.as_str() {
            "--tests-only" => tests_only = true,
            "--list" => list = true,
            other => anyhow::bail!(
                "unknown option {other:?}; usage: cargo xtask ci [--tests-only] [--list]"
            ),
        }
    }
    let steps: Vec<&Step> = STEPS.iter().filter(|s| !(tests_only && s.lint)).collect();
    if list {
        for step in &steps {
            println!("{}", step.name);
        }
        return Ok(());
    }
    let mut done = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        eprintln!("\n==> ci {}/{}: {}", i + 1, steps.len(), step.name);
        let started = Instant::now();
        let outcome = (step.run)();
        done.push((step.name, started.elapsed(), outcome.is_ok()));
        if let Err(err) = outcome {
            print_times(&done);
            return Err(err.context(format!("ci step `{}` failed", step.name)));
        }
    }
    print_times(&done);
    Ok(())
}

fn print_times(done: &[(&str, std::time::Duration, bool)]) {
    eprintln!("\nci steps:");
    for (name, took, ok) in done {
        eprintln!(
            "  {}  {:>6.0} s  {name}",
            if *ok { "pass" } else { "FAIL" },
            took.as_secs_f64()
        );
    }
}
