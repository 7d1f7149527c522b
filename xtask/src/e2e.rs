//! The end-to-end benchmark behind `cargo xtask bench`: starts `redis-server`, `upstash-gateway`
//! and `chat-api` (release builds) on free ports, seeds a dataset once with `chat-bench seed`, and
//! runs each scenario against a fresh copy of it with `chat-bench run`, then writes the report
//! with `chat-bench report` (`target/bench/report.md`, `summary.json`, `latency.svg`,
//! `throughput.svg`).
//!
//! Scenarios: `none` (no cache, the "before"), `memory`, `upstash`, `tiered`, the last two again
//! with 10 ms injected Upstash latency, open-loop latency runs, the thundering herd (P7), and a
//! Redis outage under load (R1: redis-server killed and restarted mid-run).

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::Context;

use crate::util::{Process, cargo, free_port, project_root, run_cmd, wait_ready};

const TOKEN: &str = "bench-token-not-a-secret";

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
    pub(crate) scenarios: Vec<String>,
    /// `release` for measurements; `debug` where only correctness is checked (CI's outage run).
    pub(crate) profile: &'static str,
    /// Under the target directory: `bench`, or `outage` for the R1 check.
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
                scenarios: Vec::new(),
                profile: "release",
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
                scenarios: Vec::new(),
                profile: "release",
                out_dir: "bench",
            }
        }
    }

    /// The R1 check CI runs (`cargo xtask outage`): the outage scenarios only, on debug builds
    /// (nothing is measured for speed), with a small dataset and a 24 s run each.
    pub(crate) fn outage_check() -> Self {
        Settings {
            duration_secs: 8,
            scenarios: vec!["outage".into()],
            profile: "debug",
            out_dir: "outage",
            ..Settings::new(true)
        }
    }

    fn describe(&self) -> String {
        format!(
            "{}{} users, {} channels, ~{} channels per user, {} messages (Zipf 1.1); closed loop {} connections × {} s per scenario; open loop {} req/s; rate limits off; SQLite; {} builds",
            if self.quick { "quick run: " } else { "" },
            self.users,
            self.channels,
            self.per_user,
            self.messages,
            self.connections,
            self.duration_secs,
            self.open_rate,
            self.profile
        )
    }
}

/// One scenario: which cache, whether Upstash is slowed down, and how it is driven.
#[derive(Debug, Clone, Copy)]
struct Scenario {
    name: &'static str,
    backend: &'static str,
    latency_ms: u64,
    kind: Kind,
    /// Drive only this operation instead of the mix.
    only: Option<&'static str>,
}

const fn scenario(
    name: &'static str,
    backend: &'static str,
    latency_ms: u64,
    kind: Kind,
) -> Scenario {
    Scenario {
        name,
        backend,
        latency_ms,
        kind,
        only: None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Closed,
    Open,
    Herd,
    Outage,
}

const SCENARIOS: &[Scenario] = &[
    scenario("01-none", "none", 0, Kind::Closed),
    scenario("02-memory", "memory", 0, Kind::Closed),
    scenario("03-upstash", "upstash", 0, Kind::Closed),
    scenario("04-tiered", "tiered", 0, Kind::Closed),
    scenario("05-upstash-10ms", "upstash", 10, Kind::Closed),
    scenario("06-tiered-10ms", "tiered", 10, Kind::Closed),
    scenario("07-none-open", "none", 0, Kind::Open),
    scenario("08-tiered-10ms-open", "tiered", 10, Kind::Open),
    scenario("09-herd-tiered", "tiered", 0, Kind::Herd),
    scenario("10-outage-tiered", "tiered", 0, Kind::Outage),
    scenario("13-outage-upstash", "upstash", 0, Kind::Outage),
    // P2: the cached latest page alone, against a bare axum handler with a body of the same size.
    Scenario {
        only: Some("latest_page"),
        ..scenario("11-latest-page-memory", "memory", 0, Kind::Closed)
    },
    Scenario {
        only: Some("latest_page"),
        ..scenario("12-latest-page-bare-axum", "bare", 0, Kind::Closed)
    },
    // P3 and P5: the original design (Express + Map cache, or + @upstash/redis with key-tracking
    // sets), re-created in `baseline/original-express`, on the same database and workload.
    scenario("14-original-memory", "original", 0, Kind::Closed),
    Scenario {
        only: Some("latest_page"),
        ..scenario("15-latest-page-original", "original", 0, Kind::Closed)
    },
    scenario("16-original-upstash", "original-upstash", 0, Kind::Closed),
];

fn redis_command(port: u16, parts: &[&str]) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    let mut msg = format!("*{}\r\n", parts.len());
    for p in parts {
        msg.push_str(&format!("${}\r\n{p}\r\n", p.len()));
    }
    stream.write_all(msg.as_bytes())?;
    let mut reply = [0u8; 64];
    let n = stream.read(&mut reply)?;
    anyhow::ensure!(
        n > 0 && reply[0] != b'-',
        "redis answered {:?}",
        String::from_utf8_lossy(&reply[..n])
    );
    Ok(())
}

struct Redis {
    port: u16,
    process: Option<Process>,
}

/// Installs `redis-server` from the OS packages when it is missing (as `.ci/run` does), so the
/// benchmark runs on a fresh machine without a manual step.
fn ensure_redis_server() -> anyhow::Result<()> {
    let present = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    eprintln!("==> redis-server is missing; installing it with apt-get");
    let installed = Command::new("sh")
        .args(["-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server"])
        .status()
        .is_ok_and(|s| s.success());
    anyhow::ensure!(
        installed,
        "could not install redis-server; install it (apt-get install redis-server) and retry"
    );
    Ok(())
}

impl Redis {
    fn start(port: u16) -> anyhow::Result<Self> {
        let process = Process::spawn(
            "redis-server",
            Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(Stdio::null()),
        )
        .context("redis-server is needed (apt-get install redis-server)")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis_command(port, &["PING"]).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "redis-server did not start");
            thread::sleep(Duration::from_millis(50));
        }
        Ok(Redis {
            port,
            process: Some(process),
        })
    }

    fn kill(&mut self) {
        self.process.take();
    }
}

struct Bins {
    chat_api: PathBuf,
    bare_page: PathBuf,
    gateway: PathBuf,
    bench: PathBuf,
}

fn start_bare_page(bins: &Bins, body_bytes: usize) -> anyhow::Result<(Process, u16)> {
    let port = free_port()?;
    let process = Process::spawn(
        "bare_page",
        Command::new(&bins.bare_page)
            .env("CHAT_ADDR", format!("127.0.0.1:{port}"))
            .env("BODY_BYTES", body_bytes.to_string())
            .stderr(Stdio::null()),
    )?;
    wait_ready("bare_page", port, "/health")?;
    Ok((process, port))
}

fn start_chat_api(
    bins: &Bins,
    db: &Path,
    backend: &str,
    gateway_port: Option<u16>,
) -> anyhow::Result<(Process, u16)> {
    let port = free_port()?;
    let mut cmd = Command::new(&bins.chat_api);
    cmd.current_dir(project_root())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CHAT_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", format!("sqlite://{}", db.display()))
        .env("CACHE_BACKEND", backend)
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

fn start_gateway(bins: &Bins, redis_port: u16, latency_ms: u64) -> anyhow::Result<(Process, u16)> {
    let port = free_port()?;
    let process = Process::spawn(
        "upstash-gateway",
        Command::new(&bins.gateway)
            .env_clear()
            .env("UPSTASH_GATEWAY_TOKEN", TOKEN)
            .env("RUST_LOG", "warn")
            .args([
                "--redis",
                &format!("redis://127.0.0.1:{redis_port}"),
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

fn copy_db(from: &Path, to: &Path) -> anyhow::Result<()> {
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
    let (truth, truth_port) = start_chat_api(bins, db, "none", None)?;
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

fn machine() -> String {
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

fn commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(project_root())
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "unknown".into(), |s| s.trim().to_owned())
}

pub(crate) fn run(settings: &Settings) -> anyhow::Result<()> {
    let out = crate::util::target_dir().join(settings.out_dir);
    let scenarios_dir = out.join("scenarios");
    let _ = std::fs::remove_dir_all(&scenarios_dir);
    std::fs::create_dir_all(out.join("db"))?;
    std::fs::create_dir_all(&scenarios_dir)?;

    eprintln!("==> building {} binaries", settings.profile);
    let release = settings.profile == "release";
    let mut build = cargo();
    build.args([
        "build",
        "--profile",
        if release { "release" } else { "dev" },
    ]);
    build.args([
        "-p",
        "chat-api",
        "-p",
        "upstash-gateway",
        "-p",
        "chat-bench",
    ]);
    run_cmd(build)?;
    if release {
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
    let bin_dir = crate::util::target_dir().join(settings.profile);
    let bins = Bins {
        chat_api: bin_dir.join("chat-api"),
        bare_page: bin_dir.join("examples/bare_page"),
        gateway: bin_dir.join("upstash-gateway"),
        bench: bin_dir.join("chat-bench"),
    };

    ensure_redis_server()?;
    let redis_port = free_port()?;
    let mut redis = Redis::start(redis_port)?;

    // Seed once; every scenario starts from a copy.
    let seed_db = out.join("db/seed.db");
    remove_db(&seed_db);
    let dataset = out.join("dataset.json");
    let page_bytes: usize;
    eprintln!("==> seeding: {}", settings.describe());
    {
        let (api, port) = start_chat_api(&bins, &seed_db, "memory", None)?;
        let mut seed = Command::new(&bins.bench);
        seed.args(["--url", &format!("http://127.0.0.1:{port}"), "seed"])
            .args(["--users", &settings.users.to_string()])
            .args(["--channels", &settings.channels.to_string()])
            .args(["--per-user", &settings.per_user.to_string()])
            .args(["--messages", &settings.messages.to_string()])
            .arg("--out")
            .arg(&dataset);
        run_cmd(seed)?;
        let output = Command::new(&bins.bench)
            .args([
                "--url",
                &format!("http://127.0.0.1:{port}"),
                "page-size",
                "--dataset",
            ])
            .arg(&dataset)
            .output()
            .context("measuring the latest page")?;
        page_bytes = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or(12_000);
        eprintln!("    latest page of the busiest channel: {page_bytes} bytes");
        api.stop();
    }

    let selected: Vec<&Scenario> = SCENARIOS
        .iter()
        .filter(|s| {
            settings.scenarios.is_empty()
                || settings
                    .scenarios
                    .iter()
                    .any(|n| s.name.contains(n.as_str()))
        })
        .collect();
    anyhow::ensure!(
        !selected.is_empty(),
        "no scenario matches {:?}",
        settings.scenarios
    );
    for (i, scenario) in selected.iter().enumerate() {
        eprintln!(
            "==> scenario {}/{}: {}",
            i + 1,
            selected.len(),
            scenario.name
        );
        if redis.process.is_none() {
            redis = Redis::start(redis_port)?;
        }
        redis_command(redis.port, &["FLUSHALL"])?;
        let db = out.join(format!("db/{}.db", scenario.name));
        copy_db(&seed_db, &db)?;
        let needs_gateway = matches!(scenario.backend, "upstash" | "tiered" | "original-upstash");
        let gateway = needs_gateway
            .then(|| start_gateway(&bins, redis_port, scenario.latency_ms))
            .transpose()?;
        let (api, port) = if scenario.backend == "bare" {
            start_bare_page(&bins, page_bytes)?
        } else if scenario.backend.starts_with("original") {
            start_original(&db, gateway.as_ref().map(|g| g.1))?
        } else {
            start_chat_api(&bins, &db, scenario.backend, gateway.as_ref().map(|g| g.1))?
        };
        let summary = scenarios_dir.join(format!("{}.json", scenario.name));
        let mut bench = Command::new(&bins.bench);
        bench.args(["--url", &format!("http://127.0.0.1:{port}")]);
        match scenario.kind {
            Kind::Herd => {
                bench.args(["herd", "--n", "1000"]);
            }
            Kind::Open => {
                bench.args(["run", "--rate", &settings.open_rate.to_string()]);
            }
            Kind::Closed | Kind::Outage => {
                bench.args(["run", "--connections", &settings.connections.to_string()]);
            }
        }
        if let Some(op) = scenario.only {
            bench.args(["--only", op]);
        }
        if scenario.kind != Kind::Herd {
            bench
                .args([
                    "--duration",
                    &format!(
                        "{}s",
                        settings.duration_secs * if scenario.kind == Kind::Outage { 3 } else { 1 }
                    ),
                ])
                .args(["--scenario", scenario.name]);
        }
        bench
            .arg("--dataset")
            .arg(&dataset)
            .arg("--out")
            .arg(&summary);
        if scenario.kind == Kind::Outage {
            // Kill redis-server a third of the way in, bring it back at two thirds; check every
            // latest-page read against the acknowledged posts, and fail on any stale read or
            // failed request.
            let d = settings.duration_secs;
            bench.args(["--check", "--outage", &format!("{d}..{}", 2 * d)]);
            let mut child = bench.spawn().context("starting chat-bench")?;
            let third = Duration::from_secs(settings.duration_secs);
            thread::sleep(third);
            eprintln!("    killing redis-server (kill -9)");
            redis.kill();
            thread::sleep(third);
            eprintln!("    restarting redis-server");
            redis = Redis::start(redis_port)?;
            let status = child.wait()?;
            anyhow::ensure!(status.success(), "chat-bench failed in {}", scenario.name);
            compare_with_database(&bins, &db, port, &dataset)?;
        } else {
            run_cmd(bench)?;
        }
        api.stop();
        if let Some((gateway, _)) = gateway {
            gateway.stop();
        }
    }
    drop(redis);

    let mut report = Command::new(&bins.bench);
    report.args(["report", "--dir"]).arg(&out).args([
        "--machine",
        &machine(),
        "--commit",
        &commit(),
        "--settings",
        &settings.describe(),
    ]);
    run_cmd(report)?;
    eprintln!("report: {}", out.join("report.md").display());
    Ok(())
}
