//! `cargo xtask ci`: the one list of checks CI makes (`.ci/run` only prepares the machine and
//! calls it; the GitHub workflow runs `.ci/run`). Runs [`STEPS`] in order and stops at the first
//! failure.
//!
//! - `--tests-only` skips the lint steps (formatting, clippy).
//! - `--list` prints the steps and runs nothing.
//! - `--only TEXT` runs the steps whose name contains `TEXT` (`--only package`).

use std::time::Instant;

use anyhow::Context as _;

use crate::{
    api_fuzz, browser, cluster, conformance, e2e, examples, fuzz, public_api,
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
            forget_earlier_packages()?;
            run_cmd(cargo_for_library_crates("package"))
        },
    },
    // The pages in a real browser, on the chat-api binary the tests built.
    Step {
        name: "cargo xtask browser --no-build",
        lint: false,
        run: || browser::run(&["--no-build".into()]),
    },
    Step {
        name: "cargo xtask api-fuzz --time 60 --no-build",
        lint: false,
        run: || api_fuzz::run(&["--time".into(), "60".into(), "--no-build".into()]),
    },
];

/// Makes `cargo package` verify against this run's packages, not an earlier run's.
///
/// Verifying several packages builds each against the others' freshly packed tarballs, served
/// from a local registry. Cargo treats a registry version as immutable: it extracts a name and
/// version once (under `$CARGO_HOME/registry/src/-<hash>/`, directories that hold nothing but
/// such extractions) and reuses what it compiled from it. So on a machine that packaged before,
/// a later run verified against the old sources (seen: `cache-memory` built against a
/// `cache-core` without the method it now calls). Both are removed first; the clean also drops
/// the workspace's own builds of these crates, which the steps after this one do not use.
fn forget_earlier_packages() -> anyhow::Result<()> {
    forget_extracted_local_packages()?;
    run_cmd(cargo_for_library_crates("clean"))
}

/// `cargo <subcommand> -p <crate>…` for every published crate.
fn cargo_for_library_crates(subcommand: &str) -> std::process::Command {
    let mut cmd = cargo();
    cmd.arg(subcommand);
    for krate in public_api::CRATES {
        cmd.args(["-p", krate]);
    }
    cmd
}

/// Removes the extracted copies of our packages from local registries (see above).
fn forget_extracted_local_packages() -> anyhow::Result<()> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".cargo"))
        });
    let Some(src) = cargo_home.map(|home| home.join("registry").join("src")) else {
        return Ok(());
    };
    let Ok(registries) = std::fs::read_dir(&src) else {
        return Ok(());
    };
    for registry in registries.flatten() {
        // Local registries have no name, only the hash (`-<hash>`); crates.io's is named.
        if !registry.file_name().to_string_lossy().starts_with('-') {
            continue;
        }
        for package in std::fs::read_dir(registry.path())?.flatten() {
            let name = package.file_name().to_string_lossy().into_owned();
            let ours = public_api::CRATES.iter().any(|krate| {
                name.strip_prefix(krate)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|version| version.starts_with(|c: char| c.is_ascii_digit()))
            });
            if ours {
                std::fs::remove_dir_all(package.path())?;
            }
        }
    }
    Ok(())
}

fn cargo_cmd(args: &[&str]) -> anyhow::Result<()> {
    let mut cmd = cargo();
    cmd.args(args);
    run_cmd(cmd)
}

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let mut tests_only = false;
    let mut list = false;
    let mut only = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--tests-only" => tests_only = true,
            "--list" => list = true,
            "--only" => only = Some(args.next().context("--only needs part of a step's name")?),
            other => anyhow::bail!(
                "unknown option {other:?}; usage: cargo xtask ci [--tests-only] [--list] [--only TEXT]"
            ),
        }
    }
    let steps: Vec<&Step> = STEPS
        .iter()
        .filter(|s| !(tests_only && s.lint))
        .filter(|s| only.is_none_or(|text| s.name.contains(text.as_str())))
        .collect();
    anyhow::ensure!(!steps.is_empty(), "no CI step matches {only:?}");
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
