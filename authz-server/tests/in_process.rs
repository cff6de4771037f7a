//! The endpoints through the router in this process: in-memory storage and a clock the test
//! moves, so what depends on time (code, `request_uri` and lock expiry, a code used again a
//! second later) is tested at the exact second, without sleeping. The same helpers drive the
//! real server over TLS in the other suites.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

mod common;

use common::*;

/// An mTLS client's code (PAR, login, consent) and its PKCE verifier.
async fn mtls_code(https: &Https) -> (String, String) {
    let (verifier, challenge) = pkce();
    let r = par_then_allow(https, "mtls", &authz_params("mtls", &challenge, REDIRECT), &[]).await;
    (r.params["code"].clone(), verifier)
}

fn token_form<'a>(code: &'a str, verifier: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "authorization_code"),
        ("client_id", "mtls"),
        ("code", code),
        ("code_verifier", verifier),
        ("redirect_uri", REDIRECT),
    ]
}

#[tokio::test]
async fn a_code_lives_exactly_its_lifetime() {
    let env = Env::new(&Options {
        code_lifetime: 10,
        ..no_nonce()
    });
    let server = InProcess::start(&env).await;
    let https = server.mtls(&env);
    // Redeemed in its last second: accepted.
    let (code, verifier) = mtls_code(&https).await;
    server.clock.advance(9);
    let r = https.post_form("/token", &token_form(&code, &verifier), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // attempt-reuse-authorization-code-after-one-second
    server.clock.advance(1);
    let r = https.post_form("/token", &token_form(&code, &verifier), &[]).await;
    assert_eq!((r.status, r.error().as_str()), (400, "invalid_grant"));
    // ensure-token-endpoint-fails-with-expired-auth-code: one second too late.
    let (code, verifier) = mtls_code(&https).await;
    server.clock.advance(10);
    let r = https.post_form("/token", &token_form(&code, &verifier), &[]).await;
    assert_eq!((r.status, r.error().as_str()), (400, "invalid_grant"));
}

#[tokio::test]
async fn a_request_uri_lives_exactly_its_lifetime() {
    let env = Env::new(&Options {
        par_lifetime: 30,
        ..no_nonce()
    });
    let server = InProcess::start(&env).await;
    let https = server.mtls(&env);
    let (_, challenge) = pkce();
    let push = || async {
        let r = https
            .post_form("/par", &authz_params("mtls", &challenge, REDIRECT), &[])
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        assert_eq!(r.json()["expires_in"], 30);
        r.json()["request_uri"].as_str().unwrap().to_owned()
    };
    let page = |uri: &str| format!("/authorize?{}", encode(&[("client_id", "mtls"), ("request_uri", uri)]));
    let uri = push().await;
    server.clock.advance(29);
    assert_eq!(
        https.get(&page(&uri)).await.status,
        200,
        "still valid in its last second"
    );
    // par-attempt-to-use-expired-request_uri
    let uri = push().await;
    server.clock.advance(30);
    let r = https.get(&page(&uri)).await;
    assert_eq!((r.status, r.page_error().as_str()), (400, "invalid_request_uri"));
}

/// A locked account is locked for exactly the lock's length, then the right password works.
#[tokio::test]
async fn the_login_lock_ends_after_its_length() {
    let env = Env::new(&Options {
        extra: "[login]\naccount_max_failures = 2\nlockout = 60\n".into(),
        ..no_nonce()
    });
    let server = InProcess::start(&env).await;
    let https = server.mtls(&env);
    let (_, challenge) = pkce();
    // A fresh pushed request and transaction, then one password: the login page's status.
    let attempt = async |password: &str| {
        let r = https
            .post_form("/par", &authz_params("mtls", &challenge, REDIRECT), &[])
            .await;
        let (cookie, txn) = login_page(&https, "mtls", r.json()["request_uri"].as_str().unwrap()).await;
        let form = [("txn", txn.as_str()), ("username", "alice"), ("password", password)];
        https
            .post_form("/authorize/login", &form, &[("cookie", &cookie)])
            .await
            .status
    };
    assert_eq!(attempt("wrong").await, 401);
    assert_eq!(attempt("wrong").await, 429, "locked at the second failure");
    server.clock.advance(59);
    assert_eq!(attempt(PASSWORD).await, 429, "still locked in the lock's last second");
    server.clock.advance(1);
    assert_eq!(attempt(PASSWORD).await, 200, "the lock is over");
}
