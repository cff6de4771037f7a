//! The gate's decisions for the paths the real-Envoy tests do not reach: step-rotated nonces, the
//! verified-token cache, certificates from the connection or from XFCC, and failing closed.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers fail the test on bad fixtures"
)]

mod common;

use keybound_core::cert::X5tS256;
use keybound_core::dpop::{self, NewProof};
use keybound_core::jws::{self, P256Signer, RustCrypto, Signer};
use keybound_core::nonce::NonceSecrets;
use keybound_filter::config::Config;
use keybound_filter::gate::{Gate, Outcome, Request, Strip};
use serde_json::{Value, json};

use common::Store;

const NOW: u64 = 1_700_000_000;
const ISS: &str = "https://as.example.com";
const AUD: &str = "https://rs.example.com";
const SECRET: &str = "Z2F0ZS10ZXN0LXNlY3JldC1nYXRlLXRlc3Qtc2VjcmV0LWdhdGU";

fn issuer() -> P256Signer {
    P256Signer::from_bytes(&[200; 32]).unwrap()
}

fn gate(extra: Value) -> (Gate, Store) {
    let mut jwk: Value = serde_json::from_str(&issuer().public_key().to_json()).unwrap();
    jwk["kid"] = json!("k1");
    let mut c = json!({
        "issuers": [{"issuer": ISS, "audiences": [AUD], "jwks": {"keys": [jwk]}}],
        "rules": [{"prefix": "/health", "auth": "none"}],
        "dpop": {"origins": ["https://rs.example.com"]},
    });
    for (k, v) in extra.as_object().unwrap() {
        if k == "dpop" {
            // Merged into the default, so tests keep the origins unless they replace them.
            for (dk, dv) in v.as_object().unwrap() {
                c["dpop"][dk] = dv.clone();
            }
        } else {
            c[k] = v.clone();
        }
    }
    let gate = Gate::new(Config::parse(c.to_string().as_bytes()).unwrap());
    let store = Store::default();
    gate.replay().create_buckets(&store).unwrap();
    (gate, store)
}

fn token(cnf: Value, exp: u64) -> String {
    let claims = json!({"iss": ISS, "aud": AUD, "sub": "alice", "client_id": "c1", "iat": NOW - 5, "exp": exp,
        "jti": "t1", "scope": "read", "cnf": cnf});
    jws::sign_json(&issuer(), Some("at+jwt"), Some("k1"), &claims).unwrap()
}

fn proof(key: &dyn Signer, token: &str, jti: &str, nonce: Option<&str>, iat: u64) -> String {
    proof_for_url(key, "https://rs.example.com/api", token, jti, nonce, iat)
}

/// A proof for `GET <url>`.
fn proof_for_url(key: &dyn Signer, url: &str, token: &str, jti: &str, nonce: Option<&str>, iat: u64) -> String {
    dpop::create_proof(
        key,
        &NewProof {
            htm: "GET",
            htu: url,
            iat,
            jti,
            access_token: Some(token),
            nonce,
        },
    )
    .unwrap()
}

fn decide(gate: &mut Gate, store: &Store, headers: &[(&str, &str)], digest: Option<&str>, now: u64) -> Outcome {
    decide_req(
        gate,
        store,
        &Req {
            digest,
            now,
            ..Req::default()
        },
        headers,
    )
}

/// The parts of a request the tests vary.
struct Req<'a> {
    method: &'a str,
    authority: &'a str,
    path: &'a str,
    digest: Option<&'a str>,
    uri_san: Option<&'a str>,
    route_name: Option<&'a str>,
    route_requirement: Option<&'a str>,
    now: u64,
}

impl<'a> Req<'a> {
    /// The default request, for `path`.
    fn path(path: &'a str) -> Self {
        Req { path, ..Req::default() }
    }

    /// The default request, for `authority`.
    fn authority(authority: &'a str) -> Self {
        Req {
            authority,
            ..Req::default()
        }
    }
}

impl Default for Req<'_> {
    fn default() -> Self {
        Req {
            method: "GET",
            authority: "rs.example.com",
            path: "/api",
            digest: None,
            uri_san: None,
            route_name: None,
            route_requirement: None,
            now: NOW,
        }
    }
}

fn owned(headers: &[(&str, &str)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn decide_req(gate: &mut Gate, store: &Store, r: &Req<'_>, headers: &[(&str, &str)]) -> Outcome {
    let headers = owned(headers);
    let req = Request {
        method: r.method,
        scheme: "https",
        authority: r.authority,
        path: r.path,
        headers: &headers,
        peer_cert_digest: r.digest,
        peer_uri_san: r.uri_san,
        route_name: r.route_name,
        route_requirement: r.route_requirement,
        now: r.now,
    };
    gate.decide(&req, store, &RustCrypto)
}

fn status(o: &Outcome) -> u16 {
    match o {
        Outcome::Allow { .. } => 200,
        Outcome::Deny { status, .. } => *status,
        Outcome::Fetch(f) => panic!("unexpected fetch {f:?}"),
    }
}

fn header<'a>(o: &'a Outcome, name: &str) -> Option<&'a str> {
    let list = match o {
        Outcome::Allow { set, .. } => set,
        Outcome::Deny { headers, .. } => headers,
        Outcome::Fetch(f) => panic!("unexpected fetch {f:?}"),
    };
    list.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn reason(o: &Outcome) -> &'static str {
    match o {
        Outcome::Allow { log, .. } | Outcome::Deny { log, .. } => log.reason,
        Outcome::Fetch(f) => panic!("unexpected fetch {f:?}"),
    }
}

#[test]
fn a_nonce_from_the_previous_step_is_accepted_with_a_fresh_one() {
    let (mut gate, store) =
        gate(json!({"dpop": {"nonce": {"mode": "required", "secrets": [SECRET], "step_seconds": 60}}}));
    let secrets = NonceSecrets::from_config(&[SECRET], 60, "s").unwrap();
    let key = P256Signer::from_bytes(&[1; 32]).unwrap();
    let t = token(json!({"jkt": key.public_key().thumbprint().to_string()}), NOW + 600);
    let auth = format!("DPoP {t}");
    let current = secrets.issue(NOW);
    let o = decide(
        &mut gate,
        &store,
        &[
            ("authorization", &auth),
            ("dpop", &proof(&key, &t, "a", Some(&current), NOW)),
        ],
        None,
        NOW,
    );
    assert!(matches!(o, Outcome::Allow { fresh_nonce: None, .. }), "{o:?}");
    // A minute later the same nonce is from the previous step: accepted, and a fresh one is sent.
    let later = NOW + 60;
    let o = decide(
        &mut gate,
        &store,
        &[
            ("authorization", &auth),
            ("dpop", &proof(&key, &t, "b", Some(&current), later)),
        ],
        None,
        later,
    );
    match o {
        Outcome::Allow {
            fresh_nonce: Some(n), ..
        } => assert_eq!(n, secrets.issue(later)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_reused_token_comes_from_the_cache_until_it_expires() {
    let (mut gate, store) = gate(json!({}));
    let key = P256Signer::from_bytes(&[2; 32]).unwrap();
    let t = token(json!({"jkt": key.public_key().thumbprint().to_string()}), NOW + 100);
    let auth = format!("DPoP {t}");
    let hit = |o: &Outcome| matches!(o, Outcome::Allow { log, .. } if log.token_cache_hit);
    let o = decide(
        &mut gate,
        &store,
        &[("authorization", &auth), ("dpop", &proof(&key, &t, "1", None, NOW))],
        None,
        NOW,
    );
    assert_eq!(status(&o), 200);
    assert!(!hit(&o));
    let o = decide(
        &mut gate,
        &store,
        &[("authorization", &auth), ("dpop", &proof(&key, &t, "2", None, NOW))],
        None,
        NOW,
    );
    assert!(hit(&o), "{o:?}");
    assert_eq!(gate.cached_tokens(), 1);
    // Past exp + leeway the cached entry is not used; the token is verified again and refused.
    let late = NOW + 111;
    let o = decide(
        &mut gate,
        &store,
        &[("authorization", &auth), ("dpop", &proof(&key, &t, "3", None, late))],
        None,
        late,
    );
    assert_eq!((status(&o), reason(&o)), (401, "token_expired"));
}

#[test]
fn certificate_bound_tokens_over_the_connection() {
    let (mut gate, store) = gate(json!({"mtls": {"source": "connection"}}));
    let der = b"a client certificate";
    let x5t = X5tS256::from_der(der);
    let hex: String = x5t.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let other: String = X5tS256::from_der(b"another")
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let t = token(json!({"x5t#S256": x5t.to_string()}), NOW + 600);
    let auth = format!("Bearer {t}");
    let o = decide(&mut gate, &store, &[("authorization", &auth)], Some(&hex), NOW);
    assert_eq!(status(&o), 200, "{o:?}");
    assert_eq!(header(&o, "x-keybound-binding"), Some("mtls"));
    assert_eq!(header(&o, "x-keybound-x5t-s256"), Some(x5t.to_string().as_str()));
    let o = decide(&mut gate, &store, &[("authorization", &auth)], Some(&other), NOW);
    assert_eq!((status(&o), reason(&o)), (401, "certificate_mismatch"));
    assert_eq!(header(&o, "www-authenticate"), Some(r#"Bearer error="invalid_token""#));
    // The log line names the token's client and the certificate presented, for the SIEM.
    let Outcome::Deny { log, .. } = &o else { panic!("{o:?}") };
    assert!(log.token_cache_hit);
    assert_eq!(log.client_id.as_deref(), Some("c1"));
    assert_eq!(
        log.x5t.as_deref(),
        Some(X5tS256::from_der(b"another").to_string().as_str())
    );
    let o = decide(&mut gate, &store, &[("authorization", &auth)], None, NOW);
    assert_eq!((status(&o), reason(&o)), (401, "certificate_required"));
}

#[test]
fn xfcc_is_trusted_only_from_the_configured_hop() {
    let x5t = X5tS256::from_der(b"client cert");
    let hex: String = x5t.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let t = token(json!({"x5t#S256": x5t.to_string()}), NOW + 600);
    let auth = format!("Bearer {t}");
    let trusted = format!("By=spiffe://front;Hash={hex}");
    let forged = format!("By=spiffe://evil;Hash={hex}");

    let (mut g, store) = gate(json!({"mtls": {"source": "xfcc", "expected_by": "spiffe://front"}}));
    let o = decide(
        &mut g,
        &store,
        &[("authorization", &auth), ("x-forwarded-client-cert", &trusted)],
        None,
        NOW,
    );
    assert_eq!(status(&o), 200, "{o:?}");
    let o = decide(
        &mut g,
        &store,
        &[("authorization", &auth), ("x-forwarded-client-cert", &forged)],
        None,
        NOW,
    );
    assert_eq!((status(&o), reason(&o)), (400, "invalid_certificate"));
    let both = [
        ("authorization", auth.as_str()),
        ("x-forwarded-client-cert", &trusted),
        ("x-forwarded-client-cert", &trusted),
    ];
    assert_eq!(status(&decide(&mut g, &store, &both, None, NOW)), 400);

    // Without an XFCC source, a client-supplied XFCC header is ignored: the token stays unproven.
    let (mut g, store) = gate(json!({}));
    let o = decide(
        &mut g,
        &store,
        &[("authorization", &auth), ("x-forwarded-client-cert", &trusted)],
        None,
        NOW,
    );
    assert_eq!((status(&o), reason(&o)), (401, "certificate_required"));
}

#[test]
fn a_full_replay_cache_fails_closed_and_a_missing_one_too() {
    let (mut g, store) = gate(json!({"replay_cache": {"buckets": 1, "entries_per_bucket": 1}}));
    let key = P256Signer::from_bytes(&[3; 32]).unwrap();
    let t = token(json!({"jkt": key.public_key().thumbprint().to_string()}), NOW + 600);
    let auth = format!("DPoP {t}");
    assert_eq!(
        status(&decide(
            &mut g,
            &store,
            &[("authorization", &auth), ("dpop", &proof(&key, &t, "1", None, NOW))],
            None,
            NOW
        )),
        200
    );
    let o = decide(
        &mut g,
        &store,
        &[("authorization", &auth), ("dpop", &proof(&key, &t, "2", None, NOW))],
        None,
        NOW,
    );
    assert_eq!((status(&o), reason(&o)), (503, "replay_cache_full"));
    // A store whose buckets were never created refuses too.
    let empty = Store::default();
    let o = decide(
        &mut g,
        &empty,
        &[("authorization", &auth), ("dpop", &proof(&key, &t, "3", None, NOW))],
        None,
        NOW,
    );
    assert_eq!((status(&o), reason(&o)), (503, "replay_cache_error"));
}

#[test]
fn unknown_issuers_and_opaque_tokens_are_refused_and_no_auth_routes_still_strip() {
    let (mut g, store) = gate(json!({}));
    let other = jws::sign_json(
        &issuer(),
        Some("at+jwt"),
        Some("k1"),
        &json!({"iss": "https://evil.example"}),
    )
    .unwrap();
    let o = decide(
        &mut g,
        &store,
        &[("authorization", &format!("Bearer {other}"))],
        None,
        NOW,
    );
    assert_eq!((status(&o), reason(&o)), (401, "token_issuer_mismatch"));
    let o = decide(&mut g, &store, &[("authorization", "Bearer opaque-token")], None, NOW);
    assert_eq!((status(&o), reason(&o)), (401, "token_malformed"));

    let headers = [("x-keybound-sub", "mallory"), ("dpop", "x")];
    let o = decide_req(&mut g, &store, &Req::path("/health"), &headers);
    let headers = owned(&headers);
    match o {
        Outcome::Allow { strip, .. } => {
            assert_eq!(strip, Strip::ClaimHeaders);
            assert_eq!(g.strip_names(strip, &headers), ["x-keybound-sub"]);
            assert_eq!(
                g.strip_names(Strip::ClaimHeadersAndDpop, &headers),
                ["x-keybound-sub", "dpop"]
            );
        }
        other => panic!("{other:?}"),
    }
}

/// Issue 12, item 2: a proof with `iat = now - max_age` is acceptable during that whole second;
/// it must be accepted exactly once then (its record used to count as expired at that second).
#[test]
fn a_proof_at_the_edge_of_its_window_is_accepted_once() {
    let (mut gate, store) = gate(json!({}));
    let key = P256Signer::from_bytes(&[5; 32]).unwrap();
    let t = token(json!({"jkt": key.public_key().thumbprint().to_string()}), NOW + 600);
    let auth = format!("DPoP {t}");
    let p = proof(&key, &t, "edge-of-window", None, NOW - 300);
    let headers = [("authorization", auth.as_str()), ("dpop", p.as_str())];
    let first = decide(&mut gate, &store, &headers, None, NOW);
    assert_eq!(status(&first), 200, "{first:?}");
    for _ in 0..3 {
        let again = decide(&mut gate, &store, &headers, None, NOW);
        assert_eq!((status(&again), reason(&again)), (401, "proof_replayed"));
    }
    // A second later the proof is outside its window.
    let late = decide(&mut gate, &store, &headers, None, NOW + 1);
    assert_eq!((status(&late), reason(&late)), (401, "proof_iat_out_of_window"));
}

/// Issue 12, item 1: rules matched the raw `:path`. `/health/../api` was public at the gateway and
/// `/api` at any upstream that resolves dot segments. Rules match the canonical path, the
/// upstream gets it, and a path without a safe canonical form is refused before any rule.
#[test]
fn rules_match_the_canonical_path_and_ambiguous_paths_are_refused() {
    let (mut g, store) = gate(json!({}));
    for path in [
        "/health/../api",
        "/health/%2e%2e/api",
        "/health/.%2E/api/accounts?x=1",
        "//health/./../api",
    ] {
        let o = decide_req(&mut g, &store, &Req::path(path), &[]);
        assert_eq!((status(&o), reason(&o)), (401, "missing_credentials"), "{path}: {o:?}");
    }
    for path in [
        "/health/..%2fapi",
        "/health%2f..%2fapi",
        "/health\\..\\api",
        "/health/..;/api",
        "/../api",
        "/health%00",
        "/health/%zz",
        "/health//../api",
        "/api%3F/../health",
        "/api%23",
        "/api%3Bx",
    ] {
        let o = decide_req(&mut g, &store, &Req::path(path), &[]);
        assert_eq!((status(&o), reason(&o)), (400, "path_not_canonical"), "{path}: {o:?}");
        let Outcome::Deny { body, .. } = &o else {
            panic!("{o:?}")
        };
        assert_eq!(body, r#"{"error":"invalid_request"}"#);
    }
    // A public route: the upstream receives the canonical path (with the query as it was).
    for (path, forwarded) in [
        ("/health", None),
        ("/health?probe=1", None),
        ("/api/../health?x=/../y", Some("/health?x=/../y")),
        ("//health//live", Some("/health/live")),
        ("/%68ealth", Some("/health")),
    ] {
        match decide_req(&mut g, &store, &Req::path(path), &[]) {
            Outcome::Allow { path: p, log, .. } => {
                assert_eq!(log.reason, "no_auth", "{path}");
                assert_eq!(p.as_deref(), forwarded, "{path}");
            }
            other => panic!("{path}: {other:?}"),
        }
    }
    // `/healthX` is not under `/health`.
    let o = decide_req(&mut g, &store, &Req::path("/healthX"), &[]);
    assert_eq!(status(&o), 401);
}

/// Issue 12, item 1: a DPoP proof is for the canonical path, so a client that calls a
/// non-canonical spelling of a URL with a proof for the canonical URL is accepted, and the
/// upstream gets the canonical path.
#[test]
fn a_proof_for_the_canonical_url_matches_a_non_canonical_spelling() {
    let (mut g, store) = gate(json!({}));
    let key = P256Signer::from_bytes(&[7; 32]).unwrap();
    let t = token(json!({"jkt": key.public_key().thumbprint().to_string()}), NOW + 600);
    let auth = format!("DPoP {t}");
    let p = proof(&key, &t, "canonical-1", None, NOW);
    let o = decide_req(
        &mut g,
        &store,
        &Req::path("/x/../api"),
        &[("authorization", &auth), ("dpop", &p)],
    );
    match o {
        Outcome::Allow { path, .. } => assert_eq!(path.as_deref(), Some("/api")),
        other => panic!("{other:?}"),
    }
}

/// Issue 12, item 3: a client-sent `x_keybound_sub: admin` reached the upstream, where WSGI, Rack
/// and CGI read it as `HTTP_X_KEYBOUND_SUB`, the same variable as the verified header. Every
/// header equal to a forwarded name modulo case and `_`/`-` is removed.
#[test]
fn claim_header_variants_are_stripped() {
    let (mut g, store) = gate(json!({}));
    let key = P256Signer::from_bytes(&[8; 32]).unwrap();
    let t = token(json!({"jkt": key.public_key().thumbprint().to_string()}), NOW + 600);
    let auth = format!("DPoP {t}");
    let p = proof(&key, &t, "variants-1", None, NOW);
    let spoofed = [
        ("x_keybound_sub", "admin"),
        ("X_KEYBOUND_SUB", "admin"),
        ("x-keybound_sub", "admin"),
        ("X-Keybound-Sub", "admin"),
        ("x_keybound_scope", "admin"),
        ("x__keybound_sub", "kept: not the same name"),
        ("d_pop", "kept: not a forwarded header"),
    ];
    let mut headers: Vec<(&str, &str)> = vec![("authorization", &auth), ("dpop", &p)];
    headers.extend(spoofed);
    let o = decide(&mut g, &store, &headers, None, NOW);
    let Outcome::Allow { strip, .. } = &o else {
        panic!("{o:?}")
    };
    let all = owned(&headers);
    let names = g.strip_names(*strip, &all);
    assert_eq!(
        names,
        [
            "dpop",
            "x_keybound_sub",
            "X_KEYBOUND_SUB",
            "x-keybound_sub",
            "X-Keybound-Sub",
            "x_keybound_scope"
        ]
    );
    // The same on a public route, where no token is checked.
    let o = decide_req(&mut g, &store, &Req::path("/health"), &spoofed);
    let Outcome::Allow { strip, .. } = &o else {
        panic!("{o:?}")
    };
    let all = owned(&spoofed);
    assert_eq!(
        g.strip_names(*strip, &all),
        [
            "x_keybound_sub",
            "X_KEYBOUND_SUB",
            "x-keybound_sub",
            "X-Keybound-Sub",
            "x_keybound_scope"
        ]
    );
}

/// Issue 12, item 4: `htu` was built from the client's `:authority`, so a proof captured at one
/// API was accepted by another gateway when the attacker set `Host`. The gateway checks proofs
/// against its configured origins and refuses requests for any other authority.
#[test]
fn proofs_are_checked_against_the_configured_origins() {
    let (mut g, store) = gate(json!({"dpop": {"origins": ["https://rs.example.com", "https://api.example.com:8443"]}}));
    let key = P256Signer::from_bytes(&[9; 32]).unwrap();
    let t = token(json!({"jkt": key.public_key().thumbprint().to_string()}), NOW + 600);
    let auth = format!("DPoP {t}");
    let proof_for = |url: &str, jti: &str| proof_for_url(&key, url, &t, jti, None, NOW);
    // A proof captured at another API, replayed here with that API's Host: refused.
    let captured = proof_for("https://other-api.example.com/api", "o-1");
    let o = decide_req(
        &mut g,
        &store,
        &Req::authority("other-api.example.com"),
        &[("authorization", &auth), ("dpop", &captured)],
    );
    assert_eq!((status(&o), reason(&o)), (400, "unknown_origin"), "{o:?}");
    // Each configured origin, in any spelling of its authority, is served.
    for (authority, url) in [
        ("rs.example.com", "https://rs.example.com/api"),
        ("RS.example.com:443", "https://rs.example.com/api"),
        ("api.example.com:8443", "https://api.example.com:8443/api"),
    ] {
        let p = proof_for(url, &format!("ok-{authority}"));
        let o = decide_req(
            &mut g,
            &store,
            &Req::authority(authority),
            &[("authorization", &auth), ("dpop", &p)],
        );
        assert_eq!(status(&o), 200, "{authority}: {o:?}");
    }
    // A proof for one origin does not pass at another.
    let p = proof_for("https://rs.example.com/api", "cross-1");
    let o = decide_req(
        &mut g,
        &store,
        &Req::authority("api.example.com:8443"),
        &[("authorization", &auth), ("dpop", &p)],
    );
    assert_eq!((status(&o), reason(&o)), (401, "proof_htu_mismatch"));
    for authority in [
        "api.example.com",
        "evil.example",
        "rs.example.com:8443",
        "rs.example.com.",
        "rs.example.com:443:443",
        "",
        "a@rs.example.com",
    ] {
        let o = decide_req(&mut g, &store, &Req::authority(authority), &[("authorization", &auth)]);
        assert_eq!((status(&o), reason(&o)), (400, "unknown_origin"), "{authority:?}");
    }
    // A public route does not depend on the authority.
    let o = decide_req(
        &mut g,
        &store,
        &Req {
            authority: "10.0.0.7:8080",
            path: "/health",
            ..Req::default()
        },
        &[],
    );
    assert_eq!(status(&o), 200);
}

/// Issue 12, item 10: XFCC trust rested only on the `By` element, which whoever writes the header
/// chooses. With `front_proxy_uri_sans`, XFCC counts only on a connection whose client
/// certificate is the front proxy's: a client that connects directly with its own valid
/// certificate and a forged XFCC carrying the victim's certificate hash is refused.
#[test]
fn xfcc_counts_only_on_the_front_proxys_connection() {
    let victim = X5tS256::from_der(b"victim cert");
    let hex: String = victim.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let stolen = token(json!({"x5t#S256": victim.to_string()}), NOW + 600);
    let auth = format!("Bearer {stolen}");
    let forged = format!("By=spiffe://front;Hash={hex}");
    let (mut g, store) = gate(json!({"mtls": {"source": "xfcc", "expected_by": "spiffe://front",
        "front_proxy_uri_sans": ["spiffe://cluster.local/ns/edge/sa/front-proxy"]}}));
    let headers = [("authorization", auth.as_str()), ("x-forwarded-client-cert", &forged)];
    for uri_san in [None, Some("spiffe://cluster.local/ns/apps/sa/attacker"), Some("")] {
        let o = decide_req(
            &mut g,
            &store,
            &Req {
                uri_san,
                ..Req::default()
            },
            &headers,
        );
        assert_eq!((status(&o), reason(&o)), (401, "certificate_required"), "{uri_san:?}");
    }
    let o = decide_req(
        &mut g,
        &store,
        &Req {
            uri_san: Some("spiffe://cluster.local/ns/edge/sa/front-proxy"),
            ..Req::default()
        },
        &headers,
    );
    assert_eq!(status(&o), 200, "{o:?}");
}

/// Of two origins with the request's authority, the one with the request's scheme is used; an
/// origin with another scheme only when it is the only one (behind a TLS-terminating balancer,
/// Envoy sees `http` for the `https` origin clients call).
#[test]
fn the_origin_with_the_requests_scheme_wins() {
    let key = P256Signer::from_bytes(&[10; 32]).unwrap();
    let t = token(json!({"jkt": key.public_key().thumbprint().to_string()}), NOW + 600);
    let auth = format!("DPoP {t}");
    let p = |url: &str, jti: &str| proof_for_url(&key, url, &t, jti, None, NOW);
    let run = |origins: Value, scheme: &str, url: &str, jti: &str| {
        let (mut g, store) = gate(json!({"dpop": {"origins": origins}}));
        let headers = owned(&[("authorization", &auth), ("dpop", &p(url, jti))]);
        let req = Request {
            method: "GET",
            scheme,
            authority: "rs.example.com",
            path: "/api",
            headers: &headers,
            peer_cert_digest: None,
            peer_uri_san: None,
            route_name: None,
            route_requirement: None,
            now: NOW,
        };
        status(&g.decide(&req, &store, &RustCrypto))
    };
    let both = json!(["http://rs.example.com", "https://rs.example.com"]);
    assert_eq!(run(both.clone(), "https", "https://rs.example.com/api", "s1"), 200);
    assert_eq!(run(both.clone(), "https", "http://rs.example.com/api", "s2"), 401);
    assert_eq!(run(both.clone(), "http", "http://rs.example.com/api", "s3"), 200);
    let https_only = json!(["https://rs.example.com"]);
    assert_eq!(run(https_only.clone(), "http", "https://rs.example.com/api", "s4"), 200);
    assert_eq!(run(https_only, "http", "http://rs.example.com/api", "s5"), 401);
}

/// With `trust_forwarded_headers`, the forwarded host must still be one of `dpop.origins`; the
/// `htu` takes the origin's scheme and authority.
#[test]
fn forwarded_hosts_must_be_configured_origins_too() {
    let (mut g, store) =
        gate(json!({"dpop": {"origins": ["https://api.example.com"], "trust_forwarded_headers": true}}));
    let key = P256Signer::from_bytes(&[11; 32]).unwrap();
    let t = token(json!({"jkt": key.public_key().thumbprint().to_string()}), NOW + 600);
    let auth = format!("DPoP {t}");
    let p = proof_for_url(&key, "https://api.example.com/api", &t, "fwd-1", None, NOW);
    let internal = Req {
        authority: "gateway.internal:8080",
        ..Req::default()
    };
    let headers = |host| {
        [
            ("authorization", auth.as_str()),
            ("dpop", p.as_str()),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", host),
        ]
    };
    let o = decide_req(&mut g, &store, &internal, &headers("evil.example"));
    assert_eq!((status(&o), reason(&o)), (400, "unknown_origin"));
    let o = decide_req(&mut g, &store, &internal, &headers("api.example.com"));
    assert_eq!(status(&o), 200, "{o:?}");
}

/// A DPoP-bound token of `key` and a fresh proof for `GET https://rs.example.com<path>`.
fn dpop_request(key: &P256Signer, path: &str, jti: &str) -> (String, String) {
    let t = token(json!({"jkt": key.public_key().thumbprint().to_string()}), NOW + 60);
    let p = proof_for_url(key, &format!("https://rs.example.com{path}"), &t, jti, None, NOW);
    (format!("DPoP {t}"), p)
}

fn set_of(o: &Outcome) -> Vec<(String, String)> {
    match o {
        Outcome::Allow { set, .. } => set.clone(),
        other => panic!("not forwarded: {other:?}"),
    }
}

/// Issue 13, item 2: report mode decides, counts and logs as enforce does, and forwards the
/// request marked with the would-be decision, never with claims of a token that failed.
#[test]
fn report_mode_forwards_with_the_decision_it_would_have_had() {
    let (mut g, store) = gate(json!({"mode": "report", "dpop": {"nonce": {"mode": "required", "secrets": [SECRET]}}}));
    let key = P256Signer::from_bytes(&[7; 32]).unwrap();
    // No credentials: forwarded, marked deny.
    let o = decide(&mut g, &store, &[], None, NOW);
    assert_eq!(status(&o), 200);
    assert_eq!(header(&o, "x-keybound-decision"), Some("deny"));
    assert_eq!(header(&o, "x-keybound-reason"), Some("missing_credentials"));
    assert!(matches!(&o, Outcome::Allow { strip: Strip::ClaimHeaders, log, .. } if log.mode.as_str() == "report"));
    assert_eq!(header(&o, "x-keybound-sub"), None);
    // A proof without a nonce: forwarded, and the client still learns a nonce.
    let (auth, p) = dpop_request(&key, "/api", "r1");
    let o = decide(&mut g, &store, &[("authorization", &auth), ("dpop", &p)], None, NOW);
    assert_eq!(header(&o, "x-keybound-reason"), Some("proof_nonce_required"));
    let Outcome::Allow {
        fresh_nonce: Some(nonce),
        ..
    } = &o
    else {
        panic!("{o:?}")
    };
    // With it: allowed, marked allow, with claims.
    let t = token(json!({"jkt": key.public_key().thumbprint().to_string()}), NOW + 60);
    let p = proof_for_url(&key, "https://rs.example.com/api", &t, "r2", Some(nonce), NOW);
    let h = [("authorization", format!("DPoP {t}")), ("dpop", p)];
    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let o = decide(&mut g, &store, &h, None, NOW);
    assert_eq!(header(&o, "x-keybound-decision"), Some("allow"));
    assert_eq!(header(&o, "x-keybound-sub"), Some("alice"));
    // The same proof again: a replay, recorded and reported, forwarded without claims.
    let o = decide(&mut g, &store, &h, None, NOW);
    assert_eq!(
        (header(&o, "x-keybound-decision"), header(&o, "x-keybound-reason")),
        (Some("deny"), Some("proof_replayed"))
    );
    assert_eq!(header(&o, "x-keybound-sub"), None);
    // A path the filter cannot read safely follows the global mode: forwarded as it came, marked.
    let o = decide_req(&mut g, &store, &Req::path("/a%2Fb"), &[]);
    assert!(matches!(&o, Outcome::Allow { path: None, .. }), "{o:?}");
    assert_eq!(
        (header(&o, "x-keybound-decision"), header(&o, "x-keybound-reason")),
        (Some("deny"), Some("path_not_canonical"))
    );
    // A client cannot forge the marks: they are stripped like claim headers.
    let forged = owned(&[("X-Keybound-Decision", "allow"), ("x_keybound_reason", "ok")]);
    assert_eq!(
        g.strip_names(Strip::ClaimHeaders, &forged),
        ["X-Keybound-Decision", "x_keybound_reason"]
    );
}

/// Issue 13, item 2: `allow_missing` forwards a request with no credential at all, without
/// claims; a credential that is present must be valid.
#[test]
fn allow_missing_forwards_only_requests_without_credentials() {
    let (mut g, store) = gate(json!({"rules": [{"prefix": "/", "allow_missing": true}]}));
    let o = decide(&mut g, &store, &[("x-keybound-sub", "mallory")], None, NOW);
    assert_eq!((status(&o), reason(&o)), (200, "no_credentials"));
    assert!(set_of(&o).is_empty());
    let o = decide(&mut g, &store, &[("authorization", "Basic dTpw")], None, NOW);
    assert_eq!(
        (status(&o), reason(&o)),
        (200, "no_credentials"),
        "not an OAuth credential"
    );
    let o = decide(&mut g, &store, &[("authorization", "Bearer not-a-token")], None, NOW);
    assert_eq!((status(&o), reason(&o)), (401, "token_malformed"));
    let o = decide(&mut g, &store, &[("dpop", "x")], None, NOW);
    assert_eq!(
        (status(&o), reason(&o)),
        (401, "missing_credentials"),
        "a DPoP header alone"
    );
    let key = P256Signer::from_bytes(&[7; 32]).unwrap();
    let (auth, p) = dpop_request(&key, "/api", "m1");
    let o = decide(&mut g, &store, &[("authorization", &auth), ("dpop", &p)], None, NOW);
    assert_eq!((status(&o), header(&o, "x-keybound-sub")), (200, Some("alice")));
}

/// Issue 13, item 1: the route chooses (metadata first, then its name), then rules on hosts,
/// then the default; a requirement's binding and issuers are enforced.
#[test]
fn routes_and_hosts_choose_the_requirement() {
    let (mut g, store) = gate(json!({
        "requirements": {"open": {"disabled": true}, "mtls-only": {"binding": "mtls"},
            "elsewhere": {"issuers": ["https://as.example.com"], "scopes": ["write"]}},
        "routes": {"metadata": true, "names": {"open-route": "open"}},
        "rules": [{"hosts": ["*.internal.example"], "prefix": "/", "requirement": "open"}],
    }));
    let key = P256Signer::from_bytes(&[7; 32]).unwrap();
    let (auth, p) = dpop_request(&key, "/api", "c1");
    let h = [("authorization", auth.as_str()), ("dpop", p.as_str())];
    let at = |r: Req<'_>, g: &mut Gate| decide_req(g, &store, &r, &h);
    let o = at(
        Req {
            route_name: Some("open-route"),
            ..Req::default()
        },
        &mut g,
    );
    assert_eq!(reason(&o), "no_auth");
    let o = at(
        Req {
            route_requirement: Some("mtls-only"),
            route_name: Some("open-route"),
            ..Req::default()
        },
        &mut g,
    );
    assert_eq!(
        (status(&o), reason(&o)),
        (401, "binding_not_accepted"),
        "metadata wins over the name"
    );
    let o = at(
        Req {
            route_requirement: Some("elsewhere"),
            ..Req::default()
        },
        &mut g,
    );
    assert_eq!((status(&o), reason(&o)), (403, "insufficient_scope"));
    let o = at(
        Req {
            route_requirement: Some("no-such-requirement"),
            ..Req::default()
        },
        &mut g,
    );
    assert_eq!((status(&o), reason(&o)), (503, "unknown_requirement"), "fail closed");
    let o = at(Req::authority("db.internal.example"), &mut g);
    assert_eq!(reason(&o), "no_auth");
    let o = at(Req::default(), &mut g);
    assert_eq!((status(&o), reason(&o)), (200, "ok"));
}

/// Issue 13, item 3: preflights pass untouched; the filter's own replies can be read by a page
/// on an allowed origin (the nonce too).
#[test]
fn cors_preflights_pass_and_refusals_are_readable_by_allowed_origins() {
    let (mut g, store) = gate(json!({"cors": {"allowed_origins": ["https://app.example"]},
        "dpop": {"nonce": {"mode": "required", "secrets": [SECRET]}}}));
    let pre = [
        ("origin", "https://app.example"),
        ("access-control-request-method", "GET"),
    ];
    let o = decide_req(
        &mut g,
        &store,
        &Req {
            method: "OPTIONS",
            ..Req::default()
        },
        &pre,
    );
    assert_eq!((status(&o), reason(&o)), (200, "cors_preflight"));
    let o = decide_req(
        &mut g,
        &store,
        &Req {
            method: "OPTIONS",
            ..Req::default()
        },
        &[("origin", "https://app.example")],
    );
    assert_eq!(
        status(&o),
        401,
        "OPTIONS without Access-Control-Request-Method is no preflight"
    );
    let key = P256Signer::from_bytes(&[7; 32]).unwrap();
    let (auth, p) = dpop_request(&key, "/api", "n1");
    let h = [
        ("authorization", auth.as_str()),
        ("dpop", p.as_str()),
        ("origin", "https://app.example"),
    ];
    let o = decide(&mut g, &store, &h, None, NOW);
    assert_eq!(status(&o), 401);
    assert!(header(&o, "dpop-nonce").is_some());
    assert_eq!(header(&o, "access-control-allow-origin"), Some("https://app.example"));
    assert_eq!(
        header(&o, "access-control-expose-headers"),
        Some("WWW-Authenticate, DPoP-Nonce")
    );
    let h = [("origin", "https://evil.example")];
    let o = decide(&mut g, &store, &h, None, NOW);
    assert_eq!(header(&o, "access-control-allow-origin"), None);
}

/// Issue 13, item 7: the RFC 9728 document at its well-known URL, and `resource_metadata` in
/// every challenge for that resource.
#[test]
fn protected_resource_metadata_is_served_and_named_in_challenges() {
    let (mut g, store) = gate(json!({"resource_metadata": [
        {"resource": "https://rs.example.com", "authorization_servers": [ISS]},
        {"resource": "https://rs.example.com/v2", "authorization_servers": [ISS], "scopes_supported": ["read"]},
    ]}));
    let o = decide_req(
        &mut g,
        &store,
        &Req::path("/.well-known/oauth-protected-resource/v2"),
        &[],
    );
    let Outcome::Deny { status: 200, body, .. } = &o else {
        panic!("{o:?}")
    };
    let doc: Value = serde_json::from_str(body).unwrap();
    assert_eq!(doc["resource"], "https://rs.example.com/v2");
    assert_eq!(doc["authorization_servers"], json!([ISS]));
    let o = decide_req(&mut g, &store, &Req::path("/v2/items"), &[]);
    assert_eq!(
        header(&o, "www-authenticate"),
        Some(
            r#"DPoP resource_metadata="https://rs.example.com/.well-known/oauth-protected-resource/v2", algs="ES256 PS256 EdDSA""#
        )
    );
    let o = decide_req(&mut g, &store, &Req::path("/v20"), &[]);
    assert!(
        header(&o, "www-authenticate")
            .unwrap()
            .contains(r#"resource_metadata="https://rs.example.com/.well-known/oauth-protected-resource""#)
    );
    // Another origin's request is no request for this document.
    let o = decide_req(
        &mut g,
        &store,
        &Req {
            authority: "rs.example.com:8443",
            path: "/.well-known/oauth-protected-resource",
            ..Req::default()
        },
        &[],
    );
    assert_eq!(status(&o), 400, "not a configured origin: {o:?}");
}

/// Issue 13, item 4: claims by JSON pointer, the payload, and `Authorization` for upstreams
/// that only know `Bearer`; the decision for filter state.
#[test]
fn claims_payload_and_authorization_for_the_upstream() {
    let (mut g, store) = gate(
        json!({"forward": {"claims": {"x-client": "/client_id", "x-missing": "/nope"},
        "payload_header": "x-jwt-payload", "authorization": "bearer"}, "filter_state": true}),
    );
    let key = P256Signer::from_bytes(&[7; 32]).unwrap();
    let (auth, p) = dpop_request(&key, "/api", "f1");
    let o = decide(&mut g, &store, &[("authorization", &auth), ("dpop", &p)], None, NOW);
    let set = set_of(&o);
    let get = |h: &str| set.iter().find(|(k, _)| k == h).map(|(_, v)| v.clone());
    assert_eq!(get("x-client").as_deref(), Some("c1"));
    assert_eq!(get("x-missing"), None);
    let token = auth.strip_prefix("DPoP ").unwrap();
    assert_eq!(get("x-jwt-payload").as_deref(), token.split('.').nth(1));
    assert_eq!(get("authorization"), Some(format!("Bearer {token}")));
    let Outcome::Allow { log, .. } = &o else { panic!() };
    assert_eq!(log.binding, Some("dpop"));
    assert!(log.claims.contains(&("sub".into(), "alice".into())));
    assert!(log.claims.contains(&("x-client".into(), "c1".into())));
    // From the cache: the same headers.
    let p2 = proof(&key, token, "f2", None, NOW);
    let o2 = decide(&mut g, &store, &[("authorization", &auth), ("dpop", &p2)], None, NOW);
    assert!(matches!(&o2, Outcome::Allow { log, .. } if log.token_cache_hit));
    assert_eq!(set_of(&o2), set);
    // Stripped instead.
    let (mut g, store) = gate(json!({"forward": {"authorization": "strip"}}));
    let p3 = proof(&key, token, "f3", None, NOW);
    let o = decide(&mut g, &store, &[("authorization", &auth), ("dpop", &p3)], None, NOW);
    let Outcome::Allow { strip, .. } = o else { panic!() };
    let hs = owned(&[("authorization", &auth), ("dpop", &p3)]);
    assert_eq!(g.strip_names(strip, &hs), ["authorization", "dpop"]);
}

/// A certificate (DER) for a payment provider with these PSD2 roles, and its XFCC element as
/// Envoy writes it with `set_current_client_cert_details.cert`.
fn tpp(roles: &[keybound_core::qc::PspRole], statements: Option<Vec<u8>>) -> (Vec<u8>, String, String) {
    use keybound_core::qc::{QC_STATEMENTS_ARCS, encode_psd2_qc_statements};
    let mut params = rcgen::CertificateParams::new(vec!["tpp.example".into()]).unwrap();
    let value = statements.unwrap_or_else(|| encode_psd2_qc_statements(roles, "Financial Conduct Authority", "GB-FCA"));
    params
        .custom_extensions
        .push(rcgen::CustomExtension::from_oid_content(&QC_STATEMENTS_ARCS, value));
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let der = cert.der().to_vec();
    let hex: String = X5tS256::from_der(&der)
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let encoded: String = cert
        .pem()
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let xfcc = format!("Hash={hex};Cert=\"{encoded}\"");
    (der, hex, xfcc)
}

/// Open banking on a route: the token must carry `payment_initiation` details (RFC 9396) and the
/// client certificate the PSD2 role `PSP_PI`; the granted details go upstream. The certificate's
/// roles count only from the connection's own certificate (the XFCC element this Envoy wrote).
#[test]
fn authorization_details_and_psd2_roles_per_requirement() {
    use keybound_core::qc::PspRole;
    let (mut g, store) = gate(json!({
        "mtls": {"source": "connection"},
        "requirements": {"payments": {"authorization_details_types": ["payment_initiation"], "psd2_roles": ["PSP_PI"]}},
        "rules": [{"prefix": "/payments", "requirement": "payments"}],
        "forward": {"claims": {"x-authorization-details": "/authorization_details"}},
    }));
    let details = json!([{"type": "payment_initiation", "instructedAmount": {"currency": "EUR", "amount": "10.00"}}]);
    let bound = |der: &[u8], details: Option<&Value>| {
        let mut claims = json!({"iss": ISS, "aud": AUD, "sub": "alice", "client_id": "c1", "iat": NOW - 5,
            "exp": NOW + 600, "jti": "t1", "scope": "read", "cnf": {"x5t#S256": X5tS256::from_der(der).to_string()}});
        if let Some(d) = details {
            claims["authorization_details"] = d.clone();
        }
        format!(
            "Bearer {}",
            jws::sign_json(&issuer(), Some("at+jwt"), Some("k1"), &claims).unwrap()
        )
    };
    let (pi_der, pi_hex, pi_xfcc) = tpp(&[PspRole::PaymentInitiation, PspRole::AccountInformation], None);
    let (ai_der, ai_hex, ai_xfcc) = tpp(&[PspRole::AccountInformation], None);
    let pay = |g: &mut Gate, auth: &str, hex: &str, xfcc: Option<&str>| {
        let mut h = vec![("authorization", auth)];
        if let Some(x) = xfcc {
            h.push(("x-forwarded-client-cert", x));
        }
        decide_req(
            g,
            &store,
            &Req {
                digest: Some(hex),
                ..Req::path("/payments/1")
            },
            &h,
        )
    };
    let o = pay(&mut g, &bound(&pi_der, Some(&details)), &pi_hex, Some(&pi_xfcc));
    assert_eq!(status(&o), 200, "{o:?}");
    let forwarded: Value = serde_json::from_str(header(&o, "x-authorization-details").unwrap()).unwrap();
    assert_eq!(forwarded, details);
    // No payment details in the token.
    let o = pay(&mut g, &bound(&pi_der, None), &pi_hex, Some(&pi_xfcc));
    assert_eq!((status(&o), reason(&o)), (403, "authorization_details_missing"));
    assert!(header(&o, "www-authenticate").unwrap().contains("insufficient_scope"));
    // Only account information for this provider.
    let o = pay(&mut g, &bound(&ai_der, Some(&details)), &ai_hex, Some(&ai_xfcc));
    assert_eq!((status(&o), reason(&o)), (403, "psd2_role_missing"));
    // The PI provider's certificate in a header, on a connection with the AI provider's: ignored.
    let o = pay(&mut g, &bound(&ai_der, Some(&details)), &ai_hex, Some(&pi_xfcc));
    assert_eq!((status(&o), reason(&o)), (403, "psd2_role_missing"));
    // Envoy configured without the certificate in XFCC: nothing to read the roles from.
    let o = pay(&mut g, &bound(&pi_der, Some(&details)), &pi_hex, None);
    assert_eq!((status(&o), reason(&o)), (403, "psd2_role_missing"));
    // A certificate without any PSD2 statement, and one whose statement is malformed.
    let (plain_der, plain_hex, plain_xfcc) = tpp(&[], Some(vec![0x30, 0x00]));
    let o = pay(
        &mut g,
        &bound(&plain_der, Some(&details)),
        &plain_hex,
        Some(&plain_xfcc),
    );
    assert_eq!((status(&o), reason(&o)), (403, "psd2_role_missing"));
    let (bad_der, bad_hex, bad_xfcc) = tpp(&[], Some(vec![0x30, 0x03, 0x30, 0x01, 0x06]));
    let o = pay(&mut g, &bound(&bad_der, Some(&details)), &bad_hex, Some(&bad_xfcc));
    assert_eq!((status(&o), reason(&o)), (400, "invalid_certificate"));

    // Behind a trusted front proxy (`mtls.source: "xfcc"`): the roles come from the Cert of the
    // element the proxy wrote; without Cert there is nothing to read them from.
    let (mut g, store) = gate(json!({
        "mtls": {"source": "xfcc"},
        "requirements": {"payments": {"psd2_roles": ["PSP_PI"]}},
        "rules": [{"prefix": "/payments", "requirement": "payments"}],
    }));
    let via_proxy = |g: &mut Gate, der: &[u8], xfcc: &str| {
        let auth = bound(der, None);
        decide_req(
            g,
            &store,
            &Req::path("/payments/1"),
            &[("authorization", auth.as_str()), ("x-forwarded-client-cert", xfcc)],
        )
    };
    assert_eq!(status(&via_proxy(&mut g, &pi_der, &pi_xfcc)), 200);
    let o = via_proxy(&mut g, &ai_der, &ai_xfcc);
    assert_eq!((status(&o), reason(&o)), (403, "psd2_role_missing"));
    let hash_only = format!("Hash={pi_hex}");
    let o = via_proxy(&mut g, &pi_der, &hash_only);
    assert_eq!((status(&o), reason(&o)), (403, "psd2_role_missing"));

    // Configuration mistakes name the field.
    let refused = |extra: Value| {
        let mut jwk: Value = serde_json::from_str(&issuer().public_key().to_json()).unwrap();
        jwk["kid"] = json!("k1");
        let mut c = json!({"issuers": [{"issuer": ISS, "audiences": [AUD], "jwks": {"keys": [jwk]}}],
            "dpop": {"origins": ["https://rs.example.com"]}});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        Config::parse(c.to_string().as_bytes()).unwrap_err().to_string()
    };
    let e = refused(json!({"requirements": {"p": {"psd2_roles": ["PSP_PI"]}}}));
    assert!(e.contains("requirements.p.psd2_roles") && e.contains("mtls"), "{e}");
    let e = refused(json!({"mtls": {"source": "connection"}, "requirements": {"p": {"psd2_roles": ["PSP_XX"]}}}));
    assert!(e.contains("requirements.p.psd2_roles[0]"), "{e}");
    let e = refused(json!({"requirements": {"p": {"authorization_details_types": [""]}}}));
    assert!(e.contains("requirements.p.authorization_details_types[0]"), "{e}");
    let e = refused(json!({"requirements": {"p": {"disabled": true, "authorization_details_types": ["x"]}}}));
    assert!(e.contains("requirements.p.disabled"), "{e}");
}
