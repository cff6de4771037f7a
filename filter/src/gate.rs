//! One request in, one decision out. Every check is keybound-core's; this module adds what needs
//! state (the verified-token cache, the replay cache) and turns results into HTTP.
//!
//! Order: strip client copies of the headers we set → rule → client certificate → core's
//! [`verify_request`] (headers, proof, token, binding, scopes) → `jti` replay check (last, so bad
//! input changes no state) → headers for the upstream.

use std::collections::HashMap;

use keybound_core::cert::{X5tS256, Xfcc};
use keybound_core::dpop::NonceCheck;
use keybound_core::error::Challenge;
use keybound_core::htu::Htu;
use keybound_core::jws::Verifier;
use keybound_core::nonce::NonceAge;
use keybound_core::request::{self, Binding, ResourceRequest, RoutePolicy, verify_request};
use keybound_core::token::{self, VerifiedToken};
use keybound_core::{Error, ErrorCode};
use sha2::{Digest, Sha256};

use crate::config::{Auth, CertSource, Config};
use crate::replay::{ReplayCache, SharedStore, Verdict};

/// A request as the host presents it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `:method`.
    pub method: &'a str,
    /// `:scheme`.
    pub scheme: &'a str,
    /// `:authority` (with port, as Envoy gives it).
    pub authority: &'a str,
    /// `:path` (with query).
    pub path: &'a str,
    /// All headers, names lower-case, repeated names as separate entries.
    pub headers: &'a [(String, String)],
    /// `connection.sha256_peer_certificate_digest`, if the connection had a client certificate.
    pub peer_cert_digest: Option<&'a str>,
    /// Unix seconds.
    pub now: u64,
}

impl Request<'_> {
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// What the host should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Forward upstream after removing the headers of `strip` ([`Gate::strip`]) and setting
    /// `set`; add `dpop-nonce` to the response if `fresh_nonce`.
    Allow {
        /// Which headers to remove from the request.
        strip: Strip,
        /// Headers to set on the request.
        set: Vec<(String, String)>,
        /// A fresh nonce for the response.
        fresh_nonce: Option<String>,
        /// Why, for logs and metrics.
        log: DecisionLog,
    },
    /// Reply locally.
    Deny {
        /// HTTP status.
        status: u16,
        /// Response headers.
        headers: Vec<(String, String)>,
        /// Response body.
        body: String,
        /// Why, for logs and metrics.
        log: DecisionLog,
    },
}

/// Which request headers to remove before forwarding (lists computed once per configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strip {
    /// The headers the filter sets (a client must never supply them).
    ClaimHeaders,
    /// Those and the `DPoP` header (after a verified request, when `forward.strip_dpop`).
    ClaimHeadersAndDpop,
}

/// What a decision log line and the metrics need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecisionLog {
    /// `allow`, `deny`, or `unavailable`.
    pub decision: &'static str,
    /// Stable reason code (core's `Error::reason`, or `ok`, `no_auth`, `replay_cache_full`...).
    pub reason: &'static str,
    /// The token's `client_id`, when known.
    pub client_id: Option<String>,
    /// The DPoP key thumbprint, when known.
    pub jkt: Option<String>,
    /// The certificate thumbprint, when known.
    pub x5t: Option<String>,
    /// Whether the token came from the cache.
    pub token_cache_hit: bool,
    /// Whether a nonce challenge was sent.
    pub nonce_challenge: bool,
}

impl DecisionLog {
    /// One JSON line.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "keybound": self.decision,
            "reason": self.reason,
            "client_id": self.client_id,
            "jkt": self.jkt,
            "x5t#S256": self.x5t,
            "token_cache_hit": self.token_cache_hit,
        })
        .to_string()
    }
}

/// Per-VM state: configuration and the verified-token cache.
pub struct Gate {
    config: Config,
    replay: ReplayCache,
    /// Verified tokens by SHA-256 of the token, with their issuer's leeway.
    tokens: HashMap<[u8; 32], (VerifiedToken, u64)>,
    /// The claim header names, then `dpop` if configured (see [`Strip`]).
    strip: Vec<String>,
    /// The `algs` of DPoP challenges.
    algs: Vec<keybound_core::jws::Alg>,
}

impl Gate {
    /// A gate for a validated configuration.
    pub fn new(config: Config) -> Self {
        let replay = ReplayCache::new(config.replay_buckets, config.replay_entries_per_bucket);
        let mut strip: Vec<String> = config.forward_headers.values().cloned().collect();
        if config.strip_dpop {
            strip.push("dpop".into());
        }
        let algs = config.proof.algs.to_vec();
        Gate {
            config,
            replay,
            tokens: HashMap::new(),
            strip,
            algs,
        }
    }

    /// The header names to remove for a [`Strip`] list.
    pub fn strip(&self, which: Strip) -> &[String] {
        let claims = self.config.forward_headers.len();
        match which {
            Strip::ClaimHeaders => self.strip.get(..claims).unwrap_or(&[]),
            Strip::ClaimHeadersAndDpop => &self.strip,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The replay cache (to create its buckets at start).
    pub fn replay(&self) -> &ReplayCache {
        &self.replay
    }

    /// How many verified tokens are cached.
    pub fn cached_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// Decides a request.
    pub fn decide(&mut self, req: &Request<'_>, store: &dyn SharedStore, verifier: &dyn Verifier) -> Outcome {
        let (scopes, allow_bearer) = match self.config.rule_for(req.method, req.path) {
            Auth::None => {
                return Outcome::Allow {
                    strip: Strip::ClaimHeaders,
                    set: Vec::new(),
                    fresh_nonce: None,
                    log: DecisionLog {
                        decision: "allow",
                        reason: "no_auth",
                        ..DecisionLog::default()
                    },
                };
            }
            Auth::Token { scopes, allow_bearer } => (scopes, allow_bearer),
        };
        let mut log = DecisionLog::default();
        match self.verify(req, &scopes, allow_bearer, store, verifier, &mut log) {
            Ok((set, fresh_nonce)) => {
                log.decision = "allow";
                log.reason = "ok";
                Outcome::Allow {
                    strip: Strip::ClaimHeadersAndDpop,
                    set,
                    fresh_nonce,
                    log,
                }
            }
            Err(Failure::Unavailable(reason)) => {
                log.decision = "unavailable";
                log.reason = reason;
                Outcome::Deny {
                    status: 503,
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: r#"{"error":"temporarily_unavailable"}"#.into(),
                    log,
                }
            }
            Err(Failure::Denied(e)) => {
                log.decision = "deny";
                log.reason = e.reason();
                self.deny(req, &e, &scopes, allow_bearer, log)
            }
        }
    }

    fn deny(
        &self,
        req: &Request<'_>,
        e: &Error,
        scopes: &[String],
        allow_bearer: bool,
        mut log: DecisionLog,
    ) -> Outcome {
        let auth = req.all("authorization");
        let scope = request::join_scopes(scopes);
        let challenge = e.www_authenticate(&Challenge {
            scheme_used: request::scheme_of(&auth),
            bearer_allowed: allow_bearer || self.config.cert_source != CertSource::None,
            algs: &self.algs,
            realm: None,
            required_scope: &scope,
        });
        let mut headers = vec![
            ("www-authenticate".to_owned(), challenge),
            ("content-type".into(), "application/json".into()),
        ];
        if e.code() == Some(ErrorCode::UseDpopNonce)
            && let Some(n) = &self.config.nonce
        {
            headers.push(("dpop-nonce".into(), n.issue(req.now)));
            log.nonce_challenge = true;
        }
        let body = match e.code() {
            Some(code) => serde_json::json!({ "error": code.as_str() }).to_string(),
            None => String::new(),
        };
        Outcome::Deny {
            status: e.status(),
            headers,
            body,
            log,
        }
    }

    fn htu(&self, req: &Request<'_>) -> Result<Htu, Error> {
        let path = req.path;
        if let Some(base) = &self.config.external_base_url {
            return Htu::parse(&format!("{base}{path}"));
        }
        if self.config.trust_forwarded_headers {
            let one = |name: &str| match req.all(name).as_slice() {
                [v] => Ok(Some(*v)),
                [] => Ok(None),
                _ => Err(Error::InvalidHtu),
            };
            let scheme = one("x-forwarded-proto")?.unwrap_or(req.scheme);
            let host = one("x-forwarded-host")?.unwrap_or(req.authority);
            return Htu::from_parts(scheme, host, path);
        }
        Htu::from_parts(req.scheme, req.authority, path)
    }

    fn client_cert(&self, req: &Request<'_>) -> Result<Option<X5tS256>, Error> {
        match &self.config.cert_source {
            CertSource::None => Ok(None),
            CertSource::Connection => req
                .peer_cert_digest
                .filter(|d| !d.is_empty())
                .map(X5tS256::from_hex_digest)
                .transpose(),
            CertSource::Xfcc(policy) => match req.all("x-forwarded-client-cert").as_slice() {
                [] => Ok(None),
                [one] => Xfcc::thumbprint(one, policy).map(Some),
                _ => Err(Error::InvalidCertificate {
                    what: "several XFCC headers",
                }),
            },
        }
    }

    fn verify(
        &mut self,
        req: &Request<'_>,
        scopes: &[String],
        allow_bearer: bool,
        store: &dyn SharedStore,
        verifier: &dyn Verifier,
        log: &mut DecisionLog,
    ) -> Result<Allowed, Failure> {
        let htu = self.htu(req)?;
        let cert = self.client_cert(req)?;
        log.x5t = cert.map(|c| c.to_string());
        let auth = req.all("authorization");
        let dpop = req.all("dpop");
        let nonce = match &self.config.nonce {
            Some(n) => NonceCheck::Required(n),
            None => NonceCheck::Off,
        };
        let resource = ResourceRequest {
            method: req.method,
            htu: &htu,
            authorization: &auth,
            dpop: &dpop,
            client_cert: cert.as_ref(),
        };
        let route = RoutePolicy {
            proof: &self.config.proof,
            nonce,
            allow_bearer,
            required_scopes: scopes,
        };
        let (issuers, tokens, max) = (&self.config.issuers, &mut self.tokens, self.config.token_cache_entries);
        let mut hit = false;
        let verified = verify_request(&resource, &route, req.now, verifier, |t| {
            let key: [u8; 32] = Sha256::digest(t.as_bytes()).into();
            if let Some((cached, leeway)) = tokens.get(&key) {
                if cached.valid_at(req.now, *leeway) {
                    hit = true;
                    return Ok(cached.clone());
                }
                tokens.remove(&key);
            }
            let iss = token::unverified_issuer(t).ok_or(Error::Malformed {
                part: keybound_core::Part::AccessToken,
                what: "not a JWT with iss",
            })?;
            let issuer = issuers
                .iter()
                .find(|i| i.policy.issuer == iss)
                .ok_or(Error::IssuerMismatch)?;
            let v = token::verify_jwt(t, &issuer.jwks, &issuer.policy, req.now, verifier)?;
            if max > 0 {
                if tokens.len() >= max {
                    tokens.retain(|_, (tok, leeway)| tok.valid_at(req.now, *leeway));
                    if tokens.len() >= max {
                        tokens.clear();
                    }
                }
                tokens.insert(key, (v.clone(), issuer.policy.leeway));
            }
            Ok(v)
        });
        log.token_cache_hit = hit;
        let verified = verified?;
        let claims = verified.token().claims();
        log.client_id = claims.client_id.clone();
        log.jkt = verified.proof().map(|p| p.jkt().to_string());
        // Last: the replay check, so that only fully verified proofs are recorded.
        let mut fresh_nonce = None;
        if let Some(proof) = verified.proof() {
            match self
                .replay
                .check_and_insert(store, &proof.replay_key(), proof.replay_expires_at(), req.now)
            {
                Ok(Verdict::Fresh) => {}
                Ok(Verdict::Replayed) => return Err(Failure::Denied(Error::ProofReplayed)),
                Ok(Verdict::Full) => return Err(Failure::Unavailable("replay_cache_full")),
                Err(_) => return Err(Failure::Unavailable("replay_cache_error")),
            }
            if let (Some(NonceAge::Previous), Some(n)) = (proof.nonce_age(), &self.config.nonce) {
                fresh_nonce = Some(n.issue(req.now));
            }
        }
        let mut set = Vec::new();
        let mut put = |claim: &str, value: Option<String>| {
            if let (Some(h), Some(v)) = (self.config.forward_headers.get(claim), value) {
                set.push((h.clone(), v));
            }
        };
        put("sub", claims.sub.clone());
        put("client_id", claims.client_id.clone());
        put("scope", Some(claims.scopes.join(" ")));
        let (binding, jkt, x5t) = match verified.binding() {
            Binding::Dpop(j) => (
                "dpop",
                Some(j.to_string()),
                verified.token().x5t_s256().map(ToString::to_string),
            ),
            Binding::Certificate(c) => ("mtls", None, Some(c.to_string())),
            _ => ("bearer", None, None),
        };
        put("jkt", jkt);
        put("x5t#S256", x5t);
        put("binding", Some(binding.into()));
        Ok((set, fresh_nonce))
    }
}

/// Headers to set upstream, and a fresh nonce for the response.
type Allowed = (Vec<(String, String)>, Option<String>);

enum Failure {
    Denied(Error),
    Unavailable(&'static str),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Denied(e)
    }
}
