//! `cachectl ping`: one `PING` round trip, with its latency.

use std::time::Instant;

use clap::Args;
use serde_json::json;

use crate::{cmd::Context, error::Outcome, output};

/// Check that the REST endpoint answers, and how fast
///
/// Sends one PING and prints the reply with the round-trip time (which includes connecting, and
/// the TLS handshake for https). `cachectl latency` measures many round trips on one connection.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  cachectl ping\n  cachectl ping --json --timeout 1s")]
pub(crate) struct Cmd {}

impl Cmd {
    pub(crate) async fn run(&self, ctx: &Context) -> anyhow::Result<Outcome> {
        let redis = ctx.redis()?;
        let started = Instant::now();
        let reply = ctx.bounded("PING", redis.ping()).await?;
        let elapsed = started.elapsed();
        if ctx.out.is_json() {
            ctx.out.json_line(&json!({
                "url": redis.url(),
                "reply": reply,
                "latency_ms": output::ms_f64(elapsed),
            }))?;
        } else {
            let style = ctx.out.style();
            ctx.out.text(&format!(
                "{} from {} in {}\n",
                style.good(&reply),
                redis.url(),
                output::millis(elapsed)
            ))?;
        }
        Ok(Outcome::Success)
    }
}
