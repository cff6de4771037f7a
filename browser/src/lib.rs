//! # keybound-browser
//!
//! DPoP ([RFC 9449]) for web and mobile-web clients, as a wasm-bindgen module and npm package.
//! What the browser signs is built by `keybound-core`, the same code that verifies it at the
//! gateway and the authorization server.
//!
//! ## What it does
//! - **Keys** ([`DpopKey::open`]): ECDSA P-256 made by WebCrypto with a non-extractable private
//!   key (sign only), kept in IndexedDB per (origin, client id) so a reload keeps the key; two tabs
//!   never keep two keys (see [`key`]). When the browser cannot store the key it falls back to a
//!   memory-only key and says so (`storage`, `fallbackReason`). A software key (weaker: its secret
//!   is in wasm memory) only when the app asks for one, in builds with the `software-key` cargo
//!   feature (it adds about 33 KB of P-256 code to the wasm). [`DpopKey::wipe`] forgets it (logout).
//! - **Proofs** ([`DpopKey::create_proof`]): `typ`, `jwk`, `htm`, `htu` (normalised by core),
//!   `iat` corrected by the clock offset learned from servers' `Date` headers, a 128-bit random
//!   `jti` from `crypto.getRandomValues`, `ath` when an access token is given, `nonce`.
//! - **fetch** ([`DpopKey::fetch`]): adds `Authorization: DPoP` and `DPoP`, remembers each
//!   origin's `DPoP-Nonce` from every response, retries exactly once on `use_dpop_nonce` (401 from
//!   a resource server, 400 from an authorization server), never more.
//! - **Errors**: JavaScript `Error`s named `KeyboundError` with `code` (the RFC error code, or
//!   `null` for an environment failure) and `reason` (see [`error`]).
//!
//! - **Login for public clients** ([`login::OAuthClient`]): discovery (RFC 8414, `issuer`
//!   checked), PKCE S256 with keybound-core, PAR with `dpop_jkt` and a proof, the authorization
//!   URL, `state` and `iss` (RFC 9207) checks on return, code exchange and refresh with DPoP; tokens
//!   in memory only, the verifier and `state` in `sessionStorage` across the redirect, removed when
//!   used.
//!
//! ## What the servers must allow
//! Cross-origin servers must expose `DPoP-Nonce`, `WWW-Authenticate` and `Date`
//! (`Access-Control-Expose-Headers`) and allow the `Authorization` and `DPoP` request headers, or
//! the browser hides them from this module; discovery needs CORS on the metadata document too
//! (else pass `metadata`).
//!
//! [RFC 9449]: https://www.rfc-editor.org/rfc/rfc9449

pub mod error;
pub mod http;
pub mod js;
pub mod key;
#[cfg(feature = "login")]
pub mod login;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use keybound_core::b64;
use keybound_core::dpop::{NewProof, unsigned_proof};
use keybound_core::jwk::PublicKey;
use keybound_core::jws::Alg;
use wasm_bindgen::JsValue;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen_futures::future_to_promise;

use crate::error::BrowserError;
use crate::key::{Signing, SoftwareKey, Storage};

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &str = r#"
/** Options of `DpopKey.open`. */
export interface OpenOptions {
  /** The OAuth client id: one key per (origin, client id). */
  clientId: string;
  /** "indexeddb" (default): persist the key; "memory": keep it in this page only. */
  storage?: "indexeddb" | "memory";
  /** When a software key may be used: "never" (default), "if-needed" (no crypto.subtle), "always". Weaker: its secret is in wasm memory. Only in builds with the `software-key` cargo feature (else "software_key_not_built"). */
  softwareKey?: "never" | "if-needed" | "always";
}

/** What a DPoP proof is for. */
export interface ProofOptions {
  /** The HTTP method (`htm`). */
  method: string;
  /** The absolute http(s) URL of the request (`htu`; query and fragment are dropped). */
  url: string;
  /** The access token sent with the proof: adds `ath`. */
  accessToken?: string;
  /** A server nonce; defaults to the nonce last received from the URL's origin. */
  nonce?: string;
}

/** The RFC error codes keybound-browser puts on its errors: its own, and any OAuth `error` a server answered with (RFC 6749 §4.1.2.1, §5.2). */
export type KeyboundErrorCode =
  | "invalid_request" | "invalid_token" | "insufficient_scope" | "invalid_dpop_proof"
  | "use_dpop_nonce" | "invalid_grant" | "access_denied" | "invalid_client" | "unauthorized_client"
  | "invalid_scope" | "server_error" | "temporarily_unavailable" | (string & {});

/** Every error keybound-browser throws. */
export interface KeyboundError extends Error {
  name: "KeyboundError";
  /** The RFC error code, or null when the environment failed (no WebCrypto, storage). */
  code: KeyboundErrorCode | null;
  /** A stable snake_case reason, e.g. "webcrypto_unavailable", "key_wiped", "proof_invalid_htu". */
  reason: string;
}
"#;

#[wasm_bindgen]
extern "C" {
    /// The options of [`DpopKey::open`] (TypeScript `OpenOptions`).
    #[wasm_bindgen(typescript_type = "OpenOptions")]
    pub type OpenOptions;
    /// The options of [`DpopKey::create_proof`] (TypeScript `ProofOptions`).
    #[wasm_bindgen(typescript_type = "ProofOptions")]
    pub type ProofOptions;
}

/// The longest client id accepted (bytes).
pub const MAX_CLIENT_ID_LEN: usize = 256;
/// Random bytes in a `jti` (128 bits).
pub const JTI_BYTES: usize = 16;

/// The state behind a [`DpopKey`], shared with its pending Promises.
struct Inner {
    client_id: String,
    signing: RefCell<Option<Signing>>,
    public: PublicKey,
    jkt: String,
    storage: Storage,
    fallback_reason: Option<String>,
    db: Option<JsValue>,
    nonces: RefCell<BTreeMap<String, String>>,
    clock_offset: Cell<f64>,
}

/// A DPoP key for one OAuth client in this origin, with what it learned from servers (their
/// nonces, the clock offset).
#[wasm_bindgen]
pub struct DpopKey {
    inner: Rc<Inner>,
}

fn js_err(e: BrowserError) -> JsValue {
    e.into()
}

#[wasm_bindgen]
impl DpopKey {
    /// Opens the DPoP key of a client: the one stored in IndexedDB for this origin and client id,
    /// or a new one (stored if the browser can). Check `storage` and `fallbackReason` to know
    /// whether it persists.
    ///
    /// # Errors
    /// A `KeyboundError`: `invalid_request` for bad options; `webcrypto_unavailable` (code `null`)
    /// without `crypto.subtle` unless `softwareKey` allows a software key; `software_key_not_built`
    /// (code `null`) when a software key is asked for and the build has none.
    #[wasm_bindgen(unchecked_return_type = "DpopKey")]
    pub async fn open(options: OpenOptions) -> Result<DpopKey, JsValue> {
        Self::open_inner(options.into()).await.map_err(js_err)
    }

    async fn open_inner(options: JsValue) -> Result<DpopKey, BrowserError> {
        let options = js::options_object(&options, "options")?;
        let client_id = js::required_string(&options, "clientId")?;
        if client_id.is_empty() || client_id.len() > MAX_CLIENT_ID_LEN {
            return Err(BrowserError::bad_argument("clientId must be 1 to 256 bytes"));
        }
        let storage = match js::optional_string(&options, "storage")?.as_deref() {
            None | Some("indexeddb") => Storage::IndexedDb,
            Some("memory") => Storage::Memory,
            Some(_) => {
                return Err(BrowserError::bad_argument(
                    "storage must be \"indexeddb\" or \"memory\"",
                ));
            }
        };
        let software = SoftwareKey::parse(js::optional_string(&options, "softwareKey")?.as_deref())?;
        let subtle = js::subtle();
        let loaded = match (subtle, software) {
            (Some(subtle), SoftwareKey::Never | SoftwareKey::IfNeeded) => {
                key::open_webcrypto(&subtle, &client_id, storage).await?
            }
            (None, SoftwareKey::Never) => {
                return Err(BrowserError::environment(
                    "webcrypto_unavailable",
                    "crypto.subtle is not available (insecure context?); pass softwareKey: \"if-needed\" to accept a weaker software key",
                ));
            }
            (subtle, SoftwareKey::IfNeeded | SoftwareKey::Always) => {
                key::software_key(subtle.is_none().then(|| "webcrypto_unavailable".into()))?
            }
        };
        let jkt = loaded.public.thumbprint().to_string();
        Ok(DpopKey {
            inner: Rc::new(Inner {
                client_id,
                signing: RefCell::new(Some(loaded.signing)),
                public: loaded.public,
                jkt,
                storage: loaded.storage,
                fallback_reason: loaded.fallback_reason,
                db: loaded.db,
                nonces: RefCell::new(BTreeMap::new()),
                clock_offset: Cell::new(0.0),
            }),
        })
    }

    /// The client id this key belongs to.
    #[wasm_bindgen(getter, js_name = clientId)]
    pub fn client_id(&self) -> String {
        self.inner.client_id.clone()
    }

    /// Where the key is kept: `"indexeddb"` (survives reloads) or `"memory"` (this page only).
    #[wasm_bindgen(getter, unchecked_return_type = "\"indexeddb\" | \"memory\"")]
    pub fn storage(&self) -> String {
        self.inner.storage.as_str().into()
    }

    /// Why the key is not where it was asked to be (e.g. `indexeddb_unavailable (...)`,
    /// `key_storage_unavailable (...)`, `webcrypto_unavailable`), or `undefined`.
    #[wasm_bindgen(getter, js_name = fallbackReason)]
    pub fn fallback_reason(&self) -> Option<String> {
        self.inner.fallback_reason.clone()
    }

    /// Whether this is a software key (its secret in wasm memory), not a WebCrypto key.
    #[wasm_bindgen(getter)]
    pub fn software(&self) -> bool {
        self.inner.signing.borrow().as_ref().is_some_and(Signing::is_software)
    }

    /// The RFC 7638 thumbprint of the public key (base64url SHA-256): the `dpop_jkt` of PAR and
    /// the `cnf.jkt` of tokens bound to this key.
    pub fn thumbprint(&self) -> String {
        self.inner.jkt.clone()
    }

    /// The public key as a JWK (JSON text), as placed in proofs.
    #[wasm_bindgen(js_name = publicJwk)]
    pub fn public_jwk(&self) -> String {
        self.inner.public.to_json()
    }

    /// The clock offset in seconds (server time minus local time) added to `iat`.
    #[wasm_bindgen(getter, js_name = clockOffset)]
    pub fn clock_offset(&self) -> f64 {
        self.inner.clock_offset.get()
    }

    /// Sets the clock offset in seconds (normally learned from `Date` headers).
    #[wasm_bindgen(setter, js_name = clockOffset)]
    pub fn set_clock_offset(&self, seconds: f64) {
        if seconds.is_finite() {
            self.inner.clock_offset.set(seconds);
        }
    }

    /// The nonce last received from the origin of `url`, if any.
    #[wasm_bindgen(js_name = nonceFor)]
    pub fn nonce_for(&self, url: &str) -> Option<String> {
        let origin = origin_of(url).ok()?;
        self.inner.nonces.borrow().get(&origin).cloned()
    }

    /// Learns from a response fetched without [`DpopKey::fetch`]: its origin's `DPoP-Nonce`,
    /// and the clock offset from its `Date`.
    pub fn observe(&self, response: &web_sys::Response) {
        self.inner.observe(response, None);
    }

    /// Creates a DPoP proof (compact JWS) for a request.
    ///
    /// # Errors
    /// The Promise rejects with a `KeyboundError`: `invalid_request` for a bad method or options,
    /// `invalid_dpop_proof` (reason `proof_invalid_htu`) for a URL that is not absolute http(s),
    /// `key_wiped` (code `null`) after `wipe()`.
    #[wasm_bindgen(js_name = createProof, unchecked_return_type = "Promise<string>")]
    pub fn create_proof(&self, options: ProofOptions) -> js_sys::Promise {
        let inner = Rc::clone(&self.inner);
        let options: JsValue = options.into();
        future_to_promise(async move {
            let options = js::options_object(&options, "proof options").map_err(js_err)?;
            let method = js::required_string(&options, "method").map_err(js_err)?;
            let url = js::required_string(&options, "url").map_err(js_err)?;
            let token = js::optional_string(&options, "accessToken").map_err(js_err)?;
            let nonce = match js::optional_string(&options, "nonce").map_err(js_err)? {
                Some(n) => Some(n),
                None => origin_of(&url)
                    .ok()
                    .and_then(|o| inner.nonces.borrow().get(&o).cloned()),
            };
            let proof = inner
                .proof(&method, &url, token.as_deref(), nonce.as_deref())
                .await
                .map_err(js_err)?;
            Ok(JsValue::from_str(&proof))
        })
    }

    /// `fetch` with DPoP: sends `DPoP` (and `Authorization: DPoP <accessToken>` when a token is
    /// given), learns the origin's `DPoP-Nonce` and the clock offset from the response, and when
    /// the server answers `use_dpop_nonce` (401 with a DPoP challenge, or 400 with an OAuth error
    /// body) retries once with the new nonce. Resolves to the (last) `Response`, whatever its
    /// status.
    ///
    /// The request body must be re-readable for the retry (a string, `URLSearchParams`,
    /// `FormData`, `Blob`, `ArrayBuffer`; not a stream).
    ///
    /// # Errors
    /// Rejects with a `KeyboundError` for an input `Request` cannot take (`invalid_request`) or a
    /// proof it cannot make, and with `fetch`'s own error (a `TypeError`) on network failure.
    #[wasm_bindgen(unchecked_return_type = "Promise<Response>")]
    pub fn fetch(
        &self,
        url: &str,
        #[wasm_bindgen(unchecked_optional_param_type = "RequestInit")] init: Option<web_sys::RequestInit>,
        #[wasm_bindgen(js_name = accessToken, unchecked_optional_param_type = "string")] access_token: Option<String>,
    ) -> js_sys::Promise {
        let inner = Rc::clone(&self.inner);
        let url = url.to_string();
        future_to_promise(async move {
            let response = dpop_fetch(&inner, &url, &init.unwrap_or_default(), access_token.as_deref()).await?;
            Ok(response.into())
        })
    }

    /// Forgets the key (logout): deletes this client id's record from IndexedDB (also one that was
    /// reported as `stored_key_invalid`), and the key from this object, which can no longer sign.
    /// The next [`DpopKey::open`] for this client id makes a new key.
    ///
    /// # Errors
    /// Rejects with a `KeyboundError` (`storage_failed`, code `null`) if IndexedDB refuses the
    /// deletion; the key is forgotten by this object anyway.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn wipe(&self) -> js_sys::Promise {
        let inner = Rc::clone(&self.inner);
        future_to_promise(async move {
            inner.signing.replace(None);
            inner.nonces.borrow_mut().clear();
            if let Some(db) = &inner.db {
                js::idb_delete(db, &inner.client_id).await.map_err(|e| {
                    js_err(BrowserError::environment("storage_failed", "could not delete the key").with_js(&e))
                })?;
            }
            Ok(JsValue::UNDEFINED)
        })
    }
}

impl Inner {
    /// Creates and signs a proof.
    async fn proof(
        &self,
        method: &str,
        url: &str,
        access_token: Option<&str>,
        nonce: Option<&str>,
    ) -> Result<String, BrowserError> {
        if !http::is_method(method) {
            return Err(BrowserError::bad_argument("method must be an HTTP method token"));
        }
        if access_token.is_some_and(str::is_empty) {
            return Err(BrowserError::bad_argument("accessToken must not be empty"));
        }
        let signing = self
            .signing
            .borrow()
            .clone()
            .ok_or_else(|| BrowserError::environment("key_wiped", "this key was wiped"))?;
        let jti = random_jti()?;
        let claims = NewProof {
            htm: method,
            htu: url,
            iat: http::iat(js::now_millis(), self.clock_offset.get()),
            jti: &jti,
            access_token,
            nonce,
        };
        let unsigned = unsigned_proof(&self.public, Alg::Es256, &claims)?;
        let signature = key::sign(&signing, unsigned.signing_input()).await?;
        Ok(unsigned.finish(&signature))
    }

    /// Learns the nonce and the clock offset from a response; returns the nonce it carried.
    fn observe(&self, response: &web_sys::Response, request_origin: Option<&str>) -> Option<String> {
        let headers = response.headers();
        if let Ok(Some(date)) = headers.get("Date")
            && let Some(offset) = http::clock_offset(js::parse_http_date(&date), js::now_millis())
        {
            self.clock_offset.set(offset);
        }
        let nonce = headers.get("DPoP-Nonce").ok().flatten()?.trim().to_string();
        if nonce.is_empty() {
            return None;
        }
        let origin = match origin_of(&response.url()) {
            Ok(o) => o,
            Err(_) => request_origin?.to_string(),
        };
        self.nonces.borrow_mut().insert(origin, nonce.clone());
        Some(nonce)
    }
}

/// `fetch` with DPoP and the single nonce retry: see [`DpopKey::fetch`].
async fn dpop_fetch(
    inner: &Inner,
    url: &str,
    init: &web_sys::RequestInit,
    access_token: Option<&str>,
) -> Result<web_sys::Response, JsValue> {
    let mut retried = false;
    loop {
        let request = web_sys::Request::new_with_str_and_init(url, init)
            .map_err(|e| js_err(BrowserError::bad_argument("fetch: bad request").with_js(&e)))?;
        let target = request.url();
        let method = request.method();
        let origin = origin_of(&target).map_err(js_err)?;
        let nonce = inner.nonces.borrow().get(&origin).cloned();
        let proof = inner
            .proof(&method, &target, access_token, nonce.as_deref())
            .await
            .map_err(js_err)?;
        let headers = request.headers();
        headers
            .set("DPoP", &proof)
            .map_err(|e| js_err(BrowserError::bad_argument("fetch: headers").with_js(&e)))?;
        if let Some(token) = access_token {
            headers
                .set("Authorization", &format!("DPoP {token}"))
                .map_err(|e| js_err(BrowserError::bad_argument("fetch: headers").with_js(&e)))?;
        }
        let response = js::fetch(&request).await?;
        // A retry helps only with a nonce other than the one this request carried (another
        // request may already have cached the new one).
        let learned = inner.observe(&response, Some(&origin));
        let fresh_nonce = learned.is_some() && learned != nonce;
        if retried || !fresh_nonce || !asks_for_nonce(&response).await {
            return Ok(response);
        }
        retried = true;
    }
}

/// Whether a response asks for a (new) nonce: see [`http::asks_for_nonce`].
async fn asks_for_nonce(response: &web_sys::Response) -> bool {
    let status = response.status();
    let challenge = response.headers().get("WWW-Authenticate").ok().flatten();
    let body_error = if status == 400 {
        match response.clone() {
            Ok(copy) => match js::call(copy.text()).await {
                Ok(text) => text.as_string().and_then(|t| js::oauth_body_error(&t)),
                Err(_) => None,
            },
            Err(_) => None,
        }
    } else {
        None
    };
    http::asks_for_nonce(status, challenge.as_deref(), body_error.as_deref())
}

/// The origin (`scheme://host[:port]`) of an absolute URL.
fn origin_of(url: &str) -> Result<String, BrowserError> {
    let parsed = web_sys::Url::new(url).map_err(|_| BrowserError::from(keybound_core::Error::InvalidHtu))?;
    Ok(parsed.origin())
}

/// A `jti`: 128 random bits from `crypto.getRandomValues`, base64url.
fn random_jti() -> Result<String, BrowserError> {
    let mut bytes = [0u8; JTI_BYTES];
    getrandom::fill(&mut bytes)
        .map_err(|_| BrowserError::environment("random_unavailable", "crypto.getRandomValues is missing"))?;
    Ok(b64::encode(&bytes))
}

/// The crate's version, for diagnostics.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").into()
}
