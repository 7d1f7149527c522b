//! The backend conformance suite: the semantics of [`CacheBackend`](crate::CacheBackend) as executable checks.
//!
//! Every backend runs it through [`backend_conformance_tests!`](crate::backend_conformance_tests):
//!
//! ```text
//! async fn backend() -> MyBackend { MyBackend::new() }
//! cache_core::backend_conformance_tests!(backend);
//! ```
//!
//! Each check takes a fresh backend and uses its own namespace, so backends that share storage
//! (one Redis for the whole run) do not interfere. Checks use the system clock, as real backends do.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;

use crate::{
    backend::DynBackend,
    entry::Entry,
    key::{Key, Namespace},
    time::{Clock, SystemClock, Timestamp},
};

/// Expands to one `#[tokio::test]` per conformance check, each calling `$factory().await` for a
/// fresh backend (any type implementing `CacheBackend`). The calling crate needs `tokio` with the
/// `macros` and `rt-multi-thread` features among its dev-dependencies.
///
/// The suite checks semantics, not cost: a wrapper that forgets to forward `get_many` or
/// `set_many` still passes through the trait's one-key-at-a-time defaults. Backends with a batch
/// primitive should also assert their round trips (as `cache-upstash`'s `p4_request_counts` does).
#[macro_export]
macro_rules! backend_conformance_tests {
    ($factory:path) => {
        $crate::backend_conformance_tests!(@checks $factory;
            get_missing_is_none,
            set_then_get_roundtrips,
            overwrite_replaces,
            delete_removes_and_reports_existence,
            entries_expire,
            stale_entries_in_grace_are_returned,
            get_many_returns_slots_in_order,
            set_many_then_get_many,
            delete_many_counts_removed_keys,
            tag_invalidation_hides_older_entries,
            late_fill_after_invalidation_is_rejected,
            tag_stamps_only_move_forward,
            namespace_tag_invalidates_every_key,
            large_values_roundtrip,
            binary_values_roundtrip,
            unicode_keys_and_values,
            concurrent_use,
            ping_answers,
            stats_name_a_tier,
            no_stale_reads_under_concurrent_writes,
            named_probes_never_show_what_get_hides,
        );
    };
    (@checks $factory:path; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let backend: $crate::DynBackend = ::std::sync::Arc::new($factory().await);
                $crate::testing::conformance::$check(&backend).await;
            }
        )*
    };
}

fn namespace() -> Namespace {
    Namespace::new(&format!("conformance-{:016x}", fastrand::u64(..)), 1).expect("valid prefix")
}

fn now() -> Timestamp {
    SystemClock.now()
}

/// An entry of `json` created now, fresh for `ttl`, with no grace.
fn entry(json: &str, ttl: Duration) -> Entry {
    let created = now();
    Entry::new(
        Bytes::copy_from_slice(json.as_bytes()),
        created,
        created.saturating_add(ttl),
        created.saturating_add(ttl),
    )
}

const MINUTE: Duration = Duration::from_secs(60);

async fn get(backend: &DynBackend, key: &Key) -> Option<Entry> {
    backend.get(key).await.expect("get")
}

/// A key never written is a miss.
pub async fn get_missing_is_none(backend: &DynBackend) {
    let ns = namespace();
    assert!(get(backend, &ns.key("missing", &[&1])).await.is_none());
}

/// An entry comes back with its bytes and timestamps.
pub async fn set_then_get_roundtrips(backend: &DynBackend) {
    let ns = namespace();
    let key = ns.key("item", &[&1]);
    let written = entry(r#"{"id":1,"name":"general"}"#, MINUTE);
    backend.set(&key, written.clone()).await.expect("set");
    assert_eq!(get(backend, &key).await, Some(written));
}

/// A second set replaces the first.
pub async fn overwrite_replaces(backend: &DynBackend) {
    let ns = namespace();
    let key = ns.key("item", &[&1]);
    backend.set(&key, entry("1", MINUTE)).await.expect("set");
    let second = entry("2", MINUTE);
    backend.set(&key, second.clone()).await.expect("set");
    assert_eq!(get(backend, &key).await, Some(second));
}

/// Delete removes the key and says whether it was there.
pub async fn delete_removes_and_reports_existence(backend: &DynBackend) {
    let ns = namespace();
    let key = ns.key("item", &[&1]);
    backend.set(&key, entry("1", MINUTE)).await.expect("set");
    assert!(backend.delete(&key).await.expect("delete"));
    assert!(get(backend, &key).await.is_none());
    assert!(!backend.delete(&key).await.expect("delete"));
}

/// An entry is gone after its expiry.
pub async fn entries_expire(backend: &DynBackend) {
    let ns = namespace();
    let key = ns.key("item", &[&1]);
    backend
        .set(&key, entry("1", Duration::from_millis(300)))
        .await
        .expect("set");
    assert!(
        get(backend, &key).await.is_some(),
        "alive before its expiry"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(get(backend, &key).await.is_none(), "gone after its expiry");
}

/// An entry past its freshness but within grace is still returned, marked stale.
pub async fn stale_entries_in_grace_are_returned(backend: &DynBackend) {
    let ns = namespace();
    let key = ns.key("item", &[&1]);
    let created = now();
    let stale = Entry::new(
        Bytes::from_static(b"\"old\""),
        created,
        created.saturating_add(Duration::from_millis(1)),
        created.saturating_add(MINUTE),
    );
    backend.set(&key, stale).await.expect("set");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let got = get(backend, &key).await.expect("stale entry within grace");
    assert!(!got.is_fresh(now()));
    assert!(got.is_alive(now()));
}

/// `get_many` answers one slot per key, in order, `None` for misses.
pub async fn get_many_returns_slots_in_order(backend: &DynBackend) {
    let ns = namespace();
    let (a, missing, b) = (
        ns.key("k", &[&"a"]),
        ns.key("k", &[&"x"]),
        ns.key("k", &[&"b"]),
    );
    let (ea, eb) = (entry("\"a\"", MINUTE), entry("\"b\"", MINUTE));
    backend.set(&a, ea.clone()).await.expect("set");
    backend.set(&b, eb.clone()).await.expect("set");
    let got = backend
        .get_many(&[a.clone(), missing, b.clone(), a])
        .await
        .expect("get_many");
    assert_eq!(got, vec![Some(ea.clone()), None, Some(eb), Some(ea)]);
    assert!(
        backend
            .get_many(&[])
            .await
            .expect("empty get_many")
            .is_empty()
    );
}

/// `set_many` writes every entry.
pub async fn set_many_then_get_many(backend: &DynBackend) {
    let ns = namespace();
    let items: Vec<(Key, Entry)> = (0..20)
        .map(|i| (ns.key("k", &[&i]), entry(&i.to_string(), MINUTE)))
        .collect();
    backend.set_many(&items).await.expect("set_many");
    let keys: Vec<Key> = items.iter().map(|(k, _)| k.clone()).collect();
    let got = backend.get_many(&keys).await.expect("get_many");
    let want: Vec<Option<Entry>> = items.into_iter().map(|(_, e)| Some(e)).collect();
    assert_eq!(got, want);
    backend.set_many(&[]).await.expect("empty set_many");
}

/// `delete_many` removes the keys and counts those that existed.
pub async fn delete_many_counts_removed_keys(backend: &DynBackend) {
    let ns = namespace();
    let (a, b, missing) = (ns.key("k", &[&1]), ns.key("k", &[&2]), ns.key("k", &[&3]));
    backend.set(&a, entry("1", MINUTE)).await.expect("set");
    backend.set(&b, entry("2", MINUTE)).await.expect("set");
    let removed = backend
        .delete_many(&[a.clone(), b.clone(), missing])
        .await
        .expect("delete_many");
    assert_eq!(removed, 2);
    assert!(get(backend, &a).await.is_none());
    assert!(get(backend, &b).await.is_none());
}

/// Invalidating a tag hides the entries of that tag written before, and only those.
pub async fn tag_invalidation_hides_older_entries(backend: &DynBackend) {
    let ns = namespace();
    let (t1, t2) = (ns.tag("channel", &[&1]), ns.tag("channel", &[&2]));
    let k1 = ns
        .key("page", &[&1, &"a"])
        .tagged(std::slice::from_ref(&t1));
    let k2 = ns.key("page", &[&2]).tagged(std::slice::from_ref(&t2));
    let k3 = ns
        .key("page", &[&1, &"b"])
        .tagged(std::slice::from_ref(&t1));
    for k in [&k1, &k2, &k3] {
        backend.set(k, entry("1", MINUTE)).await.expect("set");
    }
    backend
        .invalidate_tags(std::slice::from_ref(&t1), now())
        .await
        .expect("invalidate");
    assert!(get(backend, &k1).await.is_none());
    assert!(get(backend, &k3).await.is_none());
    assert!(
        get(backend, &k2).await.is_some(),
        "other tags are untouched"
    );
    // A new entry written after the invalidation is visible.
    let fresh = entry("2", MINUTE);
    backend.set(&k1, fresh.clone()).await.expect("set");
    assert_eq!(get(backend, &k1).await, Some(fresh));
}

/// The stale-fill race: data read before an invalidation but written after it must not be served.
pub async fn late_fill_after_invalidation_is_rejected(backend: &DynBackend) {
    let ns = namespace();
    let tag = ns.tag("channel", &[&7]);
    let key = ns.key("page", &[&7]).tagged(std::slice::from_ref(&tag));
    // 1. A reader misses and reads the old value from the source.
    let read_old = entry("\"old\"", MINUTE);
    // 2. A writer commits and invalidates.
    backend
        .invalidate_tags(std::slice::from_ref(&tag), now())
        .await
        .expect("invalidate");
    // 3. The reader stores what it read.
    backend.set(&key, read_old).await.expect("set");
    assert!(get(backend, &key).await.is_none(), "stale fill was served");
}

/// An older stamp arriving after a newer one does not resurrect entries.
pub async fn tag_stamps_only_move_forward(backend: &DynBackend) {
    let ns = namespace();
    let tag = ns.tag("user", &[&1]);
    let key = ns.key("channels", &[&1]).tagged(std::slice::from_ref(&tag));
    let early = now();
    let between = entry("1", MINUTE);
    let late = now();
    backend
        .invalidate_tags(std::slice::from_ref(&tag), late)
        .await
        .expect("invalidate");
    backend
        .invalidate_tags(std::slice::from_ref(&tag), early)
        .await
        .expect("invalidate");
    backend.set(&key, between).await.expect("set");
    assert!(get(backend, &key).await.is_none());
}

/// Every key carries its namespace's tag.
pub async fn namespace_tag_invalidates_every_key(backend: &DynBackend) {
    let ns = namespace();
    let other = namespace();
    let keys = [ns.key("a", &[&1]), ns.key("b", &[&2])];
    let survivor = other.key("a", &[&1]);
    for k in keys.iter().chain([&survivor]) {
        backend.set(k, entry("1", MINUTE)).await.expect("set");
    }
    backend
        .invalidate_tags(std::slice::from_ref(ns.all_tag()), now())
        .await
        .expect("invalidate");
    for k in &keys {
        assert!(get(backend, k).await.is_none());
    }
    assert!(get(backend, &survivor).await.is_some());
}

/// Values of 256 KiB and 1 MiB come back intact.
pub async fn large_values_roundtrip(backend: &DynBackend) {
    let ns = namespace();
    for (i, len) in [256 * 1024, 1024 * 1024].into_iter().enumerate() {
        let text: String = (0..len)
            .map(|n| char::from(b'a' + (n % 26) as u8))
            .collect();
        let json = serde_json::to_string(&text).expect("json");
        let key = ns.key("big", &[&i]);
        let written = entry(&json, MINUTE);
        backend.set(&key, written.clone()).await.expect("set");
        assert_eq!(get(backend, &key).await, Some(written), "{len} bytes");
    }
}

/// Values that are not JSON or UTF-8 come back byte for byte.
pub async fn binary_values_roundtrip(backend: &DynBackend) {
    let ns = namespace();
    let key = ns.key("bin", &[&1]);
    let bytes: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    let created = now();
    let written = Entry::new(
        Bytes::from(bytes),
        created,
        created.saturating_add(MINUTE),
        created.saturating_add(MINUTE),
    );
    backend.set(&key, written.clone()).await.expect("set");
    assert_eq!(get(backend, &key).await, Some(written));
}

/// Keys and values with non-ASCII text, separators and escapes.
pub async fn unicode_keys_and_values(backend: &DynBackend) {
    let ns = namespace();
    let key = ns.key("user", &[&"Zoë 😀 日本語", &"a:b/c d%"]);
    let other = ns.key("user", &[&"Zoë 😀 日本語", &"a"]);
    let written = entry(
        r#"{"text":"héllo 👋 \"quoted\" \\ \n new\u0000line"}"#,
        MINUTE,
    );
    backend.set(&key, written.clone()).await.expect("set");
    assert_eq!(get(backend, &key).await, Some(written));
    assert!(get(backend, &other).await.is_none());
}

/// Many tasks reading and writing at once see their own writes and no torn values.
pub async fn concurrent_use(backend: &DynBackend) {
    let ns = Arc::new(namespace());
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..16 {
        let backend = Arc::clone(backend);
        let ns = Arc::clone(&ns);
        tasks.spawn(async move {
            for i in 0..10 {
                let key = ns.key("task", &[&task, &i]);
                let value = format!("[{task},{i}]");
                let written = entry(&value, MINUTE);
                backend.set(&key, written.clone()).await.expect("set");
                assert_eq!(backend.get(&key).await.expect("get"), Some(written));
                // Everyone also hammers one shared key; whatever is read must be a whole value.
                let shared = ns.key("shared", &[]);
                backend
                    .set(&shared, entry(&value, MINUTE))
                    .await
                    .expect("set");
                let got = backend
                    .get(&shared)
                    .await
                    .expect("get")
                    .expect("shared key");
                let parsed: Vec<u32> = serde_json::from_slice(got.value()).expect("whole value");
                assert_eq!(parsed.len(), 2);
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("task panicked");
    }
}

/// `ping` answers.
pub async fn ping_answers(backend: &DynBackend) {
    backend.ping().await.expect("ping");
}

/// `stats` names at least one tier.
pub async fn stats_name_a_tier(backend: &DynBackend) {
    let ns = namespace();
    let key = ns.key("k", &[&1]);
    backend.set(&key, entry("1", MINUTE)).await.expect("set");
    let _ = get(backend, &key).await;
    let stats = backend.stats();
    assert!(!stats.tiers.is_empty());
    assert!(!stats.tiers[0].backend.is_empty());
}

/// R2, randomized: writers commit a new version to a "database" and invalidate; readers that
/// start after a write was acknowledged must never get an older version through `get_or_load`,
/// whatever the interleaving of loads, fills and invalidations (random yields shuffle them).
pub async fn no_stale_reads_under_concurrent_writes(backend: &DynBackend) {
    use std::sync::atomic::{AtomicU64, Ordering};

    use crate::{Cache, TtlPolicy};

    let cache = Cache::new(Arc::clone(backend));
    let ns = namespace();
    let tag = ns.tag("channel", &[&1]);
    let key = ns.key("page", &[&1]).tagged(std::slice::from_ref(&tag));
    let database = Arc::new(AtomicU64::new(0));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let policy = TtlPolicy::new(MINUTE);

    async fn maybe_yield() {
        for _ in 0..fastrand::usize(0..3) {
            tokio::task::yield_now().await;
        }
    }

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let (cache, tag) = (cache.clone(), tag.clone());
        let (database, acknowledged) = (database.clone(), acknowledged.clone());
        tasks.spawn(async move {
            for _ in 0..60 {
                let version = database.fetch_add(1, Ordering::SeqCst) + 1; // the commit
                maybe_yield().await;
                cache
                    .invalidate(std::slice::from_ref(&tag))
                    .await
                    .expect("invalidate");
                acknowledged.fetch_max(version, Ordering::SeqCst); // the answer to the writer
                maybe_yield().await;
            }
        });
    }
    for _ in 0..4 {
        let (cache, key) = (cache.clone(), key.clone());
        let (database, acknowledged) = (database.clone(), acknowledged.clone());
        tasks.spawn(async move {
            for _ in 0..120 {
                let floor = acknowledged.load(Ordering::SeqCst);
                let database = database.clone();
                let got = cache
                    .get_or_load(&key, &policy, move || async move {
                        maybe_yield().await;
                        let version = database.load(Ordering::SeqCst);
                        maybe_yield().await;
                        Ok::<_, std::convert::Infallible>(version)
                    })
                    .await
                    .expect("get_or_load");
                assert!(
                    got >= floor,
                    "stale read: version {got} after version {floor} was acknowledged"
                );
                maybe_yield().await;
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("task panicked");
    }
}

/// A probe by name alone ([`CacheBackend::get_now_named`](crate::CacheBackend::get_now_named))
/// may decline (`None`: build the key and ask again), but what it answers is what `get` would:
/// never an entry whose tags were invalidated, deleted or overwritten.
pub async fn named_probes_never_show_what_get_hides(backend: &DynBackend) {
    let ns = namespace();
    let tag = ns.tag("channel", &[&3]);
    let name = ns.key_name("page", &[&3, &50]);
    let key = name.tagged(std::slice::from_ref(&tag));
    let probe = || backend.get_now_named(name.as_str());
    assert!(probe().is_none(), "nothing stored yet");
    let first = entry("1", MINUTE);
    backend.set(&key, first.clone()).await.expect("set");
    if let Some(found) = probe() {
        assert_eq!(found, first);
    }
    let second = entry("2", MINUTE);
    backend.set(&key, second.clone()).await.expect("set");
    if let Some(found) = probe() {
        assert_eq!(found, second, "an overwritten entry is not answered");
    }
    backend
        .invalidate_tags(std::slice::from_ref(&tag), now())
        .await
        .expect("invalidate");
    assert!(probe().is_none(), "an invalidated tag hides the entry");
    assert!(get(backend, &key).await.is_none());
    let third = entry("3", MINUTE);
    backend.set(&key, third.clone()).await.expect("set");
    if let Some(found) = probe() {
        assert_eq!(found, third);
    }
    backend.delete(&key).await.expect("delete");
    assert!(probe().is_none(), "a deleted entry is not answered");
}
