#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

use std::{
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use cache_core::{
    CacheBackend, CacheStats, Clock, Entry, Key, Result, SystemClock, Tag, Timestamp,
    stats::TierStats,
};
use moka::{Expiry, notification::RemovalCause};

/// Bytes charged per entry on top of its key and value (moka's and our bookkeeping).
const ENTRY_OVERHEAD: usize = 96;

/// Settings of a [`MemoryBackend`]: `MemoryConfig::default()` or
/// `MemoryConfig::with_max_bytes(n)`, changed with the `with_*` methods.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MemoryConfig {
    /// Capacity in bytes (default 64 MiB).
    pub max_bytes: u64,
    /// The clock for expiry deadlines and stamp retention (default: the system clock). moka
    /// enforces the deadlines in real time.
    pub clock: Arc<dyn Clock>,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            max_bytes: 64 * 1024 * 1024,
            clock: Arc::new(SystemClock),
        }
    }
}

impl MemoryConfig {
    /// The default settings with a capacity of `max_bytes`.
    pub fn with_max_bytes(max_bytes: u64) -> Self {
        MemoryConfig {
            max_bytes,
            ..MemoryConfig::default()
        }
    }

    /// Sets the clock for expiry deadlines and stamp retention.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

/// A moka-backed [`CacheBackend`]. See the crate docs.
pub struct MemoryBackend {
    entries: moka::sync::Cache<Arc<str>, Entry>,
    stamps: moka::sync::Cache<Tag, Stamp>,
    // Serializes stamp updates so stamps only move forward.
    stamp_lock: Mutex<()>,
    generation: AtomicU64,
    // The latest `expires_at` ever stored: no entry outlives it, so neither need the stamps.
    max_expires_at: AtomicU64,
    clock: Arc<dyn Clock>,
    counters: Arc<Counters>,
}

#[derive(Debug, Clone, Copy)]
struct Stamp {
    at: Timestamp,
    keep_for: Duration,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

struct EntryExpiry {
    clock: Arc<dyn Clock>,
}

impl EntryExpiry {
    fn ttl(&self, entry: &Entry) -> Option<Duration> {
        Some(
            entry
                .local_expires_at()
                .saturating_duration_since(self.clock.now_for_expiry()),
        )
    }
}

impl Expiry<Arc<str>, Entry> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &Arc<str>,
        value: &Entry,
        _created_at: Instant,
    ) -> Option<Duration> {
        self.ttl(value)
    }

    fn expire_after_update(
        &self,
        _key: &Arc<str>,
        value: &Entry,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        self.ttl(value)
    }
}

struct StampExpiry;

impl Expiry<Tag, Stamp> for StampExpiry {
    fn expire_after_create(&self, _key: &Tag, value: &Stamp, _at: Instant) -> Option<Duration> {
        Some(value.keep_for)
    }

    fn expire_after_update(
        &self,
        _key: &Tag,
        value: &Stamp,
        _at: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.keep_for)
    }
}

impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("entries", &self.entries.entry_count())
            .field("bytes", &self.entries.weighted_size())
            .field("stamps", &self.stamps.entry_count())
            .finish_non_exhaustive()
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        MemoryBackend::new(MemoryConfig::default())
    }
}

impl MemoryBackend {
    /// A backend with `config`.
    pub fn new(config: MemoryConfig) -> Self {
        let counters = Arc::new(Counters::default());
        let listener_counters = Arc::clone(&counters);
        let entries = moka::sync::Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(|key: &Arc<str>, entry: &Entry| {
                u32::try_from(key.len() + entry.value().len() + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
            })
            .expire_after(EntryExpiry {
                clock: Arc::clone(&config.clock),
            })
            .eviction_listener(move |_key, _value, cause| {
                if cause == RemovalCause::Size {
                    listener_counters.evictions.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        let stamps = moka::sync::Cache::builder()
            .expire_after(StampExpiry)
            .build();
        MemoryBackend {
            entries,
            stamps,
            stamp_lock: Mutex::new(()),
            generation: AtomicU64::new(0),
            max_expires_at: AtomicU64::new(0),
            clock: config.clock,
            counters,
        }
    }

    /// Runs moka's pending maintenance (evictions, expiry, counts) now. Counts in [`stats`] are
    /// approximate until then.
    ///
    /// [`stats`]: CacheBackend::stats
    pub async fn run_pending_tasks(&self) {
        self.entries.run_pending_tasks();
        self.stamps.run_pending_tasks();
    }

    /// Tag stamps currently kept.
    pub fn stamp_count(&self) -> u64 {
        self.stamps.run_pending_tasks();
        self.stamps.entry_count()
    }

    /// Whether `entry` is still valid: no tag of the key it was stored under (every entry here
    /// carries it, see [`Entry::stored_under`]), nor of the key it is asked for by (`asked`, when
    /// a probe has one), was invalidated at or after it was created.
    fn lookup(&self, entry: &Entry, asked: Option<&Key>) -> bool {
        // Expiry is moka's job (it checks on every read, see `EntryExpiry`); a second clock read
        // here would cost as much as the rest of the hit path.
        // Read the generation before the stamps: an invalidation that lands after this load bumps
        // the generation, so the entry is checked again on the next read.
        let generation = self.generation.load(Ordering::Acquire);
        let created = entry.created_at();
        let untouched = |tags: &[Tag]| {
            tags.iter()
                .all(|tag| self.stamps.get(tag).is_none_or(|stamp| stamp.at < created))
        };
        entry.is_valid_at(generation, || {
            let stored = entry.stored_key();
            stored.is_some_and(|stored| untouched(stored.tags()))
                && asked.is_none_or(|key| stored == Some(key) || untouched(key.tags()))
        })
    }

    fn probe(&self, name: &str, asked: Option<&Key>) -> Option<Entry> {
        let entry = self.entries.get(name)?;
        if !self.lookup(&entry, asked) {
            return None;
        }
        self.record(true);
        Some(entry)
    }

    fn record(&self, hit: bool) {
        let counter = if hit {
            &self.counters.hits
        } else {
            &self.counters.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    async fn put(&self, key: &Key, entry: Entry) {
        self.max_expires_at
            .fetch_max(entry.expires_at().as_micros(), Ordering::AcqRel);
        let now = self.clock.now();
        if !entry.is_alive(now) {
            self.entries.invalidate(key.as_str());
            return;
        }
        // A late fill (older data) never replaces an entry holding newer data.
        self.entries
            .entry(Arc::<str>::from(key.as_str()))
            .and_compute_with(|old| {
                let keep_old = old.is_some_and(|old| {
                    let old = old.value();
                    old.created_at() > entry.created_at() && old.is_alive(now)
                });
                if keep_old {
                    moka::ops::compute::Op::Nop
                } else {
                    moka::ops::compute::Op::Put(entry.stored_under(key))
                }
            });
    }
}

#[async_trait]
impl CacheBackend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &Key) -> Result<Option<Entry>> {
        Ok(self.get_now(key).or_else(|| {
            self.record(false);
            None
        }))
    }

    fn get_now(&self, key: &Key) -> Option<Entry> {
        self.probe(key.as_str(), Some(key))
    }

    fn get_now_named(&self, name: &str) -> Option<Entry> {
        self.probe(name, None)
    }

    async fn set(&self, key: &Key, entry: Entry) -> Result<()> {
        self.put(key, entry).await;
        Ok(())
    }

    async fn set_many(&self, items: &[(Key, Entry)]) -> Result<()> {
        for (key, entry) in items {
            self.put(key, entry.clone()).await;
        }
        Ok(())
    }

    async fn delete(&self, key: &Key) -> Result<bool> {
        Ok(self.entries.remove(key.as_str()).is_some())
    }

    async fn invalidate_tags(&self, tags: &[Tag], at: Timestamp) -> Result<()> {
        let now = self.clock.now();
        let last_expiry = Timestamp::from_micros(self.max_expires_at.load(Ordering::Acquire));
        // Keep the stamp while any entry it could hide may live, plus a margin for clock steps.
        let keep_for = last_expiry.saturating_duration_since(now) + Duration::from_secs(1);
        {
            let _guard = self.stamp_lock.lock().expect("stamp lock");
            for tag in tags {
                let at = self.stamps.get(tag).map_or(at, |old| old.at.max(at));
                self.stamps.insert(tag.clone(), Stamp { at, keep_for });
            }
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Drops every entry (a tiered cache's backplane reset); stamps stay, they only hide more.
    async fn clear_local(&self) -> Result<bool> {
        self.entries.invalidate_all();
        Ok(true)
    }

    async fn ping(&self) -> Result<Duration> {
        Ok(Duration::ZERO)
    }

    fn stats(&self) -> CacheStats {
        CacheStats::single({
            let mut tier = TierStats::new("memory", "memory");
            tier.hits = self.counters.hits.load(Ordering::Relaxed);
            tier.misses = self.counters.misses.load(Ordering::Relaxed);
            tier.entries = Some(self.entries.entry_count());
            tier.bytes = Some(self.entries.weighted_size());
            tier.evictions = Some(self.counters.evictions.load(Ordering::Relaxed));
            tier
        })
    }
}
