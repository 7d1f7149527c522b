//! The chat HTTP and WebSocket server on the tiered cache (not built yet: see issue 5).
