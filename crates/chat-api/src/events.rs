//! The event hub: handlers publish an [`Event`] after a write commits, every WebSocket session,
//! on this instance and on every other one, receives it and forwards the ones meant for its user.
//!
//! One `tokio::sync::broadcast` channel carries all events of the instance; a session filters by
//! the channels its user belongs to (plus events addressed to the user directly). That is
//! O(sessions) per event. A session that falls more than [`HUB_CAPACITY`] events behind is closed
//! and reconnects (its client then refetches what it missed), so a slow client cannot hold memory
//! hostage; a client that stops reading altogether is dropped by the session's send timeout
//! (its blocked write would otherwise keep the session from ever seeing its lag).
//!
//! # Across instances
//!
//! With a backplane ([`Hub::with_backplane`]) every event is also published on it as an
//! application message, a compact JSON envelope `{"k":kind,"c":channel,"u":user,"d":data}`, and
//! the events of other instances are broadcast to the local sessions as if published here. Each
//! session therefore sees every event exactly once: its own instance's from the local channel,
//! the others' from the bus, which drops an instance's own messages. Order per channel holds
//! because one instance publishes in commit order on one ordered bus, and the cache
//! invalidation notice of a write goes out on that bus before its event: a client that reads
//! after an event sees the write on whichever instance it asks.
//!
//! The bus carries one other kind of application message, the per-user rate-limit counts of
//! [`RateLimiter::share_on`]; the hub hands those to the limiter.
//!
//! When the bus was interrupted or lost a message, events may be missing, and a session cannot
//! know which: the hub raises its resync signal and every session closes with the lag code
//! (4008), so clients reconnect and refetch, exactly as after a local lag.
//!
//! # Sessions
//!
//! The hub counts the sessions of the instance ([`Hub::session_guard`]) and, per user, the
//! authenticated ones ([`Hub::user_session`]), which is how the per-user session cap is kept:
//! a user at the cap gets no new slot until one of their sessions ends. The cap is per instance.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use cache_core::{AppMessage, Backplane};

use crate::ratelimit::RateLimiter;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{broadcast, watch};
use ulid::Ulid;

/// Events buffered per session before it counts as lagging.
pub const HUB_CAPACITY: usize = 4096;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// An event on the bus. Borrowed fields on the way out; `d` is the event's JSON verbatim, so a
/// remote session gets the same bytes as a local one.
#[derive(Serialize)]
struct OutEnvelope<'a> {
    k: EventKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    c: Option<Ulid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    u: Option<Ulid>,
    d: &'a RawValue,
}

#[derive(Deserialize)]
struct InEnvelope<'a> {
    k: EventKind,
    #[serde(default)]
    c: Option<Ulid>,
    #[serde(default)]
    u: Option<Ulid>,
    #[serde(borrow)]
    d: &'a RawValue,
}

impl Event {
    /// The bus envelope of this event.
    fn to_envelope(&self) -> Result<Bytes, serde_json::Error> {
        let data: &RawValue = serde_json::from_str(&self.data)?;
        let envelope = OutEnvelope {
            k: self.kind,
            c: self.channel,
            u: self.user,
            d: data,
        };
        serde_json::to_vec(&envelope).map(Bytes::from)
    }

    /// An event from a bus envelope.
    fn from_envelope(payload: &[u8]) -> Result<Event, serde_json::Error> {
        let envelope: InEnvelope<'_> = serde_json::from_slice(payload)?;
        Ok(Event {
            kind: envelope.k,
            channel: envelope.c,
            user: envelope.u,
            data: envelope.d.get().to_owned(),
        })
    }
}

/// Counters of the hub's traffic on the bus.
#[derive(Debug, Default)]
struct BusCounters {
    /// Events published on the bus.
    sent: AtomicU64,
    /// Events of other instances delivered to local sessions.
    received: AtomicU64,
    /// Envelopes that did not decode (another version of chat-api on the same channel).
    rejected: AtomicU64,
    /// Resync signals raised.
    resyncs: AtomicU64,
}

/// A reading of the hub's bus counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubBusStats {
    /// Events published on the bus.
    pub sent: u64,
    /// Events of other instances delivered to local sessions.
    pub received: u64,
    /// Envelopes that did not decode.
    pub rejected: u64,
    /// Times every session was told to resync (4008).
    pub resyncs: u64,
}

/// The hub. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Hub {
    tx: broadcast::Sender<Arc<Event>>,
    shutdown: Arc<watch::Sender<bool>>,
    // The generation of resync signals: a session that sees it change closes with 4008.
    resync: Arc<watch::Sender<u64>>,
    sessions: Arc<AtomicUsize>,
    // Authenticated sessions per user; users with none have no entry.
    user_sessions: Arc<Mutex<HashMap<Ulid, usize>>>,
    backplane: Option<Backplane>,
    bus: Arc<BusCounters>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

impl Hub {
    /// A hub for this instance alone.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(HUB_CAPACITY);
        let (shutdown, _) = watch::channel(false);
        let (resync, _) = watch::channel(0);
        Hub {
            tx,
            shutdown: Arc::new(shutdown),
            resync: Arc::new(resync),
            sessions: Arc::new(AtomicUsize::new(0)),
            user_sessions: Arc::default(),
            backplane: None,
            bus: Arc::default(),
        }
    }

    /// A hub that also publishes every event on `backplane` and delivers the events of other
    /// instances to its sessions (see the module docs), and hands the rate-limit counts other
    /// instances share on the bus to `limiter`. Spawns the receiving task on the current Tokio
    /// runtime; it ends when the server shuts down or the backplane stops.
    pub fn with_backplane(backplane: Backplane, limiter: RateLimiter) -> Self {
        let hub = Hub {
            backplane: Some(backplane.clone()),
            ..Hub::new()
        };
        // Subscribed before this returns: nothing published after startup is missed.
        let incoming = backplane.subscribe_app();
        tokio::spawn(hub.clone().receive(incoming, limiter));
        hub
    }

    async fn receive(self, mut incoming: broadcast::Receiver<AppMessage>, limiter: RateLimiter) {
        let mut shutdown = self.shutdown_signal();
        loop {
            let message = tokio::select! {
                message = incoming.recv() => message,
                _ = shutdown.changed() => return,
            };
            match message {
                // The other kind of application message: rate-limit counts (`{"rl":…}`).
                Ok(AppMessage::Message { payload, .. }) if payload.starts_with(br#"{"rl":"#) => {
                    match serde_json::from_slice(&payload) {
                        Ok(counts) => limiter.add_shared(counts),
                        Err(err) => {
                            self.bus.rejected.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(error = %err, "ignoring rate-limit counts that do not decode");
                        }
                    }
                }
                Ok(AppMessage::Message { payload, .. }) => match Event::from_envelope(&payload) {
                    Ok(event) => {
                        self.bus.received.fetch_add(1, Ordering::Relaxed);
                        let _ = self.tx.send(Arc::new(event));
                    }
                    Err(err) => {
                        self.bus.rejected.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %err, "ignoring an event from the bus that does not decode");
                    }
                },
                Ok(AppMessage::Resync) => self.resync_all("the bus lost messages"),
                // A kind of message a later cache-core may add; nothing this version acts on.
                Ok(_) => {}
                // This task fell behind the backplane's buffer: events were lost here.
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(lost = n, "the hub fell behind the bus");
                    self.resync_all("the hub fell behind the bus");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Tells every session that events may have been lost: they close with 4008.
    fn resync_all(&self, why: &'static str) {
        self.bus.resyncs.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            sessions = self.sessions(),
            why,
            "closing every WebSocket session for a resync"
        );
        self.resync.send_modify(|generation| *generation += 1);
    }

    /// Publishes an event to every session, here and (with a backplane) on every other instance.
    /// Serialization failures are logged and dropped: an event is a notification of a committed
    /// write, never the write itself.
    pub fn publish(
        &self,
        kind: EventKind,
        channel: Option<Ulid>,
        user: Option<Ulid>,
        data: &impl Serialize,
    ) {
        match serde_json::to_string(data) {
            Ok(data) => {
                let event = Arc::new(Event {
                    kind,
                    channel,
                    user,
                    data,
                });
                if let Some(backplane) = &self.backplane {
                    match event.to_envelope() {
                        Ok(envelope) => {
                            // Queued behind the write's invalidation notice, which the handler
                            // awaited before publishing: receivers apply it first.
                            backplane.publish_app(envelope);
                            self.bus.sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(err) => {
                            tracing::error!(error = %err, kind = kind.as_str(), "event not serializable for the bus")
                        }
                    }
                }
                // An error only means no session is listening.
                let _ = self.tx.send(event);
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

    /// Changes when sessions must resync (see the module docs).
    pub fn resync_signal(&self) -> watch::Receiver<u64> {
        self.resync.subscribe()
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

    /// A slot for one more session of `user`, held for as long as the guard lives; `None` when
    /// the user already has `max` sessions on this instance.
    pub fn user_session(&self, user: Ulid, max: usize) -> Option<UserSessionGuard> {
        let mut counts = self.user_sessions.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(user).or_default();
        if *count >= max {
            if *count == 0 {
                counts.remove(&user);
            }
            return None;
        }
        *count += 1;
        Some(UserSessionGuard {
            counts: Arc::clone(&self.user_sessions),
            user,
        })
    }

    /// Authenticated sessions `user` has on this instance now.
    pub fn user_sessions(&self, user: Ulid) -> usize {
        let counts = self.user_sessions.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(&user).copied().unwrap_or(0)
    }

    /// The backplane the hub publishes on, if any.
    pub fn backplane(&self) -> Option<&Backplane> {
        self.backplane.as_ref()
    }

    /// The hub's bus counters.
    pub fn bus_stats(&self) -> HubBusStats {
        HubBusStats {
            sent: self.bus.sent.load(Ordering::Relaxed),
            received: self.bus.received.load(Ordering::Relaxed),
            rejected: self.bus.rejected.load(Ordering::Relaxed),
            resyncs: self.bus.resyncs.load(Ordering::Relaxed),
        }
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

/// See [`Hub::user_session`].
#[derive(Debug)]
pub struct UserSessionGuard {
    counts: Arc<Mutex<HashMap<Ulid, usize>>>,
    user: Ulid,
}

impl Drop for UserSessionGuard {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.user) {
            *count -= 1;
            // Users without sessions leave the map, so it holds connected users only.
            if *count == 0 {
                counts.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_sessions_are_capped_and_released() {
        let hub = Hub::new();
        let (ann, bob) = (Ulid::from_parts(1, 1), Ulid::from_parts(1, 2));
        let first = hub.user_session(ann, 2).unwrap();
        let second = hub.user_session(ann, 2).unwrap();
        assert!(
            hub.user_session(ann, 2).is_none(),
            "the third is over the cap"
        );
        assert!(hub.user_session(bob, 2).is_some(), "the cap is per user");
        assert_eq!(hub.user_sessions(ann), 2);
        drop(first);
        let third = hub.user_session(ann, 2).expect("a slot was released");
        drop((second, third));
        assert_eq!(hub.user_sessions(ann), 0);
        assert!(hub.user_session(ann, 0).is_none());
        let counts = hub.user_sessions.lock().unwrap();
        assert!(counts.is_empty(), "users without sessions leave no entry");
    }

    #[test]
    fn envelopes_carry_the_event_verbatim() {
        let channel = Ulid::from_parts(1, 2);
        let event = Event {
            kind: EventKind::MessageCreate,
            channel: Some(channel),
            user: None,
            data: r#"{"id":"x","content":"line\nbreak \u00e9 🎉","z":1,"a":2}"#.to_owned(),
        };
        let envelope = event.to_envelope().unwrap();
        let text = std::str::from_utf8(&envelope).unwrap();
        assert!(text.starts_with(r#"{"k":"message_create","c":""#), "{text}");
        assert!(
            !text.contains("\"u\""),
            "absent fields are left out: {text}"
        );
        let back = Event::from_envelope(&envelope).unwrap();
        assert_eq!(back.kind, EventKind::MessageCreate);
        assert_eq!(back.channel, Some(channel));
        assert_eq!(back.user, None);
        // Byte for byte: key order and escapes as the sender rendered them.
        assert_eq!(back.data, event.data);
    }

    #[test]
    fn foreign_envelopes_are_errors_not_panics() {
        for bad in [
            &b""[..],
            b"{}",
            b"not json",
            br#"{"k":"message_explode","d":{}}"#,
            br#"{"k":"message_create","c":"not-a-ulid","d":{}}"#,
            br#"{"k":"message_create"}"#,
            b"\xff\xfe",
        ] {
            assert!(Event::from_envelope(bad).is_err(), "{bad:?}");
        }
    }
}
