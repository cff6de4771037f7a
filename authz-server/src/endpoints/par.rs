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
use crate::config::Client;
use crate::error::{Code, OAuthError};
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
    let (params, request_object) = match params.get("request") {
        Some(jwt) => {
            let object = request_object(app, &client.client, jwt, now)?;
            (Params::from_request_object(&object.params)?, Some(object))
        }
        None if client.client.require_signed_request_object => {
            return Err(OAuthError::invalid_request(
                "this client must send a signed request object (request)",
            ));
        }
        None => (params, None),
    };
    let request = validate(
        &client.client,
        &app.config.detail_types,
        &params,
        proof.as_ref().map(|p| p.proof.jkt()),
    )?;
    crate::psd2::check(&app.config, &client.client, &request.scopes, peer)?;
    crate::client_auth::record_assertion(app, &client, now).await?;
    if let Some(p) = &proof {
        crate::proof::record(app, p, now).await?;
    }
    if let Some(jti) = request_object
        .as_ref()
        .and_then(|o| o.jti.as_deref().map(|j| (j, o.exp)))
    {
        let key = request_object_replay_key(&client.client.id, jti.0);
        if !app.store.remember_once(&key, jti.1, now).await? {
            return Err(OAuthError::new(Code::InvalidRequestObject, "request object replayed"));
        }
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

/// The algorithms a request object may be signed with (FAPI 2.0: PS256, ES256, EdDSA).
const REQUEST_OBJECT_ALGS: [&str; 3] = ["PS256", "ES256", "EdDSA"];

/// Verifies a signed request object (RFC 9101, FAPI 2.0 Message Signing) from `client` with its
/// registered keys; only its parameters are used, none sent beside it.
fn request_object(
    app: &App,
    client: &Client,
    jwt: &str,
    now: u64,
) -> Result<keybound_core::jar::VerifiedRequestObject, OAuthError> {
    let invalid = |reason: &str| OAuthError::new(Code::InvalidRequestObject, reason);
    let keys = client
        .jwks
        .as_ref()
        .ok_or_else(|| invalid("the client has no registered keys to verify a request object"))?;
    let algs = keybound_core::jws::AlgSet::from_names(REQUEST_OBJECT_ALGS, "request object algorithms")
        .map_err(|e| OAuthError::server(e.reason()))?;
    let policy = keybound_core::jar::RequestObjectPolicy::fapi2(&app.config.issuer, &client.id, algs);
    keybound_core::jar::verify_request_object(jwt, keys, &policy, &crate::crypto::Ring, now)
        .map_err(|e| OAuthError::new(Code::InvalidRequestObject, e.reason()))
}

/// The replay-cache key of a request object's `jti` (per client).
fn request_object_replay_key(client_id: &str, jti: &str) -> Vec<u8> {
    let mut key = b"request-object\0".to_vec();
    key.extend_from_slice(client_id.as_bytes());
    key.push(0);
    key.extend_from_slice(jti.as_bytes());
    key
}
