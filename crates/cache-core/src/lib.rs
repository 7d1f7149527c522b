//! Cache traits, keys, tags, TTL policy, codec and the tiered cache (in progress).
