//! The token endpoint (`POST /token`): client authentication, the DPoP proof, then one module
//! per grant ([`authorization_code`], [`refresh_token`], [`client_credentials`]); the tokens
//! themselves are [`crate::tokens`]'s.
//!
//! Access tokens are RFC 9068 JWTs (`typ: at+jwt`, ES256, `kid`) with `iss`, `sub`, `aud` (the
//! one resource server the token is for, RFC 8707: see [`crate::indicators`]), `client_id`,
//! `scope`, `iat`, `exp`, `jti`, and always a `cnf`:
//! `jkt` for DPoP clients (`token_type: DPoP`), `x5t#S256` for mTLS clients (`token_type:
//! Bearer`, RFC 8705 §3). A client registered for a sender constraint never gets an unbound
//! token: without the proof (DPoP) or certificate (mTLS) the request fails.
//!
//! ## Order of checks for `grant_type=authorization_code`
//! 1. form without repeated parameters; client authentication (stateless part);
//! 2. the client may use the grant (`unauthorized_client`);
//! 3. the DPoP proof (if sent) is valid for `POST` to this endpoint, with a nonce when required;
//!    the binding the client needs is present (`invalid_dpop_proof` / `invalid_request`);
//! 4. the code exists, belongs to this client, is not expired (`invalid_grant`); a code that was
//!    already redeemed fails, and revokes every token issued from it (RFC 6749 §4.1.2) only if
//!    the presenter proves it is the client (see `code_reused`);
//! 5. `redirect_uri` is the one of the request; PKCE S256 `code_verifier` matches
//!    (`invalid_grant`); a code bound to a DPoP key (`dpop_jkt`) needs a proof with that key;
//!    the `resource` (at most one) is one the code was granted for (`invalid_target`);
//! 6. the assertion `jti` and proof `jti` are recorded (replays refused);
//! 7. the code is marked used atomically (a concurrent redemption loses and revokes);
//! 8. tokens are issued and recorded for introspection and revocation.

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::config::{GrantType, SenderConstraint};
use crate::error::{Code, OAuthError};
use crate::http::Params;
use crate::paths;
use crate::respond::json_no_store;
use crate::state::{App, AppState};
use crate::tls::PeerCerts;

use crate::tokens::{Binding, IssuedToken, binding_for};

pub mod authorization_code;
pub mod client_credentials;
pub mod refresh_token;

/// `POST /token`.
pub async fn token(
    State(app): State<AppState>,
    Extension(peer): Extension<PeerCerts>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match token_inner(&app, &peer, &headers, &body).await {
        Ok(res) => res,
        Err(e) => e.into_response(),
    }
}

async fn token_inner(app: &App, peer: &PeerCerts, headers: &HeaderMap, body: &[u8]) -> Result<Response, OAuthError> {
    let now = app.now();
    let params = Params::from_form(headers, body)?;
    let client =
        crate::client_auth::authenticate(app, &params, peer, headers.contains_key(header::AUTHORIZATION), now).await?;
    let grant_type = params.require("grant_type")?;
    let grant = match grant_type {
        "authorization_code" => GrantType::AuthorizationCode,
        "refresh_token" => GrantType::RefreshToken,
        "client_credentials" => GrantType::ClientCredentials,
        other => return Err(OAuthError::new(Code::UnsupportedGrantType, other.to_string())),
    };
    if !client.client.grant_types.contains(&grant) {
        return Err(OAuthError::new(Code::UnauthorizedClient, grant_type.to_string()));
    }
    let proof = crate::proof::check(app, headers, paths::TOKEN, now)?;
    let mut res = match grant {
        GrantType::AuthorizationCode => {
            let binding = binding_for(&client, proof.as_ref(), peer)?;
            authorization_code::redeem(app, &client, &params, proof.as_ref(), &binding, peer, now).await?
        }
        GrantType::ClientCredentials => {
            let binding = binding_for(&client, proof.as_ref(), peer)?;
            client_credentials::grant(app, &client, &params, proof.as_ref(), &binding, peer, now).await?
        }
        GrantType::RefreshToken => refresh_token::refresh(app, &client, &params, proof.as_ref(), peer, now).await?,
    };
    let binding = match client.client.sender_constraint {
        SenderConstraint::Dpop => "dpop",
        SenderConstraint::Mtls => "mtls",
    };
    app.metrics.token(grant.as_str(), binding);
    if let Some(n) = proof
        .and_then(|p| p.next_nonce)
        .and_then(|n| HeaderValue::from_str(&n).ok())
    {
        res.headers_mut().insert("dpop-nonce", n);
    }
    Ok(res)
}

/// Scopes requested with `scope` (default: `default`), each of which must be in `allowed`.
pub(crate) fn requested_scopes(
    params: &Params,
    allowed: &[String],
    default: &[String],
) -> Result<Vec<String>, OAuthError> {
    let Some(scope) = params.get("scope") else {
        return Ok(default.to_vec());
    };
    let mut out: Vec<String> = Vec::new();
    for s in scope.split(' ').filter(|s| !s.is_empty()) {
        if !allowed.iter().any(|a| a == s) {
            return Err(OAuthError::new(Code::InvalidScope, format!("scope {s}")));
        }
        if !out.iter().any(|o| o == s) {
            out.push(s.to_string());
        }
    }
    Ok(out)
}

pub(crate) fn token_response(
    app: &App,
    at: &IssuedToken,
    binding: &Binding,
    scopes: &[String],
    details: Option<&serde_json::Value>,
) -> Response {
    let mut body = serde_json::json!({
        "access_token": at.jwt,
        "token_type": binding.token_type(),
        "expires_in": app.config.lifetimes.access_token,
        "scope": scopes.join(" "),
    });
    if let (Some(d), Some(o)) = (details, body.as_object_mut()) {
        o.insert("authorization_details".into(), d.clone());
    }
    json_no_store(StatusCode::OK, &body)
}
