//! A tiered cache whose remote tier (L2) fails: reads go on from the in-process tier (L1) and
//! the source, an invalidation made while L2 is down is replayed once it is back, and nothing
//! stale is served at any point.
//!
//! `cargo run -p cache-core --example tiered_fallback --features testing`
//!
//! L2 here is `MapBackend` behind `ChaosBackend` (fault injection) so the example needs no
//! server; in an application it is `cache_upstash::UpstashBackend`, and L1 is
//! `cache_memory::MemoryBackend`.

// An example prints what it shows.
#![allow(clippy::print_stdout)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use cache_core::{
    BreakerConfig, Cache, Namespace, TieredBackend, TieredConfig, TtlPolicy,
    testing::{ChaosBackend, Fault, MapBackend},
};

#[tokio::main]
async fn main() -> cache_core::Result<()> {
    let (l2, chaos) = ChaosBackend::new(Arc::new(MapBackend::new()));
    // After 3 failed L2 calls the breaker opens: L2 is skipped for 200 ms (5 s by default), so
    // an outage costs no timeouts, then one call probes it.
    let config = TieredConfig::default().with_breaker(
        BreakerConfig::default()
            .with_failure_threshold(3)
            .with_open_for(Duration::from_millis(200)),
    );
    let tiered = TieredBackend::new(Arc::new(MapBackend::new()), Arc::new(l2), config);
    let cache = Cache::new(Arc::new(tiered));

    let ns = Namespace::new("demo", 1)?;
    let channel = ns.tag("channel", &[&7]);
    let key = ns
        .key("latest-page", &[&7])
        .tagged(std::slice::from_ref(&channel));
    let policy = TtlPolicy::new(Duration::from_secs(60));

    // The "database": a version number, and how often it was read.
    let version = Arc::new(AtomicU32::new(1));
    let reads = Arc::new(AtomicU32::new(0));
    let load = || {
        let (version, reads) = (Arc::clone(&version), Arc::clone(&reads));
        move || async move {
            reads.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(format!("page v{}", version.load(Ordering::SeqCst)))
        }
    };

    let page: String = cache.get_or_load(&key, &policy, load()).await?;
    println!(
        "first read:            {page} (database reads: {})",
        reads.load(Ordering::SeqCst)
    );

    // L2 goes down. Reads are still answered (from L1 while it holds the entry, else from the
    // source), and never fail because of the cache.
    chaos.set(Fault::Fail);
    let page: String = cache.get_or_load(&key, &policy, load()).await?;
    println!("L2 down:               {page}");

    // A write commits while L2 is down: the invalidation reaches L1 now and is kept for L2.
    version.store(2, Ordering::SeqCst);
    cache.invalidate(&[channel]).await?;
    let page: String = cache.get_or_load(&key, &policy, load()).await?;
    assert_eq!(page, "page v2", "a read after the write sees it");
    let stats = cache.stats();
    println!(
        "write while L2 down:   {page} (invalidations waiting for L2: {})",
        stats.pending_invalidations
    );

    // L2 is back. Once the breaker lets a call through, the missed invalidations are replayed
    // (in the background, and before L2 is read again), so the v1 page L2 still holds is never
    // served.
    chaos.set(Fault::None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let page: String = cache.get_or_load(&key, &policy, load()).await?;
    assert_eq!(page, "page v2");
    for _ in 0..250 {
        if cache.stats().pending_invalidations == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pending = cache.stats().pending_invalidations;
    assert_eq!(pending, 0, "replayed");
    println!("L2 back:               {page} (invalidations waiting for L2: {pending})");
    for tier in cache.stats().tiers {
        println!(
            "  {:>2}: hits {}, misses {}, errors {}, skipped by the breaker {}",
            tier.tier, tier.hits, tier.misses, tier.errors, tier.skipped
        );
    }
    Ok(())
}
