//! `cachectl stats`: what the backend holds (`DBSIZE`, `INFO memory`, `INFO keyspace`) and how
//! chat-api's cache is doing (its `/stats` document), as tables or JSON, once or `--watch`ed.

use std::{
    io::IsTerminal as _,
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use chat_stats::{BackplaneState, BreakerState, Stats};
use clap::Args;
use serde::Serialize;

use crate::{
    cli::parse_duration,
    cmd::Context,
    error::{Outcome, hint_for},
    metrics,
    output::{self, Style, Table, Tone},
};

/// chat-api's address when `--server` is not given (its `CHAT_ADDR` default).
const DEFAULT_SERVER: &str = "http://127.0.0.1:3000";

/// Show cache statistics: keys and memory from the backend, hit ratios and health from chat-api
///
/// From the backend (when a URL is configured): the number of keys (DBSIZE), memory use and the
/// keyspace (INFO, where the server offers it). From a running chat-api (--server, default
/// http://127.0.0.1:3000): per tier hits, misses and hit ratio, errors, timeouts, calls skipped by
/// the open breaker, entries, bytes, Upstash HTTP requests and billed commands; get_or_load hits,
/// loads and errors; the breaker state; the backplane between instances, when it is on; pending
/// invalidations (from its GET /stats). Without an
/// explicit --server, a chat-api that is not running is skipped with a note. With --json, one
/// document (one per line with --watch) whose "server" is chat-api's /stats document as served.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cachectl stats\n  cachectl stats --server http://127.0.0.1:3000 --watch\n  cachectl stats --watch 500ms --json"
)]
pub(crate) struct Cmd {
    /// Refresh every INTERVAL (default 2s) until interrupted
    #[arg(long, value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "2s",
          value_parser = parse_duration)]
    pub(crate) watch: Option<Duration>,
}

/// Keys and memory of the Redis behind the REST API.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BackendStats {
    pub(crate) url: String,
    pub(crate) keys: u64,
    /// `INFO memory`, when the server answers it.
    pub(crate) memory: Option<Memory>,
    /// `INFO keyspace`: one row per database.
    pub(crate) keyspace: Vec<KeyspaceRow>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Memory {
    pub(crate) used_bytes: Option<u64>,
    pub(crate) peak_bytes: Option<u64>,
    /// 0 means no limit.
    pub(crate) max_bytes: Option<u64>,
    pub(crate) policy: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct KeyspaceRow {
    pub(crate) db: String,
    pub(crate) keys: u64,
    pub(crate) expires: u64,
}

/// One refresh: each part either there, skipped (with why), or failed (with why).
#[derive(Debug, Serialize)]
struct Report {
    at: String,
    backend: Option<BackendStats>,
    backend_error: Option<String>,
    server_url: String,
    /// chat-api's `/stats` document, as served.
    server: Option<Stats>,
    server_error: Option<String>,
    #[serde(skip)]
    notes: Vec<String>,
    #[serde(skip)]
    failed: bool,
}

impl Cmd {
    pub(crate) async fn run(&self, ctx: &Context) -> anyhow::Result<Outcome> {
        let http = reqwest::Client::builder()
            .timeout(ctx.timeout)
            .connect_timeout(ctx.timeout.min(Duration::from_secs(2)))
            .build()
            .context("building the HTTP client")?;
        let Some(interval) = self.watch else {
            let report = gather(ctx, &http).await;
            show(ctx, &report, false)?;
            if report.backend.is_none() && report.server.is_none() {
                return Err(crate::error::Hinted::new(
                    "no statistics: neither the backend nor chat-api could be read",
                    "configure UPSTASH_REDIS_REST_URL/_TOKEN (or --url/--token) for the backend, \
                     and pass --server with chat-api's address",
                )
                .into());
            }
            return Ok(if report.failed {
                Outcome::Failed
            } else {
                Outcome::Success
            });
        };
        loop {
            let report = gather(ctx, &http).await;
            show(ctx, &report, true)?;
            tokio::time::sleep(interval).await;
        }
    }
}

async fn gather(ctx: &Context, http: &reqwest::Client) -> Report {
    let explicit_server = ctx.server.is_some();
    let server_url = ctx
        .server
        .clone()
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned())
        .trim_end_matches('/')
        .to_owned();
    let mut report = Report {
        at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        backend: None,
        backend_error: None,
        server_url: server_url.clone(),
        server: None,
        server_error: None,
        notes: Vec::new(),
        failed: false,
    };
    if ctx.settings.url.is_some() {
        match backend_stats(ctx).await {
            Ok(stats) => report.backend = Some(stats),
            Err(err) => {
                report.backend_error = Some(describe(&err));
                report.failed = true;
            }
        }
    } else {
        report.notes.push(
            "backend: no Upstash URL configured (set UPSTASH_REDIS_REST_URL or pass --url)".into(),
        );
    }
    match server_stats(http, &server_url).await {
        Ok(stats) => report.server = Some(stats),
        Err(err) if !explicit_server => report.notes.push(format!(
            "chat-api: nothing usable at {server_url} ({err:#}); pass --server with its address"
        )),
        Err(err) => {
            report.server_error = Some(describe(&err));
            report.failed = true;
        }
    }
    report
}

/// An error and its hint on one line, for a report that goes on.
fn describe(err: &anyhow::Error) -> String {
    match hint_for(err) {
        Some(hint) => format!("{err:#} (hint: {hint})"),
        None => format!("{err:#}"),
    }
}

async fn backend_stats(ctx: &Context) -> anyhow::Result<BackendStats> {
    let redis = ctx.redis()?;
    // One request for all three; INFO may be refused by some servers while DBSIZE works.
    let mut pipe = redis.pipeline();
    let dbsize = pipe.dbsize();
    let memory = pipe.info("memory");
    let keyspace = pipe.info("keyspace");
    let results = ctx.bounded("DBSIZE + INFO", pipe.exec()).await?;
    let keys = results.get(&dbsize).context("DBSIZE")?;
    let memory = results.get(&memory).ok().map(|text| {
        let fields = info_fields(&text);
        let number = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| v.parse().ok())
        };
        Memory {
            used_bytes: number("used_memory"),
            peak_bytes: number("used_memory_peak"),
            max_bytes: number("maxmemory"),
            policy: fields
                .iter()
                .find(|(k, _)| k == "maxmemory_policy")
                .map(|(_, v)| v.clone()),
        }
    });
    let keyspace = results
        .get(&keyspace)
        .map(|text| parse_keyspace(&text))
        .unwrap_or_default();
    Ok(BackendStats {
        url: redis.url().to_owned(),
        keys,
        memory,
        keyspace,
    })
}

async fn server_stats(http: &reqwest::Client, base: &str) -> anyhow::Result<Stats> {
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        anyhow::bail!("--server {base:?} must start with http:// or https://");
    }
    let url = format!("{base}{}", chat_stats::PATH);
    let response = http
        .get(&url)
        .send()
        .await
        .map_err(|err| anyhow::anyhow!("GET {url}: {}", reqwest_reason(&err)))?;
    let status = response.status();
    if !status.is_success() {
        anyhow::bail!("GET {url} answered {status}");
    }
    let body = response
        .bytes()
        .await
        .map_err(|err| anyhow::anyhow!("GET {url}: {}", reqwest_reason(&err)))?;
    metrics::decode(&body).with_context(|| format!("GET {url}"))
}

/// Why an HTTP call failed, in a few words.
fn reqwest_reason(err: &reqwest::Error) -> &'static str {
    if err.is_timeout() {
        "timed out (raise --timeout?)"
    } else if err.is_connect() {
        "could not connect (is chat-api running there?)"
    } else if err.is_body() || err.is_decode() {
        "the answer broke off"
    } else {
        "request failed"
    }
}

/// `key:value` lines of an INFO reply.
fn info_fields(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.trim().split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// `db0:keys=3,expires=1,avg_ttl=0` lines.
fn parse_keyspace(text: &str) -> Vec<KeyspaceRow> {
    info_fields(text)
        .into_iter()
        .filter(|(db, _)| db.starts_with("db"))
        .map(|(db, fields)| {
            let field = |name: &str| {
                fields
                    .split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .find(|(k, _)| *k == name)
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0)
            };
            KeyspaceRow {
                keys: field("keys"),
                expires: field("expires"),
                db,
            }
        })
        .collect()
}

fn show(ctx: &Context, report: &Report, watching: bool) -> anyhow::Result<()> {
    if ctx.out.is_json() {
        ctx.out.json_line(report)?;
        if !watching {
            for note in &report.notes {
                output::note(note);
            }
        }
        return Ok(());
    }
    let mut text = String::new();
    if watching && std::io::stdout().is_terminal() {
        // Clear the screen and go home, like `watch`.
        text.push_str("\x1b[2J\x1b[H");
    }
    text.push_str(&render(report, ctx.out.style()));
    ctx.out.text(&text)?;
    Ok(())
}

fn percent(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

fn optional(value: Option<u64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn render(report: &Report, style: Style) -> String {
    let mut out = String::new();
    out.push_str(&style.dim(&format!("cachectl stats at {}\n", report.at)));
    if let Some(backend) = &report.backend {
        out.push_str(&format!("\n{} {}\n", style.bold("backend"), backend.url));
        let mut table = Table::new(&["keys", "with ttl", "memory used", "peak", "max", "policy"]);
        let expires: u64 = backend.keyspace.iter().map(|row| row.expires).sum();
        let memory = backend.memory.as_ref();
        let size = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), output::bytes);
        table.plain_row([
            backend.keys.to_string(),
            if backend.keyspace.is_empty() {
                "-".to_owned()
            } else {
                expires.to_string()
            },
            size(memory.and_then(|m| m.used_bytes)),
            size(memory.and_then(|m| m.peak_bytes)),
            match memory.and_then(|m| m.max_bytes) {
                Some(0) => "unlimited".to_owned(),
                other => size(other),
            },
            memory
                .and_then(|m| m.policy.clone())
                .unwrap_or_else(|| "-".into()),
        ]);
        out.push_str(&table.render(style));
    }
    if let Some(err) = &report.backend_error {
        out.push_str(&format!("\n{} {}\n", style.bad("backend failed:"), err));
    }
    if let Some(server) = &report.server {
        out.push_str(&format!(
            "\n{} {}\n",
            style.bold("chat-api"),
            report.server_url
        ));
        let mut tiers = Table::new(&[
            "tier",
            "backend",
            "hits",
            "misses",
            "hit ratio",
            "errors",
            "timeouts",
            "skipped",
            "entries",
            "bytes",
            "requests",
            "commands",
        ]);
        for tier in &server.cache.tiers {
            let errors_tone = if tier.errors + tier.timeouts > 0 {
                Tone::Bad
            } else {
                Tone::Plain
            };
            tiers.row(vec![
                (tier.tier.clone(), Tone::Plain),
                (tier.backend.clone(), Tone::Plain),
                (tier.hits.to_string(), Tone::Plain),
                (tier.misses.to_string(), Tone::Plain),
                (percent(tier.hit_ratio()), Tone::Good),
                (tier.errors.to_string(), errors_tone),
                (tier.timeouts.to_string(), errors_tone),
                (tier.skipped.to_string(), Tone::Plain),
                (optional(tier.entries), Tone::Plain),
                (
                    tier.bytes.map_or_else(|| "-".to_owned(), output::bytes),
                    Tone::Plain,
                ),
                (optional(tier.requests), Tone::Plain),
                (optional(tier.commands), Tone::Plain),
            ]);
        }
        out.push_str(&tiers.render(style));
        let l = &server.cache.lookups;
        let mut summary = Table::new(&["get_or_load", ""]);
        summary.plain_row([
            "hits / misses".to_owned(),
            format!(
                "{} / {} ({} hit ratio)",
                l.hits,
                l.misses,
                percent(l.hit_ratio())
            ),
        ]);
        summary.plain_row([
            "loads".to_owned(),
            format!(
                "{} ({} failed, {} callers coalesced)",
                l.loads, l.load_errors, l.coalesced
            ),
        ]);
        summary.plain_row([
            "stale served".to_owned(),
            format!("{} (+{} fail-safe)", l.stale_served, l.failsafe_served),
        ]);
        summary.plain_row([
            "errors hidden".to_owned(),
            format!("{} backend, {} decode", l.backend_errors, l.decode_errors),
        ]);
        let breaker = server.cache.breaker.as_ref().map_or_else(
            || "none (not tiered)".to_owned(),
            |b| {
                format!(
                    "{} (opened {}x, closed {}x)",
                    b.state.as_str(),
                    b.opened,
                    b.closed
                )
            },
        );
        let tone = match server.cache.breaker.map(|b| b.state) {
            Some(BreakerState::Closed) | None => Tone::Plain,
            Some(BreakerState::Open | BreakerState::HalfOpen) => Tone::Bad,
        };
        summary.row(vec![("breaker".to_owned(), Tone::Plain), (breaker, tone)]);
        if let Some(b) = &server.backplane {
            let tone = if b.state == BackplaneState::Connected {
                Tone::Plain
            } else {
                Tone::Bad
            };
            let text = format!(
                "{} on {} ({} in, {} out, {} gaps, {} interruptions)",
                b.state.as_str(),
                b.transport,
                b.received,
                b.published,
                b.gaps,
                b.interruptions
            );
            summary.row(vec![("backplane".to_owned(), Tone::Plain), (text, tone)]);
        }
        summary.plain_row([
            "pending invalidations".to_owned(),
            server.cache.pending_invalidations.to_string(),
        ]);
        summary.plain_row([
            "http responses".to_owned(),
            format!(
                "{} ({} 5xx)",
                server.http.responses.total(),
                server.http.responses.server_error
            ),
        ]);
        out.push('\n');
        out.push_str(&summary.render(style));
    }
    if let Some(err) = &report.server_error {
        out.push_str(&format!("\n{} {}\n", style.bad("chat-api failed:"), err));
    }
    for note in &report.notes {
        out.push_str(&format!("\n{}\n", style.dim(note)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backplane_row_shows_when_chat_api_has_one() {
        let mut server = Stats::default();
        let report = |server: Stats| Report {
            at: String::new(),
            backend: None,
            backend_error: None,
            server_url: DEFAULT_SERVER.to_owned(),
            server: Some(server),
            server_error: None,
            notes: Vec::new(),
            failed: false,
        };
        let text = render(&report(server.clone()), Style::plain());
        assert!(!text.contains("backplane"), "{text}");
        server.backplane = Some(chat_stats::BackplaneStats {
            transport: "upstash".into(),
            state: BackplaneState::Disconnected,
            received: 7,
            gaps: 1,
            ..chat_stats::BackplaneStats::default()
        });
        let text = render(&report(server), Style::plain());
        assert!(
            text.contains("disconnected on upstash (7 in, 0 out, 1 gaps, 0 interruptions)"),
            "{text}"
        );
    }

    #[test]
    fn info_replies_parse() {
        let keyspace = parse_keyspace(
            "# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=0\r\ndb2:keys=7,expires=0,avg_ttl=0\r\n",
        );
        assert_eq!(keyspace.len(), 2);
        assert_eq!((keyspace[0].keys, keyspace[0].expires), (3, 1));
        let memory = info_fields("# Memory\r\nused_memory:1024\r\nmaxmemory_policy:noeviction\r\n");
        assert_eq!(memory[0], ("used_memory".to_owned(), "1024".to_owned()));
    }
}
