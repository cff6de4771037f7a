//! Headers and bodies every OAuth JSON response shares.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// `Cache-Control: no-store` and `Pragma: no-cache` (RFC 6749 §5.1).
pub fn no_store(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// A JSON response with `no-store`.
pub fn json_no_store(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut res = (status, axum::Json(body.clone())).into_response();
    no_store(res.headers_mut());
    res
}
