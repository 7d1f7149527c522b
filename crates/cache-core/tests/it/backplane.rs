//! Tiered caches of several instances on one shared L2 and one in-process backplane
//! (`LocalTransport`): what is announced, when, what receivers do with it, and how interruptions,
//! gaps, silence, a failing transport and clock skew are handled. Waits are polls with a deadline.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use cache_core::{
    AppMessage, Backplane, BackplaneConfig, BackplaneState, BackplaneTransport, BreakerConfig,
    Cache, CacheBackend, CacheConfig, CacheStats, Clock, DynBackend, Entry, Key, LocalTransport,
    Namespace, Notice, OffsetClock, Result, SystemClock, Tag, TieredBackend, TieredConfig,
    Timestamp, TtlPolicy,
    testing::{ChaosBackend, ChaosControl, Fault, ManualClock, MapBackend},
};
use tokio::sync::{Notify, broadcast};

const L1_MAX_TTL: Duration = Duration::from_secs(5);
const ENTRY_TTL: Duration = Duration::from_secs(300);
const DEADLINE: Duration = Duration::from_secs(10);

/// Heartbeats so rare that only the messages a test sends (and each connection's probe) flow.
fn quiet() -> BackplaneConfig {
    let mut config = BackplaneConfig::default();
    config.heartbeat = Duration::from_secs(3600);
    config.silence_timeout = Duration::from_secs(7200);
    config.publish_timeout = Duration::from_secs(5);
    config
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn eventually_async<F: Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn wait_state(backplane: &Backplane, state: BackplaneState) {
    let mut watch = backplane.watch_state();
    tokio::time::timeout(DEADLINE, watch.wait_for(|s| *s == state))
        .await
        .unwrap_or_else(|_| panic!("backplane never became {state:?}"))
        .unwrap();
}

async fn next_app(rx: &mut broadcast::Receiver<AppMessage>) -> AppMessage {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("no app message in time")
        .expect("app channel closed")
}

/// One chat-api instance's cache: its own L1, the shared L2 behind a fault injector, and its
/// backplane on the shared bus.
struct Node {
    tiered: Arc<TieredBackend>,
    l1: Arc<MapBackend>,
    chaos: ChaosControl,
    backplane: Backplane,
}

impl Node {
    fn bp_stats(&self) -> cache_core::BackplaneStats {
        self.tiered.stats().backplane.expect("backplane stats")
    }
}

struct World {
    bus: LocalTransport,
    l2: Arc<MapBackend>,
    clock: Arc<ManualClock>,
    ns: Namespace,
}

impl World {
    fn new() -> Self {
        let clock = Arc::new(ManualClock::default());
        World {
            bus: LocalTransport::new(),
            l2: Arc::new(MapBackend::with_clock(clock.clone())),
            clock,
            ns: Namespace::new("bp", 1).unwrap(),
        }
    }

    fn node(&self, config: BackplaneConfig) -> Node {
        self.node_over(self.l2.clone(), config)
    }

    fn node_over(&self, l2: DynBackend, config: BackplaneConfig) -> Node {
        let l1 = Arc::new(MapBackend::with_clock(self.clock.clone()));
        let (chaotic, chaos) = ChaosBackend::new(l2);
        let backplane = Backplane::start(Arc::new(self.bus.clone()), config, Arc::new(SystemClock));
        let tiered = TieredBackend::with_clock(
            l1.clone(),
            Arc::new(chaotic),
            TieredConfig::default()
                .with_l2_timeout(Duration::from_secs(2))
                .with_l1_max_ttl(L1_MAX_TTL)
                // The breaker has its own tests; here it would only hide the replay.
                .with_breaker(
                    BreakerConfig::default()
                        .with_failure_threshold(1_000)
                        .with_open_for(Duration::from_secs(1)),
                ),
            Box::new(self.clock.clone()),
        )
        .with_backplane(backplane.clone());
        Node {
            tiered: Arc::new(tiered),
            l1,
            chaos,
            backplane,
        }
    }

    async fn connected_nodes(&self, n: usize) -> Vec<Node> {
        let nodes: Vec<Node> = (0..n).map(|_| self.node(quiet())).collect();
        for node in &nodes {
            wait_state(&node.backplane, BackplaneState::Connected).await;
        }
        // Each node says hello and waits for everyone else's: whatever a node published before
        // (its probe) has then arrived too, so counters the tests compare start from here.
        let mut apps: Vec<_> = nodes.iter().map(|n| n.backplane.subscribe_app()).collect();
        for node in &nodes {
            node.backplane.publish_app(Bytes::from_static(b"hello"));
        }
        for app in &mut apps {
            for _ in 1..n {
                assert!(matches!(next_app(app).await, AppMessage::Message { .. }));
            }
        }
        nodes
    }

    fn entry(&self, json: &'static str) -> Entry {
        let now = self.clock.now();
        let until = now.saturating_add(ENTRY_TTL);
        Entry::new(Bytes::from_static(json.as_bytes()), now, until, until)
    }

    fn key(&self, i: u32) -> Key {
        self.ns.key("k", &[&i])
    }

    fn tag(&self, i: u32) -> Tag {
        self.ns.tag("t", &[&i])
    }
}

fn value(entry: Option<Entry>) -> Option<String> {
    entry.map(|e| String::from_utf8(e.value().to_vec()).unwrap())
}

#[tokio::test]
async fn an_instance_ignores_its_own_notices() {
    let world = World::new();
    let a = world.node(quiet());
    wait_state(&a.backplane, BackplaneState::Connected).await;
    let key = world.key(1);
    a.tiered.set(&key, world.entry("\"v1\"")).await.unwrap();
    let published = a.bp_stats().published;
    assert!(
        published >= 2,
        "the probe and the set's notice: {published}"
    );
    // Had A applied its own notice, the value it just wrote would be gone from its L1.
    let l2_calls = a.chaos.calls();
    assert_eq!(
        value(a.tiered.get(&key).await.unwrap()).as_deref(),
        Some("\"v1\"")
    );
    assert_eq!(a.chaos.calls(), l2_calls, "served from L1");
    assert!(a.l1.raw(&key).is_some());
    let stats = a.bp_stats();
    assert_eq!((stats.received, stats.rejected, stats.gaps), (0, 0, 0));
}

#[tokio::test]
async fn notices_are_applied_to_l1_only() {
    let world = World::new();
    let nodes = world.connected_nodes(2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let tagged = world.key(2).tagged(&[world.tag(7)]);
    let plain = world.key(3);
    world.l2.set(&tagged, world.entry("\"t\"")).await.unwrap();
    world.l2.set(&plain, world.entry("\"p\"")).await.unwrap();
    assert!(b.tiered.get(&tagged).await.unwrap().is_some());
    assert!(b.tiered.get(&plain).await.unwrap().is_some());
    assert!(b.l1.raw(&tagged).is_some() && b.l1.raw(&plain).is_some());
    let b_l2_calls = b.chaos.calls();

    a.tiered.delete(&plain).await.unwrap();
    eventually("B dropped the deleted key from L1", || {
        b.l1.raw(&plain).is_none()
    })
    .await;
    a.tiered
        .invalidate_tags(&[world.tag(7)], world.clock.now())
        .await
        .unwrap();
    eventually_async("B's L1 rejects the invalidated entry", || async {
        b.l1.get(&tagged).await.unwrap().is_none()
    })
    .await;

    assert_eq!(b.chaos.calls(), b_l2_calls, "the receiver never touched L2");
    assert!(b.bp_stats().received >= 3);
}

#[tokio::test]
async fn nothing_is_published_for_a_failed_l2_write_and_the_replay_is_announced() {
    let world = World::new();
    let nodes = world.connected_nodes(2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let key = world.key(4);
    world.l2.set(&key, world.entry("\"old\"")).await.unwrap();
    assert!(b.tiered.get(&key).await.unwrap().is_some());

    a.chaos.set(Fault::Fail);
    let before = a.bp_stats();
    a.tiered.delete(&key).await.unwrap();
    a.tiered
        .invalidate_tags(&[world.tag(1)], world.clock.now())
        .await
        .unwrap();
    a.tiered.set(&world.key(5), world.entry("1")).await.unwrap();
    assert_eq!(a.tiered.pending_len(), 3);
    let after = a.bp_stats();
    assert_eq!(
        (after.published, after.queued),
        (before.published, before.queued),
        "nothing was announced for writes that did not reach L2"
    );
    assert!(
        b.l1.raw(&key).is_some(),
        "B still holds the key: L2 still does too"
    );

    // The next call through A's gate replays on L2, then announces what it replayed.
    a.chaos.set(Fault::None);
    a.tiered.get(&world.key(99)).await.unwrap();
    assert_eq!(a.tiered.pending_len(), 0);
    assert!(world.l2.raw(&key).is_none());
    eventually("B heard the replayed delete", || b.l1.raw(&key).is_none()).await;
    assert!(a.bp_stats().published >= before.published + 2);
}

#[tokio::test]
async fn l1_keeps_the_whole_ttl_while_connected_and_the_short_cap_otherwise() {
    let world = World::new();
    let a = world.node(quiet());
    wait_state(&a.backplane, BackplaneState::Connected).await;

    let key = world.key(7);
    let entry = world.entry("2");
    a.tiered.set(&key, entry.clone()).await.unwrap();
    assert_eq!(
        a.l1.raw(&key).unwrap().local_expires_at(),
        entry.expires_at()
    );
    // A fill from L2 gets the whole TTL too.
    let filled = world.key(8);
    world.l2.set(&filled, world.entry("3")).await.unwrap();
    a.tiered.get(&filled).await.unwrap().unwrap();
    let held = a.l1.raw(&filled).unwrap();
    assert_eq!(held.local_expires_at(), held.expires_at());

    let resets = a.bp_stats().resets;
    world.bus.set_down(true);
    wait_state(&a.backplane, BackplaneState::Disconnected).await;
    eventually("the reset is done", || a.bp_stats().resets > resets).await;
    let key = world.key(9);
    let entry = world.entry("4");
    let now = world.clock.now();
    a.tiered.set(&key, entry.clone()).await.unwrap();
    let held = a.l1.raw(&key).unwrap();
    assert!(held.local_expires_at() < entry.expires_at());
    assert!(held.local_expires_at() <= now.saturating_add(L1_MAX_TTL + Duration::from_secs(1)));

    world.bus.set_down(false);
    wait_state(&a.backplane, BackplaneState::Connected).await;
    let key = world.key(10);
    let entry = world.entry("5");
    a.tiered.set(&key, entry.clone()).await.unwrap();
    assert_eq!(
        a.l1.raw(&key).unwrap().local_expires_at(),
        entry.expires_at()
    );
}

#[tokio::test]
async fn an_interruption_resets_l1_and_tells_app_subscribers_to_resync() {
    let world = World::new();
    let nodes = world.connected_nodes(1).await;
    let a = &nodes[0];
    let mut app = a.backplane.subscribe_app();
    let key = world.key(11);
    a.tiered.set(&key, world.entry("1")).await.unwrap();
    assert!(a.l1.raw(&key).is_some());

    world.bus.interrupt();
    assert_eq!(next_app(&mut app).await, AppMessage::Resync);
    assert!(
        a.l1.raw(&key).is_none(),
        "L1 was reset before the resync was sent"
    );
    wait_state(&a.backplane, BackplaneState::Connected).await;
    // Back on the bus: what was published in between is lost, so subscribers resync again.
    assert_eq!(next_app(&mut app).await, AppMessage::Resync);
    let stats = a.bp_stats();
    assert_eq!(stats.interruptions, 1);
    assert!(stats.resets >= 2, "{stats:?}");
    assert!(stats.connected);
}

#[tokio::test]
async fn a_sequence_gap_resets_l1_and_app_subscribers() {
    let world = World::new();
    let nodes = world.connected_nodes(2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let key = world.key(12);
    world.l2.set(&key, world.entry("1")).await.unwrap();
    b.tiered.get(&key).await.unwrap().unwrap();
    let mut on_b = b.backplane.subscribe_app();

    world.bus.lose_next(1);
    a.backplane.publish_app(Bytes::from_static(b"lost"));
    a.backplane.publish_app(Bytes::from_static(b"after"));
    assert_eq!(next_app(&mut on_b).await, AppMessage::Resync);
    assert_eq!(
        next_app(&mut on_b).await,
        AppMessage::Message {
            origin: a.backplane.instance_id().into(),
            payload: Bytes::from_static(b"after"),
        }
    );
    assert!(b.l1.raw(&key).is_none(), "the gap reset B's L1");
    let stats = b.bp_stats();
    assert_eq!(stats.gaps, 1);
    assert!(stats.connected, "a gap alone does not disconnect");
}

#[tokio::test(start_paused = true)]
async fn silence_resets_and_resubscribes() {
    let world = World::new();
    let mut config = BackplaneConfig::default();
    config.heartbeat = Duration::from_millis(100);
    config.silence_timeout = Duration::from_millis(350);
    let a = world.node(config);
    wait_state(&a.backplane, BackplaneState::Connected).await;
    let key = world.key(13);
    a.tiered.set(&key, world.entry("1")).await.unwrap();
    assert!(a.l1.raw(&key).is_some());

    // The subscription stays "up" but nothing arrives, not even A's own heartbeats.
    world.bus.lose_next(20);
    wait_state(&a.backplane, BackplaneState::Disconnected).await;
    assert!(a.l1.raw(&key).is_none());
    // Heartbeats go on; once they come through again, A is back.
    wait_state(&a.backplane, BackplaneState::Connected).await;
    let stats = a.bp_stats();
    assert!(stats.interruptions >= 1 && stats.resets >= 2, "{stats:?}");
    assert_eq!(
        world.bus.subscriber_count(),
        1,
        "the silent subscription was replaced"
    );
}

#[tokio::test]
async fn app_messages_arrive_after_the_notices_published_before_them() {
    let world = World::new();
    let nodes = world.connected_nodes(2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut on_b = b.backplane.subscribe_app();
    let keys: Vec<Key> = (20..40).map(|i| world.key(i)).collect();
    for key in &keys {
        world.l2.set(key, world.entry("1")).await.unwrap();
    }
    b.tiered.get_many(&keys).await.unwrap();
    assert!(keys.iter().all(|k| b.l1.raw(k).is_some()));

    for (i, key) in keys.iter().enumerate() {
        a.tiered.delete(key).await.unwrap();
        a.backplane.publish_app(Bytes::from(format!("posted {i}")));
    }
    for (i, key) in keys.iter().enumerate() {
        let AppMessage::Message { payload, .. } = next_app(&mut on_b).await else {
            panic!("unexpected resync");
        };
        assert_eq!(payload, Bytes::from(format!("posted {i}")));
        // The event is delivered only after the notice before it was applied.
        assert!(b.l1.raw(key).is_none(), "key {i} still in B's L1");
    }
}

#[tokio::test]
async fn foreign_versions_and_garbage_are_counted_and_ignored() {
    let world = World::new();
    let nodes = world.connected_nodes(2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let key = world.key(41);
    world.l2.set(&key, world.entry("1")).await.unwrap();
    b.tiered.get(&key).await.unwrap().unwrap();
    let resets = b.bp_stats().resets;

    let foreign = format!(
        r#"{{"v":2,"from":"x","seq":1,"sent":1,"body":{{"k":["{}"]}}}}"#,
        key.as_str()
    );
    let junk: [&[u8]; 4] = [
        foreign.as_bytes(),
        b"not json",
        b"\xff\x00\x01",
        br#"{"v":1,"from":"x","seq":1,"sent":1,"body":{"k":["no namespace"]}}"#,
    ];
    let messages: Vec<Bytes> = junk.iter().map(|m| Bytes::copy_from_slice(m)).collect();
    world.bus.publish(&messages).await.unwrap();
    // A message after the junk proves the junk was processed.
    a.backplane.publish_app(Bytes::from_static(b"marker"));
    let mut on_b = b.backplane.subscribe_app();
    a.backplane.publish_app(Bytes::from_static(b"marker2"));
    assert!(matches!(
        next_app(&mut on_b).await,
        AppMessage::Message { .. }
    ));

    let stats = b.bp_stats();
    assert_eq!(stats.rejected, 4);
    assert_eq!(stats.resets, resets, "junk is no reason to reset");
    assert!(stats.connected);
    assert!(
        b.l1.raw(&key).is_some(),
        "the foreign-version delete was not applied"
    );
}

#[tokio::test(start_paused = true)]
async fn the_outbox_retries_notices_and_drops_the_oldest_when_full() {
    let world = World::new();
    let mut config = quiet();
    config.max_queued = 3;
    config.publish_timeout = Duration::from_millis(200);
    let a = world.node(config);
    let b = world.node(quiet());
    for node in [&a, &b] {
        wait_state(&node.backplane, BackplaneState::Connected).await;
    }
    eventually("B heard A's probe", || b.backplane.stats().received >= 1).await;
    let received_before = b.bp_stats().received;
    let mut on_b = b.backplane.subscribe_app();

    world.bus.set_publish_failing(true);
    // The first caller waits for one failed attempt; later ones see the transport failing and
    // do not wait. Neither fails the cache call.
    a.tiered.delete(&world.key(50)).await.unwrap();
    eventually("a publish attempt failed", || {
        a.bp_stats().publish_errors >= 1
    })
    .await;
    for i in 51..54 {
        let notice = Notice::DeleteKeys(vec![world.key(i)]);
        assert!(a.backplane.publish_invalidation(notice).await.is_err());
    }
    let stats = a.bp_stats();
    assert_eq!(stats.queued, 3);
    assert_eq!(stats.dropped, 1, "the delete's notice was dropped");
    eventually("the outbox kept retrying", || {
        a.bp_stats().publish_errors >= 3
    })
    .await;

    world.bus.set_publish_failing(false);
    // B sees the hole in A's sequence numbers and resets; the three kept notices arrive.
    assert_eq!(next_app(&mut on_b).await, AppMessage::Resync);
    eventually("A's queue drained", || a.bp_stats().queued == 0).await;
    eventually("B handled the kept notices", || {
        b.bp_stats().received >= received_before + 3
    })
    .await;
    assert_eq!(b.bp_stats().gaps, 1);
}

#[tokio::test(start_paused = true)]
async fn app_messages_of_a_failed_attempt_are_dropped_and_receivers_resync() {
    let world = World::new();
    let a = world.node(quiet());
    let b = world.node(quiet());
    for node in [&a, &b] {
        wait_state(&node.backplane, BackplaneState::Connected).await;
    }
    eventually("B heard A's probe", || b.backplane.stats().received >= 1).await;
    let mut on_b = b.backplane.subscribe_app();

    world.bus.set_publish_failing(true);
    a.backplane.publish_app(Bytes::from_static(b"late"));
    eventually("the attempt failed and the message was dropped", || {
        let stats = a.bp_stats();
        stats.publish_errors >= 1 && stats.dropped == 1 && stats.queued == 0
    })
    .await;
    world.bus.set_publish_failing(false);
    a.backplane.publish_app(Bytes::from_static(b"next"));

    // Never the late message: B is told it missed something, then gets what came after.
    assert_eq!(next_app(&mut on_b).await, AppMessage::Resync);
    let AppMessage::Message { payload, .. } = next_app(&mut on_b).await else {
        panic!("a second resync");
    };
    assert_eq!(payload, Bytes::from_static(b"next"));
    assert_eq!(b.bp_stats().gaps, 1);
}

#[tokio::test(start_paused = true)]
async fn a_message_published_twice_is_handled_once() {
    // A transport whose attempt reaches the server but reports a failure: the outbox publishes
    // the batch again, and receivers must not handle it twice.
    #[derive(Debug)]
    struct DeliversThenFails {
        inner: LocalTransport,
        fail_next: AtomicBool,
    }

    #[async_trait]
    impl BackplaneTransport for DeliversThenFails {
        fn name(&self) -> &'static str {
            "flaky"
        }

        async fn publish(&self, messages: &[Bytes]) -> Result<()> {
            self.inner.publish(messages).await?;
            if self.fail_next.swap(false, Ordering::SeqCst) {
                return Err(cache_core::Error::Unavailable { backend: "flaky" });
            }
            Ok(())
        }

        fn subscribe(&self) -> tokio::sync::mpsc::Receiver<cache_core::TransportEvent> {
            self.inner.subscribe()
        }
    }

    let world = World::new();
    let flaky = Arc::new(DeliversThenFails {
        inner: world.bus.clone(),
        fail_next: AtomicBool::new(false),
    });
    let a = Backplane::start(flaky.clone(), quiet(), world.clock.clone());
    let b = world.node(quiet());
    wait_state(&a, BackplaneState::Connected).await;
    wait_state(&b.backplane, BackplaneState::Connected).await;
    eventually("B heard A's probe", || b.backplane.stats().received >= 1).await;
    let mut on_b = b.backplane.subscribe_app();
    let received_before = b.bp_stats().received;
    let rejected_before = b.bp_stats().rejected;

    flaky.fail_next.store(true, Ordering::SeqCst);
    let notice = Notice::DeleteKeys(vec![world.key(1)]);
    // The first attempt delivered but failed; the retry delivers the same sequence number again.
    assert!(a.publish_invalidation(notice).await.is_err());
    eventually("the retry went out", || a.stats().queued == 0).await;
    a.publish_app(Bytes::from_static(b"after"));

    let AppMessage::Message { payload, .. } = next_app(&mut on_b).await else {
        panic!("a duplicate is not a gap");
    };
    assert_eq!(payload, Bytes::from_static(b"after"));
    let stats = b.bp_stats();
    assert_eq!(
        stats.received,
        received_before + 2,
        "the notice once, then the app message"
    );
    assert_eq!(stats.rejected, rejected_before + 1, "the copy");
    assert_eq!(stats.gaps, 0);
}

#[tokio::test]
async fn a_write_on_one_instance_is_visible_on_the_next_read_of_another() {
    let world = World::new();
    let nodes = world.connected_nodes(3).await;
    let caches: Vec<Cache> = nodes
        .iter()
        .map(|n| {
            Cache::with_config(
                n.tiered.clone(),
                CacheConfig::default().with_clock(world.clock.clone()),
            )
        })
        .collect();
    let key = world.key(60).tagged(&[world.tag(60)]);
    let policy = TtlPolicy::new(ENTRY_TTL);
    for (round, writer) in [0usize, 1, 2, 0].into_iter().enumerate() {
        // Every instance holds the current value in L1 (whole TTL: the clock never moves).
        for cache in &caches {
            let _: Vec<usize> = cache
                .get_or_load(&key, &policy, move || async move {
                    Ok::<_, std::io::Error>(vec![round])
                })
                .await
                .unwrap();
        }
        // The writer changes the source, then invalidates the tag (as chat-api does on a post).
        let next = round + 1;
        caches[writer].invalidate(&[world.tag(60)]).await.unwrap();
        for (i, cache) in caches.iter().enumerate() {
            let cache = cache.clone();
            let key = key.clone();
            eventually_async(&format!("instance {i} sees round {next}"), || {
                let cache = cache.clone();
                let key = key.clone();
                async move {
                    let seen: Vec<usize> = cache
                        .get_or_load(&key, &TtlPolicy::new(ENTRY_TTL), move || async move {
                            Ok::<_, std::io::Error>(vec![next])
                        })
                        .await
                        .unwrap();
                    seen == [next]
                }
            })
            .await;
        }
    }
    // Direct writes travel the same way.
    let plain = world.key(61);
    nodes[1].tiered.get(&plain).await.unwrap();
    nodes[0]
        .tiered
        .set(&plain, world.entry("\"new\""))
        .await
        .unwrap();
    eventually_async("B reads A's write", || async {
        value(nodes[1].tiered.get(&plain).await.unwrap()).as_deref() == Some("\"new\"")
    })
    .await;
}

/// An L2 whose `get` reads, then waits for permission to answer: a read that was in flight when
/// another instance's notice arrived.
struct HeldRead {
    inner: DynBackend,
    armed: AtomicBool,
    read: Notify,
    release: Notify,
}

#[async_trait]
impl CacheBackend for HeldRead {
    fn name(&self) -> &'static str {
        "held"
    }
    async fn get(&self, key: &Key) -> Result<Option<Entry>> {
        let found = self.inner.get(key).await;
        if self.armed.swap(false, Ordering::SeqCst) {
            self.read.notify_one();
            self.release.notified().await;
        }
        found
    }
    async fn set(&self, key: &Key, entry: Entry) -> Result<()> {
        self.inner.set(key, entry).await
    }
    async fn delete(&self, key: &Key) -> Result<bool> {
        self.inner.delete(key).await
    }
    async fn invalidate_tags(&self, tags: &[Tag], at: Timestamp) -> Result<()> {
        self.inner.invalidate_tags(tags, at).await
    }
    async fn ping(&self) -> Result<Duration> {
        self.inner.ping().await
    }
    fn stats(&self) -> CacheStats {
        self.inner.stats()
    }
}

#[tokio::test]
async fn a_fill_that_raced_a_key_notice_does_not_stay_in_l1() {
    let world = World::new();
    let held = Arc::new(HeldRead {
        inner: world.l2.clone(),
        armed: AtomicBool::new(false),
        read: Notify::new(),
        release: Notify::new(),
    });
    let a = world.node(quiet());
    let b = world.node_over(held.clone(), quiet());
    for node in [&a, &b] {
        wait_state(&node.backplane, BackplaneState::Connected).await;
    }
    let key = world.key(70);
    world.l2.set(&key, world.entry("\"old\"")).await.unwrap();

    held.armed.store(true, Ordering::SeqCst);
    let reader = {
        let tiered = b.tiered.clone();
        let key = key.clone();
        tokio::spawn(async move { tiered.get(&key).await })
    };
    held.read.notified().await;
    // B has read "old"; A overwrites the key and B hears of it before B's read returns.
    let received = b.bp_stats().received;
    a.tiered.set(&key, world.entry("\"new\"")).await.unwrap();
    eventually("B applied A's notice", || b.bp_stats().received > received).await;
    held.release.notify_one();
    let got = reader.await.unwrap().unwrap();
    assert_eq!(
        value(got).as_deref(),
        Some("\"old\""),
        "the caller gets what it read"
    );
    assert!(
        b.l1.raw(&key).is_none(),
        "but the old value did not go into L1"
    );
    assert_eq!(
        value(b.tiered.get(&key).await.unwrap()).as_deref(),
        Some("\"new\"")
    );
}

#[tokio::test]
async fn offset_clocks_reject_a_stale_fill_across_skewed_hosts() {
    // Host B's clock runs 3 s ahead of host A's. Each measured its offset to a shared reference
    // (A's time, say Redis's TIME): A's is 0, B's is -3 s.
    const SKEW: Duration = Duration::from_secs(3);
    async fn scenario(b_offset_micros: i64) -> Option<String> {
        let world = World::new();
        let base_a = Arc::new(ManualClock::default());
        let base_b = Arc::new(ManualClock::default());
        base_b.advance(SKEW);
        let clock_a = Arc::new(OffsetClock::with_base(base_a.clone()));
        let clock_b = Arc::new(OffsetClock::with_base(base_b.clone()));
        clock_b.set_offset_micros(b_offset_micros);
        let nodes = world.connected_nodes(2).await;
        let cache = |node: &Node, clock: Arc<OffsetClock>| {
            Cache::with_config(
                node.tiered.clone(),
                CacheConfig::default().with_clock(clock),
            )
        };
        let (a, b) = (cache(&nodes[0], clock_a), cache(&nodes[1], clock_b));
        let tag = world.tag(80);
        let key = world.key(80).tagged(std::slice::from_ref(&tag));
        let policy = TtlPolicy::new(ENTRY_TTL);

        // B starts loading; its loader reads the source, then is slow to return.
        let read = Arc::new(Notify::new());
        let finish = Arc::new(Notify::new());
        let loader = {
            let (b, key, read, finish) = (b.clone(), key.clone(), read.clone(), finish.clone());
            tokio::spawn(async move {
                let value: String = b
                    .get_or_load(&key, &TtlPolicy::new(ENTRY_TTL), move || async move {
                        read.notify_one();
                        finish.notified().await;
                        Ok::<_, std::io::Error>("old".to_owned())
                    })
                    .await
                    .unwrap();
                value
            })
        };
        read.notified().await;
        // 10 ms later (on both hosts) A commits a new value and invalidates the tag.
        base_a.advance(Duration::from_millis(10));
        base_b.advance(Duration::from_millis(10));
        let received = nodes[1].backplane.stats().received;
        a.invalidate(std::slice::from_ref(&tag)).await.unwrap();
        eventually("B heard the invalidation", || {
            nodes[1].backplane.stats().received > received
        })
        .await;
        // Then B's stale load finishes and is written to L1 and L2.
        finish.notify_one();
        assert_eq!(loader.await.unwrap(), "old");

        let on_b = nodes[1].tiered.get(&key).await.unwrap();
        let on_a: String = a
            .get_or_load(&key, &policy, || async {
                Ok::<_, std::io::Error>("new".to_owned())
            })
            .await
            .unwrap();
        assert_eq!(on_a == "old", on_b.is_some(), "A and B agree");
        value(on_b)
    }
    // Synced: B's fill carries a time before A's stamp, and both hosts reject it.
    assert_eq!(scenario(-3_000_000).await, None);
    // The control: the same race with B's raw clock keeps the stale value (so the check above
    // can fail).
    assert_eq!(scenario(0).await.as_deref(), Some("\"old\""));
}

#[tokio::test]
async fn a_failed_publish_does_not_fail_the_cache_call() {
    let world = World::new();
    let mut config = quiet();
    config.publish_timeout = Duration::from_millis(50);
    let a = world.node(config);
    wait_state(&a.backplane, BackplaneState::Connected).await;
    world.bus.set_down(true);
    let key = world.key(90);
    a.tiered.set(&key, world.entry("1")).await.unwrap();
    assert!(a.tiered.delete(&key).await.unwrap());
    a.tiered
        .invalidate_tags(&[world.tag(90)], world.clock.now())
        .await
        .unwrap();
    assert!(world.l2.raw(&key).is_none(), "L2 was written all the same");
    assert!(
        a.bp_stats().queued >= 1,
        "the notices wait for the transport"
    );
    world.bus.set_down(false);
    eventually("the queued notices went out", || a.bp_stats().queued == 0).await;
}

#[tokio::test]
async fn tasks_stop_when_the_last_handle_is_dropped() {
    let world = World::new();
    let a = world.node(quiet());
    let b = world.node(quiet());
    wait_state(&a.backplane, BackplaneState::Connected).await;
    assert_eq!(world.bus.subscriber_count(), 2);
    let Node {
        tiered, backplane, ..
    } = a;
    drop(backplane);
    // The tiered cache still holds a clone: the bus keeps running.
    tiered.set(&world.key(1), world.entry("1")).await.unwrap();
    assert_eq!(world.bus.subscriber_count(), 2);
    drop(tiered);
    eventually("A's receive task ended", || {
        world.bus.subscriber_count() == 1
    })
    .await;
    drop(b);
    eventually("B's receive task ended", || {
        world.bus.subscriber_count() == 0
    })
    .await;
}

#[tokio::test]
async fn stats_of_a_tiered_cache_include_its_backplane() {
    let world = World::new();
    let nodes = world.connected_nodes(2).await;
    nodes[0]
        .tiered
        .invalidate_tags(&[world.tag(1)], world.clock.now())
        .await
        .unwrap();
    eventually("B received it", || nodes[1].bp_stats().received >= 2).await;
    let stats = nodes[1].bp_stats();
    assert_eq!(stats.transport, "local");
    assert!(stats.connected);
    assert!(stats.last_lag_micros.is_some());
    let json = serde_json::to_value(nodes[1].tiered.stats()).unwrap();
    assert_eq!(json["backplane"]["transport"], "local");
}

#[tokio::test]
async fn a_reset_of_an_l1_that_cannot_clear_invalidates_the_namespaces_it_holds() {
    let world = World::new();
    let map = Arc::new(MapBackend::with_clock(world.clock.clone()));
    // Passes everything through but `clear_local`, like a shared store would.
    let l1 = Arc::new(HeldRead {
        inner: map.clone(),
        armed: AtomicBool::new(false),
        read: Notify::new(),
        release: Notify::new(),
    });
    let backplane = Backplane::start(Arc::new(world.bus.clone()), quiet(), Arc::new(SystemClock));
    let tiered = TieredBackend::with_clock(
        l1,
        world.l2.clone(),
        TieredConfig::default(),
        Box::new(world.clock.clone()),
    )
    .with_backplane(backplane.clone());
    wait_state(&backplane, BackplaneState::Connected).await;
    let key = world.key(100);
    tiered.set(&key, world.entry("1")).await.unwrap();
    let other_ns = Namespace::new("elsewhere", 1).unwrap().key("k", &[&1]);
    map.set(&other_ns, world.entry("2")).await.unwrap();
    assert!(map.get(&key).await.unwrap().is_some());

    let resets = backplane.stats().resets;
    world.bus.interrupt();
    eventually("the interruption's reset ran", || {
        backplane.stats().resets > resets
    })
    .await;
    assert!(
        map.get(&key).await.unwrap().is_none(),
        "this cache's namespace was dropped"
    );
    assert!(
        map.get(&other_ns).await.unwrap().is_some(),
        "a namespace it never put into L1 was left alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_after_a_notice_never_see_older_values_under_concurrent_fills() {
    let world = Arc::new(World::new());
    let nodes = world.connected_nodes(2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let key = world.key(200);
    let entry = |i: u64| {
        let now = world.clock.now();
        let until = now.saturating_add(ENTRY_TTL);
        Entry::new(Bytes::from(i.to_string()), now, until, until)
    };
    let number = |e: Option<Entry>| -> u64 {
        e.map_or(0, |e| {
            std::str::from_utf8(e.value()).unwrap().parse().unwrap()
        })
    };
    a.tiered.set(&key, entry(0)).await.unwrap();
    let mut on_b = b.backplane.subscribe_app();
    let stop = Arc::new(AtomicBool::new(false));
    // Readers on B keep missing and refilling L1 while A's notices arrive.
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (tiered, l1, key, stop) =
                (b.tiered.clone(), b.l1.clone(), key.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = tiered.get(&key).await;
                    let _ = l1.delete(&key).await;
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for i in 1..=200u64 {
        a.tiered.set(&key, entry(i)).await.unwrap();
        // Once B has the marker A published after the set, B has applied the set's notice.
        a.backplane.publish_app(Bytes::from(i.to_string()));
        let AppMessage::Message { payload, .. } = next_app(&mut on_b).await else {
            panic!("unexpected resync");
        };
        assert_eq!(payload, Bytes::from(i.to_string()));
        let seen = number(b.tiered.get(&key).await.unwrap());
        assert!(
            seen >= i,
            "round {i}: B read {seen} after A's notice; l1 {:?} l2 {:?}",
            number(b.l1.raw(&key)),
            number(world.l2.raw(&key)),
        );
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }
}
