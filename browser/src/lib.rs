//! # keybound-browser
//!
//! DPoP ([RFC 9449]) for web and mobile-web clients, as a wasm-bindgen module and npm package.
//! What the browser signs is built by `keybound-core`, the same code that verifies it at the
//! gateway and the authorization server.
//!
//! ## What it does
//! The `DpopKey` class both entry points export is JavaScript (`src/dpop.js`, shipped as a
//! wasm-bindgen snippet) bound to this crate's exports ([`signing_input`], [`finish`], [`thumbprint`], ...): the JavaScript does the I/O (WebCrypto,
//! IndexedDB, `fetch`), the wasm decides the protocol (what a proof contains and its
//! serialisation, the thumbprint, the clock offset, whether to retry for a nonce). Keeping the
//! key, storage and `fetch` plumbing out of Rust keeps the async machinery out of the wasm:
//! `keybound-browser/dpop` stays within 20 KB gzipped.
//! - **Keys** (`DpopKey.open`): ECDSA P-256 made by WebCrypto with a non-extractable private
//!   key (sign only), kept in IndexedDB per (origin, client id) so a reload keeps the key; two tabs
//!   never keep two keys (IndexedDB `add` decides which tab's key wins). When the browser cannot
//!   store the key it falls back to a memory-only key and says so (`storage`, `fallbackReason`). A
//!   software key (weaker: its secret is in wasm memory) only when the app asks for one, in builds
//!   with the `software-key` cargo feature (it adds about 33 KB of P-256 code to the wasm).
//!   `wipe()` forgets it (logout).
//! - **Proofs** (`createProof`, [`signing_input`]): `typ`, `jwk`, `htm`, `htu` (normalised
//!   by core), `iat` corrected by the clock offset learned from servers' `Date` headers, a 128-bit
//!   random `jti` from `crypto.getRandomValues`, `ath` when an access token is given, `nonce`.
//! - **fetch** (`fetch`): adds `Authorization: DPoP` and `DPoP`, remembers each origin's
//!   `DPoP-Nonce` from every response, retries exactly once on `use_dpop_nonce` (401 from a
//!   resource server, 400 from an authorization server: [`asks_for_nonce`]), never more.
//! - **Errors**: JavaScript `Error`s named `KeyboundError` with `code` (the RFC error code, or
//!   `null` for an environment failure) and `reason` (see [`error`]).
//!
//! - **Login for public clients** (`login::OAuthClient`, with the default `login` feature): discovery (RFC 8414, `issuer`
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

use keybound_core::b64;
use keybound_core::dpop::{NewProof, unsigned_proof};
use keybound_core::jwk::PublicKey;
use keybound_core::jws::Alg;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};

use crate::error::BrowserError;

#[wasm_bindgen(module = "/src/dpop.js")]
extern "C" {
    /// `dpopKeyClass(glue)`: the JavaScript `DpopKey` class bound to the exports of this module's
    /// wasm-bindgen JavaScript.
    #[wasm_bindgen(js_name = dpopKeyClass)]
    pub fn dpop_key_class(glue: &JsValue) -> JsValue;
}

#[wasm_bindgen]
extern "C" {
    /// A `DpopKey` of `src/dpop.js` (TypeScript `DpopKey`), as Rust calls it.
    #[wasm_bindgen(typescript_type = "DpopKey")]
    #[derive(Clone, Debug)]
    pub type DpopKey;
    /// `key.clientId`.
    #[wasm_bindgen(method, getter, js_name = clientId)]
    pub fn client_id(this: &DpopKey) -> String;
    /// `key.storage`: `"indexeddb"` or `"memory"`.
    #[wasm_bindgen(method, getter)]
    pub fn storage(this: &DpopKey) -> String;
    /// `key.fallbackReason`.
    #[wasm_bindgen(method, getter, js_name = fallbackReason)]
    pub fn fallback_reason(this: &DpopKey) -> Option<String>;
    /// `key.software`.
    #[wasm_bindgen(method, getter)]
    pub fn software(this: &DpopKey) -> bool;
    /// `key.thumbprint()`: the RFC 7638 thumbprint (`dpop_jkt`, `cnf.jkt`).
    #[wasm_bindgen(method)]
    pub fn thumbprint(this: &DpopKey) -> String;
    /// `key.publicJwk()`: the public JWK as JSON text.
    #[wasm_bindgen(method, js_name = publicJwk)]
    pub fn public_jwk(this: &DpopKey) -> String;
    /// `key.clockOffset`, in seconds.
    #[wasm_bindgen(method, getter, js_name = clockOffset)]
    pub fn clock_offset(this: &DpopKey) -> f64;
    /// `key.clockOffset = seconds`.
    #[wasm_bindgen(method, setter, js_name = clockOffset)]
    pub fn set_clock_offset(this: &DpopKey, seconds: f64);
    /// `key.nonceFor(url)`.
    #[wasm_bindgen(method, js_name = nonceFor)]
    pub fn nonce_for(this: &DpopKey, url: &str) -> Option<String>;
    /// `key.observe(response)`.
    #[wasm_bindgen(method)]
    pub fn observe(this: &DpopKey, response: &web_sys::Response);
    /// `key.createProof(options)`: a Promise of the proof.
    #[wasm_bindgen(method, js_name = createProof)]
    pub fn create_proof(this: &DpopKey, options: &JsValue) -> js_sys::Promise;
    /// `key.fetch(url, init, accessToken)`: a Promise of the `Response`.
    #[wasm_bindgen(method)]
    pub fn fetch(
        this: &DpopKey,
        url: &str,
        init: Option<web_sys::RequestInit>,
        access_token: Option<String>,
    ) -> js_sys::Promise;
    /// `key.wipe()`.
    #[wasm_bindgen(method)]
    pub fn wipe(this: &DpopKey) -> js_sys::Promise;
}

/// Opens a `DpopKey` from Rust: `DpopKey.open(options)` of the class bound to `glue`, the
/// namespace of this module's wasm-bindgen JavaScript (`import * as glue from "...js"`).
///
/// # Errors
/// What `DpopKey.open` rejects with (a `KeyboundError`).
pub async fn open_key(glue: &JsValue, options: &JsValue) -> Result<DpopKey, JsValue> {
    let class = dpop_key_class(glue);
    let open: js_sys::Function = js::get(&class, "open").dyn_into()?;
    let key = js::call(open.call1(&class, options).map(JsCast::unchecked_into)).await?;
    Ok(key.unchecked_into())
}

/// The longest client id accepted (bytes).
pub const MAX_CLIENT_ID_LEN: usize = 256;
/// Random bytes in a `jti` (128 bits).
pub const JTI_BYTES: usize = 16;

/// Without login (the `keybound-browser/dpop` build) the wasm allocates only a few short strings
/// per call: a small free-list allocator instead of dlmalloc keeps about 7 KB out of the wasm.
#[cfg(all(target_arch = "wasm32", not(feature = "login")))]
#[global_allocator]
static ALLOCATOR: lol_alloc::LockedAllocator<lol_alloc::FreeListAllocator> =
    lol_alloc::LockedAllocator::new(lol_alloc::FreeListAllocator::new());

fn js_err(e: BrowserError) -> JsValue {
    e.into()
}

/// The P-256 public key of an uncompressed SEC1 point (`0x04 || x || y`, what WebCrypto's
/// `exportKey("raw")` gives). The point is not checked to be on the curve: WebCrypto made it
/// (checking would link a P-256 implementation into the wasm for nothing).
fn p256(point: &[u8]) -> Result<PublicKey, BrowserError> {
    match point.split_first() {
        Some((4, xy)) if xy.len() == 64 => {
            let (x, y) = xy.split_at_checked(32).unwrap_or_default();
            match (x.try_into(), y.try_into()) {
                (Ok(x), Ok(y)) => Ok(PublicKey::P256 { x, y }),
                _ => Err(not_p256()),
            }
        }
        _ => Err(not_p256()),
    }
}

fn not_p256() -> BrowserError {
    BrowserError::environment("webcrypto_failed", "the public key is not a P-256 key")
}

/// The error for a proof core would not build: only `htu` can be wrong (the key is always P-256
/// for ES256). Mapped here rather than through `From<keybound_core::Error>`, which would link
/// every one of core's reasons into the wasm.
fn proof_error(e: &keybound_core::Error) -> BrowserError {
    if matches!(e, keybound_core::Error::InvalidHtu) {
        BrowserError::protocol(
            keybound_core::ErrorCode::InvalidDpopProof,
            "proof_invalid_htu",
            "keybound: proof_invalid_htu",
        )
    } else {
        BrowserError::protocol(
            keybound_core::ErrorCode::InvalidDpopProof,
            "proof_malformed",
            "keybound: the proof could not be built",
        )
    }
}

/// The RFC 7638 thumbprint of the P-256 key with this uncompressed point (65 bytes).
///
/// # Errors
/// `webcrypto_failed` (code `null`) for anything else than an uncompressed P-256 point.
#[wasm_bindgen]
pub fn thumbprint(point: &[u8]) -> Result<String, JsValue> {
    // base64url of the bytes, not `Jkt`'s `Display`: no `core::fmt` in the wasm.
    Ok(b64::encode(p256(point).map_err(js_err)?.thumbprint().as_bytes()))
}

/// The canonical public JWK (JSON text) of the P-256 key with this uncompressed point.
///
/// # Errors
/// As [`thumbprint`].
#[wasm_bindgen(js_name = publicJwk)]
pub fn public_jwk(point: &[u8]) -> Result<String, JsValue> {
    Ok(p256(point).map_err(js_err)?.to_json())
}

/// The signing input (`header.payload`, base64url) of an ES256 proof by the P-256 key with
/// this uncompressed point: `iat` is `now_millis` corrected by `clock_offset` seconds, `jti` the
/// base64url of 16 random bytes.
///
/// # Errors
/// `invalid_request` for a method that is not a token, an empty access token or a `jti` of
/// another length; `invalid_dpop_proof` (`proof_invalid_htu`) for a URL that is not absolute
/// http(s).
#[wasm_bindgen(js_name = signingInput)]
#[allow(clippy::too_many_arguments, reason = "the fields of a proof, from JavaScript")]
pub fn signing_input(
    point: &[u8],
    method: &str,
    url: &str,
    now_millis: f64,
    clock_offset: f64,
    jti: &[u8],
    access_token: Option<String>,
    nonce: Option<String>,
) -> Result<String, JsValue> {
    if !http::is_method(method) {
        return Err(js_err(BrowserError::bad_argument(
            "method must be an HTTP method token",
        )));
    }
    if access_token.as_deref().is_some_and(str::is_empty) {
        return Err(js_err(BrowserError::bad_argument("accessToken must not be empty")));
    }
    if jti.len() != JTI_BYTES {
        return Err(js_err(BrowserError::bad_argument("jti must be 16 random bytes")));
    }
    let public = p256(point).map_err(js_err)?;
    let jti = b64::encode(jti);
    let claims = NewProof {
        htm: method,
        htu: url,
        iat: http::iat(now_millis, clock_offset),
        jti: &jti,
        access_token: access_token.as_deref(),
        nonce: nonce.as_deref(),
    };
    let unsigned = unsigned_proof(&public, Alg::Es256, &claims).map_err(|e| js_err(proof_error(&e)))?;
    // base64url text: always ASCII.
    Ok(core::str::from_utf8(unsigned.signing_input())
        .unwrap_or_default()
        .to_string())
}

/// The compact JWS: the signing input, `.`, the base64url of the ES256 signature (`r || s`).
///
/// # Errors
/// `webcrypto_failed` (code `null`) for a signature that is not 64 bytes.
#[wasm_bindgen]
pub fn finish(signing_input: String, signature: &[u8]) -> Result<String, JsValue> {
    if signature.len() != 64 {
        return Err(js_err(BrowserError::environment(
            "webcrypto_failed",
            "ECDSA signature is not 64 bytes",
        )));
    }
    let mut jws = signing_input;
    jws.push('.');
    jws.push_str(&b64::encode(signature));
    Ok(jws)
}

/// The clock offset (seconds) learned from a server's `Date` (`Date.parse`d), see
/// [`http::clock_offset`].
#[wasm_bindgen(js_name = clockOffset)]
pub fn clock_offset(server_date_millis: f64, local_millis: f64) -> Option<f64> {
    http::clock_offset(server_date_millis, local_millis)
}

/// Whether a response asks for a nonce retry, see [`http::asks_for_nonce`].
#[wasm_bindgen(js_name = asksForNonce)]
pub fn asks_for_nonce(status: u16, www_authenticate: Option<String>, body_error: Option<String>) -> bool {
    http::asks_for_nonce(status, www_authenticate.as_deref(), body_error.as_deref())
}

/// With the `software-key` feature: a new software key (its secret in wasm memory).
///
/// # Errors
/// `random_unavailable` if there is no random source.
#[cfg(feature = "software-key")]
#[wasm_bindgen(js_name = softwareKey)]
pub fn software_key() -> Result<key::SoftwareKey, JsValue> {
    key::SoftwareKey::generate().map_err(js_err)
}

/// The crate's version, for diagnostics.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").into()
}
