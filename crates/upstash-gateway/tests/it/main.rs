//! Integration tests of the gateway against a real `redis-server` started per test.
//!
//! One test binary (see the style guide): each module is an area of the protocol.

mod client; // a tiny raw HTTP/1.1 client, so tests control paths, methods and headers exactly
mod connections; // client connection limits: header-read and idle timeouts, the connection cap
mod faults; // latency, failure rate, outage: builder and admin endpoint
mod outage; // Redis killed or frozen under the gateway, and recovery
mod pool; // pooled Redis connections: idle expiry, closed by Redis, Redis restarted
mod probe; // direct looks at Redis; polling with a deadline
mod protocol; // body form, path form, pipeline, multi-exec, encodings, status codes
mod security; // tokens, refused and admin commands, request limits, body timeout, health; sync token
mod streaming; // SSE subscribe / psubscribe / monitor, and streams under load
