//! RFC 8707 resource indicators: an access token's `aud` is the one resource it is for, chosen
//! from what was granted; `invalid_target` for unknown, unregistered or malformed resources, at
//! PAR and at the token endpoint; refresh only narrows to what was granted.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

mod common;

use common::*;
use keybound_core::jws::P256Signer;

/// PAR for `fapi` with `extra` parameters (e.g. `resource`); the raw answer.
async fn fapi_par(env: &Env, https: &Https, extra: &[(&str, &str)]) -> (Resp, String) {
    let (verifier, challenge) = pkce();
    let a = assertion(env, "fapi", &fapi_key());
    let mut form = with_assertion(authz_params("fapi", &challenge, REDIRECT), &a);
    form.extend_from_slice(extra);
    (https.post_form("/par", &form, &[]).await, verifier)
}

/// A code for `fapi` authorized with `extra` PAR parameters, and its verifier.
async fn fapi_code(env: &Env, https: &Https, extra: &[(&str, &str)]) -> (String, String) {
    let (r, verifier) = fapi_par(env, https, extra).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let redirect = browser(
        https,
        "fapi",
        r.json()["request_uri"].as_str().unwrap(),
        PASSWORD,
        "allow",
    )
    .await;
    (redirect.params["code"].clone(), verifier)
}

/// The token endpoint as `fapi` with a proof by `dpop`: `form` plus the client assertion.
async fn fapi_token(env: &Env, https: &Https, dpop: &P256Signer, form: &[(&str, &str)]) -> Resp {
    let a = assertion(env, "fapi", &fapi_key());
    let mut f = form.to_vec();
    f.push(("client_assertion_type", JWT_BEARER));
    f.push(("client_assertion", &a));
    https
        .post_form("/token", &f, &[("dpop", &proof(env, dpop, "/token", None))])
        .await
}

async fn exchange(
    env: &Env,
    https: &Https,
    dpop: &P256Signer,
    code: &str,
    verifier: &str,
    extra: &[(&str, &str)],
) -> Resp {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier),
    ];
    form.extend_from_slice(extra);
    fapi_token(env, https, dpop, &form).await
}

fn aud(r: &Resp) -> serde_json::Value {
    assert_eq!(r.status, 200, "{}", r.text());
    claims(r.json()["access_token"].as_str().unwrap())["aud"].clone()
}

/// Without any `resource`, a token is for the default resource only, never for every configured
/// audience (the test server has three).
#[tokio::test]
async fn without_a_resource_the_token_is_for_the_default_resource_only() {
    let env = Env::new(&no_nonce());
    let _server = env.start();
    let mtls = Https::mtls(&env);
    let r = mtls_client_credentials(&mtls).await;
    assert_eq!(aud(&r), serde_json::json!(AUDIENCE));
    let https = Https::new(&env, None);
    let (code, verifier) = fapi_code(&env, &https, &[]).await;
    let r = exchange(&env, &https, &key(0x61), &code, &verifier, &[]).await;
    assert_eq!(aud(&r), serde_json::json!(AUDIENCE));
}

/// Two resources granted at PAR: each token is for one of them (the one asked for at the token
/// endpoint, else the default); refresh narrows to any granted one and never beyond.
#[tokio::test]
async fn each_token_is_for_one_granted_resource_and_refresh_only_narrows() {
    let env = Env::new(&no_nonce());
    let _server = env.start();
    let https = Https::new(&env, None);
    let dpop = key(0x62);
    let (code, verifier) = fapi_code(&env, &https, &[("resource", AUDIENCE), ("resource", PAYMENTS_API)]).await;
    // Two resources in one token request: one token per resource, refused.
    let r = exchange(
        &env,
        &https,
        &dpop,
        &code,
        &verifier,
        &[("resource", AUDIENCE), ("resource", PAYMENTS_API)],
    )
    .await;
    assert_eq!((r.status, r.error().as_str()), (400, "invalid_target"));
    let r = exchange(&env, &https, &dpop, &code, &verifier, &[("resource", PAYMENTS_API)]).await;
    assert_eq!(aud(&r), serde_json::json!(PAYMENTS_API));
    let rt = r.json()["refresh_token"].as_str().unwrap().to_string();
    let refresh = |extra: Vec<(&'static str, &'static str)>| {
        let (env, https, dpop, rt) = (&env, &https, &dpop, rt.clone());
        async move {
            let mut form = vec![("grant_type", "refresh_token"), ("refresh_token", rt.as_str())];
            form.extend(extra);
            fapi_token(env, https, dpop, &form).await
        }
    };
    assert_eq!(
        aud(&refresh(vec![("resource", AUDIENCE)]).await),
        serde_json::json!(AUDIENCE)
    );
    assert_eq!(
        aud(&refresh(vec![("resource", PAYMENTS_API)]).await),
        serde_json::json!(PAYMENTS_API)
    );
    assert_eq!(aud(&refresh(vec![]).await), serde_json::json!(AUDIENCE), "the default");
    // A configured audience the grant does not include, or one that is not configured at all.
    for other in [REPORTS, "https://unknown.keybound.test"] {
        let r = refresh(vec![("resource", other)]).await;
        assert_eq!((r.status, r.error().as_str()), (400, "invalid_target"), "{other}");
    }

    // A grant for one resource only: tokens for it without asking, nothing else.
    let (code, verifier) = fapi_code(&env, &https, &[("resource", PAYMENTS_API)]).await;
    let r = exchange(&env, &https, &dpop, &code, &verifier, &[("resource", AUDIENCE)]).await;
    assert_eq!((r.status, r.error().as_str()), (400, "invalid_target"), "not granted");
    let r = exchange(&env, &https, &dpop, &code, &verifier, &[]).await;
    assert_eq!(aud(&r), serde_json::json!(PAYMENTS_API));

    // Introspection still checks and reports the audience.
    let at = r.json()["access_token"].as_str().unwrap().to_string();
    let a = assertion(&env, "rs", &rs_key());
    let j = https
        .post_form(
            "/introspect",
            &[
                ("token", &at),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", &a),
            ],
            &[],
        )
        .await
        .json();
    assert_eq!(
        (&j["active"], &j["aud"]),
        (&serde_json::json!(true), &serde_json::json!(PAYMENTS_API))
    );
}

/// Unknown, unregistered and malformed resources: `invalid_target` at PAR and at the token
/// endpoint, and nothing is stored or issued.
#[tokio::test]
async fn unknown_unregistered_or_malformed_resources_are_invalid_target() {
    let env = Env::new(&no_nonce());
    let _server = env.start();
    let https = Https::new(&env, None);
    for bad in [
        "https://unknown.keybound.test",
        REPORTS, // configured, but not registered for fapi
        "api.keybound.test",
        "/relative",
        "https://api.keybound.test#fragment",
        "https://api.keybound.test/ with space",
    ] {
        let (r, _) = fapi_par(&env, &https, &[("resource", bad)]).await;
        assert_eq!((r.status, r.error().as_str()), (400, "invalid_target"), "PAR {bad}");
        let r = fapi_token(
            &env,
            &https,
            &key(0x63),
            &[("grant_type", "client_credentials"), ("resource", bad)],
        )
        .await;
        assert_eq!((r.status, r.error().as_str()), (400, "invalid_target"), "token {bad}");
    }
    let (r, _) = fapi_par(
        &env,
        &https,
        &[("resource", AUDIENCE), ("resource", "https://unknown.keybound.test")],
    )
    .await;
    assert_eq!(
        (r.status, r.error().as_str()),
        (400, "invalid_target"),
        "one bad among good"
    );
    // client_credentials with a registered resource works.
    let r = fapi_token(
        &env,
        &https,
        &key(0x63),
        &[("grant_type", "client_credentials"), ("resource", PAYMENTS_API)],
    )
    .await;
    assert_eq!(aud(&r), serde_json::json!(PAYMENTS_API));
}

/// A dynamically registered client may name its resources (this server's `resources` metadata):
/// with one, its tokens are for that one by default; an unknown one is invalid metadata.
#[tokio::test]
async fn a_registered_client_names_its_resources() {
    let env = Env::new(&no_nonce());
    let _server = env.start();
    let https = Https::new(&env, None);
    let key = key(0x64);
    let jwk: serde_json::Value = serde_json::from_str(&jwk_json(&key, "reg-1")).unwrap();
    let meta = |resources: serde_json::Value| {
        serde_json::json!({
            "token_endpoint_auth_method": "private_key_jwt",
            "grant_types": ["client_credentials"],
            "scope": "accounts",
            "jwks": { "keys": [jwk.clone()] },
            "dpop_bound_access_tokens": true,
            "resources": resources,
        })
        .to_string()
    };
    let register = |body: String| {
        let https = https.clone();
        async move {
            https
                .send(
                    "POST",
                    "/register",
                    &[
                        ("content-type", "application/json"),
                        ("authorization", &format!("Bearer {INITIAL_ACCESS_TOKEN}")),
                    ],
                    Some(body),
                )
                .await
        }
    };
    let r = register(meta(serde_json::json!(["https://unknown.keybound.test"]))).await;
    assert_eq!((r.status, r.error().as_str()), (400, "invalid_client_metadata"));
    let r = register(meta(serde_json::json!([PAYMENTS_API]))).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let client_id = r.json()["client_id"].as_str().unwrap().to_string();
    let token = |resource: Option<&'static str>| {
        let (env, https, key, client_id) = (&env, &https, &key, client_id.clone());
        async move {
            let a = assertion(env, &client_id, key);
            let mut form = vec![
                ("grant_type", "client_credentials"),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", a.as_str()),
            ];
            form.extend(resource.map(|r| ("resource", r)));
            https
                .post_form("/token", &form, &[("dpop", &proof(env, key, "/token", None))])
                .await
        }
    };
    assert_eq!(aud(&token(None).await), serde_json::json!(PAYMENTS_API));
    let r = token(Some(AUDIENCE)).await;
    assert_eq!((r.status, r.error().as_str()), (400, "invalid_target"));
}
