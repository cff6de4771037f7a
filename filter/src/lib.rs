//! # keybound-filter
//!
//! A proxy-wasm HTTP filter for Envoy (`envoy.filters.http.wasm`, V8 runtime) and Istio
//! (`WasmPlugin`) that lets a request through only if its access token's signature, issuer,
//! audience, time claims, scopes **and** its `cnf` binding (DPoP proof or client certificate)
//! were verified for this very request.
//!
//! All protocol checks are keybound-core's. This crate does the I/O: it reads headers and
//! connection properties, keeps the `jti` replay cache in shared data (one cache for all workers
//! of an Envoy instance) and a verified-token cache per VM, sends RFC-coded errors, sets the
//! verified claims as upstream headers (after removing any client copies), counts decisions in
//! Envoy metrics and logs one JSON line per decision.
//!
//! Keys come inline or from a `jwks_uri` (fetched through an Envoy cluster, shared by all VMs
//! of an instance, refreshed, refetched on an unknown `kid`, kept when a refresh fails); opaque
//! tokens can be introspected (RFC 7662) through a cluster. ES256 signatures are verified by
//! Envoy's BoringSSL (`verify_signature` foreign function, see [`envoy_crypto`]) when the host has
//! it, by pure Rust otherwise.
//!
//! [`config`] documents the plugin configuration; [`gate`] the per-request decision;
//! [`replay`] the shared replay cache.

pub mod adapter;
pub mod config;
pub mod envoy_crypto;
pub mod gate;
pub mod metrics;
pub mod policy;
pub mod replay;

#[cfg(all(target_arch = "wasm32", feature = "plugin"))]
mod host;
