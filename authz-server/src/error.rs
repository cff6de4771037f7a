//! The OAuth errors this server answers with: one typed [`Code`] per RFC error code, one
//! mapping to the HTTP status, and one response shape ([`OAuthError`]: `{"error": code}` with
//! `Cache-Control: no-store`, a `DPoP-Nonce` when there is one). The reason is logged, never sent.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::respond::no_store;
use crate::storage::StorageError;

/// An OAuth error code (RFC 6749 §4.1.2.1 and §5.2, and the RFCs that add codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// `invalid_request` (RFC 6749).
    InvalidRequest,
    /// `invalid_client` (RFC 6749 §5.2): 401.
    InvalidClient,
    /// `invalid_grant` (RFC 6749 §5.2).
    InvalidGrant,
    /// `unauthorized_client` (RFC 6749).
    UnauthorizedClient,
    /// `unsupported_grant_type` (RFC 6749 §5.2).
    UnsupportedGrantType,
    /// `unsupported_response_type` (RFC 6749 §4.1.2.1).
    UnsupportedResponseType,
    /// `invalid_scope` (RFC 6749).
    InvalidScope,
    /// `access_denied` (RFC 6749 §4.1.2.1): the user said no.
    AccessDenied,
    /// `invalid_target` (RFC 8707 §2).
    InvalidTarget,
    /// `invalid_request_uri` (RFC 9126, RFC 9101): a `request_uri` unknown, used or expired.
    InvalidRequestUri,
    /// `invalid_request_object` (RFC 9101 §6.3).
    InvalidRequestObject,
    /// `invalid_authorization_details` (RFC 9396 §5).
    InvalidAuthorizationDetails,
    /// `invalid_dpop_proof` (RFC 9449 §5).
    InvalidDpopProof,
    /// `use_dpop_nonce` (RFC 9449 §8).
    UseDpopNonce,
    /// `invalid_redirect_uri` (RFC 7591 §3.2.2).
    InvalidRedirectUri,
    /// `invalid_client_metadata` (RFC 7591 §3.2.2).
    InvalidClientMetadata,
    /// `invalid_token` (RFC 6750 §3.1): 401, for the registration access token.
    InvalidToken,
    /// `server_error`: 500.
    ServerError,
}

impl Code {
    /// The code on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidRequest => "invalid_request",
            Code::InvalidClient => "invalid_client",
            Code::InvalidGrant => "invalid_grant",
            Code::UnauthorizedClient => "unauthorized_client",
            Code::UnsupportedGrantType => "unsupported_grant_type",
            Code::UnsupportedResponseType => "unsupported_response_type",
            Code::InvalidScope => "invalid_scope",
            Code::AccessDenied => "access_denied",
            Code::InvalidTarget => "invalid_target",
            Code::InvalidRequestUri => "invalid_request_uri",
            Code::InvalidRequestObject => "invalid_request_object",
            Code::InvalidAuthorizationDetails => "invalid_authorization_details",
            Code::InvalidDpopProof => "invalid_dpop_proof",
            Code::UseDpopNonce => "use_dpop_nonce",
            Code::InvalidRedirectUri => "invalid_redirect_uri",
            Code::InvalidClientMetadata => "invalid_client_metadata",
            Code::InvalidToken => "invalid_token",
            Code::ServerError => "server_error",
        }
    }

    /// The HTTP status an error with this code is answered with: 401 for `invalid_client` and
    /// `invalid_token`, 500 for `server_error`, 400 otherwise.
    pub fn status(self) -> StatusCode {
        match self {
            Code::InvalidClient | Code::InvalidToken => StatusCode::UNAUTHORIZED,
            Code::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The code of a keybound-core error met at an endpoint of this server.
    pub fn of_core(e: &keybound_core::Error) -> Code {
        use keybound_core::ErrorCode as C;
        match e {
            keybound_core::Error::RequestObjectInvalid { .. } => Code::InvalidRequestObject,
            keybound_core::Error::AuthorizationDetailsInvalid { .. } => Code::InvalidAuthorizationDetails,
            _ => match e.code() {
                Some(C::InvalidDpopProof) => Code::InvalidDpopProof,
                Some(C::UseDpopNonce) => Code::UseDpopNonce,
                Some(C::InvalidGrant) => Code::InvalidGrant,
                Some(C::InvalidToken) => Code::InvalidToken,
                _ => Code::InvalidRequest,
            },
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An OAuth error response: only the code is sent.
#[derive(Debug)]
pub struct OAuthError {
    /// The RFC error code (and with it the status).
    pub code: Code,
    /// A fresh DPoP nonce to send (`use_dpop_nonce`, RFC 9449 §8).
    pub dpop_nonce: Option<String>,
    /// What happened, for the log only.
    pub reason: String,
}

impl OAuthError {
    /// An error with this code.
    pub fn new(code: Code, reason: impl Into<String>) -> Self {
        OAuthError {
            code,
            dpop_nonce: None,
            reason: reason.into(),
        }
    }

    /// `invalid_request`.
    pub fn invalid_request(reason: impl Into<String>) -> Self {
        Self::new(Code::InvalidRequest, reason)
    }

    /// `invalid_client` (401).
    pub fn invalid_client(reason: impl Into<String>) -> Self {
        Self::new(Code::InvalidClient, reason)
    }

    /// `invalid_grant`.
    pub fn invalid_grant(reason: impl Into<String>) -> Self {
        Self::new(Code::InvalidGrant, reason)
    }

    /// `server_error` (500).
    pub fn server(reason: impl Into<String>) -> Self {
        Self::new(Code::ServerError, reason)
    }

    /// A core error at an endpoint of this server, with the core's reason.
    pub fn from_core(e: &keybound_core::Error) -> Self {
        Self::new(Code::of_core(e), e.reason())
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }
}

impl From<StorageError> for OAuthError {
    fn from(e: StorageError) -> Self {
        OAuthError::server(e.to_string())
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let status = self.status();
        let level = if status.is_server_error() {
            crate::log::Level::Error
        } else {
            crate::log::Level::Info
        };
        crate::log::event(
            level,
            "oauth_error",
            serde_json::json!({ "error": self.code.as_str(), "status": status.as_u16(), "reason": self.reason }),
        );
        let mut res = (status, axum::Json(serde_json::json!({ "error": self.code.as_str() }))).into_response();
        let h = res.headers_mut();
        no_store(h);
        if let Some(nonce) = self.dpop_nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
            h.insert("dpop-nonce", nonce);
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_wire_name_and_status() {
        assert_eq!(Code::InvalidClient.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(Code::InvalidToken.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(Code::ServerError.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(Code::InvalidTarget.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            Code::InvalidAuthorizationDetails.as_str(),
            "invalid_authorization_details"
        );
        let e = keybound_core::Error::RequestObjectInvalid { what: "expired" };
        assert_eq!(OAuthError::from_core(&e).code, Code::InvalidRequestObject);
        assert_eq!(
            OAuthError::from_core(&keybound_core::Error::NonceRequired).code,
            Code::UseDpopNonce
        );
        assert_eq!(
            OAuthError::from_core(&keybound_core::Error::PkceMismatch).code,
            Code::InvalidGrant
        );
    }
}
