//! The one error type of the crate, classified the way a caller decides what to do next: was the
//! request sent at all, did it time out, did the connection break, did the server answer
//! something unexpected, or did Redis (or Upstash's quota) say no.
//!
//! No variant ever carries the REST token, and Redis errors carry the command name but never its
//! arguments (they may be user data).

use std::{error::Error as StdError, sync::Arc, time::Duration};

/// A shareable cause, so one failed auto-pipelined request can be reported to every waiter.
pub type BoxError = Arc<dyn StdError + Send + Sync + 'static>;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to Upstash.
///
/// Branch on [`Error::kind`] or the `is_*` helpers rather than on messages.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client configuration is missing or malformed (URL, token, option values).
    #[error("invalid upstash configuration: {message}")]
    Config {
        /// What is wrong, without the token.
        message: String,
    },
    /// The command cannot be expressed in the REST protocol (for example a non-UTF-8 argument in
    /// a pipeline, whose JSON body can only carry text). Nothing was sent.
    #[error("request cannot be sent: {message}")]
    InvalidRequest {
        /// Why.
        message: String,
    },
    /// The request never left: the connection could not be established. Always safe to retry.
    #[error("request not sent: {message}")]
    NotSent {
        /// What failed.
        message: String,
        /// The underlying transport error.
        #[source]
        source: Option<BoxError>,
    },
    /// No complete answer within the timeout. The command may or may not have run.
    #[error("request timed out after {after:?}")]
    Timeout {
        /// The timeout that elapsed.
        after: Duration,
    },
    /// The connection failed after the request may have reached the server (reset, broken body).
    /// The command may or may not have run.
    #[error("transport error: {message}")]
    Transport {
        /// What failed.
        message: String,
        /// The underlying transport error.
        #[source]
        source: Option<BoxError>,
    },
    /// The server answered with an HTTP error status and no Redis error (5xx, 429, 405…).
    #[error("upstash answered HTTP {status}: {message}")]
    Http {
        /// The HTTP status.
        status: u16,
        /// The `error` field of the body, or a prefix of the body.
        message: String,
    },
    /// The server answered 2xx (or 4xx) with a body that is not the Upstash response shape, or a
    /// reply whose shape does not fit the type the command returns.
    #[error("unexpected response: {message}")]
    UnexpectedResponse {
        /// What was expected and what came.
        message: String,
        /// The HTTP status, when the problem is the HTTP response itself.
        status: Option<u16>,
        /// A prefix of the raw body (at most 200 bytes, lossy UTF-8), when it could not be parsed.
        body: Option<String>,
    },
    /// Redis refused the command (`ERR …`, `WRONGTYPE …`, `NOSCRIPT …`).
    #[error("redis error from {command}: {message}")]
    Redis {
        /// The command name (`SET`, `EVALSHA`); never its arguments.
        command: String,
        /// Redis's error text, starting with its code.
        message: String,
    },
    /// The token is missing, wrong, or not allowed to run this command (HTTP 401/403, `NOPERM`).
    #[error("unauthorized: {message}")]
    Unauthorized {
        /// The server's message (never the token).
        message: String,
    },
    /// An Upstash limit was hit: daily or monthly request quota, request, record or key size, or
    /// database capacity (`ERR max … exceeded`, `… quota exceeded`).
    #[error("upstash limit exceeded: {message}")]
    Quota {
        /// The server's message, with the limit and usage when Upstash gives them.
        message: String,
    },
    /// A value could not be serialized to or deserialized from JSON (`get_json`/`set_json`).
    #[error("json (de)serialization failed: {0}")]
    Json(#[source] Arc<serde_json::Error>),
}

/// A coarse classification of [`Error`], stable across versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// See [`Error::Config`].
    Config,
    /// See [`Error::InvalidRequest`].
    InvalidRequest,
    /// See [`Error::NotSent`].
    NotSent,
    /// See [`Error::Timeout`].
    Timeout,
    /// See [`Error::Transport`].
    Transport,
    /// See [`Error::Http`].
    Http,
    /// See [`Error::UnexpectedResponse`].
    UnexpectedResponse,
    /// See [`Error::Redis`].
    Redis,
    /// See [`Error::Unauthorized`].
    Unauthorized,
    /// See [`Error::Quota`].
    Quota,
    /// See [`Error::Json`].
    Json,
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config { .. } => ErrorKind::Config,
            Error::InvalidRequest { .. } => ErrorKind::InvalidRequest,
            Error::NotSent { .. } => ErrorKind::NotSent,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Transport { .. } => ErrorKind::Transport,
            Error::Http { .. } => ErrorKind::Http,
            Error::UnexpectedResponse { .. } => ErrorKind::UnexpectedResponse,
            Error::Redis { .. } => ErrorKind::Redis,
            Error::Unauthorized { .. } => ErrorKind::Unauthorized,
            Error::Quota { .. } => ErrorKind::Quota,
            Error::Json(_) => ErrorKind::Json,
        }
    }

    /// Whether trying again later may succeed: the request was not sent, timed out, the
    /// connection broke, or the server answered 5xx/429. Whether it is *safe* to retry also
    /// depends on the command: see [`Error::may_have_executed`].
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::NotSent { .. } | Error::Timeout { .. } | Error::Transport { .. } => true,
            Error::Http { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    /// Whether the command may have run on the server even though the call failed. `false` only
    /// when the request provably never left ([`Error::NotSent`]) or was refused before sending.
    /// A non-idempotent command (INCR, LPUSH) must not be re-sent when this is `true`.
    pub fn may_have_executed(&self) -> bool {
        !matches!(
            self,
            Error::Config { .. } | Error::InvalidRequest { .. } | Error::NotSent { .. }
        )
    }

    /// Whether the call timed out.
    pub fn is_timeout(&self) -> bool {
        self.kind() == ErrorKind::Timeout
    }

    /// Whether Redis refused the command (this includes quota errors, see [`Error::is_quota`]).
    pub fn is_redis(&self) -> bool {
        matches!(self.kind(), ErrorKind::Redis | ErrorKind::Quota)
    }

    /// Whether the token was refused.
    pub fn is_unauthorized(&self) -> bool {
        self.kind() == ErrorKind::Unauthorized
    }

    /// Whether an Upstash quota or size limit was hit.
    pub fn is_quota(&self) -> bool {
        self.kind() == ErrorKind::Quota
    }

    /// Whether the server could not be reached or did not answer properly (not sent, timeout,
    /// transport, HTTP error status, unparsable response): the failures a cache falls back on.
    pub fn is_connection(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::NotSent
                | ErrorKind::Timeout
                | ErrorKind::Transport
                | ErrorKind::Http
                | ErrorKind::UnexpectedResponse
        )
    }

    /// The Redis error code (`ERR`, `WRONGTYPE`, `NOSCRIPT`…) of a Redis error.
    pub fn redis_code(&self) -> Option<&str> {
        match self {
            Error::Redis { message, .. } | Error::Quota { message } => {
                message.split_whitespace().next()
            }
            _ => None,
        }
    }

    /// A Redis error for `command`, classified: quota and permission errors get their own kinds.
    pub(crate) fn from_redis(command: &str, message: String) -> Error {
        if is_quota_message(&message) {
            Error::Quota { message }
        } else if message.starts_with("NOPERM") || message.starts_with("WRONGPASS") {
            Error::Unauthorized { message }
        } else {
            Error::Redis {
                command: command.to_owned(),
                message,
            }
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> Error {
        Error::Config {
            message: message.into(),
        }
    }

    pub(crate) fn invalid_request(message: impl Into<String>) -> Error {
        Error::InvalidRequest {
            message: message.into(),
        }
    }

    pub(crate) fn unexpected(message: impl Into<String>) -> Error {
        Error::UnexpectedResponse {
            message: message.into(),
            status: None,
            body: None,
        }
    }
}

/// Upstash's limit errors: `ERR max daily request limit exceeded. Limit: 10000, Usage: 10001`,
/// `ERR max requests limit exceeded…`, `ERR max request size exceeded`, `ERR max single record size
/// exceeded`, `ERR max key size exceeded…`, `ERR DB capacity quota exceeded`,
/// `ERR max concurrent connections exceeded`.
fn is_quota_message(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    (lower.contains("max ") && lower.contains("exceeded")) || lower.contains("quota exceeded")
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Error::Json(Arc::new(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_messages_get_the_quota_kind() {
        for text in [
            "ERR max daily request limit exceeded. Limit: 10000, Usage: 10001",
            "ERR max requests limit exceeded. Limit: 500000, Usage: 500000",
            "ERR max request size exceeded",
            "ERR max single record size exceeded",
            "ERR max key size exceeded. Limit: 32768 bytes, Actual: 40000 bytes",
            "ERR DB capacity quota exceeded",
        ] {
            let err = Error::from_redis("SET", text.to_owned());
            assert_eq!(err.kind(), ErrorKind::Quota, "{text}");
            assert!(!err.is_retryable());
            assert_eq!(err.redis_code(), Some("ERR"));
        }
        let plain = Error::from_redis("INCR", "ERR value is not an integer".to_owned());
        assert_eq!(plain.kind(), ErrorKind::Redis);
        assert_eq!(
            plain.to_string(),
            "redis error from INCR: ERR value is not an integer"
        );
    }

    #[test]
    fn retry_classification() {
        let not_sent = Error::NotSent {
            message: "connect".into(),
            source: None,
        };
        assert!(not_sent.is_retryable() && !not_sent.may_have_executed());
        let timeout = Error::Timeout {
            after: Duration::from_secs(1),
        };
        assert!(timeout.is_retryable() && timeout.may_have_executed());
        let server = Error::Http {
            status: 503,
            message: "x".into(),
        };
        assert!(server.is_retryable());
        let client = Error::Http {
            status: 405,
            message: "x".into(),
        };
        assert!(!client.is_retryable());
    }
}
