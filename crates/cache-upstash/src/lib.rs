//! A complete client for the [Upstash Redis REST API](https://upstash.com/docs/redis/features/restapi),
//! and a [`cache_core::CacheBackend`] on it.
//!
//! - [`Redis`]: built from the environment ([`Redis::from_env`], the `Redis.fromEnv()` of
//!   `@upstash/redis`) or a [`RedisBuilder`]; typed commands returning Rust types
//!   ([`Option<Bytes>`](bytes::Bytes), `i64`, `Vec<…>`), a raw [`Command`] escape hatch,
//!   JSON helpers, [`Pipeline`]s and transactions with a typed [`Handle`] per command,
//!   optional auto-pipelining, [`Script`]s with `EVALSHA`→`EVAL` fallback, a `SCAN` stream.
//! - Binary-safe: replies use `Upstash-Encoding: base64` by default, and a command with a
//!   non-UTF-8 argument is sent in Upstash's path form with the value as the raw body (a JSON
//!   body can only carry text; pipelines refuse such commands with [`Error::InvalidRequest`]).
//! - Every request has a timeout; only safe failures are retried ([`RetryPolicy`]); errors say
//!   what happened ([`ErrorKind`]: not sent, timed out, transport, HTTP status, unexpected
//!   response, Redis error, unauthorized, quota). The token never appears in `Debug` or errors.
//! - Read-your-writes: the `upstash-sync-token` of each answer goes out on the very next request.
//! - [`ClientStats`] count HTTP requests and billed commands.
//! - [`UpstashBackend`]: entries, tags and invalidation stamps for `cache-core`, one request per
//!   read, per batch read, and per invalidation.
//! - Pub/sub: [`Redis::subscribe`] / [`Redis::psubscribe`] over Upstash's SSE streams, with typed
//!   [`SubscriptionEvent`]s, a heartbeat timeout and reconnection; [`UpstashTransport`], the
//!   `cache-core` backplane on one channel.
//! - Clock sync: [`Redis::time`], [`measure_clock_offset`] and [`spawn_clock_sync`] keep a
//!   [`cache_core::OffsetClock`] on Redis's time line, within half a round trip.
//!
//! # Example
//!
//! ```no_run
//! use cache_upstash::Redis;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> cache_upstash::Result<()> {
//! let redis = Redis::from_env()?;
//! redis.set("greeting", "hello").await?;
//! let mut pipe = redis.pipeline();
//! let count = pipe.incr("visits");
//! let greeting = pipe.get("greeting");
//! let results = pipe.exec().await?;
//! println!("{} visits, {:?}", results.get(&count)?, results.get(&greeting)?);
//! # Ok(()) }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

mod auto_pipeline;
mod backend;
mod client;
mod clock;
mod command;
mod commands;
mod config;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod pipeline;
mod script;
mod subscribe;
mod transport;
mod value;
mod wire;

pub use backend::{UpstashBackend, UpstashBackendConfig};
pub use client::{ClientStats, Redis};
pub use clock::{
    ClockSample, MAX_SYNC_RTT, SYNC_SAMPLES, best_clock_sample, measure_clock_offset,
    spawn_clock_sync, sync_clock,
};
pub use command::{Command, TypedCommand};
pub use commands::{ScanOptions, SetOptions, cmd};
pub use config::{RedisBuilder, RetryPolicy, Secret};
pub use error::{BoxError, Error, ErrorKind, Result};
pub use pipeline::{Handle, Pipeline, PipelineResults};
pub use script::Script;
pub use subscribe::{SubscribeOptions, Subscription, SubscriptionEvent};
pub use transport::{MAX_FRAME_BYTES, UpstashTransport};
pub use value::{FromValue, IntoArg, Value};
pub use wire::ResponseEncoding;
