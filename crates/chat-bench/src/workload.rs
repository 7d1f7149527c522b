//! The chat workload, shaped like a read-heavy chat client: per post, about 6.5 latest-page reads
//! (half revalidating with If-None-Match), 6 older-page reads, 0.3 `around` reads and 1.15
//! channel-list reads, from random users in channels picked by Zipf popularity.
//!
//! Closed loop (`--connections`, as fast as answers come) measures throughput; open loop
//! (`--rate`) sends on a fixed schedule and measures each latency from the moment the request was
//! *due*, so a slow server cannot hide its queueing (no coordinated omission).

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::sync::{Barrier, Mutex, Semaphore};

use crate::{
    api::Client,
    check::{CheckSummary, Checker},
    dataset::{Dataset, Zipf, content},
    stats::{OpSummary, RunStats},
};

/// `chat-bench run`.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The dataset written by `seed`.
    #[arg(long, default_value = "target/bench/dataset.json")]
    dataset: PathBuf,
    /// How long to run.
    #[arg(long, default_value = "30s", value_parser = crate::parse_duration)]
    duration: Duration,
    /// Closed loop: this many requests in flight, each sent when the previous one answered.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Open loop instead: this many requests per second on a fixed schedule.
    #[arg(long)]
    rate: Option<u32>,
    /// Most requests in flight in open-loop mode (past it, requests queue and their wait counts).
    #[arg(long, default_value_t = 2048)]
    max_in_flight: usize,
    /// Scenario name recorded in the summary.
    #[arg(long, default_value = "adhoc")]
    scenario: String,
    /// Only this operation (e.g. `latest_page`) instead of the mix.
    #[arg(long)]
    only: Option<String>,
    /// Where to write the JSON summary.
    #[arg(long, default_value = "target/bench/run.json")]
    out: PathBuf,
    /// Check every latest-page read against the posts acknowledged before it was sent (a read
    /// that starts after an acknowledged post must show it),
    /// and fail the run on any stale read or failed request.
    #[arg(long)]
    check: bool,
    /// Report the latency of requests sent in this window too, in seconds from the start
    /// (`10..20`: the Redis outage of `cargo xtask bench --scenario outage`).
    #[arg(long, value_parser = parse_window)]
    outage: Option<(u64, u64)>,
}

fn parse_window(text: &str) -> Result<(u64, u64), String> {
    let (from, to) = text
        .split_once("..")
        .ok_or_else(|| format!("expected START..END in seconds, got {text:?}"))?;
    let parse = |n: &str| {
        n.trim()
            .parse::<u64>()
            .map_err(|_| format!("bad number {n:?}"))
    };
    let (from, to) = (parse(from)?, parse(to)?);
    if from >= to {
        return Err(format!("an empty window {text:?}"));
    }
    Ok((from, to))
}

/// `chat-bench herd`.
#[derive(Debug, clap::Args)]
pub(crate) struct HerdArgs {
    /// The dataset written by `seed`.
    #[arg(long, default_value = "target/bench/dataset.json")]
    dataset: PathBuf,
    /// Concurrent requests for the just-invalidated page.
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// Where to write the JSON summary.
    #[arg(long, default_value = "target/bench/herd.json")]
    out: PathBuf,
}

/// The operations and their weights per post.
const MIX: &[(&str, f64)] = &[
    ("latest_page", 3.25),
    ("latest_page_revalidate", 3.25),
    ("older_page", 6.0),
    ("around_page", 0.3),
    ("channel_list", 1.15),
    ("post", 1.0),
];

#[derive(Debug, Serialize)]
struct Summary {
    scenario: String,
    mode: String,
    connections: Option<usize>,
    rate: Option<u32>,
    seconds: f64,
    total: OpSummary,
    ops: std::collections::BTreeMap<&'static str, OpSummary>,
    server: crate::metrics::Delta,
    /// With `--outage`: requests sent in the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    outage: Option<WindowSummary>,
    /// With `--check`: the stale-read checker's findings.
    #[serde(skip_serializing_if = "Option::is_none")]
    check: Option<CheckSummary>,
}

#[derive(Debug, Serialize)]
struct WindowSummary {
    from_s: u64,
    to_s: u64,
    latency: OpSummary,
}

#[derive(Debug, Serialize)]
struct HerdSummary {
    callers: usize,
    latency: OpSummary,
    server: crate::metrics::Delta,
}

struct World {
    dataset: Dataset,
    zipf: Zipf,
    mix: Vec<(&'static str, f64)>,
    etags: Mutex<HashMap<usize, String>>,
    checker: Option<Checker>,
    /// Requests sent in this window are also recorded apart.
    window: Option<(Instant, Instant)>,
}

impl World {
    fn in_window(&self, sent: Instant) -> bool {
        self.window
            .is_some_and(|(from, to)| (from..to).contains(&sent))
    }

    fn pick_op(&self, rng: &mut fastrand::Rng) -> &'static str {
        let total: f64 = self.mix.iter().map(|(_, w)| w).sum();
        let mut x = rng.f64() * total;
        for (op, w) in &self.mix {
            if x < *w {
                return op;
            }
            x -= w;
        }
        self.mix[0].0
    }

    /// A user and one of their channels, by channel popularity.
    fn pick(&self, rng: &mut fastrand::Rng) -> (usize, usize) {
        loop {
            let c = self.zipf.sample(rng);
            let members = &self.dataset.channels[c].members;
            if !members.is_empty() {
                return (members[rng.usize(..members.len())], c);
            }
        }
    }
}

async fn one_request(
    client: &Client,
    world: &World,
    op: &'static str,
    rng: &mut fastrand::Rng,
) -> Option<u16> {
    let (u, c) = world.pick(rng);
    let token = &world.dataset.users[u].token;
    let channel = &world.dataset.channels[c];
    let result = match op {
        "latest_page" | "latest_page_revalidate" => {
            let tag = if op == "latest_page_revalidate" {
                world.etags.lock().await.get(&c).cloned()
            } else {
                None
            };
            let sent = Instant::now();
            let checker = world.checker.as_ref();
            client
                .messages(
                    token,
                    &channel.id,
                    50,
                    None,
                    tag.as_deref(),
                    checker.is_some(),
                )
                .await
                .map(|page| {
                    let ids = page.ids.map(Arc::new);
                    if let Some(checker) = checker {
                        let seen = match (page.outcome.status, &ids, &tag) {
                            (200, Some(ids), _) => Some((ids.clone(), "200")),
                            (304, _, Some(tag)) => checker.page_of(tag).map(|ids| (ids, "304")),
                            _ => None,
                        };
                        if let Some((ids, how)) = seen {
                            checker.check_latest_page(c, sent, &ids, 50, how);
                        }
                    }
                    if let Some(etag) = page.etag {
                        if let (Some(checker), Some(ids)) = (checker, ids) {
                            checker.remember_etag(&etag, ids);
                        }
                        if let Ok(mut map) = world.etags.try_lock() {
                            map.insert(c, etag);
                        }
                    }
                    page.outcome
                })
        }
        "older_page" | "around_page" => {
            let cursor_name = if op == "older_page" {
                "before"
            } else {
                "around"
            };
            match channel
                .sample_messages
                .get(rng.usize(..channel.sample_messages.len().max(1)))
            {
                Some(id) => client
                    .messages(token, &channel.id, 50, Some((cursor_name, id)), None, false)
                    .await
                    .map(|page| page.outcome),
                None => client
                    .messages(token, &channel.id, 50, None, None, false)
                    .await
                    .map(|page| page.outcome),
            }
        }
        "channel_list" => client.my_channels(token).await,
        _ => client
            .post(token, &channel.id, &content(rng))
            .await
            .map(|(outcome, id)| {
                if let (Some(checker), Some(id)) = (&world.checker, id) {
                    checker.acknowledged(c, id, Instant::now());
                }
                outcome
            }),
    };
    result.ok().map(|o| o.status)
}

fn progress(duration: Duration, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(duration.as_secs());
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len}s")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

pub(crate) async fn run(client: &Client, args: &RunArgs, quiet: bool) -> anyhow::Result<()> {
    let dataset = Dataset::load(&args.dataset)?;
    let zipf = Zipf::new(dataset.channels.len(), dataset.zipf);
    let mix = match &args.only {
        Some(op) => {
            let (name, _) = MIX
                .iter()
                .find(|(name, _)| name == op)
                .ok_or_else(|| anyhow::anyhow!("unknown operation {op:?}"))?;
            vec![(*name, 1.0)]
        }
        None => MIX.to_vec(),
    };
    let before = crate::metrics::scrape_all(client).await;
    let bar = progress(args.duration, quiet);
    bar.set_message(args.scenario.clone());
    let started = Instant::now();
    let world = Arc::new(World {
        dataset,
        zipf,
        mix,
        etags: Mutex::new(HashMap::new()),
        checker: args.check.then(Checker::default),
        window: args.outage.map(|(from, to)| {
            (
                started + Duration::from_secs(from),
                started + Duration::from_secs(to),
            )
        }),
    });
    let deadline = started + args.duration;
    let ticker = {
        let bar = bar.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                bar.set_position(started.elapsed().as_secs());
            }
        })
    };

    let stats = match args.rate {
        None => closed_loop(client, &world, args.connections, deadline).await,
        Some(rate) => open_loop(client, &world, rate, args.max_in_flight, deadline).await,
    };
    ticker.abort();
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let after = crate::metrics::scrape_all(client).await;
    let summary = Summary {
        scenario: args.scenario.clone(),
        mode: if args.rate.is_some() {
            "open"
        } else {
            "closed"
        }
        .into(),
        connections: args.rate.is_none().then_some(args.connections),
        rate: args.rate,
        seconds,
        total: stats.total().summary(seconds),
        ops: stats
            .ops
            .iter()
            .map(|(op, s)| (*op, s.summary(seconds)))
            .collect(),
        server: crate::metrics::delta_all(&before, &after),
        outage: args.outage.map(|(from_s, to_s)| WindowSummary {
            from_s,
            to_s,
            latency: stats.window.summary((to_s - from_s) as f64),
        }),
        check: world.checker.as_ref().map(Checker::summary),
    };
    eprintln!(
        "{}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, errors {}",
        args.scenario,
        summary.total.rps,
        summary.total.p50_ms,
        summary.total.p99_ms,
        summary.total.errors
    );
    if let Some(window) = &summary.outage {
        eprintln!(
            "  {}..{} s: {} requests, p99 {:.2} ms, max {:.2} ms, errors {}",
            window.from_s,
            window.to_s,
            window.latency.requests,
            window.latency.p99_ms,
            window.latency.max_ms,
            window.latency.errors
        );
    }
    crate::write_json(&args.out, &summary)?;
    if let Some(check) = &summary.check {
        eprintln!(
            "  check: {} acknowledged posts, {} latest-page reads checked, {} stale",
            check.acknowledged_posts, check.checked_reads, check.stale_reads
        );
        for example in &check.examples {
            eprintln!("    stale: {example}");
        }
        check
            .verdict(summary.total.errors)
            .map_err(|err| err.context(format!("{}: the check failed", args.scenario)))?;
    }
    Ok(())
}

async fn closed_loop(
    client: &Client,
    world: &Arc<World>,
    connections: usize,
    deadline: Instant,
) -> RunStats {
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..connections.max(1) {
        let (client, world) = (client.clone(), world.clone());
        workers.spawn(async move {
            let mut rng = fastrand::Rng::with_seed(1000 + w as u64);
            let mut stats = RunStats::default();
            while Instant::now() < deadline {
                let op = world.pick_op(&mut rng);
                let sent = Instant::now();
                let status = one_request(&client, &world, op, &mut rng).await;
                let in_window = world.in_window(sent);
                stats.record(op, sent.elapsed().as_micros() as u64, status, in_window);
            }
            stats
        });
    }
    let mut all = RunStats::default();
    while let Some(done) = workers.join_next().await {
        if let Ok(stats) = done {
            all.merge(&stats);
        }
    }
    all
}

async fn open_loop(
    client: &Client,
    world: &Arc<World>,
    rate: u32,
    max_in_flight: usize,
    deadline: Instant,
) -> RunStats {
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let limit = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let all = Arc::new(std::sync::Mutex::new(RunStats::default()));
    let mut tasks = tokio::task::JoinSet::new();
    let start = tokio::time::Instant::now();
    let mut rng = fastrand::Rng::with_seed(7);
    for i in 0u64.. {
        let due = start + interval * u32::try_from(i).unwrap_or(u32::MAX);
        if due.into_std() >= deadline {
            break;
        }
        tokio::time::sleep_until(due).await;
        let op = world.pick_op(&mut rng);
        let (client, world, limit, all) =
            (client.clone(), world.clone(), limit.clone(), all.clone());
        let mut task_rng = fastrand::Rng::with_seed(rng.u64(..));
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let status = one_request(&client, &world, op, &mut task_rng).await;
            // Latency from when the request was due, not when it got sent.
            let micros = due.elapsed().as_micros() as u64;
            let in_window = world.in_window(due.into_std());
            all.lock()
                .expect("stats lock")
                .record(op, micros, status, in_window);
        });
        // Reap finished requests so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let stats = all.lock().expect("stats lock");
    stats.clone()
}

pub(crate) async fn herd(client: &Client, args: &HerdArgs) -> anyhow::Result<()> {
    let dataset = Dataset::load(&args.dataset)?;
    // The most popular channel, read by one of its members.
    let channel = &dataset.channels[0];
    let member = channel.members[0];
    let token = dataset.users[member].token.clone();
    // Warm the page, then invalidate it with a post.
    client
        .messages(&token, &channel.id, 50, None, None, false)
        .await?;
    let (posted, _) = client.post(&token, &channel.id, "thundering herd").await?;
    anyhow::ensure!(!posted.is_error(), "post failed with {}", posted.status);

    let before = crate::metrics::scrape(client).await;
    let barrier = Arc::new(Barrier::new(args.n));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.n {
        let (client, token, channel, barrier) = (
            client.clone(),
            token.clone(),
            channel.id.clone(),
            barrier.clone(),
        );
        tasks.spawn(async move {
            barrier.wait().await;
            let sent = Instant::now();
            let result = client
                .messages(&token, &channel, 50, None, None, false)
                .await;
            (
                sent.elapsed().as_micros() as u64,
                result.ok().map(|page| page.outcome.status),
            )
        });
    }
    let mut stats = RunStats::default();
    let started = Instant::now();
    while let Some(done) = tasks.join_next().await {
        let (micros, status) = done?;
        stats.record("latest_page", micros, status, false);
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = crate::metrics::scrape(client).await;
    let summary = HerdSummary {
        callers: args.n,
        latency: stats.total().summary(seconds),
        server: crate::metrics::delta(before.as_ref(), after.as_ref()),
    };
    eprintln!(
        "herd of {}: p50 {:.2} ms, p99 {:.2} ms, errors {}, database queries {}",
        args.n,
        summary.latency.p50_ms,
        summary.latency.p99_ms,
        summary.latency.errors,
        summary.server.db_queries
    );
    crate::write_json(&args.out, &summary)
}
