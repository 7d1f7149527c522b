//! [`UpstashBackend`]: the `cache-core` backend on the REST client.
//!
//! # Storage layout
//!
//! - An entry is `SET <key> <Codec::encode_entry bytes> PX <ms until it expires>`: plain JSON for
//!   small values (any Upstash client can read them), a binary frame for compressed ones.
//! - A tag's invalidation stamp is `SET <tag> <µs since the epoch> PX <tag_retention>`, written by
//!   a small Lua script that only moves a stamp forward.
//!
//! # Round trips (what Upstash bills in brackets)
//!
//! | call | HTTP requests | commands |
//! |---|---|---|
//! | `get` | 1 (`MGET key tag…`) | 1 |
//! | `get_many` | 1 (`MGET` of every key and every distinct tag) | 1 |
//! | `set`, `delete`, `delete_many` | 1 | 1 |
//! | `set_many` | 1 `/pipeline`, plus 1 per *binary* (compressed) entry | 1 per entry |
//! | `invalidate_tags` | 1 (`EVAL`, whatever the number of tags) | 1 + 2 per tag |
//!
//! A JSON `/pipeline` body can only carry text, so compressed entries (binary frames, values over
//! the codec's threshold, 1 KiB by default) are written one request each through the binary-safe
//! path form, concurrently. Use `Codec::with_compression(Compression::None)` to keep every entry
//! text and `set_many` at one request.
//!
//! # Tag retention
//!
//! A stamp must outlive every entry it could hide, or the entry would come back when the stamp
//! expires. Entries are therefore stored for at most `tag_retention` after their `created_at`
//! (default 24 h): keep TTL plus grace below it, or raise it.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use bytes::Bytes;
use cache_core::{
    CacheBackend, CacheStats, Clock, Codec, Entry, Key, SystemClock, Tag, Timestamp,
    stats::TierStats,
};

use crate::{client::Redis, commands::SetOptions, error::Error as ClientError};

const NAME: &str = "upstash";

/// Sets each tag's stamp to `ARGV[1]` unless it is already at or past it; `ARGV[2]` is the
/// retention in milliseconds. Stamps are µs since the epoch (about 2^51), exact in Lua's doubles.
const INVALIDATE_SCRIPT: &str = "\
local stamp = tonumber(ARGV[1])
for i = 1, #KEYS do
  local current = tonumber(redis.call('GET', KEYS[i]))
  if current == nil or current < stamp then
    redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
  end
end
return #KEYS";

/// Settings of an [`UpstashBackend`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use cache_upstash::UpstashBackendConfig;
/// let config = UpstashBackendConfig::default().with_tag_retention(Duration::from_secs(6 * 3600));
/// assert_eq!(config.tag_retention(), Duration::from_secs(6 * 3600));
/// ```
#[derive(Debug, Clone)]
pub struct UpstashBackendConfig {
    tag_retention: Duration,
    codec: Codec,
}

impl Default for UpstashBackendConfig {
    /// Tag stamps kept 24 h, the default [`Codec`] (LZ4 above 1 KiB).
    fn default() -> Self {
        UpstashBackendConfig {
            tag_retention: Duration::from_secs(24 * 3600),
            codec: Codec::default(),
        }
    }
}

impl UpstashBackendConfig {
    /// How long an invalidation stamp is kept. Entries are never stored longer than this after
    /// their `created_at`, so no entry outlives a stamp that hides it.
    #[must_use]
    pub fn with_tag_retention(mut self, retention: Duration) -> Self {
        self.tag_retention = retention.max(Duration::from_millis(1));
        self
    }

    /// The codec that turns entries into stored bytes.
    #[must_use]
    pub fn with_codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// See [`with_tag_retention`](Self::with_tag_retention).
    pub fn tag_retention(&self) -> Duration {
        self.tag_retention
    }

    /// See [`with_codec`](Self::with_codec).
    pub fn codec(&self) -> &Codec {
        &self.codec
    }
}

/// A [`CacheBackend`] storing entries in Upstash Redis (or anything speaking its REST protocol).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use cache_core::{Cache, DynBackend};
/// use cache_upstash::{Redis, UpstashBackend};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let gateway = upstash_gateway::testing::TestGateway::start().await; // a local stand-in for Upstash
/// # // SAFETY: set before anything else reads the environment, on the only thread.
/// # unsafe { std::env::set_var("UPSTASH_REDIS_REST_URL", gateway.url()) };
/// # unsafe { std::env::set_var("UPSTASH_REDIS_REST_TOKEN", gateway.token()) };
/// let backend: DynBackend = Arc::new(UpstashBackend::new(Redis::from_env()?));
/// let cache = Cache::new(backend);
/// # let _ = cache; Ok(()) }
/// ```
#[derive(Debug)]
pub struct UpstashBackend {
    redis: Redis,
    config: UpstashBackendConfig,
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    decode_errors: AtomicU64,
    latency: cache_core::stats::Histogram,
}

impl UpstashBackend {
    /// A backend on `redis` with the default configuration.
    pub fn new(redis: Redis) -> UpstashBackend {
        UpstashBackend::with_config(redis, UpstashBackendConfig::default())
    }

    /// A backend on `redis` with `config`.
    pub fn with_config(redis: Redis, config: UpstashBackendConfig) -> UpstashBackend {
        UpstashBackend {
            redis,
            config,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            decode_errors: AtomicU64::new(0),
            latency: cache_core::stats::Histogram::default(),
        }
    }

    /// The client underneath (its [`stats`](Redis::stats) count requests and commands).
    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    /// The configuration.
    pub fn config(&self) -> &UpstashBackendConfig {
        &self.config
    }

    /// Stored values that could not be decoded (foreign or corrupt bytes), served as misses.
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors.load(Ordering::Relaxed)
    }

    fn error(&self, err: ClientError) -> cache_core::Error {
        self.errors.fetch_add(1, Ordering::Relaxed);
        match err {
            ClientError::Timeout { after } => {
                self.timeouts.fetch_add(1, Ordering::Relaxed);
                cache_core::Error::Timeout {
                    backend: NAME,
                    after,
                }
            }
            other => cache_core::Error::backend(NAME, &other, Some(Box::new(other.clone()))),
        }
    }

    async fn timed<T>(
        &self,
        call: impl Future<Output = crate::Result<T>>,
    ) -> cache_core::Result<T> {
        let started = Instant::now();
        let result = call.await;
        self.latency.record(started.elapsed());
        result.map_err(|err| self.error(err))
    }

    /// The entry in `bytes` if it is alive and no stamp hides it; counts the hit or miss.
    fn evaluate(
        &self,
        bytes: Option<&Bytes>,
        stamps: &[Option<Bytes>],
        now: Timestamp,
    ) -> Option<Entry> {
        let entry = bytes.and_then(|bytes| match self.config.codec.decode_entry(bytes) {
            Ok(entry) => Some(entry),
            Err(err) => {
                // Someone else's data under our key: a miss that the next fill overwrites.
                tracing::debug!(error = %err, "undecodable bytes in upstash, treated as a miss");
                self.decode_errors.fetch_add(1, Ordering::Relaxed);
                None
            }
        });
        let valid = entry.filter(|entry| {
            entry.is_alive(now)
                && stamps.iter().flatten().all(|stamp| {
                    // An unreadable stamp could hide anything: treat it as a fresh invalidation.
                    parse_stamp(stamp).is_some_and(|stamp| stamp < entry.created_at())
                })
        });
        let counter = if valid.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        valid
    }

    /// How long Redis should keep `entry` from `now`: until its expiry, but no longer than
    /// `tag_retention` after its creation. `None` if that is already past.
    fn keep_for(&self, entry: &Entry, now: Timestamp) -> Option<Duration> {
        let until = entry
            .expires_at()
            .min(entry.created_at().saturating_add(self.config.tag_retention));
        let left = until.saturating_duration_since(now);
        (!left.is_zero()).then_some(left)
    }
}

fn parse_stamp(bytes: &Bytes) -> Option<Timestamp> {
    std::str::from_utf8(bytes)
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Timestamp::from_micros)
}

fn is_text(bytes: &Bytes) -> bool {
    std::str::from_utf8(bytes).is_ok()
}

fn now() -> Timestamp {
    SystemClock.now_for_expiry()
}

#[async_trait]
impl CacheBackend for UpstashBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn get(&self, key: &Key) -> cache_core::Result<Option<Entry>> {
        let names = std::iter::once(key.as_str()).chain(key.tags().iter().map(Tag::as_str));
        let slots = self.timed(self.redis.mget(names)).await?;
        let Some((entry, stamps)) = slots.split_first() else {
            return Err(self.error(ClientError::unexpected("MGET answered no slot")));
        };
        Ok(self.evaluate(entry.as_ref(), stamps, now()))
    }

    async fn get_many(&self, keys: &[Key]) -> cache_core::Result<Vec<Option<Entry>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // One MGET: every key, then every distinct tag once.
        let mut tag_slots: HashMap<&str, usize> = HashMap::new();
        let mut names: Vec<&str> = keys.iter().map(Key::as_str).collect();
        for tag in keys.iter().flat_map(|key| key.tags()) {
            tag_slots.entry(tag.as_str()).or_insert_with(|| {
                names.push(tag.as_str());
                names.len() - 1
            });
        }
        let slots = self.timed(self.redis.mget(names.iter().copied())).await?;
        if slots.len() != names.len() {
            return Err(self.error(ClientError::unexpected(format!(
                "MGET of {} keys answered {} slots",
                names.len(),
                slots.len()
            ))));
        }
        let now = now();
        Ok(keys
            .iter()
            .enumerate()
            .map(|(index, key)| {
                let stamps: Vec<Option<Bytes>> = key
                    .tags()
                    .iter()
                    .map(|tag| slots[tag_slots[tag.as_str()]].clone())
                    .collect();
                self.evaluate(slots[index].as_ref(), &stamps, now)
            })
            .collect())
    }

    async fn set(&self, key: &Key, entry: Entry) -> cache_core::Result<()> {
        match self.keep_for(&entry, now()) {
            Some(ttl) => {
                let bytes = self.config.codec.encode_entry(&entry);
                let options = SetOptions::new().expire_in(ttl);
                self.timed(self.redis.set_with(key.as_str(), bytes, options))
                    .await
                    .map(|_| ())
            }
            // Already dead: make sure an older entry does not stay visible instead.
            None => self.timed(self.redis.del([key.as_str()])).await.map(|_| ()),
        }
    }

    async fn set_many(&self, items: &[(Key, Entry)]) -> cache_core::Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let now = now();
        let mut pipeline = self.redis.pipeline();
        let mut binary = Vec::new();
        for (key, entry) in items {
            match self.keep_for(entry, now) {
                Some(ttl) => {
                    let bytes = self.config.codec.encode_entry(entry);
                    let options = SetOptions::new().expire_in(ttl);
                    if is_text(&bytes) {
                        pipeline.set_with(key.as_str(), bytes, options);
                    } else {
                        binary.push(self.redis.set_with(key.as_str(), bytes, options));
                    }
                }
                None => {
                    pipeline.del([key.as_str()]);
                }
            }
        }
        let text = async {
            let results = pipeline.exec().await?;
            // `set_many` fails as a whole: report the first command that failed.
            results
                .into_values()
                .into_iter()
                .try_for_each(|slot| slot.map(|_| ()))
        };
        let binary = futures_util::future::try_join_all(binary);
        self.timed(async { tokio::try_join!(text, binary).map(|_| ()) })
            .await
    }

    async fn delete(&self, key: &Key) -> cache_core::Result<bool> {
        self.timed(self.redis.del([key.as_str()]))
            .await
            .map(|removed| removed > 0)
    }

    async fn delete_many(&self, keys: &[Key]) -> cache_core::Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.timed(self.redis.del(keys.iter().map(Key::as_str)))
            .await
    }

    async fn invalidate_tags(&self, tags: &[Tag], at: Timestamp) -> cache_core::Result<()> {
        if tags.is_empty() {
            return Ok(());
        }
        let retention_ms = self.config.tag_retention.as_millis().max(1);
        // Plain EVAL rather than EVALSHA: always exactly one request, even on a fresh server.
        let call = self.redis.eval(
            INVALIDATE_SCRIPT,
            tags.iter().map(Tag::as_str),
            [at.as_micros().to_string(), retention_ms.to_string()],
        );
        self.timed(call).await.map(|_| ())
    }

    async fn ping(&self) -> cache_core::Result<Duration> {
        let started = Instant::now();
        self.timed(self.redis.ping()).await?;
        Ok(started.elapsed())
    }

    fn stats(&self) -> CacheStats {
        let client = self.redis.stats();
        let mut tier = TierStats::new(NAME, NAME);
        tier.decode_errors = self.decode_errors();
        tier.hits = self.hits.load(Ordering::Relaxed);
        tier.misses = self.misses.load(Ordering::Relaxed);
        tier.errors = self.errors.load(Ordering::Relaxed);
        tier.timeouts = self.timeouts.load(Ordering::Relaxed);
        tier.requests = Some(client.requests);
        tier.commands = Some(client.commands);
        tier.latency = Some(self.latency.snapshot());
        CacheStats::single(tier)
    }
}
