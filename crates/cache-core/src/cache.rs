//! [`Cache`]: the typed facade over any backend, and `get_or_load`, the way applications use it.

use std::{
    any::Any,
    error::Error as StdError,
    fmt,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use serde::{Serialize, de::DeserializeOwned};

use crate::{
    backend::DynBackend,
    codec::Codec,
    entry::Entry,
    error::{BoxError, Error, Result},
    key::{Key, KeyName, Tag},
    policy::TtlPolicy,
    single_flight::{self, Role, SingleFlight},
    stats::{CacheStats, Counter, LoadStats},
    time::{Clock, SystemClock, Timestamp},
};

/// What [`Cache`] needs besides a backend: `CacheConfig::default()`, changed with the `with_*`
/// methods (it may gain settings, so it is not built with a struct literal).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CacheConfig {
    /// The codec for values (and, through the backend, the wire format).
    pub codec: Codec,
    /// The clock for entry timestamps and invalidation stamps.
    pub clock: Arc<dyn Clock>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            codec: Codec::default(),
            clock: Arc::new(SystemClock),
        }
    }
}

impl CacheConfig {
    /// Sets the codec (default: JSON, no compression).
    #[must_use]
    pub fn with_codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Sets the clock (default: the system clock).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

/// Values a cache can hold: serde round-trippable, cloneable and shareable between threads.
///
/// Cache `Arc<T>` (serde's `rc` feature) to make hits cost a reference count instead of a deep
/// clone.
pub trait CacheValue: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> CacheValue for T {}

/// The typed cache: cache-aside with single-flight, stale-while-revalidate and fail-safe.
///
/// Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    backend: DynBackend,
    codec: Codec,
    clock: Arc<dyn Clock>,
    flights: Arc<SingleFlight>,
    // Invalidation counters, striped by the hash of a tag or key. A load may be joined only while
    // the stripes of its key and tags are unchanged (see `single_flight`); striping keeps unrelated
    // writes from splitting a stampede into several loads, at a fixed memory cost. A collision
    // only costs an extra load.
    epochs: Box<[AtomicU64]>,
    // Deterministic, so whether two names share a stripe does not change from run to run; a
    // chosen collision only costs extra loads.
    hasher: std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>,
    counters: LoadCounters,
}

/// Stripes of invalidation counters (a power of two).
const EPOCH_STRIPES: usize = 1024;

#[derive(Debug, Default)]
struct LoadCounters {
    hits: Counter,
    misses: Counter,
    loads: Counter,
    load_errors: Counter,
    coalesced: Counter,
    stale_served: Counter,
    failsafe_served: Counter,
    decode_errors: Counter,
    backend_errors: Counter,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("backend", &self.inner.backend.name())
            .field("codec", &self.inner.codec)
            .finish_non_exhaustive()
    }
}

impl Cache {
    /// A cache over `backend` with the default codec and the system clock.
    pub fn new(backend: DynBackend) -> Self {
        Cache::with_config(backend, CacheConfig::default())
    }

    /// A cache over `backend` with `config`.
    pub fn with_config(backend: DynBackend, config: CacheConfig) -> Self {
        Cache {
            inner: Arc::new(Inner {
                backend,
                codec: config.codec,
                clock: config.clock,
                flights: Arc::default(),
                epochs: (0..EPOCH_STRIPES).map(|_| AtomicU64::new(0)).collect(),
                hasher: std::hash::BuildHasherDefault::default(),
                counters: LoadCounters::default(),
            }),
        }
    }

    /// The backend.
    pub fn backend(&self) -> &DynBackend {
        &self.inner.backend
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// The fresh value of `key`, if any. Backend errors are returned, not hidden.
    pub async fn get<T: CacheValue>(&self, key: &Key) -> Result<Option<T>> {
        let entry = match self.inner.backend.get_now(key) {
            Some(entry) => entry,
            None => match self.inner.backend.get(key).await? {
                Some(entry) => entry,
                None => return Ok(None),
            },
        };
        if !entry.is_fresh_when_alive(|| self.inner.clock.now_for_expiry()) {
            return Ok(None);
        }
        self.decode(&entry).map(Some)
    }

    /// The fresh values of `keys`, in order, in one backend call.
    pub async fn get_many<T: CacheValue>(&self, keys: &[Key]) -> Result<Vec<Option<T>>> {
        let entries = self.inner.backend.get_many(keys).await?;
        let now = self.inner.clock.now_for_expiry();
        Ok(entries
            .into_iter()
            .map(|entry| {
                entry
                    .filter(|e| e.is_fresh(now))
                    .and_then(|e| self.decode(&e).ok())
            })
            .collect())
    }

    /// Stores `value` under `key` with `policy`. The entry counts as created now.
    pub async fn set<T: CacheValue>(&self, key: &Key, value: &T, policy: &TtlPolicy) -> Result<()> {
        let entry = self.make_entry(value, policy, self.inner.clock.now())?;
        self.inner.backend.set(key, entry).await
    }

    /// Stores several values in one backend call.
    pub async fn set_many<T: CacheValue>(
        &self,
        items: &[(Key, T)],
        policy: &TtlPolicy,
    ) -> Result<()> {
        let now = self.inner.clock.now();
        let entries = items
            .iter()
            .map(|(key, value)| Ok((key.clone(), self.make_entry(value, policy, now)?)))
            .collect::<Result<Vec<_>>>()?;
        self.inner.backend.set_many(&entries).await
    }

    /// Removes `key`.
    pub async fn remove(&self, key: &Key) -> Result<bool> {
        self.bump(key.as_str());
        self.inner.backend.delete(key).await
    }

    /// Invalidates every entry of `tags` whose data was read before now.
    ///
    /// Call it after the write to the source of truth has committed: any load that started
    /// earlier, even one that finishes later, cannot leave a stale entry behind.
    pub async fn invalidate(&self, tags: &[Tag]) -> Result<()> {
        for tag in tags {
            self.bump(tag.as_str());
        }
        let at = self.inner.clock.now();
        self.inner.backend.invalidate_tags(tags, at).await
    }

    /// The value of `key`, loading it with `loader` on a miss (cache-aside).
    ///
    /// - Concurrent calls for one key run `loader` once; the others wait for its result.
    /// - A stale entry within the policy's grace is returned at once and refreshed in the
    ///   background.
    /// - If `loader` fails while a stale entry is alive, the stale value is served instead of the
    ///   error, and kept for the policy's fail-safe throttle so the failing source is not hammered.
    /// - Cache backend failures never fail the call: the value is loaded from the source.
    /// - The loader runs in its own task, so a caller that gives up does not cancel it.
    pub async fn get_or_load<T, F, Fut, E>(
        &self,
        key: &Key,
        policy: &TtlPolicy,
        loader: F,
    ) -> Result<T>
    where
        T: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: Into<Box<dyn StdError + Send + Sync>> + Send + 'static,
    {
        self.get_or_load_if(key, policy, |_| true, loader).await
    }

    /// [`get_or_load`](Cache::get_or_load), except that a loaded value is written to the cache
    /// only if `keep` accepts it. A refused value is still the answer of this call and of the
    /// calls that joined its load, but reaches no tier. For answers that would cost storage
    /// without saving loads, such as "no such row" for ids a client can choose at will.
    pub async fn get_or_load_if<T, F, Fut, E>(
        &self,
        key: &Key,
        policy: &TtlPolicy,
        keep: fn(&T) -> bool,
        loader: F,
    ) -> Result<T>
    where
        T: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: Into<Box<dyn StdError + Send + Sync>> + Send + 'static,
    {
        let inner = &self.inner;
        let mut stale = None;
        let found = match inner.backend.get_now(key) {
            Some(entry) => Ok(Some(entry)),
            None => inner.backend.get(key).await,
        };
        match found {
            Ok(Some(entry)) => {
                let now = || inner.clock.now_for_expiry();
                if entry.is_fresh_when_alive(now) {
                    match self.decode::<T>(&entry) {
                        Ok(value) => {
                            inner.counters.hits.inc();
                            return Ok(value);
                        }
                        Err(_) => inner.counters.decode_errors.inc(),
                    }
                } else if entry.is_alive(now()) {
                    stale = Some(entry);
                }
            }
            Ok(None) => {}
            Err(err) => {
                inner.counters.backend_errors.inc();
                tracing::warn!(key = key.as_str(), error = %err, "cache read failed; loading from source");
            }
        }
        inner.counters.misses.inc();

        // Stale-while-revalidate: answer now, refresh in the background.
        if let Some(entry) = &stale {
            if let Ok(value) = self.decode::<T>(entry) {
                if let Role::Leader(leader) = self.join(key) {
                    self.spawn_load(leader, key.clone(), *policy, keep, loader, stale.clone());
                }
                inner.counters.stale_served.inc();
                return Ok(value);
            }
        }

        let rx = match self.join(key) {
            Role::Leader(mut leader) => {
                let rx = leader.subscribe();
                match self.fresh_in_memory::<T>(key) {
                    // The flight we missed (its load finished between our read and our join)
                    // filled the in-process tier: serve that rather than load a second time.
                    Some(value) => {
                        inner.counters.coalesced.inc();
                        leader.publish(Ok(Arc::new(value) as Arc<dyn Any + Send + Sync>));
                    }
                    None => self.spawn_load(leader, key.clone(), *policy, keep, loader, stale),
                }
                rx
            }
            Role::Follower(rx) => {
                inner.counters.coalesced.inc();
                rx
            }
        };
        let value = single_flight::wait(rx).await?;
        match value.downcast::<T>() {
            Ok(value) => Ok(T::clone(&value)),
            Err(_) => Err(Error::Config(format!(
                "key {key} was loaded concurrently as two different types"
            ))),
        }
    }

    /// [`get_or_load_if`](Cache::get_or_load_if) for a key given by its name, built on the
    /// stack with [`Namespace::key_name`](crate::Namespace::key_name): a fresh hit in the
    /// backend's in-process tier is answered from the name alone, without building a [`Key`]
    /// (no allocation when `T` clones without one, as an `Arc` does). On anything else (a miss,
    /// a stale entry, a backend without an in-process tier) `make_key` builds the key, which must
    /// have this name, and the call goes on as `get_or_load_if`.
    pub async fn get_or_load_named<T, K, F, Fut, E>(
        &self,
        name: &KeyName<'_>,
        make_key: K,
        policy: &TtlPolicy,
        keep: fn(&T) -> bool,
        loader: F,
    ) -> Result<T>
    where
        T: CacheValue,
        K: FnOnce() -> Key,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: Into<Box<dyn StdError + Send + Sync>> + Send + 'static,
    {
        let inner = &self.inner;
        if let Some(entry) = inner.backend.get_now_named(name.as_str()) {
            if entry.is_fresh_when_alive(|| inner.clock.now_for_expiry()) {
                if let Ok(value) = self.decode::<T>(&entry) {
                    inner.counters.hits.inc();
                    return Ok(value);
                }
            }
        }
        let key = make_key();
        debug_assert_eq!(
            key.as_str(),
            name.as_str(),
            "make_key built a key of another name"
        );
        self.get_or_load_if(&key, policy, keep, loader).await
    }

    /// The fresh value of `key` in the backend's in-process tier, if it has one: no I/O, no
    /// load, nothing counted as a hit or miss of [`get_or_load`](Cache::get_or_load). For checks
    /// that must not cost a remote round trip (a request that is refused unless it can be
    /// answered from memory).
    pub fn get_in_memory<T: CacheValue>(&self, key: &Key) -> Option<T> {
        self.fresh_in_memory(key)
    }

    /// The fresh value of `key` in the backend's in-process tier, if it has one (no I/O).
    fn fresh_in_memory<T: CacheValue>(&self, key: &Key) -> Option<T> {
        let entry = self.inner.backend.get_now(key)?;
        let clock = &self.inner.clock;
        if !entry.is_fresh_when_alive(|| clock.now_for_expiry()) {
            return None;
        }
        self.decode::<T>(&entry).ok()
    }

    /// Counters of the backend and of the loads.
    pub fn stats(&self) -> CacheStats {
        let c = &self.inner.counters;
        let mut stats = self.inner.backend.stats();
        stats.loads = LoadStats {
            hits: c.hits.get(),
            misses: c.misses.get(),
            loads: c.loads.get(),
            load_errors: c.load_errors.get(),
            coalesced: c.coalesced.get(),
            stale_served: c.stale_served.get(),
            failsafe_served: c.failsafe_served.get(),
            decode_errors: c.decode_errors.get(),
            backend_errors: c.backend_errors.get(),
        };
        stats
    }

    /// Loads in progress.
    pub fn loads_in_flight(&self) -> usize {
        self.inner.flights.len()
    }

    fn stripe(&self, name: &str) -> &AtomicU64 {
        use std::hash::BuildHasher as _;
        let hash = self.inner.hasher.hash_one(name) as usize;
        &self.inner.epochs[hash & (EPOCH_STRIPES - 1)]
    }

    fn bump(&self, name: &str) {
        self.stripe(name).fetch_add(1, Ordering::SeqCst);
    }

    /// The invalidation epoch of `key`: changes whenever the key or one of its tags is invalidated.
    fn epoch_of(&self, key: &Key) -> u64 {
        key.tags().iter().fold(
            self.stripe(key.as_str()).load(Ordering::SeqCst),
            |sum, tag| sum.wrapping_add(self.stripe(tag.as_str()).load(Ordering::SeqCst)),
        )
    }

    fn join(&self, key: &Key) -> Role {
        self.inner.flights.join(key.as_str(), self.epoch_of(key))
    }

    fn spawn_load<T, F, Fut, E>(
        &self,
        leader: single_flight::Leader,
        key: Key,
        policy: TtlPolicy,
        keep: fn(&T) -> bool,
        loader: F,
        stale: Option<Entry>,
    ) where
        T: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: Into<Box<dyn StdError + Send + Sync>> + Send + 'static,
    {
        let cache = self.clone();
        let mut leader = leader;
        tokio::spawn(async move {
            let inner = &cache.inner;
            // Stamped before the source is read: an invalidation committed while we load is newer
            // than this entry, so the entry is rejected on read (no stale fill).
            let created_at = inner.clock.now();
            inner.counters.loads.inc();
            match loader().await {
                Ok(value) => {
                    let value = Arc::new(value);
                    // Waiters get the value before the (possibly remote) cache write, so a slow L2
                    // never delays an answer; the flight stays joinable until the write is done.
                    leader.publish(Ok(Arc::clone(&value) as Arc<dyn Any + Send + Sync>));
                    if keep(&value) {
                        cache.store(&key, value, &policy, created_at).await;
                    }
                }
                Err(err) => {
                    inner.counters.load_errors.inc();
                    let err = Error::Loader(BoxError::from(err.into()));
                    let outcome = cache.fail_safe::<T>(&key, &policy, stale).await.ok_or(err);
                    leader.publish(outcome);
                }
            }
            drop(leader);
        });
    }

    async fn store<T: CacheValue>(
        &self,
        key: &Key,
        value: Arc<T>,
        policy: &TtlPolicy,
        at: Timestamp,
    ) {
        let entry = match self.make_entry(&*value, policy, at) {
            Ok(entry) => entry,
            Err(err) => {
                tracing::warn!(key = key.as_str(), error = %err, "value not cached: cannot encode");
                return;
            }
        };
        entry.attach_decoded(value);
        if let Err(err) = self.inner.backend.set(key, entry).await {
            self.inner.counters.backend_errors.inc();
            tracing::warn!(key = key.as_str(), error = %err, "cache write failed");
        }
    }

    /// Serves the stale entry after a failed load, and keeps it fresh for the throttle period.
    async fn fail_safe<T: CacheValue>(
        &self,
        key: &Key,
        policy: &TtlPolicy,
        stale: Option<Entry>,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let now = self.inner.clock.now();
        let entry = stale.filter(|e| e.is_alive(now))?;
        let value = self.decode::<T>(&entry).ok()?;
        self.inner.counters.failsafe_served.inc();
        let throttled = entry.with_times(
            now.saturating_add(policy.failsafe_throttle()),
            entry.expires_at(),
        );
        if let Err(err) = self.inner.backend.set(key, throttled).await {
            self.inner.counters.backend_errors.inc();
            tracing::warn!(key = key.as_str(), error = %err, "cache write failed");
        }
        Some(Arc::new(value))
    }

    fn make_entry<T: CacheValue>(
        &self,
        value: &T,
        policy: &TtlPolicy,
        created_at: Timestamp,
    ) -> Result<Entry> {
        policy.validate()?;
        let bytes = self.inner.codec.encode_value(value)?;
        let (fresh_until, expires_at) = policy.entry_times(created_at);
        Ok(Entry::new(bytes, created_at, fresh_until, expires_at))
    }

    fn decode<T: CacheValue>(&self, entry: &Entry) -> Result<T> {
        if let Some(value) = entry.decoded::<T>() {
            return Ok(value.clone());
        }
        let value: T = self.inner.codec.decode_value(entry.value())?;
        entry.attach_decoded(Arc::new(value.clone()));
        Ok(value)
    }
}
