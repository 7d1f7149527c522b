//! [`Entry`]: what a backend stores for a key.

use std::{
    any::Any,
    fmt,
    sync::{Arc, OnceLock},
};

use bytes::Bytes;

use crate::time::Timestamp;

type Decoded = Arc<dyn Any + Send + Sync>;

/// A cached value (its JSON bytes) with its timestamps.
///
/// - `created_at`: when the data was read from the source of truth (the start of the load).
///   A tag invalidation stamped at or after this time invalidates the entry.
/// - `fresh_until`: the logical expiry; after it the entry is stale.
/// - `expires_at`: the physical expiry; between `fresh_until` and `expires_at` (the grace period)
///   a stale entry may still be served as a fallback.
///
/// Cloning is cheap (reference counts). An in-process backend can keep the decoded value next to
/// the bytes, so a hit costs no deserialization.
#[derive(Clone)]
pub struct Entry {
    /// The value, as written by [`Codec::encode_value`](crate::Codec::encode_value).
    pub value: Bytes,
    /// When the data was read from the source.
    pub created_at: Timestamp,
    /// Until when the entry is fresh.
    pub fresh_until: Timestamp,
    /// Until when the entry may be kept at all.
    pub expires_at: Timestamp,
    decoded: Arc<OnceLock<Decoded>>,
}

impl Entry {
    /// A new entry.
    pub fn new(
        value: Bytes,
        created_at: Timestamp,
        fresh_until: Timestamp,
        expires_at: Timestamp,
    ) -> Self {
        Entry {
            value,
            created_at,
            fresh_until: fresh_until.min(expires_at),
            expires_at,
            decoded: Arc::default(),
        }
    }

    /// Whether the entry is fresh at `now`.
    pub fn is_fresh(&self, now: Timestamp) -> bool {
        now < self.fresh_until
    }

    /// Whether the entry may still be used at all at `now` (fresh or in grace).
    pub fn is_alive(&self, now: Timestamp) -> bool {
        now < self.expires_at
    }

    /// The decoded value of type `T`, if one was attached and is of that type.
    pub(crate) fn decoded<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.decoded.get()?.downcast_ref::<T>()
    }

    /// Attaches a decoded value so later hits on the same in-process entry skip decoding.
    pub(crate) fn attach_decoded(&self, value: Decoded) {
        let _ = self.decoded.set(value);
    }

    /// The same entry with other times, sharing the bytes and the decoded value.
    #[must_use]
    pub fn with_times(&self, fresh_until: Timestamp, expires_at: Timestamp) -> Entry {
        Entry {
            value: self.value.clone(),
            created_at: self.created_at,
            fresh_until: fresh_until.min(expires_at),
            expires_at,
            decoded: Arc::clone(&self.decoded),
        }
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
            && self.created_at == other.created_at
            && self.fresh_until == other.fresh_until
            && self.expires_at == other.expires_at
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("len", &self.value.len())
            .field("created_at", &self.created_at)
            .field("fresh_until", &self.fresh_until)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}
