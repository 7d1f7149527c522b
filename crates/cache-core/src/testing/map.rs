//! [`MapBackend`]: the simplest correct backend, a mutex-guarded map. The reference the
//! conformance suite is checked against, and a stand-in L2 for tiered-cache tests.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;

use crate::{
    backend::CacheBackend,
    entry::Entry,
    error::Result,
    key::{Key, Tag},
    stats::{CacheStats, Counter, TierStats},
    time::{Clock, SystemClock, Timestamp},
};

/// An in-memory backend for tests. Its tag stamps are never pruned: not for production.
#[derive(Debug)]
pub struct MapBackend {
    entries: Mutex<HashMap<Box<str>, Entry>>,
    stamps: Mutex<HashMap<Tag, Timestamp>>,
    clock: Arc<dyn Clock>,
    hits: Counter,
    misses: Counter,
}

impl Default for MapBackend {
    fn default() -> Self {
        MapBackend::new()
    }
}

impl MapBackend {
    /// An empty backend on the system clock.
    pub fn new() -> Self {
        MapBackend::with_clock(Arc::new(SystemClock))
    }

    /// An empty backend on `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        MapBackend {
            entries: Mutex::default(),
            stamps: Mutex::default(),
            clock,
            hits: Counter::default(),
            misses: Counter::default(),
        }
    }

    /// Number of entries stored (alive or not).
    pub fn len(&self) -> usize {
        self.entries.lock().expect("lock").len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The raw entry, ignoring expiry and tags (to inspect what a cache wrote).
    pub fn raw(&self, key: &Key) -> Option<Entry> {
        self.entries
            .lock()
            .expect("lock")
            .get(key.as_str())
            .cloned()
    }

    fn valid(&self, key: &Key, entry: &Entry) -> bool {
        if self.clock.now() >= entry.local_expires_at() {
            return false;
        }
        let stamps = self.stamps.lock().expect("lock");
        key.tags()
            .iter()
            .all(|tag| stamps.get(tag).is_none_or(|at| *at < entry.created_at()))
    }
}

#[async_trait]
impl CacheBackend for MapBackend {
    fn name(&self) -> &'static str {
        "map"
    }

    async fn get(&self, key: &Key) -> Result<Option<Entry>> {
        let entry = self
            .entries
            .lock()
            .expect("lock")
            .get(key.as_str())
            .cloned();
        let found = entry.filter(|e| self.valid(key, e));
        if found.is_some() {
            self.hits.inc();
        } else {
            self.misses.inc();
        }
        Ok(found)
    }

    /// Keeps an existing entry whose data is newer (a late fill never replaces a newer entry).
    async fn set(&self, key: &Key, entry: Entry) -> Result<()> {
        let mut entries = self.entries.lock().expect("lock");
        let newer_exists = entries.get(key.as_str()).is_some_and(|old| {
            old.created_at() > entry.created_at() && old.is_alive(self.clock.now())
        });
        if !newer_exists {
            entries.insert(key.as_str().into(), entry);
        }
        Ok(())
    }

    async fn delete(&self, key: &Key) -> Result<bool> {
        Ok(self
            .entries
            .lock()
            .expect("lock")
            .remove(key.as_str())
            .is_some())
    }

    async fn clear_local(&self) -> Result<bool> {
        self.entries.lock().expect("lock").clear();
        Ok(true)
    }

    async fn invalidate_tags(&self, tags: &[Tag], at: Timestamp) -> Result<()> {
        let mut stamps = self.stamps.lock().expect("lock");
        for tag in tags {
            let slot = stamps.entry(tag.clone()).or_insert(at);
            *slot = (*slot).max(at);
        }
        Ok(())
    }

    async fn ping(&self) -> Result<Duration> {
        let started = Instant::now();
        drop(self.entries.lock().expect("lock"));
        Ok(started.elapsed())
    }

    fn stats(&self) -> CacheStats {
        CacheStats::single(TierStats {
            tier: "map".into(),
            backend: "map".into(),
            hits: self.hits.get(),
            misses: self.misses.get(),
            entries: Some(self.len() as u64),
            ..TierStats::default()
        })
    }
}
