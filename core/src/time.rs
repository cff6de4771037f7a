//! Time as keybound-core sees it: a number the caller passes in.
//!
//! Core never reads a clock. Every function that depends on time takes `now` as Unix seconds.

use serde::{Deserialize, Deserializer};

/// Seconds since the Unix epoch, as passed in by the caller.
pub type UnixTime = u64;

/// A JWT NumericDate ([RFC 7519 §2]): a JSON number of seconds, possibly fractional (the
/// fraction is dropped). Strings, booleans and non-finite values are refused.
///
/// [RFC 7519 §2]: https://www.rfc-editor.org/rfc/rfc7519#section-2
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NumericDate(pub(crate) i64);

impl<'de> Deserialize<'de> for NumericDate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = serde_json::Number::deserialize(d)?;
        if let Some(i) = n.as_i64() {
            return Ok(NumericDate(i));
        }
        match n.as_f64() {
            Some(f) if f.is_finite() && f.abs() < 1e15 => Ok(NumericDate(f as i64)),
            _ => Err(serde::de::Error::custom("NumericDate out of range")),
        }
    }
}
