//! [`AppError`]: every failure a request can end in, and the one JSON shape clients see for it,
//! `{"error": {"code": "…", "message": "…"}}` with a stable `code`.
//!
//! The extractor wrappers ([`Json`], [`Query`], [`Path`]) turn axum's rejections into `AppError`s,
//! so malformed input gets the same shape as everything else. 5xx bodies never carry internal
//! text: the cause is logged (inside the request's span, so with its request id) and the client
//! reads "internal error".

use std::time::Duration;

use axum::{
    extract::{
        FromRequest, FromRequestParts,
        rejection::{JsonRejection, PathRejection, QueryRejection},
    },
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::store::StoreError;

/// A request failure. See the module docs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// The body is not the JSON the endpoint expects.
    #[error("{0}")]
    InvalidJson(String),
    /// A path or query parameter is malformed.
    #[error("{0}")]
    InvalidParam(String),
    /// A well-formed value breaks a rule (length, characters, range).
    #[error("{0}")]
    Validation(String),
    /// The body is not `application/json`.
    #[error("expected a request body with content-type application/json")]
    UnsupportedMediaType,
    /// The body is larger than the configured limit.
    #[error("request body too large")]
    PayloadTooLarge,
    /// No token, or a token that matches no user.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// Registration is closed by configuration.
    #[error("registration is closed on this server")]
    RegistrationClosed,
    /// The caller is not a member of the (visible) channel.
    #[error("you are not a member of this channel")]
    NotAMember,
    /// Only the author may do this.
    #[error("only the author of the message may do this")]
    NotAuthor,
    /// Only the owner of the channel may do this.
    #[error("only the owner of the channel may do this")]
    NotOwner,
    /// No such channel, or a private channel the caller may not see.
    #[error("channel not found")]
    ChannelNotFound,
    /// No such message in this channel.
    #[error("message not found")]
    MessageNotFound,
    /// No such user.
    #[error("user not found")]
    UserNotFound,
    /// No such route.
    #[error("no such route")]
    RouteNotFound,
    /// The route exists, the method does not.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// The user name is taken (by a name that is the same ignoring case and look-alikes).
    #[error("this name, or one that looks the same, is taken")]
    NameTaken,
    /// Too many requests in this bucket.
    #[error("too many requests; retry later")]
    RateLimited {
        /// When the bucket has room again.
        retry_after: Duration,
    },
    /// The user already holds the most WebSocket sessions allowed.
    #[error("too many WebSocket sessions for this user (at most {limit}); close one first")]
    TooManySessions {
        /// The per-user cap.
        limit: usize,
    },
    /// The request took longer than the configured timeout.
    #[error("the request took too long")]
    Timeout,
    /// A dependency (the database) cannot be reached.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The dashboard has a token and the request did not carry it.
    #[error("the dashboard needs its token (DASHBOARD_TOKEN) as a bearer token")]
    DashboardTokenRequired,
    /// The dashboard has no token, so it answers only requests from this machine.
    #[error("the dashboard answers only local requests; set DASHBOARD_TOKEN to open it remotely")]
    DashboardLocalOnly,
    /// The endpoint needs a WebSocket upgrade.
    #[error("this endpoint needs a WebSocket upgrade")]
    UpgradeRequired,
    /// The database failed.
    #[error("database error: {0}")]
    Store(#[from] StoreError),
    /// Anything else that is our fault.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// `code` is stable (clients branch on it); `message` is for humans.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable identifier: `invalid_json`, `invalid_param`, `validation_failed`,
    /// `unsupported_media_type`, `payload_too_large`, `unauthorized`, `registration_closed`,
    /// `not_a_member`, `not_author`, `not_owner`, `channel_not_found`, `message_not_found`,
    /// `user_not_found`, `not_found`, `method_not_allowed`, `name_taken`, `rate_limited`,
    /// `too_many_sessions`, `timeout`, `unavailable`, `upgrade_required`,
    /// `dashboard_token_required`, `dashboard_local_only`, `internal`.
    pub code: &'static str,
    /// A human-readable explanation.
    pub message: String,
}

impl AppError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::InvalidJson(_) | AppError::InvalidParam(_) | AppError::Validation(_) => {
                StatusCode::BAD_REQUEST
            }
            AppError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::Unauthorized | AppError::DashboardTokenRequired => StatusCode::UNAUTHORIZED,
            AppError::RegistrationClosed
            | AppError::DashboardLocalOnly
            | AppError::NotAMember
            | AppError::NotAuthor
            | AppError::NotOwner => StatusCode::FORBIDDEN,
            AppError::ChannelNotFound
            | AppError::MessageNotFound
            | AppError::UserNotFound
            | AppError::RouteNotFound => StatusCode::NOT_FOUND,
            AppError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AppError::NameTaken => StatusCode::CONFLICT,
            AppError::RateLimited { .. } | AppError::TooManySessions { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            AppError::Timeout | AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
            AppError::Store(err) if err.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Store(_) | AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::InvalidJson(_) => "invalid_json",
            AppError::InvalidParam(_) => "invalid_param",
            AppError::Validation(_) => "validation_failed",
            AppError::UnsupportedMediaType => "unsupported_media_type",
            AppError::PayloadTooLarge => "payload_too_large",
            AppError::Unauthorized => "unauthorized",
            AppError::RegistrationClosed => "registration_closed",
            AppError::NotAMember => "not_a_member",
            AppError::NotAuthor => "not_author",
            AppError::NotOwner => "not_owner",
            AppError::ChannelNotFound => "channel_not_found",
            AppError::MessageNotFound => "message_not_found",
            AppError::UserNotFound => "user_not_found",
            AppError::RouteNotFound => "not_found",
            AppError::MethodNotAllowed => "method_not_allowed",
            AppError::NameTaken => "name_taken",
            AppError::RateLimited { .. } => "rate_limited",
            AppError::TooManySessions { .. } => "too_many_sessions",
            AppError::Timeout => "timeout",
            AppError::Unavailable(_) => "unavailable",
            AppError::UpgradeRequired => "upgrade_required",
            AppError::DashboardTokenRequired => "dashboard_token_required",
            AppError::DashboardLocalOnly => "dashboard_local_only",
            AppError::Store(err) if err.is_unavailable() => "unavailable",
            AppError::Store(_) | AppError::Internal(_) => "internal",
        }
    }

    /// The body clients see: internal details only for 4xx, which are about their input.
    pub fn body(&self) -> ErrorBody {
        let status = self.status();
        let message = if status == StatusCode::SERVICE_UNAVAILABLE {
            match self {
                AppError::Timeout => self.to_string(),
                _ => "the service is temporarily unavailable".to_owned(),
            }
        } else if status.is_server_error() {
            "internal error".to_owned()
        } else {
            self.to_string()
        };
        ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message,
            },
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() && !matches!(self, AppError::Timeout) {
            // The detail goes to the log, never to the client.
            tracing::error!(error = %self, code = self.code(), "request failed");
        }
        let mut response = (status, axum::Json(self.body())).into_response();
        match &self {
            AppError::Unauthorized => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            AppError::RateLimited { retry_after } => {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            _ => {}
        }
        response
    }
}

impl From<JsonRejection> for AppError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => AppError::UnsupportedMediaType,
            JsonRejection::BytesRejection(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                AppError::PayloadTooLarge
            }
            JsonRejection::JsonDataError(r) => AppError::InvalidJson(r.body_text()),
            JsonRejection::JsonSyntaxError(r) => AppError::InvalidJson(r.body_text()),
            other => AppError::InvalidJson(other.body_text()),
        }
    }
}

impl From<QueryRejection> for AppError {
    fn from(rejection: QueryRejection) -> Self {
        AppError::InvalidParam(rejection.body_text())
    }
}

impl From<PathRejection> for AppError {
    fn from(rejection: PathRejection) -> Self {
        AppError::InvalidParam(rejection.body_text())
    }
}

/// `axum::Json` whose rejection is an [`AppError`].
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(AppError))]
pub struct Json<T>(pub T);

/// `axum::extract::Query` whose rejection is an [`AppError`].
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct Query<T>(pub T);

/// `axum::extract::Path` whose rejection is an [`AppError`].
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(AppError))]
pub struct Path<T>(pub T);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_hide_their_cause() {
        let err = AppError::Internal("password=hunter2 at db.rs:42".into());
        let body = serde_json::to_string(&err.body()).unwrap();
        assert!(!body.contains("hunter2"));
        assert!(body.contains(r#""code":"internal""#));
    }

    #[test]
    fn client_errors_explain_themselves() {
        let err = AppError::Validation("content must be 1 to 4000 characters".into());
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert!(err.body().error.message.contains("4000"));
    }
}
