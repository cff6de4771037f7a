//! Token introspection (RFC 7662, with the JWT response of RFC 9701) and revocation (RFC 7009).
//!
//! Introspection is for resource servers only: clients registered with `introspection = true`,
//! authenticated like at the token endpoint. An access token is active when its signature (one of
//! this server's published keys), issuer, audience and times verify (keybound-core
//! `verify_jwt`) and its record is not revoked. A refresh token is never active here, not even
//! to the client it was issued to: only access tokens are accepted at a resource server
//! (RFC 6749 §1.5), so the answer for one is `{"active": false}` (RFC 7662 §2.2 lets the server
//! say so for a token it will not accept at the caller). Every active answer carries `aud`, `cnf`
//! and `token_type` (`DPoP` or `Bearer`) so a gateway can check the audience and the binding.
//! With `Accept: application/token-introspection+jwt` the answer is a JWT signed by the server
//! (`typ: token-introspection+jwt`, `aud` the resource server).

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keybound_core::jws::sign_json;

use crate::crypto::Ring;
use keybound_core::token::{TokenPolicy, verify_jwt};

use crate::error::OAuthError;
use crate::http::Params;
use crate::respond::{json_no_store, no_store};
use crate::state::{App, AppState};
use crate::storage::TokenRecord;
use crate::tls::PeerCerts;

/// The media type of a JWT introspection response (RFC 9701 §5).
pub const JWT_MEDIA_TYPE: &str = "application/token-introspection+jwt";

/// Finds the record of a token this server issued, if it is well-formed and signed by it (for
/// access tokens, which must also be unexpired). Revocation state is not checked here.
pub(crate) async fn find(app: &App, token: &str, now: u64) -> Result<Option<TokenRecord>, OAuthError> {
    if token.split('.').count() == 3 {
        let keys = app.keyring().jwks(now, app.key_retention());
        let policy = TokenPolicy::new(app.config.issuer.clone(), app.config.audience.clone());
        let Ok(verified) = verify_jwt(token, &keys, &policy, now, &Ring) else {
            return Ok(None);
        };
        let Some(jti) = verified.claims().jti.as_deref() else {
            return Ok(None);
        };
        Ok(app.store.token(jti).await?.filter(|r| r.kind == ACCESS))
    } else {
        Ok(app
            .store
            .token(&crate::tokens::refresh_id(token))
            .await?
            .filter(|r| r.kind == "refresh"))
    }
}

/// The `kind` of an access-token record.
const ACCESS: &str = "access";

/// The answer for a live access token: its claims, `active: true`, and always its `token_type`
/// (`DPoP` or `Bearer`) and `aud`, so a resource server can check the binding and that the token
/// is meant for it.
fn active_answer(r: &TokenRecord) -> Result<serde_json::Value, OAuthError> {
    let mut v: serde_json::Value = serde_json::from_str(&r.data).map_err(|e| OAuthError::server(e.to_string()))?;
    let o = v
        .as_object_mut()
        .ok_or_else(|| OAuthError::server("stored token is not an object"))?;
    let typed = o
        .get("token_type")
        .and_then(|t| t.as_str())
        .is_some_and(|t| t == "DPoP" || t == "Bearer");
    if !typed || !o.contains_key("aud") {
        return Err(OAuthError::server(format!(
            "stored access token {} lacks token_type or aud",
            r.id
        )));
    }
    o.insert("active".into(), true.into());
    Ok(v)
}

/// `POST /introspect`.
pub async fn introspect(
    State(app): State<AppState>,
    Extension(peer): Extension<PeerCerts>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match introspect_inner(&app, &peer, &headers, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn introspect_inner(
    app: &App,
    peer: &PeerCerts,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, OAuthError> {
    let now = app.now();
    let params = Params::from_form(headers, body)?;
    let client =
        crate::client_auth::authenticate(app, &params, peer, headers.contains_key(header::AUTHORIZATION), now).await?;
    if !client.client.introspection {
        return Err(OAuthError::invalid_client("client may not introspect"));
    }
    let token = params.require("token")?;
    crate::client_auth::record_assertion(app, &client, now).await?;
    // Only access tokens are ever active here: the callers are resource servers, and a refresh
    // token must never be accepted by one (RFC 6749 §1.5, RFC 7662 §2.2).
    let record = find(app, token, now)
        .await?
        .filter(|r| r.kind == ACCESS && !r.revoked && r.expires_at > now);
    let answer = match record {
        Some(r) => active_answer(&r)?,
        None => serde_json::json!({ "active": false }),
    };
    let wants_jwt = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|m| {
            m.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case(JWT_MEDIA_TYPE)
        });
    if !wants_jwt {
        return Ok(json_no_store(StatusCode::OK, &answer));
    }
    let keys = app.keyring();
    let key = keys.active().ok_or_else(|| OAuthError::server("no signing key"))?;
    let jwt = sign_json(
        &key.signer,
        Some("token-introspection+jwt"),
        Some(&key.kid),
        &serde_json::json!({
            "iss": app.config.issuer,
            "aud": client.client.id,
            "iat": now,
            "token_introspection": answer,
        }),
    )
    .map_err(|e| OAuthError::server(e.to_string()))?;
    let mut res = (StatusCode::OK, jwt).into_response();
    no_store(res.headers_mut());
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JWT_MEDIA_TYPE));
    Ok(res)
}
