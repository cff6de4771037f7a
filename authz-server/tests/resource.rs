//! UserInfo (a protected resource of this server, checked with keybound-core's
//! `verify_request`) and CORS on the token endpoint.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

mod common;

use common::*;
use keybound_core::dpop::{NewProof, create_proof};
use keybound_core::jws::P256Signer;

fn api_proof(env: &Env, key: &P256Signer, token: &str, nonce: Option<&str>) -> String {
    create_proof(
        key,
        &NewProof {
            htm: "GET",
            htu: &env.url("/userinfo"),
            iat: now(),
            jti: &unique(),
            access_token: Some(token),
            nonce,
        },
    )
    .unwrap()
}

/// A DPoP-bound token for alice with `openid accounts` (public client, code flow).
async fn user_token(env: &Env, https: &Https, dpop: &P256Signer, nonce: Option<&str>) -> String {
    let (verifier, challenge) = pkce();
    let r = https
        .post_form(
            "/par",
            &authz_params("spa", &challenge, "http://127.0.0.1:8080/cb"),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let redirect = browser(
        https,
        "spa",
        r.json()["request_uri"].as_str().unwrap(),
        PASSWORD,
        "allow",
    )
    .await;
    let p = proof(env, dpop, "/token", nonce);
    let r = https
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", "spa"),
                ("code", &redirect.params["code"]),
                ("redirect_uri", "http://127.0.0.1:8080/cb"),
                ("code_verifier", &verifier),
            ],
            &[("dpop", &p)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["access_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn userinfo_accepts_only_bound_tokens_with_their_proof() {
    let env = Env::new(&Options {
        nonce: false,
        ..Options::default()
    });
    let _server = env.start();
    let https = Https::new(&env, None);
    let dpop = key(0x41);
    let at = user_token(&env, &https, &dpop, None).await;
    let auth = format!("DPoP {at}");

    let p = api_proof(&env, &dpop, &at, None);
    let r = https
        .get_with("/userinfo", &[("authorization", &auth), ("dpop", &p)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["sub"], "alice");
    // The same proof again: replay.
    let r = https
        .get_with("/userinfo", &[("authorization", &auth), ("dpop", &p)])
        .await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().contains("invalid_dpop_proof"));
    // No proof; a proof by another key; the DPoP token as Bearer.
    let r = https.get_with("/userinfo", &[("authorization", &auth)]).await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().contains("invalid_dpop_proof"));
    let p = api_proof(&env, &key(0x42), &at, None);
    let r = https
        .get_with("/userinfo", &[("authorization", &auth), ("dpop", &p)])
        .await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().contains("invalid_token"));
    let r = https
        .get_with("/userinfo", &[("authorization", &format!("Bearer {at}"))])
        .await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().contains("invalid_token"));
    // No credentials at all: a bare challenge.
    let r = https.get("/userinfo").await;
    assert_eq!(r.status, 401);

    // A certificate-bound token works with its certificate (Bearer scheme) and not without.
    let mtls = Https::mtls(&env);
    let r = mtls
        .post_form(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "mtls"),
                ("scope", "openid accounts"),
            ],
            &[],
        )
        .await;
    let cat = r.json()["access_token"].as_str().unwrap().to_string();
    let bearer = format!("Bearer {cat}");
    let r = mtls.get_with("/userinfo", &[("authorization", &bearer)]).await;
    assert_eq!((r.status, r.json()["sub"].as_str()), (200, Some("mtls")));
    let r = https.get_with("/userinfo", &[("authorization", &bearer)]).await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().contains("invalid_token"));
    // Without the openid scope: 403 insufficient_scope.
    let r = mtls
        .post_form(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "mtls"),
                ("scope", "accounts"),
            ],
            &[],
        )
        .await;
    let narrow = r.json()["access_token"].as_str().unwrap().to_string();
    let r = mtls
        .get_with("/userinfo", &[("authorization", &format!("Bearer {narrow}"))])
        .await;
    assert_eq!(r.status, 403);
    assert!(r.header("www-authenticate").unwrap().contains("insufficient_scope"));

    // A revoked token is refused.
    let r = mtls
        .post_form("/revoke", &[("token", &cat), ("client_id", "mtls")], &[])
        .await;
    assert_eq!(r.status, 200);
    let r = mtls.get_with("/userinfo", &[("authorization", &bearer)]).await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().contains("invalid_token"));
}

#[tokio::test]
async fn userinfo_requires_a_nonce_when_configured() {
    let env = Env::new(&Options::default());
    let _server = env.start();
    let https = Https::new(&env, None);
    let dpop = key(0x43);
    let nonce = fetch_nonce(&env, &https, &dpop).await;
    let at = user_token(&env, &https, &dpop, Some(&nonce)).await;
    let auth = format!("DPoP {at}");
    let p = api_proof(&env, &dpop, &at, None);
    let r = https
        .get_with("/userinfo", &[("authorization", &auth), ("dpop", &p)])
        .await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().contains("use_dpop_nonce"));
    let fresh = r.header("dpop-nonce").unwrap();
    let p = api_proof(&env, &dpop, &at, Some(&fresh));
    let r = https
        .get_with("/userinfo", &[("authorization", &auth), ("dpop", &p)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn cors_on_the_token_endpoint_only_for_configured_origins() {
    let env = Env::new(&Options::default());
    let _server = env.start();
    let https = Https::new(&env, None);
    let good = "http://127.0.0.1:8080";
    let pre = |origin: &'static str| {
        let https = https.clone();
        async move {
            https
                .send(
                    "OPTIONS",
                    "/token",
                    &[
                        ("origin", origin),
                        ("access-control-request-method", "POST"),
                        ("access-control-request-headers", "content-type, dpop"),
                    ],
                    None,
                )
                .await
        }
    };
    let r = pre(good).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin").unwrap(), good);
    assert!(r.header("access-control-allow-headers").unwrap().contains("dpop"));
    assert!(r.header("access-control-allow-credentials").is_none());
    let r = pre("https://evil.example").await;
    assert!(r.header("access-control-allow-origin").is_none());

    // The actual response (here a use_dpop_nonce error) exposes DPoP-Nonce to the page.
    let p = proof(&env, &key(0x44), "/token", None);
    let r = https
        .post_form(
            "/token",
            &[("grant_type", "authorization_code"), ("client_id", "spa")],
            &[("dpop", &p), ("origin", good)],
        )
        .await;
    assert_eq!(r.error(), "use_dpop_nonce");
    assert_eq!(r.header("access-control-allow-origin").unwrap(), good);
    assert!(
        r.header("access-control-expose-headers")
            .unwrap()
            .contains("DPoP-Nonce")
    );
    // The metadata a browser client reads: for allowed origins only.
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
        "/jwks",
    ] {
        let r = https.get_with(path, &[("origin", good)]).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("access-control-allow-origin"), Some(good.to_owned()), "{path}");
        let r = https.get_with(path, &[("origin", "https://evil.example")]).await;
        assert!(r.header("access-control-allow-origin").is_none(), "{path}");
    }
    // Never on the authorization endpoint, whatever the origin.
    let r = https
        .get_with("/authorize?client_id=spa&request_uri=x", &[("origin", good)])
        .await;
    assert!(r.header("access-control-allow-origin").is_none());
}
