//! The gateway's request parsers (JSON command, JSON pipeline, path form): any request gives
//! arguments or a 400 text, never a panic. The checks are in `upstash_gateway::fuzzing`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| upstash_gateway::fuzzing::request(data));
