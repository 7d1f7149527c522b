//! Every typed command against a real `redis-server` behind `upstash-gateway`.

use std::time::Duration;

use bytes::Bytes;
use cache_upstash::{Command, ErrorKind, Redis, ScanOptions, Script, SetOptions, Value};
use futures_util::TryStreamExt;

use crate::{client_for, gateway};

fn b(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

#[tokio::test]
async fn strings() {
    let (_env, redis) = gateway().await;
    assert_eq!(redis.get("missing").await.unwrap(), None);
    redis.set("s", "hello").await.unwrap();
    assert_eq!(redis.get("s").await.unwrap(), Some(b("hello")));
    assert!(
        !redis
            .set_with("s", "x", SetOptions::new().nx())
            .await
            .unwrap()
    );
    assert!(
        redis
            .set_with("s", "world", SetOptions::new().xx())
            .await
            .unwrap()
    );
    assert!(
        !redis
            .set_with("nope", "x", SetOptions::new().xx())
            .await
            .unwrap()
    );
    assert_eq!(
        redis
            .set_get("s", "again", SetOptions::new())
            .await
            .unwrap(),
        Some(b("world"))
    );
    assert_eq!(redis.append("s", "!").await.unwrap(), 6);
    assert_eq!(redis.strlen("s").await.unwrap(), 6);
    assert_eq!(redis.getdel("s").await.unwrap(), Some(b("again!")));
    assert_eq!(redis.get("s").await.unwrap(), None);
    // A stored value "OK" is data, not the status reply, and still round-trips.
    redis.set("ok", "OK").await.unwrap();
    assert_eq!(redis.get("ok").await.unwrap(), Some(b("OK")));

    redis.mset([("m1", "1"), ("m2", "2")]).await.unwrap();
    assert_eq!(
        redis.mget(["m1", "missing", "m2"]).await.unwrap(),
        vec![Some(b("1")), None, Some(b("2"))]
    );
    assert_eq!(redis.incr("n").await.unwrap(), 1);
    assert_eq!(redis.incr_by("n", 10).await.unwrap(), 11);
    assert_eq!(redis.decr("n").await.unwrap(), 10);
    assert_eq!(redis.decr_by("n", 4).await.unwrap(), 6);
    assert_eq!(redis.incr_by_float("f", 1.5).await.unwrap(), 1.5);
    let err = redis
        .incr("m1x")
        .await
        .map(|_| ())
        .and(redis.incr_by("ok", 1).await)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Redis);
    assert!(err.to_string().contains("INCRBY"), "{err}");
}

#[tokio::test]
async fn expiry_and_keys() {
    let (_env, redis) = gateway().await;
    redis
        .set_with("t", "v", SetOptions::new().ex(100))
        .await
        .unwrap();
    let ttl = redis.ttl("t").await.unwrap();
    assert!((99..=100).contains(&ttl), "{ttl}");
    assert!(redis.pexpire("t", 50_000).await.unwrap());
    let pttl = redis.pttl("t").await.unwrap();
    assert!((49_000..=50_000).contains(&pttl), "{pttl}");
    assert!(redis.persist("t").await.unwrap());
    assert_eq!(redis.ttl("t").await.unwrap(), -1);
    assert_eq!(redis.ttl("missing").await.unwrap(), -2);
    assert!(redis.expire("t", 100).await.unwrap());
    assert!(!redis.expire("missing", 100).await.unwrap());
    redis
        .set_with(
            "short",
            "v",
            SetOptions::new().expire_in(Duration::from_millis(150)),
        )
        .await
        .unwrap();
    assert_eq!(redis.exists(["short", "t", "missing"]).await.unwrap(), 2);
    // Redis expires it on its own clock: wait for that, with a deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while redis.get("short").await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    redis
        .set_with("kt", "1", SetOptions::new().ex(100))
        .await
        .unwrap();
    redis
        .set_with("kt", "2", SetOptions::new().keep_ttl())
        .await
        .unwrap();
    assert!(redis.ttl("kt").await.unwrap() > 0);
    assert_eq!(redis.key_type("kt").await.unwrap(), "string");
    assert_eq!(redis.key_type("missing").await.unwrap(), "none");
    assert_eq!(redis.del(["t", "missing"]).await.unwrap(), 1);
    assert_eq!(redis.unlink(["kt"]).await.unwrap(), 1);
}

#[tokio::test]
async fn sets_hashes_and_lists() {
    let (_env, redis) = gateway().await;
    assert_eq!(redis.sadd("set", ["a", "b", "a"]).await.unwrap(), 2);
    assert!(redis.sismember("set", "a").await.unwrap());
    assert!(!redis.sismember("set", "z").await.unwrap());
    assert_eq!(redis.scard("set").await.unwrap(), 2);
    let mut members = redis.smembers("set").await.unwrap();
    members.sort();
    assert_eq!(members, vec![b("a"), b("b")]);
    assert_eq!(redis.srem("set", ["a", "z"]).await.unwrap(), 1);

    assert_eq!(
        redis.hset("h", [("f1", "1"), ("f2", "two")]).await.unwrap(),
        2
    );
    assert_eq!(redis.hget("h", "f2").await.unwrap(), Some(b("two")));
    assert_eq!(redis.hget("h", "nope").await.unwrap(), None);
    assert_eq!(redis.hincrby("h", "f1", 41).await.unwrap(), 42);
    assert!(redis.hexists("h", "f1").await.unwrap());
    assert_eq!(redis.hlen("h").await.unwrap(), 2);
    assert_eq!(
        redis.hmget("h", ["f1", "x"]).await.unwrap(),
        vec![Some(b("42")), None]
    );
    let all = redis.hgetall("h").await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all.get(b"f1".as_slice()), Some(&b("42")));
    assert!(redis.hgetall("missing").await.unwrap().is_empty());
    assert_eq!(redis.hkeys("h").await.unwrap().len(), 2);
    assert_eq!(redis.hdel("h", ["f1", "zz"]).await.unwrap(), 1);

    assert_eq!(redis.rpush("l", ["a", "b", "c"]).await.unwrap(), 3);
    assert_eq!(redis.lpush("l", ["z"]).await.unwrap(), 4);
    assert_eq!(
        redis.lrange("l", 0, -1).await.unwrap(),
        vec![b("z"), b("a"), b("b"), b("c")]
    );
    assert_eq!(redis.lindex("l", -1).await.unwrap(), Some(b("c")));
    assert_eq!(redis.lpop("l").await.unwrap(), Some(b("z")));
    assert_eq!(redis.rpop("l").await.unwrap(), Some(b("c")));
    assert_eq!(redis.llen("l").await.unwrap(), 2);
    redis.ltrim("l", 0, 0).await.unwrap();
    assert_eq!(redis.lrange("l", 0, -1).await.unwrap(), vec![b("a")]);
    assert_eq!(redis.lpop("missing").await.unwrap(), None);
    // A type error is the command's own Redis error.
    let err = redis.lpush("h", ["x"]).await.unwrap_err();
    assert_eq!(err.redis_code(), Some("WRONGTYPE"));
}

#[tokio::test]
async fn scan_iteration_keys_dbsize_flushdb() {
    let (_env, redis) = gateway().await;
    let pairs: Vec<(String, String)> = (0..250)
        .map(|i| (format!("scan:{i}"), i.to_string()))
        .collect();
    redis.mset(pairs).await.unwrap();
    redis.set("other", "x").await.unwrap();
    let before = redis.stats().requests;
    let mut found: Vec<Bytes> = redis
        .scan_iter(ScanOptions::new().pattern("scan:*").count(20))
        .try_collect()
        .await
        .unwrap();
    found.sort();
    found.dedup();
    assert_eq!(found.len(), 250);
    assert!(
        redis.stats().requests - before > 5,
        "walked several cursors"
    );
    let (cursor, first) = redis
        .scan(0, &ScanOptions::new().count(1000))
        .await
        .unwrap();
    assert_eq!((cursor, first.len()), (0, 251));
    let typed: Vec<Bytes> = redis
        .scan_iter(ScanOptions::new().kind("hash"))
        .try_collect()
        .await
        .unwrap();
    assert!(typed.is_empty());
    assert_eq!(redis.keys("other*").await.unwrap(), vec![b("other")]);
    assert_eq!(redis.dbsize().await.unwrap(), 251);
    redis.flushdb().await.unwrap();
    assert_eq!(redis.dbsize().await.unwrap(), 0);
}

#[tokio::test]
async fn scripts_fall_back_from_evalsha_to_eval() {
    let (_env, redis) = gateway().await;
    let script = Script::new("return {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1}");
    let before = redis.stats().requests;
    let reply: Vec<Value> = script.run(&redis, ["k"], ["a", "41"]).await.unwrap();
    assert_eq!(
        reply,
        vec![Value::Data(b("k")), Value::Data(b("a")), Value::Int(42)]
    );
    assert_eq!(
        redis.stats().requests - before,
        2,
        "EVALSHA (NOSCRIPT) then EVAL"
    );
    let again: Vec<Value> = script.run(&redis, ["k"], ["a", "1"]).await.unwrap();
    assert_eq!(again[2], Value::Int(2));
    assert_eq!(
        redis.stats().requests - before,
        3,
        "now cached: EVALSHA only"
    );

    let other = Script::new("return 7");
    assert_eq!(
        redis.script_exists([other.sha1()]).await.unwrap(),
        vec![false]
    );
    assert_eq!(
        redis.script_load(other.source()).await.unwrap(),
        other.sha1()
    );
    assert_eq!(
        redis.script_exists([other.sha1()]).await.unwrap(),
        vec![true]
    );
    assert_eq!(
        redis.evalsha(other.sha1(), [""; 0], [""; 0]).await.unwrap(),
        Value::Int(7)
    );
    assert_eq!(
        redis.eval("return ARGV[1]", [""; 0], ["x"]).await.unwrap(),
        Value::Data(b("x"))
    );
    let err = redis
        .evalsha("0000000000000000000000000000000000000000", [""; 0], [""; 0])
        .await
        .unwrap_err();
    assert_eq!(err.redis_code(), Some("NOSCRIPT"));
}

#[tokio::test]
async fn server_commands_and_raw_commands() {
    let (_env, redis) = gateway().await;
    assert_eq!(redis.ping().await.unwrap(), "PONG");
    assert_eq!(redis.echo("hi").await.unwrap(), b("hi"));
    assert!(
        redis
            .info("server")
            .await
            .unwrap()
            .contains("redis_version")
    );
    assert!(redis.info("").await.unwrap().contains("# Server"));
    assert_eq!(redis.publish("chan", "msg").await.unwrap(), 0);
    let added: i64 = redis
        .query(
            Command::new("zadd")
                .arg("z")
                .arg(1)
                .arg("one")
                .arg(2)
                .arg("two"),
        )
        .await
        .unwrap();
    assert_eq!(added, 2);
    let range: Vec<String> = redis
        .query(Command::new("ZRANGE").arg("z").arg(0).arg(-1))
        .await
        .unwrap();
    assert_eq!(range, ["one", "two"]);
    let unknown = redis.execute(Command::new("NOSUCHCMD")).await.unwrap_err();
    assert_eq!(unknown.kind(), ErrorKind::Redis);
}

#[tokio::test]
async fn binary_values_and_keys_round_trip_exactly() {
    let (env, redis) = gateway().await;
    let all_bytes: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    redis.set("bin", all_bytes.clone()).await.unwrap();
    assert_eq!(
        redis.get("bin").await.unwrap().as_deref(),
        Some(&all_bytes[..])
    );
    // What Redis itself stored: a bulk string of exactly those bytes.
    let raw = env.redis().raw_command(&[b"GET", b"bin"]);
    assert!(raw.ends_with(&[&all_bytes[..], b"\r\n"].concat()));
    // A binary key, a binary value with options after it, and a binary hash field.
    let key = [0xffu8, 0x00, b'k'];
    assert!(
        redis
            .set_with(
                &key[..],
                &[0x80u8, 0x81][..],
                SetOptions::new().px(60_000).nx()
            )
            .await
            .unwrap()
    );
    assert_eq!(
        redis.get(&key[..]).await.unwrap().as_deref(),
        Some(&[0x80u8, 0x81][..])
    );
    assert!(redis.pttl(&key[..]).await.unwrap() > 0);
    redis
        .hset("hb", [(&[0xc3u8, 0x28][..], &[0xa0u8, 0xa1][..])])
        .await
        .unwrap();
    assert_eq!(
        redis
            .hget("hb", &[0xc3u8, 0x28][..])
            .await
            .unwrap()
            .as_deref(),
        Some(&[0xa0u8, 0xa1][..])
    );
    // Text with every kind of escape, through the JSON body.
    let text = "héllo 👋 \"q\" \\ \n \u{0} / ? & = % +";
    redis.set("text", text).await.unwrap();
    assert_eq!(redis.get("text").await.unwrap(), Some(b(text)));
}

#[tokio::test]
async fn json_helpers() {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Channel {
        id: u64,
        name: String,
    }
    let (_env, redis) = gateway().await;
    let channel = Channel {
        id: 1,
        name: "général".into(),
    };
    redis.set_json("c", &channel).await.unwrap();
    assert_eq!(
        redis.get("c").await.unwrap(),
        Some(b(r#"{"id":1,"name":"général"}"#))
    );
    assert_eq!(redis.get_json::<Channel>("c").await.unwrap(), Some(channel));
    assert_eq!(redis.get_json::<Channel>("none").await.unwrap(), None);
    assert!(
        !redis
            .set_json_with("c", &1, SetOptions::new().nx())
            .await
            .unwrap()
    );
    redis.set("bad", "not json").await.unwrap();
    assert_eq!(
        redis.get_json::<Channel>("bad").await.unwrap_err().kind(),
        ErrorKind::Json
    );
}

#[tokio::test]
async fn plain_json_encoding_and_wrong_token() {
    let (env, _) = gateway().await;
    let plain = client_for(&env)
        .response_encoding(cache_upstash::ResponseEncoding::Json)
        .build()
        .unwrap();
    plain.set("k", "välue").await.unwrap();
    assert_eq!(plain.get("k").await.unwrap(), Some(b("välue")));
    let wrong = Redis::builder()
        .url(env.url())
        .token("wrong-token")
        .build()
        .unwrap();
    let err = wrong.get("k").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized);
    assert!(!format!("{err:?}").contains(env.token()));
}

#[tokio::test]
async fn sync_tokens_are_kept_and_handed_over() {
    let (env, redis) = gateway().await;
    assert_eq!(redis.sync_token(), None);
    redis.set("a", "1").await.unwrap();
    let token = redis.sync_token().expect("the gateway sends a sync token");
    let other = client_for(&env).build().unwrap();
    other.set_sync_token(&token);
    assert_eq!(other.get("a").await.unwrap(), Some(b("1")));
}
