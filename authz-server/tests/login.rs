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
    let q = encode(&[
        ("client_id", "mtls"),
        ("request_uri", r.json()["request_uri"].as_str().unwrap()),
    ]);
    let r = https.get(&format!("/authorize?{q}")).await;
    let cookie = r.header("set-cookie").unwrap().split(';').next().unwrap().to_string();
    let html = r.text();
    let txn = html
        .split("name=\"txn\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
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

#[tokio::test]
async fn five_failed_attempts_end_the_transaction() {
    let env = Env::new(&Options {
        nonce: false,
        ..Options::default()
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
