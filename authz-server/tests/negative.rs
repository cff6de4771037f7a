//! Step 2 negative tests: the PAR, PKCE, code, client-assertion and DPoP cases of the FAPI 2.0
//! conformance list (docs/fapi2-conformance-modules.txt) that apply, each with the exact
//! error code; and that a refused request changes no state.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

mod common;

use common::*;
use keybound_core::jws::{P256Signer, Signer};

type Form = Vec<(String, String)>;
type FormPatch = Box<dyn Fn(&mut Form)>;

/// PAR form for the private_key_jwt client `fapi` with a fresh assertion.
fn fapi_par_form(env: &Env, challenge: &str) -> Vec<(String, String)> {
    let mut f: Vec<(String, String)> = authz_params("fapi", challenge, REDIRECT)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    f.push(("client_assertion_type".into(), JWT_BEARER.into()));
    f.push(("client_assertion".into(), assertion(env, "fapi", &fapi_key())));
    f
}

fn refs(f: &[(String, String)]) -> Vec<(&str, &str)> {
    f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn set(f: &mut Vec<(String, String)>, k: &str, v: Option<&str>) {
    f.retain(|(name, _)| name != k);
    if let Some(v) = v {
        f.push((k.into(), v.into()));
    }
}

async fn expect(r: Resp, status: u16, error: &str, case: &str) {
    assert_eq!((r.status, r.error().as_str()), (status, error), "{case}: {}", r.text());
}

/// Runs PAR + browser for the mtls client; returns (code, verifier).
async fn mtls_code(https: &Https) -> (String, String) {
    let (verifier, challenge) = pkce();
    let redirect = par_then_allow(https, "mtls", &authz_params("mtls", &challenge, REDIRECT), &[]).await;
    (redirect.params["code"].clone(), verifier)
}

/// Runs PAR (optionally with dpop_jkt / a proof) + browser for `fapi`; returns (code, verifier).
async fn fapi_code(
    env: &Env,
    https: &Https,
    dpop_jkt: Option<&str>,
    par_proof: Option<&P256Signer>,
) -> (String, String) {
    let (verifier, challenge) = pkce();
    let mut f = fapi_par_form(env, &challenge);
    if let Some(j) = dpop_jkt {
        set(&mut f, "dpop_jkt", Some(j));
    }
    let p = par_proof.map(|k| proof(env, k, "/par", None));
    let h: Vec<(&str, &str)> = p.iter().map(|p| ("dpop", p.as_str())).collect();
    let redirect = par_then_allow(https, "fapi", &refs(&f), &h).await;
    (redirect.params["code"].clone(), verifier)
}

fn fapi_token_form(env: &Env, code: &str, verifier: &str) -> Vec<(String, String)> {
    vec![
        ("grant_type".into(), "authorization_code".into()),
        ("code".into(), code.into()),
        ("redirect_uri".into(), REDIRECT.into()),
        ("code_verifier".into(), verifier.into()),
        ("client_assertion_type".into(), JWT_BEARER.into()),
        ("client_assertion".into(), assertion(env, "fapi", &fapi_key())),
    ]
}

fn mtls_token_form(code: &str, verifier: &str) -> Vec<(String, String)> {
    vec![
        ("grant_type".into(), "authorization_code".into()),
        ("client_id".into(), "mtls".into()),
        ("code".into(), code.into()),
        ("redirect_uri".into(), REDIRECT.into()),
        ("code_verifier".into(), verifier.into()),
    ]
}

#[tokio::test]
async fn par_request_validation() {
    let env = Env::new(&no_nonce());
    let _server = env.start();
    let https = Https::new(&env, None);
    let (_, challenge) = pkce();
    let base = fapi_par_form(&env, &challenge);

    // par-attempt-invalid-http-method
    assert_eq!(https.get("/par").await.status, 405);
    assert_eq!(https.send("PUT", "/par", &[], None).await.status, 405);

    let cases: Vec<(&str, FormPatch, &str)> = vec![
        (
            "par-authorization-request-containing-request_uri",
            Box::new(|f| set(f, "request_uri", Some("urn:ietf:params:oauth:request_uri:x"))),
            "invalid_request",
        ),
        (
            "par-ensure-pkce-required",
            Box::new(|f| set(f, "code_challenge", None)),
            "invalid_request",
        ),
        (
            "par-plain-pkce-rejected",
            Box::new(|f| set(f, "code_challenge_method", Some("plain"))),
            "invalid_request",
        ),
        (
            "missing code_challenge_method",
            Box::new(|f| set(f, "code_challenge_method", None)),
            "invalid_request",
        ),
        (
            "ensure-response-type-token-fails",
            Box::new(|f| set(f, "response_type", Some("token"))),
            "unsupported_response_type",
        ),
        (
            "ensure-response-type-code-idtoken-fails",
            Box::new(|f| set(f, "response_type", Some("code id_token"))),
            "unsupported_response_type",
        ),
        (
            "missing response_type",
            Box::new(|f| set(f, "response_type", None)),
            "invalid_request",
        ),
        (
            "ensure-registered-redirect-uri",
            Box::new(|f| set(f, "redirect_uri", Some("https://client.keybound.test/other"))),
            "invalid_request",
        ),
        (
            "ensure-redirect-uri-in-authorization-request",
            Box::new(|f| set(f, "redirect_uri", None)),
            "invalid_request",
        ),
        (
            "invalid scope",
            Box::new(|f| set(f, "scope", Some("openid admin"))),
            "invalid_scope",
        ),
        (
            "unsigned request object (alg none)",
            Box::new(|f| set(f, "request", Some("eyJhbGciOiJub25lIn0.e30."))),
            "invalid_request_object",
        ),
        (
            "malformed dpop_jkt",
            Box::new(|f| set(f, "dpop_jkt", Some("abc"))),
            "invalid_request",
        ),
        (
            "other client_id",
            Box::new(|f| set(f, "client_id", Some("fapi2"))),
            "invalid_client",
        ),
        (
            "unsupported response_mode",
            Box::new(|f| set(f, "response_mode", Some("fragment"))),
            "invalid_request",
        ),
        (
            "state too long",
            Box::new(|f| set(f, "state", Some(&"s".repeat(3000)))),
            "invalid_request",
        ),
    ];
    for (name, patch, error) in cases {
        let mut f = base.clone();
        set(&mut f, "client_assertion", Some(&assertion(&env, "fapi", &fapi_key())));
        patch(&mut f);
        expect(
            https.post_form("/par", &refs(&f), &[]).await,
            if error == "invalid_client" { 401 } else { 400 },
            error,
            name,
        )
        .await;
    }

    // par-without-duplicate-parameters: a repeated parameter is refused.
    let body = format!("{}&scope=openid", encode(&refs(&base)));
    let r = https
        .send(
            "POST",
            "/par",
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(body),
        )
        .await;
    expect(r, 400, "invalid_request", "duplicate parameter").await;

    // Not a form.
    let r = https
        .send(
            "POST",
            "/par",
            &[("content-type", "application/json")],
            Some("{}".into()),
        )
        .await;
    expect(r, 400, "invalid_request", "json body").await;

    // ensure-mismatched-dpop-jkt-fails: dpop_jkt differs from the PAR proof's key.
    let mut f = base.clone();
    set(&mut f, "client_assertion", Some(&assertion(&env, "fapi", &fapi_key())));
    set(
        &mut f,
        "dpop_jkt",
        Some(&key(0x61).public_key().thumbprint().to_string()),
    );
    let p = proof(&env, &key(0x62), "/par", None);
    expect(
        https.post_form("/par", &refs(&f), &[("dpop", &p)]).await,
        400,
        "invalid_dpop_proof",
        "mismatched dpop_jkt",
    )
    .await;

    // A DPoP binding for a client registered for mTLS is refused.
    let m = Https::mtls(&env);
    let mut f = authz_params("mtls", &challenge, REDIRECT);
    let jkt = key(0x61).public_key().thumbprint().to_string();
    f.push(("dpop_jkt", &jkt));
    expect(
        m.post_form("/par", &f, &[]).await,
        400,
        "invalid_request",
        "dpop_jkt for mtls client",
    )
    .await;

    // The checks precede authentication's replay record: the base assertion is still unused.
    let r = https.post_form("/par", &refs(&base), &[]).await;
    assert_eq!(r.status, 201, "{}", r.text());
}

#[tokio::test]
async fn client_assertion_rules() {
    let env = Env::new(&no_nonce());
    let _server = env.start();
    let https = Https::new(&env, None);
    let (_, challenge) = pkce();
    let now = now() as i64;
    type Patch = Box<dyn Fn(&mut serde_json::Map<String, serde_json::Value>)>;
    let issuer = env.issuer.clone();
    let cases: Vec<(&str, Patch, bool)> = vec![
        ("valid", Box::new(|_| {}), true),
        (
            "par-ensure-jwt-client-assertions-nbf-8-seconds-in-the-future-is-accepted",
            Box::new(move |c| {
                c.insert("nbf".into(), (now + 8).into());
                c.insert("iat".into(), (now + 8).into());
            }),
            true,
        ),
        (
            "par-ensure-jwt-client-assertions-nbf-over-60-seconds-in-the-future-fails",
            Box::new(move |c| {
                c.insert("nbf".into(), (now + 70).into());
                c.insert("iat".into(), (now + 70).into());
                c.insert("exp".into(), (now + 130).into());
            }),
            false,
        ),
        (
            "ensure-client-assertion-with-exp-is-5-minutes-in-past-fails",
            Box::new(move |c| {
                c.insert("exp".into(), (now - 300).into());
                c.insert("iat".into(), (now - 360).into());
            }),
            false,
        ),
        (
            "ensure-client-assertion-with-no-sub-fails",
            Box::new(|c| {
                c.remove("sub");
            }),
            false,
        ),
        (
            "par-test-array-as-audience-fails",
            {
                let issuer = issuer.clone();
                Box::new(move |c| {
                    c.insert("aud".into(), serde_json::json!([issuer]));
                })
            },
            false,
        ),
        (
            "par-test-par-endpoint-url-as-audience-fails",
            {
                let issuer = issuer.clone();
                Box::new(move |c| {
                    c.insert("aud".into(), format!("{issuer}/par").into());
                })
            },
            false,
        ),
        (
            "par-test-token-endpoint-url-as-audience-fails",
            {
                let issuer = issuer.clone();
                Box::new(move |c| {
                    c.insert("aud".into(), format!("{issuer}/token").into());
                })
            },
            false,
        ),
        (
            "ensure-client-assertion-with-wrong-aud-fails",
            Box::new(|c| {
                c.insert("aud".into(), "https://other.example".into());
            }),
            false,
        ),
        (
            "no exp",
            Box::new(|c| {
                c.remove("exp");
            }),
            false,
        ),
        (
            "no jti",
            Box::new(|c| {
                c.remove("jti");
            }),
            false,
        ),
        (
            "sub of another client",
            Box::new(|c| {
                c.insert("sub".into(), "fapi2".into());
            }),
            false,
        ),
        (
            "exp a day ahead",
            Box::new(move |c| {
                c.insert("exp".into(), (now + 86_400).into());
            }),
            false,
        ),
    ];
    for (name, patch, ok) in cases {
        let mut f = fapi_par_form(&env, &challenge);
        set(
            &mut f,
            "client_assertion",
            Some(&assertion_with(&env, "fapi", &fapi_key(), |c| patch(c))),
        );
        let r = https.post_form("/par", &refs(&f), &[]).await;
        if ok {
            assert_eq!(r.status, 201, "{name}: {}", r.text());
        } else {
            expect(r, 401, "invalid_client", name).await;
        }
    }

    let other = |f: &mut Vec<(String, String)>, v: &str| set(f, "client_assertion", Some(v));
    // Signed by another client's key.
    let mut f = fapi_par_form(&env, &challenge);
    other(&mut f, &assertion(&env, "fapi", &fapi2_key()));
    expect(
        https.post_form("/par", &refs(&f), &[]).await,
        401,
        "invalid_client",
        "wrong key",
    )
    .await;

    // ensure-signed-client-assertion-with-RS256-fails (and none, HS256): refused before any key is used.
    for alg in ["RS256", "none", "HS256"] {
        let h = keybound_core::b64::encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes());
        let good = assertion(&env, "fapi", &fapi_key());
        let mut parts = good.split('.');
        let (_, p, s) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        let mut f = fapi_par_form(&env, &challenge);
        other(&mut f, &format!("{h}.{p}.{s}"));
        expect(
            https.post_form("/par", &refs(&f), &[]).await,
            401,
            "invalid_client",
            alg,
        )
        .await;
    }

    // A replayed assertion is refused once used.
    let a = assertion(&env, "fapi", &fapi_key());
    let mut f = fapi_par_form(&env, &challenge);
    other(&mut f, &a);
    assert_eq!(https.post_form("/par", &refs(&f), &[]).await.status, 201);
    expect(
        https.post_form("/par", &refs(&f), &[]).await,
        401,
        "invalid_client",
        "replayed assertion",
    )
    .await;

    // Wrong assertion type; assertion without type; private_key_jwt client without assertion.
    let mut f = fapi_par_form(&env, &challenge);
    set(
        &mut f,
        "client_assertion_type",
        Some("urn:ietf:params:oauth:client-assertion-type:saml2-bearer"),
    );
    expect(
        https.post_form("/par", &refs(&f), &[]).await,
        401,
        "invalid_client",
        "type",
    )
    .await;
    let mut f = fapi_par_form(&env, &challenge);
    set(&mut f, "client_assertion_type", None);
    expect(
        https.post_form("/par", &refs(&f), &[]).await,
        401,
        "invalid_client",
        "no type",
    )
    .await;
    let mut f = fapi_par_form(&env, &challenge);
    set(&mut f, "client_assertion_type", None);
    set(&mut f, "client_assertion", None);
    expect(
        https.post_form("/par", &refs(&f), &[]).await,
        401,
        "invalid_client",
        "no assertion",
    )
    .await;
    // client_secret_basic / client_secret_post are not accepted.
    let f = authz_params("fapi", &challenge, REDIRECT);
    expect(
        https
            .post_form("/par", &f, &[("authorization", "Basic ZmFwaTpzZWNyZXQ=")])
            .await,
        401,
        "invalid_client",
        "basic",
    )
    .await;
    let mut f = authz_params("fapi", &challenge, REDIRECT);
    f.push(("client_secret", "secret"));
    expect(https.post_form("/par", &f, &[]).await, 401, "invalid_client", "secret").await;
    // Unknown client.
    let f = authz_params("nobody", &challenge, REDIRECT);
    expect(https.post_form("/par", &f, &[]).await, 401, "invalid_client", "unknown").await;
}

#[tokio::test]
async fn certificate_client_authentication_failures() {
    let env = Env::new(&no_nonce());
    let _server = env.start();
    let (_, challenge) = pkce();
    let f = authz_params("mtls", &challenge, REDIRECT);
    // No certificate; a self-signed certificate that the CA did not issue.
    for https in [Https::new(&env, None), Https::self_signed(&env)] {
        expect(https.post_form("/par", &f, &[]).await, 401, "invalid_client", "mtls").await;
    }
    // The selfsigned client with the CA-issued certificate (not the registered one), or none.
    let mut f = authz_params("selfsigned", &challenge, REDIRECT);
    f.retain(|(k, _)| *k != "scope");
    for https in [Https::new(&env, None), Https::mtls(&env)] {
        expect(
            https.post_form("/par", &f, &[]).await,
            401,
            "invalid_client",
            "selfsigned",
        )
        .await;
    }
}

#[tokio::test]
async fn authorization_endpoint_request_uri_rules() {
    let env = Env::new(&no_nonce());
    let _server = env.start();
    let https = Https::mtls(&env);
    let (_, challenge) = pkce();
    let page =
        |client: &str, uri: &str| format!("/authorize?{}", encode(&[("client_id", client), ("request_uri", uri)]));

    // ensure-unsigned-authorization-request-without-using-par-fails
    let q = encode(&authz_params("mtls", &challenge, REDIRECT));
    let r = https.get(&format!("/authorize?{q}")).await;
    assert_eq!((r.status, r.page_error().as_str()), (400, "invalid_request"));

    let uri = https
        .post_form("/par", &authz_params("mtls", &challenge, REDIRECT), &[])
        .await
        .json()["request_uri"]
        .as_str()
        .unwrap()
        .to_string();
    // par-attempt-to-use-request_uri-for-different-client
    let r = https.get(&page("fapi", &uri)).await;
    assert_eq!((r.status, r.page_error().as_str()), (400, "invalid_request_uri"));
    // unknown request_uri
    let r = https.get(&page("mtls", "urn:ietf:params:oauth:request_uri:nope")).await;
    assert_eq!((r.status, r.page_error().as_str()), (400, "invalid_request_uri"));
    // a wrong password shows the form again with 401; the right one continues
    let r = https.get(&page("mtls", &uri)).await;
    let cookie = r.header("set-cookie").unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("Secure") && cookie.contains("SameSite=Lax"));
    let cookie = txn_cookie(&r);
    let txn = hidden_txn(&r.text());
    let txn = txn.as_str();
    let r = https
        .post_form(
            "/authorize/login",
            &[("txn", txn), ("username", "alice"), ("password", "wrong")],
            &[("cookie", &cookie)],
        )
        .await;
    assert_eq!(r.status, 401);
    // the form post without the cookie (a cross-site post) is refused
    let r = https
        .post_form(
            "/authorize/login",
            &[("txn", txn), ("username", "alice"), ("password", PASSWORD)],
            &[],
        )
        .await;
    assert_eq!((r.status, r.page_error().as_str()), (400, "invalid_request"));
    let r = https
        .post_form(
            "/authorize/consent",
            &[("txn", txn), ("decision", "allow")],
            &[("cookie", &cookie)],
        )
        .await;
    assert_eq!(
        (r.status, r.page_error().as_str()),
        (400, "invalid_request"),
        "consent before login"
    );

    // par-attempt-reuse-request_uri: used once, then refused.
    let first = browser(&https, "mtls", &uri, PASSWORD, "allow").await;
    assert_eq!(first.status, 303);
    let r = https.get(&page("mtls", &uri)).await;
    assert_eq!((r.status, r.page_error().as_str()), (400, "invalid_request_uri"));

    // par-attempt-to-use-expired-request_uri: `tests/in_process.rs` (to the second, no sleeping).
}

#[tokio::test]
async fn token_endpoint_code_and_pkce_rules() {
    let env = Env::new(&no_nonce());
    let _server = env.start();
    let https = Https::mtls(&env);

    // incorrect-pkce-code-verifier-rejected, ensure-pkce-code-verifier-required, wrong redirect_uri:
    // each refused without using the code, which then still works.
    let (code, verifier) = mtls_code(&https).await;
    let (other_verifier, _) = pkce();
    let cases: Vec<(&str, Form, &str)> = vec![
        (
            "wrong verifier",
            mtls_token_form(&code, &other_verifier),
            "invalid_grant",
        ),
        (
            "no verifier",
            mtls_token_form(&code, &verifier)
                .into_iter()
                .filter(|(k, _)| k != "code_verifier")
                .collect(),
            "invalid_request",
        ),
        (
            "other redirect_uri",
            {
                let mut f = mtls_token_form(&code, &verifier);
                set(&mut f, "redirect_uri", Some("https://client.keybound.test/other"));
                f
            },
            "invalid_grant",
        ),
        (
            "unknown code",
            mtls_token_form("not-a-code", &verifier),
            "invalid_grant",
        ),
        (
            "unsupported grant",
            {
                let mut f = mtls_token_form(&code, &verifier);
                set(&mut f, "grant_type", Some("password"));
                f
            },
            "unsupported_grant_type",
        ),
    ];
    for (name, f, error) in cases {
        expect(https.post_form("/token", &refs(&f), &[]).await, 400, error, name).await;
    }
    // No client certificate: the mtls client cannot authenticate.
    expect(
        Https::new(&env, None)
            .post_form("/token", &refs(&mtls_token_form(&code, &verifier)), &[])
            .await,
        401,
        "invalid_client",
        "no certificate",
    )
    .await;

    // ensure-authorization-code-is-bound-to-client: fapi2 cannot redeem it.
    let plain = Https::new(&env, None);
    let dpop = key(0x71);
    let mut f = fapi_token_form(&env, &code, &verifier);
    set(
        &mut f,
        "client_assertion",
        Some(&assertion(&env, "fapi2", &fapi2_key())),
    );
    let p = proof(&env, &dpop, "/token", None);
    expect(
        plain.post_form("/token", &refs(&f), &[("dpop", &p)]).await,
        400,
        "invalid_grant",
        "other client",
    )
    .await;

    // The code still works after all refusals (bad input changed no state) ...
    let r = https
        .post_form("/token", &refs(&mtls_token_form(&code, &verifier)), &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // attempt-reuse-authorization-code (one second later: `tests/in_process.rs`)
    let r = https
        .post_form("/token", &refs(&mtls_token_form(&code, &verifier)), &[])
        .await;
    expect(r, 400, "invalid_grant", "code reuse").await;
}

// ensure-token-endpoint-fails-with-expired-auth-code: `tests/in_process.rs`.

#[tokio::test]
async fn token_endpoint_dpop_rules() {
    let env = Env::new(&no_nonce());
    let _server = env.start();
    let https = Https::new(&env, None);
    let dpop = key(0x81);
    let other = key(0x82);

    // ensure-holder-of-key-required: a DPoP client gets no token without a proof.
    let (code, verifier) = fapi_code(&env, &https, None, None).await;
    let f = fapi_token_form(&env, &code, &verifier);
    expect(
        https.post_form("/token", &refs(&f), &[]).await,
        400,
        "invalid_dpop_proof",
        "no proof",
    )
    .await;

    // Proofs that fail core's checks (the dpop-negative cases that apply at the token endpoint).
    let hour_ago = now() - 3600;
    let bad_proofs = vec![
        ("htu for another endpoint", proof(&env, &dpop, "/par", None)),
        ("wrong htm", proof_at(&env, &dpop, "GET", "/token", now(), None)),
        (
            "iat an hour ago",
            proof_at(&env, &dpop, "POST", "/token", hour_ago, None),
        ),
        (
            "iat an hour ahead",
            proof_at(&env, &dpop, "POST", "/token", now() + 3600, None),
        ),
        ("not a JWT", "abc.def".to_string()),
    ];
    for (name, p) in bad_proofs {
        let f = fapi_token_form(&env, &code, &verifier);
        expect(
            https.post_form("/token", &refs(&f), &[("dpop", &p)]).await,
            400,
            "invalid_dpop_proof",
            name,
        )
        .await;
    }
    let p1 = proof(&env, &dpop, "/token", None);
    let p2 = proof(&env, &dpop, "/token", None);
    let f = fapi_token_form(&env, &code, &verifier);
    let r = https
        .post_form("/token", &refs(&f), &[("dpop", &p1), ("dpop", &p2)])
        .await;
    expect(r, 400, "invalid_request", "two DPoP headers").await;

    // The code still works, and its proof cannot be replayed on another code.
    let p = proof(&env, &dpop, "/token", None);
    let f = fapi_token_form(&env, &code, &verifier);
    assert_eq!(https.post_form("/token", &refs(&f), &[("dpop", &p)]).await.status, 200);
    let (code2, verifier2) = fapi_code(&env, &https, None, None).await;
    let f = fapi_token_form(&env, &code2, &verifier2);
    expect(
        https.post_form("/token", &refs(&f), &[("dpop", &p)]).await,
        400,
        "invalid_dpop_proof",
        "replayed proof",
    )
    .await;

    // ensure-token-endpoint-fails-with-mismatched-dpop-jkt: dpop_jkt at PAR, proof by another key.
    let jkt = dpop.public_key().thumbprint().to_string();
    let (code, verifier) = fapi_code(&env, &https, Some(&jkt), None).await;
    let f = fapi_token_form(&env, &code, &verifier);
    let p = proof(&env, &other, "/token", None);
    expect(
        https.post_form("/token", &refs(&f), &[("dpop", &p)]).await,
        400,
        "invalid_grant",
        "mismatched dpop_jkt",
    )
    .await;
    // ensure-dpop-auth-code-binding-success: the bound key works.
    let f = fapi_token_form(&env, &code, &verifier);
    let p = proof(&env, &dpop, "/token", None);
    assert_eq!(https.post_form("/token", &refs(&f), &[("dpop", &p)]).await.status, 200);

    // ensure-token-endpoint-fails-with-mismatched-dpop-proof-jkt: proof at PAR by one key, at the
    // token endpoint by another.
    let (code, verifier) = fapi_code(&env, &https, None, Some(&dpop)).await;
    let f = fapi_token_form(&env, &code, &verifier);
    let p = proof(&env, &other, "/token", None);
    expect(
        https.post_form("/token", &refs(&f), &[("dpop", &p)]).await,
        400,
        "invalid_grant",
        "mismatched proof jkt",
    )
    .await;
    // ensure-dpopproof-at-par-endpoint-binding-success
    let f = fapi_token_form(&env, &code, &verifier);
    let p = proof(&env, &dpop, "/token", None);
    let r = https.post_form("/token", &refs(&f), &[("dpop", &p)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn dpop_nonces_are_required_when_configured() {
    let env = Env::new(&Options::default());
    let _server = env.start();
    let https = Https::new(&env, None);
    let dpop = key(0x91);
    let nonce = fetch_nonce(&env, &https, &dpop).await;
    // At PAR: no nonce, and a forged nonce, are answered with use_dpop_nonce and a fresh nonce.
    let (verifier, challenge) = pkce();
    for bad in [None, Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")] {
        let f = fapi_par_form(&env, &challenge);
        let p = proof(&env, &dpop, "/par", bad);
        let r = https.post_form("/par", &refs(&f), &[("dpop", &p)]).await;
        assert_eq!((r.status, r.error().as_str()), (400, "use_dpop_nonce"), "{bad:?}");
        assert!(r.header("dpop-nonce").is_some());
    }
    let f = fapi_par_form(&env, &challenge);
    let p = proof(&env, &dpop, "/par", Some(&nonce));
    let redirect = par_then_allow(&https, "fapi", &refs(&f), &[("dpop", &p)]).await;
    // At the token endpoint too; the failed attempt does not use the code.
    let f = fapi_token_form(&env, &redirect.params["code"], &verifier);
    let p = proof(&env, &dpop, "/token", None);
    let r = https.post_form("/token", &refs(&f), &[("dpop", &p)]).await;
    assert_eq!((r.status, r.error().as_str()), (400, "use_dpop_nonce"));
    let fresh = r.header("dpop-nonce").unwrap();
    let f = fapi_token_form(&env, &redirect.params["code"], &verifier);
    let p = proof(&env, &dpop, "/token", Some(&fresh));
    let r = https.post_form("/token", &refs(&f), &[("dpop", &p)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// check-dpop-proof-nbf-exp: extra claims (`nbf`, `exp`, others) in a proof are accepted;
/// ensure-client-assertion-in-token-endpoint / ensure-client-id-in-token-endpoint: the token
/// endpoint authenticates the client with its assertion, and a `client_id` that names another
/// client than the assertion is refused.
#[tokio::test]
async fn token_endpoint_proof_extra_claims_and_client_identification() {
    let env = Env::new(&no_nonce());
    let _server = env.start();
    let https = Https::new(&env, None);
    let dpop = key(0x95);
    let (code, verifier) = fapi_code(&env, &https, None, None).await;

    // Without the assertion (only client_id): invalid_client; with another client's client_id.
    let mut f = fapi_token_form(&env, &code, &verifier);
    set(&mut f, "client_assertion", None);
    set(&mut f, "client_assertion_type", None);
    set(&mut f, "client_id", Some("fapi"));
    let p = proof(&env, &dpop, "/token", None);
    expect(
        https.post_form("/token", &refs(&f), &[("dpop", &p)]).await,
        401,
        "invalid_client",
        "no assertion",
    )
    .await;
    let mut f = fapi_token_form(&env, &code, &verifier);
    set(&mut f, "client_id", Some("fapi2"));
    let p = proof(&env, &dpop, "/token", None);
    expect(
        https.post_form("/token", &refs(&f), &[("dpop", &p)]).await,
        401,
        "invalid_client",
        "client_id mismatch",
    )
    .await;

    // A proof with nbf, exp and an unknown claim, built by hand.
    let now = now();
    let mut header = serde_json::Map::new();
    header.insert("typ".into(), "dpop+jwt".into());
    header.insert(
        "jwk".into(),
        serde_json::from_str(&dpop.public_key().to_json()).unwrap(),
    );
    let payload = serde_json::json!({
        "jti": unique(),
        "htm": "POST",
        "htu": env.url("/token"),
        "iat": now,
        "nbf": now - 5,
        "exp": now + 60,
        "extra": {"anything": true},
    });
    let p =
        keybound_core::jws::UnsignedJws::new(keybound_core::jws::Alg::Es256, header, payload.to_string().as_bytes())
            .sign(&dpop)
            .unwrap();
    let f = fapi_token_form(&env, &code, &verifier);
    let r = https.post_form("/token", &refs(&f), &[("dpop", &p)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        claims(r.json()["access_token"].as_str().unwrap())["cnf"]["jkt"],
        dpop.public_key().thumbprint().to_string()
    );
}
