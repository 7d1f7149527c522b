//! The domain values the API returns and the cache stores: users, channels, memberships, messages.
//!
//! They serialize to the JSON of the HTTP contract (the shapes clients and chat-bench rely on) and round-trip through serde, because
//! the cache stores them as JSON (and other clients of the same Redis can read them). Ids are
//! ULIDs (time-sortable, so keyset pagination orders by id); times are RFC 3339 strings in JSON
//! and Unix milliseconds in the database.

use std::{
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ulid::Ulid;
use utoipa::ToSchema;

/// A point in time, milliseconds since the Unix epoch; RFC 3339 in JSON.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub i64);

impl Millis {
    /// Now.
    pub fn now() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Millis(ms)
    }

    fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(u64::try_from(self.0).unwrap_or(0))
    }
}

impl fmt::Debug for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            humantime::format_rfc3339_millis(self.to_system_time())
        )
    }
}

impl Serialize for Millis {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let time = humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom)?;
        let ms = time
            .duration_since(UNIX_EPOCH)
            .map_err(serde::de::Error::custom)?
            .as_millis();
        Ok(Millis(i64::try_from(ms).map_err(serde::de::Error::custom)?))
    }
}

impl utoipa::PartialSchema for Millis {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .examples([serde_json::json!("2025-01-31T12:00:00.000Z")])
            .into()
    }
}

impl ToSchema for Millis {}

/// A user as others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserRef {
    /// ULID.
    #[schema(value_type = String)]
    pub id: Ulid,
    /// Display name.
    pub name: String,
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct User {
    /// ULID.
    #[schema(value_type = String)]
    pub id: Ulid,
    /// Display name (unique).
    pub name: String,
    /// When the user registered.
    pub created_at: Millis,
}

/// Who may see a channel: anyone (public) or its members (private).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// Anyone may see and join it.
    Public,
    /// Only members see it; non-members get 404.
    Private,
}

impl ChannelKind {
    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Public => "public",
            ChannelKind::Private => "private",
        }
    }

    /// Parses the database spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "public" => Some(ChannelKind::Public),
            "private" => Some(ChannelKind::Private),
            _ => None,
        }
    }
}

/// A channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Channel {
    /// ULID.
    #[schema(value_type = String)]
    pub id: Ulid,
    /// Name.
    pub name: String,
    /// Public or private.
    pub kind: ChannelKind,
    /// The creator.
    #[schema(value_type = String)]
    pub owner_id: Ulid,
    /// When it was created.
    pub created_at: Millis,
}

/// A member's role in a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The creator.
    Owner,
    /// Anyone else.
    Member,
}

impl Role {
    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Member => "member",
        }
    }

    /// Parses the database spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "owner" => Some(Role::Owner),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}

/// One user's membership of one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Owner or member.
    pub role: Role,
    /// When the user joined.
    pub joined_at: Millis,
}

/// An entry of "my channels": the channel and the caller's membership.
///
/// Deliberately without the channel's last message: that would change every member's list on
/// every post, and a post must cost O(1) invalidations, not O(members).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MyChannel {
    /// ULID.
    #[schema(value_type = String)]
    pub id: Ulid,
    /// Name.
    pub name: String,
    /// Public or private.
    pub kind: ChannelKind,
    /// The creator.
    #[schema(value_type = String)]
    pub owner_id: Ulid,
    /// When the channel was created.
    pub created_at: Millis,
    /// The caller's role.
    pub role: Role,
    /// When the caller joined.
    pub joined_at: Millis,
    /// The caller's read marker (the last message they acknowledged).
    #[schema(value_type = Option<String>)]
    pub last_read_id: Option<Ulid>,
}

/// A member of a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Member {
    /// The user.
    pub user: UserRef,
    /// Owner or member.
    pub role: Role,
    /// When they joined.
    pub joined_at: Millis,
}

/// The reactions of one emoji on a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Reaction {
    /// The emoji (any short string without whitespace).
    pub emoji: String,
    /// How many users reacted with it.
    pub count: u32,
    /// Who reacted, oldest first (clients derive "me" from it, so pages are shared by all users).
    #[schema(value_type = Vec<String>)]
    pub user_ids: Vec<Ulid>,
}

/// A message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Message {
    /// ULID (time-sortable).
    #[schema(value_type = String)]
    pub id: Ulid,
    /// The channel.
    #[schema(value_type = String)]
    pub channel_id: Ulid,
    /// The author, embedded so a page needs no second request.
    pub author: UserRef,
    /// The text.
    pub content: String,
    /// When it was posted.
    pub created_at: Millis,
    /// When it was last edited.
    pub edited_at: Option<Millis>,
    /// The client's nonce, echoed back so a client can match its optimistic copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// Reactions, by emoji in order of their first reaction.
    pub reactions: Vec<Reaction>,
}

/// A page of messages, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MessagePage {
    /// The messages, newest first.
    pub messages: Vec<Message>,
    /// Older messages exist (page with `before=<last id>`).
    pub has_more_before: bool,
    /// Newer messages exist (page with `after=<first id>`).
    pub has_more_after: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_as_rfc3339() {
        let t = Millis(1_700_000_000_123);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, r#""2023-11-14T22:13:20.123Z""#);
        assert_eq!(serde_json::from_str::<Millis>(&json).unwrap(), t);
    }
}
