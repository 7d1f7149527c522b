//! [`UpstashTransport`]: the `cache-core` backplane over Upstash pub/sub — `PUBLISH` to send,
//! the SSE `/subscribe` stream to receive — so instances that share an Upstash database share a
//! bus without any other service.
//!
//! # Wire format
//!
//! The SSE stream carries text only (bytes outside UTF-8 arrive mangled, `\r\n` becomes `\n`),
//! while backplane messages are arbitrary bytes. So one published payload is a *frame*:
//! `1,` (the frame version) followed by the base64 (standard alphabet, padded) of each message,
//! separated by commas. A batch of messages goes out as as few frames as fit
//! [`MAX_FRAME_BYTES`] each — usually one `PUBLISH`, one billed command per batch rather than per
//! message — all in one `/pipeline` request, in order. A payload on the channel that is not such a
//! frame (another publisher) is handed on as one message as it came, for the backplane to reject.

use std::fmt;

use async_trait::async_trait;
use base64::{Engine, engine::general_purpose::STANDARD};
use bytes::Bytes;
use cache_core::{BackplaneTransport, TransportEvent};
use tokio::sync::mpsc;

use crate::{
    client::Redis,
    error::Error,
    subscribe::{SubscribeOptions, SubscriptionEvent},
};

const NAME: &str = "upstash";

/// The frame version prefix.
const FRAME_PREFIX: &[u8] = b"1,";

/// The largest frame one `PUBLISH` carries (when a single message is larger, its frame is too).
pub const MAX_FRAME_BYTES: usize = 256 * 1024;

/// Events buffered for the backplane before the stream stops being read.
const EVENT_BUFFER: usize = 4096;

/// A [`BackplaneTransport`] on one Upstash pub/sub channel.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use cache_upstash::{Redis, UpstashTransport};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let gateway = upstash_gateway::testing::TestGateway::start().await; // a local stand-in for Upstash
/// # // SAFETY: set before anything else reads the environment, on the only thread.
/// # unsafe { std::env::set_var("UPSTASH_REDIS_REST_URL", gateway.url()) };
/// # unsafe { std::env::set_var("UPSTASH_REDIS_REST_TOKEN", gateway.token()) };
/// let transport = UpstashTransport::new(Redis::from_env()?, "chat:backplane");
/// let transport: cache_core::DynTransport = Arc::new(transport);
/// # let _ = transport; Ok(()) }
/// ```
#[derive(Clone)]
pub struct UpstashTransport {
    redis: Redis,
    channel: String,
    options: SubscribeOptions,
}

impl fmt::Debug for UpstashTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstashTransport")
            .field("redis", &self.redis)
            .field("channel", &self.channel)
            .field("options", &self.options)
            .finish()
    }
}

impl UpstashTransport {
    /// A transport publishing to and subscribed to `channel` (non-empty) through `redis`.
    pub fn new(redis: Redis, channel: impl Into<String>) -> Self {
        UpstashTransport {
            redis,
            channel: channel.into(),
            options: SubscribeOptions::default(),
        }
    }

    /// Subscription settings (heartbeat timeout, reconnect backoff).
    #[must_use]
    pub fn with_options(mut self, options: SubscribeOptions) -> Self {
        self.options = options;
        self
    }

    /// The channel.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    fn error(err: Error) -> cache_core::Error {
        match err {
            Error::Timeout { after } => cache_core::Error::Timeout {
                backend: NAME,
                after,
            },
            other => cache_core::Error::backend(NAME, &other, Some(Box::new(other.clone()))),
        }
    }
}

/// The frames of a batch, in order.
pub(crate) fn encode_frames(messages: &[Bytes]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut frame = FRAME_PREFIX.to_vec();
    // Messages in `frame`; counted, not inferred from its length, as an empty message adds
    // no bytes.
    let mut in_frame = 0usize;
    for message in messages {
        let encoded_len = message.len().div_ceil(3) * 4;
        if in_frame > 0 && frame.len() + 1 + encoded_len > MAX_FRAME_BYTES {
            frames.push(std::mem::replace(&mut frame, FRAME_PREFIX.to_vec()));
            in_frame = 0;
        }
        if in_frame > 0 {
            frame.push(b',');
        }
        let start = frame.len();
        frame.resize(start + encoded_len, 0);
        let written = STANDARD
            .encode_slice(message, &mut frame[start..])
            .unwrap_or(0);
        frame.truncate(start + written);
        in_frame += 1;
    }
    if in_frame > 0 {
        frames.push(frame);
    }
    frames
}

/// The messages of a received payload: the decoded frame, or the payload itself if it is not one.
pub(crate) fn decode_frame(payload: Bytes) -> Vec<Bytes> {
    let Some(body) = payload.strip_prefix(FRAME_PREFIX) else {
        return vec![payload];
    };
    let decoded: Option<Vec<Bytes>> = body
        .split(|&b| b == b',')
        .map(|part| STANDARD.decode(part).ok().map(Bytes::from))
        .collect();
    decoded.unwrap_or_else(|| vec![payload])
}

#[async_trait]
impl BackplaneTransport for UpstashTransport {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn publish(&self, messages: &[Bytes]) -> cache_core::Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let mut pipe = self.redis.pipeline();
        for frame in encode_frames(messages) {
            pipe.publish(self.channel.as_str(), frame);
        }
        let results = pipe.exec().await.map_err(Self::error)?;
        for result in results.into_values() {
            result.map_err(Self::error)?;
        }
        Ok(())
    }

    fn subscribe(&self) -> mpsc::Receiver<TransportEvent> {
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let mut subscription = self
            .redis
            .subscribe_with(&[self.channel.as_str()], self.options.clone());
        tokio::spawn(async move {
            // What the backplane was last told: `Some(true)` connected, `Some(false)` interrupted.
            // Repeated failed reconnects are one interruption to it.
            let mut connected: Option<bool> = None;
            loop {
                let event = tokio::select! {
                    event = subscription.next() => event,
                    () = tx.closed() => return,
                };
                let out: Vec<TransportEvent> = match event {
                    Some(SubscriptionEvent::Subscribed { .. }) if connected != Some(true) => {
                        connected = Some(true);
                        vec![TransportEvent::Connected]
                    }
                    Some(SubscriptionEvent::Message { payload, .. }) => decode_frame(payload)
                        .into_iter()
                        .map(TransportEvent::Message)
                        .collect(),
                    Some(SubscriptionEvent::Interrupted { reason, retry_in }) => {
                        tracing::warn!(error = %reason, ?retry_in, "backplane subscription interrupted");
                        if connected == Some(false) {
                            Vec::new()
                        } else {
                            connected = Some(false);
                            vec![TransportEvent::Interrupted]
                        }
                    }
                    Some(_) => Vec::new(),
                    None => return,
                };
                for event in out {
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
            }
        });
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let messages: Vec<Bytes> = vec![
            Bytes::from_static(b""),
            Bytes::from_static(b"hello"),
            Bytes::from_static(b""),
            Bytes::from_static(&[0xff, 0x00, b'\r', b'\n', b',']),
            Bytes::from("héllo, wörld".as_bytes().to_vec()),
        ];
        let frames = encode_frames(&messages);
        assert_eq!(frames.len(), 1);
        assert!(frames[0].starts_with(b"1,"));
        assert_eq!(decode_frame(Bytes::from(frames[0].clone())), messages);
        assert!(encode_frames(&[]).is_empty());
    }

    #[test]
    fn big_batches_split_into_ordered_frames() {
        let big = Bytes::from(vec![7u8; MAX_FRAME_BYTES / 2]);
        let messages: Vec<Bytes> = (0..5u8)
            .map(|i| {
                let mut m = big.to_vec();
                m[0] = i;
                Bytes::from(m)
            })
            .collect();
        let frames = encode_frames(&messages);
        assert!(frames.len() >= 3, "{}", frames.len());
        let decoded: Vec<Bytes> = frames
            .into_iter()
            .flat_map(|f| decode_frame(Bytes::from(f)))
            .collect();
        assert_eq!(decoded, messages);
    }

    #[test]
    fn foreign_payloads_pass_through() {
        for raw in [&b"hello"[..], b"1,not base64!", b"2,aGk="] {
            assert_eq!(
                decode_frame(Bytes::copy_from_slice(raw)),
                vec![Bytes::copy_from_slice(raw)]
            );
        }
    }
}
