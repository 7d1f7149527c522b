//! Integration tests of `cache-core`: the conformance suite on the reference backend, the typed
//! facade (`get_or_load`) and the tiered cache under injected faults.

mod conformance;
mod facade;
mod tiered;
