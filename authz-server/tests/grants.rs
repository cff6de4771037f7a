//! Step 3: refresh tokens (bound, not rotated), client credentials, introspection (JSON and JWT),
//! revocation, JARM, code reuse revoking what it issued, and a restart that loses nothing.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

mod common;

use common::*;
use keybound_core::cert::X5tS256;
use keybound_core::jws::{P256Signer, RustCrypto, Signer};
use keybound_core::token::{TokenPolicy, verify_introspection};

/// Code flow for `fapi` (private_key_jwt + DPoP with `dpop`), with optional extra PAR params.
/// Returns the token response.
async fn fapi_tokens(env: &Env, https: &Https, dpop: &P256Signer, extra: &[(&str, &str)]) -> serde_json::Value {
    let (verifier, challenge) = pkce();
    let a = assertion(env, "fapi", &fapi_key());
    let mut form = with_assertion(authz_params("fapi", &challenge, REDIRECT), &a);
    form.extend_from_slice(extra);
    let redirect = par_then_allow(https, "fapi", &form, &[]).await;
    let code = redirect.params["code"].clone();
    let a = assertion(env, "fapi", &fapi_key());
    let p = proof(env, dpop, "/token", None);
    let r = https
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &verifier),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", &a),
            ],
            &[("dpop", &p)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

async fn refresh_with(
    env: &Env,
    https: &Https,
    client: &str,
    key: &P256Signer,
    rt: &str,
    dpop: Option<&P256Signer>,
    scope: Option<&str>,
) -> Resp {
    let a = assertion(env, client, key);
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", rt),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", &a),
    ];
    if let Some(s) = scope {
        form.push(("scope", s));
    }
    let p = dpop.map(|k| proof(env, k, "/token", None));
    let h: Vec<(&str, &str)> = p.iter().map(|p| ("dpop", p.as_str())).collect();
    https.post_form("/token", &form, &h).await
}

/// Introspects as the resource server; `jwt` asks for the RFC 9701 response.
async fn introspect(env: &Env, https: &Https, token: &str, jwt: bool) -> Resp {
    let a = assertion(env, "rs", &rs_key());
    let form = [
        ("token", token),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", &a),
    ];
    let h: &[(&str, &str)] = if jwt {
        &[("accept", "application/token-introspection+jwt")]
    } else {
        &[]
    };
    https.post_form("/introspect", &form, h).await
}

async fn active(env: &Env, https: &Https, token: &str) -> bool {
    let r = introspect(env, https, token, false).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["active"].as_bool().unwrap()
}

async fn revoke(env: &Env, https: &Https, client: &str, key: &P256Signer, token: &str) -> Resp {
    let a = assertion(env, client, key);
    https
        .post_form(
            "/revoke",
            &[
                ("token", token),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", &a),
            ],
            &[],
        )
        .await
}

#[tokio::test]
async fn refresh_tokens_are_dpop_bound_and_not_rotated() {
    let env = Env::new(&no_nonce());
    let _server = env.start();
    let https = Https::new(&env, None);
    let dpop = key(0xa1);
    let t = fapi_tokens(&env, &https, &dpop, &[]).await;
    let rt = t["refresh_token"].as_str().unwrap().to_string();

    // Refresh with a proof by the same key: a new access token bound to the same key, no new
    // refresh token; the same refresh token works again.
    for _ in 0..2 {
        let r = refresh_with(&env, &https, "fapi", &fapi_key(), &rt, Some(&dpop), None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        assert_eq!(j["token_type"], "DPoP");
        assert!(j.get("refresh_token").is_none(), "not rotated");
        assert_eq!(j["scope"], "openid accounts");
        let c = claims(j["access_token"].as_str().unwrap());
        assert_eq!(c["cnf"]["jkt"], dpop.public_key().thumbprint().to_string());
        assert_ne!(j["access_token"], t["access_token"]);
    }
    // Narrower scope works; a wider one does not.
    let r = refresh_with(&env, &https, "fapi", &fapi_key(), &rt, Some(&dpop), Some("accounts")).await;
    assert_eq!((r.status, r.json()["scope"].as_str().unwrap()), (200, "accounts"));
    let r = refresh_with(
        &env,
        &https,
        "fapi",
        &fapi_key(),
        &rt,
        Some(&dpop),
        Some("accounts payments"),
    )
    .await;
    assert_eq!((r.status, r.error().as_str()), (400, "invalid_scope"));
    // Without the proof of possession, with another key, or by another client: refused.
    let r = refresh_with(&env, &https, "fapi", &fapi_key(), &rt, None, None).await;
    assert_eq!((r.status, r.error().as_str()), (400, "invalid_dpop_proof"));
    let r = refresh_with(&env, &https, "fapi", &fapi_key(), &rt, Some(&key(0xa2)), None).await;
    assert_eq!((r.status, r.error().as_str()), (400, "invalid_grant"));
    let r = refresh_with(
        &env,
        &https,
        "fapi",
        &fapi_key(),
        "not-a-refresh-token",
        Some(&dpop),
        None,
    )
    .await;
    assert_eq!((r.status, r.error().as_str()), (400, "invalid_grant"));
    // fapi2 may not use refresh_token at all; the grant is checked per client.
    let r = refresh_with(&env, &https, "fapi2", &fapi2_key(), &rt, Some(&dpop), None).await;
    assert_eq!((r.status, r.error().as_str()), (400, "unauthorized_client"));
}

#[tokio::test]
async fn certificate_bound_refresh_and_client_credentials() {
    let env = Env::new(&no_nonce());
    let _server = env.start();
    let mtls = Https::mtls(&env);
    let x5t = keybound_core::b64::encode(
        X5tS256::from_pem(&std::fs::read_to_string(env.path("mtls-client.pem")).unwrap())
            .unwrap()
            .as_bytes(),
    );
    // client_credentials for the mTLS client: certificate-bound, sub is the client.
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
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["token_type"], "Bearer");
    assert!(j.get("refresh_token").is_none());
    let c = claims(j["access_token"].as_str().unwrap());
    assert_eq!(
        (c["sub"].as_str(), c["cnf"]["x5t#S256"].as_str()),
        (Some("mtls"), Some(x5t.as_str()))
    );
    let r = mtls
        .post_form(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "mtls"),
                ("scope", "payments"),
            ],
            &[],
        )
        .await;
    assert_eq!((r.status, r.error().as_str()), (400, "invalid_scope"));

    // client_credentials for the DPoP client needs a proof; the token is bound to its key.
    let plain = Https::new(&env, None);
    let a = assertion(&env, "fapi", &fapi_key());
    let form = [
        ("grant_type", "client_credentials"),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", &a),
    ];
    let r = plain.post_form("/token", &form, &[]).await;
    assert_eq!((r.status, r.error().as_str()), (400, "invalid_dpop_proof"));
    let dpop = key(0xb1);
    let p = proof(&env, &dpop, "/token", None);
    let r = plain.post_form("/token", &form, &[("dpop", &p)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        claims(r.json()["access_token"].as_str().unwrap())["cnf"]["jkt"],
        dpop.public_key().thumbprint().to_string()
    );
    // The replayed assertion is refused once used.
    let p = proof(&env, &dpop, "/token", None);
    let r = plain.post_form("/token", &form, &[("dpop", &p)]).await;
    assert_eq!((r.status, r.error().as_str()), (401, "invalid_client"));
    // A public client may not use client_credentials.
    let r = plain
        .post_form(
            "/token",
            &[("grant_type", "client_credentials"), ("client_id", "spa")],
            &[("dpop", &proof(&env, &dpop, "/token", None))],
        )
        .await;
    assert_eq!((r.status, r.error().as_str()), (400, "unauthorized_client"));

    // A certificate-bound refresh token: the mTLS client's code flow, then refresh with the same
    // certificate (authenticating with it too).
    let (verifier, challenge) = pkce();
    let r = mtls
        .post_form("/par", &authz_params("mtls", &challenge, REDIRECT), &[])
        .await;
    let redirect = browser(
        &mtls,
        "mtls",
        r.json()["request_uri"].as_str().unwrap(),
        PASSWORD,
        "allow",
    )
    .await;
    let r = mtls
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", "mtls"),
                ("code", &redirect.params["code"]),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &verifier),
            ],
            &[],
        )
        .await;
    let rt = r.json()["refresh_token"].as_str().unwrap().to_string();
    let form = [
        ("grant_type", "refresh_token"),
        ("client_id", "mtls"),
        ("refresh_token", &rt),
    ];
    let r = mtls.post_form("/token", &form, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        claims(r.json()["access_token"].as_str().unwrap())["cnf"]["x5t#S256"],
        x5t.as_str()
    );
    // Without the certificate the client cannot even authenticate.
    let r = plain.post_form("/token", &form, &[]).await;
    assert_eq!((r.status, r.error().as_str()), (401, "invalid_client"));
}

#[tokio::test]
async fn introspection_json_and_jwt_and_revocation() {
    let env = Env::new(&no_nonce());
    let _server = env.start();
    let https = Https::new(&env, None);
    let dpop = key(0xc1);
    let t = fapi_tokens(&env, &https, &dpop, &[]).await;
    let at = t["access_token"].as_str().unwrap();
    let rt = t["refresh_token"].as_str().unwrap();

    let r = introspect(&env, &https, at, false).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control").unwrap(), "no-store");
    let j = r.json();
    assert_eq!(j["active"], true);
    assert_eq!(j["token_type"], "DPoP");
    assert_eq!(j["client_id"], "fapi");
    assert_eq!(j["cnf"]["jkt"], dpop.public_key().thumbprint().to_string());
    // keybound-core (what the gateway uses) accepts the answer and sees the binding.
    let policy = TokenPolicy::new(env.issuer.clone(), vec![AUDIENCE.into()]);
    let v = verify_introspection(&r.body, &policy, now()).unwrap();
    assert_eq!(v.jkt(), Some(&dpop.public_key().thumbprint()));

    // RFC 9701: a signed JWT answer.
    let r = introspect(&env, &https, at, true).await;
    assert_eq!(r.header("content-type").unwrap(), "application/token-introspection+jwt");
    let jwt = r.text();
    assert_eq!(header(&jwt)["typ"], "token-introspection+jwt");
    let jws = keybound_core::jws::Jws::parse(&jwt, keybound_core::Part::Other, Default::default()).unwrap();
    jws.verify_with_set(&server_jwks(&https).await, &RustCrypto, keybound_core::Part::Other)
        .unwrap();
    let c = claims(&jwt);
    assert_eq!(
        (c["iss"].as_str(), c["aud"].as_str()),
        (Some(env.issuer.as_str()), Some("rs"))
    );
    assert_eq!(c["token_introspection"]["active"], true);

    // A refresh token is never active to a resource server; garbage is not; only resource
    // servers may introspect.
    assert!(!active(&env, &https, rt).await);
    assert!(!active(&env, &https, "garbage").await);
    assert!(!active(&env, &https, &format!("{at}x")).await);
    let a = assertion(&env, "fapi", &fapi_key());
    let r = https
        .post_form(
            "/introspect",
            &[
                ("token", at),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", &a),
            ],
            &[],
        )
        .await;
    assert_eq!((r.status, r.error().as_str()), (401, "invalid_client"));

    // Revocation by another client changes nothing; by the owner it revokes.
    let r = revoke(&env, &https, "fapi2", &fapi2_key(), at).await;
    assert_eq!(r.status, 200);
    assert!(active(&env, &https, at).await);
    assert_eq!(revoke(&env, &https, "fapi", &fapi_key(), at).await.status, 200);
    assert!(!active(&env, &https, at).await);
    // Revoking an access token leaves the refresh token usable.
    let r = refresh_with(&env, &https, "fapi", &fapi_key(), rt, Some(&dpop), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let at2 = r.json()["access_token"].as_str().unwrap().to_string();
    assert!(active(&env, &https, &at2).await);
    // Revoking the refresh token revokes its grant: refresh fails, new access tokens are inactive.
    assert_eq!(revoke(&env, &https, "fapi", &fapi_key(), rt).await.status, 200);
    assert!(!active(&env, &https, &at2).await);
    let r = refresh_with(&env, &https, "fapi", &fapi_key(), rt, Some(&dpop), None).await;
    assert_eq!((r.status, r.error().as_str()), (400, "invalid_grant"));
    // Unknown tokens: 200.
    assert_eq!(revoke(&env, &https, "fapi", &fapi_key(), "unknown").await.status, 200);
}

/// Only access tokens are accepted at a resource server: introspection answers `active: false`
/// for a refresh token (from a real code flow, still usable at the token endpoint), in JSON and
/// as a JWT, so no gateway can take it for an access token. Every active answer is an access
/// token's, with its `token_type` and `aud`.
#[tokio::test]
async fn introspection_never_reports_a_refresh_token_active() {
    let env = Env::new(&no_nonce());
    let _server = env.start();
    let https = Https::new(&env, None);
    let dpop = key(0xc2);
    let t = fapi_tokens(&env, &https, &dpop, &[]).await;
    let (at, rt) = (
        t["access_token"].as_str().unwrap(),
        t["refresh_token"].as_str().unwrap(),
    );
    let r = introspect(&env, &https, rt, false).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        serde_json::json!({ "active": false }),
        "refresh token at introspection"
    );
    let policy = TokenPolicy::new(env.issuer.clone(), vec![AUDIENCE.into()]);
    assert!(verify_introspection(&r.body, &policy, now()).is_err());
    let r = introspect(&env, &https, rt, true).await;
    assert_eq!(
        claims(&r.text())["token_introspection"],
        serde_json::json!({ "active": false })
    );
    // The refresh token itself still works where it belongs.
    let r = refresh_with(&env, &https, "fapi", &fapi_key(), rt, Some(&dpop), None).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Access tokens: active, with token_type and aud (DPoP-bound here, certificate-bound below).
    let j = introspect(&env, &https, at, false).await.json();
    assert_eq!(
        (&j["active"], &j["token_type"], &j["aud"]),
        (
            &serde_json::json!(true),
            &serde_json::json!("DPoP"),
            &serde_json::json!(AUDIENCE)
        )
    );
    let mtls = Https::mtls(&env);
    let r = mtls_client_credentials(&mtls).await;
    let j = introspect(&env, &https, r.json()["access_token"].as_str().unwrap(), false)
        .await
        .json();
    assert_eq!(
        (&j["active"], &j["token_type"], &j["aud"]),
        (
            &serde_json::json!(true),
            &serde_json::json!("Bearer"),
            &serde_json::json!(AUDIENCE)
        )
    );
}

/// A reused code revokes the tokens issued with it (RFC 6749 §4.1.2).
#[tokio::test]
async fn code_reuse_revokes_the_tokens_it_issued() {
    let env = Env::new(&no_nonce());
    let _server = env.start();
    let https = Https::new(&env, None);
    let dpop = key(0xd1);
    let (verifier, challenge) = pkce();
    let a = assertion(&env, "fapi", &fapi_key());
    let form = with_assertion(authz_params("fapi", &challenge, REDIRECT), &a);
    let r = https.post_form("/par", &form, &[]).await;
    let redirect = browser(
        &https,
        "fapi",
        r.json()["request_uri"].as_str().unwrap(),
        PASSWORD,
        "allow",
    )
    .await;
    let redeem = || {
        let a = assertion(&env, "fapi", &fapi_key());
        let p = proof(&env, &dpop, "/token", None);
        let code = redirect.params["code"].clone();
        let verifier = verifier.clone();
        let https = https.clone();
        async move {
            https
                .post_form("/token", &code_exchange(&code, &verifier, &a), &[("dpop", &p)])
                .await
        }
    };
    let t = redeem().await.json();
    let (at, rt) = (
        t["access_token"].as_str().unwrap(),
        t["refresh_token"].as_str().unwrap(),
    );
    assert!(active(&env, &https, at).await);
    let r = redeem().await;
    assert_eq!((r.status, r.error().as_str()), (400, "invalid_grant"));
    assert!(!active(&env, &https, at).await, "access token revoked");
    let r = refresh_with(&env, &https, "fapi", &fapi_key(), rt, Some(&dpop), None).await;
    assert_eq!(
        (r.status, r.error().as_str()),
        (400, "invalid_grant"),
        "refresh token revoked"
    );
}

const SPA_REDIRECT: &str = "http://127.0.0.1:8080/cb";

/// The public client's code (PAR without `dpop_jkt`, login, consent) and its PKCE verifier.
async fn spa_code(https: &Https) -> (String, String) {
    let (verifier, challenge) = pkce();
    let redirect = par_then_allow(https, "spa", &authz_params("spa", &challenge, SPA_REDIRECT), &[]).await;
    (redirect.params["code"].clone(), verifier)
}

/// The public client's token request for `code`, with a DPoP proof by `dpop`.
async fn spa_redeem(env: &Env, https: &Https, code: &str, verifier: &str, dpop: &P256Signer) -> Resp {
    https
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", "spa"),
                ("code", code),
                ("redirect_uri", SPA_REDIRECT),
                ("code_verifier", verifier),
            ],
            &[("dpop", &proof(env, dpop, "/token", None))],
        )
        .await
}

/// The public client's refresh with a proof by `dpop`.
async fn spa_refresh(env: &Env, https: &Https, rt: &str, dpop: &P256Signer) -> Resp {
    https
        .post_form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("client_id", "spa"),
                ("refresh_token", rt),
            ],
            &[("dpop", &proof(env, dpop, "/token", None))],
        )
        .await
}

/// A leaked, already used code of a public client, presented again by someone who is not the
/// client (no PKCE verifier, another DPoP key), is refused and revokes nothing: anyone holding a
/// leaked code could otherwise end the user's session. The client itself (the right verifier, or
/// a proof by the key its tokens are bound to) still revokes the grant (RFC 6749 §4.1.2).
#[tokio::test]
async fn code_reuse_by_a_public_client_revokes_only_with_proof_of_the_client() {
    let env = Env::new(&no_nonce());
    let _server = env.start();
    let https = Https::new(&env, None);
    let (client_key, attacker_key) = (key(0xd2), key(0xd3));

    // Someone else: wrong verifier, their own key. Refused; the tokens keep working.
    let (code, verifier) = spa_code(&https).await;
    let t = spa_redeem(&env, &https, &code, &verifier, &client_key).await.json();
    let (at, rt) = (
        t["access_token"].as_str().unwrap(),
        t["refresh_token"].as_str().unwrap(),
    );
    let (wrong_verifier, _) = pkce();
    let r = spa_redeem(&env, &https, &code, &wrong_verifier, &attacker_key).await;
    assert_eq!((r.status, r.error().as_str()), (400, "invalid_grant"));
    assert!(
        active(&env, &https, at).await,
        "access token not revoked by a reuse without proof"
    );
    let r = spa_refresh(&env, &https, rt, &client_key).await;
    assert_eq!(r.status, 200, "refresh token not revoked: {}", r.text());

    // The right verifier proves the client: the grant is revoked.
    let r = spa_redeem(&env, &https, &code, &verifier, &attacker_key).await;
    assert_eq!((r.status, r.error().as_str()), (400, "invalid_grant"));
    assert!(!active(&env, &https, at).await, "revoked by the verifier");
    let r = spa_refresh(&env, &https, rt, &client_key).await;
    assert_eq!((r.status, r.error().as_str()), (400, "invalid_grant"));

    // A proof by the key the grant's tokens are bound to proves the client too.
    let (code, verifier) = spa_code(&https).await;
    let t = spa_redeem(&env, &https, &code, &verifier, &client_key).await.json();
    let (at, rt) = (
        t["access_token"].as_str().unwrap(),
        t["refresh_token"].as_str().unwrap(),
    );
    let r = spa_redeem(&env, &https, &code, &wrong_verifier, &client_key).await;
    assert_eq!((r.status, r.error().as_str()), (400, "invalid_grant"));
    assert!(!active(&env, &https, at).await, "revoked by the bound key");
    let r = spa_refresh(&env, &https, rt, &client_key).await;
    assert_eq!((r.status, r.error().as_str()), (400, "invalid_grant"));
}

#[tokio::test]
async fn jarm_response_mode_jwt() {
    let env = Env::new(&no_nonce());
    let _server = env.start();
    let https = Https::mtls(&env);
    let (verifier, challenge) = pkce();
    let mut form = authz_params("mtls", &challenge, REDIRECT);
    form.push(("response_mode", "jwt"));
    let redirect = par_then_allow(&https, "mtls", &form, &[]).await;
    assert_eq!(redirect.status, 303);
    assert_eq!(
        redirect.params.keys().collect::<Vec<_>>(),
        vec!["response"],
        "only the JWT"
    );
    let jwt = &redirect.params["response"];
    assert_eq!(header(jwt)["alg"], "ES256");
    let jws = keybound_core::jws::Jws::parse(jwt, keybound_core::Part::Other, Default::default()).unwrap();
    jws.verify_with_set(&server_jwks(&https).await, &RustCrypto, keybound_core::Part::Other)
        .unwrap();
    let c = claims(jwt);
    assert_eq!(c["iss"], env.issuer);
    assert_eq!(c["aud"], "mtls");
    assert_eq!(c["state"], "st-123");
    let exp = c["exp"].as_u64().unwrap();
    assert!(exp > now() && exp <= now() + 61);
    let r = https
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", "mtls"),
                ("code", c["code"].as_str().unwrap()),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &verifier),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // A denial in JARM carries the error inside the JWT.
    let r = https.post_form("/par", &form, &[]).await;
    let denied = browser(
        &https,
        "mtls",
        r.json()["request_uri"].as_str().unwrap(),
        PASSWORD,
        "deny",
    )
    .await;
    let c = claims(&denied.params["response"]);
    assert_eq!((c["error"].as_str(), c.get("code")), (Some("access_denied"), None));
    // Discovery says so.
    let d = https.get("/.well-known/openid-configuration").await.json();
    assert!(
        d["response_modes_supported"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == "jwt")
    );
}

/// Issue tokens, restart the process on the same SQLite file, refresh and introspect.
#[tokio::test]
async fn restart_loses_nothing_committed() {
    let env = Env::new(&no_nonce());
    let server = env.start();
    let https = Https::new(&env, None);
    let dpop = key(0xe1);
    let t = fapi_tokens(&env, &https, &dpop, &[]).await;
    let (at, rt) = (
        t["access_token"].as_str().unwrap(),
        t["refresh_token"].as_str().unwrap(),
    );
    let kid = header(at)["kid"].as_str().unwrap().to_string();
    // A used assertion stays used across the restart.
    let a = assertion(&env, "rs", &rs_key());
    let form = [
        ("token", at),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", a.as_str()),
    ];
    assert_eq!(https.post_form("/introspect", &form, &[]).await.status, 200);
    server.stop();

    let _server = env.start();
    assert!(active(&env, &https, at).await, "access token still active");
    let r = refresh_with(&env, &https, "fapi", &fapi_key(), rt, Some(&dpop), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        header(r.json()["access_token"].as_str().unwrap())["kid"],
        kid.as_str(),
        "same signing key"
    );
    let r = https.post_form("/introspect", &form, &[]).await;
    assert_eq!(
        (r.status, r.error().as_str()),
        (401, "invalid_client"),
        "replay cache persisted"
    );
}

/// The consent is recorded as a JWT signed by the server (non-repudiation): read it from
/// storage and verify it against the published keys.
#[tokio::test]
async fn consent_is_recorded_as_a_signed_jwt() {
    let env = Env::new(&no_nonce());
    let _server = env.start();
    let https = Https::new(&env, None);
    fapi_tokens(&env, &https, &key(0xf1), &[]).await;
    // Read through the server's own storage interface, whichever backend the config names.
    let config = keybound_authz::config::Config::load(&env.config).unwrap();
    let store = keybound_authz::storage::open(&config.storage).await.unwrap();
    let consents = store.consents("alice").await.unwrap();
    assert_eq!(consents.len(), 1);
    let (subject, client, jwt) = (&consents[0].subject, &consents[0].client_id, &consents[0].jwt);
    assert_eq!((subject.as_str(), client.as_str()), ("alice", "fapi"));
    assert_eq!(header(jwt)["typ"], "consent+jwt");
    let jws = keybound_core::jws::Jws::parse(jwt, keybound_core::Part::Other, Default::default()).unwrap();
    jws.verify_with_set(&server_jwks(&https).await, &RustCrypto, keybound_core::Part::Other)
        .unwrap();
    let c = claims(jwt);
    assert_eq!(c["iss"], env.issuer);
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["client_id"], "fapi");
    assert_eq!(c["scope"], "openid accounts");
    assert_eq!(c["redirect_uri"], REDIRECT);
}
