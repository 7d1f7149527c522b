//! The conformance suite run on the reference `MapBackend`, which keeps the suite itself honest.

use cache_core::testing::MapBackend;

async fn map_backend() -> MapBackend {
    MapBackend::new()
}

cache_core::backend_conformance_tests!(map_backend);

/// A remote backend used alone behind the tiered guard (no L1, as chat-api's `upstash` mode runs
/// it) keeps the contract too.
mod guarded {
    use std::sync::Arc;

    use cache_core::{TieredBackend, TieredConfig, testing::MapBackend};

    async fn guarded_backend() -> TieredBackend {
        TieredBackend::l2_only(Arc::new(MapBackend::new()), TieredConfig::default())
    }

    cache_core::backend_conformance_tests!(guarded_backend);
}

/// A tiered cache on a connected backplane (whole-TTL L1 copies, announced writes) keeps the
/// contract too.
mod on_backplane {
    use std::sync::Arc;

    use cache_core::{
        Backplane, BackplaneConfig, BackplaneState, LocalTransport, SystemClock, TieredBackend,
        TieredConfig, testing::MapBackend,
    };

    async fn tiered_on_backplane() -> TieredBackend {
        let backplane = Backplane::start(
            Arc::new(LocalTransport::new()),
            BackplaneConfig::default(),
            Arc::new(SystemClock),
        );
        backplane
            .watch_state()
            .wait_for(|s| *s == BackplaneState::Connected)
            .await
            .expect("backplane connects");
        TieredBackend::new(
            Arc::new(MapBackend::new()),
            Arc::new(MapBackend::new()),
            TieredConfig::default(),
        )
        .with_backplane(backplane)
    }

    cache_core::backend_conformance_tests!(tiered_on_backplane);
}
