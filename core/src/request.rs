//! A protected-resource request as a whole: the `Authorization` and `DPoP` headers, the binding of
//! the token to the proof or the certificate, and scopes.
//!
//! [`verify_request`] is the one function a resource server (the Envoy filter, the authorization
//! server's UserInfo endpoint) calls. Its order:
//! 1. exactly one `Authorization` header, `<scheme> <token68>`, scheme `Bearer` or `DPoP` in any
//!    letter case ([`parse_authorization`]);
//! 2. at most one `DPoP` header ([`single_dpop_header`]);
//! 3. with the `DPoP` scheme: a proof is required and verified against the request and the token
//!    ([`crate::dpop::verify_proof`]);
//! 4. the access token is verified by the caller's function (a JWT check, a cache, or
//!    introspection);
//! 5. the binding ([`check_binding`]);
//! 6. the route's scopes ([`crate::token::VerifiedToken::require_scopes`]).
//!
//! What it does **not** do: `jti` replay detection (the adapter records
//! [`crate::dpop::VerifiedProof::replay_key`] after this function succeeded), and issuing a fresh
//! nonce.

use alloc::string::String;
use alloc::vec::Vec;
use core::borrow::Borrow;

use crate::cert::X5tS256;
use crate::dpop::{NonceCheck, ProofMemo, ProofPolicy, ProofTarget, VerifiedProof, verify_proof_with};
use crate::error::{Error, Result};
use crate::htu::Htu;
use crate::jwk::Jkt;
use crate::jws::Verifier;
use crate::time::UnixTime;
use crate::token::VerifiedToken;

/// The longest access token accepted (bytes).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// An `Authorization` scheme keybound accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `Bearer` ([RFC 6750](https://www.rfc-editor.org/rfc/rfc6750)); also used for
    /// certificate-bound tokens ([RFC 8705](https://www.rfc-editor.org/rfc/rfc8705)).
    Bearer,
    /// `DPoP` ([RFC 9449 §7.1](https://www.rfc-editor.org/rfc/rfc9449#section-7.1)).
    DPoP,
}

impl Scheme {
    /// The scheme a name stands for, in any letter case (`None` for any other scheme).
    pub fn from_name(name: &str) -> Option<Scheme> {
        if name.eq_ignore_ascii_case("dpop") {
            Some(Scheme::DPoP)
        } else if name.eq_ignore_ascii_case("bearer") {
            Some(Scheme::Bearer)
        } else {
            None
        }
    }
}

/// Whether a request presents any credential keybound checks: an `Authorization` value with
/// the `Bearer` or `DPoP` scheme (well-formed or not), or a `DPoP` header. A request without one
/// may be let through by a route that allows it (Envoy jwt_authn's `allow_missing`); one with a
/// credential must have a valid one.
pub fn presents_credentials(authorization: &[&str], dpop: &[&str]) -> bool {
    !dpop.is_empty()
        || authorization.iter().any(|v| {
            let scheme = v
                .trim_matches([' ', '\t'])
                .split([' ', '\t'])
                .next()
                .unwrap_or_default();
            Scheme::from_name(scheme).is_some()
        })
}

/// The credentials from the `Authorization` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials<'a> {
    /// The scheme.
    pub scheme: Scheme,
    /// The access token (token68 syntax checked).
    pub token: &'a str,
}

/// Parses the `Authorization` header values of a request.
///
/// # Errors
/// [`Error::MissingCredentials`] if there is none; [`Error::MultipleAuthorizationHeaders`] if
/// more than one; [`Error::UnsupportedScheme`] for a scheme other than Bearer/DPoP;
/// [`Error::MalformedAuthorization`] if the token is not token68 or too long.
pub fn parse_authorization<'a>(values: &[&'a str]) -> Result<Credentials<'a>> {
    let value = match values {
        [] => return Err(Error::MissingCredentials),
        [one] => *one,
        _ => return Err(Error::MultipleAuthorizationHeaders),
    };
    let value = value.trim_matches([' ', '\t']);
    let (scheme, token) = value.split_once([' ', '\t']).ok_or(Error::MalformedAuthorization)?;
    let scheme = Scheme::from_name(scheme).ok_or(Error::UnsupportedScheme)?;
    let token = token.trim_start_matches([' ', '\t']);
    if token.is_empty() || token.len() > MAX_TOKEN_LEN || !is_token68(token) {
        return Err(Error::MalformedAuthorization);
    }
    Ok(Credentials { scheme, token })
}

/// `token68 = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="` (RFC 9110 §11.2).
fn is_token68(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/'))
}

/// Returns the single `DPoP` header value, if any.
///
/// # Errors
/// [`Error::MultipleDpopHeaders`] if there is more than one value (RFC 9449 §4.3 step 1), or a
/// single value that is a comma-joined list.
pub fn single_dpop_header<'a>(values: &[&'a str]) -> Result<Option<&'a str>> {
    match values {
        [] => Ok(None),
        [one] if one.contains(',') => Err(Error::MultipleDpopHeaders),
        [one] => Ok(Some(one.trim())),
        _ => Err(Error::MultipleDpopHeaders),
    }
}

/// How a request was bound to its sender.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Binding {
    /// A DPoP proof signed by the token's `cnf.jkt` key (and, if the token also carries
    /// `x5t#S256`, the certificate matched too).
    Dpop(Jkt),
    /// The client certificate matched `cnf.x5t#S256`.
    Certificate(X5tS256),
    /// An unbound bearer token, allowed by the route's policy.
    Bearer,
}

/// Which bindings a route accepts, beyond what [`check_binding`] checks: a route can take only
/// DPoP-bound or only certificate-bound tokens (an unbound bearer token is governed by
/// [`RoutePolicy::allow_bearer`] alone).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AcceptedBinding {
    /// Any binding the token has (default).
    #[default]
    Any,
    /// DPoP only: the request was bound by a proof of the token's `cnf.jkt`.
    Dpop,
    /// Certificates only: the token carries `cnf.x5t#S256` and the client certificate matched
    /// it (also when the token is DPoP-bound as well).
    Certificate,
}

impl AcceptedBinding {
    /// Checks a verified binding.
    ///
    /// # Errors
    /// [`Error::BindingNotAccepted`] if the route does not take it.
    pub fn check(self, binding: &Binding, token: &VerifiedToken) -> Result<()> {
        let ok = match (self, binding) {
            (AcceptedBinding::Any, _) | (_, Binding::Bearer) => true,
            (AcceptedBinding::Dpop, b) => matches!(b, Binding::Dpop(_)),
            (AcceptedBinding::Certificate, Binding::Certificate(_)) => true,
            (AcceptedBinding::Certificate, Binding::Dpop(_)) => token.x5t_s256().is_some(),
        };
        if ok { Ok(()) } else { Err(Error::BindingNotAccepted) }
    }
}

/// Checks the token's `cnf` against what the request presented.
///
/// # Errors
/// - [`Error::DpopBoundTokenAsBearer`]: a `cnf.jkt` token with the `Bearer` scheme;
/// - [`Error::TokenNotDpopBound`]: the `DPoP` scheme with a token without `cnf.jkt`;
/// - [`Error::MissingProof`] / [`Error::JktMismatch`]: no proof, or a proof by another key;
/// - [`Error::CertificateRequired`] / [`Error::CertificateMismatch`] for `cnf.x5t#S256`;
/// - [`Error::UnboundToken`]: no `cnf` and bearer tokens are not allowed.
pub fn check_binding(
    token: &VerifiedToken,
    scheme: Scheme,
    proof: Option<&VerifiedProof>,
    client_cert: Option<&X5tS256>,
    allow_bearer: bool,
) -> Result<Binding> {
    let cert_bound = match token.x5t_s256() {
        Some(expected) => match client_cert {
            None => return Err(Error::CertificateRequired),
            Some(c) if c != expected => return Err(Error::CertificateMismatch),
            Some(c) => Some(*c),
        },
        None => None,
    };
    match (token.jkt(), scheme) {
        (Some(_), Scheme::Bearer) => Err(Error::DpopBoundTokenAsBearer),
        (Some(jkt), Scheme::DPoP) => {
            let proof = proof.ok_or(Error::MissingProof)?;
            if proof.jkt() != jkt {
                return Err(Error::JktMismatch);
            }
            Ok(Binding::Dpop(*jkt))
        }
        (None, Scheme::DPoP) => Err(Error::TokenNotDpopBound),
        (None, Scheme::Bearer) => match cert_bound {
            Some(c) => Ok(Binding::Certificate(c)),
            None if allow_bearer => Ok(Binding::Bearer),
            None => Err(Error::UnboundToken),
        },
    }
}

/// A protected-resource request, as the adapter sees it.
#[derive(Debug, Clone, Copy)]
pub struct ResourceRequest<'a> {
    /// The HTTP method.
    pub method: &'a str,
    /// The request URI (scheme, authority and path as the client addressed them).
    pub htu: &'a Htu,
    /// Every `Authorization` header value.
    pub authorization: &'a [&'a str],
    /// Every `DPoP` header value.
    pub dpop: &'a [&'a str],
    /// The client certificate's thumbprint, from a trusted source (the TLS connection, or XFCC
    /// from a trusted hop), if any.
    pub client_cert: Option<&'a X5tS256>,
}

/// What a route requires.
#[derive(Debug, Clone, Copy)]
pub struct RoutePolicy<'a> {
    /// DPoP proof rules.
    pub proof: &'a ProofPolicy,
    /// Nonce requirement.
    pub nonce: NonceCheck<'a>,
    /// Whether unbound bearer tokens are accepted on this route (default: no).
    pub allow_bearer: bool,
    /// Scopes the token must have.
    pub required_scopes: &'a [String],
}

/// A request whose token and binding were verified. Only this crate builds one.
#[derive(Debug, Clone)]
pub struct VerifiedRequest<T> {
    token: T,
    proof: Option<VerifiedProof>,
    binding: Binding,
}

impl<T: Borrow<VerifiedToken>> VerifiedRequest<T> {
    /// The verified token.
    pub fn token(&self) -> &VerifiedToken {
        self.token.borrow()
    }

    /// The verified proof, for DPoP requests. Its `jti` still needs the replay check.
    pub fn proof(&self) -> Option<&VerifiedProof> {
        self.proof.as_ref()
    }

    /// How the token was bound.
    pub fn binding(&self) -> &Binding {
        &self.binding
    }
}

/// Verifies a resource request in the order documented in the module docs.
///
/// `verify_token` verifies the access token string (a JWT check, a cache lookup, or
/// introspection); it may return the token by value or behind a shared pointer.
///
/// # Errors
/// The first failed check.
pub fn verify_request<T, F>(
    req: &ResourceRequest<'_>,
    route: &RoutePolicy<'_>,
    now: UnixTime,
    verifier: &dyn Verifier,
    verify_token: F,
) -> Result<VerifiedRequest<T>>
where
    T: Borrow<VerifiedToken>,
    F: FnOnce(&str) -> Result<T>,
{
    verify_request_with(req, route, now, verifier, None, verify_token)
}

/// [`verify_request`], with a [`ProofMemo`] for the proof (see
/// [`crate::dpop::verify_proof_with`]): the same checks in the same order, with the same
/// results.
///
/// # Errors
/// As [`verify_request`].
pub fn verify_request_with<T, F>(
    req: &ResourceRequest<'_>,
    route: &RoutePolicy<'_>,
    now: UnixTime,
    verifier: &dyn Verifier,
    memo: Option<&mut ProofMemo>,
    verify_token: F,
) -> Result<VerifiedRequest<T>>
where
    T: Borrow<VerifiedToken>,
    F: FnOnce(&str) -> Result<T>,
{
    let creds = parse_authorization(req.authorization)?;
    let dpop = single_dpop_header(req.dpop)?;
    let proof = match creds.scheme {
        Scheme::DPoP => {
            let proof = dpop.ok_or(Error::MissingProof)?;
            let target = ProofTarget {
                method: req.method,
                htu: req.htu,
                access_token: Some(creds.token),
            };
            Some(verify_proof_with(
                proof,
                &target,
                route.proof,
                route.nonce,
                now,
                verifier,
                memo,
            )?)
        }
        Scheme::Bearer => None,
    };
    let token = verify_token(creds.token)?;
    let binding = check_binding(
        token.borrow(),
        creds.scheme,
        proof.as_ref(),
        req.client_cert,
        route.allow_bearer,
    )?;
    token.borrow().require_scopes(route.required_scopes)?;
    Ok(VerifiedRequest { token, proof, binding })
}

/// The scheme of the `Authorization` header, if it parses (for choosing the challenge).
pub fn scheme_of(values: &[&str]) -> Option<Scheme> {
    parse_authorization(values).ok().map(|c| c.scheme)
}

/// Joins scopes with spaces (for the `scope` challenge parameter).
pub fn join_scopes<S: AsRef<str>>(scopes: &[S]) -> String {
    let parts: Vec<&str> = scopes.iter().map(AsRef::as_ref).collect();
    parts.join(" ")
}
