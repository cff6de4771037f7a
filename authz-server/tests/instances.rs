//! Two keybound-authz processes sharing one PostgreSQL database (the harness's real server,
//! `keybound_e2e::postgres`), as two replicas behind a load balancer: same issuer and
//! configuration, each on its own port, talked to over real TLS. What one instance did, the other
//! knows: a code issued by one is redeemed at the other exactly once (also when both are asked at
//! the same moment), a client assertion or DPoP proof used at one is a replay at the other, a
//! `request_uri` pushed at one is authorized at the other, a signing-key rotation is seen by
//! both, and an account locked by failures at one is locked at the other.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

mod common;

use common::*;
use keybound_core::jws::P256Signer;
use std::time::{Duration, Instant};

/// The two instances and a client for each.
struct Pair {
    env: Env,
    a: Https,
    b: Https,
    _servers: (Server, Server),
}

fn pair(opts: Options) -> Pair {
    let env = Env::new(&on_postgres(opts));
    let first = env.start();
    let second = env.start_another();
    let a = Https::new(&env, None);
    let b = a.at(second.port);
    assert_ne!(a.port, b.port);
    Pair {
        env,
        a,
        b,
        _servers: (first, second),
    }
}

/// `fapi`'s code flow: PAR at `push_at` (private_key_jwt + DPoP), login and consent at
/// `browse_at`; returns the code and its PKCE verifier.
async fn fapi_code(env: &Env, push_at: &Https, browse_at: &Https, dpop: &P256Signer) -> (String, String) {
    let (verifier, challenge) = pkce();
    let a = assertion(env, "fapi", &fapi_key());
    let form = with_assertion(authz_params("fapi", &challenge, REDIRECT), &a);
    let r = push_at
        .post_form("/par", &form, &[("dpop", &proof(env, dpop, "/par", None))])
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let request_uri = r.json()["request_uri"].as_str().unwrap().to_string();
    let redirect = browser(browse_at, "fapi", &request_uri, PASSWORD, "allow").await;
    assert_eq!(redirect.status, 303, "{}", redirect.location);
    (redirect.params["code"].clone(), verifier)
}

async fn redeem(env: &Env, at: Https, code: String, verifier: String, dpop: P256Signer) -> Resp {
    redeem_with(
        at,
        code,
        verifier,
        assertion(env, "fapi", &fapi_key()),
        proof(env, &dpop, "/token", None),
    )
    .await
}

async fn redeem_with(at: Https, code: String, verifier: String, assertion: String, proof: String) -> Resp {
    at.post_form(
        "/token",
        &code_exchange(&code, &verifier, &assertion),
        &[("dpop", &proof)],
    )
    .await
}

async fn client_credentials(at: &Https, assertion: &str, proof: &str) -> Resp {
    at.post_form(
        "/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
        ],
        &[("dpop", proof)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_code_issued_by_one_instance_is_redeemed_at_the_other_exactly_once() {
    let p = pair(no_nonce());
    let dpop = key(0x61);
    // Pushed at A, authorized at B (the request_uri is shared), redeemed at B, then again at A.
    let (code, verifier) = fapi_code(&p.env, &p.a, &p.b, &dpop).await;
    let r = redeem(&p.env, p.b.clone(), code.clone(), verifier.clone(), dpop.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let at = r.json()["access_token"].as_str().unwrap().to_string();
    let r = redeem(&p.env, p.a.clone(), code, verifier, dpop.clone()).await;
    assert_eq!((r.status, r.error().as_str()), (400, "invalid_grant"), "{}", r.text());
    // The reuse at A revoked what B issued (the client proved itself with an assertion).
    let rs = assertion(&p.env, "rs", &rs_key());
    let r =
        p.b.post_form("/introspect", &with_assertion(vec![("token", at.as_str())], &rs), &[])
            .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["active"], false, "revoked across instances");

    // Both instances asked for the same code at the same moment: one token response.
    for round in 0..3 {
        let (code, verifier) = fapi_code(&p.env, &p.b, &p.a, &dpop).await;
        let fresh = || {
            (
                assertion(&p.env, "fapi", &fapi_key()),
                proof(&p.env, &dpop, "/token", None),
            )
        };
        let ((a1, p1), (a2, p2)) = (fresh(), fresh());
        let ta = tokio::spawn(redeem_with(p.a.clone(), code.clone(), verifier.clone(), a1, p1));
        let tb = tokio::spawn(redeem_with(p.b.clone(), code, verifier, a2, p2));
        let (ra, rb) = (ta.await.unwrap(), tb.await.unwrap());
        let mut statuses = [ra.status, rb.status];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 400], "round {round}: {} / {}", ra.text(), rb.text());
        let loser = if ra.status == 400 { &ra } else { &rb };
        assert_eq!(loser.error(), "invalid_grant");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_assertion_or_dpop_proof_used_at_one_instance_is_a_replay_at_the_other() {
    let p = pair(no_nonce());
    let dpop = key(0x62);
    let a = assertion(&p.env, "fapi", &fapi_key());
    let first = proof(&p.env, &dpop, "/token", None);
    let r = client_credentials(&p.a, &a, &first).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The assertion again at B (with a new proof): a replay.
    let r = client_credentials(&p.b, &a, &proof(&p.env, &dpop, "/token", None)).await;
    assert_eq!((r.status, r.error().as_str()), (401, "invalid_client"), "{}", r.text());
    // The proof again at B (with a new assertion): a replay.
    let r = client_credentials(&p.b, &assertion(&p.env, "fapi", &fapi_key()), &first).await;
    assert_eq!(
        (r.status, r.error().as_str()),
        (400, "invalid_dpop_proof"),
        "{}",
        r.text()
    );
    // Fresh ones are fine at B.
    let r = client_credentials(
        &p.b,
        &assertion(&p.env, "fapi", &fapi_key()),
        &proof(&p.env, &dpop, "/token", None),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // The same assertion at both at once: accepted once.
    let a = assertion(&p.env, "fapi", &fapi_key());
    let (pa, pb) = (
        proof(&p.env, &dpop, "/token", None),
        proof(&p.env, &dpop, "/token", None),
    );
    let (ra, rb) = tokio::join!(client_credentials(&p.a, &a, &pa), client_credentials(&p.b, &a, &pb));
    let mut statuses = [ra.status, rb.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 401], "{} / {}", ra.text(), rb.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_uri_pushed_at_one_instance_is_used_once_across_both() {
    let p = pair(no_nonce());
    let dpop = key(0x63);
    let (_, challenge) = pkce();
    let a = assertion(&p.env, "fapi", &fapi_key());
    let form = with_assertion(authz_params("fapi", &challenge, REDIRECT), &a);
    let r =
        p.a.post_form("/par", &form, &[("dpop", &proof(&p.env, &dpop, "/par", None))])
            .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let request_uri = r.json()["request_uri"].as_str().unwrap().to_string();
    // Authorized at B...
    let redirect = browser(&p.b, "fapi", &request_uri, PASSWORD, "allow").await;
    assert_eq!(redirect.status, 303);
    assert!(redirect.params.contains_key("code"));
    // ...and then used at neither.
    let q = encode(&[("client_id", "fapi"), ("request_uri", &request_uri)]);
    for at in [&p.a, &p.b] {
        let r = at.get(&format!("/authorize?{q}")).await;
        assert_eq!(
            (r.status, r.page_error().as_str()),
            (400, "invalid_request_uri"),
            "{}",
            r.text()
        );
    }
}

fn kids(jwks: &serde_json::Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_rotation_is_seen_by_both_instances() {
    let p = pair(no_nonce());
    let dpop = key(0x64);
    let sign_at = |at: Https| {
        let env = &p.env;
        let dpop = dpop.clone();
        async move {
            let r = client_credentials(
                &at,
                &assertion(env, "fapi", &fapi_key()),
                &proof(env, &dpop, "/token", None),
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.text());
            header(r.json()["access_token"].as_str().unwrap())["kid"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let old = sign_at(p.a.clone()).await;
    assert_eq!(sign_at(p.b.clone()).await, old, "one key between them");
    assert_eq!(kids(&p.a.get("/jwks").await.json()), std::slice::from_ref(&old));

    let out = std::process::Command::new(BIN)
        .args(["keys", "rotate", "--config", p.env.config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Both re-read the keys every second (storage.key_reload_seconds = 1): both publish the new
    // key beside the old one and sign with it.
    let deadline = Instant::now() + Duration::from_secs(10);
    for at in [&p.a, &p.b] {
        let new = loop {
            let kid = sign_at(at.clone()).await;
            if kid != old {
                break kid;
            }
            assert!(Instant::now() < deadline, "port {}: the new key never signed", at.port);
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let published = kids(&at.get("/jwks").await.json());
        assert!(
            published.contains(&old) && published.contains(&new),
            "port {}: {published:?}",
            at.port
        );
    }
    assert_eq!(sign_at(p.a.clone()).await, sign_at(p.b.clone()).await);
}

/// Opens the login page of a fresh `fapi` request at `at` and posts `password` for `user`.
async fn login_attempt(p: &Pair, at: &Https, user: &str, password: &str) -> Resp {
    let (_, challenge) = pkce();
    let a = assertion(&p.env, "fapi", &fapi_key());
    let form = with_assertion(authz_params("fapi", &challenge, REDIRECT), &a);
    let r = at
        .post_form("/par", &form, &[("dpop", &proof(&p.env, &key(0x65), "/par", None))])
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let (cookie, txn) = login_page(at, "fapi", r.json()["request_uri"].as_str().unwrap()).await;
    at.post_form(
        "/authorize/login",
        &[("txn", &txn), ("username", user), ("password", password)],
        &[("cookie", &cookie)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_account_locked_at_one_instance_is_locked_at_the_other() {
    let p = pair(Options {
        extra: "[login]\naccount_max_failures = 3\nlockout = 120\n".into(),
        ..no_nonce()
    });
    // Failures spread over both instances add up: the third one locks the account.
    for (i, at) in [&p.a, &p.b, &p.a].into_iter().enumerate() {
        let r = login_attempt(&p, at, "alice", "wrong").await;
        let expected = if i < 2 { 401 } else { 429 };
        assert_eq!(r.status, expected, "failure {i}: {}", r.text());
    }
    // Locked on both, even with the right password.
    for at in [&p.b, &p.a] {
        let r = login_attempt(&p, at, "alice", PASSWORD).await;
        assert_eq!(r.status, 429, "port {}: {}", at.port, r.text());
        let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=120).contains(&wait), "{wait}");
    }
    // Another account is not affected.
    assert_eq!(login_attempt(&p, &p.b, "bob", PASSWORD).await.status, 200);
}

/// `keybound-authz migrate` brings a new PostgreSQL database to the current schema; with
/// `storage.auto_migrate = false`, `serve` refuses the database until then.
#[tokio::test]
async fn migrate_prepares_the_database_that_serve_refuses_before() {
    let env = Env::new(&on_postgres(no_nonce()));
    let text = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace("key_reload_seconds = 1", "key_reload_seconds = 1\nauto_migrate = false");
    std::fs::write(&env.config, text).unwrap();
    let serve = std::process::Command::new(BIN)
        .args(["serve", "--config", env.config.to_str().unwrap()])
        .output()
        .unwrap();
    // Not a configuration error (status 2) but a failure to start (1).
    assert_eq!(serve.status.code(), Some(1));
    let err = String::from_utf8_lossy(&serve.stderr);
    assert!(
        err.contains("schema is at version 0") && err.contains("keybound-authz migrate"),
        "{err}"
    );

    let migrate = || {
        let out = std::process::Command::new(BIN)
            .args(["migrate", "--config", env.config.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let latest = keybound_authz::storage::postgres::MIGRATIONS.len();
    assert_eq!(
        migrate().trim(),
        format!("postgres: schema at version {latest} (was 0)")
    );
    assert_eq!(
        migrate().trim(),
        format!("postgres: schema at version {latest} (was {latest})")
    );
    let _server = env.start();
    let r = Https::new(&env, None).get("/jwks").await;
    assert_eq!(r.status, 200);
}
