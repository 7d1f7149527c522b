//! [`Script`]: a Lua script run by digest (`EVALSHA`), sent in full (`EVAL`) only when Redis does
//! not know it yet, as `@upstash/redis`'s `createScript` does.

use std::sync::Arc;

use crate::{
    client::Redis,
    cmd,
    error::Result,
    value::{FromValue, IntoArg},
};

/// A Lua script with its SHA-1 digest computed once.
///
/// [`run`](Script::run) sends `EVALSHA`; if Redis answers `NOSCRIPT` (first use, or after a
/// restart or `SCRIPT FLUSH`) it sends `EVAL` with the source, which also caches it for next time.
/// Keys and arguments are sent as given; the script body travels only on that fallback.
///
/// # Examples
///
/// ```
/// use cache_upstash::{Redis, Script};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let gateway = upstash_gateway::testing::TestGateway::start().await; // a local stand-in for Upstash
/// # let redis = cache_upstash::Redis::builder().url(gateway.url()).token(gateway.token()).build()?;
/// let set_if_greater = Script::new(
///     "local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
///      if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1]) return 1 end
///      return 0",
/// );
/// let changed: bool = set_if_greater.run(&redis, ["high-score"], ["42"]).await?;
/// # let _ = changed; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Script {
    source: Arc<str>,
    sha1: Arc<str>,
}

impl Script {
    /// A script from its Lua source.
    pub fn new(source: &str) -> Script {
        Script {
            source: Arc::from(source),
            sha1: Arc::from(sha1_smol::Sha1::from(source).digest().to_string()),
        }
    }

    /// The Lua source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The lower-case hex SHA-1 digest Redis knows the script by.
    pub fn sha1(&self) -> &str {
        &self.sha1
    }

    /// Runs the script: `EVALSHA`, falling back to `EVAL` on `NOSCRIPT`.
    ///
    /// Scripts are treated as writes: they are not retried after a failure that may have reached
    /// the server.
    pub async fn run<T: FromValue>(
        &self,
        redis: &Redis,
        keys: impl IntoIterator<Item = impl IntoArg>,
        args: impl IntoIterator<Item = impl IntoArg>,
    ) -> Result<T> {
        let keys: Vec<_> = keys.into_iter().map(IntoArg::into_arg).collect();
        let args: Vec<_> = args.into_iter().map(IntoArg::into_arg).collect();
        let by_digest = redis
            .run(cmd::evalsha(&self.sha1, keys.iter(), args.iter()))
            .await;
        let value = match by_digest {
            Err(err) if err.redis_code() == Some("NOSCRIPT") => {
                redis.run(cmd::eval(&self.source, keys, args)).await?
            }
            other => other?,
        };
        T::from_value(value)
    }

    /// Loads the script (`SCRIPT LOAD`) so that the next `run` needs no fallback.
    pub async fn load(&self, redis: &Redis) -> Result<()> {
        redis.script_load(&self.source).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_redis() {
        // `redis-cli SCRIPT LOAD "return 1"`.
        assert_eq!(
            Script::new("return 1").sha1(),
            "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
        );
    }
}
