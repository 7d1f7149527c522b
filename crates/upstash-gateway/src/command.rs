//! What the gateway lets through: command classification by name.
//!
//! Three tables, all keyed by the upper-cased command name:
//! - commands refused outright because a REST request cannot carry them (blocking commands, and
//!   connection-state commands that would corrupt a pooled connection), as Upstash refuses them;
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

/// Why the gateway will not forward a command: the Redis-style error text for the client.
pub(crate) fn refusal(args: &[Bytes]) -> Option<String> {
    let name = name_of(args);
    let shown = name.to_ascii_lowercase();
    if is_blocking(&name, args) {
        return Some(format!(
            "ERR blocking command '{shown}' is not supported over the REST API (a request cannot wait on the server); use the non-blocking form"
        ));
    }
    if REFUSED_STATEFUL.binary_search(&name.as_str()).is_ok() {
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
    None
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

const TRANSACTION_CONTROL: &[&str] = &["DISCARD", "EXEC", "MULTI", "UNWATCH", "WATCH"];

const SUBSCRIPTION: &[&str] = &[
    "PSUBSCRIBE",
    "PUNSUBSCRIBE",
    "SSUBSCRIBE",
    "SUBSCRIBE",
    "SUNSUBSCRIBE",
    "UNSUBSCRIBE",
];

/// What a read-only token may run. Scripts are only allowed in their `_RO` forms, which Redis
/// itself stops from writing. KEYS is left out: Upstash restricts "powerful read commands" for
/// read-only tokens, and KEYS on a big database is the classic example (SCAN stays allowed: it is
/// how a read-only client lists keys without blocking the server).
const READ_ONLY: &[&str] = &[
    "BITCOUNT",
    "BITFIELD_RO",
    "BITPOS",
    "DBSIZE",
    "DUMP",
    "ECHO",
    "EVALSHA_RO",
    "EVAL_RO",
    "EXISTS",
    "EXPIRETIME",
    "FCALL_RO",
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
            assert!(refusal(&args(cmd)).unwrap().contains("blocking"), "{cmd:?}");
        }
        assert!(
            refusal(&args(&[
                "XREAD", "COUNT", "1", "BLOCK", "0", "STREAMS", "s", "$"
            ]))
            .is_some()
        );
        // A stream named BLOCK after STREAMS does not make XREAD blocking.
        assert!(refusal(&args(&["XREAD", "STREAMS", "BLOCK", "0"])).is_none());
        assert!(refusal(&args(&["LPOP", "q"])).is_none());
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
            assert!(refusal(&args(&[cmd, "x"])).is_some(), "{cmd}");
        }
        for cmd in ["PING", "ECHO", "PUBLISH", "GET"] {
            assert!(refusal(&args(&[cmd, "x"])).is_none(), "{cmd}");
        }
    }

    #[test]
    fn read_only_allows_reads_and_refuses_everything_else() {
        assert!(read_only_refusal(&args(&["get", "k"])).is_none());
        assert!(read_only_refusal(&args(&["EVAL_RO", "return 1", "0"])).is_none());
        for cmd in [
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
}
