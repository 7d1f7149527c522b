//! `upstash-gateway`: run the Upstash-compatible REST server from the command line.
//!
//! Every flag can also come from the environment (see `--help` and the crate README). The tokens
//! are better given through the environment or a file (`--token-file` & co): command lines are
//! visible to other users in `ps`, so a token given there gets a warning.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use clap::{CommandFactory as _, FromArgMatches as _, Parser, parser::ValueSource};
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

    /// The REST token clients send (`UPSTASH_REDIS_REST_TOKEN` on their side). Required, here or
    /// as --token-file; prefer the environment or the file (command lines show in `ps`).
    #[arg(
        long,
        env = "UPSTASH_GATEWAY_TOKEN",
        hide_env_values = true,
        required_unless_present = "token_file",
        conflicts_with = "token_file"
    )]
    token: Option<String>,

    /// A file holding the REST token (a trailing line break is ignored).
    #[arg(long, env = "UPSTASH_GATEWAY_TOKEN_FILE", value_name = "PATH")]
    token_file: Option<PathBuf>,

    /// A second token that may run read commands only.
    #[arg(
        long,
        env = "UPSTASH_GATEWAY_READ_ONLY_TOKEN",
        hide_env_values = true,
        conflicts_with = "read_only_token_file"
    )]
    read_only_token: Option<String>,

    /// A file holding the read-only token (a trailing line break is ignored).
    #[arg(
        long,
        env = "UPSTASH_GATEWAY_READ_ONLY_TOKEN_FILE",
        value_name = "PATH"
    )]
    read_only_token_file: Option<PathBuf>,

    /// Enables POST/GET/DELETE /__gateway/fault (run-time fault injection) behind this token.
    #[arg(
        long,
        env = "UPSTASH_GATEWAY_ADMIN_TOKEN",
        hide_env_values = true,
        conflicts_with = "admin_token_file"
    )]
    admin_token: Option<String>,

    /// A file holding the admin token (a trailing line break is ignored).
    #[arg(long, env = "UPSTASH_GATEWAY_ADMIN_TOKEN_FILE", value_name = "PATH")]
    admin_token_file: Option<PathBuf>,

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
        default_value_t = serve_limits::DEFAULT_HEADER_READ_TIMEOUT.as_secs()
    )]
    header_read_timeout_secs: u64,

    /// Seconds a kept-alive client connection may stay idle between requests.
    #[arg(
        long,
        env = "UPSTASH_GATEWAY_IDLE_TIMEOUT_SECS",
        default_value_t = serve_limits::DEFAULT_IDLE_TIMEOUT.as_secs()
    )]
    idle_timeout_secs: u64,

    /// Client connections open at once; more wait to be accepted. Keep it under `ulimit -n`.
    #[arg(
        long,
        env = "UPSTASH_GATEWAY_MAX_CONNECTIONS",
        default_value_t = serve_limits::DEFAULT_MAX_CONNECTIONS
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

    /// Forward the administration commands (CONFIG, ACL, SAVE, BGSAVE, BGREWRITEAOF, SWAPDB,
    /// MODULE, MIGRATE, LATENCY, SLOWLOG, MEMORY but USAGE, PFDEBUG, PFSELFTEST) for the standard
    /// token; refused with 400 otherwise.
    #[arg(long, env = "UPSTASH_GATEWAY_ALLOW_ADMIN_COMMANDS")]
    allow_admin_commands: bool,

    /// Most commands in one /pipeline or /multi-exec request; more gets 400.
    #[arg(
        long,
        env = "UPSTASH_GATEWAY_MAX_PIPELINE_COMMANDS",
        default_value_t = upstash_gateway::DEFAULT_MAX_PIPELINE_COMMANDS
    )]
    max_pipeline_commands: usize,

    /// Most arguments (command names included) in one request, over all its commands; more gets
    /// 400.
    #[arg(
        long,
        env = "UPSTASH_GATEWAY_MAX_REQUEST_ARGS",
        default_value_t = upstash_gateway::DEFAULT_MAX_REQUEST_ARGS
    )]
    max_request_args: usize,

    /// Seconds a client has to send a request's whole body after its headers; then 408.
    #[arg(
        long,
        env = "UPSTASH_GATEWAY_BODY_READ_TIMEOUT_SECS",
        default_value_t = upstash_gateway::DEFAULT_BODY_READ_TIMEOUT.as_secs()
    )]
    body_read_timeout_secs: u64,
}

/// The three tokens, each from its value or its file.
#[derive(Debug, PartialEq, Eq)]
struct ResolvedTokens {
    token: String,
    read_only: Option<String>,
    admin: Option<String>,
}

impl Cli {
    fn tokens(&self) -> anyhow::Result<ResolvedTokens> {
        let token = token_from(&self.token, &self.token_file, "--token-file")?
            .context("a REST token is required: --token-file or UPSTASH_GATEWAY_TOKEN")?;
        Ok(ResolvedTokens {
            token,
            read_only: token_from(
                &self.read_only_token,
                &self.read_only_token_file,
                "--read-only-token-file",
            )?,
            admin: token_from(
                &self.admin_token,
                &self.admin_token_file,
                "--admin-token-file",
            )?,
        })
    }
}

/// A token given as a value, else read from its file (clap refuses both at once).
fn token_from(
    value: &Option<String>,
    file: &Option<PathBuf>,
    flag: &str,
) -> anyhow::Result<Option<String>> {
    match (value, file) {
        (Some(value), _) => Ok(Some(value.clone())),
        (None, Some(path)) => read_token_file(path, flag).map(Some),
        (None, None) => Ok(None),
    }
}

/// The token in `path`, without the line break(s) an editor or `echo` leaves at the end. The
/// error names the file, never its content.
fn read_token_file(path: &Path, flag: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{flag}: cannot read {}", path.display()))?;
    let token = text.trim_end_matches(['\r', '\n']);
    if token.is_empty() {
        anyhow::bail!("{flag}: {} is empty", path.display());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                file = %path.display(),
                "{flag}: the token file is readable by other users (chmod 600 it)"
            );
        }
    }
    Ok(token.to_owned())
}

fn main() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("upstash_gateway=info,warn")),
        )
        .init();
    for flag in ["token", "read_only_token", "admin_token"] {
        if matches.value_source(flag) == Some(ValueSource::CommandLine) {
            let flag = flag.replace('_', "-");
            tracing::warn!(
                "--{flag} was given on the command line, where other users can read it (ps); \
                 use its environment variable or --{flag}-file"
            );
        }
    }
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
    let tokens = cli.tokens()?;
    let mut builder = Gateway::builder()
        .redis_url(&cli.redis)
        .bind(&cli.listen)
        .token(tokens.token)
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
        .redis_timeout(Duration::from_millis(cli.redis_timeout_ms))
        .allow_admin_commands(cli.allow_admin_commands)
        .max_pipeline_commands(cli.max_pipeline_commands)
        .max_request_args(cli.max_request_args)
        .body_read_timeout(Duration::from_secs(cli.body_read_timeout_secs));
    if cli.allow_admin_commands {
        tracing::warn!("administration commands (CONFIG, ACL, SAVE, …) are forwarded");
    }
    if let Some(token) = tokens.read_only {
        builder = builder.read_only_token(token);
    }
    if let Some(token) = tokens.admin {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("upstash-gateway").chain(args.iter().copied()))
    }

    fn temp_file(name: &str, content: &str) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("upstash-gateway-{}-{name}", std::process::id()));
        std::fs::write(&path, content).expect("write the token file");
        path
    }

    #[test]
    fn tokens_come_from_files_without_their_trailing_line_break() {
        let full = temp_file("full", "full-secret\n");
        let read_only = temp_file("ro", "ro-secret\r\n");
        let admin = temp_file("admin", "admin-secret");
        let cli = parse(&[
            "--token-file",
            full.to_str().unwrap(),
            "--read-only-token-file",
            read_only.to_str().unwrap(),
            "--admin-token-file",
            admin.to_str().unwrap(),
        ])
        .unwrap();
        assert_eq!(
            cli.tokens().unwrap(),
            ResolvedTokens {
                token: "full-secret".into(),
                read_only: Some("ro-secret".into()),
                admin: Some("admin-secret".into()),
            }
        );
        for path in [full, read_only, admin] {
            let _ = std::fs::remove_file(path);
        }
    }

    #[test]
    fn a_token_file_must_exist_and_hold_a_token() {
        let empty = temp_file("empty", "\n");
        let cli = parse(&["--token-file", empty.to_str().unwrap()]).unwrap();
        let err = cli.tokens().unwrap_err().to_string();
        assert!(err.contains("is empty"), "{err}");
        let _ = std::fs::remove_file(empty);
        let cli = parse(&["--token-file", "/nonexistent/upstash-gateway-token"]).unwrap();
        assert!(
            cli.tokens()
                .unwrap_err()
                .to_string()
                .contains("cannot read")
        );
    }

    #[test]
    fn a_token_is_required_once() {
        // (Unless UPSTASH_GATEWAY_TOKEN is set in the environment that runs the tests.)
        if std::env::var_os("UPSTASH_GATEWAY_TOKEN").is_none() {
            assert!(parse(&[]).is_err());
        }
        assert!(parse(&["--token", "a", "--token-file", "/tmp/x"]).is_err());
        assert_eq!(
            parse(&["--token", "a"]).unwrap().tokens().unwrap().token,
            "a"
        );
    }

    #[test]
    fn limits_and_admin_flag_parse() {
        let cli = parse(&[
            "--token",
            "a",
            "--allow-admin-commands",
            "--max-pipeline-commands",
            "5",
            "--body-read-timeout-secs",
            "3",
        ])
        .unwrap();
        assert!(cli.allow_admin_commands);
        assert_eq!(cli.max_pipeline_commands, 5);
        assert_eq!(cli.body_read_timeout_secs, 3);
        assert!(!parse(&["--token", "a"]).unwrap().allow_admin_commands);
    }
}
