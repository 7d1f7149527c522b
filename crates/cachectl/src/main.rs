//! `cachectl`: the operator's command-line tool for the chat cache.
//!
//! Talks to Upstash Redis (or `upstash-gateway`) over the REST API, through the same
//! configuration chat-api reads, and to a running chat-api's `/metrics`.
//!
//! # Layout
//! - `cli`: the clap command tree (global flags; one module per subcommand under `cmd/`).
//! - `config`: where the URL, token and key prefix come from (flags, environment, `.env.local`,
//!   `.env`), remembered per setting so `doctor` can say so.
//! - `cmd/*`: one module per subcommand, each `Cmd::run(&self, &Context)`.
//! - `output`: stdout writer, colour, tables and JSON; `error`: exit codes and hints.
//! - `metrics`: the Prometheus text of chat-api's `/metrics`, summarized for `stats`.
//!
//! `main` only parses, runs and maps the result to an exit code.

mod cli;
mod cmd;
mod config;
mod error;
mod metrics;
mod output;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return error::report(&anyhow::Error::new(err).context("starting tokio")),
    };
    match runtime.block_on(cmd::run(cli)) {
        Ok(outcome) => outcome.exit_code(),
        Err(err) => error::report(&err),
    }
}
