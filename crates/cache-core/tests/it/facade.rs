//! `Cache` (the typed facade): single-flight, the stale-fill race, read-your-writes,
//! stale-while-revalidate, fail-safe, and fallback when the backend fails.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use cache_core::{
    Cache, CacheConfig, Entry, Key, Namespace, Tag, TtlPolicy,
    testing::{ChaosBackend, Fault, ManualClock, MapBackend},
};
use tokio::sync::oneshot;

fn page_key() -> (Key, Tag) {
    let ns = Namespace::new("test", 1).unwrap();
    let tag = ns.tag("channel", &[&1]);
    (
        ns.key("page", &[&1]).tagged(std::slice::from_ref(&tag)),
        tag,
    )
}

fn policy() -> TtlPolicy {
    TtlPolicy::new(Duration::from_secs(60))
}

#[derive(Debug)]
struct DbError;
impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("database unavailable")
    }
}
impl std::error::Error for DbError {}

/// Waits (yielding) until `cond` holds; panics after many rounds so a bug cannot hang the suite.
async fn until(mut cond: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("condition never became true");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_flight_runs_the_loader_once_for_concurrent_callers() {
    let cache = Cache::new(Arc::new(MapBackend::new()));
    let (key, _) = page_key();
    let loads = Arc::new(AtomicUsize::new(0));
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let release_rx = Arc::new(Mutex::new(Some(release_rx)));

    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let (cache, key, loads, release_rx) = (
            cache.clone(),
            key.clone(),
            loads.clone(),
            release_rx.clone(),
        );
        callers.spawn(async move {
            cache
                .get_or_load(&key, &policy(), move || async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    let rx = release_rx.lock().unwrap().take().expect("loader ran twice");
                    rx.await.unwrap();
                    Ok::<_, DbError>(vec!["hello".to_owned()])
                })
                .await
        });
    }
    // Every caller but the leader is waiting on the leader's load before it is released.
    until(|| cache.stats().loads.coalesced == 99).await;
    release_tx.send(()).unwrap();
    while let Some(result) = callers.join_next().await {
        assert_eq!(result.unwrap().unwrap(), vec!["hello".to_owned()]);
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(cache.stats().loads.loads, 1);
    assert_eq!(cache.loads_in_flight(), 0);
}

/// The stale-fill race: reader misses and reads the old value; writer commits and invalidates; reader stores
/// the old value. The entry must not be served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_fill_race_leaves_no_stale_entry() {
    let backend = Arc::new(MapBackend::new());
    let cache = Cache::new(backend.clone());
    let (key, tag) = page_key();
    let db = Arc::new(Mutex::new("old"));
    let (read_tx, read_rx) = oneshot::channel();
    let (store_tx, store_rx) = oneshot::channel::<()>();

    // 1. The reader misses and reads the old value from the database, then stalls.
    let reader = {
        let (cache, key, db) = (cache.clone(), key.clone(), db.clone());
        tokio::spawn(async move {
            cache
                .get_or_load(&key, &policy(), move || async move {
                    let value = db.lock().unwrap().to_string();
                    read_tx.send(()).unwrap();
                    store_rx.await.unwrap();
                    Ok::<_, DbError>(value)
                })
                .await
        })
    };
    read_rx.await.unwrap();
    // 2. The writer commits and invalidates.
    *db.lock().unwrap() = "new";
    cache.invalidate(&[tag]).await.unwrap();
    // 3. The reader stores what it read (its own answer may be old: it began before the write).
    store_tx.send(()).unwrap();
    assert_eq!(reader.await.unwrap().unwrap(), "old");
    // The reader's answer comes before its cache write; wait for the write.
    until(|| cache.loads_in_flight() == 0).await;

    assert!(backend.raw(&key).is_some(), "the late fill was written");
    assert_eq!(
        cache.get::<String>(&key).await.unwrap(),
        None,
        "but is not served"
    );
    let next = cache
        .get_or_load(&key, &policy(), move || async move {
            Ok::<_, DbError>(db.lock().unwrap().to_string())
        })
        .await
        .unwrap();
    assert_eq!(next, "new");
}

/// A read that starts after a write was acknowledged never joins a load that began before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_does_not_join_an_older_load() {
    let cache = Cache::new(Arc::new(MapBackend::new()));
    let (key, tag) = page_key();
    let (read_tx, read_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let slow_old_load = {
        let (cache, key) = (cache.clone(), key.clone());
        tokio::spawn(async move {
            cache
                .get_or_load(&key, &policy(), move || async move {
                    read_tx.send(()).unwrap();
                    release_rx.await.unwrap();
                    Ok::<_, DbError>("v1".to_owned())
                })
                .await
        })
    };
    read_rx.await.unwrap();
    cache.invalidate(&[tag]).await.unwrap(); // the write of v2 is acknowledged here
    let after_write = cache
        .get_or_load(&key, &policy(), || async {
            Ok::<_, DbError>("v2".to_owned())
        })
        .await
        .unwrap();
    assert_eq!(after_write, "v2");
    release_tx.send(()).unwrap();
    assert_eq!(slow_old_load.await.unwrap().unwrap(), "v1");
    until(|| cache.loads_in_flight() == 0).await;
    assert_eq!(
        cache.get::<String>(&key).await.unwrap().as_deref(),
        Some("v2")
    );
}

/// `get_or_load_if`: a value `keep` refuses is returned but stored nowhere, so the next call
/// loads again; an accepted one is cached as usual.
#[tokio::test]
async fn values_keep_refuses_are_returned_but_not_stored() {
    let backend = Arc::new(MapBackend::new());
    let cache = Cache::new(backend.clone());
    let (key, _) = page_key();
    let loads = Arc::new(AtomicUsize::new(0));
    let load = |v: Option<&'static str>| {
        let loads = Arc::clone(&loads);
        move || async move {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<_, DbError>(v.map(str::to_owned))
        }
    };
    for _ in 0..2 {
        let found = cache
            .get_or_load_if(&key, &policy(), Option::is_some, load(None))
            .await
            .unwrap();
        assert_eq!(found, None);
    }
    assert_eq!(loads.load(Ordering::SeqCst), 2, "nothing was cached");
    assert!(backend.is_empty());
    let found = cache
        .get_or_load_if(&key, &policy(), Option::is_some, load(Some("v")))
        .await
        .unwrap();
    assert_eq!(found.as_deref(), Some("v"));
    until(|| backend.len() == 1).await;
    let cached: Option<String> = cache
        .get_or_load_if(&key, &policy(), Option::is_some, load(None))
        .await
        .unwrap();
    assert_eq!(cached.as_deref(), Some("v"));
    assert_eq!(loads.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_write_is_visible_to_the_next_read() {
    let cache = Cache::new(Arc::new(MapBackend::new()));
    let (key, tag) = page_key();
    let load = |v: &'static str| move || async move { Ok::<_, DbError>(v.to_owned()) };
    assert_eq!(
        cache
            .get_or_load(&key, &policy(), load("v1"))
            .await
            .unwrap(),
        "v1"
    );
    assert_eq!(
        cache
            .get_or_load(&key, &policy(), load("ignored"))
            .await
            .unwrap(),
        "v1"
    );
    cache.invalidate(&[tag]).await.unwrap();
    assert_eq!(
        cache
            .get_or_load(&key, &policy(), load("v2"))
            .await
            .unwrap(),
        "v2"
    );
}

fn manual_cache() -> (Cache, Arc<ManualClock>, Arc<MapBackend>) {
    let clock = Arc::new(ManualClock::default());
    let backend = Arc::new(MapBackend::with_clock(clock.clone()));
    let cache = Cache::with_config(
        backend.clone(),
        CacheConfig::default().with_clock(clock.clone()),
    );
    (cache, clock, backend)
}

fn graced() -> TtlPolicy {
    TtlPolicy::new(Duration::from_secs(10))
        .with_jitter(0.0)
        .with_grace(Duration::from_secs(60))
        .with_failsafe_throttle(Duration::from_secs(5))
}

#[tokio::test]
async fn stale_within_grace_is_served_and_refreshed_in_background() {
    let (cache, clock, _) = manual_cache();
    let (key, _) = page_key();
    let ok = |v: &'static str| move || async move { Ok::<_, DbError>(v.to_owned()) };
    cache.get_or_load(&key, &graced(), ok("v1")).await.unwrap();
    until(|| cache.loads_in_flight() == 0).await;
    clock.advance(Duration::from_secs(11));
    assert_eq!(
        cache.get_or_load(&key, &graced(), ok("v2")).await.unwrap(),
        "v1"
    );
    assert_eq!(cache.stats().loads.stale_served, 1);
    until(|| cache.stats().loads.loads == 2 && cache.loads_in_flight() == 0).await;
    assert_eq!(
        cache.get::<String>(&key).await.unwrap().as_deref(),
        Some("v2")
    );
}

#[tokio::test]
async fn fail_safe_serves_stale_on_loader_error_within_grace_and_not_after() {
    let (cache, clock, _) = manual_cache();
    let (key, _) = page_key();
    let calls = Arc::new(AtomicUsize::new(0));
    let failing = || {
        let calls = calls.clone();
        move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<String, _>(DbError)
        }
    };
    cache
        .get_or_load(&key, &graced(), || async {
            Ok::<_, DbError>("v1".to_owned())
        })
        .await
        .unwrap();
    until(|| cache.loads_in_flight() == 0).await;

    // Within grace: the stale value is served and the failed refresh is absorbed.
    clock.advance(Duration::from_secs(11));
    assert_eq!(
        cache.get_or_load(&key, &graced(), failing()).await.unwrap(),
        "v1"
    );
    until(|| cache.stats().loads.failsafe_served == 1 && cache.loads_in_flight() == 0).await;
    // The throttle keeps the failing source from being called on every request.
    assert_eq!(
        cache.get_or_load(&key, &graced(), failing()).await.unwrap(),
        "v1"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // After grace: nothing stale is left to stand in, so the error comes through.
    clock.advance(Duration::from_secs(61));
    let err = cache
        .get_or_load(&key, &graced(), failing())
        .await
        .unwrap_err();
    assert!(err.is_loader(), "{err:?}");
    assert_eq!(cache.stats().loads.load_errors, 2);
}

#[tokio::test]
async fn a_failed_load_without_stale_value_is_an_error_and_is_not_cached() {
    let cache = Cache::new(Arc::new(MapBackend::new()));
    let (key, _) = page_key();
    let err = cache
        .get_or_load(&key, &policy(), || async { Err::<String, _>(DbError) })
        .await
        .unwrap_err();
    assert!(err.is_loader());
    assert!(err.to_string().contains("database unavailable"));
    let ok = cache
        .get_or_load(&key, &policy(), || async {
            Ok::<_, DbError>("v".to_owned())
        })
        .await
        .unwrap();
    assert_eq!(ok, "v");
}

#[tokio::test]
async fn a_panicking_loader_fails_its_callers_without_hanging_them() {
    let cache = Cache::new(Arc::new(MapBackend::new()));
    let (key, _) = page_key();
    let err = cache
        .get_or_load(&key, &policy(), || async {
            if true {
                panic!("loader bug");
            }
            Ok::<String, DbError>(String::new())
        })
        .await
        .unwrap_err();
    assert!(err.is_loader());
    assert_eq!(cache.loads_in_flight(), 0);
    let ok = cache
        .get_or_load(&key, &policy(), || async {
            Ok::<_, DbError>("v".to_owned())
        })
        .await
        .unwrap();
    assert_eq!(ok, "v");
}

/// A backend whose writes wait until the test lets them through.
struct HeldWrites {
    inner: MapBackend,
    gate: tokio::sync::Semaphore,
}

#[async_trait::async_trait]
impl cache_core::CacheBackend for HeldWrites {
    fn name(&self) -> &'static str {
        "held"
    }
    async fn get(&self, key: &Key) -> cache_core::Result<Option<Entry>> {
        self.inner.get(key).await
    }
    async fn set(&self, key: &Key, entry: Entry) -> cache_core::Result<()> {
        let _permit = self.gate.acquire().await.expect("gate open");
        self.inner.set(key, entry).await
    }
    async fn delete(&self, key: &Key) -> cache_core::Result<bool> {
        self.inner.delete(key).await
    }
    async fn invalidate_tags(
        &self,
        tags: &[Tag],
        at: cache_core::Timestamp,
    ) -> cache_core::Result<()> {
        self.inner.invalidate_tags(tags, at).await
    }
    async fn ping(&self) -> cache_core::Result<Duration> {
        self.inner.ping().await
    }
    fn stats(&self) -> cache_core::CacheStats {
        self.inner.stats()
    }
}

/// The answer does not wait for the cache write (a slow L2 never delays it), and a caller arriving
/// during the write joins the finished load instead of loading again.
#[tokio::test]
async fn answers_come_before_the_cache_write_and_late_callers_still_join() {
    let backend = Arc::new(HeldWrites {
        inner: MapBackend::new(),
        gate: tokio::sync::Semaphore::new(0),
    });
    let cache = Cache::new(backend.clone());
    let (key, _) = page_key();
    let first = cache
        .get_or_load(&key, &policy(), || async { Ok::<_, DbError>(1u32) })
        .await
        .unwrap();
    assert_eq!(first, 1);
    assert_eq!(cache.loads_in_flight(), 1, "the write is still held");
    let second = cache
        .get_or_load(&key, &policy(), || async { Ok::<_, DbError>(2u32) })
        .await
        .unwrap();
    assert_eq!(second, 1, "joined the finished load");
    assert_eq!(cache.stats().loads.loads, 1);
    backend.gate.add_permits(1);
    until(|| cache.loads_in_flight() == 0).await;
    assert_eq!(cache.get::<u32>(&key).await.unwrap(), Some(1));
}

#[tokio::test]
async fn a_failing_backend_never_fails_get_or_load() {
    let (chaos, control) = ChaosBackend::new(Arc::new(MapBackend::new()));
    let cache = Cache::new(Arc::new(chaos));
    control.set(Fault::Fail);
    let (key, tag) = page_key();
    let got = cache
        .get_or_load(&key, &policy(), || async { Ok::<_, DbError>(42u32) })
        .await
        .unwrap();
    assert_eq!(got, 42);
    assert!(
        cache.stats().loads.backend_errors >= 2,
        "read and write failures are counted"
    );
    // The plain API reports backend errors instead.
    assert!(cache.invalidate(&[tag]).await.unwrap_err().is_backend());
}

#[tokio::test]
async fn undecodable_cached_bytes_are_a_miss_not_an_error() {
    let backend = Arc::new(MapBackend::new());
    let cache = Cache::new(backend.clone());
    let (key, _) = page_key();
    let now = cache.clock().now();
    let garbage = Entry::new(
        Bytes::from_static(b"{\"unexpected\":true}"),
        now,
        now.saturating_add(Duration::from_secs(60)),
        now.saturating_add(Duration::from_secs(60)),
    );
    use cache_core::CacheBackend as _;
    backend.set(&key, garbage).await.unwrap();
    let got = cache
        .get_or_load(&key, &policy(), || async { Ok::<_, DbError>(vec![1u8, 2]) })
        .await
        .unwrap();
    assert_eq!(got, vec![1, 2]);
    until(|| cache.loads_in_flight() == 0).await;
    assert_eq!(cache.stats().loads.decode_errors, 1);
    assert!(cache.get::<Vec<u8>>(&key).await.unwrap().is_some());
}

#[tokio::test]
async fn typed_batch_calls_roundtrip() {
    let cache = Cache::new(Arc::new(MapBackend::new()));
    let ns = Namespace::new("test", 1).unwrap();
    let items: Vec<(Key, String)> = (0..3)
        .map(|i| (ns.key("item", &[&i]), format!("value {i}")))
        .collect();
    cache.set_many(&items, &policy()).await.unwrap();
    let mut keys: Vec<Key> = items.iter().map(|(k, _)| k.clone()).collect();
    keys.push(ns.key("item", &[&"missing"]));
    let got = cache.get_many::<String>(&keys).await.unwrap();
    assert_eq!(
        got,
        vec![
            Some("value 0".to_owned()),
            Some("value 1".to_owned()),
            Some("value 2".to_owned()),
            None
        ]
    );
    assert!(cache.remove(&keys[0]).await.unwrap());
    assert_eq!(cache.get::<String>(&keys[0]).await.unwrap(), None);
}

#[tokio::test]
async fn the_noop_backend_caches_nothing() {
    let cache = Cache::new(Arc::new(cache_core::NoopBackend::new()));
    let (key, _) = page_key();
    for expected_loads in 1..=3 {
        let v = cache
            .get_or_load(&key, &policy(), || async { Ok::<_, DbError>(1u8) })
            .await
            .unwrap();
        assert_eq!(v, 1);
        assert_eq!(cache.stats().loads.loads, expected_loads);
    }
    assert_eq!(cache.get::<u8>(&key).await.unwrap(), None);
}

/// Invalidating another channel does not split a stampede on this one (epochs are per tag).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrelated_invalidations_do_not_split_a_stampede() {
    let cache = Cache::new(Arc::new(MapBackend::new()));
    let (key, _) = page_key();
    let other = Namespace::new("test", 1).unwrap().tag("channel", &[&2]);
    let loads = Arc::new(AtomicUsize::new(0));
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let release_rx = Arc::new(Mutex::new(Some(release_rx)));
    let mut callers = tokio::task::JoinSet::new();
    for i in 0..20 {
        if i == 10 {
            cache
                .invalidate(std::slice::from_ref(&other))
                .await
                .unwrap();
        }
        let (cache, key, loads, release_rx) = (
            cache.clone(),
            key.clone(),
            loads.clone(),
            release_rx.clone(),
        );
        callers.spawn(async move {
            cache
                .get_or_load(&key, &policy(), move || async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    let rx = release_rx.lock().unwrap().take().expect("loader ran twice");
                    rx.await.unwrap();
                    Ok::<_, DbError>(1u32)
                })
                .await
        });
    }
    until(|| cache.stats().loads.coalesced == 19).await;
    release_tx.send(()).unwrap();
    while let Some(result) = callers.join_next().await {
        assert_eq!(result.unwrap().unwrap(), 1);
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
}

/// A backend with an in-process tier (`get_now`) whose first `get` reads, then waits for the
/// test before answering: a caller whose read missed just before another caller's load filled
/// the cache.
#[derive(Debug, Default)]
struct ReadThenWait {
    entries: Mutex<std::collections::HashMap<Key, Entry>>,
    first_read_done: tokio::sync::Notify,
    release_first_read: tokio::sync::Notify,
    gated: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl cache_core::CacheBackend for ReadThenWait {
    fn name(&self) -> &'static str {
        "read-then-wait"
    }

    fn get_now(&self, key: &Key) -> Option<Entry> {
        self.entries.lock().unwrap().get(key).cloned()
    }

    async fn get(&self, key: &Key) -> cache_core::Result<Option<Entry>> {
        let found = self.get_now(key);
        if !self.gated.swap(true, Ordering::SeqCst) {
            self.first_read_done.notify_one();
            self.release_first_read.notified().await;
        }
        Ok(found)
    }

    async fn set(&self, key: &Key, entry: Entry) -> cache_core::Result<()> {
        self.entries.lock().unwrap().insert(key.clone(), entry);
        Ok(())
    }

    async fn delete(&self, key: &Key) -> cache_core::Result<bool> {
        Ok(self.entries.lock().unwrap().remove(key).is_some())
    }

    async fn invalidate_tags(
        &self,
        _tags: &[Tag],
        _at: cache_core::Timestamp,
    ) -> cache_core::Result<()> {
        Ok(())
    }

    async fn ping(&self) -> cache_core::Result<Duration> {
        Ok(Duration::ZERO)
    }

    fn stats(&self) -> cache_core::CacheStats {
        cache_core::CacheStats::default()
    }
}

#[tokio::test]
async fn a_caller_that_missed_just_before_a_load_finished_does_not_load_again() {
    let backend = Arc::new(ReadThenWait::default());
    let cache = Cache::new(backend.clone());
    let (key, _) = page_key();
    let loads = Arc::new(AtomicUsize::new(0));
    let load = |loads: Arc<AtomicUsize>| {
        move || async move {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<_, DbError>("page".to_owned())
        }
    };

    // A reads (a miss) and is held before it can join a load.
    let late = tokio::spawn({
        let (cache, key, loads) = (cache.clone(), key.clone(), loads.clone());
        async move { cache.get_or_load(&key, &policy(), load(loads)).await }
    });
    backend.first_read_done.notified().await;
    // B misses too, loads, and fills the cache; its flight is over before A joins.
    let first: String = cache
        .get_or_load(&key, &policy(), load(loads.clone()))
        .await
        .unwrap();
    assert_eq!(first, "page");
    assert_eq!(cache.loads_in_flight(), 0);

    backend.release_first_read.notify_one();
    assert_eq!(late.await.unwrap().unwrap(), "page");
    assert_eq!(
        loads.load(Ordering::SeqCst),
        1,
        "A served B's fill instead of loading again"
    );
}
