#![doc = include_str!("../README.md")]
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
pub use key::{Key, KeyName, MAX_KEY_LEN, Namespace, Tag};
pub use noop::NoopBackend;
pub use policy::TtlPolicy;
pub use stats::CacheStats;
pub use tiered::{TieredBackend, TieredConfig};
pub use time::{Clock, OffsetClock, SystemClock, Timestamp};
