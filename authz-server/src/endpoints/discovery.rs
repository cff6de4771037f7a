//! Discovery (RFC 8414 and OpenID Connect Discovery 1.0) and the JWKS endpoint.
//!
//! Every value advertised is what the server does: one document serves both well-known URLs.
//! Since client certificates are requested on the same listener as everything else,
//! `mtls_endpoint_aliases` (RFC 8705 §5) name the same URLs.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::config::AuthMethod;
use crate::paths;
use crate::state::AppState;

/// The metadata document.
pub fn document(app: &crate::state::App) -> serde_json::Value {
    let c = &app.config;
    let url = |p: &str| c.url(p);
    let mut auth_methods: Vec<&str> = vec![
        AuthMethod::PrivateKeyJwt.as_str(),
        AuthMethod::TlsClientAuth.as_str(),
        AuthMethod::SelfSignedTlsClientAuth.as_str(),
        AuthMethod::None.as_str(),
    ];
    if c.tls.client_ca.is_none() {
        auth_methods.retain(|m| *m != AuthMethod::TlsClientAuth.as_str());
    }
    let subject_types: &[&str] = if c.pairwise_salt.is_some() {
        &["public", "pairwise"]
    } else {
        &["public"]
    };
    let dpop_algs: Vec<&str> = c.dpop.algs.to_vec().into_iter().map(|a| a.as_str()).collect();
    let mut doc = serde_json::json!({
        "issuer": c.issuer,
        "authorization_endpoint": url(paths::AUTHORIZE),
        "token_endpoint": url(paths::TOKEN),
        "pushed_authorization_request_endpoint": url(paths::PAR),
        "require_pushed_authorization_requests": true,
        "jwks_uri": url(paths::JWKS),
        "scopes_supported": c.scopes,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query", "jwt", "query.jwt"],
        "authorization_signing_alg_values_supported": ["ES256"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "introspection_endpoint": url(paths::INTROSPECT),
        "introspection_endpoint_auth_methods_supported": auth_methods.iter().filter(|m| **m != "none").collect::<Vec<_>>(),
        "introspection_signing_alg_values_supported": ["ES256"],
        "revocation_endpoint": url(paths::REVOKE),
        "userinfo_endpoint": url(paths::USERINFO),
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "subject_types_supported": subject_types,
        "id_token_signing_alg_values_supported": ["ES256"],
        "token_endpoint_auth_methods_supported": auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "PS256", "EdDSA"],
        "code_challenge_methods_supported": ["S256"],
        "dpop_signing_alg_values_supported": dpop_algs,
        "tls_client_certificate_bound_access_tokens": true,
        "authorization_response_iss_parameter_supported": true,
        "claims_parameter_supported": false,
        // RFC 9101 at PAR (FAPI 2.0 Message Signing): a signed `request` is taken there; a
        // `request_uri` pointing elsewhere is not.
        "request_parameter_supported": true,
        "request_uri_parameter_supported": false,
        "request_object_signing_alg_values_supported": ["PS256", "ES256", "EdDSA"],
        "authorization_details_types_supported": c.detail_types.names().collect::<Vec<_>>(),
        "mtls_endpoint_aliases": {
            "token_endpoint": url(paths::TOKEN),
            "pushed_authorization_request_endpoint": url(paths::PAR),
            "introspection_endpoint": url(paths::INTROSPECT),
            "revocation_endpoint": url(paths::REVOKE),
            "userinfo_endpoint": url(paths::USERINFO),
        },
    });
    if c.registration_tokens.is_some()
        && let Some(o) = doc.as_object_mut()
    {
        o.insert("registration_endpoint".into(), url(paths::REGISTER).into());
    }
    doc
}

/// `GET /.well-known/openid-configuration` and `GET /.well-known/oauth-authorization-server`.
pub async fn metadata(State(app): State<AppState>) -> Response {
    let mut res = (StatusCode::OK, axum::Json(document(&app))).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
    res
}

/// `GET /jwks`: the published signing keys.
pub async fn jwks(State(app): State<AppState>) -> Response {
    let doc = app.keyring().jwks_json(app.now(), app.key_retention());
    let mut res = (StatusCode::OK, axum::Json(doc)).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    res
}
