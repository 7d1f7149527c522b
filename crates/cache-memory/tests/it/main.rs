//! Integration tests of `cache-memory`: the backend conformance suite, the byte capacity, stamp
//! pruning, the backend as L1 of a tiered cache, and what a hit allocates.

mod alloc;
mod conformance;
mod memory;
