//! The command tree: global flags and one subcommand per module of `cmd/`.
//!
//! Clap conventions here: doc comments are the help (first line short, the rest for `--help`);
//! `short` only with an explicit letter; `value_name` in capitals; examples in `after_help`.

use std::time::Duration;

use cache_upstash::Secret;
use clap::{Args, Parser, Subcommand};

use crate::cmd;

const ROOT_AFTER_HELP: &str = "\
Configuration (highest first): --url/--token, the environment, .env.local, .env (in the current
directory), exactly like chat-api: UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN, falling
back to KV_REST_API_URL and KV_REST_API_TOKEN; CACHE_PREFIX for the key prefix (default chat).

Exit status: 0 ok, 1 not found (get/ttl of a missing key), 2 error (including a failed doctor
check). Errors go to stderr as `cachectl: error: …` followed by a `hint:` line.

Examples:
  cachectl doctor                        check configuration, connectivity, cache behaviour
  cachectl ping
  cachectl set greeting hello --ttl 30s
  cachectl get greeting
  cachectl scan --pattern 'chat:v3:*' --limit 20
  cachectl invalidate --tag channel-messages:01J9Z3K7QX8V5M2N4P6R8T0W1Y
  cachectl stats --server http://127.0.0.1:3000 --watch
  cachectl latency -n 100 --json";

/// Operate the chat cache: inspect and change keys in Upstash Redis, invalidate tags, read
/// chat-api's cache metrics, and diagnose the setup.
#[derive(Debug, Parser)]
#[command(name = "cachectl", version, after_help = ROOT_AFTER_HELP, max_term_width = 100)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Flags every subcommand accepts.
#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// Upstash REST URL (https://<db>.upstash.io, or http://127.0.0.1:8079 for upstash-gateway)
    /// [default: UPSTASH_REDIS_REST_URL, KV_REST_API_URL, from the environment or .env files]
    #[arg(long, global = true, value_name = "URL")]
    pub(crate) url: Option<String>,

    /// Upstash REST token [default: UPSTASH_REDIS_REST_TOKEN, KV_REST_API_TOKEN]. Command lines
    /// are visible to other users in `ps`: prefer the environment or .env.local
    #[arg(long, global = true, value_name = "TOKEN", value_parser = parse_secret)]
    pub(crate) token: Option<Secret>,

    /// Base URL of a running chat-api, for `stats` [default: http://127.0.0.1:3000]
    #[arg(long, global = true, value_name = "URL")]
    pub(crate) server: Option<String>,

    /// Write machine-readable JSON to stdout: one document, or one document per line for
    /// streams (`scan`, `stats --watch`)
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// Longest time any network call may take (for example 500ms, 5s)
    #[arg(long, global = true, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub(crate) timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    Ping(cmd::ping::Cmd),
    Get(cmd::get::Cmd),
    Set(cmd::set::Cmd),
    #[command(alias = "rm")]
    Del(cmd::del::Cmd),
    Ttl(cmd::ttl::Cmd),
    #[command(alias = "keys")]
    Scan(cmd::scan::Cmd),
    Invalidate(cmd::invalidate::Cmd),
    Flush(cmd::flush::Cmd),
    Stats(cmd::stats::Cmd),
    Doctor(cmd::doctor::Cmd),
    Latency(cmd::latency::Cmd),
}

/// The token flag, wrapped at once so that `Debug` of the parsed flags never shows it.
fn parse_secret(text: &str) -> Result<Secret, String> {
    Ok(Secret::new(text))
}

/// A duration: `30s`, `500ms`, `2m`, or a bare number of seconds (`1.5`).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let parsed = match text.trim().parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => {
            Duration::try_from_secs_f64(seconds).map_err(|err| err.to_string())?
        }
        Ok(_) => return Err(format!("{text:?} is not a valid duration")),
        Err(_) => humantime::parse_duration(text.trim())
            .map_err(|err| format!("{text:?} is not a duration like 30s, 500ms or 2m: {err}"))?,
    };
    if parsed.is_zero() {
        return Err("the duration must be greater than zero".into());
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn the_token_flag_never_shows_in_debug() {
        let cli = Cli::try_parse_from(["cachectl", "--token", "hunter2", "ping"]).unwrap();
        assert!(!format!("{cli:?}").contains("hunter2"));
        assert_eq!(cli.global.token.unwrap().expose(), "hunter2");
    }

    #[test]
    fn global_flags_go_after_the_subcommand_too() {
        let cli =
            Cli::try_parse_from(["cachectl", "get", "k", "--json", "--timeout", "2s"]).unwrap();
        assert!(cli.global.json);
        assert_eq!(cli.global.timeout, Duration::from_secs(2));
    }
}
