//! `UpstashTransport` against a real gateway: what one instance publishes reaches the others in
//! order, byte for byte, in one billed command per batch; breaks are reported once and followed
//! by `Connected` again.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use cache_core::{
    AppMessage, Backplane, BackplaneConfig, BackplaneState, BackplaneTransport, DynTransport,
    Notice, SystemClock, TransportEvent,
};
use cache_upstash::{Redis, SubscribeOptions, SubscriptionEvent, UpstashTransport};
use tokio::sync::mpsc;
use upstash_gateway::testing::TcpProxy;

use crate::{client_for, gateway};

const PATIENCE: Duration = Duration::from_secs(15);

fn fast() -> SubscribeOptions {
    SubscribeOptions::new().reconnect_backoff(Duration::from_millis(20), Duration::from_millis(100))
}

async fn next(rx: &mut mpsc::Receiver<TransportEvent>) -> TransportEvent {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("an event in time")
        .expect("the transport is still running")
}

#[tokio::test]
async fn publish_and_subscribe_round_trip() {
    let (env, redis) = gateway().await;
    let other = client_for(&env).build().unwrap();
    let sender: DynTransport = Arc::new(UpstashTransport::new(redis.clone(), "bp"));
    let receiver: DynTransport = Arc::new(UpstashTransport::new(other, "bp"));
    assert_eq!(sender.name(), "upstash");
    let mut rx = receiver.subscribe();
    let mut own = sender.subscribe();
    assert_eq!(next(&mut rx).await, TransportEvent::Connected);
    assert_eq!(next(&mut own).await, TransportEvent::Connected);

    let batch: Vec<Bytes> = vec![
        Bytes::from_static(b"{\"v\":1,\"tags\":[\"a,b\"]}"),
        Bytes::from_static(&[0xff, 0x00, b'\r', b'\n', 0x80]),
        Bytes::new(),
        Bytes::from("multi\nline \u{1F30D}".as_bytes().to_vec()),
    ];
    let before = redis.stats();
    sender.publish(&batch).await.unwrap();
    let after = redis.stats();
    // The whole batch: one HTTP request, one billed PUBLISH.
    assert_eq!(after.requests - before.requests, 1);
    assert_eq!(after.commands - before.commands, 1);
    sender
        .publish(&[Bytes::from_static(b"second batch")])
        .await
        .unwrap();
    sender.publish(&[]).await.unwrap();
    assert_eq!(redis.stats().requests, after.requests + 1);

    let expected: Vec<TransportEvent> = batch
        .iter()
        .cloned()
        .chain([Bytes::from_static(b"second batch")])
        .map(TransportEvent::Message)
        .collect();
    for want in &expected {
        assert_eq!(&next(&mut rx).await, want);
        // The publisher hears itself too (the backplane uses that as a liveness probe).
        assert_eq!(&next(&mut own).await, want);
    }
}

#[tokio::test]
async fn many_batches_keep_their_order() {
    let (env, redis) = gateway().await;
    let sender = UpstashTransport::new(redis, "order");
    let receiver = UpstashTransport::new(client_for(&env).build().unwrap(), "order");
    let mut rx = receiver.subscribe();
    assert_eq!(next(&mut rx).await, TransportEvent::Connected);
    let mut n = 0u32;
    for size in [1usize, 7, 50, 3] {
        let batch: Vec<Bytes> = (n..n + u32::try_from(size).unwrap())
            .map(|i| Bytes::from(i.to_be_bytes().to_vec()))
            .collect();
        n += u32::try_from(size).unwrap();
        sender.publish(&batch).await.unwrap();
    }
    for i in 0..n {
        assert_eq!(
            next(&mut rx).await,
            TransportEvent::Message(Bytes::from(i.to_be_bytes().to_vec()))
        );
    }
}

/// A foreign publisher on the channel: its payload reaches the backplane as it came (which then
/// rejects it), rather than being dropped silently.
#[tokio::test]
async fn foreign_payloads_are_passed_on() {
    let (_env, redis) = gateway().await;
    let transport = UpstashTransport::new(redis.clone(), "shared");
    let mut rx = transport.subscribe();
    assert_eq!(next(&mut rx).await, TransportEvent::Connected);
    redis
        .publish("shared", "hello from redis-cli")
        .await
        .unwrap();
    assert_eq!(
        next(&mut rx).await,
        TransportEvent::Message(Bytes::from_static(b"hello from redis-cli"))
    );
}

/// The path cut and refused for a while: the transport says `Interrupted` once however many
/// reconnects fail, then `Connected`, and messages published after that arrive.
#[tokio::test]
async fn interruptions_are_reported_once_then_connected() {
    let (env, redis) = gateway().await;
    let proxy = TcpProxy::start(env.gateway().addr());
    let through_proxy = Redis::builder()
        .url(proxy.url())
        .token(env.token())
        .retry(crate::fast_retries())
        .build()
        .unwrap();
    let transport = UpstashTransport::new(through_proxy.clone(), "bp").with_options(fast());
    let mut rx = transport.subscribe();
    // A plain subscription on the same path shows how many attempts failed meanwhile.
    let mut probe = through_proxy.subscribe_with(&["probe"], fast());
    assert_eq!(next(&mut rx).await, TransportEvent::Connected);
    let first = tokio::time::timeout(PATIENCE, probe.next()).await.unwrap();
    assert!(
        matches!(first, Some(SubscriptionEvent::Subscribed { .. })),
        "{first:?}"
    );

    proxy.refuse();
    let mut failures = 0;
    while failures < 4 {
        if let SubscriptionEvent::Interrupted { .. } = tokio::time::timeout(PATIENCE, probe.next())
            .await
            .unwrap()
            .unwrap()
        {
            failures += 1;
        }
    }
    // Publishing through the cut path fails with a typed backend error.
    let err = transport
        .publish(&[Bytes::from_static(b"x")])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), cache_core::ErrorKind::Backend);
    let shown = format!("{err} {err:?} {transport:?}");
    assert!(!shown.contains(env.token()), "{shown}");

    proxy.heal();
    assert_eq!(next(&mut rx).await, TransportEvent::Interrupted);
    assert_eq!(next(&mut rx).await, TransportEvent::Connected);
    UpstashTransport::new(redis, "bp")
        .publish(&[Bytes::from_static(b"after")])
        .await
        .unwrap();
    assert_eq!(
        next(&mut rx).await,
        TransportEvent::Message(Bytes::from_static(b"after"))
    );
}

/// Two `cache-core` backplanes on one Upstash channel: each connects (hearing its own
/// heartbeats), and application messages and notices of one reach the other.
#[tokio::test]
async fn backplanes_talk_over_upstash() {
    let (env, redis) = gateway().await;
    let start = |redis: Redis| {
        let transport: DynTransport = Arc::new(UpstashTransport::new(redis, "bp:e2e"));
        let mut config = BackplaneConfig::default();
        config.heartbeat = Duration::from_millis(200);
        config.silence_timeout = Duration::from_secs(5);
        Backplane::start(transport, config, Arc::new(SystemClock))
    };
    let one = start(redis);
    let two = start(client_for(&env).build().unwrap());
    for bus in [&one, &two] {
        let mut state = bus.watch_state();
        tokio::time::timeout(
            PATIENCE,
            state.wait_for(|s| *s == BackplaneState::Connected),
        )
        .await
        .expect("connected in time")
        .unwrap();
    }
    let mut inbox = two.subscribe_app();
    let payload = Bytes::from_static(&[0xff, b'\n', 0x00, b'{']);
    one.publish_app(payload.clone());
    let received = loop {
        let message = tokio::time::timeout(PATIENCE, inbox.recv())
            .await
            .unwrap()
            .unwrap();
        // Anything else (a resync) is not the message under test.
        if let AppMessage::Message { origin, payload } = message {
            break (origin, payload);
        }
    };
    assert_eq!(&*received.0, one.instance_id());
    assert_eq!(received.1, payload);
    let before = two.stats().received;
    one.publish_invalidation(Notice::DeleteKeys(vec![]))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while two.stats().received == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "notice not received"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(two.stats().rejected, 0);
    assert_eq!(one.stats().transport, "upstash");
}

/// Messages too big to share a frame: one `PUBLISH` each, still one request, still in order.
#[tokio::test]
async fn big_messages_get_a_frame_each() {
    let (env, redis) = gateway().await;
    let sender = UpstashTransport::new(redis.clone(), "big");
    let receiver = UpstashTransport::new(client_for(&env).build().unwrap(), "big");
    let mut rx = receiver.subscribe();
    assert_eq!(next(&mut rx).await, TransportEvent::Connected);
    let batch: Vec<Bytes> = (0..3u8)
        .map(|i| Bytes::from(vec![i; cache_upstash::MAX_FRAME_BYTES * 3 / 4 - 10]))
        .collect();
    let before = redis.stats();
    sender.publish(&batch).await.unwrap();
    let after = redis.stats();
    assert_eq!(after.requests - before.requests, 1);
    assert_eq!(after.commands - before.commands, 3);
    for message in batch {
        assert_eq!(next(&mut rx).await, TransportEvent::Message(message));
    }
}
