//! Token revocation (RFC 7009, `POST /revoke`): an access token (its `jti`), or a refresh token
//! together with every token of its grant. It answers 200 for unknown tokens and for tokens of
//! other clients (which it leaves alone), as RFC 7009 §2.2 allows, so it reveals nothing about
//! them.

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::OAuthError;
use crate::http::Params;
use crate::respond::no_store;
use crate::state::{App, AppState};
use crate::tls::PeerCerts;

use super::introspect::find;

/// `POST /revoke`.
pub async fn revoke(
    State(app): State<AppState>,
    Extension(peer): Extension<PeerCerts>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match revoke_inner(&app, &peer, &headers, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn revoke_inner(app: &App, peer: &PeerCerts, headers: &HeaderMap, body: &[u8]) -> Result<Response, OAuthError> {
    let now = app.now();
    let params = Params::from_form(headers, body)?;
    let client =
        crate::client_auth::authenticate(app, &params, peer, headers.contains_key(header::AUTHORIZATION), now).await?;
    let token = params.require("token")?;
    crate::client_auth::record_assertion(app, &client, now).await?;
    if let Some(r) = find(app, token, now).await?
        && r.client_id == client.client.id
    {
        if r.kind == "refresh" {
            app.store.revoke_grant(&r.grant_id).await?;
        } else {
            app.store.revoke_token(&r.id).await?;
        }
    }
    let mut res = StatusCode::OK.into_response();
    no_store(res.headers_mut());
    Ok(res)
}
