//! Behaviour specific to the moka backend.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use cache_core::{
    Cache, CacheBackend, CacheConfig, Clock, Entry, Namespace, SystemClock, TieredBackend,
    TieredConfig, TtlPolicy,
    testing::{ChaosBackend, Fault, ManualClock, MapBackend},
};
use cache_memory::{MemoryBackend, MemoryConfig};

fn entry_of(len: usize, ttl: Duration) -> Entry {
    let now = SystemClock.now();
    let json = serde_json_string(len);
    Entry::new(
        Bytes::from(json),
        now,
        now.saturating_add(ttl),
        now.saturating_add(ttl),
    )
}

fn serde_json_string(len: usize) -> String {
    format!("\"{}\"", "x".repeat(len))
}

#[tokio::test]
async fn the_byte_capacity_bounds_memory_and_counts_evictions() {
    let backend = MemoryBackend::new(MemoryConfig::with_max_bytes(1024 * 1024));
    let ns = Namespace::new("mem", 1).unwrap();
    for i in 0..200 {
        backend
            .set(
                &ns.key("big", &[&i]),
                entry_of(16 * 1024, Duration::from_secs(60)),
            )
            .await
            .unwrap();
    }
    backend.run_pending_tasks().await;
    let tier = &backend.stats().tiers[0];
    assert!(tier.bytes.unwrap() <= 1024 * 1024, "{tier:?}");
    assert!(tier.entries.unwrap() < 200);
    assert!(tier.evictions.unwrap() > 0);
}

#[tokio::test]
async fn stamps_are_dropped_once_no_entry_they_could_hide_is_alive() {
    let clock = Arc::new(ManualClock::default());
    let backend = MemoryBackend::new(MemoryConfig::default().with_clock(clock.clone()));
    let ns = Namespace::new("mem", 1).unwrap();
    let now = clock.now();
    let short = now.saturating_add(Duration::from_millis(50));
    backend
        .set(
            &ns.key("k", &[&1]),
            Entry::new(Bytes::from_static(b"1"), now, short, short),
        )
        .await
        .unwrap();
    for i in 0..100 {
        backend
            .invalidate_tags(&[ns.tag("t", &[&i])], clock.now())
            .await
            .unwrap();
    }
    assert_eq!(backend.stamp_count(), 100);
    // Stamps live (in moka's real time) for the longest entry TTL plus a one second margin: wait
    // for them to go, with a deadline far beyond that for a busy machine.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while backend.stamp_count() > 0 {
        assert!(std::time::Instant::now() < deadline, "stamps never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn hits_through_the_facade_count_and_return_the_cached_value() {
    let backend = Arc::new(MemoryBackend::default());
    let cache = Cache::new(backend.clone());
    let ns = Namespace::new("mem", 1).unwrap();
    let key = ns.key("page", &[&1]);
    let policy = TtlPolicy::new(Duration::from_secs(60));
    let page = Arc::new(vec!["a".to_owned(), "b".to_owned()]);
    cache.set(&key, &page, &policy).await.unwrap();
    for _ in 0..3 {
        let got: Option<Arc<Vec<String>>> = cache.get(&key).await.unwrap();
        assert_eq!(got.as_deref(), Some(&*page));
    }
    let stats = cache.stats();
    assert_eq!(stats.tiers[0].hits, 3);
}

#[tokio::test(start_paused = true)]
async fn memory_l1_keeps_a_tiered_cache_serving_through_an_l2_outage() {
    let l1 = Arc::new(MemoryBackend::default());
    let (l2, chaos) = ChaosBackend::new(Arc::new(MapBackend::new()));
    let tiered = Arc::new(TieredBackend::new(
        l1,
        Arc::new(l2),
        TieredConfig::default(),
    ));
    let cache = Cache::with_config(
        tiered.clone(),
        CacheConfig::default().with_clock(Arc::new(SystemClock)),
    );
    let ns = Namespace::new("mem", 1).unwrap();
    let key = ns.key("page", &[&1]);
    let policy = TtlPolicy::new(Duration::from_secs(60));
    chaos.set(Fault::Hang);
    let v: String = cache
        .get_or_load(&key, &policy, || async {
            Ok::<_, std::io::Error>("v".to_owned())
        })
        .await
        .unwrap();
    assert_eq!(v, "v");
    let loads_before = cache.stats().loads.loads;
    let again: String = cache
        .get_or_load(&key, &policy, || async {
            Ok::<_, std::io::Error>("other".to_owned())
        })
        .await
        .unwrap();
    assert_eq!(again, "v", "served from L1 while L2 hangs");
    assert_eq!(cache.stats().loads.loads, loads_before);
    assert!(cache.stats().tiers[1].timeouts >= 1);
}

#[tokio::test]
async fn clear_local_drops_every_entry_and_later_writes_stay() {
    let backend = MemoryBackend::new(MemoryConfig::default());
    let ns = Namespace::new("clear", 1).unwrap();
    let (a, b) = (ns.key("k", &[&1]), ns.key("k", &[&2]));
    backend
        .set(&a, entry_of(10, Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(backend.clear_local().await.unwrap());
    assert!(backend.get(&a).await.unwrap().is_none());
    backend
        .set(&b, entry_of(10, Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(backend.get(&b).await.unwrap().is_some());
}
