//! The WebSocket sessions of `chat-bench cluster`: one per (user, instance), each recording every
//! `message_create` of the run it receives, in arrival order, so exactly-once and per-channel order
//! can be checked afterwards.
//!
//! A session whose socket closes (4008 "resync" from a server that lost its bus, or the instance
//! died) reconnects as soon as its instance is up and refetches each channel's latest page, as a
//! real client must: posts seen that way count as delivered, never as duplicates.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::watch;
use tokio_tungstenite::{
    connect_async,
    tungstenite::{Message, client::IntoClientRequest},
};

use super::{PostRef, Shared};

/// chat-api's close code for "you fell behind (or the bus was interrupted): reconnect and
/// refetch".
const CLOSE_RESYNC: u16 = 4008;

/// What one session saw.
#[derive(Debug, Default)]
pub(crate) struct SessionLog {
    /// Every post delivered as an event: how often, and when it first arrived.
    pub(crate) delivered: HashMap<PostRef, (u32, Instant)>,
    /// Posts found on a page refetched after a reconnect.
    pub(crate) refetched: HashMap<PostRef, Instant>,
    /// The last post index seen per channel on the current connection.
    last_index: HashMap<usize, u64>,
    /// Events that arrived after a later post of the same channel (one example each).
    pub(crate) out_of_order: Vec<String>,
    /// Connections that reached `ready`.
    pub(crate) connects: u64,
    /// Closes with 4008.
    pub(crate) resyncs: u64,
    /// Any other end of a connection before the run stopped it (the instance died).
    pub(crate) drops: u64,
    /// Whether the session is connected and ready now.
    pub(crate) ready: bool,
}

impl SessionLog {
    /// Whether `post` reached this session, by event or by refetch; and when.
    pub(crate) fn has(&self, post: &PostRef) -> Option<Instant> {
        self.delivered
            .get(post)
            .map(|(_, at)| *at)
            .or_else(|| self.refetched.get(post).copied())
    }

    pub(crate) fn duplicates(&self) -> u64 {
        self.delivered
            .values()
            .map(|(n, _)| u64::from(n.saturating_sub(1)))
            .sum()
    }

    fn event(&mut self, post: PostRef, at: Instant) {
        let entry = self.delivered.entry(post.clone()).or_insert((0, at));
        entry.0 += 1;
        let last = self.last_index.entry(post.channel).or_insert(0);
        if post.index < *last {
            self.out_of_order.push(format!(
                "channel {} post #{} after #{}",
                post.channel, post.index, *last
            ));
        } else {
            *last = post.index;
        }
    }
}

/// One session: a user's WebSocket on one instance.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) user: usize,
    pub(crate) instance: usize,
    pub(crate) log: Mutex<SessionLog>,
}

#[derive(Debug, Deserialize)]
struct Frame {
    op: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    data: Option<serde_json::Value>,
}

/// Runs `session` until `stop` turns true: connect, read, reconnect and refetch after a close.
pub(crate) async fn run(
    shared: Arc<Shared>,
    session: Arc<Session>,
    mut stop: watch::Receiver<bool>,
) {
    let instance = &shared.instances[session.instance];
    let token = shared.users[session.user].token.clone();
    // Doubles while connections end quickly (a server without its bus may close new sessions at
    // once), back to the minimum after one that lasted.
    let mut backoff = MIN_BACKOFF;
    loop {
        if *stop.borrow() {
            return;
        }
        if !instance.up.load(Ordering::SeqCst) {
            // Waiting for the harness to bring the instance back; a reconnect backoff.
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                _ = stop.changed() => return,
            }
        }
        let started = Instant::now();
        let ended = tokio::select! {
            ended = connection(&shared, &session, &instance.ws_url, &token, &instance.up) => ended,
            _ = stop.changed() => return,
        };
        backoff = if started.elapsed() > Duration::from_secs(2) {
            MIN_BACKOFF
        } else {
            (backoff * 2).min(MAX_BACKOFF)
        };
        {
            let mut log = session.log.lock().expect("session log");
            log.ready = false;
            match ended {
                Ended::Resync => log.resyncs += 1,
                Ended::Dropped => log.drops += 1,
                Ended::NotConnected => {}
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
    }
}

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

enum Ended {
    Resync,
    Dropped,
    NotConnected,
}

async fn connection(
    shared: &Shared,
    session: &Session,
    ws_url: &str,
    token: &str,
    up: &AtomicBool,
) -> Ended {
    let Ok(mut request) = format!("{ws_url}/api/v1/ws").into_client_request() else {
        return Ended::NotConnected;
    };
    let Ok(auth) = format!("Bearer {token}").parse() else {
        return Ended::NotConnected;
    };
    request.headers_mut().insert("authorization", auth);
    let connect = tokio::time::timeout(Duration::from_secs(5), connect_async(request)).await;
    let Ok(Ok((mut socket, _))) = connect else {
        return Ended::NotConnected;
    };
    let mut ready = false;
    while let Some(frame) = socket.next().await {
        let text = match frame {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(frame)) => {
                let code = frame.map(|f| u16::from(f.code));
                return if code == Some(CLOSE_RESYNC) {
                    Ended::Resync
                } else {
                    Ended::Dropped
                };
            }
            Ok(_) => continue,
            Err(_) => break,
        };
        let Ok(frame) = serde_json::from_str::<Frame>(text.as_str()) else {
            continue;
        };
        match (frame.op.as_str(), frame.kind.as_deref()) {
            ("ready", _) if !ready => {
                ready = true;
                // Subscribed before the page is read, so nothing posted in between is lost.
                let reconnect = {
                    let mut log = session.log.lock().expect("session log");
                    log.connects += 1;
                    log.last_index.clear();
                    log.connects > 1
                };
                if reconnect {
                    refetch(shared, session).await;
                }
                session.log.lock().expect("session log").ready = true;
            }
            ("event", Some("message_create")) => {
                let at = Instant::now();
                let content = frame
                    .data
                    .as_ref()
                    .and_then(|d| d.get("content"))
                    .and_then(|c| c.as_str());
                if let Some(post) = content.and_then(|c| shared.parse_content(c)) {
                    session.log.lock().expect("session log").event(post, at);
                }
            }
            _ => {}
        }
    }
    if !up.load(Ordering::SeqCst) || ready {
        Ended::Dropped
    } else {
        Ended::NotConnected
    }
}

/// After a reconnect: every channel's latest page, read from the session's instance.
async fn refetch(shared: &Shared, session: &Session) {
    let instance = &shared.instances[session.instance];
    let token = &shared.users[session.user].token;
    for (channel, info) in shared.channels.iter().enumerate() {
        if let Ok(read) = instance.read_page(token, &info.id, 100).await {
            let at = Instant::now();
            let mut log = session.log.lock().expect("session log");
            for content in read.contents {
                if let Some(post) = shared.parse_content(&content) {
                    if post.channel == channel {
                        log.refetched.entry(post).or_insert(at);
                    }
                }
            }
        }
    }
}
