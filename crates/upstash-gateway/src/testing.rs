//! Test fixtures (feature `testing`): a real `redis-server` on a free loopback port, that server
//! behind an in-process gateway, and a TCP proxy that can partition a client from a server.
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
//! Outage tests that check no stale entry survives an outage need the stale entry to survive in
//! Redis, or they pass even when the code under test does nothing: use
//! [`RedisServer::start_persistent`] (a restart keeps the data) or put a [`TcpProxy`] between the
//! client and the gateway (a partition drops the client's requests while Redis keeps its data).
//!
//! Tests must not pass silently without Redis: when `redis-server` cannot be found these panic
//! with instructions. Set `REDIS_SERVER=/path/to/redis-server` to use a binary off `PATH`.

use std::{
    fmt,
    io::{Read, Write},
    net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{FaultHandle, GatewayBuilder, RunningGateway, auth::Secret};

/// How long a started `redis-server` may take to answer PING.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` child process on `127.0.0.1:<free port>`, with persistence off unless started
/// with [`start_persistent`](Self::start_persistent). Killed on drop.
pub struct RedisServer {
    binary: PathBuf,
    port: u16,
    child: Mutex<Option<Child>>,
    // `Some` when persistent: the append-only file lives here, removed on drop.
    data_dir: Option<PathBuf>,
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
        RedisServer::start_inner(false)
    }

    /// Like [`start`](Self::start), but every write goes to an append-only file (fsynced before
    /// the reply) in a fresh directory, so [`kill`](Self::kill) + [`restart`](Self::restart)
    /// comes back with the data it had: an outage after which stale entries are still there.
    ///
    /// # Panics
    /// As [`start`](Self::start), or if the data directory cannot be created.
    pub fn start_persistent() -> RedisServer {
        RedisServer::start_inner(true)
    }

    fn start_inner(persistent: bool) -> RedisServer {
        let binary = find_redis_server();
        let mut last_error = String::new();
        // Another process can take the port between our probe and redis binding it: retry.
        for _ in 0..5 {
            let port = free_port();
            let data_dir = persistent.then(|| {
                let dir = std::env::temp_dir().join(format!(
                    "upstash-gateway-redis-{}-{port}-{}",
                    std::process::id(),
                    random_token()
                ));
                std::fs::create_dir_all(&dir).expect("create the redis data directory");
                dir
            });
            let server = RedisServer {
                binary: binary.clone(),
                port,
                child: Mutex::new(None),
                data_dir,
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(err) => last_error = err,
            }
        }
        panic!("could not start redis-server: {last_error}");
    }

    /// Whether a restart keeps the data (see [`start_persistent`](Self::start_persistent)).
    pub fn is_persistent(&self) -> bool {
        self.data_dir.is_some()
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

    /// Starts it again on the same port (killing it first if it still runs). Data is gone unless
    /// the server was started with [`start_persistent`](Self::start_persistent).
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
    /// server. Requests through the gateway then time out. Undo with [`thaw`](Self::thaw);
    /// [`kill`](Self::kill) works on a frozen server too.
    ///
    /// Not a partition: commands sent meanwhile wait in the socket buffer and run on thaw. To
    /// lose them, use a [`TcpProxy`].
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
        let mut command = Command::new(&self.binary);
        command.args(["--port", &port, "--bind", "127.0.0.1", "--save", ""]);
        match &self.data_dir {
            // `always`: a SIGKILL right after a reply loses nothing that reply acknowledged.
            Some(dir) => command
                .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                .arg(dir),
            // Nothing is persisted, but redis still wants a writable working directory.
            None => command
                .args(["--appendonly", "no", "--dir"])
                .arg(std::env::temp_dir()),
        };
        let mut child = command
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
        if let Some(dir) = &self.data_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
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
        Self::start_on(RedisServer::start(), configure).await
    }

    /// Like [`start_with`](Self::start_with), in front of `redis` (for example a
    /// [`RedisServer::start_persistent`] one).
    pub async fn start_on(
        redis: RedisServer,
        configure: impl FnOnce(GatewayBuilder) -> GatewayBuilder,
    ) -> TestGateway {
        let token = random_token();
        let builder = crate::Gateway::builder()
            .redis_url(redis.url())
            .token(token.clone())
            .bind("127.0.0.1:0")
            .connect_timeout(Duration::from_secs(1))
            .redis_timeout(Duration::from_secs(2))
            .pool_wait_timeout(Duration::from_secs(2));
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

/// What a [`TcpProxy`] does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProxyMode {
    Forward,
    // Accepted and held open, never read or answered: requests vanish and clients time out.
    Blackhole,
    // Accepted and closed at once: clients fail fast, as against a dead server.
    Refuse,
}

/// A TCP forwarder on `127.0.0.1:<free port>` in front of `target`, that can cut the path.
///
/// Unlike [`RedisServer::freeze`], where commands wait in a socket buffer and run on thaw, a
/// [`partition`](Self::partition) loses them: every live connection is closed and nothing sent
/// after the call reaches `target` until [`heal`](Self::heal). The server behind keeps its data,
/// so a test can check that what it missed meanwhile is made up for by the client.
///
/// ```no_run
/// # async fn demo() {
/// use upstash_gateway::testing::{TcpProxy, TestGateway};
/// let env = TestGateway::start().await;
/// let proxy = TcpProxy::start(env.gateway().addr());
/// // point a client at proxy.url() with env.token() …
/// proxy.partition(); // requests hang, then time out; none reaches the gateway
/// proxy.heal();
/// # }
/// ```
pub struct TcpProxy {
    addr: SocketAddr,
    shared: Arc<ProxyShared>,
    acceptor: Option<JoinHandle<()>>,
}

struct ProxyShared {
    target: SocketAddr,
    state: Mutex<ProxyState>,
    forwarded: AtomicU64,
}

struct ProxyState {
    mode: ProxyMode,
    // Bumped by every cut: a connection set up under an older generation is not forwarded.
    generation: u64,
    next_id: u64,
    // Both ends of every forwarded connection, by id, so a cut can shut them down.
    live: std::collections::HashMap<u64, TcpStream>,
    // Blackholed connections, kept open until healed.
    held: Vec<TcpStream>,
    stopping: bool,
}

impl fmt::Debug for TcpProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpProxy")
            .field("addr", &self.addr)
            .field("target", &self.shared.target)
            .field("mode", &self.shared.lock().mode)
            .finish_non_exhaustive()
    }
}

impl TcpProxy {
    /// Starts forwarding `127.0.0.1:<free port>` to `target`.
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub fn start(target: SocketAddr) -> TcpProxy {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the proxy on 127.0.0.1");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(ProxyShared {
            target,
            state: Mutex::new(ProxyState {
                mode: ProxyMode::Forward,
                generation: 0,
                next_id: 0,
                live: std::collections::HashMap::new(),
                held: Vec::new(),
                stopping: false,
            }),
            forwarded: AtomicU64::new(0),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("tcp-proxy-accept".into())
                .spawn(move || accept_loop(&listener, &shared))
                .expect("spawn the proxy thread")
        };
        TcpProxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`: the URL to give an HTTP client instead of the target's.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections forwarded to the target so far: proof that a client really goes through.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::Relaxed)
    }

    /// A network partition: closes every live connection, and accepts new ones without ever
    /// forwarding or answering them, so clients time out. Nothing sent after this call reaches
    /// the target.
    pub fn partition(&self) {
        self.shared.cut(ProxyMode::Blackhole);
    }

    /// The target gone: closes every live connection, and closes new ones at once, so clients
    /// fail fast. Nothing sent after this call reaches the target.
    pub fn refuse(&self) {
        self.shared.cut(ProxyMode::Refuse);
    }

    /// Forwards again; connections held by a [`partition`](Self::partition) are closed.
    pub fn heal(&self) {
        let held = {
            let mut state = self.shared.lock();
            state.mode = ProxyMode::Forward;
            std::mem::take(&mut state.held)
        };
        for stream in held {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared.cut(ProxyMode::Refuse);
        self.shared.lock().stopping = true;
        // Wake the blocking accept so the thread sees `stopping`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

impl ProxyShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, ProxyState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn cut(&self, mode: ProxyMode) {
        let (live, held) = {
            let mut state = self.lock();
            state.mode = mode;
            state.generation += 1;
            let held = if mode == ProxyMode::Blackhole {
                Vec::new()
            } else {
                std::mem::take(&mut state.held)
            };
            (std::mem::take(&mut state.live), held)
        };
        // Shut down both ends: pumps blocked in `read` return, and a pump that already read a
        // chunk fails to write it.
        for stream in live.into_values().chain(held) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<ProxyShared>) {
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let (mode, generation) = {
            let mut state = shared.lock();
            if state.stopping {
                return;
            }
            if state.mode == ProxyMode::Blackhole {
                state.held.push(client);
                continue;
            }
            (state.mode, state.generation)
        };
        if mode == ProxyMode::Refuse {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(upstream) = TcpStream::connect_timeout(&shared.target, Duration::from_secs(1))
        else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let (Ok(client_half), Ok(upstream_half)) = (client.try_clone(), upstream.try_clone())
        else {
            continue;
        };
        // Registered under the lock only if no cut happened since the accept.
        let mut state = shared.lock();
        if state.generation != generation || state.mode != ProxyMode::Forward {
            drop(state);
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
            continue;
        }
        let (client_id, upstream_id) = (state.next_id, state.next_id + 1);
        state.next_id += 2;
        let registered = client
            .try_clone()
            .and_then(|c| Ok((c, upstream.try_clone()?)));
        let Ok((client_ref, upstream_ref)) = registered else {
            continue;
        };
        state.live.insert(client_id, client_ref);
        state.live.insert(upstream_id, upstream_ref);
        drop(state);
        shared.forwarded.fetch_add(1, Ordering::Relaxed);
        for (from, to, id) in [
            (client, upstream_half, client_id),
            (upstream, client_half, upstream_id),
        ] {
            let shared = Arc::clone(shared);
            std::thread::Builder::new()
                .name("tcp-proxy-pump".into())
                .spawn(move || pump(from, to, id, generation, &shared))
                .expect("spawn a proxy thread");
        }
    }
}

/// Copies `from` to `to` until either side closes or a cut happens.
fn pump(mut from: TcpStream, mut to: TcpStream, id: u64, generation: u64, shared: &ProxyShared) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if shared.lock().generation != generation || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    shared.lock().live.remove(&id);
}
