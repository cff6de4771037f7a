//! Fuzzes `x-forwarded-client-cert` parsing.
//!
//! Input: arbitrary bytes; if UTF-8, `Xfcc::parse`, then `select` with `XfccPolicy::default()` and
//! the element's `thumbprint()`. Parsed headers must select consistently and re-parse to the same
//! elements when written back quoted. See `keybound_fuzz::check_xfcc`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keybound_fuzz::check_xfcc(data));
