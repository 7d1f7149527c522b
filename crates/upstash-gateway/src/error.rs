//! The library's errors: [`Error`] for what the public API returns (configuration, binding),
//! and the crate-internal `RedisError` for trouble talking to Redis.
//!
//! HTTP clients never see these values directly; the server turns Redis trouble into
//! Upstash-shaped `{"error": "…"}` bodies with a 5xx status (see `http.rs`). Callers classify
//! with [`Error::kind`] rather than by matching messages.

use std::{io, time::Duration};

/// A specialised `Result` for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a gateway could not start ([`GatewayBuilder::start`](crate::GatewayBuilder::start)).
///
/// Trouble reaching Redis is not among them: Redis is connected to lazily, and failures later on
/// are answered to HTTP clients (503, 504, 502), never returned to the caller.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is unusable (bad Redis URL, missing or clashing token, a zero limit or
    /// timeout); the message says which setting.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The listen address could not be bound.
    #[error("could not listen on {addr}")]
    Bind {
        /// The address as given.
        addr: String,
        /// Why binding failed.
        #[source]
        source: io::Error,
    },
}

/// The broad class of an [`Error`], for callers that branch on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// [`Error::Config`].
    Config,
    /// [`Error::Bind`].
    Bind,
}

impl Error {
    /// The broad class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config(_) => ErrorKind::Config,
            Error::Bind { .. } => ErrorKind::Bind,
        }
    }

    /// The configuration is unusable.
    pub fn is_config(&self) -> bool {
        self.kind() == ErrorKind::Config
    }
}

/// Trouble talking to Redis, which the HTTP side maps to a status and an `ERR gateway: …` text.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RedisError {
    /// No connection to Redis could be opened (refused, unreachable, or it did not answer in time).
    #[error("redis at {addr} is unavailable")]
    RedisUnavailable {
        /// `host:port` of the Redis server (never the URL, which may hold a password).
        addr: String,
        /// The connect error.
        #[source]
        source: io::Error,
    },
    /// An open connection to Redis broke while a request was using it.
    #[error("lost the connection to redis")]
    RedisConnectionLost(#[source] io::Error),
    /// Redis did not answer within the configured timeout.
    #[error("redis did not answer within {0:?}")]
    RedisTimeout(Duration),
    /// Every pooled Redis connection stayed busy for longer than the pool's wait limit.
    #[error("no redis connection became free within {0:?}")]
    PoolExhausted(Duration),
    /// Redis refused the connection setup (`AUTH` or `SELECT` failed).
    #[error("redis refused the connection setup: {0}")]
    RedisHandshake(String),
    /// Redis sent bytes that are not RESP2.
    #[error("redis protocol error: {0}")]
    Protocol(String),
}
