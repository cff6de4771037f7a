//! PKCE with S256 only ([RFC 7636]); `plain` is refused, as FAPI 2.0 requires.
//!
//! [RFC 7636]: https://www.rfc-editor.org/rfc/rfc7636

use alloc::string::String;

use sha2::{Digest, Sha256};

use crate::b64;
use crate::error::{Error, Result};

/// A fresh `code_verifier` from 32 bytes of the caller's randomness: 43 base64url characters
/// (256 bits), the length RFC 7636 §4.1 recommends.
pub fn verifier_from_random(random: &[u8; 32]) -> String {
    b64::encode(random)
}

fn well_formed(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// `code_challenge = base64url(SHA-256(code_verifier))` (RFC 7636 §4.2, S256).
///
/// # Errors
/// [`Error::PkceMalformed`] if the verifier is not 43-128 unreserved characters.
pub fn challenge_s256(verifier: &str) -> Result<String> {
    if !well_formed(verifier) {
        return Err(Error::PkceMalformed);
    }
    Ok(b64::encode(&Sha256::digest(verifier.as_bytes())))
}

/// Checks the `code_challenge_method` and `code_challenge` of an authorization request.
///
/// # Errors
/// [`Error::PkceMethodNotAllowed`] for `plain`, a missing or any other method;
/// [`Error::PkceMalformed`] unless the challenge is 43 base64url characters (a SHA-256).
pub fn check_challenge(method: Option<&str>, challenge: &str) -> Result<()> {
    if method != Some("S256") {
        return Err(Error::PkceMethodNotAllowed);
    }
    match b64::decode(challenge) {
        Ok(raw) if raw.len() == 32 => Ok(()),
        _ => Err(Error::PkceMalformed),
    }
}

/// Checks a `code_verifier` against the stored S256 `code_challenge` (RFC 7636 §4.6), in
/// constant time.
///
/// # Errors
/// [`Error::PkceMalformed`] for a malformed verifier; [`Error::PkceMismatch`] (`invalid_grant`) if
/// it does not match.
pub fn verify_s256(verifier: &str, challenge: &str) -> Result<()> {
    let computed = challenge_s256(verifier)?;
    if subtle::ConstantTimeEq::ct_eq(computed.as_bytes(), challenge.as_bytes()).into() {
        Ok(())
    } else {
        Err(Error::PkceMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7636 Appendix B.
    #[test]
    fn rfc7636_appendix_b() {
        let random: [u8; 32] = [
            116, 24, 223, 180, 151, 153, 224, 37, 79, 250, 96, 125, 216, 173, 187, 186, 22, 212, 37, 77, 105, 214, 191,
            240, 91, 88, 5, 88, 83, 132, 141, 121,
        ];
        let verifier = verifier_from_random(&random);
        assert_eq!(verifier, "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        let challenge = challenge_s256(&verifier).unwrap();
        assert_eq!(challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        check_challenge(Some("S256"), &challenge).unwrap();
        verify_s256(&verifier, &challenge).unwrap();
    }

    #[test]
    fn plain_missing_and_unknown_methods_are_refused() {
        let c = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert_eq!(check_challenge(Some("plain"), c), Err(Error::PkceMethodNotAllowed));
        assert_eq!(check_challenge(None, c), Err(Error::PkceMethodNotAllowed));
        assert_eq!(check_challenge(Some("s256"), c), Err(Error::PkceMethodNotAllowed));
        assert_eq!(check_challenge(Some("S256"), "short"), Err(Error::PkceMalformed));
    }

    #[test]
    fn wrong_or_malformed_verifier_is_refused() {
        let c = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert_eq!(
            verify_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK", c),
            Err(Error::PkceMismatch)
        );
        assert_eq!(verify_s256("too-short", c), Err(Error::PkceMalformed));
        assert_eq!(verify_s256(&"a".repeat(129), c), Err(Error::PkceMalformed));
        assert_eq!(verify_s256(&"a b".repeat(20), c), Err(Error::PkceMalformed));
        assert_eq!(Error::PkceMismatch.code().map(|c| c.as_str()), Some("invalid_grant"));
    }
}
