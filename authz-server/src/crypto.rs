//! Signature verification and ES256 signing with `ring` (the crypto the server already links for
//! TLS), behind keybound-core's [`Verifier`] and [`Signer`] traits: core decides *what* is
//! checked, this module only does the arithmetic, natively and several times faster than the
//! portable pure-Rust code (P-256 was ~78% of the token endpoint's CPU before; see BENCHMARKS.md).
//!
//! Every algorithm core accepts is covered: ES256 (JOSE `r || s` is ring's `FIXED` format), PS256
//! and RS256 (2048 to 8192 bits, as core's JWK parser allows), EdDSA (Ed25519).

use std::sync::Arc;

use keybound_core::jwk::PublicKey;
use keybound_core::jws::{Alg, P256Signer, SignError, Signer, Verifier};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaPublicKeyComponents, UnparsedPublicKey};

/// keybound-core's [`Verifier`] on `ring`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ring;

impl Verifier for Ring {
    fn verify(&self, alg: Alg, key: &PublicKey, message: &[u8], sig: &[u8]) -> bool {
        match (alg, key) {
            (Alg::Es256, PublicKey::P256 { x, y }) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, uncompressed(x, y))
                    .verify(message, sig)
                    .is_ok()
            }
            (Alg::Ps256 | Alg::Rs256, PublicKey::Rsa { n, e }) => {
                let params = if alg == Alg::Ps256 {
                    &signature::RSA_PSS_2048_8192_SHA256
                } else {
                    &signature::RSA_PKCS1_2048_8192_SHA256
                };
                RsaPublicKeyComponents { n: &n[..], e: &e[..] }
                    .verify(params, message, sig)
                    .is_ok()
            }
            (Alg::EdDsa, PublicKey::Ed25519 { x }) => UnparsedPublicKey::new(&signature::ED25519, x)
                .verify(message, sig)
                .is_ok(),
            _ => false,
        }
    }
}

/// The SEC 1 uncompressed encoding of a P-256 point.
fn uncompressed(x: &[u8; 32], y: &[u8; 32]) -> Vec<u8> {
    let mut point = Vec::with_capacity(65);
    point.push(4);
    point.extend_from_slice(x);
    point.extend_from_slice(y);
    point
}

/// An ES256 signing key on `ring` (randomized ECDSA from the OS random source), with the same
/// public key as core's [`P256Signer`] for the same secret.
#[derive(Debug, Clone)]
pub struct RingP256Signer {
    pair: Arc<EcdsaKeyPair>,
    public: PublicKey,
    rng: SystemRandom,
}

impl RingP256Signer {
    /// The key with this 32-byte secret scalar.
    ///
    /// # Errors
    /// [`SignError`] if the scalar is not a valid P-256 private key.
    pub fn from_bytes(secret: &[u8; 32]) -> Result<Self, SignError> {
        // core derives the public key (and checks the scalar); ring checks they agree.
        let public = P256Signer::from_bytes(secret)?.public_key().clone();
        let PublicKey::P256 { x, y } = &public else {
            return Err(SignError);
        };
        let point = uncompressed(x, y);
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_private_key_and_public_key(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            secret,
            &point,
            &rng,
        )
        .map_err(|_| SignError)?;
        if pair.public_key().as_ref() != point.as_slice() {
            return Err(SignError);
        }
        Ok(RingP256Signer {
            pair: Arc::new(pair),
            public,
            rng,
        })
    }
}

impl Signer for RingP256Signer {
    fn alg(&self) -> Alg {
        Alg::Es256
    }

    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        self.pair
            .sign(&self.rng, message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| SignError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keybound_core::jws::RustCrypto;

    #[test]
    fn ring_and_core_agree_on_keys_and_signatures() {
        let secret = [7u8; 32];
        let ring = RingP256Signer::from_bytes(&secret).unwrap();
        let core = P256Signer::from_bytes(&secret).unwrap();
        assert_eq!(ring.public_key(), core.public_key());
        let msg = b"header.payload";
        // Each side verifies the other's signatures, and refuses a flipped bit.
        for (sig, who) in [(ring.sign(msg).unwrap(), "ring"), (core.sign(msg).unwrap(), "core")] {
            for verifier in [&Ring as &dyn Verifier, &RustCrypto] {
                assert!(verifier.verify(Alg::Es256, core.public_key(), msg, &sig), "{who}");
                let mut bad = sig.clone();
                bad[5] ^= 1;
                assert!(!verifier.verify(Alg::Es256, core.public_key(), msg, &bad), "{who}");
                assert!(!verifier.verify(Alg::Es256, core.public_key(), b"other", &sig), "{who}");
            }
        }
        assert!(RingP256Signer::from_bytes(&[0u8; 32]).is_err());
        assert!(RingP256Signer::from_bytes(&[0xff; 32]).is_err());
    }

    #[test]
    fn eddsa_and_rsa_follow_the_same_rules_as_core() {
        use keybound_core::jws::Ed25519Signer;
        let ed = Ed25519Signer::from_seed(&[3u8; 32]);
        let sig = ed.sign(b"m").unwrap();
        assert!(Ring.verify(Alg::EdDsa, ed.public_key(), b"m", &sig));
        assert!(!Ring.verify(Alg::EdDsa, ed.public_key(), b"n", &sig));
        // A key of the wrong type for the algorithm is refused, never a panic.
        assert!(!Ring.verify(Alg::Es256, ed.public_key(), b"m", &sig));
        assert!(!Ring.verify(Alg::Ps256, ed.public_key(), b"m", &sig));
    }

    #[test]
    fn rfc7515_a2_rs256_verifies_and_not_as_ps256() {
        use keybound_core::Part;
        use keybound_core::jwk::Jwk;
        use keybound_core::jws::{AlgSet, Jws};
        let jwk = br#"{"kty":"RSA","n":"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ","e":"AQAB"}"#;
        let key = Jwk::from_json(jwk, Part::Other).unwrap();
        let t = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";
        let jws = Jws::parse(t, Part::Other, AlgSet::default().with(Alg::Rs256)).unwrap();
        let (input, sig) = (jws.signing_input().as_bytes(), jws.signature());
        assert!(Ring.verify(Alg::Rs256, key.key(), input, sig));
        assert!(RustCrypto.verify(Alg::Rs256, key.key(), input, sig));
        assert!(!Ring.verify(Alg::Ps256, key.key(), input, sig));
        assert!(!Ring.verify(Alg::Rs256, key.key(), b"other", sig));
    }
}
