//! Codec cost and compression ratio on chat-like JSON (a page of messages) at 1, 16 and 256 KiB,
//! for no compression, LZ4 and Zstandard: the measurement behind the default algorithm.

#![allow(
    missing_docs,
    clippy::print_stderr,
    reason = "a benchmark binary that reports compressed sizes"
)]

use std::hint::black_box;

use bytes::Bytes;
use cache_core::{Codec, Compression, Entry, Timestamp};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// A JSON page of chat messages of about `target` bytes.
fn page(target: usize) -> Bytes {
    let words = [
        "hello", "world", "ship", "it", "cache", "redis", "lunch?", "👍", "deploy", "tomorrow",
        "review", "the", "PR", "thanks", "on", "my", "way",
    ];
    let mut out = String::from("[");
    let mut i = 0u64;
    while out.len() < target {
        let content: Vec<&str> = (0..(5 + i % 17))
            .map(|j| words[((i * 7 + j * 13) % words.len() as u64) as usize])
            .collect();
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            r#"{{"id":"01JD{:022}","channel_id":"01JC{:022}","author":{{"id":"01JU{:022}","name":"user{}"}},"content":"{}","created_at":"2026-11-25T21:{:02}:{:02}Z","edited_at":null,"reactions":[]}}"#,
            i * 7919,
            42,
            i % 13,
            i % 13,
            content.join(" "),
            i % 60,
            (i * 7) % 60
        ));
        i += 1;
    }
    out.push(']');
    Bytes::from(out)
}

fn entry(value: Bytes) -> Entry {
    let t = Timestamp::from_micros(1_764_000_000_000_000);
    Entry::new(value, t, t, t)
}

fn codecs() -> Vec<(&'static str, Codec)> {
    vec![
        ("none", Codec::new().with_compression(Compression::None)),
        ("lz4", Codec::new().with_compression(Compression::Lz4)),
        ("zstd1", Codec::new().with_compression(Compression::Zstd(1))),
        ("zstd3", Codec::new().with_compression(Compression::Zstd(3))),
    ]
}

fn bench_codec(c: &mut Criterion) {
    for size in [1024, 16 * 1024, 256 * 1024] {
        let entry = entry(page(size));
        let mut group = c.benchmark_group(format!("codec/{}KiB", size / 1024));
        group.throughput(Throughput::Bytes(entry.value().len() as u64));
        for (name, codec) in codecs() {
            let encoded = codec.encode_entry(&entry);
            eprintln!(
                "codec/{}KiB/{name}: {} bytes -> {} bytes ({:.1}%)",
                size / 1024,
                entry.value().len(),
                encoded.len(),
                100.0 * encoded.len() as f64 / entry.value().len() as f64
            );
            group.bench_with_input(BenchmarkId::new("encode", name), &entry, |b, e| {
                b.iter(|| codec.encode_entry(black_box(e)))
            });
            group.bench_with_input(BenchmarkId::new("decode", name), &encoded, |b, bytes| {
                b.iter(|| codec.decode_entry(black_box(bytes)).expect("decodes"))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench_codec);
criterion_main!(benches);
