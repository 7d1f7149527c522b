//! The cache entry codec (`cache-core`, wire format v1).
//!
//! - Decoding any bytes gives a typed codec error or an entry, and every entry decoded survives
//!   re-encoding with every compression unchanged.
//! - Any value with any times survives encoding and decoding unchanged.
#![no_main]

use bytes::Bytes;
use cache_core::{Codec, Compression, Entry, Timestamp};

fn codecs() -> [Codec; 3] {
    // A small decoded-size limit, so a claimed length cannot make the fuzzer allocate gigabytes.
    [
        Codec::new().with_compression(Compression::None),
        Codec::new().with_compression(Compression::Lz4),
        Codec::new().with_compression(Compression::Zstd(1)),
    ]
    .map(|codec| codec.with_threshold(64).with_max_decoded_len(1 << 20))
}

fn assert_same(a: &Entry, b: &Entry) {
    assert_eq!(a.value(), b.value());
    assert_eq!(a.created_at(), b.created_at());
    assert_eq!(a.fresh_until(), b.fresh_until());
    assert_eq!(a.expires_at(), b.expires_at());
}

fn round_trip(codecs: &[Codec], entry: &Entry) {
    for codec in codecs {
        let bytes = codec.encode_entry(entry);
        let again = codec
            .decode_entry(&bytes)
            .unwrap_or_else(|err| panic!("{codec:?} cannot decode what it encoded: {err}"));
        assert_same(entry, &again);
    }
}

fn time(bytes: &[u8]) -> Timestamp {
    Timestamp::from_micros(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let codecs = codecs();
    for codec in &codecs {
        match codec.decode_entry(data) {
            Ok(entry) => round_trip(&codecs, &entry),
            Err(err) => assert!(err.is_codec(), "{err:?}"),
        }
    }
    if let Some((times, value)) = data.split_first_chunk::<24>() {
        let entry = Entry::new(
            Bytes::copy_from_slice(value),
            time(&times[..8]),
            time(&times[8..16]),
            time(&times[16..]),
        );
        round_trip(&codecs, &entry);
    }
});
