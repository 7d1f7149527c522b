//! Values as JSON, and entries as bytes on the wire of a remote backend (format v1).
//!
//! # Wire format v1
//!
//! An entry whose value is JSON and whose encoded size is under the compression threshold is
//! stored as plain JSON text, readable by any client (`redis-cli`, `@upstash/redis`):
//!
//! ```text
//! {"c":<created µs>,"f":<fresh-until µs>,"x":<expires µs>,"v":<the value's JSON>}
//! ```
//!
//! The fields always come in this order, so the decoder reads them without parsing the value.
//! Anything else (a large value, or a value that is not JSON) is framed:
//!
//! ```text
//! 0x00 'C' 'Z' 0x01 <algorithm> <payload>
//! ```
//!
//! where the payload is the plain form above compressed with the algorithm (0 = none,
//! 1 = LZ4 with a little-endian u32 length prefix, 2 = Zstandard). A leading NUL can never start
//! JSON text, so a framed value is never mistaken for JSON. The golden tests in this module pin
//! these bytes; changing them requires a new format version (see [`Namespace`](crate::Namespace)).

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    entry::Entry,
    error::{Error, Result},
    time::Timestamp,
};

const FRAME_MAGIC: [u8; 4] = [0x00, b'C', b'Z', 0x01];
const ALGO_NONE: u8 = 0;
const ALGO_LZ4: u8 = 1;
#[cfg_attr(
    not(feature = "zstd"),
    allow(dead_code, reason = "only zstd builds write it")
)]
const ALGO_ZSTD: u8 = 2;

/// The compression applied to large values on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// Never compress.
    None,
    /// LZ4 (the default): fast enough that compressing costs less than sending the bytes.
    #[cfg(feature = "lz4")]
    Lz4,
    /// Zstandard at the given level (1 to 22).
    #[cfg(feature = "zstd")]
    Zstd(i32),
}

impl Default for Compression {
    fn default() -> Self {
        #[cfg(feature = "lz4")]
        return Compression::Lz4;
        #[cfg(not(feature = "lz4"))]
        return Compression::None;
    }
}

/// Encodes values as JSON and entries as wire bytes.
#[derive(Debug, Clone)]
pub struct Codec {
    compression: Compression,
    threshold: usize,
    max_decoded_len: usize,
}

impl Default for Codec {
    fn default() -> Self {
        Codec {
            compression: Compression::default(),
            threshold: 1024,
            max_decoded_len: 64 * 1024 * 1024,
        }
    }
}

impl Codec {
    /// The default codec: LZ4 above 1 KiB, decoded entries capped at 64 MiB.
    pub fn new() -> Self {
        Codec::default()
    }

    /// Sets the compression algorithm.
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Compresses entries whose plain form is at least `bytes` long.
    pub fn with_threshold(mut self, bytes: usize) -> Self {
        self.threshold = bytes;
        self
    }

    /// Refuses to decode entries that would expand past `bytes` (protects against hostile input).
    pub fn with_max_decoded_len(mut self, bytes: usize) -> Self {
        self.max_decoded_len = bytes;
        self
    }

    /// The compression algorithm.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// The compression threshold in bytes.
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// A value as JSON bytes.
    pub fn encode_value<T: Serialize + ?Sized>(&self, value: &T) -> Result<Bytes> {
        Ok(Bytes::from(serde_json::to_vec(value)?))
    }

    /// A value from JSON bytes.
    pub fn decode_value<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|err| Error::Decode(format!("value: {err}")))
    }

    /// An entry as wire bytes (format v1).
    pub fn encode_entry(&self, entry: &Entry) -> Bytes {
        let plain = plain_form(entry);
        let compress = plain.len() >= self.threshold && self.compression != Compression::None;
        if looks_like_json(entry.value()) && !compress {
            return plain.freeze();
        }
        let mut out = BytesMut::with_capacity(plain.len() / 2 + 16);
        out.extend_from_slice(&FRAME_MAGIC);
        match self.compression {
            #[cfg(feature = "lz4")]
            Compression::Lz4 if compress => {
                out.put_u8(ALGO_LZ4);
                out.extend_from_slice(&lz4_flex::compress_prepend_size(&plain));
            }
            #[cfg(feature = "zstd")]
            Compression::Zstd(level) if compress => {
                match zstd_compress(&plain, level) {
                    Ok(compressed) => {
                        out.put_u8(ALGO_ZSTD);
                        out.extend_from_slice(&compressed);
                    }
                    // Compression of an in-memory buffer only fails on a bad level; store raw.
                    Err(_) => {
                        out.put_u8(ALGO_NONE);
                        out.extend_from_slice(&plain);
                    }
                }
            }
            _ => {
                out.put_u8(ALGO_NONE);
                out.extend_from_slice(&plain);
            }
        }
        out.freeze()
    }

    /// An entry from wire bytes. Bytes this codec did not write give [`Error::Decode`].
    pub fn decode_entry(&self, bytes: &[u8]) -> Result<Entry> {
        if bytes.first() == Some(&0) {
            let plain = self.unframe(bytes)?;
            parse_plain(&plain, true)
        } else {
            parse_plain(bytes, false)
        }
    }

    fn unframe(&self, bytes: &[u8]) -> Result<Vec<u8>> {
        let Some(rest) = bytes.strip_prefix(&FRAME_MAGIC) else {
            return Err(Error::Decode("unknown frame header".into()));
        };
        let Some((&algo, payload)) = rest.split_first() else {
            return Err(Error::Decode("truncated frame header".into()));
        };
        match algo {
            ALGO_NONE => {
                if payload.len() > self.max_decoded_len {
                    return Err(Error::Decode("entry over the size limit".into()));
                }
                Ok(payload.to_vec())
            }
            #[cfg(feature = "lz4")]
            ALGO_LZ4 => {
                let Some(len) = payload.get(..4) else {
                    return Err(Error::Decode("truncated lz4 length".into()));
                };
                let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
                if len > self.max_decoded_len {
                    return Err(Error::Decode(format!(
                        "lz4 entry claims {len} bytes, over the {} byte limit",
                        self.max_decoded_len
                    )));
                }
                lz4_flex::decompress_size_prepended(payload)
                    .map_err(|err| Error::Decode(format!("lz4: {err}")))
            }
            #[cfg(feature = "zstd")]
            ALGO_ZSTD => {
                // The frame header states the size (we always write it); allocate exactly that.
                let Ok(Some(len)) = zstd::zstd_safe::get_frame_content_size(payload) else {
                    return Err(Error::Decode("zstd frame without a content size".into()));
                };
                if len > self.max_decoded_len as u64 {
                    return Err(Error::Decode(format!(
                        "zstd entry claims {len} bytes, over the {} byte limit",
                        self.max_decoded_len
                    )));
                }
                zstd_decompress(payload, len as usize)
                    .map_err(|err| Error::Decode(format!("zstd: {err}")))
            }
            other => Err(Error::Decode(format!(
                "compression algorithm {other} is not supported by this build"
            ))),
        }
    }
}

// Zstandard contexts are costly to create (tens of µs), so each thread keeps one of each.
#[cfg(feature = "zstd")]
thread_local! {
    static ZSTD_COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
    static ZSTD_DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

#[cfg(feature = "zstd")]
fn zstd_compress(data: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    ZSTD_COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        let (_, compressor) = slot.as_mut().expect("just set");
        compressor.compress(data)
    })
}

#[cfg(feature = "zstd")]
fn zstd_decompress(data: &[u8], len: usize) -> std::io::Result<Vec<u8>> {
    ZSTD_DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        slot.as_mut().expect("just set").decompress(data, len)
    })
}

/// Whether `value` can go in the plain (readable) form: UTF-8 text that starts like JSON. Values
/// from [`Codec::encode_value`] always do; arbitrary bytes are framed instead. Cheaper than parsing.
fn looks_like_json(value: &[u8]) -> bool {
    let starts_like_json = value
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| {
            matches!(
                b,
                b'{' | b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n'
            )
        });
    starts_like_json && std::str::from_utf8(value).is_ok()
}

fn plain_form(entry: &Entry) -> BytesMut {
    let mut out = BytesMut::with_capacity(entry.value().len() + 64);
    out.extend_from_slice(b"{\"c\":");
    out.extend_from_slice(entry.created_at().as_micros().to_string().as_bytes());
    out.extend_from_slice(b",\"f\":");
    out.extend_from_slice(entry.fresh_until().as_micros().to_string().as_bytes());
    out.extend_from_slice(b",\"x\":");
    out.extend_from_slice(entry.expires_at().as_micros().to_string().as_bytes());
    out.extend_from_slice(b",\"v\":");
    out.extend_from_slice(entry.value());
    out.put_u8(b'}');
    out
}

fn parse_plain(bytes: &[u8], framed: bool) -> Result<Entry> {
    let mut rest = bytes;
    let created_at = field(&mut rest, b"{\"c\":")?;
    let fresh_until = field(&mut rest, b",\"f\":")?;
    let expires_at = field(&mut rest, b",\"x\":")?;
    let Some(value) = rest
        .strip_prefix(b",\"v\":")
        .and_then(|v| v.strip_suffix(b"}"))
    else {
        return Err(Error::Decode("not a cache entry (no value field)".into()));
    };
    // The value itself is checked when it is decoded (`Codec::decode_value`); validating it here
    // too would double the cost of every read.
    if value.is_empty() && !framed {
        return Err(Error::Decode("not a cache entry (empty value)".into()));
    }
    Ok(Entry::new(
        Bytes::copy_from_slice(value),
        created_at,
        fresh_until,
        expires_at,
    ))
}

fn field(rest: &mut &[u8], prefix: &[u8]) -> Result<Timestamp> {
    let Some(after) = rest.strip_prefix(prefix) else {
        return Err(Error::Decode(
            "not a cache entry (unexpected header)".into(),
        ));
    };
    let digits = after.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 {
        return Err(Error::Decode("not a cache entry (bad timestamp)".into()));
    }
    let text = std::str::from_utf8(&after[..digits]).expect("ASCII digits");
    let micros: u64 = text
        .parse()
        .map_err(|_| Error::Decode("not a cache entry (timestamp out of range)".into()))?;
    *rest = &after[digits..];
    Ok(Timestamp::from_micros(micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(value: &[u8]) -> Entry {
        Entry::new(
            Bytes::copy_from_slice(value),
            Timestamp::from_micros(1_700_000_000_000_000),
            Timestamp::from_micros(1_700_000_300_000_000),
            Timestamp::from_micros(1_700_000_360_000_000),
        )
    }

    #[test]
    fn golden_plain_entry() {
        let bytes = Codec::new().encode_entry(&entry(br#"{"name":"general"}"#));
        assert_eq!(
            &bytes[..],
            br#"{"c":1700000000000000,"f":1700000300000000,"x":1700000360000000,"v":{"name":"general"}}"#
        );
        // Other clients can read it as JSON.
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["v"]["name"], "general");
    }

    #[test]
    fn golden_raw_frame_for_non_json_value() {
        let bytes = Codec::new().encode_entry(&entry(b"\xff\x00bin"));
        let mut expected = vec![0x00, b'C', b'Z', 0x01, 0x00];
        expected.extend_from_slice(
            b"{\"c\":1700000000000000,\"f\":1700000300000000,\"x\":1700000360000000,\"v\":\xff\x00bin}",
        );
        assert_eq!(&bytes[..], &expected[..]);
    }

    #[cfg(feature = "lz4")]
    #[test]
    fn golden_lz4_frame() {
        let value = format!("\"{}\"", "a".repeat(64));
        let codec = Codec::new().with_threshold(32);
        let bytes = codec.encode_entry(&entry(value.as_bytes()));
        assert_eq!(&bytes[..5], &[0x00, b'C', b'Z', 0x01, 0x01]);
        // LZ4 block format is stable: pin the exact bytes.
        assert_eq!(
            &bytes[5..],
            &[
                135, 0, 0, 0, 137, 123, 34, 99, 34, 58, 49, 55, 48, 1, 0, 53, 44, 34, 102, 21, 0,
                20, 51, 26, 0, 54, 44, 34, 120, 21, 0, 19, 54, 22, 0, 127, 44, 34, 118, 34, 58, 34,
                97, 1, 0, 40, 96, 97, 97, 97, 97, 34, 125
            ][..]
        );
        assert_eq!(codec.decode_entry(&bytes).unwrap(), entry(value.as_bytes()));
    }

    #[test]
    fn roundtrip_large_values_compressed() {
        let value = serde_json::to_vec(&vec!["hello world"; 5000]).unwrap();
        let codec = Codec::new();
        let bytes = codec.encode_entry(&entry(&value));
        assert_eq!(bytes[0], 0);
        if cfg!(feature = "lz4") {
            assert!(
                bytes.len() < value.len() / 4,
                "compressed {} bytes",
                bytes.len()
            );
        }
        assert_eq!(codec.decode_entry(&bytes).unwrap(), entry(&value));
    }

    #[test]
    fn without_compression_large_json_stays_plain() {
        let value = serde_json::to_vec(&"x".repeat(4096)).unwrap();
        let codec = Codec::new().with_compression(Compression::None);
        let bytes = codec.encode_entry(&entry(&value));
        assert_eq!(bytes[0], b'{');
        assert_eq!(codec.decode_entry(&bytes).unwrap(), entry(&value));
    }

    #[cfg(feature = "zstd")]
    #[test]
    fn zstd_roundtrips_and_rejects_garbage() {
        let value = serde_json::to_vec(&vec!["hello world"; 5000]).unwrap();
        let codec = Codec::new().with_compression(Compression::Zstd(3));
        let bytes = codec.encode_entry(&entry(&value));
        assert_eq!(&bytes[..5], &[0x00, b'C', b'Z', 0x01, 0x02]);
        assert!(bytes.len() < value.len() / 10);
        assert_eq!(codec.decode_entry(&bytes).unwrap(), entry(&value));
        // Any codec decodes any algorithm it was built with.
        assert_eq!(Codec::new().decode_entry(&bytes).unwrap(), entry(&value));
        let mut corrupt = bytes.to_vec();
        corrupt.truncate(bytes.len() / 2);
        assert!(codec.decode_entry(&corrupt).unwrap_err().is_codec());
        let small = Codec::new().with_max_decoded_len(1000);
        assert!(small.decode_entry(&bytes).unwrap_err().is_codec());
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        let codec = Codec::new();
        let cases: &[&[u8]] = &[
            b"",
            b"hello",
            b"{\"name\":\"x\"}",
            b"{\"c\":1,\"f\":2,\"x\":3,\"v\":}",
            b"{\"c\":99999999999999999999999,\"f\":2,\"x\":3,\"v\":1}",
            b"\x00",
            b"\x00CZ",
            b"\x00CZ\x01",
            b"\x00CZ\x01\x09abc",
            b"\x00CZ\x01\x01\xff\xff\xff\xff",
            b"\x00CZ\x01\x01\x10\x00\x00\x00garbage",
            b"\x00CZ\x02\x00{}",
        ];
        for case in cases {
            let err = codec.decode_entry(case).unwrap_err();
            assert!(err.is_codec(), "{case:?} gave {err:?}");
        }
    }

    /// Random bytes and random mutations of valid encodings never panic the decoder (a cheap,
    /// deterministic property test; not coverage-guided fuzzing).
    #[test]
    fn mutated_and_random_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(7);
        #[allow(unused_mut, reason = "zstd builds add a codec")]
        let mut codecs = vec![Codec::new(), Codec::new().with_threshold(0)];
        #[cfg(feature = "zstd")]
        codecs.push(Codec::new().with_compression(Compression::Zstd(3)));
        let values: Vec<Vec<u8>> = vec![
            br#"{"a":[1,2,3],"b":"text"}"#.to_vec(),
            serde_json::to_vec(&"x".repeat(3000)).unwrap(),
            (0..=255u8).collect(),
        ];
        let mut seeds: Vec<Vec<u8>> = Vec::new();
        for codec in &codecs {
            for value in &values {
                seeds.push(codec.encode_entry(&entry(value)).to_vec());
            }
        }
        for _ in 0..20_000 {
            let mut bytes = if rng.bool() {
                seeds[rng.usize(..seeds.len())].clone()
            } else {
                (0..rng.usize(0..64)).map(|_| rng.u8(..)).collect()
            };
            for _ in 0..rng.usize(0..4) {
                if bytes.is_empty() {
                    break;
                }
                let i = rng.usize(..bytes.len());
                match rng.u8(0..3) {
                    0 => bytes[i] = rng.u8(..),
                    1 => bytes.truncate(i),
                    _ => bytes.insert(i, rng.u8(..)),
                }
            }
            for codec in &codecs {
                let _ = codec.decode_entry(&bytes);
            }
        }
    }

    #[test]
    fn size_limit_is_enforced() {
        let codec = Codec::new().with_threshold(0).with_max_decoded_len(100);
        let bytes = codec.encode_entry(&entry(&serde_json::to_vec(&"x".repeat(500)).unwrap()));
        assert!(codec.decode_entry(&bytes).unwrap_err().is_codec());
    }
}
