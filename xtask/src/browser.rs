//! `cargo xtask browser`: chat-api's web client and dashboard in headless Chromium.
//!
//! Starts chat-api (debug build) on a free port with a fresh SQLite database, the memory cache
//! and rate limits off, then runs `crates/chat-api/tests/browser/browser_test.py`, which drives
//! two Chromium sessions through chromedriver (WebDriver, standard library only): two users chat
//! live, the dashboard's hit ratio moves under load, and no page breaks its Content-Security-Policy.
//! Screenshots go to `target/browser/`.
//!
//! Needs `chromium` and `chromedriver` (Debian: `apt-get install chromium chromium-driver`; `.ci/run`
//! installs them); `$CHROMEDRIVER` and `$CHROMIUM` override where they are looked for.
//! `cargo xtask browser [--no-build]`.

use std::{path::PathBuf, process::Command};

use anyhow::{Context, bail};

use crate::util::{debug_chat_api, project_root, start_test_chat_api, target_dir};

const USAGE: &str = "usage: cargo xtask browser [--no-build]";

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let mut build = true;
    for arg in args {
        match arg.as_str() {
            "--no-build" => build = false,
            _ => bail!(USAGE),
        }
    }
    let chromedriver = find_tool("CHROMEDRIVER", &["chromedriver"])?;
    let chromium = find_tool(
        "CHROMIUM",
        &["chromium", "chromium-browser", "google-chrome"],
    )?;
    let bin = debug_chat_api(build)?;

    let artifacts = target_dir().join("browser");
    let work = artifacts.join("run");
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&work)?;
    let (server, port) = start_test_chat_api(&bin, &work, &artifacts.join("chat-api.log"))?;

    let script = project_root()
        .join("crates")
        .join("chat-api")
        .join("tests")
        .join("browser")
        .join("browser_test.py");
    let status = Command::new("python3")
        .arg(&script)
        .arg("--base")
        .arg(format!("http://127.0.0.1:{port}/"))
        .arg("--chromedriver")
        .arg(&chromedriver)
        .arg("--artifacts")
        .arg(&artifacts)
        .env("CHROMIUM", &chromium)
        .status()
        .context("running python3")?;
    server.stop();
    if !status.success() {
        bail!(
            "the browser test failed ({status}); screenshots and logs in {}",
            artifacts.display()
        );
    }
    println!(
        "browser test passed; screenshots in {}",
        artifacts.display()
    );
    Ok(())
}

/// `$var` if set, else the first of `names` on `PATH`.
fn find_tool(var: &str, names: &[&str]) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        return Ok(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    bail!(
        "{} not found on PATH (set ${var}); on Debian: apt-get install chromium chromium-driver",
        names.join(" or ")
    )
}
