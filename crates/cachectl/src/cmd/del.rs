//! `cachectl del`: deletes keys in one `DEL`.

use clap::Args;
use serde_json::json;

use crate::{cmd::Context, error::Outcome};

/// Delete keys
///
/// One DEL for all the keys; prints how many existed. Deleting a key that does not exist is not
/// an error. To make chat-api forget cached data, prefer `cachectl invalidate --tag`, which also
/// covers entries held in other instances' memory tier.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cachectl del greeting\n  cachectl del session:1 session:2 session:3"
)]
pub(crate) struct Cmd {
    /// The keys, exactly as stored
    #[arg(required = true, value_name = "KEY")]
    pub(crate) keys: Vec<String>,
}

impl Cmd {
    pub(crate) async fn run(&self, ctx: &Context) -> anyhow::Result<Outcome> {
        let redis = ctx.redis()?;
        let deleted = ctx
            .bounded("DEL", redis.del(self.keys.iter().map(String::as_str)))
            .await?;
        if ctx.out.is_json() {
            ctx.out.json_line(&json!({
                "requested": self.keys.len(),
                "deleted": deleted,
            }))?;
        } else {
            let noun = if self.keys.len() == 1 { "key" } else { "keys" };
            ctx.out.text(&format!(
                "deleted {deleted} of {} {noun}\n",
                self.keys.len()
            ))?;
        }
        Ok(Outcome::Success)
    }
}
