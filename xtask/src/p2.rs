//! P2 of `cargo xtask bench`: chat-api's cached latest page against a bare axum handler
//! (`chat-api/examples/bare_page`, a fixed body of the same size), as a ratio of requests/s.
//!
//! The ratio is only meaningful when the load generator does not take CPU time from the server,
//! so when the machine has at least two cores and `taskset` (util-linux) is installed, both
//! servers run on one CPU and `chat-bench` on another ([`Pinning`]); otherwise everything runs
//! unpinned and the table says why. A server pinned to one CPU also sizes its tokio runtime to
//! one worker, the same for both servers.
//!
//! Both servers stay up for the whole measurement and the load alternates between them: bare,
//! chat-api, bare, chat-api, … for [`Settings::p2_rounds`] rounds, every run with the same
//! duration and connections, after one unmeasured warm-up run against each. Restarting a server
//! per round would time its cold start (empty cache, first connections) into every round, which
//! is not the steady state P2 is about; the workload only reads, so nothing drifts between
//! rounds. Alternating spreads slow changes of the machine (other tenants, CI, clocks) over both
//! servers, and each round's ratio compares two adjacent runs; the median of those ratios is the
//! result, which one disturbed round cannot drag far (with three rounds or more).
//!
//! The runs' summaries land in `<out>/p2/`, the markdown table in `<out>/p2.md`, which
//! `bench.rs` puts into the run's tables.

use std::{
    fmt::Write as _,
    num::NonZeroUsize,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context;

use crate::{
    e2e::{self, Bins, CacheBackend, Seeded, Settings},
    util::run_cmd,
};

/// Where the table lands, under the bench directory.
pub(crate) const TABLE_FILE: &str = "p2.md";
/// Where the runs' `chat-bench` summaries land, under the bench directory.
pub(crate) const RUNS_DIR: &str = "p2";
/// The target: chat-api's req/s at least this fraction of the bare handler's.
const TARGET_RATIO: f64 = 0.6;

/// Where the servers and the load generator run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pinning {
    /// Both servers on `server_cpu`, `chat-bench` on `load_cpu`, through `taskset -c`.
    Pinned {
        taskset: PathBuf,
        server_cpu: usize,
        load_cpu: usize,
    },
    /// Wherever the scheduler puts them.
    Unpinned { reason: String },
}

/// Which side of the measurement a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Server,
    LoadGenerator,
}

impl Pinning {
    /// The decision for this machine: its usable cores, the CPUs this process may run on and
    /// whether `taskset` is on the `PATH`.
    fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        let allowed = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| allowed_cpus(&status));
        decide(cores, allowed, find_on_path("taskset"))
    }

    /// What the table says about it.
    fn describe(&self) -> String {
        match self {
            Pinning::Pinned {
                server_cpu,
                load_cpu,
                ..
            } => format!("server on CPU {server_cpu}, load generator on CPU {load_cpu}"),
            Pinning::Unpinned { reason } => format!("unpinned: {reason}"),
        }
    }

    /// A command that runs `program` where `role` belongs.
    fn command(&self, role: Role, program: &Path) -> Command {
        match self {
            Pinning::Pinned {
                taskset,
                server_cpu,
                load_cpu,
            } => {
                let cpu = match role {
                    Role::Server => server_cpu,
                    Role::LoadGenerator => load_cpu,
                };
                let mut cmd = Command::new(taskset);
                cmd.arg("-c").arg(cpu.to_string()).arg(program);
                cmd
            }
            Pinning::Unpinned { .. } => Command::new(program),
        }
    }

    /// Fails unless the running server `pid` may only use the server's CPU: a table that says
    /// "pinned" must not rest on a `taskset` that silently did nothing.
    fn check_server(&self, name: &str, pid: u32) -> anyhow::Result<()> {
        let Pinning::Pinned { server_cpu, .. } = self else {
            return Ok(());
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading the CPU affinity of {name}"))?;
        let cpus = allowed_cpus(&status)
            .with_context(|| format!("no Cpus_allowed_list for {name} (pid {pid})"))?;
        anyhow::ensure!(
            cpus == [*server_cpu],
            "{name} runs on CPUs {cpus:?}, not on CPU {server_cpu} alone"
        );
        Ok(())
    }
}

/// Pins when there are two cores to separate the server from the load generator and `taskset`
/// to do it: the server on the first CPU this process may use, the load on the second.
fn decide(cores: usize, allowed: Option<Vec<usize>>, taskset: Option<PathBuf>) -> Pinning {
    if cores < 2 {
        return Pinning::Unpinned {
            reason: format!("{cores} core available, the server and the load generator share it"),
        };
    }
    let Some(taskset) = taskset else {
        return Pinning::Unpinned {
            reason: "taskset (util-linux) is not installed".into(),
        };
    };
    // Without the affinity list (not Linux), the first cores are assumed usable.
    let cpus = allowed.unwrap_or_else(|| (0..cores).collect());
    match cpus.as_slice() {
        [server_cpu, load_cpu, ..] => Pinning::Pinned {
            taskset,
            server_cpu: *server_cpu,
            load_cpu: *load_cpu,
        },
        _ => Pinning::Unpinned {
            reason: format!("this process may only run on CPUs {cpus:?}"),
        },
    }
}

/// The CPUs of the `Cpus_allowed_list:` line of a `/proc/<pid>/status` (`0-3,8,10-11`).
fn allowed_cpus(status: &str) -> Option<Vec<usize>> {
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))?;
    let mut cpus = Vec::new();
    for part in list.trim().split(',') {
        match part.split_once('-') {
            Some((first, last)) => {
                let (first, last) = (first.parse().ok()?, last.parse::<usize>().ok()?);
                if first > last {
                    return None;
                }
                cpus.extend(first..=last);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

/// `name` in a directory of the `PATH`, as `command -v` finds it.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The two servers P2 compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    Bare,
    ChatApi,
}

impl Server {
    fn label(self) -> &'static str {
        match self {
            Server::Bare => "bare",
            Server::ChatApi => "chat-api",
        }
    }
}

/// The order of the measured runs: each round is the bare handler, then chat-api.
fn schedule(rounds: usize) -> Vec<Server> {
    (0..rounds)
        .flat_map(|_| [Server::Bare, Server::ChatApi])
        .collect()
}

/// What one run measured, from its `chat-bench run` summary.
#[derive(Debug, Clone, Copy, PartialEq)]
struct RunNumbers {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

impl RunNumbers {
    /// The `total` of a `chat-bench run` summary (the numbers its report reads too).
    fn from_summary(json: &str) -> anyhow::Result<Self> {
        let summary: serde_json::Value =
            serde_json::from_str(json).context("a chat-bench summary that is not JSON")?;
        let total = &summary["total"];
        let number = |key: &str| {
            total[key]
                .as_f64()
                .with_context(|| format!("no total.{key} in the chat-bench summary"))
        };
        Ok(RunNumbers {
            rps: number("rps")?,
            p50_ms: number("p50_ms")?,
            p99_ms: number("p99_ms")?,
            errors: total["errors"]
                .as_u64()
                .context("no total.errors in the chat-bench summary")?,
        })
    }
}

/// One round: the bare handler's run and chat-api's right after it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Round {
    bare: RunNumbers,
    chat_api: RunNumbers,
}

impl Round {
    /// chat-api's req/s as a fraction of the bare handler's.
    fn ratio(&self) -> f64 {
        self.chat_api.rps / self.bare.rps
    }
}

/// The runs, in the order they ran, as rounds: each bare run with the chat-api run after it.
fn pair_rounds(runs: &[(Server, RunNumbers)]) -> anyhow::Result<Vec<Round>> {
    anyhow::ensure!(
        runs.len() % 2 == 0,
        "{} runs cannot form rounds of two",
        runs.len()
    );
    runs.chunks_exact(2)
        .enumerate()
        .map(|(i, pair)| match pair {
            [(Server::Bare, bare), (Server::ChatApi, chat_api)] => Ok(Round {
                bare: *bare,
                chat_api: *chat_api,
            }),
            _ => anyhow::bail!(
                "round {} ran {} then {}, not the bare handler then chat-api",
                i + 1,
                pair[0].0.label(),
                pair[1].0.label()
            ),
        })
        .collect()
}

/// The median; for an even count, the mean of the two middle values.
fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[mid]),
        _ => Some((sorted[mid - 1] + sorted[mid]) / 2.0),
    }
}

/// What the table states besides the rounds.
struct Conditions<'a> {
    pinning: &'a str,
    connections: usize,
    duration_secs: u64,
    warmup_secs: u64,
    page_bytes: usize,
}

/// The markdown section of the P2 measurement.
fn render(rounds: &[Round], conditions: &Conditions<'_>) -> String {
    let mut md = String::from("#### P2: the cached latest page against a bare axum handler\n\n");
    let _ = writeln!(
        md,
        "Pinning: {}. Both servers stay up; each round drives the bare handler (a fixed body of \
         {} bytes), then chat-api (memory cache), with latest-page reads only, {} connections × \
         {} s, after one unmeasured {} s warm-up of each. The ratio is chat-api's req/s over the \
         bare handler's in the same round.\n",
        conditions.pinning,
        conditions.page_bytes,
        conditions.connections,
        conditions.duration_secs,
        conditions.warmup_secs
    );
    md.push_str(
        "| round | bare req/s | bare p50 ms | bare p99 ms | chat-api req/s | chat-api p50 ms | \
         chat-api p99 ms | chat-api / bare |\n|---|---|---|---|---|---|---|---|\n",
    );
    for (i, round) in rounds.iter().enumerate() {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} |",
            i + 1,
            round.bare.rps,
            round.bare.p50_ms,
            round.bare.p99_ms,
            round.chat_api.rps,
            round.chat_api.p50_ms,
            round.chat_api.p99_ms,
            round.ratio()
        );
    }
    let ratios: Vec<f64> = rounds.iter().map(Round::ratio).collect();
    match median(&ratios) {
        Some(median) => {
            let _ = writeln!(
                md,
                "\nMedian ratio over {} rounds: **{median:.2}** (P2 target: at least {TARGET_RATIO:.2}).",
                rounds.len()
            );
        }
        None => md.push_str("\nNo rounds: no ratio.\n"),
    }
    md
}

/// Measures P2 on a copy of the seeded database and writes `<out>/p2.md`.
pub(crate) fn run(
    settings: &Settings,
    bins: &Bins,
    out: &Path,
    seeded: &Seeded,
    (scenario, cache, operation): (&str, CacheBackend, &str),
) -> anyhow::Result<()> {
    let pinning = Pinning::for_this_machine();
    eprintln!("    {}", pinning.describe());
    let runs_dir = out.join(RUNS_DIR);
    std::fs::create_dir_all(&runs_dir)?;
    let db = out.join(format!("db/{scenario}.db"));
    e2e::copy_db(&seeded.db, &db)?;

    let (bare, bare_port) = e2e::start_bare_page(
        pinning.command(Role::Server, &bins.bare_page),
        seeded.page_bytes,
    )?;
    pinning.check_server("bare_page", bare.id())?;
    let (chat_api, chat_api_port) = e2e::start_chat_api_with(
        pinning.command(Role::Server, &bins.chat_api),
        &e2e::sqlite_url(&db),
        cache,
        None,
    )?;
    pinning.check_server("chat-api", chat_api.id())?;

    let url = |server: Server| {
        let port = match server {
            Server::Bare => bare_port,
            Server::ChatApi => chat_api_port,
        };
        format!("http://127.0.0.1:{port}")
    };
    // Long enough for chat-api to cache the pages the workload reads, short next to a round.
    let warmup_secs = (settings.duration_secs / 6).max(1);
    let drive = |server: Server, seconds: u64, name: &str| -> anyhow::Result<PathBuf> {
        let summary = runs_dir.join(format!("{name}.json"));
        let mut bench = pinning.command(Role::LoadGenerator, &bins.bench);
        bench
            .args(["--url", &url(server), "run"])
            .args(["--connections", &settings.connections.to_string()])
            .args(["--only", operation])
            .args(["--duration", &format!("{seconds}s")])
            .args(["--scenario", &format!("p2-{name}")])
            .arg("--dataset")
            .arg(&seeded.dataset)
            .arg("--out")
            .arg(&summary);
        run_cmd(bench)?;
        Ok(summary)
    };
    for server in [Server::Bare, Server::ChatApi] {
        drive(server, warmup_secs, &format!("warmup-{}", server.label()))?;
    }
    let mut runs = Vec::new();
    for (i, server) in schedule(settings.p2_rounds).into_iter().enumerate() {
        let name = format!("round{}-{}", i / 2 + 1, server.label());
        let summary = drive(server, settings.duration_secs, &name)?;
        let numbers = RunNumbers::from_summary(&std::fs::read_to_string(&summary)?)
            .with_context(|| format!("reading {}", summary.display()))?;
        // Failed requests are cheap or slow in ways a served page is not: no ratio from them.
        anyhow::ensure!(
            numbers.errors == 0,
            "P2 {name}: {} failed requests",
            numbers.errors
        );
        runs.push((server, numbers));
    }
    bare.stop();
    chat_api.stop();

    let rounds = pair_rounds(&runs)?;
    let table = render(
        &rounds,
        &Conditions {
            pinning: &pinning.describe(),
            connections: settings.connections,
            duration_secs: settings.duration_secs,
            warmup_secs,
            page_bytes: seeded.page_bytes,
        },
    );
    std::fs::write(out.join(TABLE_FILE), &table)?;
    eprintln!("{table}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(rps: f64) -> RunNumbers {
        RunNumbers {
            rps,
            p50_ms: 0.5,
            p99_ms: 1.5,
            errors: 0,
        }
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[0.7]), Some(0.7));
        assert_eq!(median(&[0.9, 0.5, 0.7]), Some(0.7));
        // Even: the mean of the two middle values, whatever the input order.
        assert_eq!(median(&[1.0, 0.25, 0.75, 0.5]), Some(0.625));
        assert_eq!(median(&[0.75, 0.5]), Some(0.625));
    }

    #[test]
    fn runs_pair_into_rounds_of_bare_then_chat_api() {
        let order = schedule(3);
        assert_eq!(
            order,
            [
                Server::Bare,
                Server::ChatApi,
                Server::Bare,
                Server::ChatApi,
                Server::Bare,
                Server::ChatApi
            ]
        );
        let rps = [1000.0, 600.0, 800.0, 600.0, 1000.0, 900.0];
        let runs: Vec<_> = order.into_iter().zip(rps.map(numbers)).collect();
        let rounds = pair_rounds(&runs).expect("alternating runs");
        let ratios: Vec<f64> = rounds.iter().map(Round::ratio).collect();
        assert_eq!(ratios, [0.6, 0.75, 0.9]);
        assert_eq!(median(&ratios), Some(0.75));

        let swapped = [
            (Server::ChatApi, numbers(600.0)),
            (Server::Bare, numbers(1000.0)),
        ];
        let err = pair_rounds(&swapped).expect_err("chat-api first");
        assert!(
            err.to_string().contains("round 1 ran chat-api then bare"),
            "{err}"
        );
        assert!(pair_rounds(&runs[..3]).is_err(), "an odd number of runs");
    }

    #[test]
    fn pins_only_with_two_cores_and_taskset() {
        let taskset = Some(PathBuf::from("/usr/bin/taskset"));
        let pinned = decide(2, Some(vec![0, 1]), taskset.clone());
        assert_eq!(
            pinned,
            Pinning::Pinned {
                taskset: PathBuf::from("/usr/bin/taskset"),
                server_cpu: 0,
                load_cpu: 1
            }
        );
        assert_eq!(
            pinned.describe(),
            "server on CPU 0, load generator on CPU 1"
        );
        // The CPUs this process may use, not CPUs 0 and 1 blindly.
        assert_eq!(
            decide(4, Some(vec![2, 3, 5]), taskset.clone()).describe(),
            "server on CPU 2, load generator on CPU 3"
        );
        assert_eq!(
            decide(2, None, taskset.clone()).describe(),
            "server on CPU 0, load generator on CPU 1"
        );

        let one_core = decide(1, Some(vec![0]), taskset.clone());
        assert!(
            one_core
                .describe()
                .starts_with("unpinned: 1 core available"),
            "{}",
            one_core.describe()
        );
        assert_eq!(
            decide(8, Some((0..8).collect()), None).describe(),
            "unpinned: taskset (util-linux) is not installed"
        );
        assert_eq!(
            decide(2, Some(vec![3]), taskset).describe(),
            "unpinned: this process may only run on CPUs [3]"
        );
    }

    #[test]
    fn pinned_commands_go_through_taskset() {
        let pinning = decide(2, Some(vec![0, 1]), Some(PathBuf::from("/usr/bin/taskset")));
        let args = |cmd: &Command| -> Vec<String> {
            std::iter::once(cmd.get_program())
                .chain(cmd.get_args())
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(
            args(&pinning.command(Role::Server, Path::new("/bin/server"))),
            ["/usr/bin/taskset", "-c", "0", "/bin/server"]
        );
        assert_eq!(
            args(&pinning.command(Role::LoadGenerator, Path::new("/bin/load"))),
            ["/usr/bin/taskset", "-c", "1", "/bin/load"]
        );
        let unpinned = decide(1, None, None);
        assert_eq!(
            args(&unpinned.command(Role::Server, Path::new("/bin/server"))),
            ["/bin/server"]
        );
    }

    #[test]
    fn reads_the_allowed_cpu_list() {
        let status =
            "Name:\tx\nCpus_allowed:\t3\nCpus_allowed_list:\t0-2,5,7-8\nMems_allowed:\t1\n";
        assert_eq!(allowed_cpus(status), Some(vec![0, 1, 2, 5, 7, 8]));
        assert_eq!(allowed_cpus("Cpus_allowed_list:\t1\n"), Some(vec![1]));
        assert_eq!(allowed_cpus("Cpus_allowed_list:\t3-1\n"), None);
        assert_eq!(allowed_cpus("Cpus_allowed_list:\tx\n"), None);
        assert_eq!(allowed_cpus("Name:\tx\n"), None);
    }

    #[test]
    fn reads_a_run_summary() {
        let json = r#"{"scenario":"p2-round1-bare","mode":"closed","total":{"requests":10,
            "errors":0,"rps":49824.4,"mean_ms":0.7,"p50_ms":0.6,"p95_ms":1.0,"p99_ms":1.61,
            "max_ms":16.8,"statuses":{"200":10},"distribution":[]}}"#;
        assert_eq!(
            RunNumbers::from_summary(json).expect("a summary"),
            RunNumbers {
                rps: 49824.4,
                p50_ms: 0.6,
                p99_ms: 1.61,
                errors: 0
            }
        );
        assert!(RunNumbers::from_summary(r#"{"callers":1000}"#).is_err());
        assert!(RunNumbers::from_summary("not json").is_err());
    }

    #[test]
    fn renders_rounds_ratios_median_and_pinning() {
        let rounds = [
            Round {
                bare: RunNumbers {
                    rps: 50_000.0,
                    p50_ms: 0.6,
                    p99_ms: 1.61,
                    errors: 0,
                },
                chat_api: RunNumbers {
                    rps: 35_000.0,
                    p50_ms: 0.87,
                    p99_ms: 2.71,
                    errors: 0,
                },
            },
            Round {
                bare: numbers(40_000.0),
                chat_api: numbers(32_000.0),
            },
        ];
        let md = render(
            &rounds,
            &Conditions {
                pinning: "server on CPU 0, load generator on CPU 1",
                connections: 32,
                duration_secs: 30,
                warmup_secs: 5,
                page_bytes: 12_345,
            },
        );
        assert!(
            md.contains("Pinning: server on CPU 0, load generator on CPU 1."),
            "{md}"
        );
        assert!(md.contains("a fixed body of 12345 bytes"), "{md}");
        assert!(md.contains("32 connections × 30 s"), "{md}");
        assert!(
            md.contains("| 1 | 50000 | 0.60 | 1.61 | 35000 | 0.87 | 2.71 | 0.70 |\n"),
            "{md}"
        );
        assert!(
            md.contains("| 2 | 40000 | 0.50 | 1.50 | 32000 | 0.50 | 1.50 | 0.80 |\n"),
            "{md}"
        );
        assert!(
            md.contains("Median ratio over 2 rounds: **0.75** (P2 target: at least 0.60)."),
            "{md}"
        );
        // A markdown table: every row has as many cells as the header.
        let cells = |line: &str| line.matches('|').count();
        let rows: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
        assert_eq!(rows.len(), 4, "{md}");
        assert!(rows.iter().all(|r| cells(r) == cells(rows[0])), "{md}");
    }
}
