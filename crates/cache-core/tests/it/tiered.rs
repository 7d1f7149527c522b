//! `TieredBackend` under injected L2 faults: timeouts, the circuit breaker, fallback to L1, and
//! recovery that never lets L2 serve data a write replaced. Tokio's clock is paused, so timeouts
//! and breaker intervals pass instantly and deterministically.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use cache_core::{
    BreakerConfig, BreakerState, Cache, CacheBackend, CacheConfig, Clock, Entry, Key, Namespace,
    TieredBackend, TieredConfig, TtlPolicy,
    testing::{ChaosBackend, ChaosControl, Fault, ManualClock, MapBackend},
};

const OPEN_FOR: Duration = Duration::from_secs(5);
const L1_MAX_TTL: Duration = Duration::from_secs(5);

struct Fixture {
    tiered: Arc<TieredBackend>,
    l1: Arc<MapBackend>,
    l2: Arc<MapBackend>,
    chaos: ChaosControl,
    clock: Arc<ManualClock>,
    ns: Namespace,
}

impl Fixture {
    fn new(max_pending: usize) -> Self {
        let clock = Arc::new(ManualClock::default());
        let l1 = Arc::new(MapBackend::with_clock(clock.clone()));
        let l2 = Arc::new(MapBackend::with_clock(clock.clone()));
        let (chaotic_l2, chaos) = ChaosBackend::new(l2.clone());
        let config = TieredConfig::default()
            .with_l2_timeout(Duration::from_millis(200))
            .with_l1_max_ttl(L1_MAX_TTL)
            .with_breaker(
                BreakerConfig::default()
                    .with_failure_threshold(3)
                    .with_open_for(OPEN_FOR),
            )
            .with_max_pending(max_pending);
        let tiered = Arc::new(TieredBackend::with_clock(
            l1.clone(),
            Arc::new(chaotic_l2),
            config,
            Box::new(clock.clone()),
        ));
        Fixture {
            tiered,
            l1,
            l2,
            chaos,
            clock,
            ns: Namespace::new("tiered", 1).unwrap(),
        }
    }

    fn cache(&self) -> Cache {
        Cache::with_config(
            self.tiered.clone(),
            CacheConfig::default().with_clock(self.clock.clone()),
        )
    }

    fn entry(&self, json: &'static str) -> Entry {
        let now = self.clock.now();
        let ttl = now.saturating_add(Duration::from_secs(300));
        Entry::new(Bytes::from_static(json.as_bytes()), now, ttl, ttl)
    }

    fn key(&self, i: u32) -> Key {
        self.ns.key("k", &[&i])
    }

    /// Makes L1 forget everything, as its short TTL does on a real instance.
    fn expire_l1(&self) {
        self.clock.advance(L1_MAX_TTL + Duration::from_secs(1));
    }

    fn breaker(&self) -> BreakerState {
        self.tiered.stats().breaker.unwrap().state
    }
}

async fn open_breaker(f: &Fixture, fault: Fault) {
    f.chaos.set(fault);
    for i in 0..3 {
        assert_eq!(f.tiered.get(&f.key(1000 + i)).await.unwrap(), None);
    }
    assert_eq!(f.breaker(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn an_l2_hit_fills_l1_for_at_most_the_l1_ttl() {
    let f = Fixture::new(100);
    let key = f.key(1);
    let entry = f.entry("\"v\"");
    f.l2.set(&key, entry.clone()).await.unwrap();
    assert_eq!(f.tiered.get(&key).await.unwrap(), Some(entry.clone()));
    let in_l1 = f.l1.raw(&key).expect("filled L1");
    assert!(in_l1.local_expires_at() <= f.clock.now().saturating_add(L1_MAX_TTL));
    assert_eq!(
        in_l1.expires_at(),
        entry.expires_at(),
        "readers see the real expiry"
    );
    // The second read is an L1 hit: it does not reach L2.
    let calls = f.chaos.calls();
    let again = f.tiered.get(&key).await.unwrap().expect("L1 hit");
    assert_eq!(again, entry);
    assert_eq!(f.chaos.calls(), calls);
}

#[tokio::test(start_paused = true)]
async fn breaker_opens_after_the_configured_failures_and_skips_l2_while_open() {
    let f = Fixture::new(100);
    open_breaker(&f, Fault::Fail).await;
    assert_eq!(f.chaos.calls(), 3);
    for i in 0..20 {
        assert_eq!(f.tiered.get(&f.key(i)).await.unwrap(), None);
        f.tiered.set(&f.key(i), f.entry("1")).await.unwrap();
    }
    assert_eq!(
        f.chaos.calls(),
        3,
        "no call reached L2 while the breaker was open"
    );
    let stats = f.tiered.stats();
    assert!(stats.tiers[1].skipped >= 40);
    assert_eq!(stats.tiers[1].errors, 3);
    assert_eq!(stats.breaker.unwrap().opened, 1);
}

#[tokio::test(start_paused = true)]
async fn breaker_closes_after_a_successful_probe() {
    let f = Fixture::new(100);
    open_breaker(&f, Fault::Fail).await;
    f.chaos.set(Fault::None);
    tokio::time::advance(OPEN_FOR).await;
    let key = f.key(1);
    let entry = f.entry("\"back\"");
    f.l2.set(&key, entry.clone()).await.unwrap();
    assert_eq!(f.tiered.get(&key).await.unwrap(), Some(entry));
    assert_eq!(f.breaker(), BreakerState::Closed);
    assert_eq!(f.tiered.stats().breaker.unwrap().closed, 1);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_l2_costs_one_timeout_per_probe_interval() {
    let f = Fixture::new(100);
    open_breaker(&f, Fault::Hang).await;
    assert_eq!(f.tiered.stats().tiers[1].timeouts, 3);
    for round in 0..3 {
        tokio::time::advance(OPEN_FOR).await;
        for i in 0..10 {
            assert_eq!(f.tiered.get(&f.key(i)).await.unwrap(), None);
        }
        // One probe per interval, then skipped again.
        assert_eq!(f.chaos.calls(), 3 + round + 1);
        assert_eq!(f.breaker(), BreakerState::Open);
    }
}

#[tokio::test(start_paused = true)]
async fn an_l2_outage_never_fails_a_read_or_write() {
    let f = Fixture::new(100);
    let cache = f.cache();
    let policy = TtlPolicy::new(Duration::from_secs(60));
    for (i, fault) in [Fault::Fail, Fault::Hang].into_iter().enumerate() {
        let (key, tag) = (f.key(i as u32), f.ns.tag("t", &[&i]));
        f.chaos.set(fault);
        let v: u32 = cache
            .get_or_load(&key, &policy, || async { Ok::<_, std::io::Error>(7) })
            .await
            .unwrap();
        assert_eq!(v, 7);
        cache.set(&key, &8u32, &policy).await.unwrap();
        assert_eq!(
            cache.get::<u32>(&key).await.unwrap(),
            Some(8),
            "served from L1"
        );
        cache.invalidate(std::slice::from_ref(&tag)).await.unwrap();
        cache.remove(&key).await.unwrap();
        cache
            .set_many(&[(key.clone(), 9u32)], &policy)
            .await
            .unwrap();
        // Per key: the batch write is served from L1, a key never written is a miss.
        let never_written = f.key(100 + i as u32);
        assert_eq!(
            cache
                .get_many::<u32>(&[key.clone(), never_written])
                .await
                .unwrap(),
            [Some(9), None],
            "{fault:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_invalidation_made_during_an_outage_is_replayed_before_l2_is_read() {
    let f = Fixture::new(100);
    let tag = f.ns.tag("channel", &[&1]);
    let key = f.key(1).tagged(std::slice::from_ref(&tag));
    f.tiered.set(&key, f.entry("\"old\"")).await.unwrap();

    open_breaker(&f, Fault::Fail).await;
    let at = f.clock.now();
    f.tiered
        .invalidate_tags(std::slice::from_ref(&tag), at)
        .await
        .unwrap();
    assert_eq!(f.tiered.pending_len(), 1);
    assert_eq!(f.tiered.get(&key).await.unwrap(), None, "L1 saw it at once");

    // L2 comes back still holding the old entry; L1 has long forgotten it.
    f.chaos.set(Fault::None);
    f.expire_l1();
    tokio::time::advance(OPEN_FOR).await;
    assert!(f.l2.raw(&key).is_some());
    assert_eq!(
        f.tiered.get(&key).await.unwrap(),
        None,
        "no stale read after recovery"
    );
    assert_eq!(f.tiered.pending_len(), 0);
    assert_eq!(
        f.l2.get(&key).await.unwrap(),
        None,
        "the invalidation reached L2"
    );
    assert_eq!(f.breaker(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn pending_invalidations_are_replayed_even_before_the_breaker_opens() {
    let f = Fixture::new(100);
    let tag = f.ns.tag("channel", &[&1]);
    let key = f.key(1).tagged(std::slice::from_ref(&tag));
    f.tiered.set(&key, f.entry("\"old\"")).await.unwrap();
    f.chaos.set(Fault::Fail);
    let at = f.clock.now();
    f.tiered
        .invalidate_tags(std::slice::from_ref(&tag), at)
        .await
        .unwrap();
    assert_eq!(
        f.breaker(),
        BreakerState::Closed,
        "one failure does not open it"
    );
    f.chaos.set(Fault::None);
    f.expire_l1();
    assert_eq!(f.tiered.get(&key).await.unwrap(), None);
    assert_eq!(f.tiered.pending_len(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_write_that_missed_l2_removes_the_old_l2_value_on_recovery() {
    let f = Fixture::new(100);
    let key = f.key(1);
    f.tiered.set(&key, f.entry("\"old\"")).await.unwrap();
    open_breaker(&f, Fault::Fail).await;
    f.tiered.set(&key, f.entry("\"new\"")).await.unwrap();
    f.chaos.set(Fault::None);
    f.expire_l1();
    tokio::time::advance(OPEN_FOR).await;
    assert_eq!(
        f.tiered.get(&key).await.unwrap(),
        None,
        "old L2 value is gone"
    );
    assert!(f.l2.raw(&key).is_none());
}

#[tokio::test(start_paused = true)]
async fn overflowing_the_pending_queue_invalidates_the_whole_namespace_on_recovery() {
    let f = Fixture::new(2);
    let keys: Vec<Key> = (0..5).map(|i| f.key(i)).collect();
    for key in &keys {
        f.tiered.set(key, f.entry("\"old\"")).await.unwrap();
    }
    let other_ns = Namespace::new("other", 1).unwrap().key("k", &[&1]);
    f.tiered.set(&other_ns, f.entry("\"kept\"")).await.unwrap();

    open_breaker(&f, Fault::Fail).await;
    for i in 0..3 {
        let at = f.clock.now();
        f.tiered
            .invalidate_tags(&[f.ns.tag("t", &[&i])], at)
            .await
            .unwrap();
    }
    f.chaos.set(Fault::None);
    f.expire_l1();
    tokio::time::advance(OPEN_FOR).await;
    for key in &keys {
        assert_eq!(f.tiered.get(key).await.unwrap(), None, "{key}");
    }
    assert!(
        f.tiered.get(&other_ns).await.unwrap().is_some(),
        "other namespaces untouched"
    );
    assert_eq!(f.tiered.pending_len(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_replay_keeps_the_pending_invalidations() {
    let f = Fixture::new(100);
    let tag = f.ns.tag("channel", &[&1]);
    open_breaker(&f, Fault::Fail).await;
    let at = f.clock.now();
    f.tiered
        .invalidate_tags(std::slice::from_ref(&tag), at)
        .await
        .unwrap();
    tokio::time::advance(OPEN_FOR).await;
    // The probe replays, fails, and the breaker opens again.
    assert_eq!(f.tiered.get(&f.key(1)).await.unwrap(), None);
    assert_eq!(f.breaker(), BreakerState::Open);
    assert_eq!(f.tiered.pending_len(), 1);
}

#[tokio::test(start_paused = true)]
async fn missed_invalidations_are_replayed_without_waiting_for_a_read() {
    let f = Fixture::new(100);
    let key = f.key(1).tagged(&[f.ns.tag("channel", &[&1])]);
    let tag = f.ns.tag("channel", &[&1]);
    f.l2.set(&key, f.entry("\"old\"")).await.unwrap();
    f.clock.advance(Duration::from_millis(1));
    open_breaker(&f, Fault::Fail).await;
    let at = f.clock.now();
    f.tiered
        .invalidate_tags(std::slice::from_ref(&tag), at)
        .await
        .unwrap();
    assert_eq!(f.tiered.pending_len(), 1);
    f.chaos.set(Fault::None);

    // No call on the tiered backend from here on: this instance may serve everything from L1,
    // yet other instances read L2, so the replay must not wait for one of our reads to miss.
    let deadline = tokio::time::Instant::now() + OPEN_FOR * 3;
    while f.tiered.pending_len() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "never replayed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(f.breaker(), BreakerState::Closed);
    assert_eq!(
        f.l2.get(&key).await.unwrap(),
        None,
        "L2 itself now rejects the entry the invalidation replaced"
    );
}
