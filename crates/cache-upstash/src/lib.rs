//! Upstash Redis REST client and a `cache-core` backend on it (not built yet: see issue 4).
