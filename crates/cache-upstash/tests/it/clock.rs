//! `TIME` and clock-offset measurement against a real Redis behind the gateway (on this host, so
//! the true offset is zero and a measurement must land within its own error bound of it).

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use cache_core::OffsetClock;
use cache_upstash::{
    ErrorKind, MAX_SYNC_RTT, best_clock_sample, measure_clock_offset, spawn_clock_sync, sync_clock,
};
use upstash_gateway::FaultConfig;

use crate::gateway;

#[tokio::test]
async fn time_is_this_hosts_time() {
    let (_env, redis) = gateway().await;
    let before = SystemTime::now();
    let remote = redis.time().await.unwrap();
    let after = SystemTime::now();
    // Same host, same clock: Redis read it between our two reads (whole-microsecond rounding
    // aside).
    let slack = Duration::from_millis(1);
    assert!(
        remote + slack >= before && remote <= after + slack,
        "{before:?} {remote:?} {after:?}"
    );
}

#[tokio::test]
async fn measured_offset_is_within_its_error_bound() {
    let (_env, redis) = gateway().await;
    for _ in 0..5 {
        let sample = measure_clock_offset(&redis).await.unwrap();
        assert_eq!(sample.error_bound(), sample.rtt / 2);
        // The true offset is 0; the measurement may be off by RTT/2 and 1 µs of rounding.
        let bound = i64::try_from(sample.error_bound().as_micros()).unwrap() + 2;
        assert!(sample.offset_micros.abs() <= bound, "{sample:?}");
    }
    let best = best_clock_sample(&redis, 5).await.unwrap();
    assert!(best.rtt <= MAX_SYNC_RTT);
    let bound = i64::try_from(best.error_bound().as_micros()).unwrap() + 2;
    assert!(best.offset_micros.abs() <= bound, "{best:?}");
}

#[tokio::test]
async fn samples_slower_than_the_bound_are_ignored() {
    let (env, redis) = gateway().await;
    env.faults()
        .set(FaultConfig::default().with_latency(MAX_SYNC_RTT + Duration::from_millis(100)));
    let err = best_clock_sample(&redis, 2).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    env.faults().clear();
    assert!(best_clock_sample(&redis, 2).await.is_ok());
}

#[tokio::test]
async fn failures_are_errors() {
    let (env, redis) = gateway().await;
    env.faults().start_outage(Duration::from_secs(600));
    let err = measure_clock_offset(&redis).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Http);
    assert_eq!(
        best_clock_sample(&redis, 2).await.unwrap_err().kind(),
        ErrorKind::Http
    );
}

#[tokio::test]
async fn sync_clock_applies_the_best_sample() {
    let (_env, redis) = gateway().await;
    let clock = OffsetClock::new();
    clock.set_offset_micros(-7_000_000);
    let sample = sync_clock(&redis, &clock).await.unwrap();
    assert_eq!(clock.offset_micros(), sample.offset_micros);
    let bound = i64::try_from(sample.error_bound().as_micros()).unwrap() + 2;
    assert!(clock.offset_micros().abs() <= bound, "{sample:?}");
}

/// Polls until `clock`'s offset is within the sync bound of the true offset (0 on this host).
async fn until_synced(clock: &OffsetClock) {
    let bound = i64::try_from((MAX_SYNC_RTT / 2).as_micros()).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while clock.offset_micros().abs() > bound {
        assert!(
            tokio::time::Instant::now() < deadline,
            "offset still {}µs",
            clock.offset_micros()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn clock_sync_task_corrects_the_offset_and_survives_outages() {
    let (env, redis) = gateway().await;
    let clock = Arc::new(OffsetClock::new());
    // As if this host's clock were 5 s off.
    clock.set_offset_micros(5_000_000);
    let task = spawn_clock_sync(redis.clone(), Arc::clone(&clock), Duration::from_secs(3600));
    until_synced(&clock).await;
    task.abort();

    // Redis unreachable at first: the offset stays, and is corrected once it is back (the
    // failed sync is retried after about a second, not after `every`).
    env.faults().start_outage(Duration::from_secs(600));
    clock.set_offset_micros(5_000_000);
    let requests = redis.stats().requests;
    let task = spawn_clock_sync(redis.clone(), Arc::clone(&clock), Duration::from_secs(3600));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while redis.stats().requests == requests {
        assert!(tokio::time::Instant::now() < deadline, "no sync attempt");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(clock.offset_micros(), 5_000_000);
    env.faults().end_outage();
    until_synced(&clock).await;
    task.abort();
}
