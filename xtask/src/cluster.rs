//! `cargo xtask cluster`: the multi-instance check with real processes. Starts a persistent
//! `redis-server`, the `upstash-gateway` binary and three `chat-api` binaries (debug builds) on a
//! fresh PostgreSQL database with the tiered cache through the gateway, then runs
//! `chat-bench cluster --chaos` against the three instances and carries out its chaos schedule:
//! `kill -9` of one instance and its restart on the same port, then `kill -9` of the gateway and
//! its restart on the same port (Redis keeps its data). chat-bench does the checking and prints
//! the table; this task owns the processes.
//!
//! When `nginx` is installed (or `$NGINX` names it), the steady phase runs once more through
//! nginx in front of the three instances, with the configuration in `deploy/nginx/chat-api.conf`
//! (its instance ports and listen port rewritten); otherwise that step says it is skipped.
//!
//! `--fanout USERS` measures instead of checking under chaos: every one of `USERS` users holds a
//! WebSocket session on each instance while posts fan out to all of them (the steady phase only),
//! and the resident memory of the three instances is read from `/proc` idle and with every session
//! open, for an upper bound of the memory per session. With `--release` it runs release builds,
//! which is how `docs/scaling.md`'s numbers are taken.
//!
//! The database comes from `TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`):
//! a database of its own is created with `psql` for the run and dropped after it.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::util::{
    PgDatabase, Process, RedisServer, cargo, free_port, http_status, project_root, run_cmd,
    summarize, target_dir,
};

/// The gateway's token; only these local processes know it.
const TOKEN: &str = "cluster-check-token";
/// What chat-bench prints before a chaos action (see its `cluster` module).
const CONTROL_PREFIX: &str = "chat-bench-control: ";
const INSTANCES: usize = 3;
const USAGE: &str = "usage: cargo xtask cluster [--no-build] [--no-nginx] [--backplane-off] [--release] [--fanout USERS]";

struct Bins {
    chat_api: PathBuf,
    gateway: PathBuf,
    bench: PathBuf,
}

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let mut build = true;
    let mut nginx = true;
    let mut backplane = "auto";
    let mut release = false;
    let mut fanout = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--no-build" => build = false,
            "--no-nginx" => nginx = false,
            // The control experiment: without the backplane the checks must fail.
            "--backplane-off" => backplane = "off",
            "--release" => release = true,
            "--fanout" => {
                let users = args
                    .next()
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|&n| n > 0)
                    .with_context(|| format!("--fanout needs a number of users; {USAGE}"))?;
                fanout = Some(users);
            }
            other => bail!("unknown option {other:?}; {USAGE}"),
        }
    }
    let bin_dir = target_dir().join(if release { "release" } else { "debug" });
    if build {
        let mut cmd = cargo();
        cmd.args([
            "build",
            "-p",
            "chat-api",
            "-p",
            "upstash-gateway",
            "-p",
            "chat-bench",
        ]);
        if release {
            cmd.arg("--release");
        }
        run_cmd(cmd)?;
    }
    let bins = Bins {
        chat_api: bin_dir.join("chat-api"),
        gateway: bin_dir.join("upstash-gateway"),
        bench: bin_dir.join("chat-bench"),
    };
    let out = target_dir().join("cluster");
    // The processes' logs of this run only (restarts append to them).
    let _ = std::fs::remove_dir_all(out.join("logs"));
    std::fs::create_dir_all(out.join("logs"))?;

    let db = PgDatabase::create("xtask_cluster", None)?;
    eprintln!("==> PostgreSQL database {}", db.name);
    let mut cluster = Cluster::start(&bins, &out, &db.url, backplane)?;
    if let Some(users) = fanout {
        let measured = cluster.measure_fanout(&bins, &out, users);
        cluster.stop();
        drop(db);
        return summarize(
            "fan-out",
            "fan-out measurement",
            &[("3 instances, steady", measured)],
        );
    }
    let direct = cluster.check_direct(&bins, &out);
    let through_nginx = if nginx {
        match nginx_bin() {
            Some(nginx) => cluster.check_nginx(&bins, &out, &nginx),
            None => Ok(
                "skipped: nginx is not installed (apt-get install nginx-light, or set \
                        NGINX=/path/to/nginx)"
                    .to_owned(),
            ),
        }
    } else {
        Ok("skipped (--no-nginx)".to_owned())
    };
    cluster.stop();
    drop(db);
    if direct.is_err() || through_nginx.is_err() {
        eprintln!(
            "\nthe processes' logs (stderr) are in {}",
            out.join("logs").display()
        );
    }
    summarize(
        "cluster checks",
        "cluster checks",
        &[
            ("3 instances, chaos", direct),
            ("through nginx", through_nginx),
        ],
    )
}

/// The processes of the cluster: Redis, the gateway, the chat-api instances.
struct Cluster<'a> {
    bins: &'a Bins,
    out: PathBuf,
    database_url: String,
    /// `CACHE_BACKPLANE` of the instances.
    backplane: &'static str,
    redis: RedisServer,
    gateway: Option<Process>,
    gateway_port: u16,
    instances: Vec<(Option<Process>, u16)>,
}

impl<'a> Cluster<'a> {
    fn start(
        bins: &'a Bins,
        out: &Path,
        database_url: &str,
        backplane: &'static str,
    ) -> anyhow::Result<Self> {
        let redis = RedisServer::persistent(&out.join("redis"))?;
        let mut cluster = Cluster {
            bins,
            out: out.to_path_buf(),
            database_url: database_url.to_owned(),
            backplane,
            redis,
            gateway: None,
            gateway_port: free_port()?,
            instances: Vec::new(),
        };
        cluster.start_gateway()?;
        // The first instance migrates the fresh database; the others start on a migrated one.
        for i in 0..INSTANCES {
            let port = free_port()?;
            cluster.instances.push((None, port));
            cluster.start_instance(i)?;
        }
        eprintln!(
            "==> redis-server :{}, upstash-gateway :{}, chat-api {}; logs in {}",
            cluster.redis.port(),
            cluster.gateway_port,
            cluster
                .instances
                .iter()
                .map(|(_, p)| format!(":{p}"))
                .collect::<Vec<_>>()
                .join(" "),
            out.join("logs").display()
        );
        Ok(cluster)
    }

    fn log(&self, name: &str) -> anyhow::Result<std::fs::File> {
        let path = self.out.join("logs").join(format!("{name}.log"));
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))
    }

    /// Starts (or restarts) the gateway on its port; a port just freed by a killed gateway may
    /// take a moment to bind again, so an early exit is retried.
    fn start_gateway(&mut self) -> anyhow::Result<()> {
        self.gateway = None;
        let port = self.gateway_port;
        let mut cmd = Command::new(&self.bins.gateway);
        cmd.env_clear()
            .env("UPSTASH_GATEWAY_TOKEN", TOKEN)
            .env("RUST_LOG", "warn")
            .args([
                "--redis",
                &self.redis.url(),
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--redis-timeout-ms",
                "2000",
            ])
            .stdout(Stdio::null())
            .stderr(self.log("upstash-gateway")?);
        self.gateway = Some(spawn_ready(
            "upstash-gateway",
            &mut cmd,
            port,
            "/__gateway/health",
        )?);
        Ok(())
    }

    fn start_instance(&mut self, i: usize) -> anyhow::Result<()> {
        self.instances[i].0 = None;
        let port = self.instances[i].1;
        let mut cmd = Command::new(&self.bins.chat_api);
        cmd.current_dir(project_root())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CHAT_ADDR", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", &self.database_url)
            .env("CACHE_BACKEND", "tiered")
            .env("CACHE_BACKPLANE", self.backplane)
            .env(
                "UPSTASH_REDIS_REST_URL",
                format!("http://127.0.0.1:{}", self.gateway_port),
            )
            .env("UPSTASH_REDIS_REST_TOKEN", TOKEN)
            // The check posts far faster than a person; limits are not what it measures.
            .env("RATE_LIMIT", "off")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(self.log(&format!("chat-api-{i}"))?);
        self.instances[i].0 = Some(spawn_ready("chat-api", &mut cmd, port, "/health")?);
        Ok(())
    }

    fn urls(&self) -> Vec<String> {
        self.instances
            .iter()
            .map(|(_, port)| format!("http://127.0.0.1:{port}"))
            .collect()
    }

    /// `chat-bench cluster --chaos` against the instances, answering its chaos requests.
    fn check_direct(&mut self, bins: &Bins, out: &Path) -> anyhow::Result<String> {
        let mut bench = Command::new(&bins.bench);
        bench.args(["cluster", "--chaos", "--label", "3 instances"]);
        for url in self.urls() {
            bench.args(["--instance", &url]);
        }
        bench.arg("--out").arg(out.join("direct.json"));
        eprintln!("==> chat-bench cluster --chaos (steady, instance kill -9, gateway kill -9)");
        bench
            .env("RUST_LIB_BACKTRACE", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = bench.spawn().context("starting chat-bench")?;
        let mut to_bench = child.stdin.take().context("chat-bench stdin")?;
        let from_bench = BufReader::new(child.stdout.take().context("chat-bench stdout")?);
        let mut actions = 0;
        for line in from_bench.lines() {
            let line = line.context("reading chat-bench")?;
            let Some(action) = line.strip_prefix(CONTROL_PREFIX) else {
                println!("{line}");
                continue;
            };
            actions += 1;
            let reply = match self.chaos(action) {
                Ok(()) => "ok".to_owned(),
                Err(err) => format!("error: {err:#}"),
            };
            // If chat-bench is gone, its exit status says why.
            let _ = writeln!(to_bench, "{reply}").and_then(|()| to_bench.flush());
        }
        let status = child.wait().context("waiting for chat-bench")?;
        anyhow::ensure!(status.success(), "chat-bench cluster failed ({status})");
        anyhow::ensure!(
            actions == 4,
            "chat-bench asked for {actions} chaos actions, not 4"
        );
        Ok("steady, kill -9 of an instance, kill -9 of the gateway".to_owned())
    }

    /// `chat-bench cluster` with `users` sessions per instance (steady phase only), and the
    /// instances' resident memory idle and with every session open.
    fn measure_fanout(&mut self, bins: &Bins, out: &Path, users: usize) -> anyhow::Result<String> {
        let idle = self.resident_kib()?;
        let mut bench = Command::new(&bins.bench);
        let label = format!("fan-out, {users} users on each of {INSTANCES} instances");
        let users_arg = users.to_string();
        bench.args([
            "cluster",
            "--label",
            &label,
            "--users",
            &users_arg,
            "--channels",
            "2",
            "--posts",
            "20",
            "--pace",
            "250ms",
        ]);
        for url in self.urls() {
            bench.args(["--instance", &url]);
        }
        bench.arg("--out").arg(out.join("fanout.json"));
        eprintln!("==> chat-bench cluster with {users} users on every instance (memory: /proc)");
        // Its progress lines, "… WebSocket sessions ready" among them, are on stderr.
        bench
            .env("RUST_LIB_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = bench.spawn().context("starting chat-bench")?;
        let from_bench = BufReader::new(child.stderr.take().context("chat-bench stderr")?);
        let mut with_sessions = None;
        for line in from_bench.lines() {
            let line = line.context("reading chat-bench")?;
            eprintln!("{line}");
            if with_sessions.is_none() && line.contains("WebSocket sessions ready") {
                with_sessions = Some(self.resident_kib()?);
            }
        }
        let status = child.wait().context("waiting for chat-bench")?;
        anyhow::ensure!(status.success(), "chat-bench cluster failed ({status})");
        let with_sessions =
            with_sessions.context("chat-bench never said its sessions were ready")?;
        let sessions = users * INSTANCES;
        let per_session = with_sessions.saturating_sub(idle) / sessions as u64;
        Ok(format!(
            "{sessions} sessions; the instances' resident memory {} MB idle, {} MB with every \
             session open: at most {per_session} KiB per session",
            idle / 1024,
            with_sessions / 1024
        ))
    }

    /// The resident memory of the running chat-api instances together, in KiB (`/proc`).
    fn resident_kib(&self) -> anyhow::Result<u64> {
        let mut total = 0;
        for process in self.instances.iter().filter_map(|(p, _)| p.as_ref()) {
            let path = format!("/proc/{}/status", process.id());
            let status =
                std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
            total += status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .with_context(|| format!("no VmRSS in {path}"))?;
        }
        Ok(total)
    }

    fn chaos(&mut self, action: &str) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut words = action.split_whitespace();
        match (words.next(), words.next().map(str::parse::<usize>)) {
            (Some("kill-instance"), Some(Ok(i))) if i < self.instances.len() => {
                // Dropping the process is SIGKILL: no graceful shutdown, no goodbye to sessions.
                self.instances[i].0 = None;
            }
            (Some("restart-instance"), Some(Ok(i))) if i < self.instances.len() => {
                self.start_instance(i)?;
            }
            (Some("kill-gateway"), None) => self.gateway = None,
            (Some("restart-gateway"), None) => self.start_gateway()?,
            _ => bail!("unknown chaos action {action:?}"),
        }
        eprintln!("    {action}: done in {} ms", started.elapsed().as_millis());
        Ok(())
    }

    /// The steady phase once more, through nginx in front of the instances.
    fn check_nginx(&mut self, bins: &Bins, out: &Path, nginx: &Path) -> anyhow::Result<String> {
        let port = free_port()?;
        let dir = out.join("nginx");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("logs"))?;
        let template = project_root()
            .join("deploy")
            .join("nginx")
            .join("chat-api.conf");
        let template = std::fs::read_to_string(&template)
            .with_context(|| format!("reading {}", template.display()))?;
        let ports: Vec<u16> = self.instances.iter().map(|(_, p)| *p).collect();
        let site = nginx_site(&template, &ports, port)?;
        let dir_text = dir.display().to_string();
        // A throwaway main configuration around the site: everything under `dir`, in the
        // foreground, one process, so it runs unprivileged and dies with us.
        let main = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {dir_text}/nginx.pid;\n\
             error_log {dir_text}/logs/error.log warn;\nevents {{ worker_connections 1024; }}\n\
             http {{\n    access_log off;\n    client_body_temp_path {dir_text}/client_body;\n    \
             proxy_temp_path {dir_text}/proxy;\n    fastcgi_temp_path {dir_text}/fastcgi;\n    \
             uwsgi_temp_path {dir_text}/uwsgi;\n    scgi_temp_path {dir_text}/scgi;\n{site}\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), main)?;
        let mut test = Command::new(nginx);
        test.arg("-t")
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"));
        let output = test.output().context("running nginx -t")?;
        anyhow::ensure!(
            output.status.success(),
            "nginx -t rejected the configuration: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        let mut cmd = Command::new(nginx);
        cmd.arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(self.log("nginx")?);
        let proxy = spawn_ready("nginx", &mut cmd, port, "/health")?;
        eprintln!("==> chat-bench cluster through nginx on :{port} (steady)");
        let url = format!("http://127.0.0.1:{port}");
        let mut bench = Command::new(&bins.bench);
        bench.args(["cluster", "--label", "nginx, 3 instances"]);
        for _ in 0..INSTANCES {
            bench.args(["--instance", &url]);
        }
        bench
            .arg("--out")
            .arg(out.join("nginx.json"))
            .env("RUST_LIB_BACKTRACE", "0");
        let outcome = run_cmd(bench);
        drop(proxy);
        outcome?;
        Ok(format!(
            "steady phase through nginx ({} upstreams)",
            ports.len()
        ))
    }

    fn stop(self) {
        for (process, _) in self.instances {
            if let Some(process) = process {
                process.stop();
            }
        }
        if let Some(gateway) = self.gateway {
            gateway.stop();
        }
        drop(self.redis);
    }
}

/// Spawns `cmd` and waits until `path` on `port` answers 200; a process that exits first (its
/// port not yet free again) is started anew, for up to 60 s.
fn spawn_ready(
    name: &'static str,
    cmd: &mut Command,
    port: u16,
    path: &str,
) -> anyhow::Result<Process> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut process = Process::spawn(name, cmd)?;
        loop {
            if http_status(port, path) == Some(200) {
                return Ok(process);
            }
            if let Some(status) = process.try_wait()? {
                if Instant::now() >= deadline {
                    bail!("{name} exited with {status} before it was ready on port {port}");
                }
                break;
            }
            if Instant::now() >= deadline {
                bail!("{name} did not become ready on port {port}");
            }
            thread::sleep(Duration::from_millis(50));
        }
        thread::sleep(Duration::from_millis(250));
    }
}

/// `nginx` on `PATH` (or `sbin` directories, where Debian puts it), or `$NGINX`.
fn nginx_bin() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("NGINX") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join("nginx"))
        .find(|p| p.is_file())
}

/// The deployment's site configuration with its upstream `server` lines replaced by one per port
/// in `ports` and its `listen` port by `listen`. Fails if the file no longer has those lines, so
/// the check never runs a configuration other than the one in the repository.
fn nginx_site(template: &str, ports: &[u16], listen: u16) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut servers = 0;
    let mut listens = 0;
    for line in template.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        if let Some(rest) = trimmed.strip_prefix("server 127.0.0.1:") {
            servers += 1;
            if servers == 1 {
                let options = rest.split_once(' ').map_or(";", |(_, o)| o);
                for port in ports {
                    out.push_str(&format!("{indent}server 127.0.0.1:{port} {options}\n"));
                }
            }
            continue;
        }
        if trimmed.starts_with("listen ") {
            listens += 1;
            out.push_str(&format!("{indent}listen 127.0.0.1:{listen};\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    anyhow::ensure!(
        servers > 0 && listens == 1,
        "deploy/nginx/chat-api.conf: expected `server 127.0.0.1:PORT …` lines in the upstream and \
         one `listen` line"
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_nginx_config_is_templated_with_every_instance() {
        let template =
            std::fs::read_to_string(project_root().join("deploy/nginx/chat-api.conf")).unwrap();
        let site = nginx_site(&template, &[4001, 4002, 4003, 4004], 9000).unwrap();
        for port in [4001, 4002, 4003, 4004] {
            assert!(
                site.contains(&format!(
                    "server 127.0.0.1:{port} max_fails=1 fail_timeout=2s;"
                )),
                "{site}"
            );
        }
        assert!(!site.contains("127.0.0.1:3001"), "{site}");
        assert!(site.contains("listen 127.0.0.1:9000;"), "{site}");
        assert!(site.contains("proxy_set_header Upgrade $http_upgrade;"));
        assert!(nginx_site("server { }", &[1], 2).is_err());
    }
}
