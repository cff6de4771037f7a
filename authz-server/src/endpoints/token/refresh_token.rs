//! `grant_type=refresh_token` (RFC 6749 §6), bound and not rotated (FAPI 2.0).

use axum::response::Response;

use crate::client_auth::AuthenticatedClient;
use crate::error::{Code, OAuthError};
use crate::http::Params;
use crate::proof::Proof;
use crate::state::App;
use crate::tls::PeerCerts;

use super::{requested_scopes, token_response};
use crate::tokens::{Binding, Grant, RefreshData, issue_access_token, refresh_id, server_err};

/// `grant_type=refresh_token` (RFC 6749 §6). The refresh token is bound like the grant's access
/// tokens: a DPoP-bound one needs a proof by the same key (RFC 9449 §5), a certificate-bound one
/// the same client certificate. It is not rotated (FAPI 2.0 §5.3.2.1): the response carries no
/// new refresh token. A narrower `scope` may be asked for.
pub(crate) async fn refresh(
    app: &App,
    client: &AuthenticatedClient,
    params: &Params,
    proof: Option<&Proof>,
    peer: &PeerCerts,
    now: u64,
) -> Result<Response, OAuthError> {
    let token = params.require("refresh_token")?;
    let rec = app
        .store
        .token(&refresh_id(token))
        .await?
        .filter(|r| r.kind == "refresh")
        .ok_or_else(|| OAuthError::invalid_grant("unknown refresh token"))?;
    if rec.client_id != client.client.id {
        return Err(OAuthError::invalid_grant("refresh token of another client"));
    }
    if rec.revoked || rec.expires_at <= now {
        return Err(OAuthError::invalid_grant("refresh token revoked or expired"));
    }
    let stored: serde_json::Value = serde_json::from_str(&rec.data).map_err(server_err)?;
    let data: RefreshData =
        serde_json::from_value(stored.get("refresh").cloned().unwrap_or_default()).map_err(server_err)?;
    match &data.binding {
        Binding::Dpop(jkt) => {
            let p = proof.ok_or_else(|| OAuthError::new(Code::InvalidDpopProof, "refresh needs a DPoP proof"))?;
            if &p.proof.jkt().to_string() != jkt {
                return Err(OAuthError::invalid_grant("refresh token bound to another DPoP key"));
            }
        }
        Binding::Certificate(x5t) => {
            let got = peer.thumbprint().map(|t| keybound_core::b64::encode(t.as_bytes()));
            if got.as_ref() != Some(x5t) {
                return Err(OAuthError::invalid_grant("refresh token bound to another certificate"));
            }
        }
    }
    let scopes = requested_scopes(params, &data.scopes, &data.scopes)?;
    let resource = crate::indicators::for_token(&client.client, params, &data.resources)?;
    let details =
        crate::tokens::requested_details(app, &client.client, params, Some(data.authorization_details.as_ref()))?;
    crate::psd2::check(&app.config, &client.client, &scopes, peer)?;
    crate::client_auth::record_assertion(app, client, now).await?;
    if let Some(p) = proof {
        crate::proof::record(app, p, now).await?;
    }
    let grant = Grant {
        grant_id: &rec.grant_id,
        sub: &data.sub,
        client_id: &client.client.id,
        scopes: &scopes,
        resource: &resource,
        resources: &data.resources,
        binding: &data.binding,
        authorization_details: details.as_ref(),
    };
    let at = issue_access_token(app, &grant, now).await?;
    Ok(token_response(app, &at, &data.binding, &scopes, details.as_ref()))
}
