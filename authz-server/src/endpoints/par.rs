//! Pushed authorization requests (RFC 9126, `POST /par`); the parameters are checked by
//! [`crate::authz_request::validate`].
//!
//! ## Order of checks at `POST /par`
//! 1. the body is a form with no repeated parameter (`invalid_request`);
//! 2. client authentication, stateless part ([`crate::client_auth`], `invalid_client`);
//! 3. the `DPoP` header, if any ([`crate::proof`]: `invalid_dpop_proof`, `use_dpop_nonce`);
//! 4. the authorization parameters ([`crate::authz_request::validate`]);
//! 5. the assertion `jti` and the proof `jti` are recorded (replays refused);
//! 6. the request is stored under a fresh `request_uri` (one use, `tokens.par_lifetime` seconds,
//!    bound to the client) and `201` returned.

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::authz_request::{REQUEST_URI_PREFIX, validate};
use crate::error::OAuthError;
use crate::http::Params;
use crate::paths;
use crate::respond::json_no_store;
use crate::state::{App, AppState};
use crate::storage::ParRecord;
use crate::tls::PeerCerts;

/// `POST /par`.
pub async fn push(
    State(app): State<AppState>,
    Extension(peer): Extension<PeerCerts>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match push_inner(&app, &peer, &headers, &body).await {
        Ok(res) => res,
        Err(e) => e.into_response(),
    }
}

async fn push_inner(app: &App, peer: &PeerCerts, headers: &HeaderMap, body: &[u8]) -> Result<Response, OAuthError> {
    let now = app.now();
    let params = Params::from_form(headers, body)?;
    let client =
        crate::client_auth::authenticate(app, &params, peer, headers.contains_key(header::AUTHORIZATION), now).await?;
    let proof = crate::proof::check(app, headers, paths::PAR, now)?;
    let request = validate(&client.client, &params, proof.as_ref().map(|p| p.proof.jkt()))?;
    crate::client_auth::record_assertion(app, &client, now).await?;
    if let Some(p) = &proof {
        crate::proof::record(app, p, now).await?;
    }
    let id = crate::random::token().map_err(|e| OAuthError::server(e.to_string()))?;
    let request_uri = format!("{REQUEST_URI_PREFIX}{id}");
    let lifetime = app.config.lifetimes.par;
    app.store
        .put_par(&ParRecord {
            request_uri: request_uri.clone(),
            client_id: client.client.id.clone(),
            params: serde_json::to_string(&request).map_err(|e| OAuthError::server(e.to_string()))?,
            expires_at: now.saturating_add(lifetime),
            consumed: false,
        })
        .await?;
    let mut res = json_no_store(
        StatusCode::CREATED,
        &serde_json::json!({ "request_uri": request_uri, "expires_in": lifetime }),
    );
    if let Some(n) = proof
        .and_then(|p| p.next_nonce)
        .and_then(|n| HeaderValue::from_str(&n).ok())
    {
        res.headers_mut().insert("dpop-nonce", n);
    }
    Ok(res)
}
