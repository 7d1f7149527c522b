//! A Redis command as arguments ([`Command`]), and a command paired with the Rust type of its reply
//! ([`TypedCommand`]), which is what the typed API, pipelines and transactions are built from.

use std::{fmt, marker::PhantomData};

use bytes::Bytes;

use crate::value::{FromValue, IntoArg};

/// A raw Redis command: its name and arguments, as bytes.
///
/// Whether the client may re-send it after a failure that could have reached the server is
/// decided by [`Command::is_idempotent`]: read commands are, everything else is not unless you say
/// so with [`Command::idempotent`].
///
/// # Examples
///
/// ```
/// use cache_upstash::Command;
/// let cmd = Command::new("SET").arg("greeting").arg("hello").arg("EX").arg(60);
/// assert_eq!(cmd.name(), "SET");
/// assert!(!cmd.is_idempotent());
/// assert!(Command::new("GET").arg("greeting").is_idempotent());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Command {
    args: Vec<Bytes>,
    idempotent: bool,
}

impl Command {
    /// A command named `name` (case-insensitive, sent upper-case), without arguments yet.
    pub fn new(name: &str) -> Command {
        let name = name.to_ascii_uppercase();
        Command {
            idempotent: is_read_only(&name),
            args: vec![Bytes::from(name)],
        }
    }

    /// Appends one argument.
    #[must_use]
    pub fn arg(mut self, arg: impl IntoArg) -> Command {
        self.args.push(arg.into_arg());
        self
    }

    /// Appends several arguments.
    #[must_use]
    pub fn args<A: IntoArg>(mut self, args: impl IntoIterator<Item = A>) -> Command {
        self.args.extend(args.into_iter().map(IntoArg::into_arg));
        self
    }

    /// Appends one argument in place (for builders).
    pub fn push_arg(&mut self, arg: impl IntoArg) {
        self.args.push(arg.into_arg());
    }

    /// Declares whether re-sending this command is harmless (it only reads, or writes the same
    /// state every time). The client retries idempotent commands after timeouts and broken
    /// connections; others only when the request provably never left.
    #[must_use]
    pub fn idempotent(mut self, idempotent: bool) -> Command {
        self.idempotent = idempotent;
        self
    }

    /// Whether the client may re-send it after a failure that may have reached the server.
    pub fn is_idempotent(&self) -> bool {
        self.idempotent
    }

    /// The command name, upper-case.
    pub fn name(&self) -> &str {
        std::str::from_utf8(&self.args[0]).unwrap_or("?")
    }

    /// The name followed by the arguments.
    pub fn as_args(&self) -> &[Bytes] {
        &self.args
    }

    /// Whether every argument is UTF-8 text, which the JSON body forms require.
    pub(crate) fn is_text(&self) -> bool {
        self.args.iter().all(|arg| std::str::from_utf8(arg).is_ok())
    }
}

/// Shows the command name and the number of arguments, never their values: arguments are user
/// data and may be secrets.
impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Command")
            .field("name", &self.name())
            .field("args", &(self.args.len() - 1))
            .field("idempotent", &self.idempotent)
            .finish()
    }
}

/// A [`Command`] together with the Rust type its reply converts to.
///
/// Built by the functions of [`cmd`](crate::cmd) and used by [`Redis::run`](crate::Redis::run)
/// and [`Pipeline::add`](crate::Pipeline::add).
pub struct TypedCommand<T> {
    pub(crate) command: Command,
    _reply: PhantomData<fn() -> T>,
}

impl<T: FromValue> TypedCommand<T> {
    /// Pairs `command` with the reply type `T`.
    pub fn new(command: Command) -> TypedCommand<T> {
        TypedCommand {
            command,
            _reply: PhantomData,
        }
    }

    /// The underlying command.
    pub fn command(&self) -> &Command {
        &self.command
    }

    /// The underlying command, consuming the typed wrapper.
    pub fn into_command(self) -> Command {
        self.command
    }
}

impl<T> fmt::Debug for TypedCommand<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TypedCommand").field(&self.command).finish()
    }
}

impl<T> Clone for TypedCommand<T> {
    fn clone(&self) -> Self {
        TypedCommand {
            command: self.command.clone(),
            _reply: PhantomData,
        }
    }
}

/// Commands that only read, so re-sending them after a lost answer changes nothing.
fn is_read_only(name: &str) -> bool {
    matches!(
        name,
        "GET"
            | "MGET"
            | "GETRANGE"
            | "STRLEN"
            | "EXISTS"
            | "TTL"
            | "PTTL"
            | "EXPIRETIME"
            | "PEXPIRETIME"
            | "TYPE"
            | "SMEMBERS"
            | "SISMEMBER"
            | "SMISMEMBER"
            | "SCARD"
            | "SRANDMEMBER"
            | "HGET"
            | "HMGET"
            | "HGETALL"
            | "HKEYS"
            | "HVALS"
            | "HLEN"
            | "HEXISTS"
            | "HSTRLEN"
            | "LRANGE"
            | "LLEN"
            | "LINDEX"
            | "LPOS"
            | "ZRANGE"
            | "ZSCORE"
            | "ZCARD"
            | "ZRANK"
            | "ZCOUNT"
            | "SCAN"
            | "SSCAN"
            | "HSCAN"
            | "ZSCAN"
            | "KEYS"
            | "DBSIZE"
            | "RANDOMKEY"
            | "PING"
            | "ECHO"
            | "INFO"
            | "TIME"
            | "EVAL_RO"
            | "EVALSHA_RO"
            // Loading a script twice stores the same script under the same digest.
            | "SCRIPT"
    )
}
