//! The routes: every endpoint's path and handler, and the middleware around them.

use axum::Router;
use axum::routing::{get, post};

use crate::paths;
use crate::state::AppState;

/// The routes of the TLS listener (and of the trusted-proxy listener).
pub fn router(app: AppState) -> Router {
    Router::new()
        .route(paths::OPENID_CONFIGURATION, get(crate::endpoints::discovery::metadata))
        .route(paths::OAUTH_METADATA, get(crate::endpoints::discovery::metadata))
        .route(paths::JWKS, get(crate::endpoints::discovery::jwks))
        .route(
            paths::PAR,
            post(crate::endpoints::par::push).options(crate::cors::preflight),
        )
        .route(paths::AUTHORIZE, get(crate::endpoints::authorize::start))
        .route(paths::LOGIN, post(crate::endpoints::authorize::login))
        .route(paths::TOTP, post(crate::endpoints::authorize::totp))
        .route(paths::CONSENT, post(crate::endpoints::authorize::consent))
        .route(
            paths::TOKEN,
            post(crate::endpoints::token::token).options(crate::cors::preflight),
        )
        .route(paths::INTROSPECT, post(crate::endpoints::introspect::introspect))
        .route(paths::REVOKE, post(crate::endpoints::revoke::revoke))
        .route(
            paths::USERINFO,
            get(crate::endpoints::userinfo::userinfo).post(crate::endpoints::userinfo::userinfo),
        )
        .route(paths::REGISTER, post(crate::endpoints::registration::register))
        .route(
            "/register/{client_id}",
            get(crate::endpoints::registration::read)
                .put(crate::endpoints::registration::update)
                .delete(crate::endpoints::registration::delete),
        )
        .route(crate::ops::HEALTHZ, get(crate::ops::healthz))
        .route(crate::ops::READYZ, get(crate::ops::readyz))
        .layer(axum::middleware::from_fn_with_state(app.clone(), crate::cors::cors))
        .layer(axum::middleware::from_fn_with_state(app.clone(), crate::ops::observe))
        .with_state(app)
}
