//! The keybound filter inside a real Envoy (`--concurrency 2`), in front of an echo upstream.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test helpers fail the test on bad fixtures"
)]

use keybound_core::dpop::{self, NewProof};
use keybound_core::jws::{P256Signer, Signer};
use keybound_e2e::{Envoy, Response, Upstream, request, validate};
use serde_json::json;

mod common;

use common::{config, dpop_token, now};

const NONCE_SECRET: &str = "ZTJlLW5vbmNlLXNlY3JldC1lMmUtbm9uY2Utc2VjcmV0LWUyZQ";

fn proof(key: &dyn Signer, method: &str, path: &str, token: &str, jti: &str, nonce: Option<&str>) -> String {
    let url = format!("http://rs.example.com{path}");
    dpop::create_proof(
        key,
        &NewProof {
            htm: method,
            htu: &url,
            iat: now(),
            jti,
            access_token: Some(token),
            nonce,
        },
    )
    .unwrap()
}

fn call(envoy: &Envoy, path: &str, auth: &str, dpop: Option<&str>, extra: &[(&str, &str)]) -> Response {
    let mut headers: Vec<(&str, &str)> = vec![("authorization", auth)];
    if let Some(p) = dpop {
        headers.push(("dpop", p));
    }
    headers.extend_from_slice(extra);
    request(envoy.port, "GET", path, &headers).unwrap()
}

#[test]
fn dpop_bound_token_with_a_valid_proof_reaches_the_upstream_with_verified_headers_only() {
    let up = Upstream::start().unwrap();
    let envoy = Envoy::start(&config(json!({})), &up).unwrap();
    let key = P256Signer::from_bytes(&[1; 32]).unwrap();
    let t = dpop_token(&key);
    let p = proof(&key, "GET", "/api/accounts?page=1", &t, "e2e-1", None);
    let r = call(
        &envoy,
        "/api/accounts?page=1",
        &format!("DPoP {t}"),
        Some(&p),
        &[("x-keybound-sub", "mallory"), ("x-keybound-binding", "none")],
    );
    assert_eq!(r.status, 200, "{r:?}\n{}", envoy.log_tail());
    let seen = r.json();
    assert_eq!(
        seen["x-keybound-sub"], "alice",
        "spoofed header must be replaced: {seen}"
    );
    assert_eq!(seen["x-keybound-client-id"], "client-1");
    assert_eq!(seen["x-keybound-binding"], "dpop");
    assert_eq!(seen["x-keybound-jkt"], key.public_key().thumbprint().to_string());
    assert_eq!(seen["x-keybound-scope"], "accounts:read");
    assert!(seen.get("dpop").is_none(), "DPoP header is stripped: {seen}");
    assert_eq!(envoy.decisions("allow", None), 1);
    // The same token with fresh proofs: served from the per-worker verified-token cache (each of
    // the 2 workers verifies it at most once, so of 4 requests at least 2 are cache hits).
    for jti in ["e2e-2", "e2e-3", "e2e-4", "e2e-5"] {
        let p = proof(&key, "GET", "/api/accounts", &t, jti, None);
        assert_eq!(
            call(&envoy, "/api/accounts", &format!("DPoP {t}"), Some(&p), &[]).status,
            200
        );
    }
    assert!(
        envoy.counter("wasmcustom.keybound.token_cache_hits") >= 2,
        "{}",
        envoy.log_tail()
    );
    assert_eq!(envoy.decisions("allow", None), 5);
}

#[test]
fn stolen_or_replayed_tokens_are_refused_with_rfc_errors_and_counted() {
    let up = Upstream::start().unwrap();
    let envoy = Envoy::start(&config(json!({})), &up).unwrap();
    let key = P256Signer::from_bytes(&[1; 32]).unwrap();
    let thief = P256Signer::from_bytes(&[66; 32]).unwrap();
    let t = dpop_token(&key);

    // As Bearer.
    let r = call(&envoy, "/api", &format!("Bearer {t}"), None, &[]);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"DPoP error="invalid_token", algs="ES256 PS256 EdDSA""#)
    );
    assert_eq!(r.json(), json!({"error": "invalid_token"}));
    assert_eq!(envoy.decisions("deny", Some("dpop_bound_token_as_bearer")), 1);

    // With the thief's own proof.
    let r = call(
        &envoy,
        "/api",
        &format!("DPoP {t}"),
        Some(&proof(&thief, "GET", "/api", &t, "x1", None)),
        &[],
    );
    assert_eq!(r.status, 401);
    assert_eq!(envoy.decisions("deny", Some("jkt_mismatch")), 1);

    // No proof at all.
    let r = call(&envoy, "/api", &format!("DPoP {t}"), None, &[]);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"DPoP error="invalid_dpop_proof", algs="ES256 PS256 EdDSA""#)
    );

    // A replayed proof.
    let p = proof(&key, "GET", "/api", &t, "once", None);
    assert_eq!(call(&envoy, "/api", &format!("DPoP {t}"), Some(&p), &[]).status, 200);
    let r = call(&envoy, "/api", &format!("DPoP {t}"), Some(&p), &[]);
    assert_eq!(r.status, 401);
    assert_eq!(r.json(), json!({"error": "invalid_dpop_proof"}));
    assert_eq!(envoy.counter("wasmcustom.keybound.replays"), 1);

    // The proof for another path.
    let r = call(
        &envoy,
        "/api/other",
        &format!("DPoP {t}"),
        Some(&proof(&key, "GET", "/api", &t, "p2", None)),
        &[],
    );
    assert_eq!(r.status, 401);
    assert_eq!(envoy.decisions("deny", Some("proof_htu_mismatch")), 1);

    // Two Authorization headers.
    let r = request(
        envoy.port,
        "GET",
        "/api",
        &[("authorization", "DPoP a"), ("authorization", "DPoP b")],
    )
    .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json(), json!({"error": "invalid_request"}));

    // Missing scope on /admin: 403 with the scope.
    let r = call(
        &envoy,
        "/admin",
        &format!("DPoP {t}"),
        Some(&proof(&key, "GET", "/admin", &t, "p3", None)),
        &[],
    );
    assert_eq!(r.status, 403);
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"DPoP error="insufficient_scope", scope="admin", algs="ES256 PS256 EdDSA""#)
    );

    // No credentials: bare challenge; the health route needs none.
    let r = request(envoy.port, "GET", "/api", &[]).unwrap();
    assert_eq!(
        (r.status, r.header("www-authenticate")),
        (401, Some(r#"DPoP algs="ES256 PS256 EdDSA""#))
    );
    assert_eq!(request(envoy.port, "GET", "/health", &[]).unwrap().status, 200);
    // Envoy keeps serving after all that.
    let ok = call(
        &envoy,
        "/api",
        &format!("DPoP {t}"),
        Some(&proof(&key, "GET", "/api", &t, "last", None)),
        &[],
    );
    assert_eq!(ok.status, 200);
}

#[test]
fn the_same_proof_sent_concurrently_succeeds_exactly_once() {
    let up = Upstream::start().unwrap();
    let envoy = Envoy::start(&config(json!({})), &up).unwrap();
    let key = P256Signer::from_bytes(&[3; 32]).unwrap();
    let t = dpop_token(&key);
    let p = proof(&key, "GET", "/api", &t, "race", None);
    let auth = format!("DPoP {t}");
    let port = envoy.port;
    let handles: Vec<_> = (0..24)
        .map(|_| {
            let (auth, p) = (auth.clone(), p.clone());
            std::thread::spawn(move || {
                request(port, "GET", "/api", &[("authorization", &auth), ("dpop", &p)])
                    .unwrap()
                    .status
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 23, "{statuses:?}");
    assert_eq!(envoy.counter("wasmcustom.keybound.replays"), 23);
}

#[test]
fn nonce_mode_challenges_then_accepts_a_nonce_from_any_instance_with_the_secret() {
    let up = Upstream::start().unwrap();
    let cfg = config(json!({"dpop": {"nonce": {"mode": "required", "secrets": [NONCE_SECRET], "step_seconds": 60}}}));
    let (gateway_a, gateway_b) = std::thread::scope(|s| {
        let a = s.spawn(|| Envoy::start(&cfg, &up).unwrap());
        let b = s.spawn(|| Envoy::start(&cfg, &up).unwrap());
        (a.join().unwrap(), b.join().unwrap())
    });
    let key = P256Signer::from_bytes(&[4; 32]).unwrap();
    let t = dpop_token(&key);
    let r = call(
        &gateway_a,
        "/api",
        &format!("DPoP {t}"),
        Some(&proof(&key, "GET", "/api", &t, "n1", None)),
        &[],
    );
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"DPoP error="use_dpop_nonce", algs="ES256 PS256 EdDSA""#)
    );
    let nonce = r.header("dpop-nonce").expect("a DPoP-Nonce header").to_owned();
    assert_eq!(gateway_a.counter("wasmcustom.keybound.nonce_challenges"), 1);
    // Retry at the other gateway instance with the nonce from the first.
    let r = call(
        &gateway_b,
        "/api",
        &format!("DPoP {t}"),
        Some(&proof(&key, "GET", "/api", &t, "n2", Some(&nonce))),
        &[],
    );
    assert_eq!(r.status, 200, "{r:?}");
    // A forged nonce is answered with a fresh challenge.
    let r = call(
        &gateway_b,
        "/api",
        &format!("DPoP {t}"),
        Some(&proof(
            &key,
            "GET",
            "/api",
            &t,
            "n3",
            Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        )),
        &[],
    );
    assert_eq!(r.status, 401);
    assert!(r.header("dpop-nonce").is_some());
}

#[test]
fn bad_configuration_is_refused_by_envoy_naming_the_field() {
    let cases = [
        (config(json!({})), None),
        (config(json!({"dpop": {"algs": ["none"]}})), Some("dpop.algs")),
        (
            config(json!({"dpop": {"nonce": {"mode": "required", "secrets": ["c2hvcnQ"]}}})),
            Some("dpop.nonce.secrets[0]"),
        ),
        (config(json!({"mtls": {"source": "header"}})), Some("mtls.source")),
        (config(json!({"surprise": true})), Some("unknown field `surprise`")),
        (r#"{"issuers": []}"#.to_owned(), Some("issuers")),
    ];
    // Each validation compiles the filter in V8 (about a second): run them side by side.
    std::thread::scope(|s| {
        let runs: Vec<_> = cases
            .iter()
            .map(|(cfg, field)| (field, s.spawn(move || validate(cfg).unwrap())))
            .collect();
        for (field, run) in runs {
            let (ok, out) = run.join().unwrap();
            match field {
                None => assert!(ok, "{out}"),
                Some(field) => {
                    assert!(!ok, "{field}: accepted");
                    assert!(out.contains(field), "{field} not named in:\n{out}");
                }
            }
        }
    });
}
