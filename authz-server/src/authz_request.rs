//! The authorization request (validated once, at PAR, and stored with its `request_uri`) and the
//! authorization code it leads to.

use sha2::{Digest, Sha256};

use keybound_core::Part;
use keybound_core::jwk::Jkt;
use serde::{Deserialize, Serialize};

use crate::config::{Client, GrantType, SenderConstraint};
use crate::error::{Code, OAuthError};
use crate::http::Params;

/// The prefix of `request_uri` values (RFC 9126 §2.2).
pub const REQUEST_URI_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";

/// The longest `state` and `nonce` accepted.
pub const MAX_STATE_LEN: usize = 2048;

/// A validated authorization request, as stored with a PAR `request_uri`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuthzRequest {
    /// The client.
    pub client_id: String,
    /// The redirect URI (one of the client's, exactly).
    pub redirect_uri: String,
    /// The requested scopes, in request order without duplicates.
    pub scopes: Vec<String>,
    /// The resources (RFC 8707) the grant is for ([`crate::indicators::for_authorization`]);
    /// empty in requests stored before resource indicators.
    #[serde(default)]
    pub resources: Vec<String>,
    /// `state`, returned as is.
    pub state: Option<String>,
    /// OIDC `nonce`, put into the ID token.
    pub nonce: Option<String>,
    /// The PKCE S256 challenge.
    pub code_challenge: String,
    /// The DPoP key the code is bound to (RFC 9449 §10), if any.
    pub dpop_jkt: Option<String>,
    /// `query`, or `jwt` (JARM, `query.jwt`).
    pub response_mode: String,
    /// The RFC 9396 `authorization_details`, checked against their registered types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_details: Option<serde_json::Value>,
}

/// Validates authorization parameters for `client`. `proof_jkt` is the thumbprint of a DPoP proof
/// sent with the request (PAR), which must agree with a `dpop_jkt` parameter.
///
/// # Errors
/// The RFC 6749 §4.1.2.1 / RFC 9126 / RFC 9449 code for the first failed check.
pub fn validate(
    client: &Client,
    detail_types: &keybound_core::rar::DetailTypes,
    params: &Params,
    proof_jkt: Option<&Jkt>,
) -> Result<AuthzRequest, OAuthError> {
    if params.contains("request_uri") {
        return Err(OAuthError::invalid_request("request_uri inside a pushed request"));
    }
    if params.contains("request") {
        return Err(OAuthError::new(
            Code::InvalidRequestObject,
            "a request object inside a request object",
        ));
    }
    let response_type = params.require("response_type")?;
    if response_type != "code" {
        return Err(OAuthError::new(
            Code::UnsupportedResponseType,
            response_type.to_string(),
        ));
    }
    if params.get("client_id").is_some_and(|id| id != client.id) {
        return Err(OAuthError::invalid_request("client_id is not the authenticated client"));
    }
    if !client.grant_types.contains(&GrantType::AuthorizationCode) {
        return Err(OAuthError::new(
            Code::UnauthorizedClient,
            "authorization_code not allowed",
        ));
    }
    let redirect_uri = params.require("redirect_uri")?;
    if !client.redirect_uris.iter().any(|r| r == redirect_uri) {
        return Err(OAuthError::invalid_request("redirect_uri not registered"));
    }
    let mut scopes: Vec<String> = Vec::new();
    for s in params.get("scope").unwrap_or("").split(' ').filter(|s| !s.is_empty()) {
        if !client.scopes.iter().any(|c| c == s) {
            return Err(OAuthError::new(Code::InvalidScope, format!("scope {s} not allowed")));
        }
        if !scopes.iter().any(|x| x == s) {
            scopes.push(s.to_string());
        }
    }
    let resources = crate::indicators::for_authorization(client, params)?;
    let challenge = params.get("code_challenge").unwrap_or("");
    keybound_core::pkce::check_challenge(params.get("code_challenge_method"), challenge)
        .map_err(|e| OAuthError::invalid_request(e.reason()))?;
    let response_mode = match params.get("response_mode") {
        None | Some("query") => "query",
        // JARM: `jwt` means `query.jwt` for the code response type.
        Some("jwt" | "query.jwt") => "jwt",
        Some(other) => return Err(OAuthError::invalid_request(format!("response_mode {other}"))),
    };
    for name in ["state", "nonce"] {
        if params.get(name).is_some_and(|v| v.len() > MAX_STATE_LEN) {
            return Err(OAuthError::invalid_request(format!("{name} too long")));
        }
    }
    let dpop_jkt = match params.get("dpop_jkt") {
        Some(j) => Some(Jkt::parse(j, Part::Other).map_err(|_| OAuthError::invalid_request("malformed dpop_jkt"))?),
        None => None,
    };
    if let (Some(param), Some(proof)) = (&dpop_jkt, proof_jkt)
        && param != proof
    {
        return Err(OAuthError::new(
            Code::InvalidDpopProof,
            "dpop_jkt differs from the DPoP proof key",
        ));
    }
    let dpop_jkt = dpop_jkt.or(proof_jkt.copied());
    if dpop_jkt.is_some() && client.sender_constraint != SenderConstraint::Dpop {
        return Err(OAuthError::invalid_request(
            "DPoP binding requested by a client registered for mTLS",
        ));
    }
    let authorization_details = params
        .get("authorization_details")
        .map(|text| authorization_details(client, detail_types, text))
        .transpose()?;
    Ok(AuthzRequest {
        authorization_details,
        client_id: client.id.clone(),
        redirect_uri: redirect_uri.to_string(),
        scopes,
        resources,
        state: params.get("state").map(str::to_string),
        nonce: params.get("nonce").map(str::to_string),
        code_challenge: challenge.to_string(),
        dpop_jkt: dpop_jkt.map(|j| j.to_string()),
        response_mode: response_mode.to_string(),
    })
}

/// An `authorization_details` parameter (RFC 9396), checked against the registered types and the
/// ones `client` may ask for.
///
/// # Errors
/// `invalid_authorization_details` naming the offending value.
pub fn authorization_details(
    client: &Client,
    detail_types: &keybound_core::rar::DetailTypes,
    text: &str,
) -> Result<serde_json::Value, OAuthError> {
    let details = detail_types.parse(text).map_err(|e| OAuthError::from_core(&e))?;
    for t in keybound_core::rar::DetailTypes::types_of(&details) {
        if !client.authorization_details_types.iter().any(|c| c == t) {
            return Err(OAuthError::new(
                Code::InvalidAuthorizationDetails,
                format!("type {t} not allowed for this client"),
            ));
        }
    }
    Ok(details)
}

/// What an authorization code stands for (stored as JSON with the code's hash).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CodeData {
    /// The authorization request.
    pub request: AuthzRequest,
    /// The user.
    pub sub: String,
    /// When the user logged in.
    pub auth_time: u64,
}

/// The SHA-256 of an authorization code (only the hash is stored).
pub fn code_hash(code: &str) -> Vec<u8> {
    Sha256::digest(code.as_bytes()).to_vec()
}
