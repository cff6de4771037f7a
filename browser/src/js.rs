//! Bindings to `glue.js` (the login's: the global scope's `fetch`, `Date.now()` and
//! `sessionStorage`) and small conversions between JavaScript values and Rust.

use js_sys::{Object, Promise, Reflect};
#[cfg(feature = "login")]
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::error::BrowserError;

#[cfg(feature = "login")]
#[wasm_bindgen(module = "/src/glue.js")]
extern "C" {
    #[wasm_bindgen(js_name = globalFetch, catch)]
    fn global_fetch_promise(request: &web_sys::Request) -> Result<Promise, JsValue>;
    /// `Date.now()`.
    #[wasm_bindgen(js_name = nowMillis)]
    pub fn now_millis() -> f64;
    /// `sessionStorage.getItem(key)`.
    #[wasm_bindgen(js_name = sessionGet, catch)]
    pub fn session_get(key: &str) -> Result<Option<String>, JsValue>;
    /// `sessionStorage.setItem(key, value)`.
    #[wasm_bindgen(js_name = sessionSet, catch)]
    pub fn session_set(key: &str, value: &str) -> Result<(), JsValue>;
    /// `sessionStorage.removeItem(key)`.
    #[wasm_bindgen(js_name = sessionRemove, catch)]
    pub fn session_remove(key: &str) -> Result<(), JsValue>;
}

/// Awaits a Promise-returning call.
///
/// # Errors
/// What the call threw or the Promise rejected with.
pub async fn call(promise: Result<Promise, JsValue>) -> Result<JsValue, JsValue> {
    JsFuture::from(promise?).await
}

/// The global `fetch(request)`.
///
/// # Errors
/// What `fetch` rejected with (a network error is a `TypeError`).
#[cfg(feature = "login")]
pub async fn fetch(request: &web_sys::Request) -> Result<web_sys::Response, JsValue> {
    call(global_fetch_promise(request)).await?.dyn_into()
}

/// A property of a JavaScript object.
pub fn get(target: &JsValue, key: &str) -> JsValue {
    Reflect::get(target, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

/// An optional string property: `Ok(None)` when absent (`undefined` or `null`).
///
/// # Errors
/// `invalid_request` if the property is present and not a string.
pub fn optional_string(target: &JsValue, key: &str) -> Result<Option<String>, BrowserError> {
    let value = get(target, key);
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    value
        .as_string()
        .map(Some)
        .ok_or_else(|| BrowserError::bad_argument(format!("`{key}` must be a string")))
}

/// A required string property.
///
/// # Errors
/// `invalid_request` if it is missing or not a string.
pub fn required_string(target: &JsValue, key: &str) -> Result<String, BrowserError> {
    optional_string(target, key)?.ok_or_else(|| BrowserError::bad_argument(format!("`{key}` is required")))
}

/// Checks that `value` is an object (an options bag).
///
/// # Errors
/// `invalid_request` otherwise.
pub fn options_object(value: &JsValue, what: &str) -> Result<Object, BrowserError> {
    value
        .dyn_ref::<Object>()
        .filter(|_| !value.is_function())
        .cloned()
        .ok_or_else(|| BrowserError::bad_argument(format!("{what} must be an object")))
}

/// Builds a plain object from string keys and values.
pub fn object(entries: &[(&str, &JsValue)]) -> Object {
    let obj = Object::new();
    for (key, value) in entries {
        // Defining a property on a fresh plain object cannot fail.
        let _ = Reflect::set(&obj, &JsValue::from_str(key), value);
    }
    obj
}

/// A string member of a JavaScript object (`None` if absent or not a string).
pub fn str_of(target: &JsValue, name: &str) -> Option<String> {
    if !target.is_object() {
        return None;
    }
    get(target, name).as_string()
}

/// Parses JSON with the browser's `JSON.parse` (`null` when it is not JSON). JSON is parsed by the
/// browser, not in wasm: the module carries no JSON parser.
pub fn parse_json(text: &str) -> JsValue {
    js_sys::JSON::parse(text).unwrap_or(JsValue::NULL)
}

/// The `error` member of an OAuth error response body ([RFC 6749 §5.2]), if the body is a JSON
/// object with a string `error`.
///
/// [RFC 6749 §5.2]: https://www.rfc-editor.org/rfc/rfc6749#section-5.2
pub fn oauth_body_error(body: &str) -> Option<String> {
    str_of(&parse_json(body), "error")
}

#[cfg(all(test, target_arch = "wasm32"))]
mod tests {
    use super::*;
    use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

    wasm_bindgen_test_configure!(run_in_browser);

    #[wasm_bindgen_test]
    fn oauth_body_error_reads_only_a_string_error_of_a_json_object() {
        assert_eq!(
            oauth_body_error(r#"{"error":"use_dpop_nonce","error_description":"x"}"#).as_deref(),
            Some("use_dpop_nonce")
        );
        assert_eq!(oauth_body_error(r#"{"error":7}"#), None);
        assert_eq!(oauth_body_error(r#"["error"]"#), None);
        assert_eq!(oauth_body_error(r#""use_dpop_nonce""#), None);
        assert_eq!(oauth_body_error("use_dpop_nonce"), None);
        assert_eq!(oauth_body_error(""), None);
    }
}
