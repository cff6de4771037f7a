//! Shared code of keybound's fuzz targets.
//!
//! The checks live in `checks.rs` so that `core/tests/fuzz_regressions.rs` can `include!` the
//! very same code and replay every seed and regression input on stable Rust.

mod checks;

pub use checks::*;
