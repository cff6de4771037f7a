//! The filter's JSON plugin configuration: parsed strictly (unknown fields are errors) and
//! validated once, at `on_configure`, into a [`Config`] the request path only reads.
//!
//! Every error names the field, e.g. `issuers[0].audiences: at least one audience is required`.

use std::collections::BTreeMap;

use keybound_core::Error;
use keybound_core::cert::XfccPolicy;
use keybound_core::dpop::ProofPolicy;
use keybound_core::htu::Origin;
use keybound_core::jwk::Jwks;
use keybound_core::jws::AlgSet;
use keybound_core::nonce::NonceSecrets;
use keybound_core::path::CanonicalPath;
use keybound_core::token::TokenPolicy;
use serde::Deserialize;

use crate::policy::{
    Cors, GatewayFacts, HostPattern, Known, RawCors, RawRequirement, RawResource, RawRoutes, Requirement,
    ResourceMetadata, Routes,
};

/// A configuration error naming the field.
pub type ConfigError = Error;

fn err(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    Error::Config {
        field: field.into(),
        reason: reason.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    issuers: Vec<RawIssuer>,
    #[serde(default)]
    dpop: RawDpop,
    #[serde(default)]
    mtls: Option<RawMtls>,
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default)]
    forward: RawForward,
    #[serde(default)]
    replay_cache: RawReplayCache,
    #[serde(default)]
    token_cache: RawTokenCache,
    #[serde(default)]
    introspection: Option<RawIntrospection>,
    #[serde(default)]
    verifier: Option<String>,
    #[serde(default)]
    paths: RawPaths,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    requirements: BTreeMap<String, RawRequirement>,
    #[serde(default)]
    default_requirement: Option<String>,
    #[serde(default)]
    routes: RawRoutes,
    #[serde(default)]
    cors: RawCors,
    #[serde(default)]
    resource_metadata: Vec<RawResource>,
    #[serde(default)]
    filter_state: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPaths {
    #[serde(default)]
    case_insensitive: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntrospection {
    endpoint: String,
    cluster: String,
    client_id: String,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    client_secret_from_env: Option<String>,
    #[serde(default)]
    auth_method: Option<String>,
    issuer: String,
    audiences: Vec<String>,
    timeout_ms: Option<u64>,
    max_cache_seconds: Option<u64>,
    #[serde(default)]
    dangerous_accept_untyped: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuer {
    issuer: String,
    audiences: Vec<String>,
    jwks: Option<serde_json::Value>,
    jwks_uri: Option<String>,
    jwks_cluster: Option<String>,
    jwks_refresh_seconds: Option<u64>,
    jwks_min_refetch_seconds: Option<u64>,
    jwks_timeout_ms: Option<u64>,
    #[serde(default)]
    algs: Option<Vec<String>>,
    #[serde(default)]
    leeway_seconds: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDpop {
    algs: Option<Vec<String>>,
    max_age_seconds: Option<u64>,
    future_leeway_seconds: Option<u64>,
    nonce: Option<RawNonce>,
    external_base_url: Option<String>,
    #[serde(default)]
    origins: Vec<String>,
    #[serde(default)]
    dangerous_any_origin: bool,
    #[serde(default)]
    trust_forwarded_headers: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNonce {
    mode: String,
    #[serde(default)]
    secrets: Vec<String>,
    #[serde(default)]
    secrets_from_env: Vec<String>,
    step_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMtls {
    source: String,
    element_from_end: Option<usize>,
    expected_by: Option<String>,
    #[serde(default)]
    front_proxy_uri_sans: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    exact: Option<String>,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    requirement: Option<String>,
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    issuers: Option<Vec<String>>,
    #[serde(default)]
    binding: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    allow_bearer: bool,
    #[serde(default)]
    allow_missing: bool,
    #[serde(default)]
    mode: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForward {
    #[serde(default = "default_forward_headers")]
    headers: BTreeMap<String, String>,
    #[serde(default = "default_true")]
    strip_dpop: bool,
    #[serde(default)]
    claims: BTreeMap<String, String>,
    #[serde(default)]
    payload_header: Option<String>,
    #[serde(default)]
    authorization: Option<String>,
}

impl Default for RawForward {
    fn default() -> Self {
        RawForward {
            headers: default_forward_headers(),
            strip_dpop: true,
            claims: BTreeMap::new(),
            payload_header: None,
            authorization: None,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_forward_headers() -> BTreeMap<String, String> {
    [
        ("sub", "x-keybound-sub"),
        ("client_id", "x-keybound-client-id"),
        ("scope", "x-keybound-scope"),
        ("jkt", "x-keybound-jkt"),
        ("x5t#S256", "x-keybound-x5t-s256"),
        ("binding", "x-keybound-binding"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplayCache {
    #[serde(default = "default_buckets")]
    buckets: usize,
    #[serde(default = "default_entries")]
    entries_per_bucket: usize,
}

impl Default for RawReplayCache {
    fn default() -> Self {
        RawReplayCache {
            buckets: default_buckets(),
            entries_per_bucket: default_entries(),
        }
    }
}

/// 16384 buckets of 32 entries: 524,288 records in 12 MiB of shared data. Small buckets keep the
/// per-request copy small (one bucket is read and written per proof); many buckets keep them from
/// filling unevenly.
fn default_buckets() -> usize {
    16_384
}
fn default_entries() -> usize {
    32
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokenCache {
    #[serde(default = "default_token_cache")]
    max_entries: usize,
    #[serde(default = "default_token_cache_age")]
    max_age_seconds: u64,
}

impl Default for RawTokenCache {
    fn default() -> Self {
        RawTokenCache {
            max_entries: default_token_cache(),
            max_age_seconds: default_token_cache_age(),
        }
    }
}

fn default_token_cache_age() -> u64 {
    300
}

fn default_token_cache() -> usize {
    10_000
}

/// One trusted issuer.
#[derive(Debug, Clone)]
pub struct Issuer {
    /// Claims policy (issuer, audiences, algorithms, leeway).
    pub policy: TokenPolicy,
    /// Where its verification keys come from.
    pub keys: Keys,
}

/// An issuer's keys: given in the configuration, or fetched from its `jwks_uri`.
#[derive(Debug, Clone)]
pub enum Keys {
    /// `jwks` in the configuration.
    Inline(Jwks),
    /// `jwks_uri`, fetched through an Envoy cluster.
    Remote(RemoteJwks),
}

/// How to fetch and refresh a remote JWKS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteJwks {
    /// The HTTP request.
    pub target: HttpTarget,
    /// The name of this issuer's keys in Envoy's shared data (`kb/jwks/<id>`): a hash of the
    /// issuer, the `jwks_uri` and the cluster, so that two configurations in one Envoy, or a
    /// reload that reorders issuers, never read each other's keys; the same issuer and source
    /// keep their keys across a reload.
    pub shared_id: String,
    /// Refetch after this many seconds even if nothing changed (`jwks_refresh_seconds`, default
    /// 300).
    pub refresh_seconds: u64,
    /// At most one fetch per this many seconds per Envoy instance, whatever triggers it (refresh,
    /// an unknown `kid`, missing keys) (`jwks_min_refetch_seconds`, default 30).
    pub min_refetch_seconds: u64,
}

/// An HTTP endpoint reached through an Envoy cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// The URL as configured (for logs).
    pub url: String,
    /// The Envoy cluster that leads there (TLS to it is the cluster's business).
    pub cluster: String,
    /// `:authority` of the call.
    pub authority: String,
    /// `:path` of the call (with query).
    pub path: String,
    /// Timeout in milliseconds.
    pub timeout_ms: u64,
}

impl HttpTarget {
    /// `fields`: the names of the URL, cluster and timeout fields, for errors.
    fn parse(url: &str, cluster: &str, timeout_ms: Option<u64>, fields: [&str; 3]) -> Result<HttpTarget, ConfigError> {
        let [field, cluster_field, timeout_field] = fields;
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| err(field, "must be an http(s) URL"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains(['@', '?', '#', ' ']) || path.contains([' ', '#']) {
            return Err(err(field, "must be an http(s) URL with a host"));
        }
        if cluster.is_empty() {
            return Err(err(cluster_field, "an Envoy cluster name is required"));
        }
        let timeout_ms = timeout_ms.unwrap_or(5000);
        if !(1..=60_000).contains(&timeout_ms) {
            return Err(err(timeout_field, "must be 1 to 60000"));
        }
        Ok(HttpTarget {
            url: url.to_owned(),
            cluster: cluster.to_owned(),
            authority: authority.to_owned(),
            path: path.to_owned(),
            timeout_ms,
        })
    }
}

/// Introspection (RFC 7662) of opaque tokens: the "phantom token" pattern.
#[derive(Debug, Clone)]
pub struct Introspection {
    /// The introspection endpoint.
    pub target: HttpTarget,
    /// How the gateway authenticates itself to the introspection endpoint.
    pub client_auth: IntrospectionAuth,
    /// What the introspection response must say (`iss` if present, `aud` if present).
    pub policy: TokenPolicy,
    /// Results are cached until the token's `exp`, and at most this long (default 300).
    pub max_cache_seconds: u64,
}

/// Client authentication at the introspection endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntrospectionAuth {
    /// `client_secret_basic` (RFC 6749 §2.3.1): this `authorization` header value.
    SecretBasic(String),
    /// `tls_client_auth` (RFC 8705 §2): the Envoy cluster presents the gateway's client
    /// certificate (its `transport_socket`); the form carries this `client_id`.
    Tls(String),
}

/// Which code verifies ES256 signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifierChoice {
    /// Envoy's `verify_signature` (BoringSSL) when the host has it, else pure Rust (default).
    Auto,
    /// Envoy's `verify_signature`; the configuration is refused if the host lacks it.
    Envoy,
    /// Pure Rust (RustCrypto) inside the VM.
    Rust,
}

/// Where the client certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// No certificate binding is checked: certificate-bound tokens are refused.
    None,
    /// Envoy's own downstream TLS connection (`connection.sha256_peer_certificate_digest`).
    Connection,
    /// The `x-forwarded-client-cert` header from a trusted front proxy.
    Xfcc {
        /// Which XFCC element to use and whose `By` to expect.
        policy: XfccPolicy,
        /// If not empty, XFCC is read only on connections whose client certificate has one of
        /// these URI SANs (`connection.uri_san_peer_certificate`): the front proxy's identity.
        front_proxy_uri_sans: Vec<String>,
    },
}

/// How a rule matches the canonical path ([`keybound_core::path`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// By whole segments: `/api` matches `/api` and `/api/x`, never `/apix`.
    Prefix(String),
    /// Exactly this path.
    Exact(String),
}

impl PathMatch {
    /// Whether it matches `view`, a request's [`CanonicalPath::rule_view`].
    pub fn matches(&self, view: &str) -> bool {
        match self {
            PathMatch::Prefix(p) => keybound_core::path::starts_with_segments(view, p),
            PathMatch::Exact(p) => view == p,
        }
    }
}

/// A rule: hosts, path and methods to what they require. The first matching rule applies.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Hosts (`:authority`) it applies to (empty: any).
    pub hosts: Vec<HostPattern>,
    /// How it matches the canonical path (without the query).
    pub path: PathMatch,
    /// Methods (empty: any).
    pub methods: Vec<String>,
    /// What is required: an index into [`Config::requirements`].
    pub requirement: usize,
}

/// What happens to the `Authorization` header of a verified request (`forward.authorization`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AuthorizationForward {
    /// Forwarded as the client sent it (default).
    #[default]
    Keep,
    /// Removed.
    Strip,
    /// `DPoP <token>` becomes `Bearer <token>`, for upstreams that only know `Bearer`.
    Bearer,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Trusted issuers.
    pub issuers: Vec<Issuer>,
    /// DPoP proof policy.
    pub proof: ProofPolicy,
    /// Nonces, when required.
    pub nonce: Option<NonceSecrets>,
    /// The externally visible base URL (`https://api.example.com`), if behind a proxy.
    pub external_base_url: Option<Origin>,
    /// The origins the gateway serves (`dpop.origins`); a request for another `:authority` is
    /// refused, and `htu` is built from the matching origin.
    pub origins: Vec<Origin>,
    /// Build `htu` from `x-forwarded-proto`/`x-forwarded-host` (only behind a trusted proxy).
    pub trust_forwarded_headers: bool,
    /// Client certificate source.
    pub cert_source: CertSource,
    /// Rules, in order.
    pub rules: Vec<Rule>,
    /// Claim name to upstream header name.
    pub forward_headers: BTreeMap<String, String>,
    /// Remove the `DPoP` header before forwarding.
    pub strip_dpop: bool,
    /// Replay cache shape.
    pub replay_buckets: usize,
    /// Replay cache bucket size.
    pub replay_entries_per_bucket: usize,
    /// Verified-token cache bound.
    pub token_cache_entries: usize,
    /// A cached verdict is used at most this many seconds after it was made.
    pub token_cache_max_age: u64,
    /// Rules match paths in ASCII lower case (`paths.case_insensitive`), for upstreams that do.
    pub case_insensitive_paths: bool,
    /// Introspection of opaque tokens, if configured.
    pub introspection: Option<Introspection>,
    /// Which code verifies ES256 signatures.
    pub verifier: VerifierChoice,
    /// Every requirement: the named ones (`requirements`, in name order), then each rule's own,
    /// then `default` (what a request needs when no route or rule chose).
    pub requirements: Vec<Requirement>,
    /// The index of the requirement for requests no route or rule chose.
    pub default_requirement: usize,
    /// How the Envoy route picks a requirement.
    pub routes: Routes,
    /// CORS for the filter's replies (`None`: no CORS headers, preflights still bypass).
    pub cors: Cors,
    /// RFC 9728 metadata documents served by the filter.
    pub resources: Vec<ResourceMetadata>,
    /// Write the decision to Envoy filter state (`wasm.keybound.*`).
    pub filter_state: bool,
    /// Upstream header name to JSON pointer of a claim (`forward.claims`).
    pub forward_claims: Vec<(String, String)>,
    /// The header that carries the verified payload, base64url (`forward.payload_header`).
    pub payload_header: Option<String>,
    /// What happens to `Authorization` (`forward.authorization`).
    pub authorization: AuthorizationForward,
}

/// The headers that mark a request forwarded in report mode: the decision it would have had
/// and why. Always removed from client requests.
pub const REPORT_HEADERS: [&str; 2] = ["x-keybound-decision", "x-keybound-reason"];

const FORWARDABLE: [&str; 6] = ["sub", "client_id", "scope", "jkt", "x5t#S256", "binding"];

impl Config {
    /// Parses and validates the plugin configuration; secrets named by `*_from_env` fields come
    /// from the process environment (in Envoy: the VM's `vm_config.environment_variables`).
    ///
    /// # Errors
    /// [`Error::Config`] naming the first invalid field.
    pub fn parse(json: &[u8]) -> Result<Config, ConfigError> {
        Config::parse_with_env(json, &|name| std::env::var(name).ok())
    }

    /// [`Config::parse`], reading environment variables through `env`.
    ///
    /// # Errors
    /// As [`Config::parse`]; also a `*_from_env` field naming a variable that is not set.
    pub fn parse_with_env(json: &[u8], env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let raw: RawConfig = serde_json::from_slice(json).map_err(|e| {
            // serde_json names unknown or missing fields and the position.
            err("plugin configuration", e.to_string())
        })?;
        if raw.issuers.is_empty() {
            return Err(err("issuers", "at least one issuer is required"));
        }
        let mut issuers = Vec::new();
        for (i, iss) in raw.issuers.into_iter().enumerate() {
            let f = |name: &str| format!("issuers[{i}].{name}");
            if !iss.issuer.starts_with("https://") && !iss.issuer.starts_with("http://") {
                return Err(err(f("issuer"), "must be an http(s) URL"));
            }
            if iss.audiences.is_empty() || iss.audiences.iter().any(String::is_empty) {
                return Err(err(f("audiences"), "at least one non-empty audience is required"));
            }
            let remote_only = [
                (iss.jwks_cluster.is_some(), "jwks_cluster"),
                (iss.jwks_refresh_seconds.is_some(), "jwks_refresh_seconds"),
                (iss.jwks_min_refetch_seconds.is_some(), "jwks_min_refetch_seconds"),
                (iss.jwks_timeout_ms.is_some(), "jwks_timeout_ms"),
            ];
            let keys = match (iss.jwks, iss.jwks_uri) {
                (Some(_), Some(_)) => return Err(err(f("jwks"), "give either jwks or jwks_uri, not both")),
                (None, None) => return Err(err(f("jwks"), "required (a JWKS object), or jwks_uri")),
                (Some(jwks_json), None) => {
                    if let Some((_, name)) = remote_only.iter().find(|(set, _)| *set) {
                        return Err(err(f(name), "only with jwks_uri"));
                    }
                    Keys::Inline(parse_jwks(&jwks_json.to_string(), &f("jwks"))?)
                }
                (None, Some(uri)) => {
                    let cluster = iss
                        .jwks_cluster
                        .ok_or_else(|| err(f("jwks_cluster"), "required with jwks_uri (an Envoy cluster name)"))?;
                    let target = HttpTarget::parse(
                        &uri,
                        &cluster,
                        iss.jwks_timeout_ms,
                        [&f("jwks_uri"), &f("jwks_cluster"), &f("jwks_timeout_ms")],
                    )?;
                    let refresh_seconds = iss.jwks_refresh_seconds.unwrap_or(300);
                    if !(1..=86_400).contains(&refresh_seconds) {
                        return Err(err(f("jwks_refresh_seconds"), "must be 1 to 86400"));
                    }
                    let min_refetch_seconds = iss.jwks_min_refetch_seconds.unwrap_or(30);
                    if !(1..=refresh_seconds).contains(&min_refetch_seconds) {
                        return Err(err(f("jwks_min_refetch_seconds"), "must be 1 to jwks_refresh_seconds"));
                    }
                    Keys::Remote(RemoteJwks {
                        shared_id: shared_id(&[&iss.issuer, &uri, &cluster]),
                        target,
                        refresh_seconds,
                        min_refetch_seconds,
                    })
                }
            };
            let mut policy = TokenPolicy::new(iss.issuer, iss.audiences);
            if let Some(algs) = &iss.algs {
                policy.algs = AlgSet::from_names(algs.iter().map(String::as_str), &f("algs"))?;
            }
            if let Some(l) = iss.leeway_seconds {
                if l > 300 {
                    return Err(err(f("leeway_seconds"), "at most 300"));
                }
                policy.leeway = l;
            }
            issuers.push(Issuer { policy, keys });
        }

        let mut proof = ProofPolicy::default();
        if let Some(algs) = &raw.dpop.algs {
            proof.algs = AlgSet::from_names(algs.iter().map(String::as_str), "dpop.algs")?;
        }
        if let Some(m) = raw.dpop.max_age_seconds {
            if !(1..=3600).contains(&m) {
                return Err(err("dpop.max_age_seconds", "must be 1 to 3600"));
            }
            proof.max_age = m;
        }
        if let Some(l) = raw.dpop.future_leeway_seconds {
            if l > 300 {
                return Err(err("dpop.future_leeway_seconds", "at most 300"));
            }
            proof.future_leeway = l;
        }
        let nonce = match raw.dpop.nonce {
            None => None,
            Some(n) => match n.mode.as_str() {
                "off" => None,
                "required" => {
                    let mut secrets: Vec<String> = n.secrets.clone();
                    for (i, name) in n.secrets_from_env.iter().enumerate() {
                        secrets.push(from_env(env, name, &format!("dpop.nonce.secrets_from_env[{i}]"))?);
                    }
                    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
                    Some(NonceSecrets::from_config(
                        &secrets,
                        n.step_seconds.unwrap_or(keybound_core::nonce::DEFAULT_STEP_SECONDS),
                        "dpop.nonce.secrets",
                    )?)
                }
                other => {
                    return Err(err(
                        "dpop.nonce.mode",
                        format!("{other:?}: expected \"off\" or \"required\""),
                    ));
                }
            },
        };
        let external_base_url = match &raw.dpop.external_base_url {
            Some(base) => Some(parse_origin(base, "dpop.external_base_url")?),
            None => None,
        };
        let mut origins = Vec::new();
        for (i, o) in raw.dpop.origins.iter().enumerate() {
            origins.push(parse_origin(o, &format!("dpop.origins[{i}]"))?);
        }
        match (
            raw.dpop.external_base_url.is_some(),
            !origins.is_empty(),
            raw.dpop.dangerous_any_origin,
        ) {
            (false, false, false) => {
                return Err(err(
                    "dpop.origins",
                    "required: the origins clients call this gateway at (e.g. [\"https://api.example.com\"]), \
                     or dpop.external_base_url; a proof is checked against them, never only against the Host \
                     the client sent (dpop.dangerous_any_origin: true accepts any Host)",
                ));
            }
            (true, true, _) => {
                return Err(err(
                    "dpop.origins",
                    "give either origins or external_base_url, not both",
                ));
            }
            (_, _, true) if raw.dpop.external_base_url.is_some() || !origins.is_empty() => {
                return Err(err(
                    "dpop.dangerous_any_origin",
                    "contradicts dpop.origins / dpop.external_base_url",
                ));
            }
            _ => {}
        }
        let cert_source = match raw.mtls {
            None => CertSource::None,
            Some(m) => match m.source.as_str() {
                "connection" => {
                    if m.element_from_end.is_some() || m.expected_by.is_some() || !m.front_proxy_uri_sans.is_empty() {
                        return Err(err(
                            "mtls",
                            "element_from_end, expected_by and front_proxy_uri_sans are only for source \"xfcc\"",
                        ));
                    }
                    CertSource::Connection
                }
                "xfcc" => {
                    if m.front_proxy_uri_sans.iter().any(|u| u.is_empty() || !u.contains(':')) {
                        return Err(err(
                            "mtls.front_proxy_uri_sans",
                            "each must be a URI (e.g. \"spiffe://cluster.local/ns/istio-system/sa/ingress\")",
                        ));
                    }
                    CertSource::Xfcc {
                        policy: XfccPolicy {
                            element_from_end: m.element_from_end.unwrap_or(0),
                            expected_by: m.expected_by,
                        },
                        front_proxy_uri_sans: m.front_proxy_uri_sans,
                    }
                }
                other => {
                    return Err(err(
                        "mtls.source",
                        format!("{other:?}: expected \"connection\" or \"xfcc\""),
                    ));
                }
            },
        };
        for (claim, header) in &raw.forward.headers {
            if !FORWARDABLE.contains(&claim.as_str()) {
                return Err(err(
                    format!("forward.headers.{claim}"),
                    format!("unknown claim; one of {FORWARDABLE:?}"),
                ));
            }
            check_header_name(header, &format!("forward.headers.{claim}"))?;
        }
        if raw.replay_cache.buckets == 0 || raw.replay_cache.buckets > 65_536 {
            return Err(err("replay_cache.buckets", "must be 1 to 65536"));
        }
        if raw.replay_cache.entries_per_bucket == 0 || raw.replay_cache.entries_per_bucket > 4096 {
            return Err(err("replay_cache.entries_per_bucket", "must be 1 to 4096"));
        }
        if raw.token_cache.max_entries > 1_000_000 {
            return Err(err("token_cache.max_entries", "at most 1000000"));
        }
        if !(1..=86_400).contains(&raw.token_cache.max_age_seconds) {
            return Err(err("token_cache.max_age_seconds", "must be 1 to 86400"));
        }
        let introspection = match raw.introspection {
            None => None,
            Some(i) => {
                let target = HttpTarget::parse(
                    &i.endpoint,
                    &i.cluster,
                    i.timeout_ms,
                    [
                        "introspection.endpoint",
                        "introspection.cluster",
                        "introspection.timeout_ms",
                    ],
                )?;
                if i.client_id.is_empty() {
                    return Err(err("introspection.client_id", "required"));
                }
                let secret = match (i.client_secret, i.client_secret_from_env) {
                    (Some(_), Some(_)) => {
                        return Err(err(
                            "introspection.client_secret_from_env",
                            "give either client_secret or client_secret_from_env, not both",
                        ));
                    }
                    (Some(s), None) => Some(s),
                    (None, Some(name)) => Some(from_env(env, &name, "introspection.client_secret_from_env")?),
                    (None, None) => None,
                };
                let client_auth = match (i.auth_method.as_deref(), secret) {
                    (None | Some("client_secret_basic"), Some(secret)) if !secret.is_empty() => {
                        let credentials = format!("{}:{}", form_encode(&i.client_id), form_encode(&secret));
                        IntrospectionAuth::SecretBasic(format!("Basic {}", base64_std(credentials.as_bytes())))
                    }
                    (None | Some("client_secret_basic"), _) => {
                        return Err(err(
                            "introspection.client_secret",
                            "required with client_secret_basic (or set auth_method \"tls_client_auth\")",
                        ));
                    }
                    (Some("tls_client_auth"), None) => IntrospectionAuth::Tls(i.client_id.clone()),
                    (Some("tls_client_auth"), Some(_)) => {
                        return Err(err(
                            "introspection.client_secret",
                            "not used with tls_client_auth (the cluster's client certificate authenticates)",
                        ));
                    }
                    (Some(other), _) => {
                        return Err(err(
                            "introspection.auth_method",
                            format!("{other:?}: expected \"client_secret_basic\" or \"tls_client_auth\""),
                        ));
                    }
                };
                if !i.issuer.starts_with("https://") && !i.issuer.starts_with("http://") {
                    return Err(err("introspection.issuer", "must be an http(s) URL"));
                }
                if i.audiences.is_empty() || i.audiences.iter().any(String::is_empty) {
                    return Err(err(
                        "introspection.audiences",
                        "at least one non-empty audience is required",
                    ));
                }
                let max_cache_seconds = i.max_cache_seconds.unwrap_or(300);
                if !(1..=3600).contains(&max_cache_seconds) {
                    return Err(err("introspection.max_cache_seconds", "must be 1 to 3600"));
                }
                let mut policy = TokenPolicy::new(i.issuer, i.audiences);
                policy.dangerous_allow_untyped = i.dangerous_accept_untyped;
                Some(Introspection {
                    target,
                    client_auth,
                    policy,
                    max_cache_seconds,
                })
            }
        };
        let verifier = match raw.verifier.as_deref() {
            None | Some("auto") => VerifierChoice::Auto,
            Some("envoy") => VerifierChoice::Envoy,
            Some("rust") => VerifierChoice::Rust,
            Some(other) => {
                return Err(err(
                    "verifier",
                    format!("{other:?}: expected \"auto\", \"envoy\" or \"rust\""),
                ));
            }
        };
        let global_mode = crate::policy::Mode::parse_global(raw.mode.as_deref())?;
        let known = Known {
            issuers: issuers.iter().map(|i| i.policy.issuer.as_str()).collect(),
            introspection: introspection.as_ref().map(|i| i.policy.issuer.as_str()),
            mode: global_mode,
            certificates: cert_source != CertSource::None,
        };
        let mut requirements = Vec::new();
        for (name, r) in raw.requirements {
            crate::policy::check_name(&name, &format!("requirements.{name}"))?;
            let field = |f: &str| format!("requirements.{name}.{f}");
            requirements.push(r.into_requirement(name.clone(), &known, &field)?);
        }
        let named = requirements.len();
        let index = |name: &str, reqs: &[Requirement]| reqs.iter().take(named).position(|r| r.name == name);
        let mut rules = Vec::new();
        for (i, r) in raw.rules.into_iter().enumerate() {
            let f = |name: &str| format!("rules[{i}].{name}");
            let fold = raw.paths.case_insensitive;
            let path = match (r.prefix, r.exact) {
                (Some(p), None) => PathMatch::Prefix(rule_path(p, &f("prefix"), fold)?),
                (None, Some(p)) => PathMatch::Exact(rule_path(p, &f("exact"), fold)?),
                _ => return Err(err(f("prefix"), "give exactly one of prefix or exact")),
            };
            if let Some(m) = r
                .methods
                .iter()
                .find(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()))
            {
                return Err(err(f("methods"), format!("{m:?} is not an upper-case HTTP method")));
            }
            let mut hosts = Vec::new();
            for (n, h) in r.hosts.iter().enumerate() {
                hosts.push(HostPattern::parse(h, &f(&format!("hosts[{n}]")))?);
            }
            let own = RawRequirement::from_rule_fields(
                r.issuers,
                r.binding,
                r.scopes,
                r.allow_bearer,
                r.allow_missing,
                r.mode,
            );
            let requirement = match (r.requirement, r.auth.as_deref()) {
                (Some(name), None) if own.is_empty() => index(&name, &requirements)
                    .ok_or_else(|| err(f("requirement"), format!("{name:?} is not one of requirements")))?,
                (Some(_), _) => {
                    return Err(err(
                        f("requirement"),
                        "a rule names a requirement or has its own auth, scopes, binding, issuers, \
                         allow_bearer, allow_missing and mode, not both",
                    ));
                }
                (None, auth) => {
                    requirements.push(RawRequirement::of_rule(auth, own, format!("rule_{i}"), &known, &f)?);
                    requirements.len() - 1
                }
            };
            rules.push(Rule {
                hosts,
                path,
                methods: r.methods,
                requirement,
            });
        }
        let default_requirement = match raw.default_requirement {
            Some(name) => index(&name, &requirements)
                .ok_or_else(|| err("default_requirement", format!("{name:?} is not one of requirements")))?,
            None => {
                requirements.push(Requirement::bound_token("default", global_mode));
                requirements.len() - 1
            }
        };
        let routes = Routes::parse(raw.routes, &|name| index(name, &requirements))?;
        let cors = Cors::parse(raw.cors)?;
        let algs: Vec<&str> = proof.algs.to_vec().iter().map(|a| a.as_str()).collect();
        let facts = GatewayFacts {
            algs,
            mtls: cert_source != CertSource::None,
            bearer_anywhere: requirements.iter().any(|r| r.allow_bearer),
        };
        let mut resources = Vec::new();
        for (i, r) in raw.resource_metadata.into_iter().enumerate() {
            let m = ResourceMetadata::parse(r, i, &facts)?;
            if resources.iter().any(|o: &ResourceMetadata| o.url == m.url) {
                return Err(err(format!("resource_metadata[{i}].resource"), "given twice"));
            }
            resources.push(m);
        }
        let mut forward_claims = Vec::new();
        for (header, pointer) in raw.forward.claims {
            let field = format!("forward.claims.{header}");
            check_header_name(&header, &field)?;
            if !pointer.starts_with('/') {
                return Err(err(field, "a JSON pointer (RFC 6901), e.g. \"/address/country\""));
            }
            forward_claims.push((header, pointer));
        }
        if let Some(h) = &raw.forward.payload_header {
            check_header_name(h, "forward.payload_header")?;
        }
        let mut upstream_headers: Vec<&str> = raw.forward.headers.values().map(String::as_str).collect();
        upstream_headers.extend(forward_claims.iter().map(|(h, _)| h.as_str()));
        upstream_headers.extend(raw.forward.payload_header.as_deref());
        upstream_headers.extend(REPORT_HEADERS);
        upstream_headers.sort_unstable();
        if let Some(w) = upstream_headers.windows(2).find(|w| w.first() == w.get(1)) {
            return Err(err(
                "forward",
                format!(
                    "{:?} is set twice (forward.headers, forward.claims, forward.payload_header and the report headers each need their own)",
                    w.first().copied().unwrap_or_default()
                ),
            ));
        }
        let authorization = match raw.forward.authorization.as_deref() {
            None | Some("keep") => AuthorizationForward::Keep,
            Some("strip") => AuthorizationForward::Strip,
            Some("bearer") => AuthorizationForward::Bearer,
            Some(other) => {
                return Err(err(
                    "forward.authorization",
                    format!("{other:?}: expected \"keep\", \"strip\" or \"bearer\""),
                ));
            }
        };
        Ok(Config {
            requirements,
            default_requirement,
            routes,
            cors,
            resources,
            filter_state: raw.filter_state,
            forward_claims,
            payload_header: raw.forward.payload_header,
            authorization,
            introspection,
            verifier,
            issuers,
            proof,
            nonce,
            external_base_url,
            origins,
            trust_forwarded_headers: raw.dpop.trust_forwarded_headers,
            cert_source,
            rules,
            forward_headers: raw.forward.headers,
            strip_dpop: raw.forward.strip_dpop,
            replay_buckets: raw.replay_cache.buckets,
            replay_entries_per_bucket: raw.replay_cache.entries_per_bucket,
            token_cache_entries: raw.token_cache.max_entries,
            token_cache_max_age: raw.token_cache.max_age_seconds,
            case_insensitive_paths: raw.paths.case_insensitive,
        })
    }

    /// Whether any issuer's keys come from a `jwks_uri`.
    pub fn has_remote_keys(&self) -> bool {
        self.issuers.iter().any(|i| matches!(i.keys, Keys::Remote(_)))
    }

    /// The requirement (an index into [`Config::requirements`]) of the first rule that matches
    /// the request's method, authority (see [`crate::policy::normal_authority`]) and canonical
    /// path (its [`CanonicalPath::rule_view`]); [`Config::default_requirement`] if none does.
    pub fn rule_for(&self, method: &str, authority: &str, path: &CanonicalPath) -> usize {
        let view = path.rule_view(self.case_insensitive_paths);
        let mut host: Option<String> = None;
        self.rules
            .iter()
            .find(|r| {
                r.path.matches(&view)
                    && (r.methods.is_empty() || r.methods.iter().any(|m| m == method))
                    && (r.hosts.is_empty() || {
                        let h = host.get_or_insert_with(|| crate::policy::normal_authority(authority));
                        r.hosts.iter().any(|p| p.matches(h))
                    })
            })
            .map_or(self.default_requirement, |r| r.requirement)
    }

    /// The index of the requirement named `name` in `requirements` (not a rule's own).
    pub fn requirement_named(&self, name: &str) -> Option<usize> {
        self.requirements
            .iter()
            .position(|r| r.name == name && !r.name.starts_with("rule_") && r.name != "none")
    }
}

/// A rule's path: it must be the canonical path it stands for, or it could never match, and
/// have no `;` parameters (rules see paths without them); lower-cased when paths are matched
/// without regard to case.
fn rule_path(p: String, field: &str, fold: bool) -> Result<String, ConfigError> {
    if p.contains(';') {
        return Err(err(
            field,
            format!("{p:?}: rules match paths without ';' parameters; leave them out"),
        ));
    }
    match CanonicalPath::parse(&p) {
        Ok(c) if c.as_str() == p && fold => Ok(p.to_ascii_lowercase()),
        Ok(c) if c.as_str() == p => Ok(p),
        Ok(c) => Err(err(
            field,
            format!(
                "{p:?} is not a canonical path (requests are matched as {:?})",
                c.as_str()
            ),
        )),
        Err(e) => Err(err(field, format!("{p:?}: {e}"))),
    }
}

/// The value of environment variable `name` for the field `field`.
fn from_env(env: &dyn Fn(&str) -> Option<String>, name: &str, field: &str) -> Result<String, ConfigError> {
    match env(name) {
        Some(v) if !v.is_empty() => Ok(v),
        Some(_) => Err(err(field, format!("environment variable {name} is empty"))),
        None => Err(err(
            field,
            format!(
                "environment variable {name} is not set (in Envoy: vm_config.environment_variables; in Istio: the WasmPlugin's vmConfig.env)"
            ),
        )),
    }
}

/// An upstream header name the filter sets: lower case `[a-z0-9-]`.
fn check_header_name(header: &str, field: &str) -> Result<(), ConfigError> {
    if header.is_empty()
        || !header
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(err(field, "header names must be lower-case [a-z0-9-]"));
    }
    if matches!(
        header,
        "authorization" | "dpop" | "host" | "cookie" | "content-length" | "transfer-encoding" | "connection"
    ) {
        return Err(err(field, format!("{header:?} is not a header the filter may set")));
    }
    Ok(())
}

/// An origin (`scheme://host[:port]`, nothing else), the error naming `field`.
fn parse_origin(s: &str, field: &str) -> Result<Origin, ConfigError> {
    Origin::parse(s).map_err(|_| {
        err(
            field,
            "must be an absolute http(s) URL with scheme and authority only, no path or query",
        )
    })
}

/// A short, stable name from `parts`: hex of the first 12 bytes of SHA-256 over them.
fn shared_id(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"keybound-shared-v1");
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// Parses a JWKS from configuration or from a `jwks_uri` response: at least one usable key.
///
/// # Errors
/// [`Error::Config`] naming `field`.
pub fn parse_jwks(json: &str, field: &str) -> Result<Jwks, ConfigError> {
    let jwks =
        Jwks::from_json(json.as_bytes(), keybound_core::Part::AccessToken).map_err(|e| err(field, e.to_string()))?;
    if jwks.keys().is_empty() {
        return Err(err(field, "no usable signature key"));
    }
    Ok(jwks)
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Standard base64 with padding (RFC 4648 §4), for HTTP Basic credentials.
fn base64_std(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sym = |i: u32| char::from(A.get((i & 63) as usize).copied().unwrap_or(b'='));
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = b(0) << 16 | b(1) << 8 | b(2);
        out.push(sym(n >> 18));
        out.push(sym(n >> 12));
        out.push(if chunk.len() > 1 { sym(n >> 6) } else { '=' });
        out.push(if chunk.len() > 2 { sym(n) } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{IssuerRef, Mode};
    use keybound_core::request::AcceptedBinding;
    use serde_json::{Value, json};

    fn base() -> Value {
        json!({"issuers": [{"issuer": "https://as.example", "audiences": ["https://api"],
            "jwks": {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}}],
            "dpop": {"origins": ["https://api.example"]}})
    }

    fn with(path: &[&str], value: Value) -> Vec<u8> {
        let mut v = base();
        let mut cur = &mut v;
        for (i, p) in path.iter().enumerate() {
            if i + 1 == path.len() {
                cur[*p] = value.clone();
            } else {
                cur = &mut cur[*p];
            }
        }
        v.to_string().into_bytes()
    }

    /// The base configuration with issuer 0 on a jwks_uri, changed by `patch` (null removes).
    fn remote(patch: Value) -> Vec<u8> {
        let mut all = json!({"jwks": null, "jwks_uri": "https://as.example/keys", "jwks_cluster": "as"});
        for (k, val) in patch.as_object().unwrap() {
            all[k] = val.clone();
        }
        issuer0(all)
    }

    /// The base configuration with issuer 0 changed by `patch` (null removes).
    fn issuer0(patch: Value) -> Vec<u8> {
        let mut v = base();
        let issuer = &mut v["issuers"][0];
        for (k, val) in patch.as_object().unwrap() {
            if val.is_null() {
                issuer.as_object_mut().unwrap().remove(k);
            } else {
                issuer[k] = val.clone();
            }
        }
        v.to_string().into_bytes()
    }

    /// The base configuration with an introspection section changed by `patch`.
    fn introspection(patch: Value) -> Vec<u8> {
        let mut i = json!({"endpoint": "https://as.example/introspect", "cluster": "as", "client_id": "gw",
            "client_secret": "s", "issuer": "https://as.example", "audiences": ["https://api"]});
        for (k, val) in patch.as_object().unwrap() {
            if val.is_null() {
                i.as_object_mut().unwrap().remove(k);
            } else {
                i[k] = val.clone();
            }
        }
        let mut v = base();
        v["introspection"] = i;
        v.to_string().into_bytes()
    }

    #[test]
    fn remote_keys_introspection_and_verifier_parse() {
        let c = Config::parse(&remote(json!({"jwks_uri": "http://idp:8080/.well-known/jwks?x=1"}))).unwrap();
        let Keys::Remote(r) = &c.issuers[0].keys else {
            panic!("not remote")
        };
        assert_eq!((r.refresh_seconds, r.min_refetch_seconds), (300, 30));
        assert_eq!(
            (r.target.authority.as_str(), r.target.path.as_str(), r.target.timeout_ms),
            ("idp:8080", "/.well-known/jwks?x=1", 5000)
        );
        assert!(c.has_remote_keys());
        assert_eq!(c.verifier, VerifierChoice::Auto);
        let c = Config::parse(&remote(json!({"jwks_uri": "https://idp"}))).unwrap();
        let Keys::Remote(r) = &c.issuers[0].keys else {
            panic!("not remote")
        };
        assert_eq!(r.target.path, "/");
        let c = Config::parse(&introspection(json!({}))).unwrap();
        let i = c.introspection.unwrap();
        assert_eq!(i.client_auth, IntrospectionAuth::SecretBasic("Basic Z3c6cw==".into()));
        let c = Config::parse(&introspection(
            json!({"auth_method": "tls_client_auth", "client_secret": null, "client_id": "gw"}),
        ))
        .unwrap();
        assert_eq!(
            c.introspection.unwrap().client_auth,
            IntrospectionAuth::Tls("gw".into())
        );
        assert_eq!(i.max_cache_seconds, 300);
        assert!(
            !Config::parse(&base().to_string().into_bytes())
                .unwrap()
                .has_remote_keys()
        );
        for (name, choice) in [
            ("auto", VerifierChoice::Auto),
            ("envoy", VerifierChoice::Envoy),
            ("rust", VerifierChoice::Rust),
        ] {
            let c = Config::parse(&with(&["verifier"], json!(name))).unwrap();
            assert_eq!(c.verifier, choice);
        }
    }

    #[test]
    fn base64_and_form_encoding() {
        assert_eq!(base64_std(b""), "");
        assert_eq!(base64_std(b"f"), "Zg==");
        assert_eq!(base64_std(b"fo"), "Zm8=");
        assert_eq!(base64_std(b"foo"), "Zm9v");
        assert_eq!(base64_std(&[0xfb, 0xff]), "+/8=");
        assert_eq!(form_encode("a b+c:d~é"), "a%20b%2Bc%3Ad~%C3%A9");
    }

    /// What a rule requires, as the tests compare it.
    #[derive(Debug, PartialEq, Eq)]
    enum Auth {
        None,
        Token { scopes: Vec<String>, allow_bearer: bool },
    }

    fn rule(c: &Config, method: &str, path: &str) -> Auth {
        rule_at(c, method, "api.example", path)
    }

    fn rule_at(c: &Config, method: &str, authority: &str, path: &str) -> Auth {
        let r = &c.requirements[c.rule_for(method, authority, &CanonicalPath::parse(path).unwrap())];
        if r.disabled {
            Auth::None
        } else {
            Auth::Token {
                scopes: r.scopes.clone(),
                allow_bearer: r.allow_bearer,
            }
        }
    }

    fn parse(v: &Value) -> Result<Config, Error> {
        Config::parse_with_env(v.to_string().as_bytes(), &|name| {
            (name == "KB_SECRET").then(|| "ZW52LXNlY3JldC1lbnYtc2VjcmV0LWVudi1zZWNyZXQ".to_owned())
        })
    }

    #[test]
    fn named_requirements_rules_on_hosts_and_routes() {
        let mut v = base();
        v["requirements"] = json!({
            "payments": {"scopes": ["pay"], "binding": "dpop", "mode": "report"},
            "partners": {"binding": "mtls", "issuers": ["https://as.example"]},
            "open": {"disabled": true},
        });
        v["default_requirement"] = json!("payments");
        v["routes"] = json!({"metadata": true, "names": {"partner-route": "partners"}});
        v["rules"] = json!([
            {"hosts": ["*.partners.example"], "prefix": "/", "requirement": "partners"},
            {"hosts": ["status.example:8443"], "prefix": "/", "requirement": "open"},
            {"hosts": ["API.example"], "prefix": "/health", "auth": "none"},
            {"prefix": "/v1", "scopes": ["read"], "allow_missing": true},
        ]);
        let c = parse(&v).unwrap();
        let name = |authority: &str, path: &str| {
            c.requirements[c.rule_for("GET", authority, &CanonicalPath::parse(path).unwrap())]
                .name
                .clone()
        };
        assert_eq!(name("a.partners.example", "/x"), "partners");
        assert_eq!(
            name("A.B.Partners.Example.:443", "/x"),
            "partners",
            "case and a trailing dot"
        );
        assert_eq!(name("partners.example", "/x"), "payments", "*. needs a subdomain");
        assert_eq!(name("status.example:8443", "/x"), "open");
        assert_eq!(name("status.example", "/x"), "payments", "host:port needs the port");
        assert_eq!(
            name("api.example:8443", "/health"),
            "none",
            "a host without port: any port"
        );
        assert_eq!(name("other.example", "/health"), "payments");
        assert_eq!(name("other.example", "/v1/a"), "rule_3");
        assert_eq!(name("other.example", "/v2"), "payments", "the default requirement");
        let payments = &c.requirements[c.requirement_named("payments").unwrap()];
        assert_eq!(payments.mode, Mode::Report);
        assert_eq!(payments.binding, AcceptedBinding::Dpop);
        let partners = &c.requirements[c.routes.names["partner-route"]];
        assert_eq!(partners.name, "partners");
        assert_eq!(partners.issuers, Some(vec![IssuerRef::Jwt(0)]));
        assert!(partners.trusts(IssuerRef::Jwt(0)) && !partners.trusts(IssuerRef::Introspection));
        assert!(c.routes.metadata && c.routes.used());
        let own = c.requirements.iter().find(|r| r.name == "rule_3").unwrap();
        assert!(own.allow_missing && own.scopes == ["read"]);
        assert_eq!(
            c.requirement_named("rule_3"),
            None,
            "a rule's own requirement has no name"
        );
        assert_eq!(c.requirement_named("none"), None);
        // The global mode applies to every requirement that does not set its own.
        v["mode"] = json!("report");
        let c = parse(&v).unwrap();
        assert!(c.requirements.iter().all(|r| r.mode == Mode::Report));
    }

    #[test]
    fn cors_metadata_claims_and_secrets_from_the_environment() {
        let mut v = base();
        v["cors"] = json!({"allowed_origins": ["HTTPS://App.example:443"]});
        v["resource_metadata"] = json!([
            {"resource": "https://api.example", "authorization_servers": ["https://as.example"]},
            {"resource": "https://api.example/v2/", "authorization_servers": ["https://as.example"],
             "scopes_supported": ["read"], "resource_name": "API v2"},
        ]);
        v["forward"] = json!({"claims": {"x-country": "/address/country"}, "payload_header": "x-jwt-payload",
            "authorization": "bearer"});
        v["dpop"]["nonce"] = json!({"mode": "required", "secrets_from_env": ["KB_SECRET"]});
        v["filter_state"] = json!(true);
        let c = parse(&v).unwrap();
        assert!(c.cors.bypass_preflight);
        let h = c.cors.reply_headers("https://app.example").unwrap();
        assert!(h.contains(&("access-control-allow-origin".into(), "https://app.example".into())));
        assert!(h.contains(&(
            "access-control-expose-headers".into(),
            "WWW-Authenticate, DPoP-Nonce".into()
        )));
        assert_eq!(c.cors.reply_headers("https://evil.example"), None);
        assert_eq!(c.cors.reply_headers("null"), None);
        assert_eq!(
            c.resources[0].url,
            "https://api.example/.well-known/oauth-protected-resource"
        );
        assert_eq!(
            c.resources[1].well_known_path,
            "/.well-known/oauth-protected-resource/v2"
        );
        let doc: Value = serde_json::from_str(&c.resources[1].document).unwrap();
        assert_eq!(doc["resource"], "https://api.example/v2/");
        assert_eq!(doc["scopes_supported"], json!(["read"]));
        assert_eq!(
            doc["dpop_signing_alg_values_supported"],
            json!(["ES256", "PS256", "EdDSA"])
        );
        assert_eq!(doc["dpop_bound_access_tokens_required"], json!(true));
        assert_eq!(doc["tls_client_certificate_bound_access_tokens"], json!(false));
        assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
        assert_eq!(doc["resource_name"], "API v2");
        assert_eq!(
            c.forward_claims,
            vec![("x-country".to_owned(), "/address/country".to_owned())]
        );
        assert_eq!(c.payload_header.as_deref(), Some("x-jwt-payload"));
        assert_eq!(c.authorization, AuthorizationForward::Bearer);
        assert!(c.nonce.is_some() && c.filter_state);
        v["introspection"] = json!({"endpoint": "https://as.example/introspect", "cluster": "as",
            "client_id": "gw", "client_secret_from_env": "KB_SECRET", "issuer": "https://as.example",
            "audiences": ["https://api"]});
        let c = parse(&v).unwrap();
        assert!(matches!(
            c.introspection.unwrap().client_auth,
            IntrospectionAuth::SecretBasic(_)
        ));
    }

    /// Issue 12, item 1: a prefix matched raw bytes, so `/healthz` also opened `/healthzX`.
    /// Prefixes match whole segments; `exact` matches one path.
    #[test]
    fn prefixes_match_whole_segments_and_exact_one_path() {
        let mut v = base();
        v["rules"] = json!([
            {"prefix": "/healthz", "auth": "none"},
            {"exact": "/status", "auth": "none"},
            {"prefix": "/public/", "auth": "none"},
        ]);
        let c = Config::parse(&v.to_string().into_bytes()).unwrap();
        let token = Auth::Token {
            scopes: vec![],
            allow_bearer: false,
        };
        for open in [
            "/healthz",
            "/healthz/",
            "/healthz/live",
            "/healthz;x",
            "/status",
            "/status?x",
            "/public/",
            "/public/a",
        ] {
            assert_eq!(rule(&c, "GET", open), Auth::None, "{open}");
        }
        for closed in [
            "/healthzX",
            "/healthz.json",
            "/status/",
            "/status/x",
            "/statusX",
            "/public",
        ] {
            assert_eq!(rule(&c, "GET", closed), token, "{closed}");
        }
    }

    /// A protected prefix before a public catch-all: `;` parameters (which Tomcat and Spring drop)
    /// and, for upstreams that ignore case, letter case must not move a path from the first to
    /// the second.
    #[test]
    fn parameters_and_case_do_not_escape_a_protected_prefix() {
        let mut v = base();
        v["rules"] = json!([
            {"prefix": "/admin", "scopes": ["admin"]},
            {"prefix": "/", "auth": "none"},
        ]);
        let admin = Auth::Token {
            scopes: vec!["admin".into()],
            allow_bearer: false,
        };
        let c = Config::parse(&v.to_string().into_bytes()).unwrap();
        for path in ["/admin", "/admin;x", "/admin;jsessionid=1/users", "/admin/;x"] {
            assert_eq!(rule(&c, "GET", path), admin, "{path}");
        }
        assert_eq!(
            rule(&c, "GET", "/ADMIN"),
            Auth::None,
            "case-sensitive by default, like Envoy"
        );
        v["paths"] = json!({"case_insensitive": true});
        v["rules"][0]["prefix"] = json!("/Admin");
        let c = Config::parse(&v.to_string().into_bytes()).unwrap();
        for path in ["/ADMIN", "/admin", "/aDmIn;x/users"] {
            assert_eq!(rule(&c, "GET", path), admin, "{path}");
        }
    }

    /// Issue 12, item 4: without the origins it serves, a gateway checks a proof's `htu` only
    /// against the `Host` the client chose. A configuration must name them (or opt out loudly).
    #[test]
    fn origins_are_required_normalised_and_exclusive() {
        let mut v = base();
        v["dpop"] = json!({});
        assert!(field_of(&v.to_string().into_bytes()).starts_with("dpop.origins: required"));
        v["dpop"] = json!({"dangerous_any_origin": true});
        assert!(Config::parse(&v.to_string().into_bytes()).unwrap().origins.is_empty());
        v["dpop"] = json!({"external_base_url": "https://api.example.com"});
        Config::parse(&v.to_string().into_bytes()).unwrap();
        v["dpop"] = json!({"origins": ["HTTPS://API.example.com:443", "http://localhost:8080/"]});
        let c = Config::parse(&v.to_string().into_bytes()).unwrap();
        let urls: Vec<&str> = c.origins.iter().map(|o| o.as_str()).collect();
        assert_eq!(urls, ["https://api.example.com", "http://localhost:8080"]);
        for (dpop, field) in [
            (json!({"origins": ["api.example.com"]}), "dpop.origins[0]"),
            (
                json!({"origins": ["https://a.example", "https://b.example/v1"]}),
                "dpop.origins[1]",
            ),
            (json!({"origins": ["https://a.example?x"]}), "dpop.origins[0]"),
            (
                json!({"origins": ["https://a.example"], "external_base_url": "https://a.example"}),
                "dpop.origins: give either",
            ),
            (
                json!({"origins": ["https://a.example"], "dangerous_any_origin": true}),
                "dpop.dangerous_any_origin",
            ),
        ] {
            v["dpop"] = dpop;
            let got = field_of(&v.to_string().into_bytes());
            assert!(got.starts_with(field), "expected {field:?} in {got:?}");
        }
    }

    fn field_of(json: &[u8]) -> String {
        match Config::parse_with_env(json, &|name| (name == "KB_SECRET").then(|| "x".repeat(43))) {
            Err(Error::Config { field, reason }) => format!("{field}: {reason}"),
            Err(other) => format!("{other}"),
            Ok(_) => "accepted".into(),
        }
    }

    #[test]
    fn defaults_are_safe() {
        let c = Config::parse(&base().to_string().into_bytes()).unwrap();
        assert_eq!((c.proof.max_age, c.proof.future_leeway), (300, 10));
        assert!(c.nonce.is_none());
        assert_eq!(c.cert_source, CertSource::None);
        assert!(c.strip_dpop);
        assert_eq!(c.forward_headers.get("sub").map(String::as_str), Some("x-keybound-sub"));
        // No rule: a bound token is required everywhere, bearer refused.
        assert_eq!(
            rule(&c, "GET", "/anything"),
            Auth::Token {
                scopes: vec![],
                allow_bearer: false
            }
        );
    }

    #[test]
    fn rules_match_prefix_and_method_first_wins() {
        let mut v = base();
        v["rules"] = json!([
            {"prefix": "/health", "auth": "none"},
            {"prefix": "/api", "methods": ["POST"], "scopes": ["write"]},
            {"prefix": "/api", "allow_bearer": true},
        ]);
        let c = Config::parse(&v.to_string().into_bytes()).unwrap();
        assert_eq!(rule(&c, "GET", "/health?x=1"), Auth::None);
        assert_eq!(
            rule(&c, "POST", "/api/x"),
            Auth::Token {
                scopes: vec!["write".into()],
                allow_bearer: false
            }
        );
        assert_eq!(
            rule(&c, "GET", "/api/x"),
            Auth::Token {
                scopes: vec![],
                allow_bearer: true
            }
        );
    }

    #[test]
    fn every_invalid_field_is_named() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"not json".to_vec(), "plugin configuration"),
            (json!({"issuers": []}).to_string().into_bytes(), "issuers"),
            (with(&["surprise"], json!(1)), "unknown field `surprise`"),
            (
                with(
                    &["issuers"],
                    json!([{"issuer": "as", "audiences": ["a"], "jwks": {"keys": []}}]),
                ),
                "issuers[0].issuer",
            ),
            (
                with(
                    &["issuers"],
                    json!([{"issuer": "https://as", "audiences": [], "jwks": {"keys": []}}]),
                ),
                "issuers[0].audiences",
            ),
            (
                with(&["issuers"], json!([{"issuer": "https://as", "audiences": ["a"]}])),
                "issuers[0].jwks",
            ),
            (
                with(
                    &["issuers"],
                    json!([{"issuer": "https://as", "audiences": ["a"], "jwks": {"keys": []}}]),
                ),
                "issuers[0].jwks: no usable",
            ),
            (
                with(
                    &["issuers"],
                    json!([{"issuer": "https://as", "audiences": ["a"], "jwks": {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "d": "AAAA"}]}}]),
                ),
                "issuers[0].jwks",
            ),
            (with(&["dpop"], json!({"algs": ["HS256"]})), "dpop.algs"),
            (with(&["dpop"], json!({"max_age_seconds": 0})), "dpop.max_age_seconds"),
            (
                with(&["dpop"], json!({"future_leeway_seconds": 301})),
                "dpop.future_leeway_seconds",
            ),
            (
                with(&["dpop"], json!({"nonce": {"mode": "sometimes"}})),
                "dpop.nonce.mode",
            ),
            (
                with(&["dpop"], json!({"nonce": {"mode": "required", "secrets": []}})),
                "dpop.nonce.secrets",
            ),
            (
                with(&["dpop"], json!({"external_base_url": "https://api.example.com/v1"})),
                "dpop.external_base_url",
            ),
            (
                with(&["dpop"], json!({"external_base_url": "api.example.com"})),
                "dpop.external_base_url",
            ),
            (with(&["mtls"], json!({"source": "header"})), "mtls.source"),
            (
                with(&["mtls"], json!({"source": "connection", "expected_by": "x"})),
                "mtls",
            ),
            (with(&["rules"], json!([{"prefix": "api"}])), "rules[0].prefix"),
            (with(&["rules"], json!([{"prefix": "/a/../b"}])), "rules[0].prefix"),
            (with(&["rules"], json!([{"prefix": "/a//b"}])), "rules[0].prefix"),
            (with(&["rules"], json!([{"prefix": "/%61"}])), "rules[0].prefix"),
            (with(&["rules"], json!([{"exact": "/a%2fb"}])), "rules[0].exact"),
            (with(&["rules"], json!([{"prefix": "/a;b"}])), "rules[0].prefix"),
            (with(&["paths"], json!({"case": true})), "unknown field `case`"),
            (
                with(&["rules"], json!([{"prefix": "/a", "exact": "/a"}])),
                "rules[0].prefix: give exactly one",
            ),
            (
                with(&["rules"], json!([{"auth": "none"}])),
                "rules[0].prefix: give exactly one",
            ),
            (
                with(&["token_cache"], json!({"max_age_seconds": 0})),
                "token_cache.max_age_seconds",
            ),
            (
                with(
                    &["mtls"],
                    json!({"source": "connection", "front_proxy_uri_sans": ["spiffe://x"]}),
                ),
                "mtls: element_from_end",
            ),
            (
                with(&["mtls"], json!({"source": "xfcc", "front_proxy_uri_sans": [""]})),
                "mtls.front_proxy_uri_sans",
            ),
            (
                with(&["rules"], json!([{"prefix": "/", "methods": ["get"]}])),
                "rules[0].methods",
            ),
            (
                with(&["rules"], json!([{"prefix": "/", "auth": "maybe"}])),
                "rules[0].auth",
            ),
            (
                with(&["rules"], json!([{"prefix": "/", "auth": "none", "scopes": ["a"]}])),
                "rules[0].auth",
            ),
            (
                with(&["forward"], json!({"headers": {"email": "x-email"}})),
                "forward.headers.email",
            ),
            (
                with(&["forward"], json!({"headers": {"sub": "X-Sub"}})),
                "forward.headers.sub",
            ),
            (with(&["replay_cache"], json!({"buckets": 0})), "replay_cache.buckets"),
            (
                with(&["replay_cache"], json!({"entries_per_bucket": 5000})),
                "replay_cache.entries_per_bucket",
            ),
            (
                with(&["token_cache"], json!({"max_entries": 2_000_000})),
                "token_cache.max_entries",
            ),
            (
                issuer0(json!({"jwks_uri": "https://as/keys"})),
                "issuers[0].jwks: give either",
            ),
            (
                issuer0(json!({"jwks_cluster": "idp"})),
                "issuers[0].jwks_cluster: only with jwks_uri",
            ),
            (
                remote(json!({"jwks_cluster": null})),
                "issuers[0].jwks_cluster: required",
            ),
            (remote(json!({"jwks_uri": "ftp://as/keys"})), "issuers[0].jwks_uri"),
            (remote(json!({"jwks_uri": "https:///keys"})), "issuers[0].jwks_uri"),
            (remote(json!({"jwks_cluster": ""})), "issuers[0].jwks_cluster"),
            (remote(json!({"jwks_timeout_ms": 0})), "issuers[0].jwks_timeout_ms"),
            (
                remote(json!({"jwks_refresh_seconds": 0})),
                "issuers[0].jwks_refresh_seconds",
            ),
            (
                remote(json!({"jwks_refresh_seconds": 60, "jwks_min_refetch_seconds": 61})),
                "issuers[0].jwks_min_refetch_seconds",
            ),
            (
                introspection(json!({"endpoint": "as/introspect"})),
                "introspection.endpoint",
            ),
            (introspection(json!({"cluster": ""})), "introspection.cluster"),
            (introspection(json!({"timeout_ms": 70_000})), "introspection.timeout_ms"),
            (introspection(json!({"client_id": ""})), "introspection.client_id"),
            (
                introspection(json!({"client_secret": ""})),
                "introspection.client_secret",
            ),
            (
                introspection(json!({"client_secret": null})),
                "introspection.client_secret: required",
            ),
            (
                introspection(json!({"auth_method": "tls_client_auth"})),
                "introspection.client_secret: not used",
            ),
            (
                introspection(json!({"auth_method": "private_key_jwt"})),
                "introspection.auth_method",
            ),
            (introspection(json!({"issuer": "as"})), "introspection.issuer"),
            (introspection(json!({"audiences": []})), "introspection.audiences"),
            (
                introspection(json!({"max_cache_seconds": 0})),
                "introspection.max_cache_seconds",
            ),
            (introspection(json!({"surprise": 1})), "unknown field `surprise`"),
            (with(&["verifier"], json!("boringssl")), "verifier"),
            (with(&["mode"], json!("audit")), "mode"),
            (
                with(&["requirements"], json!({"Bad Name": {}})),
                "requirements.Bad Name",
            ),
            (with(&["requirements"], json!({"default": {}})), "requirements.default"),
            (
                with(&["requirements"], json!({"a": {"binding": "cookie"}})),
                "requirements.a.binding",
            ),
            (
                with(
                    &["requirements"],
                    json!({"a": {"binding": "dpop", "allow_bearer": true}}),
                ),
                "requirements.a.allow_bearer",
            ),
            (
                with(&["requirements"], json!({"a": {"issuers": ["https://elsewhere"]}})),
                "requirements.a.issuers[0]",
            ),
            (
                with(&["requirements"], json!({"a": {"issuers": []}})),
                "requirements.a.issuers",
            ),
            (
                with(&["requirements"], json!({"a": {"disabled": true, "scopes": ["x"]}})),
                "requirements.a.disabled",
            ),
            (
                with(&["requirements"], json!({"a": {"mode": "log"}})),
                "requirements.a.mode",
            ),
            (
                with(&["requirements"], json!({"a": {"scopes": ["a b"]}})),
                "requirements.a.scopes",
            ),
            (
                with(&["requirements"], json!({"a": {"surprise": 1}})),
                "unknown field `surprise`",
            ),
            (with(&["default_requirement"], json!("nope")), "default_requirement"),
            (
                with(&["rules"], json!([{"prefix": "/", "requirement": "nope"}])),
                "rules[0].requirement",
            ),
            (
                with(
                    &["rules"],
                    json!([{"prefix": "/", "requirement": "nope", "scopes": ["a"]}]),
                ),
                "rules[0].requirement: a rule names",
            ),
            (
                with(&["rules"], json!([{"prefix": "/", "hosts": ["api.example/x"]}])),
                "rules[0].hosts[0]",
            ),
            (with(&["rules"], json!([{"prefix": "/", "hosts": ["*"]}])), "accepted"),
            (
                with(
                    &["rules"],
                    json!([{"prefix": "/", "auth": "none", "allow_missing": true}]),
                ),
                "rules[0].auth",
            ),
            (with(&["routes"], json!({"names": {"r": "nope"}})), "routes.names.r"),
            (
                with(&["routes"], json!({"route_names": {}})),
                "unknown field `route_names`",
            ),
            (
                with(&["cors"], json!({"allowed_origins": ["app.example"]})),
                "cors.allowed_origins[0]",
            ),
            (
                with(&["cors"], json!({"allowed_origins": ["*"], "allow_credentials": true})),
                "cors.allow_credentials",
            ),
            (
                with(
                    &["resource_metadata"],
                    json!([{"resource": "api.example", "authorization_servers": ["https://as"]}]),
                ),
                "resource_metadata[0].resource",
            ),
            (
                with(
                    &["resource_metadata"],
                    json!([{"resource": "https://api.example/a?b", "authorization_servers": ["https://as"]}]),
                ),
                "resource_metadata[0].resource",
            ),
            (
                with(
                    &["resource_metadata"],
                    json!([{"resource": "https://api.example/a/../b", "authorization_servers": ["https://as"]}]),
                ),
                "resource_metadata[0].resource",
            ),
            (
                with(
                    &["resource_metadata"],
                    json!([{"resource": "https://api.example", "authorization_servers": []}]),
                ),
                "resource_metadata[0].authorization_servers",
            ),
            (
                with(
                    &["resource_metadata"],
                    json!([{"resource": "https://api.example", "authorization_servers": ["as"]}]),
                ),
                "resource_metadata[0].authorization_servers[0]",
            ),
            (
                with(
                    &["resource_metadata"],
                    json!([
                    {"resource": "https://api.example", "authorization_servers": ["https://as"]},
                    {"resource": "https://API.example:443/", "authorization_servers": ["https://as"]}]),
                ),
                "resource_metadata[1].resource: given twice",
            ),
            (
                with(&["forward"], json!({"claims": {"X-Country": "/c"}})),
                "forward.claims.X-Country",
            ),
            (
                with(&["forward"], json!({"claims": {"x-country": "address.country"}})),
                "forward.claims.x-country",
            ),
            (
                with(&["forward"], json!({"claims": {"x-keybound-sub": "/sub"}})),
                "forward: \"x-keybound-sub\" is set twice",
            ),
            (
                with(&["forward"], json!({"claims": {"x-keybound-decision": "/d"}})),
                "is set twice",
            ),
            (
                with(&["forward"], json!({"payload_header": "authorization"})),
                "forward.payload_header",
            ),
            (
                with(&["forward"], json!({"authorization": "rewrite"})),
                "forward.authorization",
            ),
            (
                with(
                    &["dpop"],
                    json!({"origins": ["https://api.example"], "nonce": {"mode": "required", "secrets_from_env": ["KB_UNSET"]}}),
                ),
                "dpop.nonce.secrets_from_env[0]: environment variable KB_UNSET is not set",
            ),
            (
                introspection(json!({"client_secret_from_env": "KB_SECRET"})),
                "introspection.client_secret_from_env: give either",
            ),
            (
                introspection(json!({"client_secret": null, "client_secret_from_env": "KB_UNSET"})),
                "introspection.client_secret_from_env: environment variable KB_UNSET",
            ),
        ];
        for (json, field) in cases {
            let got = field_of(&json);
            assert!(got.contains(field), "expected {field:?} in {got:?}");
        }
    }
}
