//! The `/api/v1` routes: one table that builds the router and lists every route with its
//! [`Access`] rule ([`api_route_table`]), so the OpenAPI document can be checked against what is
//! really served, and the access matrix test (SPEC R5) is generated from the same table.
//!
//! # Layout
//! - `users`: registration, me, my channels.
//! - `channels`: create, get, join, leave, add member, members.
//! - `messages`: pages, one message, post, edit, delete, reactions, read marker.
//! - the access helpers below, shared by all of them.

pub mod channels;
pub mod messages;
pub mod users;

use axum::{
    Router,
    handler::Handler,
    http::Method,
    routing::{MethodFilter, on},
};
use ulid::Ulid;

use crate::{
    error::AppError,
    model::{Channel, ChannelKind, Membership, UserRef},
    state::AppState,
    ws,
};

/// Who may call a route: the rule its handler enforces, declared next to the route in the router
/// table. The access matrix test derives every actor's expected answer from it, so a route
/// cannot be added without saying who may use it.
///
/// The rules are cumulative: `Member` implies a valid token and a visible channel, `Author` and
/// `ChannelOwner` imply `Member`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Anyone, with or without a token; a token, even a bad one, is ignored (registration).
    Anyone,
    /// Any authenticated user: 401 `unauthorized` without a valid bearer token.
    User,
    /// A user who can see the channel `{cid}`: every user for a public channel, its members for
    /// a private one. To anyone else a private channel does not exist (404 `channel_not_found`).
    ChannelVisible,
    /// A member of the channel `{cid}`: a non-member gets 403 `not_a_member` in a public channel
    /// and 404 `channel_not_found` in a private one.
    Member,
    /// The author of the message `{mid}` (who must still be a member): other members get 403
    /// `not_author`.
    Author,
    /// The owner of the channel `{cid}` (its creator): other members get 403 `not_owner`.
    ChannelOwner,
    /// The WebSocket upgrade. Anyone may connect, since the token may also come later, in the
    /// first frame (`identify`); but a token given in the `Authorization` header or the `token`
    /// query parameter must be valid (401 `unauthorized`). A request that is not an upgrade then
    /// gets 426 `upgrade_required`.
    WebSocket,
}

/// One route of the API: what the router serves and who may call it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRoute {
    /// The HTTP method.
    pub method: Method,
    /// The path in the router's own syntax (`/api/v1/channels/{cid}`).
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
}

/// A router that remembers every route it serves, with its access rule.
struct Routes {
    router: Router<AppState>,
    table: Vec<ApiRoute>,
}

impl Routes {
    fn new() -> Self {
        Routes {
            router: Router::new(),
            table: Vec::new(),
        }
    }

    fn add<H, T>(mut self, method: Method, path: &'static str, access: Access, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("a standard method");
        self.router = self.router.route(path, on(filter, handler));
        self.table.push(ApiRoute {
            method,
            path,
            access,
        });
        self
    }
}

fn build() -> Routes {
    use Access as A;
    use Method as M;
    Routes::new()
        .add(M::POST, "/api/v1/users", A::Anyone, users::register)
        .add(M::GET, "/api/v1/users/me", A::User, users::me)
        .add(
            M::GET,
            "/api/v1/users/me/channels",
            A::User,
            users::my_channels,
        )
        .add(M::POST, "/api/v1/channels", A::User, channels::create)
        .add(
            M::GET,
            "/api/v1/channels/{cid}",
            A::ChannelVisible,
            channels::get,
        )
        .add(
            M::PUT,
            "/api/v1/channels/{cid}/members/me",
            A::ChannelVisible,
            channels::join,
        )
        .add(
            M::DELETE,
            "/api/v1/channels/{cid}/members/me",
            A::Member,
            channels::leave,
        )
        .add(
            M::PUT,
            "/api/v1/channels/{cid}/members/{uid}",
            A::ChannelOwner,
            channels::add_member,
        )
        .add(
            M::GET,
            "/api/v1/channels/{cid}/members",
            A::Member,
            channels::members,
        )
        .add(
            M::GET,
            "/api/v1/channels/{cid}/messages",
            A::Member,
            messages::list,
        )
        .add(
            M::POST,
            "/api/v1/channels/{cid}/messages",
            A::Member,
            messages::post,
        )
        .add(
            M::GET,
            "/api/v1/channels/{cid}/messages/{mid}",
            A::Member,
            messages::get,
        )
        .add(
            M::PATCH,
            "/api/v1/channels/{cid}/messages/{mid}",
            A::Author,
            messages::edit,
        )
        .add(
            M::DELETE,
            "/api/v1/channels/{cid}/messages/{mid}",
            A::Author,
            messages::delete,
        )
        .add(
            M::PUT,
            "/api/v1/channels/{cid}/messages/{mid}/reactions/{emoji}",
            A::Member,
            messages::react,
        )
        .add(
            M::DELETE,
            "/api/v1/channels/{cid}/messages/{mid}/reactions/{emoji}",
            A::Member,
            messages::unreact,
        )
        .add(
            M::PUT,
            "/api/v1/channels/{cid}/ack/{mid}",
            A::Member,
            messages::ack,
        )
        .add(M::GET, "/api/v1/ws", A::WebSocket, ws::upgrade)
}

/// The `/api/v1` router (without the global layers; see [`crate::app`]).
pub(crate) fn api_router() -> Router<AppState> {
    build().router
}

/// Every route the API serves, with its access rule, in the order of the router table.
pub fn api_route_table() -> Vec<ApiRoute> {
    build().table
}

/// The channel `cid` as `user` may see it, with the user's membership. A private channel the
/// user is not a member of does not exist for them (404).
pub(crate) async fn visible_channel(
    state: &AppState,
    cid: Ulid,
    user: &UserRef,
) -> Result<(Channel, Option<Membership>), AppError> {
    let channel = state
        .cache()
        .channel(cid)
        .await?
        .ok_or(AppError::ChannelNotFound)?;
    let membership = state.cache().membership(cid, user.id).await?;
    if channel.kind == ChannelKind::Private && membership.is_none() {
        return Err(AppError::ChannelNotFound);
    }
    Ok((channel, membership))
}

/// The channel `cid` if `user` is a member: 404 for invisible channels, 403 `not_a_member` for
/// public channels the user has not joined.
pub(crate) async fn member_channel(
    state: &AppState,
    cid: Ulid,
    user: &UserRef,
) -> Result<(Channel, Membership), AppError> {
    let (channel, membership) = visible_channel(state, cid, user).await?;
    let membership = membership.ok_or(AppError::NotAMember)?;
    Ok((channel, membership))
}
