//! Test fixtures (feature `testing`): a real `redis-server` on a free loopback port, and that
//! server behind an in-process gateway.
//!
//! ```no_run
//! # async fn demo() {
//! use upstash_gateway::testing::TestGateway;
//! let env = TestGateway::start().await;
//! // point a client at env.url() with env.token() …
//! env.redis().kill();    // outage
//! env.redis().restart(); // same port, empty data
//! # }
//! ```
//!
//! Tests must not pass silently without Redis: when `redis-server` cannot be found these panic
//! with instructions. Set `REDIS_SERVER=/path/to/redis-server` to use a binary off `PATH`.

use std::{
    fmt,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::{FaultHandle, GatewayBuilder, RunningGateway, Secret};

/// How long a started `redis-server` may take to answer PING.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` child process on `127.0.0.1:<free port>`, with persistence off. Killed on drop.
pub struct RedisServer {
    binary: PathBuf,
    port: u16,
    child: Mutex<Option<Child>>,
}

impl fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl RedisServer {
    /// Starts `redis-server` on a free port and waits until it answers PING.
    ///
    /// # Panics
    /// If `redis-server` is not installed, or does not come up within 10 s.
    pub fn start() -> RedisServer {
        let binary = find_redis_server();
        let mut last_error = String::new();
        // Another process can take the port between our probe and redis binding it: retry.
        for _ in 0..5 {
            let port = free_port();
            let server = RedisServer {
                binary: binary.clone(),
                port,
                child: Mutex::new(None),
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(err) => last_error = err,
            }
        }
        panic!("could not start redis-server: {last_error}");
    }

    /// The port it listens on (kept across [`restart`](Self::restart)).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it to exit. Connections to it break at once.
    pub fn kill(&self) {
        if let Some(mut child) = self.lock().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (killing it first if it still runs). Data is gone: the
    /// fixture runs without persistence.
    ///
    /// # Panics
    /// If it does not come back within 10 s (for example because the port was taken meanwhile).
    pub fn restart(&self) {
        self.kill();
        if let Err(err) = self.spawn() {
            panic!(
                "could not restart redis-server on port {}: {err}",
                self.port
            );
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing is answered, like a hung
    /// or partitioned server. Requests through the gateway then time out. Undo with
    /// [`thaw`](Self::thaw); [`kill`](Self::kill) works on a frozen server too.
    ///
    /// # Panics
    /// If the server is not running or the signal cannot be sent (Unix `kill` is used).
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Resumes a server stopped by [`freeze`](Self::freeze) (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self
            .lock()
            .as_ref()
            .map(Child::id)
            .expect("redis-server is not running");
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("run `kill` to signal redis-server");
        assert!(status.success(), "kill {signal} {pid} failed: {status}");
    }

    /// Whether the process is still running.
    pub fn is_running(&self) -> bool {
        match self.lock().as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends one command and returns the raw RESP reply, for tests that want to look at Redis
    /// directly (for example to check what a gateway request stored).
    ///
    /// # Panics
    /// If Redis cannot be reached.
    pub fn raw_command(&self, args: &[&[u8]]) -> Vec<u8> {
        let mut stream = TcpStream::connect(self.addr()).expect("connect to redis-server");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("set timeout");
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg);
            request.extend_from_slice(b"\r\n");
        }
        stream.write_all(&request).expect("write to redis-server");
        let mut buf = bytes::BytesMut::new();
        let mut chunk = [0u8; 4096];
        loop {
            let mut probe = buf.clone();
            if crate::resp::parse_reply(&mut probe)
                .expect("valid RESP from redis-server")
                .is_some()
            {
                return buf[..buf.len() - probe.len()].to_vec();
            }
            let n = stream.read(&mut chunk).expect("read from redis-server");
            assert!(n > 0, "redis-server closed the connection");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn spawn(&self) -> Result<(), String> {
        let port = self.port.to_string();
        let mut child = Command::new(&self.binary)
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            // Nothing is persisted, but redis still wants a writable working directory.
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|err| format!("spawning {}: {err}", self.binary.display()))?;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "redis-server exited with {status} (port {port} taken?)"
                ));
            }
            if answers_ping(self.addr()) {
                *self.lock() = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "redis-server did not answer PING on port {port} within {STARTUP_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn answers_ping(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}

/// `$REDIS_SERVER`, else `redis-server` on `PATH`.
fn find_redis_server() -> PathBuf {
    if let Some(path) = std::env::var_os("REDIS_SERVER") {
        return PathBuf::from(path);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("redis-server"))
            .find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "\n\n==== redis-server not found ====\n\
             These tests need a real Redis server binary and will not pass without one.\n\
             Install it:  Debian/Ubuntu: sudo apt-get install redis-server\n\
             \x20            macOS:         brew install redis\n\
             or set REDIS_SERVER=/path/to/redis-server.\n\
             ================================\n"
        )
    })
}

/// A random token of 32 alphanumeric characters.
pub fn random_token() -> String {
    std::iter::repeat_with(fastrand::alphanumeric)
        .take(32)
        .collect()
}

/// A [`RedisServer`] behind an in-process gateway on a free port, with a random token.
#[derive(Debug)]
pub struct TestGateway {
    gateway: Option<RunningGateway>,
    token: Secret,
    redis: RedisServer,
}

impl TestGateway {
    /// Redis + gateway with the defaults, except short timeouts (2 s to Redis, 1 s connect) so
    /// outage tests finish quickly.
    pub async fn start() -> TestGateway {
        Self::start_with(|builder| builder).await
    }

    /// Like [`start`](Self::start), with the builder adjusted by `configure` (for a read-only
    /// token, fault injection, limits…). The Redis URL, token and bind address are already set.
    pub async fn start_with(
        configure: impl FnOnce(GatewayBuilder) -> GatewayBuilder,
    ) -> TestGateway {
        let redis = RedisServer::start();
        let token = random_token();
        let builder = crate::Gateway::builder()
            .redis_url(redis.url())
            .token(token.clone())
            .bind("127.0.0.1:0")
            .connect_timeout(Duration::from_secs(1))
            .redis_timeout(Duration::from_secs(2))
            .pool_wait(Duration::from_secs(2));
        let gateway = configure(builder)
            .start()
            .await
            .expect("start the in-process gateway");
        TestGateway {
            gateway: Some(gateway),
            token: Secret::new(token),
            redis,
        }
    }

    /// `http://127.0.0.1:<port>`: the `UPSTASH_REDIS_REST_URL`.
    pub fn url(&self) -> String {
        self.gateway().url()
    }

    /// The REST token: the `UPSTASH_REDIS_REST_TOKEN`.
    pub fn token(&self) -> &str {
        self.token.expose()
    }

    /// The Redis server behind it (kill, restart, inspect).
    pub fn redis(&self) -> &RedisServer {
        &self.redis
    }

    /// The running gateway.
    pub fn gateway(&self) -> &RunningGateway {
        self.gateway
            .as_ref()
            .expect("gateway present until shutdown")
    }

    /// Fault and latency injection of the gateway.
    pub fn faults(&self) -> &FaultHandle {
        self.gateway().faults()
    }

    /// Shuts the gateway down gracefully, then kills Redis.
    pub async fn shutdown(mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown().await;
        }
    }
}
