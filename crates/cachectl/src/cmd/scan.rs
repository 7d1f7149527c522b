//! `cachectl scan`: lists keys with `SCAN` cursors, one request per batch, never `KEYS`.

use clap::Args;
use futures_util::TryStreamExt as _;
use serde_json::json;

use cache_upstash::ScanOptions;

use crate::{cmd::Context, error::Outcome, output};

/// List keys, walking SCAN cursors (never KEYS, which blocks Redis on a big database)
///
/// Prints one key per line on stdout (non-UTF-8 bytes and line breaks escaped) and a count on
/// stderr. With --json, one JSON document per line: {"key": "…"}. As with any SCAN, a key
/// renamed during the walk may show up twice.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cachectl scan\n  cachectl scan --pattern 'chat:v3:channel-messages:*' --limit 50\n  cachectl scan --pattern 'session:*' --json | jq -r .key"
)]
pub(crate) struct Cmd {
    /// Only keys matching this glob (Redis MATCH: *, ?, [abc], \ to escape)
    #[arg(long, value_name = "GLOB")]
    pub(crate) pattern: Option<String>,

    /// Keys Redis examines per request (a hint: larger means fewer round trips)
    #[arg(long, value_name = "N", default_value_t = 500)]
    pub(crate) count: u64,

    /// Stop after this many keys
    #[arg(long, value_name = "N")]
    pub(crate) limit: Option<u64>,
}

impl Cmd {
    pub(crate) async fn run(&self, ctx: &Context) -> anyhow::Result<Outcome> {
        let redis = ctx.redis()?;
        let mut options = ScanOptions::new().count(self.count.max(1));
        if let Some(pattern) = &self.pattern {
            options = options.pattern(pattern.clone());
        }
        let keys = redis.scan_iter(options);
        futures_util::pin_mut!(keys);
        let mut listed = 0u64;
        let mut stopped = false;
        // Each batch is one request, bounded by --timeout; the walk as a whole is not.
        while let Some(key) = ctx.bounded("SCAN", keys.try_next()).await? {
            if self.limit.is_some_and(|limit| listed >= limit) {
                stopped = true;
                break;
            }
            listed += 1;
            if ctx.out.is_json() {
                ctx.out.json_line(&match std::str::from_utf8(&key) {
                    Ok(text) => json!({ "key": text }),
                    Err(_) => json!({
                        "key": output::escape_key(&key),
                        "key_base64": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &key),
                    }),
                })?;
            } else {
                ctx.out.text(&format!("{}\n", output::escape_key(&key)))?;
            }
        }
        if !ctx.out.is_json() {
            let noun = if listed == 1 { "key" } else { "keys" };
            let more = if stopped {
                " (stopped at --limit; there are more)"
            } else {
                ""
            };
            output::note(&format!("{listed} {noun}{more}"));
        }
        Ok(Outcome::Success)
    }
}
