//! Integration tests: the built `cachectl` binary, run with `assert_cmd` against a real
//! `redis-server` behind an in-process `upstash-gateway` (`TestGateway`), in a temporary working
//! directory and with the Upstash variables of the developer's environment removed.

// The fixtures (Redis, gateway, a real chat-api, an HTTP stub) and the command builder.
mod support;

// ping, get, set, del, ttl, scan, latency.
mod keys;
// invalidate and flush.
mod admin;
// doctor passing, failing with Redis down, and without configuration.
mod doctor;
// stats from the backend and from a real chat-api's /stats, refusals, --watch, broken pipes.
mod stats;
// configuration errors, unreachable and silent servers, bad tokens, help and usage.
mod failures;
