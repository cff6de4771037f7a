//! # keybound-core
//!
//! All protocol logic of keybound, the sender-constrained OAuth token gateway: JOSE, JWK
//! thumbprints, DPoP proofs, access-token claims, `cnf` binding to DPoP keys and client
//! certificates, XFCC, `htu` normalisation, server nonces, PKCE, and the mapping of every failure
//! to an RFC error code, an HTTP status and a `WWW-Authenticate` challenge.
//!
//! ## What it does not do
//! No I/O, no clock, no random numbers, no global state: `now` (Unix seconds), random bytes and
//! signature backends come from the caller ([`jws::Verifier`], [`jws::Signer`]). Stateful checks,
//! `jti` replay detection and token caches, belong to the adapter (the Envoy filter, the
//! authorization server), which gets from core the key to store and its expiry. It is `no_std`
//! (with `alloc`) and builds for `wasm32-wasip1` and `wasm32-unknown-unknown`.
//!
//! ## Modules, by what they verify
//! - [`b64`]: strict base64url.
//! - [`jws`], [`jwk`]: compact JWS, algorithms (ES256, PS256, EdDSA; RS256 on request), public
//!   JWKs, RFC 7638 thumbprints, key sets.
//! - [`dpop`]: DPoP proofs (RFC 9449), created and verified in a documented order.
//! - [`path`]: the canonical request path that rules match and `htu` is built from.
//! - [`htu`]: the normalised request URI of a proof.
//! - [`nonce`]: stateless server nonces shared by every instance holding the secret.
//! - [`token`]: RFC 9068 JWT access tokens and RFC 7662 introspection results.
//! - [`cert`]: certificate thumbprints (`x5t#S256`), PEM chains, the XFCC header and RFC 9440
//!   `Client-Cert` headers.
//! - [`qc`]: PSD2 roles, competent authority and organisation identifier of a qualified
//!   certificate (ETSI TS 119 495 QCStatements).
//! - [`request`]: the whole protected-resource request: headers, binding, scopes.
//! - [`pkce`]: PKCE S256.
//! - [`id_token`]: OpenID Connect ID tokens, validated by a client (signature from the issuer's
//!   JWKS, `iss`, `aud`, `azp`, `nonce`, `exp`, `iat`).
//! - [`jar`]: signed request objects (RFC 9101) as FAPI 2.0 Message Signing requires them,
//!   verified by an authorization server.
//! - [`rar`]: Rich Authorization Requests (RFC 9396): `authorization_details` checked against
//!   registered types, and their consent text.
//! - [`error`]: the one error type and its mapping to the wire.
//!
//! Results that prove a check passed ([`dpop::VerifiedProof`], [`token::VerifiedToken`],
//! [`request::VerifiedRequest`]) can only be built by this crate.
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]

extern crate alloc;

pub mod b64;
pub mod cert;
pub mod dpop;
pub mod error;
pub mod htu;
pub mod id_token;
pub mod jar;
mod json;
pub mod jwk;
pub mod jws;
pub mod nonce;
pub mod path;
pub mod pkce;
pub mod qc;
pub mod rar;
pub mod request;
pub mod time;
pub mod token;

pub use error::{Error, ErrorCode, Part, Result};

/// The README's code examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
