//! [`NoopBackend`]: stores nothing. The "no cache" baseline of benchmarks, and a way to run an
//! application with caching switched off without changing its code.

use std::time::Duration;

use async_trait::async_trait;

use crate::{
    backend::CacheBackend,
    entry::Entry,
    error::Result,
    key::{Key, Tag},
    stats::{CacheStats, Counter, TierStats},
    time::Timestamp,
};

/// A backend that forgets everything: every read is a miss.
///
/// `Cache::get_or_load` over it still coalesces concurrent loads of one key (single-flight).
#[derive(Debug, Default)]
pub struct NoopBackend {
    misses: Counter,
}

impl NoopBackend {
    /// A new backend.
    pub fn new() -> Self {
        NoopBackend::default()
    }
}

#[async_trait]
impl CacheBackend for NoopBackend {
    fn name(&self) -> &'static str {
        "none"
    }

    async fn get(&self, _key: &Key) -> Result<Option<Entry>> {
        self.misses.inc();
        Ok(None)
    }

    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Entry>>> {
        self.misses.add(keys.len() as u64);
        Ok(vec![None; keys.len()])
    }

    async fn set(&self, _key: &Key, _entry: Entry) -> Result<()> {
        Ok(())
    }

    async fn delete(&self, _key: &Key) -> Result<bool> {
        Ok(false)
    }

    async fn invalidate_tags(&self, _tags: &[Tag], _at: Timestamp) -> Result<()> {
        Ok(())
    }

    async fn ping(&self) -> Result<Duration> {
        Ok(Duration::ZERO)
    }

    fn stats(&self) -> CacheStats {
        let mut tier = TierStats::new("none", "none");
        tier.misses = self.misses.get();
        CacheStats::single(tier)
    }
}
