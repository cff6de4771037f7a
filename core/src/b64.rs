//! Strict base64url without padding ([RFC 7515 §2], [RFC 4648 §5]).
//!
//! Decoding refuses padding (`=`), the standard alphabet (`+`, `/`), whitespace, a length of
//! 1 mod 4, and non-canonical encodings (trailing bits that are not zero), so every byte string
//! has exactly one accepted encoding. That makes "any single-byte change fails" a property of the
//! format, not only of the signature.
//!
//! [RFC 7515 §2]: https://www.rfc-editor.org/rfc/rfc7515#section-2
//! [RFC 4648 §5]: https://www.rfc-editor.org/rfc/rfc4648#section-5

use alloc::string::String;
use alloc::vec::Vec;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Why a base64url string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError;

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("invalid base64url")
    }
}

impl core::error::Error for DecodeError {}

/// Encodes bytes as base64url without padding.
pub fn encode(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    let sym = |v: u32| char::from(ALPHABET.get((v & 63) as usize).copied().unwrap_or(b'A'));
    let mut chunks = input.chunks_exact(3);
    for c in &mut chunks {
        if let [a, b, c] = *c {
            let n = (u32::from(a) << 16) | (u32::from(b) << 8) | u32::from(c);
            out.push(sym(n >> 18));
            out.push(sym(n >> 12));
            out.push(sym(n >> 6));
            out.push(sym(n));
        }
    }
    match *chunks.remainder() {
        [a] => {
            let n = u32::from(a) << 16;
            out.push(sym(n >> 18));
            out.push(sym(n >> 12));
        }
        [a, b] => {
            let n = (u32::from(a) << 16) | (u32::from(b) << 8);
            out.push(sym(n >> 18));
            out.push(sym(n >> 12));
            out.push(sym(n >> 6));
        }
        _ => {}
    }
    out
}

/// Marks a byte outside the alphabet in [`DECODE`].
const INVALID: u8 = 0xff;

/// Each byte's 6-bit value, or [`INVALID`].
#[allow(
    clippy::indexing_slicing,
    reason = "evaluated at compile time: an index out of range fails the build"
)]
const DECODE: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < 64 {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// The 6-bit value of a base64url symbol, or a value with bit 7 set if `c` is not one.
fn lookup(c: u8) -> u32 {
    u32::from(DECODE.get(usize::from(c)).copied().unwrap_or(INVALID))
}

fn value(c: u8) -> Result<u32, DecodeError> {
    match lookup(c) {
        v if v & 0x80 != 0 => Err(DecodeError),
        v => Ok(v),
    }
}

/// Decodes strict base64url without padding.
///
/// # Errors
/// [`DecodeError`] for any character outside the URL-safe alphabet (including `=` and
/// whitespace), a length of 1 mod 4, or non-zero trailing bits.
pub fn decode(input: &str) -> Result<Vec<u8>, DecodeError> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3 + 2);
    let mut chunks = bytes.chunks_exact(4);
    for c in &mut chunks {
        if let [a, b, c, d] = *c {
            let (a, b, c, d) = (lookup(a), lookup(b), lookup(c), lookup(d));
            if (a | b | c | d) & 0x80 != 0 {
                return Err(DecodeError);
            }
            let n = (a << 18) | (b << 12) | (c << 6) | d;
            out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]);
        }
    }
    match *chunks.remainder() {
        [] => {}
        [a, b] => {
            let n = (value(a)? << 18) | (value(b)? << 12);
            if n & 0xffff != 0 {
                return Err(DecodeError);
            }
            out.push((n >> 16) as u8);
        }
        [a, b, c] => {
            let n = (value(a)? << 18) | (value(b)? << 12) | (value(c)? << 6);
            if n & 0xff != 0 {
                return Err(DecodeError);
            }
            out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8]);
        }
        _ => return Err(DecodeError),
    }
    Ok(out)
}

/// Decodes the standard base64 alphabet with optional padding and ignoring ASCII whitespace, as
/// found in PEM bodies ([RFC 7468]). Only for PEM; JOSE uses [`decode`].
///
/// # Errors
/// [`DecodeError`] for characters outside the standard alphabet or a bad length.
///
/// [RFC 7468]: https://www.rfc-editor.org/rfc/rfc7468
pub fn decode_pem_body(input: &str) -> Result<Vec<u8>, DecodeError> {
    let mut cleaned = String::with_capacity(input.len());
    let mut padding = 0usize;
    for c in input.chars() {
        match c {
            ' ' | '\t' | '\r' | '\n' => {}
            '=' => padding += 1,
            '+' if padding == 0 => cleaned.push('-'),
            '/' if padding == 0 => cleaned.push('_'),
            '-' | '_' => return Err(DecodeError),
            c if padding == 0 => cleaned.push(c),
            _ => return Err(DecodeError),
        }
    }
    if padding > 2 || (padding > 0 && !(cleaned.len() + padding).is_multiple_of(4)) {
        return Err(DecodeError);
    }
    decode(&cleaned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors_without_padding() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode(raw.as_bytes()), enc);
            assert_eq!(decode(enc).unwrap(), raw.as_bytes());
        }
        assert_eq!(encode(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn refuses_padding_standard_alphabet_whitespace_and_bad_length() {
        for bad in [
            "Zg==", "Zm8=", "+/8", "/w", "Zm9v Yg", "Zm9v\nYg", "Z", "Zm9vY", "Zm9v!",
        ] {
            assert_eq!(decode(bad), Err(DecodeError), "{bad:?}");
        }
    }

    #[test]
    fn refuses_non_canonical_trailing_bits() {
        assert_eq!(decode("Zg").unwrap(), b"f");
        assert_eq!(decode("Zh"), Err(DecodeError));
        assert_eq!(decode("Zm9"), Err(DecodeError));
    }

    #[test]
    fn pem_body_accepts_standard_alphabet_with_padding_and_newlines() {
        assert_eq!(decode_pem_body("Zm9v\nYmE=\n").unwrap(), b"fooba");
        assert_eq!(decode_pem_body("+/8=").unwrap(), [0xfb, 0xff]);
        assert!(decode_pem_body("-_8").is_err());
        assert!(decode_pem_body("Zg=a").is_err());
        assert!(decode_pem_body("Zg===").is_err());
    }
}
