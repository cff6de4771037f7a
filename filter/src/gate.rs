//! One request in, one decision out. Every check is keybound-core's; this module adds what needs
//! state (the verified-token cache, the replay cache) and turns results into HTTP.
//!
//! Order: strip client copies of the headers we set → rule → client certificate → core's
//! [`verify_request_with`] (headers, proof, token, binding, scopes) → `jti` replay check (last, so bad
//! input changes no state) → headers for the upstream.
//!
//! ## Keys from a `jwks_uri`, and introspection
//!
//! Decisions are synchronous; when one needs something from the network the gate answers
//! [`Outcome::Fetch`], the host pauses the request, makes the call ([`Gate::call_for`]), hands
//! the answer back ([`Gate::jwks_response`], [`Gate::introspection_response`]) and asks again with
//! [`Gate::decide_again`], which never asks for a second fetch.
//!
//! Remote keys are shared by all VMs of an Envoy instance through shared data: `kb/jwks/<n>`
//! holds the last good JWKS of issuer `n` with a version, and every VM adopts a newer version on
//! its next tick ([`Gate::due_fetches`]) or when a token names a `kid` it does not know.
//! `kb/jwks-lock/<n>` holds the time of the last fetch attempt: a VM fetches only if it moves
//! that time forward by compare-and-swap and at least `jwks_min_refetch_seconds` have passed, so
//! one instance makes at most one fetch per interval, whether for the periodic refresh, an
//! unknown `kid` (rotation at the issuer), or missing keys. A failed fetch keeps the old keys.
//! Before the first good fetch, requests for that issuer are refused with 503 (fail closed).
//!
//! Opaque tokens (not JWS compact serialization) are introspected (RFC 7662) when configured; the
//! result, active or not, is cached per VM like a verified JWT: until `exp`, at most
//! `max_cache_seconds`, inactive answers at most 60 s.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use keybound_core::cert::{X5tS256, Xfcc, XfccPolicy};
use keybound_core::dpop::NonceCheck;
use keybound_core::dpop::ProofMemo;
use keybound_core::error::Challenge;
use keybound_core::htu::{Htu, Origin};
use keybound_core::jws::Verifier;
use keybound_core::nonce::NonceAge;
use keybound_core::path::CanonicalPath;
use keybound_core::qc::{PspRole, psd2_from_certificate};
use keybound_core::request::{self, Binding, ResourceRequest, RoutePolicy, verify_request_with};
use keybound_core::token::{self, VerifiedToken};
use keybound_core::{Error, ErrorCode};

use crate::config::{
    AuthorizationForward, CertSource, Config, HttpTarget, IntrospectionAuth, Keys, REPORT_HEADERS, RemoteJwks,
    form_encode, parse_jwks,
};
use crate::policy::{IssuerRef, Mode, Requirement};
use crate::replay::{Cas, ReplayCache, SharedStore, StoreError, Verdict};

/// The largest JWKS document accepted from a `jwks_uri` (bytes).
pub const MAX_JWKS_BYTES: usize = 64 * 1024;

/// Inactive introspection answers are cached at most this long (seconds).
const NEGATIVE_CACHE_SECONDS: u64 = 60;

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
    /// `connection.uri_san_peer_certificate` (the first URI SAN of the connection's client
    /// certificate), read only when `mtls.front_proxy_uri_sans` is configured.
    pub peer_uri_san: Option<&'a str>,
    /// The Envoy route's name (`xds.route_name`), read only when `routes.names` is configured.
    pub route_name: Option<&'a str>,
    /// The Envoy route's `filter_metadata.keybound.requirement`, read only when
    /// `routes.metadata` is configured.
    pub route_requirement: Option<&'a str>,
    /// Unix seconds.
    pub now: u64,
}

impl<'a> Request<'a> {
    fn one(&self, name: &str) -> Option<&'a str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&'a str> {
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
    /// Forward upstream after removing the headers of `strip` ([`Gate::strip_names`]), setting
    /// `set` and, if `path` is given, replacing `:path` with it; add `dpop-nonce` to the response
    /// if `fresh_nonce`.
    Allow {
        /// Which headers to remove from the request.
        strip: Strip,
        /// The canonical request target (path and the original query), when the request's
        /// `:path` was not already canonical: the upstream gets the path the rules matched.
        path: Option<String>,
        /// Headers to set on the request.
        set: Vec<(String, String)>,
        /// A fresh nonce for the response.
        fresh_nonce: Option<String>,
        /// Why, for logs and metrics.
        log: DecisionLog,
    },
    /// Pause the request, make this call, hand the answer to the gate, then
    /// [`Gate::decide_again`].
    Fetch(Fetch),
    /// Reply locally: a refusal, or a document the filter serves (RFC 9728 metadata, 200).
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

/// Something the gate needs from the network before it can decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetch {
    /// The JWKS of the issuer at this index of the configuration.
    Jwks(usize),
    /// Introspection of this (opaque) token.
    Introspect(String),
}

/// An HTTP call for the host to make through an Envoy cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall<'a> {
    /// Cluster, authority, path and timeout.
    pub target: &'a HttpTarget,
    /// Headers including the pseudo-headers `:method`, `:path`, `:authority`.
    pub headers: Vec<(&'static str, String)>,
    /// Request body, if any.
    pub body: Option<Vec<u8>>,
}

/// Which request headers to remove before forwarding (lists computed once per configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strip {
    /// The headers the filter sets (a client must never supply them).
    ClaimHeaders,
    /// Those, the `DPoP` header (when `forward.strip_dpop`) and `Authorization` (when
    /// `forward.authorization` is `strip`): after a verified request.
    ClaimHeadersAndDpop,
}

/// What a decision log line, the metrics and the filter state need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecisionLog {
    /// `allow`, `deny`, `unavailable`, or `serve` (a document the filter serves). In report
    /// mode, the decision the request would have had: it was forwarded.
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
    /// The requirement that decided (an index into [`Config::requirements`]; `None` before one
    /// was chosen).
    pub requirement: Option<usize>,
    /// The mode it decided in.
    pub mode: Mode,
    /// `dpop`, `mtls` or `bearer`, when a token was verified.
    pub binding: Option<&'static str>,
    /// The verified claims forwarded upstream, by name (`sub`, `client_id`, `scope`, `jkt`,
    /// `x5t_s256`, or the header of a `forward.claims` entry), for Envoy filter state; filled
    /// only when `filter_state` is configured.
    pub claims: Vec<(String, String)>,
}

impl DecisionLog {
    /// One JSON line.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "keybound": self.decision,
            "reason": self.reason,
            "mode": self.mode.as_str(),
            "binding": self.binding,
            "client_id": self.client_id,
            "jkt": self.jkt,
            "x5t#S256": self.x5t,
            "token_cache_hit": self.token_cache_hit,
        })
        .to_string()
    }
}

/// A token-cache entry: a verified JWT, or an introspection answer (active or not).
struct Cached {
    /// Shared, so that a cache hit costs no copy of the claims.
    result: Result<Rc<VerifiedToken>, Error>,
    /// The issuer's leeway for `exp`/`nbf`.
    leeway: u64,
    /// Not used from this time on: `token_cache.max_age_seconds` after it was verified (and for
    /// introspection answers, their own bound).
    until: u64,
    /// The configured issuer whose key verified it (`None`: an introspection answer). When that
    /// issuer's key set changes, the entry goes unless its key is still in the set.
    issuer: Option<usize>,
    /// The headers of `forward.claims` and `forward.payload_header` for this token, computed
    /// once (`None` when neither is configured).
    extra: Option<Rc<[(String, String)]>>,
}

impl Cached {
    fn usable(&self, now: u64) -> bool {
        now < self.until && self.result.as_ref().map_or(true, |t| t.valid_at(now, self.leeway))
    }
}

/// One issuer's keys in this VM.
#[derive(Default)]
struct KeyState {
    jwks: Option<keybound_core::jwk::Jwks>,
    /// Version of the shared JWKS adopted (0: none; inline keys stay at 0).
    version: u64,
    /// When that JWKS was fetched (unix seconds).
    fetched_at: u64,
}

/// Per-VM state: configuration, issuer keys and the verified-token cache.
pub struct Gate {
    config: Config,
    replay: ReplayCache,
    /// Each issuer's keys, by index in the configuration.
    keys: Vec<KeyState>,
    /// Verified tokens and introspection answers, by the token itself: an exact match, and
    /// hashing a token with SipHash costs a fraction of SHA-256 inside a wasm VM (0.4 µs against
    /// 5.3 µs for 800 bytes under V8). Memory: `token_cache.max_entries` × token length.
    tokens: HashMap<Box<str>, Cached>,
    /// Proof headers and `ath` values seen before (core's [`ProofMemo`]), bounded like the token
    /// cache.
    proofs: ProofMemo,
    /// The header names the filter sets (claims, payload, report marks), then `dpop` and
    /// `authorization` if configured (see [`Strip`]), each folded ([`fold_header_name`]).
    strip: Vec<String>,
    /// How many of `strip` are headers the filter sets.
    set_names: usize,
    /// The requirements, shared so a decision holds one while the gate changes its caches.
    requirements: Vec<Arc<Requirement>>,
    /// The `algs` of DPoP challenges.
    algs: Vec<keybound_core::jws::Alg>,
}

impl Gate {
    /// A gate for a validated configuration.
    pub fn new(config: Config) -> Self {
        let replay = ReplayCache::new(config.replay_buckets, config.replay_entries_per_bucket);
        let mut strip: Vec<String> = config.forward_headers.values().map(|h| fold_header_name(h)).collect();
        strip.extend(config.forward_claims.iter().map(|(h, _)| fold_header_name(h)));
        strip.extend(config.payload_header.iter().map(|h| fold_header_name(h)));
        strip.extend(REPORT_HEADERS.iter().map(|h| fold_header_name(h)));
        let set_names = strip.len();
        if config.strip_dpop {
            strip.push("dpop".into());
        }
        if config.authorization == AuthorizationForward::Strip {
            strip.push("authorization".into());
        }
        let requirements = config.requirements.iter().cloned().map(Arc::new).collect();
        let algs = config.proof.algs.to_vec();
        let keys = config
            .issuers
            .iter()
            .map(|i| match &i.keys {
                Keys::Inline(jwks) => KeyState {
                    jwks: Some(jwks.clone()),
                    ..KeyState::default()
                },
                Keys::Remote(_) => KeyState::default(),
            })
            .collect();
        Gate {
            proofs: ProofMemo::new(config.token_cache_entries),
            config,
            replay,
            keys,
            tokens: HashMap::new(),
            strip,
            set_names,
            requirements,
            algs,
        }
    }

    /// The names of the request's headers to remove for a [`Strip`] list: every header whose
    /// name equals one of the list's modulo letter case and `_`/`-` (`x_keybound_sub` is
    /// `x-keybound-sub` to WSGI, Rack and CGI, which fold both into `HTTP_X_KEYBOUND_SUB`). Each
    /// name is given once, as the request spells it.
    pub fn strip_names<'h>(&self, which: Strip, headers: &'h [(String, String)]) -> Vec<&'h str> {
        let list = match which {
            Strip::ClaimHeaders => self.strip.get(..self.set_names).unwrap_or(&[]),
            Strip::ClaimHeadersAndDpop => &self.strip,
        };
        let mut out: Vec<&str> = Vec::new();
        for (name, _) in headers {
            if !out.contains(&name.as_str()) && list.iter().any(|s| folded_eq(name, s)) {
                out.push(name);
            }
        }
        out
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

    /// Creates the shared-data keys of this configuration (replay buckets, shared JWKS and fetch
    /// locks) that do not exist yet. Called at configure time by every VM.
    ///
    /// Creation is `get`, then `set` if absent (Envoy has no insert-if-absent: CAS is ignored for
    /// absent keys). That is safe because Envoy configures the main thread's VM first (in
    /// `createWasm`, under the listener's init manager) and only then clones it to the workers:
    /// every key exists before any request, so the worker VMs find them and write nothing.
    ///
    /// # Errors
    /// If the host's shared data fails.
    pub fn prepare_shared(&self, store: &dyn SharedStore) -> Result<(), StoreError> {
        self.replay.create_buckets(store)?;
        for issuer in &self.config.issuers {
            if let Keys::Remote(r) = &issuer.keys {
                for key in [jwks_key(r), lock_key(r)] {
                    if store.get(&key)?.0.is_none() {
                        store.set(&key, b"", None)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether issuer `i` has keys in this VM.
    pub fn has_keys(&self, i: usize) -> bool {
        self.keys.get(i).is_some_and(|k| k.jwks.is_some())
    }

    /// The periodic work, called on every tick: adopts JWKS that other VMs fetched, and returns
    /// the fetches this VM should make now (refresh due or keys missing, and this VM won the
    /// instance-wide rate limit).
    pub fn due_fetches(&mut self, store: &dyn SharedStore, now: u64) -> Vec<Fetch> {
        let mut out = Vec::new();
        for (i, issuer) in self.config.issuers.iter().enumerate() {
            let (Keys::Remote(remote), Some(state)) = (&issuer.keys, self.keys.get_mut(i)) else {
                continue;
            };
            sync_keys(state, remote, store, &mut self.tokens, i);
            let due = state.jwks.is_none() || now >= state.fetched_at.saturating_add(remote.refresh_seconds);
            if due && claim_fetch(store, remote, now) {
                out.push(Fetch::Jwks(i));
            }
        }
        out
    }

    /// The HTTP call for a fetch (`None` if it does not apply to this configuration).
    pub fn call_for(&self, fetch: &Fetch) -> Option<HttpCall<'_>> {
        match fetch {
            Fetch::Jwks(i) => match &self.config.issuers.get(*i)?.keys {
                Keys::Remote(r) => Some(HttpCall {
                    target: &r.target,
                    headers: vec![
                        (":method", "GET".into()),
                        (":path", r.target.path.clone()),
                        (":authority", r.target.authority.clone()),
                        ("accept", "application/jwk-set+json, application/json".into()),
                    ],
                    body: None,
                }),
                Keys::Inline(_) => None,
            },
            Fetch::Introspect(token) => {
                let intro = self.config.introspection.as_ref()?;
                let mut headers = vec![
                    (":method", "POST".into()),
                    (":path", intro.target.path.clone()),
                    (":authority", intro.target.authority.clone()),
                    ("content-type", "application/x-www-form-urlencoded".into()),
                    ("accept", "application/json".into()),
                ];
                let mut body = format!("token={}&token_type_hint=access_token", form_encode(token));
                match &intro.client_auth {
                    IntrospectionAuth::SecretBasic(value) => headers.push(("authorization", value.clone())),
                    IntrospectionAuth::Tls(client_id) => {
                        body.push_str("&client_id=");
                        body.push_str(&form_encode(client_id));
                    }
                }
                Some(HttpCall {
                    target: &intro.target,
                    headers,
                    body: Some(body.into_bytes()),
                })
            }
        }
    }

    /// Takes the answer of a JWKS fetch for issuer `i`: on success (200, a JWKS with at least
    /// one usable key, at most [`MAX_JWKS_BYTES`]) the keys replace this VM's and are published
    /// to the other VMs; on failure the old keys stay. Returns the number of keys, or why the
    /// answer was refused.
    ///
    /// # Errors
    /// A message for the log (the status, or what is wrong with the document).
    pub fn jwks_response(
        &mut self,
        i: usize,
        status: Option<u16>,
        body: &[u8],
        store: &dyn SharedStore,
        now: u64,
    ) -> Result<usize, String> {
        if status != Some(200) {
            return Err(format!("status {}", status.map_or("none".into(), |s| s.to_string())));
        }
        if body.len() > MAX_JWKS_BYTES {
            return Err(format!("document larger than {MAX_JWKS_BYTES} bytes"));
        }
        let json = std::str::from_utf8(body).map_err(|_| "not UTF-8".to_owned())?;
        let jwks = parse_jwks(json, "jwks_uri response").map_err(|e| e.to_string())?;
        let n = jwks.keys().len();
        let Some(Keys::Remote(remote)) = self.config.issuers.get(i).map(|iss| &iss.keys) else {
            return Err("no such issuer".into());
        };
        let state = self.keys.get_mut(i).ok_or("no such issuer")?;
        let shared = store
            .get(&jwks_key(remote))
            .ok()
            .and_then(|(v, _)| v)
            .and_then(|v| shared_header(&v).map(|(version, _)| version))
            .unwrap_or(0);
        let version = state.version.max(shared) + 1;
        // Publishing is best effort: this VM has the keys either way.
        let _ = store.set(&jwks_key(remote), format!("{version} {now}\n{json}").as_bytes(), None);
        let new = KeyState {
            jwks: Some(jwks),
            version,
            fetched_at: now,
        };
        adopt_keys(state, new, &mut self.tokens, i);
        Ok(n)
    }

    /// Takes the answer of an introspection call for `token` and caches it (active or not).
    ///
    /// # Errors
    /// `introspection_unavailable` if the call failed or the answer is not an introspection
    /// response; the request is then refused with 503.
    pub fn introspection_response(
        &mut self,
        token: &str,
        status: Option<u16>,
        body: &[u8],
        now: u64,
    ) -> Result<(), &'static str> {
        let intro = self.config.introspection.as_ref().ok_or("introspection_unavailable")?;
        if status != Some(200) {
            return Err("introspection_unavailable");
        }
        let result = token::verify_introspection(body, &intro.policy, now).map(Rc::new);
        let until = match &result {
            Err(Error::Malformed { .. }) => return Err("introspection_unavailable"),
            Err(_) => now + NEGATIVE_CACHE_SECONDS.min(intro.max_cache_seconds),
            Ok(t) => t
                .claims()
                .exp
                .map_or(u64::MAX, |exp| u64::try_from(exp).unwrap_or(0))
                .min(now.saturating_add(intro.max_cache_seconds)),
        };
        let leeway = intro.policy.leeway;
        let extra = match &result {
            Ok(_) if self.wants_extra() => {
                let claims = serde_json::from_slice::<serde_json::Value>(body).ok();
                Some(self.extra(claims.as_ref(), || keybound_core::b64::encode(body)))
            }
            _ => None,
        };
        let limits = (self.config.token_cache_entries.max(1), self.config.token_cache_max_age);
        cache_put(
            &mut self.tokens,
            limits,
            token.into(),
            Cached {
                result,
                leeway,
                until,
                issuer: None,
                extra,
            },
            now,
        );
        Ok(())
    }

    /// Decides a request.
    pub fn decide(&mut self, req: &Request<'_>, store: &dyn SharedStore, verifier: &dyn Verifier) -> Outcome {
        self.decide_with(req, store, verifier, true)
    }

    /// Decides a request after the fetch an earlier [`Outcome::Fetch`] asked for; never asks for
    /// another.
    pub fn decide_again(&mut self, req: &Request<'_>, store: &dyn SharedStore, verifier: &dyn Verifier) -> Outcome {
        self.decide_with(req, store, verifier, false)
    }

    /// The name of requirement `i` (for metrics, logs and filter state).
    pub fn requirement_name(&self, i: Option<usize>) -> &str {
        i.and_then(|i| self.requirements.get(i))
            .map_or("none", |r| r.name.as_str())
    }

    fn decide_with(
        &mut self,
        req: &Request<'_>,
        store: &dyn SharedStore,
        verifier: &dyn Verifier,
        may_fetch: bool,
    ) -> Outcome {
        // Before any rule: the one canonical path that rules match, `htu` is built from, and the
        // upstream receives.
        let path = match CanonicalPath::parse(req.path) {
            Ok(p) => p,
            Err(e) => {
                let log = DecisionLog {
                    decision: "deny",
                    reason: e.reason(),
                    mode: self.global_mode(),
                    ..DecisionLog::default()
                };
                let denied = self.deny(req, None, &e, None, log);
                return self.in_mode(denied, None);
            }
        };
        let rewrite = path.rewritten(req.path);
        if !self.config.resources.is_empty()
            && matches!(req.method, "GET" | "HEAD")
            && let Some(doc) = self.metadata_document(req, &path)
        {
            return doc;
        }
        let allow = |reason: &'static str, requirement: Option<usize>, mode: Mode| Outcome::Allow {
            strip: Strip::ClaimHeaders,
            path: rewrite.clone(),
            set: Vec::new(),
            fresh_nonce: None,
            log: DecisionLog {
                decision: "allow",
                reason,
                requirement,
                mode,
                ..DecisionLog::default()
            },
        };
        if self.config.cors.bypass_preflight
            && req.method == "OPTIONS"
            && req.one("origin").is_some()
            && req.one("access-control-request-method").is_some()
        {
            return allow("cors_preflight", None, Mode::Enforce);
        }
        let i = match self.requirement_for(req, &path) {
            Ok(i) => i,
            Err(()) => {
                let log = DecisionLog {
                    decision: "unavailable",
                    reason: "unknown_requirement",
                    mode: self.global_mode(),
                    ..DecisionLog::default()
                };
                let reply = self.unavailable(req, log);
                return self.in_mode(reply, None);
            }
        };
        let Some(requirement) = self.requirements.get(i).cloned() else {
            return allow("no_auth", None, Mode::Enforce);
        };
        if requirement.disabled {
            return allow("no_auth", Some(i), requirement.mode);
        }
        if requirement.allow_missing && !request::presents_credentials(&req.all("authorization"), &req.all("dpop")) {
            return allow("no_credentials", Some(i), requirement.mode);
        }
        let mut log = DecisionLog {
            requirement: Some(i),
            mode: requirement.mode,
            ..DecisionLog::default()
        };
        let outcome = match self.verify(req, &path, &requirement, (store, verifier, may_fetch), &mut log) {
            Ok((set, fresh_nonce)) => {
                log.decision = "allow";
                log.reason = "ok";
                Outcome::Allow {
                    strip: Strip::ClaimHeadersAndDpop,
                    path: rewrite.clone(),
                    set,
                    fresh_nonce,
                    log,
                }
            }
            Err(Failure::Fetch(f)) => return Outcome::Fetch(f),
            Err(Failure::Unavailable(reason)) => {
                log.decision = "unavailable";
                log.reason = reason;
                self.unavailable(req, log)
            }
            Err(Failure::Denied(e)) => {
                log.decision = "deny";
                log.reason = e.reason();
                self.deny(req, Some(&path), &e, Some(&requirement), log)
            }
        };
        self.in_mode(outcome, rewrite)
    }

    fn global_mode(&self) -> Mode {
        self.requirements
            .get(self.config.default_requirement)
            .map_or(Mode::Enforce, |r| r.mode)
    }

    /// In report mode, a refusal becomes a forwarded request marked with the decision it would
    /// have had (a nonce challenge still gives the client a nonce); an allowed request is marked
    /// too.
    fn in_mode(&self, outcome: Outcome, path: Option<String>) -> Outcome {
        match outcome {
            Outcome::Allow {
                strip,
                path,
                mut set,
                fresh_nonce,
                log,
            } if log.mode == Mode::Report => {
                set.push((REPORT_HEADERS[0].to_owned(), log.decision.to_owned()));
                set.push((REPORT_HEADERS[1].to_owned(), log.reason.to_owned()));
                Outcome::Allow {
                    strip,
                    path,
                    set,
                    fresh_nonce,
                    log,
                }
            }
            Outcome::Deny { headers, log, .. } if log.mode == Mode::Report => {
                let fresh_nonce = headers.into_iter().find(|(k, _)| k == "dpop-nonce").map(|(_, v)| v);
                Outcome::Allow {
                    strip: Strip::ClaimHeaders,
                    path,
                    set: vec![
                        (REPORT_HEADERS[0].to_owned(), log.decision.to_owned()),
                        (REPORT_HEADERS[1].to_owned(), log.reason.to_owned()),
                    ],
                    fresh_nonce,
                    log,
                }
            }
            other => other,
        }
    }

    /// The requirement for a request: the route's metadata names it, or the route's name maps
    /// to it, or the first matching rule has it, or the default.
    ///
    /// # Errors
    /// If the route's metadata names a requirement the configuration does not have.
    fn requirement_for(&self, req: &Request<'_>, path: &CanonicalPath) -> Result<usize, ()> {
        let routes = &self.config.routes;
        if routes.metadata
            && let Some(name) = req.route_requirement
        {
            return self.config.requirement_named(name).ok_or(());
        }
        if let Some(i) = req.route_name.and_then(|n| routes.names.get(n)) {
            return Ok(*i);
        }
        Ok(self.config.rule_for(req.method, req.authority, path))
    }

    /// The RFC 9728 document whose well-known URL this request is for, if any.
    fn metadata_document(&self, req: &Request<'_>, path: &CanonicalPath) -> Option<Outcome> {
        let origin = self.request_origin(req).ok()?;
        let r = self
            .config
            .resources
            .iter()
            .find(|r| r.well_known_path == path.as_str() && r.origin.as_str() == origin)?;
        Some(Outcome::Deny {
            status: 200,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("cache-control".into(), "max-age=300".into()),
                ("access-control-allow-origin".into(), "*".into()),
            ],
            body: r.document.clone(),
            log: DecisionLog {
                decision: "serve",
                reason: "resource_metadata",
                ..DecisionLog::default()
            },
        })
    }

    /// The metadata URL of the resource a request is for: same origin, and the resource's path
    /// a segment prefix of the request's (the longest wins).
    fn resource_metadata_url(&self, req: &Request<'_>, path: Option<&CanonicalPath>) -> Option<&str> {
        if self.config.resources.is_empty() {
            return None;
        }
        let origin = self.request_origin(req).ok()?;
        self.config
            .resources
            .iter()
            .filter(|r| {
                r.origin.as_str() == origin
                    && (r.path.is_empty()
                        || path.is_some_and(|p| keybound_core::path::starts_with_segments(p.as_str(), &r.path)))
            })
            .max_by_key(|r| r.path.len())
            .map(|r| r.url.as_str())
    }

    /// 503 `temporarily_unavailable`.
    fn unavailable(&self, req: &Request<'_>, log: DecisionLog) -> Outcome {
        let mut headers = vec![("content-type".into(), "application/json".into())];
        self.cors(req, &mut headers);
        Outcome::Deny {
            status: 503,
            headers,
            body: r#"{"error":"temporarily_unavailable"}"#.into(),
            log,
        }
    }

    /// The CORS headers of a reply of the filter, for a request from an allowed origin.
    fn cors(&self, req: &Request<'_>, headers: &mut Vec<(String, String)>) {
        if self.config.cors.allowed_origins.is_empty() {
            return;
        }
        if let Some(h) = req.one("origin").and_then(|o| self.config.cors.reply_headers(o)) {
            headers.extend(h);
        }
    }

    fn deny(
        &self,
        req: &Request<'_>,
        path: Option<&CanonicalPath>,
        e: &Error,
        requirement: Option<&Requirement>,
        mut log: DecisionLog,
    ) -> Outcome {
        let auth = req.all("authorization");
        let (scopes, allow_bearer) = requirement.map_or((&[][..], false), |r| (&r.scopes[..], r.allow_bearer));
        let scope = request::join_scopes(scopes);
        let challenge = e.www_authenticate(&Challenge {
            scheme_used: request::scheme_of(&auth),
            bearer_allowed: allow_bearer || self.config.cert_source != CertSource::None,
            algs: &self.algs,
            realm: None,
            required_scope: &scope,
            resource_metadata: self.resource_metadata_url(req, path),
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
        self.cors(req, &mut headers);
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

    /// The scheme and authority a request was addressed to: its own, or with
    /// `dpop.trust_forwarded_headers` those of `x-forwarded-proto`/`x-forwarded-host`.
    fn scheme_and_host<'r>(&self, req: &Request<'r>) -> Result<(&'r str, &'r str), Error> {
        if !self.config.trust_forwarded_headers {
            return Ok((req.scheme, req.authority));
        }
        let one = |name: &str| match req.all(name).as_slice() {
            [v] => Ok(Some(*v)),
            [] => Ok(None),
            _ => Err(Error::InvalidHtu),
        };
        Ok((
            one("x-forwarded-proto")?.unwrap_or(req.scheme),
            one("x-forwarded-host")?.unwrap_or(req.authority),
        ))
    }

    /// The origin a request is for, as [`Origin::as_str`] spells it.
    fn request_origin(&self, req: &Request<'_>) -> Result<String, Error> {
        if let Some(base) = &self.config.external_base_url {
            return Ok(base.as_str().to_owned());
        }
        let (scheme, host) = self.scheme_and_host(req)?;
        if self.config.origins.is_empty() {
            return Ok(Origin::parse(&format!("{scheme}://{host}"))?.as_str().to_owned());
        }
        Ok(Origin::for_request(&self.config.origins, scheme, host)?
            .as_str()
            .to_owned())
    }

    /// The `htu` a proof for this request must carry: the configured origin the request is for
    /// (`dpop.origins`, see [`Origin::for_request`]; `dpop.external_base_url`) and the canonical
    /// path. Only with `dpop.dangerous_any_origin` is the client's `:authority` taken as it is.
    ///
    /// # Errors
    /// [`Error::UnknownOrigin`] if the request's authority is none of `dpop.origins`;
    /// [`Error::InvalidHtu`] if it is not a valid authority.
    fn htu(&self, req: &Request<'_>, path: &CanonicalPath) -> Result<Htu, Error> {
        if let Some(base) = &self.config.external_base_url {
            return base.htu(path);
        }
        let (scheme, host) = self.scheme_and_host(req)?;
        if self.config.origins.is_empty() {
            return Htu::from_parts(scheme, host, path.as_str());
        }
        Origin::for_request(&self.config.origins, scheme, host)?.htu(path)
    }

    fn client_cert(&self, req: &Request<'_>) -> Result<Option<X5tS256>, Error> {
        match &self.config.cert_source {
            CertSource::None => Ok(None),
            CertSource::Connection => req
                .peer_cert_digest
                .filter(|d| !d.is_empty())
                .map(X5tS256::from_hex_digest)
                .transpose(),
            CertSource::Xfcc {
                policy,
                front_proxy_uri_sans,
            } => {
                if !from_front_proxy(req, front_proxy_uri_sans) {
                    return Ok(None);
                }
                match req.all("x-forwarded-client-cert").as_slice() {
                    [] => Ok(None),
                    [one] => Xfcc::thumbprint(one, policy).map(Some),
                    _ => Err(Error::InvalidCertificate {
                        what: "several XFCC headers",
                    }),
                }
            }
        }
    }

    /// The client certificate's DER, for what a thumbprint cannot tell (PSD2 roles): the `Cert`
    /// of the XFCC element the configuration trusts. With `mtls.source: "connection"` that is the
    /// element this Envoy wrote (`set_current_client_cert_details.cert`), and it counts only when
    /// it is the connection's own certificate, so a header sent by the client changes nothing.
    fn client_certificate_der(&self, req: &Request<'_>) -> Result<Option<Vec<u8>>, Error> {
        let header = match req.all("x-forwarded-client-cert").as_slice() {
            [] => return Ok(None),
            [one] => *one,
            _ => {
                return Err(Error::InvalidCertificate {
                    what: "several XFCC headers",
                });
            }
        };
        let leaf = |policy: &XfccPolicy| -> Result<Option<Vec<u8>>, Error> {
            let xfcc = Xfcc::parse(header)?;
            let element = xfcc.select(policy)?;
            if element.cert.is_none() {
                return Ok(None);
            }
            Ok(element.certificates()?.into_iter().next())
        };
        match &self.config.cert_source {
            CertSource::None => Ok(None),
            CertSource::Xfcc {
                policy,
                front_proxy_uri_sans,
            } => {
                if !from_front_proxy(req, front_proxy_uri_sans) {
                    return Ok(None);
                }
                leaf(policy)
            }
            CertSource::Connection => {
                let Some(digest) = req.peer_cert_digest.filter(|d| !d.is_empty()) else {
                    return Ok(None);
                };
                let peer = X5tS256::from_hex_digest(digest)?;
                Ok(leaf(&XfccPolicy::default())?.filter(|der| X5tS256::from_der(der) == peer))
            }
        }
    }

    /// Checks that the client certificate carries every PSD2 role in `roles`.
    fn check_psd2_roles(&self, req: &Request<'_>, roles: &[PspRole]) -> Result<(), Error> {
        let der = self.client_certificate_der(req)?.ok_or(Error::Psd2RoleMissing)?;
        let attributes = psd2_from_certificate(&der)?.ok_or(Error::Psd2RoleMissing)?;
        if roles.iter().all(|r| attributes.has(*r)) {
            Ok(())
        } else {
            Err(Error::Psd2RoleMissing)
        }
    }

    /// Whether verified tokens carry extra headers (`forward.claims`, `forward.payload_header`).
    fn wants_extra(&self) -> bool {
        !self.config.forward_claims.is_empty() || self.config.payload_header.is_some()
    }

    /// The extra headers for a verified token: its claims by JSON pointer, and its payload.
    fn extra(&self, claims: Option<&serde_json::Value>, payload: impl FnOnce() -> String) -> Rc<[(String, String)]> {
        extra_headers(&self.config, claims, payload)
    }

    fn verify(
        &mut self,
        req: &Request<'_>,
        path: &CanonicalPath,
        requirement: &Requirement,
        (store, verifier, may_fetch): (&dyn SharedStore, &dyn Verifier, bool),
        log: &mut DecisionLog,
    ) -> Result<Allowed, Failure> {
        let htu = self.htu(req, path)?;
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
            allow_bearer: requirement.allow_bearer,
            required_scopes: &requirement.scopes,
        };
        let wants_extra = self.wants_extra();
        let (config, keys, tokens) = (&self.config, &mut self.keys, &mut self.tokens);
        let memo = Some(&mut self.proofs);
        let now = req.now;
        let mut hit = false;
        // The token's client, for the log line even when a later check (the binding) fails.
        let mut client_id: Option<String> = None;
        // The token's extra headers (`forward.claims`, `forward.payload_header`).
        let mut extra: Option<Rc<[(String, String)]>> = None;
        // Set when the token cannot be decided without the network (or the network failed).
        let mut need: Option<Failure> = None;
        let verified = verify_request_with(&resource, &route, now, verifier, memo, |t| {
            if let Some(cached) = tokens.get(t) {
                if cached.usable(now) {
                    let from = cached.issuer.map_or(IssuerRef::Introspection, IssuerRef::Jwt);
                    if !requirement.trusts(from) {
                        return Err(Error::IssuerMismatch);
                    }
                    hit = true;
                    client_id = cached.result.as_ref().ok().and_then(|v| v.claims().client_id.clone());
                    extra.clone_from(&cached.extra);
                    return cached.result.clone();
                }
                tokens.remove(t);
            }
            if t.split('.').count() != 3 {
                // Not a JWT: an opaque token, for introspection if configured.
                if config.introspection.is_none() {
                    return Err(Error::Malformed {
                        part: keybound_core::Part::AccessToken,
                        what: "not a JWT",
                    });
                }
                if !requirement.trusts(IssuerRef::Introspection) {
                    return Err(Error::IssuerMismatch);
                }
                need = Some(if may_fetch {
                    Failure::Fetch(Fetch::Introspect(t.to_owned()))
                } else {
                    Failure::Unavailable("introspection_unavailable")
                });
                return Err(Error::TokenInactive);
            }
            let iss = token::unverified_issuer(t).ok_or(Error::Malformed {
                part: keybound_core::Part::AccessToken,
                what: "JWT without iss",
            })?;
            let (i, issuer) = config
                .issuers
                .iter()
                .enumerate()
                .find(|(_, i)| i.policy.issuer == iss)
                .ok_or(Error::IssuerMismatch)?;
            if !requirement.trusts(IssuerRef::Jwt(i)) {
                return Err(Error::IssuerMismatch);
            }
            let state = keys.get_mut(i).ok_or(Error::IssuerMismatch)?;
            let remote = match &issuer.keys {
                Keys::Remote(r) => Some(r),
                Keys::Inline(_) => None,
            };
            if let Some(remote) = remote
                && state.jwks.is_none()
            {
                sync_keys(state, remote, store, tokens, i);
            }
            let mut result = match &state.jwks {
                Some(jwks) => token::verify_jwt(t, jwks, &issuer.policy, now, verifier),
                None => Err(Error::UnknownKey {
                    part: keybound_core::Part::AccessToken,
                }),
            };
            if let (Err(Error::UnknownKey { .. }), Some(remote)) = (&result, remote) {
                // Rotation at the issuer: another VM may have the new keys already; otherwise
                // fetch them (rate-limited) and decide again.
                if sync_keys(state, remote, store, tokens, i)
                    && let Some(jwks) = &state.jwks
                {
                    result = token::verify_jwt(t, jwks, &issuer.policy, now, verifier);
                } else if may_fetch && claim_fetch(store, remote, now) {
                    need = Some(Failure::Fetch(Fetch::Jwks(i)));
                } else if state.jwks.is_none() {
                    need = Some(Failure::Unavailable("jwks_unavailable"));
                }
            }
            let v = Rc::new(result?);
            client_id = v.claims().client_id.clone();
            if wants_extra {
                let claims = if config.forward_claims.is_empty() {
                    None
                } else {
                    token::jwt_claims(t)
                };
                let payload = || t.split('.').nth(1).unwrap_or_default().to_owned();
                extra = Some(extra_headers(config, claims.as_ref(), payload));
            }
            if config.token_cache_entries > 0 {
                let entry = Cached {
                    result: Ok(v.clone()),
                    leeway: issuer.policy.leeway,
                    until: u64::MAX,
                    issuer: Some(i),
                    extra: extra.clone(),
                };
                let limits = (config.token_cache_entries, config.token_cache_max_age);
                cache_put(tokens, limits, t.into(), entry, now);
            }
            Ok(v)
        });
        log.token_cache_hit = hit;
        log.client_id = client_id;
        if let (Err(_), Some(need)) = (&verified, need) {
            return Err(need);
        }
        let verified = verified?;
        requirement.binding.check(verified.binding(), verified.token())?;
        verified
            .token()
            .require_authorization_detail_types(&requirement.authorization_details_types)?;
        if !requirement.psd2_roles.is_empty() {
            self.check_psd2_roles(req, &requirement.psd2_roles)?;
        }
        let claims = verified.token().claims();
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
        let (binding, jkt, x5t) = match verified.binding() {
            Binding::Dpop(j) => (
                "dpop",
                Some(j.to_string()),
                verified.token().x5t_s256().map(ToString::to_string),
            ),
            Binding::Certificate(c) => ("mtls", None, Some(c.to_string())),
            _ => ("bearer", None, None),
        };
        log.binding = Some(binding);
        let state = self.config.filter_state;
        let mut set = Vec::new();
        let mut put = |claim: &str, value: Option<String>| {
            let Some(v) = value else { return };
            if state {
                let name = if claim == "x5t#S256" { "x5t_s256" } else { claim };
                log.claims.push((name.to_owned(), v.clone()));
            }
            if let Some(h) = self.config.forward_headers.get(claim) {
                set.push((h.clone(), v));
            }
        };
        put("sub", claims.sub.clone());
        put("client_id", claims.client_id.clone());
        put("scope", Some(claims.scopes.join(" ")));
        put("jkt", jkt);
        put("x5t#S256", x5t);
        put("binding", Some(binding.into()));
        if let Some(extra) = extra {
            for (h, v) in extra.iter() {
                if state && self.config.payload_header.as_deref() != Some(h.as_str()) {
                    log.claims.push((h.clone(), v.clone()));
                }
                set.push((h.clone(), v.clone()));
            }
        }
        if self.config.authorization == AuthorizationForward::Bearer
            && let Ok(creds) = request::parse_authorization(&auth)
            && creds.scheme == request::Scheme::DPoP
        {
            set.push(("authorization".into(), format!("Bearer {}", creds.token)));
        }
        Ok((set, fresh_nonce))
    }
}

/// Whether XFCC counts on this request: only from the front proxy. When its identity is
/// configured (`front_proxy_uri_sans`), only on a connection whose client certificate has it (a
/// client connecting directly with its own certificate and a forged header is not the front
/// proxy).
fn from_front_proxy(req: &Request<'_>, front_proxy_uri_sans: &[String]) -> bool {
    front_proxy_uri_sans.is_empty()
        || req
            .peer_uri_san
            .is_some_and(|san| front_proxy_uri_sans.iter().any(|s| s == san))
}

/// The headers of `forward.claims` (each claim by its JSON pointer, when present) and
/// `forward.payload_header` (the verified payload, base64url).
fn extra_headers(
    config: &Config,
    claims: Option<&serde_json::Value>,
    payload: impl FnOnce() -> String,
) -> Rc<[(String, String)]> {
    let mut out = Vec::new();
    if let Some(claims) = claims {
        for (header, pointer) in &config.forward_claims {
            if let Some(v) = token::claim_text(claims, pointer) {
                out.push((header.clone(), v));
            }
        }
    }
    if let Some(h) = &config.payload_header {
        out.push((h.clone(), payload()));
    }
    out.into()
}

/// Headers to set upstream, and a fresh nonce for the response.
type Allowed = (Vec<(String, String)>, Option<String>);

enum Failure {
    Denied(Error),
    Unavailable(&'static str),
    Fetch(Fetch),
}

/// Inserts into the bounded token cache, `(max entries, max age in seconds)`: the entry is used
/// at most `max age` from now; when the cache is full, expired entries go first, then
/// everything (the cache only saves work; correctness never depends on it).
fn cache_put(
    tokens: &mut HashMap<Box<str>, Cached>,
    (max, max_age): (usize, u64),
    key: Box<str>,
    mut entry: Cached,
    now: u64,
) {
    entry.until = entry.until.min(now.saturating_add(max_age));
    if tokens.len() >= max {
        tokens.retain(|_, c| c.usable(now));
        if tokens.len() >= max {
            tokens.clear();
        }
    }
    tokens.insert(key, entry);
}

fn jwks_key(remote: &RemoteJwks) -> String {
    format!("kb/jwks/{}", remote.shared_id)
}

fn lock_key(remote: &RemoteJwks) -> String {
    format!("kb/jwks-lock/{}", remote.shared_id)
}

/// A header-name byte folded as upstream frameworks fold it: lower case, `_` as `-`.
fn fold(b: u8) -> u8 {
    if b == b'_' { b'-' } else { b.to_ascii_lowercase() }
}

/// A header name folded ([`fold`]).
fn fold_header_name(name: &str) -> String {
    name.bytes().map(|b| char::from(fold(b))).collect()
}

/// Whether `name` folds to `folded`, without allocating.
fn folded_eq(name: &str, folded: &str) -> bool {
    name.len() == folded.len() && name.bytes().map(fold).eq(folded.bytes())
}

/// Drops the cached verdicts of issuer `i` whose signing key is not in its (new) key set: a
/// verdict never outlives the key that produced it.
fn forget_tokens_of_removed_keys(tokens: &mut HashMap<Box<str>, Cached>, i: usize, state: &KeyState) {
    let Some(jwks) = &state.jwks else {
        return;
    };
    tokens.retain(|_, c| {
        c.issuer != Some(i)
            || c.result.as_ref().is_ok_and(|t| {
                t.signing_key()
                    .is_some_and(|key| jwks.keys().iter().any(|k| k.key() == key))
            })
    });
}

/// `<version> <fetched_at>` from the first line of a shared JWKS value.
fn shared_header(value: &[u8]) -> Option<(u64, u64)> {
    let end = value.iter().position(|&b| b == b'\n')?;
    let head = std::str::from_utf8(value.get(..end)?).ok()?;
    let (version, fetched_at) = head.split_once(' ')?;
    Some((version.parse().ok()?, fetched_at.parse().ok()?))
}

/// Replaces issuer `i`'s keys in this VM, and forgets the cached verdicts whose key left the set:
/// a verdict never outlives the key that produced it.
fn adopt_keys(state: &mut KeyState, new: KeyState, tokens: &mut HashMap<Box<str>, Cached>, i: usize) {
    *state = new;
    forget_tokens_of_removed_keys(tokens, i, state);
}

/// Adopts the shared JWKS of remote issuer `i` if it is newer than this VM's ([`adopt_keys`]).
/// Returns whether it did.
fn sync_keys(
    state: &mut KeyState,
    remote: &RemoteJwks,
    store: &dyn SharedStore,
    tokens: &mut HashMap<Box<str>, Cached>,
    i: usize,
) -> bool {
    let Ok((Some(value), _)) = store.get(&jwks_key(remote)) else {
        return false;
    };
    let Some((version, fetched_at)) = shared_header(&value) else {
        return false;
    };
    if version <= state.version {
        return false;
    }
    let json = value
        .iter()
        .position(|&b| b == b'\n')
        .and_then(|n| value.get(n + 1..))
        .and_then(|j| std::str::from_utf8(j).ok());
    match json.map(|j| parse_jwks(j, "shared JWKS")) {
        Some(Ok(jwks)) => {
            let new = KeyState {
                jwks: Some(jwks),
                version,
                fetched_at,
            };
            adopt_keys(state, new, tokens, i);
            true
        }
        _ => false,
    }
}

/// Claims the instance-wide right to fetch a remote issuer's JWKS now: succeeds if the last
/// attempt is at least `jwks_min_refetch_seconds` old and this VM moves its time forward first
/// (CAS).
fn claim_fetch(store: &dyn SharedStore, remote: &RemoteJwks, now: u64) -> bool {
    let min_interval = remote.min_refetch_seconds;
    let Ok((value, cas)) = store.get(&lock_key(remote)) else {
        return false;
    };
    let last: u64 = value
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if last != 0 && now < last.saturating_add(min_interval) {
        return false;
    }
    matches!(
        store.set(&lock_key(remote), now.to_string().as_bytes(), cas),
        Ok(Cas::Written)
    )
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Denied(e)
    }
}
