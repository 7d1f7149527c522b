//! `cachectl set`: stores bytes under a key, from the argument or stdin, with an optional TTL.

use std::{
    io::{IsTerminal as _, Read as _},
    time::Duration,
};

use anyhow::Context as _;
use bytes::Bytes;
use cache_upstash::SetOptions;
use clap::Args;
use serde_json::json;

use crate::{
    cli::parse_duration,
    cmd::Context,
    error::{Outcome, bail_hint},
    output,
};

/// Store a value under a key
///
/// The value is the argument, or stdin when it is `-` or left out (binary-safe: any bytes are
/// stored exactly). It is stored as is, not in the cache's entry format: chat-api's cache treats
/// such a value as foreign and reads it as a miss. Use this for your own keys and for testing.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cachectl set greeting hello\n  cachectl set session:1 '{\"user\":42}' --ttl 30m\n  cachectl set avatar - < avatar.png\n  echo -n hello | cachectl set greeting --ttl 10s"
)]
pub(crate) struct Cmd {
    /// The key
    pub(crate) key: String,

    /// The value; `-` or nothing reads it from stdin
    #[arg(value_name = "VALUE|-")]
    pub(crate) value: Option<String>,

    /// Expire the key after this long (30s, 5m, 1h); without it the key never expires
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) ttl: Option<Duration>,
}

impl Cmd {
    pub(crate) async fn run(&self, ctx: &Context) -> anyhow::Result<Outcome> {
        let value = self.value()?;
        let redis = ctx.redis()?;
        let len = value.len();
        let what = format!("SET {}", self.key);
        match self.ttl {
            Some(ttl) => {
                let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
                let options = SetOptions::new().px(millis);
                ctx.bounded(&what, redis.set_with(self.key.as_str(), value, options))
                    .await?;
            }
            None => {
                ctx.bounded(&what, redis.set(self.key.as_str(), value))
                    .await?
            }
        }
        if ctx.out.is_json() {
            ctx.out.json_line(&json!({
                "key": self.key,
                "stored": true,
                "bytes": len,
                "ttl_ms": self.ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            }))?;
        } else {
            let expiry = match self.ttl {
                Some(ttl) => format!(", expires in {}", humantime::format_duration(ttl)),
                None => String::new(),
            };
            ctx.out.text(&format!(
                "{} {} ({}{expiry})\n",
                ctx.out.style().good("OK"),
                self.key,
                output::bytes(len as u64)
            ))?;
        }
        Ok(Outcome::Success)
    }

    fn value(&self) -> anyhow::Result<Bytes> {
        match self.value.as_deref() {
            Some(value) if value != "-" => Ok(Bytes::from(value.to_owned())),
            explicit => {
                let stdin = std::io::stdin();
                if explicit.is_none() && stdin.is_terminal() {
                    bail_hint!(
                        "pass the value as an argument, or pipe it in: `… | cachectl set KEY -`",
                        "no value given for {:?}",
                        self.key
                    );
                }
                let mut buffer = Vec::new();
                stdin
                    .lock()
                    .read_to_end(&mut buffer)
                    .context("reading the value from stdin")?;
                Ok(Bytes::from(buffer))
            }
        }
    }
}
