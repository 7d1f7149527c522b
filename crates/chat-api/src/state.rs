//! [`AppState`]: what every handler shares (config, store, cached reads, event hub, limiter,
//! metrics), built once at startup ([`AppState::from_config`]) or by tests ([`AppState::new`]).

use std::sync::Arc;

use cache_core::{Cache, CacheConfig, DynBackend};

use crate::{
    cache::{CacheParts, ChatCache, Policies, connect_cache},
    config::{Config, ConfigError},
    events::Hub,
    metrics::HttpMetrics,
    ratelimit::RateLimiter,
    store::{SqlStore, Store, StoreError},
};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A setting is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database could not be opened or migrated.
    #[error("opening the database: {0}")]
    Store(#[from] StoreError),
}

/// The shared state of the server. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    cache: ChatCache,
    hub: Hub,
    limiter: RateLimiter,
    metrics: HttpMetrics,
}

impl AppState {
    /// Connects the database of `config` (creating and migrating it), builds the cache it names
    /// (on the backplane, when that is on: see [`connect_cache`]), and assembles the state.
    pub async fn from_config(config: Config) -> Result<AppState, StartupError> {
        let parts = connect_cache(&config).await?;
        let store = SqlStore::connect(&config).await?;
        Ok(AppState::from_parts(config, Arc::new(store), parts)?)
    }

    /// The state over an existing store and cache backend, without a backplane.
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        backend: DynBackend,
    ) -> Result<AppState, ConfigError> {
        AppState::from_parts(config, store, CacheParts::local(backend))
    }

    /// The state over an existing store and cache parts; with a backplane, realtime events go
    /// over it too. Must run inside a Tokio runtime when `parts` has a backplane.
    pub fn from_parts(
        config: Config,
        store: Arc<dyn Store>,
        parts: CacheParts,
    ) -> Result<AppState, ConfigError> {
        let CacheParts {
            backend,
            clock,
            backplane,
        } = parts;
        let cache = ChatCache::new(
            Cache::with_config(backend, CacheConfig::default().with_clock(clock)),
            &config.cache_prefix,
            Policies::from_config(&config),
            store,
        )?;
        let (hub, limiter) = match backplane {
            Some(backplane) => {
                // Per-user limits hold across instances by sharing counts on the bus.
                let limiter = if config.rate_limit {
                    RateLimiter::shared()
                } else {
                    RateLimiter::default()
                };
                let hub = Hub::with_backplane(backplane.clone(), limiter.clone());
                limiter.share_on(backplane, hub.shutdown_signal());
                (hub, limiter)
            }
            None => (Hub::new(), RateLimiter::default()),
        };
        Ok(AppState {
            inner: Arc::new(Inner {
                config,
                cache,
                hub,
                limiter,
                metrics: HttpMetrics::default(),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The cached reads (and through them the cache and the store).
    pub fn cache(&self) -> &ChatCache {
        &self.inner.cache
    }

    /// The source of truth.
    pub fn store(&self) -> &Arc<dyn Store> {
        self.inner.cache.store()
    }

    /// The event hub.
    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    /// The backplane this instance shares with the others, if on.
    pub fn backplane(&self) -> Option<&cache_core::Backplane> {
        self.inner.hub.backplane()
    }

    /// The rate limiter.
    pub fn limiter(&self) -> &RateLimiter {
        &self.inner.limiter
    }

    /// HTTP metrics.
    pub fn metrics(&self) -> &HttpMetrics {
        &self.inner.metrics
    }
}
