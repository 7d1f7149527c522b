//! The end-to-end benchmark behind `cargo xtask bench` and the outage check `cargo xtask outage`.
//!
//! [`run`] builds `chat-api`, `upstash-gateway` and `chat-bench`, seeds a dataset once with
//! `chat-bench seed` ([`seed`]), runs each selected scenario against a fresh copy of it with
//! `chat-bench run` ([`run_scenario`]), then writes the report with `chat-bench report`
//! ([`report`]: `report.md`, `summary.json`, `latency.svg`, `throughput.svg`).
//!
//! Scenarios: `none` (no cache, the "before"), `memory`, `upstash`, `tiered`, the last two again
//! with 10 ms injected Upstash latency, open-loop latency runs, the thundering herd, the cached
//! latest page alone, the P2 comparison of it with a bare axum handler (rounds alternating the two
//! servers, which run on one core and the load generator on another: see `p2.rs`), the original
//! design, and a Redis outage under load.
//! The cluster scenarios run three chat-api instances on one PostgreSQL database (seeded once
//! through the API, copied per scenario as a template) and one gateway, the tiered cache with
//! its backplane, with chat-bench spreading requests over them and summing their counts.
//!
//! The outage scenarios run on a Redis that keeps its data on disk (append-only file, fsync on
//! every write): it is `kill -9`ed mid-run and restarted with the pages cached before the outage
//! still in it. Invalidations that failed during the outage must be replayed before L2 is read
//! again, or those pages are served stale, and the check fails. A Redis that restarted empty
//! would let the check pass even without replay.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;

use crate::{
    p2,
    util::{
        PgDatabase, Process, RedisServer, cargo, free_port, project_root, run_cmd, target_dir,
        wait_ready,
    },
};

const TOKEN: &str = "bench-token-not-a-secret";

/// The cargo profile the binaries are built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Profile {
    /// For measurements.
    Release,
    /// Where only correctness is checked (CI's outage run): a much shorter build.
    Debug,
}

impl Profile {
    /// The directory under the target directory.
    fn dir(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Debug => "debug",
        }
    }
}

/// Sizes and durations of one run.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) quick: bool,
    pub(crate) users: usize,
    pub(crate) channels: usize,
    pub(crate) per_user: usize,
    pub(crate) messages: usize,
    pub(crate) duration_secs: u64,
    pub(crate) connections: usize,
    pub(crate) open_rate: u32,
    /// P2: how many rounds, each one run against the bare handler and one against chat-api.
    pub(crate) p2_rounds: usize,
    /// Substrings of scenario names; empty: every scenario.
    pub(crate) scenarios: Vec<String>,
    pub(crate) profile: Profile,
    /// Under the target directory: `bench`, or `outage` for the outage check.
    pub(crate) out_dir: &'static str,
}

impl Settings {
    pub(crate) fn new(quick: bool) -> Self {
        if quick {
            Settings {
                quick,
                users: 100,
                channels: 40,
                per_user: 8,
                messages: 3_000,
                duration_secs: 4,
                connections: 16,
                open_rate: 300,
                p2_rounds: 2,
                scenarios: Vec::new(),
                profile: Profile::Release,
                out_dir: "bench",
            }
        } else {
            Settings {
                quick,
                users: 1_000,
                channels: 200,
                per_user: 20,
                messages: 100_000,
                duration_secs: 30,
                connections: 32,
                open_rate: 500,
                p2_rounds: 4,
                scenarios: Vec::new(),
                profile: Profile::Release,
                out_dir: "bench",
            }
        }
    }

    /// The outage check CI runs (`cargo xtask outage`): the outage scenarios only, on debug builds
    /// (nothing is measured for speed), with a small dataset and a 24 s run each.
    pub(crate) fn outage_check() -> Self {
        Settings {
            duration_secs: 8,
            scenarios: vec!["outage".into()],
            profile: Profile::Debug,
            out_dir: "outage",
            ..Settings::new(true)
        }
    }

    /// Every scenario at full size: the only run whose tables go into the docs.
    pub(crate) fn is_complete(&self) -> bool {
        !self.quick && self.scenarios.is_empty()
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "{}{} users, {} channels, ~{} channels per user, {} messages (Zipf 1.1); closed loop {} connections × {} s per scenario; open loop {} req/s; rate limits off; SQLite (cluster scenarios: PostgreSQL, {CLUSTER_SIZE} chat-api instances, requests round-robin); {} builds",
            if self.quick { "quick run: " } else { "" },
            self.users,
            self.channels,
            self.per_user,
            self.messages,
            self.connections,
            self.duration_secs,
            self.open_rate,
            self.profile.dir()
        )
    }
}

/// The server under test and its cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    /// chat-api with `CACHE_BACKEND=none|memory|upstash|tiered`.
    ChatApi(CacheBackend),
    /// The original design (`baseline/original-express`) with its `Map` cache.
    Original,
    /// The original design with `@upstash/redis` against the gateway.
    OriginalUpstash,
    /// [`CLUSTER_SIZE`] chat-api instances with this cache on one PostgreSQL database.
    Cluster(CacheBackend),
}

/// How many chat-api instances a cluster scenario runs.
const CLUSTER_SIZE: usize = 3;

/// chat-api's `CACHE_BACKEND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheBackend {
    None,
    Memory,
    Upstash,
    Tiered,
}

impl CacheBackend {
    fn env_value(self) -> &'static str {
        match self {
            CacheBackend::None => "none",
            CacheBackend::Memory => "memory",
            CacheBackend::Upstash => "upstash",
            CacheBackend::Tiered => "tiered",
        }
    }
}

impl Backend {
    fn needs_gateway(self) -> bool {
        matches!(
            self,
            Backend::ChatApi(CacheBackend::Upstash | CacheBackend::Tiered)
                | Backend::Cluster(CacheBackend::Upstash | CacheBackend::Tiered)
                | Backend::OriginalUpstash
        )
    }
}

/// One scenario: which server and cache, whether Upstash is slowed down, and how it is driven.
#[derive(Debug, Clone, Copy)]
struct Scenario {
    name: &'static str,
    backend: Backend,
    latency_ms: u64,
    kind: Kind,
    /// Drive only this operation instead of the mix.
    only: Option<&'static str>,
    /// The unmeasured warm-up run before a scenario: a third of its duration.
    warmup: bool,
}

const fn scenario(name: &'static str, backend: Backend, latency_ms: u64, kind: Kind) -> Scenario {
    Scenario {
        name,
        backend,
        latency_ms,
        kind,
        only: None,
        warmup: false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A fixed number of connections, each sending its next request when the last is answered.
    Closed,
    /// A fixed request rate, latency measured from when each request was due.
    Open,
    /// 1,000 concurrent requests for a just-invalidated page.
    Herd,
    /// Closed loop, with Redis killed and restarted (with its data) mid-run; every read checked.
    Outage,
    /// Closed loop, alternating between this backend and the bare handler over
    /// [`Settings::p2_rounds`] rounds, server and load generator on separate cores when the
    /// machine allows (`p2.rs`); its table is its own, not a row of the report.
    P2Rounds,
}

const NONE: Backend = Backend::ChatApi(CacheBackend::None);
const MEMORY: Backend = Backend::ChatApi(CacheBackend::Memory);
const UPSTASH: Backend = Backend::ChatApi(CacheBackend::Upstash);
const TIERED: Backend = Backend::ChatApi(CacheBackend::Tiered);

const SCENARIOS: &[Scenario] = &[
    scenario("01-none", NONE, 0, Kind::Closed),
    scenario("02-memory", MEMORY, 0, Kind::Closed),
    scenario("03-upstash", UPSTASH, 0, Kind::Closed),
    scenario("04-tiered", TIERED, 0, Kind::Closed),
    scenario("05-upstash-10ms", UPSTASH, 10, Kind::Closed),
    scenario("06-tiered-10ms", TIERED, 10, Kind::Closed),
    scenario("07-none-open", NONE, 0, Kind::Open),
    scenario("08-tiered-10ms-open", TIERED, 10, Kind::Open),
    scenario("09-herd-tiered", TIERED, 0, Kind::Herd),
    scenario("10-outage-tiered", TIERED, 0, Kind::Outage),
    scenario("13-outage-upstash", UPSTASH, 0, Kind::Outage),
    // The cached latest page alone, next to the original design's below (P3), on shared cores
    // like every row of the report.
    Scenario {
        only: Some("latest_page"),
        ..scenario("11-latest-page-memory", MEMORY, 0, Kind::Closed)
    },
    // P2: the same against a bare axum handler with a body of the same size, measured apart.
    Scenario {
        only: Some("latest_page"),
        ..scenario("12-p2-latest-page-vs-bare-axum", MEMORY, 0, Kind::P2Rounds)
    },
    // The original design (Express + Map cache, or + @upstash/redis with key-tracking sets),
    // re-created in `baseline/original-express`, on the same database and workload.
    scenario("14-original-memory", Backend::Original, 0, Kind::Closed),
    Scenario {
        only: Some("latest_page"),
        ..scenario(
            "15-latest-page-original",
            Backend::Original,
            0,
            Kind::Closed,
        )
    },
    scenario(
        "16-original-upstash",
        Backend::OriginalUpstash,
        0,
        Kind::Closed,
    ),
    // Scale-out: several instances on PostgreSQL, the tiered cache kept coherent by the
    // backplane, next to the original design above (Upstash cost, latest-page latency).
    scenario(
        "17-cluster-tiered",
        Backend::Cluster(CacheBackend::Tiered),
        0,
        Kind::Closed,
    ),
    scenario(
        "18-cluster-tiered-10ms",
        Backend::Cluster(CacheBackend::Tiered),
        10,
        Kind::Closed,
    ),
];

pub(crate) struct Bins {
    pub(crate) chat_api: PathBuf,
    pub(crate) bare_page: PathBuf,
    pub(crate) gateway: PathBuf,
    pub(crate) bench: PathBuf,
}

/// `chat-api/examples/bare_page` through `launch` (the binary itself, or a wrapper such as
/// `taskset` that executes it): a fixed body of `body_bytes` on the latest-page route.
pub(crate) fn start_bare_page(
    mut launch: Command,
    body_bytes: usize,
) -> anyhow::Result<(Process, u16)> {
    let port = free_port()?;
    let process = Process::spawn(
        "bare_page",
        launch
            .env("CHAT_ADDR", format!("127.0.0.1:{port}"))
            .env("BODY_BYTES", body_bytes.to_string())
            .stderr(Stdio::null()),
    )?;
    wait_ready("bare_page", port, "/health")?;
    Ok((process, port))
}

fn start_chat_api(
    bins: &Bins,
    database_url: &str,
    backend: CacheBackend,
    gateway_port: Option<u16>,
) -> anyhow::Result<(Process, u16)> {
    start_chat_api_with(
        Command::new(&bins.chat_api),
        database_url,
        backend,
        gateway_port,
    )
}

/// chat-api through `launch` (the binary itself, or a wrapper such as `taskset` that executes it).
pub(crate) fn start_chat_api_with(
    mut cmd: Command,
    database_url: &str,
    backend: CacheBackend,
    gateway_port: Option<u16>,
) -> anyhow::Result<(Process, u16)> {
    let port = free_port()?;
    cmd.current_dir(project_root())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CHAT_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", database_url)
        .env("CACHE_BACKEND", backend.env_value())
        .env("RATE_LIMIT", "off")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    if let Some(gp) = gateway_port {
        cmd.env("UPSTASH_REDIS_REST_URL", format!("http://127.0.0.1:{gp}"))
            .env("UPSTASH_REDIS_REST_TOKEN", TOKEN);
    }
    let process = Process::spawn("chat-api", &mut cmd)?;
    wait_ready("chat-api", port, "/health")?;
    Ok((process, port))
}

/// The original design's server (`baseline/original-express`, Node.js) on the same database;
/// with a gateway port it caches in Upstash through `@upstash/redis`, else in a `Map`.
fn start_original(db: &Path, gateway_port: Option<u16>) -> anyhow::Result<(Process, u16)> {
    let dir = project_root().join("baseline").join("original-express");
    if !dir.join("node_modules").is_dir() {
        let mut install = Command::new("npm");
        install
            .current_dir(&dir)
            .args(["ci", "--no-audit", "--no-fund"]);
        run_cmd(install)
            .context("installing the original design's packages (needs node and npm)")?;
    }
    let port = free_port()?;
    let mut cmd = Command::new("node");
    cmd.current_dir(&dir)
        .arg("server.js")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CHAT_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", format!("sqlite://{}", db.display()))
        .stdout(Stdio::null());
    if let Some(gp) = gateway_port {
        cmd.env("UPSTASH_REDIS_REST_URL", format!("http://127.0.0.1:{gp}"))
            .env("UPSTASH_REDIS_REST_TOKEN", TOKEN);
    }
    let process = Process::spawn("original-express", &mut cmd)?;
    wait_ready("original-express", port, "/health")?;
    Ok((process, port))
}

fn start_gateway(
    bins: &Bins,
    redis: &RedisServer,
    latency_ms: u64,
) -> anyhow::Result<(Process, u16)> {
    let port = free_port()?;
    let process = Process::spawn(
        "upstash-gateway",
        Command::new(&bins.gateway)
            .env_clear()
            .env("UPSTASH_GATEWAY_TOKEN", TOKEN)
            .env("RUST_LOG", "warn")
            .args([
                "--redis",
                &redis.url(),
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--latency-ms",
                &latency_ms.to_string(),
                "--redis-timeout-ms",
                "2000",
            ])
            .stdout(Stdio::null()),
    )?;
    wait_ready("upstash-gateway", port, "/__gateway/health")?;
    Ok((process, port))
}

pub(crate) fn sqlite_url(db: &Path) -> String {
    format!("sqlite://{}", db.display())
}

/// A SQLite database's files: the database, its write-ahead log and shared memory.
fn db_files(db: &Path) -> impl Iterator<Item = PathBuf> + '_ {
    ["", "-wal", "-shm"]
        .into_iter()
        .map(move |suffix| PathBuf::from(format!("{}{suffix}", db.display())))
}

fn remove_db(db: &Path) {
    for file in db_files(db) {
        let _ = std::fs::remove_file(file);
    }
}

pub(crate) fn copy_db(from: &Path, to: &Path) -> anyhow::Result<()> {
    remove_db(to);
    for (src, dst) in db_files(from).zip(db_files(to)) {
        if src.exists() {
            std::fs::copy(&src, &dst).with_context(|| format!("copying {}", src.display()))?;
        }
    }
    Ok(())
}

/// After an outage run: every channel's latest page, as the cached server serves it, equals the
/// page of a chat-api without a cache on the same database.
fn compare_with_database(bins: &Bins, db: &Path, port: u16, dataset: &Path) -> anyhow::Result<()> {
    let (truth, truth_port) = start_chat_api(bins, &sqlite_url(db), CacheBackend::None, None)?;
    let mut compare = Command::new(&bins.bench);
    compare
        .args(["--url", &format!("http://127.0.0.1:{port}"), "compare"])
        .args(["--against", &format!("http://127.0.0.1:{truth_port}")])
        .arg("--dataset")
        .arg(dataset);
    let outcome = run_cmd(compare);
    truth.stop();
    outcome
}

pub(crate) fn machine() -> String {
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!(
        "{cores} cores, {cpu}, {mem_gib:.0} GiB RAM, {} {}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

/// Today's date (UTC) as `YYYY-MM-DD`, from the system clock.
pub(crate) fn today() -> String {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// The short commit hash, marked when the working tree has uncommitted changes (the numbers
/// then belong to no commit).
pub(crate) fn commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(project_root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
    };
    let Some(hash) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown".into();
    };
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|s| !s.trim().is_empty());
    format!(
        "{}{}",
        hash.trim(),
        if dirty {
            " (with uncommitted changes)"
        } else {
            ""
        }
    )
}

/// `cargo xtask outage [--scenario NAME]`: the outage scenarios (or those whose name contains
/// NAME) on debug builds.
pub(crate) fn outage(args: &[String]) -> anyhow::Result<()> {
    let mut settings = Settings::outage_check();
    match args {
        [] => {}
        [flag, name] if flag == "--scenario" => {
            settings.scenarios = vec![format!("outage-{name}")];
        }
        _ => anyhow::bail!("usage: cargo xtask outage [--scenario tiered|upstash]"),
    }
    run(&settings)
}

/// What [`seed`] made: the database every scenario copies and what `chat-bench` knows of it.
pub(crate) struct Seeded {
    pub(crate) db: PathBuf,
    pub(crate) dataset: PathBuf,
    /// The size of the busiest channel's latest page, for the bare handler.
    pub(crate) page_bytes: usize,
}

/// The PostgreSQL copy of the dataset for the cluster scenarios: a template database, seeded
/// through the API like the SQLite one, and its own dataset file (ids and tokens differ).
struct PgSeeded {
    template: PgDatabase,
    dataset: PathBuf,
}

/// Runs the selected scenarios and writes the report; fails on the first failing scenario.
pub(crate) fn run(settings: &Settings) -> anyhow::Result<()> {
    let selected = select(settings)?;
    let out = target_dir().join(settings.out_dir);
    let scenarios_dir = out.join("scenarios");
    let _ = std::fs::remove_dir_all(&scenarios_dir);
    // An earlier run's outputs must not pass for this one's when this one makes none.
    let _ = std::fs::remove_dir_all(out.join(p2::RUNS_DIR));
    for file in [
        "report.md",
        "summary.json",
        "latency.svg",
        "throughput.svg",
        p2::TABLE_FILE,
    ] {
        let _ = std::fs::remove_file(out.join(file));
    }
    std::fs::create_dir_all(out.join("db"))?;
    std::fs::create_dir_all(&scenarios_dir)?;

    let bins = build(settings.profile)?;
    let seeded = seed(&bins, settings, &out)?;
    let pg = if selected
        .iter()
        .any(|s| matches!(s.backend, Backend::Cluster(_)))
    {
        Some(seed_postgres(&bins, settings, &out)?)
    } else {
        None
    };
    // Shared by the scenarios that do not break it; flushed before each.
    let mut shared_redis: Option<RedisServer> = None;
    for (i, scenario) in selected.iter().enumerate() {
        eprintln!(
            "==> scenario {}/{}: {}",
            i + 1,
            selected.len(),
            scenario.name
        );
        let outcome = match (scenario.kind, scenario.backend, scenario.only) {
            (Kind::P2Rounds, Backend::ChatApi(cache), Some(operation)) => p2::run(
                settings,
                &bins,
                &out,
                &seeded,
                (scenario.name, cache, operation),
            ),
            (Kind::P2Rounds, ..) => Err(anyhow::anyhow!(
                "a P2 scenario needs a chat-api backend and one operation"
            )),
            _ => run_scenario(
                settings,
                &bins,
                &out,
                (&seeded, pg.as_ref()),
                &mut shared_redis,
                scenario,
            ),
        };
        outcome.with_context(|| format!("scenario {}", scenario.name))?;
    }
    drop(shared_redis);
    // P2 writes its own table; the report is of the other scenarios' summaries.
    if selected.iter().any(|s| s.kind != Kind::P2Rounds) {
        report(&bins, settings, &out)?;
    }
    Ok(())
}

fn select(settings: &Settings) -> anyhow::Result<Vec<&'static Scenario>> {
    let selected: Vec<&Scenario> = SCENARIOS
        .iter()
        .filter(|s| {
            settings.scenarios.is_empty() || settings.scenarios.iter().any(|n| s.name.contains(n))
        })
        .collect();
    anyhow::ensure!(
        !selected.is_empty(),
        "no scenario matches {:?}",
        settings.scenarios
    );
    Ok(selected)
}

fn build(profile: Profile) -> anyhow::Result<Bins> {
    eprintln!("==> building {} binaries", profile.dir());
    let mut build = cargo();
    build.args(["build", "--profile"]).arg(match profile {
        Profile::Release => "release",
        Profile::Debug => "dev",
    });
    build.args([
        "-p",
        "chat-api",
        "-p",
        "upstash-gateway",
        "-p",
        "chat-bench",
    ]);
    run_cmd(build)?;
    if profile == Profile::Release {
        let mut build = cargo();
        build.args([
            "build",
            "--release",
            "-p",
            "chat-api",
            "--example",
            "bare_page",
        ]);
        run_cmd(build)?;
    }
    let bin_dir = target_dir().join(profile.dir());
    Ok(Bins {
        chat_api: bin_dir.join("chat-api"),
        bare_page: bin_dir.join("examples/bare_page"),
        gateway: bin_dir.join("upstash-gateway"),
        bench: bin_dir.join("chat-bench"),
    })
}

/// Seeds the dataset once through the API (`chat-bench seed`); every scenario starts from a copy.
fn seed(bins: &Bins, settings: &Settings, out: &Path) -> anyhow::Result<Seeded> {
    let db = out.join("db/seed.db");
    remove_db(&db);
    let dataset = out.join("dataset.json");
    eprintln!("==> seeding: {}", settings.describe());
    let (api, port) = start_chat_api(bins, &sqlite_url(&db), CacheBackend::Memory, None)?;
    let url = format!("http://127.0.0.1:{port}");
    let mut seed = Command::new(&bins.bench);
    seed.args(["--url", &url, "seed"])
        .args(["--users", &settings.users.to_string()])
        .args(["--channels", &settings.channels.to_string()])
        .args(["--per-user", &settings.per_user.to_string()])
        .args(["--messages", &settings.messages.to_string()])
        .arg("--out")
        .arg(&dataset);
    run_cmd(seed)?;
    let output = Command::new(&bins.bench)
        .args(["--url", &url, "page-size", "--dataset"])
        .arg(&dataset)
        .output()
        .context("measuring the latest page")?;
    anyhow::ensure!(
        output.status.success(),
        "chat-bench page-size failed with {}",
        output.status
    );
    let page_bytes = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .context("chat-bench page-size printed no byte count")?;
    eprintln!("    latest page of the busiest channel: {page_bytes} bytes");
    api.stop();
    Ok(Seeded {
        db,
        dataset,
        page_bytes,
    })
}

/// Seeds a PostgreSQL template database through the API (`chat-bench seed`, the same settings
/// as the SQLite seed) for the cluster scenarios.
fn seed_postgres(bins: &Bins, settings: &Settings, out: &Path) -> anyhow::Result<PgSeeded> {
    let template = PgDatabase::create("xtask_bench_seed", None)?;
    let dataset = out.join("dataset-postgres.json");
    eprintln!(
        "==> seeding PostgreSQL ({}) for the cluster scenarios",
        template.name
    );
    let (api, port) = start_chat_api(bins, &template.url, CacheBackend::Memory, None)?;
    let mut seed = Command::new(&bins.bench);
    seed.args(["--url", &format!("http://127.0.0.1:{port}"), "seed"])
        .args(["--users", &settings.users.to_string()])
        .args(["--channels", &settings.channels.to_string()])
        .args(["--per-user", &settings.per_user.to_string()])
        .args(["--messages", &settings.messages.to_string()])
        .arg("--out")
        .arg(&dataset);
    let outcome = run_cmd(seed);
    // A template must have no connections when it is copied.
    api.stop();
    outcome?;
    Ok(PgSeeded { template, dataset })
}

/// Starts [`CLUSTER_SIZE`] chat-api instances on a fresh copy of the PostgreSQL template; returns
/// them, the database (dropped after the scenario) and their comma-separated URLs.
fn start_cluster(
    bins: &Bins,
    pg: &PgSeeded,
    cache: CacheBackend,
    gateway_port: Option<u16>,
) -> anyhow::Result<(Vec<Process>, PgDatabase, String)> {
    let db = PgDatabase::create("xtask_bench", Some(&pg.template))?;
    let mut processes = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..CLUSTER_SIZE {
        let (process, port) = start_chat_api(bins, &db.url, cache, gateway_port)?;
        processes.push(process);
        urls.push(format!("http://127.0.0.1:{port}"));
    }
    Ok((processes, db, urls.join(",")))
}

/// Runs one scenario on a fresh copy of the seeded database; its summary lands in
/// `<out>/scenarios/<name>.json`.
fn run_scenario(
    settings: &Settings,
    bins: &Bins,
    out: &Path,
    (seeded, pg): (&Seeded, Option<&PgSeeded>),
    shared_redis: &mut Option<RedisServer>,
    scenario: &Scenario,
) -> anyhow::Result<()> {
    let db = out.join(format!("db/{}.db", scenario.name));
    copy_db(&seeded.db, &db)?;
    // The outage scenarios kill their Redis, so each gets its own, persistent one.
    let mut own_redis = None;
    let redis = if scenario.kind == Kind::Outage {
        own_redis.insert(RedisServer::persistent(
            &out.join("redis").join(scenario.name),
        )?)
    } else {
        let redis = match shared_redis {
            Some(redis) => redis,
            None => shared_redis.insert(RedisServer::ephemeral()?),
        };
        redis.command(&["FLUSHALL"])?;
        redis
    };
    let gateway = scenario
        .backend
        .needs_gateway()
        .then(|| start_gateway(bins, redis, scenario.latency_ms))
        .transpose()?;
    let gateway_port = gateway.as_ref().map(|g| g.1);
    let mut servers = Vec::new();
    let mut cluster_db = None;
    let mut dataset = seeded.dataset.as_path();
    let (url, port) = match scenario.backend {
        Backend::Cluster(cache) => {
            let pg = pg.context("a cluster scenario without the PostgreSQL seed")?;
            let (processes, db, urls) = start_cluster(bins, pg, cache, gateway_port)?;
            servers = processes;
            cluster_db = Some(db);
            dataset = pg.dataset.as_path();
            (urls, 0)
        }
        backend => {
            let (server, port) = match backend {
                Backend::ChatApi(cache) => {
                    start_chat_api(bins, &sqlite_url(&db), cache, gateway_port)?
                }
                _ => start_original(&db, gateway_port)?,
            };
            servers.push(server);
            (format!("http://127.0.0.1:{port}"), port)
        }
    };

    if matches!(scenario.kind, Kind::Closed | Kind::Open) {
        // Steady state, not a cold start: an unmeasured third of a run first (the same load),
        // so caches hold their working set, for the original design as for chat-api.
        let warmup = Scenario {
            name: "warmup",
            warmup: true,
            ..*scenario
        };
        run_cmd(bench_command(settings, bins, out, dataset, &warmup, &url))?;
    }
    let bench = bench_command(settings, bins, out, dataset, scenario, &url);
    if scenario.kind == Kind::Outage {
        outage_under_load(bench, redis, settings.duration_secs)?;
        compare_with_database(bins, &db, port, &seeded.dataset)?;
    } else {
        run_cmd(bench)?;
    }
    for server in servers {
        server.stop();
    }
    drop(cluster_db);
    if let Some((gateway, _)) = gateway {
        gateway.stop();
    }
    drop(own_redis);
    Ok(())
}

/// The `chat-bench` command line of one scenario against the server on `port`.
fn bench_command(
    settings: &Settings,
    bins: &Bins,
    out: &Path,
    dataset: &Path,
    scenario: &Scenario,
    url: &str,
) -> Command {
    let mut bench = Command::new(&bins.bench);
    bench.args(["--url", url]);
    let d = settings.duration_secs;
    match scenario.kind {
        Kind::Herd => {
            bench.args(["herd", "--n", "1000"]);
        }
        Kind::Open => {
            bench.args(["run", "--rate", &settings.open_rate.to_string()]);
        }
        Kind::Closed | Kind::Outage | Kind::P2Rounds => {
            bench.args(["run", "--connections", &settings.connections.to_string()]);
        }
    }
    if let Some(op) = scenario.only {
        bench.args(["--only", op]);
    }
    if scenario.kind != Kind::Herd {
        let duration = if scenario.kind == Kind::Outage {
            3 * d
        } else if scenario.warmup {
            (d / 3).max(1)
        } else {
            d
        };
        bench
            .args(["--duration", &format!("{duration}s")])
            .args(["--scenario", scenario.name]);
    }
    // A warm-up's summary is not a row of the report: it goes beside the scenarios' summaries.
    let summaries = if scenario.warmup {
        "warmup"
    } else {
        "scenarios"
    };
    bench
        .arg("--dataset")
        .arg(dataset)
        .arg("--out")
        .arg(out.join(summaries).join(format!("{}.json", scenario.name)));

    if scenario.kind == Kind::Outage {
        // `--check` holds every latest-page read to the posts acknowledged before it was sent
        // and fails on any stale read or failed request.
        bench.args(["--check", "--outage", &format!("{d}..{}", 2 * d)]);
    }
    bench
}

/// Runs `bench` (3 × `d` seconds) with `redis` killed (`kill -9`) after `d` seconds and restarted
/// with its data after `2 d`; fails if chat-bench does.
fn outage_under_load(mut bench: Command, redis: &mut RedisServer, d: u64) -> anyhow::Result<()> {
    eprintln!("$ {bench:?}");
    let mut child = Process::spawn("chat-bench", &mut bench)?;
    // Fault injection on a schedule, not synchronisation: the window is the run's.
    thread::sleep(Duration::from_secs(d));
    eprintln!("    killing redis-server (kill -9; its data stays on disk)");
    redis.kill();
    thread::sleep(Duration::from_secs(d));
    eprintln!("    restarting redis-server with its data");
    redis.restart()?;
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "chat-bench run --check failed ({status})");
    Ok(())
}

/// `chat-bench report`: the tables of this run, headed by machine, commit, date and settings.
fn report(bins: &Bins, settings: &Settings, out: &Path) -> anyhow::Result<()> {
    let mut report = Command::new(&bins.bench);
    report.args(["report", "--dir"]).arg(out).args([
        "--machine",
        &machine(),
        "--commit",
        &commit(),
        "--date",
        &today(),
        "--settings",
        &settings.describe(),
    ]);
    run_cmd(report)?;
    eprintln!("report: {}", out.join("report.md").display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_787), (2026, 11, 30));
    }

    #[test]
    fn scenario_names_are_unique_and_outage_scenarios_use_redis() {
        let mut names: Vec<_> = SCENARIOS.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SCENARIOS.len());
        let outage = Settings::outage_check();
        let selected = select(&outage).expect("outage scenarios");
        assert_eq!(selected.len(), 2);
        assert!(
            selected
                .iter()
                .all(|s| s.kind == Kind::Outage && s.backend.needs_gateway())
        );
    }

    #[test]
    fn p2_is_one_scenario_of_a_complete_run_and_selectable_alone() {
        let p2 = Settings {
            scenarios: vec!["p2".into()],
            ..Settings::new(true)
        };
        let selected = select(&p2).expect("the P2 scenario");
        assert_eq!(selected.len(), 1);
        assert_eq!(selected[0].kind, Kind::P2Rounds);
        assert_eq!(selected[0].backend, MEMORY);
        assert_eq!(selected[0].only, Some("latest_page"));
        let every = select(&Settings::new(false)).expect("every scenario");
        assert_eq!(every.iter().filter(|s| s.kind == Kind::P2Rounds).count(), 1);
        assert_eq!(
            (
                Settings::new(true).p2_rounds,
                Settings::new(false).p2_rounds
            ),
            (2, 4)
        );
    }
}
