//! Fuzzes DPoP `htu` normalisation.
//!
//! Input: arbitrary bytes; if UTF-8, `Htu::parse`, whose result must be a fixed point
//! (`Htu::parse(h.as_str()) == h`), and `Htu::from_parts` on the input split at the first `://`,
//! which must agree with `parse`. See `keybound_fuzz::check_htu`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keybound_fuzz::check_htu(data));
