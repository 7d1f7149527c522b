//! Messages: keyset-paginated pages (the latest page from the cache, with `ETag`/304), one
//! message, post, edit and delete (author only), reactions, and the read marker.
//!
//! Every write in a channel commits, then tells the cache (`ChatCache::messages_changed`, which
//! invalidates the channel's one page tag), then publishes its event: a post costs one
//! invalidation however many members and page sizes there are.

use std::sync::Arc;

use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use ulid::Ulid;
use utoipa::{IntoParams, ToSchema};

use super::member_channel;
use crate::{
    auth::CurrentUser,
    cache::RenderedPage,
    error::{AppError, ErrorBody, Json, Path, Query},
    events::EventKind,
    model::{Message, MessagePage, Millis},
    state::AppState,
    store::{NewMessage, Posted, Slice},
    validate,
};

/// `GET /api/v1/channels/{cid}/messages` query. At most one cursor.
#[derive(Debug, Deserialize, IntoParams)]
pub struct MessagesQuery {
    /// 1–100, default 50.
    pub limit: Option<String>,
    /// Messages older than this id.
    pub before: Option<String>,
    /// Messages newer than this id (the ones closest to it).
    pub after: Option<String>,
    /// This message and about `limit/2` messages on each side.
    pub around: Option<String>,
}

/// `POST /api/v1/channels/{cid}/messages` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PostMessage {
    /// 1–2000 characters, not only whitespace; line breaks and tabs but no other control
    /// characters.
    #[schema(
        min_length = 1,
        max_length = 2000,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    pub content: String,
    /// 1–64 characters without whitespace or control characters, echoed back; a retry with the
    /// same nonce returns the first message (200) instead of posting twice.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\s\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub nonce: Option<String>,
}

/// `PATCH /api/v1/channels/{cid}/messages/{mid}` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct EditMessage {
    /// 1–2000 characters, as in a new message.
    #[schema(
        min_length = 1,
        max_length = 2000,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    pub content: String,
}

#[derive(Serialize)]
struct MessageRef {
    id: Ulid,
    channel_id: Ulid,
}

#[derive(Serialize)]
struct ReactionEvent<'a> {
    channel_id: Ulid,
    message_id: Ulid,
    user_id: Ulid,
    emoji: &'a str,
}

#[derive(Serialize)]
struct AckEvent {
    channel_id: Ulid,
    message_id: Ulid,
}

/// A cached page as response bytes, without copying it.
struct PageBytes(Arc<RenderedPage>);

impl AsRef<[u8]> for PageBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.body.as_bytes()
    }
}

fn etag_matches(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*")
}

fn page_response(page: Arc<RenderedPage>, headers: &HeaderMap) -> Response {
    let etag = HeaderValue::from_str(&page.etag).ok();
    let mut response = if etag_matches(headers, &page.etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = Response::new(Body::from(Bytes::from_owner(PageBytes(page))));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    };
    let out = response.headers_mut();
    if let Some(etag) = etag {
        out.insert(header::ETAG, etag);
    }
    // Clients may keep the page but must revalidate it (a 304 is cheap).
    out.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    response
}

/// A page of messages, newest first. Without a cursor it is the latest page; with `before`, an
/// older one (scrolling back); with `around`, the messages around one (jumping to it). These
/// three are served from the cache with an `ETag` (304 on `If-None-Match`); `after` is read from
/// the database.
#[utoipa::path(
    get, path = "/api/v1/channels/{cid}/messages", tag = "messages",
    security(("bearer" = [])),
    params(("cid" = String, Path, description = "Channel ULID"), MessagesQuery),
    responses(
        (status = 200, description = "A page", body = MessagePage),
        (status = 304, description = "The page (latest, before or around a cursor) is unchanged"),
        (status = 400, description = "Invalid parameter", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Not a member", body = ErrorBody),
        (status = 404, description = "No such channel (or private)", body = ErrorBody),
    )
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(cid): Path<String>,
    Query(query): Query<MessagesQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let cid = validate::id("cid", &cid)?;
    let limit = validate::limit(
        query.limit.as_deref(),
        validate::DEFAULT_PAGE,
        validate::MAX_PAGE,
    )?;
    let cursors = [&query.before, &query.after, &query.around];
    if cursors.iter().filter(|c| c.is_some()).count() > 1 {
        return Err(AppError::InvalidParam(
            "give at most one of before, after, around".into(),
        ));
    }
    let before = query
        .before
        .as_deref()
        .map(|v| validate::id("before", v))
        .transpose()?;
    let after = query
        .after
        .as_deref()
        .map(|v| validate::id("after", v))
        .transpose()?;
    let around = query
        .around
        .as_deref()
        .map(|v| validate::id("around", v))
        .transpose()?;
    member_channel(&state, cid, &user).await?;

    let store = state.store();
    let (messages, has_more_before, has_more_after) = match (before, after, around) {
        (None, None, None) => {
            let page = state.cache().latest_page(cid, limit).await?;
            return Ok(page_response(page, &headers));
        }
        (Some(before), _, _) => {
            let page = state.cache().older_page(cid, before, limit).await?;
            return Ok(page_response(page, &headers));
        }
        (_, Some(after), _) => {
            let mut messages = store.messages(cid, Slice::After(after), limit + 1).await?;
            let newer = messages.len() > limit as usize;
            if newer {
                // Newest first: the extra row is the one furthest from the cursor.
                messages.remove(0);
            }
            let older = !store
                .messages(cid, Slice::AtOrBefore(after), 1)
                .await?
                .is_empty();
            (messages, older, newer)
        }
        (_, _, Some(around)) => {
            let page = state.cache().around_page(cid, around, limit).await?;
            return Ok(page_response(page, &headers));
        }
    };
    Ok(axum::Json(MessagePage {
        messages,
        has_more_before,
        has_more_after,
    })
    .into_response())
}

/// Posts a message (members only). 201 means it is committed.
#[utoipa::path(
    post, path = "/api/v1/channels/{cid}/messages", tag = "messages",
    security(("bearer" = [])),
    params(("cid" = String, Path, description = "Channel ULID")),
    request_body = PostMessage,
    responses(
        (status = 201, description = "Posted", body = Message),
        (status = 200, description = "Already posted with this nonce", body = Message),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Not a member", body = ErrorBody),
        (status = 404, description = "No such channel (or private)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
    )
)]
pub(crate) async fn post(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(cid): Path<String>,
    Json(request): Json<PostMessage>,
) -> Result<Response, AppError> {
    let cid = validate::id("cid", &cid)?;
    validate::content(&request.content)?;
    if let Some(nonce) = &request.nonce {
        validate::nonce(nonce)?;
    }
    member_channel(&state, cid, &user).await?;
    // This process's posts to one channel commit in the order of their ids: a post whose id
    // sorts below one already committed would drop the channel's cached history. SQLite's
    // writer keeps the order by itself; elsewhere one post per channel at a time.
    let in_channel_order = if state.store().commits_posts_in_order() {
        None
    } else {
        Some(
            POST_ORDER[(cid.0 % POST_ORDER.len() as u128) as usize]
                .lock()
                .await,
        )
    };
    let posted = state
        .store()
        .post_message(NewMessage {
            id: next_message_id(),
            channel_id: cid,
            author: user.user().clone(),
            content: request.content,
            nonce: request.nonce,
            created_at: Millis::now(),
        })
        .await?;
    match posted {
        Posted::Created { message, newest } => {
            drop(in_channel_order);
            // Out of order (another instance's post) drops the older pages too.
            state.cache().message_posted(cid, newest).await;
            state
                .hub()
                .publish(EventKind::MessageCreate, Some(cid), None, &message);
            Ok((StatusCode::CREATED, axum::Json(message)).into_response())
        }
        Posted::Duplicate(message) => {
            drop(in_channel_order);
            // The first attempt may have committed and then died before its invalidation (a
            // crash, a lost L2 write): invalidate again, older pages included (whether it was in
            // order is not known), so the message this retry confirms is visible. No second
            // event: clients already had their chance at the first one.
            state.cache().messages_changed(cid).await;
            Ok((StatusCode::OK, axum::Json(message)).into_response())
        }
    }
}

async fn find_message(state: &AppState, cid: Ulid, mid: Ulid) -> Result<Message, AppError> {
    state
        .store()
        .message(cid, mid)
        .await?
        .ok_or(AppError::MessageNotFound)
}

fn ids(cid: &str, mid: &str) -> Result<(Ulid, Ulid), AppError> {
    Ok((validate::id("cid", cid)?, validate::id("mid", mid)?))
}

/// One message (members only).
#[utoipa::path(
    get, path = "/api/v1/channels/{cid}/messages/{mid}", tag = "messages",
    security(("bearer" = [])),
    params(
        ("cid" = String, Path, description = "Channel ULID"),
        ("mid" = String, Path, description = "Message ULID"),
    ),
    responses(
        (status = 200, description = "The message", body = Message),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Not a member", body = ErrorBody),
        (status = 404, description = "No such channel or message", body = ErrorBody),
    )
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((cid, mid)): Path<(String, String)>,
) -> Result<axum::Json<Message>, AppError> {
    let (cid, mid) = ids(&cid, &mid)?;
    member_channel(&state, cid, &user).await?;
    Ok(axum::Json(find_message(&state, cid, mid).await?))
}

/// Edits a message (its author only).
#[utoipa::path(
    patch, path = "/api/v1/channels/{cid}/messages/{mid}", tag = "messages",
    security(("bearer" = [])),
    params(
        ("cid" = String, Path, description = "Channel ULID"),
        ("mid" = String, Path, description = "Message ULID"),
    ),
    request_body = EditMessage,
    responses(
        (status = 200, description = "Edited", body = Message),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Not a member, or not the author", body = ErrorBody),
        (status = 404, description = "No such channel or message", body = ErrorBody),
    )
)]
pub(crate) async fn edit(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((cid, mid)): Path<(String, String)>,
    Json(request): Json<EditMessage>,
) -> Result<axum::Json<Message>, AppError> {
    let (cid, mid) = ids(&cid, &mid)?;
    validate::content(&request.content)?;
    member_channel(&state, cid, &user).await?;
    let mut message = find_message(&state, cid, mid).await?;
    if message.author.id != user.id {
        return Err(AppError::NotAuthor);
    }
    let now = Millis::now();
    if !state
        .store()
        .edit_message(cid, mid, &request.content, now)
        .await?
    {
        return Err(AppError::MessageNotFound);
    }
    message.content = request.content;
    message.edited_at = Some(now);
    messages_changed(&state, cid, EventKind::MessageUpdate, &message).await;
    Ok(axum::Json(message))
}

/// Deletes a message (its author only).
#[utoipa::path(
    delete, path = "/api/v1/channels/{cid}/messages/{mid}", tag = "messages",
    security(("bearer" = [])),
    params(
        ("cid" = String, Path, description = "Channel ULID"),
        ("mid" = String, Path, description = "Message ULID"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Not a member, or not the author", body = ErrorBody),
        (status = 404, description = "No such channel or message", body = ErrorBody),
    )
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((cid, mid)): Path<(String, String)>,
) -> Result<StatusCode, AppError> {
    let (cid, mid) = ids(&cid, &mid)?;
    member_channel(&state, cid, &user).await?;
    let message = find_message(&state, cid, mid).await?;
    if message.author.id != user.id {
        return Err(AppError::NotAuthor);
    }
    if !state.store().delete_message(cid, mid).await? {
        return Err(AppError::MessageNotFound);
    }
    messages_changed(
        &state,
        cid,
        EventKind::MessageDelete,
        &MessageRef {
            id: mid,
            channel_id: cid,
        },
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Adds the caller's reaction (idempotent).
#[utoipa::path(
    put, path = "/api/v1/channels/{cid}/messages/{mid}/reactions/{emoji}", tag = "messages",
    security(("bearer" = [])),
    params(
        ("cid" = String, Path, description = "Channel ULID"),
        ("mid" = String, Path, description = "Message ULID"),
        ("emoji" = String, Path, description = "Emoji, URL-encoded"),
    ),
    responses(
        (status = 204, description = "Reacted"),
        (status = 400, description = "Invalid emoji", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Not a member", body = ErrorBody),
        (status = 404, description = "No such channel or message", body = ErrorBody),
    )
)]
pub(crate) async fn react(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((cid, mid, emoji)): Path<(String, String, String)>,
) -> Result<StatusCode, AppError> {
    reaction(state, user, cid, mid, emoji, true).await
}

/// Removes the caller's reaction (idempotent).
#[utoipa::path(
    delete, path = "/api/v1/channels/{cid}/messages/{mid}/reactions/{emoji}", tag = "messages",
    security(("bearer" = [])),
    params(
        ("cid" = String, Path, description = "Channel ULID"),
        ("mid" = String, Path, description = "Message ULID"),
        ("emoji" = String, Path, description = "Emoji, URL-encoded"),
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "Invalid emoji", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Not a member", body = ErrorBody),
        (status = 404, description = "No such channel or message", body = ErrorBody),
    )
)]
pub(crate) async fn unreact(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((cid, mid, emoji)): Path<(String, String, String)>,
) -> Result<StatusCode, AppError> {
    reaction(state, user, cid, mid, emoji, false).await
}

async fn reaction(
    state: AppState,
    user: CurrentUser,
    cid: String,
    mid: String,
    emoji: String,
    add: bool,
) -> Result<StatusCode, AppError> {
    let (cid, mid) = ids(&cid, &mid)?;
    validate::emoji(&emoji)?;
    member_channel(&state, cid, &user).await?;
    find_message(&state, cid, mid).await?;
    let store = state.store();
    let changed = if add {
        store
            .add_reaction(mid, user.id, &emoji, Millis::now())
            .await?
    } else {
        store.remove_reaction(mid, user.id, &emoji).await?
    };
    if changed {
        let kind = if add {
            EventKind::ReactionAdd
        } else {
            EventKind::ReactionRemove
        };
        let event = ReactionEvent {
            channel_id: cid,
            message_id: mid,
            user_id: user.id,
            emoji: &emoji,
        };
        messages_changed(&state, cid, kind, &event).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Moves the caller's read marker forward to a message (never backward).
#[utoipa::path(
    put, path = "/api/v1/channels/{cid}/ack/{mid}", tag = "messages",
    security(("bearer" = [])),
    params(
        ("cid" = String, Path, description = "Channel ULID"),
        ("mid" = String, Path, description = "Message ULID"),
    ),
    responses(
        (status = 204, description = "Acknowledged"),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Not a member", body = ErrorBody),
        (status = 404, description = "No such channel or message", body = ErrorBody),
    )
)]
pub(crate) async fn ack(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((cid, mid)): Path<(String, String)>,
) -> Result<StatusCode, AppError> {
    let (cid, mid) = ids(&cid, &mid)?;
    member_channel(&state, cid, &user).await?;
    find_message(&state, cid, mid).await?;
    if state.store().ack(cid, user.id, mid).await? {
        state.cache().acked(user.id).await;
        state.hub().publish(
            EventKind::ChannelAck,
            None,
            Some(user.id),
            &AckEvent {
                channel_id: cid,
                message_id: mid,
            },
        );
    }
    Ok(StatusCode::NO_CONTENT)
}

/// After a committed change to the messages of `cid`: one invalidation, then the event.
async fn messages_changed(state: &AppState, cid: Ulid, kind: EventKind, data: &impl Serialize) {
    state.cache().messages_changed(cid).await;
    state.hub().publish(kind, Some(cid), None, data);
}

/// Striped locks that order this process's posts per channel (channels share a stripe at
/// random: a little needless waiting, no unbounded map).
static POST_ORDER: [tokio::sync::Mutex<()>; 64] = [const { tokio::sync::Mutex::const_new(()) }; 64];

/// A new message id, strictly greater than every id this process made before: pages are ordered
/// by id, and two posts within one millisecond must keep the order they were made in (plain
/// `Ulid::new` draws the random part afresh, so such posts would sort at random).
fn next_message_id() -> Ulid {
    static GENERATOR: std::sync::Mutex<ulid::Generator> =
        std::sync::Mutex::new(ulid::Generator::new());
    GENERATOR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .generate()
        // Overflow of the random part within one millisecond (2^80 ids): cannot happen in
        // practice; fall back to an unordered id rather than fail the post.
        .unwrap_or_else(|_| Ulid::new())
}

#[cfg(test)]
mod id_tests {
    use super::next_message_id;

    #[test]
    fn message_ids_keep_creation_order_within_a_millisecond() {
        let ids: Vec<_> = (0..10_000).map(|_| next_message_id()).collect();
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
    }
}
