//! `UpstashBackend`: the `cache-core` conformance suite on a real Redis behind the gateway, and
//! its HTTP requests per operation: an L2 hit costs 1, a miss and fill at most 2, a tag
//! invalidation 1.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cache_core::{
    CacheBackend, CacheStats, Clock, Entry, ErrorKind, Key, Namespace, SystemClock, Tag, Timestamp,
};
use cache_upstash::{Redis, UpstashBackend, UpstashBackendConfig};
use upstash_gateway::testing::TestGateway;

use crate::client_for;

/// The backend together with the gateway and Redis it needs, dropped with it.
struct GatewayBackend {
    env: TestGateway,
    backend: UpstashBackend,
}

async fn backend() -> GatewayBackend {
    backend_with(UpstashBackendConfig::default()).await
}

async fn backend_with(config: UpstashBackendConfig) -> GatewayBackend {
    let env = TestGateway::start().await;
    let redis = client_for(&env).build().expect("client");
    GatewayBackend {
        backend: UpstashBackend::with_config(redis, config),
        env,
    }
}

#[async_trait]
impl CacheBackend for GatewayBackend {
    fn name(&self) -> &'static str {
        self.backend.name()
    }
    async fn get(&self, key: &Key) -> cache_core::Result<Option<Entry>> {
        self.backend.get(key).await
    }
    async fn get_many(&self, keys: &[Key]) -> cache_core::Result<Vec<Option<Entry>>> {
        self.backend.get_many(keys).await
    }
    async fn set(&self, key: &Key, entry: Entry) -> cache_core::Result<()> {
        self.backend.set(key, entry).await
    }
    async fn set_many(&self, items: &[(Key, Entry)]) -> cache_core::Result<()> {
        self.backend.set_many(items).await
    }
    async fn delete(&self, key: &Key) -> cache_core::Result<bool> {
        self.backend.delete(key).await
    }
    async fn delete_many(&self, keys: &[Key]) -> cache_core::Result<u64> {
        self.backend.delete_many(keys).await
    }
    async fn invalidate_tags(&self, tags: &[Tag], at: Timestamp) -> cache_core::Result<()> {
        self.backend.invalidate_tags(tags, at).await
    }
    async fn ping(&self) -> cache_core::Result<Duration> {
        self.backend.ping().await
    }
    fn stats(&self) -> CacheStats {
        self.backend.stats()
    }
}

mod conformance {
    use super::backend;
    cache_core::backend_conformance_tests!(backend);
}

fn now() -> Timestamp {
    SystemClock.now()
}

fn entry(json: &str) -> Entry {
    let created = now();
    let ttl = Duration::from_secs(60);
    Entry::new(
        Bytes::copy_from_slice(json.as_bytes()),
        created,
        created.saturating_add(ttl),
        created.saturating_add(ttl),
    )
}

fn requests(backend: &UpstashBackend) -> (u64, u64) {
    let stats = backend.redis().stats();
    (stats.requests, stats.commands)
}

/// Runs `call` and returns the HTTP requests and commands it cost.
async fn cost<F: std::future::Future>(backend: &UpstashBackend, call: F) -> (u64, u64) {
    let before = requests(backend);
    call.await;
    let after = requests(backend);
    (after.0 - before.0, after.1 - before.1)
}

#[tokio::test]
async fn p4_request_counts() {
    let fixture = backend().await;
    let backend = &fixture.backend;
    let ns = Namespace::new("p4", 1).unwrap();
    let tags: Vec<Tag> = (0..3).map(|i| ns.tag("channel", &[&i])).collect();
    let key = ns.key("page", &[&1]).tagged(&tags);

    // Miss + fill: one MGET, one SET.
    assert_eq!(
        cost(backend, async {
            assert!(backend.get(&key).await.unwrap().is_none())
        })
        .await,
        (1, 1)
    );
    assert_eq!(
        cost(backend, async {
            backend.set(&key, entry("[1]")).await.unwrap()
        })
        .await,
        (1, 1)
    );
    // L2 hit: one MGET of the entry and its 4 stamps (3 tags + the namespace tag).
    assert_eq!(
        cost(backend, async {
            assert!(backend.get(&key).await.unwrap().is_some())
        })
        .await,
        (1, 1)
    );
    // Invalidation of 3 tags: one request (EVAL).
    assert_eq!(
        cost(backend, async {
            backend.invalidate_tags(&tags, now()).await.unwrap()
        })
        .await,
        (1, 1)
    );
    assert!(backend.get(&key).await.unwrap().is_none());

    // Batches: set_many of 10 JSON entries is one pipeline; get_many one MGET; delete_many one DEL.
    let keys: Vec<Key> = (0..10)
        .map(|i| ns.key("item", &[&i]).tagged(&tags[..1]))
        .collect();
    let items: Vec<(Key, Entry)> = keys
        .iter()
        .map(|k| (k.clone(), entry("{\"a\":1}")))
        .collect();
    assert_eq!(
        cost(backend, async { backend.set_many(&items).await.unwrap() }).await,
        (1, 10)
    );
    assert_eq!(
        cost(backend, async {
            let got = backend.get_many(&keys).await.unwrap();
            assert!(got.iter().all(Option::is_some));
        })
        .await,
        (1, 1)
    );
    assert_eq!(
        cost(backend, async {
            assert_eq!(backend.delete_many(&keys).await.unwrap(), 10)
        })
        .await,
        (1, 1)
    );
    let stats = backend.stats();
    let tier = &stats.tiers[0];
    assert_eq!(
        (tier.tier.as_str(), tier.backend.as_str()),
        ("upstash", "upstash")
    );
    assert_eq!(tier.requests, Some(backend.redis().stats().requests));
    assert_eq!(tier.commands, Some(backend.redis().stats().commands));
    assert!(tier.hits >= 11 && tier.misses >= 2, "{tier:?}");
}

#[tokio::test]
async fn small_entries_are_plain_json_readable_by_any_client() {
    let fixture = backend().await;
    let ns = Namespace::new("interop", 1).unwrap();
    let key = ns.key("channel", &[&7]);
    fixture
        .backend
        .set(&key, entry(r#"{"name":"général"}"#))
        .await
        .unwrap();
    let other_client = Redis::builder()
        .url(fixture.env.url())
        .token(fixture.env.token())
        .build()
        .unwrap();
    let stored = other_client.get(key.as_str()).await.unwrap().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&stored).unwrap();
    assert_eq!(json["v"]["name"], "général");
    let pttl = other_client.pttl(key.as_str()).await.unwrap();
    assert!((55_000..=60_000).contains(&pttl), "{pttl}");
}

#[tokio::test]
async fn foreign_bytes_are_a_counted_miss() {
    let fixture = backend().await;
    let ns = Namespace::new("foreign", 1).unwrap();
    let key = ns.key("k", &[&1]);
    let redis = fixture.backend.redis();
    redis
        .set(key.as_str(), "written by someone else")
        .await
        .unwrap();
    assert!(fixture.backend.get(&key).await.unwrap().is_none());
    redis
        .set(key.as_str(), &[0u8, b'C', b'Z', 1, 9, 9][..])
        .await
        .unwrap();
    assert!(
        fixture
            .backend
            .get_many(std::slice::from_ref(&key))
            .await
            .unwrap()[0]
            .is_none()
    );
    assert_eq!(fixture.backend.decode_errors(), 2);
    // A garbage stamp hides the entry rather than letting it through.
    fixture.backend.set(&key, entry("1")).await.unwrap();
    redis.set(ns.all_tag().as_str(), "garbage").await.unwrap();
    assert!(fixture.backend.get(&key).await.unwrap().is_none());
}

#[tokio::test]
async fn compressed_entries_are_binary_and_still_one_request_each() {
    let fixture = backend().await;
    let backend = &fixture.backend;
    let ns = Namespace::new("big", 1).unwrap();
    let big = format!("\"{}\"", "chat message ".repeat(500));
    let keys: Vec<Key> = (0..3).map(|i| ns.key("page", &[&i])).collect();
    let items: Vec<(Key, Entry)> = keys
        .iter()
        .map(|k| (k.clone(), entry(&big)))
        .chain([(ns.key("small", &[]), entry("1"))])
        .collect();
    // 1 pipeline for the small entry + 1 path-form request per compressed entry.
    assert_eq!(
        cost(backend, async { backend.set_many(&items).await.unwrap() }).await,
        (4, 4)
    );
    let got = backend.get_many(&keys).await.unwrap();
    assert!(
        got.iter()
            .all(|e| e.as_ref().is_some_and(|e| e.value().len() == big.len()))
    );
}

#[tokio::test]
async fn entries_are_kept_no_longer_than_tag_retention_after_creation() {
    let fixture =
        backend_with(UpstashBackendConfig::default().with_tag_retention(Duration::from_secs(10)))
            .await;
    let ns = Namespace::new("retention", 1).unwrap();
    let key = ns.key("k", &[&1]);
    fixture.backend.set(&key, entry("1")).await.unwrap(); // TTL 60 s
    let pttl = fixture.backend.redis().pttl(key.as_str()).await.unwrap();
    assert!((1..=10_000).contains(&pttl), "{pttl}");
    fixture
        .backend
        .invalidate_tags(std::slice::from_ref(ns.all_tag()), now())
        .await
        .unwrap();
    let stamp_ttl = fixture
        .backend
        .redis()
        .pttl(ns.all_tag().as_str())
        .await
        .unwrap();
    assert!((9_000..=10_000).contains(&stamp_ttl), "{stamp_ttl}");
}

#[tokio::test]
async fn outages_and_timeouts_become_backend_errors() {
    let fixture = backend().await;
    let ns = Namespace::new("outage", 1).unwrap();
    let key = ns.key("k", &[&1]);
    fixture.env.redis().kill();
    let err = fixture.backend.get(&key).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend);
    assert!(!err.to_string().contains(fixture.env.token()));
    fixture.env.redis().restart();

    let slow = Redis::builder()
        .url(fixture.env.url())
        .token(fixture.env.token())
        .timeout(Duration::from_millis(200))
        .retry(cache_upstash::RetryPolicy::none())
        .build()
        .unwrap();
    let slow = UpstashBackend::new(slow);
    fixture.env.redis().freeze();
    let err = slow.get(&key).await.unwrap_err();
    fixture.env.redis().thaw();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    let tier = &slow.stats().tiers[0];
    assert_eq!((tier.errors, tier.timeouts), (1, 1));
    assert!(slow.get(&key).await.unwrap().is_none());
}
