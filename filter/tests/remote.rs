//! Keys from a `jwks_uri` and introspection of opaque tokens, decided natively with Envoy's
//! shared-data semantics: fail closed before the first fetch, one instance-wide fetch per interval,
//! keys shared between VMs, rotation picked up through an unknown `kid`, keys kept when a refresh
//! fails, introspection answers cached (active and inactive) and a failed call refused with 503.
//! The same paths run inside a real Envoy in `tests/tests/keys.rs`.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers fail the test on bad fixtures"
)]

mod common;

use std::cell::RefCell;

use keybound_core::dpop::{self, NewProof};
use keybound_core::jwk::Jwk;
use keybound_core::jws::{self, P256Signer, RustCrypto, Signer};
use keybound_filter::config::Config;
use keybound_filter::gate::{Fetch, Gate, Outcome, Request};
use serde_json::{Value, json};

use common::Store;

const NOW: u64 = 1_700_000_000;
const ISS: &str = "https://as.example.com";
const AUD: &str = "https://rs.example.com";

fn signer(n: u8) -> P256Signer {
    P256Signer::from_bytes(&[n; 32]).unwrap()
}

/// A JWKS with the issuer keys `(seed, kid)`.
fn jwks(keys: &[(u8, &str)]) -> String {
    let keys: Vec<Value> = keys
        .iter()
        .map(|(n, kid)| {
            let jwk = Jwk::new(signer(*n).public_key().clone(), Some((*kid).into()), None);
            serde_json::from_str(&jwk.to_json()).unwrap()
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

fn remote_config(extra: Value) -> Value {
    let mut c = json!({
        "issuers": [{"issuer": ISS, "audiences": [AUD], "jwks_uri": "http://idp.internal:8080/keys?v=1",
            "jwks_cluster": "idp", "jwks_refresh_seconds": 300, "jwks_min_refetch_seconds": 10}],
        "token_cache": {"max_entries": 0},
        "dpop": {"origins": ["https://rs.example.com"]},
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn new_gate(config: &Value, store: &Store) -> Gate {
    let gate = Gate::new(Config::parse(config.to_string().as_bytes()).unwrap());
    gate.prepare_shared(store).unwrap();
    gate
}

/// A DPoP-bound access token from issuer key `(seed, kid)`.
fn token(seed: u8, kid: &str, client_key: &dyn Signer, exp: u64) -> String {
    let claims = json!({"iss": ISS, "aud": AUD, "sub": "alice", "client_id": "c1", "iat": NOW - 5, "exp": exp,
        "jti": "t1", "scope": "read", "cnf": {"jkt": client_key.public_key().thumbprint().to_string()}});
    jws::sign_json(&signer(seed), Some("at+jwt"), Some(kid), &claims).unwrap()
}

struct Client {
    key: P256Signer,
    jti: RefCell<u32>,
}

impl Client {
    fn new() -> Client {
        Client {
            key: signer(1),
            jti: RefCell::new(0),
        }
    }

    /// Headers for a request with `token` and a fresh proof at `now`.
    fn headers(&self, token: &str, now: u64) -> Vec<(String, String)> {
        *self.jti.borrow_mut() += 1;
        let jti = format!("jti-{}", self.jti.borrow());
        let proof = dpop::create_proof(
            &self.key,
            &NewProof {
                htm: "GET",
                htu: "https://rs.example.com/api",
                iat: now,
                jti: &jti,
                access_token: Some(token),
                nonce: None,
            },
        )
        .unwrap();
        vec![
            ("authorization".into(), format!("DPoP {token}")),
            ("dpop".into(), proof),
        ]
    }
}

fn request(headers: &[(String, String)], now: u64) -> Request<'_> {
    Request {
        method: "GET",
        scheme: "https",
        authority: "rs.example.com",
        path: "/api",
        headers,
        peer_cert_digest: None,
        peer_uri_san: None,
        route_name: None,
        route_requirement: None,
        now,
    }
}

fn decide(gate: &mut Gate, store: &Store, headers: &[(String, String)], now: u64) -> Outcome {
    gate.decide(&request(headers, now), store, &RustCrypto)
}

fn again(gate: &mut Gate, store: &Store, headers: &[(String, String)], now: u64) -> Outcome {
    gate.decide_again(&request(headers, now), store, &RustCrypto)
}

/// Status and reason of a final outcome.
fn verdict(o: &Outcome) -> (u16, &'static str) {
    match o {
        Outcome::Allow { log, .. } => (200, log.reason),
        Outcome::Deny { status, log, .. } => (*status, log.reason),
        Outcome::Fetch(f) => panic!("unexpected fetch {f:?}"),
    }
}

fn www_authenticate(o: &Outcome) -> &str {
    match o {
        Outcome::Deny { headers, .. } => headers
            .iter()
            .find(|(k, _)| k == "www-authenticate")
            .map(|(_, v)| v.as_str())
            .unwrap(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn before_the_first_good_fetch_requests_fail_closed() {
    let store = Store::default();
    let mut gate = new_gate(&remote_config(json!({})), &store);
    let client = Client::new();
    let t = token(100, "k1", &client.key, NOW + 600);
    let h = client.headers(&t, NOW);
    // The first request asks for the keys, and the call is the configured one.
    assert_eq!(decide(&mut gate, &store, &h, NOW), Outcome::Fetch(Fetch::Jwks(0)));
    let call = gate.call_for(&Fetch::Jwks(0)).unwrap();
    assert_eq!(call.target.cluster, "idp");
    assert_eq!(call.target.timeout_ms, 5000);
    assert!(call.headers.contains(&(":method", "GET".into())));
    assert!(call.headers.contains(&(":path", "/keys?v=1".into())));
    assert!(call.headers.contains(&(":authority", "idp.internal:8080".into())));
    // While that fetch is in flight, a second request does not start another: 503.
    let h2 = client.headers(&t, NOW);
    assert_eq!(verdict(&decide(&mut gate, &store, &h2, NOW)), (503, "jwks_unavailable"));
    // The endpoint is down: the waiting request is refused with 503, never let through.
    assert!(gate.jwks_response(0, Some(502), b"", &store, NOW).is_err());
    assert!(gate.jwks_response(0, None, b"", &store, NOW).is_err());
    assert_eq!(verdict(&again(&mut gate, &store, &h, NOW)), (503, "jwks_unavailable"));
    assert!(!gate.has_keys(0));
    // Within the refetch interval nobody fetches; after it, the next request does.
    let h3 = client.headers(&t, NOW + 5);
    assert_eq!(
        verdict(&decide(&mut gate, &store, &h3, NOW + 5)),
        (503, "jwks_unavailable")
    );
    assert!(gate.due_fetches(&store, NOW + 5).is_empty());
    let h4 = client.headers(&t, NOW + 10);
    assert_eq!(decide(&mut gate, &store, &h4, NOW + 10), Outcome::Fetch(Fetch::Jwks(0)));
    assert_eq!(
        gate.jwks_response(0, Some(200), jwks(&[(100, "k1")]).as_bytes(), &store, NOW + 10),
        Ok(1)
    );
    assert_eq!(verdict(&again(&mut gate, &store, &h4, NOW + 10)), (200, "ok"));
}

#[test]
fn one_vm_fetches_and_the_others_adopt_the_keys() {
    let store = Store::default();
    let config = remote_config(json!({}));
    let (mut a, mut b) = (new_gate(&config, &store), new_gate(&config, &store));
    // On the first tick exactly one VM wins the right to fetch.
    assert_eq!(a.due_fetches(&store, NOW), vec![Fetch::Jwks(0)]);
    assert!(b.due_fetches(&store, NOW).is_empty());
    a.jwks_response(0, Some(200), jwks(&[(100, "k1")]).as_bytes(), &store, NOW)
        .unwrap();
    // The other VM has the keys after its next tick, without a fetch of its own.
    assert!(!b.has_keys(0));
    assert!(b.due_fetches(&store, NOW + 1).is_empty());
    assert!(b.has_keys(0));
    let client = Client::new();
    let t = token(100, "k1", &client.key, NOW + 600);
    assert_eq!(
        verdict(&decide(&mut b, &store, &client.headers(&t, NOW + 1), NOW + 1)),
        (200, "ok")
    );
    // A third VM that never ticked finds them on its first request.
    let mut c = new_gate(&config, &store);
    assert_eq!(
        verdict(&decide(&mut c, &store, &client.headers(&t, NOW + 1), NOW + 1)),
        (200, "ok")
    );
    // The periodic refresh: due after jwks_refresh_seconds, for one VM only.
    let later = NOW + 300;
    let due: Vec<_> = [&mut a, &mut b, &mut c]
        .into_iter()
        .flat_map(|g| g.due_fetches(&store, later))
        .collect();
    assert_eq!(due, vec![Fetch::Jwks(0)]);
}

#[test]
fn an_unknown_kid_triggers_one_refetch_then_is_rate_limited() {
    let store = Store::default();
    let mut gate = new_gate(&remote_config(json!({})), &store);
    assert_eq!(gate.due_fetches(&store, NOW), vec![Fetch::Jwks(0)]);
    gate.jwks_response(0, Some(200), jwks(&[(100, "k1")]).as_bytes(), &store, NOW)
        .unwrap();
    let client = Client::new();
    // The issuer rotates to k2: a token signed by it makes the gate refetch, once.
    let later = NOW + 60;
    let t2 = token(101, "k2", &client.key, later + 600);
    let h = client.headers(&t2, later);
    assert_eq!(decide(&mut gate, &store, &h, later), Outcome::Fetch(Fetch::Jwks(0)));
    gate.jwks_response(
        0,
        Some(200),
        jwks(&[(100, "k1"), (101, "k2")]).as_bytes(),
        &store,
        later,
    )
    .unwrap();
    assert_eq!(verdict(&again(&mut gate, &store, &h, later)), (200, "ok"));
    // Tokens under the old key still verify.
    let t1 = token(100, "k1", &client.key, later + 600);
    assert_eq!(
        verdict(&decide(&mut gate, &store, &client.headers(&t1, later), later)),
        (200, "ok")
    );
    // A kid the issuer does not have: no second fetch within the interval, refused as invalid_token.
    let t3 = token(102, "k3", &client.key, later + 600);
    let o = decide(&mut gate, &store, &client.headers(&t3, later + 1), later + 1);
    assert_eq!(verdict(&o), (401, "token_unknown_key"));
    assert!(www_authenticate(&o).contains("error=\"invalid_token\""), "{o:?}");
    // After the fetch the kid is still unknown: refused, and decide_again never fetches again.
    let h3 = client.headers(&t3, later + 10);
    assert_eq!(
        decide(&mut gate, &store, &h3, later + 10),
        Outcome::Fetch(Fetch::Jwks(0))
    );
    gate.jwks_response(
        0,
        Some(200),
        jwks(&[(100, "k1"), (101, "k2")]).as_bytes(),
        &store,
        later + 10,
    )
    .unwrap();
    assert_eq!(
        verdict(&again(&mut gate, &store, &h3, later + 10)),
        (401, "token_unknown_key")
    );
}

#[test]
fn keys_survive_failed_refreshes_and_bad_documents() {
    let store = Store::default();
    let mut gate = new_gate(&remote_config(json!({})), &store);
    gate.due_fetches(&store, NOW);
    gate.jwks_response(0, Some(200), jwks(&[(100, "k1")]).as_bytes(), &store, NOW)
        .unwrap();
    let big = format!(r#"{{"keys":[],"pad":"{}"}}"#, "x".repeat(70_000));
    let private = json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA", "d": "AAAA"}]}).to_string();
    let bad: [(Option<u16>, &[u8]); 6] = [
        (Some(503), b"{}"),
        (None, b""),
        (Some(200), b"not json"),
        (Some(200), br#"{"keys": []}"#),
        (Some(200), big.as_bytes()),
        (Some(200), private.as_bytes()),
    ];
    let client = Client::new();
    let t = token(100, "k1", &client.key, NOW + 6000);
    for (i, (status, body)) in bad.iter().enumerate() {
        let now = NOW + 300 * (i as u64 + 1);
        assert_eq!(gate.due_fetches(&store, now), vec![Fetch::Jwks(0)], "case {i}");
        assert!(gate.jwks_response(0, *status, body, &store, now).is_err(), "case {i}");
        assert_eq!(
            verdict(&decide(&mut gate, &store, &client.headers(&t, now), now)),
            (200, "ok"),
            "case {i}"
        );
    }
}

fn introspection_config() -> Value {
    let jwk: Value = serde_json::from_str(&jwks(&[(100, "k1")])).unwrap();
    json!({
        "issuers": [{"issuer": ISS, "audiences": [AUD], "jwks": jwk}],
        "introspection": {"endpoint": "https://as.internal/introspect", "cluster": "as", "client_id": "gw 1",
            "client_secret": "s3cret:+", "issuer": ISS, "audiences": [AUD], "max_cache_seconds": 120},
        "dpop": {"origins": ["https://rs.example.com"]},
    })
}

fn active(client: &Client, exp: u64) -> String {
    json!({"active": true, "iss": ISS, "aud": AUD, "sub": "alice", "client_id": "c1", "scope": "read",
        "exp": exp, "token_type": "DPoP", "cnf": {"jkt": client.key.public_key().thumbprint().to_string()}})
    .to_string()
}

#[test]
fn opaque_tokens_are_introspected_once_and_cached_until_exp() {
    let store = Store::default();
    let mut gate = new_gate(&introspection_config(), &store);
    let client = Client::new();
    let opaque = "2YotnFZFEjr1zCsicMWpAA";
    let h = client.headers(opaque, NOW);
    let fetch = Fetch::Introspect(opaque.into());
    assert_eq!(decide(&mut gate, &store, &h, NOW), Outcome::Fetch(fetch.clone()));
    let call = gate.call_for(&fetch).unwrap();
    assert_eq!(call.target.cluster, "as");
    assert!(call.headers.contains(&(":method", "POST".into())));
    assert!(call.headers.contains(&(":path", "/introspect".into())));
    assert!(
        call.headers
            .contains(&("content-type", "application/x-www-form-urlencoded".into()))
    );
    // client_secret_basic: form-encoded id and secret (RFC 6749 §2.3.1), then base64.
    // base64("gw%201:s3cret%3A%2B")
    assert!(
        call.headers
            .contains(&("authorization", "Basic Z3clMjAxOnMzY3JldCUzQSUyQg==".into())),
        "{:?}",
        call.headers
    );
    assert_eq!(
        call.body.as_deref(),
        Some(&b"token=2YotnFZFEjr1zCsicMWpAA&token_type_hint=access_token"[..])
    );
    let exp = NOW + 100;
    gate.introspection_response(opaque, Some(200), active(&client, exp).as_bytes(), NOW)
        .unwrap();
    let o = again(&mut gate, &store, &h, NOW);
    assert_eq!(verdict(&o), (200, "ok"));
    // The second request makes no call: the answer is cached, and the binding is still checked.
    let o = decide(&mut gate, &store, &client.headers(opaque, NOW + 1), NOW + 1);
    assert!(matches!(&o, Outcome::Allow { log, .. } if log.token_cache_hit), "{o:?}");
    let thief = Client {
        key: signer(9),
        jti: RefCell::new(100),
    };
    let o = decide(&mut gate, &store, &thief.headers(opaque, NOW + 1), NOW + 1);
    assert_eq!(verdict(&o).0, 401, "{o:?}");
    // After exp (and leeway) the cached answer is not used: a new call.
    let late = exp + 11;
    assert!(matches!(
        decide(&mut gate, &store, &client.headers(opaque, late), late),
        Outcome::Fetch(_)
    ));
}

#[test]
fn inactive_tokens_are_refused_and_a_failed_introspection_is_503() {
    let store = Store::default();
    let mut gate = new_gate(&introspection_config(), &store);
    let client = Client::new();
    let revoked = "revoked-token";
    let h = client.headers(revoked, NOW);
    assert!(matches!(decide(&mut gate, &store, &h, NOW), Outcome::Fetch(_)));
    gate.introspection_response(revoked, Some(200), br#"{"active": false}"#, NOW)
        .unwrap();
    let o = again(&mut gate, &store, &h, NOW);
    assert_eq!(verdict(&o), (401, "token_inactive"));
    assert!(www_authenticate(&o).contains("error=\"invalid_token\""));
    // Cached: the next attempt makes no call.
    let o = decide(&mut gate, &store, &client.headers(revoked, NOW + 1), NOW + 1);
    assert_eq!(verdict(&o), (401, "token_inactive"));
    // A token for another resource server is refused too.
    let other = "other-audience";
    let h = client.headers(other, NOW);
    assert!(matches!(decide(&mut gate, &store, &h, NOW), Outcome::Fetch(_)));
    let body = active(&client, NOW + 100).replace(AUD, "https://elsewhere.example");
    gate.introspection_response(other, Some(200), body.as_bytes(), NOW)
        .unwrap();
    assert_eq!(verdict(&again(&mut gate, &store, &h, NOW)).0, 401);
    // The server fails, or answers garbage: 503, nothing cached, the next request asks again.
    for (status, body) in [(Some(500), &b"{}"[..]), (None, b""), (Some(200), b"<html>")] {
        let t = "unlucky";
        let h = client.headers(t, NOW);
        assert!(matches!(decide(&mut gate, &store, &h, NOW), Outcome::Fetch(_)));
        assert_eq!(
            gate.introspection_response(t, status, body, NOW),
            Err("introspection_unavailable")
        );
        assert_eq!(
            verdict(&again(&mut gate, &store, &h, NOW)),
            (503, "introspection_unavailable")
        );
    }
}

#[test]
fn without_introspection_opaque_tokens_are_invalid() {
    let store = Store::default();
    let config = remote_config(json!({}));
    let mut gate = new_gate(&config, &store);
    let client = Client::new();
    let o = decide(&mut gate, &store, &client.headers("opaque", NOW), NOW);
    assert_eq!(verdict(&o).0, 401);
    assert!(www_authenticate(&o).contains("invalid_token"));
}

#[test]
fn introspection_with_tls_client_auth_sends_the_client_id_and_no_secret() {
    let mut config = introspection_config();
    let intro = config["introspection"].as_object_mut().unwrap();
    intro.remove("client_secret");
    intro.insert("auth_method".into(), json!("tls_client_auth"));
    let store = Store::default();
    let gate = new_gate(&config, &store);
    let call = gate.call_for(&Fetch::Introspect("tok en".into())).unwrap();
    // The certificate is the cluster's business; the request names the client and carries no secret.
    assert!(
        call.headers.iter().all(|(k, _)| *k != "authorization"),
        "{:?}",
        call.headers
    );
    assert_eq!(
        call.body.as_deref(),
        Some(&b"token=tok%20en&token_type_hint=access_token&client_id=gw%201"[..])
    );
}

/// Issue 12, item 6: keybound-authz answered `active: true` for a refresh token (its record has
/// `token_type` `DPoP` and `cnf`, but no `aud`), and the gateway took it as an access token. An
/// answer without one of the gateway's audiences, or about another kind of token, is refused.
#[test]
fn introspection_answers_for_refresh_tokens_are_refused() {
    let store = Store::default();
    let mut gate = new_gate(&introspection_config(), &store);
    let client = Client::new();
    let jkt = client.key.public_key().thumbprint().to_string();
    // What keybound-authz's introspection said about one of its refresh tokens.
    let refresh_answer = json!({"active": true, "iss": ISS, "sub": "alice", "client_id": "c1", "scope": "read",
        "iat": NOW - 5, "exp": NOW + 86_400, "cnf": {"jkt": jkt}, "token_type": "DPoP"});
    let typed_refresh = json!({"active": true, "iss": ISS, "aud": AUD, "sub": "alice", "client_id": "c1",
        "exp": NOW + 600, "cnf": {"jkt": jkt}, "token_type": "refresh_token"});
    let hydra_refresh = json!({"active": true, "iss": ISS, "aud": AUD, "sub": "alice", "client_id": "c1",
        "exp": NOW + 600, "cnf": {"jkt": jkt}, "token_type": "DPoP", "token_use": "refresh_token"});
    for (n, (answer, reason)) in [
        (refresh_answer, "token_missing_claim"),
        (typed_refresh, "token_not_access_token"),
        (hydra_refresh, "token_not_access_token"),
    ]
    .into_iter()
    .enumerate()
    {
        let refresh_token = format!("opaque-refresh-token-{n}");
        let h = client.headers(&refresh_token, NOW);
        assert!(matches!(decide(&mut gate, &store, &h, NOW), Outcome::Fetch(_)));
        gate.introspection_response(&refresh_token, Some(200), answer.to_string().as_bytes(), NOW)
            .unwrap();
        let o = again(&mut gate, &store, &h, NOW);
        assert_eq!(verdict(&o), (401, reason), "{answer}");
        assert!(www_authenticate(&o).contains("error=\"invalid_token\""), "{o:?}");
        // The refusal is cached like any inactive answer: no second call.
        let o = decide(&mut gate, &store, &client.headers(&refresh_token, NOW + 1), NOW + 1);
        assert_eq!(verdict(&o), (401, reason));
    }
}

/// A remote-keys configuration with the token cache on (`max_entries`) and `extra` merged in.
fn cached_remote_config(extra: Value) -> Value {
    let mut c = remote_config(json!({"token_cache": {"max_entries": 100}}));
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn cache_hit(o: &Outcome) -> bool {
    matches!(o, Outcome::Allow { log, .. } if log.token_cache_hit)
}

/// Issue 12, item 7: a token verified with a key that later left the issuer's key set stayed
/// accepted from the cache until its `exp`. A cached verdict goes with its key, whether this VM
/// fetched the new set or adopted it from another VM.
#[test]
fn a_cached_verdict_goes_when_its_key_leaves_the_key_set() {
    let store = Store::default();
    let config = cached_remote_config(json!({"token_cache": {"max_entries": 100, "max_age_seconds": 3600}}));
    let (mut a, mut b) = (new_gate(&config, &store), new_gate(&config, &store));
    assert_eq!(a.due_fetches(&store, NOW), vec![Fetch::Jwks(0)]);
    a.jwks_response(0, Some(200), jwks(&[(100, "k1"), (101, "k2")]).as_bytes(), &store, NOW)
        .unwrap();
    let client = Client::new();
    let t1 = token(100, "k1", &client.key, NOW + 3600);
    let t2 = token(101, "k2", &client.key, NOW + 3600);
    for gate in [&mut a, &mut b] {
        for t in [&t1, &t2] {
            assert_eq!(
                verdict(&decide(gate, &store, &client.headers(t, NOW), NOW)),
                (200, "ok")
            );
            assert!(cache_hit(&decide(gate, &store, &client.headers(t, NOW + 1), NOW + 1)));
        }
    }
    // The issuer drops k1 (compromised); VM `a` fetches the new set at the next refresh.
    let later = NOW + 300;
    assert_eq!(a.due_fetches(&store, later), vec![Fetch::Jwks(0)]);
    a.jwks_response(0, Some(200), jwks(&[(101, "k2")]).as_bytes(), &store, later)
        .unwrap();
    // VM `b` adopts it on its next tick.
    assert!(b.due_fetches(&store, later + 1).is_empty());
    for gate in [&mut a, &mut b] {
        let o = decide(gate, &store, &client.headers(&t1, later + 1), later + 1);
        assert!(!cache_hit(&o), "{o:?}");
        assert_eq!(verdict(&o), (401, "token_unknown_key"));
        // Tokens of the key that stayed are still served from the cache.
        assert!(cache_hit(&decide(
            gate,
            &store,
            &client.headers(&t2, later + 2),
            later + 2
        )));
    }
}

/// Issue 12, item 7: any cached verdict is used at most `token_cache.max_age_seconds` after it
/// was made, whatever the token's `exp`.
#[test]
fn a_cached_verdict_has_a_maximum_age() {
    let store = Store::default();
    let config = cached_remote_config(json!({"token_cache": {"max_entries": 100, "max_age_seconds": 60}}));
    let mut gate = new_gate(&config, &store);
    gate.due_fetches(&store, NOW);
    gate.jwks_response(0, Some(200), jwks(&[(100, "k1")]).as_bytes(), &store, NOW)
        .unwrap();
    let client = Client::new();
    let t = token(100, "k1", &client.key, NOW + 3600);
    assert!(!cache_hit(&decide(&mut gate, &store, &client.headers(&t, NOW), NOW)));
    assert!(cache_hit(&decide(
        &mut gate,
        &store,
        &client.headers(&t, NOW + 59),
        NOW + 59
    )));
    let o = decide(&mut gate, &store, &client.headers(&t, NOW + 60), NOW + 60);
    assert_eq!(verdict(&o), (200, "ok"));
    assert!(!cache_hit(&o), "verified again after 60 s");
    assert!(cache_hit(&decide(
        &mut gate,
        &store,
        &client.headers(&t, NOW + 61),
        NOW + 61
    )));
}

/// Issue 12, item 8: remote keys were shared between VMs under `kb/jwks/<issuer index>`, so two
/// keybound configurations in one Envoy (or issuers reordered on a reload) read each other's
/// keys: a token of issuer B signed with issuer A's key was accepted. Keys are shared under the
/// issuer's identity.
#[test]
fn two_configurations_in_one_envoy_never_share_keys() {
    let store = Store::default();
    let issuer = |iss: &str, uri: &str| {
        json!({"issuer": iss, "audiences": [AUD], "jwks_uri": uri, "jwks_cluster": "idp",
            "jwks_refresh_seconds": 300, "jwks_min_refetch_seconds": 10})
    };
    let (iss_a, iss_b) = ("https://a.example.com", "https://b.example.com");
    let a_cfg = remote_config(json!({"issuers": [issuer(iss_a, "https://a.example.com/jwks")]}));
    let b_cfg = remote_config(json!({"issuers": [issuer(iss_b, "https://b.example.com/jwks")]}));
    let mut a = new_gate(&a_cfg, &store);
    let mut b = new_gate(&b_cfg, &store);
    assert_eq!(a.due_fetches(&store, NOW), vec![Fetch::Jwks(0)]);
    a.jwks_response(0, Some(200), jwks(&[(100, "k1")]).as_bytes(), &store, NOW)
        .unwrap();
    // B must not adopt A's keys: it fetches its own.
    assert_eq!(b.due_fetches(&store, NOW + 1), vec![Fetch::Jwks(0)]);
    assert!(!b.has_keys(0));
    let client = Client::new();
    let claims = json!({"iss": iss_b, "aud": AUD, "sub": "mallory", "client_id": "c1", "iat": NOW, "exp": NOW + 600,
        "jti": "x", "scope": "read", "cnf": {"jkt": client.key.public_key().thumbprint().to_string()}});
    let forged = jws::sign_json(&signer(100), Some("at+jwt"), Some("k1"), &claims).unwrap();
    let o = b.decide_again(
        &request(&client.headers(&forged, NOW + 1), NOW + 1),
        &store,
        &RustCrypto,
    );
    assert_eq!(verdict(&o), (503, "jwks_unavailable"));
    b.jwks_response(0, Some(200), jwks(&[(102, "k1")]).as_bytes(), &store, NOW + 1)
        .unwrap();
    let o = decide(&mut b, &store, &client.headers(&forged, NOW + 2), NOW + 2);
    assert_eq!(verdict(&o), (401, "token_bad_signature"));
    // A reload that reorders the issuers keeps each issuer's own keys, without a fetch.
    let both = remote_config(json!({"issuers": [issuer(iss_b, "https://b.example.com/jwks"),
        issuer(iss_a, "https://a.example.com/jwks")]}));
    let mut reloaded = new_gate(&both, &store);
    assert!(reloaded.due_fetches(&store, NOW + 3).is_empty());
    let good_a = jws::sign_json(
        &signer(100),
        Some("at+jwt"),
        Some("k1"),
        &json!({"iss": iss_a, "aud": AUD, "sub": "alice", "client_id": "c1", "iat": NOW, "exp": NOW + 600,
            "jti": "y", "scope": "read", "cnf": {"jkt": client.key.public_key().thumbprint().to_string()}}),
    )
    .unwrap();
    let o = decide(&mut reloaded, &store, &client.headers(&good_a, NOW + 3), NOW + 3);
    assert_eq!(verdict(&o), (200, "ok"));
    let o = decide(&mut reloaded, &store, &client.headers(&forged, NOW + 3), NOW + 3);
    assert_eq!(verdict(&o), (401, "token_bad_signature"));
}

/// `introspection.dangerous_accept_untyped` lets answers without `token_type` through (servers
/// that do not send it); without it they are refused.
#[test]
fn untyped_introspection_answers_only_when_configured() {
    let client = Client::new();
    let jkt = client.key.public_key().thumbprint().to_string();
    let untyped = json!({"active": true, "iss": ISS, "aud": AUD, "sub": "alice", "client_id": "c1",
        "exp": NOW + 600, "cnf": {"jkt": jkt}});
    for (lenient, expected) in [(false, (401, "token_not_access_token")), (true, (200, "ok"))] {
        let mut config = introspection_config();
        config["introspection"]["dangerous_accept_untyped"] = json!(lenient);
        let store = Store::default();
        let mut gate = new_gate(&config, &store);
        let h = client.headers("untyped-token", NOW);
        assert!(matches!(decide(&mut gate, &store, &h, NOW), Outcome::Fetch(_)));
        gate.introspection_response("untyped-token", Some(200), untyped.to_string().as_bytes(), NOW)
            .unwrap();
        assert_eq!(
            verdict(&again(&mut gate, &store, &h, NOW)),
            expected,
            "lenient: {lenient}"
        );
    }
}

/// `token_cache.max_age_seconds` caps introspection answers too, below their own
/// `max_cache_seconds`.
#[test]
fn introspection_answers_are_cached_at_most_the_token_cache_age() {
    let mut config = introspection_config();
    config["token_cache"] = json!({"max_age_seconds": 30});
    let store = Store::default();
    let mut gate = new_gate(&config, &store);
    let client = Client::new();
    let opaque = "short-lived-verdict";
    let h = client.headers(opaque, NOW);
    assert!(matches!(decide(&mut gate, &store, &h, NOW), Outcome::Fetch(_)));
    gate.introspection_response(opaque, Some(200), active(&client, NOW + 3600).as_bytes(), NOW)
        .unwrap();
    assert_eq!(verdict(&again(&mut gate, &store, &h, NOW)), (200, "ok"));
    let o = decide(&mut gate, &store, &client.headers(opaque, NOW + 29), NOW + 29);
    assert!(cache_hit(&o), "{o:?}");
    assert!(matches!(
        decide(&mut gate, &store, &client.headers(opaque, NOW + 30), NOW + 30),
        Outcome::Fetch(_)
    ));
}
