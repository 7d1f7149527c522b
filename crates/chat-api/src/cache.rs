//! Everything chat-api caches, in one place: the backend chosen from config
//! ([`build_backend`]), every key and tag ([`CacheKeys`], the only code that names them), the TTL
//! policies, and the cached reads ([`ChatCache`]) that handlers call instead of the store.
//!
//! # Keys, tags and what invalidates them
//!
//! | key (`{prefix}:v1:…`)                  | value                  | tags                        | invalidated by |
//! |----------------------------------------|------------------------|-----------------------------|----------------|
//! | `user-channels:{uid}`                  | the user's channel list | `#user-channels:{uid}`     | create channel, join, leave, member added, ack (by that user) |
//! | `channel-messages:{cid}:{limit}`       | the latest page, rendered | `#channel-messages:{cid}` | post, edit, delete, reaction add/remove in `cid` |
//! | `auth-user:{uid}`                      | name + token hash      | `#auth-user:{uid}`          | registration of `uid` |
//! | `membership:{cid}:{uid}`               | role, or none          | `#membership:{cid}:{uid}`   | create channel, join, leave, member added |
//! | `channel:{cid}`                        | the channel, or none   | `#channel:{cid}`            | create channel |
//!
//! A post invalidates exactly one tag, however many members the channel has and however many page
//! sizes are cached. Every invalidation runs after the database commit, so a read that follows
//! the write's response cannot see older data (the cache's tag stamps reject entries whose data
//! was read before the invalidation).

use std::{sync::Arc, time::Duration};

use cache_core::{Cache, DynBackend, Key, Namespace, Tag, TieredBackend, TieredConfig, TtlPolicy};
use cache_memory::{MemoryBackend, MemoryConfig};
use cache_upstash::{Redis, Secret, UpstashBackend};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use ulid::Ulid;

use crate::{
    config::{CacheBackendKind, Config, ConfigError},
    error::AppError,
    model::{Channel, Membership, MessagePage, MyChannel},
    store::{Slice, Store, StoreError, UserAuth},
};

/// The key prefix of every chat-api cache key.
pub const KEY_PREFIX: &str = "chat";
/// The format version of cached values: bump it when a cached type changes shape.
pub const FORMAT_VERSION: u32 = 1;

/// Builds the cache backend `config` asks for. The one place that knows the backends.
///
/// - `memory`: moka in process.
/// - `upstash`: Upstash Redis over REST (or `upstash-gateway`), no L1, behind the same timeouts,
///   breaker and replay as `tiered`.
/// - `tiered`: memory (L1) in front of Upstash (L2) with timeouts, a breaker and replay of missed
///   invalidations (`cache_core::TieredBackend`).
/// - `auto`: `tiered` when Upstash credentials are set, `memory` otherwise.
///
/// Missing credentials for `upstash`/`tiered` fail here, at startup, rather than silently running
/// on memory.
pub fn build_backend(config: &Config) -> Result<DynBackend, ConfigError> {
    let memory = || -> DynBackend {
        Arc::new(MemoryBackend::new(MemoryConfig::with_max_bytes(
            config.cache_memory_bytes,
        )))
    };
    let kind = match config.cache_backend {
        CacheBackendKind::Auto if config.has_upstash_credentials() => CacheBackendKind::Tiered,
        CacheBackendKind::Auto => CacheBackendKind::Memory,
        other => other,
    };
    match kind {
        CacheBackendKind::Memory | CacheBackendKind::Auto => Ok(memory()),
        CacheBackendKind::None => Ok(Arc::new(cache_core::NoopBackend::new())),
        CacheBackendKind::Upstash | CacheBackendKind::Tiered => {
            let tiered = TieredConfig {
                l2_timeout: config.l2_timeout,
                l1_max_ttl: config.l1_max_ttl,
                breaker: config.breaker,
                ..TieredConfig::default()
            };
            let upstash = upstash_backend(config)?;
            // Upstash alone still gets the tiered guard (no L1): an outage costs one timeout per
            // probe, not one per request, and invalidations it missed are replayed before Redis
            // is read again.
            Ok(Arc::new(match kind {
                CacheBackendKind::Tiered => TieredBackend::new(memory(), upstash, tiered),
                _ => TieredBackend::l2_only(upstash, tiered),
            }))
        }
    }
}

fn upstash_backend(config: &Config) -> Result<DynBackend, ConfigError> {
    let url = config.upstash_url.clone().ok_or_else(|| {
        ConfigError(
            "CACHE_BACKEND upstash/tiered needs UPSTASH_REDIS_REST_URL (or KV_REST_API_URL)".into(),
        )
    })?;
    if config.upstash_token.is_empty() {
        return Err(ConfigError(
            "CACHE_BACKEND upstash/tiered needs UPSTASH_REDIS_REST_TOKEN (or KV_REST_API_TOKEN)"
                .into(),
        ));
    }
    let redis = Redis::builder()
        .url(url)
        .token(Secret::new(config.upstash_token.expose()))
        // Each HTTP attempt gets the L2 budget; the tiered backend bounds the whole call too.
        .timeout(config.l2_timeout)
        // Concurrent cache calls share one HTTP request: fewer round trips and billed requests.
        .auto_pipeline(true)
        .build()
        .map_err(|e| ConfigError(format!("building the Upstash client: {e}")))?;
    Ok(Arc::new(UpstashBackend::new(redis)))
}

/// Builds every cache key and tag of chat-api. See the module docs for the table.
#[derive(Debug, Clone)]
pub struct CacheKeys {
    ns: Namespace,
}

impl CacheKeys {
    /// Keys under `prefix` at [`FORMAT_VERSION`].
    pub fn new(prefix: &str) -> Result<Self, ConfigError> {
        Namespace::new(prefix, FORMAT_VERSION)
            .map(|ns| CacheKeys { ns })
            .map_err(|e| ConfigError(e.to_string()))
    }

    /// The namespace (for whole-namespace invalidation).
    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    /// A user's channel list.
    pub fn user_channels(&self, user: Ulid) -> Key {
        self.ns
            .key("user-channels", &[&user])
            .tagged(&[self.user_channels_tag(user)])
    }

    /// Tag of a user's channel list.
    pub fn user_channels_tag(&self, user: Ulid) -> Tag {
        self.ns.tag("user-channels", &[&user])
    }

    /// The latest page of a channel at one page size.
    pub fn latest_page(&self, channel: Ulid, limit: u32) -> Key {
        self.ns
            .key("channel-messages", &[&channel, &limit])
            .tagged(&[self.channel_messages_tag(channel)])
    }

    /// Tag of every cached page of a channel.
    pub fn channel_messages_tag(&self, channel: Ulid) -> Tag {
        self.ns.tag("channel-messages", &[&channel])
    }

    /// A user's token check record.
    pub fn auth_user(&self, user: Ulid) -> Key {
        self.ns
            .key("auth-user", &[&user])
            .tagged(&[self.auth_user_tag(user)])
    }

    /// Tag of a user's token check record.
    pub fn auth_user_tag(&self, user: Ulid) -> Tag {
        self.ns.tag("auth-user", &[&user])
    }

    /// A user's membership of a channel (or its absence).
    pub fn membership(&self, channel: Ulid, user: Ulid) -> Key {
        self.ns
            .key("membership", &[&channel, &user])
            .tagged(&[self.membership_tag(channel, user)])
    }

    /// Tag of one membership.
    pub fn membership_tag(&self, channel: Ulid, user: Ulid) -> Tag {
        self.ns.tag("membership", &[&channel, &user])
    }

    /// A channel (or its absence).
    pub fn channel(&self, channel: Ulid) -> Key {
        self.ns
            .key("channel", &[&channel])
            .tagged(&[self.channel_tag(channel)])
    }

    /// Tag of a channel.
    pub fn channel_tag(&self, channel: Ulid) -> Tag {
        self.ns.tag("channel", &[&channel])
    }
}

/// TTL policies per kind of entry.
#[derive(Debug, Clone, Copy)]
pub struct Policies {
    /// Channel lists (the original: 5 min).
    pub channels: TtlPolicy,
    /// Latest pages (the original: 2 min).
    pub messages: TtlPolicy,
    /// Token and membership lookups, channels.
    pub lookups: TtlPolicy,
}

impl Policies {
    /// The policies of `config`.
    pub fn from_config(config: &Config) -> Self {
        let policy = |ttl: Duration| TtlPolicy::new(ttl).with_grace(config.cache_grace);
        Policies {
            channels: policy(config.channels_ttl),
            messages: policy(config.messages_ttl),
            lookups: policy(config.lookups_ttl),
        }
    }
}

/// A latest page as the client receives it: the JSON body, rendered once per load, and its
/// `ETag`. A hit hands out the stored bytes without serializing anything.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenderedPage {
    /// The strong entity tag of `body`, quoted.
    pub etag: String,
    /// The JSON of a [`MessagePage`].
    pub body: String,
}

impl RenderedPage {
    /// Renders `page` and computes its entity tag.
    pub fn render(page: &MessagePage) -> Result<Self, serde_json::Error> {
        let body = serde_json::to_string(page)?;
        let digest = Sha256::digest(body.as_bytes());
        let mut etag = String::with_capacity(34);
        etag.push('"');
        for byte in &digest[..16] {
            etag.push_str(&format!("{byte:02x}"));
        }
        etag.push('"');
        Ok(RenderedPage { etag, body })
    }
}

/// The cached reads of chat-api, each through [`Cache::get_or_load`] with the store as loader.
#[derive(Clone)]
pub struct ChatCache {
    cache: Cache,
    keys: CacheKeys,
    policies: Policies,
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for ChatCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatCache")
            .field("cache", &self.cache)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

/// Maps a failed `get_or_load` to a request error: an unreachable database stays a 503.
fn load_error(err: cache_core::Error) -> AppError {
    if let cache_core::Error::Loader(source) = &err {
        if let Some(store) = source.downcast_ref::<StoreError>() {
            if store.is_unavailable() {
                return AppError::Unavailable(store.to_string());
            }
        }
    }
    AppError::Internal(err.to_string())
}

impl ChatCache {
    /// Cached reads over `store` through `cache`.
    pub fn new(cache: Cache, keys: CacheKeys, policies: Policies, store: Arc<dyn Store>) -> Self {
        ChatCache {
            cache,
            keys,
            policies,
            store,
        }
    }

    /// The cache facade (stats, backend).
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The key builder.
    pub fn keys(&self) -> &CacheKeys {
        &self.keys
    }

    /// The store behind the cache.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// A user's name and token hash.
    pub async fn user_auth(&self, user: Ulid) -> Result<Option<UserAuth>, AppError> {
        let store = Arc::clone(&self.store);
        self.cache
            .get_or_load(
                &self.keys.auth_user(user),
                &self.policies.lookups,
                move || async move { store.user_auth(user).await },
            )
            .await
            .map_err(load_error)
    }

    /// A channel.
    pub async fn channel(&self, channel: Ulid) -> Result<Option<Channel>, AppError> {
        let store = Arc::clone(&self.store);
        self.cache
            .get_or_load(
                &self.keys.channel(channel),
                &self.policies.lookups,
                move || async move { store.channel(channel).await },
            )
            .await
            .map_err(load_error)
    }

    /// A user's membership of a channel.
    pub async fn membership(
        &self,
        channel: Ulid,
        user: Ulid,
    ) -> Result<Option<Membership>, AppError> {
        let store = Arc::clone(&self.store);
        self.cache
            .get_or_load(
                &self.keys.membership(channel, user),
                &self.policies.lookups,
                move || async move { store.membership(channel, user).await },
            )
            .await
            .map_err(load_error)
    }

    /// A user's channel list.
    pub async fn user_channels(&self, user: Ulid) -> Result<Arc<Vec<MyChannel>>, AppError> {
        let store = Arc::clone(&self.store);
        self.cache
            .get_or_load(
                &self.keys.user_channels(user),
                &self.policies.channels,
                move || async move { store.user_channels(user).await.map(Arc::new) },
            )
            .await
            .map_err(load_error)
    }

    /// The latest `limit` messages of a channel, rendered.
    pub async fn latest_page(
        &self,
        channel: Ulid,
        limit: u32,
    ) -> Result<Arc<RenderedPage>, AppError> {
        let store = Arc::clone(&self.store);
        self.cache
            .get_or_load(
                &self.keys.latest_page(channel, limit),
                &self.policies.messages,
                move || async move {
                    // One extra row says whether older messages exist.
                    let mut messages = store.messages(channel, Slice::Latest, limit + 1).await?;
                    let has_more_before = messages.len() > limit as usize;
                    messages.truncate(limit as usize);
                    let page = MessagePage {
                        messages,
                        has_more_before,
                        has_more_after: false,
                    };
                    RenderedPage::render(&page)
                        .map(Arc::new)
                        .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
                },
            )
            .await
            .map_err(load_error)
    }

    /// Invalidates `tags` after a committed write. A cache failure is logged, not returned: the
    /// write has committed and its response must say so.
    pub async fn invalidate(&self, tags: &[Tag]) {
        if let Err(err) = self.cache.invalidate(tags).await {
            tracing::error!(error = %err, ?tags, "cache invalidation failed; entries may be stale until they expire");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_namespaced_and_tagged() {
        let keys = CacheKeys::new(KEY_PREFIX).unwrap();
        let channel = Ulid::from_string("01ARZ3NDEKTSV4RRFFQ69G5FAV").unwrap();
        let page = keys.latest_page(channel, 50);
        assert_eq!(
            page.as_str(),
            "chat:v1:channel-messages:01ARZ3NDEKTSV4RRFFQ69G5FAV:50"
        );
        assert!(page.tags().contains(&keys.channel_messages_tag(channel)));
        // Every page size of a channel shares one tag: a post invalidates one tag.
        assert_eq!(
            keys.latest_page(channel, 25).tags(),
            keys.latest_page(channel, 100).tags()
        );
    }

    #[test]
    fn backends_follow_the_config() {
        assert_eq!(build_backend(&Config::default()).unwrap().name(), "memory");
        for kind in [CacheBackendKind::Upstash, CacheBackendKind::Tiered] {
            let config = Config {
                cache_backend: kind,
                ..Config::default()
            };
            let err = build_backend(&config).err().unwrap().to_string();
            assert!(err.contains("UPSTASH_REDIS_REST_URL"), "{err}");
        }
        let credentials = |kind| Config {
            cache_backend: kind,
            upstash_url: Some("http://127.0.0.1:1".into()),
            upstash_token: crate::config::SecretString::new("t"),
            ..Config::default()
        };
        assert_eq!(
            build_backend(&credentials(CacheBackendKind::Auto))
                .unwrap()
                .name(),
            "tiered"
        );
        assert_eq!(
            build_backend(&credentials(CacheBackendKind::Tiered))
                .unwrap()
                .name(),
            "tiered"
        );
        assert_eq!(
            build_backend(&credentials(CacheBackendKind::Upstash))
                .unwrap()
                .name(),
            "upstash"
        );
        assert_eq!(
            build_backend(&credentials(CacheBackendKind::Memory))
                .unwrap()
                .name(),
            "memory"
        );
    }
}
