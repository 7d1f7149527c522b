//! Exit codes, and how errors reach the operator: `cachectl: error: …` on stderr, then a `hint:`
//! line saying what to do about it.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (also when the reader of stdout went away: a broken pipe is not an error) |
//! | 1 | not found: `get` or `ttl` of a missing key |
//! | 2 | error: bad usage, configuration, network, server, or a failed `doctor` check |
//!
//! Hints come from the error itself: a [`Hinted`] error carries its own, and errors of the
//! Upstash client are classified by [`cache_upstash::ErrorKind`]. No message ever includes the
//! REST token: the client never puts it in errors, and this crate never formats it.

use std::{fmt, io, io::Write as _, process::ExitCode};

use cache_upstash::ErrorKind;

/// Exit code for a key that does not exist.
pub(crate) const EXIT_NOT_FOUND: u8 = 1;
/// Exit code for every error.
pub(crate) const EXIT_ERROR: u8 = 2;

/// How a command that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Exit 0.
    Success,
    /// Exit 1: the key asked for does not exist.
    NotFound,
    /// Exit 2 without an error message: the command already reported what failed (`doctor`).
    Failed,
}

impl Outcome {
    pub(crate) fn exit_code(self) -> ExitCode {
        match self {
            Outcome::Success => ExitCode::SUCCESS,
            Outcome::NotFound => ExitCode::from(EXIT_NOT_FOUND),
            Outcome::Failed => ExitCode::from(EXIT_ERROR),
        }
    }
}

/// An error with a message for the operator and a hint on how to fix it.
#[derive(Debug)]
pub(crate) struct Hinted {
    message: String,
    hint: String,
}

impl Hinted {
    pub(crate) fn new(message: impl Into<String>, hint: impl Into<String>) -> Hinted {
        Hinted {
            message: message.into(),
            hint: hint.into(),
        }
    }
}

impl fmt::Display for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Hinted {}

/// `anyhow::bail!` with a hint.
macro_rules! bail_hint {
    ($hint:expr, $($message:tt)+) => {
        return Err(anyhow::Error::new($crate::error::Hinted::new(format!($($message)+), $hint)))
    };
}
pub(crate) use bail_hint;

/// What to do about `err`, if anything useful can be said.
pub(crate) fn hint_for(err: &anyhow::Error) -> Option<String> {
    for cause in err.chain() {
        if let Some(hinted) = cause.downcast_ref::<Hinted>() {
            return Some(hinted.hint.clone());
        }
        if let Some(upstash) = cause.downcast_ref::<cache_upstash::Error>() {
            return Some(upstash_hint(upstash));
        }
    }
    None
}

/// The advice for an error of the Upstash client, by kind.
pub(crate) fn upstash_hint(err: &cache_upstash::Error) -> String {
    match err.kind() {
        ErrorKind::Config => "set --url and --token, or UPSTASH_REDIS_REST_URL and \
             UPSTASH_REDIS_REST_TOKEN in the environment, .env or .env.local \
             (`cachectl doctor` shows what was found where)"
            .into(),
        ErrorKind::NotSent => "nothing answers at that URL: check it, and that the server is \
             running (locally: `cargo run -p upstash-gateway`, see its README)"
            .into(),
        ErrorKind::Timeout => "the server did not answer in time: check the network, or raise \
             --timeout"
            .into(),
        ErrorKind::Transport => "the connection broke: try again; check proxies and TLS between \
             here and the server"
            .into(),
        ErrorKind::Unauthorized => "the token was refused: check UPSTASH_REDIS_REST_TOKEN \
             (copy it again from the Upstash console, or use the gateway's --token)"
            .into(),
        ErrorKind::Http => "the REST endpoint is failing: behind upstash-gateway, check that \
             redis-server runs (GET /__gateway/health); on Upstash, check the database in the \
             console"
            .into(),
        ErrorKind::Quota => "an Upstash limit was hit: see usage and plan limits in the Upstash \
             console"
            .into(),
        ErrorKind::UnexpectedResponse => "the URL answers, but not like Upstash: check that \
             UPSTASH_REDIS_REST_URL is the REST URL (https://<db>.upstash.io), not a redis:// URL \
             or another service"
            .into(),
        ErrorKind::Redis => "Redis refused the command (see the message above)".into(),
        _ => "run `cachectl doctor` for a full check".into(),
    }
}

/// Whether `err` is only a closed stdout (`cachectl … | head`): Unix tools exit quietly then.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// Prints `err` with its causes and a hint to stderr and returns the exit code.
pub(crate) fn report(err: &anyhow::Error) -> ExitCode {
    if is_broken_pipe(err) {
        return ExitCode::SUCCESS;
    }
    let mut stderr = io::stderr().lock();
    // If stderr itself is gone there is nobody left to tell.
    let _ = writeln!(stderr, "cachectl: error: {err:#}");
    if let Some(hint) = hint_for(err) {
        let _ = writeln!(stderr, "hint: {hint}");
    }
    ExitCode::from(EXIT_ERROR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_come_from_the_innermost_known_error() {
        let err = anyhow::Error::new(Hinted::new("no value", "pipe it in")).context("set");
        assert_eq!(hint_for(&err).as_deref(), Some("pipe it in"));
        let err = anyhow::Error::new(cache_upstash::Error::Timeout {
            after: std::time::Duration::from_secs(1),
        })
        .context("GET k");
        assert!(hint_for(&err).unwrap().contains("--timeout"));
        assert!(hint_for(&anyhow::anyhow!("plain")).is_none());
    }

    #[test]
    fn a_broken_pipe_is_recognized_through_context() {
        let err = anyhow::Error::new(io::Error::from(io::ErrorKind::BrokenPipe)).context("write");
        assert!(is_broken_pipe(&err));
        assert!(!is_broken_pipe(&anyhow::anyhow!("x")));
    }
}
