//! The in-process cache is bounded by bytes, not entries: values of very different sizes share
//! one budget, and the cache evicts to stay within it.
//!
//! `cargo run -p cache-memory --example bounded_by_bytes`

// An example prints what it shows.
#![allow(clippy::print_stdout)]

use std::{sync::Arc, time::Duration};

use cache_core::{Cache, CacheBackend, Namespace, TtlPolicy};
use cache_memory::{MemoryBackend, MemoryConfig};

#[tokio::main]
async fn main() -> cache_core::Result<()> {
    const BUDGET: u64 = 1024 * 1024;
    let backend = Arc::new(MemoryBackend::new(MemoryConfig::with_max_bytes(BUDGET)));
    let cache = Cache::new(Arc::clone(&backend) as Arc<dyn CacheBackend>);
    let ns = Namespace::new("demo", 1)?;
    let policy = TtlPolicy::new(Duration::from_secs(300));

    // 2,000 pages of about 4 KiB: 8 MiB of values for a 1 MiB budget.
    for page in 0..2_000u32 {
        let key = ns.key("page", &[&page]);
        let body = "x".repeat(4096);
        let _: String = cache
            .get_or_load(&key, &policy, move || async move {
                Ok::<_, std::io::Error>(body)
            })
            .await?;
    }
    // moka applies evictions in the background; let them settle before reading the gauges.
    backend.run_pending_tasks().await;

    let stats = backend.stats();
    let tier = &stats.tiers[0];
    let bytes = tier.bytes.unwrap_or_default();
    println!(
        "entries kept: {}, bytes: {bytes} of {BUDGET}, evicted: {}",
        tier.entries.unwrap_or_default(),
        tier.evictions.unwrap_or_default()
    );
    assert!(bytes <= BUDGET, "over budget: {bytes}");
    assert!(tier.evictions.unwrap_or_default() > 0);
    Ok(())
}
