//! Public JSON Web Keys ([RFC 7517]), their [RFC 7638] thumbprints, and key sets.
//!
//! Only public keys that keybound can verify with are accepted: EC P-256, RSA of 2048 to 8192
//! bits (in a DPoP proof: 2048 to 4096 bits with e = 65537), and OKP Ed25519. A JWK with any private member (`d`, `p`, `q`, `dp`, `dq`, `qi`, `k`) is
//! an error wherever a public key is expected, so a leaked private key is refused, not used.
//!
//! Parsing checks the key itself (the EC point is on the curve, the Ed25519 point decodes and is
//! not of small order, the RSA modulus is large enough and minimally encoded), so a [`Jwk`] is
//! always a usable key. The two point checks are the default `curve-checks` feature: a build
//! without it (keybound-browser, which verifies with WebCrypto, whose key import checks the
//! points) checks only the encodings and sizes.
//!
//! [RFC 7517]: https://www.rfc-editor.org/rfc/rfc7517
//! [RFC 7638]: https://www.rfc-editor.org/rfc/rfc7638

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use serde::Deserialize;
use serde::de::IgnoredAny;
use sha2::{Digest, Sha256};

use crate::b64;
use crate::error::{Error, Part, Result};
use crate::jws::Alg;

/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted, in bits (bounds verification cost).
pub const MAX_RSA_BITS: usize = 8192;
/// Largest RSA modulus accepted in a DPoP proof's `jwk`, in bits. A proof key comes from any
/// client, unauthenticated, and is verified before the token is looked at, so its cost is capped
/// harder than an issuer's: at most 4096 bits, and the exponent must be 65537 ([`PROOF_RSA_E`]).
pub const MAX_PROOF_RSA_BITS: usize = 4096;
/// The only RSA public exponent accepted in a DPoP proof's `jwk` (65537).
pub const PROOF_RSA_E: [u8; 3] = [1, 0, 1];

/// The key material of a public JWK.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublicKey {
    /// An EC P-256 public key as affine coordinates (`kty: EC`, `crv: P-256`).
    P256 {
        /// The x coordinate, big-endian.
        x: [u8; 32],
        /// The y coordinate, big-endian.
        y: [u8; 32],
    },
    /// An RSA public key (`kty: RSA`), minimal big-endian encodings.
    Rsa {
        /// The modulus.
        n: Vec<u8>,
        /// The public exponent.
        e: Vec<u8>,
    },
    /// An Ed25519 public key (`kty: OKP`, `crv: Ed25519`).
    Ed25519 {
        /// The compressed point.
        x: [u8; 32],
    },
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublicKey::P256 { x, .. } => write!(f, "P256({}..)", b64::encode(x.get(..6).unwrap_or(&[]))),
            PublicKey::Rsa { n, .. } => write!(f, "Rsa({} bits)", n.len() * 8),
            PublicKey::Ed25519 { x } => write!(f, "Ed25519({}..)", b64::encode(x.get(..6).unwrap_or(&[]))),
        }
    }
}

impl PublicKey {
    /// The JWK `kty` of this key.
    pub fn kty(&self) -> &'static str {
        match self {
            PublicKey::P256 { .. } => "EC",
            PublicKey::Rsa { .. } => "RSA",
            PublicKey::Ed25519 { .. } => "OKP",
        }
    }

    /// The RFC 7638 JWK thumbprint (SHA-256) of this key.
    pub fn thumbprint(&self) -> Jkt {
        let json = self.thumbprint_input();
        Jkt(Sha256::digest(json.as_bytes()).into())
    }

    /// The canonical JSON of the required members, in lexicographic order, no whitespace
    /// (RFC 7638 §3.2). This is also the public JWK placed in a DPoP proof header.
    pub fn thumbprint_input(&self) -> String {
        // Concatenated, not `format!`: the browser's proof path carries no `core::fmt`.
        match self {
            PublicKey::P256 { x, y } => [
                r#"{"crv":"P-256","kty":"EC","x":""#,
                &b64::encode(x),
                r#"","y":""#,
                &b64::encode(y),
                r#""}"#,
            ]
            .concat(),
            PublicKey::Rsa { n, e } => [
                r#"{"e":""#,
                &b64::encode(e),
                r#"","kty":"RSA","n":""#,
                &b64::encode(n),
                r#""}"#,
            ]
            .concat(),
            PublicKey::Ed25519 { x } => [r#"{"crv":"Ed25519","kty":"OKP","x":""#, &b64::encode(x), r#""}"#].concat(),
        }
    }

    /// The public JWK as JSON (the same members as [`PublicKey::thumbprint_input`]).
    pub fn to_json(&self) -> String {
        self.thumbprint_input()
    }

    /// Parses a public key from JWK JSON.
    ///
    /// # Errors
    /// [`Error::PrivateKeyInJwk`] if any private member is present; [`Error::InvalidKey`] for
    /// an unsupported `kty`/`crv`, a malformed or off-curve point, a small-order Ed25519 key, or an
    /// RSA modulus outside 2048..=8192 bits (for [`Part::Proof`]: outside 2048..=4096 bits, or an
    /// exponent other than 65537); [`Error::Malformed`] for invalid JSON.
    pub fn from_json(json: &[u8], part: Part) -> Result<Self> {
        Ok(Jwk::from_json(json, part)?.key)
    }

    fn from_raw(raw: &RawJwk, part: Part) -> Result<Self> {
        if raw.has_private_member() {
            return Err(Error::PrivateKeyInJwk { part });
        }
        let bad = |what| Error::InvalidKey { part, what };
        let field = |v: &Option<String>, what| -> Result<Vec<u8>> {
            b64::decode(v.as_deref().ok_or_else(|| bad(what))?).map_err(|_| bad(what))
        };
        match (raw.kty.as_str(), raw.crv.as_deref()) {
            ("EC", Some("P-256")) => {
                let x: [u8; 32] = field(&raw.x, "x")?.try_into().map_err(|_| bad("x length"))?;
                let y: [u8; 32] = field(&raw.y, "y")?.try_into().map_err(|_| bad("y length"))?;
                #[cfg(feature = "curve-checks")]
                p256_key(&x, &y).ok_or_else(|| bad("point not on curve"))?;
                Ok(PublicKey::P256 { x, y })
            }
            ("EC", _) => Err(bad("unsupported curve")),
            ("OKP", Some("Ed25519")) => {
                let x: [u8; 32] = field(&raw.x, "x")?.try_into().map_err(|_| bad("x length"))?;
                #[cfg(feature = "curve-checks")]
                {
                    let key = ed25519_dalek::VerifyingKey::from_bytes(&x).map_err(|_| bad("point does not decode"))?;
                    if key.is_weak() {
                        return Err(bad("small-order point"));
                    }
                }
                Ok(PublicKey::Ed25519 { x })
            }
            ("OKP", _) => Err(bad("unsupported curve")),
            ("RSA", _) => {
                let n = field(&raw.n, "n")?;
                let e = field(&raw.e, "e")?;
                if n.first().is_none_or(|&b| b == 0) || e.first().is_none_or(|&b| b == 0) {
                    return Err(bad("RSA value not minimally encoded"));
                }
                let bits = n.len() * 8 - n.first().map_or(0, |b| b.leading_zeros() as usize);
                if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                    return Err(bad("RSA modulus size"));
                }
                // e must be odd, >= 3 and fit in 32 bits (what every RSA library accepts).
                if e.len() > 4 || e.last().is_none_or(|&b| b & 1 == 0) || (e.len() == 1 && e.first() == Some(&1)) {
                    return Err(bad("RSA exponent"));
                }
                if part == Part::Proof && (bits > MAX_PROOF_RSA_BITS || e != PROOF_RSA_E) {
                    return Err(bad("RSA proof key above 4096 bits or with e other than 65537"));
                }
                Ok(PublicKey::Rsa { n, e })
            }
            _ => Err(bad("unsupported kty")),
        }
    }
}

/// The P-256 verifying key for affine coordinates, if the point is on the curve.
pub(crate) fn p256_key(x: &[u8; 32], y: &[u8; 32]) -> Option<p256::ecdsa::VerifyingKey> {
    let mut sec1 = [4u8; 65];
    let (xs, ys) = sec1.get_mut(1..)?.split_at_mut(32);
    xs.copy_from_slice(x);
    ys.copy_from_slice(y);
    p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).ok()
}

/// An RFC 7638 JWK SHA-256 thumbprint: the value of `cnf.jkt` and of `dpop_jkt`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Jkt([u8; 32]);

impl Jkt {
    /// Parses a base64url thumbprint as found in `cnf.jkt` or `dpop_jkt`.
    ///
    /// # Errors
    /// [`Error::Malformed`] unless it is strict base64url of exactly 32 bytes.
    pub fn parse(s: &str, part: Part) -> Result<Self> {
        let raw = b64::decode(s).map_err(|_| Error::Malformed { part, what: "jkt" })?;
        raw.try_into()
            .map(Jkt)
            .map_err(|_| Error::Malformed { part, what: "jkt" })
    }

    /// The SHA-256 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Jkt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&b64::encode(&self.0))
    }
}

impl fmt::Debug for Jkt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Jkt({self})")
    }
}

/// A public JWK with its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    key: PublicKey,
    kid: Option<String>,
    alg: Option<String>,
    use_: Option<String>,
}

impl Jwk {
    /// Wraps a key with optional metadata.
    pub fn new(key: PublicKey, kid: Option<String>, alg: Option<Alg>) -> Self {
        Jwk {
            key,
            kid,
            alg: alg.map(|a| a.as_str().into()),
            use_: Some("sig".into()),
        }
    }

    /// Parses a public JWK from JSON.
    ///
    /// # Errors
    /// As [`PublicKey::from_json`].
    pub fn from_json(json: &[u8], part: Part) -> Result<Self> {
        let raw: RawJwk = serde_json::from_slice(json).map_err(|_| Error::Malformed { part, what: "jwk" })?;
        Jwk::from_raw(raw, part)
    }

    pub(crate) fn from_raw(raw: RawJwk, part: Part) -> Result<Self> {
        let key = PublicKey::from_raw(&raw, part)?;
        Ok(Jwk {
            key,
            kid: raw.kid,
            alg: raw.alg,
            use_: raw.use_,
        })
    }

    /// The key material.
    pub fn key(&self) -> &PublicKey {
        &self.key
    }

    /// The `kid`, if any.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The `alg` member, if any.
    pub fn alg(&self) -> Option<&str> {
        self.alg.as_deref()
    }

    /// The `use` member, if any.
    pub fn key_use(&self) -> Option<&str> {
        self.use_.as_deref()
    }

    /// The RFC 7638 thumbprint.
    pub fn thumbprint(&self) -> Jkt {
        self.key.thumbprint()
    }

    /// Whether this key may verify a JWS with `alg` (and the given `kid`) by its metadata:
    /// the key type fits the algorithm, and `alg`, `use` and `kid`, when present on both sides,
    /// agree. A key without `kid` is a candidate for any `kid` (as in Envoy's `jwt_authn`).
    pub fn matches(&self, alg: Alg, kid: Option<&str>) -> bool {
        alg.fits(&self.key)
            && self.alg.as_deref().is_none_or(|a| a == alg.as_str())
            && self.use_.as_deref().is_none_or(|u| u == "sig")
            && kid.is_none_or(|k| self.kid.as_deref().is_none_or(|own| own == k))
    }

    /// The public JWK as JSON, with `kid`, `alg` and `use` when present.
    pub fn to_json(&self) -> String {
        let mut v: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&self.key.to_json()).unwrap_or_default();
        if let Some(kid) = &self.kid {
            v.insert("kid".into(), kid.as_str().into());
        }
        if let Some(alg) = &self.alg {
            v.insert("alg".into(), alg.as_str().into());
        }
        if let Some(u) = &self.use_ {
            v.insert("use".into(), u.as_str().into());
        }
        serde_json::Value::Object(v).to_string()
    }
}

/// The members of a JWK that keybound reads. Private members are only detected, never kept.
#[derive(Deserialize)]
pub(crate) struct RawJwk {
    kty: String,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    d: Option<IgnoredAny>,
    p: Option<IgnoredAny>,
    q: Option<IgnoredAny>,
    dp: Option<IgnoredAny>,
    dq: Option<IgnoredAny>,
    qi: Option<IgnoredAny>,
    k: Option<IgnoredAny>,
    oth: Option<IgnoredAny>,
}

impl RawJwk {
    fn has_private_member(&self) -> bool {
        self.d.is_some()
            || self.p.is_some()
            || self.q.is_some()
            || self.dp.is_some()
            || self.dq.is_some()
            || self.qi.is_some()
            || self.k.is_some()
            || self.oth.is_some()
    }
}

/// A JSON Web Key Set of verification keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Jwks {
    keys: Vec<Jwk>,
    skipped: usize,
}

impl Jwks {
    /// Builds a key set from keys.
    pub fn new(keys: Vec<Jwk>) -> Self {
        Jwks { keys, skipped: 0 }
    }

    /// Parses a JWKS document (`{"keys": [...]}`).
    ///
    /// Keys keybound cannot use for signatures (other key types or curves, `use: enc`, RSA keys
    /// below 2048 bits) are skipped and counted in [`Jwks::skipped`], as a JWKS may list keys for
    /// other purposes. A key with private members fails the whole set: it signals a leaked key.
    ///
    /// # Errors
    /// [`Error::Malformed`] if the document is not a JWKS; [`Error::PrivateKeyInJwk`] if any key
    /// carries private members.
    pub fn from_json(json: &[u8], part: Part) -> Result<Self> {
        // Raw key texts, so each key is parsed like a lone JWK (duplicate members refused).
        #[derive(Deserialize)]
        struct Doc<'a> {
            #[serde(borrow)]
            keys: Vec<&'a serde_json::value::RawValue>,
        }
        let doc: Doc = serde_json::from_slice(json).map_err(|_| Error::Malformed { part, what: "jwks" })?;
        let mut set = Jwks::default();
        for v in doc.keys {
            let Ok(raw) = serde_json::from_str::<RawJwk>(v.get()) else {
                set.skipped += 1;
                continue;
            };
            if raw.has_private_member() {
                return Err(Error::PrivateKeyInJwk { part });
            }
            if raw.use_.as_deref().is_some_and(|u| u != "sig") {
                set.skipped += 1;
                continue;
            }
            match Jwk::from_raw(raw, part) {
                Ok(k) => set.keys.push(k),
                Err(_) => set.skipped += 1,
            }
        }
        Ok(set)
    }

    /// The usable keys.
    pub fn keys(&self) -> &[Jwk] {
        &self.keys
    }

    /// How many keys of the document were skipped as unusable for signature verification.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Whether a key with this `kid` is in the set.
    pub fn contains_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid() == Some(kid))
    }

    /// The keys that may verify a JWS with this `alg` and `kid`: those whose `kty`/`crv`, `alg` and
    /// `use` fit and whose `kid` equals the header's (several keys may share a kid); keys without
    /// a `kid` are candidates too. Without a `kid` in the header, every fitting key is.
    pub fn candidates(&self, alg: Alg, kid: Option<&str>) -> impl Iterator<Item = &Jwk> {
        self.keys.iter().filter(move |k| k.matches(alg, kid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7638 §3.1
    const RFC7638_RSA: &str = r#"{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}"#;

    #[test]
    fn rfc7638_section_3_1_rsa_thumbprint() {
        let jwk = Jwk::from_json(RFC7638_RSA.as_bytes(), Part::Other).unwrap();
        assert_eq!(
            jwk.thumbprint().to_string(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        assert_eq!(jwk.kid(), Some("2011-04-29"));
    }

    #[test]
    fn rfc8037_appendix_a_3_ed25519_thumbprint() {
        let jwk = br#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
        let jwk = Jwk::from_json(jwk, Part::Other).unwrap();
        assert_eq!(
            jwk.thumbprint().to_string(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn every_private_member_is_refused() {
        for member in ["d", "p", "q", "dp", "dq", "qi", "k", "oth"] {
            let json = alloc::format!(
                r#"{{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","{member}":"AAAA"}}"#
            );
            assert_eq!(
                Jwk::from_json(json.as_bytes(), Part::Proof),
                Err(Error::PrivateKeyInJwk { part: Part::Proof }),
                "{member}"
            );
        }
    }

    #[test]
    fn unsupported_and_malformed_keys_are_refused() {
        let cases: &[&str] = &[
            r#"{"kty":"oct","k":"AAAA"}"#,
            r#"{"kty":"EC","crv":"P-384","x":"AAAA","y":"AAAA"}"#,
            r#"{"kty":"OKP","crv":"X25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#,
            r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHUR"}"#,
            // RSA 512-bit modulus
            r#"{"kty":"RSA","e":"AQAB","n":"wRWSYGYEbwOQb3Tx_7ZR_V4M9vAs8cPq2n4V91HbfeXrLG1pHDgEqHNl1zJ1eDszRqsLF3CMzoxoAsHVL3V7ZQ"}"#,
            r#"{"kty":"EC","crv":"P-256","x":"AA=="}"#,
        ];
        for json in cases {
            let err = Jwk::from_json(json.as_bytes(), Part::Proof).unwrap_err();
            assert!(
                matches!(err, Error::InvalidKey { .. } | Error::PrivateKeyInJwk { .. }),
                "{json}: {err:?}"
            );
        }
        assert!(matches!(
            Jwk::from_json(b"[]", Part::Proof),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn off_curve_and_small_order_points_are_refused_with_curve_checks() {
        let cases = [
            // P-256 point (1, 1) is not on the curve
            r#"{"kty":"EC","crv":"P-256","x":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE","y":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE"}"#,
            // Ed25519 identity point: small order
            r#"{"kty":"OKP","crv":"Ed25519","x":"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#,
        ];
        for json in cases {
            let parsed = Jwk::from_json(json.as_bytes(), Part::Proof);
            if cfg!(feature = "curve-checks") {
                assert!(matches!(parsed, Err(Error::InvalidKey { .. })), "{json}: {parsed:?}");
            } else {
                // Left to whoever verifies with the key (WebCrypto's import checks the point).
                assert!(parsed.is_ok(), "{json}: {parsed:?}");
            }
        }
    }

    #[test]
    fn jwks_skips_foreign_keys_and_selects_by_kid_then_type() {
        let set = alloc::format!(
            r#"{{"keys":[{RFC7638_RSA},
            {{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"ed"}},
            {{"kty":"RSA","use":"enc","e":"AQAB","n":"AQAB"}},
            {{"kty":"EC","crv":"P-521","x":"AA","y":"AA"}}]}}"#
        );
        let jwks = Jwks::from_json(set.as_bytes(), Part::AccessToken).unwrap();
        assert_eq!(jwks.keys().len(), 2);
        assert_eq!(jwks.skipped(), 2);
        assert_eq!(jwks.candidates(Alg::EdDsa, Some("ed")).count(), 1);
        assert_eq!(jwks.candidates(Alg::EdDsa, None).count(), 1);
        assert_eq!(jwks.candidates(Alg::EdDsa, Some("2011-04-29")).count(), 0);
        // the RSA key says alg RS256, so it is not a PS256 candidate
        assert_eq!(jwks.candidates(Alg::Ps256, None).count(), 0);
        assert_eq!(jwks.candidates(Alg::Rs256, Some("2011-04-29")).count(), 1);
        assert_eq!(jwks.candidates(Alg::Es256, None).count(), 0);
        // A key without kid is a candidate for any kid.
        let kidless = Jwks::from_json(
            br#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#,
            Part::AccessToken,
        )
        .unwrap();
        assert_eq!(kidless.candidates(Alg::EdDsa, Some("any")).count(), 1);
    }

    #[test]
    fn jwks_key_with_duplicate_members_is_skipped_like_a_lone_jwk() {
        let dup =
            br#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","x":"AAAA"}]}"#;
        let set = Jwks::from_json(dup, Part::AccessToken).unwrap();
        assert_eq!((set.keys().len(), set.skipped()), (0, 1));
    }

    #[test]
    fn jwks_with_a_private_key_is_refused_whole() {
        let set = br#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}]}"#;
        assert_eq!(
            Jwks::from_json(set, Part::AccessToken),
            Err(Error::PrivateKeyInJwk {
                part: Part::AccessToken
            })
        );
    }
}
