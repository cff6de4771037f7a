//! OpenID Connect ID tokens, as a client (relying party) validates them after the code exchange
//! or a refresh ([OpenID Connect Core 1.0 §3.1.3.7]).
//!
//! ## The check order of [`verify_id_token`]
//! 1. compact JWS, `alg` in the policy's allowlist (never `none` or a MAC; RS256 is allowed by
//!    default here, since it is OpenID Connect's default ID token algorithm); no `jwk` header;
//!    `typ`, when present, is `JWT` (so an access token, `at+jwt`, or a DPoP proof is refused);
//! 2. a key of the issuer's set (its `jwks_uri`) matches `kid`/`alg`/`kty`, and the signature
//!    verifies with it;
//! 3. claims: `iss` is the issuer ([`Error::IdTokenIssuerMismatch`]); `sub` is present; `aud`
//!    (string or array) contains the client id ([`Error::IdTokenAudienceMismatch`]); `azp`, when
//!    present, is the client id, and is required when `aud` has several values
//!    ([`Error::IdTokenAzpMismatch`]); `exp` is not past ([`Error::IdTokenExpired`]); `iat` is not
//!    in the future ([`Error::IdTokenIssuedInFuture`]) nor older than
//!    [`IdTokenPolicy::max_iat_age`] ([`Error::IdTokenTooOld`]), both with leeway; the `nonce` is
//!    the one the client sent in the authorization request, when it sent one
//!    ([`Error::IdTokenNonceMismatch`]; absent: [`Error::MissingClaim`]);
//! 4. with the access token issued beside it ([`IdTokenChecks::access_token`]): `at_hash`, when
//!    present, is the base64url of the left half of the access token's hash by the `alg`'s hash
//!    (SHA-256 for ES256, PS256, RS256; SHA-512 for EdDSA with Ed25519) ([OpenID Connect Core
//!    1.0 §3.1.3.8] and §3.2.2.9; [`Error::IdTokenAtHashMismatch`]);
//! 5. for an ID token from a refresh ([`IdTokenChecks::previous`], §12.2): `iss`, `sub` and
//!    `aud` are the original ID token's ([`Error::IdTokenRefreshMismatch`]).
//!
//! A claim that is missing or of the wrong JSON type is [`Error::MissingClaim`] with
//! [`Part::IdToken`]; every failure maps to `invalid_token`.
//!
//! Callers that verify signatures asynchronously (WebCrypto in a browser) use the same checks in
//! two steps: [`UnverifiedIdToken::parse`] (step 1), then, after verifying
//! [`UnverifiedIdToken::signing_input`] and [`UnverifiedIdToken::signature`] with one of
//! [`UnverifiedIdToken::candidates`], [`UnverifiedIdToken::signature_verified_by`] (step 3).
//!
//! ## What this module does **not** check
//! A missing `at_hash` (optional for the code flow, whose tokens come straight from the token
//! endpoint over TLS, §3.1.3.8), `c_hash`, `auth_time` against a `max_age` request, and `acr`
//! values: they are in [`IdTokenClaims::all`] for the caller.
//!
//! The payload is read straight into the claims this module checks (no JSON value tree, so a
//! browser's wasm carries only serde_json's parser); a payload that is not a JSON object, or has
//! a checked claim twice, is [`Error::Malformed`].
//!
//! [OpenID Connect Core 1.0 §3.1.3.7]: https://openid.net/specs/openid-connect-core-1_0.html#IDTokenValidation
//! [OpenID Connect Core 1.0 §3.1.3.8]: https://openid.net/specs/openid-connect-core-1_0.html#CodeIDToken

use alloc::string::String;
use alloc::vec::Vec;

use serde::Deserialize;
use sha2::{Digest, Sha256, Sha512};

use crate::error::{Error, Part, Result};
use crate::jwk::{Jwk, Jwks};
use crate::jws::{Alg, AlgSet, Jws, Verifier};
use crate::time::{NumericDate, UnixTime};
use crate::token::{Audience, within};

const P: Part = Part::IdToken;

/// The default clock leeway for ID tokens (seconds): browsers' clocks drift more than servers'.
pub const DEFAULT_LEEWAY: u64 = 60;

/// The default oldest `iat` accepted (seconds before `now`, plus leeway): an ID token is checked
/// when it arrives from the token endpoint, so it was just issued.
pub const DEFAULT_MAX_IAT_AGE: u64 = 600;

/// What an ID token must satisfy.
#[derive(Debug, Clone)]
pub struct IdTokenPolicy {
    /// The issuer identifier the client talked to (the expected `iss`).
    pub issuer: String,
    /// The client's id (must be in `aud`; the `azp` when there is one).
    pub client_id: String,
    /// Allowed algorithms (default ES256, PS256, EdDSA and RS256, OpenID Connect's default).
    pub algs: AlgSet,
    /// Clock leeway for `exp` and `iat`, in seconds (default [`DEFAULT_LEEWAY`]).
    pub leeway: u64,
    /// How old `iat` may be, in seconds (default [`DEFAULT_MAX_IAT_AGE`]).
    pub max_iat_age: u64,
}

impl IdTokenPolicy {
    /// A policy with the defaults for an issuer and a client id.
    pub fn new(issuer: impl Into<String>, client_id: impl Into<String>) -> Self {
        IdTokenPolicy {
            issuer: issuer.into(),
            client_id: client_id.into(),
            algs: AlgSet::default().with(Alg::Rs256),
            leeway: DEFAULT_LEEWAY,
            max_iat_age: DEFAULT_MAX_IAT_AGE,
        }
    }
}

/// The claims of a validated ID token.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct IdTokenClaims {
    /// `iss` (the policy's issuer).
    pub iss: String,
    /// `sub`: the end-user at the issuer.
    pub sub: String,
    /// `aud`, always as a list (contains the client id).
    pub aud: Vec<String>,
    /// `azp`, if present (the client id).
    pub azp: Option<String>,
    /// `exp`.
    pub exp: i64,
    /// `iat`.
    pub iat: i64,
    /// `nonce`, if present.
    pub nonce: Option<String>,
    /// `auth_time`, if present.
    pub auth_time: Option<i64>,
    /// `sid` (the session at the issuer, for logout), if present.
    pub sid: Option<String>,
    /// The payload: every claim, as the JSON text of an object (see [`IdTokenClaims::all`]).
    pub payload: String,
}

/// What an ID token is checked against besides the [`IdTokenPolicy`]: this login's values.
#[derive(Debug, Clone, Copy, Default)]
pub struct IdTokenChecks<'a> {
    /// The `nonce` sent in the authorization request (`None` if none was sent: then the token's
    /// `nonce`, if any, is not checked).
    pub nonce: Option<&'a str>,
    /// The access token of the same token response: its hash is checked against `at_hash` when
    /// the ID token has one.
    pub access_token: Option<&'a str>,
    /// For an ID token from a refresh: the original ID token's claims, whose `iss`, `sub` and
    /// `aud` it must have.
    pub previous: Option<&'a IdTokenClaims>,
}

#[derive(Deserialize)]
struct RawClaims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    azp: Option<String>,
    exp: Option<NumericDate>,
    iat: Option<NumericDate>,
    nonce: Option<String>,
    auth_time: Option<NumericDate>,
    sid: Option<String>,
    at_hash: Option<String>,
}

/// An ID token parsed and checked up to its signature (step 1 of the module docs).
#[derive(Debug)]
pub struct UnverifiedIdToken<'a> {
    jws: Jws<'a>,
}

impl<'a> UnverifiedIdToken<'a> {
    /// Parses an ID token: compact JWS with an allowed `alg`, no `jwk` header, `typ` absent or
    /// `JWT`.
    ///
    /// # Errors
    /// [`Error::Malformed`], [`Error::AlgNotAllowed`] (all with [`Part::IdToken`]) as
    /// [`Jws::parse`]; [`Error::Malformed`] for a `jwk` header; [`Error::WrongType`] for another
    /// `typ`.
    pub fn parse(token: &'a str, policy: &IdTokenPolicy) -> Result<Self> {
        let jws = Jws::parse(token, P, policy.algs)?;
        if jws.jwk().is_some() {
            // Verified with the issuer's keys only, never a key the token carries itself.
            return Err(Error::Malformed {
                part: P,
                what: "jwk header in an ID token",
            });
        }
        if jws.typ().is_some() && !crate::jws::typ_is(jws.typ(), "jwt") {
            return Err(Error::WrongType { part: P });
        }
        Ok(UnverifiedIdToken { jws })
    }

    /// The algorithm from the header.
    pub fn alg(&self) -> Alg {
        self.jws.alg()
    }

    /// The ASCII signing input (`header.payload`) to verify.
    pub fn signing_input(&self) -> &'a str {
        self.jws.signing_input()
    }

    /// The signature (JOSE form: `r || s` for ES256).
    pub fn signature(&self) -> &[u8] {
        self.jws.signature()
    }

    /// The keys of the issuer's set that may have signed it (matching `alg`, `kid`, `kty`).
    ///
    /// # Errors
    /// [`Error::UnknownKey`] if there is none.
    pub fn candidates<'k>(&self, keys: &'k Jwks) -> Result<Vec<&'k Jwk>> {
        let found: Vec<&Jwk> = keys.candidates(self.jws.alg(), self.jws.kid()).collect();
        if found.is_empty() {
            Err(Error::UnknownKey { part: P })
        } else {
            Ok(found)
        }
    }

    /// Checks the claims (steps 3 to 5 of the module docs). Call it only once the signature
    /// verified with one of [`UnverifiedIdToken::candidates`]: this does not look at the
    /// signature.
    ///
    /// # Errors
    /// As [`verify_id_token`]'s claim checks.
    pub fn signature_verified_by(
        self,
        _key: &Jwk,
        policy: &IdTokenPolicy,
        checks: &IdTokenChecks<'_>,
        now: UnixTime,
    ) -> Result<IdTokenClaims> {
        check_claims(self.jws.payload(), self.jws.alg(), policy, checks, now)
    }
}

/// Verifies an ID token, in the order of the module docs, and returns its claims.
///
/// # Errors
/// The first failed check; every error maps to `invalid_token`.
pub fn verify_id_token(
    token: &str,
    keys: &Jwks,
    policy: &IdTokenPolicy,
    checks: &IdTokenChecks<'_>,
    now: UnixTime,
    verifier: &dyn Verifier,
) -> Result<IdTokenClaims> {
    let parsed = UnverifiedIdToken::parse(token, policy)?;
    let key = parsed.jws.verify_with_set(keys, verifier, P)?;
    parsed.signature_verified_by(key, policy, checks, now)
}

/// The `at_hash` (and `c_hash`) of `value` for an ID token signed with `alg`: the base64url of the
/// left half of its hash by the hash of `alg` (SHA-256 for ES256, PS256 and RS256; SHA-512 for
/// EdDSA with Ed25519), OpenID Connect Core §3.1.3.6 and errata.
pub fn left_half_hash(alg: Alg, value: &str) -> String {
    match alg {
        Alg::EdDsa => {
            let hash = Sha512::digest(value.as_bytes());
            crate::b64::encode(hash.get(..32).unwrap_or_default())
        }
        _ => {
            let hash = Sha256::digest(value.as_bytes());
            crate::b64::encode(hash.get(..16).unwrap_or_default())
        }
    }
}

fn check_claims(
    payload: &[u8],
    alg: Alg,
    policy: &IdTokenPolicy,
    checks: &IdTokenChecks<'_>,
    now: UnixTime,
) -> Result<IdTokenClaims> {
    let malformed = || Error::Malformed {
        part: P,
        what: "claims",
    };
    // An object (serde would also read a struct from an array, by position).
    if payload.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(malformed());
    }
    let raw: RawClaims = serde_json::from_slice(payload).map_err(|_| malformed())?;
    let text = core::str::from_utf8(payload).map_err(|_| malformed())?;
    let missing = |claim| Error::MissingClaim { part: P, claim };
    let iss = raw.iss.ok_or(missing("iss"))?;
    if iss != policy.issuer {
        return Err(Error::IdTokenIssuerMismatch);
    }
    let sub = raw.sub.filter(|s| !s.is_empty()).ok_or(missing("sub"))?;
    let aud = raw.aud.map(Audience::into_vec).unwrap_or_default();
    if aud.is_empty() {
        return Err(missing("aud"));
    }
    if !aud.contains(&policy.client_id) {
        return Err(Error::IdTokenAudienceMismatch);
    }
    match raw.azp.as_deref() {
        Some(azp) if azp != policy.client_id => return Err(Error::IdTokenAzpMismatch),
        None if aud.len() > 1 => return Err(missing("azp")),
        _ => {}
    }
    let exp = raw.exp.ok_or(missing("exp"))?.0;
    let iat = raw.iat.ok_or(missing("iat"))?.0;
    let now_unix = now;
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let leeway = i64::try_from(policy.leeway).unwrap_or(i64::MAX);
    let max_age = i64::try_from(policy.max_iat_age).unwrap_or(i64::MAX);
    if !within(exp, policy.leeway, now_unix) {
        return Err(Error::IdTokenExpired);
    }
    if iat > now.saturating_add(leeway) {
        return Err(Error::IdTokenIssuedInFuture);
    }
    if iat.saturating_add(max_age).saturating_add(leeway) < now {
        return Err(Error::IdTokenTooOld);
    }
    if let Some(expected) = checks.nonce {
        match raw.nonce.as_deref() {
            None => return Err(missing("nonce")),
            Some(n) if n != expected => return Err(Error::IdTokenNonceMismatch),
            Some(_) => {}
        }
    }
    if let (Some(at_hash), Some(access_token)) = (raw.at_hash.as_deref(), checks.access_token)
        && at_hash != left_half_hash(alg, access_token)
    {
        return Err(Error::IdTokenAtHashMismatch);
    }
    if let Some(original) = checks.previous
        && (original.iss != iss || original.sub != sub || !same_set(&original.aud, &aud))
    {
        return Err(Error::IdTokenRefreshMismatch);
    }
    Ok(IdTokenClaims {
        iss,
        sub,
        aud,
        azp: raw.azp,
        exp,
        iat,
        nonce: raw.nonce,
        auth_time: raw.auth_time.map(|d| d.0),
        sid: raw.sid,
        payload: text.into(),
    })
}

impl IdTokenClaims {
    /// Every claim of the payload as a JSON value (an object).
    pub fn all(&self) -> serde_json::Value {
        serde_json::from_str(&self.payload).unwrap_or_default()
    }
}

/// Whether two audience lists have the same members (in any order).
fn same_set(a: &[String], b: &[String]) -> bool {
    a.iter().all(|x| b.contains(x)) && b.iter().all(|x| a.contains(x))
}
