//! Encodings for Envoy's `verify_signature` foreign function (BoringSSL), so ES256 signatures
//! are checked by the host's native code instead of pure Rust inside the wasm VM.
//!
//! The function takes a protobuf `VerifySignatureArguments { hash_function = 1 (string),
//! public_key = 2 (bytes, SubjectPublicKeyInfo DER), signature = 3 (bytes), text = 4 (bytes) }`
//! and answers `VerifySignatureResult { result = 1 (bool), error = 2 (string) }`. BoringSSL wants
//! an ECDSA signature in DER (`SEQUENCE { INTEGER r, INTEGER s }`), while JOSE carries `r || s`
//! (RFC 7518 §3.4), so [`es256_der`] converts.
//!
//! Everything here is a pure function (tested natively); `host.rs` makes the call and, at
//! configure time, checks with a known-good and a known-bad signature that the host really has
//! the function before trusting it.

/// The fixed DER prefix of a P-256 `SubjectPublicKeyInfo` (id-ecPublicKey, prime256v1,
/// uncompressed point in a 66-byte BIT STRING).
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The DER `SubjectPublicKeyInfo` of a P-256 key given by its affine coordinates.
pub fn p256_spki(x: &[u8; 32], y: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(91);
    out.extend_from_slice(&P256_SPKI_PREFIX);
    out.push(0x04);
    out.extend_from_slice(x);
    out.extend_from_slice(y);
    out
}

/// A JOSE ES256 signature (`r || s`, 64 bytes) as DER; `None` if it is not 64 bytes.
pub fn es256_der(jose: &[u8]) -> Option<Vec<u8>> {
    let (r, s) = jose.split_at_checked(32)?;
    if s.len() != 32 {
        return None;
    }
    let (r, s) = (der_uint(r), der_uint(s));
    // Each INTEGER is at most 2 + 33 bytes, so the sequence length fits in one byte.
    let len = u8::try_from(r.len() + s.len()).ok()?;
    let mut out = Vec::with_capacity(2 + usize::from(len));
    out.push(0x30);
    out.push(len);
    out.extend_from_slice(&r);
    out.extend_from_slice(&s);
    Some(out)
}

/// A DER INTEGER for an unsigned big-endian number: minimal, with a leading zero if the top bit
/// is set.
fn der_uint(n: &[u8]) -> Vec<u8> {
    let first = n.iter().position(|&b| b != 0).unwrap_or(n.len().saturating_sub(1));
    let digits = n.get(first..).unwrap_or(&[0]);
    let pad = digits.first().is_some_and(|&b| b & 0x80 != 0);
    let len = digits.len() + usize::from(pad);
    let mut out = Vec::with_capacity(2 + len);
    out.push(0x02);
    // len <= 33 for a 32-byte input.
    out.push(u8::try_from(len).unwrap_or(0));
    if pad {
        out.push(0);
    }
    out.extend_from_slice(digits);
    out
}

/// The `verify_signature` arguments for an ES256 signature (JOSE `r || s`) over `message` by the
/// P-256 key `(x, y)`; `None` if the signature is not 64 bytes.
pub fn es256_verify_args(x: &[u8; 32], y: &[u8; 32], message: &[u8], jose: &[u8]) -> Option<Vec<u8>> {
    Some(verify_args(&p256_spki(x, y), &es256_der(jose)?, message))
}

/// The serialized `VerifySignatureArguments` for a SHA-256 signature check.
pub fn verify_args(spki_der: &[u8], signature: &[u8], text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(spki_der.len() + signature.len() + text.len() + 24);
    field(&mut out, 1, b"sha256");
    field(&mut out, 2, spki_der);
    field(&mut out, 3, signature);
    field(&mut out, 4, text);
    out
}

/// One length-delimited protobuf field (wire type 2).
fn field(out: &mut Vec<u8>, number: u8, bytes: &[u8]) {
    out.push(number << 3 | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Whether a serialized `VerifySignatureResult` says the signature is valid. Anything that does
/// not parse is `false`.
pub fn result_is_valid(bytes: &[u8]) -> bool {
    let mut pos = 0;
    let mut valid = false;
    while pos < bytes.len() {
        let Some(key) = read_varint(bytes, &mut pos) else {
            return false;
        };
        match key & 7 {
            0 => {
                let Some(v) = read_varint(bytes, &mut pos) else {
                    return false;
                };
                if key >> 3 == 1 {
                    valid = v == 1;
                }
            }
            2 => {
                let Some(len) = read_varint(bytes, &mut pos).and_then(|l| usize::try_from(l).ok()) else {
                    return false;
                };
                pos = match pos.checked_add(len) {
                    Some(end) if end <= bytes.len() => end,
                    _ => return false,
                };
            }
            _ => return false,
        }
    }
    valid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_integers_are_minimal_and_positive() {
        let mut sig = [0u8; 64];
        sig[31] = 1; // r = 1
        sig[32] = 0x80; // s has its top bit set: needs a leading zero
        let der = es256_der(&sig).unwrap();
        assert_eq!(&der[..5], &[0x30, 3 + 35, 0x02, 0x01, 0x01]);
        assert_eq!(&der[5..8], &[0x02, 33, 0x00]);
        assert_eq!(der[8], 0x80);
        assert_eq!(der.len(), 2 + 3 + 35);
        assert!(es256_der(&[0; 63]).is_none());
        assert!(es256_der(&[0; 65]).is_none());
        // r = 0 is still a well-formed INTEGER (BoringSSL then refuses the signature).
        assert_eq!(&es256_der(&[0; 64]).unwrap(), &[0x30, 6, 2, 1, 0, 2, 1, 0]);
    }

    #[test]
    fn der_matches_an_independent_encoder() {
        use p256::ecdsa::{DerSignature, Signature, SigningKey, signature::Signer};
        let key = SigningKey::from_slice(&[7u8; 32]).unwrap();
        for msg in [&b"a"[..], b"bb", b"ccc", b"dddd", b"eeeee", b"ffffff", b"ggggggg"] {
            let sig: Signature = key.sign(msg);
            let der: DerSignature = sig.to_der();
            assert_eq!(es256_der(&sig.to_bytes()).unwrap(), der.as_bytes(), "{msg:?}");
        }
    }

    #[test]
    fn spki_is_what_an_independent_encoder_writes() {
        use p256::pkcs8::EncodePublicKey;
        let key = p256::SecretKey::from_slice(&[9u8; 32]).unwrap().public_key();
        let sec1 = key.to_sec1_bytes();
        assert_eq!((sec1.len(), sec1[0]), (65, 4), "uncompressed point");
        let x: [u8; 32] = sec1[1..33].try_into().unwrap();
        let y: [u8; 32] = sec1[33..].try_into().unwrap();
        let der = key.to_public_key_der().unwrap();
        assert_eq!(p256_spki(&x, &y), der.as_bytes());
    }

    #[test]
    fn arguments_and_results_round_trip_the_protobuf_wire_format() {
        let args = verify_args(&[1; 200], &[2; 3], b"hi");
        assert_eq!(&args[..8], &[0x0a, 6, b's', b'h', b'a', b'2', b'5', b'6']);
        assert_eq!(&args[8..11], &[0x12, 0xc8, 0x01]); // 200 as a two-byte varint
        assert_eq!(&args[211..], &[0x1a, 3, 2, 2, 2, 0x22, 2, b'h', b'i']);
        assert!(result_is_valid(&[0x08, 0x01]));
        assert!(!result_is_valid(&[0x08, 0x00, 0x12, 0x03, b'b', b'a', b'd']));
        assert!(result_is_valid(&[0x12, 0x00, 0x08, 0x01]));
        assert!(!result_is_valid(&[]));
        assert!(!result_is_valid(&[0x08]));
        assert!(!result_is_valid(&[0x12, 0x05, b'x']));
        assert!(!result_is_valid(&[0x0d, 1, 0, 0, 0]));
    }

    #[test]
    fn es256_arguments_carry_the_spki_key_the_der_signature_and_the_message() {
        let (x, y, sig) = ([3; 32], [4; 32], [0x80; 64]);
        assert_eq!(
            es256_verify_args(&x, &y, b"msg", &sig),
            Some(verify_args(&p256_spki(&x, &y), &es256_der(&sig).unwrap(), b"msg"))
        );
        assert_eq!(es256_verify_args(&x, &y, b"msg", &sig[..63]), None);
    }
}
