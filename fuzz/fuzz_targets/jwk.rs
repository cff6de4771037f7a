//! Fuzzes JWK and JWKS parsing.
//!
//! Input: arbitrary bytes to `Jwk::from_json` and `Jwks::from_json`. Every key that parses must
//! survive `to_json()` -> `Jwk::from_json` unchanged, with the same RFC 7638 thumbprint. See
//! `keybound_fuzz::check_jwk`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keybound_fuzz::check_jwk(data));
