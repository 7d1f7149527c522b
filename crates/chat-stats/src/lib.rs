//! The stats document of chat-api: what `GET /stats` serves as JSON, and what `cachectl stats`
//! and `chat-bench` read back. One set of types for the producer and every consumer, so a renamed
//! or retyped field is a compile error or a failing test, never a silently missing number.
//!
//! chat-api builds a [`Stats`] from the same snapshot it renders as Prometheus text at
//! `/metrics`; the Prometheus names are chat-api's business, the JSON field names are these
//! types'.
//!
//! The document carries a [`version`](Stats::version). Adding a field is compatible (readers
//! default what they do not get); renaming, removing or changing the meaning of one bumps
//! [`VERSION`], and [`parse`] refuses a version it does not know instead of misreading it.
//!
//! ```
//! let json = serde_json::to_vec(&chat_stats::Stats::default()).unwrap();
//! let stats = chat_stats::parse(&json).unwrap();
//! assert_eq!(stats.version, chat_stats::VERSION);
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The version of the document this crate writes and reads.
pub const VERSION: u32 = 1;

/// Where chat-api serves the document (beside `/health` and `/metrics`, outside `/api/v1`).
pub const PATH: &str = "/stats";

/// Everything chat-api reports about itself at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// [`VERSION`] when written by this crate.
    pub version: u32,
    /// The cache: per tier, `get_or_load`, the breaker.
    pub cache: CacheStats,
    /// Database statements.
    pub db: DbStats,
    /// HTTP responses.
    pub http: HttpStats,
    /// Requests answered 429, by rate-limit bucket name (`channels`, `messages`, …).
    pub rate_limited: BTreeMap<String, u64>,
    /// WebSocket sessions connected now.
    pub ws_sessions: u64,
    /// The backplane shared with other instances; `None` when it is off. Added in version 1
    /// without a bump: older documents read as `None`.
    pub backplane: Option<BackplaneStats>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            version: VERSION,
            cache: CacheStats::default(),
            db: DbStats::default(),
            http: HttpStats::default(),
            rate_limited: BTreeMap::new(),
            ws_sessions: 0,
            backplane: None,
        }
    }
}

/// The cache facade and its tiers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CacheStats {
    /// One row per tier: `memory` or `upstash` alone, or `l1` and `l2` when tiered.
    pub tiers: Vec<TierStats>,
    /// Cache-aside reads through `get_or_load`.
    pub lookups: LookupStats,
    /// The L2 circuit breaker; only a tiered cache has one.
    pub breaker: Option<BreakerStats>,
    /// Invalidations waiting to be replayed on L2.
    pub pending_invalidations: u64,
    /// `get_or_load` per kind of cached data (`user_auth`, `channel`,
    /// `user_channels`, `latest_page`, `older_page`, `around_page`). Added in version 1 without a bump: older
    /// documents read as empty.
    pub kinds: Vec<KindStats>,
}

/// Cache-aside reads of one kind of data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KindStats {
    /// The kind's name.
    pub kind: String,
    /// `get_or_load` calls.
    pub lookups: u64,
    /// Loader runs among them (database reads); the rest were answered by the cache.
    pub loads: u64,
}

impl KindStats {
    /// The share of lookups that ran no loader, when there were lookups.
    pub fn hit_ratio(&self) -> Option<f64> {
        ratio(self.lookups.saturating_sub(self.loads), self.loads)
    }
}

/// Counters of one cache tier. What a backend cannot know is `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TierStats {
    /// `memory`, `upstash`, or `l1`/`l2`.
    pub tier: String,
    /// The backend serving the tier.
    pub backend: String,
    /// Reads that found a valid entry.
    pub hits: u64,
    /// Reads that found nothing valid.
    pub misses: u64,
    /// Backend calls that failed.
    pub errors: u64,
    /// Backend calls that timed out.
    pub timeouts: u64,
    /// Calls skipped while the breaker was open.
    pub skipped: u64,
    /// Stored bytes that could not be decoded (counted as misses).
    pub decode_errors: u64,
    /// Entries stored (approximate for the in-process cache).
    pub entries: Option<u64>,
    /// Bytes stored (approximate for the in-process cache).
    pub bytes: Option<u64>,
    /// Entries evicted for space.
    pub evictions: Option<u64>,
    /// HTTP requests sent to Upstash.
    pub requests: Option<u64>,
    /// Redis commands sent: what Upstash bills.
    pub commands: Option<u64>,
}

impl TierStats {
    /// hits / (hits + misses), when there were reads.
    pub fn hit_ratio(&self) -> Option<f64> {
        ratio(self.hits, self.misses)
    }
}

/// Counters of `get_or_load`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LookupStats {
    /// Calls answered by a fresh entry.
    pub hits: u64,
    /// Calls that found no usable entry.
    pub misses: u64,
    /// Loader runs (database loads through the cache).
    pub loads: u64,
    /// Loader runs that failed.
    pub load_errors: u64,
    /// Callers that waited for another caller's load instead of running their own.
    pub coalesced: u64,
    /// Stale values served while a background refresh ran.
    pub stale_served: u64,
    /// Stale values served because the loader failed (fail-safe).
    pub failsafe_served: u64,
    /// Cached bytes that could not be decoded.
    pub decode_errors: u64,
    /// Cache failures hidden from requests (they went on without the cache).
    pub backend_errors: u64,
}

impl LookupStats {
    /// hits / (hits + misses), when there were lookups.
    pub fn hit_ratio(&self) -> Option<f64> {
        ratio(self.hits, self.misses)
    }
}

/// The L2 circuit breaker of a tiered cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerStats {
    /// The state now.
    pub state: BreakerState,
    /// Times it opened.
    pub opened: u64,
    /// Times it closed again after a successful probe.
    pub closed: u64,
}

/// The state of the L2 circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// L2 is used.
    Closed,
    /// L2 is skipped.
    Open,
    /// One caller is probing L2.
    HalfOpen,
}

impl BreakerState {
    /// The name used in the JSON document and in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// The backplane of one instance: the bus that carries cache invalidation notices and realtime
/// events between instances sharing one Upstash.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackplaneStats {
    /// The pub/sub transport (`upstash`, or `local` in tests).
    pub transport: String,
    /// Whether the bus can be relied on now.
    pub state: BackplaneState,
    /// Messages this instance published (notices, events and heartbeats).
    pub published: u64,
    /// Failed publish attempts (the messages stay queued and are retried).
    pub publish_errors: u64,
    /// Messages dropped from a full outbox (receivers see a gap and resync).
    pub dropped: u64,
    /// Messages waiting in the outbox now.
    pub queued: u64,
    /// Messages received from other instances.
    pub received: u64,
    /// Malformed or foreign-version messages ignored.
    pub rejected: u64,
    /// Sequence gaps detected (messages of another instance lost).
    pub gaps: u64,
    /// Interruptions of the subscription, each followed by a reconnect.
    pub interruptions: u64,
    /// Resets of L1 and of the realtime sessions after an interruption or a gap.
    pub resets: u64,
    /// Publish-to-receipt time of the last message from another instance, in microseconds
    /// (on the two hosts' clocks, which are both kept on the Upstash server's time).
    pub lag_micros: Option<u64>,
    /// Realtime events this instance published on the bus.
    pub events_sent: u64,
    /// Realtime events of other instances delivered to this instance's sessions.
    pub events_received: u64,
    /// Events from the bus that did not decode (another version of chat-api on the channel).
    pub events_rejected: u64,
    /// Times every WebSocket session of this instance was closed with 4008 to resync.
    pub ws_resyncs: u64,
}

/// The state of a backplane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackplaneState {
    /// Not yet subscribed.
    #[default]
    Connecting,
    /// Subscribed and hearing its own heartbeats: L1 keeps entries for their whole TTL.
    Connected,
    /// Subscription broken or silent: L1 falls back to its short cap; reconnecting.
    Disconnected,
}

impl BackplaneState {
    /// The name used in the JSON document and in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            BackplaneState::Connecting => "connecting",
            BackplaneState::Connected => "connected",
            BackplaneState::Disconnected => "disconnected",
        }
    }
}

/// Database statements run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DbStats {
    /// All statements.
    pub queries: u64,
    /// Per store operation (`messages`, `post_message`, …).
    pub queries_by_op: BTreeMap<String, u64>,
}

/// HTTP responses answered, over every route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpStats {
    /// Responses by status class.
    pub responses: StatusClasses,
}

/// Counts per HTTP status class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatusClasses {
    /// 1xx.
    #[serde(rename = "1xx")]
    pub informational: u64,
    /// 2xx.
    #[serde(rename = "2xx")]
    pub success: u64,
    /// 3xx.
    #[serde(rename = "3xx")]
    pub redirection: u64,
    /// 4xx.
    #[serde(rename = "4xx")]
    pub client_error: u64,
    /// 5xx.
    #[serde(rename = "5xx")]
    pub server_error: u64,
}

impl StatusClasses {
    /// All responses.
    pub fn total(&self) -> u64 {
        self.informational
            .saturating_add(self.success)
            .saturating_add(self.redirection)
            .saturating_add(self.client_error)
            .saturating_add(self.server_error)
    }

    /// Counts one response with status `code` (anything outside 100..=599 goes to the nearest
    /// class, as HTTP libraries never produce it).
    pub fn record(&mut self, code: u16, n: u64) {
        let slot = match code / 100 {
            0 | 1 => &mut self.informational,
            2 => &mut self.success,
            3 => &mut self.redirection,
            4 => &mut self.client_error,
            _ => &mut self.server_error,
        };
        *slot = slot.saturating_add(n);
    }
}

fn ratio(hits: u64, misses: u64) -> Option<f64> {
    let total = hits.saturating_add(misses);
    (total > 0).then(|| hits as f64 / total as f64)
}

/// Why a body is not a stats document this crate can read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Not JSON, or JSON without a numeric `version`: not chat-api's `/stats`.
    #[error("not a chat-api stats document: {0}")]
    NotStats(#[source] serde_json::Error),
    /// A version this build does not understand.
    #[error("stats document version {found} is not supported (this build reads version {VERSION})")]
    UnsupportedVersion {
        /// The version in the document.
        found: u64,
    },
    /// The right version, but a field has the wrong type.
    #[error("malformed stats document: {0}")]
    Malformed(#[source] serde_json::Error),
}

/// The kind of an [`Error`], for matching without the details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// See [`Error::NotStats`].
    NotStats,
    /// See [`Error::UnsupportedVersion`].
    UnsupportedVersion,
    /// See [`Error::Malformed`].
    Malformed,
}

impl Error {
    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotStats(_) => ErrorKind::NotStats,
            Error::UnsupportedVersion { .. } => ErrorKind::UnsupportedVersion,
            Error::Malformed(_) => ErrorKind::Malformed,
        }
    }

    /// The body is not a stats document at all.
    pub fn is_not_stats(&self) -> bool {
        self.kind() == ErrorKind::NotStats
    }

    /// The document has a version this build does not read.
    pub fn is_unsupported_version(&self) -> bool {
        self.kind() == ErrorKind::UnsupportedVersion
    }
}

/// Reads a stats document, refusing versions other than [`VERSION`].
///
/// # Errors
/// [`Error::NotStats`] when `json` is not an object with a numeric `version`,
/// [`Error::UnsupportedVersion`] for another version, [`Error::Malformed`] when a field has the
/// wrong type.
pub fn parse(json: &[u8]) -> Result<Stats, Error> {
    // The version first: a future document may change what the other fields mean.
    let value: serde_json::Value = serde_json::from_slice(json).map_err(Error::NotStats)?;
    let version = match value.get("version") {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        _ => None,
    };
    let Some(version) = version else {
        return Err(Error::NotStats(serde::de::Error::custom(
            "expected a JSON object with a numeric \"version\"",
        )));
    };
    if version != u64::from(VERSION) {
        return Err(Error::UnsupportedVersion { found: version });
    }
    Stats::deserialize(value).map_err(Error::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_round_trips() {
        let mut stats = Stats::default();
        stats.cache.tiers.push(TierStats {
            tier: "l2".into(),
            backend: "upstash".into(),
            hits: 3,
            misses: 1,
            commands: Some(9),
            ..TierStats::default()
        });
        stats.cache.breaker = Some(BreakerStats {
            state: BreakerState::HalfOpen,
            opened: 2,
            closed: 1,
        });
        stats.http.responses.record(503, 2);
        stats.http.responses.record(200, 5);
        stats.rate_limited.insert("channels".into(), 1);
        stats.backplane = Some(BackplaneStats {
            transport: "upstash".into(),
            state: BackplaneState::Disconnected,
            gaps: 2,
            lag_micros: Some(1500),
            ..BackplaneStats::default()
        });
        let json = serde_json::to_vec(&stats).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["version"], VERSION);
        assert_eq!(value["cache"]["breaker"]["state"], "half_open");
        assert_eq!(value["http"]["responses"]["5xx"], 2);
        assert_eq!(value["backplane"]["state"], "disconnected");
        let back = parse(&json).unwrap();
        assert_eq!(back, stats);
        assert_eq!(back.cache.tiers[0].hit_ratio(), Some(0.75));
        assert_eq!(back.http.responses.total(), 7);
        assert_eq!(back.cache.lookups.hit_ratio(), None);
    }

    #[test]
    fn other_versions_and_other_documents_are_refused() {
        let err = parse(br#"{"version": 2, "cache": {"tiers": "changed meaning"}}"#).unwrap_err();
        assert!(err.is_unsupported_version(), "{err}");
        assert!(err.to_string().contains("version 2"));
        for not_stats in [&b"up 1\n"[..], b"{}", b"{\"status\": \"ok\"}", b"[1]"] {
            let err = parse(not_stats).unwrap_err();
            assert!(err.is_not_stats(), "{err}");
        }
        let err = parse(br#"{"version": 1, "ws_sessions": "many"}"#).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Malformed);
    }

    #[test]
    fn fields_a_reader_does_not_get_default() {
        let stats = parse(br#"{"version": 1, "ws_sessions": 4}"#).unwrap();
        assert_eq!(stats.ws_sessions, 4);
        assert!(stats.cache.tiers.is_empty());
        assert_eq!(
            stats.backplane, None,
            "a document from before the backplane"
        );
        let stats = parse(br#"{"version": 1, "backplane": {"state": "connected"}}"#).unwrap();
        let backplane = stats.backplane.unwrap();
        assert_eq!(backplane.state, BackplaneState::Connected);
        assert_eq!(backplane.gaps, 0);
    }
}
