//! Helpers shared by the tasks: the project root, running commands, child processes, ports, the
//! one way every task starts `redis-server`, and a plain `upstash-gateway` in front of it.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// The workspace root, whatever directory `cargo xtask` was started from.
pub(crate) fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Cargo's target directory (`$CARGO_TARGET_DIR`, or `target/` in the workspace).
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| project_root().join("target"), PathBuf::from)
}

/// The cargo that started us (`$CARGO`), so toolchain overrides are respected.
pub(crate) fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(project_root());
    cmd
}

/// Runs `cmd`, echoing it first, and fails if it does not exit 0.
pub(crate) fn run_cmd(mut cmd: Command) -> anyhow::Result<()> {
    eprintln!("$ {}", display(&cmd));
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", display(&cmd)))?;
    if !status.success() {
        bail!("`{}` failed with {status}", display(&cmd));
    }
    Ok(())
}

fn display(cmd: &Command) -> String {
    let mut out = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        out.push(' ');
        out.push_str(&arg.to_string_lossy());
    }
    out
}

/// A child process killed (and waited for) when dropped.
pub(crate) struct Process {
    name: &'static str,
    child: Child,
}

impl Process {
    pub(crate) fn spawn(name: &'static str, cmd: &mut Command) -> anyhow::Result<Self> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Process { name, child })
    }

    /// Waits until the process exits.
    /// The operating system's id of the process.
    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn wait(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.child
            .wait()
            .with_context(|| format!("waiting for {}", self.name))
    }

    /// The exit status if the process has exited, without waiting.
    pub(crate) fn try_wait(&mut self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        self.child
            .try_wait()
            .with_context(|| format!("checking on {}", self.name))
    }

    /// SIGTERM, then wait (a graceful shutdown flushes SQLite).
    pub(crate) fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop in 10 s; killing it", self.name);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `redis-server` binary: `$REDIS_SERVER` if set, else `redis-server` on `PATH`.
pub(crate) fn redis_server_bin() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("REDIS_SERVER") {
        let path = PathBuf::from(path);
        anyhow::ensure!(
            path.is_file(),
            "REDIS_SERVER={} is not a file",
            path.display()
        );
        return Ok(path);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(format!("redis-server{}", std::env::consts::EXE_SUFFIX)))
                .find(|p| p.is_file())
        })
        .context(
            "redis-server not found on PATH: install it (Debian/Ubuntu: apt-get install \
             redis-server; macOS: brew install redis) or set REDIS_SERVER=/path/to/redis-server",
        )
}

/// A private `redis-server` on a loopback port, killed (`SIGKILL`) when dropped.
///
/// [`RedisServer::persistent`] keeps its data on disk (append-only file, fsync on every write),
/// so after [`RedisServer::kill`] and [`RedisServer::restart`] it holds what it held before the
/// crash: an outage check on it cannot pass because Redis came back empty.
pub(crate) struct RedisServer {
    bin: PathBuf,
    port: u16,
    /// The data directory of a persistent server.
    data_dir: Option<PathBuf>,
    process: Option<Process>,
}

impl RedisServer {
    /// A server without persistence on a free port.
    pub(crate) fn ephemeral() -> anyhow::Result<Self> {
        Self::start(free_port()?, None)
    }

    /// A server on a free port that keeps its data in `data_dir` (emptied first) across restarts.
    pub(crate) fn persistent(data_dir: &Path) -> anyhow::Result<Self> {
        let _ = std::fs::remove_dir_all(data_dir);
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        Self::start(free_port()?, Some(data_dir.to_path_buf()))
    }

    fn start(port: u16, data_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let mut server = RedisServer {
            bin: redis_server_bin()?,
            port,
            data_dir,
            process: None,
        };
        server.restart()?;
        Ok(server)
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `kill -9`: no shutdown, no final save.
    pub(crate) fn kill(&mut self) {
        self.process.take();
    }

    /// Starts the server (again) on its port, with its data directory if persistent, and waits
    /// until it answers `PING` (after loading its data).
    pub(crate) fn restart(&mut self) -> anyhow::Result<()> {
        self.process.take();
        let mut cmd = Command::new(&self.bin);
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .stdout(Stdio::null());
        match &self.data_dir {
            Some(dir) => {
                cmd.args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                    .arg(dir);
            }
            None => {
                cmd.args(["--appendonly", "no", "--dir"])
                    .arg(std::env::temp_dir());
            }
        }
        self.process = Some(Process::spawn("redis-server", &mut cmd)?);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.command(&["PING"]).is_err() {
            if Instant::now() >= deadline {
                bail!("redis-server did not answer PING on port {}", self.port);
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Sends one command; returns the start of the reply (up to 64 bytes), or fails on an error
    /// reply.
    pub(crate) fn command(&self, parts: &[&str]) -> anyhow::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut msg = format!("*{}\r\n", parts.len());
        for p in parts {
            msg.push_str(&format!("${}\r\n{p}\r\n", p.len()));
        }
        stream.write_all(msg.as_bytes())?;
        let mut reply = [0u8; 64];
        let n = stream.read(&mut reply)?;
        let reply = String::from_utf8_lossy(&reply[..n]).into_owned();
        anyhow::ensure!(n > 0 && !reply.starts_with('-'), "redis answered {reply:?}");
        Ok(reply)
    }
}

/// Builds the `upstash-gateway` binary (debug) and returns its path.
pub(crate) fn build_gateway() -> anyhow::Result<PathBuf> {
    let mut build = cargo();
    build.args(["build", "-p", "upstash-gateway", "--bin", "upstash-gateway"]);
    run_cmd(build)?;
    Ok(target_dir()
        .join("debug")
        .join(format!("upstash-gateway{}", std::env::consts::EXE_SUFFIX)))
}

/// `upstash-gateway` (the binary at `bin`) in front of `redis` on a free loopback port, accepting
/// `token`, once it answers its health check; returns it (killed when dropped) and its port.
pub(crate) fn start_gateway(
    bin: &Path,
    redis: &RedisServer,
    token: &str,
) -> anyhow::Result<(Process, u16)> {
    let port = free_port()?;
    let gateway = Process::spawn(
        "upstash-gateway",
        Command::new(bin)
            .env("UPSTASH_GATEWAY_REDIS_URL", redis.url())
            .env("UPSTASH_GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
            .env("UPSTASH_GATEWAY_TOKEN", token)
            .env("RUST_LOG", "upstash_gateway=warn"),
    )?;
    wait_ready("upstash-gateway", port, "/__gateway/health")?;
    Ok((gateway, port))
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A plain HTTP/1.0 GET over loopback; returns the status code.
pub(crate) fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

pub(crate) fn wait_ready(name: &str, port: u16, path: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if http_status(port, path) == Some(200) {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(100));
    }
    bail!("{name} did not become ready on port {port}")
}

/// One HTTP/1.0 request over loopback with an optional bearer token and JSON body; returns the
/// status and the body. Enough for set-up calls without an HTTP client dependency.
pub(crate) fn http_json(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("an HTTP response without a header end")?;
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .context("an HTTP response without a status")?;
    Ok((status, body.to_owned()))
}

/// The value of a top-level string field in a JSON text (`"token":"…"`), without a JSON parser.
pub(crate) fn json_string_field(json: &str, field: &str) -> Option<String> {
    let start = json.find(&format!("\"{field}\":\""))? + field.len() + 4;
    let end = start + json[start..].find('"')?;
    Some(json[start..end].to_owned())
}

/// A Python virtual environment under `target/<name>/venv` holding `requirements`, created or
/// refreshed when the requirements changed; returns its `python`.
pub(crate) fn python_venv(name: &str, requirements: &Path) -> anyhow::Result<PathBuf> {
    let venv = target_dir().join(name).join("venv");
    let bin = venv.join(if cfg!(windows) { "Scripts" } else { "bin" });
    let python = bin.join(if cfg!(windows) {
        "python.exe"
    } else {
        "python"
    });
    let stamp = venv.join("requirements.installed");
    let wanted = std::fs::read_to_string(requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        if !python.exists() {
            let mut create = Command::new("python3");
            create.arg("-m").arg("venv").arg(&venv);
            run_cmd(create)
                .context("creating a Python venv (needs python3 with the venv module)")?;
        }
        let mut install = Command::new(&python);
        install
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(requirements);
        run_cmd(install).with_context(|| format!("installing {}", requirements.display()))?;
        std::fs::write(&stamp, wanted).context("writing the venv stamp")?;
    }
    Ok(python)
}

/// The value of a `--time SECS` flag: a positive number of seconds, or `usage` as the error.
pub(crate) fn seconds_arg(value: Option<&String>, usage: &str) -> anyhow::Result<u64> {
    value
        .and_then(|s| s.parse().ok())
        .filter(|&s| s > 0)
        .with_context(|| usage.to_owned())
}

/// Prints one `pass`/`FAIL` line per outcome (a pass may carry a detail) under `title`, and
/// fails if any of the `what` failed.
pub(crate) fn summarize(
    title: &str,
    what: &str,
    outcomes: &[(&str, anyhow::Result<String>)],
) -> anyhow::Result<()> {
    eprintln!("\n{title}:");
    let mut failed = 0;
    for (name, outcome) in outcomes {
        match outcome {
            Ok(detail) => eprintln!("  pass  {name:<20} {detail}"),
            Err(err) => {
                failed += 1;
                eprintln!("  FAIL  {name:<20} {err:#}");
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} {what} failed", outcomes.len());
    }
    Ok(())
}

/// `TEST_DATABASE_URL`, or the local default: the PostgreSQL server tasks create databases on.
pub(crate) fn postgres_server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A PostgreSQL database of its own on [`postgres_server_url`]'s server, created with `psql`
/// (optionally as a copy of `template`) and dropped, with its connections, when dropped.
#[derive(Debug)]
pub(crate) struct PgDatabase {
    /// The server URL `psql` connects to for CREATE and DROP.
    admin: String,
    pub(crate) name: String,
    /// The database's own URL, for chat-api.
    pub(crate) url: String,
}

impl PgDatabase {
    /// A new database named `<prefix>_<pid>_<n>`.
    pub(crate) fn create(prefix: &str, template: Option<&PgDatabase>) -> anyhow::Result<Self> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let admin = postgres_server_url();
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{prefix}_{}_{n}", std::process::id());
        let url = with_database(&admin, &name)?;
        let mut sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        psql(&admin, &sql)?;
        sql = format!("CREATE DATABASE {name}");
        if let Some(template) = template {
            sql.push_str(&format!(" TEMPLATE {}", template.name));
        }
        psql(&admin, &sql).context(
            "creating a PostgreSQL database (needs PostgreSQL at TEST_DATABASE_URL and psql)",
        )?;
        Ok(PgDatabase { admin, name, url })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if let Err(err) = psql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        ) {
            eprintln!("could not drop database {}: {err:#}", self.name);
        }
    }
}

/// `url` with its database (the path) replaced by `name`; the query, if any, is kept.
pub(crate) fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").context("TEST_DATABASE_URL is not a URL")? + 3;
    let authority_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    Ok(out)
}

/// Runs one SQL statement with `psql` on `url`.
pub(crate) fn psql(url: &str, sql: &str) -> anyhow::Result<()> {
    // The URL may hold a password: it goes to psql as an argument, never into our messages.
    let output = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .context("running psql (install postgresql-client)")?;
    if !output.status.success() {
        bail!(
            "psql `{sql}` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// The debug chat-api binary, built first when `build` is set or it is missing.
pub(crate) fn debug_chat_api(build: bool) -> anyhow::Result<PathBuf> {
    let bin = target_dir()
        .join("debug")
        .join(format!("chat-api{}", std::env::consts::EXE_SUFFIX));
    if build || !bin.is_file() {
        let mut cmd = cargo();
        cmd.args(["build", "-p", "chat-api", "--bin", "chat-api"]);
        run_cmd(cmd)?;
    }
    Ok(bin)
}

/// `bin` (a chat-api) on a free port with a fresh SQLite database in `work`, the memory cache and
/// rate limits off, its log in `log`; returns once `/health` answers.
pub(crate) fn start_test_chat_api(
    bin: &Path,
    work: &Path,
    log: &Path,
) -> anyhow::Result<(Process, u16)> {
    let port = free_port()?;
    let server = Process::spawn(
        "chat-api",
        Command::new(bin)
            .current_dir(work)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CHAT_ADDR", format!("127.0.0.1:{port}"))
            .env(
                "DATABASE_URL",
                format!("sqlite://{}", work.join("chat.db").display()),
            )
            .env("CACHE_BACKEND", "memory")
            .env("RATE_LIMIT", "off")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?),
    )?;
    wait_ready("chat-api", port, "/health")?;
    Ok((server, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the outage check relies on: a persistent server comes back from `kill -9` with its
    /// data, an ephemeral one empty.
    #[test]
    fn a_persistent_redis_keeps_its_data_across_kill_and_restart() {
        let dir = target_dir()
            .join("xtask-tests")
            .join(format!("redis-{}", std::process::id()));
        let mut persistent = RedisServer::persistent(&dir).expect("redis-server");
        let mut ephemeral = RedisServer::ephemeral().expect("redis-server");
        for redis in [&persistent, &ephemeral] {
            assert_eq!(
                redis.command(&["SET", "page", "cached"]).unwrap(),
                "+OK\r\n"
            );
        }
        for redis in [&mut persistent, &mut ephemeral] {
            redis.kill();
            assert!(redis.command(&["PING"]).is_err(), "killed");
            redis.restart().expect("restart");
        }
        assert_eq!(
            persistent.command(&["GET", "page"]).unwrap(),
            "$6\r\ncached\r\n"
        );
        assert_eq!(ephemeral.command(&["GET", "page"]).unwrap(), "$-1\r\n");
        drop(persistent);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_database_url_keeps_everything_but_the_database() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x").unwrap(),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h:1/db?sslmode=disable", "x").unwrap(),
            "postgres://u:p@h:1/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h", "x").unwrap(),
            "postgres://h/x"
        );
        assert!(with_database("not a url", "x").is_err());
    }
}
