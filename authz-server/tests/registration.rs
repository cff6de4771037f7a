//! Dynamic client registration (RFC 7591) and management (RFC 7592).
#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

mod common;

use common::*;
use keybound_core::jws::P256Signer;

const DCR_REDIRECT: &str = "https://dcr.keybound.test/cb";

async fn json_request(
    https: &Https,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut h = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        h.push(("authorization", a));
    }
    https.send(method, path, &h, body.map(|b| b.to_string())).await
}

fn dpop_client_metadata(key: &P256Signer) -> serde_json::Value {
    let jwk: serde_json::Value = serde_json::from_str(&jwk_json(key, "dcr-1")).unwrap();
    serde_json::json!({
        "client_name": "Registered client",
        "redirect_uris": [DCR_REDIRECT],
        "token_endpoint_auth_method": "private_key_jwt",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "scope": "openid accounts",
        "jwks": { "keys": [jwk] },
        "dpop_bound_access_tokens": true,
        "software_statement_unknown_member": "ignored",
    })
}

async fn par_as(env: &Env, https: &Https, client_id: &str, key: &P256Signer, redirect: &str) -> Resp {
    let (_, challenge) = pkce();
    let a = assertion(env, client_id, key);
    let mut form = authz_params(client_id, &challenge, redirect);
    form.retain(|(k, _)| *k != "scope");
    form.push(("scope", "openid"));
    let form = with_assertion(form, &a);
    https.post_form("/par", &form, &[]).await
}

#[tokio::test]
async fn a_registered_client_completes_a_dpop_flow_and_survives_a_restart() {
    let env = Env::new(&no_nonce());
    let server = env.start();
    let https = Https::new(&env, None);
    let d = https.get("/.well-known/oauth-authorization-server").await.json();
    assert_eq!(d["registration_endpoint"], env.url("/register"));
    let key = key(0x21);
    let r = json_request(
        &https,
        "POST",
        "/register",
        Some(INITIAL_ACCESS_TOKEN),
        Some(&dpop_client_metadata(&key)),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let reg = r.json();
    let client_id = reg["client_id"].as_str().unwrap().to_string();
    assert!(reg["registration_access_token"].as_str().unwrap().len() >= 43);
    assert_eq!(
        reg["registration_client_uri"],
        env.url(&format!("/register/{client_id}"))
    );
    assert!(
        reg.get("software_statement_unknown_member").is_none(),
        "unknown metadata is dropped"
    );

    // The full flow with the new client.
    let dpop = common::key(0x22);
    let (verifier, challenge) = pkce();
    let a = assertion(&env, &client_id, &key);
    let form = with_assertion(authz_params(&client_id, &challenge, DCR_REDIRECT), &a);
    let redirect = par_then_allow(&https, &client_id, &form, &[]).await;
    assert!(redirect.params.contains_key("code"));
    let a = assertion(&env, &client_id, &key);
    let p = proof(&env, &dpop, "/token", None);
    let r = https
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &redirect.params["code"]),
                ("redirect_uri", DCR_REDIRECT),
                ("code_verifier", &verifier),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", &a),
            ],
            &[("dpop", &p)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["token_type"], "DPoP");
    assert!(r.json()["refresh_token"].is_string());

    // Registered clients are persisted.
    server.stop();
    let _server = env.start();
    assert_eq!(par_as(&env, &https, &client_id, &key, DCR_REDIRECT).await.status, 201);
}

#[tokio::test]
async fn registration_validates_the_token_and_the_metadata() {
    let env = Env::new(&no_nonce());
    let _server = env.start();
    let https = Https::new(&env, None);
    let good = dpop_client_metadata(&key(0x23));
    let r = json_request(&https, "POST", "/register", None, Some(&good)).await;
    assert_eq!((r.status, r.error().as_str()), (401, "invalid_token"));
    let r = json_request(
        &https,
        "POST",
        "/register",
        Some("not-the-initial-access-token-not-it"),
        Some(&good),
    )
    .await;
    assert_eq!((r.status, r.error().as_str()), (401, "invalid_token"));

    type Patch = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Patch, &str)> = vec![
        (
            "http redirect",
            Box::new(|m| m["redirect_uris"] = serde_json::json!(["http://evil.example/cb"])),
            "invalid_redirect_uri",
        ),
        (
            "fragment",
            Box::new(|m| m["redirect_uris"] = serde_json::json!(["https://a.example/cb#x"])),
            "invalid_redirect_uri",
        ),
        (
            "no redirect",
            Box::new(|m| m["redirect_uris"] = serde_json::json!([])),
            "invalid_redirect_uri",
        ),
        (
            "private key in jwks",
            Box::new(|m| m["jwks"]["keys"][0]["d"] = keybound_core::b64::encode(&[0x23; 32]).into()),
            "invalid_client_metadata",
        ),
        (
            "jwks_uri",
            Box::new(|m| m["jwks_uri"] = "https://a.example/jwks".into()),
            "invalid_client_metadata",
        ),
        (
            "no jwks",
            Box::new(|m| m["jwks"] = serde_json::Value::Null),
            "invalid_client_metadata",
        ),
        (
            "no sender constraint",
            Box::new(|m| m["dpop_bound_access_tokens"] = false.into()),
            "invalid_client_metadata",
        ),
        (
            "client_secret_basic",
            Box::new(|m| m["token_endpoint_auth_method"] = "client_secret_basic".into()),
            "invalid_client_metadata",
        ),
        (
            "unknown scope",
            Box::new(|m| m["scope"] = "openid admin".into()),
            "invalid_client_metadata",
        ),
        (
            "implicit",
            Box::new(|m| m["response_types"] = serde_json::json!(["token"])),
            "invalid_client_metadata",
        ),
        (
            "password grant",
            Box::new(|m| m["grant_types"] = serde_json::json!(["password"])),
            "invalid_client_metadata",
        ),
        (
            "public client bound by mTLS",
            Box::new(|m| {
                m["token_endpoint_auth_method"] = "none".into();
                m["dpop_bound_access_tokens"] = false.into();
                m["tls_client_certificate_bound_access_tokens"] = true.into();
            }),
            "invalid_client_metadata",
        ),
        (
            "self-signed without x5c",
            Box::new(|m| {
                m["token_endpoint_auth_method"] = "self_signed_tls_client_auth".into();
            }),
            "invalid_client_metadata",
        ),
    ];
    for (name, patch, error) in cases {
        let mut m = good.clone();
        patch(&mut m);
        let r = json_request(&https, "POST", "/register", Some(INITIAL_ACCESS_TOKEN), Some(&m)).await;
        assert_eq!((r.status, r.error().as_str()), (400, error), "{name}: {}", r.text());
    }
    let r = https
        .send(
            "POST",
            "/register",
            &[("authorization", &format!("Bearer {INITIAL_ACCESS_TOKEN}"))],
            Some("not json".into()),
        )
        .await;
    assert_eq!((r.status, r.error().as_str()), (400, "invalid_client_metadata"));
}

#[tokio::test]
async fn client_management_read_update_delete() {
    let env = Env::new(&no_nonce());
    let _server = env.start();
    let https = Https::new(&env, None);
    let key = key(0x24);
    let reg = json_request(
        &https,
        "POST",
        "/register",
        Some(INITIAL_ACCESS_TOKEN),
        Some(&dpop_client_metadata(&key)),
    )
    .await
    .json();
    let id = reg["client_id"].as_str().unwrap().to_string();
    let token = reg["registration_access_token"].as_str().unwrap().to_string();
    let path = format!("/register/{id}");

    let r = json_request(&https, "GET", &path, Some(&token), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["client_id"], id.as_str());
    assert_eq!(r.json()["redirect_uris"], serde_json::json!([DCR_REDIRECT]));
    assert!(r.json().get("registration_access_token").is_none());
    for bad in [None, Some("wrong"), Some(INITIAL_ACCESS_TOKEN)] {
        let r = json_request(&https, "GET", &path, bad, None).await;
        assert_eq!((r.status, r.error().as_str()), (401, "invalid_token"), "{bad:?}");
    }

    // PUT replaces the metadata; the client now uses the new redirect URI only.
    let mut m = dpop_client_metadata(&key);
    m["redirect_uris"] = serde_json::json!(["https://dcr.keybound.test/new"]);
    m["client_id"] = id.clone().into();
    let r = json_request(&https, "PUT", &path, Some(&token), Some(&m)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = par_as(&env, &https, &id, &key, DCR_REDIRECT).await;
    assert_eq!((r.status, r.error().as_str()), (400, "invalid_request"));
    assert_eq!(
        par_as(&env, &https, &id, &key, "https://dcr.keybound.test/new")
            .await
            .status,
        201
    );
    // Invalid metadata changes nothing.
    m["redirect_uris"] = serde_json::json!(["http://evil.example/cb"]);
    let r = json_request(&https, "PUT", &path, Some(&token), Some(&m)).await;
    assert_eq!((r.status, r.error().as_str()), (400, "invalid_redirect_uri"));
    let r = json_request(&https, "GET", &path, Some(&token), None).await;
    assert_eq!(
        r.json()["redirect_uris"],
        serde_json::json!(["https://dcr.keybound.test/new"])
    );

    // DELETE: the client is gone.
    let r = json_request(&https, "DELETE", &path, Some(&token), None).await;
    assert_eq!(r.status, 204);
    let r = par_as(&env, &https, &id, &key, "https://dcr.keybound.test/new").await;
    assert_eq!((r.status, r.error().as_str()), (401, "invalid_client"));
    let r = json_request(&https, "GET", &path, Some(&token), None).await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn self_signed_certificate_client_registers_with_x5c() {
    let env = Env::new(&no_nonce());
    let _server = env.start();
    let pem = std::fs::read_to_string(env.path("selfsigned-client.pem")).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let meta = serde_json::json!({
        "redirect_uris": [DCR_REDIRECT],
        "token_endpoint_auth_method": "self_signed_tls_client_auth",
        "tls_client_certificate_bound_access_tokens": true,
        "scope": "accounts",
        "jwks": { "keys": [{ "kty": "EC", "x5c": [body] }] },
    });
    let https = Https::self_signed(&env);
    let r = json_request(&https, "POST", "/register", Some(INITIAL_ACCESS_TOKEN), Some(&meta)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["client_id"].as_str().unwrap().to_string();
    let (_, challenge) = pkce();
    let mut form = authz_params(&id, &challenge, DCR_REDIRECT);
    form.retain(|(k, _)| *k != "scope");
    form.push(("scope", "accounts"));
    assert_eq!(https.post_form("/par", &form, &[]).await.status, 201);
    // Another certificate does not authenticate it.
    let r = Https::mtls(&env).post_form("/par", &form, &[]).await;
    assert_eq!((r.status, r.error().as_str()), (401, "invalid_client"));
}
