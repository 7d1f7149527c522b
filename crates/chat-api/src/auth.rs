//! Bearer tokens: how they are made, stored and checked, and the [`CurrentUser`] extractor.
//!
//! A token is `{user_id}.{secret}`: the secret is 256 random bits from the OS (hex), shown once at
//! registration. The database keeps only SHA-256 of the secret (a fast hash is right for random
//! secrets: there is nothing to brute-force). A check looks the user up by the public id (cached)
//! and compares the hashes in constant time, so response timing says nothing about the secret.
//! Tokens never reach logs: the trace layer records no headers and no query strings.

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, header, request::Parts},
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use ulid::Ulid;

use crate::{error::AppError, model::UserRef, state::AppState};

/// Random bytes in a token's secret.
const SECRET_BYTES: usize = 32;

/// A freshly issued token and the hash to store.
pub struct IssuedToken {
    /// `{user_id}.{secret}`, for the client, once.
    pub token: String,
    /// SHA-256 of the secret, for the database.
    pub hash: Vec<u8>,
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

fn hash_secret(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// The token of an `Authorization: Bearer …` header, if there is one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The user a token belongs to, or `Unauthorized`.
pub async fn authenticate(state: &AppState, token: &str) -> Result<UserRef, AppError> {
    let (id, secret) = token.split_once('.').ok_or(AppError::Unauthorized)?;
    let id = Ulid::from_string(id).map_err(|_| AppError::Unauthorized)?;
    if secret.len() != SECRET_BYTES * 2 {
        return Err(AppError::Unauthorized);
    }
    let record = state
        .cache()
        .user_auth(id)
        .await?
        .ok_or(AppError::Unauthorized)?;
    let presented = hash_secret(secret);
    if bool::from(presented.ct_eq(&record.token_hash)) {
        Ok(record.user)
    } else {
        Err(AppError::Unauthorized)
    }
}

/// The authenticated caller. Rejects with 401 `unauthorized`.
///
/// The rate-limit middleware authenticates first and leaves the user in the request's
/// extensions; the extractor reuses it instead of checking the token twice.
#[derive(Debug, Clone)]
pub struct CurrentUser(pub UserRef);

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        if let Some(user) = parts.extensions.get::<CurrentUser>() {
            return Ok(user.clone());
        }
        let token = bearer_token(&parts.headers).ok_or(AppError::Unauthorized)?;
        let user = authenticate(state, token).await?;
        parts.extensions.insert(CurrentUser(user.clone()));
        Ok(CurrentUser(user))
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
    fn bearer_header_is_parsed() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer abc.def".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some("abc.def"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
    }
}
