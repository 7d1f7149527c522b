//! The shared backend conformance suite, run on `MemoryBackend`.

use cache_memory::{MemoryBackend, MemoryConfig};

async fn memory_backend() -> MemoryBackend {
    MemoryBackend::new(MemoryConfig::default())
}

cache_core::backend_conformance_tests!(memory_backend);
