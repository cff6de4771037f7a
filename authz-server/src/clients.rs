//! Clients: from the configuration file, or from RFC 7591 registration metadata, validated the
//! same way ([`client_from_metadata`]).

use crate::config::{AuthMethod, Config, ConfigError, GrantType, RawClient, SenderConstraint, SubjectType};
use crate::error::{Code, OAuthError};

pub(crate) fn bad_metadata(reason: impl Into<String>) -> OAuthError {
    OAuthError::new(Code::InvalidClientMetadata, reason)
}

fn str_list(meta: &serde_json::Value, name: &str) -> Result<Option<Vec<String>>, OAuthError> {
    match meta.get(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad_metadata(format!("{name} entry")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(bad_metadata(format!("{name} must be an array"))),
    }
}

fn string(meta: &serde_json::Value, name: &str) -> Result<Option<String>, OAuthError> {
    match meta.get(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad_metadata(format!("{name} must be a string"))),
    }
}

fn flag(meta: &serde_json::Value, name: &str) -> Result<bool, OAuthError> {
    match meta.get(name) {
        None | Some(serde_json::Value::Null) => Ok(false),
        Some(serde_json::Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad_metadata(format!("{name} must be a boolean"))),
    }
}

fn map_config_error(e: ConfigError) -> OAuthError {
    if e.field.contains("redirect_uris") {
        OAuthError::new(Code::InvalidRedirectUri, e.to_string())
    } else {
        bad_metadata(e.to_string())
    }
}

/// Builds a client from registration metadata (RFC 7591 §2 names), validated like a configured
/// client.
///
/// # Errors
/// `invalid_redirect_uri` or `invalid_client_metadata`.
pub fn client_from_metadata(
    config: &Config,
    client_id: &str,
    meta: &serde_json::Value,
) -> Result<crate::config::Client, OAuthError> {
    if !meta.is_object() {
        return Err(bad_metadata("metadata must be a JSON object"));
    }
    if meta.get("jwks_uri").is_some() {
        return Err(bad_metadata("jwks_uri is not supported; send jwks"));
    }
    if meta.get("sector_identifier_uri").is_some() {
        return Err(bad_metadata("sector_identifier_uri is not supported"));
    }
    let method = string(meta, "token_endpoint_auth_method")?
        .ok_or_else(|| bad_metadata("token_endpoint_auth_method is required"))?;
    let auth_method: AuthMethod = serde_json::from_value(serde_json::Value::String(method.clone()))
        .map_err(|_| bad_metadata(format!("token_endpoint_auth_method {method}")))?;
    if let Some(rt) = str_list(meta, "response_types")?
        && rt != ["code"]
    {
        return Err(bad_metadata("response_types must be [\"code\"]"));
    }
    let grant_types = match str_list(meta, "grant_types")? {
        None => vec![GrantType::AuthorizationCode],
        Some(g) => g
            .iter()
            .map(|name| {
                serde_json::from_value(serde_json::Value::String(name.clone()))
                    .map_err(|_| bad_metadata(format!("grant type {name}")))
            })
            .collect::<Result<Vec<GrantType>, _>>()?,
    };
    let sender_constraint = if flag(meta, "dpop_bound_access_tokens")? {
        SenderConstraint::Dpop
    } else if flag(meta, "tls_client_certificate_bound_access_tokens")? {
        SenderConstraint::Mtls
    } else {
        return Err(bad_metadata(
            "dpop_bound_access_tokens or tls_client_certificate_bound_access_tokens is required",
        ));
    };
    let jwks = match meta.get("jwks") {
        None | Some(serde_json::Value::Null) => None,
        Some(v @ serde_json::Value::Object(_)) => Some(v.clone()),
        Some(_) => return Err(bad_metadata("jwks must be an object")),
    };
    let certificate_x5t = if auth_method == AuthMethod::SelfSignedTlsClientAuth {
        let x5c = jwks
            .as_ref()
            .and_then(|j| j.get("keys"))
            .and_then(|k| k.as_array())
            .and_then(|keys| keys.iter().find_map(|k| k.get("x5c")?.as_array()?.first()?.as_str()))
            .ok_or_else(|| bad_metadata("self_signed_tls_client_auth needs a jwks key with x5c"))?;
        let der = keybound_core::b64::decode_pem_body(x5c).map_err(|_| bad_metadata("x5c is not base64"))?;
        x509_parser::parse_x509_certificate(&der).map_err(|_| bad_metadata("x5c is not a certificate"))?;
        Some(keybound_core::cert::X5tS256::from_der(&der))
    } else {
        None
    };
    let subject_type = match string(meta, "subject_type")?.as_deref() {
        None | Some("public") => SubjectType::Public,
        Some("pairwise") => SubjectType::Pairwise,
        Some(other) => return Err(bad_metadata(format!("subject_type {other}"))),
    };
    let raw = RawClient {
        client_id: client_id.to_string(),
        name: string(meta, "client_name")?,
        auth_method,
        redirect_uris: str_list(meta, "redirect_uris")?.unwrap_or_default(),
        scopes: string(meta, "scope")?
            .map(|s| s.split(' ').filter(|x| !x.is_empty()).map(str::to_string).collect())
            .unwrap_or_default(),
        resources: str_list(meta, "resources")?,
        default_resource: string(meta, "default_resource")?,
        sender_constraint,
        grant_types,
        // Only usable keys are kept; the x5c certificate (self-signed) is checked above.
        jwks: jwks
            .filter(|_| auth_method == AuthMethod::PrivateKeyJwt)
            .map(|j| j.to_string()),
        tls_client_auth_subject_dn: string(meta, "tls_client_auth_subject_dn")?,
        tls_client_auth_san_dns: string(meta, "tls_client_auth_san_dns")?,
        certificate_x5t,
        subject_type,
        ..RawClient::default()
    };
    crate::config::validate_registered(raw, config).map_err(map_config_error)
}
