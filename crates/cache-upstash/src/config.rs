//! Building a [`Redis`] client: [`RedisBuilder`], the [`RetryPolicy`], and the [`Secret`] that keeps
//! the REST token out of `Debug`, logs and errors.

use std::{fmt, time::Duration};

use crate::{
    client::Redis,
    error::{Error, Result},
    wire::ResponseEncoding,
};

/// A secret string (the REST token). `Debug` and `Display` print `***`.
///
/// # Examples
///
/// ```
/// use cache_upstash::Secret;
/// let token = Secret::new("AXxx-secret");
/// assert_eq!(format!("{token:?}"), "Secret(***)");
/// assert_eq!(token.expose(), "AXxx-secret");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(secret: String) -> Self {
        Secret(secret)
    }
}

impl From<&str> for Secret {
    fn from(secret: &str) -> Self {
        Secret(secret.to_owned())
    }
}

/// When and how often the client re-sends a failed request.
///
/// A request is retried only when it is safe: always when it provably never left (connection
/// refused, DNS, TLS handshake), and after a timeout, a broken connection or a 5xx/429 answer only
/// if every command in it is idempotent (reads; see [`Command::is_idempotent`](crate::Command)).
/// `INCR`, `LPUSH` or a pipeline with a write are never re-sent after they may have reached the
/// server. Delays grow exponentially from `base_delay`, capped at `max_delay`, with jitter (a
/// random delay between half and all of the step) so that clients do not retry in lockstep.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use cache_upstash::RetryPolicy;
/// let policy = RetryPolicy::default().max_retries(5).base_delay(Duration::from_millis(20));
/// assert_eq!(policy.retries(), 5);
/// assert_eq!(RetryPolicy::none().retries(), 0);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    max_retries: u32,
    base_delay: Duration,
    max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 3 retries, 50 ms doubling up to 1 s (at most about 350 ms of waiting before giving up).
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// Never retry.
    pub fn none() -> RetryPolicy {
        RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        }
    }

    /// Retries after the first attempt (0 = one attempt only).
    #[must_use]
    pub fn max_retries(mut self, retries: u32) -> RetryPolicy {
        self.max_retries = retries;
        self
    }

    /// The delay before the first retry; each further retry doubles it.
    #[must_use]
    pub fn base_delay(mut self, delay: Duration) -> RetryPolicy {
        self.base_delay = delay;
        self
    }

    /// The longest delay between two attempts.
    #[must_use]
    pub fn max_delay(mut self, delay: Duration) -> RetryPolicy {
        self.max_delay = delay;
        self
    }

    /// The number of retries after the first attempt.
    pub fn retries(&self) -> u32 {
        self.max_retries
    }

    /// The delay before retry number `retry` (0-based): a random duration between half and all
    /// of `min(max_delay, base_delay * 2^retry)`.
    pub(crate) fn delay(&self, retry: u32) -> Duration {
        let step = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(retry.min(20)))
            .min(self.max_delay);
        let half = step / 2;
        let jitter_micros = u64::try_from(half.as_micros()).unwrap_or(u64::MAX);
        half + Duration::from_micros(fastrand::u64(0..=jitter_micros))
    }
}

/// The environment variables [`Redis::from_env`] reads, in order of preference.
pub(crate) const URL_VARS: [&str; 2] = ["UPSTASH_REDIS_REST_URL", "KV_REST_API_URL"];
/// See [`URL_VARS`].
pub(crate) const TOKEN_VARS: [&str; 2] = ["UPSTASH_REDIS_REST_TOKEN", "KV_REST_API_TOKEN"];

/// Configures and builds a [`Redis`] client.
///
/// Defaults: 5 s timeout per request (connect 2 s), [`RetryPolicy::default`], base64 response
/// encoding, read-your-writes on, auto-pipelining off, a private `reqwest::Client` with rustls.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use cache_upstash::{Redis, RetryPolicy};
///
/// let redis = Redis::builder()
///     .url("https://eu1-example-12345.upstash.io")
///     .token("AXxxASQgNjM0MjQ")
///     .timeout(Duration::from_millis(500))
///     .retry(RetryPolicy::default().max_retries(2))
///     .auto_pipeline(true)
///     .build()?;
/// # Ok::<(), cache_upstash::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct RedisBuilder {
    pub(crate) url: Option<String>,
    pub(crate) token: Option<Secret>,
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) encoding: ResponseEncoding,
    pub(crate) read_your_writes: bool,
    pub(crate) auto_pipeline: bool,
    pub(crate) http: Option<reqwest::Client>,
}

impl Default for RedisBuilder {
    fn default() -> Self {
        RedisBuilder {
            url: None,
            token: None,
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            retry: RetryPolicy::default(),
            encoding: ResponseEncoding::Base64,
            read_your_writes: true,
            auto_pipeline: false,
            http: None,
        }
    }
}

impl RedisBuilder {
    /// A builder with the URL and token taken from the environment (see [`Redis::from_env`]),
    /// for adjusting the other options. Missing variables are reported by [`build`](Self::build).
    pub fn from_env() -> RedisBuilder {
        RedisBuilder::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) with variables read through `lookup` (testable without
    /// touching the process environment).
    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> RedisBuilder {
        let read = |names: [&str; 2]| {
            names
                .iter()
                .find_map(|name| lookup(name).filter(|v| !v.trim().is_empty()))
        };
        RedisBuilder {
            url: read(URL_VARS),
            token: read(TOKEN_VARS).map(Secret::new),
            ..RedisBuilder::default()
        }
    }

    /// The REST URL (`https://<db>.upstash.io`). A trailing `/` is ignored.
    #[must_use]
    pub fn url(mut self, url: impl Into<String>) -> RedisBuilder {
        self.url = Some(url.into());
        self
    }

    /// The REST token (standard or read-only).
    #[must_use]
    pub fn token(mut self, token: impl Into<Secret>) -> RedisBuilder {
        self.token = Some(token.into());
        self
    }

    /// The longest one HTTP attempt may take, from connecting to the last byte of the answer.
    /// Retries get a fresh timeout each.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> RedisBuilder {
        self.timeout = timeout;
        self
    }

    /// The longest connecting may take (only for the client's own `reqwest::Client`; a custom
    /// one keeps its settings).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> RedisBuilder {
        self.connect_timeout = timeout;
        self
    }

    /// The retry policy.
    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> RedisBuilder {
        self.retry = policy;
        self
    }

    /// How the server should encode strings in replies (base64 by default, so binary values
    /// round-trip).
    #[must_use]
    pub fn response_encoding(mut self, encoding: ResponseEncoding) -> RedisBuilder {
        self.encoding = encoding;
        self
    }

    /// Whether to send back the `upstash-sync-token` of the last answer, so that reads served by
    /// a replica see this client's writes (on by default).
    #[must_use]
    pub fn read_your_writes(mut self, enabled: bool) -> RedisBuilder {
        self.read_your_writes = enabled;
        self
    }

    /// Whether single commands issued concurrently are batched into one `/pipeline` request
    /// (off by default). See [`Redis`] for the ordering guarantee.
    #[must_use]
    pub fn auto_pipeline(mut self, enabled: bool) -> RedisBuilder {
        self.auto_pipeline = enabled;
        self
    }

    /// Uses this `reqwest::Client` (shared connection pool, proxies, custom TLS). Its own
    /// timeouts apply in addition to [`timeout`](Self::timeout).
    #[must_use]
    pub fn http_client(mut self, client: reqwest::Client) -> RedisBuilder {
        self.http = Some(client);
        self
    }

    /// Validates the configuration and builds the client. Does not touch the network.
    ///
    /// # Errors
    /// [`Error::Config`] if the URL or token is missing or malformed, or a timeout is zero.
    pub fn build(self) -> Result<Redis> {
        Redis::from_builder(self)
    }

    /// The base URL without a trailing slash, validated.
    pub(crate) fn validated_url(&self) -> Result<String> {
        let Some(raw) = self.url.as_deref() else {
            return Err(Error::config(format!(
                "no REST URL: set {} (or {}) or call .url()",
                URL_VARS[0], URL_VARS[1]
            )));
        };
        let trimmed = raw.trim().trim_end_matches('/');
        if !(trimmed.starts_with("https://") || trimmed.starts_with("http://")) {
            return Err(Error::config(format!(
                "REST URL {trimmed:?} must start with https:// (or http:// for a local gateway)"
            )));
        }
        let parsed = reqwest::Url::parse(trimmed)
            .map_err(|err| Error::config(format!("REST URL {trimmed:?} is malformed: {err}")))?;
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(Error::config(format!("REST URL {trimmed:?} has no host")));
        }
        if parsed.query().is_some() || parsed.password().is_some() {
            // A `?_token=` or user:password in the URL would leak into logs and errors.
            return Err(Error::config(
                "REST URL must not carry a query or credentials; pass the token with .token()",
            ));
        }
        Ok(trimmed.to_owned())
    }

    /// The token, validated as an HTTP header value (never echoed in errors).
    pub(crate) fn validated_token(&self) -> Result<&Secret> {
        let Some(token) = self.token.as_ref() else {
            return Err(Error::config(format!(
                "no REST token: set {} (or {}) or call .token()",
                TOKEN_VARS[0], TOKEN_VARS[1]
            )));
        };
        let text = token.expose();
        if text.trim().is_empty() {
            return Err(Error::config("REST token is empty"));
        }
        if text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || !c.is_ascii())
        {
            return Err(Error::config(
                "REST token contains whitespace or non-ASCII characters (copy it again from the \
                 Upstash console)",
            ));
        }
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_and_are_capped_with_jitter() {
        let policy = RetryPolicy::default()
            .base_delay(Duration::from_millis(100))
            .max_delay(Duration::from_millis(300));
        for _ in 0..100 {
            let first = policy.delay(0);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let capped = policy.delay(10);
            assert!(capped >= Duration::from_millis(150) && capped <= Duration::from_millis(300));
        }
    }

    #[test]
    fn env_falls_back_to_vercel_kv_names() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let kv = RedisBuilder::from_lookup(vars(&[
            ("KV_REST_API_URL", "https://kv.example"),
            ("KV_REST_API_TOKEN", "kv-token"),
        ]));
        assert_eq!(kv.url.as_deref(), Some("https://kv.example"));
        assert_eq!(kv.token.as_ref().map(Secret::expose), Some("kv-token"));
        let both = RedisBuilder::from_lookup(vars(&[
            ("KV_REST_API_URL", "https://kv.example"),
            ("UPSTASH_REDIS_REST_URL", "https://upstash.example"),
            ("UPSTASH_REDIS_REST_TOKEN", " "),
        ]));
        assert_eq!(both.url.as_deref(), Some("https://upstash.example"));
        assert!(both.token.is_none(), "a blank variable counts as unset");
        let err = both.build().unwrap_err();
        assert!(err.to_string().contains("UPSTASH_REDIS_REST_TOKEN"));
    }

    #[test]
    fn url_and_token_are_validated_without_echoing_the_token() {
        let builder = RedisBuilder::default()
            .url("https://x.upstash.io/")
            .token("s3cret");
        assert_eq!(builder.validated_url().unwrap(), "https://x.upstash.io");
        for bad in [
            "x.upstash.io",
            "ftp://x",
            "https://",
            "https://x?_token=s3cret",
        ] {
            let err = RedisBuilder::default()
                .url(bad)
                .validated_url()
                .unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Config, "{bad}");
        }
        let err = RedisBuilder::default()
            .token("s3cret with space")
            .validated_token()
            .unwrap_err();
        assert!(!err.to_string().contains("s3cret"));
        assert!(RedisBuilder::default().validated_token().is_err());
        assert!(!format!("{builder:?}").contains("s3cret"));
    }
}
