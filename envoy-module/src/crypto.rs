//! Signature verification with ring (BoringSSL-derived assembly for P-256 and RSA), behind
//! keybound-core's [`Verifier`] seam: the same inputs (JOSE-form signatures, keys as
//! keybound-core parsed and bounded them) and the same answers as [`RustCrypto`], faster.
//!
//! - ES256: `ECDSA_P256_SHA256_FIXED` (the JOSE `r || s` form), key `04 || x || y`.
//! - PS256 / RS256: `RSA_PSS_2048_8192_SHA256` / `RSA_PKCS1_2048_8192_SHA256` from the modulus
//!   and exponent (keybound-core already refuses keys outside 2048..=8192 bits).
//! - EdDSA stays with [`RustCrypto`] (`ed25519-dalek`'s `verify_strict`): ring's Ed25519 does not
//!   refuse small-order keys and non-canonical `R`, and the two adapters must accept exactly the
//!   same signatures.

use keybound_core::jwk::PublicKey;
use keybound_core::jws::{Alg, RustCrypto, Verifier};
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};

/// The module's verifier: ring for ES256, PS256 and RS256; [`RustCrypto`] for EdDSA.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ring;

impl Verifier for Ring {
    fn verify(&self, alg: Alg, key: &PublicKey, message: &[u8], sig: &[u8]) -> bool {
        match (alg, key) {
            (Alg::Es256, PublicKey::P256 { x, y }) => {
                let mut point = [0u8; 65];
                point[0] = 4;
                point[1..33].copy_from_slice(x);
                point[33..].copy_from_slice(y);
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point)
                    .verify(message, sig)
                    .is_ok()
            }
            (Alg::Ps256, PublicKey::Rsa { n, e }) => RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PSS_2048_8192_SHA256, message, sig)
                .is_ok(),
            (Alg::Rs256, PublicKey::Rsa { n, e }) => RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, sig)
                .is_ok(),
            _ => RustCrypto.verify(alg, key, message, sig),
        }
    }
}

/// The verifier a configuration chooses: `"verifier": "rust"` keeps keybound-core's pure Rust
/// ([`RustCrypto`]), anything else (`"auto"`, the default) is [`Ring`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// [`Ring`].
    Ring,
    /// [`RustCrypto`].
    Rust,
}

impl Choice {
    /// What the load-time log line says verifies ES256.
    pub fn describe(self) -> &'static str {
        match self {
            Choice::Ring => "ring (native)",
            Choice::Rust => "keybound-core (pure Rust)",
        }
    }
}

impl Verifier for Choice {
    fn verify(&self, alg: Alg, key: &PublicKey, message: &[u8], sig: &[u8]) -> bool {
        match self {
            Choice::Ring => Ring.verify(alg, key, message, sig),
            Choice::Rust => RustCrypto.verify(alg, key, message, sig),
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a failed step fails the test"
)]
mod tests {
    use super::*;
    use keybound_core::jws::{Ed25519Signer, P256Signer, Signer};

    /// Every answer of ring is RustCrypto's: good signatures pass, a flipped bit, another
    /// message, another key, a truncated signature and a wrong algorithm fail.
    fn agrees(signer: &dyn Signer, other: &PublicKey) {
        let message = b"header.payload";
        let sig = signer.sign(message).unwrap();
        let key = signer.public_key();
        let alg = signer.alg();
        assert!(Ring.verify(alg, key, message, &sig));
        assert!(RustCrypto.verify(alg, key, message, &sig));
        let mut flipped = sig.clone();
        flipped[5] ^= 1;
        let cases: [(Alg, &PublicKey, &[u8], &[u8]); 5] = [
            (alg, key, message, &flipped),
            (alg, key, b"header.payloaX", &sig),
            (alg, other, message, &sig),
            (alg, key, message, &sig[..sig.len() - 1]),
            (Alg::Rs256, key, message, &sig),
        ];
        for (a, k, m, s) in cases {
            assert!(!Ring.verify(a, k, m, s), "{a:?}");
            assert_eq!(Ring.verify(a, k, m, s), RustCrypto.verify(a, k, m, s));
        }
    }

    #[test]
    fn ring_agrees_with_rustcrypto_on_es256_and_eddsa() {
        let other = P256Signer::from_bytes(&[9; 32]).unwrap().public_key().clone();
        agrees(&P256Signer::from_bytes(&[7; 32]).unwrap(), &other);
        let ed_other = Ed25519Signer::from_seed(&[9; 32]).public_key().clone();
        agrees(&Ed25519Signer::from_seed(&[7; 32]), &ed_other);
    }

    /// The interop fixtures' tokens and proofs, signed by jwcrypto (ES256, PS256, EdDSA): ring
    /// accepts each, refuses it with a bit flipped, and RS256 over a PS256 signature.
    #[test]
    fn ring_verifies_jwcrypto_signatures_as_rustcrypto_does() {
        use keybound_core::jwk::{Jwk, Jwks};
        use keybound_core::{Part, b64};
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../core/tests/interop/fixtures.json")).unwrap();
        let mut algs = Vec::new();
        for case in doc["cases"].as_array().unwrap() {
            let alg = Alg::parse(case["alg"].as_str().unwrap()).unwrap();
            algs.push(alg);
            let issuer = Jwks::from_json(case["issuer_jwks"].to_string().as_bytes(), Part::AccessToken).unwrap();
            let holder = Jwk::from_json(case["dpop_jwk"].to_string().as_bytes(), Part::Proof).unwrap();
            for (jws, key) in [
                (case["token"].as_str().unwrap(), issuer.keys()[0].key()),
                (case["proof"].as_str().unwrap(), holder.key()),
            ] {
                let (input, sig) = jws.rsplit_once('.').unwrap();
                let sig = b64::decode(sig).unwrap();
                assert!(Ring.verify(alg, key, input.as_bytes(), &sig), "{alg:?}");
                assert!(RustCrypto.verify(alg, key, input.as_bytes(), &sig), "{alg:?}");
                let mut bad = sig.clone();
                bad[10] ^= 1;
                assert!(!Ring.verify(alg, key, input.as_bytes(), &bad), "{alg:?}");
                if alg == Alg::Ps256 {
                    assert!(!Ring.verify(Alg::Rs256, key, input.as_bytes(), &sig));
                    assert!(!RustCrypto.verify(Alg::Rs256, key, input.as_bytes(), &sig));
                }
            }
        }
        assert!(algs.contains(&Alg::Ps256) && algs.contains(&Alg::Es256), "{algs:?}");
    }
}
