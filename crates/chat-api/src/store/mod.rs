//! The source of truth: the [`Store`] trait the handlers use, and its SQL implementation
//! ([`SqlStore`], SQLite or PostgreSQL).
//!
//! The trait is small and speaks domain values, so handlers never see SQL. Every method that
//! writes returns after the write has committed (a 201 means committed). Each method runs as few
//! statements as it can (a page is one statement), and every statement is counted
//! ([`Store::query_counts`]): the caching tests assert on these counts and `/metrics` exports them.

mod sql;

use async_trait::async_trait;
use ulid::Ulid;

pub use sql::SqlStore;

use crate::model::{Channel, Member, Membership, Message, Millis, MyChannel, Role, User, UserRef};

/// A database failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be reached (pool timeout, I/O, closed pool).
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The database answered with an error.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// A row holds a value this code never writes.
    #[error("unexpected value in the database: {0}")]
    Corrupt(String),
    /// Applying the migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// Whether the database is unreachable (a 503, not a 500).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(err)
            }
            other => StoreError::Database(other),
        }
    }
}

/// `Result` with [`StoreError`].
pub type StoreResult<T> = Result<T, StoreError>;

/// What the token check needs to know about a user, and what a request checks after it: the
/// user's memberships, so that one lookup answers both "who is this" and "may they read this
/// channel".
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserAuth {
    /// The user.
    pub user: UserRef,
    /// SHA-256 of the token's secret part (inline: a cache hit clones no buffer).
    pub token_hash: [u8; 32],
    /// Every membership of the user, sorted by channel id.
    pub memberships: Vec<(Ulid, Membership)>,
}

impl UserAuth {
    /// The user's membership of `channel`, if any.
    pub fn membership(&self, channel: Ulid) -> Option<&Membership> {
        self.memberships
            .binary_search_by_key(&channel, |(id, _)| *id)
            .ok()
            .map(|at| &self.memberships[at].1)
    }
}

/// Which messages of a channel to read. Every slice is returned newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slice {
    /// The newest messages.
    Latest,
    /// Messages older than the id.
    Before(Ulid),
    /// Messages at or older than the id.
    AtOrBefore(Ulid),
    /// Messages newer than the id (the ones closest to it).
    After(Ulid),
}

/// The outcome of posting a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Posted {
    /// The message was stored.
    Created {
        /// The message.
        message: Message,
        /// Its id raised the channel's high-water mark (the newest message id it ever had): a
        /// post in order, which no page of older messages can contain. `false` when a newer id
        /// was already there (another instance's clock, a concurrent post that committed first).
        newest: bool,
    },
    /// The author already posted a message with this nonce: here it is (a retried request).
    Duplicate(Message),
}

/// A new message.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Its id.
    pub id: Ulid,
    /// Its channel.
    pub channel_id: Ulid,
    /// The author.
    pub author: UserRef,
    /// The text.
    pub content: String,
    /// The client's nonce.
    pub nonce: Option<String>,
    /// When it was posted.
    pub created_at: Millis,
}

/// The source of truth. See the module docs.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn kind(&self) -> &'static str;

    /// Statements run so far, per operation, and in total.
    fn query_counts(&self) -> QueryCounts;

    /// Checks the database answers.
    async fn ping(&self) -> StoreResult<()>;

    /// Stores a new user. `false` if the name is taken: another user's name has the same
    /// [`user_name_key`](crate::validate::user_name_key) (differs only in case or look-alikes).
    async fn create_user(&self, user: &User, token_hash: &[u8]) -> StoreResult<bool>;

    /// The user, token hash and memberships for a token check.
    async fn user_auth(&self, id: Ulid) -> StoreResult<Option<UserAuth>>;

    /// A user.
    async fn user(&self, id: Ulid) -> StoreResult<Option<UserRef>>;

    /// Stores a channel and its owner's membership, in one transaction.
    async fn create_channel(&self, channel: &Channel) -> StoreResult<()>;

    /// A channel.
    async fn channel(&self, id: Ulid) -> StoreResult<Option<Channel>>;

    /// Adds a membership. `false` if it already existed.
    async fn join(&self, channel: Ulid, user: Ulid, role: Role, at: Millis) -> StoreResult<bool>;

    /// Removes a membership. `false` if there was none.
    async fn leave(&self, channel: Ulid, user: Ulid) -> StoreResult<bool>;

    /// The channels of a user, oldest membership first.
    async fn user_channels(&self, user: Ulid) -> StoreResult<Vec<MyChannel>>;

    /// Members of a channel by user id, after `after`, at most `limit`.
    async fn members(
        &self,
        channel: Ulid,
        after: Option<Ulid>,
        limit: u32,
    ) -> StoreResult<Vec<Member>>;

    /// Up to `limit` messages of a slice, newest first, with authors and reactions.
    async fn messages(&self, channel: Ulid, slice: Slice, limit: u32) -> StoreResult<Vec<Message>>;

    /// One message of a channel.
    async fn message(&self, channel: Ulid, id: Ulid) -> StoreResult<Option<Message>>;

    /// Stores a message and raises its channel's high-water mark in the same transaction (or
    /// finds the message the author posted with the same nonce).
    async fn post_message(&self, message: NewMessage) -> StoreResult<Posted>;

    /// Whether posts sent by one process commit in the order they were sent, so that ids made
    /// in increasing order just before each call stay in order in the database. When not, the
    /// caller orders a channel's posts itself.
    fn commits_posts_in_order(&self) -> bool {
        false
    }

    /// The channel's high-water mark: the newest message id it ever had, deleted ones included
    /// (`None` before its first message). It only rises.
    async fn newest_message(&self, channel: Ulid) -> StoreResult<Option<Ulid>>;

    /// Replaces a message's content. `false` if there is no such message.
    async fn edit_message(
        &self,
        channel: Ulid,
        id: Ulid,
        content: &str,
        at: Millis,
    ) -> StoreResult<bool>;

    /// Deletes a message and its reactions. `false` if there is no such message.
    async fn delete_message(&self, channel: Ulid, id: Ulid) -> StoreResult<bool>;

    /// Adds a reaction. `false` if it already existed.
    async fn add_reaction(
        &self,
        message: Ulid,
        user: Ulid,
        emoji: &str,
        at: Millis,
    ) -> StoreResult<bool>;

    /// Removes a reaction. `false` if there was none.
    async fn remove_reaction(&self, message: Ulid, user: Ulid, emoji: &str) -> StoreResult<bool>;

    /// Moves the user's read marker forward to `message` (never backward). `false` if it was
    /// already there or further.
    async fn ack(&self, channel: Ulid, user: Ulid, message: Ulid) -> StoreResult<bool>;
}

/// Statement counts of a store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryCounts {
    /// All statements.
    pub total: u64,
    /// Per operation (`messages`, `user_channels`, …), sorted by name.
    pub by_op: Vec<(&'static str, u64)>,
}
