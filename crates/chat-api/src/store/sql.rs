//! [`SqlStore`]: the [`Store`] on SQLite or PostgreSQL through sqlx.
//!
//! Both databases run the same SQL text (`$n` placeholders work in both), so each query is written
//! once and compiled against both drivers by [`on_pool!`]. Migrations differ only where the
//! dialects do (PostgreSQL needs the "C" collation for ULID ordering) and live in
//! `migrations/sqlite` and `migrations/postgres`, embedded in the binary.
//!
//! On SQLite, posts are committed in groups: every commit syncs the file (`synchronous=FULL`, so
//! a 201 survives a power cut), and one sync takes a millisecond or two, which would cap a busy
//! server at a few hundred posts a second, each waiting for the ones before it. One writer task
//! takes every post waiting, inserts them in one transaction and syncs once; each is answered
//! after that commit, as before. Other writes queue for the same writer turn (SQLite has one
//! writer at a time) instead of sleeping in SQLite's busy handler.

use std::{
    collections::BTreeMap,
    str::FromStr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use sqlx::{
    ConnectOptions as _, Connection as _, PgPool, SqliteConnection, SqlitePool,
    migrate::Migrator,
    postgres::PgPoolOptions,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use tokio::sync::{mpsc, oneshot};
use ulid::Ulid;

use super::{NewMessage, Posted, QueryCounts, Slice, Store, StoreError, StoreResult, UserAuth};
use crate::{
    config::{Config, DatabaseKind},
    model::{
        Channel, ChannelKind, Member, Membership, Message, Millis, MyChannel, Reaction, Role, User,
        UserRef,
    },
    validate,
};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the concrete pool, so one query text serves both drivers.
macro_rules! on_pool {
    ($self:ident, $pool:ident => $body:expr) => {
        match &$self.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

/// The SQL store. See the module docs.
pub struct SqlStore {
    pool: Pool,
    total: AtomicU64,
    by_op: Mutex<BTreeMap<&'static str, u64>>,
    /// SQLite's writers, one at a time (see [`SqlStore::write_turn`]).
    writer: Arc<tokio::sync::Mutex<()>>,
    /// SQLite: the queue of the group-commit task for posts.
    posts: Option<mpsc::UnboundedSender<PostJob>>,
}

/// A post waiting for the next group commit, and where its outcome goes: `Some(newest)` once
/// stored (whether it raised the channel's newest id), `None` if its nonce was taken.
struct PostJob {
    message: NewMessage,
    reply: oneshot::Sender<StoreResult<Option<bool>>>,
}

/// The most posts one group commit takes.
const MAX_GROUP: usize = 128;

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("kind", &self.kind())
            .finish_non_exhaustive()
    }
}

impl SqlStore {
    /// Connects to the database of `config` and applies the migrations. A SQLite file and its
    /// directory are created when missing.
    pub async fn connect(config: &Config) -> StoreResult<SqlStore> {
        let kind = config
            .database_kind()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let (pool, post_connection) = match kind {
            DatabaseKind::Sqlite => {
                if let Some(dir) = config.sqlite_path().as_deref().and_then(|p| p.parent()) {
                    if !dir.as_os_str().is_empty() {
                        std::fs::create_dir_all(dir)
                            .map_err(|e| StoreError::Unavailable(sqlx::Error::Io(e)))?;
                    }
                }
                let options = SqliteConnectOptions::from_str(&config.database_url)?
                    .create_if_missing(true)
                    // WAL lets readers run while a write commits; FULL syncs every commit, so an
                    // answered 201 survives a crash of the process or of the machine.
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(5));
                let pool = SqlitePoolOptions::new()
                    .max_connections(config.database_max_connections)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_with(options.clone())
                    .await?;
                SQLITE_MIGRATIONS
                    .run(&pool)
                    .await
                    .map_err(StoreError::Migrate)?;
                // The group-commit writer's own connection: posts never wait for one behind reads.
                let post_connection = options.connect().await?;
                (Pool::Sqlite(pool), Some(post_connection))
            }
            DatabaseKind::Postgres => {
                let pool = PgPoolOptions::new()
                    .max_connections(config.database_max_connections)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect(&config.database_url)
                    .await?;
                POSTGRES_MIGRATIONS
                    .run(&pool)
                    .await
                    .map_err(StoreError::Migrate)?;
                (Pool::Postgres(pool), None)
            }
        };
        let writer = Arc::new(tokio::sync::Mutex::new(()));
        let posts = post_connection.map(|connection| {
            let (posts, jobs) = mpsc::unbounded_channel();
            tokio::spawn(group_commit(connection, Arc::clone(&writer), jobs));
            posts
        });
        let store = SqlStore {
            pool,
            total: AtomicU64::new(0),
            by_op: Mutex::new(BTreeMap::new()),
            writer,
            posts,
        };
        store.fill_name_keys().await?;
        Ok(store)
    }

    /// Waits for this store's turn to write. SQLite has one writer at a time, and a writer that
    /// finds the lock taken waits in SQLite's busy handler, which sleeps (1, 2, 5, 10 … 100 ms)
    /// rather than queueing: under a steady stream of posts, some waited hundreds of
    /// milliseconds. Here they queue in arrival order and each finds the database free.
    /// PostgreSQL writes in parallel: no turn.
    async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.pool {
            Pool::Sqlite(_) => Some(self.writer.lock().await),
            Pool::Postgres(_) => None,
        }
    }

    /// Computes the name key of users registered before names had one, oldest first. A user whose
    /// key another (older) user already has keeps none: both names stay, but neither can be
    /// registered again. Not counted as queries: it runs once, before serving.
    async fn fill_name_keys(&self) -> StoreResult<()> {
        let rows: Vec<(String, String)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT id, name FROM users WHERE name_key IS NULL ORDER BY id",
        )
        .fetch_all(pool)
        .await)?;
        for (id, name) in rows {
            let result = on_pool!(self, pool => sqlx::query(
                "UPDATE users SET name_key = $1 WHERE id = $2",
            )
            .bind(validate::user_name_key(&name))
            .bind(&id)
            .execute(pool)
            .await
            .map(|_| ()));
            match result {
                Ok(()) => {}
                Err(err) if is_unique_violation(&err) => {
                    tracing::warn!(user_id = %id, "user name looks like an older user's; no name key");
                }
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }

    /// Closes the pool (waits for connections in use).
    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await);
    }

    fn count(&self, op: &'static str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut by_op = self.by_op.lock().unwrap_or_else(|e| e.into_inner());
        *by_op.entry(op).or_default() += 1;
    }
}

fn parse_id(text: &str) -> StoreResult<Ulid> {
    Ulid::from_string(text).map_err(|_| StoreError::Corrupt(format!("id {text:?} is not a ULID")))
}

fn parse_kind(text: &str) -> StoreResult<ChannelKind> {
    ChannelKind::parse(text).ok_or_else(|| StoreError::Corrupt(format!("channel kind {text:?}")))
}

fn parse_role(text: &str) -> StoreResult<Role> {
    Role::parse(text).ok_or_else(|| StoreError::Corrupt(format!("role {text:?}")))
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|e| e.is_unique_violation())
}

#[derive(sqlx::FromRow)]
struct UserAuthRow {
    id: String,
    name: String,
    token_hash: Vec<u8>,
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: String,
    name: String,
}

#[derive(sqlx::FromRow)]
struct ChannelRow {
    id: String,
    name: String,
    kind: String,
    owner_id: String,
    created_at: i64,
}

impl ChannelRow {
    fn into_channel(self) -> StoreResult<Channel> {
        Ok(Channel {
            id: parse_id(&self.id)?,
            name: self.name,
            kind: parse_kind(&self.kind)?,
            owner_id: parse_id(&self.owner_id)?,
            created_at: Millis(self.created_at),
        })
    }
}

#[derive(sqlx::FromRow)]
struct UserMembershipRow {
    channel_id: String,
    role: String,
    joined_at: i64,
}

#[derive(sqlx::FromRow)]
struct MyChannelRow {
    id: String,
    name: String,
    kind: String,
    owner_id: String,
    created_at: i64,
    role: String,
    joined_at: i64,
    last_read_id: Option<String>,
}

#[derive(sqlx::FromRow)]
struct MemberRow {
    user_id: String,
    name: String,
    role: String,
    joined_at: i64,
}

/// One message × one of its reactions (or none): a page is one statement.
#[derive(sqlx::FromRow)]
struct MessageRow {
    id: String,
    channel_id: String,
    author_id: String,
    author_name: String,
    content: String,
    nonce: Option<String>,
    created_at: i64,
    edited_at: Option<i64>,
    emoji: Option<String>,
    reactor_id: Option<String>,
}

/// Folds message × reaction rows (grouped by message, newest first) into messages.
fn fold_messages(rows: Vec<MessageRow>) -> StoreResult<Vec<Message>> {
    let mut out: Vec<Message> = Vec::new();
    for row in rows {
        let id = parse_id(&row.id)?;
        if out.last().is_none_or(|m| m.id != id) {
            out.push(Message {
                id,
                channel_id: parse_id(&row.channel_id)?,
                author: UserRef {
                    id: parse_id(&row.author_id)?,
                    name: row.author_name,
                },
                content: row.content,
                created_at: Millis(row.created_at),
                edited_at: row.edited_at.map(Millis),
                nonce: row.nonce,
                reactions: Vec::new(),
            });
        }
        if let (Some(emoji), Some(reactor)) = (row.emoji, row.reactor_id) {
            let reactor = parse_id(&reactor)?;
            let message = out.last_mut().expect("pushed above");
            match message.reactions.iter_mut().find(|r| r.emoji == emoji) {
                Some(reaction) => {
                    reaction.count += 1;
                    reaction.user_ids.push(reactor);
                }
                None => message.reactions.push(Reaction {
                    emoji,
                    count: 1,
                    user_ids: vec![reactor],
                }),
            }
        }
    }
    Ok(out)
}

/// The page query: the slice's messages in a subquery (so `LIMIT` counts messages, not
/// reactions), joined with authors and reactions.
macro_rules! page_sql {
    ($filter:literal) => {
        concat!(
            "SELECT m.id, m.channel_id, m.author_id, u.name AS author_name, m.content, m.nonce, ",
            "m.created_at, m.edited_at, r.emoji, r.user_id AS reactor_id ",
            "FROM (SELECT id, channel_id, author_id, content, nonce, created_at, edited_at ",
            "FROM messages WHERE channel_id = $1 ",
            $filter,
            ") m JOIN users u ON u.id = m.author_id ",
            "LEFT JOIN reactions r ON r.message_id = m.id ",
            "ORDER BY m.id DESC, r.created_at, r.user_id"
        )
    };
}

const LATEST_SQL: &str = page_sql!("ORDER BY id DESC LIMIT $2");
const BEFORE_SQL: &str = page_sql!("AND id < $2 ORDER BY id DESC LIMIT $3");
const AT_OR_BEFORE_SQL: &str = page_sql!("AND id <= $2 ORDER BY id DESC LIMIT $3");
const AFTER_SQL: &str = page_sql!("AND id > $2 ORDER BY id ASC LIMIT $3");
const ONE_SQL: &str = page_sql!("AND id = $2");

/// Inserts a message; ON CONFLICT covers only the nonce index (ids are fresh ULIDs).
const INSERT_MESSAGE_SQL: &str = "INSERT INTO messages \
    (id, channel_id, author_id, content, nonce, created_at) \
    VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING";

/// Raises a channel's newest message id. ULID text sorts like the ids (Crockford base32, fixed
/// width; byte collation on PostgreSQL).
const RAISE_NEWEST_SQL: &str = "UPDATE channels SET newest_message_id = $2 \
    WHERE id = $1 AND (newest_message_id IS NULL OR newest_message_id < $2)";

/// In the transaction `$tx` (of either database): inserts `$message` (nothing if its nonce is
/// taken: `None`) and raises its channel's newest id (`Some(true)` if it did: the post is in
/// order). A macro for the same reason as [`on_pool!`].
macro_rules! insert_message {
    ($tx:expr, $message:expr) => {
        async {
            let message: &NewMessage = $message;
            let inserted = sqlx::query(INSERT_MESSAGE_SQL)
                .bind(message.id.to_string())
                .bind(message.channel_id.to_string())
                .bind(message.author.id.to_string())
                .bind(&message.content)
                .bind(message.nonce.as_deref())
                .bind(message.created_at.0)
                .execute(&mut *$tx)
                .await?
                .rows_affected();
            if inserted != 1 {
                return StoreResult::Ok(None);
            }
            let raised = sqlx::query(RAISE_NEWEST_SQL)
                .bind(message.channel_id.to_string())
                .bind(message.id.to_string())
                .execute(&mut *$tx)
                .await?
                .rows_affected();
            StoreResult::Ok(Some(raised == 1))
        }
    };
}

/// The SQLite writer task for posts (see the module docs): takes every post waiting (up to
/// [`MAX_GROUP`]), inserts them in one transaction, commits once, then answers each. If the group
/// fails, each post is retried alone, so one bad post fails only itself. Ends when the store is
/// dropped.
async fn group_commit(
    mut connection: SqliteConnection,
    writer: Arc<tokio::sync::Mutex<()>>,
    mut jobs: mpsc::UnboundedReceiver<PostJob>,
) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while jobs.recv_many(&mut group, MAX_GROUP).await > 0 {
        let _turn = writer.lock().await;
        // Posts that arrived while the turn was taken join this group.
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        // In id order: two posts whose ids were made on two threads may have been sent the
        // other way round, and one committed before a smaller id would count as out of order.
        group.sort_by_key(|job| job.message.id);
        match commit_group(&mut connection, &group).await {
            Ok(outcomes) => {
                for (job, outcome) in group.drain(..).zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                }
            }
            Err(err) if group.len() == 1 => {
                if let Some(job) = group.pop() {
                    let _ = job.reply.send(Err(err));
                }
            }
            Err(_) => {
                for job in group.drain(..) {
                    let outcome = commit_group(&mut connection, std::slice::from_ref(&job))
                        .await
                        .map(|outcomes| outcomes[0]);
                    let _ = job.reply.send(outcome);
                }
            }
        }
    }
}

async fn commit_group(
    connection: &mut SqliteConnection,
    group: &[PostJob],
) -> StoreResult<Vec<Option<bool>>> {
    // The write lock at BEGIN: the turn already excludes this process's other writers.
    let mut tx = connection.begin_with("BEGIN IMMEDIATE").await?;
    let mut outcomes = Vec::with_capacity(group.len());
    for job in group {
        outcomes.push(insert_message!(tx, &job.message).await?);
    }
    tx.commit().await?;
    Ok(outcomes)
}

#[async_trait]
impl Store for SqlStore {
    fn kind(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    fn commits_posts_in_order(&self) -> bool {
        // SQLite: one writer task, in the order posts were sent (see the module docs).
        matches!(self.pool, Pool::Sqlite(_))
    }

    fn query_counts(&self) -> QueryCounts {
        let by_op = self.by_op.lock().unwrap_or_else(|e| e.into_inner());
        QueryCounts {
            total: self.total.load(Ordering::Relaxed),
            by_op: by_op.iter().map(|(k, v)| (*k, *v)).collect(),
        }
    }

    async fn ping(&self) -> StoreResult<()> {
        self.count("ping");
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    async fn create_user(&self, user: &User, token_hash: &[u8]) -> StoreResult<bool> {
        self.count("create_user");
        let _turn = self.write_turn().await;
        let result = on_pool!(self, pool => sqlx::query(
            "INSERT INTO users (id, name, name_key, token_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(user.id.to_string())
        .bind(&user.name)
        .bind(validate::user_name_key(&user.name))
        .bind(token_hash)
        .bind(user.created_at.0)
        .execute(pool)
        .await
        .map(|_| ()));
        match result {
            Ok(()) => Ok(true),
            Err(err) if is_unique_violation(&err) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    async fn user_auth(&self, id: Ulid) -> StoreResult<Option<UserAuth>> {
        self.count("user_auth");
        let row: Option<UserAuthRow> = on_pool!(self, pool => sqlx::query_as(
            "SELECT id, name, token_hash FROM users WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(pool)
        .await)?;
        let Some(row) = row else {
            return Ok(None);
        };
        // Read after the user: a membership committed before this read started is seen (the
        // cache stamps its load before both reads, so one committed later hides the result).
        let rows: Vec<UserMembershipRow> = on_pool!(self, pool => sqlx::query_as(
            "SELECT channel_id, role, joined_at FROM memberships WHERE user_id = $1",
        )
        .bind(id.to_string())
        .fetch_all(pool)
        .await)?;
        let mut memberships = rows
            .into_iter()
            .map(|r| {
                Ok((
                    parse_id(&r.channel_id)?,
                    Membership {
                        role: parse_role(&r.role)?,
                        joined_at: Millis(r.joined_at),
                    },
                ))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        memberships.sort_unstable_by_key(|(channel, _)| *channel);
        Ok(Some(UserAuth {
            user: UserRef {
                id: parse_id(&row.id)?,
                name: row.name,
            },
            token_hash: row.token_hash.as_slice().try_into().map_err(|_| {
                StoreError::Corrupt(format!(
                    "a token hash of {} bytes, not 32",
                    row.token_hash.len()
                ))
            })?,
            memberships,
        }))
    }

    async fn user(&self, id: Ulid) -> StoreResult<Option<UserRef>> {
        self.count("user");
        let row: Option<UserRow> = on_pool!(self, pool => sqlx::query_as(
            "SELECT id, name FROM users WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(pool)
        .await)?;
        row.map(|r| {
            Ok(UserRef {
                id: parse_id(&r.id)?,
                name: r.name,
            })
        })
        .transpose()
    }

    async fn create_channel(&self, channel: &Channel) -> StoreResult<()> {
        self.count("create_channel");
        let _turn = self.write_turn().await;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO channels (id, name, kind, owner_id, created_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(channel.id.to_string())
            .bind(&channel.name)
            .bind(channel.kind.as_str())
            .bind(channel.owner_id.to_string())
            .bind(channel.created_at.0)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO memberships (channel_id, user_id, role, joined_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(channel.id.to_string())
            .bind(channel.owner_id.to_string())
            .bind(Role::Owner.as_str())
            .bind(channel.created_at.0)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    async fn channel(&self, id: Ulid) -> StoreResult<Option<Channel>> {
        self.count("channel");
        let row: Option<ChannelRow> = on_pool!(self, pool => sqlx::query_as(
            "SELECT id, name, kind, owner_id, created_at FROM channels WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(pool)
        .await)?;
        row.map(ChannelRow::into_channel).transpose()
    }

    async fn join(&self, channel: Ulid, user: Ulid, role: Role, at: Millis) -> StoreResult<bool> {
        self.count("join");
        let _turn = self.write_turn().await;
        let done = on_pool!(self, pool => sqlx::query(
            "INSERT INTO memberships (channel_id, user_id, role, joined_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(channel.to_string())
        .bind(user.to_string())
        .bind(role.as_str())
        .bind(at.0)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done == 1)
    }

    async fn leave(&self, channel: Ulid, user: Ulid) -> StoreResult<bool> {
        self.count("leave");
        let _turn = self.write_turn().await;
        let done = on_pool!(self, pool => sqlx::query(
            "DELETE FROM memberships WHERE channel_id = $1 AND user_id = $2",
        )
        .bind(channel.to_string())
        .bind(user.to_string())
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done == 1)
    }

    async fn user_channels(&self, user: Ulid) -> StoreResult<Vec<MyChannel>> {
        self.count("user_channels");
        let rows: Vec<MyChannelRow> = on_pool!(self, pool => sqlx::query_as(
            "SELECT c.id, c.name, c.kind, c.owner_id, c.created_at, m.role, m.joined_at, m.last_read_id \
             FROM memberships m JOIN channels c ON c.id = m.channel_id \
             WHERE m.user_id = $1 ORDER BY m.joined_at, c.id",
        )
        .bind(user.to_string())
        .fetch_all(pool)
        .await)?;
        rows.into_iter()
            .map(|r| {
                Ok(MyChannel {
                    id: parse_id(&r.id)?,
                    name: r.name,
                    kind: parse_kind(&r.kind)?,
                    owner_id: parse_id(&r.owner_id)?,
                    created_at: Millis(r.created_at),
                    role: parse_role(&r.role)?,
                    joined_at: Millis(r.joined_at),
                    last_read_id: r.last_read_id.as_deref().map(parse_id).transpose()?,
                })
            })
            .collect()
    }

    async fn members(
        &self,
        channel: Ulid,
        after: Option<Ulid>,
        limit: u32,
    ) -> StoreResult<Vec<Member>> {
        self.count("members");
        // "" sorts before every ULID, so it means "from the start".
        let after = after.map(|id| id.to_string()).unwrap_or_default();
        let rows: Vec<MemberRow> = on_pool!(self, pool => sqlx::query_as(
            "SELECT m.user_id, u.name, m.role, m.joined_at \
             FROM memberships m JOIN users u ON u.id = m.user_id \
             WHERE m.channel_id = $1 AND m.user_id > $2 ORDER BY m.user_id LIMIT $3",
        )
        .bind(channel.to_string())
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await)?;
        rows.into_iter()
            .map(|r| {
                Ok(Member {
                    user: UserRef {
                        id: parse_id(&r.user_id)?,
                        name: r.name,
                    },
                    role: parse_role(&r.role)?,
                    joined_at: Millis(r.joined_at),
                })
            })
            .collect()
    }

    async fn messages(&self, channel: Ulid, slice: Slice, limit: u32) -> StoreResult<Vec<Message>> {
        self.count("messages");
        let limit = i64::from(limit);
        let (sql, cursor) = match slice {
            Slice::Latest => (LATEST_SQL, None),
            Slice::Before(id) => (BEFORE_SQL, Some(id)),
            Slice::AtOrBefore(id) => (AT_OR_BEFORE_SQL, Some(id)),
            Slice::After(id) => (AFTER_SQL, Some(id)),
        };
        let rows: Vec<MessageRow> = on_pool!(self, pool => {
            let query = sqlx::query_as(sql).bind(channel.to_string());
            let query = match cursor {
                Some(id) => query.bind(id.to_string()).bind(limit),
                None => query.bind(limit),
            };
            query.fetch_all(pool).await
        })?;
        fold_messages(rows)
    }

    async fn message(&self, channel: Ulid, id: Ulid) -> StoreResult<Option<Message>> {
        self.count("message");
        let rows: Vec<MessageRow> = on_pool!(self, pool => sqlx::query_as(ONE_SQL)
            .bind(channel.to_string())
            .bind(id.to_string())
            .fetch_all(pool)
            .await)?;
        Ok(fold_messages(rows)?.into_iter().next())
    }

    async fn post_message(&self, message: NewMessage) -> StoreResult<Posted> {
        self.count("post_message");
        // The insert and the channel's high-water mark in one transaction: the mark can never
        // miss a stored message.
        let newest = match &self.pool {
            Pool::Sqlite(_) => {
                let stopped = || StoreError::Corrupt("the SQLite writer task stopped".into());
                let posts = self.posts.as_ref().ok_or_else(stopped)?;
                let (reply, outcome) = oneshot::channel();
                posts
                    .send(PostJob {
                        message: message.clone(),
                        reply,
                    })
                    .map_err(|_| stopped())?;
                outcome.await.map_err(|_| stopped())??
            }
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let newest = insert_message!(tx, &message).await?;
                tx.commit().await?;
                newest
            }
        };
        if newest.is_some() {
            self.count("raise_newest_message");
        }
        if let Some(newest) = newest {
            return Ok(Posted::Created {
                message: Message {
                    id: message.id,
                    channel_id: message.channel_id,
                    author: message.author,
                    content: message.content,
                    created_at: message.created_at,
                    edited_at: None,
                    nonce: message.nonce,
                    reactions: Vec::new(),
                },
                newest,
            });
        }
        self.count("message_by_nonce");
        let id: Option<(String,)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT id FROM messages WHERE channel_id = $1 AND author_id = $2 AND nonce = $3",
        )
        .bind(message.channel_id.to_string())
        .bind(message.author.id.to_string())
        .bind(message.nonce.as_deref())
        .fetch_optional(pool)
        .await)?;
        let id = id.map(|(id,)| parse_id(&id)).transpose()?.ok_or_else(|| {
            StoreError::Corrupt("insert conflicted but no message has the nonce".into())
        })?;
        self.message(message.channel_id, id)
            .await?
            .map(Posted::Duplicate)
            .ok_or_else(|| StoreError::Corrupt("duplicate message vanished".into()))
    }

    async fn newest_message(&self, channel: Ulid) -> StoreResult<Option<Ulid>> {
        self.count("newest_message");
        let row: Option<(Option<String>,)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT newest_message_id FROM channels WHERE id = $1",
        )
        .bind(channel.to_string())
        .fetch_optional(pool)
        .await)?;
        row.and_then(|(id,)| id).map(|id| parse_id(&id)).transpose()
    }

    async fn edit_message(
        &self,
        channel: Ulid,
        id: Ulid,
        content: &str,
        at: Millis,
    ) -> StoreResult<bool> {
        self.count("edit_message");
        let _turn = self.write_turn().await;
        let done = on_pool!(self, pool => sqlx::query(
            "UPDATE messages SET content = $3, edited_at = $4 WHERE channel_id = $1 AND id = $2",
        )
        .bind(channel.to_string())
        .bind(id.to_string())
        .bind(content)
        .bind(at.0)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done == 1)
    }

    async fn delete_message(&self, channel: Ulid, id: Ulid) -> StoreResult<bool> {
        self.count("delete_message");
        let _turn = self.write_turn().await;
        // Reactions go with it (ON DELETE CASCADE).
        let done = on_pool!(self, pool => sqlx::query(
            "DELETE FROM messages WHERE channel_id = $1 AND id = $2",
        )
        .bind(channel.to_string())
        .bind(id.to_string())
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done == 1)
    }

    async fn add_reaction(
        &self,
        message: Ulid,
        user: Ulid,
        emoji: &str,
        at: Millis,
    ) -> StoreResult<bool> {
        self.count("add_reaction");
        let _turn = self.write_turn().await;
        let done = on_pool!(self, pool => sqlx::query(
            "INSERT INTO reactions (message_id, user_id, emoji, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(message.to_string())
        .bind(user.to_string())
        .bind(emoji)
        .bind(at.0)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done == 1)
    }

    async fn remove_reaction(&self, message: Ulid, user: Ulid, emoji: &str) -> StoreResult<bool> {
        self.count("remove_reaction");
        let _turn = self.write_turn().await;
        let done = on_pool!(self, pool => sqlx::query(
            "DELETE FROM reactions WHERE message_id = $1 AND user_id = $2 AND emoji = $3",
        )
        .bind(message.to_string())
        .bind(user.to_string())
        .bind(emoji)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done == 1)
    }

    async fn ack(&self, channel: Ulid, user: Ulid, message: Ulid) -> StoreResult<bool> {
        self.count("ack");
        let _turn = self.write_turn().await;
        let done = on_pool!(self, pool => sqlx::query(
            "UPDATE memberships SET last_read_id = $3 \
             WHERE channel_id = $1 AND user_id = $2 AND (last_read_id IS NULL OR last_read_id < $3)",
        )
        .bind(channel.to_string())
        .bind(user.to_string())
        .bind(message.to_string())
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done == 1)
    }
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection, sqlite::SqliteConnection};

    /// The bundled SQLite is built with the workspace's `LIBSQLITE3_FLAGS` (`.cargo/config.toml`):
    /// without them every allocation and page-cache access of every connection takes one of two
    /// global mutexes. A build that lost the setting fails here.
    #[tokio::test]
    async fn sqlite_is_built_without_global_allocation_locks() {
        let mut connection = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        let options: Vec<String> = sqlx::query_scalar("PRAGMA compile_options")
            .fetch_all(&mut connection)
            .await
            .unwrap();
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
        assert!(
            !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
            "{options:?}"
        );
    }
}
