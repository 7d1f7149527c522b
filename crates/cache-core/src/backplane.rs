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

use std::{fmt, sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, watch};

use crate::{
    error::Result,
    key::{Key, Tag},
    time::{Clock, Timestamp},
};

/// The envelope format version. Receivers drop (and count) messages of any other version.
pub const ENVELOPE_VERSION: u32 = 1;

/// What a transport reports to the [`Backplane`] over it.
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone, Default)]
pub struct LocalTransport {
    _todo: (),
}

impl LocalTransport {
    /// A new, empty bus.
    pub fn new() -> Self {
        todo!("backplane: LocalTransport::new")
    }

    /// Every subscriber gets `Interrupted`, then `Connected`.
    pub fn interrupt(&self) {
        todo!("backplane: LocalTransport::interrupt")
    }

    /// While down, `publish` fails and subscribers are `Interrupted`; back up, they get
    /// `Connected`.
    pub fn set_down(&self, down: bool) {
        let _ = down;
        todo!("backplane: LocalTransport::set_down")
    }

    /// The next `n` published messages reach no subscriber (but `publish` succeeds): a gap.
    pub fn lose_next(&self, n: usize) {
        let _ = n;
        todo!("backplane: LocalTransport::lose_next")
    }
}

#[async_trait]
impl BackplaneTransport for LocalTransport {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn publish(&self, messages: &[Bytes]) -> Result<()> {
        let _ = messages;
        todo!("backplane: LocalTransport::publish")
    }

    fn subscribe(&self) -> mpsc::Receiver<TransportEvent> {
        todo!("backplane: LocalTransport::subscribe")
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
    /// Failed publish attempts (the messages stay queued).
    pub publish_errors: u64,
    /// Messages dropped from a full queue.
    pub dropped: u64,
    /// Messages queued now.
    pub queued: u64,
    /// Messages received from other instances.
    pub received: u64,
    /// Malformed or foreign-version messages ignored.
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

/// The bus of one instance. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Backplane {
    _todo: Arc<()>,
}

impl fmt::Debug for Backplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backplane").finish_non_exhaustive()
    }
}

impl Backplane {
    /// Starts the bus of this instance on `transport`: subscribes, and spawns the outbox and the
    /// receive loop on the current Tokio runtime. `clock` stamps heartbeats and measures lag.
    pub fn start(transport: DynTransport, config: BackplaneConfig, clock: Arc<dyn Clock>) -> Self {
        let _ = (transport, config, clock);
        todo!("backplane: Backplane::start")
    }

    /// This instance's id (random, new on every start).
    pub fn instance_id(&self) -> &str {
        todo!("backplane: Backplane::instance_id")
    }

    /// The state now.
    pub fn state(&self) -> BackplaneState {
        todo!("backplane: Backplane::state")
    }

    /// The state, watched.
    pub fn watch_state(&self) -> watch::Receiver<BackplaneState> {
        todo!("backplane: Backplane::watch_state")
    }

    /// Announces a notice to the other instances and waits until the transport accepted it (at
    /// most [`BackplaneConfig::publish_timeout`]; after that it stays queued and this returns the
    /// timeout error).
    pub async fn publish_invalidation(&self, notice: Notice) -> Result<()> {
        let _ = notice;
        todo!("backplane: Backplane::publish_invalidation")
    }

    /// Queues an application message for the other instances, in order after everything this
    /// instance published before. Never waits.
    pub fn publish_app(&self, payload: Bytes) {
        let _ = payload;
        todo!("backplane: Backplane::publish_app")
    }

    /// Application messages of other instances from now on, and `Resync` after any loss.
    pub fn subscribe_app(&self) -> broadcast::Receiver<AppMessage> {
        todo!("backplane: Backplane::subscribe_app")
    }

    /// The counters now.
    pub fn stats(&self) -> BackplaneStats {
        todo!("backplane: Backplane::stats")
    }
}
