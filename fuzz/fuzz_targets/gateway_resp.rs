//! The gateway's RESP2 reply parser: any byte stream gives replies that round-trip, a need for more
//! bytes, or a protocol error, never a panic. The checks are in `upstash_gateway::fuzzing`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| upstash_gateway::fuzzing::resp(data));
