//! The conformance suite run on the reference `MapBackend`, which keeps the suite itself honest.

use cache_core::testing::MapBackend;

async fn map_backend() -> MapBackend {
    MapBackend::new()
}

cache_core::backend_conformance_tests!(map_backend);
