//! Test helpers shared by the filter's native tests.

/// Envoy's shared-data semantics in memory.
pub use keybound_filter::replay::MemoryStore as Store;
