//! Signed request objects (JAR, [RFC 9101]) as FAPI 2.0 Message Signing requires them at the
//! pushed authorization request endpoint, verified by the authorization server.
//!
//! Checks, in order (the first failure is returned):
//! 1. the compact JWS parses, its `alg` is in the policy (never `none` or a MAC), and its `typ`,
//!    if present, is `oauth-authz-req+jwt` (RFC 9101 §10.8);
//! 2. the signature verifies with one of the client's keys (`kid` and `alg` select them);
//! 3. `iss` is the client and `client_id` (required) is the client;
//! 4. `aud` is the issuer identifier (a string, or an array containing it);
//! 5. `exp` and `nbf` are present; `nbf` is not in the future and at most
//!    [`RequestObjectPolicy::max_age`] in the past; `exp` is in the future and at most
//!    [`RequestObjectPolicy::max_lifetime`] after `nbf` (FAPI 2.0 Message Signing: 60 minutes);
//! 6. it contains no `request` or `request_uri`.
//!
//! The verified object's claims are the authorization request's parameters: RFC 9101 §5 says the
//! server uses only those, so parameters sent outside it (other than `client_id`, and `request`
//! itself) are ignored by the caller, never merged. Replay of `jti` within `exp` is the caller's
//! to record if it wants to.
//!
//! [RFC 9101]: https://www.rfc-editor.org/rfc/rfc9101

use alloc::string::String;

use serde::Deserialize;

use crate::error::{Error, Part, Result};
use crate::jwk::Jwks;
use crate::jws::{AlgSet, Jws, Verifier, typ_is};
use crate::time::UnixTime;
use crate::token::Audience;

/// The `typ` of a request object (RFC 9101 §10.8).
pub const TYP: &str = "oauth-authz-req+jwt";

const P: Part = Part::Other;

/// What a request object must satisfy.
#[derive(Debug, Clone)]
pub struct RequestObjectPolicy {
    /// The authorization server's issuer identifier: the required `aud`.
    pub issuer: String,
    /// The authenticated client: the required `iss` and `client_id`.
    pub client_id: String,
    /// The accepted signature algorithms.
    pub algs: AlgSet,
    /// The longest `exp - nbf`, seconds (FAPI 2.0 Message Signing: 3600).
    pub max_lifetime: u64,
    /// How far in the past `nbf` may be, seconds (FAPI 2.0 Message Signing: 3600).
    pub max_age: u64,
    /// Clock skew allowed on `nbf` and `exp`, seconds.
    pub leeway: u64,
}

impl RequestObjectPolicy {
    /// FAPI 2.0 Message Signing's limits (60 minutes, 10 s leeway) for `client_id` at `issuer`.
    pub fn fapi2(issuer: impl Into<String>, client_id: impl Into<String>, algs: AlgSet) -> Self {
        RequestObjectPolicy {
            issuer: issuer.into(),
            client_id: client_id.into(),
            algs,
            max_lifetime: 3600,
            max_age: 3600,
            leeway: 10,
        }
    }
}

/// A request object that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedRequestObject {
    /// Every claim: the authorization request's parameters (`iss`, `aud`, `exp`, `nbf`, `iat`,
    /// `jti` included).
    pub params: serde_json::Map<String, serde_json::Value>,
    /// `exp`.
    pub exp: UnixTime,
    /// `jti`, if present.
    pub jti: Option<String>,
}

impl VerifiedRequestObject {
    /// A parameter that must be a string, if present.
    ///
    /// # Errors
    /// [`Error::RequestObjectInvalid`] if it is present and not a string.
    pub fn string(&self, name: &'static str) -> Result<Option<&str>> {
        match self.params.get(name) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(Error::RequestObjectInvalid {
                what: "a parameter that must be a string is not",
            }),
        }
    }
}

#[derive(Deserialize)]
struct Registered {
    iss: Option<String>,
    client_id: Option<String>,
    aud: Option<Audience>,
    exp: Option<u64>,
    nbf: Option<u64>,
    jti: Option<String>,
}

fn invalid(what: &'static str) -> Error {
    Error::RequestObjectInvalid { what }
}

/// Verifies a request object from `policy.client_id` with the client's `keys` at `now`.
///
/// # Errors
/// JOSE failures as [`Error::Malformed`], [`Error::AlgNotAllowed`], [`Error::WrongType`],
/// [`Error::UnknownKey`], [`Error::BadSignature`] (with [`Part::Other`]); claim failures as
/// [`Error::MissingClaim`] or [`Error::RequestObjectInvalid`] naming the check. An authorization
/// server answers every one with `invalid_request_object`.
pub fn verify_request_object(
    jwt: &str,
    keys: &Jwks,
    policy: &RequestObjectPolicy,
    verifier: &dyn Verifier,
    now: UnixTime,
) -> Result<VerifiedRequestObject> {
    let jws = Jws::parse(jwt, P, policy.algs)?;
    if jws.typ().is_some() && !typ_is(jws.typ(), TYP) {
        return Err(Error::WrongType { part: P });
    }
    jws.verify_with_set(keys, verifier, P)?;
    let malformed = || Error::Malformed {
        part: P,
        what: "claims",
    };
    let all: serde_json::Value = serde_json::from_slice(jws.payload()).map_err(|_| malformed())?;
    let serde_json::Value::Object(params) = all else {
        return Err(malformed());
    };
    let raw = Registered::deserialize(serde_json::Value::Object(params.clone())).map_err(|_| malformed())?;
    let missing = |claim| Error::MissingClaim { part: P, claim };
    if raw.iss.ok_or(missing("iss"))? != policy.client_id {
        return Err(invalid("iss is not the client"));
    }
    if raw.client_id.ok_or(missing("client_id"))? != policy.client_id {
        return Err(invalid("client_id is not the client"));
    }
    let aud = raw.aud.map(Audience::into_vec).unwrap_or_default();
    if aud.is_empty() {
        return Err(missing("aud"));
    }
    if !aud.contains(&policy.issuer) {
        return Err(invalid("aud is not the issuer"));
    }
    let exp = raw.exp.ok_or(missing("exp"))?;
    let nbf = raw.nbf.ok_or(missing("nbf"))?;
    if nbf > now.saturating_add(policy.leeway) {
        return Err(invalid("nbf is in the future"));
    }
    if now.saturating_sub(nbf) > policy.max_age.saturating_add(policy.leeway) {
        return Err(invalid("nbf is too far in the past"));
    }
    if exp.saturating_add(policy.leeway) <= now {
        return Err(invalid("expired"));
    }
    if exp.saturating_sub(nbf) > policy.max_lifetime {
        return Err(invalid("exp is too long after nbf"));
    }
    if params.contains_key("request") || params.contains_key("request_uri") {
        return Err(invalid("contains request or request_uri"));
    }
    Ok(VerifiedRequestObject {
        params,
        exp,
        jti: raw.jti,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed step fails the test")]
mod tests {
    use super::*;
    use crate::jws::{P256Signer, RustCrypto, Signer, sign_json};
    use alloc::format;
    use alloc::string::ToString;
    use alloc::vec;

    const NOW: u64 = 1_700_000_000;
    const ISSUER: &str = "https://as.example.com";

    fn signer(b: u8) -> P256Signer {
        P256Signer::from_bytes(&[b; 32]).unwrap()
    }

    fn keys(s: &P256Signer) -> Jwks {
        let jwk = s.public_key().to_json();
        Jwks::from_json(format!(r#"{{"keys":[{jwk}]}}"#).as_bytes(), P).unwrap()
    }

    fn policy() -> RequestObjectPolicy {
        RequestObjectPolicy::fapi2(ISSUER, "client-1", AlgSet::from_names(["ES256"], "algs").unwrap())
    }

    fn claims() -> serde_json::Value {
        serde_json::json!({
            "iss": "client-1",
            "client_id": "client-1",
            "aud": ISSUER,
            "nbf": NOW - 5,
            "exp": NOW + 300,
            "jti": "j1",
            "response_type": "code",
            "redirect_uri": "https://client.example/cb",
            "scope": "openid accounts",
            "authorization_details": [{"type": "payment_initiation"}],
        })
    }

    fn sign(s: &P256Signer, typ: Option<&str>, claims: &serde_json::Value) -> String {
        sign_json(s, typ, None, claims).unwrap()
    }

    fn check(jwt: &str) -> Result<VerifiedRequestObject> {
        verify_request_object(jwt, &keys(&signer(1)), &policy(), &RustCrypto, NOW)
    }

    fn with(edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> String {
        let mut c = claims();
        edit(c.as_object_mut().unwrap());
        sign(&signer(1), Some(TYP), &c)
    }

    #[test]
    fn a_good_request_object_gives_its_parameters() {
        let v = check(&sign(&signer(1), Some(TYP), &claims())).unwrap();
        assert_eq!(v.string("scope").unwrap(), Some("openid accounts"));
        assert_eq!(v.params["authorization_details"][0]["type"], "payment_initiation");
        assert_eq!((v.exp, v.jti.as_deref()), (NOW + 300, Some("j1")));
        assert!(v.string("authorization_details").is_err());
        // No typ is accepted; an array aud containing the issuer too.
        assert!(check(&sign(&signer(1), None, &claims())).is_ok());
        assert!(
            check(&with(|c| {
                c.insert("aud".into(), serde_json::json!([ISSUER, "other"]));
            }))
            .is_ok()
        );
    }

    #[test]
    fn every_refusal_names_its_check() {
        let cases: vec::Vec<(String, Error)> = vec![
            (sign(&signer(2), Some(TYP), &claims()), Error::BadSignature { part: P }),
            (sign(&signer(1), Some("JWT"), &claims()), Error::WrongType { part: P }),
            (
                with(|c| drop(c.remove("iss"))),
                Error::MissingClaim { part: P, claim: "iss" },
            ),
            (
                with(|c| drop(c.insert("iss".into(), "other".into()))),
                invalid("iss is not the client"),
            ),
            (
                with(|c| drop(c.remove("client_id"))),
                Error::MissingClaim {
                    part: P,
                    claim: "client_id",
                },
            ),
            (
                with(|c| drop(c.insert("client_id".into(), "other".into()))),
                invalid("client_id is not the client"),
            ),
            (
                with(|c| drop(c.remove("aud"))),
                Error::MissingClaim { part: P, claim: "aud" },
            ),
            (
                with(|c| drop(c.insert("aud".into(), format!("{ISSUER}/par").into()))),
                invalid("aud is not the issuer"),
            ),
            (
                with(|c| drop(c.remove("exp"))),
                Error::MissingClaim { part: P, claim: "exp" },
            ),
            (
                with(|c| drop(c.remove("nbf"))),
                Error::MissingClaim { part: P, claim: "nbf" },
            ),
            (
                with(|c| drop(c.insert("nbf".into(), (NOW + 60).into()))),
                invalid("nbf is in the future"),
            ),
            (
                with(|c| {
                    c.insert("nbf".into(), (NOW - 3700).into());
                    c.insert("exp".into(), (NOW + 10).into());
                }),
                invalid("nbf is too far in the past"),
            ),
            (
                with(|c| drop(c.insert("exp".into(), (NOW - 20).into()))),
                invalid("expired"),
            ),
            (
                with(|c| drop(c.insert("exp".into(), (NOW + 3600).into()))),
                invalid("exp is too long after nbf"),
            ),
            (
                with(|c| drop(c.insert("request_uri".into(), "urn:x".into()))),
                invalid("contains request or request_uri"),
            ),
            (
                with(|c| drop(c.insert("request".into(), "x.y.z".into()))),
                invalid("contains request or request_uri"),
            ),
            (
                with(|c| drop(c.insert("exp".into(), "soon".into()))),
                Error::Malformed {
                    part: P,
                    what: "claims",
                },
            ),
        ];
        for (i, (jwt, expected)) in cases.into_iter().enumerate() {
            assert_eq!(check(&jwt).unwrap_err(), expected, "case {i}");
        }
        // Unsigned and other algorithms never parse.
        let none = format!(
            "{}.{}.",
            crate::b64::encode(br#"{"alg":"none"}"#),
            crate::b64::encode(claims().to_string().as_bytes())
        );
        assert_eq!(check(&none).unwrap_err(), Error::AlgNotAllowed { part: P });
    }
}
