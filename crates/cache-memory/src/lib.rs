//! In-process `cache-core` backend on moka (in progress).
