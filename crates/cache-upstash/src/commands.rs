//! The typed commands. Each is written once below and becomes three things:
//!
//! - a constructor in [`cmd`] returning a [`TypedCommand`] (for [`Redis::run`] and pipelines),
//! - a method on [`Redis`] that sends it and converts the reply,
//! - a method on [`Pipeline`] that queues it and returns a [`Handle`] to its result.
//!
//! Also here: [`SetOptions`] for `SET`, [`ScanOptions`] for `SCAN` and `KEYS`, and
//! [`Redis::scan_iter`], a stream over every key of a `SCAN`.

use std::{collections::HashMap, future::Future, time::Duration};

use bytes::Bytes;
use futures_util::Stream;

use crate::{
    client::Redis,
    command::{Command, TypedCommand},
    error::Result,
    pipeline::{Handle, Pipeline},
    value::{IntoArg, Value},
};

/// Options of `SET`: expiry (`EX`/`PX`/`EXAT`/`PXAT`/`KEEPTTL`) and condition (`NX`/`XX`).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use cache_upstash::SetOptions;
/// let only_if_new = SetOptions::new().expire_in(Duration::from_secs(30)).nx();
/// let refresh = SetOptions::new().xx().keep_ttl();
/// # let _ = (only_if_new, refresh);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetOptions {
    expiry: Option<(&'static str, u64)>,
    keep_ttl: bool,
    condition: Option<&'static str>,
}

impl SetOptions {
    /// No options: a plain `SET`.
    pub fn new() -> SetOptions {
        SetOptions::default()
    }

    /// `EX seconds`.
    #[must_use]
    pub fn ex(mut self, seconds: u64) -> SetOptions {
        self.expiry = Some(("EX", seconds));
        self
    }

    /// `PX milliseconds`.
    #[must_use]
    pub fn px(mut self, millis: u64) -> SetOptions {
        self.expiry = Some(("PX", millis));
        self
    }

    /// `PX` from a duration, rounded up to whole milliseconds (at least 1).
    #[must_use]
    pub fn expire_in(self, ttl: Duration) -> SetOptions {
        let millis = ttl.as_micros().div_ceil(1000).max(1);
        self.px(u64::try_from(millis).unwrap_or(u64::MAX))
    }

    /// `EXAT unix-seconds`.
    #[must_use]
    pub fn exat(mut self, unix_seconds: u64) -> SetOptions {
        self.expiry = Some(("EXAT", unix_seconds));
        self
    }

    /// `PXAT unix-milliseconds`.
    #[must_use]
    pub fn pxat(mut self, unix_millis: u64) -> SetOptions {
        self.expiry = Some(("PXAT", unix_millis));
        self
    }

    /// `KEEPTTL`: keep the key's current time to live.
    #[must_use]
    pub fn keep_ttl(mut self) -> SetOptions {
        self.keep_ttl = true;
        self
    }

    /// `NX`: only set if the key does not exist.
    #[must_use]
    pub fn nx(mut self) -> SetOptions {
        self.condition = Some("NX");
        self
    }

    /// `XX`: only set if the key exists.
    #[must_use]
    pub fn xx(mut self) -> SetOptions {
        self.condition = Some("XX");
        self
    }

    fn apply(&self, mut command: Command) -> Command {
        if let Some((unit, amount)) = self.expiry {
            command = command.arg(unit).arg(amount);
        }
        if self.keep_ttl {
            command = command.arg("KEEPTTL");
        }
        if let Some(condition) = self.condition {
            command = command.arg(condition);
        }
        command
    }
}

/// Options of `SCAN`: `MATCH` pattern, `COUNT` hint, `TYPE` filter.
///
/// # Examples
///
/// ```
/// use cache_upstash::ScanOptions;
/// let options = ScanOptions::new().pattern("chat:v1:*").count(500);
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanOptions {
    pattern: Option<String>,
    count: Option<u64>,
    kind: Option<String>,
}

impl ScanOptions {
    /// Every key, Redis's default batch size.
    pub fn new() -> ScanOptions {
        ScanOptions::default()
    }

    /// `MATCH pattern` (glob-style).
    #[must_use]
    pub fn pattern(mut self, pattern: impl Into<String>) -> ScanOptions {
        self.pattern = Some(pattern.into());
        self
    }

    /// `COUNT n`: how much work Redis does per call (a hint, not a page size).
    #[must_use]
    pub fn count(mut self, count: u64) -> ScanOptions {
        self.count = Some(count);
        self
    }

    /// `TYPE kind`: only keys of this type (`string`, `hash`, …).
    #[must_use]
    pub fn kind(mut self, kind: impl Into<String>) -> ScanOptions {
        self.kind = Some(kind.into());
        self
    }

    fn apply(&self, mut command: Command) -> Command {
        if let Some(pattern) = &self.pattern {
            command = command.arg("MATCH").arg(pattern);
        }
        if let Some(count) = self.count {
            command = command.arg("COUNT").arg(count);
        }
        if let Some(kind) = &self.kind {
            command = command.arg("TYPE").arg(kind);
        }
        command
    }
}

fn collect_args(items: impl IntoIterator<Item = impl IntoArg>) -> Vec<Bytes> {
    items.into_iter().map(IntoArg::into_arg).collect()
}

fn script_command(
    name: &str,
    script_or_sha: impl IntoArg,
    keys: impl IntoIterator<Item = impl IntoArg>,
    args: impl IntoIterator<Item = impl IntoArg>,
) -> Command {
    let keys = collect_args(keys);
    Command::new(name)
        .arg(script_or_sha)
        .arg(keys.len())
        .args(keys)
        .args(collect_args(args))
}

macro_rules! commands {
    ($(
        $(#[$doc:meta])*
        fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block
    )*) => {
        /// Constructors of typed commands, for [`Redis::run`] and [`Pipeline::add`]. Each has a
        /// method of the same name on [`Redis`] and on [`Pipeline`].
        ///
        /// ```
        /// use cache_upstash::cmd;
        /// let command = cmd::set_with("k", "v", cache_upstash::SetOptions::new().px(1500));
        /// assert_eq!(command.command().as_args().len(), 5);
        /// ```
        pub mod cmd {
            #[allow(unused_imports, reason = "each command uses a different subset")]
            use super::*;
            $(
                $(#[$doc])*
                pub fn $name($($arg: $ty),*) -> TypedCommand<$ret> {
                    TypedCommand::new($body)
                }
            )*
        }

        impl Redis {
            $(
                $(#[$doc])*
                ///
                /// The arguments are encoded when this is called; the returned future owns
                /// everything it needs (`Send + 'static`).
                pub fn $name(&self, $($arg: $ty),*) -> impl Future<Output = Result<$ret>> + Send + 'static {
                    let command = cmd::$name($($arg),*);
                    let redis = self.clone();
                    async move { redis.run(command).await }
                }
            )*
        }

        impl Pipeline {
            $(
                $(#[$doc])*
                pub fn $name(&mut self, $($arg: $ty),*) -> Handle<$ret> {
                    self.add(cmd::$name($($arg),*))
                }
            )*
        }
    };
}

commands! {
    // ---- strings ----

    /// `GET key`: the value, `None` if the key does not exist.
    fn get(key: impl IntoArg) -> Option<Bytes> {
        Command::new("GET").arg(key)
    }

    /// `SET key value`.
    fn set(key: impl IntoArg, value: impl IntoArg) -> () {
        Command::new("SET").arg(key).arg(value)
    }

    /// `SET key value [EX|PX|EXAT|PXAT|KEEPTTL] [NX|XX]`: `false` if a condition prevented it.
    fn set_with(key: impl IntoArg, value: impl IntoArg, options: SetOptions) -> bool {
        options.apply(Command::new("SET").arg(key).arg(value))
    }

    /// `SET key value … GET`: sets and returns the previous value.
    fn set_get(key: impl IntoArg, value: impl IntoArg, options: SetOptions) -> Option<Bytes> {
        options.apply(Command::new("SET").arg(key).arg(value)).arg("GET")
    }

    /// `GETDEL key`: the value, deleting the key.
    fn getdel(key: impl IntoArg) -> Option<Bytes> {
        Command::new("GETDEL").arg(key)
    }

    /// `MGET key…`: one slot per key, `None` where missing.
    fn mget(keys: impl IntoIterator<Item = impl IntoArg>) -> Vec<Option<Bytes>> {
        Command::new("MGET").args(collect_args(keys))
    }

    /// `MSET key value …`.
    fn mset(pairs: impl IntoIterator<Item = (impl IntoArg, impl IntoArg)>) -> () {
        let mut command = Command::new("MSET");
        for (key, value) in pairs {
            command = command.arg(key).arg(value);
        }
        command
    }

    /// `INCR key`: the new value. Never retried after it may have reached the server.
    fn incr(key: impl IntoArg) -> i64 {
        Command::new("INCR").arg(key)
    }

    /// `INCRBY key by`.
    fn incr_by(key: impl IntoArg, by: i64) -> i64 {
        Command::new("INCRBY").arg(key).arg(by)
    }

    /// `INCRBYFLOAT key by`.
    fn incr_by_float(key: impl IntoArg, by: f64) -> f64 {
        Command::new("INCRBYFLOAT").arg(key).arg(by)
    }

    /// `DECR key`.
    fn decr(key: impl IntoArg) -> i64 {
        Command::new("DECR").arg(key)
    }

    /// `DECRBY key by`.
    fn decr_by(key: impl IntoArg, by: i64) -> i64 {
        Command::new("DECRBY").arg(key).arg(by)
    }

    /// `APPEND key value`: the new length.
    fn append(key: impl IntoArg, value: impl IntoArg) -> u64 {
        Command::new("APPEND").arg(key).arg(value)
    }

    /// `STRLEN key`.
    fn strlen(key: impl IntoArg) -> u64 {
        Command::new("STRLEN").arg(key)
    }

    // ---- keys ----

    /// `DEL key…`: how many existed.
    fn del(keys: impl IntoIterator<Item = impl IntoArg>) -> u64 {
        Command::new("DEL").args(collect_args(keys))
    }

    /// `UNLINK key…`: like `DEL`, freeing memory in the background.
    fn unlink(keys: impl IntoIterator<Item = impl IntoArg>) -> u64 {
        Command::new("UNLINK").args(collect_args(keys))
    }

    /// `EXISTS key…`: how many exist (a key named twice counts twice).
    fn exists(keys: impl IntoIterator<Item = impl IntoArg>) -> u64 {
        Command::new("EXISTS").args(collect_args(keys))
    }

    /// `EXPIRE key seconds`: `false` if the key does not exist.
    fn expire(key: impl IntoArg, seconds: u64) -> bool {
        Command::new("EXPIRE").arg(key).arg(seconds)
    }

    /// `PEXPIRE key milliseconds`.
    fn pexpire(key: impl IntoArg, millis: u64) -> bool {
        Command::new("PEXPIRE").arg(key).arg(millis)
    }

    /// `PERSIST key`: removes the expiry.
    fn persist(key: impl IntoArg) -> bool {
        Command::new("PERSIST").arg(key)
    }

    /// `TTL key`: seconds left, `-1` without expiry, `-2` if missing.
    fn ttl(key: impl IntoArg) -> i64 {
        Command::new("TTL").arg(key)
    }

    /// `PTTL key`: milliseconds left, `-1` without expiry, `-2` if missing.
    fn pttl(key: impl IntoArg) -> i64 {
        Command::new("PTTL").arg(key)
    }

    /// `TYPE key`: `string`, `list`, `set`, `hash`, …, or `none`.
    fn key_type(key: impl IntoArg) -> String {
        Command::new("TYPE").arg(key)
    }

    // ---- sets ----

    /// `SADD key member…`: how many were added.
    fn sadd(key: impl IntoArg, members: impl IntoIterator<Item = impl IntoArg>) -> u64 {
        Command::new("SADD").arg(key).args(collect_args(members))
    }

    /// `SREM key member…`: how many were removed.
    fn srem(key: impl IntoArg, members: impl IntoIterator<Item = impl IntoArg>) -> u64 {
        Command::new("SREM").arg(key).args(collect_args(members))
    }

    /// `SMEMBERS key`, in no particular order.
    fn smembers(key: impl IntoArg) -> Vec<Bytes> {
        Command::new("SMEMBERS").arg(key)
    }

    /// `SISMEMBER key member`.
    fn sismember(key: impl IntoArg, member: impl IntoArg) -> bool {
        Command::new("SISMEMBER").arg(key).arg(member)
    }

    /// `SCARD key`.
    fn scard(key: impl IntoArg) -> u64 {
        Command::new("SCARD").arg(key)
    }

    // ---- hashes ----

    /// `HSET key field value …`: how many fields were added (not updated).
    fn hset(key: impl IntoArg, fields: impl IntoIterator<Item = (impl IntoArg, impl IntoArg)>) -> u64 {
        let mut command = Command::new("HSET").arg(key);
        for (field, value) in fields {
            command = command.arg(field).arg(value);
        }
        command
    }

    /// `HGET key field`.
    fn hget(key: impl IntoArg, field: impl IntoArg) -> Option<Bytes> {
        Command::new("HGET").arg(key).arg(field)
    }

    /// `HMGET key field…`: one slot per field.
    fn hmget(key: impl IntoArg, fields: impl IntoIterator<Item = impl IntoArg>) -> Vec<Option<Bytes>> {
        Command::new("HMGET").arg(key).args(collect_args(fields))
    }

    /// `HGETALL key`: fields and values (empty if the key does not exist).
    fn hgetall(key: impl IntoArg) -> HashMap<Bytes, Bytes> {
        Command::new("HGETALL").arg(key)
    }

    /// `HDEL key field…`: how many were removed.
    fn hdel(key: impl IntoArg, fields: impl IntoIterator<Item = impl IntoArg>) -> u64 {
        Command::new("HDEL").arg(key).args(collect_args(fields))
    }

    /// `HINCRBY key field by`: the new value.
    fn hincrby(key: impl IntoArg, field: impl IntoArg, by: i64) -> i64 {
        Command::new("HINCRBY").arg(key).arg(field).arg(by)
    }

    /// `HEXISTS key field`.
    fn hexists(key: impl IntoArg, field: impl IntoArg) -> bool {
        Command::new("HEXISTS").arg(key).arg(field)
    }

    /// `HLEN key`.
    fn hlen(key: impl IntoArg) -> u64 {
        Command::new("HLEN").arg(key)
    }

    /// `HKEYS key`.
    fn hkeys(key: impl IntoArg) -> Vec<Bytes> {
        Command::new("HKEYS").arg(key)
    }

    // ---- lists ----

    /// `LPUSH key value…`: the new length. Never retried after it may have reached the server.
    fn lpush(key: impl IntoArg, values: impl IntoIterator<Item = impl IntoArg>) -> u64 {
        Command::new("LPUSH").arg(key).args(collect_args(values))
    }

    /// `RPUSH key value…`: the new length.
    fn rpush(key: impl IntoArg, values: impl IntoIterator<Item = impl IntoArg>) -> u64 {
        Command::new("RPUSH").arg(key).args(collect_args(values))
    }

    /// `LRANGE key start stop` (inclusive; negative indexes count from the end).
    fn lrange(key: impl IntoArg, start: i64, stop: i64) -> Vec<Bytes> {
        Command::new("LRANGE").arg(key).arg(start).arg(stop)
    }

    /// `LPOP key`.
    fn lpop(key: impl IntoArg) -> Option<Bytes> {
        Command::new("LPOP").arg(key)
    }

    /// `RPOP key`.
    fn rpop(key: impl IntoArg) -> Option<Bytes> {
        Command::new("RPOP").arg(key)
    }

    /// `LLEN key`.
    fn llen(key: impl IntoArg) -> u64 {
        Command::new("LLEN").arg(key)
    }

    /// `LTRIM key start stop`: keeps only that range.
    fn ltrim(key: impl IntoArg, start: i64, stop: i64) -> () {
        Command::new("LTRIM").arg(key).arg(start).arg(stop)
    }

    /// `LINDEX key index`.
    fn lindex(key: impl IntoArg, index: i64) -> Option<Bytes> {
        Command::new("LINDEX").arg(key).arg(index)
    }

    // ---- keyspace ----

    /// `SCAN cursor [MATCH] [COUNT] [TYPE]`: the next cursor (`0` when done) and a batch of keys.
    /// [`Redis::scan_iter`] walks every batch.
    fn scan(cursor: u64, options: &ScanOptions) -> (u64, Vec<Bytes>) {
        options.apply(Command::new("SCAN").arg(cursor))
    }

    /// `KEYS pattern`: blocks Redis while it walks every key; prefer `scan_iter`.
    fn keys(pattern: impl IntoArg) -> Vec<Bytes> {
        Command::new("KEYS").arg(pattern)
    }

    /// `DBSIZE`: the number of keys.
    fn dbsize() -> u64 {
        Command::new("DBSIZE")
    }

    /// `FLUSHDB`: deletes every key of the database.
    fn flushdb() -> () {
        Command::new("FLUSHDB")
    }

    // ---- scripting ----

    /// `EVAL script numkeys key… arg…`: the script's raw reply (convert with
    /// [`FromValue`](crate::FromValue)). See [`Script`](crate::Script) for `EVALSHA` with fallback.
    fn eval(
        script: &str,
        keys: impl IntoIterator<Item = impl IntoArg>,
        args: impl IntoIterator<Item = impl IntoArg>,
    ) -> Value {
        script_command("EVAL", script, keys, args)
    }

    /// `EVALSHA sha1 numkeys key… arg…`: fails with `NOSCRIPT` if the script is not loaded.
    fn evalsha(
        sha1: &str,
        keys: impl IntoIterator<Item = impl IntoArg>,
        args: impl IntoIterator<Item = impl IntoArg>,
    ) -> Value {
        script_command("EVALSHA", sha1, keys, args)
    }

    /// `SCRIPT LOAD script`: the script's SHA-1 digest.
    fn script_load(script: &str) -> String {
        Command::new("SCRIPT").arg("LOAD").arg(script)
    }

    /// `SCRIPT EXISTS sha1…`: one flag per digest.
    fn script_exists(sha1s: impl IntoIterator<Item = impl IntoArg>) -> Vec<bool> {
        Command::new("SCRIPT").arg("EXISTS").args(collect_args(sha1s))
    }

    // ---- server ----

    /// `PUBLISH channel message`: how many subscribers received it.
    fn publish(channel: impl IntoArg, message: impl IntoArg) -> u64 {
        Command::new("PUBLISH").arg(channel).arg(message)
    }

    /// `TIME`: the server's clock (see [`measure_clock_offset`](crate::measure_clock_offset) for
    /// comparing it with this host's).
    fn time() -> std::time::SystemTime {
        Command::new("TIME")
    }

    /// `PING`: `PONG`.
    fn ping() -> String {
        Command::new("PING")
    }

    /// `ECHO message`.
    fn echo(message: impl IntoArg) -> Bytes {
        Command::new("ECHO").arg(message)
    }

    /// `INFO [section]` (pass `""` for the default sections): the server's report as text.
    fn info(section: &str) -> String {
        let command = Command::new("INFO");
        if section.is_empty() { command } else { command.arg(section) }
    }
}

impl Redis {
    /// Every key matching `options`, walking `SCAN` cursors until Redis says `0`. Each batch is
    /// one request; a key may be yielded twice if it was renamed meanwhile (Redis's guarantee).
    ///
    /// # Examples
    ///
    /// ```
    /// use futures_util::TryStreamExt;
    /// use cache_upstash::ScanOptions;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let gateway = upstash_gateway::testing::TestGateway::start().await; // a local stand-in for Upstash
    /// # let redis = cache_upstash::Redis::builder().url(gateway.url()).token(gateway.token()).build()?;
    /// let keys: Vec<_> = redis
    ///     .scan_iter(ScanOptions::new().pattern("session:*").count(1000))
    ///     .try_collect()
    ///     .await?;
    /// # let _ = keys; Ok(()) }
    /// ```
    pub fn scan_iter(
        &self,
        options: ScanOptions,
    ) -> impl Stream<Item = Result<Bytes>> + Send + 'static {
        struct State {
            redis: Redis,
            options: ScanOptions,
            cursor: Option<u64>,
            batch: std::vec::IntoIter<Bytes>,
        }
        let state = State {
            redis: self.clone(),
            options,
            cursor: Some(0),
            batch: Vec::new().into_iter(),
        };
        futures_util::stream::try_unfold(state, |mut state| async move {
            loop {
                if let Some(key) = state.batch.next() {
                    return Ok(Some((key, state)));
                }
                let Some(cursor) = state.cursor else {
                    return Ok(None);
                };
                let (next, keys) = state.redis.scan(cursor, &state.options).await?;
                state.cursor = (next != 0).then_some(next);
                state.batch = keys.into_iter();
            }
        })
    }
}
