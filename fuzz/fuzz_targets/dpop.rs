//! Fuzzes DPoP proof verification.
//!
//! Input: arbitrary bytes; if UTF-8, the proof given to `dpop::verify_proof` for
//! `GET https://rs.example.com/r` with access token `tok`, the default policy, no nonce,
//! `now` = 1_700_000_000 and `RustCrypto`. Errors must map to `invalid_dpop_proof`; an accepted
//! proof must be refused for another method, URI, token or time. Seeds (`fuzz/seeds/dpop`, made by
//! `make_seeds`) are real signed proofs, so mutations reach the claim checks. See
//! `keybound_fuzz::check_dpop`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keybound_fuzz::check_dpop(data));
