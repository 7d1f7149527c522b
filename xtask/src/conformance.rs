//! `cargo xtask conformance`: the official Upstash SDKs, unmodified, against `upstash-gateway`.
//!
//! Builds the gateway binary, starts `redis-server` and the gateway on free loopback ports,
//! installs `@upstash/redis` (npm, `conformance/node`) and `upstash-redis` (PyPI, into
//! `target/conformance/venv`) when they are missing, runs `conformance/node/conformance.mjs` and
//! `conformance/python/conformance.py`, and reports. Fails if either script reports a mismatch.
//!
//! `--only node` / `--only python` runs one of them.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::util::{
    Process, cargo, free_port, project_root, python_venv, run_cmd, summarize, target_dir,
};

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let only = match args {
        [] => None,
        [flag, which] if flag == "--only" && (which == "node" || which == "python") => {
            Some(which.as_str())
        }
        _ => bail!("usage: cargo xtask conformance [--only node|python]"),
    };
    let root = project_root();
    let redis_server = find_redis_server()?;

    let mut build = cargo();
    build.args(["build", "-p", "upstash-gateway", "--bin", "upstash-gateway"]);
    run_cmd(build)?;
    let target_dir = target_dir();
    let gateway_bin = target_dir
        .join("debug")
        .join(format!("upstash-gateway{}", std::env::consts::EXE_SUFFIX));

    let redis_port = free_port()?;
    let redis = Process::spawn(
        "redis-server",
        Command::new(&redis_server)
            .args([
                "--port",
                &redis_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdout(Stdio::null()),
    )?;
    wait_until("redis-server answers PING", || {
        redis_answers_ping(redis_port)
    })?;

    let gateway_port = free_port()?;
    let token = format!("conformance-{}-{}", std::process::id(), redis_port);
    let gateway_url = format!("http://127.0.0.1:{gateway_port}");
    let gateway = Process::spawn(
        "upstash-gateway",
        Command::new(&gateway_bin)
            .env(
                "UPSTASH_GATEWAY_REDIS_URL",
                format!("redis://127.0.0.1:{redis_port}"),
            )
            .env(
                "UPSTASH_GATEWAY_LISTEN",
                format!("127.0.0.1:{gateway_port}"),
            )
            .env("UPSTASH_GATEWAY_TOKEN", &token)
            .env("RUST_LOG", "upstash_gateway=warn"),
    )?;
    wait_until("the gateway reports healthy", || {
        gateway_healthy(gateway_port)
    })?;
    eprintln!("redis-server on :{redis_port}, upstash-gateway at {gateway_url}");

    let mut outcomes = Vec::new();
    if only.is_none_or(|o| o == "node") {
        outcomes.push((
            "@upstash/redis (npm)",
            run_node(&root, &gateway_url, &token).map(|()| String::new()),
        ));
    }
    if only.is_none_or(|o| o == "python") {
        outcomes.push((
            "upstash-redis (PyPI)",
            run_python(&root, &gateway_url, &token).map(|()| String::new()),
        ));
    }
    drop(gateway);
    drop(redis);

    summarize("conformance summary", "SDK conformance runs", &outcomes)
}

fn run_node(root: &Path, url: &str, token: &str) -> anyhow::Result<()> {
    let dir = root.join("conformance").join("node");
    if !dir
        .join("node_modules")
        .join("@upstash")
        .join("redis")
        .is_dir()
    {
        let mut install = Command::new("npm");
        install
            .current_dir(&dir)
            .args(["ci", "--no-audit", "--no-fund"]);
        run_cmd(install).context("installing @upstash/redis (needs node and npm)")?;
    }
    let mut script = Command::new("node");
    script
        .current_dir(&dir)
        .arg("conformance.mjs")
        .env("UPSTASH_REDIS_REST_URL", url)
        .env("UPSTASH_REDIS_REST_TOKEN", token)
        .env("UPSTASH_DISABLE_TELEMETRY", "1");
    run_cmd(script)
}

fn run_python(root: &Path, url: &str, token: &str) -> anyhow::Result<()> {
    let requirements = root
        .join("conformance")
        .join("python")
        .join("requirements.txt");
    let python = python_venv("conformance", &requirements)?;
    let mut script = Command::new(&python);
    script
        .arg(
            root.join("conformance")
                .join("python")
                .join("conformance.py"),
        )
        .env("UPSTASH_REDIS_REST_URL", url)
        .env("UPSTASH_REDIS_REST_TOKEN", token);
    run_cmd(script)
}

fn find_redis_server() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("REDIS_SERVER") {
        return Ok(PathBuf::from(path));
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join("redis-server")).find(|p| p.is_file()))
        .context(
            "redis-server not found on PATH: install it (Debian/Ubuntu: apt-get install redis-server; \
             macOS: brew install redis) or set REDIS_SERVER=/path/to/redis-server",
        )
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("timed out waiting until {what}")
}

fn exchange(port: u16, request: &[u8]) -> Option<Vec<u8>> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(request).ok()?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 1024];
    // Read until the peer closes or the expected end shows up.
    while let Ok(n) = stream.read(&mut chunk) {
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&chunk[..n]);
        if reply.ends_with(b"\r\n") && reply.starts_with(b"+") {
            break;
        }
    }
    Some(reply)
}

fn redis_answers_ping(port: u16) -> bool {
    exchange(port, b"PING\r\n").is_some_and(|reply| reply == b"+PONG\r\n")
}

fn gateway_healthy(port: u16) -> bool {
    let request = format!(
        "GET /__gateway/health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    );
    exchange(port, request.as_bytes()).is_some_and(|reply| reply.starts_with(b"HTTP/1.1 200"))
}
