#![doc = include_str!("../README.md")]
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
