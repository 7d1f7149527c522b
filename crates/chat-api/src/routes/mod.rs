//! The `/api/v1` routes: one table that builds the router and lists every route with its
//! [`Access`] rule and rate-limit [`Bucket`] ([`api_route_table`]), so the OpenAPI document can be
//! checked against what is really served, the access matrix test (every actor against every
//! route, expecting exactly the answer the rule gives) is generated from the same table, and the
//! rate limiter looks each request's bucket up in it. Adding a route is one line here.
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
    auth::CurrentUser,
    error::AppError,
    model::{Channel, ChannelKind, Membership},
    ratelimit::{Bucket, RouteBuckets},
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

/// One route of the API: what the router serves, who may call it, and its rate limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRoute {
    /// The HTTP method.
    pub method: Method,
    /// The path in the router's own syntax (`/api/v1/channels/{cid}`).
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// The rate-limit bucket its requests count against.
    pub bucket: Bucket,
}

/// A router that remembers every route it serves, with its access rule and bucket.
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

    fn add<H, T>(
        mut self,
        method: Method,
        path: &'static str,
        access: Access,
        bucket: Bucket,
        handler: H,
    ) -> Self
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
            bucket,
        });
        self
    }
}

// One route a line, as a table: method, path, who may call it, rate-limit bucket, handler.
#[rustfmt::skip]
fn build() -> Routes {
    use Access as A;
    use Bucket as B;
    use Method as M;
    Routes::new()
        .add(M::POST,   "/api/v1/users",                                           A::Anyone,         B::Register,  users::register)
        .add(M::GET,    "/api/v1/users/me",                                        A::User,           B::Read,      users::me)
        .add(M::GET,    "/api/v1/users/me/channels",                               A::User,           B::Read,      users::my_channels)
        .add(M::POST,   "/api/v1/channels",                                        A::User,           B::Channels,  channels::create)
        .add(M::GET,    "/api/v1/channels/{cid}",                                  A::ChannelVisible, B::Read,      channels::get)
        .add(M::PUT,    "/api/v1/channels/{cid}/members/me",                       A::ChannelVisible, B::Channels,  channels::join)
        .add(M::DELETE, "/api/v1/channels/{cid}/members/me",                       A::Member,         B::Channels,  channels::leave)
        .add(M::PUT,    "/api/v1/channels/{cid}/members/{uid}",                    A::ChannelOwner,   B::Channels,  channels::add_member)
        .add(M::GET,    "/api/v1/channels/{cid}/members",                          A::Member,         B::Read,      channels::members)
        .add(M::GET,    "/api/v1/channels/{cid}/messages",                         A::Member,         B::Read,      messages::list)
        .add(M::POST,   "/api/v1/channels/{cid}/messages",                         A::Member,         B::Messages,  messages::post)
        .add(M::GET,    "/api/v1/channels/{cid}/messages/{mid}",                   A::Member,         B::Read,      messages::get)
        .add(M::PATCH,  "/api/v1/channels/{cid}/messages/{mid}",                   A::Author,         B::Messages,  messages::edit)
        .add(M::DELETE, "/api/v1/channels/{cid}/messages/{mid}",                   A::Author,         B::Messages,  messages::delete)
        .add(M::PUT,    "/api/v1/channels/{cid}/messages/{mid}/reactions/{emoji}", A::Member,         B::Reactions, messages::react)
        .add(M::DELETE, "/api/v1/channels/{cid}/messages/{mid}/reactions/{emoji}", A::Member,         B::Reactions, messages::unreact)
        .add(M::PUT,    "/api/v1/channels/{cid}/ack/{mid}",                        A::Member,         B::Acks,      messages::ack)
        .add(M::GET,    "/api/v1/ws",                                              A::WebSocket,      B::Read,      ws::upgrade)
}

/// The `/api/v1` router (without the global layers; see [`crate::app`]) and the bucket of each
/// of its routes, for the rate limiter.
pub(crate) fn api_router() -> (Router<AppState>, RouteBuckets) {
    let Routes { router, table } = build();
    (router, RouteBuckets::new(&table))
}

/// Every route the API serves, with its access rule and bucket, in the order of the router table.
pub fn api_route_table() -> Vec<ApiRoute> {
    build().table
}

/// The channel `cid` as `user` may see it, with the user's membership. A private channel the
/// user is not a member of does not exist for them (404).
pub(crate) async fn visible_channel(
    state: &AppState,
    cid: Ulid,
    user: &CurrentUser,
) -> Result<(Channel, Option<Membership>), AppError> {
    let channel = state
        .cache()
        .channel(cid)
        .await?
        .ok_or(AppError::ChannelNotFound)?;
    let membership = user.membership(cid).cloned();
    if channel.kind == ChannelKind::Private && membership.is_none() {
        return Err(AppError::ChannelNotFound);
    }
    Ok((channel, membership))
}

/// `user`'s membership of channel `cid`: 404 for invisible channels, 403 `not_a_member` for
/// public channels the user has not joined.
///
/// The token check read the user's memberships, so a member's request costs no lookup here: a
/// membership references its channel and channels are never deleted. The channel is looked up
/// only to tell the two errors apart.
pub(crate) async fn member_channel(
    state: &AppState,
    cid: Ulid,
    user: &CurrentUser,
) -> Result<Membership, AppError> {
    if let Some(membership) = user.membership(cid) {
        return Ok(membership.clone());
    }
    let channel = state
        .cache()
        .channel(cid)
        .await?
        .ok_or(AppError::ChannelNotFound)?;
    Err(match channel.kind {
        ChannelKind::Private => AppError::ChannelNotFound,
        ChannelKind::Public => AppError::NotAMember,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What each bucket is for, written independently of the table: a route in the wrong bucket
    /// (a reaction counted as a message, a write counted as a read) fails here.
    fn expected_bucket(method: &Method, path: &str) -> Bucket {
        if *method == Method::GET {
            Bucket::Read
        } else if path == "/api/v1/users" {
            Bucket::Register
        } else if path.contains("/reactions/") {
            Bucket::Reactions
        } else if path.contains("/ack/") {
            Bucket::Acks
        } else if path.contains("/messages") {
            Bucket::Messages
        } else {
            Bucket::Channels
        }
    }

    #[test]
    fn every_route_declares_the_bucket_of_what_it_does() {
        let table = api_route_table();
        for route in &table {
            assert_eq!(
                route.bucket,
                expected_bucket(&route.method, route.path),
                "{} {}",
                route.method,
                route.path
            );
        }
        let reactions: Vec<_> = table
            .iter()
            .filter(|r| r.path.contains("/reactions/"))
            .collect();
        assert_eq!(reactions.len(), 2, "add and remove a reaction");
        assert!(reactions.iter().all(|r| r.bucket == Bucket::Reactions));
        // Every bucket limits something.
        for bucket in [
            Bucket::Register,
            Bucket::Read,
            Bucket::Messages,
            Bucket::Reactions,
            Bucket::Channels,
            Bucket::Acks,
        ] {
            assert!(table.iter().any(|r| r.bucket == bucket), "{bucket:?}");
        }
    }

    #[test]
    fn the_rate_limiter_finds_every_route_of_the_table() {
        let (_, buckets) = api_router();
        for route in api_route_table() {
            assert_eq!(
                buckets.get(&route.method, route.path),
                Some(route.bucket),
                "{} {}",
                route.method,
                route.path
            );
        }
    }
}
