//! The Upstash REST reply decoder (`cache-upstash`): any response body gives a value or a typed
//! `UnexpectedResponse` error, never a panic. The checks are in `cache_upstash::fuzzing`.
#![no_main]

libfuzzer_sys::fuzz_target!(|body: &[u8]| cache_upstash::fuzzing::replies(body));
