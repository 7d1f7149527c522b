//! Clock sync against the shared Redis: instances on different hosts stamp entries and
//! invalidations with their own wall clocks, so a stamp from a host whose clock runs ahead could
//! hide newer writes of another. Measuring each host's offset to Redis's `TIME` puts them all on
//! Redis's time line.
//!
//! # Error bound
//!
//! One sample reads the local clock, sends `TIME` and takes Redis's answer as the time at the
//! midpoint of the round trip. Redis read its clock somewhere inside that round trip, so the
//! offset of a sample is off by at most **RTT/2** (plus the local clock's drift until the next
//! sync). [`best_clock_sample`] keeps the sample with the smallest RTT of a few and ignores any
//! with an RTT above [`MAX_SYNC_RTT`], so the offset a sync applies is never off by more than
//! `MAX_SYNC_RTT / 2` = 250 ms, and typically by a few milliseconds. Two synced hosts can
//! therefore disagree by at most the sum of their two bounds.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use cache_core::OffsetClock;

use crate::{
    client::Redis,
    error::{Error, Result},
};

/// Samples with a round trip above this are ignored: their error bound (RTT/2) would be too
/// large to be worth applying.
pub const MAX_SYNC_RTT: Duration = Duration::from_millis(500);

/// Samples taken per sync; the one with the smallest round trip wins.
pub const SYNC_SAMPLES: usize = 5;

/// One measurement of Redis's clock against this host's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClockSample {
    /// Redis's clock minus this host's, in microseconds, at the midpoint of the round trip:
    /// add it to a local time to get Redis's time.
    pub offset_micros: i64,
    /// The round trip of the `TIME` request. The offset is off by at most half of it.
    pub rtt: Duration,
}

impl ClockSample {
    /// The most the offset can be off by: half the round trip.
    pub fn error_bound(&self) -> Duration {
        self.rtt / 2
    }
}

/// Measures Redis's clock against this host's with one `TIME` request.
///
/// # Errors
/// Any error of the request.
pub async fn measure_clock_offset(redis: &Redis) -> Result<ClockSample> {
    let local_before = SystemTime::now();
    let started = Instant::now();
    let remote = redis.time().await?;
    let rtt = started.elapsed();
    // The monotonic round trip, not a second wall-clock read, so a local clock step during the
    // request cannot skew the midpoint.
    let local_mid =
        micros_since_epoch(local_before) + i128::try_from((rtt / 2).as_micros()).unwrap_or(0);
    let offset = micros_since_epoch(remote) - local_mid;
    let offset_micros = i64::try_from(offset)
        .map_err(|_| Error::unexpected(format!("clock offset of {offset}µs is out of range")))?;
    Ok(ClockSample { offset_micros, rtt })
}

/// Takes `samples` measurements (at least one) and returns the one with the smallest round trip,
/// ignoring those slower than [`MAX_SYNC_RTT`].
///
/// # Errors
/// The last request error if no request succeeded, or [`Error::Timeout`] if every answer was
/// slower than [`MAX_SYNC_RTT`].
pub async fn best_clock_sample(redis: &Redis, samples: usize) -> Result<ClockSample> {
    let mut best: Option<ClockSample> = None;
    let mut last_error = None;
    for _ in 0..samples.max(1) {
        match measure_clock_offset(redis).await {
            Ok(sample) if sample.rtt <= MAX_SYNC_RTT => {
                if best.is_none_or(|b| sample.rtt < b.rtt) {
                    best = Some(sample);
                }
            }
            Ok(_) => {}
            Err(err) => last_error = Some(err),
        }
    }
    match (best, last_error) {
        (Some(sample), _) => Ok(sample),
        (None, Some(err)) => Err(err),
        (None, None) => Err(Error::Timeout {
            after: MAX_SYNC_RTT,
        }),
    }
}

/// Measures the offset once ([`SYNC_SAMPLES`] samples, the best kept) and applies it to `clock`.
/// Call it at startup to stamp on Redis's time line from the first write.
///
/// # Errors
/// As [`best_clock_sample`]; the clock is left as it was.
pub async fn sync_clock(redis: &Redis, clock: &OffsetClock) -> Result<ClockSample> {
    let sample = best_clock_sample(redis, SYNC_SAMPLES).await?;
    clock.set_offset_micros(sample.offset_micros);
    Ok(sample)
}

/// Keeps `clock`'s offset to Redis current: syncs at once, then every `every` (at least 1 s).
/// A failed sync keeps the previous offset and is retried sooner (1 s, doubling up to `every`).
/// Runs until the handle is aborted or the runtime shuts down.
pub fn spawn_clock_sync(
    redis: Redis,
    clock: Arc<OffsetClock>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    let every = every.max(Duration::from_secs(1));
    tokio::spawn(async move {
        let mut retry = Duration::from_secs(1);
        loop {
            let delay = match sync_clock(&redis, &clock).await {
                Ok(sample) => {
                    tracing::debug!(
                        offset_micros = sample.offset_micros,
                        rtt = ?sample.rtt,
                        "clock synced to redis"
                    );
                    retry = Duration::from_secs(1);
                    every
                }
                Err(err) => {
                    tracing::warn!(error = %err, "clock sync to redis failed; keeping the last offset");
                    let delay = retry.min(every);
                    retry = retry.saturating_mul(2);
                    delay
                }
            };
            tokio::time::sleep(delay).await;
        }
    })
}

fn micros_since_epoch(time: SystemTime) -> i128 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i128::try_from(after.as_micros()).unwrap_or(i128::MAX),
        Err(before) => -i128::try_from(before.duration().as_micros()).unwrap_or(i128::MAX),
    }
}
