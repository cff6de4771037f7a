//! Fuzzes the PSD2 QCStatements parser (ETSI TS 119 495).
//!
//! Input: arbitrary bytes, parsed as a DER certificate (`qc::psd2_from_certificate`) and as a
//! QCStatements extension value (`qc::parse_qc_statements`). See `keybound_fuzz::check_qc`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keybound_fuzz::check_qc(data));
