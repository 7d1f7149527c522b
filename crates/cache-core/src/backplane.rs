//! The backplane: invalidation notices (not values) between instances that share an L2, plus an
//! ordered channel for application messages (chat events) on the same bus.
//!
//! Two layers:
//!
//! - [`BackplaneTransport`], the small object-safe trait a pub/sub system implements: publish a
//!   batch of opaque messages in order, and deliver what arrives as [`TransportEvent`]s
//!   (`Connected`, `Message`, `Interrupted`). [`LocalTransport`] is the in-process one (tests,
//!   several caches in one process); cache-upstash implements it over Upstash's `PUBLISH` and SSE
//!   `/subscribe`.
//! - [`Backplane`], the bus of one instance over a transport: it frames every message as an
//!   envelope with a format version, this instance's id and a per-instance sequence number,
//!   publishes from one ordered outbox (batched, retried, bounded), drops its own messages on
//!   receipt, and turns an interruption or a sequence gap into a reset of everything that relied
//!   on the bus (L1 of an attached [`TieredBackend`](crate::TieredBackend), and
//!   [`AppMessage::Resync`] for application subscribers).
//!
//! # Rules
//!
//! - A notice is published only after the L2 write or invalidation it announces succeeded; one that
//!   could not reach L2 is replayed first and announced after.
//! - Receivers apply notices to L1 only: the sender already wrote L2.
//! - An instance ignores its own messages (but uses their echo as a liveness probe of its
//!   subscription).
//! - While the bus is connected, L1 keeps entries for their whole TTL; while it is not, L1 falls
//!   back to the short cap of [`TieredConfig::l1_max_ttl`](crate::TieredConfig::l1_max_ttl).
//! - After an interruption or a detected gap, L1 is reset, so nothing a missed notice would have
//!   removed survives.
//! - Messages of one instance arrive in the order it published them; application messages are
//!   delivered after the cache notices published before them were applied.
//! - An application message is sent once or not at all: one whose publish attempt failed is
//!   dropped, not retried (late, it could overtake nothing but be overtaken by other senders'
//!   newer messages), and the hole it leaves in the sequence makes receivers resync.
//!
//! # States and resets
//!
//! A backplane starts `Connecting`. When the transport reports `Connected` it publishes a probe
//! heartbeat and becomes `Connected` once it hears that probe's echo: only then has the whole path
//! (publish, server, subscription) been shown to work. An `Interrupted` event, a subscription that
//! ended, or no message at all for [`BackplaneConfig::silence_timeout`] (its own heartbeats
//! included; the subscription is then replaced) makes it `Disconnected`. A *reset* clears the L1
//! of every attached tiered cache and sends [`AppMessage::Resync`] to application subscribers; it
//! happens on every move to `Disconnected`, on every detected gap, and again on every move back to
//! `Connected` (what was published in between is lost; the first connection resets L1 only).
//!
//! A heartbeat goes out whenever nothing else was published for [`BackplaneConfig::heartbeat`],
//! so receivers detect a gap even in quiet times and each instance keeps hearing itself.
//!
//! # Wire format (version 1)
//!
//! Every message is one JSON object, fields in this order:
//!
//! ```text
//! {"v":1,"from":"<instance id>","seq":<n>,"sent":<µs since the epoch>,"body":<body>}
//! ```
//!
//! - `v`: [`ENVELOPE_VERSION`]. A receiver checks it first and drops (counts as `rejected`)
//!   anything else, so a future format never gets half-read.
//! - `from`: the sender's instance id (16 hex digits, random per start).
//! - `seq`: 1, 2, 3, … per instance, in publish order. A receiver that sees `seq` jump by more than
//!   one for a known sender has lost messages (a gap), and ignores a `seq` it has already seen (a
//!   batch published again after a timed-out attempt that had reached the server); the first message of a sender it does not
//!   know (new, or forgotten after an interruption) is not a gap.
//! - `sent`: the sender's clock when it queued the message (for the lag statistic only).
//! - `body`, one of:
//!   - `{"t":["<tag>",…],"at":<µs>}`: invalidate these tags at this stamp (tags as stored, e.g.
//!     `chat:v1:#channel:42`);
//!   - `{"k":["<key>",…]}`: these keys changed or were deleted (keys as stored);
//!   - `"hb"`: a heartbeat;
//!   - `{"a":"<text>"}`: an application payload that is UTF-8 (JSON events are), as a JSON string;
//!   - `{"x":"<hex>"}`: any other application payload, in lowercase hex.
//!
//! Anything else (not JSON, missing fields, a key or tag that does not parse, extra body fields)
//! is rejected and counted, never a panic. The format is pinned by a golden test.
//!
//! # Clock skew
//!
//! Tag stamps and entry times come from each host's clock, so the stale-fill protection (an entry
//! is rejected if a stamp of its tags is at or after its `created_at`) compares times of
//! different hosts. Give every instance's caches and backplane one
//! [`OffsetClock`](crate::OffsetClock) kept in step with a shared reference (cache-upstash
//! measures the offset against Redis's `TIME`): hosts then agree up to the measurement error,
//! at most half the round trip of the `TIME` call, and a fill whose data was read more than that
//! before an invalidation is rejected everywhere. With raw wall clocks, a writer whose clock runs
//! `d` ahead can keep data read up to `d` before an invalidation. Key notices (sets and deletes)
//! and resets do not depend on clocks at all: they remove L1 copies outright, and a per-key epoch
//! keeps racing fills out.

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::{
    sync::{Notify, broadcast, mpsc, oneshot, watch},
    task::JoinHandle,
    time::Instant,
};

use crate::{
    error::{Error, Result},
    key::{Key, Tag},
    time::{Clock, Timestamp},
};

/// The envelope format version. Receivers drop (and count) messages of any other version.
pub const ENVELOPE_VERSION: u32 = 1;

/// What a transport reports to the [`Backplane`] over it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportEvent {
    /// The subscription is established (again): messages published from now on arrive.
    Connected,
    /// One message, as published.
    Message(Bytes),
    /// The subscription broke: messages may have been lost until the next `Connected`.
    Interrupted,
}

/// A pub/sub system that carries a [`Backplane`]'s messages between instances.
#[async_trait]
pub trait BackplaneTransport: Send + Sync + fmt::Debug + 'static {
    /// A short name for logs and stats (`local`, `upstash`).
    fn name(&self) -> &'static str;

    /// Publishes `messages`, in this order, to every subscriber (this instance's own included).
    /// `Ok` once the transport accepted all of them.
    async fn publish(&self, messages: &[Bytes]) -> Result<()>;

    /// Starts a subscription. Events arrive on the receiver until it is dropped, beginning with
    /// `Connected` once messages can arrive; the transport reconnects on its own and reports every
    /// break as `Interrupted`.
    fn subscribe(&self) -> mpsc::Receiver<TransportEvent>;
}

/// A shared transport.
pub type DynTransport = Arc<dyn BackplaneTransport>;

/// The in-process transport: every [`Backplane`] started on a clone of one `LocalTransport` hears
/// the others. Tests can interrupt it, take it down and lose messages on purpose.
///
/// Each subscriber has a buffer of 4,096 events; a subscriber that falls that far
/// behind loses messages, as on a real pub/sub system (its `Backplane` sees the gap).
#[derive(Debug, Clone, Default)]
pub struct LocalTransport {
    bus: Arc<Mutex<LocalBus>>,
}

/// Events a [`LocalTransport`] subscriber may have waiting before it loses messages.
const LOCAL_BUFFER: usize = 4096;

#[derive(Debug, Default)]
struct LocalBus {
    subscribers: Vec<mpsc::Sender<TransportEvent>>,
    down: bool,
    publish_failing: bool,
    lose: usize,
}

impl LocalBus {
    fn broadcast(&mut self, event: &TransportEvent) {
        self.subscribers.retain(|tx| {
            !matches!(
                tx.try_send(event.clone()),
                Err(mpsc::error::TrySendError::Closed(_))
            )
        });
    }
}

impl LocalTransport {
    /// A new, empty bus.
    pub fn new() -> Self {
        LocalTransport::default()
    }

    fn bus(&self) -> std::sync::MutexGuard<'_, LocalBus> {
        // The bus holds no invariant a panicking holder could break half-way.
        self.bus
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every subscriber gets `Interrupted`, then `Connected`.
    pub fn interrupt(&self) {
        let mut bus = self.bus();
        bus.broadcast(&TransportEvent::Interrupted);
        if !bus.down {
            bus.broadcast(&TransportEvent::Connected);
        }
    }

    /// While down, `publish` fails and subscribers are `Interrupted`; back up, they get
    /// `Connected`.
    pub fn set_down(&self, down: bool) {
        let mut bus = self.bus();
        if down != bus.down {
            bus.down = down;
            bus.broadcast(if down {
                &TransportEvent::Interrupted
            } else {
                &TransportEvent::Connected
            });
        }
    }

    /// While set, `publish` fails but subscriptions stay up (a server that refuses `PUBLISH` while
    /// its open streams keep flowing).
    pub fn set_publish_failing(&self, failing: bool) {
        self.bus().publish_failing = failing;
    }

    /// The next `n` published messages reach no subscriber (but `publish` succeeds): a gap.
    pub fn lose_next(&self, n: usize) {
        self.bus().lose += n;
    }

    /// Subscriptions whose receiver is still alive (a stopped [`Backplane`] has none).
    pub fn subscriber_count(&self) -> usize {
        let mut bus = self.bus();
        bus.subscribers.retain(|tx| !tx.is_closed());
        bus.subscribers.len()
    }
}

#[async_trait]
impl BackplaneTransport for LocalTransport {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn publish(&self, messages: &[Bytes]) -> Result<()> {
        let mut bus = self.bus();
        if bus.down || bus.publish_failing {
            return Err(Error::backend("local", "the local transport is down", None));
        }
        for message in messages {
            if bus.lose > 0 {
                bus.lose -= 1;
                continue;
            }
            bus.broadcast(&TransportEvent::Message(message.clone()));
        }
        Ok(())
    }

    fn subscribe(&self) -> mpsc::Receiver<TransportEvent> {
        let (tx, rx) = mpsc::channel(LOCAL_BUFFER);
        let mut bus = self.bus();
        if !bus.down {
            let _ = tx.try_send(TransportEvent::Connected);
        }
        bus.subscribers.push(tx);
        rx
    }
}

/// Settings of a [`Backplane`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BackplaneConfig {
    /// How often an instance publishes a heartbeat (its sequence number), so receivers see a gap
    /// even when nothing else is published, and it sees its own subscription is alive
    /// (default 5 s).
    pub heartbeat: Duration,
    /// Without any message (its own heartbeat's echo included) for this long, the subscription
    /// counts as broken (default 3 heartbeats).
    pub silence_timeout: Duration,
    /// How long `publish_invalidation` waits for the transport (default 500 ms); the message
    /// stays queued after that.
    pub publish_timeout: Duration,
    /// Most messages queued while the transport fails; beyond that the oldest are dropped (their
    /// receivers see a gap and reset) (default 10,000).
    pub max_queued: usize,
}

impl Default for BackplaneConfig {
    fn default() -> Self {
        BackplaneConfig {
            heartbeat: Duration::from_secs(5),
            silence_timeout: Duration::from_secs(15),
            publish_timeout: Duration::from_millis(500),
            max_queued: 10_000,
        }
    }
}

/// Whether the bus can be relied on now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BackplaneState {
    /// Not yet subscribed.
    Connecting,
    /// Subscribed and hearing its own heartbeats.
    Connected,
    /// The subscription broke or went silent; reconnecting.
    Disconnected,
}

/// An invalidation notice: what one instance changed on L2, for the others to drop from L1.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// Entries of these tags created before `at` are invalid.
    InvalidateTags {
        /// The tags.
        tags: Vec<Tag>,
        /// The stamp, as written to L2.
        at: Timestamp,
    },
    /// These keys were overwritten or deleted on L2.
    DeleteKeys(Vec<Key>),
}

/// What application subscribers receive.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AppMessage {
    /// An application message another instance published.
    Message {
        /// The sender's instance id.
        origin: Arc<str>,
        /// The payload, as published.
        payload: Bytes,
    },
    /// Messages may have been lost (interruption or gap): whatever was derived from them should
    /// be refetched.
    Resync,
}

/// Counters of a [`Backplane`].
#[derive(Debug, Clone, Default, serde::Serialize)]
#[non_exhaustive]
pub struct BackplaneStats {
    /// The transport's name.
    pub transport: String,
    /// Connected now.
    pub connected: bool,
    /// Messages this instance published (heartbeats included).
    pub published: u64,
    /// Failed publish attempts (notices stay queued; application messages are dropped).
    pub publish_errors: u64,
    /// Messages dropped unsent: the oldest of a full queue, and application messages of a
    /// failed publish attempt (not retried, so they cannot arrive out of order).
    pub dropped: u64,
    /// Messages queued now.
    pub queued: u64,
    /// Messages received from other instances and handled (notices applied).
    pub received: u64,
    /// Malformed, foreign-version or duplicate (an earlier sequence number of a known sender)
    /// messages ignored.
    pub rejected: u64,
    /// Sequence gaps detected.
    pub gaps: u64,
    /// Interruptions (each followed by a reset).
    pub interruptions: u64,
    /// Resets of L1 and application subscribers.
    pub resets: u64,
    /// Time from publish to receipt of the last message from another instance, in microseconds
    /// (by the two hosts' clocks).
    pub last_lag_micros: Option<u64>,
}

// ---------------------------------------------------------------------------------------------
// The envelope.

/// What an envelope carries.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Body {
    Notice(Notice),
    Heartbeat,
    App(Bytes),
}

/// One message on the bus, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Envelope {
    from: Arc<str>,
    seq: u64,
    sent: Timestamp,
    body: Body,
}

#[derive(serde::Serialize)]
struct WireOut<'a> {
    v: u32,
    from: &'a str,
    seq: u64,
    sent: u64,
    body: BodyOut<'a>,
}

#[derive(serde::Serialize)]
#[serde(untagged)]
enum BodyOut<'a> {
    Tags { t: Vec<&'a str>, at: u64 },
    Keys { k: Vec<&'a str> },
    Heartbeat(&'static str),
    Text { a: &'a str },
    Binary { x: String },
}

#[derive(serde::Deserialize)]
struct WireIn {
    from: String,
    seq: u64,
    sent: u64,
    body: serde_json::Value,
}

/// The longest instance id a receiver accepts.
const MAX_ID_LEN: usize = 128;

const HEARTBEAT: &str = "hb";

fn encode(from: &str, seq: u64, sent: Timestamp, body: &Body) -> Bytes {
    let body = match body {
        Body::Notice(Notice::InvalidateTags { tags, at }) => BodyOut::Tags {
            t: tags.iter().map(Tag::as_str).collect(),
            at: at.as_micros(),
        },
        Body::Notice(Notice::DeleteKeys(keys)) => BodyOut::Keys {
            k: keys.iter().map(Key::as_str).collect(),
        },
        Body::Heartbeat => BodyOut::Heartbeat(HEARTBEAT),
        Body::App(payload) => match std::str::from_utf8(payload) {
            Ok(text) => BodyOut::Text { a: text },
            Err(_) => BodyOut::Binary { x: hex(payload) },
        },
    };
    let wire = WireOut {
        v: ENVELOPE_VERSION,
        from,
        seq,
        sent: sent.as_micros(),
        body,
    };
    // Strings, integers and sequences of strings cannot fail to serialize.
    Bytes::from(serde_json::to_vec(&wire).unwrap_or_default())
}

/// Why a message was ignored (for the debug log; never contains the payload).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reject {
    Version(Option<u64>),
    Malformed(String),
}

fn malformed(what: impl fmt::Display) -> Reject {
    Reject::Malformed(what.to_string())
}

fn decode(bytes: &[u8]) -> std::result::Result<Envelope, Reject> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(malformed)?;
    let version = value.get("v").and_then(serde_json::Value::as_u64);
    if version != Some(u64::from(ENVELOPE_VERSION)) {
        return Err(Reject::Version(version));
    }
    let wire: WireIn = serde_json::from_value(value).map_err(malformed)?;
    if wire.from.is_empty() || wire.from.len() > MAX_ID_LEN {
        return Err(malformed("instance id of a bad length"));
    }
    let body = decode_body(&wire.body)?;
    Ok(Envelope {
        from: wire.from.into(),
        seq: wire.seq,
        sent: Timestamp::from_micros(wire.sent),
        body,
    })
}

fn strings(value: &serde_json::Value) -> std::result::Result<Vec<&str>, Reject> {
    value
        .as_array()
        .ok_or_else(|| malformed("expected an array"))?
        .iter()
        .map(|v| v.as_str().ok_or_else(|| malformed("expected a string")))
        .collect()
}

fn decode_body(body: &serde_json::Value) -> std::result::Result<Body, Reject> {
    if body.as_str() == Some(HEARTBEAT) {
        return Ok(Body::Heartbeat);
    }
    let object = body.as_object().ok_or_else(|| malformed("unknown body"))?;
    let one = |name: &str| (object.len() == 1).then(|| object.get(name)).flatten();
    if let (Some(t), Some(at), 2) = (object.get("t"), object.get("at"), object.len()) {
        let tags = strings(t)?
            .into_iter()
            .map(|t| Tag::parse(t).map_err(malformed))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let at = at.as_u64().ok_or_else(|| malformed("bad stamp"))?;
        return Ok(Body::Notice(Notice::InvalidateTags {
            tags,
            at: Timestamp::from_micros(at),
        }));
    }
    if let Some(k) = one("k") {
        let keys = strings(k)?
            .into_iter()
            .map(|k| Key::from_stored(k).map_err(malformed))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        return Ok(Body::Notice(Notice::DeleteKeys(keys)));
    }
    if let Some(a) = one("a") {
        let text = a.as_str().ok_or_else(|| malformed("bad text payload"))?;
        return Ok(Body::App(Bytes::copy_from_slice(text.as_bytes())));
    }
    if let Some(x) = one("x") {
        let text = x.as_str().ok_or_else(|| malformed("bad binary payload"))?;
        return unhex(text)
            .map(|b| Body::App(Bytes::from(b)))
            .ok_or_else(|| malformed("bad hex"));
    }
    Err(malformed("unknown body"))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    text.as_bytes()
        .chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The bus.

/// Where a [`Backplane`] delivers cache notices: the L1 of a tiered cache.
#[async_trait]
pub(crate) trait NoticeSink: Send + Sync + 'static {
    /// Applies another instance's notice.
    async fn apply(&self, notice: &Notice);
    /// Drops everything that a missed notice could have made stale.
    async fn reset(&self);
}

/// Messages handed to the transport in one `publish` call at most.
const MAX_BATCH: usize = 256;
/// App messages a slow subscriber may fall behind before it sees `Lagged`.
const APP_BUFFER: usize = 4096;

#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    publish_errors: AtomicU64,
    dropped: AtomicU64,
    received: AtomicU64,
    rejected: AtomicU64,
    gaps: AtomicU64,
    interruptions: AtomicU64,
    resets: AtomicU64,
    // `u64::MAX`: nothing received yet.
    last_lag_micros: AtomicU64,
}

struct Queued {
    seq: u64,
    bytes: Bytes,
    // Application messages are not retried (see `run_outbox`).
    app: bool,
    // Told `true` once published, `false` when an attempt failed (the message stays queued).
    done: Option<oneshot::Sender<bool>>,
}

#[derive(Default)]
struct Outbox {
    next_seq: u64,
    queue: VecDeque<Queued>,
}

struct Shared {
    id: Arc<str>,
    transport: DynTransport,
    config: BackplaneConfig,
    clock: Arc<dyn Clock>,
    outbox: Mutex<Outbox>,
    wake: Notify,
    // The transport (re)connected: a publish in backoff should retry now.
    retry_now: Notify,
    // The last publish attempt failed: callers do not wait for a transport that is away.
    failing: AtomicBool,
    state: watch::Sender<BackplaneState>,
    app: broadcast::Sender<AppMessage>,
    sinks: Mutex<Vec<Weak<dyn NoticeSink>>>,
    counters: Counters,
}

impl Shared {
    fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.outbox
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Frames `body` with the next sequence number and queues it; returns the number.
    fn enqueue(&self, body: &Body, done: Option<oneshot::Sender<bool>>) -> u64 {
        let mut outbox = self.outbox();
        outbox.next_seq += 1;
        let seq = outbox.next_seq;
        let bytes = encode(&self.id, seq, self.clock.now_for_expiry(), body);
        while outbox.queue.len() >= self.config.max_queued.max(1) {
            // Dropping the oldest keeps the newest notices; receivers see the gap and reset.
            outbox.queue.pop_front();
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
        let app = matches!(body, Body::App(_));
        outbox.queue.push_back(Queued {
            seq,
            bytes,
            app,
            done,
        });
        drop(outbox);
        self.wake.notify_one();
        seq
    }

    fn sinks(&self) -> Vec<Arc<dyn NoticeSink>> {
        let mut sinks = self
            .sinks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sinks.retain(|s| s.strong_count() > 0);
        sinks.iter().filter_map(Weak::upgrade).collect()
    }

    fn set_state(&self, state: BackplaneState) -> BackplaneState {
        self.state.send_replace(state)
    }

    /// Drops what relied on the bus: the L1 of attached caches and, if `app`, application
    /// subscribers' derived state.
    async fn reset(&self, app: bool) {
        self.counters.resets.fetch_add(1, Ordering::Relaxed);
        for sink in self.sinks() {
            sink.reset().await;
        }
        if app {
            let _ = self.app.send(AppMessage::Resync);
        }
    }
}

/// Owns the tasks: when the last [`Backplane`] clone goes, they stop.
struct Tasks {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for handle in &self.handles {
            handle.abort();
        }
    }
}

/// The bus of one instance. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Backplane {
    tasks: Arc<Tasks>,
}

impl fmt::Debug for Backplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = &self.tasks.shared;
        f.debug_struct("Backplane")
            .field("id", &shared.id)
            .field("transport", &shared.transport.name())
            .field("state", &*shared.state.borrow())
            .finish_non_exhaustive()
    }
}

impl Backplane {
    /// Starts the bus of this instance on `transport`: subscribes, and spawns the outbox and the
    /// receive loop on the current Tokio runtime. `clock` stamps heartbeats and measures lag.
    ///
    /// # Panics
    /// Outside a Tokio runtime (like `tokio::spawn`).
    pub fn start(transport: DynTransport, config: BackplaneConfig, clock: Arc<dyn Clock>) -> Self {
        let id: Arc<str> = format!("{:016x}", fastrand::u64(..)).into();
        let (state, _) = watch::channel(BackplaneState::Connecting);
        let (app, _) = broadcast::channel(APP_BUFFER);
        let counters = Counters {
            last_lag_micros: AtomicU64::new(u64::MAX),
            ..Counters::default()
        };
        let shared = Arc::new(Shared {
            id,
            transport,
            config,
            clock,
            outbox: Mutex::default(),
            wake: Notify::new(),
            retry_now: Notify::new(),
            failing: AtomicBool::new(false),
            state,
            app,
            sinks: Mutex::default(),
            counters,
        });
        // Subscribe before the first publish, so this instance hears its own first message.
        let events = shared.transport.subscribe();
        let handles = vec![
            tokio::spawn(run_outbox(Arc::clone(&shared))),
            tokio::spawn(run_receiver(Arc::clone(&shared), events)),
        ];
        Backplane {
            tasks: Arc::new(Tasks { shared, handles }),
        }
    }

    fn shared(&self) -> &Shared {
        &self.tasks.shared
    }

    /// This instance's id (random, new on every start).
    pub fn instance_id(&self) -> &str {
        &self.shared().id
    }

    /// The state now.
    pub fn state(&self) -> BackplaneState {
        *self.shared().state.borrow()
    }

    /// The state, watched.
    pub fn watch_state(&self) -> watch::Receiver<BackplaneState> {
        self.shared().state.subscribe()
    }

    /// Announces a notice to the other instances and waits until the transport accepted it (at
    /// most [`BackplaneConfig::publish_timeout`]; after that it stays queued and this returns the
    /// timeout error). If the transport refuses it, this returns that error at once, and while
    /// the transport is failing it returns [`Error::Unavailable`] without waiting; the notice
    /// stays queued either way.
    pub async fn publish_invalidation(&self, notice: Notice) -> Result<()> {
        let shared = self.shared();
        let backend = shared.transport.name();
        if shared.failing.load(Ordering::Acquire) {
            shared.enqueue(&Body::Notice(notice), None);
            return Err(Error::Unavailable { backend });
        }
        let (tx, rx) = oneshot::channel();
        shared.enqueue(&Body::Notice(notice), Some(tx));
        let after = shared.config.publish_timeout;
        match tokio::time::timeout(after, rx).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(Error::backend(
                backend,
                "publish failed; the notice stays queued",
                None,
            )),
            Ok(Err(_)) => Err(Error::backend(
                backend,
                "the notice was dropped from a full backplane queue",
                None,
            )),
            Err(_) => Err(Error::Timeout { backend, after }),
        }
    }

    /// Queues an application message for the other instances, in order after everything this
    /// instance published before. Never waits. If the attempt that carries it fails, it is
    /// dropped and receivers resync (see the rules in the module docs). This instance's own subscribers do not get it
    /// back: deliver local events locally.
    pub fn publish_app(&self, payload: Bytes) {
        self.shared().enqueue(&Body::App(payload), None);
    }

    /// Application messages of other instances from now on, and `Resync` after any loss.
    pub fn subscribe_app(&self) -> broadcast::Receiver<AppMessage> {
        self.shared().app.subscribe()
    }

    /// The counters now.
    pub fn stats(&self) -> BackplaneStats {
        let shared = self.shared();
        let c = &shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let lag = get(&c.last_lag_micros);
        BackplaneStats {
            transport: shared.transport.name().to_owned(),
            connected: self.state() == BackplaneState::Connected,
            published: get(&c.published),
            publish_errors: get(&c.publish_errors),
            dropped: get(&c.dropped),
            queued: shared.outbox().queue.len() as u64,
            received: get(&c.received),
            rejected: get(&c.rejected),
            gaps: get(&c.gaps),
            interruptions: get(&c.interruptions),
            resets: get(&c.resets),
            last_lag_micros: (lag != u64::MAX).then_some(lag),
        }
    }

    /// Delivers this instance's notices from other instances to `sink` (held weakly: a dropped
    /// cache detaches itself).
    pub(crate) fn attach(&self, sink: Weak<dyn NoticeSink>) {
        self.shared()
            .sinks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(sink);
    }
}

/// Backoff before the `attempt`th retry: 50 ms doubling to 5 s, with ±25 % jitter.
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(50).saturating_mul(1 << attempt.min(7));
    let base = base.min(Duration::from_secs(5));
    base.mul_f64(0.75 + fastrand::f64() * 0.5)
}

/// Publishes the queue in order, in batches, retrying until the transport takes it; queues a
/// heartbeat whenever the queue has been idle for a heartbeat interval.
async fn run_outbox(shared: Arc<Shared>) {
    let heartbeat = shared.config.heartbeat.max(Duration::from_millis(1));
    // A hung transport must not stall the queue forever; the caller's own wait is shorter.
    let attempt_timeout = shared.config.publish_timeout.max(Duration::from_secs(2));
    let mut next_heartbeat = Instant::now() + heartbeat;
    let mut attempt = 0;
    loop {
        let batch: Vec<(u64, Bytes)> = shared
            .outbox()
            .queue
            .iter()
            .take(MAX_BATCH)
            .map(|q| (q.seq, q.bytes.clone()))
            .collect();
        let Some(&(last_seq, _)) = batch.last() else {
            tokio::select! {
                () = shared.wake.notified() => {}
                () = tokio::time::sleep_until(next_heartbeat) => {
                    next_heartbeat = Instant::now() + heartbeat;
                    shared.enqueue(&Body::Heartbeat, None);
                }
            }
            continue;
        };
        let messages: Vec<Bytes> = batch.into_iter().map(|(_, b)| b).collect();
        let result = match tokio::time::timeout(
            attempt_timeout,
            shared.transport.publish(&messages),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                backend: shared.transport.name(),
                after: attempt_timeout,
            }),
        };
        match result {
            Ok(()) => {
                attempt = 0;
                shared.failing.store(false, Ordering::Release);
                let mut outbox = shared.outbox();
                // By sequence number: the queue may have dropped some of the batch meanwhile.
                while outbox.queue.front().is_some_and(|q| q.seq <= last_seq) {
                    if let Some(Queued {
                        done: Some(done), ..
                    }) = outbox.queue.pop_front()
                    {
                        let _ = done.send(true);
                    }
                }
                drop(outbox);
                shared
                    .counters
                    .published
                    .fetch_add(messages.len() as u64, Ordering::Relaxed);
                next_heartbeat = Instant::now() + heartbeat;
            }
            Err(err) => {
                shared.failing.store(true, Ordering::Release);
                // Waiting callers learn now; their notices stay queued for the retries.
                let dropped = {
                    let mut outbox = shared.outbox();
                    for queued in outbox.queue.iter_mut() {
                        if queued.seq > last_seq {
                            break;
                        }
                        if let Some(done) = queued.done.take() {
                            let _ = done.send(false);
                        }
                    }
                    // Application messages of the failed batch are dropped rather than retried: sent
                    // late, they would reach other instances after messages other senders published
                    // meanwhile (a chat event after a later one of the same channel). Their sequence
                    // numbers stay unused, so receivers see a gap and resync instead. Notices are
                    // retried: late, they still only remove entries.
                    let before = outbox.queue.len();
                    outbox.queue.retain(|q| !(q.app && q.seq <= last_seq));
                    before - outbox.queue.len()
                };
                shared
                    .counters
                    .dropped
                    .fetch_add(dropped as u64, Ordering::Relaxed);
                shared
                    .counters
                    .publish_errors
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %err, queued = messages.len(), "backplane publish failed");
                tokio::select! {
                    () = tokio::time::sleep(backoff(attempt)) => {}
                    () = shared.retry_now.notified() => {}
                }
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

/// What the receive loop knows about one other instance.
struct Origin {
    seq: u64,
    seen: Instant,
}

struct Receiver {
    shared: Arc<Shared>,
    origins: HashMap<Arc<str>, Origin>,
    // The transport said `Connected` and has not broken since.
    transport_up: bool,
    // The sequence number of the heartbeat whose echo will prove the subscription.
    probe: Option<u64>,
    last_message: Instant,
    last_prune: Instant,
    ever_connected: bool,
}

async fn run_receiver(shared: Arc<Shared>, mut events: mpsc::Receiver<TransportEvent>) {
    let now = Instant::now();
    let mut rx = Receiver {
        shared,
        origins: HashMap::new(),
        transport_up: false,
        probe: None,
        last_message: now,
        last_prune: now,
        ever_connected: false,
    };
    let silence = rx
        .shared
        .config
        .silence_timeout
        .max(Duration::from_millis(1));
    let mut resubscribes = 0;
    loop {
        let silent_at = rx.last_message + silence;
        tokio::select! {
            event = events.recv() => match event {
                Some(TransportEvent::Connected) => {
                    resubscribes = 0;
                    rx.transport_up = true;
                    rx.last_message = Instant::now();
                    rx.probe = Some(rx.shared.enqueue(&Body::Heartbeat, None));
                    if rx.shared.failing.load(Ordering::Acquire) {
                        rx.shared.retry_now.notify_one();
                    }
                }
                Some(TransportEvent::Message(bytes)) => rx.on_message(&bytes).await,
                Some(TransportEvent::Interrupted) => {
                    rx.shared.counters.interruptions.fetch_add(1, Ordering::Relaxed);
                    rx.disconnect().await;
                }
                None => {
                    // The transport gave up on this subscription: ask for a new one.
                    rx.shared.counters.interruptions.fetch_add(1, Ordering::Relaxed);
                    rx.disconnect().await;
                    tokio::time::sleep(backoff(resubscribes)).await;
                    resubscribes = resubscribes.saturating_add(1);
                    events = rx.shared.transport.subscribe();
                }
            },
            () = tokio::time::sleep_until(silent_at), if rx.transport_up => {
                tracing::warn!(
                    after = ?silence,
                    "backplane subscription silent (not even this instance's heartbeats); resubscribing"
                );
                rx.shared.counters.interruptions.fetch_add(1, Ordering::Relaxed);
                rx.disconnect().await;
                drop(events);
                events = rx.shared.transport.subscribe();
                rx.last_message = Instant::now();
            }
        }
    }
}

impl Receiver {
    async fn disconnect(&mut self) {
        self.transport_up = false;
        self.probe = None;
        // What arrives after a break starts a new sequence for every origin.
        self.origins.clear();
        if self.shared.set_state(BackplaneState::Disconnected) != BackplaneState::Disconnected {
            self.shared.reset(true).await;
        }
    }

    async fn on_message(&mut self, bytes: &[u8]) {
        let now = Instant::now();
        self.last_message = now;
        let envelope = match decode(bytes) {
            Ok(envelope) => envelope,
            Err(reason) => {
                self.shared
                    .counters
                    .rejected
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(?reason, len = bytes.len(), "ignored a backplane message");
                return;
            }
        };
        if envelope.from == self.shared.id {
            // Our own echo: the subscription works. The first one after (re)connecting makes the
            // bus trustworthy again; whatever was missed before it is dropped.
            if self.probe.is_some_and(|probe| envelope.seq >= probe) {
                self.probe = None;
                self.shared.set_state(BackplaneState::Connected);
                self.shared.reset(self.ever_connected).await;
                self.ever_connected = true;
            }
            return;
        }
        let c = &self.shared.counters;
        let lag = self
            .shared
            .clock
            .now_for_expiry()
            .saturating_duration_since(envelope.sent);
        c.last_lag_micros.store(
            u64::try_from(lag.as_micros()).unwrap_or(u64::MAX - 1),
            Ordering::Relaxed,
        );
        let gap = match self.origins.get_mut(&envelope.from) {
            Some(origin) if envelope.seq <= origin.seq => {
                // A batch published again after an attempt that reached the server but timed
                // out: already handled, and an event must not be delivered twice.
                c.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(origin = %envelope.from, seq = envelope.seq, "ignored a duplicate backplane message");
                return;
            }
            Some(origin) => {
                let gap = envelope.seq > origin.seq.saturating_add(1);
                origin.seq = origin.seq.max(envelope.seq);
                origin.seen = now;
                gap
            }
            None => {
                self.origins.insert(
                    Arc::clone(&envelope.from),
                    Origin {
                        seq: envelope.seq,
                        seen: now,
                    },
                );
                false
            }
        };
        if gap {
            c.gaps.fetch_add(1, Ordering::Relaxed);
            tracing::info!(origin = %envelope.from, "backplane gap: messages were lost; resetting L1");
            self.shared.reset(true).await;
        }
        match envelope.body {
            Body::Notice(notice) => {
                for sink in self.shared.sinks() {
                    sink.apply(&notice).await;
                }
            }
            Body::App(payload) => {
                let _ = self.shared.app.send(AppMessage::Message {
                    origin: envelope.from,
                    payload,
                });
            }
            Body::Heartbeat => {}
        }
        // Counted once handled: a caller that sees the count has seen the notice applied.
        self.shared
            .counters
            .received
            .fetch_add(1, Ordering::Relaxed);
        self.prune(now);
    }

    /// Forgets instances not heard of for a while (stopped ones: ids are new on every start).
    fn prune(&mut self, now: Instant) {
        let keep = self.shared.config.silence_timeout.saturating_mul(4);
        if now.duration_since(self.last_prune) >= keep {
            self.last_prune = now;
            self.origins
                .retain(|_, origin| now.duration_since(origin.seen) < keep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{key::Namespace, time::SystemClock};

    fn ns() -> Namespace {
        Namespace::new("chat", 1).unwrap()
    }

    #[test]
    fn envelope_format_is_pinned() {
        let ns = ns();
        let sent = Timestamp::from_micros(1_700_000_000_000_001);
        let tags = Body::Notice(Notice::InvalidateTags {
            tags: vec![ns.tag("channel", &[&42]), ns.all_tag().clone()],
            at: Timestamp::from_micros(1_700_000_000_000_000),
        });
        let keys = Body::Notice(Notice::DeleteKeys(vec![ns.key("latest", &[&42, &"a:b"])]));
        let golden: [(&Body, &str); 5] = [
            (
                &tags,
                r#"{"v":1,"from":"ab12","seq":7,"sent":1700000000000001,"body":{"t":["chat:v1:#channel:42","chat:v1:#*"],"at":1700000000000000}}"#,
            ),
            (
                &keys,
                r#"{"v":1,"from":"ab12","seq":7,"sent":1700000000000001,"body":{"k":["chat:v1:latest:42:a%3Ab"]}}"#,
            ),
            (
                &Body::Heartbeat,
                r#"{"v":1,"from":"ab12","seq":7,"sent":1700000000000001,"body":"hb"}"#,
            ),
            (
                &Body::App(Bytes::from_static(b"{\"e\":\"x\"}\nline")),
                r#"{"v":1,"from":"ab12","seq":7,"sent":1700000000000001,"body":{"a":"{\"e\":\"x\"}\nline"}}"#,
            ),
            (
                &Body::App(Bytes::from_static(&[0, 0xff, 0x10])),
                r#"{"v":1,"from":"ab12","seq":7,"sent":1700000000000001,"body":{"x":"00ff10"}}"#,
            ),
        ];
        for (body, json) in golden {
            let bytes = encode("ab12", 7, sent, body);
            assert_eq!(std::str::from_utf8(&bytes).unwrap(), json);
            let back = decode(json.as_bytes()).unwrap();
            assert_eq!(&back.body, body);
            assert_eq!((&*back.from, back.seq, back.sent), ("ab12", 7, sent));
        }
    }

    #[test]
    fn foreign_versions_and_garbage_are_rejected_without_panicking() {
        let cases: &[&[u8]] = &[
            b"",
            b"\xff\xfe",
            b"null",
            b"[]",
            br#"{"v":2,"from":"a","seq":1,"sent":1,"body":"hb"}"#,
            br#"{"from":"a","seq":1,"sent":1,"body":"hb"}"#,
            br#"{"v":"1","from":"a","seq":1,"sent":1,"body":"hb"}"#,
            br#"{"v":1,"from":"","seq":1,"sent":1,"body":"hb"}"#,
            br#"{"v":1,"from":"a","seq":-1,"sent":1,"body":"hb"}"#,
            br#"{"v":1,"from":"a","seq":1,"sent":1,"body":"heartbeat"}"#,
            br#"{"v":1,"from":"a","seq":1,"sent":1,"body":{"t":["not a tag"],"at":1}}"#,
            br#"{"v":1,"from":"a","seq":1,"sent":1,"body":{"t":["chat:v1:#*"]}}"#,
            br#"{"v":1,"from":"a","seq":1,"sent":1,"body":{"k":["nokey"]}}"#,
            br#"{"v":1,"from":"a","seq":1,"sent":1,"body":{"k":[1]}}"#,
            br#"{"v":1,"from":"a","seq":1,"sent":1,"body":{"x":"0g"}}"#,
            br#"{"v":1,"from":"a","seq":1,"sent":1,"body":{"x":"0"}}"#,
            br#"{"v":1,"from":"a","seq":1,"sent":1,"body":{"a":"x","k":[]}}"#,
        ];
        for case in cases {
            assert!(decode(case).is_err(), "{:?}", String::from_utf8_lossy(case));
        }
        assert_eq!(
            decode(br#"{"v":2,"future":true}"#),
            Err(Reject::Version(Some(2)))
        );
    }

    #[tokio::test]
    async fn local_transport_delivers_interrupts_and_loses_on_request() {
        let bus = LocalTransport::new();
        let mut rx = bus.subscribe();
        assert_eq!(rx.recv().await, Some(TransportEvent::Connected));
        bus.publish(&[Bytes::from_static(b"1"), Bytes::from_static(b"2")])
            .await
            .unwrap();
        bus.lose_next(1);
        bus.publish(&[Bytes::from_static(b"3"), Bytes::from_static(b"4")])
            .await
            .unwrap();
        bus.interrupt();
        bus.set_down(true);
        assert!(bus.publish(&[Bytes::from_static(b"5")]).await.is_err());
        bus.set_down(false);
        let expected = [
            TransportEvent::Message(Bytes::from_static(b"1")),
            TransportEvent::Message(Bytes::from_static(b"2")),
            TransportEvent::Message(Bytes::from_static(b"4")),
            TransportEvent::Interrupted,
            TransportEvent::Connected,
            TransportEvent::Interrupted,
            TransportEvent::Connected,
        ];
        for event in expected {
            assert_eq!(rx.recv().await, Some(event));
        }
        assert_eq!(bus.subscriber_count(), 1);
        drop(rx);
        assert_eq!(bus.subscriber_count(), 0);
    }

    #[tokio::test]
    async fn two_instances_exchange_app_messages_and_ignore_their_own() {
        let bus = LocalTransport::new();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let a = Backplane::start(
            Arc::new(bus.clone()),
            BackplaneConfig::default(),
            clock.clone(),
        );
        let b = Backplane::start(Arc::new(bus.clone()), BackplaneConfig::default(), clock);
        assert_ne!(a.instance_id(), b.instance_id());
        let mut on_a = a.subscribe_app();
        let mut on_b = b.subscribe_app();
        for bp in [&a, &b] {
            let mut state = bp.watch_state();
            state
                .wait_for(|s| *s == BackplaneState::Connected)
                .await
                .unwrap();
        }
        a.publish_app(Bytes::from_static(b"hello"));
        a.publish_app(Bytes::from_static(b"world"));
        b.publish_app(Bytes::from_static(b"from b"));
        for payload in ["hello", "world"] {
            assert_eq!(
                on_b.recv().await.unwrap(),
                AppMessage::Message {
                    origin: a.instance_id().into(),
                    payload: Bytes::from(payload),
                }
            );
        }
        assert_eq!(
            on_a.recv().await.unwrap(),
            AppMessage::Message {
                origin: b.instance_id().into(),
                payload: Bytes::from_static(b"from b"),
            }
        );
        // A's own messages never came back to A.
        assert!(on_a.try_recv().is_err());
        assert!(a.stats().received >= 1);
        assert!(b.stats().received >= 2);
        assert_eq!(bus.subscriber_count(), 2);
        drop((a, on_a));
        let deadline = Instant::now() + Duration::from_secs(5);
        while bus.subscriber_count() != 1 {
            assert!(
                Instant::now() < deadline,
                "the dropped backplane's task is still running"
            );
            tokio::task::yield_now().await;
        }
    }
}
