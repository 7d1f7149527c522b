//! A small load driver for the gateway: Upstash REST requests over keep-alive HTTP/1.1.
//!
//! Each connection sends, in turn, path-form `GET`s, JSON-form `SET`s and a 3-command
//! `/pipeline` (4:4:2), waits for each answer, and records its latency. At the end it prints one
//! line: requests per second, p50/p99/max latency and the number of non-200 answers.
//!
//! ```sh
//! cargo run --release -p upstash-gateway --example load -- \
//!     --url http://127.0.0.1:8079 --token dev-token --connections 48 --seconds 10
//! ```
//!
//! A raw client rather than an HTTP library keeps the driver's own cost small and predictable,
//! which matters when it shares a two-core machine with the server it measures.

#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

#[derive(Parser, Debug)]
struct Args {
    /// The gateway, `http://host:port`.
    #[arg(long, default_value = "http://127.0.0.1:8079")]
    url: String,
    /// The REST token.
    #[arg(long, env = "UPSTASH_GATEWAY_TOKEN")]
    token: String,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 48)]
    connections: usize,
    /// How long to send for.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Distinct keys.
    #[arg(long, default_value_t = 1000)]
    keys: usize,
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    failures: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let addr = args
        .url
        .strip_prefix("http://")
        .context("--url must be http://host:port")?
        .trim_end_matches('/')
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.connections);
    for worker in 0..args.connections {
        let (addr, token, keys) = (addr.clone(), args.token.clone(), args.keys.max(1));
        tasks.push(tokio::spawn(async move {
            drive(&addr, &token, worker, keys, deadline).await
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await.context("a load task panicked")??;
        total.latencies_us.extend(tally.latencies_us);
        total.failures += tally.failures;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let lat = &mut total.latencies_us;
    if lat.is_empty() {
        bail!("no request completed");
    }
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "requests={} rps={:.0} p50_us={} p99_us={} max_us={} non_200={}",
        lat.len(),
        lat.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        lat[lat.len() - 1],
        total.failures
    );
    Ok(())
}

async fn drive(
    addr: &str,
    token: &str,
    worker: usize,
    keys: usize,
    deadline: Instant,
) -> anyhow::Result<Tally> {
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let mut tally = Tally::default();
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut n = worker;
    while Instant::now() < deadline {
        n = n.wrapping_add(1);
        let key = n % keys;
        let (method, path, body) = match n % 10 {
            0 | 5 => (
                "POST",
                "/pipeline".to_owned(),
                format!(r#"[["SET","k{key}","v{n}"],["GET","k{key}"],["INCR","counter"]]"#),
            ),
            1 | 3 | 6 | 8 => ("GET", format!("/get/k{key}"), String::new()),
            _ => (
                "POST",
                "/".to_owned(),
                format!(r#"["SET","k{key}","value-{n:0>48}"]"#),
            ),
        };
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let sent = Instant::now();
        stream.write_all(request.as_bytes()).await?;
        let status = read_response(&mut stream, &mut buf).await?;
        let micros = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
        tally.latencies_us.push(micros);
        if status != 200 {
            tally.failures += 1;
        }
    }
    Ok(tally)
}

/// Reads one response with a `Content-Length` body; returns its status.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<u16> {
    buf.clear();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).context("response head is not UTF-8")?;
            let status: u16 = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .context("no status")?;
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .context("no content-length")?;
            let total = end + 4 + length;
            while buf.len() < total {
                let read = stream.read(&mut chunk).await?;
                if read == 0 {
                    bail!("the gateway closed the connection");
                }
                buf.extend_from_slice(&chunk[..read]);
            }
            buf.drain(..total);
            return Ok(status);
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            bail!("the gateway closed the connection");
        }
        buf.extend_from_slice(&chunk[..read]);
    }
}
