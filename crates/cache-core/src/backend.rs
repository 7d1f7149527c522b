//! [`CacheBackend`]: the object-safe contract every storage backend implements.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;

use crate::{
    entry::Entry,
    error::Result,
    key::{Key, Tag},
    stats::CacheStats,
    time::Timestamp,
};

/// A shared, type-erased backend, as applications hold it when the backend is chosen at run time.
pub type DynBackend = Arc<dyn CacheBackend>;

/// Bytes-in, bytes-out storage of [`Entry`]s with tag invalidation.
///
/// # Semantics every backend keeps (checked by `testing::conformance`)
///
/// - `get` returns an entry only while it is alive (`now < expires_at`) and only if no tag of the
///   key was invalidated at or after the entry's `created_at`. Stale entries (past `fresh_until`,
///   within grace) are returned; the caller decides what to do with them.
/// - `set` overwrites. An entry that is already dead or already invalidated may be dropped.
/// - `invalidate_tags(tags, at)` makes every entry of those tags created at or before `at` invisible,
///   including entries written later with an older `created_at` (the stale-fill race), in O(1)
///   round trips. Tag stamps only move forward.
/// - Batch calls: `get_many` returns one slot per key, in order; a key that is missing, expired,
///   invalidated or individually unreadable is `None`. The call fails as a whole only when the
///   backend cannot be reached. `set_many` and `delete_many` either succeed or fail as a whole; after
///   a failure some of the writes may have been applied.
/// - Errors are [`crate::Error`]s of kind `Backend`, `Timeout` or `Unavailable`.
#[async_trait]
pub trait CacheBackend: Send + Sync + 'static {
    /// A short name for metrics and errors (`memory`, `upstash`, `tiered`).
    fn name(&self) -> &'static str;

    /// The entry for `key`, if there is a valid one.
    async fn get(&self, key: &Key) -> Result<Option<Entry>>;

    /// Answers `get` without awaiting, if this backend can: in-process backends return
    /// `Some(entry)` for a hit, which spares the hit path a boxed future. `None` means "call
    /// [`get`](CacheBackend::get)" (a miss, or a backend that must do I/O).
    fn get_now(&self, key: &Key) -> Option<Entry> {
        let _ = key;
        None
    }

    /// [`get_now`](CacheBackend::get_now) by the key's name alone, for a hit that builds no
    /// [`Key`] (see [`KeyName`](crate::KeyName)): an in-process backend that keeps the tags
    /// of the key each entry was stored under checks those. `None` means "build the key and call
    /// `get_now` or `get`", so backends without an in-process tier keep this default.
    fn get_now_named(&self, name: &str) -> Option<Entry> {
        let _ = name;
        None
    }

    /// The entries for `keys`, in order.
    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Entry>>> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.get(key).await?);
        }
        Ok(out)
    }

    /// Stores `entry` under `key` until `entry.expires_at()`.
    async fn set(&self, key: &Key, entry: Entry) -> Result<()>;

    /// Stores several entries.
    async fn set_many(&self, items: &[(Key, Entry)]) -> Result<()> {
        for (key, entry) in items {
            self.set(key, entry.clone()).await?;
        }
        Ok(())
    }

    /// Removes `key`. Returns whether it existed.
    async fn delete(&self, key: &Key) -> Result<bool>;

    /// Removes several keys. Returns how many existed.
    async fn delete_many(&self, keys: &[Key]) -> Result<u64> {
        let mut removed = 0;
        for key in keys {
            removed += u64::from(self.delete(key).await?);
        }
        Ok(removed)
    }

    /// Invalidates every entry of `tags` created at or before `at`.
    async fn invalidate_tags(&self, tags: &[Tag], at: Timestamp) -> Result<()>;

    /// Drops every entry this backend holds, if it is an in-process copy that can do so at once
    /// (a tiered cache's L1 being reset by its backplane). Returns `false` for backends that do
    /// not (the default, and every shared remote store): the caller then invalidates by tag.
    async fn clear_local(&self) -> Result<bool> {
        Ok(false)
    }

    /// Checks that the backend answers, returning the round-trip time.
    async fn ping(&self) -> Result<Duration>;

    /// A snapshot of the backend's counters.
    fn stats(&self) -> CacheStats;
}
