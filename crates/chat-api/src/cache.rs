//! Everything chat-api caches, in one place: the backend chosen from config
//! ([`build_backend`]), every key and tag (`CacheKeys`, private: the only code that names them),
//! the TTL policies, the cached reads ([`ChatCache`]) that handlers call instead of the store, and
//! the write events ([`ChatCache::messages_changed`] and the others) that handlers call after a
//! committed write. Handlers never name a key or a tag: what a write invalidates is decided here.
//!
//! # Keys, tags and what invalidates them
//!
//! | key (`{prefix}:v3:…`)                  | value                  | tags                        | invalidated by (event) |
//! |----------------------------------------|------------------------|-----------------------------|----------------|
//! | `user-channels:{uid}`                  | the user's channel list | `#user-channels:{uid}`     | `channel_created` (owner), `membership_changed` (that user: join, leave, member added), `acked` (by that user) |
//! | `channel-messages:{cid}:{limit}`       | the latest page, rendered | `#channel-messages:{cid}` | `message_posted`, `messages_changed` (edit, delete, reaction add/remove in `cid`) |
//! | `channel-history:{cid}:{before}:{limit}` | an older page (before a cursor), rendered; only stable ones (below) | `#channel-history:{cid}` | `messages_changed`; `message_posted` only for a post out of order |
//! | `channel-around:{cid}:{around}:{limit}` | a page around a message, rendered; only stable ones (below) | `#channel-history:{cid}` | as older pages |
//! | `auth-user:{uid}`                      | name, token hash and every membership (existing users only) | `#auth-user:{uid}` | `user_registered`, `channel_created` (owner), `membership_changed` (that user) |
//! | `channel:{cid}`                        | the channel, or none   | `#channel:{cid}`            | `channel_created` |
//!
//! A token check reads the user's memberships with the user, so a member's read costs two
//! lookups (the token, the page) and the handler's membership check none. The price: a join or
//! leave reloads that user's record (one row per membership).
//!
//! Reads probe the in-process tier by key name alone ([`Cache::get_or_load_named`]): a hit
//! builds no [`Key`] and allocates nothing; the key and its tag are built on a miss.
//!
//! A post invalidates exactly one tag, however many members the channel has and however many page
//! sizes are cached, and leaves the channel's history pages alone: a new message is newer than
//! every message before it, so it belongs to no page of older messages. Two cases break that, and
//! are handled so that a read after an acknowledged post still sees it:
//! - A post out of order: its id (a ULID, time first) is below another message's, because of
//!   another instance's clock or a concurrent post that committed first (posts of one process to
//!   one channel commit in id order). The channel's high-water mark, the newest id it ever had,
//!   raised in the insert's transaction, says so (`Posted::Created::newest`), and
//!   `message_posted` then drops the history pages too.
//! - A cursor above everything (or with nothing after it): its page would gain the next post, or
//!   change its `has_more_after`. Only *stable* older pages are cached: the high-water mark, read
//!   before the page, is at or above the cursor, and some message exists at or after it. A post
//!   in order is above the mark, so outside such a page; a delete of the messages after it drops
//!   the history with `messages_changed`.
//! - A page around a message is cached only when a message exists beyond its newest one
//!   (`has_more_after`). Its newer half is read first: a post in order that this read did not
//!   see is newer than that message, so outside the page, and the older half, read after, can
//!   only see more of what was committed before it.
//!
//! Every invalidation runs after the database commit, so a read that follows the write's response
//! cannot see older data (the cache's tag stamps reject entries whose data was read before the
//! invalidation).
//!
//! # Several instances
//!
//! With `CACHE_BACKPLANE=auto` and the cache on Upstash, [`connect_cache`] puts the tiered cache on
//! a backplane: after an invalidation reached Upstash, its tags are announced on
//! `<CACHE_PREFIX>:bus` and every other instance drops them from its L1, so L1 keeps entries for
//! their whole TTL while the bus is connected. Stamps are taken on the Upstash server's time line
//! (an [`OffsetClock`] synced to its `TIME`), so hosts' clock skew does not decide which entries a
//! stamp hides. Sets are not announced: chat-api writes only through the write events here, and
//! its sets are fills of data read after the last invalidation.

use std::{
    fmt::Write as _,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use cache_core::{
    Backplane, BackplaneConfig, BackplaneState, Cache, Clock, DynBackend, DynTransport, Key,
    KeyName, Namespace, OffsetClock, SystemClock, Tag, TieredBackend, TieredConfig, Timestamp,
    TtlPolicy,
};
use cache_memory::{MemoryBackend, MemoryConfig};
use cache_upstash::{Redis, Secret, UpstashBackend};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use ulid::Ulid;

use crate::{
    config::{CacheBackendKind, Config, ConfigError},
    error::AppError,
    model::{Channel, MessagePage, MyChannel},
    store::{Slice, Store, StoreError, UserAuth},
};

/// The key prefix of every chat-api cache key.
pub const KEY_PREFIX: &str = "chat";
/// The format version of cached entries: bump it when a cached type changes shape or what
/// invalidates an entry changes (instances of two versions must not share entries). 2: older
/// pages got their own tag. 3: the token record carries the user's memberships, and memberships
/// have no entries of their own.
pub const FORMAT_VERSION: u32 = 3;

/// Builds the cache backend `config` asks for, without a backplane. The one place that knows the
/// backends.
///
/// - `memory`: moka in process.
/// - `upstash`: Upstash Redis over REST (or `upstash-gateway`), no L1, behind the same timeouts,
///   breaker and replay as `tiered`.
/// - `tiered`: memory (L1) in front of Upstash (L2) with timeouts, a breaker and replay of missed
///   invalidations (`cache_core::TieredBackend`).
/// - `auto`: `tiered` when Upstash credentials are set, `memory` otherwise.
///
/// Missing credentials for `upstash`/`tiered` fail here, at startup, rather than silently running
/// on memory. [`connect_cache`] (the server) and [`build_cache_on`] (tests) add the backplane.
pub fn build_backend(config: &Config) -> Result<DynBackend, ConfigError> {
    build_backend_with(config, None)
}

/// [`build_backend`], with the tiered cache put on `backplane` (if any) and stamping with `clock`.
fn build_backend_with(
    config: &Config,
    backplane: Option<(Backplane, Arc<dyn Clock>)>,
) -> Result<DynBackend, ConfigError> {
    let memory = || -> DynBackend {
        Arc::new(MemoryBackend::new(MemoryConfig::with_max_bytes(
            config.cache_memory_bytes,
        )))
    };
    let kind = config.resolved_cache_backend();
    match kind {
        CacheBackendKind::Memory | CacheBackendKind::Auto => Ok(memory()),
        CacheBackendKind::None => Ok(Arc::new(cache_core::NoopBackend::new())),
        CacheBackendKind::Upstash | CacheBackendKind::Tiered => {
            let tiered = TieredConfig::default()
                .with_l2_timeout(config.l2_timeout)
                .with_l1_max_ttl(config.l1_max_ttl)
                .with_breaker(config.breaker)
                // chat-api writes only through tag invalidations (the write events below); its
                // sets are fills of data read after the last invalidation, which another
                // instance may hold or fill on its own without harm. Announcing them would cost
                // one published message per miss and evict other instances' good copies.
                .with_announce_sets(false);
            let upstash = upstash_backend(config)?;
            // Upstash alone still gets the tiered guard (no L1): an outage costs one timeout per
            // probe, not one per request, and invalidations it missed are replayed before Redis
            // is read again.
            let backend = match (kind, &backplane) {
                (CacheBackendKind::Tiered, Some((_, clock))) => TieredBackend::with_clock(
                    memory(),
                    upstash,
                    tiered,
                    Box::new(SharedClock(Arc::clone(clock))),
                ),
                (CacheBackendKind::Tiered, None) => TieredBackend::new(memory(), upstash, tiered),
                _ => TieredBackend::l2_only(upstash, tiered),
            };
            Ok(Arc::new(match backplane {
                Some((backplane, _)) => backend.with_backplane(backplane),
                None => backend,
            }))
        }
    }
}

/// What the cache of one instance is made of: the backend, the clock of its entries and stamps,
/// and the backplane it shares with other instances (when on).
#[derive(Clone)]
pub struct CacheParts {
    /// The backend (tiered on the backplane, when there is one).
    pub backend: DynBackend,
    /// The clock of the [`Cache`] facade: an [`OffsetClock`] on Redis's time when the backplane
    /// is on, so instances on different hosts stamp on one time line.
    pub clock: Arc<dyn Clock>,
    /// The bus, which also carries realtime events.
    pub backplane: Option<Backplane>,
}

impl std::fmt::Debug for CacheParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheParts")
            .field("backend", &self.backend.name())
            .field("clock", &self.clock)
            .field("backplane", &self.backplane)
            .finish()
    }
}

impl CacheParts {
    /// `backend` alone: the system clock, no backplane.
    pub fn local(backend: DynBackend) -> Self {
        CacheParts {
            backend,
            clock: Arc::new(SystemClock),
            backplane: None,
        }
    }
}

/// The cache of `config` with its backplane on `transport` (when
/// [`Config::backplane_enabled`]; otherwise `transport` is unused and this is
/// [`build_backend`]). Starts the backplane's tasks, so it must run inside a Tokio runtime.
///
/// The server calls it through [`connect_cache`] with the Upstash transport; tests pass a
/// [`cache_core::LocalTransport`] to run several instances in one process.
pub fn build_cache_on(
    config: &Config,
    transport: DynTransport,
    clock: Arc<OffsetClock>,
) -> Result<CacheParts, ConfigError> {
    if !config.backplane_enabled() {
        return Ok(CacheParts::local(build_backend(config)?));
    }
    let clock: Arc<dyn Clock> = clock;
    let backplane = Backplane::start(transport, BackplaneConfig::default(), Arc::clone(&clock));
    let backend = build_backend_with(config, Some((backplane.clone(), Arc::clone(&clock))))?;
    Ok(CacheParts {
        backend,
        clock,
        backplane: Some(backplane),
    })
}

/// How often the offset to Redis's clock is measured again while serving.
pub const CLOCK_SYNC_EVERY: Duration = Duration::from_secs(60);

/// The server's cache: [`build_backend`], plus, when the backplane is on, the Upstash transport
/// on `<CACHE_PREFIX>:bus` and a clock kept in step with the Upstash server's `TIME`.
///
/// The offset is measured once before this returns, so the first stamps are already on Redis's
/// time line; if Upstash cannot be reached now the instance starts on its own clock (logged: the
/// database is the source of truth and startup does not wait for the cache) and the sync task,
/// measuring every [`CLOCK_SYNC_EVERY`], corrects it once Upstash answers.
pub async fn connect_cache(config: &Config) -> Result<CacheParts, ConfigError> {
    if !config.backplane_enabled() {
        return Ok(CacheParts::local(build_backend(config)?));
    }
    // A client of its own: the subscription is one long-lived stream, and the clock probes must
    // not queue behind cache traffic in the auto-pipeline.
    let redis = upstash_client(config, false)?;
    let clock = Arc::new(OffsetClock::new());
    let synced = match cache_upstash::sync_clock(&redis, &clock).await {
        Ok(sample) => {
            tracing::info!(
                offset_micros = sample.offset_micros,
                error_bound = ?sample.error_bound(),
                "clock synced to the Upstash server"
            );
            true
        }
        Err(err) => {
            tracing::warn!(
                error = %err,
                "measuring the clock offset to Upstash failed; stamping with the local clock until the next sync"
            );
            false
        }
    };
    // Runs for the life of the process, like the server. Its first sample would repeat the one
    // just taken (5 billed `TIME`s), so after a success it starts one interval later.
    let (sync_redis, sync_clock) = (redis.clone(), Arc::clone(&clock));
    tokio::spawn(async move {
        if synced {
            tokio::time::sleep(CLOCK_SYNC_EVERY).await;
        }
        let _ = cache_upstash::spawn_clock_sync(sync_redis, sync_clock, CLOCK_SYNC_EVERY).await;
    });
    let transport = cache_upstash::UpstashTransport::new(redis, config.backplane_channel());
    let parts = build_cache_on(config, Arc::new(transport), clock)?;
    if let Some(backplane) = &parts.backplane {
        // Sessions opened before the subscription works would miss other instances' events
        // without being told (the first connect is no resync), so serving waits for it, briefly:
        // past that the instance serves anyway, on the short L1 cap, and connects in the
        // background.
        let mut state = backplane.watch_state();
        let connected = tokio::time::timeout(
            BACKPLANE_STARTUP_WAIT,
            state.wait_for(|s| *s == BackplaneState::Connected),
        )
        .await;
        if !matches!(connected, Ok(Ok(_))) {
            tracing::warn!(
                waited = ?BACKPLANE_STARTUP_WAIT,
                "the backplane is not connected yet; serving anyway, without other instances' events until it is"
            );
        }
    }
    Ok(parts)
}

/// How long [`connect_cache`] waits for the backplane's subscription before the server serves.
pub const BACKPLANE_STARTUP_WAIT: Duration = Duration::from_secs(5);

/// An `Arc`'d clock where a `Box<dyn Clock>` is wanted, so the tiered backend and the facade
/// share one offset.
#[derive(Debug)]
struct SharedClock(Arc<dyn Clock>);

impl Clock for SharedClock {
    fn now(&self) -> Timestamp {
        self.0.now()
    }

    fn now_for_expiry(&self) -> Timestamp {
        self.0.now_for_expiry()
    }
}

fn upstash_backend(config: &Config) -> Result<DynBackend, ConfigError> {
    // Concurrent cache calls share one HTTP request: fewer round trips and billed requests.
    Ok(Arc::new(UpstashBackend::new(upstash_client(config, true)?)))
}

/// An Upstash client from `config`'s credentials.
fn upstash_client(config: &Config, auto_pipeline: bool) -> Result<Redis, ConfigError> {
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
        .auto_pipeline(auto_pipeline)
        .build()
        .map_err(|e| ConfigError(format!("building the Upstash client: {e}")))?;
    Ok(redis)
}

/// Builds every cache key and tag of chat-api. See the module docs for the table.
#[derive(Debug, Clone)]
struct CacheKeys {
    ns: Namespace,
}

/// A key of chat-api before it is built: its name, on the stack, and how to make its one tag
/// (every tag here is a function of one id). A hit in memory needs only the name
/// ([`Cache::get_or_load_named`]); [`ChatKey::key`] builds the key for a miss.
struct ChatKey<'k> {
    name: KeyName<'k>,
    keys: &'k CacheKeys,
    tag: fn(&CacheKeys, Ulid) -> Tag,
    id: Ulid,
}

impl ChatKey<'_> {
    /// The key, with its tag.
    fn key(&self) -> Key {
        self.name.tagged(&[(self.tag)(self.keys, self.id)])
    }
}

impl CacheKeys {
    /// Keys under `prefix` at [`FORMAT_VERSION`].
    fn new(prefix: &str) -> Result<Self, ConfigError> {
        Namespace::new(prefix, FORMAT_VERSION)
            .map(|ns| CacheKeys { ns })
            .map_err(|e| ConfigError(e.to_string()))
    }

    /// A key of `kind` named by `parts`, tagged with `tag(id)`.
    fn key(
        &self,
        kind: &str,
        parts: &[&dyn std::fmt::Display],
        tag: fn(&CacheKeys, Ulid) -> Tag,
        id: Ulid,
    ) -> ChatKey<'_> {
        ChatKey {
            name: self.ns.key_name(kind, parts),
            keys: self,
            tag,
            id,
        }
    }

    /// A user's channel list.
    fn user_channels(&self, user: Ulid) -> ChatKey<'_> {
        self.key("user-channels", &[&user], Self::user_channels_tag, user)
    }

    /// Tag of a user's channel list.
    fn user_channels_tag(&self, user: Ulid) -> Tag {
        self.ns.tag("user-channels", &[&user])
    }

    /// The latest page of a channel at one page size.
    fn latest_page(&self, channel: Ulid, limit: u32) -> ChatKey<'_> {
        self.key(
            "channel-messages",
            &[&channel, &limit],
            Self::channel_messages_tag,
            channel,
        )
    }

    /// An older page of a channel: the `limit` messages before the cursor `before`. Tagged by the
    /// channel's history, which in-order posts leave alone (see the module docs).
    fn older_page(&self, channel: Ulid, before: Ulid, limit: u32) -> ChatKey<'_> {
        self.key(
            "channel-history",
            &[&channel, &before, &limit],
            Self::channel_history_tag,
            channel,
        )
    }

    /// A page of a channel around a message: the `limit / 2` messages after `around` and the
    /// rest at or before it. Tagged by the channel's history, like older pages.
    fn around_page(&self, channel: Ulid, around: Ulid, limit: u32) -> ChatKey<'_> {
        self.key(
            "channel-around",
            &[&channel, &around, &limit],
            Self::channel_history_tag,
            channel,
        )
    }

    /// Tag of a channel's latest pages (every page size).
    fn channel_messages_tag(&self, channel: Ulid) -> Tag {
        self.ns.tag("channel-messages", &[&channel])
    }

    /// Tag of a channel's older pages.
    fn channel_history_tag(&self, channel: Ulid) -> Tag {
        self.ns.tag("channel-history", &[&channel])
    }

    /// A user's token check record, with the user's memberships.
    fn auth_user(&self, user: Ulid) -> ChatKey<'_> {
        self.key("auth-user", &[&user], Self::auth_user_tag, user)
    }

    /// Tag of a user's token check record.
    fn auth_user_tag(&self, user: Ulid) -> Tag {
        self.ns.tag("auth-user", &[&user])
    }

    /// A channel (or its absence).
    fn channel(&self, channel: Ulid) -> ChatKey<'_> {
        self.key("channel", &[&channel], Self::channel_tag, channel)
    }

    /// Tag of a channel.
    fn channel_tag(&self, channel: Ulid) -> Tag {
        self.ns.tag("channel", &[&channel])
    }

    /// The tags `write` invalidates: the last column of the table in the module docs.
    fn invalidated_by(&self, write: Write) -> Vec<Tag> {
        match write {
            Write::UserRegistered { user } => vec![self.auth_user_tag(user)],
            Write::ChannelCreated { channel, owner } => vec![
                self.user_channels_tag(owner),
                self.channel_tag(channel),
                self.auth_user_tag(owner),
            ],
            Write::MembershipChanged { user, .. } => {
                vec![self.user_channels_tag(user), self.auth_user_tag(user)]
            }
            Write::MessagePosted {
                channel,
                in_order: true,
            } => vec![self.channel_messages_tag(channel)],
            Write::MessagePosted {
                channel,
                in_order: false,
            }
            | Write::MessagesChanged { channel } => vec![
                self.channel_messages_tag(channel),
                self.channel_history_tag(channel),
            ],
            Write::Acked { user } => vec![self.user_channels_tag(user)],
        }
    }
}

/// A committed write, as far as the cache is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    UserRegistered { user: Ulid },
    ChannelCreated { channel: Ulid, owner: Ulid },
    MembershipChanged { channel: Ulid, user: Ulid },
    MessagePosted { channel: Ulid, in_order: bool },
    MessagesChanged { channel: Ulid },
    Acked { user: Ulid },
}

/// TTL policies per kind of entry.
#[derive(Debug, Clone, Copy)]
pub struct Policies {
    /// Channel lists (the original: 5 min).
    pub channels: TtlPolicy,
    /// Latest pages (the original: 2 min).
    pub messages: TtlPolicy,
    /// Token records (with memberships), channels.
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

/// A page as the client receives it: the JSON body, rendered once per load, and its `ETag`. A hit
/// hands out the stored bytes without serializing anything.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenderedPage {
    /// The strong entity tag of `body`, quoted.
    pub etag: String,
    /// The JSON of a [`MessagePage`].
    pub body: String,
    /// Whether the page may be cached: always for a latest page; for an older page, whether it
    /// is stable (see the module docs). Decided at load; not stored.
    #[serde(skip)]
    pub stable: bool,
}

impl RenderedPage {
    /// Renders `page` and computes its entity tag.
    pub fn render(page: &MessagePage) -> Result<Self, serde_json::Error> {
        let body = serde_json::to_string(page)?;
        let digest = Sha256::digest(body.as_bytes());
        let mut etag = String::with_capacity(34);
        etag.push('"');
        for byte in &digest[..16] {
            let _ = write!(etag, "{byte:02x}"); // Writing to a String cannot fail.
        }
        etag.push('"');
        Ok(RenderedPage {
            etag,
            body,
            stable: true,
        })
    }
}

/// A page loader's result: `page` rendered, marked `stable` or not (see [`RenderedPage::stable`]).
fn render_page(
    page: &MessagePage,
    stable: bool,
) -> Result<Arc<RenderedPage>, Box<dyn std::error::Error + Send + Sync>> {
    let mut rendered = RenderedPage::render(page)?;
    rendered.stable = stable;
    Ok(Arc::new(rendered))
}

/// The cached reads of chat-api, each through [`Cache::get_or_load`] with the store as loader.
#[derive(Clone)]
pub struct ChatCache {
    cache: Cache,
    keys: CacheKeys,
    policies: Policies,
    /// The store and the per-kind counters, behind one `Arc` that every loader captures.
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<dyn Store>,
    kinds: KindCounters,
}

/// The kinds of data [`ChatCache`] caches, for per-kind hit ratios (`/stats` `cache.kinds`, the
/// dashboard).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A user's name, token hash and memberships (`auth-user`).
    UserAuth,
    /// A channel.
    Channel,
    /// A user's channel list.
    UserChannels,
    /// The latest page of a channel.
    LatestPage,
    /// An older page of a channel.
    OlderPage,
    /// A page of a channel around a message.
    AroundPage,
}

impl Kind {
    /// Every kind, in the order reports list them.
    pub const ALL: [Kind; 6] = [
        Kind::UserAuth,
        Kind::Channel,
        Kind::UserChannels,
        Kind::LatestPage,
        Kind::OlderPage,
        Kind::AroundPage,
    ];

    /// The name in `/stats`, `/metrics` and the dashboard.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::UserAuth => "user_auth",
            Kind::Channel => "channel",
            Kind::UserChannels => "user_channels",
            Kind::LatestPage => "latest_page",
            Kind::OlderPage => "older_page",
            Kind::AroundPage => "around_page",
        }
    }
}

/// `get_or_load` calls and loader runs per [`Kind`]: a lookup that ran no loader was answered by
/// the cache (or by another caller's load).
#[derive(Default)]
struct KindCounters {
    lookups: [AtomicU64; Kind::ALL.len()],
    loads: [AtomicU64; Kind::ALL.len()],
}

impl KindCounters {
    fn lookup(&self, kind: Kind) {
        self.lookups[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn load(&self, kind: Kind) {
        self.loads[kind as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Lookups and loads of one [`Kind`] since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindStats {
    /// The kind.
    pub kind: Kind,
    /// `get_or_load` calls.
    pub lookups: u64,
    /// Loader runs (database reads) among them.
    pub loads: u64,
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
    /// Cached reads over `store` through `cache`, with keys under `prefix` at
    /// [`FORMAT_VERSION`].
    ///
    /// # Errors
    /// A [`ConfigError`] if `prefix` is not a valid key prefix.
    pub fn new(
        cache: Cache,
        prefix: &str,
        policies: Policies,
        store: Arc<dyn Store>,
    ) -> Result<Self, ConfigError> {
        Ok(ChatCache {
            cache,
            keys: CacheKeys::new(prefix)?,
            policies,
            shared: Arc::new(Shared {
                store,
                kinds: KindCounters::default(),
            }),
        })
    }

    /// Lookups and loads per kind of data since start, in [`Kind::ALL`] order.
    pub fn kind_stats(&self) -> Vec<KindStats> {
        let kinds = &self.shared.kinds;
        Kind::ALL
            .iter()
            .map(|&kind| KindStats {
                kind,
                lookups: kinds.lookups[kind as usize].load(Ordering::Relaxed),
                loads: kinds.loads[kind as usize].load(Ordering::Relaxed),
            })
            .collect()
    }

    /// The cache facade (stats, backend).
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The store behind the cache.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    /// `key`'s value, loaded by `load` on a miss and counted as a lookup (and a load) of
    /// `kind`. A hit in memory is answered by the key's name alone; `keep` decides which loaded
    /// values are cached.
    async fn read<T, F, Fut, E>(
        &self,
        kind: Kind,
        key: ChatKey<'_>,
        policy: &TtlPolicy,
        keep: fn(&T) -> bool,
        load: F,
    ) -> Result<T, AppError>
    where
        T: cache_core::CacheValue,
        F: FnOnce(Arc<Shared>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    {
        self.shared.kinds.lookup(kind);
        let shared = Arc::clone(&self.shared);
        self.cache
            .get_or_load_named(
                &key.name,
                || key.key(),
                policy,
                keep,
                move || {
                    shared.kinds.load(kind);
                    load(shared)
                },
            )
            .await
            .map_err(load_error)
    }

    /// A user's name, token hash and memberships.
    ///
    /// Only users that exist are cached. The id comes from the client's token, so "no such user"
    /// for a made-up id would save no later load (the next made-up id differs) while costing a
    /// key in every tier, Upstash included; the rate limiter bounds those loads instead.
    pub async fn user_auth(&self, user: Ulid) -> Result<Option<Arc<UserAuth>>, AppError> {
        self.read(
            Kind::UserAuth,
            self.keys.auth_user(user),
            &self.policies.lookups,
            Option::is_some,
            move |shared| async move {
                Ok::<_, StoreError>(shared.store.user_auth(user).await?.map(Arc::new))
            },
        )
        .await
    }

    /// A user's token record if the in-process tier holds it fresh: no remote cache, no
    /// database. `None` also when the user may exist but is not in memory.
    pub fn user_auth_in_memory(&self, user: Ulid) -> Option<Arc<UserAuth>> {
        self.cache
            .get_in_memory::<Option<Arc<UserAuth>>>(&self.keys.auth_user(user).key())
            .flatten()
    }

    /// A channel.
    pub async fn channel(&self, channel: Ulid) -> Result<Option<Channel>, AppError> {
        self.read(
            Kind::Channel,
            self.keys.channel(channel),
            &self.policies.lookups,
            |_| true,
            move |shared| async move { shared.store.channel(channel).await },
        )
        .await
    }

    /// A user's channel list.
    pub async fn user_channels(&self, user: Ulid) -> Result<Arc<Vec<MyChannel>>, AppError> {
        self.read(
            Kind::UserChannels,
            self.keys.user_channels(user),
            &self.policies.channels,
            |_| true,
            move |shared| async move { shared.store.user_channels(user).await.map(Arc::new) },
        )
        .await
    }

    /// The latest `limit` messages of a channel, rendered.
    pub async fn latest_page(
        &self,
        channel: Ulid,
        limit: u32,
    ) -> Result<Arc<RenderedPage>, AppError> {
        self.read(
            Kind::LatestPage,
            self.keys.latest_page(channel, limit),
            &self.policies.messages,
            |_| true,
            move |shared| async move {
                // One extra row says whether older messages exist.
                let mut messages = shared
                    .store
                    .messages(channel, Slice::Latest, limit + 1)
                    .await?;
                let has_more_before = messages.len() > limit as usize;
                messages.truncate(limit as usize);
                let page = MessagePage {
                    messages,
                    has_more_before,
                    has_more_after: false,
                };
                render_page(&page, true)
            },
        )
        .await
    }

    /// The `limit` messages of a channel before the message id `before` (scrolling back),
    /// rendered. Cursors repeat (everyone scrolling a channel starts from the same latest page),
    /// and in-order posts do not change these pages, so a stable page (see the module docs) is
    /// read from the database once until an edit, delete or reaction in the channel.
    pub async fn older_page(
        &self,
        channel: Ulid,
        before: Ulid,
        limit: u32,
    ) -> Result<Arc<RenderedPage>, AppError> {
        self.read(
            Kind::OlderPage,
            self.keys.older_page(channel, before, limit),
            &self.policies.messages,
            |page: &Arc<RenderedPage>| page.stable,
            move |shared| async move {
                let store = &shared.store;
                // Before the page: a post in order that the page does not see raised the
                // mark after this read, so it is above the mark read here.
                let newest = store.newest_message(channel).await?;
                let mut messages = store
                    .messages(channel, Slice::Before(before), limit + 1)
                    .await?;
                let has_more_before = messages.len() > limit as usize;
                messages.truncate(limit as usize);
                // Newer messages exist if anything is at or after the cursor.
                let has_more_after = match before.0.checked_sub(1) {
                    Some(prev) => !store
                        .messages(channel, Slice::After(Ulid(prev)), 1)
                        .await?
                        .is_empty(),
                    None => false,
                };
                let page = MessagePage {
                    messages,
                    has_more_before,
                    has_more_after,
                };
                render_page(&page, has_more_after && newest.is_some_and(|n| before <= n))
            },
        )
        .await
    }

    /// The `limit` messages of a channel around the message id `around` (jumping to a message):
    /// the `limit / 2` newest after it, the rest at or before it, rendered. Cached like older
    /// pages, when stable (see the module docs).
    pub async fn around_page(
        &self,
        channel: Ulid,
        around: Ulid,
        limit: u32,
    ) -> Result<Arc<RenderedPage>, AppError> {
        self.read(
            Kind::AroundPage,
            self.keys.around_page(channel, around, limit),
            &self.policies.messages,
            |page: &Arc<RenderedPage>| page.stable,
            move |shared| async move {
                let store = &shared.store;
                let older_wanted = (limit - limit / 2) as usize;
                let newer_wanted = (limit / 2) as usize;
                // The newer half first (see the module docs).
                let mut newer = store
                    .messages(channel, Slice::After(around), newer_wanted as u32 + 1)
                    .await?;
                let mut older = store
                    .messages(channel, Slice::AtOrBefore(around), older_wanted as u32 + 1)
                    .await?;
                let has_more_before = older.len() > older_wanted;
                older.truncate(older_wanted);
                let has_more_after = newer.len() > newer_wanted;
                // Newest first: keep the newer messages closest to the anchor (the end).
                let excess = newer.len().saturating_sub(newer_wanted);
                newer.drain(..excess);
                newer.extend(older);
                let page = MessagePage {
                    messages: newer,
                    has_more_before,
                    has_more_after,
                };
                render_page(&page, has_more_after)
            },
        )
        .await
    }

    /// After a user `user` was registered: its token record (a miss cached before it existed).
    pub async fn user_registered(&self, user: Ulid) {
        self.invalidate(Write::UserRegistered { user }).await;
    }

    /// After `owner` created `channel`: the owner's channel list and token record (which lists
    /// the owner's memberships), and the channel
    /// (a miss may have been cached under its id).
    pub async fn channel_created(&self, channel: Ulid, owner: Ulid) {
        self.invalidate(Write::ChannelCreated { channel, owner })
            .await;
    }

    /// After `user` joined or left `channel`, or was added to it: the user's channel list and
    /// that user's token record, which lists its memberships. Other members' entries do not
    /// change.
    pub async fn membership_changed(&self, channel: Ulid, user: Ulid) {
        self.invalidate(Write::MembershipChanged { channel, user })
            .await;
    }

    /// After a message was posted in `channel`: its latest pages, and its older pages too if
    /// the post was out of order (`in_order` is `Posted::Created::newest`).
    pub async fn message_posted(&self, channel: Ulid, in_order: bool) {
        self.invalidate(Write::MessagePosted { channel, in_order })
            .await;
    }

    /// After a message of `channel` was edited or deleted, a reaction added or removed, or a post
    /// retried: every cached page of the channel, latest and older.
    pub async fn messages_changed(&self, channel: Ulid) {
        self.invalidate(Write::MessagesChanged { channel }).await;
    }

    /// After `user` moved a read marker: the user's channel list, which carries unread counts.
    pub async fn acked(&self, user: Ulid) {
        self.invalidate(Write::Acked { user }).await;
    }

    /// Invalidates what `write` changed. A cache failure is logged, not returned: the write has
    /// committed and its response must say so.
    async fn invalidate(&self, write: Write) {
        let tags = self.keys.invalidated_by(write);
        if let Err(err) = self.cache.invalidate(&tags).await {
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
            page.name.as_str(),
            "chat:v3:channel-messages:01ARZ3NDEKTSV4RRFFQ69G5FAV:50"
        );
        let page = page.key();
        assert_eq!(
            page.as_str(),
            "chat:v3:channel-messages:01ARZ3NDEKTSV4RRFFQ69G5FAV:50"
        );
        assert!(page.tags().contains(&keys.channel_messages_tag(channel)));
        // Every page size of a channel shares one tag: a post invalidates one tag.
        assert_eq!(
            keys.latest_page(channel, 25).key().tags(),
            keys.latest_page(channel, 100).key().tags()
        );
    }

    /// The table of the module docs, checked against the keys: which write events hide which
    /// cached entries.
    #[test]
    fn write_events_invalidate_what_the_table_says() {
        let keys = CacheKeys::new(KEY_PREFIX).unwrap();
        let [c, other_c, u, other_u] = [1, 2, 3, 4].map(|n| Ulid::from_parts(n, 0));
        let entries = [
            ("user-channels", keys.user_channels(u).key()),
            ("channel-messages", keys.latest_page(c, 50).key()),
            ("channel-history", keys.older_page(c, u, 50).key()),
            ("channel-around", keys.around_page(c, u, 50).key()),
            ("auth-user", keys.auth_user(u).key()),
            ("channel", keys.channel(c).key()),
            // The same kinds for another channel and user: no write of `c`/`u` touches them.
            ("other", keys.user_channels(other_u).key()),
            ("other", keys.latest_page(other_c, 50).key()),
            ("other", keys.older_page(other_c, u, 50).key()),
            ("other", keys.around_page(other_c, u, 50).key()),
            ("other", keys.auth_user(other_u).key()),
            ("other", keys.channel(other_c).key()),
        ];
        let hidden = |write: Write| -> Vec<&str> {
            let tags = keys.invalidated_by(write);
            entries
                .iter()
                .filter(|(_, key)| key.tags().iter().any(|t| tags.contains(t)))
                .map(|(name, _)| *name)
                .collect()
        };
        assert_eq!(hidden(Write::UserRegistered { user: u }), ["auth-user"]);
        assert_eq!(
            hidden(Write::ChannelCreated {
                channel: c,
                owner: u
            }),
            ["user-channels", "auth-user", "channel"]
        );
        assert_eq!(
            hidden(Write::MembershipChanged {
                channel: c,
                user: u
            }),
            ["user-channels", "auth-user"]
        );
        assert_eq!(
            hidden(Write::MessagesChanged { channel: c }),
            ["channel-messages", "channel-history", "channel-around"]
        );
        assert_eq!(
            hidden(Write::MessagePosted {
                channel: c,
                in_order: true
            }),
            ["channel-messages"]
        );
        assert_eq!(
            hidden(Write::MessagePosted {
                channel: c,
                in_order: false
            }),
            ["channel-messages", "channel-history", "channel-around"]
        );
        assert_eq!(hidden(Write::Acked { user: u }), ["user-channels"]);
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
