//! Security at the seams between the protocol and the deployment (issue 12), in a real Envoy:
//! paths that walk around rules, with and without Envoy's own normalisation; claim headers in the
//! spellings upstream frameworks fold together; proofs replayed at another origin by setting
//! `Host`; a proof at the last second of its window; a client that forges XFCC over its own
//! mTLS connection; a refresh token an authorization server reports as active; a cached verdict
//! whose key left the issuer's key set.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test helpers fail the test on bad fixtures"
)]

mod common;

use common::{
    ISS, assert_denied, cert_token, config, counter, dpop_token, eventually, jwks, now, p256, proof, proof_at, unique,
};
use keybound_core::jws::{self, Signer};
use keybound_e2e::issuer::{Connection, IssuerServer};
use keybound_e2e::tls::FRONT_URI;
use keybound_e2e::{Envoy, EnvoyOptions, Identity, Pki, Response, TempDir, Upstream, request, request_tls};
use serde_json::json;

/// The request target the upstream received (the echo's `:path`), if it was reached.
fn upstream_path(r: &Response) -> Option<String> {
    r.json().get(":path").and_then(|p| p.as_str()).map(str::to_owned)
}

fn hardened_and_raw() -> [(&'static str, EnvoyOptions); 2] {
    [
        ("hardened Envoy", EnvoyOptions::default()),
        (
            "Envoy without normalisation",
            EnvoyOptions {
                raw_paths: true,
                ..EnvoyOptions::default()
            },
        ),
    ]
}

/// Item 1: `GET /health/../admin` without a token got 200 and the upstream received the raw path,
/// which any upstream that resolves dot segments serves as `/admin`. Rules now match the
/// canonical path, in an Envoy that normalises paths itself and in one that does not.
#[test]
fn paths_that_walk_around_rules_are_refused_with_and_without_envoy_normalisation() {
    let up = Upstream::start().unwrap();
    let cfg = config(json!({}));
    for (name, opts) in hardened_and_raw() {
        let envoy = Envoy::start_with(&cfg, &up, &opts).unwrap();
        let raw = opts.raw_paths;
        // Spellings of /admin (scope `admin` required) that start with the public /health.
        for path in [
            "/health/../admin",
            "/health/%2e%2e/admin",
            "/health/.%2E/admin",
            "/health/./../admin/x",
            "/health//../../admin",
            "/health/..;/admin",
            "/health/..%2fadmin",
            "/health/..%2Fadmin",
            "/health/..%5cadmin",
            "/health%2f..%2fadmin",
            "/healthX",
            "/health.json",
            "/admin;x",
            "/admin%3b",
            "/admin%3F",
        ] {
            let r = request(envoy.port, "GET", path, &[]).unwrap();
            assert!(
                upstream_path(&r).is_none(),
                "{name}: {path} reached the upstream: {r:?}"
            );
            assert!(matches!(r.status, 400 | 401), "{name}: {path}: {r:?}");
        }
        // Without Envoy's normalisation, each is the filter's decision.
        if raw {
            for (path, status) in [
                ("/health/../admin", 401),
                ("/health/%2e%2e/admin", 401),
                ("/health/..;/admin", 400),
                ("/health/..%2fadmin", 400),
                ("/health/..%5cadmin", 400),
                ("/health//../../admin", 400),
                ("/../admin", 400),
                ("/healthX", 401),
                ("/admin%3F/../health", 400),
                ("/admin%3b", 400),
            ] {
                let r = request(envoy.port, "GET", path, &[]).unwrap();
                assert_eq!(r.status, status, "{name}: {path}: {r:?}");
            }
            assert!(envoy.decisions("deny", Some("path_not_canonical")) >= 5, "{name}");
            let r = request(envoy.port, "GET", "/health/..;/admin", &[]).unwrap();
            assert_denied(
                "dot segment with parameters",
                &r,
                400,
                r#"DPoP error="invalid_request", algs="ES256 PS256 EdDSA""#,
                Some("invalid_request"),
            );
        }
        // Public paths in other spellings still work, and the upstream gets the canonical path
        // (the query as it was).
        for (path, seen) in [
            ("/health", "/health"),
            ("/admin/../health?probe=/../x", "/health?probe=/../x"),
            ("/%68ealth/live", "/health/live"),
            ("//health//live", "/health/live"),
            // Parameters stay (Tomcat serves /health; nginx its own /health;probe).
            ("/health;probe=1", "/health;probe=1"),
        ] {
            let r = request(envoy.port, "GET", path, &[]).unwrap();
            assert_eq!(r.status, 200, "{name}: {path}: {r:?}");
            assert_eq!(upstream_path(&r).as_deref(), Some(seen), "{name}: {path}");
        }
        // An authenticated request under another spelling: the proof is for the canonical URL,
        // and the upstream gets that path.
        let key = p256(61);
        let t = dpop_token(&key);
        let p = proof(&key, "GET", "http://rs.example.com/api/accounts", &t);
        let r = request(
            envoy.port,
            "GET",
            "/api/./x/../accounts",
            &[("authorization", &format!("DPoP {t}")), ("dpop", &p)],
        )
        .unwrap();
        assert_eq!(r.status, 200, "{name}: {r:?}\n{}", envoy.log_tail());
        assert_eq!(upstream_path(&r).as_deref(), Some("/api/accounts"), "{name}");
    }
}

/// Item 3: a client-sent `x_keybound_sub: admin` reached the upstream (WSGI, Rack and CGI map it
/// to the same variable as `x-keybound-sub`). Without Envoy's underscore check the filter removes
/// every variant; with it, Envoy refuses the request.
#[test]
fn claim_header_variants_never_reach_the_upstream() {
    let up = Upstream::start().unwrap();
    let cfg = config(json!({}));
    let key = p256(62);
    let t = dpop_token(&key);
    let auth = format!("DPoP {t}");
    let spoofed = [
        ("x_keybound_sub", "admin"),
        ("X_Keybound_Scope", "admin"),
        ("x-keybound_client-id", "admin"),
    ];
    for (name, opts) in hardened_and_raw() {
        let envoy = Envoy::start_with(&cfg, &up, &opts).unwrap();
        for path in ["/api/accounts", "/health"] {
            let p = proof(&key, "GET", &format!("http://rs.example.com{path}"), &t);
            let mut headers = vec![("authorization", auth.as_str()), ("dpop", p.as_str())];
            headers.extend(spoofed);
            let r = request(envoy.port, "GET", path, &headers).unwrap();
            if opts.raw_paths {
                assert_eq!(r.status, 200, "{name}: {path}: {r:?}");
                let seen = r.json();
                let names: Vec<&String> = seen.as_object().unwrap().keys().collect();
                assert!(names.iter().all(|n| !n.contains('_')), "{name}: {path}: {seen}");
                assert!(!seen.to_string().contains("admin"), "{name}: {path}: {seen}");
                if path == "/api/accounts" {
                    assert_eq!(seen["x-keybound-sub"], "alice", "{seen}");
                    assert_eq!(seen["x-keybound-client-id"], "client-1", "{seen}");
                    assert_eq!(seen["x-keybound-scope"], "accounts:read", "{seen}");
                } else {
                    assert!(seen.get("x-keybound-sub").is_none(), "{seen}");
                }
            } else {
                assert_eq!(r.status, 400, "{name}: {path}: Envoy refuses underscores: {r:?}");
                assert!(upstream_path(&r).is_none());
            }
        }
    }
}

/// Item 4: the proof's `htu` was built from the `Host` the client sent, so a proof captured at
/// another API (with its token, if the token's audience is shared) passed here when the
/// attacker set that API's `Host`. The gateway serves its configured origins only.
#[test]
fn a_proof_for_another_origin_is_refused_whatever_the_host() {
    let up = Upstream::start().unwrap();
    let envoy = Envoy::start(&config(json!({})), &up).unwrap();
    let key = p256(63);
    let t = dpop_token(&key);
    let auth = format!("DPoP {t}");
    // Captured at https://payments.example.com, replayed here with that Host.
    let captured = proof(&key, "GET", "https://payments.example.com/api/accounts", &t);
    let r = request(
        envoy.port,
        "GET",
        "/api/accounts",
        &[
            ("host", "payments.example.com"),
            ("authorization", &auth),
            ("dpop", &captured),
        ],
    )
    .unwrap();
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.json(), json!({"error": "invalid_request"}));
    assert_eq!(envoy.decisions("deny", Some("unknown_origin")), 1);
    // The same client at this gateway's origin, in another spelling of its authority: accepted.
    for host in ["rs.example.com", "RS.Example.COM:80"] {
        let p = proof(&key, "GET", "http://rs.example.com/api/accounts", &t);
        let r = request(
            envoy.port,
            "GET",
            "/api/accounts",
            &[("host", host), ("authorization", &auth), ("dpop", &p)],
        )
        .unwrap();
        assert_eq!(r.status, 200, "{host}: {r:?}");
    }
}

/// Item 2: a proof with `iat = now - max_age` is acceptable during that whole second, and its
/// record used to count as expired during it: replays in that second were accepted.
#[test]
fn a_proof_in_the_last_second_of_its_window_is_accepted_once() {
    let up = Upstream::start().unwrap();
    let envoy = Envoy::start(&config(json!({"dpop": {"max_age_seconds": 30}})), &up).unwrap();
    let key = p256(64);
    let t = dpop_token(&key);
    let auth = format!("DPoP {t}");
    // The first request must land in the same second as `iat + 30`; retry across a tick.
    for _ in 0..5 {
        let p = proof_at(&key, "GET", "http://rs.example.com/api/edge", &t, now() - 30);
        let headers = [("authorization", auth.as_str()), ("dpop", p.as_str())];
        let first = request(envoy.port, "GET", "/api/edge", &headers).unwrap();
        if first.status != 200 {
            continue;
        }
        for _ in 0..3 {
            let again = request(envoy.port, "GET", "/api/edge", &headers).unwrap();
            assert_eq!(again.status, 401, "replayed in its last second: {again:?}");
            assert_eq!(again.json(), json!({"error": "invalid_dpop_proof"}));
        }
        return;
    }
    panic!("no request landed inside the window: {}", envoy.log_tail());
}

/// The two hops of `behind_proxy.rs`, but a gateway that also serves clients with their own
/// certificates directly: its listener trusts the client CA besides the mesh CA of the front's.
fn gateway_for_direct_and_fronted_clients(pki: &Pki, up: &Upstream, cfg: &str, dir: &TempDir) -> (Envoy, Envoy) {
    let both = dir.0.join("client-and-mesh-ca.pem");
    let mut pem = std::fs::read(&pki.ca).unwrap();
    pem.extend(std::fs::read(&pki.mesh_ca).unwrap());
    std::fs::write(&both, pem).unwrap();
    common::two_hops(pki, up, cfg, &both)
}

fn get(port: u16, pki: &Pki, client: Option<&Identity>, headers: &[(&str, &str)]) -> Response {
    request_tls(port, pki, client, "GET", "/api/accounts", headers).unwrap()
}

/// Item 10: XFCC trust rested on the `By` element, which whoever writes the header chooses. A
/// client with its own valid certificate that connects to the gateway directly, with Alice's
/// stolen token and a forged XFCC naming the front as `By` and Alice's certificate as `Hash`, is
/// refused once the front's identity (`front_proxy_uri_sans`) is configured; Alice through the
/// front still gets in.
#[test]
fn a_client_with_its_own_certificate_cannot_forge_xfcc() {
    let pki = Pki::generate().unwrap();
    let up = Upstream::start().unwrap();
    let dir = TempDir::new("xfcc-direct").unwrap();
    let cfg = config(json!({"mtls": {"source": "xfcc", "expected_by": FRONT_URI,
        "front_proxy_uri_sans": [FRONT_URI]}}));
    let (gateway, front) = gateway_for_direct_and_fronted_clients(&pki, &up, &cfg, &dir);
    let auth = format!("Bearer {}", cert_token(&pki.alice.x5t_s256()));
    let forged = format!("By={FRONT_URI};Hash={}", pki.alice.sha256_hex());
    // Bob, directly, with his own certificate and the forged header.
    let r = get(
        gateway.port,
        &pki,
        Some(&pki.bob),
        &[("authorization", &auth), ("x-forwarded-client-cert", &forged)],
    );
    assert_denied(
        "forged XFCC over a client's own mTLS connection",
        &r,
        401,
        r#"Bearer error="invalid_token""#,
        Some("invalid_token"),
    );
    assert_eq!(gateway.decisions("deny", Some("certificate_required")), 1);
    // Alice through the front: allowed.
    let r = get(front.port, &pki, Some(&pki.alice), &[("authorization", &auth)]);
    assert_eq!(r.status, 200, "{r:?}\n{}", gateway.log_tail());
    assert_eq!(r.json()["x-keybound-x5t-s256"], pki.alice.x5t_s256());
}

/// `base64("gateway:s3cret")`.
const CLIENT_AUTH: &str = "Basic Z2F0ZXdheTpzM2NyZXQ=";

/// Item 6: keybound-authz answered `active: true` for a refresh token (with `token_type: DPoP`,
/// `cnf`, and no `aud`), and the gateway let `Authorization: DPoP <refresh token>` through. An
/// introspection answer without the gateway's audience, or about another kind of token, is
/// refused.
#[test]
fn a_refresh_token_reported_active_by_introspection_is_refused() {
    let server = IssuerServer::start(&jwks(&[(100, "k1")]), CLIENT_AUTH).unwrap();
    let client = p256(65);
    let jkt = client.public_key().thumbprint().to_string();
    let n = now();
    let refresh_answer = json!({"active": true, "iss": ISS, "sub": "alice", "client_id": "c9", "scope": "read",
        "iat": n, "exp": n + 86_400, "cnf": {"jkt": jkt}, "token_type": "DPoP"});
    server.set_introspection("refresh-1", &refresh_answer.to_string());
    let mut typed = refresh_answer.clone();
    typed["aud"] = json!(common::AUD);
    typed["token_type"] = json!("refresh_token");
    server.set_introspection("refresh-2", &typed.to_string());
    let cfg = config(
        json!({"introspection": {"endpoint": "http://as.internal/introspect", "cluster": "issuer",
        "client_id": "gateway", "client_secret": "s3cret", "issuer": ISS, "audiences": [common::AUD]}}),
    );
    let up = Upstream::start().unwrap();
    let opts = EnvoyOptions {
        clusters: vec![("issuer".into(), server.port)],
        ..EnvoyOptions::default()
    };
    let envoy = Envoy::start_with(&cfg, &up, &opts).unwrap();
    for (token, reason) in [
        ("refresh-1", "token_missing_claim"),
        ("refresh-2", "token_not_access_token"),
    ] {
        let p = proof(&client, "GET", "http://rs.example.com/api", token);
        let r = request(
            envoy.port,
            "GET",
            "/api",
            &[("authorization", &format!("DPoP {token}")), ("dpop", &p)],
        )
        .unwrap();
        assert_denied(
            token,
            &r,
            401,
            r#"DPoP error="invalid_token", algs="ES256 PS256 EdDSA""#,
            Some("invalid_token"),
        );
        assert_eq!(envoy.decisions("deny", Some(reason)), 1, "{token}");
    }
    assert_eq!(server.introspection_calls().len(), 2);
}

/// Item 7: a token verified with a key that later left the issuer's key set stayed accepted from
/// the token cache until its `exp`. Once the filter has the new key set, the same token is
/// verified again, and refused.
#[test]
fn a_cached_verdict_goes_when_its_key_leaves_the_key_set() {
    let server = IssuerServer::start(&jwks(&[(100, "k1"), (101, "k2")]), CLIENT_AUTH).unwrap();
    let cfg = config(json!({"issuers": [{"issuer": ISS, "audiences": [common::AUD],
        "jwks_uri": "http://issuer.internal/jwks", "jwks_cluster": "issuer", "jwks_refresh_seconds": 1,
        "jwks_min_refetch_seconds": 1, "jwks_timeout_ms": 2000}]}));
    let up = Upstream::start().unwrap();
    let opts = EnvoyOptions {
        clusters: vec![("issuer".into(), server.port)],
        ..EnvoyOptions::default()
    };
    let envoy = Envoy::start_with(&cfg, &up, &opts).unwrap();
    let client = p256(66);
    let sign = |seed: u8, kid: &str| {
        let mut claims = common::token_claims(Some(json!({"jkt": client.public_key().thumbprint().to_string()})));
        claims["jti"] = json!(unique("t"));
        jws::sign_json(&p256(seed), Some("at+jwt"), Some(kid), &claims).unwrap()
    };
    let (t1, t2) = (sign(100, "k1"), sign(101, "k2"));
    // One keep-alive connection: one worker, one token cache.
    let mut conn = Connection::open(envoy.port).unwrap();
    let mut call = |t: &str| {
        let p = proof(&client, "GET", "http://rs.example.com/api", t);
        conn.request("GET", "/api", &[("authorization", &format!("DPoP {t}")), ("dpop", &p)])
            .unwrap()
    };
    assert!(eventually(10, || counter(&envoy, "jwks_fetch_ok") >= 1));
    for t in [&t1, &t2, &t1, &t2] {
        assert_eq!(call(t).status, 200);
    }
    assert!(counter(&envoy, "token_cache_hits") >= 2);
    // The issuer drops k1; wait until the filter fetched the new set (twice, so every VM has it).
    let fetched = counter(&envoy, "jwks_fetch_ok");
    server.set_jwks(&jwks(&[(101, "k2")]));
    assert!(eventually(10, || counter(&envoy, "jwks_fetch_ok") >= fetched + 2));
    let r = call(&t1);
    assert_eq!(r.status, 401, "a cached verdict outlived its key: {r:?}");
    assert_eq!(r.json(), json!({"error": "invalid_token"}));
    assert_eq!(envoy.decisions("deny", Some("token_unknown_key")), 1);
    assert_eq!(call(&t2).status, 200, "tokens of the key that stayed still pass");
}
