//! The subcommands, one module each, and the [`Context`] they run in.
//!
//! Each module has a clap `Cmd` (its flags; the doc comment is its help) and
//! `Cmd::run(&self, &Context) -> anyhow::Result<Outcome>`.

pub(crate) mod del;
pub(crate) mod doctor;
pub(crate) mod flush;
pub(crate) mod get;
pub(crate) mod invalidate;
pub(crate) mod latency;
pub(crate) mod ping;
pub(crate) mod scan;
pub(crate) mod set;
pub(crate) mod stats;
pub(crate) mod ttl;

use std::{future::Future, time::Duration};

use anyhow::Context as _;
use cache_upstash::Redis;

use crate::{
    cli::{Cli, Command},
    config::Settings,
    error::{Hinted, Outcome},
    output::Output,
};

/// What every subcommand gets: the configuration, the output, and the network bound.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) settings: Settings,
    pub(crate) out: Output,
    pub(crate) timeout: Duration,
    /// `--server`, if given.
    pub(crate) server: Option<String>,
}

impl Context {
    /// The configured Upstash client.
    pub(crate) fn redis(&self) -> anyhow::Result<Redis> {
        self.settings.redis()
    }

    /// Runs `call` (one network operation, retries included) within `--timeout`.
    pub(crate) async fn bounded<T, E>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, E>>,
    ) -> anyhow::Result<T>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.with_context(|| what.to_owned()),
            Err(_) => Err(Hinted::new(
                format!("{what}: no answer within {:?}", self.timeout),
                "check that the server is reachable from here, or raise --timeout",
            )
            .into()),
        }
    }
}

/// Builds the context from the global flags and runs the subcommand.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let global = cli.global;
    let dir = std::env::current_dir().context("reading the current directory")?;
    let ctx = Context {
        settings: Settings::load(global.url, global.token, global.timeout, &dir),
        out: Output::new(global.json),
        timeout: global.timeout,
        server: global.server,
    };
    match cli.command {
        Command::Ping(cmd) => cmd.run(&ctx).await,
        Command::Get(cmd) => cmd.run(&ctx).await,
        Command::Set(cmd) => cmd.run(&ctx).await,
        Command::Del(cmd) => cmd.run(&ctx).await,
        Command::Ttl(cmd) => cmd.run(&ctx).await,
        Command::Scan(cmd) => cmd.run(&ctx).await,
        Command::Invalidate(cmd) => cmd.run(&ctx).await,
        Command::Flush(cmd) => cmd.run(&ctx).await,
        Command::Stats(cmd) => cmd.run(&ctx).await,
        Command::Doctor(cmd) => cmd.run(&ctx).await,
        Command::Latency(cmd) => cmd.run(&ctx).await,
    }
}
