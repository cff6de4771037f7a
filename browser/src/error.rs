//! The errors keybound-browser throws: JavaScript `Error`s named `KeyboundError` with the RFC
//! error code (`code`) and a stable reason (`reason`).
//!
//! `code` is the RFC error code when the failure is a protocol error (`invalid_dpop_proof` for a
//! URL that cannot be a proof's `htu`, `invalid_request` for bad arguments), and `null` for a
//! failure of the environment (no WebCrypto, a storage error) which no RFC names. `reason` is a
//! snake_case string for logs and for the app to branch on.

use keybound_core::ErrorCode;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};

#[wasm_bindgen(module = "/src/dpop.js")]
extern "C" {
    /// `keyboundError(code, reason, message)`: the `KeyboundError` JavaScript and Rust both throw.
    #[wasm_bindgen(js_name = keyboundError)]
    fn keybound_error(code: Option<String>, reason: &str, message: &str) -> JsValue;
    /// Whether `value` is an error thrown by keybound-browser (a `KeyboundError`).
    #[wasm_bindgen(js_name = isKeyboundError)]
    pub fn is_keybound_error(value: &JsValue) -> bool;
}

/// The `name` of every error keybound-browser throws.
pub const ERROR_NAME: &str = "KeyboundError";

/// An error on its way to JavaScript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserError {
    /// The RFC error code, if the failure is a protocol error (one of keybound-core's codes, or an
    /// OAuth error code a server sent, e.g. `access_denied`).
    pub code: Option<String>,
    /// A stable snake_case reason.
    pub reason: &'static str,
    /// A human-readable message (no secrets, no key material).
    pub message: String,
}

impl BrowserError {
    /// A protocol error with an RFC code.
    pub fn protocol(code: ErrorCode, reason: &'static str, message: impl Into<String>) -> Self {
        BrowserError {
            code: Some(code.as_str().into()),
            reason,
            message: message.into(),
        }
    }

    /// An error a server answered with: `code` is the OAuth `error` it sent (RFC 6749 §4.1.2.1,
    /// §5.2), kept only if it is a well-formed error code (1 to 64 characters of the RFC 6749
    /// `error` character set), else `null`.
    pub fn server(code: Option<&str>, reason: &'static str, message: impl Into<String>) -> Self {
        BrowserError {
            code: code.filter(|c| is_error_code(c)).map(str::to_string),
            reason,
            message: message.into(),
        }
    }

    /// A failure of the environment (no RFC code).
    pub fn environment(reason: &'static str, message: impl Into<String>) -> Self {
        BrowserError {
            code: None,
            reason,
            message: message.into(),
        }
    }

    /// A bad argument from the app (`invalid_request`).
    pub fn bad_argument(message: impl Into<String>) -> Self {
        Self::protocol(ErrorCode::InvalidRequest, "invalid_argument", message)
    }

    /// Adds what JavaScript said (an exception's message) to the message.
    pub fn with_js(mut self, js: &JsValue) -> Self {
        let detail = js
            .dyn_ref::<js_sys::Error>()
            .map(|e| String::from(e.message()))
            .or_else(|| js.as_string());
        if let Some(detail) = detail {
            self.message.push_str(": ");
            self.message.push_str(&detail);
        }
        self
    }
}

impl From<keybound_core::Error> for BrowserError {
    fn from(e: keybound_core::Error) -> Self {
        BrowserError {
            code: Some(e.code().unwrap_or(ErrorCode::InvalidRequest).as_str().into()),
            reason: e.reason(),
            // The reason, not the Display text: the same information, and much smaller wasm.
            message: ["keybound: ", e.reason()].concat(),
        }
    }
}

impl From<BrowserError> for JsValue {
    fn from(e: BrowserError) -> JsValue {
        keybound_error(e.code, e.reason, &e.message)
    }
}

/// Whether `code` is a well-formed OAuth error code: 1 to 64 characters of `%x20-21 / %x23-5B /
/// %x5D-7E` (RFC 6749 Appendix A.7).
pub fn is_error_code(code: &str) -> bool {
    (1..=64).contains(&code.len())
        && code
            .bytes()
            .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5b | 0x5d..=0x7e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_codes_are_kept_only_when_well_formed() {
        assert_eq!(
            BrowserError::server(Some("access_denied"), "x", "m").code.as_deref(),
            Some("access_denied")
        );
        for bad in ["", "a\"b", "tab\t", "é", &"a".repeat(65)] {
            assert_eq!(BrowserError::server(Some(bad), "x", "m").code, None, "{bad:?}");
        }
        assert_eq!(BrowserError::server(None, "x", "m").code, None);
        assert_eq!(
            BrowserError::protocol(ErrorCode::InvalidGrant, "x", "m")
                .code
                .as_deref(),
            Some("invalid_grant")
        );
    }
}
