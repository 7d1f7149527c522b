//! [`TieredBackend`]: a fast L1 (memory) in front of a shared L2 (Upstash) that keeps working when
//! L2 does not.
//!
//! - Every L2 call has a timeout; failures feed a circuit breaker that, once open, skips L2 so an
//!   outage costs one timeout per probe interval.
//! - L2 failures are never returned: reads fall back to L1 (a miss means "load from the source"),
//!   writes and invalidations still reach L1.
//! - A write or invalidation that could not reach L2 is remembered (deduplicated, bounded) and
//!   replayed before L2 is read again, and by a background task as soon as the breaker lets a
//!   call through or the backplane reconnects (other instances read L2 even while this one serves
//!   everything from L1); if too many piled up, the namespaces involved are invalidated on L2
//!   wholesale instead. Either way L2 never serves data a write has replaced once the replay ran.
//! - Without a backplane, L1 keeps entries for at most `l1_max_ttl`, which bounds how stale one
//!   instance's L1 can be after another instance wrote to L2.
//! - On a [`Backplane`] ([`TieredBackend::with_backplane`]), every L2 write and invalidation that
//!   succeeded is announced to the other instances, whose notices are applied to this L1 (never to
//!   L2: the sender already wrote it). While the backplane is connected, L1 keeps entries for
//!   their whole TTL; otherwise it falls back to the `l1_max_ttl` cap. A reset of the backplane
//!   (interruption, gap, silence, reconnection) clears L1.
//! - The fill race: a value read from L2 while a notice for its key (or a reset) was being applied
//!   may be older than the notice. A per-key epoch, read before the L2 read and checked when the
//!   value is about to go into L1, catches that; a fence (fills shared, notices exclusive) makes
//!   the check and the L1 write one step as far as notices are concerned. Tag notices need no epoch:
//!   their stamp rejects every entry created before it, including late fills (see
//!   [`OffsetClock`](crate::OffsetClock) for the clock skew this tolerates across hosts).
//! - [`TieredBackend::l2_only`] guards a remote cache used alone: the same timeouts, breaker and
//!   replay, every read a miss while L2 is away.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    hash::{BuildHasher, RandomState},
    sync::{
        Arc, Mutex, OnceLock, RwLock, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use tokio::{sync::Notify, time::Instant};

use crate::{
    Backplane, BackplaneState, Notice,
    backend::{CacheBackend, DynBackend},
    backplane::NoticeSink,
    breaker::{Breaker, BreakerConfig, Permit, ProbeGuard},
    entry::Entry,
    error::{Error, Result},
    key::{Key, Tag},
    stats::{CacheStats, Counter, Histogram},
    time::{Clock, SystemClock, Timestamp},
};

/// Settings of a [`TieredBackend`]: `TieredConfig::default()`, changed with the `with_*` methods.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TieredConfig {
    /// Timeout of every L2 call (default 500 ms).
    pub l2_timeout: Duration,
    /// Longest time an entry stays in L1 (default 5 s) unless a connected backplane keeps L1
    /// coherent, in which case entries stay for their whole TTL.
    pub l1_max_ttl: Duration,
    /// The L2 circuit breaker.
    pub breaker: BreakerConfig,
    /// Most invalidations remembered during an L2 outage before falling back to invalidating the
    /// whole namespace on recovery (default 10,000).
    pub max_pending: usize,
    /// Whether `set`/`set_many` are announced on the backplane, so other instances drop the key
    /// from L1 (default true). An application whose only writes are tag invalidations, and whose
    /// sets are fills of data read after them, turns this off and saves one published message per
    /// fill.
    pub announce_sets: bool,
}

impl Default for TieredConfig {
    fn default() -> Self {
        TieredConfig {
            l2_timeout: Duration::from_millis(500),
            l1_max_ttl: Duration::from_secs(5),
            breaker: BreakerConfig::default(),
            max_pending: 10_000,
            announce_sets: true,
        }
    }
}

impl TieredConfig {
    /// Sets the timeout of every L2 call.
    #[must_use]
    pub fn with_l2_timeout(mut self, timeout: Duration) -> Self {
        self.l2_timeout = timeout;
        self
    }

    /// Sets the longest time an entry stays in L1 without a connected backplane.
    #[must_use]
    pub fn with_l1_max_ttl(mut self, ttl: Duration) -> Self {
        self.l1_max_ttl = ttl;
        self
    }

    /// Sets the L2 circuit breaker.
    #[must_use]
    pub fn with_breaker(mut self, breaker: BreakerConfig) -> Self {
        self.breaker = breaker;
        self
    }

    /// Sets how many invalidations are remembered during an L2 outage.
    #[must_use]
    pub fn with_max_pending(mut self, max_pending: usize) -> Self {
        self.max_pending = max_pending;
        self
    }

    /// Sets whether `set`/`set_many` are announced on the backplane.
    #[must_use]
    pub fn with_announce_sets(mut self, announce: bool) -> Self {
        self.announce_sets = announce;
        self
    }
}

/// L1 + L2 with timeouts, a breaker, fallback and recovery. See the module docs.
///
/// A handle on shared state: invalidations that missed L2 are replayed by a background task as
/// soon as the breaker lets one through, not only when a read happens to miss L1.
pub struct TieredBackend {
    core: Arc<Core>,
}

struct Core {
    // Ourselves, for the replay task.
    me: Weak<Core>,
    l1: DynBackend,
    l2: DynBackend,
    // False for `l2_only`: the backend then reports the L2's name and only its tier.
    has_l1: bool,
    config: TieredConfig,
    clock: Arc<dyn Clock>,
    breaker: Breaker,
    pending: Mutex<Pending>,
    has_pending: AtomicBool,
    // Serializes replays so one caller replays while the others skip L2.
    replay_lock: tokio::sync::Mutex<()>,
    counters: TierCounters,
    bus: OnceLock<Bus>,
    // A replay task is running (at most one).
    replaying: AtomicBool,
    // Wakes the replay task early: the backplane (re)connected, so L2 is likely back.
    kick: Arc<Notify>,
}

/// The backplane of a tiered cache and what its receive loop reaches.
struct Bus {
    backplane: Backplane,
    link: Arc<L1Link>,
}

/// Shortest pause between two replay attempts of the background task.
const REPLAY_RETRY_MIN: Duration = Duration::from_millis(100);

/// Slots of the per-key epoch table; a notice for a key makes fills of every key in its slot
/// skip L1 once, so more slots mean fewer needless skips.
const KEY_EPOCHS: usize = 1024;

/// The L1 side of a tiered cache on a backplane, shared with the backplane's receive loop.
struct L1Link {
    l1: DynBackend,
    clock: Arc<dyn Clock>,
    // The namespace tags of every key this cache put into L1: what a reset has to drop when L1
    // cannot be cleared outright.
    namespaces: RwLock<HashSet<Tag>>,
    reset_epoch: AtomicU64,
    key_epochs: Box<[AtomicU64]>,
    hasher: RandomState,
    // Fills check their ticket and write L1 under the shared side; notices and resets bump the
    // epochs and drop L1 copies under the exclusive side. So a fill is either wholly before a
    // notice (which then drops it) or sees the notice's bump and stays out: no moment at which a
    // reader could find a stale copy after the notice was applied.
    fence: tokio::sync::RwLock<()>,
    // Wakes the replay task: a reset follows every (re)connection of the backplane.
    kick: Arc<Notify>,
}

/// The epochs a fill read before going to L2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FillTicket {
    reset: u64,
    key: u64,
}

impl L1Link {
    fn slot(&self, key: &Key) -> &AtomicU64 {
        let hash = self.hasher.hash_one(key.as_str());
        &self.key_epochs[(hash % KEY_EPOCHS as u64) as usize]
    }

    fn ticket(&self, key: &Key) -> FillTicket {
        FillTicket {
            reset: self.reset_epoch.load(Ordering::SeqCst),
            key: self.slot(key).load(Ordering::SeqCst),
        }
    }

    /// Marks `key` as changed: fills that read L2 before now will not stay in L1.
    fn bump(&self, key: &Key) {
        self.slot(key).fetch_add(1, Ordering::SeqCst);
    }

    fn remember_namespace(&self, key: &Key) {
        let tag = key.namespace_tag();
        let known = self
            .namespaces
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(tag);
        if !known {
            self.namespaces
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(tag.clone());
        }
    }

    /// Drops this L1's copies of `keys` after their L2 entries changed.
    async fn forget(&self, keys: &[Key]) {
        let _fence = self.fence.write().await;
        for key in keys {
            self.bump(key);
        }
        if let Err(err) = self.l1.delete_many(keys).await {
            tracing::warn!(error = %err, "cache L1 delete of a backplane notice failed");
        }
    }
}

#[async_trait]
impl NoticeSink for L1Link {
    async fn apply(&self, notice: &Notice) {
        let result = match notice {
            // The stamp also rejects fills in flight, whose data is older than it.
            Notice::InvalidateTags { tags, at } => self.l1.invalidate_tags(tags, *at).await,
            Notice::DeleteKeys(keys) => {
                self.forget(keys).await;
                Ok(())
            }
        };
        if let Err(err) = result {
            tracing::warn!(error = %err, "cache L1 invalidation of a backplane notice failed");
        }
    }

    async fn reset(&self) {
        self.kick.notify_one();
        let _fence = self.fence.write().await;
        self.reset_epoch.fetch_add(1, Ordering::SeqCst);
        match self.l1.clear_local().await {
            Ok(true) => return,
            Ok(false) => {}
            Err(err) => tracing::warn!(error = %err, "cache L1 clear failed"),
        }
        // An L1 that cannot be cleared: invalidate the namespaces it holds as of now.
        let tags: Vec<Tag> = self
            .namespaces
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        if !tags.is_empty() {
            if let Err(err) = self.l1.invalidate_tags(&tags, self.clock.now()).await {
                tracing::warn!(error = %err, "cache L1 reset failed");
            }
        }
    }
}

#[derive(Debug, Default)]
struct TierCounters {
    l1_hits: Counter,
    l1_misses: Counter,
    l2_hits: Counter,
    l2_misses: Counter,
    l2_errors: Counter,
    l2_timeouts: Counter,
    l2_skipped: Counter,
    l2_latency: Histogram,
}

/// Writes that did not reach L2.
#[derive(Debug, Default)]
struct Pending {
    deletes: HashSet<Key>,
    tags: HashMap<Tag, Timestamp>,
    // Set when the queue overflowed: replay invalidates these namespaces instead.
    overflow_namespaces: HashSet<Tag>,
}

impl Pending {
    fn len(&self) -> usize {
        self.deletes.len() + self.tags.len() + self.overflow_namespaces.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn overflow(&mut self) {
        let namespaces: Vec<Tag> = self
            .deletes
            .iter()
            .map(|k| k.namespace_tag().clone())
            .chain(self.tags.keys().map(|t| t.namespace().all_tag().clone()))
            .collect();
        self.overflow_namespaces.extend(namespaces);
        self.deletes.clear();
        self.tags.clear();
    }

    /// Puts back what a failed replay took out, keeping the newest stamps.
    fn merge(&mut self, other: Pending) {
        self.deletes.extend(other.deletes);
        for (tag, at) in other.tags {
            let slot = self.tags.entry(tag).or_insert(at);
            *slot = (*slot).max(at);
        }
        self.overflow_namespaces.extend(other.overflow_namespaces);
    }
}

impl std::fmt::Debug for TieredBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let core = &self.core;
        f.debug_struct("TieredBackend")
            .field("l1", &core.l1.name())
            .field("l2", &core.l2.name())
            .field("config", &core.config)
            .field("breaker", &core.breaker.state())
            .finish_non_exhaustive()
    }
}

enum L2Gate {
    Use,
    Skip,
}

impl TieredBackend {
    /// `l1` in front of `l2`.
    pub fn new(l1: DynBackend, l2: DynBackend, config: TieredConfig) -> Self {
        TieredBackend::with_clock(l1, l2, config, Box::new(SystemClock))
    }

    /// `l2` alone behind the same timeouts, breaker and replay, with no L1 (every read a miss
    /// while L2 is away). It reports `l2`'s name and only its tier.
    pub fn l2_only(l2: DynBackend, config: TieredConfig) -> Self {
        TieredBackend::build(
            Arc::new(crate::NoopBackend::new()),
            false,
            l2,
            config,
            Arc::new(SystemClock),
        )
    }

    /// Like [`TieredBackend::new`] with a clock for the stamps of wholesale invalidations.
    pub fn with_clock(
        l1: DynBackend,
        l2: DynBackend,
        config: TieredConfig,
        clock: Box<dyn Clock>,
    ) -> Self {
        TieredBackend::build(l1, true, l2, config, Arc::from(clock))
    }

    fn build(
        l1: DynBackend,
        has_l1: bool,
        l2: DynBackend,
        config: TieredConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let core = Arc::new_cyclic(|me| Core {
            me: me.clone(),
            l1,
            l2,
            has_l1,
            breaker: Breaker::new(config.breaker),
            config,
            clock,
            pending: Mutex::default(),
            has_pending: AtomicBool::new(false),
            replay_lock: tokio::sync::Mutex::new(()),
            counters: TierCounters::default(),
            bus: OnceLock::new(),
            replaying: AtomicBool::new(false),
            kick: Arc::new(Notify::new()),
        });
        TieredBackend { core }
    }

    /// Puts this cache on `backplane`: L2 writes and invalidations are announced to the other
    /// instances after they succeeded, their notices are applied to L1, and L1 keeps entries for
    /// their whole TTL while the backplane is connected (see the `backplane` rules).
    pub fn with_backplane(self, backplane: crate::Backplane) -> Self {
        let core = &self.core;
        let link = Arc::new(L1Link {
            l1: Arc::clone(&core.l1),
            clock: Arc::clone(&core.clock),
            namespaces: RwLock::default(),
            reset_epoch: AtomicU64::new(0),
            key_epochs: (0..KEY_EPOCHS).map(|_| AtomicU64::new(0)).collect(),
            hasher: RandomState::new(),
            fence: tokio::sync::RwLock::new(()),
            kick: Arc::clone(&core.kick),
        });
        let sink: Arc<dyn NoticeSink> = link.clone();
        backplane.attach(Arc::downgrade(&sink));
        if core.bus.set(Bus { backplane, link }).is_err() {
            tracing::warn!("TieredBackend::with_backplane called twice; the first backplane stays");
        }
        self
    }

    /// The backplane this cache is on, if any.
    pub fn backplane(&self) -> Option<&Backplane> {
        self.core.backplane()
    }

    /// The L1 backend.
    pub fn l1(&self) -> &DynBackend {
        &self.core.l1
    }

    /// The L2 backend.
    pub fn l2(&self) -> &DynBackend {
        &self.core.l2
    }

    /// Invalidations waiting for L2.
    pub fn pending_len(&self) -> usize {
        self.core.pending_len()
    }
}

impl Core {
    fn backplane(&self) -> Option<&Backplane> {
        self.bus.get().map(|bus| &bus.backplane)
    }

    /// Whether L1 may keep entries for their whole TTL: the backplane is connected.
    fn full_ttl_in_l1(&self) -> bool {
        self.bus
            .get()
            .is_some_and(|bus| bus.backplane.state() == BackplaneState::Connected)
    }

    /// The copy of `entry` L1 keeps: whole while the backplane is connected, capped otherwise.
    fn l1_copy(&self, key: &Key, entry: &Entry) -> Entry {
        if let Some(bus) = self.bus.get() {
            bus.link.remember_namespace(key);
        }
        if self.full_ttl_in_l1() {
            entry.clone()
        } else {
            self.cap_for_l1(entry)
        }
    }

    fn ticket(&self, key: &Key) -> Option<FillTicket> {
        self.bus.get().map(|bus| bus.link.ticket(key))
    }

    /// Puts what L2 returned into L1, unless a notice or reset for the key happened since
    /// `ticket` was taken (before the L2 read): that value may be older than the notice.
    async fn fill_l1(&self, items: Vec<(Key, Entry, Option<FillTicket>)>) {
        let Some(bus) = self.bus.get() else {
            let fill: Vec<(Key, Entry)> = items
                .into_iter()
                .map(|(k, e, _)| {
                    let capped = self.cap_for_l1(&e);
                    (k, capped)
                })
                .collect();
            let _ = self.l1.set_many(&fill).await;
            return;
        };
        let link = &bus.link;
        let _fence = link.fence.read().await;
        let fill: Vec<(Key, Entry)> = items
            .into_iter()
            .filter(|(key, _, ticket)| *ticket == Some(link.ticket(key)))
            .map(|(key, entry, _)| {
                let copy = self.l1_copy(&key, &entry);
                (key, copy)
            })
            .collect();
        if !fill.is_empty() {
            let _ = self.l1.set_many(&fill).await;
        }
    }

    /// Tells the other instances what changed on L2 (only after it did). A failed publish does not
    /// fail the cache call: the notice stays queued, and receivers that miss it reset.
    async fn announce(&self, notice: Notice) {
        if let Some(bus) = self.bus.get() {
            if let Err(err) = bus.backplane.publish_invalidation(notice).await {
                tracing::debug!(error = %err, "backplane notice not confirmed in time; it stays queued");
            }
        }
    }

    /// After an L2 delete: L1 may have been refilled from L2 between our L1 delete and the L2
    /// delete, with the value just deleted. Take it out again, and fence concurrent fills.
    async fn forget_locally(&self, keys: &[Key]) {
        if let Some(bus) = self.bus.get() {
            bus.link.forget(keys).await;
        }
    }

    fn pending_len(&self) -> usize {
        self.pending.lock().expect("pending lock").len()
    }

    fn cap_for_l1(&self, entry: &Entry) -> Entry {
        let cap = self.clock.now().saturating_add(self.config.l1_max_ttl);
        if entry.local_expires_at() <= cap {
            entry.clone()
        } else {
            entry.with_local_expiry(cap)
        }
    }

    /// Decides whether this call may use L2, probing and replaying pending writes first if needed.
    async fn gate(&self) -> L2Gate {
        match self.breaker.permit() {
            Permit::Deny => {
                self.counters.l2_skipped.inc();
                L2Gate::Skip
            }
            Permit::Allow => {
                if self.has_pending.load(Ordering::Acquire) && !self.replay(false).await {
                    return L2Gate::Skip;
                }
                L2Gate::Use
            }
            Permit::Probe => {
                let guard = ProbeGuard::new(&self.breaker);
                let ok = self.replay(true).await;
                guard.disarm();
                if ok { L2Gate::Use } else { L2Gate::Skip }
            }
        }
    }

    /// Replays pending writes on L2. As a probe, pings first when nothing is
    /// pending and resolves the breaker. Returns whether L2 may be used.
    async fn replay(&self, probe: bool) -> bool {
        let Ok(_lock) = self.replay_lock.try_lock() else {
            // Someone else is replaying; until they finish, L2 may be behind.
            if probe {
                self.breaker.abandon_probe();
            }
            self.counters.l2_skipped.inc();
            return false;
        };
        let batch = std::mem::take(&mut *self.pending.lock().expect("pending lock"));
        let result = if batch.is_empty() {
            if probe {
                self.timed(self.l2.ping()).await.map(|_| Vec::new())
            } else {
                Ok(Vec::new())
            }
        } else {
            self.replay_batch(&batch).await
        };
        match result {
            Ok(notices) => {
                if !batch.is_empty() {
                    tracing::info!(replayed = batch.len(), "replayed cache invalidations on L2");
                }
                {
                    let pending = self.pending.lock().expect("pending lock");
                    self.has_pending
                        .store(!pending.is_empty(), Ordering::Release);
                }
                self.breaker.on_success();
                // Only now that L2 has them may the other instances hear of them.
                for notice in notices {
                    if let Notice::DeleteKeys(keys) = &notice {
                        self.forget_locally(keys).await;
                    }
                    self.announce(notice).await;
                }
                true
            }
            Err(_) => {
                self.pending.lock().expect("pending lock").merge(batch);
                self.breaker.on_failure();
                false
            }
        }
    }

    /// Replays `batch` on L2; returns the notices that announce it.
    async fn replay_batch(&self, batch: &Pending) -> Result<Vec<Notice>> {
        let mut notices = Vec::new();
        if !batch.overflow_namespaces.is_empty() {
            let tags: Vec<Tag> = batch.overflow_namespaces.iter().cloned().collect();
            let now = self.clock.now();
            self.timed(self.l2.invalidate_tags(&tags, now)).await?;
            notices.push(Notice::InvalidateTags { tags, at: now });
        }
        // One call at the newest stamp covers every missed tag: it only invalidates more (entries
        // created between a tag's own stamp and the newest one), never less.
        if let Some(newest) = batch.tags.values().max().copied() {
            let tags: Vec<Tag> = batch.tags.keys().cloned().collect();
            self.timed(self.l2.invalidate_tags(&tags, newest)).await?;
            notices.push(Notice::InvalidateTags { tags, at: newest });
        }
        if !batch.deletes.is_empty() {
            let keys: Vec<Key> = batch.deletes.iter().cloned().collect();
            self.timed(self.l2.delete_many(&keys)).await?;
            notices.push(Notice::DeleteKeys(keys));
        }
        Ok(notices)
    }

    fn remember(&self, f: impl FnOnce(&mut Pending)) {
        let mut pending = self.pending.lock().expect("pending lock");
        f(&mut pending);
        if pending.deletes.len() + pending.tags.len() > self.config.max_pending {
            tracing::warn!(
                max = self.config.max_pending,
                "too many cache invalidations missed L2; its namespaces will be invalidated on recovery"
            );
            pending.overflow();
        }
        self.has_pending.store(true, Ordering::Release);
        drop(pending);
        self.start_replay_task();
    }

    /// Replays what missed L2 as soon as the breaker lets a call through, so other instances (which
    /// read L2, and with a backplane keep L1 copies for their whole TTL) stop seeing what the
    /// missed writes replaced even when this instance serves everything from L1 meanwhile. At most
    /// one task; it ends when nothing is pending (or the cache is dropped). Without a Tokio
    /// runtime, replay happens on the next call that reaches L2, as before.
    fn start_replay_task(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.replaying.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.me.clone();
        let kick = Arc::clone(&self.kick);
        runtime.spawn(async move {
            loop {
                let wait = match me.upgrade() {
                    Some(core) => core.breaker.until_permit(),
                    None => return,
                };
                tokio::select! {
                    () = tokio::time::sleep(wait.max(REPLAY_RETRY_MIN)) => {}
                    () = kick.notified() => {
                        if let Some(core) = me.upgrade() {
                            // The backplane just reached the server: probe L2 now.
                            core.breaker.probe_soon();
                        }
                    }
                }
                let Some(core) = me.upgrade() else { return };
                if !core.has_pending.load(Ordering::Acquire) {
                    core.replaying.store(false, Ordering::Release);
                    // A write may have queued something between the check and the store.
                    if !core.has_pending.load(Ordering::Acquire)
                        || core.replaying.swap(true, Ordering::AcqRel)
                    {
                        return;
                    }
                    continue;
                }
                // Through the gate, like any call: it probes when the breaker is due and replays.
                let _ = core.gate().await;
            }
        });
    }

    /// Runs an L2 call with the timeout, recording latency and errors.
    async fn timed<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.config.l2_timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                backend: self.l2.name(),
                after: self.config.l2_timeout,
            }),
        };
        self.counters.l2_latency.record(started.elapsed());
        if let Err(err) = &result {
            if err.is_timeout() {
                self.counters.l2_timeouts.inc();
            } else {
                self.counters.l2_errors.inc();
            }
            tracing::debug!(error = %err, "cache L2 call failed");
        }
        result
    }

    /// An L2 call made after the gate let us through: feeds the breaker.
    async fn l2_call<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        let result = self.timed(call).await;
        match &result {
            Ok(_) => self.breaker.on_success(),
            Err(_) => self.breaker.on_failure(),
        }
        result
    }

    async fn l1_get_many(&self, keys: &[Key]) -> Vec<Option<Entry>> {
        match self.l1.get_many(keys).await {
            Ok(entries) => entries,
            Err(err) => {
                tracing::warn!(error = %err, "cache L1 read failed");
                vec![None; keys.len()]
            }
        }
    }
}

#[async_trait]
impl CacheBackend for TieredBackend {
    /// `tiered`, or the L2's name for [`TieredBackend::l2_only`].
    fn name(&self) -> &'static str {
        self.core.name()
    }

    fn get_now(&self, key: &Key) -> Option<Entry> {
        self.core.get_now(key)
    }

    fn get_now_named(&self, name: &str) -> Option<Entry> {
        self.core.get_now_named(name)
    }

    async fn get(&self, key: &Key) -> Result<Option<Entry>> {
        self.core.get(key).await
    }

    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Entry>>> {
        self.core.get_many(keys).await
    }

    async fn set(&self, key: &Key, entry: Entry) -> Result<()> {
        self.core.set(key, entry).await
    }

    async fn set_many(&self, items: &[(Key, Entry)]) -> Result<()> {
        self.core.set_many(items).await
    }

    async fn delete(&self, key: &Key) -> Result<bool> {
        self.core.delete(key).await
    }

    async fn delete_many(&self, keys: &[Key]) -> Result<u64> {
        self.core.delete_many(keys).await
    }

    async fn invalidate_tags(&self, tags: &[Tag], at: Timestamp) -> Result<()> {
        self.core.invalidate_tags(tags, at).await
    }

    /// Pings L2 (through the breaker); L1 is in-process and always answers.
    async fn ping(&self) -> Result<Duration> {
        self.core.ping().await
    }

    fn stats(&self) -> CacheStats {
        self.core.stats()
    }
}

#[async_trait]
impl CacheBackend for Core {
    /// `tiered`, or the L2's name for [`TieredBackend::l2_only`].
    fn name(&self) -> &'static str {
        if self.has_l1 {
            "tiered"
        } else {
            self.l2.name()
        }
    }

    fn get_now(&self, key: &Key) -> Option<Entry> {
        let entry = self.l1.get_now(key)?;
        self.counters.l1_hits.inc();
        Some(entry)
    }

    fn get_now_named(&self, name: &str) -> Option<Entry> {
        let entry = self.l1.get_now_named(name)?;
        self.counters.l1_hits.inc();
        Some(entry)
    }

    async fn get(&self, key: &Key) -> Result<Option<Entry>> {
        if let Ok(Some(entry)) = self.l1.get(key).await {
            self.counters.l1_hits.inc();
            return Ok(Some(entry));
        }
        self.counters.l1_misses.inc();
        if let L2Gate::Skip = self.gate().await {
            return Ok(None);
        }
        let ticket = self.ticket(key);
        match self.l2_call(self.l2.get(key)).await {
            Ok(Some(entry)) => {
                self.counters.l2_hits.inc();
                self.fill_l1(vec![(key.clone(), entry.clone(), ticket)])
                    .await;
                Ok(Some(entry))
            }
            Ok(None) => {
                self.counters.l2_misses.inc();
                Ok(None)
            }
            Err(_) => Ok(None),
        }
    }

    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Entry>>> {
        let mut out = self.l1_get_many(keys).await;
        let missing: Vec<usize> = (0..keys.len()).filter(|&i| out[i].is_none()).collect();
        self.counters
            .l1_hits
            .add((keys.len() - missing.len()) as u64);
        self.counters.l1_misses.add(missing.len() as u64);
        if missing.is_empty() {
            return Ok(out);
        }
        if let L2Gate::Skip = self.gate().await {
            return Ok(out);
        }
        let l2_keys: Vec<Key> = missing.iter().map(|&i| keys[i].clone()).collect();
        let tickets: Vec<Option<FillTicket>> = l2_keys.iter().map(|k| self.ticket(k)).collect();
        if let Ok(found) = self.l2_call(self.l2.get_many(&l2_keys)).await {
            let mut fill = Vec::new();
            for ((&i, entry), ticket) in missing.iter().zip(found).zip(tickets) {
                match entry {
                    Some(entry) => {
                        self.counters.l2_hits.inc();
                        fill.push((keys[i].clone(), entry.clone(), ticket));
                        out[i] = Some(entry);
                    }
                    None => self.counters.l2_misses.inc(),
                }
            }
            if !fill.is_empty() {
                self.fill_l1(fill).await;
            }
        }
        Ok(out)
    }

    async fn set(&self, key: &Key, entry: Entry) -> Result<()> {
        let _ = self.l1.set(key, self.l1_copy(key, &entry)).await;
        let reached = match self.gate().await {
            L2Gate::Use => self.l2_call(self.l2.set(key, entry)).await.is_ok(),
            L2Gate::Skip => false,
        };
        if reached && self.config.announce_sets {
            self.announce(Notice::DeleteKeys(vec![key.clone()])).await;
        }
        if !reached {
            // L2 may still hold an older value for this key.
            self.remember(|p| {
                p.deletes.insert(key.clone());
            });
        }
        Ok(())
    }

    async fn set_many(&self, items: &[(Key, Entry)]) -> Result<()> {
        let capped: Vec<(Key, Entry)> = items
            .iter()
            .map(|(k, e)| (k.clone(), self.l1_copy(k, e)))
            .collect();
        let _ = self.l1.set_many(&capped).await;
        let reached = match self.gate().await {
            L2Gate::Use => self.l2_call(self.l2.set_many(items)).await.is_ok(),
            L2Gate::Skip => false,
        };
        if reached && self.config.announce_sets && !items.is_empty() {
            let keys = items.iter().map(|(k, _)| k.clone()).collect();
            self.announce(Notice::DeleteKeys(keys)).await;
        }
        if !reached {
            self.remember(|p| p.deletes.extend(items.iter().map(|(k, _)| k.clone())));
        }
        Ok(())
    }

    async fn delete(&self, key: &Key) -> Result<bool> {
        let in_l1 = self.l1.delete(key).await.unwrap_or(false);
        let in_l2 = match self.gate().await {
            L2Gate::Use => self.l2_call(self.l2.delete(key)).await.ok(),
            L2Gate::Skip => None,
        };
        match in_l2 {
            Some(existed) => {
                let keys = std::slice::from_ref(key);
                self.forget_locally(keys).await;
                self.announce(Notice::DeleteKeys(keys.to_vec())).await;
                Ok(in_l1 || existed)
            }
            None => {
                self.remember(|p| {
                    p.deletes.insert(key.clone());
                });
                Ok(in_l1)
            }
        }
    }

    async fn delete_many(&self, keys: &[Key]) -> Result<u64> {
        let in_l1 = self.l1.delete_many(keys).await.unwrap_or(0);
        let in_l2 = match self.gate().await {
            L2Gate::Use => self.l2_call(self.l2.delete_many(keys)).await.ok(),
            L2Gate::Skip => None,
        };
        match in_l2 {
            Some(n) => {
                if !keys.is_empty() {
                    self.forget_locally(keys).await;
                    self.announce(Notice::DeleteKeys(keys.to_vec())).await;
                }
                Ok(n.max(in_l1))
            }
            None => {
                self.remember(|p| p.deletes.extend(keys.iter().cloned()));
                Ok(in_l1)
            }
        }
    }

    async fn invalidate_tags(&self, tags: &[Tag], at: Timestamp) -> Result<()> {
        let _ = self.l1.invalidate_tags(tags, at).await;
        let reached = match self.gate().await {
            L2Gate::Use => self
                .l2_call(self.l2.invalidate_tags(tags, at))
                .await
                .is_ok(),
            L2Gate::Skip => false,
        };
        if reached && !tags.is_empty() {
            self.announce(Notice::InvalidateTags {
                tags: tags.to_vec(),
                at,
            })
            .await;
        }
        if !reached {
            self.remember(|p| {
                for tag in tags {
                    let slot = p.tags.entry(tag.clone()).or_insert(at);
                    *slot = (*slot).max(at);
                }
            });
        }
        Ok(())
    }

    /// Pings L2 (through the breaker); L1 is in-process and always answers.
    async fn ping(&self) -> Result<Duration> {
        match self.gate().await {
            L2Gate::Use => self.l2_call(self.l2.ping()).await,
            L2Gate::Skip => Err(Error::Unavailable {
                backend: self.l2.name(),
            }),
        }
    }

    fn stats(&self) -> CacheStats {
        let c = &self.counters;
        let mut l1 = self.l1.stats().tiers.into_iter().next().unwrap_or_default();
        l1.tier = "l1".into();
        l1.hits = c.l1_hits.get();
        l1.misses = c.l1_misses.get();
        let mut l2 = self.l2.stats().tiers.into_iter().next().unwrap_or_default();
        if self.has_l1 {
            l2.tier = "l2".into();
        }
        l2.hits = c.l2_hits.get();
        l2.misses = c.l2_misses.get();
        l2.errors = c.l2_errors.get();
        l2.timeouts = c.l2_timeouts.get();
        l2.skipped = c.l2_skipped.get();
        l2.latency = Some(c.l2_latency.snapshot());
        CacheStats {
            tiers: if self.has_l1 { vec![l1, l2] } else { vec![l2] },
            breaker: Some(self.breaker.stats()),
            pending_invalidations: self.pending_len() as u64,
            backplane: self.bus.get().map(|bus| bus.backplane.stats()),
            ..CacheStats::default()
        }
    }
}
