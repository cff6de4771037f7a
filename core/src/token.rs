//! Access tokens: RFC 9068 JWTs ([`verify_jwt`]) and RFC 7662 introspection results
//! ([`verify_introspection`]), both ending in a [`VerifiedToken`].
//!
//! ## The check order of [`verify_jwt`]
//! 1. compact JWS, `alg` in the policy's allowlist (never `none` or a MAC);
//! 2. `typ` is `at+jwt` or `application/at+jwt` (RFC 9068 §4), unless the policy allows untyped
//!    tokens;
//! 3. a key of the issuer's set matches `kid`/`alg`/`kty`, and the signature verifies with it;
//! 4. claims: `iss` equals the policy's issuer; `aud` (string or array) contains an accepted
//!    audience; `exp` is present and not past (with leeway); `nbf`, if present, is not in the
//!    future and `iat` is not in the future (with leeway); for typed tokens the other RFC 9068
//!    claims are present (`sub`, `client_id`, `iat`, `jti`); `cnf`, if present, is well-formed.
//!
//! ## What this module does **not** check
//! Scopes against a route (see [`VerifiedToken::require_scopes`]) and the `cnf` binding against
//! the request (see [`crate::request::check_binding`]). Revocation, for JWTs, is out of scope:
//! use short lifetimes or introspection.
//!
//! [RFC 9068]: https://www.rfc-editor.org/rfc/rfc9068

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use serde::Deserialize;

use crate::cert::X5tS256;
use crate::error::{Error, Part, Result};
use crate::jwk::{Jkt, Jwks, PublicKey};
use crate::jws::{AlgSet, Jws, Verifier};
use crate::time::{NumericDate, UnixTime};

const P: Part = Part::AccessToken;

/// What an access token must satisfy.
#[derive(Debug, Clone)]
pub struct TokenPolicy {
    /// The expected `iss`.
    pub issuer: String,
    /// Accepted audiences; the token's `aud` must contain at least one. Must not be empty.
    pub audiences: Vec<String>,
    /// Allowed algorithms (default ES256, PS256, EdDSA).
    pub algs: AlgSet,
    /// Clock leeway for `exp`, `nbf`, `iat`, in seconds (default 10).
    pub leeway: u64,
    /// Accept JWTs without `typ: at+jwt` (and without the RFC 9068 claims beyond iss, aud, exp).
    /// Weakens the defence against token confusion (an ID token used as an access token).
    pub dangerous_allow_untyped: bool,
}

impl TokenPolicy {
    /// A policy with the safe defaults for an issuer and its audiences.
    pub fn new(issuer: impl Into<String>, audiences: Vec<String>) -> Self {
        TokenPolicy {
            issuer: issuer.into(),
            audiences,
            algs: AlgSet::default(),
            leeway: 10,
            dangerous_allow_untyped: false,
        }
    }
}

/// The `cnf` (confirmation) claim ([RFC 7800]) as keybound reads it.
///
/// [RFC 7800]: https://www.rfc-editor.org/rfc/rfc7800
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Confirmation {
    /// `jkt`: bound to a DPoP key (RFC 9449 §6.1).
    pub jkt: Option<Jkt>,
    /// `x5t#S256`: bound to a client certificate (RFC 8705 §3.1).
    pub x5t_s256: Option<X5tS256>,
}

/// The claims of a verified access token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenClaims {
    /// `iss`.
    pub iss: Option<String>,
    /// `sub`.
    pub sub: Option<String>,
    /// `aud`, always as a list.
    pub aud: Vec<String>,
    /// `exp`, if the token has one (JWTs always do).
    pub exp: Option<i64>,
    /// `iat`.
    pub iat: Option<i64>,
    /// `nbf`.
    pub nbf: Option<i64>,
    /// `client_id`.
    pub client_id: Option<String>,
    /// `jti`.
    pub jti: Option<String>,
    /// The scopes (from the space-separated `scope`).
    pub scopes: Vec<String>,
    /// The confirmation (binding), if any.
    pub cnf: Option<Confirmation>,
    /// The `type` of each entry of `authorization_details` (RFC 9396 §9), in order.
    pub authorization_detail_types: Vec<String>,
}

/// An access token whose signature (or introspection), issuer, audience and time claims were
/// verified. Only this crate builds one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    claims: TokenClaims,
    /// The issuer key that verified the signature (JWTs only).
    key: Option<PublicKey>,
}

impl VerifiedToken {
    /// The claims.
    pub fn claims(&self) -> &TokenClaims {
        &self.claims
    }

    /// The issuer key whose signature verified this token; `None` for an introspection result.
    /// A cache of verified tokens uses it to drop tokens whose key left the issuer's key set.
    pub fn signing_key(&self) -> Option<&PublicKey> {
        self.key.as_ref()
    }

    /// The `cnf.jkt`, if the token is DPoP-bound.
    pub fn jkt(&self) -> Option<&Jkt> {
        self.claims.cnf.as_ref().and_then(|c| c.jkt.as_ref())
    }

    /// The `cnf.x5t#S256`, if the token is certificate-bound.
    pub fn x5t_s256(&self) -> Option<&X5tS256> {
        self.claims.cnf.as_ref().and_then(|c| c.x5t_s256.as_ref())
    }

    /// Whether the token is still valid at `now` (for caches): `exp` + `leeway` not passed.
    pub fn valid_at(&self, now: UnixTime, leeway: u64) -> bool {
        self.claims.exp.is_none_or(|exp| within(exp, leeway, now))
    }

    /// Checks that the token has every scope in `required`.
    ///
    /// # Errors
    /// [`Error::InsufficientScope`] if one is missing.
    pub fn require_scopes<S: AsRef<str>>(&self, required: &[S]) -> Result<()> {
        if required
            .iter()
            .all(|r| self.claims.scopes.iter().any(|s| s == r.as_ref()))
        {
            Ok(())
        } else {
            Err(Error::InsufficientScope)
        }
    }

    /// Checks that the token's `authorization_details` (RFC 9396) have an entry of every type in
    /// `required`.
    ///
    /// # Errors
    /// [`Error::AuthorizationDetailsMissing`] if one is missing.
    pub fn require_authorization_detail_types<S: AsRef<str>>(&self, required: &[S]) -> Result<()> {
        if required
            .iter()
            .all(|r| self.claims.authorization_detail_types.iter().any(|t| t == r.as_ref()))
        {
            Ok(())
        } else {
            Err(Error::AuthorizationDetailsMissing)
        }
    }
}

/// Whether `exp` (with `leeway`) is still ahead of `now`: the one expiry rule of access and ID
/// tokens.
pub(crate) fn within(exp: i64, leeway: u64, now: UnixTime) -> bool {
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    exp.saturating_add(i64::try_from(leeway).unwrap_or(i64::MAX)) > now
}

/// An `aud` claim: one string or a list (RFC 7519 §4.1.3).
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    /// The audiences as a list.
    pub(crate) fn into_vec(self) -> Vec<String> {
        match self {
            Audience::One(a) => alloc::vec![a],
            Audience::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
struct RawCnf {
    jkt: Option<String>,
    #[serde(rename = "x5t#S256")]
    x5t_s256: Option<String>,
}

#[derive(Deserialize)]
struct RawClaims {
    active: Option<bool>,
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    exp: Option<NumericDate>,
    iat: Option<NumericDate>,
    nbf: Option<NumericDate>,
    client_id: Option<String>,
    jti: Option<String>,
    scope: Option<String>,
    cnf: Option<RawCnf>,
    token_type: Option<String>,
    token_use: Option<String>,
    authorization_details: Option<serde_json::Value>,
}

impl RawClaims {
    fn into_claims(self) -> Result<TokenClaims> {
        let cnf = match self.cnf {
            None => None,
            Some(c) => {
                let jkt = c.jkt.as_deref().map(|j| Jkt::parse(j, P)).transpose()?;
                let x5t_s256 = c.x5t_s256.as_deref().map(X5tS256::parse_cnf).transpose()?;
                // A cnf with neither method we support cannot be enforced: refuse the token
                // rather than treat it as unbound.
                if jkt.is_none() && x5t_s256.is_none() {
                    return Err(Error::Malformed {
                        part: P,
                        what: "cnf without jkt or x5t#S256",
                    });
                }
                Some(Confirmation { jkt, x5t_s256 })
            }
        };
        // RFC 9396 §9: an array of objects, each with a string `type`; anything else cannot be
        // enforced and refuses the token.
        let authorization_detail_types = match &self.authorization_details {
            None => Vec::new(),
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .map(|d| d.get("type").and_then(serde_json::Value::as_str).map(String::from))
                .collect::<Option<Vec<String>>>()
                .ok_or(Error::Malformed {
                    part: P,
                    what: "authorization_details entry without a string type",
                })?,
            Some(_) => {
                return Err(Error::Malformed {
                    part: P,
                    what: "authorization_details is not an array",
                });
            }
        };
        Ok(TokenClaims {
            authorization_detail_types,
            iss: self.iss,
            sub: self.sub,
            aud: self.aud.map(Audience::into_vec).unwrap_or_default(),
            exp: self.exp.map(|d| d.0),
            iat: self.iat.map(|d| d.0),
            nbf: self.nbf.map(|d| d.0),
            client_id: self.client_id,
            jti: self.jti,
            scopes: self
                .scope
                .as_deref()
                .unwrap_or("")
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            cnf,
        })
    }
}

fn check_times(c: &TokenClaims, policy: &TokenPolicy, now: UnixTime) -> Result<()> {
    let now_i = i64::try_from(now).unwrap_or(i64::MAX);
    let leeway = i64::try_from(policy.leeway).unwrap_or(i64::MAX);
    if c.exp.is_some_and(|exp| !within(exp, policy.leeway, now)) {
        return Err(Error::TokenExpired);
    }
    if c.nbf.is_some_and(|nbf| nbf > now_i.saturating_add(leeway)) {
        return Err(Error::TokenNotYetValid);
    }
    if c.iat.is_some_and(|iat| iat > now_i.saturating_add(leeway)) {
        return Err(Error::TokenIssuedInFuture);
    }
    Ok(())
}

fn check_audience(c: &TokenClaims, policy: &TokenPolicy) -> Result<()> {
    if c.aud.iter().any(|a| policy.audiences.iter().any(|p| p == a)) {
        Ok(())
    } else {
        Err(Error::AudienceMismatch)
    }
}

/// Verifies an RFC 9068 JWT access token, in the order documented in the module docs.
///
/// # Errors
/// The first failed check; every error maps to `invalid_token`.
pub fn verify_jwt(
    token: &str,
    keys: &Jwks,
    policy: &TokenPolicy,
    now: UnixTime,
    verifier: &dyn Verifier,
) -> Result<VerifiedToken> {
    let jws = Jws::parse(token, P, policy.algs)?;
    let typed = crate::jws::typ_is(jws.typ(), "at+jwt");
    if !typed && !policy.dangerous_allow_untyped {
        return Err(Error::WrongType { part: P });
    }
    if jws.jwk().is_some() {
        // A token must be verified with the issuer's keys, never a key it carries itself.
        return Err(Error::Malformed {
            part: P,
            what: "jwk header in an access token",
        });
    }
    let key = jws.verify_with_set(keys, verifier, P)?.key().clone();
    let raw: RawClaims = serde_json::from_slice(jws.payload()).map_err(|_| Error::Malformed {
        part: P,
        what: "claims",
    })?;
    let claims = raw.into_claims()?;
    let missing = |claim| Error::MissingClaim { part: P, claim };
    let iss = claims.iss.as_deref().ok_or(missing("iss"))?;
    if iss != policy.issuer {
        return Err(Error::IssuerMismatch);
    }
    if claims.aud.is_empty() {
        return Err(missing("aud"));
    }
    check_audience(&claims, policy)?;
    if claims.exp.is_none() {
        return Err(missing("exp"));
    }
    check_times(&claims, policy, now)?;
    if typed {
        claims.sub.as_ref().ok_or(missing("sub"))?;
        claims.client_id.as_ref().ok_or(missing("client_id"))?;
        claims.iat.ok_or(missing("iat"))?;
        claims.jti.as_ref().ok_or(missing("jti"))?;
    }
    Ok(VerifiedToken { claims, key: Some(key) })
}

/// The claims of a JWT (its payload, as JSON), for reading claims keybound does not model.
/// Only for a token already verified: this checks nothing. `None` if it is not a JWT with a JSON
/// object payload.
pub fn jwt_claims(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = crate::b64::decode(payload).ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .filter(serde_json::Value::is_object)
}

/// The claim at the JSON pointer `pointer` (RFC 6901, e.g. `/address/country`) of `claims`, as
/// text for an HTTP header: a string as it is, anything else as compact JSON. `None` if the claim
/// is absent, `null`, or a string with a control character (which a header cannot carry).
pub fn claim_text(claims: &serde_json::Value, pointer: &str) -> Option<String> {
    match claims.pointer(pointer)? {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) if s.chars().any(char::is_control) => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// The `iss` claim of a JWT, **unverified**: only for choosing which issuer's keys and policy to
/// verify it with. `None` if the token is not a JWT with a string `iss` (an opaque token).
pub fn unverified_issuer(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = crate::b64::decode(payload).ok()?;
    serde_json::from_slice::<Iss>(&bytes).ok()?.iss
}

/// Turns an RFC 7662 introspection response (JSON) into a verified token.
///
/// The response comes from the authorization server over an authenticated channel, so it is
/// trusted as to the token's state: `active` must be `true`; the answer must be about an access
/// token: `token_type` `Bearer` or `DPoP` (any letter case; a missing `token_type` only with
/// [`TokenPolicy::dangerous_allow_untyped`]) and `token_use`, when present, `access_token`, so a
/// refresh token an authorization server reports as active is never taken for an access token
/// ([RFC 6749 §1.5], [RFC 7662 §2.2]); `aud` must contain one of the policy's audiences (a token
/// for another resource server is refused); `iss`, when present, must be the policy's issuer;
/// `exp`/`nbf`/`iat`, when present, are checked with leeway. `cnf` carries the binding.
///
/// # Errors
/// [`Error::TokenInactive`] unless `active` is `true`; [`Error::NotAnAccessToken`] for another
/// kind of token or an untyped answer; [`Error::MissingClaim`] without `aud`;
/// [`Error::Malformed`] for JSON that is not an introspection response; the claim errors of
/// [`verify_jwt`].
///
/// [RFC 6749 §1.5]: https://www.rfc-editor.org/rfc/rfc6749#section-1.5
/// [RFC 7662 §2.2]: https://www.rfc-editor.org/rfc/rfc7662#section-2.2
pub fn verify_introspection(response: &[u8], policy: &TokenPolicy, now: UnixTime) -> Result<VerifiedToken> {
    let raw: RawClaims = serde_json::from_slice(response).map_err(|_| Error::Malformed {
        part: P,
        what: "introspection response",
    })?;
    if raw.active != Some(true) {
        return Err(Error::TokenInactive);
    }
    // Only an access token may pass: RFC 7662 lets a server answer for refresh tokens too.
    let access_type = |t: &str| t.eq_ignore_ascii_case("dpop") || t.eq_ignore_ascii_case("bearer");
    match raw.token_type.as_deref() {
        Some(t) if access_type(t) => {}
        None if policy.dangerous_allow_untyped => {}
        _ => return Err(Error::NotAnAccessToken),
    }
    if raw.token_use.as_deref().is_some_and(|u| u != "access_token") {
        return Err(Error::NotAnAccessToken);
    }
    let claims = raw.into_claims()?;
    if claims.iss.as_deref().is_some_and(|iss| iss != policy.issuer) {
        return Err(Error::IssuerMismatch);
    }
    if claims.aud.is_empty() {
        return Err(Error::MissingClaim { part: P, claim: "aud" });
    }
    check_audience(&claims, policy)?;
    check_times(&claims, policy, now)?;
    Ok(VerifiedToken { claims, key: None })
}
