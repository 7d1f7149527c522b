//! What the gateway lets through: command classification by name.
//!
//! The tables, all keyed by the upper-cased command name:
//! - commands refused outright because a REST request cannot carry them (blocking commands, and
//!   connection-state commands that would corrupt a pooled connection), as Upstash refuses them;
//! - administration commands (server configuration, users, persistence, modules), refused unless
//!   the gateway was started with `--allow-admin-commands` ([`CommandPolicy`]);
//! - commands a read-only token may run (an allow-list, so a command this table does not know —
//!   say, one added in a later Redis — is treated as a write and refused: the safe default);
//! - everything else, which is forwarded as it is.

use bytes::Bytes;

/// One Redis command: the name and its arguments, as raw bytes.
pub(crate) type Args = Vec<Bytes>;

/// The command name upper-cased, for table lookups (non-UTF-8 names map to "" and match nothing).
pub(crate) fn name_of(args: &[Bytes]) -> String {
    args.first()
        .and_then(|name| std::str::from_utf8(name).ok())
        .map(str::to_ascii_uppercase)
        .unwrap_or_default()
}

/// The upper-cased first argument (the subcommand of `CONFIG SET`, `SCRIPT DEBUG`, …), or "".
fn subcommand_of(args: &[Bytes]) -> String {
    args.get(1)
        .and_then(|sub| std::str::from_utf8(sub).ok())
        .map(str::to_ascii_uppercase)
        .unwrap_or_default()
}

/// Which optional command groups this gateway forwards for the full token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CommandPolicy {
    /// The [`ADMIN`] commands (and `MEMORY` other than `USAGE`); off by default.
    pub(crate) allow_admin: bool,
}

/// Why the gateway will not forward a command: the Redis-style error text for the client.
pub(crate) fn refusal(args: &[Bytes], policy: CommandPolicy) -> Option<String> {
    let name = name_of(args);
    let shown = name.to_ascii_lowercase();
    if is_blocking(&name, args) {
        return Some(format!(
            "ERR blocking command '{shown}' is not supported over the REST API (a request cannot wait on the server); use the non-blocking form"
        ));
    }
    // SCRIPT DEBUG switches the connection into a debugging session (and its SYNC mode blocks
    // the server): connection state, like CLIENT.
    if REFUSED_STATEFUL.binary_search(&name.as_str()).is_ok()
        || (name == "SCRIPT" && subcommand_of(args) == "DEBUG")
    {
        return Some(format!(
            "ERR command '{shown}' is not supported over the REST API (it changes or needs per-connection state)"
        ));
    }
    if TRANSACTION_CONTROL.binary_search(&name.as_str()).is_ok() {
        return Some(format!(
            "ERR command '{shown}' is not supported over the REST API; POST the commands to /multi-exec"
        ));
    }
    if SUBSCRIPTION.binary_search(&name.as_str()).is_ok() {
        return Some(format!(
            "ERR command '{shown}' is not supported as a plain command; use the streaming endpoints /subscribe/<channel>, /psubscribe/<pattern> or /monitor"
        ));
    }
    if !policy.allow_admin {
        if ADMIN.binary_search(&name.as_str()).is_ok() {
            return Some(admin_refusal(&shown));
        }
        // MEMORY USAGE is a per-key question; the other subcommands are the server's business.
        if name == "MEMORY" && subcommand_of(args) != "USAGE" {
            let shown = format!("memory {}", subcommand_of(args).to_ascii_lowercase());
            return Some(admin_refusal(shown.trim_end()));
        }
    }
    None
}

fn admin_refusal(shown: &str) -> String {
    format!(
        "ERR command '{shown}' is disabled on this gateway; start it with --allow-admin-commands"
    )
}

/// The error text when a read-only token sends a command outside the read allow-list.
pub(crate) fn read_only_refusal(args: &[Bytes]) -> Option<String> {
    let name = name_of(args);
    if is_read_only(&name) {
        None
    } else {
        Some(format!(
            "NOPERM this user has no permissions to run the '{}' command (read-only token)",
            name.to_ascii_lowercase()
        ))
    }
}

/// Whether a read-only token may run the command `name` (upper-cased).
pub(crate) fn is_read_only(name: &str) -> bool {
    READ_ONLY.binary_search(&name).is_ok()
}

fn is_blocking(name: &str, args: &[Bytes]) -> bool {
    if BLOCKING.binary_search(&name).is_ok() {
        return true;
    }
    // XREAD and XREADGROUP block only with the BLOCK option, which comes before STREAMS.
    if name == "XREAD" || name == "XREADGROUP" {
        return args
            .iter()
            .skip(1)
            .take_while(|arg| !arg.eq_ignore_ascii_case(b"STREAMS"))
            .any(|arg| arg.eq_ignore_ascii_case(b"BLOCK"));
    }
    false
}

// The tables are sorted so `binary_search` works; a unit test checks that.

const BLOCKING: &[&str] = &[
    "BLMOVE",
    "BLMPOP",
    "BLPOP",
    "BRPOP",
    "BRPOPLPUSH",
    "BZMPOP",
    "BZPOPMAX",
    "BZPOPMIN",
    "WAIT",
    "WAITAOF",
];

/// Commands that change or depend on the state of the connection they run on. Through a pool that
/// state would leak into other requests (SELECT, HELLO 3, CLIENT REPLY OFF) or be lost, so Upstash's
/// "connection group: only PING and ECHO" rule applies. Server-killing and replication commands are
/// refused too: they break the server for everyone else.
const REFUSED_STATEFUL: &[&str] = &[
    "ASKING",
    "AUTH",
    "CLIENT",
    "CLUSTER",
    "DEBUG",
    "FAILOVER",
    "HELLO",
    "MONITOR",
    "PSYNC",
    "QUIT",
    "READONLY",
    "READWRITE",
    "REPLCONF",
    "REPLICAOF",
    "RESET",
    "SELECT",
    "SHUTDOWN",
    "SLAVEOF",
    "SYNC",
];

/// Administration commands, refused unless the gateway runs with `--allow-admin-commands`.
///
/// The REST token is an application's credential; these commands manage the server the gateway
/// itself depends on, so one leaked token or buggy client could take the gateway down for
/// everyone. The line follows Upstash, which offers a managed server and does not forward such
/// commands to it, and otherwise what each command can do to a shared Redis:
/// - `ACL`: `ACL SETUSER`/`DELUSER` can change or remove the user the gateway logs in as, locking
///   it out of its own Redis; `ACL LIST`/`GETUSER` show that user's password hashes. (Upstash's
///   ACL manages its own REST users, which this gateway does not have.)
/// - `CONFIG`: `CONFIG SET requirepass` locks the gateway out; `CONFIG SET dir`/`dbfilename`
///   followed by a save is the classic way to write files on the Redis host; `CONFIG GET`
///   shows passwords. (Upstash accepts a few harmless `CONFIG` parameters, not the server's.)
/// - `SAVE` blocks the server for the whole dump; `BGSAVE` and `BGREWRITEAOF` fork it (up to
///   twice the memory) and write to its disk. Upstash persists on its own and lists none of them.
/// - `SWAPDB` swaps databases under every other client (Upstash has a single database).
/// - `MODULE` loads native code into the server; `MIGRATE` makes the server connect to any
///   address and send it keys. Neither is offered by Upstash.
/// - `LATENCY` and `SLOWLOG`: the server's diagnostics, and `SLOWLOG GET` shows other clients'
///   commands with their arguments (and their addresses); `RESET` wipes what operators look at.
/// - `PFDEBUG`, `PFSELFTEST`: Redis's internal HyperLogLog testing commands.
/// - `MEMORY`, except `MEMORY USAGE key` (checked in [`refusal`]): `PURGE`, `DOCTOR`, `STATS`,
///   `MALLOC-STATS` are about the server, not the data.
///
/// Kept available, as on Upstash: `FLUSHDB` and `FLUSHALL` (Upstash runs them for the standard
/// token, and `cachectl flush` and the tests use `FLUSHDB`); `SCRIPT FLUSH` and `FUNCTION FLUSH`
/// (they drop cached code, never data; script clients fall back to `EVAL`); `SCRIPT KILL` and
/// `FUNCTION KILL` (the way out of a runaway script: refusing them would leave a `BUSY` server
/// with no remedy); `INFO`, `LASTSAVE`, `DBSIZE`, `TIME`, `COMMAND` (read-only facts).
const ADMIN: &[&str] = &[
    "ACL",
    "BGREWRITEAOF",
    "BGSAVE",
    "CONFIG",
    "LATENCY",
    "MIGRATE",
    "MODULE",
    "PFDEBUG",
    "PFSELFTEST",
    "SAVE",
    "SLOWLOG",
    "SWAPDB",
];

const TRANSACTION_CONTROL: &[&str] = &["DISCARD", "EXEC", "MULTI", "UNWATCH", "WATCH"];

const SUBSCRIPTION: &[&str] = &[
    "PSUBSCRIBE",
    "PUNSUBSCRIBE",
    "SSUBSCRIBE",
    "SUBSCRIBE",
    "SUNSUBSCRIBE",
    "UNSUBSCRIBE",
];

/// What a read-only token may run. No scripts or functions, not even `EVAL_RO`, `EVALSHA_RO` or
/// `FCALL_RO`: Redis stops them from writing, but not from looping, and a script that loops keeps
/// the single-threaded server answering `BUSY` to everyone until someone with the full token runs
/// `SCRIPT KILL`; a read-only token is meant to be safe to hand out. KEYS is left out too:
/// Upstash restricts "powerful read commands" for read-only tokens, and KEYS on a big database is
/// the classic example (SCAN stays allowed: it is how a read-only client lists keys without
/// blocking the server).
const READ_ONLY: &[&str] = &[
    "BITCOUNT",
    "BITFIELD_RO",
    "BITPOS",
    "DBSIZE",
    "DUMP",
    "ECHO",
    "EXISTS",
    "EXPIRETIME",
    "GEODIST",
    "GEOHASH",
    "GEOPOS",
    "GEORADIUSBYMEMBER_RO",
    "GEORADIUS_RO",
    "GEOSEARCH",
    "GET",
    "GETBIT",
    "GETRANGE",
    "HEXISTS",
    "HGET",
    "HGETALL",
    "HKEYS",
    "HLEN",
    "HMGET",
    "HRANDFIELD",
    "HSCAN",
    "HSTRLEN",
    "HVALS",
    "JSON.ARRINDEX",
    "JSON.ARRLEN",
    "JSON.GET",
    "JSON.MGET",
    "JSON.OBJKEYS",
    "JSON.OBJLEN",
    "JSON.RESP",
    "JSON.STRLEN",
    "JSON.TYPE",
    "LCS",
    "LINDEX",
    "LLEN",
    "LPOS",
    "LRANGE",
    "MGET",
    "OBJECT",
    "PEXPIRETIME",
    "PFCOUNT",
    "PING",
    "PTTL",
    "RANDOMKEY",
    "SCAN",
    "SCARD",
    "SDIFF",
    "SINTER",
    "SINTERCARD",
    "SISMEMBER",
    "SMEMBERS",
    "SMISMEMBER",
    "SORT_RO",
    "SRANDMEMBER",
    "SSCAN",
    "STRLEN",
    "SUBSTR",
    "SUNION",
    "TIME",
    "TOUCH",
    "TTL",
    "TYPE",
    "XINFO",
    "XLEN",
    "XPENDING",
    "XRANGE",
    "XREAD",
    "XREVRANGE",
    "ZCARD",
    "ZCOUNT",
    "ZDIFF",
    "ZINTER",
    "ZINTERCARD",
    "ZLEXCOUNT",
    "ZMSCORE",
    "ZRANDMEMBER",
    "ZRANGE",
    "ZRANGEBYLEX",
    "ZRANGEBYSCORE",
    "ZRANK",
    "ZREVRANGE",
    "ZREVRANGEBYLEX",
    "ZREVRANGEBYSCORE",
    "ZREVRANK",
    "ZSCAN",
    "ZSCORE",
    "ZUNION",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal_by_default(args: &[Bytes]) -> Option<String> {
        refusal(args, CommandPolicy::default())
    }

    fn args(words: &[&str]) -> Args {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    #[test]
    fn tables_are_sorted_for_binary_search() {
        for table in [
            BLOCKING,
            REFUSED_STATEFUL,
            TRANSACTION_CONTROL,
            SUBSCRIPTION,
            ADMIN,
            READ_ONLY,
        ] {
            assert!(table.windows(2).all(|w| w[0] < w[1]), "{table:?}");
        }
    }

    #[test]
    fn blocking_commands_are_refused_case_insensitively() {
        for cmd in [
            &["blpop", "q", "0"][..],
            &["BZPOPMIN", "z", "1"],
            &["wait", "1", "0"],
        ] {
            assert!(
                refusal_by_default(&args(cmd)).unwrap().contains("blocking"),
                "{cmd:?}"
            );
        }
        assert!(
            refusal_by_default(&args(&[
                "XREAD", "COUNT", "1", "BLOCK", "0", "STREAMS", "s", "$"
            ]))
            .is_some()
        );
        // A stream named BLOCK after STREAMS does not make XREAD blocking.
        assert!(refusal_by_default(&args(&["XREAD", "STREAMS", "BLOCK", "0"])).is_none());
        assert!(refusal_by_default(&args(&["LPOP", "q"])).is_none());
    }

    #[test]
    fn connection_state_and_pubsub_are_refused() {
        for cmd in [
            "SELECT",
            "hello",
            "MULTI",
            "subscribe",
            "Client",
            "shutdown",
        ] {
            assert!(refusal_by_default(&args(&[cmd, "x"])).is_some(), "{cmd}");
        }
        for cmd in ["PING", "ECHO", "PUBLISH", "GET"] {
            assert!(refusal_by_default(&args(&[cmd, "x"])).is_none(), "{cmd}");
        }
    }

    #[test]
    fn read_only_allows_reads_and_refuses_everything_else() {
        assert!(read_only_refusal(&args(&["get", "k"])).is_none());
        for cmd in [
            "EVAL_RO",
            "EVALSHA_RO",
            "FCALL_RO",
            "SET",
            "del",
            "EVAL",
            "FLUSHALL",
            "PUBLISH",
            "KEYS",
            "SOMEFUTURECOMMAND",
        ] {
            let refusal = read_only_refusal(&args(&[cmd, "k"])).unwrap();
            assert!(refusal.starts_with("NOPERM"), "{cmd}: {refusal}");
        }
    }

    #[test]
    fn admin_commands_are_refused_unless_enabled() {
        let enabled = CommandPolicy { allow_admin: true };
        for cmd in [
            &["CONFIG", "SET", "requirepass", "x"][..],
            &["config", "get", "*"],
            &["ACL", "SETUSER", "default", "off"],
            &["save"],
            &["BGSAVE"],
            &["BGREWRITEAOF"],
            &["SWAPDB", "0", "1"],
            &["MODULE", "LOAD", "/tmp/x.so"],
            &["MIGRATE", "10.0.0.1", "6379", "k", "0", "1000"],
            &["SLOWLOG", "RESET"],
            &["LATENCY", "RESET"],
            &["MEMORY", "PURGE"],
            &["memory", "doctor"],
            &["MEMORY"],
        ] {
            let text = refusal_by_default(&args(cmd)).unwrap();
            assert!(
                text.starts_with("ERR command '")
                    && text.ends_with(
                        "is disabled on this gateway; start it with --allow-admin-commands"
                    ),
                "{cmd:?}: {text}"
            );
            assert_eq!(refusal(&args(cmd), enabled), None, "{cmd:?}");
        }
        assert_eq!(
            refusal_by_default(&args(&["MEMORY", "PURGE"])).unwrap(),
            "ERR command 'memory purge' is disabled on this gateway; start it with --allow-admin-commands"
        );
        for cmd in [
            &["FLUSHDB"][..],
            &["FLUSHALL", "ASYNC"],
            &["SCRIPT", "FLUSH"],
            &["SCRIPT", "KILL"],
            &["SCRIPT", "LOAD", "return 1"],
            &["MEMORY", "USAGE", "k"],
            &["INFO"],
            &["LASTSAVE"],
        ] {
            assert_eq!(refusal_by_default(&args(cmd)), None, "{cmd:?}");
        }
        // SCRIPT DEBUG changes the connection: refused whatever the policy.
        assert!(refusal(&args(&["SCRIPT", "DEBUG", "YES"]), enabled).is_some());
    }
}
