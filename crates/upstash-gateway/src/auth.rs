//! Tokens: a redacting wrapper, constant-time comparison, and which access a presented token grants.

use std::fmt;

use subtle::ConstantTimeEq as _;

/// A secret string (REST token or admin token). `Debug` never shows it.
#[derive(Clone)]
pub(crate) struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub(crate) fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; call only where it must be used (sending or comparing it).
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// Compares with `presented` in time independent of where they differ. (The length may leak
    /// through timing; token lengths are not secret.)
    pub(crate) fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// What a request may do, decided by the token it presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// The standard token: every command the gateway forwards.
    Full,
    /// The read-only token: only commands in the read allow-list.
    ReadOnly,
}

/// The configured REST tokens.
#[derive(Clone, Debug)]
pub(crate) struct Tokens {
    pub(crate) full: Secret,
    pub(crate) read_only: Option<Secret>,
}

impl Tokens {
    /// The access `presented` grants, or `None` for a wrong token. Both tokens are always compared,
    /// so the timing does not tell which one was close.
    pub(crate) fn check(&self, presented: &[u8]) -> Option<Access> {
        let full = self.full.matches(presented);
        let read_only = self
            .read_only
            .as_ref()
            .is_some_and(|t| t.matches(presented));
        if full {
            Some(Access::Full)
        } else if read_only {
            Some(Access::ReadOnly)
        } else {
            None
        }
    }
}

/// The token from `Authorization: Bearer <token>` (scheme case-insensitive).
pub(crate) fn bearer_token(header: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = header.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_grant_the_right_access() {
        let tokens = Tokens {
            full: Secret::new("full-token"),
            read_only: Some(Secret::new("ro-token")),
        };
        assert_eq!(tokens.check(b"full-token"), Some(Access::Full));
        assert_eq!(tokens.check(b"ro-token"), Some(Access::ReadOnly));
        assert_eq!(tokens.check(b"full-toke"), None);
        assert_eq!(tokens.check(b""), None);
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearer"), None);
    }

    #[test]
    fn debug_redacts() {
        assert_eq!(
            format!("{:?}", Secret::new("hunter2")),
            "Secret(<redacted>)"
        );
    }
}
