//! `cachectl flush`: `FLUSHDB`, only after a confirmation typed on a terminal or `--yes`.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use anyhow::Context as _;
use clap::Args;
use serde_json::json;

use crate::{
    cmd::Context,
    error::{Outcome, bail_hint},
};

/// Delete every key of the database (FLUSHDB), after confirmation
///
/// Shows how many keys would go and asks you to type `yes`. Without a terminal to ask on (a
/// script, CI, a pipe) it refuses unless --yes is given. This deletes everything in the
/// database, not only the cache: to make chat-api reload its cache, `cachectl invalidate --tag
/// '*'` is enough.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cachectl flush\n  cachectl flush --yes --url http://127.0.0.1:8079"
)]
pub(crate) struct Cmd {
    /// Do not ask: flush at once (for scripts)
    #[arg(long)]
    pub(crate) yes: bool,
}

impl Cmd {
    pub(crate) async fn run(&self, ctx: &Context) -> anyhow::Result<Outcome> {
        let interactive = std::io::stdin().is_terminal();
        if !self.yes && !interactive {
            bail_hint!(
                "pass --yes to flush without being asked",
                "refusing to flush: no terminal to ask for confirmation on"
            );
        }
        let redis = ctx.redis()?;
        let before = ctx.bounded("DBSIZE", redis.dbsize()).await?;
        if !self.yes {
            let mut stderr = std::io::stderr().lock();
            write!(
                stderr,
                "Delete all {before} keys of the database at {}? This cannot be undone.\n\
                 Type yes to continue: ",
                redis.url()
            )?;
            stderr.flush()?;
            let mut answer = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut answer)
                .context("reading the confirmation")?;
            if answer.trim() != "yes" {
                bail_hint!(
                    "type yes to confirm, or pass --yes",
                    "flush aborted: nothing was deleted"
                );
            }
        }
        ctx.bounded("FLUSHDB", redis.flushdb()).await?;
        if ctx.out.is_json() {
            ctx.out
                .json_line(&json!({ "flushed": true, "keys_before": before }))?;
        } else {
            ctx.out.text(&format!(
                "{}: {before} keys deleted from {}\n",
                ctx.out.style().good("flushed"),
                redis.url()
            ))?;
        }
        Ok(Outcome::Success)
    }
}
