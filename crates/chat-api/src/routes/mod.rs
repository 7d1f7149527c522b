//! The `/api/v1` routes: one table ([`api_routes`]) that builds the router and lists every
//! (method, path) pair, so the OpenAPI document can be checked against what is really served.
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

/// A router that remembers which (method, path) pairs it serves.
struct Routes {
    router: Router<AppState>,
    table: Vec<(Method, &'static str)>,
}

impl Routes {
    fn new() -> Self {
        Routes {
            router: Router::new(),
            table: Vec::new(),
        }
    }

    fn add<H, T>(mut self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("a standard method");
        self.router = self.router.route(path, on(filter, handler));
        self.table.push((method, path));
        self
    }
}

fn build() -> Routes {
    use Method as M;
    Routes::new()
        .add(M::POST, "/api/v1/users", users::register)
        .add(M::GET, "/api/v1/users/me", users::me)
        .add(M::GET, "/api/v1/users/me/channels", users::my_channels)
        .add(M::POST, "/api/v1/channels", channels::create)
        .add(M::GET, "/api/v1/channels/{cid}", channels::get)
        .add(M::PUT, "/api/v1/channels/{cid}/members/me", channels::join)
        .add(
            M::DELETE,
            "/api/v1/channels/{cid}/members/me",
            channels::leave,
        )
        .add(
            M::PUT,
            "/api/v1/channels/{cid}/members/{uid}",
            channels::add_member,
        )
        .add(M::GET, "/api/v1/channels/{cid}/members", channels::members)
        .add(M::GET, "/api/v1/channels/{cid}/messages", messages::list)
        .add(M::POST, "/api/v1/channels/{cid}/messages", messages::post)
        .add(
            M::GET,
            "/api/v1/channels/{cid}/messages/{mid}",
            messages::get,
        )
        .add(
            M::PATCH,
            "/api/v1/channels/{cid}/messages/{mid}",
            messages::edit,
        )
        .add(
            M::DELETE,
            "/api/v1/channels/{cid}/messages/{mid}",
            messages::delete,
        )
        .add(
            M::PUT,
            "/api/v1/channels/{cid}/messages/{mid}/reactions/{emoji}",
            messages::react,
        )
        .add(
            M::DELETE,
            "/api/v1/channels/{cid}/messages/{mid}/reactions/{emoji}",
            messages::unreact,
        )
        .add(M::PUT, "/api/v1/channels/{cid}/ack/{mid}", messages::ack)
        .add(M::GET, "/api/v1/ws", ws::upgrade)
}

/// The `/api/v1` router (without the global layers; see [`crate::app`]).
pub(crate) fn api_router() -> Router<AppState> {
    build().router
}

/// Every (method, path) the API serves, in the router's own syntax (`/channels/{cid}`).
pub fn api_routes() -> Vec<(Method, &'static str)> {
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
