//! Dynamic client registration (RFC 7591) and management (RFC 7592).
//!
//! Registration needs an initial access token from `registration.initial_access_tokens` (Bearer);
//! without that section the endpoint is not offered. The metadata is validated exactly like a
//! client in the config file: redirect URIs https (or http on a loopback host) without fragment
//! (`invalid_redirect_uri`), a supported `token_endpoint_auth_method`, a public `jwks` by value
//! for `private_key_jwt` (`jwks_uri` is not supported), scopes the server knows, and a sender
//! constraint (`dpop_bound_access_tokens` or `tls_client_certificate_bound_access_tokens`), since
//! this server never issues unbound tokens (`invalid_client_metadata`). A
//! `self_signed_tls_client_auth` client registers its certificate as `x5c` of a JWKS key.
//! Resource indicators (RFC 8707) have no standard client metadata; this server reads
//! `resources` (an array of the server's `audience` entries, default all) and
//! `default_resource`, as in the config file ([`crate::indicators`]).
//!
//! The answer carries a `registration_access_token` (only its hash is stored) and the
//! `registration_client_uri` where the client reads (`GET`), replaces (`PUT`) or deletes
//! (`DELETE`) its registration with that token. Wrong or missing tokens are `401 invalid_token`.

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::clients::{bad_metadata, client_from_metadata};
use crate::error::{Code, OAuthError};
use crate::paths;
use crate::respond::json_no_store;
use crate::state::AppState;
use crate::storage::RegisteredClient;

fn invalid_token(reason: &str) -> OAuthError {
    OAuthError::new(Code::InvalidToken, reason)
}

fn token_hash(token: &str) -> String {
    keybound_core::b64::encode(&Sha256::digest(token.as_bytes()))
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let v = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None;
    }
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

/// The metadata that is stored and echoed: the recognised members only (`jwks_uri` and
/// `sector_identifier_uri` are recognised so that they are refused, not silently dropped).
fn normalise(meta: &serde_json::Value) -> serde_json::Value {
    const KNOWN: &[&str] = &[
        "jwks_uri",
        "sector_identifier_uri",
        "redirect_uris",
        "token_endpoint_auth_method",
        "grant_types",
        "response_types",
        "client_name",
        "scope",
        "jwks",
        "tls_client_auth_subject_dn",
        "tls_client_auth_san_dns",
        "dpop_bound_access_tokens",
        "tls_client_certificate_bound_access_tokens",
        "subject_type",
        "resources",
        "default_resource",
    ];
    let mut out = serde_json::Map::new();
    if let Some(o) = meta.as_object() {
        for k in KNOWN {
            if let Some(v) = o.get(*k) {
                out.insert((*k).to_string(), v.clone());
            }
        }
    }
    serde_json::Value::Object(out)
}

fn parse_json(body: &[u8]) -> Result<serde_json::Value, OAuthError> {
    serde_json::from_slice(body).map_err(|_| bad_metadata("body is not JSON"))
}

/// `POST /register` (RFC 7591).
pub async fn register(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let tokens = app
            .config
            .registration_tokens
            .as_ref()
            .ok_or_else(|| invalid_token("registration is off"))?;
        let given = bearer(&headers).ok_or_else(|| invalid_token("no initial access token"))?;
        if !tokens.iter().any(|t| ct_eq(t.as_bytes(), given.as_bytes())) {
            return Err(invalid_token("wrong initial access token"));
        }
        let meta = normalise(&parse_json(&body)?);
        let client_id = crate::random::token().map_err(|e| OAuthError::server(e.to_string()))?;
        client_from_metadata(&app.config, &client_id, &meta)?;
        let reg_token = crate::random::token().map_err(|e| OAuthError::server(e.to_string()))?;
        let now = app.now();
        app.store
            .put_client(&RegisteredClient {
                client_id: client_id.clone(),
                metadata: meta.to_string(),
                registration_token_hash: token_hash(&reg_token),
                created_at: now,
            })
            .await?;
        Ok(json_no_store(
            StatusCode::CREATED,
            &answer(&app, &client_id, &meta, now, Some(&reg_token)),
        ))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

fn answer(
    app: &crate::state::App,
    client_id: &str,
    meta: &serde_json::Value,
    issued_at: u64,
    reg_token: Option<&str>,
) -> serde_json::Value {
    let mut out = meta.clone();
    if let Some(o) = out.as_object_mut() {
        o.insert("client_id".into(), client_id.into());
        o.insert("client_id_issued_at".into(), issued_at.into());
        o.insert(
            "registration_client_uri".into(),
            app.config.url(&format!("{}/{client_id}", paths::REGISTER)).into(),
        );
        if let Some(t) = reg_token {
            o.insert("registration_access_token".into(), t.into());
        }
    }
    out
}

/// Checks the registration access token of `client_id`.
async fn registered(
    app: &crate::state::App,
    headers: &HeaderMap,
    client_id: &str,
) -> Result<RegisteredClient, OAuthError> {
    let given = bearer(headers).ok_or_else(|| invalid_token("no registration access token"))?;
    let rec = app
        .store
        .client(client_id)
        .await?
        .ok_or_else(|| invalid_token("unknown client"))?;
    if !ct_eq(token_hash(given).as_bytes(), rec.registration_token_hash.as_bytes()) {
        return Err(invalid_token("wrong registration access token"));
    }
    Ok(rec)
}

/// `GET /register/{client_id}` (RFC 7592 §2.1).
pub async fn read(State(app): State<AppState>, UrlPath(client_id): UrlPath<String>, headers: HeaderMap) -> Response {
    match registered(&app, &headers, &client_id).await {
        Ok(rec) => {
            let meta: serde_json::Value = serde_json::from_str(&rec.metadata).unwrap_or_default();
            json_no_store(StatusCode::OK, &answer(&app, &client_id, &meta, rec.created_at, None))
        }
        Err(e) => e.into_response(),
    }
}

/// `PUT /register/{client_id}` (RFC 7592 §2.2): replaces the metadata; invalid metadata changes
/// nothing.
pub async fn update(
    State(app): State<AppState>,
    UrlPath(client_id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let rec = registered(&app, &headers, &client_id).await?;
        let raw = parse_json(&body)?;
        if raw
            .get("client_id")
            .and_then(|v| v.as_str())
            .is_some_and(|id| id != client_id)
        {
            return Err(OAuthError::invalid_request("client_id differs"));
        }
        let meta = normalise(&raw);
        client_from_metadata(&app.config, &client_id, &meta)?;
        app.store
            .put_client(&RegisteredClient {
                metadata: meta.to_string(),
                ..rec.clone()
            })
            .await?;
        Ok(json_no_store(
            StatusCode::OK,
            &answer(&app, &client_id, &meta, rec.created_at, None),
        ))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `DELETE /register/{client_id}` (RFC 7592 §2.3).
pub async fn delete(State(app): State<AppState>, UrlPath(client_id): UrlPath<String>, headers: HeaderMap) -> Response {
    let result = async {
        registered(&app, &headers, &client_id).await?;
        app.store.delete_client(&client_id).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    result.unwrap_or_else(|e: OAuthError| e.into_response())
}
