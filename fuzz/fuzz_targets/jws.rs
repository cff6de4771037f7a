//! Fuzzes compact JWS parsing and verification.
//!
//! Input: arbitrary bytes; if UTF-8, `Jws::parse(s, Part::Other, ES256+PS256+EdDSA+RS256)`. A JWS
//! that parses must re-encode to exactly its input, and is verified with `RustCrypto` against its
//! header `jwk` (if any) and a fixed key set. See `keybound_fuzz::check_jws`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keybound_fuzz::check_jws(data));
