//! `cachectl ttl`: how long a key has left (`PTTL`).

use std::time::Duration;

use clap::Args;
use serde_json::json;

use crate::{cmd::Context, error::Outcome, output};

/// Show how long a key has left before it expires (exit 1 if it does not exist)
///
/// Prints the remaining time, or "no expiry" for a key without a TTL. Cache entries written by
/// chat-api always have one: their TTL plus grace, capped by the tag retention.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  cachectl ttl greeting\n  cachectl ttl greeting --json")]
pub(crate) struct Cmd {
    /// The key, exactly as stored
    pub(crate) key: String,
}

impl Cmd {
    pub(crate) async fn run(&self, ctx: &Context) -> anyhow::Result<Outcome> {
        let redis = ctx.redis()?;
        let pttl = ctx
            .bounded(&format!("PTTL {}", self.key), redis.pttl(self.key.as_str()))
            .await?;
        // PTTL: -2 the key does not exist, -1 it has no expiry, else milliseconds left.
        let (outcome, ttl_ms) = match pttl {
            -2 => (Outcome::NotFound, None),
            -1 => (Outcome::Success, None),
            ms => (Outcome::Success, Some(ms.max(0).unsigned_abs())),
        };
        if ctx.out.is_json() {
            ctx.out.json_line(&json!({
                "key": self.key,
                "found": outcome == Outcome::Success,
                "expires": ttl_ms.is_some(),
                "ttl_ms": ttl_ms,
            }))?;
        } else if outcome == Outcome::NotFound {
            output::note(&format!("cachectl: key {:?} not found", self.key));
        } else {
            let text = match ttl_ms {
                Some(ms) => format!(
                    "{} ({ms} ms)",
                    humantime::format_duration(Duration::from_secs(ms.div_ceil(1000)))
                ),
                None => "no expiry".to_owned(),
            };
            ctx.out.text(&format!("{text}\n"))?;
        }
        Ok(outcome)
    }
}
