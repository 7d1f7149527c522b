//! The library's error type: configuration, binding, and talking to Redis.
//!
//! HTTP clients never see these values directly; the server turns them into Upstash-shaped
//! `{"error": "…"}` bodies (see `http.rs`). Callers classify with [`Error::kind`] and the `is_*`
//! helpers rather than by matching messages.

use std::{io, time::Duration};

/// A specialised `Result` for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the gateway library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is unusable (bad Redis URL, missing token, out-of-range setting).
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

/// The broad class of an [`Error`], for callers that branch on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// [`Error::Config`].
    Config,
    /// [`Error::Bind`].
    Bind,
    /// Redis cannot be reached or the connection broke: [`Error::RedisUnavailable`],
    /// [`Error::RedisConnectionLost`].
    RedisUnavailable,
    /// [`Error::RedisTimeout`] or [`Error::PoolExhausted`].
    Timeout,
    /// [`Error::RedisHandshake`] or [`Error::Protocol`]: Redis answered, but not as expected.
    RedisMisbehaved,
}

impl Error {
    /// The broad class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config(_) => ErrorKind::Config,
            Error::Bind { .. } => ErrorKind::Bind,
            Error::RedisUnavailable { .. } | Error::RedisConnectionLost(_) => {
                ErrorKind::RedisUnavailable
            }
            Error::RedisTimeout(_) | Error::PoolExhausted(_) => ErrorKind::Timeout,
            Error::RedisHandshake(_) | Error::Protocol(_) => ErrorKind::RedisMisbehaved,
        }
    }

    /// The configuration is unusable.
    pub fn is_config(&self) -> bool {
        self.kind() == ErrorKind::Config
    }

    /// Redis could not be reached, or the connection broke mid-request.
    pub fn is_redis_unavailable(&self) -> bool {
        self.kind() == ErrorKind::RedisUnavailable
    }

    /// Redis (or a free pooled connection) did not come within the time limit.
    pub fn is_timeout(&self) -> bool {
        self.kind() == ErrorKind::Timeout
    }
}
