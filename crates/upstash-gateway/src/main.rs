//! `upstash-gateway`: run the Upstash-compatible REST server from the command line.
//!
//! Every flag can also come from the environment (see `--help` and the crate README). The tokens
//! are better given through the environment: command lines are visible to other users in `ps`.

use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use tracing_subscriber::EnvFilter;
use upstash_gateway::{FaultConfig, Gateway};

/// An Upstash-compatible REST server over a real redis-server.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Redis to forward to: redis://[user:password@]host[:port][/db]
    #[arg(
        long,
        env = "UPSTASH_GATEWAY_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis: String,

    /// Address to listen on.
    #[arg(long, env = "UPSTASH_GATEWAY_LISTEN", default_value = "127.0.0.1:8079")]
    listen: String,

    /// The REST token clients send (`UPSTASH_REDIS_REST_TOKEN` on their side).
    #[arg(long, env = "UPSTASH_GATEWAY_TOKEN", hide_env_values = true)]
    token: String,

    /// A second token that may run read commands only.
    #[arg(long, env = "UPSTASH_GATEWAY_READ_ONLY_TOKEN", hide_env_values = true)]
    read_only_token: Option<String>,

    /// Enables POST/GET/DELETE /__gateway/fault (run-time fault injection) behind this token.
    #[arg(long, env = "UPSTASH_GATEWAY_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,

    /// Added latency per request, in milliseconds (fault injection; default off).
    #[arg(long, env = "UPSTASH_GATEWAY_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,

    /// Extra random latency per request, uniform in 0..=N milliseconds.
    #[arg(long, env = "UPSTASH_GATEWAY_JITTER_MS", default_value_t = 0)]
    jitter_ms: u64,

    /// Fraction of requests (0.0–1.0) answered with a simulated 503.
    #[arg(long, env = "UPSTASH_GATEWAY_FAILURE_RATE", default_value_t = 0.0)]
    failure_rate: f64,

    /// Largest request body in bytes.
    #[arg(long, env = "UPSTASH_GATEWAY_MAX_BODY_BYTES", default_value_t = upstash_gateway::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,

    /// Seconds a client connection has to send a complete request head before it is closed.
    #[arg(
        long,
        env = "UPSTASH_GATEWAY_HEADER_READ_TIMEOUT_SECS",
        default_value_t = 10
    )]
    header_read_timeout_secs: u64,

    /// Seconds a kept-alive client connection may stay idle between requests.
    #[arg(long, env = "UPSTASH_GATEWAY_IDLE_TIMEOUT_SECS", default_value_t = 75)]
    idle_timeout_secs: u64,

    /// Client connections open at once; more wait to be accepted. Keep it under `ulimit -n`.
    #[arg(
        long,
        env = "UPSTASH_GATEWAY_MAX_CONNECTIONS",
        default_value_t = 10_000
    )]
    max_connections: usize,

    /// Requests handled at once.
    #[arg(long, env = "UPSTASH_GATEWAY_MAX_CONCURRENCY", default_value_t = 512)]
    max_concurrency: usize,

    /// Pooled connections to Redis.
    #[arg(long, env = "UPSTASH_GATEWAY_POOL_SIZE", default_value_t = 32)]
    pool_size: usize,

    /// Seconds after which an unused pooled Redis connection is closed (keep it below Redis's
    /// `timeout` setting, if that is on).
    #[arg(long, env = "UPSTASH_GATEWAY_POOL_IDLE_SECS", default_value_t = 60)]
    pool_idle_secs: u64,

    /// SSE streams (subscribe, psubscribe, monitor) open at once; each holds a Redis connection.
    /// One more gets 503 at once.
    #[arg(long, env = "UPSTASH_GATEWAY_MAX_STREAMS", default_value_t = 256)]
    max_streams: usize,

    /// Seconds of quiet on an SSE stream before a `: keepalive` comment is sent.
    #[arg(long, env = "UPSTASH_GATEWAY_SSE_KEEPALIVE_SECS", default_value_t = 15)]
    sse_keepalive_secs: u64,

    /// Bytes of events an SSE stream may hold for a slow reader before it is closed.
    #[arg(long, env = "UPSTASH_GATEWAY_SSE_BUFFER_BYTES", default_value_t = upstash_gateway::DEFAULT_STREAM_BUFFER_BYTES)]
    sse_buffer_bytes: usize,

    /// Milliseconds Redis has to answer a request before the gateway replies 504.
    #[arg(
        long,
        env = "UPSTASH_GATEWAY_REDIS_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    redis_timeout_ms: u64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("upstash_gateway=info,warn")),
        )
        .init();
    if !(0.0..=1.0).contains(&cli.failure_rate) {
        anyhow::bail!(
            "--failure-rate must be between 0.0 and 1.0, got {}",
            cli.failure_rate
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let faults = FaultConfig::default()
        .with_latency(Duration::from_millis(cli.latency_ms))
        .with_jitter(Duration::from_millis(cli.jitter_ms))
        .with_failure_rate(cli.failure_rate);
    if faults != FaultConfig::default() {
        tracing::warn!(?faults, "fault injection is ON");
    }
    let mut builder = Gateway::builder()
        .redis_url(&cli.redis)
        .bind(&cli.listen)
        .token(cli.token)
        .faults(faults)
        .max_body_bytes(cli.max_body_bytes)
        .max_concurrent_requests(cli.max_concurrency)
        .header_read_timeout(Duration::from_secs(cli.header_read_timeout_secs))
        .idle_timeout(Duration::from_secs(cli.idle_timeout_secs))
        .max_connections(cli.max_connections)
        .pool_size(cli.pool_size)
        .pool_idle_timeout(Duration::from_secs(cli.pool_idle_secs))
        .max_streams(cli.max_streams)
        .stream_keepalive(Duration::from_secs(cli.sse_keepalive_secs))
        .stream_buffer_bytes(cli.sse_buffer_bytes)
        .redis_timeout(Duration::from_millis(cli.redis_timeout_ms));
    if let Some(token) = cli.read_only_token {
        builder = builder.read_only_token(token);
    }
    if let Some(token) = cli.admin_token {
        builder = builder.admin_token(token);
    }
    let gateway = builder.start().await.context("starting the gateway")?;
    tracing::info!(url = %gateway.url(), "ready: set UPSTASH_REDIS_REST_URL to this url");

    shutdown_signal().await;
    tracing::info!("shutting down");
    gateway.shutdown().await;
    Ok(())
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
