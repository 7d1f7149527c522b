//! [`Entry`]: what a backend stores for a key.

use std::{
    any::Any,
    fmt,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use bytes::Bytes;

use crate::{key::Key, time::Timestamp};

type Decoded = Arc<dyn Any + Send + Sync>;

/// A cached value (its JSON bytes) with its timestamps.
///
/// - `created_at`: when the data was read from the source of truth (the start of the load).
///   A tag invalidation stamped at or after this time invalidates the entry.
/// - `fresh_until`: the logical expiry; after it the entry is stale.
/// - `expires_at`: the physical expiry; between `fresh_until` and `expires_at` (the grace period)
///   a stale entry may still be served as a fallback.
///
/// Cloning costs one reference count. An in-process backend keeps the decoded value next to the
/// bytes, so a hit through [`Cache`](crate::Cache) costs no deserialization.
#[derive(Clone)]
pub struct Entry(Arc<Inner>);

struct Inner {
    value: Bytes,
    created_at: Timestamp,
    fresh_until: Timestamp,
    expires_at: Timestamp,
    // How long this copy may be kept by the tier holding it (an L1 cap); never on the wire.
    local_expires_at: Timestamp,
    decoded: OnceLock<Decoded>,
    // The invalidation generation at which an in-process backend last found this entry valid
    // (`u64::MAX`: never); see `Entry::is_valid_at`.
    validated_generation: AtomicU64,
    // The key an in-process backend stores this entry under; see `Entry::stored_under`.
    stored_key: OnceLock<Key>,
}

impl Entry {
    /// A new entry. `fresh_until` is clamped to `expires_at`.
    pub fn new(
        value: Bytes,
        created_at: Timestamp,
        fresh_until: Timestamp,
        expires_at: Timestamp,
    ) -> Self {
        Entry(Arc::new(Inner {
            value,
            created_at,
            fresh_until: fresh_until.min(expires_at),
            expires_at,
            local_expires_at: expires_at,
            decoded: OnceLock::new(),
            validated_generation: AtomicU64::new(u64::MAX),
            stored_key: OnceLock::new(),
        }))
    }

    /// The value, as written by [`Codec::encode_value`](crate::Codec::encode_value).
    pub fn value(&self) -> &Bytes {
        &self.0.value
    }

    /// When the data was read from the source.
    pub fn created_at(&self) -> Timestamp {
        self.0.created_at
    }

    /// Until when the entry is fresh.
    pub fn fresh_until(&self) -> Timestamp {
        self.0.fresh_until
    }

    /// Until when the entry may be kept at all.
    pub fn expires_at(&self) -> Timestamp {
        self.0.expires_at
    }

    /// Until when the tier holding this copy may keep it: `expires_at`, or earlier for a copy
    /// capped with [`Entry::with_local_expiry`]. In-process backends expire entries at this time.
    pub fn local_expires_at(&self) -> Timestamp {
        self.0.local_expires_at
    }

    /// This entry (same data and times) to be kept by the holding tier only until `at` at most.
    /// A tiered cache caps its L1 copies this way without changing what readers see.
    #[must_use]
    pub fn with_local_expiry(&self, at: Timestamp) -> Entry {
        self.rebuilt(self.0.fresh_until, self.0.expires_at, at)
    }

    /// Whether the entry is fresh at `now`.
    pub fn is_fresh(&self, now: Timestamp) -> bool {
        now < self.0.fresh_until
    }

    /// Whether an entry that a backend returned (so it is alive) is fresh. Reads the clock only
    /// for entries with a grace period: without one, alive means fresh, and a hit costs no clock
    /// read.
    pub(crate) fn is_fresh_when_alive(&self, now: impl FnOnce() -> Timestamp) -> bool {
        self.0.fresh_until == self.0.expires_at || self.is_fresh(now())
    }

    /// Whether the entry may still be used at all at `now` (fresh or in grace).
    pub fn is_alive(&self, now: Timestamp) -> bool {
        now < self.0.expires_at
    }

    /// The same data with other times, sharing the bytes and the decoded value.
    #[must_use]
    pub fn with_times(&self, fresh_until: Timestamp, expires_at: Timestamp) -> Entry {
        self.rebuilt(fresh_until, expires_at, expires_at)
    }

    /// A new entry of the same data, sharing the bytes and the decoded value.
    fn rebuilt(&self, fresh_until: Timestamp, expires_at: Timestamp, local: Timestamp) -> Entry {
        let entry = Entry(Arc::new(Inner {
            value: self.0.value.clone(),
            created_at: self.0.created_at,
            fresh_until: fresh_until.min(expires_at),
            expires_at,
            local_expires_at: local.min(expires_at),
            decoded: OnceLock::new(),
            validated_generation: AtomicU64::new(u64::MAX),
            stored_key: OnceLock::new(),
        }));
        if let Some(decoded) = self.0.decoded.get() {
            entry.attach_decoded(Arc::clone(decoded));
        }
        entry
    }

    /// For in-process backends, which keep the entry itself: whether it is still valid at
    /// invalidation `generation` (a counter the backend bumps on every invalidation), running
    /// `check` (its tag lookups) only when the entry was not already found valid at that
    /// generation. While nothing is invalidated, a hit costs one atomic load and no lookups.
    pub fn is_valid_at(&self, generation: u64, check: impl FnOnce() -> bool) -> bool {
        if self.0.validated_generation.load(Ordering::Acquire) == generation {
            return true;
        }
        let valid = check();
        if valid {
            self.0
                .validated_generation
                .store(generation, Ordering::Release);
        }
        valid
    }

    /// For in-process backends: this entry, carrying `key` as the key it is stored under, so a
    /// later probe by name alone ([`CacheBackend::get_now_named`](crate::CacheBackend::get_now_named))
    /// can check that key's tags without cloning anything but the entry. The same entry if it
    /// carries no key yet or already carries one of this name; otherwise a copy sharing the bytes
    /// and the decoded value.
    #[must_use]
    pub fn stored_under(&self, key: &Key) -> Entry {
        match self.0.stored_key.get() {
            None if self.0.stored_key.set(key.clone()).is_ok() => self.clone(),
            Some(stored) if stored.as_str() == key.as_str() => self.clone(),
            // Another key (or a racing `stored_under` won): a copy of its own.
            _ => {
                let copy = self.rebuilt(
                    self.0.fresh_until,
                    self.0.expires_at,
                    self.0.local_expires_at,
                );
                let _ = copy.0.stored_key.set(key.clone());
                copy
            }
        }
    }

    /// The key given to [`Entry::stored_under`], if any.
    pub fn stored_key(&self) -> Option<&Key> {
        self.0.stored_key.get()
    }

    /// The decoded value of type `T`, if one was attached and is of that type.
    pub(crate) fn decoded<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.0.decoded.get()?.downcast_ref::<T>()
    }

    /// Attaches a decoded value so later hits on the same in-process entry skip decoding.
    pub(crate) fn attach_decoded(&self, value: Decoded) {
        let _ = self.0.decoded.set(value);
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.0.value == other.0.value
            && self.0.created_at == other.0.created_at
            && self.0.fresh_until == other.0.fresh_until
            && self.0.expires_at == other.0.expires_at
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("len", &self.0.value.len())
            .field("created_at", &self.0.created_at)
            .field("fresh_until", &self.0.fresh_until)
            .field("expires_at", &self.0.expires_at)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn entry() -> Entry {
        let t = Timestamp::from_micros(1_000);
        Entry::new(
            Bytes::from_static(b"1"),
            t,
            t,
            Timestamp::from_micros(2_000),
        )
    }

    #[test]
    fn an_entry_carries_the_one_key_it_is_stored_under() {
        let ns = crate::Namespace::new("entry", 1).unwrap();
        let (a, b) = (ns.key("k", &[&"a"]), ns.key("k", &[&"b"]));
        let entry = entry();
        assert!(entry.stored_key().is_none());
        let under_a = entry.stored_under(&a);
        assert_eq!(under_a.stored_key(), Some(&a));
        assert!(
            Arc::ptr_eq(&under_a.0, &entry.0),
            "no copy for the first key"
        );
        let again = entry.stored_under(&ns.key("k", &[&"a"]));
        assert!(Arc::ptr_eq(&again.0, &entry.0), "nor for the same name");
        // Stored under another key too (one value set under two keys): a copy of its own, and
        // the first keeps its key.
        let under_b = entry.stored_under(&b);
        assert_eq!(under_b.stored_key(), Some(&b));
        assert!(!Arc::ptr_eq(&under_b.0, &entry.0));
        assert_eq!(under_b, entry, "same data and times");
        assert_eq!(entry.stored_key(), Some(&a));
    }

    #[test]
    fn validity_is_checked_once_per_generation_and_never_remembered_when_invalid() {
        let entry = entry();
        let checks = Cell::new(0);
        let check = |valid: bool| {
            checks.set(checks.get() + 1);
            valid
        };
        assert!(entry.is_valid_at(1, || check(true)));
        assert!(
            entry.is_valid_at(1, || check(false)),
            "memoized for generation 1"
        );
        assert_eq!(checks.get(), 1);
        // A new generation (an invalidation happened) checks again, and a failed check is not
        // remembered: the next read checks once more.
        assert!(!entry.is_valid_at(2, || check(false)));
        assert!(!entry.is_valid_at(2, || check(false)));
        assert_eq!(checks.get(), 3);
        // Copies with other times start unvalidated.
        assert!(
            entry
                .with_times(Timestamp::from_micros(1_500), Timestamp::from_micros(2_000))
                .is_valid_at(1, || check(true))
        );
        assert_eq!(checks.get(), 4);
    }
}
