//! The shared backend conformance suite, run on `MemoryBackend`.

use cache_memory::{MemoryBackend, MemoryConfig};

async fn memory_backend() -> MemoryBackend {
    MemoryBackend::new(MemoryConfig::default())
}

cache_core::backend_conformance_tests!(memory_backend);

/// The tiered cache keeps the backend contract too: memory L1 in front of the reference L2.
mod tiered {
    use std::sync::Arc;

    use cache_core::{TieredBackend, TieredConfig, testing::MapBackend};
    use cache_memory::MemoryBackend;

    async fn tiered_backend() -> TieredBackend {
        TieredBackend::new(
            Arc::new(MemoryBackend::default()),
            Arc::new(MapBackend::new()),
            TieredConfig::default(),
        )
    }

    cache_core::backend_conformance_tests!(tiered_backend);
}
