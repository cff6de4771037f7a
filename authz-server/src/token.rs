//! The token endpoint and the tokens it issues.
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
use keybound_core::jws::sign_json;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::authorize::{CodeData, code_hash};
use crate::client_auth::AuthenticatedClient;
use crate::config::{GrantType, SenderConstraint};
use crate::proof::Proof;
use crate::server::{App, AppState, OAuthError, Params, json_no_store, paths};
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
}

fn server_err(e: impl std::fmt::Display) -> OAuthError {
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
            .ok_or_else(|| OAuthError::bad("invalid_dpop_proof", "DPoP proof required for this client")),
        SenderConstraint::Mtls => peer
            .thumbprint()
            .map(|t| Binding::Certificate(keybound_core::b64::encode(t.as_bytes())))
            .ok_or_else(|| OAuthError::invalid_request("client certificate required for this client")),
    }
}

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
    let now = crate::random::now();
    let params = Params::from_form(headers, body)?;
    let client =
        crate::client_auth::authenticate(app, &params, peer, headers.contains_key(header::AUTHORIZATION), now).await?;
    let grant_type = params.require("grant_type")?;
    let grant = match grant_type {
        "authorization_code" => GrantType::AuthorizationCode,
        "refresh_token" => GrantType::RefreshToken,
        "client_credentials" => GrantType::ClientCredentials,
        other => return Err(OAuthError::bad("unsupported_grant_type", other.to_string())),
    };
    if !client.client.grant_types.contains(&grant) {
        return Err(OAuthError::bad("unauthorized_client", grant_type.to_string()));
    }
    let proof = crate::proof::check(app, headers, paths::TOKEN, now)?;
    let mut res = match grant {
        GrantType::AuthorizationCode => {
            let binding = binding_for(&client, proof.as_ref(), peer)?;
            authorization_code(app, &client, &params, proof.as_ref(), &binding, now).await?
        }
        GrantType::ClientCredentials => {
            let binding = binding_for(&client, proof.as_ref(), peer)?;
            client_credentials(app, &client, &params, proof.as_ref(), &binding, now).await?
        }
        GrantType::RefreshToken => refresh(app, &client, &params, proof.as_ref(), peer, now).await?,
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

async fn authorization_code(
    app: &App,
    client: &AuthenticatedClient,
    params: &Params,
    proof: Option<&Proof>,
    binding: &Binding,
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
    };
    let at = issue_access_token(app, &grant, now).await?;
    let mut body = serde_json::json!({
        "access_token": at.jwt,
        "token_type": binding.token_type(),
        "expires_in": app.config.lifetimes.access_token,
        "scope": data.request.scopes.join(" "),
    });
    if let Some(o) = body.as_object_mut() {
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

/// Scopes requested with `scope` (default: `default`), each of which must be in `allowed`.
fn requested_scopes(params: &Params, allowed: &[String], default: &[String]) -> Result<Vec<String>, OAuthError> {
    let Some(scope) = params.get("scope") else {
        return Ok(default.to_vec());
    };
    let mut out: Vec<String> = Vec::new();
    for s in scope.split(' ').filter(|s| !s.is_empty()) {
        if !allowed.iter().any(|a| a == s) {
            return Err(OAuthError::bad("invalid_scope", format!("scope {s}")));
        }
        if !out.iter().any(|o| o == s) {
            out.push(s.to_string());
        }
    }
    Ok(out)
}

fn token_response(app: &App, at: &IssuedToken, binding: &Binding, scopes: &[String]) -> Response {
    json_no_store(
        StatusCode::OK,
        &serde_json::json!({
            "access_token": at.jwt,
            "token_type": binding.token_type(),
            "expires_in": app.config.lifetimes.access_token,
            "scope": scopes.join(" "),
        }),
    )
}

/// `grant_type=client_credentials` (RFC 6749 §4.4): the client is the subject; the token is bound
/// like every token of this client; no refresh token.
async fn client_credentials(
    app: &App,
    client: &AuthenticatedClient,
    params: &Params,
    proof: Option<&Proof>,
    binding: &Binding,
    now: u64,
) -> Result<Response, OAuthError> {
    if client.method == crate::config::AuthMethod::None {
        return Err(OAuthError::bad("unauthorized_client", "public client"));
    }
    let scopes = requested_scopes(params, &client.client.scopes, &client.client.scopes)?;
    let resource = crate::indicators::for_token(&client.client, params, &client.client.resources)?;
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
    };
    let at = issue_access_token(app, &grant, now).await?;
    Ok(token_response(app, &at, binding, &scopes))
}

/// `grant_type=refresh_token` (RFC 6749 §6). The refresh token is bound like the grant's access
/// tokens: a DPoP-bound one needs a proof by the same key (RFC 9449 §5), a certificate-bound one
/// the same client certificate. It is not rotated (FAPI 2.0 §5.3.2.1): the response carries no
/// new refresh token. A narrower `scope` may be asked for.
async fn refresh(
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
            let p = proof.ok_or_else(|| OAuthError::bad("invalid_dpop_proof", "refresh needs a DPoP proof"))?;
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
    };
    let at = issue_access_token(app, &grant, now).await?;
    Ok(token_response(app, &at, &data.binding, &scopes))
}
