#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, body::Body, extract::ConnectInfo, http::Request, response::Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, watch},
    time::Instant,
};

/// The limits [`serve`] applies. `Default` gives values for a public API server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerLimits {
    /// Time a connection has to deliver a complete request head: from accept for its first
    /// request, from the first byte of each later one. Default 10 s.
    pub header_read_timeout: Duration,
    /// Time a kept-alive connection may sit with no request in flight before it is closed.
    /// Default 75 s (nginx's `keepalive_timeout`): longer than the idle time of common client
    /// pools (cache-upstash's 60 s), so a client rarely reuses a connection the server is closing.
    pub idle_timeout: Duration,
    /// Connections open at once, upgraded WebSockets included. Default 10,000; keep it under the
    /// process's open-file limit.
    pub max_connections: usize,
}

/// The default [`ServerLimits::header_read_timeout`]: 10 s.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The default [`ServerLimits::idle_timeout`]: 75 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// The default [`ServerLimits::max_connections`]: 10,000.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl ServerLimits {
    /// Sets [`header_read_timeout`](Self::header_read_timeout).
    #[must_use]
    pub fn with_header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Sets [`idle_timeout`](Self::idle_timeout).
    #[must_use]
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`max_connections`](Self::max_connections).
    #[must_use]
    pub fn with_max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Checks that these limits can work, as [`serve`] does before it accepts anything, so a
    /// configuration can be refused at start-up, before a listener is bound.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidInput`] for the first setting that cannot work (a zero timeout or
    /// a zero cap), its message a sentence naming it.
    ///
    /// ```
    /// use serve_limits::ServerLimits;
    ///
    /// assert!(ServerLimits::default().check().is_ok());
    /// let err = ServerLimits::default().with_max_connections(0).check().unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    /// assert_eq!(err.to_string(), "the connection cap must be at least 1");
    /// ```
    pub fn check(&self) -> io::Result<()> {
        let invalid = |message: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        if self.header_read_timeout.is_zero() {
            return invalid("the header-read timeout must be more than zero");
        }
        if self.idle_timeout.is_zero() {
            return invalid("the idle timeout must be more than zero");
        }
        if self.max_connections == 0 {
            return invalid("the connection cap must be at least 1");
        }
        Ok(())
    }
}

/// Serves `app` on `listener` under `limits` until `shutdown` resolves; then stops accepting,
/// lets in-flight requests finish and returns once every connection is done (upgraded
/// connections are the application's to close).
///
/// HTTP/1.1 only, with upgrades (WebSockets). Every request carries
/// [`ConnectInfo<SocketAddr>`](axum::extract::ConnectInfo) with the peer's address. Each
/// connection runs on its own task (`tokio::spawn`), so this must be awaited inside a tokio
/// runtime.
///
/// # Errors
/// Only the error of [`ServerLimits::check`] ([`io::ErrorKind::InvalidInput`]), before anything
/// is accepted. Accept errors (out of file descriptors, say) are logged with `tracing` and
/// retried after a pause, as `axum::serve` does.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    limits.check()?;
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a receiver; `closed()` resolves once all are gone.
    let (done_tx, done_rx) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // never closed
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    if !is_connection_error(&err) {
                        tracing::error!(error = %err, "accept failed; retrying in 1 s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let stop = stop_rx.clone();
        let done = done_rx.clone();
        tokio::spawn(async move {
            serve_connection(stream, peer, permit, app, limits, stop).await;
            drop(done);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_rx);
    done_tx.closed().await;
    Ok(())
}

/// Errors of one connection that failed while being accepted; the listener itself is fine.
fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Why a connection was closed by a timer (logged at debug).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    HeaderRead,
    Idle,
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    app: Router,
    limits: ServerLimits,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(TrackedIo {
        inner: stream,
        activity: Arc::clone(&activity),
        _slot: permit,
    });
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let guard = activity.request_started();
            let mut app = app.clone();
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            async move {
                let response: Response = match tower_service::Service::call(&mut app, request).await
                {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(TrackedBody {
                        inner: body,
                        _guard: guard,
                    })
                }))
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The timers here replace hyper's (which would need its own Timer and measures idle and
    // header time as one).
    builder.header_read_timeout(None);
    let connection = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        let wake = activity.deadline(&limits);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(%peer, error = %err, "connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(wake) => {
                if let Some(expiry) = activity.expired(&limits, Instant::now()) {
                    // No request is in flight, so dropping the connection loses no response.
                    tracing::debug!(%peer, ?expiry, "closing connection");
                    return;
                }
            }
            _ = stop.wait_for(|stopped| *stopped), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// What a connection is doing, for its timers: requests in flight (from head parsed to response
/// body dropped), when it last became idle, and when the first byte after that arrived.
#[derive(Debug)]
struct Activity(Mutex<ActivityState>);

#[derive(Debug)]
struct ActivityState {
    in_flight: usize,
    idle_since: Instant,
    reading_since: Option<Instant>,
}

impl Activity {
    fn new() -> Self {
        let now = Instant::now();
        // A new connection is reading its first head from the start: one that opens and sends
        // nothing gets the header-read timeout, not the idle one.
        Activity(Mutex::new(ActivityState {
            in_flight: 0,
            idle_since: now,
            reading_since: Some(now),
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bytes_read(&self) {
        let mut state = self.state();
        if state.in_flight == 0 && state.reading_since.is_none() {
            state.reading_since = Some(Instant::now());
        }
    }

    fn request_started(self: &Arc<Self>) -> RequestGuard {
        let mut state = self.state();
        state.in_flight += 1;
        state.reading_since = None;
        RequestGuard(Arc::clone(self))
    }

    fn request_finished(&self) {
        let mut state = self.state();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            state.idle_since = Instant::now();
            state.reading_since = None;
        }
    }

    /// When to look again: the running timer's deadline, or (with a request in flight, when no
    /// timer runs) one idle timeout from now.
    fn deadline(&self, limits: &ServerLimits) -> Instant {
        let state = self.state();
        match (state.in_flight, state.reading_since) {
            (0, Some(since)) => since + limits.header_read_timeout,
            (0, None) => state.idle_since + limits.idle_timeout,
            _ => Instant::now() + limits.idle_timeout.min(limits.header_read_timeout),
        }
    }

    fn expired(&self, limits: &ServerLimits, now: Instant) -> Option<Expiry> {
        let state = self.state();
        match (state.in_flight, state.reading_since) {
            (0, Some(since)) if now >= since + limits.header_read_timeout => {
                Some(Expiry::HeaderRead)
            }
            (0, None) if now >= state.idle_since + limits.idle_timeout => Some(Expiry::Idle),
            _ => None,
        }
    }
}

/// Marks one request in flight until dropped with its response body.
struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// A response body that keeps its request counted as in flight until hyper drops it (sent in
/// full, or the connection gone).
struct TrackedBody {
    inner: Body,
    _guard: RequestGuard,
}

impl http_body::Body for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, noting when bytes arrive and holding the connection's slot under the cap for as
/// long as the socket lives (an upgraded WebSocket keeps it too).
struct TrackedIo {
    inner: TcpStream,
    activity: Arc<Activity>,
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        poll
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
