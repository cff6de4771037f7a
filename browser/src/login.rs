//! Login for public clients ([`OAuthClient`]): PKCE S256 ([RFC 7636], through `keybound-core`'s
//! `pkce`), PAR ([RFC 9126]) with `dpop_jkt` and a DPoP proof, the authorization redirect, the
//! `state` and `iss` ([RFC 9207]) checks on return, the code exchange and refresh with DPoP, and
//! discovery ([RFC 8414]).
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

use std::cell::RefCell;
use std::rc::Rc;

use keybound_core::{b64, pkce};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::future_to_promise;

use crate::error::BrowserError;
use crate::{DpopKey, Inner, dpop_fetch, js, js_err};

#[wasm_bindgen(typescript_custom_section)]
const TS_LOGIN_TYPES: &str = r#"
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
  /** The server's metadata (RFC 8414 names), when it cannot be fetched from `/.well-known/oauth-authorization-server` (e.g. no CORS there). Its `issuer` is checked like a fetched one. */
  metadata?: AuthorizationServerMetadata;
}

/** The RFC 8414 metadata the login uses. */
export interface AuthorizationServerMetadata {
  issuer: string;
  pushed_authorization_request_endpoint: string;
  authorization_endpoint: string;
  token_endpoint: string;
  [other: string]: unknown;
}

/** Options of `OAuthClient.startLogin`. */
export interface StartLoginOptions {
  /** The scope to ask for, instead of the client's default. */
  scope?: string;
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
  /** The OpenID Connect ID token, if one was issued (not validated by this module). */
  idToken?: string;
  /** Whether a refresh token was issued (or kept from before). */
  hasRefreshToken: boolean;
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

/// The endpoints the login uses, from checked metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// The issuer identifier (equal to the configured one).
    pub issuer: String,
    /// `pushed_authorization_request_endpoint`.
    pub par: String,
    /// `authorization_endpoint`.
    pub authorization: String,
    /// `token_endpoint`.
    pub token: String,
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
/// `metadata_invalid` when an endpoint is missing or not an https (or loopback http) URL.
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
    Ok(Endpoints {
        issuer: issuer.to_string(),
        par: endpoint("pushed_authorization_request_endpoint")?,
        authorization: endpoint("authorization_endpoint")?,
        token: endpoint("token_endpoint")?,
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
}

impl Pending {
    fn to_json(&self) -> String {
        let record = js::object(&[
            ("state", &JsValue::from_str(&self.state)),
            ("verifier", &JsValue::from_str(&self.verifier)),
            ("issuer", &JsValue::from_str(&self.issuer)),
            ("redirect_uri", &JsValue::from_str(&self.redirect_uri)),
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
    expires_at: Option<f64>,
    scope: Option<String>,
}

/// The state behind an [`OAuthClient`], shared with its pending Promises.
struct ClientInner {
    key: Rc<Inner>,
    client_id: String,
    redirect_uri: String,
    scope: Option<String>,
    endpoints: Endpoints,
    tokens: RefCell<Option<Tokens>>,
}

/// A public OAuth client that logs in with PAR, PKCE and DPoP, with its tokens in memory.
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
async fn post_form(key: &Inner, url: &str, params: &web_sys::UrlSearchParams) -> Result<(u16, JsValue), JsValue> {
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

/// Reads a successful token response (RFC 6749 §5.1) into tokens, keeping `previous_refresh` when
/// the server sends no new refresh token; returns the tokens and the JS `TokenResult`.
fn read_tokens(body: &JsValue, previous_refresh: Option<String>) -> Result<(Tokens, JsValue), BrowserError> {
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
        js::get(body, "expires_in").as_f64().filter(|s| s.is_finite())
    } else {
        None
    };
    let scope = js::str_of(body, "scope");
    let refresh_token = js::str_of(body, "refresh_token").or(previous_refresh);
    let tokens = Tokens {
        access_token: access_token.clone(),
        expires_at: expires_in.map(|s| js::now_millis() + s * 1000.0),
        scope: scope.clone(),
        refresh_token,
    };
    let result = js::object(&[
        ("accessToken", &JsValue::from_str(&access_token)),
        ("tokenType", &JsValue::from_str("DPoP")),
        ("expiresIn", &expires_in.map_or(JsValue::UNDEFINED, JsValue::from_f64)),
        ("scope", &scope.map_or(JsValue::UNDEFINED, |s| JsValue::from_str(&s))),
        (
            "idToken",
            &js::str_of(body, "id_token").map_or(JsValue::UNDEFINED, |t| JsValue::from_str(&t)),
        ),
        ("hasRefreshToken", &JsValue::from_bool(tokens.refresh_token.is_some())),
    ]);
    Ok((tokens, result.into()))
}

impl ClientInner {
    async fn start(&self, scope: Option<String>) -> Result<String, JsValue> {
        let pkce = new_pkce().map_err(js_err)?;
        let state = new_state().map_err(js_err)?;
        let scope = scope.or_else(|| self.scope.clone());
        let mut entries = vec![
            ("client_id", self.client_id.as_str()),
            ("response_type", "code"),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("state", state.as_str()),
            ("code_challenge", pkce.challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("dpop_jkt", self.key.jkt.as_str()),
        ];
        if let Some(scope) = scope.as_deref() {
            entries.push(("scope", scope));
        }
        let (status, body) = post_form(&self.key, &self.endpoints.par, &form(&entries)?).await?;
        let request_uri = js::str_of(&body, "request_uri");
        let Some(request_uri) = request_uri.filter(|_| status == 201) else {
            return Err(js_err(server_error("PAR", "par_failed", status, &body)));
        };
        let url = web_sys::Url::new(&self.endpoints.authorization)?;
        url.search_params().append("client_id", &self.client_id);
        url.search_params().append("request_uri", &request_uri);
        let pending = Pending {
            state,
            verifier: pkce.verifier,
            issuer: self.endpoints.issuer.clone(),
            redirect_uri: self.redirect_uri.clone(),
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
        let (tokens, result) = read_tokens(&body, None).map_err(js_err)?;
        self.tokens.replace(Some(tokens));
        Ok(result)
    }

    async fn refresh(&self) -> Result<JsValue, JsValue> {
        let refresh_token = self
            .tokens
            .borrow()
            .as_ref()
            .and_then(|t| t.refresh_token.clone())
            .ok_or_else(|| {
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
        let (tokens, result) = read_tokens(&body, Some(refresh_token)).map_err(js_err)?;
        self.tokens.replace(Some(tokens));
        Ok(result)
    }
}

async fn create(key: Rc<Inner>, options: JsValue) -> Result<OAuthClient, JsValue> {
    let options = js::options_object(&options, "login options").map_err(js_err)?;
    let issuer = js::required_string(&options, "issuer").map_err(js_err)?;
    let client_id = js::required_string(&options, "clientId").map_err(js_err)?;
    let redirect_uri = js::required_string(&options, "redirectUri").map_err(js_err)?;
    let scope = js::optional_string(&options, "scope").map_err(js_err)?;
    if client_id != key.client_id {
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
    let url = metadata_url(&issuer).map_err(js_err)?;
    let given = js::get(&options, "metadata");
    let metadata = if given.is_undefined() || given.is_null() {
        let request = web_sys::Request::new_with_str(&url)?;
        let response = js::fetch(&request).await?;
        let text = js::call(response.text()).await?.as_string().unwrap_or_default();
        if response.status() != 200 {
            return Err(js_err(invalid(
                "metadata_unavailable",
                format!("{url} answered {}", response.status()),
            )));
        }
        js::parse_json(&text)
    } else if given.dyn_ref::<js_sys::Object>().is_some() {
        given
    } else {
        return Err(js_err(BrowserError::bad_argument("metadata must be an object")));
    };
    let endpoints = endpoints_from_metadata(&metadata, &issuer).map_err(js_err)?;
    Ok(OAuthClient {
        inner: Rc::new(ClientInner {
            key,
            client_id,
            redirect_uri,
            scope,
            endpoints,
            tokens: RefCell::new(None),
        }),
    })
}

#[wasm_bindgen]
impl OAuthClient {
    /// Makes a login client for `key`'s client id: fetches the issuer's metadata from
    /// `/.well-known/oauth-authorization-server` (or takes `options.metadata`) and checks that its
    /// `issuer` is the configured one.
    ///
    /// # Errors
    /// Rejects with a `KeyboundError`: `invalid_request` for bad options (`invalid_argument`), a
    /// metadata `issuer` that differs (`issuer_mismatch`), metadata without usable endpoints
    /// (`metadata_invalid`) or a failed metadata request (`metadata_unavailable`); with `fetch`'s
    /// `TypeError` on network (or CORS) failure.
    #[wasm_bindgen(unchecked_return_type = "Promise<OAuthClient>")]
    pub fn create(key: &DpopKey, options: LoginOptions) -> js_sys::Promise {
        let key = Rc::clone(&key.inner);
        let options: JsValue = options.into();
        future_to_promise(async move { create(key, options).await.map(JsValue::from) })
    }

    /// Starts a login: makes a PKCE verifier and a `state`, pushes the authorization request (PAR,
    /// with `dpop_jkt` and a DPoP proof), keeps the verifier and `state` in `sessionStorage`, and
    /// resolves to the authorization URL to send the browser to (`location.assign(url)`).
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
            let scope = match options.filter(|o| !o.is_undefined() && !o.is_null()) {
                Some(o) => {
                    let o = js::options_object(&o, "startLogin options").map_err(js_err)?;
                    js::optional_string(&o, "scope").map_err(js_err)?
                }
                None => None,
            };
            inner.start(scope).await.map(|url| JsValue::from_str(&url))
        })
    }

    /// Whether `url` (e.g. `location.href`) is a return to this client's redirect URI.
    #[wasm_bindgen(js_name = isCallback)]
    pub fn is_callback(&self, url: &str) -> bool {
        web_sys::Url::new(url).is_ok_and(|u| format!("{}{}", u.origin(), u.pathname()) == self.inner.redirect_uri)
    }

    /// Completes a login on return from the authorization server: takes the pending login out of
    /// `sessionStorage` (it is removed whatever happens next), checks the redirect URI, `state` and
    /// `iss` (RFC 9207), and exchanges the code (with the PKCE verifier and a DPoP proof) for a
    /// DPoP-bound token, kept in memory.
    ///
    /// # Errors
    /// Rejects with a `KeyboundError`: `invalid_request` with reason `no_pending_login`,
    /// `redirect_uri_mismatch`, `state_missing`, `state_mismatch`, `iss_missing`, `iss_mismatch`,
    /// `duplicate_parameter` or `code_missing`; the server's `error` as the code for an error
    /// response (reason `authorization_error`) or a failed exchange (`token_failed`);
    /// `invalid_token` (`token_not_dpop_bound`) if the token is not a DPoP token.
    #[wasm_bindgen(js_name = completeLogin, unchecked_return_type = "Promise<TokenResult>")]
    pub fn complete_login(&self, #[wasm_bindgen(js_name = callbackUrl)] callback_url: &str) -> js_sys::Promise {
        let inner = Rc::clone(&self.inner);
        let url = callback_url.to_string();
        future_to_promise(async move { inner.complete(&url).await })
    }

    /// Gets a new access token with the refresh token (and a DPoP proof from the same key).
    ///
    /// # Errors
    /// Rejects with a `KeyboundError`: `no_refresh_token` (code `null`) without one; the server's
    /// `error` as the code (reason `refresh_failed`), the tokens then unchanged.
    #[wasm_bindgen(unchecked_return_type = "Promise<TokenResult>")]
    pub fn refresh(&self) -> js_sys::Promise {
        let inner = Rc::clone(&self.inner);
        future_to_promise(async move { inner.refresh().await })
    }

    /// `key.fetch(url, init, accessToken)` with the current access token.
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
            let token = inner
                .tokens
                .borrow()
                .as_ref()
                .map(|t| t.access_token.clone())
                .ok_or_else(|| js_err(BrowserError::environment("not_logged_in", "there is no access token")))?;
            let response = dpop_fetch(&inner.key, &url, &init.unwrap_or_default(), Some(&token)).await?;
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

    /// Forgets the tokens (memory) and any pending login of this client in this tab. Wipe the key
    /// too (`key.wipe()`) to end the binding.
    ///
    /// # Errors
    /// A `KeyboundError` `session_storage_unavailable` if `sessionStorage` refuses; the tokens are
    /// forgotten anyway.
    pub fn logout(&self) -> Result<(), JsValue> {
        self.inner.tokens.replace(None);
        js::session_remove(&pending_key(&self.inner.client_id)).map_err(|e| js_err(storage_error(&e)))
    }
}
