//! [`Redis`]: the client. Sends commands, pipelines and transactions over HTTP with timeouts,
//! safe retries, the read-your-writes sync token, and counters of what Upstash bills.

use std::{
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    auto_pipeline::AutoPipeline,
    command::{Command, TypedCommand},
    commands::SetOptions,
    config::{RedisBuilder, RetryPolicy},
    error::{Error, Result},
    pipeline::Pipeline,
    value::{FromValue, IntoArg, Value},
    wire::{self, BatchReply, ResponseEncoding, Slot},
};

const SYNC_TOKEN: &str = "upstash-sync-token";
const ENCODING: &str = "upstash-encoding";

/// A client for the Upstash Redis REST API. Cheap to clone (one `Arc`); clones share the
/// connection pool, the sync token and the counters.
///
/// - Every request has a timeout; failures are retried only when safe (see [`RetryPolicy`]).
/// - With read-your-writes on (the default), the `upstash-sync-token` of each answer is sent on
///   the very next request.
/// - With auto-pipelining on, commands issued while a batch is being prepared or sent are
///   gathered into the next `/pipeline` request. Batches go out one at a time, in the order the
///   commands were issued, so a caller's commands are never reordered (unlike `@upstash/redis`,
///   which splits reads and writes into separate pipelines).
///
/// # Examples
///
/// ```
/// use cache_upstash::{Redis, SetOptions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let gateway = upstash_gateway::testing::TestGateway::start().await; // a local stand-in for Upstash
/// # // SAFETY: set before anything else reads the environment, on the only thread.
/// # unsafe { std::env::set_var("UPSTASH_REDIS_REST_URL", gateway.url()) };
/// # unsafe { std::env::set_var("UPSTASH_REDIS_REST_TOKEN", gateway.token()) };
/// // UPSTASH_REDIS_REST_URL / UPSTASH_REDIS_REST_TOKEN (or KV_REST_API_URL / KV_REST_API_TOKEN).
/// let redis = Redis::from_env()?;
/// redis.set("greeting", "hello").await?;
/// redis.set_with("session:1", "data", SetOptions::new().ex(60).nx()).await?;
/// let greeting = redis.get("greeting").await?; // Option<Bytes>
/// assert_eq!(greeting.as_deref(), Some(&b"hello"[..]));
/// let visits: i64 = redis.incr("visits").await?;
/// # let _ = visits;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Redis {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    http: reqwest::Client,
    base_url: String,
    authorization: HeaderValue,
    encoding: ResponseEncoding,
    timeout: Duration,
    retry: RetryPolicy,
    read_your_writes: bool,
    /// The last `upstash-sync-token` received. A plain mutex: it is never held across an await.
    sync_token: Mutex<Option<HeaderValue>>,
    counters: Counters,
    pub(crate) auto_pipeline: Option<AutoPipeline>,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    commands: AtomicU64,
    retries: AtomicU64,
    failures: AtomicU64,
}

/// What the client has sent so far (all clones together).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// HTTP requests that reached the network (retries included; requests that could not
    /// connect are not counted).
    pub requests: u64,
    /// Redis commands in those requests: what Upstash bills (scripts also bill their inner
    /// commands, which a client cannot see).
    pub commands: u64,
    /// Attempts that were retries.
    pub retries: u64,
    /// Calls that failed after all attempts (Redis errors inside successful answers excluded).
    pub failures: u64,
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field("url", &self.inner.base_url)
            .field("token", &"***")
            .field("encoding", &self.inner.encoding)
            .field("timeout", &self.inner.timeout)
            .field("retry", &self.inner.retry)
            .field("read_your_writes", &self.inner.read_your_writes)
            .field("auto_pipeline", &self.inner.auto_pipeline.is_some())
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// A client configured from the environment: `UPSTASH_REDIS_REST_URL` and
    /// `UPSTASH_REDIS_REST_TOKEN`, falling back to Vercel's `KV_REST_API_URL` and
    /// `KV_REST_API_TOKEN`. The equivalent of `Redis.fromEnv()` in `@upstash/redis`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the missing or malformed variable (never its token value).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let gateway = upstash_gateway::testing::TestGateway::start().await; // a local stand-in for Upstash
    /// # // SAFETY: set before anything else reads the environment, on the only thread.
    /// # unsafe { std::env::set_var("UPSTASH_REDIS_REST_URL", gateway.url()) };
    /// # unsafe { std::env::set_var("UPSTASH_REDIS_REST_TOKEN", gateway.token()) };
    /// let redis = cache_upstash::Redis::from_env()?;
    /// # Ok(()) }
    /// ```
    pub fn from_env() -> Result<Redis> {
        RedisBuilder::from_env().build()
    }

    /// A builder for every option (URL, token, timeouts, retries, encoding, read-your-writes,
    /// auto-pipelining, a custom `reqwest::Client`).
    ///
    /// # Examples
    ///
    /// ```
    /// let redis = cache_upstash::Redis::builder()
    ///     .url("http://127.0.0.1:8079")
    ///     .token("dev-token")
    ///     .build()?;
    /// # Ok::<(), cache_upstash::Error>(())
    /// ```
    pub fn builder() -> RedisBuilder {
        RedisBuilder::default()
    }

    pub(crate) fn from_builder(builder: RedisBuilder) -> Result<Redis> {
        let base_url = builder.validated_url()?;
        let token = builder.validated_token()?;
        if builder.timeout.is_zero() {
            return Err(Error::config("timeout must be greater than zero"));
        }
        let mut authorization = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| Error::config("REST token is not a valid HTTP header value"))?;
        // Keeps the header out of `Debug` output of reqwest and hyper.
        authorization.set_sensitive(true);
        let http = match builder.http {
            Some(client) => client,
            None => reqwest::Client::builder()
                .connect_timeout(builder.connect_timeout)
                .pool_idle_timeout(Duration::from_secs(60))
                .build()
                .map_err(|err| Error::config(format!("could not build the HTTP client: {err}")))?,
        };
        Ok(Redis {
            inner: Arc::new(Inner {
                http,
                base_url,
                authorization,
                encoding: builder.encoding,
                timeout: builder.timeout,
                retry: builder.retry,
                read_your_writes: builder.read_your_writes,
                sync_token: Mutex::new(None),
                counters: Counters::default(),
                auto_pipeline: builder.auto_pipeline.then(AutoPipeline::default),
            }),
        })
    }

    /// The REST URL this client talks to.
    pub fn url(&self) -> &str {
        &self.inner.base_url
    }

    /// Counters of requests and commands sent so far.
    pub fn stats(&self) -> ClientStats {
        let c = &self.inner.counters;
        ClientStats {
            requests: c.requests.load(Ordering::Relaxed),
            commands: c.commands.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
        }
    }

    /// The last `upstash-sync-token` received, to hand read-your-writes over to another client.
    pub fn sync_token(&self) -> Option<String> {
        lock(&self.inner.sync_token)
            .as_ref()
            .and_then(|value| value.to_str().ok().map(str::to_owned))
    }

    /// Sets the sync token sent on the next request (from [`sync_token`](Self::sync_token) of
    /// another client). Ignored if it is not a valid header value.
    pub fn set_sync_token(&self, token: &str) {
        if let Ok(value) = HeaderValue::from_str(token) {
            *lock(&self.inner.sync_token) = Some(value);
        }
    }

    /// Runs a typed command (from [`cmd`](crate::cmd)) and converts its reply.
    ///
    /// # Examples
    ///
    /// ```
    /// use cache_upstash::{Redis, cmd};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let gateway = upstash_gateway::testing::TestGateway::start().await; // a local stand-in for Upstash
    /// # let redis = cache_upstash::Redis::builder().url(gateway.url()).token(gateway.token()).build()?;
    /// let len: u64 = redis.run(cmd::llen("queue")).await?;
    /// # let _ = len; Ok(()) }
    /// ```
    pub async fn run<T: FromValue>(&self, command: TypedCommand<T>) -> Result<T> {
        T::from_value(self.execute(command.command).await?)
    }

    /// Runs any command (the escape hatch for commands without a typed method) and converts its
    /// reply to `T` (use [`Value`] to inspect it as it came).
    ///
    /// # Examples
    ///
    /// ```
    /// use cache_upstash::{Command, Redis, Value};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let gateway = upstash_gateway::testing::TestGateway::start().await; // a local stand-in for Upstash
    /// # let redis = cache_upstash::Redis::builder().url(gateway.url()).token(gateway.token()).build()?;
    /// let added: i64 = redis.query(Command::new("ZADD").arg("board").arg(10).arg("ann")).await?;
    /// let raw: Value = redis.query(Command::new("ZRANGE").arg("board").arg(0).arg(-1)).await?;
    /// # let _ = (added, raw); Ok(()) }
    /// ```
    pub async fn query<T: FromValue>(&self, command: Command) -> Result<T> {
        T::from_value(self.execute(command).await?)
    }

    /// Runs any command and returns its raw reply.
    pub async fn execute(&self, command: Command) -> Result<Value> {
        match &self.inner.auto_pipeline {
            // Binary arguments need the path form, which a pipeline cannot carry.
            Some(auto) if command.is_text() => auto.submit(self, command).await,
            _ => self.send_single(&command).await,
        }
    }

    /// A builder for a `/pipeline` request: several commands in one HTTP request, each with its
    /// own result or error. Not atomic: other clients' commands may run in between.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let gateway = upstash_gateway::testing::TestGateway::start().await; // a local stand-in for Upstash
    /// # let redis = cache_upstash::Redis::builder().url(gateway.url()).token(gateway.token()).build()?;
    /// let mut pipe = redis.pipeline();
    /// pipe.set("a", "1");
    /// let incremented = pipe.incr("a");
    /// let value = pipe.get("a");
    /// let results = pipe.exec().await?;          // one HTTP request
    /// assert_eq!(results.get(&incremented)?, 2);
    /// assert_eq!(results.get(&value)?.as_deref(), Some(&b"2"[..]));
    /// # Ok(()) }
    /// ```
    pub fn pipeline(&self) -> Pipeline {
        Pipeline::new(self.clone(), false)
    }

    /// A builder for a `/multi-exec` transaction: the commands run atomically (`MULTI`/`EXEC`),
    /// nothing else runs in between. A command Redis cannot queue discards the whole
    /// transaction; a command that fails while running gets its own error and the others still
    /// apply.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let gateway = upstash_gateway::testing::TestGateway::start().await; // a local stand-in for Upstash
    /// # let redis = cache_upstash::Redis::builder().url(gateway.url()).token(gateway.token()).build()?;
    /// let mut tx = redis.multi();
    /// tx.decr_by("account:1", 10);
    /// tx.incr_by("account:2", 10);
    /// tx.exec().await?;
    /// # Ok(()) }
    /// ```
    pub fn multi(&self) -> Pipeline {
        Pipeline::new(self.clone(), true)
    }

    /// The value of `key` deserialized from JSON, `None` if the key does not exist.
    ///
    /// # Examples
    ///
    /// ```
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct User { name: String }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let gateway = upstash_gateway::testing::TestGateway::start().await; // a local stand-in for Upstash
    /// # let redis = cache_upstash::Redis::builder().url(gateway.url()).token(gateway.token()).build()?;
    /// redis.set_json("user:1", &User { name: "ann".into() }).await?;
    /// let user: Option<User> = redis.get_json("user:1").await?;
    /// # Ok(()) }
    /// ```
    pub async fn get_json<T: DeserializeOwned>(&self, key: impl IntoArg) -> Result<Option<T>> {
        match self.get(key).await? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Stores `value` as JSON text under `key` (readable by any Upstash client).
    pub async fn set_json<T: Serialize + ?Sized>(
        &self,
        key: impl IntoArg,
        value: &T,
    ) -> Result<()> {
        let json = serde_json::to_vec(value)?;
        self.set(key, json).await
    }

    /// Stores `value` as JSON with [`SetOptions`]; `false` if an `NX`/`XX` condition prevented it.
    pub async fn set_json_with<T: Serialize + ?Sized>(
        &self,
        key: impl IntoArg,
        value: &T,
        options: SetOptions,
    ) -> Result<bool> {
        let json = serde_json::to_vec(value)?;
        self.set_with(key, json, options).await
    }

    /// Sends one command as one request (JSON body, or path form for binary arguments).
    pub(crate) async fn send_single(&self, command: &Command) -> Result<Value> {
        let request = wire::single(command)?;
        let body = self
            .send(&request, 1, command.is_idempotent(), command.name())
            .await?;
        match wire::parse_single(&body, self.inner.encoding) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(message)) => Err(Error::from_redis(command.name(), message)),
            Err(err) => {
                self.inner.counters.failures.fetch_add(1, Ordering::Relaxed);
                Err(err)
            }
        }
    }

    /// Sends commands as one `/pipeline` or `/multi-exec` request.
    pub(crate) async fn send_batch(
        &self,
        commands: &[Command],
        transaction: bool,
    ) -> Result<Vec<Slot>> {
        let path = if transaction {
            "/multi-exec"
        } else {
            "/pipeline"
        };
        let request = wire::batch(commands, path)?;
        let idempotent = commands.iter().all(Command::is_idempotent);
        let body = self
            .send(&request, commands.len() as u64, idempotent, path)
            .await?;
        match wire::parse_batch(&body, self.inner.encoding, commands.len())? {
            BatchReply::Slots(slots) => Ok(slots),
            BatchReply::Refused(message) => Err(Error::from_redis(
                if transaction {
                    "MULTI/EXEC"
                } else {
                    "PIPELINE"
                },
                message,
            )),
        }
    }

    /// One logical request: attempts, retries, counters. Returns the body of a response whose
    /// body is a reply (2xx, or 400 with a Redis error).
    async fn send(
        &self,
        request: &wire::Request,
        commands: u64,
        idempotent: bool,
        what: &str,
    ) -> Result<Bytes> {
        let counters = &self.inner.counters;
        let mut retry = 0;
        loop {
            let outcome = self.attempt(request).await;
            if !matches!(outcome, Err(Error::NotSent { .. })) {
                counters.requests.fetch_add(1, Ordering::Relaxed);
                counters.commands.fetch_add(commands, Ordering::Relaxed);
            }
            let err = match outcome {
                Ok(body) => return Ok(body),
                Err(err) => err,
            };
            let safe = idempotent || !err.may_have_executed();
            if err.is_retryable() && safe && retry < self.inner.retry.retries() {
                let delay = self.inner.retry.delay(retry);
                tracing::debug!(%what, error = %err, retry = retry + 1, ?delay, "retrying upstash request");
                counters.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(delay).await;
                retry += 1;
                continue;
            }
            counters.failures.fetch_add(1, Ordering::Relaxed);
            return Err(err);
        }
    }

    /// One HTTP attempt.
    async fn attempt(&self, request: &wire::Request) -> Result<Bytes> {
        let inner = &self.inner;
        let url = format!("{}{}", inner.base_url, request.path);
        let mut builder = inner
            .http
            .post(url)
            .timeout(inner.timeout)
            .header(AUTHORIZATION, inner.authorization.clone())
            .header(CONTENT_TYPE, request.content_type)
            .body(request.body.clone());
        if inner.encoding == ResponseEncoding::Base64 {
            builder = builder.header(ENCODING, "base64");
        }
        if inner.read_your_writes {
            // Read at the last moment so the token of the previous answer is the one sent.
            let token = lock(&inner.sync_token).clone();
            if let Some(token) = token {
                builder = builder.header(SYNC_TOKEN, token);
            }
        }
        let started = Instant::now();
        let response = builder
            .send()
            .await
            .map_err(|err| self.transport_error(err))?;
        if inner.read_your_writes {
            if let Some(token) = response.headers().get(SYNC_TOKEN) {
                *lock(&inner.sync_token) = Some(token.clone());
            }
        }
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|err| self.transport_error(err))?;
        tracing::trace!(status = status.as_u16(), elapsed = ?started.elapsed(), "upstash response");
        classify_status(status.as_u16(), body)
    }

    /// A request for one of Upstash's streaming endpoints (`/subscribe/…`, `/psubscribe/…`): the
    /// same HTTP client, URL and token as every command, the headers `@upstash/redis` sends for
    /// a stream, and no request timeout (the caller bounds connecting and each read itself).
    pub(crate) fn stream_request(&self, path: &str) -> reqwest::RequestBuilder {
        let inner = &self.inner;
        inner
            .http
            .post(format!("{}/{path}", inner.base_url))
            .header(AUTHORIZATION, inner.authorization.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .header(reqwest::header::CACHE_CONTROL, "no-cache")
            .body("[]")
    }

    /// The timeout of one request, which also bounds opening a stream.
    pub(crate) fn request_timeout(&self) -> Duration {
        self.inner.timeout
    }

    pub(crate) fn transport_error(&self, err: reqwest::Error) -> Error {
        // reqwest errors name the URL, never the headers; the token is only in a header.
        let message = err.to_string();
        if err.is_connect() {
            // Connecting (TCP, TLS) failed: not a byte of the request left.
            Error::NotSent {
                message,
                source: Some(Arc::new(err)),
            }
        } else if err.is_timeout() {
            Error::Timeout {
                after: self.inner.timeout,
            }
        } else {
            Error::Transport {
                message,
                source: Some(Arc::new(err)),
            }
        }
    }
}

/// Maps an HTTP status and body to the body to parse, or an error.
pub(crate) fn classify_status(status: u16, body: Bytes) -> Result<Bytes> {
    match status {
        200..=299 => Ok(body),
        401 | 403 => Err(Error::Unauthorized {
            message: wire::error_text(&body).unwrap_or_else(|| format!("HTTP {status}")),
        }),
        // A Redis error (or a refused transaction): the body says which.
        400 if wire::error_text(&body).is_some() => Ok(body),
        _ => {
            let message = wire::error_text(&body).unwrap_or_else(|| wire::body_prefix(&body));
            match wire::error_text(&body) {
                // Upstash limit errors may come with other 4xx statuses.
                Some(text) if status < 500 && status != 429 => {
                    match Error::from_redis("request", text) {
                        quota @ Error::Quota { .. } => Err(quota),
                        _ => Err(Error::Http { status, message }),
                    }
                }
                _ => Err(Error::Http { status, message }),
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
