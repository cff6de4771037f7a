//! The tokens this server issues and records: RFC 9068 access tokens bound to a DPoP key or a
//! certificate, refresh tokens (only their hash is stored), and ID tokens.
//!
//! Access tokens are JWTs (`typ: at+jwt`, ES256, `kid`) with `iss`, `sub`, `aud` (the one
//! resource server the token is for, RFC 8707: see [`crate::indicators`]), `client_id`, `scope`,
//! `iat`, `exp`, `jti`, and always a `cnf`: `jkt` for DPoP clients (`token_type: DPoP`),
//! `x5t#S256` for mTLS clients (`token_type: Bearer`, RFC 8705 §3). A client registered for a
//! sender constraint never gets an unbound token.

use keybound_core::jws::sign_json;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::authz_request::CodeData;
use crate::client_auth::AuthenticatedClient;
use crate::config::SenderConstraint;
use crate::error::{Code, OAuthError};
use crate::proof::Proof;
use crate::state::App;
use crate::storage::TokenRecord;
use crate::tls::PeerCerts;

/// What a token is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Binding {
    /// A DPoP key thumbprint (`cnf.jkt`).
    Dpop(String),
    /// A certificate thumbprint (`cnf.x5t#S256`).
    Certificate(String),
}

impl Binding {
    /// The `cnf` claim.
    pub fn cnf(&self) -> serde_json::Value {
        match self {
            Binding::Dpop(j) => serde_json::json!({ "jkt": j }),
            Binding::Certificate(x) => serde_json::json!({ "x5t#S256": x }),
        }
    }

    /// The `token_type` of the token response.
    pub fn token_type(&self) -> &'static str {
        match self {
            Binding::Dpop(_) => "DPoP",
            Binding::Certificate(_) => "Bearer",
        }
    }
}

/// An issued access token.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The JWT.
    pub jwt: String,
    /// Its `jti`.
    pub jti: String,
    /// Its claims.
    pub claims: serde_json::Value,
    /// Its `exp`.
    pub exp: u64,
}

/// What a grant issues tokens for.
#[derive(Debug, Clone)]
pub struct Grant<'a> {
    /// The grant id (shared by every token of the grant).
    pub grant_id: &'a str,
    /// The subject (user, or the client for `client_credentials`).
    pub sub: &'a str,
    /// The client.
    pub client_id: &'a str,
    /// Scopes.
    pub scopes: &'a [String],
    /// The one resource (RFC 8707) the access token is for: its `aud`.
    pub resource: &'a str,
    /// Every resource the grant covers (kept with a refresh token).
    pub resources: &'a [String],
    /// The binding.
    pub binding: &'a Binding,
    /// The RFC 9396 `authorization_details` granted, if any.
    pub authorization_details: Option<&'a serde_json::Value>,
}

pub(crate) fn server_err(e: impl std::fmt::Display) -> OAuthError {
    OAuthError::server(e.to_string())
}

/// Signs an RFC 9068 access token and records it.
///
/// # Errors
/// `server_error` if signing, randomness or storage fails.
pub async fn issue_access_token(app: &App, grant: &Grant<'_>, now: u64) -> Result<IssuedToken, OAuthError> {
    let keys = app.keyring();
    let key = keys.active().ok_or_else(|| server_err("no signing key"))?;
    let jti = crate::random::token().map_err(server_err)?;
    let exp = now.saturating_add(app.config.lifetimes.access_token);
    let claims = serde_json::json!({
        "iss": app.config.issuer,
        "sub": grant.sub,
        "aud": grant.resource,
        "client_id": grant.client_id,
        "scope": grant.scopes.join(" "),
        "iat": now,
        "exp": exp,
        "jti": jti,
        "cnf": grant.binding.cnf(),
    });
    let mut claims = claims;
    if let (Some(d), Some(o)) = (grant.authorization_details, claims.as_object_mut()) {
        o.insert("authorization_details".into(), d.clone());
    }
    let jwt = sign_json(&key.signer, Some("at+jwt"), Some(&key.kid), &claims).map_err(server_err)?;
    let mut record = claims.clone();
    if let Some(o) = record.as_object_mut() {
        o.insert("token_type".into(), grant.binding.token_type().into());
    }
    app.store
        .put_token(&TokenRecord {
            id: jti.clone(),
            kind: "access".into(),
            grant_id: grant.grant_id.to_string(),
            client_id: grant.client_id.to_string(),
            data: record.to_string(),
            expires_at: exp,
            revoked: false,
        })
        .await?;
    Ok(IssuedToken { jwt, jti, claims, exp })
}

/// What a refresh token stands for (stored as JSON under the token's hash).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshData {
    /// The subject.
    pub sub: String,
    /// The scopes granted.
    pub scopes: Vec<String>,
    /// The resources granted (RFC 8707): a refresh may ask for any one of them; empty for a
    /// refresh token from before resource indicators (the client's default then applies).
    #[serde(default)]
    pub resources: Vec<String>,
    /// The binding every token of the grant has.
    pub binding: Binding,
    /// The RFC 9396 `authorization_details` granted, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_details: Option<serde_json::Value>,
}

/// The storage id of a refresh token: base64url(SHA-256(token)).
pub fn refresh_id(token: &str) -> String {
    keybound_core::b64::encode(&Sha256::digest(token.as_bytes()))
}

/// Makes and records a refresh token for the grant (opaque, 256 random bits; only its hash is
/// stored).
///
/// # Errors
/// `server_error` if randomness or storage fails.
pub async fn issue_refresh_token(app: &App, grant: &Grant<'_>, now: u64) -> Result<String, OAuthError> {
    let token = crate::random::token().map_err(server_err)?;
    let data = RefreshData {
        sub: grant.sub.to_string(),
        scopes: grant.scopes.to_vec(),
        resources: grant.resources.to_vec(),
        binding: grant.binding.clone(),
        authorization_details: grant.authorization_details.cloned(),
    };
    let mut claims = serde_json::json!({
        "iss": app.config.issuer,
        "sub": grant.sub,
        "client_id": grant.client_id,
        "scope": grant.scopes.join(" "),
        "iat": now,
        "exp": now.saturating_add(app.config.lifetimes.refresh_token),
        "cnf": grant.binding.cnf(),
        "token_type": grant.binding.token_type(),
    });
    if let Some(o) = claims.as_object_mut() {
        o.insert("refresh".into(), serde_json::to_value(&data).map_err(server_err)?);
    }
    app.store
        .put_token(&TokenRecord {
            id: refresh_id(&token),
            kind: "refresh".into(),
            grant_id: grant.grant_id.to_string(),
            client_id: grant.client_id.to_string(),
            data: claims.to_string(),
            expires_at: now.saturating_add(app.config.lifetimes.refresh_token),
            revoked: false,
        })
        .await?;
    Ok(token)
}

/// Signs an OpenID Connect ID token (ES256) for `sub` (the client's view of the user: public or
/// pairwise).
///
/// # Errors
/// `server_error` if signing fails.
pub fn issue_id_token(app: &App, data: &CodeData, sub: &str, now: u64) -> Result<String, OAuthError> {
    let keys = app.keyring();
    let key = keys.active().ok_or_else(|| server_err("no signing key"))?;
    let mut claims = serde_json::json!({
        "iss": app.config.issuer,
        "sub": sub,
        "aud": data.request.client_id,
        "iat": now,
        "exp": now.saturating_add(app.config.lifetimes.id_token),
        "auth_time": data.auth_time,
    });
    if let (Some(nonce), Some(o)) = (&data.request.nonce, claims.as_object_mut()) {
        o.insert("nonce".into(), nonce.clone().into());
    }
    sign_json(&key.signer, Some("JWT"), Some(&key.kid), &claims).map_err(server_err)
}

/// The binding this client's tokens get on this request.
///
/// # Errors
/// `invalid_dpop_proof` if a DPoP client sent no proof; `invalid_request` if an mTLS client
/// presented no certificate.
pub fn binding_for(
    client: &AuthenticatedClient,
    proof: Option<&Proof>,
    peer: &PeerCerts,
) -> Result<Binding, OAuthError> {
    match client.client.sender_constraint {
        SenderConstraint::Dpop => proof
            .map(|p| Binding::Dpop(p.proof.jkt().to_string()))
            .ok_or_else(|| OAuthError::new(Code::InvalidDpopProof, "DPoP proof required for this client")),
        SenderConstraint::Mtls => peer
            .thumbprint()
            .map(|t| Binding::Certificate(keybound_core::b64::encode(t.as_bytes())))
            .ok_or_else(|| OAuthError::invalid_request("client certificate required for this client")),
    }
}

/// The `authorization_details` a token request asks for (RFC 9396 §6): `None` without the
/// parameter; with it, checked against the registered types and the client's, and, when
/// something was granted before (a code, a refresh token), each entry must be one granted.
///
/// # Errors
/// `invalid_authorization_details`.
pub fn requested_details(
    app: &App,
    client: &crate::config::Client,
    params: &crate::http::Params,
    granted: Option<Option<&serde_json::Value>>,
) -> Result<Option<serde_json::Value>, OAuthError> {
    let Some(text) = params.get("authorization_details") else {
        return Ok(granted.flatten().cloned());
    };
    let asked = crate::authz_request::authorization_details(client, &app.config.detail_types, text)?;
    if let Some(granted) = granted {
        let empty = Vec::new();
        let granted = granted.and_then(serde_json::Value::as_array).unwrap_or(&empty);
        let within = asked
            .as_array()
            .is_some_and(|list| list.iter().all(|d| granted.contains(d)));
        if !within {
            return Err(OAuthError::new(
                crate::error::Code::InvalidAuthorizationDetails,
                "more than was granted",
            ));
        }
    }
    Ok(Some(asked))
}
