//! Users: registration (the only unauthenticated write), the caller, the caller's channels.

use std::sync::Arc;

use axum::{extract::State, http::StatusCode, response::IntoResponse};
use serde::{Deserialize, Serialize};
use ulid::Ulid;
use utoipa::ToSchema;

use crate::{
    auth::{CurrentUser, issue_token},
    error::{AppError, ErrorBody, Json},
    model::{Millis, MyChannel, User, UserRef},
    state::AppState,
    validate,
};

/// `POST /api/v1/users` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterRequest {
    /// 1–32 letters, digits, `_`, `-`, `.` of one script (after NFKC normalization, which is
    /// what is stored); unique ignoring case and look-alike characters.
    #[schema(min_length = 1, max_length = 32)]
    pub name: String,
}

/// `POST /api/v1/users` response: the token is shown only here.
#[derive(Serialize, ToSchema)]
pub struct Registered {
    /// The new user.
    pub user: User,
    /// The bearer token, `{user_id}.{secret}`. Store it: it cannot be shown again.
    pub token: String,
}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered")
            .field("user", &self.user)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// `GET /api/v1/users/me/channels` response.
#[derive(Debug, Serialize, ToSchema)]
pub struct MyChannels {
    /// The caller's channels, oldest membership first.
    #[schema(value_type = Vec<MyChannel>)]
    pub channels: Arc<Vec<MyChannel>>,
}

/// Registers a user and returns their token, once.
#[utoipa::path(
    post, path = "/api/v1/users", tag = "users",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered", body = Registered),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 403, description = "Registration closed", body = ErrorBody),
        (status = 409, description = "Name taken", body = ErrorBody),
    )
)]
pub(crate) async fn register(
    State(state): State<AppState>,
    Json(request): Json<RegisterRequest>,
) -> Result<impl IntoResponse, AppError> {
    if !state.config().registration_open {
        return Err(AppError::RegistrationClosed);
    }
    let name = validate::user_name(&request.name)?;
    let user = User {
        id: Ulid::new(),
        name,
        created_at: Millis::now(),
    };
    let issued = issue_token(user.id)?;
    if !state.store().create_user(&user, &issued.hash).await? {
        return Err(AppError::NameTaken);
    }
    state.cache().user_registered(user.id).await;
    tracing::info!(user_id = %user.id, "user registered");
    Ok((
        StatusCode::CREATED,
        axum::Json(Registered {
            user,
            token: issued.token,
        }),
    ))
}

/// The caller.
#[utoipa::path(
    get, path = "/api/v1/users/me", tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = UserRef),
        (status = 401, description = "No or bad token", body = ErrorBody),
    )
)]
pub(crate) async fn me(user: CurrentUser) -> axum::Json<UserRef> {
    axum::Json(user.user().clone())
}

/// The caller's channels (cached per user).
#[utoipa::path(
    get, path = "/api/v1/users/me/channels", tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's channels", body = MyChannels),
        (status = 401, description = "No or bad token", body = ErrorBody),
    )
)]
pub(crate) async fn my_channels(
    State(state): State<AppState>,
    user: CurrentUser,
) -> Result<axum::Json<MyChannels>, AppError> {
    let channels = state.cache().user_channels(user.id).await?;
    Ok(axum::Json(MyChannels { channels }))
}
