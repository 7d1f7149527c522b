//! `chat-bench`: seeds a chat-api server with a dataset and drives the chat workload against it
//! (see `workload.rs` for its mix). `cargo xtask bench` starts the servers and runs
//! this binary for each scenario; it can also be pointed at any running chat-api.
//!
//! It speaks only the fixed part of chat-api's HTTP contract (register, channels, join, post, message
//! pages with ETag, `/stats`), so it measures any implementation of it.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool that reports on the terminal"
)]

mod api;
mod check;
mod cluster;
mod dataset;
mod metrics;
mod report;
mod stats;
mod workload;

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Load generator for chat-api.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Base URL of the chat-api server; several instances of one deployment separated by commas
    /// (requests go to each in turn, counts are summed over them).
    #[arg(long, global = true, default_value = "http://127.0.0.1:3000")]
    url: String,
    /// Hide progress bars.
    #[arg(long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Registers users, creates channels and memberships, and posts messages (Zipf popularity).
    Seed(dataset::SeedArgs),
    /// Drives the read-heavy chat workload and writes a JSON summary.
    Run(workload::RunArgs),
    /// Posts to a channel, then fires N concurrent requests for its latest page: the stampede
    /// check, where exactly one database query should serve them all.
    Herd(workload::HerdArgs),
    /// Prints the size in bytes of the latest page of the most popular channel (for the P2
    /// baseline, which must answer with a body of the same size).
    PageSize {
        /// The dataset written by `seed`.
        #[arg(long, default_value = "target/bench/dataset.json")]
        dataset: PathBuf,
    },
    /// Compares every channel's latest page with an uncached chat-api on the same database.
    Compare(check::CompareArgs),
    /// The multi-instance check: WebSocket fan-out, cross-instance staleness and, with `--chaos`,
    /// instance and gateway restarts, against several chat-api instances on one database.
    Cluster(cluster::ClusterArgs),
    /// Turns the scenario summaries of a bench directory into report.md, summary.json and plots.
    Report(report::ReportArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let client = api::Client::new(&cli.url)?;
    match cli.command {
        Command::Seed(args) => dataset::seed(&client, &args, cli.quiet).await,
        Command::Run(args) => workload::run(&client, &args, cli.quiet).await,
        Command::Herd(args) => workload::herd(&client, &args).await,
        Command::Report(args) => report::write(&args),
        Command::Cluster(args) => cluster::run(&args).await,
        Command::Compare(args) => check::compare(&client, &args).await,
        Command::PageSize { dataset } => {
            let dataset = dataset::Dataset::load(&dataset)?;
            let channel = &dataset.channels[0];
            let token = &dataset.users[channel.members[0]].token;
            let bytes = client.page_bytes(token, &channel.id).await?;
            println!("{bytes}");
            Ok(())
        }
    }
}

/// Writes `value` as pretty JSON to `path` (creating parent directories).
pub(crate) fn write_json(path: &PathBuf, value: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Parses `30s`, `500ms`, `2m`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "s"), |i| text.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("bad duration {text:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("bad duration unit in {text:?} (use ms, s or m)")),
    }
}
