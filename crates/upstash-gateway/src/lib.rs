#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

// Layout: `http` routes a request through method, auth, format and the command forms; `request`
// parses commands out of it; `response` renders replies as Upstash JSON; `sse` streams pub/sub
// and MONITOR; `admin` is the gateway's own `/__gateway/*` endpoints. `command` holds the tables
// of refused, blocking and read-only commands. `redis` is the RESP2 connection and pool, `resp`
// the wire codec. `fault` is latency/failure injection, `auth` tokens, `error` the library error.
// `testing` (feature `testing`) is a `redis-server` fixture and an in-process gateway for tests.

mod admin;
mod auth;
mod command;
mod error;
mod fault;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod http;
mod redis;
mod request;
mod resp;
mod response;
mod sse;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

use std::{fmt, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    net::TcpListener,
    sync::{Semaphore, watch},
    task::JoinHandle,
};

use crate::{
    auth::{Secret, Tokens},
    http::{AppState, SyncToken},
    redis::{RedisPool, RedisTarget, RedisTimeouts},
};
pub use crate::{
    error::{Error, ErrorKind, Result},
    fault::{FaultConfig, FaultHandle},
};

/// Upstash's request size limit on the free and pay-as-you-go plans.
pub const DEFAULT_MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

/// Default quiet time before an SSE stream gets a `: keepalive` comment.
pub const DEFAULT_STREAM_KEEPALIVE: Duration = Duration::from_secs(15);

/// Default bytes an SSE stream may hold for a slow reader before it is closed.
pub const DEFAULT_STREAM_BUFFER_BYTES: usize = 1024 * 1024;

/// Default time after which an unused pooled Redis connection is closed.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Default most commands in one `/pipeline` or `/multi-exec` request. Upstash documents no such
/// count (only the 10 MB body limit); clients batch far fewer (`cache-upstash`'s auto-pipeline
/// sends at most 1,000).
pub const DEFAULT_MAX_PIPELINE_COMMANDS: usize = 10_000;

/// Default most arguments (command names included) in one request, over all its commands. Each
/// is a 32-byte handle into the body, so this bounds a request's parsed form to about 32 MB
/// however small its arguments are.
pub const DEFAULT_MAX_REQUEST_ARGS: usize = 1_000_000;

/// Default time a client has to send a request's whole body once its headers are in.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Entry point: [`Gateway::builder`].
#[derive(Debug)]
pub struct Gateway;

impl Gateway {
    /// A builder with the defaults: Redis at `redis://127.0.0.1:6379`, listening on
    /// `127.0.0.1:8079`, no token (one must be set), no fault injection.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }
}

/// Configures and starts a gateway; from [`Gateway::builder`]. Settings are checked by
/// [`start`](Self::start). `Debug` shows the Redis address but neither its password nor the
/// tokens.
#[derive(Clone)]
pub struct GatewayBuilder {
    redis_url: String,
    token: Option<Secret>,
    read_only_token: Option<Secret>,
    admin_token: Option<Secret>,
    bind: String,
    max_body_bytes: usize,
    max_concurrent_requests: usize,
    max_streams: usize,
    stream_keepalive: Duration,
    stream_buffer_bytes: usize,
    pool_size: usize,
    pool_idle_timeout: Duration,
    connect_timeout: Duration,
    redis_timeout: Duration,
    pool_wait: Duration,
    connections: serve_limits::ServerLimits,
    faults: FaultConfig,
    // Command policy and request bounds.
    allow_admin_commands: bool,
    max_pipeline_commands: usize,
    max_request_args: usize,
    body_read_timeout: Duration,
}

impl Default for GatewayBuilder {
    fn default() -> Self {
        GatewayBuilder {
            redis_url: "redis://127.0.0.1:6379".into(),
            token: None,
            read_only_token: None,
            admin_token: None,
            bind: "127.0.0.1:8079".into(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_concurrent_requests: 512,
            max_streams: 256,
            stream_keepalive: DEFAULT_STREAM_KEEPALIVE,
            stream_buffer_bytes: DEFAULT_STREAM_BUFFER_BYTES,
            pool_size: 32,
            pool_idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT,
            connect_timeout: Duration::from_secs(2),
            redis_timeout: Duration::from_secs(10),
            pool_wait: Duration::from_secs(5),
            connections: serve_limits::ServerLimits::default(),
            faults: FaultConfig::default(),
            allow_admin_commands: false,
            max_pipeline_commands: DEFAULT_MAX_PIPELINE_COMMANDS,
            max_request_args: DEFAULT_MAX_REQUEST_ARGS,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
        }
    }
}

impl fmt::Debug for GatewayBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayBuilder")
            .field(
                "redis",
                &RedisTarget::parse(&self.redis_url)
                    .map(|t| t.addr())
                    .unwrap_or_else(|_| "<invalid>".into()),
            )
            .field("token", &self.token)
            .field("read_only_token", &self.read_only_token)
            .field("admin_token", &self.admin_token)
            .field("bind", &self.bind)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("max_streams", &self.max_streams)
            .field("stream_keepalive", &self.stream_keepalive)
            .field("stream_buffer_bytes", &self.stream_buffer_bytes)
            .field("pool_size", &self.pool_size)
            .field("pool_idle_timeout", &self.pool_idle_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("redis_timeout", &self.redis_timeout)
            .field("pool_wait", &self.pool_wait)
            .field("connections", &self.connections)
            .field("faults", &self.faults)
            .field("allow_admin_commands", &self.allow_admin_commands)
            .field("max_pipeline_commands", &self.max_pipeline_commands)
            .field("max_request_args", &self.max_request_args)
            .field("body_read_timeout", &self.body_read_timeout)
            .finish()
    }
}

impl GatewayBuilder {
    /// The Redis server (default `redis://127.0.0.1:6379`):
    /// `redis://[user:password@]host[:port][/db]`, credentials percent-encoded, port 6379 and
    /// database 0 unless given; a bare `host:port` is accepted too. No TLS: a `rediss://` URL,
    /// like any malformed one, makes [`start`](Self::start) fail with [`Error::Config`].
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.redis_url = url.into();
        self
    }

    /// The standard REST token, which may run every command the gateway forwards. Required:
    /// without it, or with an empty one, [`start`](Self::start) fails with [`Error::Config`].
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Secret::new(token));
        self
    }

    /// An optional second token that may run only read commands (default none; an empty one
    /// counts as none). It must differ from [`token`](Self::token).
    pub fn read_only_token(mut self, token: impl Into<String>) -> Self {
        self.read_only_token = Some(Secret::new(token));
        self
    }

    /// Enables the `/__gateway/fault` endpoint (run-time fault injection over HTTP) behind this
    /// token (default none: the endpoint answers 404). It must differ from the REST tokens, so a
    /// client holding a REST token cannot switch failures on.
    pub fn admin_token(mut self, token: impl Into<String>) -> Self {
        self.admin_token = Some(Secret::new(token));
        self
    }

    /// The listen address (default `127.0.0.1:8079`), as `host:port`; `127.0.0.1:0` picks a free
    /// port, which [`RunningGateway::addr`] then tells.
    pub fn bind(mut self, addr: impl Into<String>) -> Self {
        self.bind = addr.into();
        self
    }

    /// Largest accepted request body (default [`DEFAULT_MAX_BODY_BYTES`], 10 MiB, as Upstash);
    /// a larger one gets 400 `ERR max request size exceeded`.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Requests handled at once (default 512); more wait up to the pool wait time, then get 503.
    pub fn max_concurrent_requests(mut self, n: usize) -> Self {
        self.max_concurrent_requests = n;
        self
    }

    /// Open SSE streams at once (default 256); each holds its own Redis connection. One more is
    /// refused at once with 503, never queued.
    pub fn max_streams(mut self, n: usize) -> Self {
        self.max_streams = n;
        self
    }

    /// Quiet time on an SSE stream after which a `: keepalive` comment is sent (default
    /// [`DEFAULT_STREAM_KEEPALIVE`], 15 s).
    /// It keeps proxies from timing the stream out and notices clients that went away.
    pub fn stream_keepalive(mut self, interval: Duration) -> Self {
        self.stream_keepalive = interval;
        self
    }

    /// Bytes of events an SSE stream may hold for a client that reads more slowly than messages
    /// arrive (default [`DEFAULT_STREAM_BUFFER_BYTES`], 1 MiB); beyond that the stream is closed
    /// so the client reconnects.
    pub fn stream_buffer_bytes(mut self, bytes: usize) -> Self {
        self.stream_buffer_bytes = bytes;
        self
    }

    /// Most pooled Redis connections, opened as needed (default 32). SSE streams hold their own
    /// connections outside the pool.
    pub fn pool_size(mut self, n: usize) -> Self {
        self.pool_size = n;
        self
    }

    /// Pooled connections unused for longer are closed (default [`DEFAULT_POOL_IDLE_TIMEOUT`],
    /// 60 s). Keep it below Redis's
    /// `timeout` and any idle timeout of the network in between, so the pool lets a connection go
    /// before something else silently does.
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// Time to open a Redis connection (default 2 s), and again for its `AUTH`/`SELECT` if the
    /// URL asks for them; a TCP connect that takes longer gets the request a 503, a handshake a
    /// 504.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Time for Redis to answer one request's commands (default 10 s); then 504.
    pub fn redis_timeout(mut self, timeout: Duration) -> Self {
        self.redis_timeout = timeout;
        self
    }

    /// Time a request may wait for a free request slot, and again for a free pooled Redis
    /// connection (default 5 s each); then 503.
    pub fn pool_wait_timeout(mut self, timeout: Duration) -> Self {
        self.pool_wait = timeout;
        self
    }

    /// Time a client connection has to send a complete request head (from connecting, or from
    /// the first byte of its next request) before it is closed (default 10 s): the slowloris
    /// defence.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.connections = self.connections.with_header_read_timeout(timeout);
        self
    }

    /// Time a kept-alive client connection may sit idle between requests before it is closed
    /// (default 75 s, longer than cache-upstash's 60 s pool idle time so a client does not reuse
    /// a connection the gateway is closing).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.connections = self.connections.with_idle_timeout(timeout);
        self
    }

    /// Client connections open at once (default 10,000); more wait in the accept backlog.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.connections = self.connections.with_max_connections(n);
        self
    }

    /// Initial fault and latency injection (default: none). Changeable later through
    /// [`RunningGateway::faults`].
    pub fn faults(mut self, faults: FaultConfig) -> Self {
        self.faults = faults;
        self
    }

    /// Forwards the administration commands — `CONFIG`, `ACL`, `SAVE`, `BGSAVE`, `BGREWRITEAOF`,
    /// `SWAPDB`, `MODULE`, `MIGRATE`, `LATENCY`, `SLOWLOG`, `MEMORY` (but `USAGE`), `PFDEBUG`,
    /// `PFSELFTEST` — for the standard token (default off: they are refused with 400). They manage
    /// the Redis server the gateway depends on: `CONFIG SET requirepass` or `ACL SETUSER` would
    /// lock the gateway out of it. The read-only token never gets them.
    pub fn allow_admin_commands(mut self, allow: bool) -> Self {
        self.allow_admin_commands = allow;
        self
    }

    /// Most commands in one `/pipeline` or `/multi-exec` request (default
    /// [`DEFAULT_MAX_PIPELINE_COMMANDS`], 10,000); more is
    /// refused with 400 as soon as the parser reaches the first one too many.
    pub fn max_pipeline_commands(mut self, n: usize) -> Self {
        self.max_pipeline_commands = n;
        self
    }

    /// Most arguments, command names included, in one request over all its commands (default
    /// [`DEFAULT_MAX_REQUEST_ARGS`], 1,000,000); more is refused with 400 while parsing. With the body limit this bounds the
    /// memory a request's commands take, however small each argument is. (Replies are not
    /// bounded: a pipeline of `GET`s of big values makes a big response.)
    pub fn max_request_args(mut self, n: usize) -> Self {
        self.max_request_args = n;
        self
    }

    /// Time a client has to send a request's whole body once its headers are in (default
    /// [`DEFAULT_BODY_READ_TIMEOUT`], 10 s); then it gets 408 and the connection is closed.
    pub fn body_read_timeout(mut self, timeout: Duration) -> Self {
        self.body_read_timeout = timeout;
        self
    }

    /// Binds the listener and starts serving on the current tokio runtime. Redis is connected to
    /// lazily, so the gateway starts even while Redis is down (requests then get 503).
    ///
    /// # Errors
    /// - [`Error::Config`]: a malformed Redis URL; no REST token; a read-only or admin token
    ///   equal to another token; a zero count (pool size, concurrent requests, streams, stream
    ///   buffer, pipeline commands, request arguments, connections) or a zero timeout (header
    ///   read, idle, stream keep-alive, pool idle, body read).
    /// - [`Error::Bind`]: the listen address cannot be bound.
    pub async fn start(self) -> Result<RunningGateway> {
        let target = RedisTarget::parse(&self.redis_url)?;
        let token = self
            .token
            .filter(|t| !t.expose().is_empty())
            .ok_or_else(|| Error::Config("a non-empty REST token is required".into()))?;
        let read_only_token = self.read_only_token.filter(|t| !t.expose().is_empty());
        if read_only_token
            .as_ref()
            .is_some_and(|ro| ro.expose() == token.expose())
        {
            return Err(Error::Config(
                "the read-only token must differ from the standard token".into(),
            ));
        }
        let admin_token = self.admin_token.filter(|t| !t.expose().is_empty());
        if admin_token.as_ref().is_some_and(|a| {
            a.expose() == token.expose()
                || read_only_token
                    .as_ref()
                    .is_some_and(|ro| ro.expose() == a.expose())
        }) {
            return Err(Error::Config(
                "the admin token must differ from the REST tokens".into(),
            ));
        }
        for (name, value) in [
            ("pool size", self.pool_size),
            ("max concurrent requests", self.max_concurrent_requests),
            ("max streams", self.max_streams),
            ("stream buffer bytes", self.stream_buffer_bytes),
            ("max pipeline commands", self.max_pipeline_commands),
            ("max request args", self.max_request_args),
        ] {
            if value == 0 {
                return Err(Error::Config(format!("{name} must be at least 1")));
            }
        }
        self.connections
            .check()
            .map_err(|err| Error::Config(err.to_string()))?;
        for (name, value) in [
            ("stream keep-alive interval", self.stream_keepalive),
            ("pool idle timeout", self.pool_idle_timeout),
            ("body read timeout", self.body_read_timeout),
        ] {
            if value.is_zero() {
                return Err(Error::Config(format!("{name} must be more than zero")));
            }
        }

        let listener = TcpListener::bind(&self.bind)
            .await
            .map_err(|source| Error::Bind {
                addr: self.bind.clone(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: self.bind.clone(),
            source,
        })?;

        let timeouts = RedisTimeouts {
            connect: self.connect_timeout,
            command: self.redis_timeout,
            pool_wait: self.pool_wait,
        };
        let faults = FaultHandle::new(self.faults);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let state = Arc::new(AppState {
            pool: RedisPool::new(target, timeouts, self.pool_size, self.pool_idle_timeout),
            tokens: Tokens {
                full: token,
                read_only: read_only_token,
            },
            admin_token,
            faults: faults.clone(),
            max_body_bytes: self.max_body_bytes,
            body_read_timeout: self.body_read_timeout,
            limits: request::RequestLimits {
                max_commands: self.max_pipeline_commands,
                max_args: self.max_request_args,
            },
            commands: command::CommandPolicy {
                allow_admin: self.allow_admin_commands,
            },
            request_slots: Semaphore::new(self.max_concurrent_requests),
            stream_slots: Arc::new(Semaphore::new(self.max_streams)),
            max_streams: self.max_streams,
            streams: sse::StreamSettings {
                keepalive: self.stream_keepalive,
                max_buffered_bytes: self.stream_buffer_bytes,
            },
            sync_token: SyncToken::new(),
            shutdown: shutdown_rx.clone(),
        });
        tracing::info!(%addr, redis = %state.pool.target().addr(), "upstash-gateway listening");

        tokio::spawn(redis::expire_idle(
            Arc::clone(&state.pool),
            shutdown_rx.clone(),
        ));
        let app = axum::Router::new().fallback(http::handle).with_state(state);
        let mut stop = shutdown_rx;
        let task = tokio::spawn(serve_limits::serve(
            listener,
            app,
            self.connections,
            async move {
                // Either an explicit shutdown or the handle being dropped ends the server.
                let _ = stop.wait_for(|stopped| *stopped).await;
            },
        ));
        Ok(RunningGateway {
            addr,
            shutdown: shutdown_tx,
            task: Some(task),
            faults,
        })
    }
}

/// A gateway serving in the background, from [`GatewayBuilder::start`]. Dropping it stops the
/// gateway without waiting; [`shutdown`](Self::shutdown) waits.
#[derive(Debug)]
pub struct RunningGateway {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    faults: FaultHandle,
}

/// How long [`RunningGateway::shutdown`] lets in-flight requests finish before cutting them off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

impl RunningGateway {
    /// The bound address (with the real port when `:0` was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`: the value for `UPSTASH_REDIS_REST_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Run-time control of fault and latency injection.
    pub fn faults(&self) -> &FaultHandle {
        &self.faults
    }

    /// Stops accepting, ends open streams, lets in-flight requests finish (at most 10 s), and waits.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(mut task) = self.task.take() {
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(err))) => {
                    tracing::warn!(error = %err, "gateway server ended with an error")
                }
                Ok(Err(err)) => tracing::warn!(error = %err, "gateway server task failed"),
                Err(_) => {
                    tracing::warn!(
                        "in-flight requests did not finish within {SHUTDOWN_GRACE:?}; aborting them"
                    );
                    task.abort();
                }
            }
        }
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}
