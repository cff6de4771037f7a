//! What operators and orchestrators call: liveness, readiness, metrics, and the per-request log
//! line and counters.
//!
//! - `GET /healthz`: 200 while the process serves (liveness), on every listener.
//! - `GET /readyz`: 200 when storage answers and a signing key is loaded, 503 with the failing
//!   check otherwise and from the moment a shutdown starts (so load balancers stop sending new
//!   requests while the ones in flight finish), on every listener.
//! - `GET /metrics`: Prometheus text ([`crate::metrics`]), on the admin listener only.

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::http::ClientAddr;
use crate::log::Level;
use crate::state::AppState;

/// Liveness.
pub const HEALTHZ: &str = "/healthz";
/// Readiness.
pub const READYZ: &str = "/readyz";
/// Prometheus metrics.
pub const METRICS: &str = "/metrics";

/// `GET /healthz`.
pub async fn healthz() -> Response {
    (StatusCode::OK, axum::Json(serde_json::json!({ "status": "ok" }))).into_response()
}

/// Why the server is not ready, if it is not.
pub async fn not_ready(app: &AppState) -> Option<&'static str> {
    if app.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return Some("shutting_down");
    }
    if app.store.ping().await.is_err() {
        return Some("storage_unreachable");
    }
    if app.keyring().active().is_none() {
        return Some("no_signing_key");
    }
    None
}

/// `GET /readyz`.
pub async fn readyz(State(app): State<AppState>) -> Response {
    match not_ready(&app).await {
        None => (StatusCode::OK, axum::Json(serde_json::json!({ "status": "ready" }))).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "status": "not_ready", "reason": reason })),
        )
            .into_response(),
    }
}

/// `GET /metrics`.
pub async fn metrics(State(app): State<AppState>) -> Response {
    let mut res = app.metrics.render().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    res
}

/// The admin listener's routes.
pub fn admin_router(app: AppState) -> Router {
    Router::new()
        .route(HEALTHZ, get(healthz))
        .route(READYZ, get(readyz))
        .route(METRICS, get(metrics))
        .with_state(app)
}

/// Middleware: counts every request by route and status, and logs one line for it (the path
/// without its query, which may carry a code or a `request_uri`).
pub async fn observe(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("other", MatchedPath::as_str)
        .to_owned();
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let client = req.extensions().get::<ClientAddr>().map(|a| a.0.to_string());
    let res = next.run(req).await;
    let status = res.status().as_u16();
    let elapsed = started.elapsed();
    app.metrics.request(&endpoint, status, elapsed);
    // Probes would drown the log: they are logged at debug.
    let level = if endpoint == HEALTHZ || endpoint == READYZ {
        Level::Debug
    } else {
        Level::Info
    };
    if crate::log::enabled(level) {
        crate::log::event(
            level,
            "request",
            serde_json::json!({
                "method": method,
                "path": path,
                "status": status,
                "ms": (elapsed.as_secs_f64() * 1000.0 * 10.0).round() / 10.0,
                "client": client,
            }),
        );
    }
    res
}
