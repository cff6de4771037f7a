//! What handlers read from a request and the response headers every OAuth response has: form
//! parameters ([`Params`]), the client's address ([`ClientAddr`]), `no-store`.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, header};

use crate::error::OAuthError;

/// The address of the TCP peer of a request (a request extension set per connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::IpAddr);

/// The name of the one parameter that may repeat: `resource` (RFC 8707 §2).
pub const RESOURCE: &str = "resource";

/// Form parameters with each name at most once (RFC 6749 §3.1), except `resource`, which may be
/// given several times (RFC 8707 §2) and is kept apart, in order.
#[derive(Debug, Clone, Default)]
pub struct Params {
    /// Every other parameter by name.
    pub values: BTreeMap<String, String>,
    /// The non-empty `resource` values, in request order.
    pub resources: Vec<String>,
}

impl Params {
    /// The parameters of a verified request object (RFC 9101): strings as they are, `resource`
    /// as one value or an array of them, other JSON values (numbers, `authorization_details`,
    /// `claims`) as their JSON text.
    ///
    /// # Errors
    /// `invalid_request_object` if `resource` is neither a string nor an array of strings.
    pub fn from_request_object(claims: &serde_json::Map<String, serde_json::Value>) -> Result<Params, OAuthError> {
        let mut params = Params::default();
        for (k, v) in claims {
            if k == RESOURCE {
                let list = match v {
                    serde_json::Value::String(s) => vec![s.clone()],
                    serde_json::Value::Array(items) => items
                        .iter()
                        .map(|i| i.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| {
                            OAuthError::new(crate::error::Code::InvalidRequestObject, "resource is not strings")
                        })?,
                    _ => {
                        return Err(OAuthError::new(
                            crate::error::Code::InvalidRequestObject,
                            "resource is not a string",
                        ));
                    }
                };
                params.resources.extend(list.into_iter().filter(|r| !r.is_empty()));
                continue;
            }
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            params.values.insert(k.clone(), text);
        }
        Ok(params)
    }

    /// Parses an `application/x-www-form-urlencoded` body.
    ///
    /// # Errors
    /// `invalid_request` if the content type is not a form or a parameter repeats.
    pub fn from_form(headers: &HeaderMap, body: &[u8]) -> Result<Params, OAuthError> {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(OAuthError::invalid_request("content type is not a form"));
        }
        Params::parse(body)
    }

    /// Parses urlencoded pairs (a query string or form body).
    ///
    /// # Errors
    /// `invalid_request` if a parameter other than `resource` repeats.
    pub fn parse(raw: &[u8]) -> Result<Params, OAuthError> {
        let mut params = Params::default();
        for (k, v) in form_urlencoded::parse(raw) {
            if k == RESOURCE {
                if !v.is_empty() {
                    params.resources.push(v.into_owned());
                }
            } else if params.values.insert(k.into_owned(), v.into_owned()).is_some() {
                return Err(OAuthError::invalid_request("repeated parameter"));
            }
        }
        Ok(params)
    }

    /// Whether a parameter was sent at all (even empty).
    pub fn contains(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// A parameter; an empty value counts as absent (RFC 6749 §3.1).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// A required parameter.
    ///
    /// # Errors
    /// `invalid_request` if absent.
    pub fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("missing {name}")))
    }
}
