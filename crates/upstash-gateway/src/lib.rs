//! An Upstash-compatible REST server over a real `redis-server` (not built yet: see issue 3).
