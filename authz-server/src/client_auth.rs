//! Client authentication at the PAR, token (and later introspection/revocation) endpoints.
//!
//! Methods: `private_key_jwt` (RFC 7523 §2.2 / OIDC Core §9, with the FAPI 2.0 rules below),
//! `tls_client_auth` and `self_signed_tls_client_auth` (RFC 8705 §2), and `none` for public
//! clients. Every failure is `invalid_client` (401); the log gets the reason.
//!
//! ## `private_key_jwt` checks, in order
//! 1. `client_assertion_type` is `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`;
//! 2. the assertion is a compact JWS with `alg` ES256, PS256 or EdDSA (never RS256, `none`, MAC);
//! 3. its unverified `iss` names a registered `private_key_jwt` client (and equals `client_id`
//!    when that is sent too);
//! 4. the signature verifies with a key of that client's JWKS;
//! 5. `iss` and `sub` are the client id; `aud` is the issuer identifier **as a string** (FAPI 2.0
//!    §5.3.2.1: an array, the token or PAR endpoint URL are refused);
//! 6. `exp` is present and not past; `iat` and `nbf`, if present, are at most 10 s in the future
//!    (so 8 s of clock skew are tolerated, 60 s are not); `exp` is at most one hour ahead;
//! 7. `jti` is present (1-256 bytes).
//!
//! Not checked here: `jti` replay. [`AuthenticatedClient::assertion_replay`] gives the key and
//! expiry; the endpoint records it last, after every other check passed.

use std::sync::Arc;

use keybound_core::Part;
use keybound_core::jws::{Alg, AlgSet, Jws};

use crate::crypto::Ring;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::{AuthMethod, Client};
use crate::error::OAuthError;
use crate::http::Params;
use crate::state::App;
use crate::tls::PeerCerts;

/// The `client_assertion_type` for JWT client authentication.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Clock leeway for assertion `iat`/`nbf`/`exp`, seconds.
pub const LEEWAY: u64 = 10;
/// The longest assertion lifetime accepted (`exp - now`), seconds.
pub const MAX_ASSERTION_LIFETIME: u64 = 3600;

/// An authenticated client.
#[derive(Debug)]
pub struct AuthenticatedClient {
    /// The client.
    pub client: Arc<Client>,
    /// The method it used.
    pub method: AuthMethod,
    /// The assertion's replay key and its expiry, for `private_key_jwt`.
    pub assertion_replay: Option<([u8; 32], u64)>,
}

#[derive(Deserialize)]
struct AssertionClaims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<serde_json::Value>,
    exp: Option<serde_json::Number>,
    iat: Option<serde_json::Number>,
    nbf: Option<serde_json::Number>,
    jti: Option<String>,
}

fn unverified_iss(payload: &[u8]) -> Option<String> {
    serde_json::from_slice::<AssertionClaims>(payload).ok()?.iss
}

fn num(n: &serde_json::Number) -> Option<i64> {
    n.as_i64()
        .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
}

fn assertion_algs() -> AlgSet {
    AlgSet::EMPTY.with(Alg::Es256).with(Alg::Ps256).with(Alg::EdDsa)
}

/// Authenticates the client of a request.
///
/// # Errors
/// `invalid_client` (401) for every failure; `invalid_request` if the request mixes methods.
pub async fn authenticate(
    app: &App,
    params: &Params,
    peer: &PeerCerts,
    authorization_header: bool,
    now: u64,
) -> Result<AuthenticatedClient, OAuthError> {
    if authorization_header {
        // client_secret_basic is not supported; a client must not use two methods.
        return Err(OAuthError::invalid_client(
            "Authorization header (client_secret_basic) not supported",
        ));
    }
    if params.get("client_secret").is_some() {
        return Err(OAuthError::invalid_client("client_secret_post not supported"));
    }
    match (params.get("client_assertion_type"), params.get("client_assertion")) {
        (None, None) => {}
        (Some(JWT_BEARER), Some(assertion)) => return private_key_jwt(app, params, assertion, now).await,
        (Some(_), Some(_)) => return Err(OAuthError::invalid_client("unsupported client_assertion_type")),
        _ => {
            return Err(OAuthError::invalid_client(
                "client_assertion without its type or the reverse",
            ));
        }
    }
    let client_id = params
        .get("client_id")
        .ok_or_else(|| OAuthError::invalid_client("no client_id"))?;
    let client = app
        .client(client_id)
        .await?
        .ok_or_else(|| OAuthError::invalid_client("unknown client"))?;
    let ok = match client.auth_method {
        AuthMethod::PrivateKeyJwt => false,
        AuthMethod::TlsClientAuth => crate::tls::check_tls_client_auth(
            app.ca.as_ref(),
            peer,
            client.tls_subject_dn.as_deref(),
            client.tls_san_dns.as_deref(),
        ),
        AuthMethod::SelfSignedTlsClientAuth => crate::tls::check_self_signed(peer, client.certificate.as_ref()),
        AuthMethod::None => true,
    };
    if !ok {
        return Err(OAuthError::invalid_client(format!(
            "{} authentication failed for {client_id}",
            client.auth_method.as_str()
        )));
    }
    Ok(AuthenticatedClient {
        method: client.auth_method,
        client,
        assertion_replay: None,
    })
}

async fn private_key_jwt(
    app: &App,
    params: &Params,
    assertion: &str,
    now: u64,
) -> Result<AuthenticatedClient, OAuthError> {
    let bad = |why: &str| OAuthError::invalid_client(format!("client assertion: {why}"));
    let jws = Jws::parse(assertion, Part::Other, assertion_algs()).map_err(|e| bad(e.reason()))?;
    let iss = unverified_iss(jws.payload()).ok_or_else(|| bad("no iss"))?;
    if params.get("client_id").is_some_and(|id| id != iss) {
        return Err(bad("client_id differs from iss"));
    }
    let client = app.client(&iss).await?.ok_or_else(|| bad("unknown client"))?;
    if client.auth_method != AuthMethod::PrivateKeyJwt {
        return Err(bad("client is not registered for private_key_jwt"));
    }
    let jwks = client.jwks.as_ref().ok_or_else(|| bad("client has no keys"))?;
    jws.verify_with_set(jwks, &Ring, Part::Other)
        .map_err(|e| bad(e.reason()))?;
    let claims: AssertionClaims = serde_json::from_slice(jws.payload()).map_err(|_| bad("claims"))?;
    if claims.sub.as_deref() != Some(client.id.as_str()) {
        return Err(bad("sub is not the client_id"));
    }
    match &claims.aud {
        Some(serde_json::Value::String(aud)) if *aud == app.config.issuer => {}
        _ => return Err(bad("aud is not the issuer identifier as a string")),
    }
    let now_i = i64::try_from(now).unwrap_or(i64::MAX);
    let leeway = i64::try_from(LEEWAY).unwrap_or(0);
    let exp = claims.exp.as_ref().and_then(num).ok_or_else(|| bad("no exp"))?;
    // A negative `exp` is long past.
    let exp = u64::try_from(exp).unwrap_or(0);
    check_exp(exp, now).map_err(bad)?;
    for (name, v) in [("iat", &claims.iat), ("nbf", &claims.nbf)] {
        if let Some(n) = v {
            let t = num(n).ok_or_else(|| bad(name))?;
            if t > now_i.saturating_add(leeway) {
                return Err(bad(&format!("{name} in the future")));
            }
        }
    }
    let jti = claims
        .jti
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or_else(|| bad("no jti"))?;
    let mut h = Sha256::new();
    h.update(b"keybound-client-assertion-v1\0");
    h.update(client.id.as_bytes());
    h.update(b"\0");
    h.update(jti.as_bytes());
    let key: [u8; 32] = h.finalize().into();
    Ok(AuthenticatedClient {
        client,
        method: AuthMethod::PrivateKeyJwt,
        assertion_replay: Some((key, assertion_replay_expires_at(exp))),
    })
}

/// The `exp` rule of an assertion at `now`: accepted while `now < exp`, and `exp` at most
/// [`MAX_ASSERTION_LIFETIME`] ahead.
fn check_exp(exp: u64, now: u64) -> Result<(), &'static str> {
    if exp <= now {
        return Err("expired");
    }
    if exp > now.saturating_add(MAX_ASSERTION_LIFETIME) {
        return Err("exp too far in the future");
    }
    Ok(())
}

/// Until when the `jti` record of an assertion with this `exp` is kept. The assertion is
/// accepted up to the second before `exp` ([`check_exp`]), so a record expiring at `exp` would
/// be live ([`keybound_core::dpop::replay_record_live`]) whenever the assertion is accepted;
/// [`LEEWAY`] more seconds keep it live while an instance whose clock is up to that much behind
/// (several instances sharing one database) still accepts the assertion.
fn assertion_replay_expires_at(exp: u64) -> u64 {
    exp.saturating_add(LEEWAY)
}

/// Records the assertion's `jti` (the last step of client authentication).
///
/// # Errors
/// `invalid_client` if the assertion was used before; `server_error` on storage failure.
pub async fn record_assertion(app: &App, client: &AuthenticatedClient, now: u64) -> Result<(), OAuthError> {
    if let Some((key, exp)) = client.assertion_replay
        && !app.store.remember_once(&key, exp, now).await?
    {
        return Err(OAuthError::invalid_client("client assertion replayed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;
    use crate::test_support;
    use keybound_core::jws::sign_json;

    fn assertion(exp: u64, jti: &str) -> Params {
        let jwt = sign_json(
            &test_support::fapi_key(),
            Some("JWT"),
            None,
            &serde_json::json!({
                "iss": "fapi", "sub": "fapi", "aud": test_support::ISSUER,
                "exp": exp, "jti": jti,
            }),
        )
        .unwrap();
        let mut p = Params::default();
        p.values.insert("client_assertion_type".into(), JWT_BEARER.into());
        p.values.insert("client_assertion".into(), jwt);
        p
    }

    async fn present(app: &App, params: &Params, now: u64) -> Result<(), OAuthError> {
        let client = authenticate(app, params, &PeerCerts(None), false, now).await?;
        record_assertion(app, &client, now).await
    }

    /// An assertion is accepted through the second before its `exp`; its `jti` record must be
    /// live through that second too (and through a purge), so a second use then is a replay.
    #[tokio::test]
    async fn a_client_assertion_in_its_last_second_is_accepted_once() {
        let app = test_support::app().await;
        let now = 1_800_000_000;
        let params = assertion(now + 1, "last-second");
        present(&app, &params, now).await.unwrap();
        app.store.purge_expired(now).await.unwrap();
        let err = present(&app, &params, now).await.unwrap_err();
        assert_eq!(
            (err.code, err.reason.as_str()),
            (crate::error::Code::InvalidClient, "client assertion replayed")
        );
        // At `exp` it is refused as expired.
        let err = present(&app, &assertion(now + 1, "other"), now + 1).await.unwrap_err();
        assert_eq!(
            (err.code, err.reason.as_str()),
            (crate::error::Code::InvalidClient, "client assertion: expired")
        );
    }

    /// Every second at which an assertion is accepted, its record (kept until
    /// [`assertion_replay_expires_at`]) is live by keybound-core's one liveness rule, for every
    /// `exp` the lifetime limit admits, leeway included.
    #[test]
    fn an_assertion_record_outlives_every_second_the_assertion_is_accepted() {
        let now0 = 1_800_000_000u64;
        for lifetime in 1..=MAX_ASSERTION_LIFETIME {
            let exp = now0 + lifetime;
            let expires_at = assertion_replay_expires_at(exp);
            for now in [now0, exp.saturating_sub(1), exp, exp + LEEWAY] {
                if check_exp(exp, now).is_ok() {
                    assert!(
                        keybound_core::dpop::replay_record_live(expires_at, now),
                        "exp {exp}, now {now}"
                    );
                }
            }
        }
    }
}
