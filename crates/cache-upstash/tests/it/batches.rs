//! Pipelines, transactions and auto-pipelining against a real `redis-server`.

use std::sync::Arc;

use bytes::Bytes;
use cache_upstash::{Command, ErrorKind, Value, cmd};

use crate::{client_for, gateway};

fn b(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

#[tokio::test]
async fn pipeline_has_typed_results_and_per_command_errors_in_one_request() {
    let (_env, redis) = gateway().await;
    let mut pipe = redis.pipeline();
    let set = pipe.set("a", "1");
    let incr = pipe.incr("a");
    pipe.set("s", "text");
    let bad = pipe.incr("s");
    let get = pipe.add(cmd::get("a"));
    let raw = pipe.add_raw(Command::new("STRLEN").arg("s"));
    let missing = pipe.get("missing");
    assert_eq!(pipe.len(), 7);
    let before = redis.stats();
    let results = pipe.exec().await.unwrap();
    let after = redis.stats();
    assert_eq!(after.requests - before.requests, 1);
    assert_eq!(after.commands - before.commands, 7);
    results.get(&set).unwrap();
    assert_eq!(results.get(&incr).unwrap(), 2);
    let err = results.get(&bad).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Redis);
    assert!(err.to_string().contains("INCR"));
    assert_eq!(results.get(&get).unwrap(), Some(b("2")));
    assert_eq!(results.get(&raw).unwrap(), Value::Int(4));
    assert_eq!(results.get(&missing).unwrap(), None);
    assert_eq!(results.len(), 7);
    assert_eq!(
        results.into_values().iter().filter(|r| r.is_err()).count(),
        1
    );
}

#[tokio::test]
async fn empty_batches_send_nothing() {
    let (_env, redis) = gateway().await;
    assert!(redis.pipeline().exec().await.unwrap().is_empty());
    assert!(redis.multi().exec().await.unwrap().is_empty());
    assert_eq!(redis.stats().requests, 0);
}

#[tokio::test]
async fn binary_arguments_are_refused_in_batches_before_sending() {
    let (_env, redis) = gateway().await;
    let mut pipe = redis.pipeline();
    pipe.set("k", &[0xffu8][..]);
    let err = pipe.exec().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    assert!(!err.may_have_executed());
    assert_eq!(redis.stats().requests, 0);
}

#[tokio::test]
async fn transactions_are_atomic() {
    let (env, redis) = gateway().await;
    redis.mset([("x", "0"), ("y", "0")]).await.unwrap();
    // Writers move x and y together inside transactions; readers must never see them differ.
    let writer = {
        let redis = redis.clone();
        tokio::spawn(async move {
            for i in 1..=60 {
                let mut tx = redis.multi();
                tx.set("x", i.to_string());
                tx.set("y", i.to_string());
                tx.exec().await.unwrap();
            }
        })
    };
    let reader = client_for(&env).build().unwrap();
    let mut reads = 0;
    while !writer.is_finished() {
        let mut tx = reader.multi();
        let x = tx.get("x");
        let y = tx.get("y");
        let results = tx.exec().await.unwrap();
        assert_eq!(results.get(&x).unwrap(), results.get(&y).unwrap());
        reads += 1;
    }
    writer.await.unwrap();
    assert!(reads > 0);
    assert_eq!(redis.get("x").await.unwrap(), Some(b("60")));
}

#[tokio::test]
async fn a_transaction_redis_cannot_queue_is_discarded_whole() {
    let (_env, redis) = gateway().await;
    let mut tx = redis.multi();
    tx.set("t", "1");
    tx.add_raw(Command::new("NOSUCHCOMMAND").arg("x"));
    let err = tx.exec().await.unwrap_err();
    assert!(err.is_redis(), "{err}");
    assert_eq!(redis.get("t").await.unwrap(), None, "nothing applied");
    // A command failing while it runs keeps its own error; the others apply.
    redis.set("s", "text").await.unwrap();
    let mut tx = redis.multi();
    let bad = tx.incr("s");
    let good = tx.incr("counter");
    let results = tx.exec().await.unwrap();
    assert!(results.get(&bad).is_err());
    assert_eq!(results.get(&good).unwrap(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn auto_pipelining_batches_concurrent_commands_in_order() {
    let (env, _) = gateway().await;
    let redis = client_for(&env).auto_pipeline(true).build().unwrap();
    // 100 increments issued concurrently by one task: the replies are 1..=100 in issue order.
    let replies = futures_util::future::join_all((0..100).map(|_| redis.incr("n")))
        .await
        .into_iter()
        .collect::<Result<Vec<i64>, _>>()
        .unwrap();
    assert_eq!(replies, (1..=100).collect::<Vec<_>>());
    let stats = redis.stats();
    assert_eq!(stats.commands, 100);
    assert!(
        stats.requests <= 2,
        "{} requests for 100 commands",
        stats.requests
    );

    // A write and a read issued together: the read sees the write (no read/write split).
    let (set, get) = tokio::join!(redis.set("k", "v"), redis.get("k"));
    set.unwrap();
    assert_eq!(get.unwrap(), Some(b("v")));

    // Per-command errors reach only their caller.
    redis.set("text", "x").await.unwrap();
    let (bad, good) = tokio::join!(redis.incr("text"), redis.incr("other"));
    assert_eq!(bad.unwrap_err().kind(), ErrorKind::Redis);
    assert_eq!(good.unwrap(), 1);

    // Binary commands bypass the pipeline (path form) and still work.
    redis.set("bin", &[0xffu8][..]).await.unwrap();
    assert_eq!(
        redis.get("bin").await.unwrap().as_deref(),
        Some(&[0xffu8][..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_pipelining_from_many_tasks_keeps_each_callers_order() {
    let (env, _) = gateway().await;
    let redis = Arc::new(client_for(&env).auto_pipeline(true).build().unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..20 {
        let redis = Arc::clone(&redis);
        tasks.spawn(async move {
            let key = format!("list:{task}");
            for i in 0..10 {
                redis.rpush(key.as_str(), [i.to_string()]).await.unwrap();
            }
            let items = redis.lrange(key.as_str(), 0, -1).await.unwrap();
            let expected: Vec<Bytes> = (0..10).map(|i| Bytes::from(i.to_string())).collect();
            assert_eq!(items, expected);
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
    }
    let stats = redis.stats();
    assert_eq!(stats.commands, 220);
    assert!(stats.requests < stats.commands, "{stats:?}");
}
