//! The access matrix, generated from the router: every route of
//! [`api_route_table`] × (no token, bad token, non-member, member, owner, author), in a public
//! and a private channel, on both databases. Only what is allowed succeeds; every refusal has the
//! error shape and its stable code.
//!
//! Nothing here lists routes. Each actor's expected answer follows from the route's [`Access`]
//! rule; the success status is the 2xx the route's operation documents in the served OpenAPI
//! document. The small tables below give only what neither can: request bodies (one for every
//! route whose operation has a request body), which 2xx a route answers where it documents
//! several, and extra query strings. The test fails when a route lacks an entry it needs, or an
//! entry matches no route, so a new route can be neither skipped nor half-described.
//!
//! Every request runs on its own fresh channel and message, so destructive requests (delete,
//! leave) cannot change what a later request expects.

use std::collections::BTreeSet;

use axum::http::Method;
use chat_api::routes::{Access, ApiRoute, api_route_table};
use serde_json::{Value, json};

use crate::support::{Db, TestApp, TestUser, assert_error_shape, on_both_databases};

on_both_databases! {
    access_matrix;
}

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Actor {
    NoToken,
    /// A well-formed token of a real user with the wrong secret.
    BadToken,
    /// A registered user who is not a member of the channel.
    NonMember,
    /// A member who neither owns the channel nor wrote the message.
    Member,
    /// The channel's creator, not the message's author.
    Owner,
    /// A member who wrote the message.
    Author,
}

const ACTORS: [Actor; 6] = [
    Actor::NoToken,
    Actor::BadToken,
    Actor::NonMember,
    Actor::Member,
    Actor::Owner,
    Actor::Author,
];

/// A request body; `n` makes it unique where it must be.
type BodyFor = fn(usize) -> Value;

/// Request bodies by (method, path template). Needed exactly for the routes whose OpenAPI
/// operation has a request body.
const BODIES: &[(&str, &str, BodyFor)] = &[
    (
        "POST",
        "/api/v1/users",
        |n| json!({ "name": format!("newcomer-{n}") }),
    ),
    (
        "POST",
        "/api/v1/channels",
        |n| json!({ "name": format!("mine-{n}") }),
    ),
    (
        "POST",
        "/api/v1/channels/{cid}/messages",
        |n| json!({ "content": format!("hi {n}") }),
    ),
    (
        "PATCH",
        "/api/v1/channels/{cid}/messages/{mid}",
        |n| json!({ "content": format!("edited {n}") }),
    ),
];

/// The success status of routes that document more than one 2xx.
const SUCCESS: &[(&str, &str, u16)] = &[
    // 200 answers a retry with an already used nonce; these posts carry none.
    ("POST", "/api/v1/channels/{cid}/messages", 201),
];

/// Extra requests to a route with a query string (placeholders substituted as in paths); they
/// follow the route's access rule.
const QUERIES: &[(&str, &str, &str)] = &[(
    "GET",
    "/api/v1/channels/{cid}/messages",
    "limit=5&before={mid}",
)];

/// What `actor` must get from a route with `access`: `None` when allowed (the route's success
/// status), else the refusal's status and error code.
fn refusal(access: Access, actor: Actor, private: bool) -> Option<(u16, &'static str)> {
    use Actor::*;
    const UNAUTHORIZED: Option<(u16, &str)> = Some((401, "unauthorized"));
    let invisible = Some((404, "channel_not_found"));
    let not_a_member = if private {
        invisible
    } else {
        Some((403, "not_a_member"))
    };
    match (access, actor) {
        (Access::Anyone, _) => None,
        (Access::WebSocket, BadToken) => UNAUTHORIZED,
        // Allowed; but a request through the router in process is never an upgrade.
        (Access::WebSocket, _) => Some((426, "upgrade_required")),
        (_, NoToken | BadToken) => UNAUTHORIZED,
        (Access::User, _) => None,
        (Access::ChannelVisible, NonMember) if private => invisible,
        (Access::ChannelVisible, _) => None,
        (Access::Member | Access::Author | Access::ChannelOwner, NonMember) => not_a_member,
        (Access::Member, _) => None,
        (Access::Author, Author) => None,
        (Access::Author, _) => Some((403, "not_author")),
        (Access::ChannelOwner, Owner) => None,
        (Access::ChannelOwner, _) => Some((403, "not_owner")),
    }
}

/// Whether a rule is about the channel in the path.
fn channel_scoped(access: Access) -> bool {
    match access {
        Access::ChannelVisible | Access::Member | Access::Author | Access::ChannelOwner => true,
        Access::Anyone | Access::User | Access::WebSocket => false,
    }
}

/// One route as the matrix runs it: the table's route plus what the OpenAPI document says.
struct Case {
    route: ApiRoute,
    /// Appended after `?`, if any.
    query: Option<&'static str>,
    body: Option<BodyFor>,
    /// `None` only for the WebSocket route (it documents 101, never a 2xx).
    success: Option<u16>,
}

fn key(route: &ApiRoute) -> (String, String) {
    (route.method.to_string(), route.path.to_owned())
}

/// The matrix's cases, checked against the OpenAPI document `doc` and the tables above.
fn cases(doc: &Value) -> Vec<Case> {
    let routes = api_route_table();
    let known: BTreeSet<_> = routes.iter().map(key).collect();
    for (method, path, _) in BODIES {
        assert!(
            known.contains(&(method.to_string(), path.to_string())),
            "BODIES has {method} {path}, which the router does not serve"
        );
    }
    for (method, path, _) in SUCCESS {
        assert!(
            known.contains(&(method.to_string(), path.to_string())),
            "SUCCESS has {method} {path}, which the router does not serve"
        );
    }
    for (method, path, _) in QUERIES {
        assert!(
            known.contains(&(method.to_string(), path.to_string())),
            "QUERIES has {method} {path}, which the router does not serve"
        );
    }

    let mut cases = Vec::new();
    for route in routes {
        let (method, path) = (route.method.as_str(), route.path);
        assert_eq!(
            channel_scoped(route.access),
            path.contains("{cid}"),
            "{method} {path}: access {:?} does not fit the path",
            route.access
        );
        if route.access == Access::Author {
            assert!(
                path.contains("{mid}"),
                "{method} {path}: Author without {{mid}}"
            );
        }
        let operation = &doc["paths"][path][method.to_lowercase()];
        assert!(
            operation.is_object(),
            "{method} {path} is not in the OpenAPI document"
        );

        let body = BODIES
            .iter()
            .find(|(m, p, _)| *m == method && *p == path)
            .map(|(_, _, body)| *body);
        assert_eq!(
            body.is_some(),
            operation.get("requestBody").is_some(),
            "{method} {path}: BODIES must have an entry exactly when the route takes a body"
        );

        let documented: Vec<u16> = operation["responses"]
            .as_object()
            .expect("responses")
            .keys()
            .filter_map(|status| status.parse().ok())
            .filter(|status| (200..300).contains(status))
            .collect();
        let chosen = SUCCESS
            .iter()
            .find(|(m, p, _)| *m == method && *p == path)
            .map(|(_, _, status)| *status);
        let success = match (route.access, documented.as_slice(), chosen) {
            (Access::WebSocket, [], None) => None,
            (Access::WebSocket, _, _) => {
                panic!("{method} {path}: the WebSocket route documents no 2xx and needs none")
            }
            (_, [only], None) => Some(*only),
            (_, [_, _, ..], Some(status)) if documented.contains(&status) => Some(status),
            _ => panic!(
                "{method} {path}: documents 2xx {documented:?}; SUCCESS must pick one exactly \
                 when there are several ({chosen:?})"
            ),
        };
        let queries = QUERIES
            .iter()
            .filter(|(m, p, _)| *m == method && *p == path)
            .map(|(_, _, query)| Some(*query));
        for query in std::iter::once(None).chain(queries) {
            cases.push(Case {
                route: route.clone(),
                query,
                body,
                success,
            });
        }
    }
    cases
}

/// The people of the matrix.
struct People {
    owner: TestUser,
    author: TestUser,
    member: TestUser,
    outsider: TestUser,
    bad_token: String,
}

impl People {
    fn token(&self, actor: Actor) -> Option<&str> {
        match actor {
            Actor::NoToken => None,
            Actor::BadToken => Some(&self.bad_token),
            Actor::NonMember => Some(&self.outsider.token),
            Actor::Member => Some(&self.member.token),
            Actor::Owner => Some(&self.owner.token),
            Actor::Author => Some(&self.author.token),
        }
    }
}

/// A fresh channel of `owner` with `author` and `member` in it and a message by `author`:
/// (channel id, message id).
async fn fixture(app: &TestApp, people: &People, private: bool) -> (String, String) {
    let kind = if private { "private" } else { "public" };
    let channel = app
        .create_channel(&people.owner, &format!("{kind}-room"), kind)
        .await;
    for user in [&people.author, &people.member] {
        let path = if private {
            format!("/api/v1/channels/{channel}/members/{}", user.id)
        } else {
            format!("/api/v1/channels/{channel}/members/me")
        };
        let token = if private { &people.owner } else { user };
        app.put(&path, &token.token).await.expect(204);
    }
    let message = app
        .post_message(&people.author, &channel, "by the author")
        .await;
    (channel, message["id"].as_str().unwrap().to_owned())
}

/// `template` with its placeholders replaced; panics on a placeholder without a fixture.
fn substitute(template: &str, channel: &str, message: &str, people: &People) -> String {
    let concrete = template
        .replace("{cid}", channel)
        .replace("{mid}", message)
        .replace("{uid}", &people.outsider.id)
        .replace("{emoji}", "ok");
    assert!(
        !concrete.contains('{'),
        "{template}: a placeholder without a fixture"
    );
    concrete
}

async fn access_matrix(db: Db) {
    let Some(app) = TestApp::start(db).await else {
        return;
    };
    let doc = app
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await
        .expect(200)
        .body;
    let cases = cases(&doc);
    let author = app.register("author").await;
    let people = People {
        bad_token: format!("{}.{}", author.id, "f".repeat(64)),
        owner: app.register("owner").await,
        member: app.register("member").await,
        outsider: app.register("outsider").await,
        author,
    };

    let mut n = 0;
    for case in &cases {
        let route = &case.route;
        let scoped = channel_scoped(route.access);
        // Routes outside a channel run once; the others in a public and a private channel.
        let kinds: &[bool] = if scoped { &[false, true] } else { &[false] };
        for &private in kinds {
            let place = match (scoped, private) {
                (false, _) => "",
                (true, false) => " in a public channel",
                (true, true) => " in a private channel",
            };
            for actor in ACTORS {
                n += 1;
                let (channel, message) = if scoped {
                    fixture(&app, &people, private).await
                } else {
                    (String::new(), String::new())
                };
                let mut path = substitute(route.path, &channel, &message, &people);
                if let Some(query) = case.query {
                    path = format!("{path}?{}", substitute(query, &channel, &message, &people));
                }
                let what = format!(
                    "{} {path} ({}, {:?}){place} as {actor:?}",
                    route.method, route.path, route.access
                );
                let response = app
                    .call(
                        route.method.clone(),
                        &path,
                        people.token(actor),
                        case.body.map(|body| body(n)),
                    )
                    .await;
                match refusal(route.access, actor, private) {
                    None => {
                        let success = case.success.expect("a success status");
                        assert_eq!(
                            response.status.as_u16(),
                            success,
                            "{what}: {}",
                            response.text
                        );
                    }
                    Some((status, code)) => {
                        assert_eq!(
                            response.status.as_u16(),
                            status,
                            "{what}: {}",
                            response.text
                        );
                        assert_error_shape(&response);
                        assert_eq!(response.body["error"]["code"], code, "{what}");
                    }
                }
            }
        }
    }
}
