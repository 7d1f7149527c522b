//! [`ChaosBackend`]: wraps any backend and fails, hangs or slows down on command, so timeouts,
//! the circuit breaker, fallback and recovery can be tested deterministically (after the chaos
//! components of FusionCache and BentoCache).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;

use crate::{
    backend::{CacheBackend, DynBackend},
    entry::Entry,
    error::{Error, Result},
    key::{Key, Tag},
    stats::CacheStats,
    time::Timestamp,
};

/// What the wrapper does to each call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Pass the call through.
    None,
    /// Fail the call at once with a backend error.
    Fail,
    /// Never answer (until the caller's timeout).
    Hang,
    /// Wait this long, then pass the call through.
    Delay(Duration),
}

#[derive(Debug)]
struct ChaosState {
    fault: Mutex<Fault>,
    calls: AtomicU64,
    reached: AtomicU64,
}

/// The remote control of a [`ChaosBackend`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ChaosControl(Arc<ChaosState>);

impl ChaosControl {
    /// Sets the fault for the following calls.
    pub fn set(&self, fault: Fault) {
        *self.0.fault.lock().expect("lock") = fault;
    }

    /// Calls made to the wrapper.
    pub fn calls(&self) -> u64 {
        self.0.calls.load(Ordering::SeqCst)
    }

    /// Calls that reached the wrapped backend.
    pub fn reached(&self) -> u64 {
        self.0.reached.load(Ordering::SeqCst)
    }
}

/// A backend wrapper that injects faults. See [`ChaosControl`].
pub struct ChaosBackend {
    inner: DynBackend,
    state: Arc<ChaosState>,
}

impl std::fmt::Debug for ChaosBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChaosBackend")
            .field("inner", &self.inner.name())
            .field("fault", &*self.state.fault.lock().expect("lock"))
            .finish()
    }
}

impl ChaosBackend {
    /// Wraps `inner`, passing calls through until told otherwise.
    pub fn new(inner: DynBackend) -> (Self, ChaosControl) {
        let state = Arc::new(ChaosState {
            fault: Mutex::new(Fault::None),
            calls: AtomicU64::new(0),
            reached: AtomicU64::new(0),
        });
        (
            ChaosBackend {
                inner,
                state: Arc::clone(&state),
            },
            ChaosControl(state),
        )
    }

    async fn enter(&self) -> Result<()> {
        self.state.calls.fetch_add(1, Ordering::SeqCst);
        let fault = *self.state.fault.lock().expect("lock");
        match fault {
            Fault::None => {}
            Fault::Fail => {
                return Err(Error::backend(self.inner.name(), "injected failure", None));
            }
            Fault::Hang => std::future::pending::<()>().await,
            Fault::Delay(d) => tokio::time::sleep(d).await,
        }
        self.state.reached.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[async_trait]
impl CacheBackend for ChaosBackend {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    async fn get(&self, key: &Key) -> Result<Option<Entry>> {
        self.enter().await?;
        self.inner.get(key).await
    }
    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Entry>>> {
        self.enter().await?;
        self.inner.get_many(keys).await
    }
    async fn set(&self, key: &Key, entry: Entry) -> Result<()> {
        self.enter().await?;
        self.inner.set(key, entry).await
    }
    async fn set_many(&self, items: &[(Key, Entry)]) -> Result<()> {
        self.enter().await?;
        self.inner.set_many(items).await
    }
    async fn delete(&self, key: &Key) -> Result<bool> {
        self.enter().await?;
        self.inner.delete(key).await
    }
    async fn delete_many(&self, keys: &[Key]) -> Result<u64> {
        self.enter().await?;
        self.inner.delete_many(keys).await
    }
    async fn invalidate_tags(&self, tags: &[Tag], at: Timestamp) -> Result<()> {
        self.enter().await?;
        self.inner.invalidate_tags(tags, at).await
    }
    async fn clear_local(&self) -> Result<bool> {
        self.enter().await?;
        self.inner.clear_local().await
    }
    async fn ping(&self) -> Result<Duration> {
        self.enter().await?;
        self.inner.ping().await
    }
    fn stats(&self) -> CacheStats {
        self.inner.stats()
    }
}
