//! Auto-pipelining: single commands issued concurrently travel together in one `/pipeline`
//! request.
//!
//! The first command queued starts a flusher task, which yields once so that commands issued in
//! the same scheduling round can join, then sends everything queued (at most
//! [`MAX_BATCH`] commands per request), waits for the answer, and repeats while commands keep
//! arriving. Only one batch is in flight at a time, so commands reach Redis in the order they
//! were issued: a caller's own commands are never reordered, and a read issued after a write sees
//! it. Commands arriving while a batch is in flight wait for it and go in the next one, which is
//! what makes batches grow under load.

use std::sync::Mutex;

use tokio::sync::oneshot;

use crate::{
    client::Redis,
    command::Command,
    error::{Error, Result},
    value::Value,
};

/// The most commands sent in one request (as `@upstash/redis` does).
pub(crate) const MAX_BATCH: usize = 1000;

type Waiter = oneshot::Sender<Result<Value>>;

#[derive(Debug, Default)]
pub(crate) struct AutoPipeline {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    queue: Vec<(Command, Waiter)>,
    flushing: bool,
}

impl AutoPipeline {
    /// Queues `command` and waits for its reply.
    pub(crate) async fn submit(&self, redis: &Redis, command: Command) -> Result<Value> {
        let (reply, receiver) = oneshot::channel();
        let start_flusher = {
            let mut state = self.lock();
            state.queue.push((command, reply));
            !std::mem::replace(&mut state.flushing, true)
        };
        if start_flusher {
            let redis = redis.clone();
            // A task of its own, so that a caller that gives up does not strand the others.
            tokio::spawn(async move { flush(redis).await });
        }
        receiver.await.unwrap_or_else(|_| {
            Err(Error::Transport {
                message: "the auto-pipeline flusher stopped before answering".to_owned(),
                source: None,
            })
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The next batch to send, or `None` (and the flusher marked stopped) when the queue is empty.
    fn next_batch(&self) -> Option<Vec<(Command, Waiter)>> {
        let mut state = self.lock();
        if state.queue.is_empty() {
            state.flushing = false;
            return None;
        }
        let take = state.queue.len().min(MAX_BATCH);
        Some(state.queue.drain(..take).collect())
    }
}

async fn flush(redis: Redis) {
    let Some(auto) = redis.inner.auto_pipeline.as_ref() else {
        return;
    };
    // Let the tasks that are issuing commands right now queue them too.
    tokio::task::yield_now().await;
    while let Some(batch) = auto.next_batch() {
        let (commands, waiters): (Vec<Command>, Vec<Waiter>) = batch.into_iter().unzip();
        if commands.len() == 1 {
            let result = redis.send_single(&commands[0]).await;
            for waiter in waiters {
                let _ = waiter.send(result.clone());
            }
            continue;
        }
        match redis.send_batch(&commands, false).await {
            Ok(slots) => {
                for ((slot, waiter), command) in slots.into_iter().zip(waiters).zip(&commands) {
                    let _ = waiter
                        .send(slot.map_err(|message| Error::from_redis(command.name(), message)));
                }
            }
            Err(err) => {
                for waiter in waiters {
                    let _ = waiter.send(Err(err.clone()));
                }
            }
        }
    }
}
