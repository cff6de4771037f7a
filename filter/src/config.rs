//! The filter's JSON plugin configuration: parsed strictly (unknown fields are errors) and
//! validated once, at `on_configure`, into a [`Config`] the request path only reads.
//!
//! Every error names the field, e.g. `issuers[0].audiences: at least one audience is required`.

use std::collections::BTreeMap;

use keybound_core::Error;
use keybound_core::cert::XfccPolicy;
use keybound_core::dpop::ProofPolicy;
use keybound_core::jwk::Jwks;
use keybound_core::jws::AlgSet;
use keybound_core::nonce::NonceSecrets;
use keybound_core::token::TokenPolicy;
use serde::Deserialize;

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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuer {
    issuer: String,
    audiences: Vec<String>,
    jwks: Option<serde_json::Value>,
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
    trust_forwarded_headers: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNonce {
    mode: String,
    #[serde(default)]
    secrets: Vec<String>,
    step_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMtls {
    source: String,
    element_from_end: Option<usize>,
    expected_by: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    prefix: String,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    allow_bearer: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForward {
    #[serde(default = "default_forward_headers")]
    headers: BTreeMap<String, String>,
    #[serde(default = "default_true")]
    strip_dpop: bool,
}

impl Default for RawForward {
    fn default() -> Self {
        RawForward {
            headers: default_forward_headers(),
            strip_dpop: true,
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

fn default_buckets() -> usize {
    1024
}
fn default_entries() -> usize {
    128
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokenCache {
    #[serde(default = "default_token_cache")]
    max_entries: usize,
}

impl Default for RawTokenCache {
    fn default() -> Self {
        RawTokenCache {
            max_entries: default_token_cache(),
        }
    }
}

fn default_token_cache() -> usize {
    10_000
}

/// One trusted issuer.
#[derive(Debug, Clone)]
pub struct Issuer {
    /// Claims policy (issuer, audiences, algorithms, leeway).
    pub policy: TokenPolicy,
    /// Its verification keys.
    pub jwks: Jwks,
}

/// Where the client certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// No certificate binding is checked: certificate-bound tokens are refused.
    None,
    /// Envoy's own downstream TLS connection (`connection.sha256_peer_certificate_digest`).
    Connection,
    /// The `x-forwarded-client-cert` header from a trusted front proxy.
    Xfcc(XfccPolicy),
}

/// What a request path requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// No token needed (health checks).
    None,
    /// A bound token (or, if allowed, a bearer token) with these scopes.
    Token {
        /// Required scopes.
        scopes: Vec<String>,
        /// Whether unbound bearer tokens are accepted.
        allow_bearer: bool,
    },
}

/// A rule: path prefix and methods to what they require. The first matching rule applies.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Path prefix (matched against the path without the query).
    pub prefix: String,
    /// Methods (empty: any).
    pub methods: Vec<String>,
    /// What is required.
    pub auth: Auth,
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
    pub external_base_url: Option<String>,
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
}

const FORWARDABLE: [&str; 6] = ["sub", "client_id", "scope", "jkt", "x5t#S256", "binding"];

impl Config {
    /// Parses and validates the plugin configuration.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first invalid field.
    pub fn parse(json: &[u8]) -> Result<Config, ConfigError> {
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
            let jwks_json = iss.jwks.ok_or_else(|| err(f("jwks"), "required (a JWKS object)"))?;
            let jwks = Jwks::from_json(jwks_json.to_string().as_bytes(), keybound_core::Part::AccessToken)
                .map_err(|e| err(f("jwks"), e.to_string()))?;
            if jwks.keys().is_empty() {
                return Err(err(f("jwks"), "no usable signature key"));
            }
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
            issuers.push(Issuer { policy, jwks });
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
                    let secrets: Vec<&str> = n.secrets.iter().map(String::as_str).collect();
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
        if let Some(base) = &raw.dpop.external_base_url {
            let htu = keybound_core::htu::Htu::parse(base)
                .map_err(|_| err("dpop.external_base_url", "must be an absolute http(s) URL"))?;
            if htu.as_str().trim_end_matches('/').matches('/').count() > 2 || base.contains(['?', '#']) {
                return Err(err(
                    "dpop.external_base_url",
                    "scheme and authority only, no path or query",
                ));
            }
        }
        let cert_source = match raw.mtls {
            None => CertSource::None,
            Some(m) => match m.source.as_str() {
                "connection" => {
                    if m.element_from_end.is_some() || m.expected_by.is_some() {
                        return Err(err(
                            "mtls",
                            "element_from_end and expected_by are only for source \"xfcc\"",
                        ));
                    }
                    CertSource::Connection
                }
                "xfcc" => CertSource::Xfcc(XfccPolicy {
                    element_from_end: m.element_from_end.unwrap_or(0),
                    expected_by: m.expected_by,
                }),
                other => {
                    return Err(err(
                        "mtls.source",
                        format!("{other:?}: expected \"connection\" or \"xfcc\""),
                    ));
                }
            },
        };
        let mut rules = Vec::new();
        for (i, r) in raw.rules.into_iter().enumerate() {
            let f = |name: &str| format!("rules[{i}].{name}");
            if !r.prefix.starts_with('/') {
                return Err(err(f("prefix"), "must start with '/'"));
            }
            if let Some(m) = r
                .methods
                .iter()
                .find(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()))
            {
                return Err(err(f("methods"), format!("{m:?} is not an upper-case HTTP method")));
            }
            let auth = match r.auth.as_deref() {
                None | Some("token") => Auth::Token {
                    scopes: r.scopes,
                    allow_bearer: r.allow_bearer,
                },
                Some("none") => {
                    if !r.scopes.is_empty() || r.allow_bearer {
                        return Err(err(f("auth"), "\"none\" takes no scopes or allow_bearer"));
                    }
                    Auth::None
                }
                Some(other) => return Err(err(f("auth"), format!("{other:?}: expected \"token\" or \"none\""))),
            };
            rules.push(Rule {
                prefix: r.prefix,
                methods: r.methods,
                auth,
            });
        }
        for (claim, header) in &raw.forward.headers {
            if !FORWARDABLE.contains(&claim.as_str()) {
                return Err(err(
                    format!("forward.headers.{claim}"),
                    format!("unknown claim; one of {FORWARDABLE:?}"),
                ));
            }
            if header.is_empty()
                || !header
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(err(
                    format!("forward.headers.{claim}"),
                    "header names must be lower-case [a-z0-9-]",
                ));
            }
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
        Ok(Config {
            issuers,
            proof,
            nonce,
            external_base_url: raw.dpop.external_base_url.map(|b| b.trim_end_matches('/').to_owned()),
            trust_forwarded_headers: raw.dpop.trust_forwarded_headers,
            cert_source,
            rules,
            forward_headers: raw.forward.headers,
            strip_dpop: raw.forward.strip_dpop,
            replay_buckets: raw.replay_cache.buckets,
            replay_entries_per_bucket: raw.replay_cache.entries_per_bucket,
            token_cache_entries: raw.token_cache.max_entries,
        })
    }

    /// The rule for a request; a path no rule matches requires a bound token and no scope.
    pub fn rule_for(&self, method: &str, path: &str) -> Auth {
        let path = path.split(['?', '#']).next().unwrap_or("");
        self.rules
            .iter()
            .find(|r| path.starts_with(&r.prefix) && (r.methods.is_empty() || r.methods.iter().any(|m| m == method)))
            .map(|r| r.auth.clone())
            .unwrap_or(Auth::Token {
                scopes: Vec::new(),
                allow_bearer: false,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn base() -> Value {
        json!({"issuers": [{"issuer": "https://as.example", "audiences": ["https://api"],
            "jwks": {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}}]})
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

    fn field_of(json: &[u8]) -> String {
        match Config::parse(json) {
            Err(Error::Config { field, reason }) => format!("{field}: {reason}"),
            other => panic!("accepted: {other:?}"),
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
            c.rule_for("GET", "/anything"),
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
        assert_eq!(c.rule_for("GET", "/health?x=1"), Auth::None);
        assert_eq!(
            c.rule_for("POST", "/api/x"),
            Auth::Token {
                scopes: vec!["write".into()],
                allow_bearer: false
            }
        );
        assert_eq!(
            c.rule_for("GET", "/api/x"),
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
        ];
        for (json, field) in cases {
            let got = field_of(&json);
            assert!(got.contains(field), "expected {field:?} in {got:?}");
        }
    }
}
