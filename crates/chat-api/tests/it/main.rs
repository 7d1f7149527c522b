//! chat-api's one integration-test binary.
//!
//! Most tests run the router in process (`tower::ServiceExt::oneshot`); the WebSocket tests use a
//! real listener on a free port. Database tests run on SQLite and on PostgreSQL
//! (`TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`; each test creates
//! and drops its own database; unreachable PostgreSQL is a loud skip, or a failure under `CI=true`).

// Test helpers print loud skip notices.
#![allow(clippy::print_stderr)]

mod support;

// Several instances on one database, one L2 and one backplane (in process and over Upstash).
mod backplane;
// Endpoint behaviour: success and validation, per endpoint.
mod api;
// Abusive clients: bad-token floods limited before lookups, look-alike user names.
mod abuse;
// R3: SIGKILL under write load, restart, nothing acknowledged is lost or duplicated.
mod crash;
// The access matrix: route × (no token, bad token, non-member, member, author).
mod access;
// Query-counting cache tests: repeated reads, read-your-writes, stampede (P7), ETag.
mod caching;
// Hostile input: 4xx with the error shape, never 5xx.
mod hostile;
// /health, /stats and /metrics agreeing, OpenAPI drift, request ids, rate limits.
mod ops;
// Upstash and tiered backends behind upstash-gateway, Redis outages (R1).
mod upstash;
// R6: secrets never in logs, error bodies or /metrics.
mod secrets;
// The WebSocket session.
mod ws;
// WebSocket limits: frame sizes, sessions per user, frame rate, slow readers.
mod ws_limits;
// Connection limits of the real binary: header-read and idle timeouts, the connection cap.
mod connections;
// The web pages' headers and the dashboard's stream.
mod web;
