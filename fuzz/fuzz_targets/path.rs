//! Fuzzes the canonical request path that the gateway's rules match.
//!
//! Input: arbitrary bytes; if UTF-8, `CanonicalPath::parse`, whose result must be canonical and
//! a fixed point, mean to upstreams what the raw path means (so it never widens a prefix match),
//! and be the path of the `htu` built from the same request. See `keybound_fuzz::check_path`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keybound_fuzz::check_path(data));
