//! RFC 8707 resource indicators: which resource server an access token is for.
//!
//! The server's `audience` lists the resource servers; each client is registered for some of
//! them (`resources`, default all). The `resource` parameter (absolute URI, no fragment, may
//! repeat) names them:
//!
//! - **Authorization request** (PAR, RFC 8707 §2.1): every `resource` must be registered for the
//!   client; together they are what the grant is for. Without one, the grant is for the client's
//!   default resource ([`crate::config::Client::default_resource`]: its only resource, else
//!   `default_resource` of the client or of the server, if registered for the client); with
//!   neither, the request fails. The grant never covers all audiences by default.
//! - **Token request** (RFC 8707 §2.2; `authorization_code`, `refresh_token`,
//!   `client_credentials`): at most one `resource`, since every access token is for one resource
//!   only (`aud` is that one URI). It must be part of the grant (for `client_credentials`, of
//!   the client's resources). Without one: the grant's only resource, else the default if the
//!   grant includes it. A refresh token keeps the whole grant, so the client can get tokens for
//!   any granted resource with it, one at a time, and never for more.
//!
//! Every failure is `invalid_target` (RFC 8707 §2). Resources are compared as exact strings.

use crate::config::{Client, resource_uri_ok};
use crate::error::{Code, OAuthError};
use crate::http::Params;

fn invalid_target(reason: impl Into<String>) -> OAuthError {
    OAuthError::new(Code::InvalidTarget, reason)
}

/// The requested resources, without duplicates, each well-formed and registered for `client`.
fn requested(client: &Client, params: &Params) -> Result<Vec<String>, OAuthError> {
    let mut out: Vec<String> = Vec::with_capacity(params.resources.len());
    for r in &params.resources {
        if !resource_uri_ok(r) {
            return Err(invalid_target(format!("malformed resource {r:?}")));
        }
        if !client.resources.contains(r) {
            return Err(invalid_target(format!(
                "resource {r} is not registered for {}",
                client.id
            )));
        }
        if !out.contains(r) {
            out.push(r.clone());
        }
    }
    Ok(out)
}

/// The resources an authorization request is for.
///
/// # Errors
/// `invalid_target` for a malformed or unregistered resource, or none at all without a default.
pub fn for_authorization(client: &Client, params: &Params) -> Result<Vec<String>, OAuthError> {
    let asked = requested(client, params)?;
    if !asked.is_empty() {
        return Ok(asked);
    }
    client
        .default_resource
        .clone()
        .map(|d| vec![d])
        .ok_or_else(|| invalid_target("no resource requested and the client has no default"))
}

/// The one resource a token request is for, out of `granted` (what the grant covers; empty for
/// a grant from before resource indicators, which is taken as the client's default).
///
/// # Errors
/// `invalid_target` for several resources, a malformed or unregistered one, one outside the
/// grant, or none when the grant has several and no default among them.
pub fn for_token(client: &Client, params: &Params, granted: &[String]) -> Result<String, OAuthError> {
    let fallback: Vec<String> = client.default_resource.iter().cloned().collect();
    let granted = if granted.is_empty() { &fallback[..] } else { granted };
    // Still registered for the client (a registration may have changed since the grant).
    let granted: Vec<&String> = granted.iter().filter(|g| client.resources.contains(g)).collect();
    let asked = requested(client, params)?;
    match asked.as_slice() {
        [one] if granted.contains(&one) => Ok(one.clone()),
        [one] => Err(invalid_target(format!("resource {one} was not granted"))),
        [] => match granted.as_slice() {
            [only] => Ok((*only).clone()),
            several => client
                .default_resource
                .as_ref()
                .filter(|d| several.contains(d))
                .cloned()
                .ok_or_else(|| invalid_target("several resources granted: name one")),
        },
        _ => Err(invalid_target("one resource per token request")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn client(resources: &[&str], default: Option<&str>) -> Client {
        let config = crate::test_support::config("", "");
        let mut c = config.clients.get("fapi").unwrap().clone();
        c.resources = resources.iter().map(|r| (*r).to_string()).collect();
        c.default_resource = default.map(str::to_string);
        c
    }

    fn params(resources: &[&str]) -> Params {
        Params {
            resources: resources.iter().map(|r| (*r).to_string()).collect(),
            ..Params::default()
        }
    }

    const A: &str = "https://a.example";
    const B: &str = "https://b.example";

    #[test]
    fn authorization_takes_the_requested_resources_or_the_default() {
        let c = client(&[A, B], Some(A));
        assert_eq!(for_authorization(&c, &params(&[B, A, B])).unwrap(), vec![B, A]);
        assert_eq!(for_authorization(&c, &params(&[])).unwrap(), vec![A]);
        let e = for_authorization(&client(&[A, B], None), &params(&[])).unwrap_err();
        assert_eq!(e.code, crate::error::Code::InvalidTarget);
        for bad in ["https://c.example", "b.example", "https://a.example#x"] {
            assert_eq!(
                for_authorization(&c, &params(&[A, bad])).unwrap_err().code,
                crate::error::Code::InvalidTarget
            );
        }
    }

    #[test]
    fn a_token_is_for_one_granted_resource() {
        let c = client(&[A, B], Some(A));
        assert_eq!(for_token(&c, &params(&[B]), &[A.into(), B.into()]).unwrap(), B);
        assert_eq!(for_token(&c, &params(&[]), &[A.into(), B.into()]).unwrap(), A);
        assert_eq!(for_token(&c, &params(&[]), &[B.into()]).unwrap(), B);
        assert_eq!(for_token(&c, &params(&[]), &[]).unwrap(), A, "a grant from before");
        for (asked, granted) in [(vec![A], vec![B.to_string()]), (vec![A, B], vec![A.into(), B.into()])] {
            assert_eq!(
                for_token(&c, &params(&asked), &granted).unwrap_err().code,
                crate::error::Code::InvalidTarget
            );
        }
        let no_default = client(&[A, B], None);
        let e = for_token(&no_default, &params(&[]), &[A.into(), B.into()]).unwrap_err();
        assert_eq!(e.code, crate::error::Code::InvalidTarget);
        // A resource no longer registered for the client is not issued, even if granted.
        let narrowed = client(&[A], Some(A));
        let e = for_token(&narrowed, &params(&[B]), &[A.into(), B.into()]).unwrap_err();
        assert_eq!(e.code, crate::error::Code::InvalidTarget);
    }
}
