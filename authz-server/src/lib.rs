//! # keybound-authz
//!
//! keybound's FAPI 2.0 authorization server: it issues the DPoP-bound (`cnf.jkt`) and
//! certificate-bound (`cnf.x5t#S256`) RFC 9068 access tokens that the keybound gateway filter
//! enforces. Every protocol check (JOSE, DPoP proofs, PKCE, nonces, thumbprints) is
//! `keybound-core`'s, so the gateway and this server share one implementation.
//!
//! ## What it does
//! - HTTPS with rustls (TLS 1.2+, `ring`), client certificates requested but optional on the one
//!   listener ([`tls`]); a TOML configuration refused at load with the field named ([`config`]).
//! - Discovery at both well-known URLs and the JWKS ([`endpoints::discovery`]); persisted ES256 signing keys
//!   ([`keys`]) behind the async [`storage::Storage`] interface: SQLite (embedded, the default)
//!   or PostgreSQL (several instances on one database), with migrations.
//! - PAR (RFC 9126, [`endpoints::par`]), the authorization endpoint with login and consent pages
//!   ([`endpoints::authorize`]), and the token endpoint for `authorization_code` with PKCE S256 ([`endpoints::token`]).
//!   Client authentication: `private_key_jwt`, `tls_client_auth`, `self_signed_tls_client_auth`,
//!   `none` ([`client_auth`]). DPoP at PAR and token endpoint with server nonces ([`proof`]).
//! - RFC 8707 resource indicators: each access token is for one resource server
//!   ([`indicators`]);
//! - `refresh_token` (bound, not rotated) and `client_credentials` grants ([`endpoints::token`]);
//!   introspection (RFC 7662, JWT answers per RFC 9701) and revocation (RFC 7009)
//!   ([`endpoints::introspect`], [`endpoints::revoke`]); JARM (`response_mode=jwt`); UserInfo checked with core's
//!   `verify_request` ([`endpoints::userinfo`]); pairwise subjects; a TOTP second factor ([`totp`]); a login throttle per account and
//!   client address kept in storage ([`throttle`]); CORS
//!   on the token and PAR endpoints ([`cors`]); dynamic client registration and management
//!   (RFC 7591/7592, [`endpoints::registration`]).
//! - Operations ([`ops`]): `/healthz`, `/readyz`, Prometheus metrics ([`metrics`]) on an admin
//!   listener, structured logs with levels ([`log`]), `KEYBOUND_AUTHZ_*` overrides and secrets
//!   from files ([`overrides`]), a graceful stop on SIGTERM ([`serve::run`]), and a plain-HTTP
//!   listener for a trusted TLS-terminating proxy that forwards the client certificate
//!   ([`proxy`]).
//!
//! ## What it does not do
//! Request objects outside PAR, `jwks_uri` for clients, `client_secret_*`, plain authorization requests
//! without PAR, and TLS to PostgreSQL.
//!
//! The binary is `keybound-authz` (`init`, `serve`, `check`, `hash-password`, `keys rotate`,
//! `migrate`).

pub mod authz_request;
pub mod client_auth;
pub mod clients;
pub mod config;
pub mod cors;
pub mod crypto;
pub mod endpoints;
pub mod error;
pub mod http;
pub mod indicators;
pub mod init;
pub mod keys;
pub mod log;
pub mod metrics;
pub mod ops;
pub mod overrides;
pub mod paths;
pub mod proof;
pub mod proxy;
pub mod psd2;
pub mod random;
pub mod respond;
pub mod routes;
pub mod serve;
pub mod state;
pub mod storage;
#[cfg(test)]
pub(crate) mod test_support;
pub mod throttle;
pub mod tls;
pub mod tokens;
pub mod totp;
