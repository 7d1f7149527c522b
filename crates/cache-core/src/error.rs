//! The one error type of `cache-core`, with a stable [`ErrorKind`] for callers that branch on it.

use std::{error::Error as StdError, fmt, sync::Arc, time::Duration};

/// A boxed error from a backend or a loader, shareable between the callers of one load.
pub type BoxError = Arc<dyn StdError + Send + Sync + 'static>;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the cache layer.
///
/// Cloneable, so that one failed load can be reported to every caller that waited for it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key, tag or namespace was rejected when it was built.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// A configuration value is out of range.
    #[error("invalid cache configuration: {0}")]
    Config(String),
    /// A value could not be serialized.
    #[error("could not encode value: {0}")]
    Encode(#[source] Arc<serde_json::Error>),
    /// Stored bytes are not a value this codec wrote (foreign, truncated or corrupt).
    #[error("could not decode cached bytes: {0}")]
    Decode(String),
    /// The backend answered with an error or could not be reached.
    #[error("{backend} backend error: {message}")]
    Backend {
        /// Which backend (`memory`, `upstash`, …).
        backend: &'static str,
        /// What went wrong, without secrets.
        message: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// The backend did not answer in time.
    #[error("{backend} backend timed out after {after:?}")]
    Timeout {
        /// Which backend.
        backend: &'static str,
        /// The timeout that elapsed.
        after: Duration,
    },
    /// The backend was skipped because its circuit breaker is open.
    #[error("{backend} backend unavailable: circuit breaker open")]
    Unavailable {
        /// Which backend.
        backend: &'static str,
    },
    /// The loader of a `get_or_load` failed and no stale value could stand in.
    #[error("loader failed: {0}")]
    Loader(#[source] BoxError),
}

/// A coarse classification of [`Error`], stable across versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// See [`Error::InvalidKey`].
    InvalidKey,
    /// See [`Error::Config`].
    Config,
    /// [`Error::Encode`] or [`Error::Decode`].
    Codec,
    /// See [`Error::Backend`].
    Backend,
    /// See [`Error::Timeout`].
    Timeout,
    /// See [`Error::Unavailable`].
    Unavailable,
    /// See [`Error::Loader`].
    Loader,
}

impl Error {
    /// A backend error with a message and an optional cause.
    pub fn backend(
        backend: &'static str,
        message: impl fmt::Display,
        source: Option<Box<dyn StdError + Send + Sync + 'static>>,
    ) -> Self {
        Error::Backend {
            backend,
            message: message.to_string(),
            source: source.map(BoxError::from),
        }
    }

    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidKey(_) => ErrorKind::InvalidKey,
            Error::Config(_) => ErrorKind::Config,
            Error::Encode(_) | Error::Decode(_) => ErrorKind::Codec,
            Error::Backend { .. } => ErrorKind::Backend,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::Loader(_) => ErrorKind::Loader,
        }
    }

    /// Whether the backend timed out.
    pub fn is_timeout(&self) -> bool {
        self.kind() == ErrorKind::Timeout
    }

    /// Whether stored bytes or a value could not be (de)serialized.
    pub fn is_codec(&self) -> bool {
        self.kind() == ErrorKind::Codec
    }

    /// Whether the loader failed.
    pub fn is_loader(&self) -> bool {
        self.kind() == ErrorKind::Loader
    }

    /// Whether the cache backend (not the caller or the loader) is at fault: an error, a
    /// timeout or an open breaker. A tiered cache falls back to L1 on these.
    pub fn is_backend(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Backend | ErrorKind::Timeout | ErrorKind::Unavailable
        )
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Error::Encode(Arc::new(err))
    }
}
