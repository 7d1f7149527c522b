//! Configuration: one typed [`Config`], parsed once from flags and the environment ([`Cli`]).
//!
//! Every setting is a `--flag` and an environment variable of the same name (`CHAT_ADDR`,
//! `DATABASE_URL`, `CACHE_BACKEND`, …: clients and scripts rely on these names); the binary
//! loads `.env.local` and `.env` into the environment first, so the precedence is
//! flag > environment > `.env.local` > `.env` > default. Tests build a [`Config`] directly.

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};

/// A secret string (the Upstash token): its `Debug` and `Display` never show the value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        SecretString(value.into())
    }

    /// The secret itself; call only where it is sent to the service it belongs to.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty (not configured).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "SecretString(<empty>)"
        } else {
            "SecretString(<redacted>)"
        })
    }
}

/// Which cache backend to run on: `auto` is tiered when Upstash credentials are set, memory
/// otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CacheBackendKind {
    /// Tiered when Upstash credentials are set, memory otherwise.
    Auto,
    /// The in-process moka cache only.
    Memory,
    /// Upstash Redis only.
    Upstash,
    /// Memory (L1) in front of Upstash (L2).
    Tiered,
    /// No cache: every read goes to the database (the baseline of benchmarks).
    None,
}

/// Whether instances share a backplane (`CACHE_BACKPLANE=auto|off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackplaneMode {
    /// On whenever the cache is `tiered` or `upstash` (Upstash carries the bus), off otherwise.
    Auto,
    /// Never: one instance only, or several that accept L1 staleness up to
    /// `CACHE_L1_MAX_TTL_MS` and realtime events only from their own writes.
    Off,
}

/// An on/off switch (`RATE_LIMIT=on|off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// Whether anyone may register (`REGISTRATION=open|closed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Registration {
    /// `POST /api/v1/users` creates users.
    Open,
    /// `POST /api/v1/users` answers 403 `registration_closed`.
    Closed,
}

/// The default database: a SQLite file under `./data/`, created on start.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/chat.db";

/// The chat HTTP and WebSocket server.
///
/// Every flag can also be set by the environment variable named next to it, or in `.env` /
/// `.env.local` in the working directory. `RUST_LOG` sets the log filter (default `info`).
#[derive(Parser, Debug)]
#[command(name = "chat-api", version, about)]
pub struct Cli {
    /// Address to listen on.
    #[arg(long, env = "CHAT_ADDR", default_value = "127.0.0.1:3000")]
    pub chat_addr: SocketAddr,

    /// Database: sqlite://path/to/file.db (created and migrated on start) or postgres://…
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub database_url: String,

    /// Most database connections in the pool.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,

    /// Cache backend: auto picks tiered when Upstash credentials are set, memory otherwise; none
    /// switches caching off (benchmark baseline).
    #[arg(long, env = "CACHE_BACKEND", value_enum, default_value = "auto")]
    pub cache_backend: CacheBackendKind,

    /// Upstash REST URL (falls back to KV_REST_API_URL).
    #[arg(long, env = "UPSTASH_REDIS_REST_URL")]
    pub upstash_redis_rest_url: Option<String>,

    /// Upstash REST token (falls back to KV_REST_API_TOKEN). A secret: prefer the environment.
    #[arg(long, env = "UPSTASH_REDIS_REST_TOKEN", hide_env_values = true)]
    pub upstash_redis_rest_token: Option<String>,

    /// Prefix of every cache key (several apps can share one Redis).
    #[arg(long, env = "CACHE_PREFIX", default_value = "chat")]
    pub cache_prefix: String,

    /// Capacity of the in-process cache in MiB. Pages are ~20 KB each, lookups a few hundred
    /// bytes: too small a cache evicts the lookups every request needs to make room for pages
    /// read once (64 MiB reloaded lookups on a third of the requests of the benchmark's
    /// 100,000-message dataset; 256 MiB holds its working set).
    #[arg(long, env = "CACHE_MEMORY_MIB", default_value_t = 256)]
    pub cache_memory_mib: u64,

    /// Seconds a user's channel list stays fresh in the cache (the original used 300).
    #[arg(long, env = "CACHE_CHANNELS_TTL_SECS", default_value_t = 300)]
    pub cache_channels_ttl_secs: u64,

    /// Seconds the latest page of a channel stays fresh in the cache (the original used 120).
    #[arg(long, env = "CACHE_MESSAGES_TTL_SECS", default_value_t = 120)]
    pub cache_messages_ttl_secs: u64,

    /// Seconds token records (a user and its memberships) and channels stay fresh in the cache.
    #[arg(long, env = "CACHE_LOOKUPS_TTL_SECS", default_value_t = 300)]
    pub cache_lookups_ttl_secs: u64,

    /// Seconds past freshness an entry may be served stale while it is refreshed, or when the
    /// database fails (0 disables stale serving).
    #[arg(long, env = "CACHE_GRACE_SECS", default_value_t = 0)]
    pub cache_grace_secs: u64,

    /// Milliseconds every L2 (Upstash) call may take in tiered mode.
    #[arg(long, env = "CACHE_L2_TIMEOUT_MS", default_value_t = 500)]
    pub cache_l2_timeout_ms: u64,

    /// Milliseconds an entry may stay in L1 in tiered mode while no backplane is connected (bounds
    /// cross-instance staleness then; with the backplane connected, entries keep their whole TTL).
    #[arg(long, env = "CACHE_L1_MAX_TTL_MS", default_value_t = 5_000)]
    pub cache_l1_max_ttl_ms: u64,

    /// Consecutive L2 failures that open the circuit breaker in tiered mode.
    #[arg(long, env = "CACHE_BREAKER_FAILURES", default_value_t = 3)]
    pub cache_breaker_failures: u32,

    /// Milliseconds the breaker stays open (L2 skipped) before one request probes L2 again.
    #[arg(long, env = "CACHE_BREAKER_OPEN_MS", default_value_t = 5_000)]
    pub cache_breaker_open_ms: u64,

    /// The backplane between instances sharing one Upstash: cache invalidation notices and
    /// realtime events over Redis pub/sub on `<CACHE_PREFIX>:bus`. auto turns it on with the
    /// tiered or upstash cache.
    #[arg(long, env = "CACHE_BACKPLANE", value_enum, default_value = "auto")]
    pub cache_backplane: BackplaneMode,

    /// Reverse proxies whose `X-Forwarded-For` names the client for per-address rate limits:
    /// comma-separated addresses and CIDR networks (e.g. `127.0.0.1,10.0.0.0/8`). Empty (the
    /// default) trusts no one: the peer address is the client.
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: crate::client_ip::TrustedProxies,

    /// Per-user rate limits (off for benchmarks).
    #[arg(long, env = "RATE_LIMIT", value_enum, default_value = "on")]
    pub rate_limit: Switch,

    /// Whether POST /api/v1/users registers new users.
    #[arg(long, env = "REGISTRATION", value_enum, default_value = "open")]
    pub registration: Registration,

    /// Largest request body in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,

    /// Seconds a request may take before it is answered 503 `timeout`. Reading the request body
    /// counts, so this also bounds a client that trickles its body.
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 10)]
    pub request_timeout_secs: u64,

    /// Seconds a connection has to send a complete request head (from connecting, or from the
    /// first byte of its next request); a slower one is closed.
    #[arg(
        long,
        env = "HTTP_HEADER_READ_TIMEOUT_SECS",
        default_value_t = serve_limits::DEFAULT_HEADER_READ_TIMEOUT.as_secs()
    )]
    pub http_header_read_timeout_secs: u64,

    /// Seconds a kept-alive connection may stay idle between requests before it is closed.
    #[arg(
        long,
        env = "HTTP_IDLE_TIMEOUT_SECS",
        default_value_t = serve_limits::DEFAULT_IDLE_TIMEOUT.as_secs()
    )]
    pub http_idle_timeout_secs: u64,

    /// Connections open at once, WebSocket sessions included; more wait to be accepted. Keep it
    /// under the process's open-file limit (`ulimit -n`).
    #[arg(
        long,
        env = "MAX_CONNECTIONS",
        default_value_t = serve_limits::DEFAULT_MAX_CONNECTIONS
    )]
    pub max_connections: usize,

    /// Seconds between WebSocket heartbeats; a client silent for two intervals is disconnected.
    #[arg(long, env = "WS_HEARTBEAT_SECS", default_value_t = 30)]
    pub ws_heartbeat_secs: u64,

    /// Most WebSocket sessions one user may hold on this instance; the next is refused (429
    /// `too_many_sessions`, or close code 4030 after an `identify` frame).
    #[arg(long, env = "WS_MAX_SESSIONS_PER_USER", default_value_t = 16)]
    pub ws_max_sessions_per_user: usize,

    /// Frames a second a WebSocket client may send (bursts of as many); excess frames are
    /// ignored, and a client that keeps on is closed with 4029.
    #[arg(long, env = "WS_MAX_FRAMES_PER_SEC", default_value_t = 20)]
    pub ws_max_frames_per_sec: u32,

    /// Milliseconds a WebSocket frame may wait for the client to read before the session is
    /// dropped (bounds what a client that stops reading holds).
    #[arg(long, env = "WS_SEND_TIMEOUT_MS", default_value_t = 10_000)]
    pub ws_send_timeout_ms: u64,

    /// The live cache dashboard at `/dashboard` (its data stream, `/dashboard/stream`). on: with
    /// `DASHBOARD_TOKEN` set, for whoever sends that token; without one, only for requests from
    /// this machine (a loopback peer, no forwarding headers). off: the stream answers 404.
    #[arg(long, env = "DASHBOARD", value_enum, default_value = "on")]
    pub dashboard: Switch,

    /// The bearer token the dashboard asks for (anyone with it sees the instance's metrics, never
    /// a user's or the Upstash token). Unset: the dashboard is for local requests only.
    #[arg(long, env = "DASHBOARD_TOKEN", hide_env_values = true)]
    pub dashboard_token: Option<String>,

    /// Serve the web client's and dashboard's files from this directory, re-read on every
    /// request, instead of the copies built into the binary (for working on the front end).
    #[arg(long, env = "WEB_ASSETS_DIR")]
    pub web_assets_dir: Option<PathBuf>,
}

/// Who may read the dashboard's data.
#[derive(Clone, PartialEq, Eq)]
pub enum DashboardAccess {
    /// Nobody: `/dashboard/stream` answers 404.
    Off,
    /// Requests from this machine only: a loopback peer that sent no forwarding header.
    Local,
    /// Whoever sends this bearer token, from anywhere.
    Token(SecretString),
}

impl fmt::Debug for DashboardAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DashboardAccess::Off => f.write_str("Off"),
            DashboardAccess::Local => f.write_str("Local"),
            DashboardAccess::Token(token) => f.debug_tuple("Token").field(token).finish(),
        }
    }
}

/// An invalid setting, found when the configuration is checked or a backend is built.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

/// The checked configuration of the server. Its `Debug` hides the database URL's credentials and
/// the Upstash token.
#[derive(Clone)]
pub struct Config {
    /// Listen address.
    pub addr: SocketAddr,
    /// Database URL (`sqlite:` or `postgres:`).
    pub database_url: String,
    /// Pool size.
    pub database_max_connections: u32,
    /// Cache backend.
    pub cache_backend: CacheBackendKind,
    /// Upstash REST URL, if configured.
    pub upstash_url: Option<String>,
    /// Upstash REST token, if configured.
    pub upstash_token: SecretString,
    /// Cache key prefix.
    pub cache_prefix: String,
    /// L1 capacity in bytes.
    pub cache_memory_bytes: u64,
    /// Channel-list freshness.
    pub channels_ttl: Duration,
    /// Latest-page freshness.
    pub messages_ttl: Duration,
    /// Token record (user and memberships) and channel freshness.
    pub lookups_ttl: Duration,
    /// Stale grace period.
    pub cache_grace: Duration,
    /// Tiered L2 timeout.
    pub l2_timeout: Duration,
    /// Tiered L1 cap.
    pub l1_max_ttl: Duration,
    /// Tiered L2 circuit breaker.
    pub breaker: cache_core::BreakerConfig,
    /// The backplane setting (see [`Config::backplane_enabled`]).
    pub backplane: BackplaneMode,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: crate::client_ip::TrustedProxies,
    /// Rate limiting on.
    pub rate_limit: bool,
    /// Registration open.
    pub registration_open: bool,
    /// Body limit.
    pub max_body_bytes: usize,
    /// Request timeout.
    pub request_timeout: Duration,
    /// Connection limits: header-read and idle timeouts, connection cap.
    pub server: serve_limits::ServerLimits,
    /// WebSocket heartbeat interval.
    pub ws_heartbeat: Duration,
    /// WebSocket sessions per user and instance.
    pub ws_max_sessions_per_user: usize,
    /// Frames a second a WebSocket client may send.
    pub ws_max_frames_per_sec: u32,
    /// How long a WebSocket frame may wait for a client that does not read.
    pub ws_send_timeout: Duration,
    /// Who may read the live dashboard.
    pub dashboard: DashboardAccess,
    /// Where the web pages are read from instead of the binary, if anywhere.
    pub web_assets_dir: Option<PathBuf>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("database", &redact_url(&self.database_url))
            .field("cache_backend", &self.cache_backend)
            .field("upstash_url", &self.upstash_url.as_deref().map(redact_url))
            .field("upstash_token", &self.upstash_token)
            .field("backplane", &self.backplane)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("rate_limit", &self.rate_limit)
            .field("registration_open", &self.registration_open)
            .field("dashboard", &self.dashboard)
            .finish_non_exhaustive()
    }
}

/// `scheme://user:password@host/db` → `scheme://***@host/db`: URLs may carry credentials.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

impl Default for Config {
    /// The defaults of the command line, without reading the environment.
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 3000)),
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            database_max_connections: 16,
            cache_backend: CacheBackendKind::Auto,
            upstash_url: None,
            upstash_token: SecretString::default(),
            cache_prefix: crate::cache::KEY_PREFIX.to_owned(),
            cache_memory_bytes: 256 * 1024 * 1024,
            channels_ttl: Duration::from_secs(300),
            messages_ttl: Duration::from_secs(120),
            lookups_ttl: Duration::from_secs(300),
            cache_grace: Duration::ZERO,
            l2_timeout: Duration::from_millis(500),
            l1_max_ttl: Duration::from_secs(5),
            breaker: cache_core::BreakerConfig::default(),
            backplane: BackplaneMode::Auto,
            trusted_proxies: crate::client_ip::TrustedProxies::default(),
            rate_limit: true,
            registration_open: true,
            max_body_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(10),
            server: serve_limits::ServerLimits::default(),
            ws_heartbeat: Duration::from_secs(30),
            ws_max_sessions_per_user: 16,
            ws_max_frames_per_sec: 20,
            ws_send_timeout: Duration::from_secs(10),
            dashboard: DashboardAccess::Local,
            web_assets_dir: None,
        }
    }
}

impl Cli {
    /// Checks the flags and turns them into a [`Config`]. `kv_fallback` supplies the Vercel KV
    /// names (`KV_REST_API_URL`, `KV_REST_API_TOKEN`) read when the Upstash ones are unset.
    pub fn into_config(
        self,
        kv_fallback: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let non_empty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        let upstash_url = non_empty(self.upstash_redis_rest_url)
            .or_else(|| non_empty(kv_fallback("KV_REST_API_URL")));
        let upstash_token = non_empty(self.upstash_redis_rest_token)
            .or_else(|| non_empty(kv_fallback("KV_REST_API_TOKEN")))
            .map(SecretString::new)
            .unwrap_or_default();
        let positive = |name: &str, value: u64| {
            if value == 0 {
                Err(ConfigError(format!("{name} must be greater than zero")))
            } else {
                Ok(value)
            }
        };
        let config = Config {
            addr: self.chat_addr,
            database_url: self.database_url,
            database_max_connections: positive(
                "DATABASE_MAX_CONNECTIONS",
                self.database_max_connections.into(),
            )? as u32,
            cache_backend: self.cache_backend,
            upstash_url,
            upstash_token,
            cache_prefix: self.cache_prefix,
            cache_memory_bytes: positive("CACHE_MEMORY_MIB", self.cache_memory_mib)? * 1024 * 1024,
            channels_ttl: Duration::from_secs(positive(
                "CACHE_CHANNELS_TTL_SECS",
                self.cache_channels_ttl_secs,
            )?),
            messages_ttl: Duration::from_secs(positive(
                "CACHE_MESSAGES_TTL_SECS",
                self.cache_messages_ttl_secs,
            )?),
            lookups_ttl: Duration::from_secs(positive(
                "CACHE_LOOKUPS_TTL_SECS",
                self.cache_lookups_ttl_secs,
            )?),
            cache_grace: Duration::from_secs(self.cache_grace_secs),
            l2_timeout: Duration::from_millis(positive(
                "CACHE_L2_TIMEOUT_MS",
                self.cache_l2_timeout_ms,
            )?),
            l1_max_ttl: Duration::from_millis(positive(
                "CACHE_L1_MAX_TTL_MS",
                self.cache_l1_max_ttl_ms,
            )?),
            breaker: cache_core::BreakerConfig::default()
                .with_failure_threshold(positive(
                    "CACHE_BREAKER_FAILURES",
                    self.cache_breaker_failures.into(),
                )? as u32)
                .with_open_for(Duration::from_millis(positive(
                    "CACHE_BREAKER_OPEN_MS",
                    self.cache_breaker_open_ms,
                )?)),
            backplane: self.cache_backplane,
            trusted_proxies: self.trusted_proxies,
            rate_limit: self.rate_limit == Switch::On,
            registration_open: self.registration == Registration::Open,
            max_body_bytes: usize::try_from(positive(
                "MAX_BODY_BYTES",
                self.max_body_bytes as u64,
            )?)
            .unwrap_or(usize::MAX),
            request_timeout: Duration::from_secs(positive(
                "REQUEST_TIMEOUT_SECS",
                self.request_timeout_secs,
            )?),
            server: serve_limits::ServerLimits::default()
                .with_header_read_timeout(Duration::from_secs(positive(
                    "HTTP_HEADER_READ_TIMEOUT_SECS",
                    self.http_header_read_timeout_secs,
                )?))
                .with_idle_timeout(Duration::from_secs(positive(
                    "HTTP_IDLE_TIMEOUT_SECS",
                    self.http_idle_timeout_secs,
                )?))
                .with_max_connections(
                    usize::try_from(positive("MAX_CONNECTIONS", self.max_connections as u64)?)
                        .unwrap_or(usize::MAX),
                ),
            ws_heartbeat: Duration::from_secs(positive(
                "WS_HEARTBEAT_SECS",
                self.ws_heartbeat_secs,
            )?),
            ws_max_sessions_per_user: usize::try_from(positive(
                "WS_MAX_SESSIONS_PER_USER",
                self.ws_max_sessions_per_user as u64,
            )?)
            .unwrap_or(usize::MAX),
            ws_max_frames_per_sec: positive(
                "WS_MAX_FRAMES_PER_SEC",
                self.ws_max_frames_per_sec.into(),
            )? as u32,
            ws_send_timeout: Duration::from_millis(positive(
                "WS_SEND_TIMEOUT_MS",
                self.ws_send_timeout_ms,
            )?),
            dashboard: match (self.dashboard, non_empty(self.dashboard_token)) {
                (Switch::Off, _) => DashboardAccess::Off,
                (Switch::On, None) => DashboardAccess::Local,
                (Switch::On, Some(token)) if token.len() < 16 => {
                    return Err(ConfigError(
                        "DASHBOARD_TOKEN must be at least 16 characters".into(),
                    ));
                }
                (Switch::On, Some(token)) => DashboardAccess::Token(SecretString::new(token)),
            },
            web_assets_dir: self.web_assets_dir,
        };
        config.database_kind()?;
        Ok(config)
    }
}

/// Which database a URL points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    /// A SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Config {
    /// The kind of database `database_url` names.
    pub fn database_kind(&self) -> Result<DatabaseKind, ConfigError> {
        let url = self.database_url.as_str();
        if url.starts_with("sqlite:") {
            Ok(DatabaseKind::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DatabaseKind::Postgres)
        } else {
            Err(ConfigError(
                "DATABASE_URL must start with sqlite: or postgres:// (the value is not shown: it may hold a password)".into(),
            ))
        }
    }

    /// The file of a `sqlite:` URL, for creating its directory (`None` for in-memory databases).
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        let rest = self.database_url.strip_prefix("sqlite:")?;
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let path = rest.split('?').next().unwrap_or_default();
        if path.is_empty() || path == ":memory:" {
            None
        } else {
            Some(PathBuf::from(path))
        }
    }

    /// Whether Upstash credentials are configured.
    pub fn has_upstash_credentials(&self) -> bool {
        self.upstash_url.is_some() && !self.upstash_token.is_empty()
    }

    /// The backend `cache_backend` resolves to (`auto` decided by the credentials).
    pub fn resolved_cache_backend(&self) -> CacheBackendKind {
        match self.cache_backend {
            CacheBackendKind::Auto if self.has_upstash_credentials() => CacheBackendKind::Tiered,
            CacheBackendKind::Auto => CacheBackendKind::Memory,
            other => other,
        }
    }

    /// Whether this instance joins the backplane: `CACHE_BACKPLANE=auto` with a cache on Upstash
    /// (`tiered` or `upstash`). The memory cache has nothing shared to keep coherent, and `none`
    /// caches nothing.
    pub fn backplane_enabled(&self) -> bool {
        self.backplane == BackplaneMode::Auto
            && matches!(
                self.resolved_cache_backend(),
                CacheBackendKind::Tiered | CacheBackendKind::Upstash
            )
    }

    /// The pub/sub channel of the backplane: `<CACHE_PREFIX>:bus`, so apps sharing one Redis
    /// under different prefixes do not hear each other.
    pub fn backplane_channel(&self) -> String {
        format!("{}:bus", self.cache_prefix)
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches as _};

    use super::*;

    /// Parses `args` as if the environment held exactly `env` (and nothing of the developer's
    /// shell): every variable is dropped from the command, and the ones in `env` are passed as
    /// flags ahead of `args`, which override them as a real flag overrides the environment.
    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Cli, clap::Error> {
        let mut command = Cli::command().args_override_self(true);
        let mut argv = vec!["chat-api".to_owned()];
        let vars: Vec<(clap::Id, String, String)> = command
            .get_arguments()
            .filter_map(|arg| {
                let var = arg.get_env()?.to_str()?.to_owned();
                Some((arg.get_id().clone(), var, arg.get_long()?.to_owned()))
            })
            .collect();
        for (id, var, long) in vars {
            command = command.mut_arg(id, |arg| arg.env(None));
            if let Some((_, value)) = env.iter().find(|(name, _)| *name == var) {
                argv.push(format!("--{long}={value}"));
            }
        }
        argv.extend(args.iter().map(|arg| (*arg).to_owned()));
        Cli::from_arg_matches(&command.try_get_matches_from(argv)?)
    }

    #[test]
    fn defaults_match_the_contract() {
        let config = parse(&[], &[]).unwrap().into_config(|_| None).unwrap();
        // `Config::default()` is what the command line gives with nothing set.
        assert_eq!(format!("{config:?}"), format!("{:?}", Config::default()));
        assert_eq!(config.addr.to_string(), "127.0.0.1:3000");
        assert_eq!(config.cache_backend, CacheBackendKind::Auto);
        assert_eq!(config.database_kind().unwrap(), DatabaseKind::Sqlite);
        assert_eq!(config.sqlite_path().unwrap(), PathBuf::from("data/chat.db"));
        assert!(!config.has_upstash_credentials());
        let default = Config::default();
        assert_eq!(
            (config.l2_timeout, config.l1_max_ttl, config.messages_ttl),
            (default.l2_timeout, default.l1_max_ttl, default.messages_ttl)
        );
        // The connection limits of the command line are the library's defaults.
        assert_eq!(config.server, serve_limits::ServerLimits::default());
        assert_eq!(config.server, default.server);
    }

    #[test]
    fn variables_set_what_their_flags_set_and_flags_win() {
        let env = [
            ("DATABASE_URL", "postgres://u@db/chat"),
            ("CACHE_BACKEND", "tiered"),
            ("UPSTASH_REDIS_REST_URL", "http://upstash"),
            ("UPSTASH_REDIS_REST_TOKEN", "t"),
        ];
        let config = parse(&[], &env).unwrap().into_config(|_| None).unwrap();
        assert_eq!(config.database_kind().unwrap(), DatabaseKind::Postgres);
        assert_eq!(config.cache_backend, CacheBackendKind::Tiered);
        assert!(config.has_upstash_credentials());
        let config = parse(&["--cache-backend", "memory"], &env)
            .unwrap()
            .into_config(|_| None)
            .unwrap();
        assert_eq!(config.cache_backend, CacheBackendKind::Memory);
        // Every flag has the variable of the same name.
        for arg in Cli::command().get_arguments() {
            let Some(long) = arg.get_long().filter(|l| !matches!(*l, "help" | "version")) else {
                continue;
            };
            let expected = long.replace('-', "_").to_uppercase();
            let var = arg.get_env().and_then(|v| v.to_str());
            assert_eq!(var, Some(expected.as_str()), "--{long}");
        }
    }

    #[test]
    fn the_backplane_follows_the_cache_backend() {
        let env = [
            ("UPSTASH_REDIS_REST_URL", "http://upstash"),
            ("UPSTASH_REDIS_REST_TOKEN", "t"),
            ("CACHE_PREFIX", "app1"),
        ];
        let config = parse(&[], &env).unwrap().into_config(|_| None).unwrap();
        assert_eq!(config.backplane, BackplaneMode::Auto);
        assert!(
            config.backplane_enabled(),
            "auto + credentials = tiered = on"
        );
        assert_eq!(config.backplane_channel(), "app1:bus");
        for backend in ["upstash", "tiered"] {
            let config = parse(&["--cache-backend", backend], &env)
                .unwrap()
                .into_config(|_| None)
                .unwrap();
            assert!(config.backplane_enabled(), "{backend}");
        }
        for backend in ["memory", "none"] {
            let config = parse(&["--cache-backend", backend], &env)
                .unwrap()
                .into_config(|_| None)
                .unwrap();
            assert!(!config.backplane_enabled(), "{backend}");
        }
        let off = [("CACHE_BACKPLANE", "off"), env[0], env[1]];
        let config = parse(&[], &off).unwrap().into_config(|_| None).unwrap();
        assert_eq!(config.backplane, BackplaneMode::Off);
        assert!(!config.backplane_enabled());
        assert!(
            !Config::default().backplane_enabled(),
            "no credentials: memory"
        );
        assert!(parse(&[], &[("CACHE_BACKPLANE", "maybe")]).is_err());
    }

    #[test]
    fn websocket_limits_default_and_refuse_zero() {
        let config = parse(&[], &[]).unwrap().into_config(|_| None).unwrap();
        let default = Config::default();
        assert_eq!(
            (
                config.ws_max_sessions_per_user,
                config.ws_max_frames_per_sec,
                config.ws_send_timeout
            ),
            (
                default.ws_max_sessions_per_user,
                default.ws_max_frames_per_sec,
                default.ws_send_timeout
            )
        );
        let env = [
            ("WS_MAX_SESSIONS_PER_USER", "3"),
            ("WS_MAX_FRAMES_PER_SEC", "5"),
            ("WS_SEND_TIMEOUT_MS", "250"),
        ];
        let config = parse(&[], &env).unwrap().into_config(|_| None).unwrap();
        assert_eq!(config.ws_max_sessions_per_user, 3);
        assert_eq!(config.ws_max_frames_per_sec, 5);
        assert_eq!(config.ws_send_timeout, Duration::from_millis(250));
        for (name, _) in env {
            let err = parse(&[], &[(name, "0")])
                .unwrap()
                .into_config(|_| None)
                .unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn the_token_never_shows() {
        let secret = SecretString::new("hunter2");
        assert!(!format!("{secret:?}").contains("hunter2"));
        let config = Config {
            upstash_token: secret,
            ..Config::default()
        };
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn kv_names_are_a_fallback() {
        let kv = |name: &str| match name {
            "KV_REST_API_URL" => Some("http://kv".into()),
            "KV_REST_API_TOKEN" => Some("t".into()),
            _ => None,
        };
        let cli = parse(&["--database-url", "sqlite::memory:"], &[]).unwrap();
        let config = cli.into_config(kv).unwrap();
        assert_eq!(config.upstash_url.as_deref(), Some("http://kv"));
        assert_eq!(config.upstash_token.expose(), "t");
        assert!(config.sqlite_path().is_none());
        let upstash = [("UPSTASH_REDIS_REST_URL", "http://upstash")];
        let config = parse(&[], &upstash).unwrap().into_config(kv).unwrap();
        assert_eq!(config.upstash_url.as_deref(), Some("http://upstash"));
    }

    #[test]
    fn bad_database_urls_are_rejected_without_echoing_them() {
        let config = Config {
            database_url: "mysql://root:pw@x".into(),
            ..Config::default()
        };
        let err = config.database_kind().unwrap_err().to_string();
        assert!(!err.contains("pw"));
        assert!(!format!("{config:?}").contains("pw"));
        assert_eq!(
            redact_url("postgres://u:pw@h:5432/db"),
            "postgres://***@h:5432/db"
        );
    }

    #[test]
    fn the_dashboard_is_local_by_default_and_takes_a_long_token() {
        let local = parse(&[], &[]).unwrap().into_config(|_| None).unwrap();
        assert_eq!(local.dashboard, DashboardAccess::Local);
        let token = "a-dashboard-token-0123";
        let config = parse(&[], &[("DASHBOARD_TOKEN", token)])
            .unwrap()
            .into_config(|_| None)
            .unwrap();
        assert_eq!(
            config.dashboard,
            DashboardAccess::Token(SecretString::new(token))
        );
        // The token never shows in Debug output.
        assert!(!format!("{config:?}").contains(token));
        let short = parse(&[], &[("DASHBOARD_TOKEN", "short")])
            .unwrap()
            .into_config(|_| None)
            .err()
            .unwrap();
        assert!(short.to_string().contains("at least 16"), "{short}");
        let off = parse(&[], &[("DASHBOARD", "off"), ("DASHBOARD_TOKEN", token)])
            .unwrap()
            .into_config(|_| None)
            .unwrap();
        assert_eq!(off.dashboard, DashboardAccess::Off);
    }
}
