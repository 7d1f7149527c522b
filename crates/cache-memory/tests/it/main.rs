//! Integration tests of `cache-memory`: the backend conformance suite, the byte capacity, stamp
//! pruning, and the backend as L1 of a tiered cache.

mod conformance;
mod memory;
