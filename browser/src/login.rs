//! Login for public clients ([`OAuthClient`]): PKCE S256 ([RFC 7636], through `keybound-core`'s
//! `pkce`), PAR ([RFC 9126]) with `dpop_jkt` and a DPoP proof when the server offers it (else a
//! plain authorization request with `dpop_jkt`), the authorization redirect, the `state` and `iss`
//! ([RFC 9207]) checks on return, the code exchange and refresh with DPoP, discovery ([RFC 8414],
//! or OpenID Connect discovery), ID token validation ([`oidc`], by keybound-core's `id_token`),
//! refresh before expiry and once on a `401 invalid_token`, RP-initiated logout, and events.
//!
//! - The PKCE verifier (32 random bytes from `crypto.getRandomValues`, 43 characters) and the
//!   `state` (16 random bytes) are the only things that leave memory: they are kept in
//!   `sessionStorage` (this tab and origin only) under `keybound-login:<client id>` between the
//!   redirect and the return, and removed when the return is processed, whatever its outcome (a
//!   forged or failed callback also ends the pending login: start a new one).
//! - Tokens are kept in this object's memory only (never `localStorage` or `sessionStorage`); a
//!   reload forgets them. The refresh token is never handed to JavaScript.
//! - Every request to the authorization server goes through the DPoP `fetch` of the [`DpopKey`]
//!   (one retry on `use_dpop_nonce`).
//!
//! [RFC 7636]: https://www.rfc-editor.org/rfc/rfc7636
//! [RFC 9126]: https://www.rfc-editor.org/rfc/rfc9126
//! [RFC 9207]: https://www.rfc-editor.org/rfc/rfc9207
//! [RFC 8414]: https://www.rfc-editor.org/rfc/rfc8414

pub mod oidc;

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

use keybound_core::id_token::{IdTokenChecks, IdTokenClaims, IdTokenPolicy};
use keybound_core::jwk::Jwks;
use keybound_core::{b64, pkce};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::{JsFuture, future_to_promise, spawn_local};

use crate::error::BrowserError;
use crate::{DpopKey, http, js, js_err};

#[wasm_bindgen(typescript_custom_section)]
const TS_LOGIN_TYPES: &str = r#"
import type { DpopKey } from "./dpop.js";

/** Options of `OAuthClient.create`. */
export interface LoginOptions {
  /** The authorization server's issuer identifier (https, or http on a loopback host). */
  issuer: string;
  /** The public client's id. */
  clientId: string;
  /** The registered redirect URI this page is served at. */
  redirectUri: string;
  /** The scope to ask for (space-separated), unless `startLogin` is given another. */
  scope?: string;
  /** The server's metadata (RFC 8414 names), when it cannot be fetched from `/.well-known/oauth-authorization-server` or `/.well-known/openid-configuration` (e.g. no CORS there). Its `issuer` is checked like a fetched one. */
  metadata?: AuthorizationServerMetadata;
  /** The issuer's JWK Set, to validate ID tokens with, instead of fetching the metadata's `jwks_uri`. */
  jwks?: { keys: object[] };
  /** Where the issuer sends the browser after `logout()` (registered as a `post_logout_redirect_uri`). */
  postLogoutRedirectUri?: string;
  /** Refresh the access token before it expires (default true; needs a refresh token and `expires_in`). */
  autoRefresh?: boolean;
  /** How long before expiry to refresh, in seconds (default 60, at most half the token's lifetime). */
  refreshMargin?: number;
}

/** The RFC 8414 (or OpenID Connect discovery) metadata the login uses. */
export interface AuthorizationServerMetadata {
  issuer: string;
  authorization_endpoint: string;
  token_endpoint: string;
  /** PAR (RFC 9126): used when present; without it the authorization request goes in the URL. */
  pushed_authorization_request_endpoint?: string;
  /** When true, a `pushed_authorization_request_endpoint` is required. */
  require_pushed_authorization_requests?: boolean;
  /** Where ID tokens' keys are; without it (and without `jwks`), ID tokens are not validated. */
  jwks_uri?: string;
  /** RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0). */
  end_session_endpoint?: string;
  [other: string]: unknown;
}

/** Options of `OAuthClient.logout`. */
export interface LogoutOptions {
  /** Overrides the client's `postLogoutRedirectUri`. */
  postLogoutRedirectUri?: string;
  /** A `state` to get back on the post-logout redirect. */
  state?: string;
}

/** The events of an `OAuthClient` (`client.on(type, listener)`). */
export type OAuthClientEvent =
  | { type: "tokenRefreshed"; trigger: "timer" | "invalid_token" | "call"; accessToken: string; expiresIn?: number; scope?: string }
  | { type: "refreshFailed"; trigger: "timer" | "invalid_token" | "call"; error: unknown }
  | { type: "sessionEnded"; reason: "logout" };

/** The names of the `OAuthClient` events. */
export type OAuthClientEventType = OAuthClientEvent["type"];

/** Options of `OAuthClient.startLogin`. */
export interface StartLoginOptions {
  /** The scope to ask for, instead of the client's default. */
  scope?: string;
  /**
   * RFC 9396 authorization details: an array of objects, each with a `type` the server
   * registered (e.g. a payment: amount, currency, payee). Sent with the pushed request (or in
   * the authorization URL without PAR); the server shows them on its consent page and the
   * access token carries what was granted (`TokenResult.authorizationDetails`).
   */
  authorizationDetails?: Array<{ type: string } & Record<string, unknown>>;
}

/** What a successful code exchange or refresh gave (the refresh token stays inside the module). */
export interface TokenResult {
  /** The DPoP-bound access token (also in `client.accessToken`). */
  accessToken: string;
  /** Always "DPoP". */
  tokenType: "DPoP";
  /** Seconds until the access token expires, if the server said. */
  expiresIn?: number;
  /** The granted scope, if the server said. */
  scope?: string;
  /** The OpenID Connect ID token, if one was issued (validated when the issuer's keys are known: see `idTokenClaims`). */
  idToken?: string;
  /** The claims of the ID token, once validated (signature, iss, aud, azp, nonce, exp, iat). */
  idTokenClaims?: Record<string, unknown>;
  /** Whether a refresh token was issued (or kept from before). */
  hasRefreshToken: boolean;
  /** The RFC 9396 authorization details granted, if the server said. */
  authorizationDetails?: Array<{ type: string } & Record<string, unknown>>;
}
"#;

#[wasm_bindgen]
extern "C" {
    /// The options of [`OAuthClient::create`] (TypeScript `LoginOptions`).
    #[wasm_bindgen(typescript_type = "LoginOptions")]
    pub type LoginOptions;
    /// The options of [`OAuthClient::start_login`] (TypeScript `StartLoginOptions`).
    #[wasm_bindgen(typescript_type = "StartLoginOptions")]
    pub type StartLoginOptions;
    /// The options of [`OAuthClient::logout`] (TypeScript `LogoutOptions`).
    #[wasm_bindgen(typescript_type = "LogoutOptions")]
    pub type LogoutOptions;
}

/// Where a pending login (PKCE verifier and `state`) is kept across the redirect:
/// `sessionStorage` under this prefix and the client id.
pub const PENDING_PREFIX: &str = "keybound-login:";
/// Random bytes in a PKCE verifier (256 bits: 43 base64url characters).
pub const VERIFIER_BYTES: usize = 32;
/// Random bytes in a `state` (128 bits).
pub const STATE_BYTES: usize = 16;
/// The RFC 8414 well-known path.
pub const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";
/// The OpenID Connect discovery path (appended to the issuer), tried when the RFC 8414 document
/// is not there.
pub const OPENID_METADATA_PATH: &str = "/.well-known/openid-configuration";
/// Random bytes in an OpenID Connect `nonce` (128 bits).
pub const NONCE_BYTES: usize = 16;
/// The default `refreshMargin` (seconds before expiry).
pub const DEFAULT_REFRESH_MARGIN: f64 = 60.0;
/// The event names of [`OAuthClient::on`].
pub const EVENTS: [&str; 3] = ["tokenRefreshed", "refreshFailed", "sessionEnded"];

/// A PKCE verifier and its S256 challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkce {
    /// `code_verifier`: 43 base64url characters from 32 random bytes.
    pub verifier: String,
    /// `code_challenge`: base64url(SHA-256(verifier)), computed by `keybound-core`.
    pub challenge: String,
}

/// Fills `bytes` from `crypto.getRandomValues`.
fn random(bytes: &mut [u8]) -> Result<(), BrowserError> {
    getrandom::fill(bytes)
        .map_err(|_| BrowserError::environment("random_unavailable", "crypto.getRandomValues is missing"))
}

/// A fresh PKCE pair (S256).
///
/// # Errors
/// `random_unavailable` (code `null`) without `crypto.getRandomValues`.
pub fn new_pkce() -> Result<Pkce, BrowserError> {
    let mut bytes = [0u8; VERIFIER_BYTES];
    random(&mut bytes)?;
    let verifier = pkce::verifier_from_random(&bytes);
    let challenge = pkce::challenge_s256(&verifier)?;
    Ok(Pkce { verifier, challenge })
}

/// A fresh `state`: 128 random bits, base64url.
///
/// # Errors
/// `random_unavailable` (code `null`) without `crypto.getRandomValues`.
pub fn new_state() -> Result<String, BrowserError> {
    let mut bytes = [0u8; STATE_BYTES];
    random(&mut bytes)?;
    Ok(b64::encode(&bytes))
}

/// The `authorizationDetails` of `startLogin` options as the JSON text of the
/// `authorization_details` parameter: `None` when absent.
///
/// # Errors
/// `invalid_request` unless it is a non-empty array of objects, each with a string `type`.
pub fn authorization_details(options: &JsValue) -> Result<Option<String>, BrowserError> {
    let value = js::get(options, "authorizationDetails");
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    let bad = || BrowserError::bad_argument("`authorizationDetails` must be a non-empty array of objects with a string `type`");
    let list = value.dyn_ref::<js_sys::Array>().ok_or_else(bad)?;
    let typed = list.length() > 0
        && list
            .iter()
            .all(|d| d.is_object() && !js_sys::Array::is_array(&d) && js::get(&d, "type").is_string());
    if !typed {
        return Err(bad());
    }
    js_sys::JSON::stringify(&value)
        .ok()
        .and_then(|s| s.as_string())
        .map(Some)
        .ok_or_else(bad)
}

/// Whether a space-separated scope asks for OpenID Connect (`openid`).
pub fn is_openid(scope: Option<&str>) -> bool {
    scope.is_some_and(|s| s.split(' ').any(|v| v == "openid"))
}

/// When to refresh a token that expires in `expires_in` seconds: `margin` seconds before, but no
/// earlier than half its lifetime. Milliseconds from now.
pub fn refresh_delay_ms(expires_in: f64, margin: f64) -> f64 {
    let expires_in = expires_in.max(0.0);
    (expires_in - margin.max(0.0).min(expires_in / 2.0)) * 1000.0
}

/// The endpoints the login uses, from checked metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// The issuer identifier (equal to the configured one).
    pub issuer: String,
    /// `pushed_authorization_request_endpoint`, if the server offers PAR (then it is used).
    pub par: Option<String>,
    /// `authorization_endpoint`.
    pub authorization: String,
    /// `token_endpoint`.
    pub token: String,
    /// `jwks_uri`, if any (ID tokens are validated with its keys).
    pub jwks_uri: Option<String>,
    /// `end_session_endpoint`, if any (RP-initiated logout).
    pub end_session: Option<String>,
}

fn invalid(reason: &'static str, message: impl Into<String>) -> BrowserError {
    BrowserError::protocol(keybound_core::ErrorCode::InvalidRequest, reason, message)
}

/// Whether `url` is an absolute `https` URL, or `http` on a loopback host, without a fragment.
pub fn is_server_url(url: &str) -> bool {
    let Ok(parsed) = web_sys::Url::new(url) else {
        return false;
    };
    let loopback = matches!(parsed.hostname().as_str(), "127.0.0.1" | "localhost" | "[::1]");
    parsed.hash().is_empty() && (parsed.protocol() == "https:" || (parsed.protocol() == "http:" && loopback))
}

/// The RFC 8414 §3.1 metadata URL of an issuer: the well-known path inserted between the host and
/// the issuer's path.
///
/// # Errors
/// `invalid_request` (`invalid_argument`) for an issuer that is not an https (or loopback http)
/// URL without query and fragment.
pub fn metadata_url(issuer: &str) -> Result<String, BrowserError> {
    let parsed = web_sys::Url::new(issuer).ok().filter(|u| u.search().is_empty());
    let Some(parsed) = parsed.filter(|_| is_server_url(issuer)) else {
        return Err(BrowserError::bad_argument(
            "issuer must be an https (or loopback http) URL without query or fragment",
        ));
    };
    let path = parsed.pathname();
    let path = if path == "/" { "" } else { path.as_str() };
    Ok(format!("{}{METADATA_PATH}{path}", parsed.origin()))
}

/// Checks authorization server metadata against the configured issuer (RFC 8414 §3.3: they must be
/// identical) and reads the endpoints.
///
/// # Errors
/// `invalid_request` with reason `issuer_mismatch` when the metadata's `issuer` differs, and
/// `metadata_invalid` when a required endpoint is missing or one is not an https (or loopback
/// http) URL, or when `require_pushed_authorization_requests` is true without a
/// `pushed_authorization_request_endpoint`.
pub fn endpoints_from_metadata(metadata: &JsValue, issuer: &str) -> Result<Endpoints, BrowserError> {
    let found = js::str_of(metadata, "issuer");
    if found.as_deref() != Some(issuer) {
        return Err(invalid(
            "issuer_mismatch",
            format!(
                "the metadata's issuer {} is not the configured issuer {issuer} (RFC 8414 §3.3)",
                found.as_deref().unwrap_or("(none)")
            ),
        ));
    }
    let endpoint = |name: &str| -> Result<String, BrowserError> {
        match js::str_of(metadata, name) {
            Some(url) if is_server_url(&url) => Ok(url),
            _ => Err(invalid(
                "metadata_invalid",
                format!("the metadata has no usable {name}"),
            )),
        }
    };
    let optional = |name: &str| -> Result<Option<String>, BrowserError> {
        if js::get(metadata, name).is_undefined() || js::get(metadata, name).is_null() {
            Ok(None)
        } else {
            endpoint(name).map(Some)
        }
    };
    let par = optional("pushed_authorization_request_endpoint")?;
    if par.is_none() && js::get(metadata, "require_pushed_authorization_requests").as_bool() == Some(true) {
        return Err(invalid(
            "metadata_invalid",
            "the metadata requires PAR and has no pushed_authorization_request_endpoint",
        ));
    }
    Ok(Endpoints {
        issuer: issuer.to_string(),
        par,
        authorization: endpoint("authorization_endpoint")?,
        token: endpoint("token_endpoint")?,
        jwks_uri: optional("jwks_uri")?,
        end_session: optional("end_session_endpoint")?,
    })
}

/// A login between the redirect and the return, as kept in `sessionStorage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The `state` sent.
    pub state: String,
    /// The PKCE verifier.
    pub verifier: String,
    /// The issuer the request went to.
    pub issuer: String,
    /// The redirect URI sent.
    pub redirect_uri: String,
    /// The OpenID Connect `nonce` sent (when `openid` was asked for).
    pub nonce: Option<String>,
}

impl Pending {
    fn to_json(&self) -> String {
        let record = js::object(&[
            ("state", &JsValue::from_str(&self.state)),
            ("verifier", &JsValue::from_str(&self.verifier)),
            ("issuer", &JsValue::from_str(&self.issuer)),
            ("redirect_uri", &JsValue::from_str(&self.redirect_uri)),
            (
                "nonce",
                &self.nonce.as_deref().map_or(JsValue::UNDEFINED, JsValue::from_str),
            ),
        ]);
        js_sys::JSON::stringify(&record)
            .ok()
            .and_then(|s| s.as_string())
            .unwrap_or_default()
    }

    fn from_json(text: &str) -> Option<Pending> {
        let v = js::parse_json(text);
        let field = |name: &str| js::str_of(&v, name);
        Some(Pending {
            state: field("state")?,
            verifier: field("verifier")?,
            issuer: field("issuer")?,
            redirect_uri: field("redirect_uri")?,
            nonce: field("nonce"),
        })
    }
}

/// The `sessionStorage` key of a client's pending login.
pub fn pending_key(client_id: &str) -> String {
    format!("{PENDING_PREFIX}{client_id}")
}

fn storage_error(e: &JsValue) -> BrowserError {
    BrowserError::environment("session_storage_unavailable", "sessionStorage refused").with_js(e)
}

/// Takes (reads and removes) the pending login of a client.
///
/// # Errors
/// `session_storage_unavailable` (code `null`) when `sessionStorage` is missing or refuses.
pub fn take_pending(client_id: &str) -> Result<Option<Pending>, BrowserError> {
    let key = pending_key(client_id);
    let text = js::session_get(&key).map_err(|e| storage_error(&e))?;
    js::session_remove(&key).map_err(|e| storage_error(&e))?;
    Ok(text.as_deref().and_then(Pending::from_json))
}

/// One query parameter of a callback URL: `None` if absent.
///
/// # Errors
/// `invalid_request` (`duplicate_parameter`) if it appears more than once (RFC 6749 §3.1).
fn single(params: &web_sys::UrlSearchParams, name: &str) -> Result<Option<String>, BrowserError> {
    if params.get_all(name).length() > 1 {
        return Err(invalid(
            "duplicate_parameter",
            format!("the callback has more than one {name}"),
        ));
    }
    Ok(params.get(name))
}

/// Checks an authorization response (the URL the server redirected to) against the pending login
/// and returns the authorization code.
///
/// The checks, in order: the URL is the pending login's redirect URI; `state` is the one sent
/// (`state_missing`, `state_mismatch`); `iss` is the issuer (RFC 9207: `iss_missing`,
/// `iss_mismatch`); then an `error` response becomes an error with the server's code (reason
/// `authorization_error`); else the `code` (`code_missing`). Mismatches have code
/// `invalid_request`.
///
/// # Errors
/// As above, and `invalid_request` (`invalid_argument`) for a URL that does not parse.
pub fn check_callback(callback_url: &str, pending: &Pending) -> Result<String, BrowserError> {
    let url = web_sys::Url::new(callback_url)
        .map_err(|_| BrowserError::bad_argument("the callback URL must be an absolute URL"))?;
    let base = format!("{}{}", url.origin(), url.pathname());
    if base != pending.redirect_uri {
        return Err(invalid(
            "redirect_uri_mismatch",
            format!("the callback {base} is not the redirect URI {}", pending.redirect_uri),
        ));
    }
    let params = url.search_params();
    match single(&params, "state")? {
        None => return Err(invalid("state_missing", "the callback has no state")),
        Some(state) if state != pending.state => {
            return Err(invalid(
                "state_mismatch",
                "state mismatch: this callback is not the answer to this tab's login request",
            ));
        }
        Some(_) => {}
    }
    match single(&params, "iss")? {
        None => return Err(invalid("iss_missing", "the callback has no iss (RFC 9207)")),
        Some(iss) if iss != pending.issuer => {
            return Err(invalid(
                "iss_mismatch",
                format!(
                    "iss mismatch (RFC 9207): the callback comes from {iss}, not {}",
                    pending.issuer
                ),
            ));
        }
        Some(_) => {}
    }
    if let Some(error) = single(&params, "error")? {
        let description = single(&params, "error_description")?.unwrap_or_default();
        return Err(BrowserError::server(
            Some(&error),
            "authorization_error",
            format!("the authorization server answered {error}: {description}"),
        ));
    }
    match single(&params, "code")? {
        Some(code) if !code.is_empty() => Ok(code),
        _ => Err(invalid("code_missing", "the callback has no code")),
    }
}

/// The tokens of a logged-in client, in memory only.
#[derive(Clone)]
struct Tokens {
    access_token: String,
    refresh_token: Option<String>,
    expires_in: Option<f64>,
    expires_at: Option<f64>,
    scope: Option<String>,
    /// The RFC 9396 `authorization_details` granted, as the token response gave them.
    authorization_details: Option<JsValue>,
    id_token: Option<String>,
    id_token_claims: Option<JsValue>,
    /// The validated claims, as keybound-core read them (a refreshed ID token must keep their
    /// `iss`, `sub` and `aud`).
    id_claims: Option<IdTokenClaims>,
}

/// What started a refresh (the `trigger` of the refresh events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// The timer set from `expires_in`.
    Timer,
    /// A `401 invalid_token` answer to [`OAuthClient::fetch`].
    InvalidToken,
    /// The app called [`OAuthClient::refresh`].
    Call,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Timer => "timer",
            Trigger::InvalidToken => "invalid_token",
            Trigger::Call => "call",
        }
    }
}

/// The state behind an [`OAuthClient`], shared with its pending Promises and its timer.
struct ClientInner {
    this: Weak<ClientInner>,
    key: DpopKey,
    client_id: String,
    redirect_uri: String,
    scope: Option<String>,
    endpoints: Endpoints,
    post_logout_redirect_uri: Option<String>,
    tokens: RefCell<Option<Tokens>>,
    /// The issuer's keys: given by the app, or fetched from `jwks_uri` when first needed.
    jwks: RefCell<Option<Jwks>>,
    jwks_given: bool,
    auto_refresh: Cell<bool>,
    refresh_margin: f64,
    /// When to refresh (epoch milliseconds, local clock), if the token can be refreshed.
    refresh_at: Cell<Option<f64>>,
    /// Bumped by every (re)scheduling and cancellation: a timer of an older value does nothing.
    timer: Cell<u64>,
    /// The refresh in flight, shared by everyone who asks meanwhile (refresh tokens may rotate:
    /// two refreshes with the same one would end the session at many servers).
    refreshing: RefCell<Option<js_sys::Promise>>,
    listeners: RefCell<Vec<(String, js_sys::Function)>>,
}

/// A public OAuth client that logs in with PKCE and DPoP (PAR when the server offers it), with its
/// tokens in memory.
#[wasm_bindgen]
pub struct OAuthClient {
    inner: Rc<ClientInner>,
}

fn form(entries: &[(&str, &str)]) -> Result<web_sys::UrlSearchParams, JsValue> {
    let params = web_sys::UrlSearchParams::new()?;
    for (name, value) in entries {
        params.append(name, value);
    }
    Ok(params)
}

/// POSTs a form with a DPoP proof (one nonce retry) and returns the status and the JSON body
/// (`null` when the body is not JSON).
/// The key's DPoP `fetch` (`src/dpop.js`: one retry on `use_dpop_nonce`).
async fn dpop_fetch(
    key: &DpopKey,
    url: &str,
    init: &web_sys::RequestInit,
    access_token: Option<&str>,
) -> Result<web_sys::Response, JsValue> {
    let promise = key.fetch(url, Some(init.clone()), access_token.map(str::to_string));
    js::call(Ok(promise)).await?.dyn_into()
}

async fn post_form(key: &DpopKey, url: &str, params: &web_sys::UrlSearchParams) -> Result<(u16, JsValue), JsValue> {
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_body(params);
    let response = dpop_fetch(key, url, &init, None).await?;
    let text = js::call(response.text()).await?.as_string().unwrap_or_default();
    Ok((response.status(), js::parse_json(&text)))
}

/// The error for a failed PAR or token request: the body's `error` as the code.
fn server_error(what: &str, reason: &'static str, status: u16, body: &JsValue) -> BrowserError {
    let error = js::str_of(body, "error");
    let description = js::str_of(body, "error_description").unwrap_or_default();
    BrowserError::server(
        error.as_deref(),
        reason,
        format!(
            "{what} failed: {status} {} {description}",
            error.as_deref().unwrap_or("")
        ),
    )
}

/// Reads a successful token response (RFC 6749 §5.1); what it lacks (a new refresh token, a new ID token) is kept
/// from `previous`.
fn parse_tokens(body: &JsValue, previous: Option<&Tokens>) -> Result<Tokens, BrowserError> {
    let access_token = js::str_of(body, "access_token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| invalid("token_response_invalid", "the token response has no access_token"))?;
    let token_type = js::str_of(body, "token_type").unwrap_or_default();
    if !token_type.eq_ignore_ascii_case("DPoP") {
        return Err(BrowserError::protocol(
            keybound_core::ErrorCode::InvalidToken,
            "token_not_dpop_bound",
            format!("expected a DPoP-bound token, got token_type {token_type:?}"),
        ));
    }
    let expires_in = if body.is_object() {
        js::get(body, "expires_in")
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0)
    } else {
        None
    };
    let id_token = js::str_of(body, "id_token");
    let (previous_id, previous_claims, previous_id_claims) = match (&id_token, previous) {
        (None, Some(p)) => (p.id_token.clone(), p.id_token_claims.clone(), p.id_claims.clone()),
        _ => (None, None, None),
    };
    Ok(Tokens {
        access_token,
        refresh_token: js::str_of(body, "refresh_token").or_else(|| previous.and_then(|p| p.refresh_token.clone())),
        expires_in,
        expires_at: expires_in.map(|s| js::now_millis() + s * 1000.0),
        scope: js::str_of(body, "scope"),
        authorization_details: Some(js::get(body, "authorization_details"))
            .filter(js_sys::Array::is_array)
            .or_else(|| previous.and_then(|p| p.authorization_details.clone())),
        id_token: id_token.or(previous_id),
        id_token_claims: previous_claims,
        id_claims: previous_id_claims,
    })
}

/// The `TokenResult` of a code exchange or refresh.
fn token_result(tokens: &Tokens) -> JsValue {
    let opt = |v: &Option<String>| v.as_deref().map_or(JsValue::UNDEFINED, JsValue::from_str);
    js::object(&[
        ("accessToken", &JsValue::from_str(&tokens.access_token)),
        ("tokenType", &JsValue::from_str("DPoP")),
        (
            "expiresIn",
            &tokens.expires_in.map_or(JsValue::UNDEFINED, JsValue::from_f64),
        ),
        ("scope", &opt(&tokens.scope)),
        ("idToken", &opt(&tokens.id_token)),
        (
            "idTokenClaims",
            tokens.id_token_claims.as_ref().unwrap_or(&JsValue::UNDEFINED),
        ),
        ("hasRefreshToken", &JsValue::from_bool(tokens.refresh_token.is_some())),
        (
            "authorizationDetails",
            tokens.authorization_details.as_ref().unwrap_or(&JsValue::UNDEFINED),
        ),
    ])
    .into()
}

/// Whether a response is a `401` whose `DPoP` challenge says `invalid_token` (RFC 9449 §7.1,
/// RFC 6750 §3.1): the access token expired or was revoked.
fn says_invalid_token(response: &web_sys::Response) -> bool {
    response.status() == 401
        && response
            .headers()
            .get("WWW-Authenticate")
            .ok()
            .flatten()
            .and_then(|h| http::dpop_challenge_error(&h))
            .is_some_and(|e| e == "invalid_token")
}

impl ClientInner {
    fn access_token(&self) -> Option<String> {
        self.tokens.borrow().as_ref().map(|t| t.access_token.clone())
    }

    fn has_refresh_token(&self) -> bool {
        self.tokens.borrow().as_ref().is_some_and(|t| t.refresh_token.is_some())
    }

    /// Calls the listeners of `kind` with `event`.
    fn emit(&self, kind: &str, event: &JsValue) {
        let listeners: Vec<js_sys::Function> = self
            .listeners
            .borrow()
            .iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, f)| f.clone())
            .collect();
        for listener in listeners {
            oidc::call_listener(&listener, event);
        }
    }

    /// Keeps new tokens and schedules their refresh.
    fn set_tokens(&self, tokens: Tokens) {
        let refresh_at = match (&tokens.refresh_token, tokens.expires_in) {
            (Some(_), Some(expires_in)) => Some(js::now_millis() + refresh_delay_ms(expires_in, self.refresh_margin)),
            _ => None,
        };
        self.tokens.replace(Some(tokens));
        self.refresh_at.set(refresh_at);
        self.schedule();
    }

    /// Cancels the refresh timer.
    fn cancel_timer(&self) {
        self.timer.set(self.timer.get().wrapping_add(1));
    }

    /// (Re)starts the refresh timer, if refreshing is on and possible.
    fn schedule(&self) {
        self.cancel_timer();
        let generation = self.timer.get();
        let Some(at) = self.refresh_at.get().filter(|_| self.auto_refresh.get()) else {
            return;
        };
        let weak = self.this.clone();
        spawn_local(async move {
            oidc::sleep(at - js::now_millis()).await;
            let Some(inner) = weak.upgrade() else {
                return;
            };
            if inner.timer.get() == generation && inner.auto_refresh.get() {
                // The outcome goes to the listeners (tokenRefreshed or refreshFailed).
                let _ = refresh_shared(&inner, Trigger::Timer).await;
            }
        });
    }

    /// The issuer's keys: the given ones, the cached ones, or fetched from `jwks_uri` (`refetch`
    /// fetches again, for a key the cached set does not have). `None` without a source.
    async fn keys(&self, refetch: bool) -> Result<Option<Jwks>, JsValue> {
        if let Some(keys) = self.jwks.borrow().as_ref().filter(|_| !refetch || self.jwks_given) {
            return Ok(Some(keys.clone()));
        }
        let Some(uri) = self.endpoints.jwks_uri.as_deref() else {
            return Ok(None);
        };
        let keys = oidc::fetch_jwks(uri).await?;
        self.jwks.replace(Some(keys.clone()));
        Ok(Some(keys))
    }

    /// Validates the ID token of `tokens` (when the issuer's keys are known) and keeps its claims:
    /// its `at_hash` against the access token beside it; for a refresh, its `iss`, `sub` and
    /// `aud` against the `original` ID token's. `required`: an ID token must be there (`openid`
    /// was asked for at login).
    async fn check_id_token(
        &self,
        tokens: &mut Tokens,
        nonce: Option<&str>,
        required: bool,
        original: Option<&IdTokenClaims>,
    ) -> Result<(), JsValue> {
        let Some(id_token) = tokens.id_token.clone().filter(|_| tokens.id_token_claims.is_none()) else {
            if required && tokens.id_token.is_none() {
                return Err(js_err(BrowserError::protocol(
                    keybound_core::ErrorCode::InvalidToken,
                    "id_token_missing",
                    "openid was asked for and the token response has no id_token",
                )));
            }
            return Ok(());
        };
        let policy = IdTokenPolicy::new(self.endpoints.issuer.clone(), self.client_id.clone());
        let now = http::iat(js::now_millis(), self.key.clock_offset());
        let mut refetched = false;
        loop {
            let Some(keys) = self.keys(refetched).await? else {
                return Ok(());
            };
            let checks = IdTokenChecks {
                nonce,
                access_token: Some(&tokens.access_token),
                previous: original,
            };
            match oidc::verify_id_token(&id_token, &keys, &policy, &checks, now).await {
                Ok(claims) => {
                    tokens.id_token_claims = Some(oidc::claims_to_js(&claims));
                    tokens.id_claims = Some(claims);
                    return Ok(());
                }
                // The issuer may have rotated its keys since the set was fetched: fetch it once more.
                Err(e) if e.reason == "id_token_unknown_key" && !refetched && !self.jwks_given => refetched = true,
                Err(e) => return Err(js_err(e)),
            }
        }
    }

    async fn start(&self, scope: Option<String>, details: Option<String>) -> Result<String, JsValue> {
        let pkce = new_pkce().map_err(js_err)?;
        let state = new_state().map_err(js_err)?;
        let scope = scope.or_else(|| self.scope.clone());
        let jkt = self.key.thumbprint();
        let nonce = if is_openid(scope.as_deref()) {
            Some(new_state().map_err(js_err)?)
        } else {
            None
        };
        let mut entries = vec![
            ("client_id", self.client_id.as_str()),
            ("response_type", "code"),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("state", state.as_str()),
            ("code_challenge", pkce.challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("dpop_jkt", jkt.as_str()),
        ];
        if let Some(scope) = scope.as_deref() {
            entries.push(("scope", scope));
        }
        if let Some(nonce) = nonce.as_deref() {
            entries.push(("nonce", nonce));
        }
        if let Some(details) = details.as_deref() {
            entries.push(("authorization_details", details));
        }
        let url = web_sys::Url::new(&self.endpoints.authorization)?;
        if let Some(par) = &self.endpoints.par {
            let (status, body) = post_form(&self.key, par, &form(&entries)?).await?;
            let request_uri = js::str_of(&body, "request_uri");
            let Some(request_uri) = request_uri.filter(|_| status == 201) else {
                return Err(js_err(server_error("PAR", "par_failed", status, &body)));
            };
            url.search_params().append("client_id", &self.client_id);
            url.search_params().append("request_uri", &request_uri);
        } else {
            // No PAR at this server: the whole request in the URL (RFC 6749 §4.1.1), `dpop_jkt`
            // included (RFC 9449 §10).
            for (name, value) in &entries {
                url.search_params().append(name, value);
            }
        }
        let pending = Pending {
            state,
            verifier: pkce.verifier,
            issuer: self.endpoints.issuer.clone(),
            redirect_uri: self.redirect_uri.clone(),
            nonce,
        };
        js::session_set(&pending_key(&self.client_id), &pending.to_json()).map_err(|e| js_err(storage_error(&e)))?;
        Ok(url.href())
    }

    async fn complete(&self, callback_url: &str) -> Result<JsValue, JsValue> {
        let pending = take_pending(&self.client_id).map_err(js_err)?.ok_or_else(|| {
            js_err(invalid(
                "no_pending_login",
                "no login is pending in this tab (already completed, or started elsewhere)",
            ))
        })?;
        if pending.issuer != self.endpoints.issuer {
            return Err(js_err(invalid(
                "iss_mismatch",
                "the pending login went to another issuer",
            )));
        }
        let code = check_callback(callback_url, &pending).map_err(js_err)?;
        let params = form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &pending.redirect_uri),
            ("code_verifier", &pending.verifier),
            ("client_id", &self.client_id),
        ])?;
        let (status, body) = post_form(&self.key, &self.endpoints.token, &params).await?;
        if status != 200 {
            return Err(js_err(server_error("the code exchange", "token_failed", status, &body)));
        }
        let mut tokens = parse_tokens(&body, None).map_err(js_err)?;
        self.check_id_token(&mut tokens, pending.nonce.as_deref(), pending.nonce.is_some(), None)
            .await?;
        let result = token_result(&tokens);
        self.set_tokens(tokens);
        Ok(result)
    }

    /// One refresh (see [`refresh_shared`]).
    async fn refresh_once(&self) -> Result<JsValue, JsValue> {
        let previous = self.tokens.borrow().clone();
        let refresh_token = previous.as_ref().and_then(|t| t.refresh_token.clone()).ok_or_else(|| {
            js_err(BrowserError::environment(
                "no_refresh_token",
                "there is no refresh token",
            ))
        })?;
        let params = form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh_token),
            ("client_id", &self.client_id),
        ])?;
        let (status, body) = post_form(&self.key, &self.endpoints.token, &params).await?;
        if status != 200 {
            return Err(js_err(server_error("the refresh", "refresh_failed", status, &body)));
        }
        let mut tokens = parse_tokens(&body, previous.as_ref()).map_err(js_err)?;
        // A new ID token from a refresh has no nonce to check, and must be about the same
        // end-user as the original (OpenID Connect Core §12.2).
        let original = previous.as_ref().and_then(|t| t.id_claims.as_ref());
        self.check_id_token(&mut tokens, None, false, original).await?;
        if self.tokens.borrow().is_none() {
            // Logged out while the refresh was in flight: keep nothing.
            return Err(js_err(BrowserError::environment(
                "not_logged_in",
                "logged out during the refresh",
            )));
        }
        let result = token_result(&tokens);
        self.set_tokens(tokens);
        Ok(result)
    }
}

/// A refresh, shared: while one is in flight, everyone who asks gets its outcome. Tells the
/// listeners (`tokenRefreshed` or `refreshFailed`, with the trigger).
async fn refresh_shared(inner: &Rc<ClientInner>, trigger: Trigger) -> Result<JsValue, JsValue> {
    let in_flight = inner.refreshing.borrow().clone();
    let promise = match in_flight {
        Some(p) => p,
        None => {
            let this = Rc::clone(inner);
            let promise = future_to_promise(async move {
                let outcome = this.refresh_once().await;
                this.refreshing.replace(None);
                let event = match &outcome {
                    Ok(result) => {
                        let event = js::object(&[
                            ("type", &JsValue::from_str("tokenRefreshed")),
                            ("trigger", &JsValue::from_str(trigger.as_str())),
                            ("accessToken", &js::get(result, "accessToken")),
                            ("expiresIn", &js::get(result, "expiresIn")),
                            ("scope", &js::get(result, "scope")),
                        ]);
                        ("tokenRefreshed", event)
                    }
                    Err(error) => {
                        let event = js::object(&[
                            ("type", &JsValue::from_str("refreshFailed")),
                            ("trigger", &JsValue::from_str(trigger.as_str())),
                            ("error", error),
                        ]);
                        ("refreshFailed", event)
                    }
                };
                this.emit(event.0, &event.1);
                outcome
            });
            inner.refreshing.replace(Some(promise.clone()));
            promise
        }
    };
    JsFuture::from(promise).await
}

/// [`OAuthClient::fetch`]: the call with the access token; on a `401 invalid_token`, one refresh
/// (or the token another call just refreshed) and one retry.
async fn api_fetch(
    inner: &Rc<ClientInner>,
    url: &str,
    init: &web_sys::RequestInit,
) -> Result<web_sys::Response, JsValue> {
    let token = inner
        .access_token()
        .ok_or_else(|| js_err(BrowserError::environment("not_logged_in", "there is no access token")))?;
    let response = dpop_fetch(&inner.key, url, init, Some(&token)).await?;
    if !says_invalid_token(&response) || !inner.has_refresh_token() {
        return Ok(response);
    }
    let mut fresh = inner.access_token().filter(|t| *t != token);
    if fresh.is_none() && refresh_shared(inner, Trigger::InvalidToken).await.is_ok() {
        fresh = inner.access_token().filter(|t| *t != token);
    }
    match fresh {
        Some(fresh) => dpop_fetch(&inner.key, url, init, Some(&fresh)).await,
        None => Ok(response),
    }
}

/// An optional boolean option.
fn optional_bool(options: &JsValue, name: &str) -> Result<Option<bool>, BrowserError> {
    let v = js::get(options, name);
    if v.is_undefined() || v.is_null() {
        return Ok(None);
    }
    v.as_bool()
        .map(Some)
        .ok_or_else(|| BrowserError::bad_argument(format!("`{name}` must be a boolean")))
}

/// An absolute URL without a fragment (a post-logout redirect URI).
fn check_absolute(name: &str, url: Option<String>) -> Result<Option<String>, BrowserError> {
    match url {
        Some(u) if !web_sys::Url::new(&u).is_ok_and(|p| p.hash().is_empty()) => Err(BrowserError::bad_argument(
            format!("{name} must be an absolute URL without fragment"),
        )),
        other => Ok(other),
    }
}

/// Fetches the metadata: RFC 8414's document, else OpenID Connect discovery's.
async fn discover(issuer: &str) -> Result<JsValue, JsValue> {
    let rfc8414 = metadata_url(issuer).map_err(js_err)?;
    let openid = format!("{}{OPENID_METADATA_PATH}", issuer.trim_end_matches('/'));
    let mut statuses = Vec::new();
    for url in [rfc8414, openid] {
        let request = web_sys::Request::new_with_str(&url)?;
        match js::fetch(&request).await {
            Ok(response) => {
                let text = js::call(response.text()).await?.as_string().unwrap_or_default();
                if response.status() == 200 {
                    return Ok(js::parse_json(&text));
                }
                statuses.push(format!("{url} answered {}", response.status()));
            }
            // The first may fail (a server without CORS on a path it does not serve); the second
            // decides.
            Err(_) if statuses.is_empty() => statuses.push(format!("{url} failed")),
            Err(e) => return Err(e),
        }
    }
    Err(js_err(invalid("metadata_unavailable", statuses.join("; "))))
}

async fn create(key: DpopKey, options: JsValue) -> Result<OAuthClient, JsValue> {
    let options = js::options_object(&options, "login options").map_err(js_err)?;
    let issuer = js::required_string(&options, "issuer").map_err(js_err)?;
    let client_id = js::required_string(&options, "clientId").map_err(js_err)?;
    let redirect_uri = js::required_string(&options, "redirectUri").map_err(js_err)?;
    let scope = js::optional_string(&options, "scope").map_err(js_err)?;
    let post_logout_redirect_uri = check_absolute(
        "postLogoutRedirectUri",
        js::optional_string(&options, "postLogoutRedirectUri").map_err(js_err)?,
    )
    .map_err(js_err)?;
    let auto_refresh = optional_bool(&options, "autoRefresh").map_err(js_err)?.unwrap_or(true);
    let margin = js::get(&options, "refreshMargin");
    let refresh_margin = if margin.is_undefined() || margin.is_null() {
        DEFAULT_REFRESH_MARGIN
    } else {
        margin.as_f64().filter(|m| m.is_finite() && *m >= 0.0).ok_or_else(|| {
            js_err(BrowserError::bad_argument(
                "refreshMargin must be a number of seconds >= 0",
            ))
        })?
    };
    if client_id != key.client_id() {
        return Err(js_err(BrowserError::bad_argument(
            "clientId must be the client id the DpopKey was opened for",
        )));
    }
    let redirect_ok = web_sys::Url::new(&redirect_uri).is_ok_and(|u| {
        u.search().is_empty() && u.hash().is_empty() && format!("{}{}", u.origin(), u.pathname()) == redirect_uri
    });
    if !redirect_ok {
        return Err(js_err(BrowserError::bad_argument(
            "redirectUri must be an absolute URL without query or fragment",
        )));
    }
    metadata_url(&issuer).map_err(js_err)?;
    let given_jwks = js::get(&options, "jwks");
    let jwks = if given_jwks.is_undefined() || given_jwks.is_null() {
        None
    } else {
        let text = js_sys::JSON::stringify(&given_jwks)
            .ok()
            .and_then(|s| s.as_string())
            .unwrap_or_default();
        Some(oidc::jwks_from_json(&text).map_err(js_err)?)
    };
    let given = js::get(&options, "metadata");
    let metadata = if given.is_undefined() || given.is_null() {
        discover(&issuer).await?
    } else if given.dyn_ref::<js_sys::Object>().is_some() {
        given
    } else {
        return Err(js_err(BrowserError::bad_argument("metadata must be an object")));
    };
    let endpoints = endpoints_from_metadata(&metadata, &issuer).map_err(js_err)?;
    let jwks_given = jwks.is_some();
    Ok(OAuthClient {
        inner: Rc::new_cyclic(|this| ClientInner {
            this: this.clone(),
            key,
            client_id,
            redirect_uri,
            scope,
            endpoints,
            post_logout_redirect_uri,
            tokens: RefCell::new(None),
            jwks: RefCell::new(jwks),
            jwks_given,
            auto_refresh: Cell::new(auto_refresh),
            refresh_margin,
            refresh_at: Cell::new(None),
            timer: Cell::new(0),
            refreshing: RefCell::new(None),
            listeners: RefCell::new(Vec::new()),
        }),
    })
}

#[wasm_bindgen]
impl OAuthClient {
    /// Makes a login client for `key`'s client id: fetches the issuer's metadata from
    /// `/.well-known/oauth-authorization-server`, else `/.well-known/openid-configuration` (or
    /// takes `options.metadata`) and checks that its `issuer` is the configured one.
    ///
    /// # Errors
    /// Rejects with a `KeyboundError`: `invalid_request` for bad options (`invalid_argument`), a
    /// metadata `issuer` that differs (`issuer_mismatch`), metadata without usable endpoints
    /// (`metadata_invalid`) or failed metadata requests (`metadata_unavailable`), a `jwks` that
    /// is not a JWK Set (`invalid_token`, `id_token_malformed`); with `fetch`'s `TypeError` on
    /// network (or CORS) failure.
    #[wasm_bindgen(unchecked_return_type = "Promise<OAuthClient>")]
    pub fn create(key: &DpopKey, options: LoginOptions) -> js_sys::Promise {
        let key = key.clone();
        let options: JsValue = options.into();
        future_to_promise(async move { create(key, options).await.map(JsValue::from) })
    }

    /// Starts a login: makes a PKCE verifier and a `state` (and a `nonce` when the scope has
    /// `openid`), pushes the authorization request (PAR, with `dpop_jkt` and a DPoP proof) when
    /// the server offers PAR, keeps them in `sessionStorage`, and resolves to the authorization
    /// URL to send the browser to (`location.assign(url)`): `client_id` and `request_uri` after
    /// PAR, else the whole request (with `dpop_jkt`).
    ///
    /// # Errors
    /// Rejects with a `KeyboundError` whose code is the server's `error` (reason `par_failed`),
    /// `session_storage_unavailable` (code `null`), or `fetch`'s `TypeError` on network failure.
    #[wasm_bindgen(js_name = startLogin, unchecked_return_type = "Promise<string>")]
    pub fn start_login(
        &self,
        #[wasm_bindgen(unchecked_optional_param_type = "StartLoginOptions")] options: Option<StartLoginOptions>,
    ) -> js_sys::Promise {
        let inner = Rc::clone(&self.inner);
        let options: Option<JsValue> = options.map(Into::into);
        future_to_promise(async move {
            let (scope, details) = match options.filter(|o| !o.is_undefined() && !o.is_null()) {
                Some(o) => {
                    let o = js::options_object(&o, "startLogin options").map_err(js_err)?;
                    (
                        js::optional_string(&o, "scope").map_err(js_err)?,
                        authorization_details(&o).map_err(js_err)?,
                    )
                }
                None => (None, None),
            };
            inner.start(scope, details).await.map(|url| JsValue::from_str(&url))
        })
    }

    /// Whether `url` (e.g. `location.href`) is a return to this client's redirect URI.
    #[wasm_bindgen(js_name = isCallback)]
    pub fn is_callback(&self, url: &str) -> bool {
        web_sys::Url::new(url).is_ok_and(|u| format!("{}{}", u.origin(), u.pathname()) == self.inner.redirect_uri)
    }

    /// Completes a login on return from the authorization server: takes the pending login out of
    /// `sessionStorage` (it is removed whatever happens next), checks the redirect URI, `state` and
    /// `iss` (RFC 9207), exchanges the code (with the PKCE verifier and a DPoP proof) for a
    /// DPoP-bound token, kept in memory, and, when `openid` was asked for, validates the ID token
    /// with the issuer's keys (`jwks_uri` or `options.jwks`) and the `nonce` sent. Schedules the
    /// refresh.
    ///
    /// # Errors
    /// Rejects with a `KeyboundError`: `invalid_request` with reason `no_pending_login`,
    /// `redirect_uri_mismatch`, `state_missing`, `state_mismatch`, `iss_missing`, `iss_mismatch`,
    /// `duplicate_parameter` or `code_missing`; the server's `error` as the code for an error
    /// response (reason `authorization_error`) or a failed exchange (`token_failed`);
    /// `invalid_token` (`token_not_dpop_bound`) if the token is not a DPoP token; `invalid_token`
    /// with keybound-core's reason for an ID token that fails validation (`id_token_nonce_mismatch`,
    /// `id_token_bad_signature`, ...; see `keybound_core::id_token`) or is missing
    /// (`id_token_missing`); `jwks_unavailable` (code `null`) if the keys cannot be fetched.
    #[wasm_bindgen(js_name = completeLogin, unchecked_return_type = "Promise<TokenResult>")]
    pub fn complete_login(&self, #[wasm_bindgen(js_name = callbackUrl)] callback_url: &str) -> js_sys::Promise {
        let inner = Rc::clone(&self.inner);
        let url = callback_url.to_string();
        future_to_promise(async move { inner.complete(&url).await })
    }

    /// Gets a new access token with the refresh token (and a DPoP proof from the same key); a
    /// refresh already in flight (the timer's, another call's) is shared, not repeated. Tells the
    /// listeners (`tokenRefreshed` or `refreshFailed`, trigger `"call"`).
    ///
    /// # Errors
    /// Rejects with a `KeyboundError`: `no_refresh_token` (code `null`) without one; the server's
    /// `error` as the code (reason `refresh_failed`), the tokens then unchanged.
    #[wasm_bindgen(unchecked_return_type = "Promise<TokenResult>")]
    pub fn refresh(&self) -> js_sys::Promise {
        let inner = Rc::clone(&self.inner);
        future_to_promise(async move { refresh_shared(&inner, Trigger::Call).await })
    }

    /// `key.fetch(url, init, accessToken)` with the current access token. When the answer is a
    /// `401` whose DPoP challenge says `invalid_token` and a refresh token is held, refreshes once
    /// (trigger `"invalid_token"`) and retries once with the new token; if the refresh fails,
    /// resolves to the `401`.
    ///
    /// # Errors
    /// Rejects with a `KeyboundError` `not_logged_in` (code `null`) without a token, else as
    /// [`DpopKey::fetch`].
    #[wasm_bindgen(unchecked_return_type = "Promise<Response>")]
    pub fn fetch(
        &self,
        url: &str,
        #[wasm_bindgen(unchecked_optional_param_type = "RequestInit")] init: Option<web_sys::RequestInit>,
    ) -> js_sys::Promise {
        let inner = Rc::clone(&self.inner);
        let url = url.to_string();
        future_to_promise(async move {
            let response = api_fetch(&inner, &url, &init.unwrap_or_default()).await?;
            Ok(response.into())
        })
    }

    /// The access token (in memory only), or `undefined` before login.
    #[wasm_bindgen(getter, js_name = accessToken)]
    pub fn access_token(&self) -> Option<String> {
        self.inner.tokens.borrow().as_ref().map(|t| t.access_token.clone())
    }

    /// When the access token expires (milliseconds since the epoch, local clock), if known.
    #[wasm_bindgen(getter, js_name = expiresAt)]
    pub fn expires_at(&self) -> Option<f64> {
        self.inner.tokens.borrow().as_ref().and_then(|t| t.expires_at)
    }

    /// The granted scope, if the server said.
    #[wasm_bindgen(getter)]
    pub fn scope(&self) -> Option<String> {
        self.inner.tokens.borrow().as_ref().and_then(|t| t.scope.clone())
    }

    /// Whether a refresh token is held (it is never handed out).
    #[wasm_bindgen(getter, js_name = hasRefreshToken)]
    pub fn has_refresh_token(&self) -> bool {
        self.inner
            .tokens
            .borrow()
            .as_ref()
            .is_some_and(|t| t.refresh_token.is_some())
    }

    /// The issuer identifier (checked against the metadata).
    #[wasm_bindgen(getter)]
    pub fn issuer(&self) -> String {
        self.inner.endpoints.issuer.clone()
    }

    /// The token endpoint from the metadata.
    #[wasm_bindgen(getter, js_name = tokenEndpoint)]
    pub fn token_endpoint(&self) -> String {
        self.inner.endpoints.token.clone()
    }

    /// The ID token, if one was issued (or kept from before a refresh).
    #[wasm_bindgen(getter, js_name = idToken)]
    pub fn id_token(&self) -> Option<String> {
        self.inner.tokens.borrow().as_ref().and_then(|t| t.id_token.clone())
    }

    /// The validated ID token's claims (an object), or `undefined`.
    #[wasm_bindgen(getter, js_name = idTokenClaims, unchecked_return_type = "Record<string, unknown> | undefined")]
    pub fn id_token_claims(&self) -> JsValue {
        self.inner
            .tokens
            .borrow()
            .as_ref()
            .and_then(|t| t.id_token_claims.clone())
            .unwrap_or(JsValue::UNDEFINED)
    }

    /// Whether the access token is refreshed before it expires (`refreshMargin` seconds before).
    #[wasm_bindgen(getter, js_name = autoRefresh)]
    pub fn auto_refresh(&self) -> bool {
        self.inner.auto_refresh.get()
    }

    /// Turns the refresh before expiry on (scheduled at once for the current token) or off.
    #[wasm_bindgen(setter, js_name = autoRefresh)]
    pub fn set_auto_refresh(&self, on: bool) {
        self.inner.auto_refresh.set(on);
        self.inner.schedule();
    }

    /// Whether the server offers PAR (then `startLogin` pushes the request).
    #[wasm_bindgen(getter, js_name = usesPar)]
    pub fn uses_par(&self) -> bool {
        self.inner.endpoints.par.is_some()
    }

    /// Adds a listener of `"tokenRefreshed"`, `"refreshFailed"` or `"sessionEnded"` events.
    ///
    /// # Errors
    /// A `KeyboundError` `invalid_request` (`invalid_argument`) for another event name.
    pub fn on(
        &self,
        #[wasm_bindgen(js_name = type, unchecked_param_type = "OAuthClientEventType")] kind: &str,
        #[wasm_bindgen(unchecked_param_type = "(event: OAuthClientEvent) => void")] listener: js_sys::Function,
    ) -> Result<(), JsValue> {
        if !EVENTS.contains(&kind) {
            return Err(js_err(BrowserError::bad_argument(format!(
                "unknown event {kind:?} (one of {})",
                EVENTS.join(", ")
            ))));
        }
        self.inner.listeners.borrow_mut().push((kind.to_string(), listener));
        Ok(())
    }

    /// Removes a listener added with [`OAuthClient::on`].
    pub fn off(
        &self,
        #[wasm_bindgen(js_name = type, unchecked_param_type = "OAuthClientEventType")] kind: &str,
        #[wasm_bindgen(unchecked_param_type = "(event: OAuthClientEvent) => void")] listener: js_sys::Function,
    ) {
        let listener: &JsValue = &listener;
        self.inner
            .listeners
            .borrow_mut()
            .retain(|(k, f)| !(k == kind && JsValue::from(f.clone()) == *listener));
    }

    /// Logs out: forgets the tokens (memory), the refresh timer and any pending login of this
    /// client in this tab, tells the `sessionEnded` listeners, and returns the server's
    /// `end_session_endpoint` URL to send the browser to (OpenID Connect RP-Initiated Logout:
    /// `id_token_hint`, `post_logout_redirect_uri`, `client_id`, `state`), or `undefined` if the
    /// server has none. Wipe the key too (`key.wipe()`) to end the binding.
    ///
    /// # Errors
    /// A `KeyboundError` `invalid_request` (`invalid_argument`) for bad options;
    /// `session_storage_unavailable` if `sessionStorage` refuses. The tokens are forgotten anyway.
    pub fn logout(
        &self,
        #[wasm_bindgen(unchecked_optional_param_type = "LogoutOptions")] options: Option<LogoutOptions>,
    ) -> Result<Option<String>, JsValue> {
        let inner = &self.inner;
        let tokens = inner.tokens.replace(None);
        inner.refresh_at.set(None);
        inner.cancel_timer();
        let cleared = js::session_remove(&pending_key(&inner.client_id)).map_err(|e| js_err(storage_error(&e)));
        inner.emit(
            "sessionEnded",
            &js::object(&[
                ("type", &JsValue::from_str("sessionEnded")),
                ("reason", &JsValue::from_str("logout")),
            ])
            .into(),
        );
        cleared?;
        let options: Option<JsValue> = options
            .map(Into::into)
            .filter(|o: &JsValue| !o.is_undefined() && !o.is_null());
        let (redirect, state) = match options {
            Some(o) => {
                let o = js::options_object(&o, "logout options").map_err(js_err)?;
                let redirect = js::optional_string(&o, "postLogoutRedirectUri").map_err(js_err)?;
                (
                    check_absolute("postLogoutRedirectUri", redirect).map_err(js_err)?,
                    js::optional_string(&o, "state").map_err(js_err)?,
                )
            }
            None => (None, None),
        };
        let Some(end_session) = &inner.endpoints.end_session else {
            return Ok(None);
        };
        let url = web_sys::Url::new(end_session)?;
        let params = url.search_params();
        if let Some(id_token) = tokens.as_ref().and_then(|t| t.id_token.as_deref()) {
            params.append("id_token_hint", id_token);
        }
        if let Some(redirect) = redirect.or_else(|| inner.post_logout_redirect_uri.clone()) {
            params.append("post_logout_redirect_uri", &redirect);
        }
        params.append("client_id", &inner.client_id);
        if let Some(state) = state {
            params.append("state", &state);
        }
        Ok(Some(url.href()))
    }
}
