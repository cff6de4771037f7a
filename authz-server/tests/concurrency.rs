//! Concurrency: 200 parallel token requests with distinct proofs all succeed; the same client
//! assertion or DPoP proof sent many times at once is accepted exactly once. Key rotation on a
//! running server.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

mod common;

use common::*;
use std::time::Instant;

async fn client_credentials(https: Https, assertion: String, proof: String) -> Resp {
    https
        .post_form(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", &assertion),
            ],
            &[("dpop", &proof)],
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_parallel_token_requests_with_distinct_proofs_all_succeed() {
    let env = Env::new(&no_nonce());
    let _server = env.start();
    let https = Https::new(&env, None);
    let dpop = key(0x31);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let a = assertion(&env, "fapi", &fapi_key());
        let p = proof(&env, &dpop, "/token", None);
        tasks.push(tokio::spawn(client_credentials(https.clone(), a, p)));
    }
    let mut jtis = std::collections::BTreeSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        jtis.insert(
            claims(r.json()["access_token"].as_str().unwrap())["jti"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(jtis.len(), 200, "every token is distinct");
    eprintln!(
        "200 parallel token requests (new TLS connection each): {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replayed_assertion_or_proof_is_accepted_once_even_concurrently() {
    let env = Env::new(&no_nonce());
    let _server = env.start();
    let https = Https::new(&env, None);
    let dpop = key(0x32);

    // The same assertion, each time with a fresh proof: one success, the rest invalid_client.
    let a = assertion(&env, "fapi", &fapi_key());
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            tokio::spawn(client_credentials(
                https.clone(),
                a.clone(),
                proof(&env, &dpop, "/token", None),
            ))
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            200 => ok += 1,
            _ => assert_eq!((r.status, r.error().as_str()), (401, "invalid_client")),
        }
    }
    assert_eq!(ok, 1, "the assertion is accepted exactly once");

    // The same proof, each time with a fresh assertion: one success, the rest invalid_dpop_proof.
    let p = proof(&env, &dpop, "/token", None);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            tokio::spawn(client_credentials(
                https.clone(),
                assertion(&env, "fapi", &fapi_key()),
                p.clone(),
            ))
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            200 => ok += 1,
            _ => assert_eq!((r.status, r.error().as_str()), (400, "invalid_dpop_proof")),
        }
    }
    assert_eq!(ok, 1, "the proof is accepted exactly once");
}

#[tokio::test]
async fn key_rotation_on_a_running_server() {
    let env = Env::new(&no_nonce());
    let _server = env.start();
    let https = Https::new(&env, None);
    let dpop = key(0x33);
    let get_token = || async {
        let r = client_credentials(
            https.clone(),
            assertion(&env, "fapi", &fapi_key()),
            proof(&env, &dpop, "/token", None),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["access_token"].as_str().unwrap().to_string()
    };
    let old = get_token().await;
    let old_kid = header(&old)["kid"].as_str().unwrap().to_string();

    let out = std::process::Command::new(BIN)
        .args(["keys", "rotate", "--config", env.config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Within the reload interval (10 s) the new key signs; the old key stays published.
    let deadline = Instant::now() + std::time::Duration::from_secs(15);
    let new = loop {
        let t = get_token().await;
        if header(&t)["kid"] != old_kid.as_str() {
            break t;
        }
        assert!(Instant::now() < deadline, "the new key never signed");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    let jwks = https.get("/jwks").await.json();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(kids.contains(&old_kid.as_str()) && kids.contains(&header(&new)["kid"].as_str().unwrap()));
    // Tokens of both keys verify against the published set.
    let set = server_jwks(&https).await;
    let policy = keybound_core::token::TokenPolicy::new(env.issuer.clone(), vec![AUDIENCE.into()]);
    for t in [&old, &new] {
        keybound_core::token::verify_jwt(t, &set, &policy, now(), &keybound_core::jws::RustCrypto).unwrap();
    }
}
