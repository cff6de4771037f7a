//! OpenID Connect in the login: the issuer's JWKS (from its `jwks_uri`, or given by the app) and
//! ID token validation by keybound-core's [`keybound_core::id_token`], with the signature
//! verified by WebCrypto (`crypto.subtle.verify` with the issuer's public key: ES256, PS256,
//! RS256, EdDSA).

use js_sys::Uint8Array;
use keybound_core::Part;
use keybound_core::id_token::{IdTokenChecks, IdTokenClaims, IdTokenPolicy, UnverifiedIdToken};
use keybound_core::jwk::Jwks;
use wasm_bindgen::JsValue;
use wasm_bindgen::prelude::wasm_bindgen;

use crate::error::BrowserError;
use crate::js;

#[wasm_bindgen(module = "/src/login/glue.js")]
extern "C" {
    #[wasm_bindgen(js_name = verifyJws, catch)]
    fn verify_jws_promise(
        alg: &str,
        jwk_json: &str,
        data: &str,
        signature: &Uint8Array,
    ) -> Result<js_sys::Promise, JsValue>;
    #[wasm_bindgen(js_name = sleep, catch)]
    fn sleep_promise(ms: f64) -> Result<js_sys::Promise, JsValue>;
    /// Calls an event listener, reporting what it throws instead of throwing.
    #[wasm_bindgen(js_name = callListener)]
    pub fn call_listener(listener: &js_sys::Function, event: &JsValue);
}

/// Waits `ms` milliseconds (at most 2^31 - 1, setTimeout's limit).
pub async fn sleep(ms: f64) {
    let ms = if ms.is_finite() {
        ms.clamp(0.0, 2_147_483_647.0)
    } else {
        0.0
    };
    let _ = js::call(sleep_promise(ms)).await;
}

/// A key set from its JSON (the `jwks_uri` document, or what the app gave).
///
/// # Errors
/// `invalid_token` (`id_token_malformed`, …) when it is not a JWK Set.
pub fn jwks_from_json(json: &str) -> Result<Jwks, BrowserError> {
    Ok(Jwks::from_json(json.as_bytes(), Part::IdToken)?)
}

/// Fetches the issuer's JWKS from `url` (a plain GET: the document is public).
///
/// # Errors
/// `jwks_unavailable` (code `null`) for a status other than 200; the key set errors of
/// [`jwks_from_json`]; `fetch`'s `TypeError` on network (or CORS) failure.
pub async fn fetch_jwks(url: &str) -> Result<Jwks, JsValue> {
    let request = web_sys::Request::new_with_str(url)?;
    let response = js::fetch(&request).await?;
    let text = js::call(response.text()).await?.as_string().unwrap_or_default();
    if response.status() != 200 {
        return Err(
            BrowserError::environment("jwks_unavailable", format!("{url} answered {}", response.status())).into(),
        );
    }
    Ok(jwks_from_json(&text)?)
}

/// Validates an ID token: keybound-core parses it and picks the issuer keys that may have signed
/// it, WebCrypto verifies the signature, keybound-core checks the claims (`iss`, `aud`, `azp`,
/// `nonce`, `exp`, `iat`, `at_hash`, and for a refresh the original's `iss`, `sub` and `aud`) at
/// `now` (Unix seconds).
///
/// # Errors
/// A `KeyboundError` with code `invalid_token` and keybound-core's reason (e.g.
/// `id_token_bad_signature`, `id_token_nonce_mismatch`, `id_token_expired`).
pub async fn verify_id_token(
    token: &str,
    keys: &Jwks,
    policy: &IdTokenPolicy,
    checks: &IdTokenChecks<'_>,
    now: u64,
) -> Result<IdTokenClaims, BrowserError> {
    let parsed = UnverifiedIdToken::parse(token, policy)?;
    let signature = Uint8Array::from(parsed.signature());
    for key in parsed.candidates(keys)? {
        let verified = js::call(verify_jws_promise(
            parsed.alg().as_str(),
            &key.key().to_json(),
            parsed.signing_input(),
            &signature,
        ))
        .await
        .ok()
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
        if verified {
            return Ok(parsed.signature_verified_by(key, policy, checks, now)?);
        }
    }
    Err(keybound_core::Error::BadSignature { part: Part::IdToken }.into())
}

/// The claims of a validated ID token as a JavaScript object: `JSON.parse` of its payload text
/// (no JSON value tree in the wasm).
pub fn claims_to_js(claims: &IdTokenClaims) -> JsValue {
    js::parse_json(&claims.payload)
}
