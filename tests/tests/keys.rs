//! The filter's network paths inside a real Envoy (`--concurrency 2`): keys from a `jwks_uri`
//! (fail closed while the endpoint is down, recovery, rotation through an unknown `kid` with
//! exactly one refetch, rate limiting, keys kept when refreshes fail), introspection of opaque
//! tokens through a cluster (cached per worker: the second request makes no call), and ES256
//! verified by Envoy's BoringSSL `verify_signature`.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test code: a failed fixture fails the test"
)]

use std::time::Duration;

use keybound_core::dpop::{self, NewProof};
use keybound_core::jws::{self, Signer};
use keybound_e2e::issuer::{Connection, IssuerServer};

mod common;

use common::{eventually, jwks, now, p256, unique};
use keybound_e2e::{Envoy, EnvoyOptions, Response, Upstream, request};
use serde_json::{Value, json};

const ISS: &str = "https://as.example.com";
const AUD: &str = "https://rs.example.com";
const URL: &str = "http://rs.example.com/api";
/// `base64("gateway:s3cret")`.
const CLIENT_AUTH: &str = "Basic Z2F0ZXdheTpzM2NyZXQ=";

/// A fresh DPoP-bound token signed by issuer key `(seed, kid)` for `client`.
fn token(seed: u8, kid: &str, client: &dyn Signer) -> String {
    let n = now();
    let claims = json!({"iss": ISS, "aud": AUD, "sub": "alice", "client_id": "c1", "iat": n, "exp": n + 600,
        "jti": unique("t"), "scope": "read", "cnf": {"jkt": client.public_key().thumbprint().to_string()}});
    jws::sign_json(&p256(seed), Some("at+jwt"), Some(kid), &claims).unwrap()
}

fn proof(client: &dyn Signer, token: &str) -> String {
    let jti = unique("p");
    dpop::create_proof(
        client,
        &NewProof {
            htm: "GET",
            htu: URL,
            iat: now(),
            jti: &jti,
            access_token: Some(token),
            nonce: None,
        },
    )
    .unwrap()
}

fn call(envoy: &Envoy, client: &dyn Signer, token: &str) -> Response {
    let auth = format!("DPoP {token}");
    let p = proof(client, token);
    request(envoy.port, "GET", "/api", &[("authorization", &auth), ("dpop", &p)]).unwrap()
}

fn remote_config(refresh: u64, min_refetch: u64) -> String {
    json!({"issuers": [{"issuer": ISS, "audiences": [AUD], "jwks_uri": "http://issuer.internal/jwks",
        "jwks_cluster": "issuer", "jwks_refresh_seconds": refresh, "jwks_min_refetch_seconds": min_refetch,
        "jwks_timeout_ms": 2000}], "dpop": {"origins": ["http://rs.example.com"]}})
    .to_string()
}

fn start(config: &str, server: &IssuerServer, upstream: &Upstream) -> Envoy {
    let opts = EnvoyOptions {
        clusters: vec![("issuer".into(), server.port)],
        ..EnvoyOptions::default()
    };
    Envoy::start_with(config, upstream, &opts).unwrap()
}

#[test]
fn jwks_endpoint_down_at_start_fails_closed_then_recovers_and_keys_survive_failed_refreshes() {
    let server = IssuerServer::start(&jwks(&[(100, "k1")]), CLIENT_AUTH).unwrap();
    server.set_jwks_status(503);
    let upstream = Upstream::start().unwrap();
    let envoy = start(&remote_config(1, 1), &server, &upstream);
    let client = p256(1);
    // No keys yet: refused with 503, never passed through.
    let r = call(&envoy, &client, &token(100, "k1", &client));
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.json()["error"], "temporarily_unavailable");
    assert!(envoy.decisions("unavailable", Some("jwks_unavailable")) >= 1);
    assert!(eventually(5, || envoy.counter("wasmcustom.keybound.jwks_fetch_failed") >= 1));
    assert_eq!(envoy.decisions("allow", None), 0);
    // The endpoint comes back: within a refetch interval and a tick, tokens verify.
    server.set_jwks_status(200);
    assert!(
        eventually(10, || call(&envoy, &client, &token(100, "k1", &client)).status == 200),
        "{}",
        envoy.log_tail()
    );
    assert!(envoy.counter("wasmcustom.keybound.jwks_fetch_ok") >= 1);
    // Refreshes (every second here) now fail: the keys we have stay in use.
    server.set_jwks_status(500);
    let failed = envoy.counter("wasmcustom.keybound.jwks_fetch_failed");
    assert!(eventually(10, || envoy
        .counter("wasmcustom.keybound.jwks_fetch_failed")
        >= failed + 2));
    for _ in 0..6 {
        let r = call(&envoy, &client, &token(100, "k1", &client));
        assert_eq!(r.status, 200, "{r:?}");
    }
    // Every fetch went to the configured path and authority.
    let calls = server.jwks_calls();
    assert!(
        calls
            .iter()
            .all(|c| c.path == "/jwks" && c.header("host") == Some("issuer.internal"))
    );
}

#[test]
fn rotation_is_picked_up_through_one_refetch_and_unknown_kids_are_rate_limited() {
    let server = IssuerServer::start(&jwks(&[(100, "k1")]), CLIENT_AUTH).unwrap();
    let upstream = Upstream::start().unwrap();
    // Unix seconds: a 5 s interval is at least 4 s between fetches.
    let envoy = start(&remote_config(300, 5), &server, &upstream);
    let client = p256(1);
    assert!(
        eventually(10, || call(&envoy, &client, &token(100, "k1", &client)).status == 200),
        "{}",
        envoy.log_tail()
    );
    // Both workers and the main thread share one fetch: one call at start.
    assert_eq!(server.jwks_calls().len(), 1);
    // Tokens from many connections (both workers) verify without another fetch.
    for _ in 0..8 {
        assert_eq!(call(&envoy, &client, &token(100, "k1", &client)).status, 200);
    }
    assert_eq!(server.jwks_calls().len(), 1);
    // The issuer rotates to k2. Past the refetch interval, the first k2 token triggers exactly one
    // refetch and is accepted.
    server.set_jwks(&jwks(&[(100, "k1"), (101, "k2")]));
    std::thread::sleep(Duration::from_millis(5100));
    let r = call(&envoy, &client, &token(101, "k2", &client));
    assert_eq!(r.status, 200, "{r:?} {}", envoy.log_tail());
    assert_eq!(server.jwks_calls().len(), 2);
    // The other worker picks k2 up from shared data, with no fetch of its own.
    for _ in 0..8 {
        assert_eq!(call(&envoy, &client, &token(101, "k2", &client)).status, 200);
    }
    assert_eq!(server.jwks_calls().len(), 2);
    // A kid the issuer does not have, right after: no fetch (rate limit), invalid_token.
    for _ in 0..5 {
        let r = call(&envoy, &client, &token(102, "k3", &client));
        assert_eq!(r.status, 401, "{r:?}");
        assert!(r.header("www-authenticate").unwrap().contains("invalid_token"));
    }
    assert_eq!(server.jwks_calls().len(), 2);
    assert!(envoy.decisions("deny", Some("token_unknown_key")) >= 5);
}

fn introspection_config() -> String {
    let mut jwk: Value = serde_json::from_str(&jwks(&[(100, "k1")])).unwrap();
    jwk["keys"][0]["kid"] = json!("k1");
    json!({
        "issuers": [{"issuer": ISS, "audiences": [AUD], "jwks": jwk}],
        "introspection": {"endpoint": "http://as.internal/introspect", "cluster": "issuer",
            "client_id": "gateway", "client_secret": "s3cret", "issuer": ISS, "audiences": [AUD]},
        "dpop": {"origins": ["http://rs.example.com"]},
    })
    .to_string()
}

#[test]
fn opaque_tokens_are_introspected_once_per_worker_and_cached() {
    let server = IssuerServer::start(&jwks(&[(100, "k1")]), CLIENT_AUTH).unwrap();
    let client = p256(1);
    let jkt = client.public_key().thumbprint().to_string();
    let exp = now() + 600;
    server.set_introspection(
        "opaque-1",
        &json!({"active": true, "iss": ISS, "aud": AUD, "sub": "bob", "client_id": "c9", "scope": "read",
            "exp": exp, "token_type": "DPoP", "cnf": {"jkt": jkt}})
        .to_string(),
    );
    let upstream = Upstream::start().unwrap();
    let envoy = start(&introspection_config(), &server, &upstream);
    let mut conn = Connection::open(envoy.port).unwrap();
    let send = |conn: &mut Connection, client: &dyn Signer, token: &str| {
        let auth = format!("DPoP {token}");
        let p = proof(client, token);
        conn.request("GET", "/api", &[("authorization", &auth), ("dpop", &p)])
            .unwrap()
    };
    let r = send(&mut conn, &client, "opaque-1");
    assert_eq!(r.status, 200, "{r:?} {}", envoy.log_tail());
    let echoed = r.json();
    assert_eq!(echoed["x-keybound-sub"], "bob");
    assert_eq!(echoed["x-keybound-client-id"], "c9");
    assert_eq!(echoed["x-keybound-jkt"], jkt.as_str());
    let calls = server.introspection_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].header("authorization"), Some(CLIENT_AUTH));
    assert_eq!(
        calls[0].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert!(calls[0].body.starts_with("token=opaque-1&"), "{:?}", calls[0].body);
    // The second request on the same worker makes no introspection call.
    let r = send(&mut conn, &client, "opaque-1");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(server.introspection_calls().len(), 1);
    assert!(envoy.counter("wasmcustom.keybound.token_cache_hits") >= 1);
    // The binding is still checked per request: another key is refused.
    let r = send(&mut conn, &p256(2), "opaque-1");
    assert_eq!(r.status, 401, "{r:?}");
    // An unknown (inactive) token: 401 invalid_token.
    let r = send(&mut conn, &client, "revoked-2");
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.header("www-authenticate").unwrap().contains("invalid_token"));
    assert!(envoy.decisions("deny", Some("token_inactive")) >= 1);
    // The introspection endpoint fails: 503, fail closed.
    server.set_introspection_status(500);
    let r = send(&mut conn, &client, "opaque-3");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(envoy.counter("wasmcustom.keybound.introspection_failed") >= 1);
    assert!(envoy.decisions("unavailable", Some("introspection_unavailable")) >= 1);
    assert!(envoy.counter("wasmcustom.keybound.introspection_calls") >= 3);
}

#[test]
fn es256_is_verified_by_envoy_boringssl_and_tampering_is_refused() {
    let server = IssuerServer::start(&jwks(&[(100, "k1")]), CLIENT_AUTH).unwrap();
    let upstream = Upstream::start().unwrap();
    let mut config: Value = serde_json::from_str(&introspection_config()).unwrap();
    config["verifier"] = json!("envoy");
    let envoy = start(&config.to_string(), &server, &upstream);
    assert!(
        eventually(5, || envoy
            .log_tail()
            .contains("ES256 verified by Envoy (BoringSSL verify_signature)")),
        "{}",
        envoy.log_tail()
    );
    let client = p256(1);
    let t = token(100, "k1", &client);
    assert_eq!(call(&envoy, &client, &t).status, 200);
    // One flipped bit in the token's signature, then in the proof's: refused.
    let mut bad = t.clone().into_bytes();
    let i = bad.len() - 10;
    bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
    let bad = String::from_utf8(bad).unwrap();
    let r = call(&envoy, &client, &bad);
    assert_eq!(r.status, 401, "{r:?}");
    assert!(envoy.decisions("deny", Some("token_bad_signature")) >= 1);
    let auth = format!("DPoP {t}");
    let mut p = proof(&client, &t).into_bytes();
    let i = p.len() - 10;
    p[i] = if p[i] == b'A' { b'B' } else { b'A' };
    let p = String::from_utf8(p).unwrap();
    let r = request(envoy.port, "GET", "/api", &[("authorization", &auth), ("dpop", &p)]).unwrap();
    assert_eq!(r.status, 401, "{r:?}");
    assert!(envoy.decisions("deny", Some("proof_bad_signature")) >= 1);
}

#[test]
fn the_pure_rust_verifier_can_be_chosen() {
    let server = IssuerServer::start(&jwks(&[(100, "k1")]), CLIENT_AUTH).unwrap();
    let upstream = Upstream::start().unwrap();
    let mut config: Value = serde_json::from_str(&introspection_config()).unwrap();
    config["verifier"] = json!("rust");
    let envoy = start(&config.to_string(), &server, &upstream);
    assert!(
        eventually(5, || envoy
            .log_tail()
            .contains("ES256 verified by keybound-core (pure Rust)")),
        "{}",
        envoy.log_tail()
    );
    let client = p256(1);
    assert_eq!(call(&envoy, &client, &token(100, "k1", &client)).status, 200);
}

#[test]
fn each_vm_reports_its_memory_and_token_cache_size() {
    let server = IssuerServer::start(&jwks(&[(100, "k1")]), CLIENT_AUTH).unwrap();
    let upstream = Upstream::start().unwrap();
    let mut config: Value = serde_json::from_str(&introspection_config()).unwrap();
    config["rules"] = json!([{"prefix": "/health", "auth": "none"}]);
    let envoy = start(&config.to_string(), &server, &upstream);
    assert_eq!(envoy.counter("wasmcustom.keybound.vm_memory_bytes"), 0);
    let client = p256(1);
    let t = token(100, "k1", &client);
    let mut conn = Connection::open(envoy.port).unwrap();
    let auth = format!("DPoP {t}");
    let p = proof(&client, &t);
    assert_eq!(
        conn.request("GET", "/api", &[("authorization", &auth), ("dpop", &p)])
            .unwrap()
            .status,
        200
    );
    // The gauges are refreshed every 1024 decisions of a VM; one connection stays on one worker.
    for _ in 0..1100 {
        assert_eq!(conn.request("GET", "/health", &[]).unwrap().status, 200);
    }
    let memory = envoy.counter("wasmcustom.keybound.vm_memory_bytes");
    assert!(memory >= 1 << 20 && memory.is_multiple_of(65_536), "{memory}");
    assert_eq!(envoy.counter("wasmcustom.keybound.token_cache_entries"), 1);
}
