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
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
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
    dpop::create_proof(
        key,
        &NewProof {
            htm: "GET",
            htu: "https://rs.example.com/api",
            iat,
            jti,
            access_token: Some(token),
            nonce,
        },
    )
    .unwrap()
}

fn decide(gate: &mut Gate, store: &Store, headers: &[(&str, &str)], digest: Option<&str>, now: u64) -> Outcome {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let req = Request {
        method: "GET",
        scheme: "https",
        authority: "rs.example.com",
        path: "/api",
        headers: &headers,
        peer_cert_digest: digest,
        now,
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

    let headers: Vec<(String, String)> = vec![("x-keybound-sub".into(), "mallory".into())];
    let req = Request {
        method: "GET",
        scheme: "https",
        authority: "rs.example.com",
        path: "/health",
        headers: &headers,
        peer_cert_digest: None,
        now: NOW,
    };
    match g.decide(&req, &store, &RustCrypto) {
        Outcome::Allow { strip, .. } => {
            assert_eq!(strip, Strip::ClaimHeaders);
            assert!(g.strip(strip).iter().any(|h| h == "x-keybound-sub"));
            assert!(!g.strip(strip).iter().any(|h| h == "dpop"));
            assert!(g.strip(Strip::ClaimHeadersAndDpop).iter().any(|h| h == "dpop"));
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
