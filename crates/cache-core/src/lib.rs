//! The core of the cache layer: what a cache backend is, how values and keys look on the wire,
//! and the two things built on that contract, the typed [`Cache`] facade and the [`TieredBackend`].
//!
//! Backends (memory, Upstash) depend on this crate alone and implement [`CacheBackend`], a
//! bytes-in, bytes-out, object-safe trait that `Arc<dyn CacheBackend>` can hold, so applications
//! pick a backend at run time. This crate stays small: no HTTP stack, no Redis client, no moka.
//!
//! # The model
//!
//! - A [`Key`] is built through a [`Namespace`] (prefix + format version), never by `format!`;
//!   names typed by people are read back with [`Namespace::parse`] and [`Tag::parse`], never
//!   split by hand.
//!   A key carries its [`Tag`]s: the tags are part of the key's definition, so a reader knows which
//!   invalidations apply to an entry without a second round trip.
//! - An [`Entry`] is the JSON of a value plus three timestamps: when its data was read from the
//!   source (`created_at`), until when it is fresh, and until when it may be kept as a stale
//!   fallback (grace).
//! - Invalidating a tag stores one timestamp for the tag. An entry is valid only if it was created
//!   after every stamp of its tags. This is O(1) per invalidation, needs no tracking sets, and makes
//!   the classic stale-fill race harmless: a fill that started before an invalidation carries an
//!   older `created_at` and is rejected on read.
//! - [`Cache::get_or_load`] is cache-aside with single-flight, stale-while-revalidate and fail-safe.
//! - [`TieredBackend`] puts a fast L1 in front of a remote L2 with per-call timeouts, a circuit
//!   breaker and the replay of invalidations that could not reach L2.
//! - A [`Backplane`] carries invalidation notices (not values) and application messages between
//!   instances that share an L2, so a [`TieredBackend`] on it keeps L1 entries for their whole TTL
//!   while staying coherent with the other instances' writes.
//!
//! # Example
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//! use cache_core::{Cache, Namespace, TtlPolicy, testing::MapBackend};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> cache_core::Result<()> {
//! let cache = Cache::new(Arc::new(MapBackend::new()));
//! let ns = Namespace::new("chat", 1)?;
//! let key = ns.key("user-channels", &[&42]).tagged(&[ns.tag("user", &[&42])]);
//! let policy = TtlPolicy::new(Duration::from_secs(300));
//!
//! let channels: Vec<String> = cache
//!     .get_or_load(&key, &policy, || async { Ok::<_, std::io::Error>(vec!["general".to_owned()]) })
//!     .await?;
//! assert_eq!(channels, ["general"]);
//! # Ok(()) }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

mod backend;
mod backplane;
mod breaker;
mod cache;
pub mod codec;
mod entry;
mod error;
mod key;
mod noop;
mod policy;
mod single_flight;
pub mod stats;
mod tiered;
mod time;

#[cfg(feature = "testing")]
pub mod testing;

pub use backend::{CacheBackend, DynBackend};
pub use backplane::{
    AppMessage, Backplane, BackplaneConfig, BackplaneState, BackplaneStats, BackplaneTransport,
    DynTransport, ENVELOPE_VERSION, LocalTransport, Notice, TransportEvent,
};
pub use breaker::{BreakerConfig, BreakerState};
pub use cache::{Cache, CacheConfig, CacheValue};
pub use codec::{Codec, Compression};
pub use entry::Entry;
pub use error::{BoxError, Error, ErrorKind, Result};
pub use key::{Key, MAX_KEY_LEN, Namespace, Tag};
pub use noop::NoopBackend;
pub use policy::TtlPolicy;
pub use stats::CacheStats;
pub use tiered::{TieredBackend, TieredConfig};
pub use time::{Clock, OffsetClock, SystemClock, Timestamp};
