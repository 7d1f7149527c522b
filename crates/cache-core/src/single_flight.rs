//! Single-flight: concurrent loads of one key share one loader run.
//!
//! A flight records the invalidation epoch of its key when it started. A caller joins a running
//! flight only if neither the key nor any of its tags was invalidated since; otherwise the flight's
//! result may predate a write the caller must see (read-your-writes), so the caller starts a new
//! flight.

use std::{
    any::Any,
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::watch;

use crate::error::{BoxError, Error};

/// The shared result of one load: the value (type-erased) or the error every waiter gets.
pub(crate) type Outcome = Result<Arc<dyn Any + Send + Sync>, Error>;

type Slot = watch::Receiver<Option<Outcome>>;

#[derive(Debug, Default)]
pub(crate) struct SingleFlight {
    flights: Mutex<HashMap<Box<str>, Flight>>,
    next_id: AtomicU64,
}

#[derive(Debug)]
struct Flight {
    id: u64,
    epoch: u64,
    rx: Slot,
}

/// The caller's role in a flight.
pub(crate) enum Role {
    /// Run the load and publish its outcome through the sender.
    Leader(Leader),
    /// Wait for another caller's load.
    Follower(Slot),
}

/// The right and duty to publish a flight's outcome. Dropping it unpublished (a panicking loader)
/// wakes the waiters with an error and frees the key for a new flight.
pub(crate) struct Leader {
    flights: Arc<SingleFlight>,
    key: Box<str>,
    id: u64,
    tx: Option<watch::Sender<Option<Outcome>>>,
    rx: Slot,
}

impl SingleFlight {
    pub(crate) fn join(self: &Arc<Self>, key: &str, epoch: u64) -> Role {
        let mut flights = self.flights.lock().expect("single-flight lock");
        if let Some(flight) = flights.get(key) {
            if flight.epoch == epoch {
                return Role::Follower(flight.rx.clone());
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        flights.insert(
            key.into(),
            Flight {
                id,
                epoch,
                rx: rx.clone(),
            },
        );
        Role::Leader(Leader {
            flights: Arc::clone(self),
            key: key.into(),
            id,
            tx: Some(tx),
            rx,
        })
    }

    /// Flights in progress (for tests and stats).
    pub(crate) fn len(&self) -> usize {
        self.flights.lock().expect("single-flight lock").len()
    }

    fn finish(&self, key: &str, id: u64) {
        let mut flights = self.flights.lock().expect("single-flight lock");
        if flights.get(key).is_some_and(|f| f.id == id) {
            flights.remove(key);
        }
    }
}

impl Leader {
    /// A receiver for the leader's own outcome.
    pub(crate) fn subscribe(&self) -> Slot {
        self.rx.clone()
    }

    /// Wakes the waiters with `outcome`. The flight stays joinable (with its outcome ready) until
    /// the leader is dropped, so callers arriving while the leader still writes the cache get the
    /// value at once instead of starting a second load.
    pub(crate) fn publish(&mut self, outcome: Outcome) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Some(outcome));
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let err: BoxError = Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(
                "the load ended without a result (the loader panicked or its task was cancelled)",
            ));
            let _ = tx.send(Some(Err(Error::Loader(err))));
        }
        self.flights.finish(&self.key, self.id);
    }
}

/// Waits for a flight's outcome.
pub(crate) async fn wait(mut rx: Slot) -> Outcome {
    loop {
        if let Some(outcome) = rx.borrow_and_update().as_ref() {
            return outcome.clone();
        }
        if rx.changed().await.is_err() {
            // The sender is gone; it publishes before it goes, so look once more.
            if let Some(outcome) = rx.borrow().as_ref() {
                return outcome.clone();
            }
            let err: BoxError = Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(
                "the load ended without a result",
            ));
            return Err(Error::Loader(err));
        }
    }
}
