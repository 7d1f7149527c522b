//! Channels and memberships: create, get, join, leave, add a member, list members.
//!
//! Every write commits, then tells the cache what happened (`ChatCache::channel_created`,
//! `ChatCache::membership_changed`: the cache decides which entries that hides), then publishes
//! its event.

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use ulid::Ulid;
use utoipa::{IntoParams, ToSchema};

use super::{member_channel, visible_channel};
use crate::{
    auth::CurrentUser,
    error::{AppError, ErrorBody, Json, Path, Query},
    events::EventKind,
    model::{Channel, ChannelKind, Member, Millis, Role, UserRef},
    state::AppState,
    validate,
};

/// `POST /api/v1/channels` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateChannel {
    /// 1–64 characters, no control characters, no leading or trailing whitespace.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\s\u0000-\u001F\u007F-\u009F]([^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F])?$"
    )]
    pub name: String,
    /// `public` (default) or `private`.
    #[serde(default = "default_kind")]
    pub kind: ChannelKind,
}

fn default_kind() -> ChannelKind {
    ChannelKind::Public
}

/// `GET /api/v1/channels/{cid}/members` query.
#[derive(Debug, Deserialize, IntoParams)]
pub struct MembersQuery {
    /// 1–200, default 100.
    pub limit: Option<String>,
    /// Members with a user id after this one (the previous page's `next_after`).
    pub after: Option<String>,
}

/// `GET /api/v1/channels/{cid}/members` response.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberPage {
    /// Members ordered by user id.
    pub members: Vec<Member>,
    /// Pass as `after` for the next page; `null` on the last page.
    #[schema(value_type = Option<String>)]
    pub next_after: Option<Ulid>,
}

/// Data of `member_join` / `member_leave` events.
#[derive(Serialize)]
struct MemberEvent<'a> {
    channel_id: Ulid,
    user: &'a UserRef,
}

/// Creates a channel; the creator is its owner and first member.
#[utoipa::path(
    post, path = "/api/v1/channels", tag = "channels",
    security(("bearer" = [])),
    request_body = CreateChannel,
    responses(
        (status = 201, description = "Created", body = Channel),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
    )
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    user: CurrentUser,
    Json(request): Json<CreateChannel>,
) -> Result<Response, AppError> {
    validate::channel_name(&request.name)?;
    let channel = Channel {
        id: Ulid::new(),
        name: request.name,
        kind: request.kind,
        owner_id: user.id,
        created_at: Millis::now(),
    };
    state.store().create_channel(&channel).await?;
    state.cache().channel_created(channel.id, user.id).await;
    state
        .hub()
        .publish(EventKind::ChannelCreate, None, Some(user.id), &channel);
    Ok((StatusCode::CREATED, axum::Json(channel)).into_response())
}

/// A channel: public channels are visible to every user, private ones to members only.
#[utoipa::path(
    get, path = "/api/v1/channels/{cid}", tag = "channels",
    security(("bearer" = [])),
    params(("cid" = String, Path, description = "Channel ULID")),
    responses(
        (status = 200, description = "The channel", body = Channel),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 404, description = "No such channel (or private)", body = ErrorBody),
    )
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(cid): Path<String>,
) -> Result<axum::Json<Channel>, AppError> {
    let cid = validate::id("cid", &cid)?;
    let (channel, _) = visible_channel(&state, cid, &user).await?;
    Ok(axum::Json(channel))
}

/// Joins a public channel (idempotent). Private channels need an invitation (404 otherwise).
#[utoipa::path(
    put, path = "/api/v1/channels/{cid}/members/me", tag = "channels",
    security(("bearer" = [])),
    params(("cid" = String, Path, description = "Channel ULID")),
    responses(
        (status = 204, description = "Member"),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 404, description = "No such channel (or private)", body = ErrorBody),
    )
)]
pub(crate) async fn join(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(cid): Path<String>,
) -> Result<StatusCode, AppError> {
    let cid = validate::id("cid", &cid)?;
    let (_, membership) = visible_channel(&state, cid, &user).await?;
    if membership.is_none()
        && state
            .store()
            .join(cid, user.id, Role::Member, Millis::now())
            .await?
    {
        membership_changed(&state, cid, &user, EventKind::MemberJoin).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Leaves a channel.
#[utoipa::path(
    delete, path = "/api/v1/channels/{cid}/members/me", tag = "channels",
    security(("bearer" = [])),
    params(("cid" = String, Path, description = "Channel ULID")),
    responses(
        (status = 204, description = "Left"),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Not a member", body = ErrorBody),
        (status = 404, description = "No such channel (or private)", body = ErrorBody),
    )
)]
pub(crate) async fn leave(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(cid): Path<String>,
) -> Result<StatusCode, AppError> {
    let cid = validate::id("cid", &cid)?;
    member_channel(&state, cid, &user).await?;
    if state.store().leave(cid, user.id).await? {
        membership_changed(&state, cid, &user, EventKind::MemberLeave).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Adds a user to a channel (the owner only; the way into private channels).
#[utoipa::path(
    put, path = "/api/v1/channels/{cid}/members/{uid}", tag = "channels",
    security(("bearer" = [])),
    params(
        ("cid" = String, Path, description = "Channel ULID"),
        ("uid" = String, Path, description = "User ULID"),
    ),
    responses(
        (status = 204, description = "Member"),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Not the owner", body = ErrorBody),
        (status = 404, description = "No such channel or user", body = ErrorBody),
    )
)]
pub(crate) async fn add_member(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((cid, uid)): Path<(String, String)>,
) -> Result<StatusCode, AppError> {
    let cid = validate::id("cid", &cid)?;
    let uid = validate::id("uid", &uid)?;
    let membership = member_channel(&state, cid, &user).await?;
    if membership.role != Role::Owner {
        return Err(AppError::NotOwner);
    }
    let target = state
        .store()
        .user(uid)
        .await?
        .ok_or(AppError::UserNotFound)?;
    if state
        .store()
        .join(cid, uid, Role::Member, Millis::now())
        .await?
    {
        membership_changed(&state, cid, &target, EventKind::MemberJoin).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Members of a channel, by user id (members only).
#[utoipa::path(
    get, path = "/api/v1/channels/{cid}/members", tag = "channels",
    security(("bearer" = [])),
    params(("cid" = String, Path, description = "Channel ULID"), MembersQuery),
    responses(
        (status = 200, description = "A page of members", body = MemberPage),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Not a member", body = ErrorBody),
        (status = 404, description = "No such channel (or private)", body = ErrorBody),
    )
)]
pub(crate) async fn members(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(cid): Path<String>,
    Query(query): Query<MembersQuery>,
) -> Result<axum::Json<MemberPage>, AppError> {
    let cid = validate::id("cid", &cid)?;
    let limit = validate::limit(query.limit.as_deref(), 100, 200)?;
    let after = query
        .after
        .as_deref()
        .map(|a| validate::id("after", a))
        .transpose()?;
    member_channel(&state, cid, &user).await?;
    let mut members = state.store().members(cid, after, limit + 1).await?;
    let next_after = if members.len() > limit as usize {
        members.truncate(limit as usize);
        members.last().map(|m| m.user.id)
    } else {
        None
    };
    Ok(axum::Json(MemberPage {
        members,
        next_after,
    }))
}

/// After a committed membership change of `user` in `cid`: tell the cache, then notify.
async fn membership_changed(state: &AppState, cid: Ulid, user: &UserRef, kind: EventKind) {
    state.cache().membership_changed(cid, user.id).await;
    state.hub().publish(
        kind,
        Some(cid),
        Some(user.id),
        &MemberEvent {
            channel_id: cid,
            user,
        },
    );
}
