//! The login page's TOTP second factor and the attempt limit.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

mod common;

use common::*;

struct Txn {
    txn: String,
    cookie: String,
}

async fn start(https: &Https) -> Txn {
    let (_, challenge) = pkce();
    let r = https
        .post_form("/par", &authz_params("mtls", &challenge, REDIRECT), &[])
        .await;
    assert_eq!(r.status, 201);
    let (cookie, txn) = login_page(https, "mtls", r.json()["request_uri"].as_str().unwrap()).await;
    Txn { txn, cookie }
}

async fn post(https: &Https, t: &Txn, path: &str, form: &[(&str, &str)]) -> Resp {
    let mut f = vec![("txn", t.txn.as_str())];
    f.extend_from_slice(form);
    https.post_form(path, &f, &[("cookie", &t.cookie)]).await
}

fn totp_now() -> String {
    let secret = keybound_authz::totp::base32_decode(TOTP_SECRET).unwrap();
    keybound_authz::totp::code(&secret, now())
}

#[tokio::test]
async fn totp_second_factor() {
    let env = Env::new(&Options {
        nonce: false,
        ..Options::default()
    });
    let _server = env.start();
    let https = Https::mtls(&env);

    // Password right: the TOTP form, not consent.
    let t = start(&https).await;
    let r = post(
        &https,
        &t,
        "/authorize/login",
        &[("username", "bob"), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("name=\"code\"") && !r.text().contains("decision"));
    // Consent is not reachable before the second factor.
    let r = post(&https, &t, "/authorize/consent", &[("decision", "allow")]).await;
    assert_eq!((r.status, r.page_error().as_str()), (400, "invalid_request"));
    // A wrong code: the form again with 401; the right one: consent, then a code.
    let r = post(&https, &t, "/authorize/totp", &[("code", "000000")]).await;
    assert_eq!(r.status, 401);
    let code = totp_now();
    let r = post(&https, &t, "/authorize/totp", &[("code", &code)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("decision"));
    let r = post(&https, &t, "/authorize/consent", &[("decision", "allow")]).await;
    assert_eq!(r.status, 303);
    assert!(r.header("location").unwrap().contains("code="));

    // The same TOTP code is refused in another login (unless the 30 s step changed meanwhile,
    // in which case the code would also be new: compare with what was used).
    let t = start(&https).await;
    post(
        &https,
        &t,
        "/authorize/login",
        &[("username", "bob"), ("password", PASSWORD)],
    )
    .await;
    let r = post(&https, &t, "/authorize/totp", &[("code", &code)]).await;
    assert_eq!(r.status, 401, "a TOTP code is accepted once");
    assert!(r.text().contains("already used"));
}

/// Besides the account and address throttle, one transaction allows five failures (the account
/// limit is raised here so the transaction's own limit is what is seen).
#[tokio::test]
async fn five_failed_attempts_end_the_transaction() {
    let env = Env::new(&Options {
        extra: "[login]\naccount_max_failures = 10\n".into(),
        ..no_nonce()
    });
    let _server = env.start();
    let https = Https::mtls(&env);
    let t = start(&https).await;
    for _ in 0..4 {
        let r = post(
            &https,
            &t,
            "/authorize/login",
            &[("username", "alice"), ("password", "nope")],
        )
        .await;
        assert_eq!(r.status, 401);
    }
    let r = post(
        &https,
        &t,
        "/authorize/login",
        &[("username", "alice"), ("password", "nope")],
    )
    .await;
    assert_eq!((r.status, r.page_error().as_str()), (400, "access_denied"));
    // Even the right password does not revive it.
    let r = post(
        &https,
        &t,
        "/authorize/login",
        &[("username", "alice"), ("password", PASSWORD)],
    )
    .await;
    assert_eq!((r.status, r.page_error().as_str()), (400, "invalid_request"));
    // Unknown users fail like wrong passwords.
    let t = start(&https).await;
    let r = post(
        &https,
        &t,
        "/authorize/login",
        &[("username", "mallory"), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(r.status, 401);
}

/// A fresh pushed request and transaction, then one password attempt.
async fn attempt(https: &Https, username: &str, password: &str) -> Resp {
    let t = start(https).await;
    post(
        https,
        &t,
        "/authorize/login",
        &[("username", username), ("password", password)],
    )
    .await
}

fn retry_after(r: &Resp) -> u64 {
    r.header("retry-after").unwrap().parse().unwrap()
}

/// Password guessing is throttled per account, not per transaction: 60 wrong passwords, each in
/// a fresh transaction (new PAR, new `GET /authorize`), meet the lock after the fifth (the
/// default), with 429 and `Retry-After`; while locked the right password is refused too, without
/// being checked. Failed logins are logged with user, address and reason, never the password.
#[tokio::test]
async fn password_guessing_across_fresh_transactions_is_throttled() {
    let env = Env::new(&no_nonce());
    let server = env.start();
    let https = Https::mtls(&env);
    for i in 1..=60 {
        let r = attempt(&https, "alice", "wrong-guess-7f3a").await;
        if i < 5 {
            assert_eq!(r.status, 401, "attempt {i}");
        } else {
            assert_eq!(r.status, 429, "attempt {i}: {}", r.text());
            assert!((1..=60).contains(&retry_after(&r)), "attempt {i}");
            assert!(r.text().contains("Too many failed attempts"));
        }
    }
    let r = attempt(&https, "alice", PASSWORD).await;
    assert_eq!(r.status, 429, "the right password is refused while locked");
    let log = server.stop();
    let failed: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|j| j["event"] == "login_failed")
        .collect();
    assert_eq!(failed.len(), 5, "only checked attempts fail: {log}");
    assert_eq!(failed[0]["user"], "alice");
    assert_eq!(failed[0]["address"], "127.0.0.1");
    assert_eq!(failed[0]["reason"], "wrong password");
    assert!(log.contains("login_throttled"));
    assert!(!log.contains("wrong-guess-7f3a"), "the password typed is never logged");
}

// The lock's end, to the second: `tests/in_process.rs::the_login_lock_ends_after_its_length`.

/// The throttle is stored: a restart of the server process does not reset it.
#[tokio::test]
async fn the_throttle_survives_a_restart() {
    let env = Env::new(&no_nonce());
    let server = env.start();
    let https = Https::mtls(&env);
    for _ in 0..5 {
        attempt(&https, "alice", "nope").await;
    }
    assert_eq!(attempt(&https, "alice", PASSWORD).await.status, 429);
    server.stop();
    let _server = env.start();
    let r = attempt(&https, "alice", PASSWORD).await;
    assert_eq!(r.status, 429, "still locked after the restart: {}", r.text());
}

/// Guessing across user names from one address meets the per-address limit (20 by default):
/// then even a name never tried, and the right password of a real user, are refused.
#[tokio::test]
async fn per_address_throttling_works_across_user_names() {
    let env = Env::new(&no_nonce());
    let _server = env.start();
    let https = Https::mtls(&env);
    for i in 1..=20 {
        let r = attempt(&https, &format!("user-{i}"), "nope").await;
        assert_eq!(r.status, if i < 20 { 401 } else { 429 }, "name {i}");
    }
    assert_eq!(attempt(&https, "never-tried", "nope").await.status, 429);
    assert_eq!(attempt(&https, "alice", PASSWORD).await.status, 429);
}

/// Second-factor guessing is throttled per account across fresh transactions too, and a TOTP
/// code is accepted once: after a code is accepted, neither it nor the code of an earlier time
/// step (still inside the drift window) is accepted again (RFC 6238 §5.2).
#[tokio::test]
async fn totp_guessing_is_throttled_and_a_code_is_accepted_once() {
    let env = Env::new(&no_nonce());
    let _server = env.start();
    let https = Https::mtls(&env);
    let secret = keybound_authz::totp::base32_decode(TOTP_SECRET).unwrap();
    let code_at = |t: u64| keybound_authz::totp::code(&secret, t);
    let bob = async |code: &str| {
        let t = start(&https).await;
        let r = post(
            &https,
            &t,
            "/authorize/login",
            &[("username", "bob"), ("password", PASSWORD)],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        post(&https, &t, "/authorize/totp", &[("code", code)]).await
    };
    let now = now();
    assert_eq!(bob(&code_at(now)).await.status, 200);
    let r = bob(&code_at(now)).await;
    assert_eq!(r.status, 401, "the same code again");
    let r = bob(&code_at(now - 30)).await;
    assert_eq!(r.status, 401, "an earlier step's code after a later one was accepted");

    // Two failures so far; wrong codes in fresh transactions meet the lock at five, and then
    // even the password step is refused (the account is locked for every factor).
    for _ in 0..2 {
        assert_eq!(bob("000000").await.status, 401);
    }
    let r = bob("000000").await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    assert_eq!(attempt(&https, "bob", PASSWORD).await.status, 429);
}
