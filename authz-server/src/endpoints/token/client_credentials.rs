//! `grant_type=client_credentials` (RFC 6749 §4.4).

use axum::response::Response;

use crate::client_auth::AuthenticatedClient;
use crate::error::{Code, OAuthError};
use crate::http::Params;
use crate::proof::Proof;
use crate::state::App;
use crate::tls::PeerCerts;

use super::{requested_scopes, token_response};
use crate::tokens::{Binding, Grant, issue_access_token, server_err};

/// `grant_type=client_credentials` (RFC 6749 §4.4): the client is the subject; the token is bound
/// like every token of this client; no refresh token.
pub(crate) async fn grant(
    app: &App,
    client: &AuthenticatedClient,
    params: &Params,
    proof: Option<&Proof>,
    binding: &Binding,
    peer: &PeerCerts,
    now: u64,
) -> Result<Response, OAuthError> {
    if client.method == crate::config::AuthMethod::None {
        return Err(OAuthError::new(Code::UnauthorizedClient, "public client"));
    }
    let scopes = requested_scopes(params, &client.client.scopes, &client.client.scopes)?;
    let resource = crate::indicators::for_token(&client.client, params, &client.client.resources)?;
    let details = crate::tokens::requested_details(app, &client.client, params, None)?;
    crate::psd2::check(&app.config, &client.client, &scopes, peer)?;
    crate::client_auth::record_assertion(app, client, now).await?;
    if let Some(p) = proof {
        crate::proof::record(app, p, now).await?;
    }
    let grant_id = crate::random::token().map_err(server_err)?;
    let grant = Grant {
        grant_id: &grant_id,
        sub: &client.client.id,
        client_id: &client.client.id,
        scopes: &scopes,
        resource: &resource,
        resources: std::slice::from_ref(&resource),
        binding,
        authorization_details: details.as_ref(),
    };
    let at = issue_access_token(app, &grant, now).await?;
    Ok(token_response(app, &at, binding, &scopes, details.as_ref()))
}
