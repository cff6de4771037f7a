//! `grant_type=authorization_code` (RFC 6749 §4.1.3, PKCE RFC 7636, RFC 9449 §10): the checks
//! listed in [`super`], in that order.

use axum::http::StatusCode;
use axum::response::Response;

use crate::authz_request::{CodeData, code_hash};
use crate::client_auth::AuthenticatedClient;
use crate::config::GrantType;
use crate::error::OAuthError;
use crate::http::Params;
use crate::proof::Proof;
use crate::respond::json_no_store;
use crate::state::App;
use crate::tls::PeerCerts;

use crate::tokens::{Binding, Grant, issue_access_token, issue_id_token, issue_refresh_token, server_err};

pub(crate) async fn redeem(
    app: &App,
    client: &AuthenticatedClient,
    params: &Params,
    proof: Option<&Proof>,
    binding: &Binding,
    peer: &PeerCerts,
    now: u64,
) -> Result<Response, OAuthError> {
    let code = params.require("code")?;
    let redirect_uri = params.require("redirect_uri")?;
    let verifier = params.require("code_verifier")?;
    let hash = code_hash(code);
    let rec = app
        .store
        .code(&hash)
        .await?
        .ok_or_else(|| OAuthError::invalid_grant("unknown code"))?;
    if rec.client_id != client.client.id {
        return Err(OAuthError::invalid_grant("code of another client"));
    }
    let data: CodeData = serde_json::from_str(&rec.data).map_err(server_err)?;
    if rec.used {
        return Err(code_reused(app, client, &rec, &data, verifier, proof, now).await);
    }
    if rec.expires_at <= now {
        return Err(OAuthError::invalid_grant("code expired"));
    }
    if data.request.redirect_uri != redirect_uri {
        return Err(OAuthError::invalid_grant("redirect_uri differs"));
    }
    keybound_core::pkce::verify_s256(verifier, &data.request.code_challenge).map_err(|e| OAuthError::from_core(&e))?;
    if let Some(jkt) = &data.request.dpop_jkt
        && proof.map(|p| p.proof.jkt().to_string()).as_ref() != Some(jkt)
    {
        return Err(OAuthError::invalid_grant("code is bound to another DPoP key"));
    }
    let resource = crate::indicators::for_token(&client.client, params, &data.request.resources)?;
    let details = crate::tokens::requested_details(
        app,
        &client.client,
        params,
        Some(data.request.authorization_details.as_ref()),
    )?;
    crate::psd2::check(&app.config, &client.client, &data.request.scopes, peer)?;
    crate::client_auth::record_assertion(app, client, now).await?;
    if let Some(p) = proof {
        crate::proof::record(app, p, now).await?;
    }
    let redeemed_jkt = match binding {
        Binding::Dpop(jkt) => Some(jkt.as_str()),
        Binding::Certificate(_) => None,
    };
    if !app.store.use_code(&hash, redeemed_jkt).await? {
        let n = app.store.revoke_grant(&rec.grant_id).await?;
        return Err(OAuthError::invalid_grant(format!(
            "code reused concurrently: revoked {n} tokens"
        )));
    }
    let sub = app.subject(&client.client, &data.sub);
    let granted = if data.request.resources.is_empty() {
        vec![resource.clone()]
    } else {
        data.request.resources.clone()
    };
    let grant = Grant {
        grant_id: &rec.grant_id,
        sub: &sub,
        client_id: &client.client.id,
        scopes: &data.request.scopes,
        resource: &resource,
        resources: &granted,
        binding,
        authorization_details: details.as_ref(),
    };
    let at = issue_access_token(app, &grant, now).await?;
    let mut body = serde_json::json!({
        "access_token": at.jwt,
        "token_type": binding.token_type(),
        "expires_in": app.config.lifetimes.access_token,
        "scope": data.request.scopes.join(" "),
    });
    if let Some(o) = body.as_object_mut() {
        if let Some(d) = &details {
            o.insert("authorization_details".into(), d.clone());
        }
        if data.request.scopes.iter().any(|s| s == "openid") {
            o.insert("id_token".into(), issue_id_token(app, &data, &sub, now)?.into());
        }
        if client.client.grant_types.contains(&GrantType::RefreshToken) {
            o.insert(
                "refresh_token".into(),
                issue_refresh_token(app, &grant, now).await?.into(),
            );
        }
    }
    Ok(json_no_store(StatusCode::OK, &body))
}

/// A redeemed code presented again. RFC 6749 §4.1.2 says the tokens issued from it should be
/// revoked, but a leaked code alone must not let anyone end the user's session: the grant is
/// revoked only when the presenter proves it is the client, i.e. it authenticated as a
/// confidential client, or (a public client) it sent the right PKCE `code_verifier` for this code
/// or a DPoP proof by the key the code or its tokens are bound to. The assertion and proof `jti`s
/// are recorded first (a replayed proof revokes nothing). Otherwise nothing changes. Either way
/// the answer is `invalid_grant`.
async fn code_reused(
    app: &App,
    client: &AuthenticatedClient,
    rec: &crate::storage::CodeRecord,
    data: &CodeData,
    verifier: &str,
    proof: Option<&Proof>,
    now: u64,
) -> OAuthError {
    let proof_jkt = proof.map(|p| p.proof.jkt().to_string());
    let bound_key = proof_jkt.is_some() && (proof_jkt == data.request.dpop_jkt || proof_jkt == rec.redeemed_jkt);
    let proven = client.method != crate::config::AuthMethod::None
        || keybound_core::pkce::verify_s256(verifier, &data.request.code_challenge).is_ok()
        || bound_key;
    if !proven {
        return OAuthError::invalid_grant("code reused without proof of the client: nothing revoked");
    }
    let revoked = async {
        crate::client_auth::record_assertion(app, client, now).await?;
        if let Some(p) = proof {
            crate::proof::record(app, p, now).await?;
        }
        Ok::<_, OAuthError>(app.store.revoke_grant(&rec.grant_id).await?)
    }
    .await;
    match revoked {
        Ok(n) => OAuthError::invalid_grant(format!("code reused: revoked {n} tokens")),
        Err(e) => e,
    }
}
