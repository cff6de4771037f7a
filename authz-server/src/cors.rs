//! CORS for browser public clients on the token and PAR endpoints, and on the metadata they need
//! (discovery and JWKS), and only there.
//!
//! A request whose `Origin` is in `cors_origins` gets `Access-Control-Allow-Origin` with that
//! origin; token and PAR answers also get `Access-Control-Expose-Headers: DPoP-Nonce,
//! WWW-Authenticate` (so a browser client can read the nonce, RFC 9449 §8); preflights
//! (`OPTIONS`) on token and PAR are answered with the allowed method and headers
//! (`Content-Type`, `DPoP`). Other origins, and every other endpoint (notably the authorization
//! endpoint), get no CORS headers. Credentials (cookies) are never allowed.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::paths;
use crate::state::AppState;

fn allowed_origin(app: &crate::state::App, headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let s = origin.to_str().ok()?;
    app.config.cors_origins.iter().any(|o| o == s).then(|| origin.clone())
}

/// `OPTIONS` on the token and PAR endpoints: the preflight answer (204), with CORS headers only
/// for an allowed origin.
pub async fn preflight(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let mut res = StatusCode::NO_CONTENT.into_response();
    if let Some(origin) = allowed_origin(&app, &headers) {
        let h = res.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST"));
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type, dpop"),
        );
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    }
    res.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Origin"));
    res
}

/// Adds the CORS response headers to token and PAR responses for allowed origins.
pub async fn cors(State(app): State<AppState>, req: Request<Body>, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let origin = allowed_origin(&app, req.headers());
    let mut res = next.run(req).await;
    if [paths::OPENID_CONFIGURATION, paths::OAUTH_METADATA, paths::JWKS].contains(&path.as_str()) {
        let h = res.headers_mut();
        if let Some(origin) = origin {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        }
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    } else if path == paths::TOKEN || path == paths::PAR {
        let h = res.headers_mut();
        if let Some(origin) = origin
            && !h.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            h.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("DPoP-Nonce, WWW-Authenticate"),
            );
        }
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    res
}
