//! [`AppState`]: what every handler shares (config, store, cached reads, event hub, limiter,
//! metrics), built once at startup ([`AppState::from_config`]) or by tests ([`AppState::new`]).

use std::sync::Arc;

use cache_core::{Cache, DynBackend};

use crate::{
    cache::{ChatCache, Policies, build_backend},
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
    /// Connects the database of `config` (creating and migrating it), builds the cache backend
    /// it names, and assembles the state.
    pub async fn from_config(config: Config) -> Result<AppState, StartupError> {
        let backend = build_backend(&config)?;
        let store = SqlStore::connect(&config).await?;
        Ok(AppState::new(config, Arc::new(store), backend)?)
    }

    /// The state over an existing store and cache backend.
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        backend: DynBackend,
    ) -> Result<AppState, ConfigError> {
        let cache = ChatCache::new(
            Cache::new(backend),
            &config.cache_prefix,
            Policies::from_config(&config),
            store,
        )?;
        Ok(AppState {
            inner: Arc::new(Inner {
                config,
                cache,
                hub: Hub::new(),
                limiter: RateLimiter::default(),
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

    /// The rate limiter.
    pub fn limiter(&self) -> &RateLimiter {
        &self.inner.limiter
    }

    /// HTTP metrics.
    pub fn metrics(&self) -> &HttpMetrics {
        &self.inner.metrics
    }
}
