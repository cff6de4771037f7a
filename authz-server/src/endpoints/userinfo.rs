//! The UserInfo endpoint (OpenID Connect Core §5.3), a protected resource of this server.
//!
//! The request is checked with keybound-core's `verify_request`, exactly as the gateway checks
//! API requests: the access token (a JWT of this server, not revoked), its binding (a DPoP proof
//! by the `cnf.jkt` key, with a nonce when required, or the TLS client certificate of
//! `cnf.x5t#S256`), and the `openid` scope. Unbound bearer tokens are never accepted. The proof's
//! `jti` is recorded last. Errors are `401`/`403` with `WWW-Authenticate` carrying only the RFC
//! code.

use crate::crypto::Ring;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keybound_core::dpop::{NonceCheck, ProofPolicy};
use keybound_core::error::Challenge;
use keybound_core::htu::Htu;
use keybound_core::request::{ResourceRequest, RoutePolicy, scheme_of, verify_request};
use keybound_core::token::{TokenPolicy, verify_jwt};

use crate::log::log_line;
use crate::paths;
use crate::state::{App, AppState};
use crate::tls::PeerCerts;

fn header_values<'a>(headers: &'a HeaderMap, name: &str) -> Option<Vec<&'a str>> {
    headers.get_all(name).iter().map(|v| v.to_str().ok()).collect()
}

fn challenge_error(app: &App, e: &keybound_core::Error, auth: &[&str], now: u64) -> Response {
    log_line("info", "userinfo_refused", e.reason());
    let algs = app.config.dpop.algs.to_vec();
    let www = e.www_authenticate(&Challenge {
        scheme_used: scheme_of(auth),
        bearer_allowed: true,
        algs: &algs,
        realm: None,
        required_scope: "openid",
        resource_metadata: None,
    });
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let mut res = status.into_response();
    if let Ok(v) = HeaderValue::from_str(&www) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    if e.code() == Some(keybound_core::ErrorCode::UseDpopNonce)
        && let Some(n) = app.config.dpop.nonce.as_ref().map(|n| n.issue(now))
        && let Ok(v) = HeaderValue::from_str(&n)
    {
        res.headers_mut().insert("dpop-nonce", v);
    }
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// `GET` or `POST /userinfo`.
pub async fn userinfo(
    State(app): State<AppState>,
    Extension(peer): Extension<PeerCerts>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let now = app.now();
    let (Some(auth), Some(dpop)) = (
        header_values(&headers, "authorization"),
        header_values(&headers, "dpop"),
    ) else {
        return challenge_error(&app, &keybound_core::Error::MalformedAuthorization, &[], now);
    };
    let Ok(htu) = Htu::parse(&app.config.url(paths::USERINFO)) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let cert = peer.thumbprint();
    let req = ResourceRequest {
        method: method.as_str(),
        htu: &htu,
        authorization: &auth,
        dpop: &dpop,
        client_cert: cert.as_ref(),
    };
    let proof = ProofPolicy {
        algs: app.config.dpop.algs,
        max_age: app.config.dpop.max_age,
        ..ProofPolicy::default()
    };
    let scopes = ["openid".to_string()];
    let route = RoutePolicy {
        proof: &proof,
        nonce: app
            .config
            .dpop
            .nonce
            .as_ref()
            .map_or(NonceCheck::Off, NonceCheck::Required),
        allow_bearer: false,
        required_scopes: &scopes,
    };
    let keys = app.keyring().jwks(now, app.key_retention());
    let policy = TokenPolicy::new(app.config.issuer.clone(), app.config.audience.clone());
    // Storage is async and the core's token check is not: the records of the (verified) tokens
    // presented are looked up first, and the check consults them.
    let mut live_jtis = Vec::new();
    for credential in auth.iter().filter_map(|a| a.split_once(' ')).map(|(_, t)| t.trim()) {
        let Ok(v) = verify_jwt(credential, &keys, &policy, now, &Ring) else {
            continue;
        };
        let Some(jti) = v.claims().jti.clone() else {
            continue;
        };
        match app.store.token(&jti).await {
            Ok(Some(r)) if r.kind == "access" && !r.revoked => live_jtis.push(jti),
            Ok(_) => {}
            Err(e) => {
                log_line("error", "storage", &e.to_string());
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
        }
    }
    let verified = verify_request(&req, &route, now, &Ring, |t| {
        let v = verify_jwt(t, &keys, &policy, now, &Ring)?;
        let live = v
            .claims()
            .jti
            .as_deref()
            .is_some_and(|jti| live_jtis.iter().any(|l| l == jti));
        if live {
            Ok(v)
        } else {
            Err(keybound_core::Error::TokenInactive)
        }
    });
    let verified = match verified {
        Ok(v) => v,
        Err(e) => return challenge_error(&app, &e, &auth, now),
    };
    if let Some(p) = verified.proof() {
        match app
            .store
            .remember_once(&p.replay_key(), p.replay_expires_at(), now)
            .await
        {
            Ok(true) => {}
            Ok(false) => return challenge_error(&app, &keybound_core::Error::ProofReplayed, &auth, now),
            Err(e) => {
                log_line("error", "storage", &e.to_string());
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
        }
    }
    let sub = verified.token().claims().sub.clone().unwrap_or_default();
    let mut res = (StatusCode::OK, axum::Json(serde_json::json!({ "sub": sub }))).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}
