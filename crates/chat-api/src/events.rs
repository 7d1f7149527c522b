//! The in-process event hub: handlers publish an [`Event`] after a write commits, every WebSocket
//! session receives it and forwards the ones meant for its user.
//!
//! One `tokio::sync::broadcast` channel carries all events; a session filters by the channels its
//! user belongs to (plus events addressed to the user directly). That is O(sessions) per event,
//! fine for one instance; fan-out across instances (Redis pub/sub) is a later phase. A session
//! that falls more than [`HUB_CAPACITY`] events behind is closed and reconnects (its client then
//! refetches what it missed), so a slow client cannot hold memory hostage.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use serde::Serialize;
use tokio::sync::{broadcast, watch};
use ulid::Ulid;

/// Events buffered per session before it counts as lagging.
pub const HUB_CAPACITY: usize = 4096;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A message was posted; data: the message.
    MessageCreate,
    /// A message was edited; data: the message.
    MessageUpdate,
    /// A message was deleted; data: `{id, channel_id}`.
    MessageDelete,
    /// A reaction was added; data: `{channel_id, message_id, user_id, emoji}`.
    ReactionAdd,
    /// A reaction was removed; data: as `reaction_add`.
    ReactionRemove,
    /// A channel was created (sent to its creator); data: the channel.
    ChannelCreate,
    /// A user joined (or was added to) a channel; data: `{channel_id, user}`.
    MemberJoin,
    /// A user left a channel; data: `{channel_id, user}`.
    MemberLeave,
    /// The user moved their read marker (sent to their own sessions); data:
    /// `{channel_id, message_id}`.
    ChannelAck,
}

impl EventKind {
    /// The `type` field of the frame.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::MessageCreate => "message_create",
            EventKind::MessageUpdate => "message_update",
            EventKind::MessageDelete => "message_delete",
            EventKind::ReactionAdd => "reaction_add",
            EventKind::ReactionRemove => "reaction_remove",
            EventKind::ChannelCreate => "channel_create",
            EventKind::MemberJoin => "member_join",
            EventKind::MemberLeave => "member_leave",
            EventKind::ChannelAck => "channel_ack",
        }
    }
}

/// One event and its audience.
#[derive(Debug)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// Members of this channel receive it.
    pub channel: Option<Ulid>,
    /// This user receives it too (or only them, when `channel` is `None`).
    pub user: Option<Ulid>,
    /// The `data` of the frame, serialized once for every session.
    pub data: String,
}

impl Event {
    /// Whether a session of `user`, member of channels `is_member`, should receive this event.
    pub fn is_for(&self, user: Ulid, is_member: impl Fn(Ulid) -> bool) -> bool {
        self.user == Some(user) || self.channel.is_some_and(is_member)
    }
}

/// The hub. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Hub {
    tx: broadcast::Sender<Arc<Event>>,
    shutdown: Arc<watch::Sender<bool>>,
    sessions: Arc<AtomicUsize>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(HUB_CAPACITY);
        let (shutdown, _) = watch::channel(false);
        Hub {
            tx,
            shutdown: Arc::new(shutdown),
            sessions: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Publishes an event to every session. Serialization failures are logged and dropped: an
    /// event is a notification of a committed write, never the write itself.
    pub fn publish(
        &self,
        kind: EventKind,
        channel: Option<Ulid>,
        user: Option<Ulid>,
        data: &impl Serialize,
    ) {
        match serde_json::to_string(data) {
            Ok(data) => {
                // An error only means no session is listening.
                let _ = self.tx.send(Arc::new(Event {
                    kind,
                    channel,
                    user,
                    data,
                }));
            }
            Err(err) => {
                tracing::error!(error = %err, kind = kind.as_str(), "event not serializable")
            }
        }
    }

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// Resolves when the server begins shutting down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Tells every session to close (going away).
    pub fn close_all(&self) {
        self.shutdown.send_replace(true);
    }

    /// Counts a session for as long as the guard lives.
    pub fn session_guard(&self) -> SessionGuard {
        self.sessions.fetch_add(1, Ordering::Relaxed);
        SessionGuard(Arc::clone(&self.sessions))
    }

    /// Sessions connected now.
    pub fn sessions(&self) -> usize {
        self.sessions.load(Ordering::Relaxed)
    }
}

/// See [`Hub::session_guard`].
#[derive(Debug)]
pub struct SessionGuard(Arc<AtomicUsize>);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
