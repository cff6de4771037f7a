//! The endpoint paths, under the issuer.

/// OpenID Provider metadata.
pub const OPENID_CONFIGURATION: &str = "/.well-known/openid-configuration";
/// RFC 8414 metadata.
pub const OAUTH_METADATA: &str = "/.well-known/oauth-authorization-server";
/// The JWKS.
pub const JWKS: &str = "/jwks";
/// Pushed authorization requests (RFC 9126).
pub const PAR: &str = "/par";
/// The authorization endpoint.
pub const AUTHORIZE: &str = "/authorize";
/// The login form target.
pub const LOGIN: &str = "/authorize/login";
/// The TOTP form target.
pub const TOTP: &str = "/authorize/totp";
/// The consent form target.
pub const CONSENT: &str = "/authorize/consent";
/// The token endpoint.
pub const TOKEN: &str = "/token";
/// Token introspection (RFC 7662).
pub const INTROSPECT: &str = "/introspect";
/// Token revocation (RFC 7009).
pub const REVOKE: &str = "/revoke";
/// Dynamic client registration (RFC 7591); `/register/{client_id}` for RFC 7592.
pub const REGISTER: &str = "/register";
/// OpenID Connect UserInfo.
pub const USERINFO: &str = "/userinfo";
