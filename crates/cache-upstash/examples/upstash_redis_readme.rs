//! The `@upstash/redis` README, rewritten in Rust: the same walk through strings, options, JSON
//! values, lists, hashes, sets, sorted sets, pipelines, transactions, scripts and pub/sub, with
//! every step asserting what it got back.
//!
//! Against Upstash (or any Upstash-compatible server):
//!
//! ```text
//! export UPSTASH_REDIS_REST_URL=https://….upstash.io UPSTASH_REDIS_REST_TOKEN=…
//! cargo run -p cache-upstash --example upstash_redis_readme
//! ```
//!
//! `cargo xtask examples` runs it against a local `upstash-gateway` in front of `redis-server`.
//! Every key lives under a prefix unique to the run and is deleted at the end, so runs against a
//! shared database do not see each other's data.

// An example prints what it shows.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use cache_upstash::{Command, Redis, Script, SetOptions, SubscriptionEvent};
use serde::{Deserialize, Serialize};

/// How long a step waits for the server before the example fails, rather than hanging CI.
const PATIENCE: Duration = Duration::from_secs(10);

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct User {
    name: String,
    age: u32,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // const redis = Redis.fromEnv()
    let redis = Redis::from_env()?;
    let prefix = format!("readme-example:{:016x}", fastrand::u64(..));
    let key = |name: &str| format!("{prefix}:{name}");

    // await redis.set("key", "value"); await redis.get("key")
    redis.set(key("greeting"), "hello").await?;
    let greeting = redis.get(key("greeting")).await?;
    assert_eq!(greeting.as_deref(), Some(&b"hello"[..]));
    assert_eq!(redis.get(key("never-set")).await?, None);
    println!("set/get:      {greeting:?}");

    // await redis.set("session", "data", { ex: 60, nx: true })
    let options = || SetOptions::new().ex(60).nx();
    assert!(redis.set_with(key("session"), "data", options()).await?);
    // NX: the key exists now, so the second write is refused (the SDK answers null).
    assert!(!redis.set_with(key("session"), "other", options()).await?);
    let ttl = redis.ttl(key("session")).await?;
    assert!((1..=60).contains(&ttl), "TTL {ttl}");
    println!("set ex nx:    written once, TTL {ttl} s");

    // await redis.set("user", { name: "ann", age: 36 }); await redis.get<User>("user")
    let ann = User {
        name: "ann".into(),
        age: 36,
    };
    redis.set_json(key("user"), &ann).await?;
    let stored: Option<User> = redis.get_json(key("user")).await?;
    assert_eq!(stored.as_ref(), Some(&ann));
    // The value is plain JSON text, readable by any client.
    let raw = redis.get(key("user")).await?.unwrap_or_default();
    assert_eq!(&raw[..], br#"{"name":"ann","age":36}"#);
    println!("JSON:         {stored:?}");

    // await redis.lpush("elements", "magnesium", "sodium"); await redis.lrange("elements", 0, 100)
    redis
        .lpush(key("elements"), ["magnesium", "sodium"])
        .await?;
    let elements: Vec<_> = redis.lrange(key("elements"), 0, 100).await?;
    assert_eq!(elements, ["sodium", "magnesium"]);

    // await redis.hset("people", { name: "joe" }); await redis.hget("people", "name")
    redis.hset(key("people"), [("name", "joe")]).await?;
    let name = redis.hget(key("people"), "name").await?;
    assert_eq!(name.as_deref(), Some(&b"joe"[..]));

    // await redis.sadd("animals", "cat"); await redis.smembers("animals")
    assert_eq!(redis.sadd(key("animals"), ["cat", "cat"]).await?, 1);
    assert_eq!(redis.smembers(key("animals")).await?, ["cat"]);

    // await redis.zadd("scores", { score: 1, member: "team1" }): no typed method, so the raw
    // command, with the reply converted to the type asked for.
    let added: i64 = redis
        .query(Command::new("ZADD").arg(key("scores")).arg(1).arg("team1"))
        .await?;
    assert_eq!(added, 1);
    let ranked: Vec<String> = redis
        .query(Command::new("ZRANGE").arg(key("scores")).arg(0).arg(100))
        .await?;
    assert_eq!(ranked, ["team1"]);
    println!("list/hash/set/zset: {elements:?}, {name:?}, [cat], {ranked:?}");

    // const p = redis.pipeline(); p.set(…); p.incr(…); p.get(…); await p.exec()
    // One HTTP request; each command has a typed handle to its own result (or error).
    let mut pipe = redis.pipeline();
    pipe.set(key("visits"), 41);
    let visits = pipe.incr(key("visits"));
    let stored_user = pipe.get(key("user"));
    let not_a_number = pipe.incr(key("greeting"));
    let results = pipe.exec().await?;
    assert_eq!(results.get(&visits)?, 42);
    assert_eq!(results.get(&stored_user)?.as_deref(), Some(&raw[..]));
    // A failed command fails only its own slot.
    let err = results.get(&not_a_number).unwrap_err();
    assert!(err.redis_code().is_some(), "a Redis error: {err}");
    println!(
        "pipeline:     visits {}, INCR of text: {err}",
        results.get(&visits)?
    );

    // const tx = redis.multi(); tx.set(…); tx.decrby(…); tx.incrby(…); await tx.exec()
    // Atomic: no other client's command runs between these.
    let mut tx = redis.multi();
    tx.set(key("account:1"), 100);
    let debited = tx.decr_by(key("account:1"), 10);
    let credited = tx.incr_by(key("account:2"), 10);
    let results = tx.exec().await?;
    assert_eq!((results.get(&debited)?, results.get(&credited)?), (90, 10));
    println!("multi/exec:   account:1 = 90, account:2 = 10");

    // const script = redis.createScript(…); await script.exec(["visits"], ["8"])
    // EVALSHA first; EVAL (which also loads it) only if Redis does not know the script yet.
    let add_and_read = Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1])");
    let total: i64 = add_and_read.run(&redis, [key("visits")], [8]).await?;
    assert_eq!(total, 50);
    let again: i64 = add_and_read.run(&redis, [key("visits")], [-50]).await?;
    assert_eq!(again, 0);
    println!(
        "script:       {total}, then {again} (SHA-1 {})",
        add_and_read.sha1()
    );

    // redis.subscribe(["chat"]).on("message", …); await redis.publish("chat", "hello")
    let channel = key("chat");
    let mut subscription = redis.subscribe(&[channel.as_str()]);
    // Messages published before the server confirmed the subscription are not delivered.
    loop {
        match tokio::time::timeout(PATIENCE, subscription.next()).await? {
            Some(SubscriptionEvent::Subscribed { .. }) => break,
            Some(SubscriptionEvent::Interrupted { reason, .. }) => {
                println!("subscribing: {reason}, retrying")
            }
            other => return Err(format!("expected Subscribed, got {other:?}").into()),
        }
    }
    assert_eq!(redis.publish(&channel, "hello").await?, 1, "one receiver");
    let payload = loop {
        match tokio::time::timeout(PATIENCE, subscription.next()).await? {
            Some(SubscriptionEvent::Message { payload, .. }) => break payload,
            Some(SubscriptionEvent::Interrupted { reason, .. }) => {
                return Err(format!("the stream broke before the message: {reason}").into());
            }
            Some(_) => {}
            None => return Err("the subscription ended".into()),
        }
    };
    assert_eq!(&payload[..], b"hello");
    println!("pub/sub:      received {payload:?}");

    // sub.unsubscribe(): dropping the subscription closes its stream. The server notices the
    // closed connection on its own schedule, so wait until it counts no receiver.
    drop(subscription);
    let started = tokio::time::Instant::now();
    while redis.publish(&channel, "anyone?").await? != 0 {
        assert!(
            started.elapsed() < PATIENCE,
            "still subscribed after the drop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("unsubscribed: a publish reaches no one");

    // Leave nothing behind.
    let written = [
        "greeting",
        "session",
        "user",
        "elements",
        "people",
        "animals",
        "scores",
        "visits",
        "account:1",
        "account:2",
    ];
    let deleted = redis.del(written.map(key)).await?;
    assert_eq!(deleted, 10, "every key this example wrote");
    println!("cleaned up:   {deleted} keys deleted");
    Ok(())
}
