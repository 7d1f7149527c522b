//! Explicit batches: [`Pipeline`] for `/pipeline` (one request, not atomic) and `/multi-exec`
//! (one request, atomic), with a typed [`Handle`] per command to read its own result or error.

use std::{fmt, marker::PhantomData};

use crate::{
    client::Redis,
    command::{Command, TypedCommand},
    error::{Error, Result},
    value::{FromValue, Value},
    wire::Slot,
};

/// Commands collected to be sent in one request. Built by [`Redis::pipeline`] or
/// [`Redis::multi`]; every typed command of [`Redis`] has a method of the same name here that
/// queues it and returns a [`Handle`] to its result.
///
/// # Examples
///
/// ```
/// use cache_upstash::{Command, Redis, cmd};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let gateway = upstash_gateway::testing::TestGateway::start().await; // a local stand-in for Upstash
/// # let redis = cache_upstash::Redis::builder().url(gateway.url()).token(gateway.token()).build()?;
/// let mut pipe = redis.pipeline();
/// let set = pipe.set("k", "v");
/// let bad = pipe.incr("k");                            // fails: not an integer
/// let value = pipe.add(cmd::get("k"));                 // any typed command
/// let raw = pipe.add_raw(Command::new("STRLEN").arg("k"));
/// let results = pipe.exec().await?;
/// results.get(&set)?;
/// assert!(results.get(&bad).unwrap_err().is_redis()); // its own error, the others still ran
/// assert_eq!(results.get(&value)?.as_deref(), Some(&b"v"[..]));
/// # let _ = raw; Ok(()) }
/// ```
pub struct Pipeline {
    redis: Redis,
    commands: Vec<Command>,
    transaction: bool,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("transaction", &self.transaction)
            .field("commands", &self.commands)
            .finish_non_exhaustive()
    }
}

/// Where the result of one queued command will be, and its type.
pub struct Handle<T> {
    index: usize,
    _reply: PhantomData<fn() -> T>,
}

impl<T> Handle<T> {
    /// The command's position in the batch.
    pub fn index(&self) -> usize {
        self.index
    }
}

impl<T> fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Handle").field(&self.index).finish()
    }
}

impl<T> Clone for Handle<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Handle<T> {}

impl Pipeline {
    pub(crate) fn new(redis: Redis, transaction: bool) -> Pipeline {
        Pipeline {
            redis,
            commands: Vec::new(),
            transaction,
        }
    }

    /// Queues a typed command (see [`cmd`](crate::cmd)).
    pub fn add<T: FromValue>(&mut self, command: TypedCommand<T>) -> Handle<T> {
        self.commands.push(command.command);
        Handle {
            index: self.commands.len() - 1,
            _reply: PhantomData,
        }
    }

    /// Queues any command; its result is a raw [`Value`].
    pub fn add_raw(&mut self, command: Command) -> Handle<Value> {
        self.add(TypedCommand::new(command))
    }

    /// The number of queued commands.
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Whether this is a `/multi-exec` transaction.
    pub fn is_transaction(&self) -> bool {
        self.transaction
    }

    /// Sends everything in one request. An empty batch sends nothing and succeeds.
    ///
    /// The batch fails as a whole when the request fails, or when a transaction is discarded
    /// (a command Redis could not queue); otherwise each command's own error is in its slot.
    /// Batches with a write are never re-sent after they may have reached the server.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] if an argument is not UTF-8 (a JSON batch cannot carry it: send
    /// that command on its own), and the transport errors of [`Redis::execute`].
    pub async fn exec(self) -> Result<PipelineResults> {
        if self.commands.is_empty() {
            return Ok(PipelineResults {
                names: Vec::new(),
                slots: Vec::new(),
            });
        }
        let slots = self
            .redis
            .send_batch(&self.commands, self.transaction)
            .await?;
        Ok(PipelineResults {
            names: self
                .commands
                .iter()
                .map(|command| command.name().to_owned())
                .collect(),
            slots,
        })
    }
}

/// The results of an executed [`Pipeline`], one slot per command.
#[derive(Debug, Clone)]
pub struct PipelineResults {
    names: Vec<String>,
    slots: Vec<Slot>,
}

impl PipelineResults {
    /// The result of the command behind `handle`: its value converted to `T`, or its own error.
    ///
    /// # Errors
    /// The command's [`Error::Redis`], or [`Error::UnexpectedResponse`] if the reply does not
    /// convert to `T` or the handle belongs to another batch.
    pub fn get<T: FromValue>(&self, handle: &Handle<T>) -> Result<T> {
        T::from_value(self.value(handle.index)?)
    }

    /// The raw result of command number `index`.
    pub fn value(&self, index: usize) -> Result<Value> {
        match self.slots.get(index) {
            Some(Ok(value)) => Ok(value.clone()),
            Some(Err(message)) => Err(Error::from_redis(&self.names[index], message.clone())),
            None => Err(Error::unexpected(format!(
                "no result {index} in a batch of {}",
                self.slots.len()
            ))),
        }
    }

    /// The number of results.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are no results.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Every result in order, errors included.
    pub fn into_values(self) -> Vec<Result<Value>> {
        self.slots
            .into_iter()
            .zip(&self.names)
            .map(|(slot, name)| slot.map_err(|message| Error::from_redis(name, message)))
            .collect()
    }
}
