//! Bearer tokens: how they are made, stored and checked, and the [`CurrentUser`] extractor.
//!
//! A token is `{user_id}.{secret}`: the secret is 256 random bits from the OS (hex), shown once at
//! registration. The database keeps only SHA-256 of the secret (a fast hash is right for random
//! secrets: there is nothing to brute-force). A check looks the user up by the public id (cached)
//! and compares the hashes in constant time, so response timing says nothing about the secret.
//! The record looked up carries the user's memberships, so the [`CurrentUser`] a check yields
//! also answers "is this user a member of that channel" without another lookup.
//! Tokens never reach logs: the trace layer records no headers and no query strings.

use std::{ops::Deref, sync::Arc};

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, header, request::Parts},
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use ulid::Ulid;

use crate::{
    error::AppError,
    model::{Membership, UserRef},
    state::AppState,
    store::UserAuth,
};

/// Random bytes in a token's secret.
const SECRET_BYTES: usize = 32;

/// A freshly issued token and the hash to store.
pub struct IssuedToken {
    /// `{user_id}.{secret}`, for the client, once.
    pub token: String,
    /// SHA-256 of the secret, for the database.
    pub hash: [u8; 32],
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IssuedToken(<redacted>)")
    }
}

/// Issues a token for `user`.
pub fn issue_token(user: Ulid) -> Result<IssuedToken, AppError> {
    let mut secret = [0u8; SECRET_BYTES];
    getrandom::fill(&mut secret)
        .map_err(|e| AppError::Internal(format!("no randomness from the OS: {e}")))?;
    let secret = hex(&secret);
    Ok(IssuedToken {
        token: format!("{user}.{secret}"),
        hash: hash_secret(&secret),
    })
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The token of an `Authorization: Bearer …` header, if there is one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// A token's claimed user id and secret if it has the shape [`issue_token`] gives
/// (`{ulid}.{64 lowercase hex digits}`); `None` for anything else, which can never be valid.
fn parse_token(token: &str) -> Option<(Ulid, &str)> {
    let (id, secret) = token.split_once('.')?;
    let id = Ulid::from_string(id).ok()?;
    let well_formed = secret.len() == SECRET_BYTES * 2
        && secret
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    well_formed.then_some((id, secret))
}

/// The user id a well-formed token claims, without checking anything else: what the rate
/// limiter charges a request to before the token is resolved. `None` for a malformed token,
/// which [`authenticate`] refuses without a lookup.
pub fn claimed_user(token: &str) -> Option<Ulid> {
    parse_token(token).map(|(id, _)| id)
}

fn verify(record: Arc<UserAuth>, secret: &str) -> Result<CurrentUser, AppError> {
    let presented = hash_secret(secret);
    if bool::from(presented.as_slice().ct_eq(record.token_hash.as_slice())) {
        Ok(CurrentUser(record))
    } else {
        Err(AppError::Unauthorized)
    }
}

/// The user a token belongs to, or `Unauthorized`. A malformed token costs no lookup.
pub async fn authenticate(state: &AppState, token: &str) -> Result<CurrentUser, AppError> {
    let (id, secret) = parse_token(token).ok_or(AppError::Unauthorized)?;
    let record = state
        .cache()
        .user_auth(id)
        .await?
        .ok_or(AppError::Unauthorized)?;
    verify(record, secret)
}

/// The user a token belongs to if that can be told from the in-process cache alone (no remote
/// cache, no database); `None` if it cannot, whether or not the token is valid.
pub fn authenticate_in_memory(state: &AppState, token: &str) -> Option<CurrentUser> {
    let (id, secret) = parse_token(token)?;
    let record = state.cache().user_auth_in_memory(id)?;
    verify(record, secret).ok()
}

/// The authenticated caller: the user (it dereferences to its [`UserRef`]) and its memberships
/// as of the token check. Rejects with 401 `unauthorized`.
///
/// The rate-limit middleware authenticates first and leaves the user (or [`AuthFailed`]) in the
/// request's extensions; the extractor reuses the outcome instead of checking the token twice.
#[derive(Clone)]
pub struct CurrentUser(Arc<UserAuth>);

impl CurrentUser {
    /// The user.
    pub fn user(&self) -> &UserRef {
        &self.0.user
    }

    /// The user's membership of `channel`, as of the token check: the request started after
    /// every acknowledged join or leave of this user, and those invalidate the record it read.
    pub fn membership(&self, channel: Ulid) -> Option<&Membership> {
        self.0.membership(channel)
    }
}

impl Deref for CurrentUser {
    type Target = UserRef;

    fn deref(&self) -> &UserRef {
        &self.0.user
    }
}

impl std::fmt::Debug for CurrentUser {
    // The token hash stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CurrentUser")
            .field("user", &self.0.user)
            .field("memberships", &self.0.memberships.len())
            .finish_non_exhaustive()
    }
}

/// Left in a request's extensions by the rate-limit middleware when its token was looked up and
/// refused, so the handler does not look it up a second time.
#[derive(Debug, Clone, Copy)]
pub struct AuthFailed;

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        if let Some(user) = parts.extensions.get::<CurrentUser>() {
            return Ok(user.clone());
        }
        if parts.extensions.get::<AuthFailed>().is_some() {
            return Err(AppError::Unauthorized);
        }
        let token = bearer_token(&parts.headers).ok_or(AppError::Unauthorized)?;
        let user = authenticate(state, token).await?;
        parts.extensions.insert(user.clone());
        Ok(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_hashed() {
        let user = Ulid::new();
        let a = issue_token(user).unwrap();
        let b = issue_token(user).unwrap();
        assert_ne!(a.token, b.token);
        let (id, secret) = a.token.split_once('.').unwrap();
        assert_eq!(id, user.to_string());
        assert_eq!(secret.len(), 64, "256 bits, hex");
        assert_eq!(a.hash, hash_secret(secret));
        assert!(!format!("{a:?}").contains(secret));
    }

    #[test]
    fn only_well_formed_tokens_claim_a_user() {
        let user = Ulid::new();
        let issued = issue_token(user).unwrap();
        assert_eq!(claimed_user(&issued.token), Some(user));
        let (_, secret) = issued.token.split_once('.').unwrap();
        for bad in [
            String::new(),
            "garbage".to_owned(),
            format!("{user}"),
            format!("{user}."),
            format!("{user}.{}", &secret[1..]),
            format!("{user}.{secret}0"),
            format!(
                "{user}.{}",
                secret.to_uppercase().replace(char::is_numeric, "A")
            ),
            format!("{user}.{}", "g".repeat(64)),
            format!("not-a-ulid.{secret}"),
            format!("{user}.{}", "é".repeat(32)),
        ] {
            assert_eq!(claimed_user(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn bearer_header_is_parsed() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer abc.def".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some("abc.def"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
    }
}
