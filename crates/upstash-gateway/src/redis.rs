//! Connections to the Redis server: URL parsing, one RESP2 connection, and a small pool.
//!
//! Every HTTP request borrows a connection exclusively for its whole duration (no multiplexing),
//! which is what makes `/multi-exec` atomic: `MULTI … EXEC` runs on a connection nobody else can
//! write to. Connections whose state is uncertain (an I/O error, a timeout or a cancelled request
//! part-way through a reply) are dropped rather than returned, so the pool never hands out a
//! connection with unread replies. Idle connections are checked for a closed socket before reuse,
//! so the first request after Redis restarts, or after Redis's `timeout` closed them, gets a fresh
//! connection instead of an error. Connections idle longer than the pool's idle timeout are closed
//! (on the next borrow, and by a background sweep): a socket that a firewall or NAT silently
//! forgot shows no sign of it until a request hangs on it, so the pool does not keep connections
//! long enough for that to happen.
//!
//! Why not redis-rs (with deadpool-redis or bb8-redis): its parser requires status and error
//! lines to be UTF-8, and a reply that is not is a parse error that closes the connection. Redis
//! does send such lines — "unknown command" echoes the client's bytes (`GET /%FF` in the path
//! form), and a Lua script returns any bytes as `{ok=…}` or `{err=…}` — so with redis-rs those
//! requests would become 5xx and cost a connection instead of getting their reply. Checked
//! against redis 1.8.1: `Incompatible type - Parse error … invalid utf-8 sequence`, then
//! `broken pipe` for the next command on that connection. The test
//! `non_utf8_status_and_error_replies_are_replies_and_keep_the_connection` holds the line.

use std::{
    collections::VecDeque,
    fmt, io,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::{OwnedSemaphorePermit, Semaphore, watch},
};

use crate::{
    error::{Error, RedisError, Result},
    resp::{self, Reply},
};

/// Where and how to connect: parsed from `redis://[user:password@]host[:port][/db]`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct RedisTarget {
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
    db: u32,
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password never reaches logs or panics.
        f.debug_struct("RedisTarget")
            .field("addr", &self.addr())
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("db", &self.db)
            .finish()
    }
}

impl RedisTarget {
    pub(crate) fn parse(url: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Config(format!(
                "redis url: {why} (expected redis://[user:password@]host[:port][/db])"
            ))
        };
        let rest = if let Some(rest) = url.strip_prefix("redis://") {
            rest
        } else if url.starts_with("rediss://") {
            return Err(bad(
                "TLS (rediss://) is not supported; the gateway is meant for a local redis-server",
            ));
        } else if url.contains("://") {
            return Err(bad("unknown scheme"));
        } else {
            // A bare `host:port` is accepted for convenience.
            url
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, pass) = info.split_once(':').unwrap_or(("", info));
                let decode = |s: &str| {
                    percent_encoding::percent_decode_str(s)
                        .decode_utf8()
                        .map(|s| s.into_owned())
                        .map_err(|_| bad("credentials are not valid UTF-8"))
                };
                let user = if user.is_empty() {
                    None
                } else {
                    Some(decode(user)?)
                };
                let pass = if pass.is_empty() {
                    None
                } else {
                    Some(decode(pass)?)
                };
                (user, pass)
            }
        };
        let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
            // IPv6 literal: [::1]:6379
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| bad("unclosed '['"))?;
            (host.to_owned(), after.strip_prefix(':').unwrap_or(""))
        } else {
            match hostport.rsplit_once(':') {
                Some((host, port)) => (host.to_owned(), port),
                None => (hostport.to_owned(), ""),
            }
        };
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        let port = if port.is_empty() {
            6379
        } else {
            port.parse().map_err(|_| bad("invalid port"))?
        };
        let db_text = path.split('?').next().unwrap_or("");
        let db = if db_text.is_empty() {
            0
        } else {
            db_text
                .parse()
                .map_err(|_| bad("invalid database number"))?
        };
        Ok(RedisTarget {
            host,
            port,
            username,
            password,
            db,
        })
    }

    /// `host:port`, safe to show anywhere.
    pub(crate) fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Time limits for talking to Redis.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RedisTimeouts {
    /// Opening a TCP connection (and the AUTH/SELECT handshake).
    pub(crate) connect: Duration,
    /// One request's whole exchange with Redis, after a connection is in hand.
    pub(crate) command: Duration,
    /// Waiting for a pooled connection when all are busy.
    pub(crate) pool_wait: Duration,
}

/// One RESP2 connection.
#[derive(Debug)]
pub(crate) struct RedisConnection {
    stream: TcpStream,
    read_buf: BytesMut,
}

impl RedisConnection {
    /// Opens a connection and runs AUTH/SELECT as the target asks.
    pub(crate) async fn connect(
        target: &RedisTarget,
        timeouts: RedisTimeouts,
    ) -> Result<Self, RedisError> {
        let unavailable = |source| RedisError::RedisUnavailable {
            addr: target.addr(),
            source,
        };
        let connect = TcpStream::connect((target.host.as_str(), target.port));
        let stream = match tokio::time::timeout(timeouts.connect, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => return Err(unavailable(err)),
            Err(_) => {
                return Err(unavailable(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect timed out after {:?}", timeouts.connect),
                )));
            }
        };
        // Small request/response exchanges: Nagle's algorithm only adds latency here.
        stream.set_nodelay(true).map_err(unavailable)?;
        let mut conn = RedisConnection {
            stream,
            read_buf: BytesMut::with_capacity(16 * 1024),
        };

        let mut setup: Vec<Vec<Bytes>> = Vec::new();
        if let Some(password) = &target.password {
            let mut auth = vec![Bytes::from_static(b"AUTH")];
            if let Some(user) = &target.username {
                auth.push(Bytes::from(user.clone()));
            }
            auth.push(Bytes::from(password.clone()));
            setup.push(auth);
        }
        if target.db != 0 {
            setup.push(vec![
                Bytes::from_static(b"SELECT"),
                Bytes::from(target.db.to_string()),
            ]);
        }
        if !setup.is_empty() {
            let exchange = async {
                conn.send(&setup).await?;
                for _ in &setup {
                    if let Reply::Error(message) = conn.read_reply().await? {
                        return Err(RedisError::RedisHandshake(
                            String::from_utf8_lossy(&message).into_owned(),
                        ));
                    }
                }
                Ok(())
            };
            tokio::time::timeout(timeouts.connect, exchange)
                .await
                .map_err(|_| RedisError::RedisTimeout(timeouts.connect))??;
        }
        Ok(conn)
    }

    /// Writes the commands in one go (pipelined).
    pub(crate) async fn send(&mut self, commands: &[Vec<Bytes>]) -> Result<(), RedisError> {
        let mut out = BytesMut::new();
        for args in commands {
            resp::encode_command(args, &mut out);
        }
        self.stream
            .write_all(&out)
            .await
            .map_err(RedisError::RedisConnectionLost)
    }

    /// Reads the next reply (waits as long as it takes; callers put a timeout around it).
    pub(crate) async fn read_reply(&mut self) -> Result<Reply, RedisError> {
        loop {
            if let Some(reply) =
                resp::parse_reply(&mut self.read_buf).map_err(|e| RedisError::Protocol(e.0))?
            {
                return Ok(reply);
            }
            if self.read_buf.capacity() - self.read_buf.len() < 4096 {
                self.read_buf.reserve(64 * 1024);
            }
            let read = self
                .stream
                .read_buf(&mut self.read_buf)
                .await
                .map_err(RedisError::RedisConnectionLost)?;
            if read == 0 {
                return Err(RedisError::RedisConnectionLost(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "redis closed the connection",
                )));
            }
        }
    }

    /// `false` if the server has closed this idle connection (or sent something unasked).
    fn looks_alive(&self) -> bool {
        if !self.read_buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        // A healthy idle connection has nothing to read: `WouldBlock`. EOF or data means it is done.
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// A bounded pool of connections to one Redis server.
#[derive(Debug)]
pub(crate) struct RedisPool {
    target: RedisTarget,
    timeouts: RedisTimeouts,
    /// Idle connections with the time each came back, oldest first.
    idle: Mutex<VecDeque<(RedisConnection, Instant)>>,
    idle_timeout: Duration,
    permits: Arc<Semaphore>,
}

impl RedisPool {
    pub(crate) fn new(
        target: RedisTarget,
        timeouts: RedisTimeouts,
        max_connections: usize,
        idle_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(RedisPool {
            target,
            timeouts,
            idle: Mutex::new(VecDeque::new()),
            idle_timeout,
            permits: Arc::new(Semaphore::new(max_connections)),
        })
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, VecDeque<(RedisConnection, Instant)>> {
        // The lock is never held across a panic point that leaves the queue inconsistent.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Closes idle connections that have been unused for longer than the idle timeout; returns
    /// how many.
    pub(crate) fn expire_idle_now(&self) -> usize {
        let expired: Vec<RedisConnection> = {
            let mut idle = self.idle();
            let mut expired = Vec::new();
            while idle
                .front()
                .is_some_and(|(_, since)| since.elapsed() > self.idle_timeout)
            {
                if let Some((conn, _)) = idle.pop_front() {
                    expired.push(conn);
                }
            }
            expired
        };
        // Dropped outside the lock: closing a socket is a system call.
        expired.len()
    }

    pub(crate) fn target(&self) -> &RedisTarget {
        &self.target
    }

    pub(crate) fn timeouts(&self) -> RedisTimeouts {
        self.timeouts
    }

    /// Borrows a connection: an idle one that is still alive, or a new one.
    pub(crate) async fn get(self: &Arc<Self>) -> Result<PooledConnection, RedisError> {
        let permit = tokio::time::timeout(
            self.timeouts.pool_wait,
            Arc::clone(&self.permits).acquire_owned(),
        )
        .await
        .map_err(|_| RedisError::PoolExhausted(self.timeouts.pool_wait))?
        .expect("the pool's semaphore is never closed");
        self.expire_idle_now();
        // The most recently used first: it is the likeliest to be alive, and the others age out.
        let reusable = loop {
            let candidate = self.idle().pop_back();
            match candidate {
                Some((conn, _)) if conn.looks_alive() => break Some(conn),
                Some(_dead) => continue,
                None => break None,
            }
        };
        let conn = match reusable {
            Some(conn) => conn,
            None => RedisConnection::connect(&self.target, self.timeouts).await?,
        };
        Ok(PooledConnection {
            conn: Some(conn),
            pool: Arc::clone(self),
            clean: true,
            _permit: permit,
        })
    }
}

/// A borrowed connection; goes back to the pool on drop unless its state became uncertain.
#[derive(Debug)]
pub(crate) struct PooledConnection {
    conn: Option<RedisConnection>,
    pool: Arc<RedisPool>,
    /// Cleared while an exchange is in progress: a request cancelled or failed mid-exchange leaves
    /// replies unread, and such a connection must never be reused.
    clean: bool,
    _permit: OwnedSemaphorePermit,
}

impl PooledConnection {
    /// Sends `commands` pipelined and reads exactly one reply per command, within the command timeout.
    pub(crate) async fn exchange(
        &mut self,
        commands: &[Vec<Bytes>],
    ) -> Result<Vec<Reply>, RedisError> {
        let timeout = self.pool.timeouts.command;
        let conn = self.conn.as_mut().expect("connection present until drop");
        self.clean = false;
        let exchange = async {
            conn.send(commands).await?;
            let mut replies = Vec::with_capacity(commands.len());
            for _ in commands {
                replies.push(conn.read_reply().await?);
            }
            Ok::<_, RedisError>(replies)
        };
        let replies = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| RedisError::RedisTimeout(timeout))??;
        self.clean = true;
        Ok(replies)
    }
}

impl Drop for PooledConnection {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.clean
        {
            self.pool.idle().push_back((conn, Instant::now()));
        }
    }
}

/// Closes expired idle connections of `pool` every half idle timeout until shutdown, so that an
/// idle gateway does not hold connections either.
pub(crate) async fn expire_idle(pool: Arc<RedisPool>, mut shutdown: watch::Receiver<bool>) {
    let period = (pool.idle_timeout / 2).max(Duration::from_millis(10));
    loop {
        tokio::select! {
            () = tokio::time::sleep(period) => {
                let closed = pool.expire_idle_now();
                if closed > 0 {
                    tracing::debug!(closed, "closed idle redis connections");
                }
            }
            // A closed channel (the gateway handle dropped) ends the sweep too.
            _ = shutdown.wait_for(|stopped| *stopped) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_redis_urls() {
        let t = RedisTarget::parse("redis://127.0.0.1:6380").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.db, t.password.as_deref()),
            ("127.0.0.1", 6380, 0, None)
        );

        let t = RedisTarget::parse("redis://user:p%40ss@localhost/2").unwrap();
        assert_eq!(t.username.as_deref(), Some("user"));
        assert_eq!(t.password.as_deref(), Some("p@ss"));
        assert_eq!((t.port, t.db), (6379, 2));

        let t = RedisTarget::parse("redis://:secret@[::1]:7000").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.username.as_deref()),
            ("::1", 7000, None)
        );
        assert_eq!(t.addr(), "[::1]:7000");

        let t = RedisTarget::parse("localhost:6390").unwrap();
        assert_eq!(t.port, 6390);

        for bad in [
            "rediss://h:1",
            "http://h",
            "redis://:1",
            "redis://h:x",
            "redis://h/db",
        ] {
            assert!(RedisTarget::parse(bad).unwrap_err().is_config(), "{bad}");
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let t = RedisTarget::parse("redis://:hunter2@h:1").unwrap();
        assert!(!format!("{t:?}").contains("hunter2"));
    }
}
