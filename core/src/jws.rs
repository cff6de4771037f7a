//! JWS compact serialisation ([RFC 7515]): parse, verify and sign.
//!
//! Signatures are checked through the [`Verifier`] trait and made through the [`Signer`] trait,
//! so an adapter can plug in another backend: the Envoy filter uses BoringSSL through Envoy's
//! `verify_signature` foreign function, the browser signs with a non-extractable WebCrypto key
//! (asynchronously, through [`UnsignedJws`]). [`RustCrypto`] is the pure-Rust default verifier;
//! [`P256Signer`] and [`Ed25519Signer`] are pure-Rust signers.
//!
//! What this module does **not** check: the meaning of the payload (claims, times, audiences).
//! Those are the job of [`crate::dpop`] and [`crate::token`].
//!
//! [RFC 7515]: https://www.rfc-editor.org/rfc/rfc7515

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::b64;
use crate::error::{Error, Part, Result};
use crate::jwk::{Jwk, PublicKey, RawJwk};

/// The longest compact JWS keybound parses (bytes). Larger input is refused before any work.
pub const MAX_JWS_LEN: usize = 16 * 1024;

/// Whether a `typ` header value names the media type `expected` (e.g. `dpop+jwt`): compared
/// case-insensitively, with or without the `application/` prefix ([RFC 7515 §4.1.9]).
///
/// [RFC 7515 §4.1.9]: https://www.rfc-editor.org/rfc/rfc7515#section-4.1.9
pub fn typ_is(typ: Option<&str>, expected: &str) -> bool {
    typ.is_some_and(|t| {
        let t = match t.get(..12) {
            Some(prefix) if prefix.eq_ignore_ascii_case("application/") => t.get(12..).unwrap_or(""),
            _ => t,
        };
        t.eq_ignore_ascii_case(expected)
    })
}

/// A JWS signature algorithm keybound supports.
///
/// `none`, the HMAC algorithms (`HS256`...) and anything else never parse to an `Alg`, so they can
/// never be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Alg {
    /// ECDSA P-256 with SHA-256 ([RFC 7518 §3.4](https://www.rfc-editor.org/rfc/rfc7518#section-3.4)).
    Es256,
    /// RSASSA-PSS with SHA-256 ([RFC 7518 §3.5](https://www.rfc-editor.org/rfc/rfc7518#section-3.5)).
    Ps256,
    /// Ed25519 ([RFC 8037](https://www.rfc-editor.org/rfc/rfc8037)).
    EdDsa,
    /// RSASSA-PKCS1-v1_5 with SHA-256; not in the default allowlist (FAPI 2.0 forbids it).
    Rs256,
}

impl Alg {
    /// All supported algorithms.
    pub const ALL: [Alg; 4] = [Alg::Es256, Alg::Ps256, Alg::EdDsa, Alg::Rs256];

    /// Parses a JOSE `alg` value; `None` for anything unsupported, including `none` and `HS*`.
    pub fn parse(s: &str) -> Option<Alg> {
        match s {
            "ES256" => Some(Alg::Es256),
            "PS256" => Some(Alg::Ps256),
            "EdDSA" => Some(Alg::EdDsa),
            "RS256" => Some(Alg::Rs256),
            _ => None,
        }
    }

    /// The JOSE name.
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Es256 => "ES256",
            Alg::Ps256 => "PS256",
            Alg::EdDsa => "EdDSA",
            Alg::Rs256 => "RS256",
        }
    }

    /// Whether a key of this type can verify this algorithm.
    pub fn fits(self, key: &PublicKey) -> bool {
        matches!(
            (self, key),
            (Alg::Es256, PublicKey::P256 { .. })
                | (Alg::Ps256 | Alg::Rs256, PublicKey::Rsa { .. })
                | (Alg::EdDsa, PublicKey::Ed25519 { .. })
        )
    }

    fn bit(self) -> u8 {
        match self {
            Alg::Es256 => 1,
            Alg::Ps256 => 2,
            Alg::EdDsa => 4,
            Alg::Rs256 => 8,
        }
    }
}

/// A set of allowed algorithms. The default is ES256, PS256 and EdDSA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlgSet(u8);

impl Default for AlgSet {
    fn default() -> Self {
        AlgSet::EMPTY.with(Alg::Es256).with(Alg::Ps256).with(Alg::EdDsa)
    }
}

impl AlgSet {
    /// No algorithm.
    pub const EMPTY: AlgSet = AlgSet(0);

    /// This set plus `alg`.
    pub const fn with(self, alg: Alg) -> AlgSet {
        AlgSet(self.0 | alg_bit(alg))
    }

    /// Whether `alg` is allowed.
    pub fn contains(self, alg: Alg) -> bool {
        self.0 & alg.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The allowed algorithms, in a fixed order (for the `algs` challenge parameter).
    pub fn to_vec(self) -> Vec<Alg> {
        Alg::ALL.into_iter().filter(|a| self.contains(*a)).collect()
    }

    /// Parses a list of JOSE names.
    ///
    /// # Errors
    /// [`Error::Config`] naming `field` if a name is unsupported (including `none` and `HS256`)
    /// or the list is empty.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>, field: &str) -> Result<AlgSet> {
        let mut set = AlgSet::EMPTY;
        for name in names {
            let alg = Alg::parse(name).ok_or_else(|| Error::Config {
                field: field.into(),
                reason: alloc::format!("unsupported algorithm {name:?} (supported: ES256, PS256, EdDSA, RS256)"),
            })?;
            set = set.with(alg);
        }
        if set.is_empty() {
            return Err(Error::Config {
                field: field.into(),
                reason: "at least one algorithm is required".into(),
            });
        }
        Ok(set)
    }
}

const fn alg_bit(alg: Alg) -> u8 {
    match alg {
        Alg::Es256 => 1,
        Alg::Ps256 => 2,
        Alg::EdDsa => 4,
        Alg::Rs256 => 8,
    }
}

/// The JOSE header members keybound reads. Unknown members are ignored, except `crit`.
#[derive(Deserialize)]
struct RawHeader {
    alg: Option<String>,
    typ: Option<String>,
    kid: Option<String>,
    jwk: Option<RawJwk>,
    crit: Option<IgnoredAny>,
    b64: Option<IgnoredAny>,
}

/// A parsed, not yet verified, JWS in compact serialisation.
#[derive(Debug)]
pub struct Jws<'a> {
    signing_input: &'a str,
    alg: Alg,
    typ: Option<String>,
    kid: Option<String>,
    jwk: Option<Jwk>,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

impl<'a> Jws<'a> {
    /// Parses a compact JWS: three strict base64url parts, a JSON header with a supported `alg`,
    /// no `crit`, and (if present) a public `jwk`. The payload is kept as bytes.
    ///
    /// # Errors
    /// [`Error::Malformed`] for anything but three base64url parts with a JSON object header;
    /// [`Error::AlgNotAllowed`] for a missing, `none`, symmetric or unknown `alg`, or one not in
    /// `algs`; [`Error::PrivateKeyInJwk`] / [`Error::InvalidKey`] for a bad header `jwk`;
    /// [`Error::AlgKeyMismatch`] if the header `jwk` does not fit the `alg`.
    pub fn parse(token: &'a str, part: Part, algs: AlgSet) -> Result<Self> {
        let malformed = |what| Error::Malformed { part, what };
        let compact = Compact::split(token, part)?;
        let header = b64::decode(compact.header).map_err(|_| malformed("header base64url"))?;
        let (payload, signature) = compact.decode_body(part)?;
        let raw: RawHeader = serde_json::from_slice(&header).map_err(|_| malformed("header json"))?;
        let alg = raw
            .alg
            .as_deref()
            .and_then(Alg::parse)
            .ok_or(Error::AlgNotAllowed { part })?;
        if !algs.contains(alg) {
            return Err(Error::AlgNotAllowed { part });
        }
        if raw.crit.is_some() || raw.b64.is_some() {
            return Err(malformed("crit/b64 extensions are not supported"));
        }
        let jwk = match raw.jwk {
            Some(raw_jwk) => {
                let jwk = Jwk::from_raw(raw_jwk, part)?;
                if !alg.fits(jwk.key()) {
                    return Err(Error::AlgKeyMismatch { part });
                }
                Some(jwk)
            }
            None => None,
        };
        Ok(Jws {
            signing_input: compact.signing_input,
            alg,
            typ: raw.typ,
            kid: raw.kid,
            jwk,
            payload,
            signature,
        })
    }

    /// The algorithm from the header.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The `typ` header, if any.
    pub fn typ(&self) -> Option<&str> {
        self.typ.as_deref()
    }

    /// The `kid` header, if any.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The `jwk` header, if any (already checked to be public and to fit `alg`).
    pub fn jwk(&self) -> Option<&Jwk> {
        self.jwk.as_ref()
    }

    /// The decoded payload. Not authenticated until [`Jws::verify`] succeeded.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The ASCII signing input `header.payload`.
    pub fn signing_input(&self) -> &'a str {
        self.signing_input
    }

    /// The decoded payload and signature, taken out of the JWS.
    pub(crate) fn into_payload_and_signature(self) -> (Vec<u8>, Vec<u8>) {
        (self.payload, self.signature)
    }

    /// The decoded signature bytes.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// Verifies the signature with `key`.
    ///
    /// # Errors
    /// [`Error::AlgKeyMismatch`] if the key type does not fit the `alg`; [`Error::BadSignature`]
    /// if the signature does not verify.
    pub fn verify(&self, key: &PublicKey, verifier: &dyn Verifier, part: Part) -> Result<()> {
        verify_signature(self.alg, key, self.signing_input, &self.signature, verifier, part)
    }

    /// Verifies the signature against the keys of a set that match `alg` and `kid`.
    ///
    /// Returns the key that verified.
    ///
    /// # Errors
    /// [`Error::UnknownKey`] if no key matches the header; [`Error::BadSignature`] if none of the
    /// matching keys verifies.
    pub fn verify_with_set<'k>(
        &self,
        keys: &'k crate::jwk::Jwks,
        verifier: &dyn Verifier,
        part: Part,
    ) -> Result<&'k Jwk> {
        let mut tried = false;
        for key in keys.candidates(self.alg, self.kid.as_deref()) {
            tried = true;
            if verifier.verify(self.alg, key.key(), self.signing_input.as_bytes(), &self.signature) {
                return Ok(key);
            }
        }
        Err(if tried {
            Error::BadSignature { part }
        } else {
            Error::UnknownKey { part }
        })
    }
}

/// A compact JWS split into its three parts (not decoded), no longer than [`MAX_JWS_LEN`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Compact<'a> {
    /// The protected header, base64url.
    pub(crate) header: &'a str,
    payload: &'a str,
    signature: &'a str,
    /// `header.payload`.
    pub(crate) signing_input: &'a str,
}

impl<'a> Compact<'a> {
    /// Splits `token` into exactly three parts.
    ///
    /// # Errors
    /// [`Error::Malformed`] if it is too long or not three parts.
    pub(crate) fn split(token: &'a str, part: Part) -> Result<Self> {
        let malformed = |what| Error::Malformed { part, what };
        if token.len() > MAX_JWS_LEN {
            return Err(malformed("too long"));
        }
        let mut it = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) = (it.next(), it.next(), it.next(), it.next()) else {
            return Err(malformed("not three parts"));
        };
        let signing_input = token
            .get(..header.len() + 1 + payload.len())
            .ok_or_else(|| malformed("split"))?;
        Ok(Compact {
            header,
            payload,
            signature,
            signing_input,
        })
    }

    /// The decoded payload and signature.
    ///
    /// # Errors
    /// [`Error::Malformed`] if either is not strict base64url.
    pub(crate) fn decode_body(&self, part: Part) -> Result<(Vec<u8>, Vec<u8>)> {
        let malformed = |what| Error::Malformed { part, what };
        let payload = b64::decode(self.payload).map_err(|_| malformed("payload base64url"))?;
        let signature = b64::decode(self.signature).map_err(|_| malformed("signature base64url"))?;
        Ok((payload, signature))
    }
}

/// Checks a JWS signature: the key must fit `alg`, and `verifier` must accept the signature.
///
/// # Errors
/// [`Error::AlgKeyMismatch`] if the key type does not fit `alg`; [`Error::BadSignature`] if the
/// signature does not verify.
pub(crate) fn verify_signature(
    alg: Alg,
    key: &PublicKey,
    signing_input: &str,
    signature: &[u8],
    verifier: &dyn Verifier,
    part: Part,
) -> Result<()> {
    if !alg.fits(key) {
        return Err(Error::AlgKeyMismatch { part });
    }
    if verifier.verify(alg, key, signing_input.as_bytes(), signature) {
        Ok(())
    } else {
        Err(Error::BadSignature { part })
    }
}

/// A signature verification backend.
///
/// `signature` is in JOSE form: `r || s` (64 bytes) for ES256, the raw signature for RSA and
/// Ed25519. An implementation must return `false` for any malformed input, never panic.
pub trait Verifier {
    /// Whether `signature` is a valid `alg` signature of `message` under `key`.
    fn verify(&self, alg: Alg, key: &PublicKey, message: &[u8], signature: &[u8]) -> bool;
}

/// The pure-Rust verifier (RustCrypto `p256`, `rsa`, `ed25519-dalek`).
#[derive(Debug, Clone, Copy, Default)]
pub struct RustCrypto;

impl Verifier for RustCrypto {
    fn verify(&self, alg: Alg, key: &PublicKey, message: &[u8], signature: &[u8]) -> bool {
        use signature::Verifier as _;
        match (alg, key) {
            (Alg::Es256, PublicKey::P256 { x, y }) => {
                let Some(vk) = crate::jwk::p256_key(x, y) else {
                    return false;
                };
                let Ok(sig) = p256::ecdsa::Signature::from_slice(signature) else {
                    return false;
                };
                vk.verify(message, &sig).is_ok()
            }
            (Alg::EdDsa, PublicKey::Ed25519 { x }) => {
                let Ok(vk) = ed25519_dalek::VerifyingKey::from_bytes(x) else {
                    return false;
                };
                let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
                    return false;
                };
                vk.verify_strict(message, &sig).is_ok()
            }
            (Alg::Ps256 | Alg::Rs256, PublicKey::Rsa { n, e }) => verify_rsa(alg, n, e, message, signature),
            _ => false,
        }
    }
}

fn verify_rsa(alg: Alg, n: &[u8], e: &[u8], message: &[u8], signature: &[u8]) -> bool {
    use rsa::BoxedUint;
    use signature::Verifier as _;
    if signature.len() != n.len() {
        return false;
    }
    let n_bits = (n.len() * 8) as u32;
    let Some(n) = BoxedUint::from_be_slice(n, n_bits).ok() else {
        return false;
    };
    let e = e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    let Ok(pk) = rsa::RsaPublicKey::new(n, BoxedUint::from(e)) else {
        return false;
    };
    match alg {
        Alg::Ps256 => {
            let vk = rsa::pss::VerifyingKey::<sha2::Sha256>::new(pk);
            rsa::pss::Signature::try_from(signature).is_ok_and(|sig| vk.verify(message, &sig).is_ok())
        }
        Alg::Rs256 => {
            let vk = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(pk);
            rsa::pkcs1v15::Signature::try_from(signature).is_ok_and(|sig| vk.verify(message, &sig).is_ok())
        }
        _ => false,
    }
}

/// A signing key: a software key, an HSM, or (through [`UnsignedJws`]) a WebCrypto key.
pub trait Signer {
    /// The algorithm this key signs with.
    fn alg(&self) -> Alg;
    /// The public key, placed in DPoP proof headers and published in JWKS.
    fn public_key(&self) -> &PublicKey;
    /// Signs `message`, returning the JOSE-form signature (`r || s` for ES256).
    ///
    /// # Errors
    /// [`SignError`] if the backend fails.
    fn sign(&self, message: &[u8]) -> core::result::Result<Vec<u8>, SignError>;
}

/// A signing backend failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignError;

impl core::fmt::Display for SignError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("signing failed")
    }
}

impl core::error::Error for SignError {}

/// An ES256 software signing key (RFC 6979 deterministic ECDSA, so no randomness at signing).
#[derive(Clone)]
pub struct P256Signer {
    key: p256::ecdsa::SigningKey,
    public: PublicKey,
}

impl core::fmt::Debug for P256Signer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "P256Signer({:?})", self.public)
    }
}

impl P256Signer {
    /// Builds a key from a 32-byte secret scalar (from the caller's random source).
    ///
    /// # Errors
    /// [`SignError`] if the scalar is zero or not below the group order.
    pub fn from_bytes(secret: &[u8; 32]) -> core::result::Result<Self, SignError> {
        let key = p256::ecdsa::SigningKey::from_bytes(&(*secret).into()).map_err(|_| SignError)?;
        let point = key.verifying_key().to_sec1_point(false);
        let (Some(x), Some(y)) = (point.as_bytes().get(1..33), point.as_bytes().get(33..65)) else {
            return Err(SignError);
        };
        let (Ok(x), Ok(y)) = (x.try_into(), y.try_into()) else {
            return Err(SignError);
        };
        let public = PublicKey::P256 { x, y };
        Ok(P256Signer { key, public })
    }
}

impl Signer for P256Signer {
    fn alg(&self) -> Alg {
        Alg::Es256
    }
    fn public_key(&self) -> &PublicKey {
        &self.public
    }
    fn sign(&self, message: &[u8]) -> core::result::Result<Vec<u8>, SignError> {
        use signature::Signer as _;
        let sig: p256::ecdsa::Signature = self.key.try_sign(message).map_err(|_| SignError)?;
        Ok(sig.to_bytes().to_vec())
    }
}

/// An EdDSA (Ed25519) software signing key.
#[derive(Clone)]
pub struct Ed25519Signer {
    key: ed25519_dalek::SigningKey,
    public: PublicKey,
}

impl core::fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Ed25519Signer({:?})", self.public)
    }
}

impl Ed25519Signer {
    /// Builds a key from a 32-byte seed (from the caller's random source).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let key = ed25519_dalek::SigningKey::from_bytes(seed);
        let public = PublicKey::Ed25519 {
            x: key.verifying_key().to_bytes(),
        };
        Ed25519Signer { key, public }
    }
}

impl Signer for Ed25519Signer {
    fn alg(&self) -> Alg {
        Alg::EdDsa
    }
    fn public_key(&self) -> &PublicKey {
        &self.public
    }
    fn sign(&self, message: &[u8]) -> core::result::Result<Vec<u8>, SignError> {
        use signature::Signer as _;
        let sig: ed25519_dalek::Signature = self.key.try_sign(message).map_err(|_| SignError)?;
        Ok(sig.to_bytes().to_vec())
    }
}

/// A JWS whose signature is still to be made: for signers that cannot be called synchronously
/// (WebCrypto's `crypto.subtle.sign` returns a Promise).
#[derive(Debug, Clone)]
pub struct UnsignedJws {
    signing_input: String,
}

impl UnsignedJws {
    /// Builds `base64url(header).base64url(payload)` from JSON values. `header` gets `alg` set.
    pub fn new(alg: Alg, mut header: serde_json::Map<String, serde_json::Value>, payload: &[u8]) -> Self {
        header.insert("alg".into(), alg.as_str().into());
        let header = serde_json::Value::Object(header).to_string();
        Self::from_json(header.as_bytes(), payload)
    }

    /// Builds `base64url(header).base64url(payload)` from the header's JSON as it is (which must
    /// name the `alg` that will sign it).
    pub(crate) fn from_json(header: &[u8], payload: &[u8]) -> Self {
        let mut signing_input = b64::encode(header);
        signing_input.push('.');
        signing_input.push_str(&b64::encode(payload));
        UnsignedJws { signing_input }
    }

    /// The bytes to sign.
    pub fn signing_input(&self) -> &[u8] {
        self.signing_input.as_bytes()
    }

    /// Appends the JOSE-form signature and returns the compact JWS.
    pub fn finish(self, signature: &[u8]) -> String {
        let mut out = self.signing_input;
        out.push('.');
        out.push_str(&b64::encode(signature));
        out
    }

    /// Signs with a synchronous signer.
    ///
    /// # Errors
    /// [`SignError`] if the signer fails.
    pub fn sign(self, signer: &dyn Signer) -> core::result::Result<String, SignError> {
        let sig = signer.sign(self.signing_input())?;
        Ok(self.finish(&sig))
    }
}

/// Signs a JSON payload with `signer`, with the given `typ` and optional `kid`.
///
/// # Errors
/// [`SignError`] if the signer fails.
pub fn sign_json(
    signer: &dyn Signer,
    typ: Option<&str>,
    kid: Option<&str>,
    payload: &serde_json::Value,
) -> core::result::Result<String, SignError> {
    let mut header = serde_json::Map::new();
    if let Some(typ) = typ {
        header.insert("typ".into(), typ.into());
    }
    if let Some(kid) = kid {
        header.insert("kid".into(), kid.into());
    }
    UnsignedJws::new(signer.alg(), header, payload.to_string().as_bytes()).sign(signer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7515 Appendix A.3: the ES256 example verifies.
    #[test]
    fn rfc7515_appendix_a_3_es256_verifies() {
        let jwk = br#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;
        let key = PublicKey::from_json(jwk, Part::Other).unwrap();
        let token = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
        let jws = Jws::parse(token, Part::Other, AlgSet::default()).unwrap();
        assert_eq!(jws.alg(), Alg::Es256);
        jws.verify(&key, &RustCrypto, Part::Other).unwrap();

        let mut tampered = String::from(token);
        let at = token.len() - 10;
        let c = if &token[at..=at] == "A" { "B" } else { "A" };
        tampered.replace_range(at..=at, c);
        let jws = Jws::parse(&tampered, Part::Other, AlgSet::default()).unwrap();
        assert_eq!(
            jws.verify(&key, &RustCrypto, Part::Other),
            Err(Error::BadSignature { part: Part::Other })
        );
    }

    /// RFC 8037 Appendix A.4: the Ed25519 example verifies.
    #[test]
    fn rfc8037_appendix_a_4_eddsa_verifies() {
        let jwk = br#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
        let key = PublicKey::from_json(jwk, Part::Other).unwrap();
        let token = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
        let jws = Jws::parse(token, Part::Other, AlgSet::default()).unwrap();
        assert_eq!(jws.payload(), b"Example of Ed25519 signing");
        jws.verify(&key, &RustCrypto, Part::Other).unwrap();
        // RFC 8037 A.1 seed signs the same bytes to the same signature (Ed25519 is deterministic)
        let seed: [u8; 32] = b64::decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
            .unwrap()
            .try_into()
            .unwrap();
        let signer = Ed25519Signer::from_seed(&seed);
        assert_eq!(signer.public_key(), &key);
        assert_eq!(
            b64::encode(&signer.sign(jws.signing_input().as_bytes()).unwrap()),
            token.rsplit('.').next().unwrap()
        );
    }

    #[test]
    fn none_hmac_unknown_and_disallowed_algs_are_refused() {
        for header in [
            r#"{"alg":"none"}"#,
            r#"{"alg":"HS256"}"#,
            r#"{"alg":"ES384"}"#,
            r#"{"typ":"JWT"}"#,
            r#"{"alg":"es256"}"#,
        ] {
            let token = alloc::format!("{}.e30.AAAA", b64::encode(header.as_bytes()));
            assert_eq!(
                Jws::parse(&token, Part::Proof, AlgSet::default()).unwrap_err(),
                Error::AlgNotAllowed { part: Part::Proof },
                "{header}"
            );
        }
        let rs = alloc::format!("{}.e30.AAAA", b64::encode(br#"{"alg":"RS256"}"#));
        assert_eq!(
            Jws::parse(&rs, Part::Proof, AlgSet::default()).unwrap_err(),
            Error::AlgNotAllowed { part: Part::Proof }
        );
        assert!(Jws::parse(&rs, Part::Proof, AlgSet::default().with(Alg::Rs256)).is_ok());
    }

    #[test]
    fn alg_that_does_not_fit_the_key_is_refused() {
        let header =
            br#"{"alg":"ES256","jwk":{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}}"#;
        let token = alloc::format!("{}.e30.AAAA", b64::encode(header));
        assert_eq!(
            Jws::parse(&token, Part::Proof, AlgSet::default()).unwrap_err(),
            Error::AlgKeyMismatch { part: Part::Proof }
        );
        let ed = PublicKey::from_json(
            br#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#,
            Part::Other,
        )
        .unwrap();
        let token = alloc::format!("{}.e30.AAAA", b64::encode(br#"{"alg":"ES256"}"#));
        let jws = Jws::parse(&token, Part::Other, AlgSet::default()).unwrap();
        assert_eq!(
            jws.verify(&ed, &RustCrypto, Part::Other),
            Err(Error::AlgKeyMismatch { part: Part::Other })
        );
    }

    #[test]
    fn malformed_compact_serialisations_are_refused() {
        let h = b64::encode(br#"{"alg":"ES256"}"#);
        let long = "a".repeat(MAX_JWS_LEN + 1);
        let cases = [
            String::new(),
            "a.b".into(),
            alloc::format!("{h}.e30.AAAA.AAAA"),
            alloc::format!("{h}.e30=.AAAA"),
            alloc::format!("{h}.e30.AA+A"),
            alloc::format!("{}.e30.AAAA", b64::encode(b"not json")),
            alloc::format!("{}.e30.AAAA", b64::encode(br#"{"alg":"ES256","crit":["exp"]}"#)),
            alloc::format!("{}.e30.AAAA", b64::encode(br#"{"alg":"ES256","alg":"ES256"}"#)),
            long,
        ];
        for token in &cases {
            assert!(
                matches!(
                    Jws::parse(token, Part::Proof, AlgSet::default()),
                    Err(Error::Malformed { part: Part::Proof, .. })
                ),
                "{token:.60}"
            );
        }
    }

    #[test]
    fn typ_compares_media_types_case_insensitively() {
        for ok in ["dpop+jwt", "DPoP+JWT", "application/dpop+jwt", "Application/DPOP+jwt"] {
            assert!(typ_is(Some(ok), "dpop+jwt"), "{ok}");
        }
        for bad in [
            "jwt",
            "dpop+jwt ",
            "application/jwt",
            "app/dpop+jwt",
            "application/",
            "",
        ] {
            assert!(!typ_is(Some(bad), "dpop+jwt"), "{bad}");
        }
        assert!(!typ_is(None, "dpop+jwt"));
    }

    #[test]
    fn alg_set_parses_names_and_refuses_none() {
        let set = AlgSet::from_names(["ES256", "EdDSA"], "dpop.algs").unwrap();
        assert_eq!(set.to_vec(), [Alg::Es256, Alg::EdDsa]);
        let err = AlgSet::from_names(["none"], "dpop.algs").unwrap_err();
        assert!(matches!(err, Error::Config { ref field, .. } if field == "dpop.algs"));
        assert!(AlgSet::from_names([], "dpop.algs").is_err());
    }
}
