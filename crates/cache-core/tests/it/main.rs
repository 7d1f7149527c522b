//! Integration tests of `cache-core`: the conformance suite on the reference backend, the typed
//! facade (`get_or_load`), the tiered cache under injected faults, and tiered caches of several
//! instances on one backplane.

mod backplane;
mod conformance;
mod facade;
mod tiered;
