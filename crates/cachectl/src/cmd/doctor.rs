//! `cachectl doctor`: checks the configuration, the connection, and the cache's behaviour
//! end to end (basic commands, tags, compression, fallback), and says what to fix.
//!
//! Probe data lives under the `cachectl:probe:` key prefix and the `cachectl-probe` cache
//! namespace, expires within minutes, and is deleted when a check ends.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use cache_core::{
    Cache, CacheBackend as _, Codec, Namespace, TieredBackend, TieredConfig, TtlPolicy,
};
use cache_memory::{MemoryBackend, MemoryConfig};
use cache_upstash::{Redis, RetryPolicy, Secret, SetOptions, UpstashBackend, UpstashBackendConfig};
use clap::Args;
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    cmd::Context,
    config::{Setting, Settings},
    error::{Outcome, hint_for},
    output::{self, Style},
};

/// Prefix of the probe key of the basic-commands check.
const PROBE_KEY_PREFIX: &str = "cachectl:probe:";
/// Namespace of the cache-level probes (tags, compression).
const PROBE_NAMESPACE: &str = "cachectl-probe";
/// How long probe data may live if a check dies before cleaning up.
const PROBE_TTL: Duration = Duration::from_secs(60);
/// The first bytes of a compressed (framed) cache-core entry.
const FRAME_MAGIC: &[u8] = b"\x00CZ\x01";

/// Check configuration, connectivity and cache behaviour, and say what to fix
///
/// Runs each check in turn and prints pass or FAIL with details; for a failure, what to do about
/// it. Exit status 0 only if every check passes.
///
///   configuration  URL and token present and well-formed, and where each came from (the token
///                  is never shown)
///   connectivity   a PING round trip and its latency
///   basic commands SET, GET, PTTL and DEL of a probe key under cachectl:probe:
///   tags           a cache entry written through cache-core, invalidated by its tag, then read
///                  as a miss
///   compression    a large value is stored as a compressed frame and decodes back intact
///   fallback       a tiered cache whose Upstash tier is unreachable still answers writes and
///                  reads from memory within --timeout
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cachectl doctor\n  cachectl doctor --json | jq '.checks[] | select(.status != \"pass\")'"
)]
pub(crate) struct Cmd {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Pass,
    Fail,
    Skip,
}

/// One check's result.
#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    status: Status,
    /// What was found (one or more lines).
    detail: String,
    /// What to do, for a failure.
    fix: Option<String>,
    elapsed_ms: f64,
}

impl Check {
    fn skip(name: &'static str, why: &str) -> Check {
        Check {
            name,
            status: Status::Skip,
            detail: format!("not run: {why}"),
            fix: None,
            elapsed_ms: 0.0,
        }
    }
}

/// Runs one check: its detail on success; on failure the error, and its hint or `fix`.
async fn check(
    name: &'static str,
    fix: &str,
    body: impl Future<Output = anyhow::Result<String>>,
) -> Check {
    let started = Instant::now();
    let result = body.await;
    let elapsed_ms = output::ms_f64(started.elapsed());
    match result {
        Ok(detail) => Check {
            name,
            status: Status::Pass,
            detail,
            fix: None,
            elapsed_ms,
        },
        Err(err) => Check {
            name,
            status: Status::Fail,
            detail: format!("{err:#}"),
            fix: Some(hint_for(&err).unwrap_or_else(|| fix.to_owned())),
            elapsed_ms,
        },
    }
}

impl Cmd {
    pub(crate) async fn run(&self, ctx: &Context) -> anyhow::Result<Outcome> {
        let mut checks = Vec::new();
        let config = check("configuration", "set the URL and token", async {
            describe_config(&ctx.settings)
        })
        .await;
        let redis = if config.status == Status::Pass {
            ctx.redis().ok()
        } else {
            None
        };
        checks.push(config);
        match &redis {
            Some(redis) => {
                let connectivity = check(
                    "connectivity",
                    "check the URL and the network",
                    connectivity(ctx, redis),
                )
                .await;
                let connected = connectivity.status == Status::Pass;
                checks.push(connectivity);
                if connected {
                    checks.push(
                        check(
                            "basic commands",
                            "the server answers PING but not SET/GET/DEL: check that the token \
                             is not read-only and that the database is not full",
                            basic_commands(ctx, redis),
                        )
                        .await,
                    );
                    checks.push(
                        check(
                            "tags",
                            "tag invalidation needs EVAL (Lua scripts): check that the server \
                             allows scripting",
                            tags(ctx, redis),
                        )
                        .await,
                    );
                    checks.push(
                        check(
                            "compression",
                            "large values must round-trip as binary: check that nothing between \
                             here and Redis rewrites request bodies",
                            compression(ctx, redis),
                        )
                        .await,
                    );
                } else {
                    for name in ["basic commands", "tags", "compression"] {
                        checks.push(Check::skip(name, "no connection"));
                    }
                }
            }
            None => {
                for name in ["connectivity", "basic commands", "tags", "compression"] {
                    checks.push(Check::skip(name, "the configuration is incomplete"));
                }
            }
        }
        checks.push(
            check(
                "fallback",
                "the tiered cache did not fall back to memory in time: report this as a bug",
                fallback(ctx),
            )
            .await,
        );
        let ok = checks.iter().all(|c| c.status == Status::Pass);
        if ctx.out.is_json() {
            let source = |source: &crate::config::Source| json!({ "from": source.kind(), "variable": source.variable() });
            let settings = &ctx.settings;
            ctx.out.json_line(&json!({
                "ok": ok,
                "config": {
                    "url": settings.url.as_ref().map(|u| json!({ "value": u.value, "source": source(&u.source) })),
                    "token": settings.token.as_ref().map(|t| json!({ "value": "(redacted)", "source": source(&t.source) })),
                    "prefix": { "value": settings.prefix.value, "source": source(&settings.prefix.source) },
                },
                "checks": checks,
            }))?;
        } else {
            ctx.out.text(&render(&checks, ctx.out.style()))?;
        }
        Ok(if ok {
            Outcome::Success
        } else {
            Outcome::Failed
        })
    }
}

fn render(checks: &[Check], style: Style) -> String {
    let mut out = String::new();
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for check in checks {
        let label = match check.status {
            Status::Pass => style.good("pass"),
            Status::Fail => style.bad("FAIL"),
            Status::Skip => style.warn("skip"),
        };
        let indent = " ".repeat(width + 8);
        let mut lines = check.detail.lines();
        let first = lines.next().unwrap_or_default();
        out.push_str(&format!("{label}  {:width$}  {first}\n", check.name));
        for line in lines {
            out.push_str(&format!("{indent}{line}\n"));
        }
        if let Some(fix) = &check.fix {
            out.push_str(&format!("{indent}{} {fix}\n", style.bold("fix:")));
        }
    }
    let count = |status| checks.iter().filter(|c| c.status == status).count();
    let (passed, failed, skipped) = (
        count(Status::Pass),
        count(Status::Fail),
        count(Status::Skip),
    );
    let verdict = if failed + skipped == 0 {
        style.good("everything works")
    } else {
        style.bad(&format!("{failed} failed, {skipped} skipped"))
    };
    out.push_str(&format!(
        "\ndoctor: {passed} of {} checks passed; {verdict}\n",
        checks.len()
    ));
    out
}

/// Where the URL, token and prefix came from; fails if the client cannot be built.
fn describe_config(settings: &Settings) -> anyhow::Result<String> {
    let mut lines = Vec::new();
    for file in &settings.files {
        let state = match &file.status {
            Ok(Some(vars)) => format!("read, {} variables", vars.len()),
            Ok(None) => "not present".to_owned(),
            Err(err) => format!("unreadable: {err}"),
        };
        lines.push(format!("{}: {state}", file.path.display()));
    }
    match &settings.url {
        Some(url) => lines.insert(0, format!("URL {} from {}", url.value, url.source)),
        None => lines.insert(0, "URL: not set".to_owned()),
    }
    let token_line = match &settings.token {
        Some(Setting { value, source }) => format!(
            "token from {source}: {} characters (redacted)",
            value.expose().chars().count()
        ),
        None => "token: not set".to_owned(),
    };
    lines.insert(1, token_line);
    lines.insert(
        2,
        format!(
            "cache key prefix {} from {}",
            settings.prefix.value, settings.prefix.source
        ),
    );
    let found = lines.join("\n");
    settings.redis().map_err(|err| err.context(found.clone()))?;
    Ok(found)
}

async fn connectivity(ctx: &Context, redis: &Redis) -> anyhow::Result<String> {
    let started = Instant::now();
    ctx.bounded("PING", redis.ping()).await?;
    let first = started.elapsed();
    let started = Instant::now();
    let reply = ctx.bounded("PING", redis.ping()).await?;
    let second = started.elapsed();
    Ok(format!(
        "{reply} in {} (the first request, connecting, took {})",
        output::millis(second),
        output::millis(first)
    ))
}

fn probe_id() -> String {
    format!("{:016x}", fastrand::u64(..))
}

async fn basic_commands(ctx: &Context, redis: &Redis) -> anyhow::Result<String> {
    let key = format!("{PROBE_KEY_PREFIX}{}", probe_id());
    let result = async {
        let value = format!("cachectl doctor probe {}", probe_id());
        let ttl_ms = u64::try_from(PROBE_TTL.as_millis()).unwrap_or(u64::MAX);
        ctx.bounded(
            "SET probe",
            redis.set_with(key.as_str(), value.as_str(), SetOptions::new().px(ttl_ms)),
        )
        .await?;
        let read = ctx.bounded("GET probe", redis.get(key.as_str())).await?;
        anyhow::ensure!(
            read.as_deref() == Some(value.as_bytes()),
            "GET returned {:?} instead of the value just SET",
            read.as_deref().map(output::escape_bytes)
        );
        let pttl = ctx.bounded("PTTL probe", redis.pttl(key.as_str())).await?;
        anyhow::ensure!(
            pttl > 0 && pttl.unsigned_abs() <= ttl_ms,
            "PTTL returned {pttl}, expected 1..={ttl_ms} ms"
        );
        let deleted = ctx.bounded("DEL probe", redis.del([key.as_str()])).await?;
        anyhow::ensure!(deleted == 1, "DEL deleted {deleted} keys instead of 1");
        let gone = ctx.bounded("GET probe", redis.get(key.as_str())).await?;
        anyhow::ensure!(gone.is_none(), "the probe key is still there after DEL");
        Ok(format!(
            "SET (PX {ttl_ms}), GET, PTTL ({pttl} ms left), DEL and GET of {key}"
        ))
    }
    .await;
    if result.is_err() {
        // Best effort: the probe expires on its own anyway.
        let _ = tokio::time::timeout(ctx.timeout, redis.del([key.as_str()])).await;
    }
    result
}

/// A cache over `redis` whose tag stamps do not outlive the probe by much.
fn probe_cache(redis: &Redis) -> Cache {
    let config = UpstashBackendConfig::default().with_tag_retention(PROBE_TTL * 5);
    Cache::new(Arc::new(UpstashBackend::with_config(redis.clone(), config)))
}

async fn tags(ctx: &Context, redis: &Redis) -> anyhow::Result<String> {
    let cache = probe_cache(redis);
    let ns = Namespace::new(PROBE_NAMESPACE, 1)?;
    let id = probe_id();
    let tag = ns.tag("doctor", &[&id]);
    let key = ns.key("doctor", &[&id]).tagged(std::slice::from_ref(&tag));
    let policy = TtlPolicy::new(PROBE_TTL);
    let value = json!({ "probe": id });
    let result = async {
        ctx.bounded("cache set", cache.set(&key, &value, &policy))
            .await?;
        let before: Option<Value> = ctx.bounded("cache get", cache.get(&key)).await?;
        anyhow::ensure!(
            before.as_ref() == Some(&value),
            "the entry just written through the cache reads back as {before:?}"
        );
        ctx.bounded(
            "cache invalidate",
            cache.invalidate(std::slice::from_ref(&tag)),
        )
        .await?;
        let after: Option<Value> = ctx.bounded("cache get", cache.get(&key)).await?;
        anyhow::ensure!(
            after.is_none(),
            "the entry is still served after its tag was invalidated"
        );
        let stored = ctx.bounded("EXISTS", redis.exists([key.as_str()])).await?;
        Ok(format!(
            "wrote {key} tagged {tag},\nread it back, invalidated the tag (one request); the entry now reads as a miss{}",
            if stored == 1 {
                "\n(still stored, hidden by the tag's stamp until it expires)"
            } else {
                ""
            }
        ))
    }
    .await;
    let _ = tokio::time::timeout(ctx.timeout, redis.del([key.as_str(), tag.as_str()])).await;
    result
}

async fn compression(ctx: &Context, redis: &Redis) -> anyhow::Result<String> {
    let cache = probe_cache(redis);
    let ns = Namespace::new(PROBE_NAMESPACE, 1)?;
    let key = ns.key("doctor-large", &[&probe_id()]);
    let policy = TtlPolicy::new(PROBE_TTL);
    // A chat page's worth of messages: large and repetitive, as real pages are.
    let value = json!({
        "messages": (0..300).map(|i| json!({
            "id": format!("01J9Z3K7QX8V5M2N4P6R8T{i:04}"),
            "author": { "id": "01J9Z3K7QX8V5M2N4P6R8T0W1Y", "name": "doctor" },
            "content": "cachectl doctor checks that large values are compressed on the wire",
        })).collect::<Vec<_>>(),
    });
    let plain_len = serde_json::to_vec(&value)?.len();
    let result = async {
        ctx.bounded("cache set", cache.set(&key, &value, &policy)).await?;
        let stored = ctx
            .bounded("GET", redis.get(key.as_str()))
            .await?
            .ok_or_else(|| anyhow::anyhow!("the large entry is missing right after it was set"))?;
        anyhow::ensure!(
            stored.starts_with(FRAME_MAGIC),
            "a {} value was stored uncompressed ({} stored)",
            output::bytes(plain_len as u64),
            output::bytes(stored.len() as u64)
        );
        anyhow::ensure!(
            stored.len() < plain_len,
            "the compressed frame ({} B) is not smaller than the value ({plain_len} B)",
            stored.len()
        );
        let entry = Codec::default()
            .decode_entry(&stored)
            .map_err(|err| anyhow::anyhow!("the stored frame does not decode: {err}"))?;
        let decoded: Value = serde_json::from_slice(entry.value())?;
        anyhow::ensure!(decoded == value, "the stored frame decodes to a different value");
        let read: Option<Value> = ctx.bounded("cache get", cache.get(&key)).await?;
        anyhow::ensure!(read.as_ref() == Some(&value), "the cache reads back a different value");
        Ok(format!(
            "a {} value was stored as a {} compressed frame ({:.1}% of its size) and decoded back intact",
            output::bytes(plain_len as u64),
            output::bytes(stored.len() as u64),
            stored.len() as f64 * 100.0 / plain_len as f64
        ))
    }
    .await;
    let _ = tokio::time::timeout(ctx.timeout, redis.del([key.as_str()])).await;
    result
}

/// A tiered cache whose L2 is a socket that accepts connections and never answers (the worst
/// kind of outage: no quick "connection refused"). Writes, reads and invalidations must still
/// succeed from L1, all within `--timeout`.
async fn fallback(ctx: &Context) -> anyhow::Result<String> {
    let silent = std::net::TcpListener::bind("127.0.0.1:0")?;
    let silent_url = format!("http://{}", silent.local_addr()?);
    let l2_timeout =
        (ctx.timeout / 10).clamp(Duration::from_millis(50), Duration::from_millis(500));
    let unreachable = Redis::builder()
        .url(silent_url.as_str())
        .token(Secret::new("cachectl-doctor-unreachable"))
        .timeout(l2_timeout)
        .connect_timeout(l2_timeout)
        .retry(RetryPolicy::none())
        .build()?;
    let tiered = Arc::new(TieredBackend::new(
        Arc::new(MemoryBackend::new(MemoryConfig::with_max_bytes(
            1024 * 1024,
        ))),
        Arc::new(UpstashBackend::new(unreachable)),
        TieredConfig::default().with_l2_timeout(l2_timeout),
    ));
    let cache = Cache::new(tiered.clone());
    let ns = Namespace::new(PROBE_NAMESPACE, 1)?;
    let tag = ns.tag("doctor", &[&"fallback"]);
    let key = ns
        .key("doctor", &[&"fallback"])
        .tagged(std::slice::from_ref(&tag));
    let policy = TtlPolicy::new(PROBE_TTL);
    let started = Instant::now();
    let steps = async {
        cache.set(&key, &json!("v1"), &policy).await?;
        let first: Option<Value> = cache.get(&key).await?;
        anyhow::ensure!(
            first == Some(json!("v1")),
            "a write was not readable from memory: {first:?}"
        );
        cache.invalidate(std::slice::from_ref(&tag)).await?;
        let hidden: Option<Value> = cache.get(&key).await?;
        anyhow::ensure!(
            hidden.is_none(),
            "an invalidated entry was still served: {hidden:?}"
        );
        cache.set(&key, &json!("v2"), &policy).await?;
        let second: Option<Value> = cache.get(&key).await?;
        anyhow::ensure!(
            second == Some(json!("v2")),
            "a rewrite was not readable: {second:?}"
        );
        Ok(())
    };
    match tokio::time::timeout(ctx.timeout, steps).await {
        Ok(result) => result?,
        Err(_) => anyhow::bail!(
            "6 cache operations with Upstash unreachable took longer than {:?}",
            ctx.timeout
        ),
    }
    let elapsed = started.elapsed();
    drop(silent);
    let stats = tiered.stats();
    let l2 = stats.tiers.iter().find(|t| t.tier == "l2");
    let breaker = stats.breaker.map_or_else(
        || "unknown".to_owned(),
        |b| format!("{:?}", b.state).to_lowercase(),
    );
    Ok(format!(
        "with Upstash unreachable (a silent socket, L2 timeout {}), 6 writes, reads and\n\
         invalidations succeeded from memory in {}; L2 calls timed out: {}, skipped: {};\n\
         breaker {breaker}; invalidations queued for replay: {}",
        output::millis(l2_timeout),
        output::millis(elapsed),
        l2.map_or(0, |t| t.timeouts),
        l2.map_or(0, |t| t.skipped),
        stats.pending_invalidations
    ))
}
