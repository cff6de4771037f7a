//! The one error type of keybound-core and its total mapping to the wire.
//!
//! Every failure of every verifier is an [`Error`]. [`Error::code`] maps it to the RFC error
//! code a client may see ([RFC 6750 §3.1], [RFC 9449 §7.1] and §8, [RFC 7636 §4.6]),
//! [`Error::status`] to the HTTP status, [`Error::reason`] to a stable internal reason code for
//! logs and metrics, and [`Error::www_authenticate`] to the `WWW-Authenticate` challenge.
//!
//! Clients learn only the RFC code: the reason (which check failed, which claim was missing) goes
//! to logs. A failed signature is reported as `bad_signature` whatever the backend said.
//!
//! [RFC 6750 §3.1]: https://www.rfc-editor.org/rfc/rfc6750#section-3.1
//! [RFC 9449 §7.1]: https://www.rfc-editor.org/rfc/rfc9449#section-7.1
//! [RFC 7636 §4.6]: https://www.rfc-editor.org/rfc/rfc7636#section-4.6

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::jws::Alg;

/// Which signed object a JOSE-level failure is about.
///
/// The same JWS check (a bad signature, a missing claim) maps to a different RFC code depending on
/// what was being verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Part {
    /// A DPoP proof (RFC 9449): failures map to `invalid_dpop_proof`.
    Proof,
    /// An access token (RFC 9068 JWT or introspection result): failures map to `invalid_token`.
    AccessToken,
    /// Any other signed object (a client assertion, a request object): `invalid_request`.
    Other,
    /// An OpenID Connect ID token, checked by a client ([`crate::id_token`]): failures map to
    /// `invalid_token`.
    IdToken,
}

impl Part {
    fn prefix(self) -> &'static str {
        match self {
            Part::Proof => "proof",
            Part::AccessToken => "token",
            Part::Other => "jws",
            Part::IdToken => "id_token",
        }
    }
}

/// The RFC error codes keybound puts on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `invalid_request` (RFC 6750 §3.1): malformed request, e.g. two `Authorization` headers.
    InvalidRequest,
    /// `invalid_token` (RFC 6750 §3.1): the access token is expired, revoked, malformed, or not
    /// bound to what the request presented.
    InvalidToken,
    /// `insufficient_scope` (RFC 6750 §3.1): the token lacks a required scope.
    InsufficientScope,
    /// `invalid_dpop_proof` (RFC 9449 §7.1): the DPoP proof is missing or invalid.
    InvalidDpopProof,
    /// `use_dpop_nonce` (RFC 9449 §8/§9): the server requires a (fresh) nonce in the proof.
    UseDpopNonce,
    /// `invalid_grant` (RFC 6749 §5.2): used for a failed PKCE check at the token endpoint.
    InvalidGrant,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::InsufficientScope => "insufficient_scope",
            ErrorCode::InvalidDpopProof => "invalid_dpop_proof",
            ErrorCode::UseDpopNonce => "use_dpop_nonce",
            ErrorCode::InvalidGrant => "invalid_grant",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every way a verification in keybound-core can fail.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    // ---- the HTTP request as a whole ----
    /// No `Authorization` header (RFC 6750 §3.1: answered with a challenge and no error code).
    MissingCredentials,
    /// More than one `Authorization` header value.
    MultipleAuthorizationHeaders,
    /// The `Authorization` header is not `<scheme> <token68>`.
    MalformedAuthorization,
    /// The `Authorization` scheme is neither `Bearer` nor `DPoP`.
    UnsupportedScheme,
    /// More than one `DPoP` header value (RFC 9449 §4.3 step 1).
    MultipleDpopHeaders,
    /// `Authorization: DPoP` without a `DPoP` proof header.
    MissingProof,
    /// The request's path cannot be made canonical safely (see [`crate::path`]).
    PathNotCanonical {
        /// Why (for logs only).
        what: &'static str,
    },
    /// The request's `:authority` is not one of the origins the gateway serves.
    UnknownOrigin,

    // ---- JOSE, for any signed object ----
    /// The compact serialisation, base64url, or JSON of a JWS is malformed.
    Malformed {
        /// The object being verified.
        part: Part,
        /// What is malformed (for logs only).
        what: &'static str,
    },
    /// The `typ` header is missing or wrong (`dpop+jwt`, `at+jwt`).
    WrongType {
        /// The object being verified.
        part: Part,
    },
    /// The `alg` is `none`, symmetric, unknown, or not in the policy's allowlist.
    AlgNotAllowed {
        /// The object being verified.
        part: Part,
    },
    /// The `alg` does not fit the key type (e.g. `ES256` with an RSA key).
    AlgKeyMismatch {
        /// The object being verified.
        part: Part,
    },
    /// A JWK is malformed, unsupported, or too weak (RSA below 2048 bits).
    InvalidKey {
        /// The object being verified.
        part: Part,
        /// What is wrong with the key (for logs only).
        what: &'static str,
    },
    /// A JWK that must be public carries a private member (`d`, `p`, `q`, `dp`, `dq`, `qi`, `k`).
    PrivateKeyInJwk {
        /// The object being verified.
        part: Part,
    },
    /// No key in the key set matches the JWS header (`kid`, `alg`, `kty`).
    UnknownKey {
        /// The object being verified.
        part: Part,
    },
    /// The signature does not verify. Deliberately opaque.
    BadSignature {
        /// The object being verified.
        part: Part,
    },
    /// A required claim is missing or has the wrong JSON type.
    MissingClaim {
        /// The object being verified.
        part: Part,
        /// The claim's name.
        claim: &'static str,
    },

    // ---- DPoP proof claims ----
    /// The proof's `htm` is not the request's method.
    HtmMismatch,
    /// The proof's `htu` is not the request's URL (after normalisation).
    HtuMismatch,
    /// The proof's `htu`, or the request URL, is not an absolute http(s) URI.
    InvalidHtu,
    /// The proof's `iat` is too old or too far in the future.
    IatOutOfWindow,
    /// The proof's `ath` is not the hash of the presented access token.
    AthMismatch,
    /// The server requires a nonce and the proof has none.
    NonceRequired,
    /// The proof's nonce is not one this server (or a peer with the same secret) issued
    /// recently.
    NonceInvalid,
    /// The proof's `jti` was seen before within the proof lifetime (detected by the adapter).
    ProofReplayed,

    // ---- access-token claims ----
    /// The token's `iss` is not the expected issuer.
    IssuerMismatch,
    /// None of the token's `aud` values is an accepted audience.
    AudienceMismatch,
    /// The token's `exp` is in the past (beyond leeway).
    TokenExpired,
    /// The token's `nbf` is in the future (beyond leeway).
    TokenNotYetValid,
    /// The token's `iat` is in the future (beyond leeway).
    TokenIssuedInFuture,
    /// The introspection response says `active: false`.
    TokenInactive,
    /// The introspection response is about a token that is not an access token (a refresh
    /// token, an ID token), or does not say what kind of token it is.
    NotAnAccessToken,
    /// The token lacks a scope the route requires.
    InsufficientScope,
    /// The token's `authorization_details` (RFC 9396) lack a type the route requires.
    AuthorizationDetailsMissing,
    /// The client certificate lacks a PSD2 role the route requires (ETSI TS 119 495), or
    /// carries no PSD2 statement at all.
    Psd2RoleMissing,

    // ---- ID token claims (OpenID Connect Core §3.1.3.7, checked by a client) ----
    /// The ID token's `iss` is not the issuer the client talked to.
    IdTokenIssuerMismatch,
    /// The ID token's `aud` does not contain the client's id.
    IdTokenAudienceMismatch,
    /// The ID token's `azp` is not the client's id.
    IdTokenAzpMismatch,
    /// The ID token's `nonce` is not the one the client sent.
    IdTokenNonceMismatch,
    /// The ID token's `exp` is in the past (beyond leeway).
    IdTokenExpired,
    /// The ID token's `iat` is in the future (beyond leeway).
    IdTokenIssuedInFuture,
    /// The ID token's `iat` is older than the policy accepts for a token just received.
    IdTokenTooOld,
    /// The ID token's `at_hash` is not the left half of the hash of the access token issued with
    /// it (OpenID Connect Core §3.1.3.8, §3.2.2.9).
    IdTokenAtHashMismatch,
    /// A refreshed ID token's `iss`, `sub` or `aud` differs from the original ID token's (OpenID
    /// Connect Core §12.2): it is about another end-user or session.
    IdTokenRefreshMismatch,

    // ---- binding ----
    /// The token is DPoP-bound but was presented with the `Bearer` scheme.
    DpopBoundTokenAsBearer,
    /// The token was presented with the `DPoP` scheme but has no `cnf.jkt`.
    TokenNotDpopBound,
    /// The proof was signed by a key other than the token's `cnf.jkt`.
    JktMismatch,
    /// The token is certificate-bound and no client certificate was presented.
    CertificateRequired,
    /// The client certificate's SHA-256 thumbprint is not the token's `cnf.x5t#S256`.
    CertificateMismatch,
    /// The token has no `cnf` and the policy does not allow bearer tokens.
    UnboundToken,
    /// The token's binding is not one the route accepts (a route for DPoP only, say, and a
    /// certificate-bound token).
    BindingNotAccepted,
    /// The client certificate data (PEM, digest, XFCC) is malformed.
    InvalidCertificate {
        /// What is wrong (for logs only).
        what: &'static str,
    },

    // ---- request objects (RFC 9101, checked by an authorization server) ----
    /// A claim of a signed request object fails a check ([`crate::jar`]); an authorization
    /// server answers `invalid_request_object`.
    RequestObjectInvalid {
        /// Which check (for logs only).
        what: &'static str,
    },

    /// An `authorization_details` value (RFC 9396) is malformed or not what its registered type
    /// allows ([`crate::rar`]); an authorization server answers `invalid_authorization_details`.
    AuthorizationDetailsInvalid {
        /// The JSON pointer of the offending value (`/0/instructedAmount/currency`; empty for
        /// the whole value).
        at: String,
        /// What is wrong with it.
        what: &'static str,
    },

    // ---- PKCE (RFC 7636) ----
    /// `code_challenge_method=plain` or an unknown method.
    PkceMethodNotAllowed,
    /// The `code_verifier` or `code_challenge` is not well-formed.
    PkceMalformed,
    /// The `code_verifier` does not match the `code_challenge`.
    PkceMismatch,

    // ---- configuration (adapters refuse to load) ----
    /// A configuration value is invalid; names the field.
    Config {
        /// The field's name, e.g. `dpop.max_age`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Error {
    /// The RFC error code a client may see; `None` for a request without credentials, which RFC
    /// 6750 §3.1 answers with a bare challenge.
    pub fn code(&self) -> Option<ErrorCode> {
        use Error::*;
        Some(match self {
            MissingCredentials => return None,
            MultipleAuthorizationHeaders
            | MalformedAuthorization
            | UnsupportedScheme
            | MultipleDpopHeaders
            | PathNotCanonical { .. }
            | UnknownOrigin
            | InvalidCertificate { .. }
            | PkceMethodNotAllowed
            | PkceMalformed
            | RequestObjectInvalid { .. }
            | AuthorizationDetailsInvalid { .. }
            | Config { .. } => ErrorCode::InvalidRequest,
            MissingProof | HtmMismatch | HtuMismatch | InvalidHtu | IatOutOfWindow | AthMismatch | ProofReplayed => {
                ErrorCode::InvalidDpopProof
            }
            // RFC 9449 §8 and §9: a missing or stale nonce is answered with a fresh one to retry with.
            NonceRequired | NonceInvalid => ErrorCode::UseDpopNonce,
            Malformed { part, .. }
            | WrongType { part }
            | AlgNotAllowed { part }
            | AlgKeyMismatch { part }
            | InvalidKey { part, .. }
            | PrivateKeyInJwk { part }
            | UnknownKey { part }
            | BadSignature { part }
            | MissingClaim { part, .. } => match part {
                Part::Proof => ErrorCode::InvalidDpopProof,
                Part::AccessToken | Part::IdToken => ErrorCode::InvalidToken,
                Part::Other => ErrorCode::InvalidRequest,
            },
            IssuerMismatch
            | AudienceMismatch
            | TokenExpired
            | TokenNotYetValid
            | TokenIssuedInFuture
            | TokenInactive
            | NotAnAccessToken
            | DpopBoundTokenAsBearer
            | TokenNotDpopBound
            | JktMismatch
            | CertificateRequired
            | CertificateMismatch
            | UnboundToken
            | BindingNotAccepted
            | IdTokenIssuerMismatch
            | IdTokenAudienceMismatch
            | IdTokenAzpMismatch
            | IdTokenNonceMismatch
            | IdTokenExpired
            | IdTokenIssuedInFuture
            | IdTokenTooOld
            | IdTokenAtHashMismatch
            | IdTokenRefreshMismatch => ErrorCode::InvalidToken,
            InsufficientScope | AuthorizationDetailsMissing | Psd2RoleMissing => ErrorCode::InsufficientScope,
            PkceMismatch => ErrorCode::InvalidGrant,
        })
    }

    /// The HTTP status for this error at a resource server: 400 for `invalid_request` (and
    /// `invalid_grant`), 403 for `insufficient_scope`, 401 otherwise.
    pub fn status(&self) -> u16 {
        match self.code() {
            Some(ErrorCode::InvalidRequest | ErrorCode::InvalidGrant) => 400,
            Some(ErrorCode::InsufficientScope) => 403,
            None | Some(ErrorCode::InvalidToken | ErrorCode::InvalidDpopProof | ErrorCode::UseDpopNonce) => 401,
        }
    }

    /// A stable, snake_case reason code for logs and metrics (never sent to the client).
    pub fn reason(&self) -> &'static str {
        use Error::*;
        match self {
            MissingCredentials => "missing_credentials",
            MultipleAuthorizationHeaders => "multiple_authorization_headers",
            MalformedAuthorization => "malformed_authorization",
            UnsupportedScheme => "unsupported_scheme",
            MultipleDpopHeaders => "multiple_dpop_headers",
            MissingProof => "missing_proof",
            PathNotCanonical { .. } => "path_not_canonical",
            UnknownOrigin => "unknown_origin",
            Malformed { part, .. } => by_part(
                *part,
                [
                    "proof_malformed",
                    "token_malformed",
                    "jws_malformed",
                    "id_token_malformed",
                ],
            ),
            WrongType { part } => by_part(
                *part,
                [
                    "proof_wrong_typ",
                    "token_wrong_typ",
                    "jws_wrong_typ",
                    "id_token_wrong_typ",
                ],
            ),
            AlgNotAllowed { part } => by_part(
                *part,
                [
                    "proof_alg_not_allowed",
                    "token_alg_not_allowed",
                    "jws_alg_not_allowed",
                    "id_token_alg_not_allowed",
                ],
            ),
            AlgKeyMismatch { part } => by_part(
                *part,
                [
                    "proof_alg_key_mismatch",
                    "token_alg_key_mismatch",
                    "jws_alg_key_mismatch",
                    "id_token_alg_key_mismatch",
                ],
            ),
            InvalidKey { part, .. } => by_part(
                *part,
                [
                    "proof_invalid_key",
                    "token_invalid_key",
                    "jws_invalid_key",
                    "id_token_invalid_key",
                ],
            ),
            PrivateKeyInJwk { part } => by_part(
                *part,
                [
                    "proof_private_key_in_jwk",
                    "token_private_key_in_jwk",
                    "jws_private_key_in_jwk",
                    "id_token_private_key_in_jwk",
                ],
            ),
            UnknownKey { part } => by_part(
                *part,
                [
                    "proof_unknown_key",
                    "token_unknown_key",
                    "jws_unknown_key",
                    "id_token_unknown_key",
                ],
            ),
            BadSignature { part } => by_part(
                *part,
                [
                    "proof_bad_signature",
                    "token_bad_signature",
                    "jws_bad_signature",
                    "id_token_bad_signature",
                ],
            ),
            MissingClaim { part, .. } => by_part(
                *part,
                [
                    "proof_missing_claim",
                    "token_missing_claim",
                    "jws_missing_claim",
                    "id_token_missing_claim",
                ],
            ),
            HtmMismatch => "proof_htm_mismatch",
            HtuMismatch => "proof_htu_mismatch",
            InvalidHtu => "proof_invalid_htu",
            IatOutOfWindow => "proof_iat_out_of_window",
            AthMismatch => "proof_ath_mismatch",
            NonceRequired => "proof_nonce_required",
            NonceInvalid => "proof_nonce_invalid",
            ProofReplayed => "proof_replayed",
            IssuerMismatch => "token_issuer_mismatch",
            AudienceMismatch => "token_audience_mismatch",
            TokenExpired => "token_expired",
            IdTokenIssuerMismatch => "id_token_issuer_mismatch",
            IdTokenAudienceMismatch => "id_token_audience_mismatch",
            IdTokenAzpMismatch => "id_token_azp_mismatch",
            IdTokenNonceMismatch => "id_token_nonce_mismatch",
            IdTokenExpired => "id_token_expired",
            IdTokenIssuedInFuture => "id_token_issued_in_future",
            IdTokenTooOld => "id_token_too_old",
            IdTokenAtHashMismatch => "id_token_at_hash_mismatch",
            IdTokenRefreshMismatch => "id_token_refresh_mismatch",
            TokenNotYetValid => "token_not_yet_valid",
            TokenIssuedInFuture => "token_issued_in_future",
            TokenInactive => "token_inactive",
            NotAnAccessToken => "token_not_access_token",
            InsufficientScope => "insufficient_scope",
            AuthorizationDetailsMissing => "authorization_details_missing",
            Psd2RoleMissing => "psd2_role_missing",
            DpopBoundTokenAsBearer => "dpop_bound_token_as_bearer",
            TokenNotDpopBound => "token_not_dpop_bound",
            JktMismatch => "jkt_mismatch",
            CertificateRequired => "certificate_required",
            CertificateMismatch => "certificate_mismatch",
            UnboundToken => "unbound_token",
            BindingNotAccepted => "binding_not_accepted",
            InvalidCertificate { .. } => "invalid_certificate",
            PkceMethodNotAllowed => "pkce_method_not_allowed",
            PkceMalformed => "pkce_malformed",
            RequestObjectInvalid { .. } => "request_object_invalid",
            AuthorizationDetailsInvalid { .. } => "authorization_details_invalid",
            PkceMismatch => "pkce_mismatch",
            Config { .. } => "config",
        }
    }

    /// The `WWW-Authenticate` header value for this error at a resource server.
    ///
    /// The challenge scheme is `DPoP` (with `algs`, RFC 9449 §7.1) when the client used DPoP,
    /// the token is DPoP-bound, or the failure concerns a proof; `Bearer` (RFC 6750 §3) when the
    /// client used the Bearer scheme for a token that may be a bearer or certificate-bound token.
    /// For a request without credentials, both challenges are offered when bearer tokens are
    /// allowed. Only the RFC error code is included, never a description.
    pub fn www_authenticate(&self, ctx: &Challenge<'_>) -> String {
        let mut out = String::new();
        let code = self.code();
        let dpop_context = matches!(code, Some(ErrorCode::InvalidDpopProof | ErrorCode::UseDpopNonce))
            || matches!(
                self,
                Error::DpopBoundTokenAsBearer | Error::TokenNotDpopBound | Error::JktMismatch
            )
            || ctx.scheme_used == Some(crate::request::Scheme::DPoP);
        let bearer_context =
            ctx.scheme_used == Some(crate::request::Scheme::Bearer) && !matches!(self, Error::DpopBoundTokenAsBearer);
        let (dpop, bearer) = match (code, ctx.scheme_used) {
            (None, _) => (true, ctx.bearer_allowed),
            _ if bearer_context && !dpop_context => (false, true),
            _ => (true, false),
        };
        let scope = if matches!(self, Error::InsufficientScope) {
            ctx.required_scope
        } else {
            ""
        };
        let common = [
            ("realm", ctx.realm.unwrap_or("")),
            ("error", code.map_or("", ErrorCode::as_str)),
            ("scope", scope),
            ("resource_metadata", ctx.resource_metadata.unwrap_or("")),
        ];
        if dpop {
            let algs: Vec<&str> = ctx.algs.iter().map(|a| a.as_str()).collect();
            let algs = algs.join(" ");
            push_challenge(&mut out, "DPoP", &common, Some(("algs", &algs)));
        }
        if bearer {
            if dpop {
                out.push_str(", ");
            }
            push_challenge(&mut out, "Bearer", &common, None);
        }
        out
    }
}

/// Picks the reason code for a JOSE failure by the object it concerns.
fn by_part(part: Part, [proof, token, other, id_token]: [&'static str; 4]) -> &'static str {
    match part {
        Part::Proof => proof,
        Part::AccessToken => token,
        Part::Other => other,
        Part::IdToken => id_token,
    }
}

/// Appends `scheme` and its non-empty parameters as `name="value"`, comma-separated.
fn push_challenge(out: &mut String, scheme: &str, params: &[(&str, &str)], extra: Option<(&str, &str)>) {
    out.push_str(scheme);
    let mut sep = " ";
    for (name, value) in params.iter().copied().chain(extra) {
        if !value.is_empty() {
            push_param(out, sep, name, value);
            sep = ", ";
        }
    }
}

fn push_param(out: &mut String, sep: &str, name: &str, value: &str) {
    out.push_str(sep);
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// What a `WWW-Authenticate` challenge needs to know about the route and the request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Challenge<'a> {
    /// The scheme the client used, if it sent a parseable `Authorization` header.
    pub scheme_used: Option<crate::request::Scheme>,
    /// Whether the route accepts bearer (or certificate-bound) tokens with the Bearer scheme.
    pub bearer_allowed: bool,
    /// The DPoP algorithms the server accepts (the `algs` parameter).
    pub algs: &'a [Alg],
    /// An optional `realm`.
    pub realm: Option<&'a str>,
    /// The space-separated scopes the route requires (sent with `insufficient_scope`).
    pub required_scope: &'a str,
    /// The URL of the resource's RFC 9728 metadata (`resource_metadata`), if it publishes one.
    pub resource_metadata: Option<&'a str>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Malformed { part, what } => write!(f, "{}: malformed {what}", part.prefix()),
            Error::InvalidKey { part, what } => write!(f, "{}: invalid key: {what}", part.prefix()),
            Error::MissingClaim { part, claim } => {
                write!(f, "{}: missing or invalid claim `{claim}`", part.prefix())
            }
            Error::InvalidCertificate { what } => write!(f, "invalid client certificate: {what}"),
            Error::PathNotCanonical { what } => write!(f, "path_not_canonical: {what}"),
            Error::Config { field, reason } => write!(f, "invalid configuration `{field}`: {reason}"),
            other => f.write_str(other.reason()),
        }
    }
}

impl core::error::Error for Error {}

/// The result type of keybound-core.
pub type Result<T, E = Error> = core::result::Result<T, E>;
