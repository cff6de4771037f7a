//! Step 2: full authorization code flows over real TLS: private_key_jwt + DPoP (with server
//! nonces), tls_client_auth + certificate-bound tokens, self_signed_tls_client_auth, a public
//! DPoP client. Tokens are verified with keybound-core against the server's JWKS.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

mod common;

use common::*;
use keybound_core::cert::X5tS256;
use keybound_core::jws::Signer;
use keybound_core::token::{TokenPolicy, verify_jwt};

fn verify_access_token(env: &Env, jwks: &keybound_core::jwk::Jwks, token: &str) -> keybound_core::token::VerifiedToken {
    let policy = TokenPolicy::new(env.issuer.clone(), vec![AUDIENCE.into()]);
    verify_jwt(token, jwks, &policy, now(), &keybound_core::jws::RustCrypto).unwrap()
}

/// private_key_jwt + DPoP, nonce required: PAR with a proof (binding the code to the key),
/// login, consent, token. The access token is an RFC 9068 JWT bound to the DPoP key.
#[tokio::test]
async fn confidential_client_private_key_jwt_and_dpop() {
    let env = Env::new(&Options::default());
    let _server = env.start();
    let https = Https::new(&env, None);
    let dpop = key(0x51);
    let (verifier, challenge) = pkce();

    // PAR without nonce: use_dpop_nonce with a nonce to retry with.
    let a = assertion(&env, "fapi", &fapi_key());
    let form = with_assertion(authz_params("fapi", &challenge, REDIRECT), &a);
    let p = proof(&env, &dpop, "/par", None);
    let r = https.post_form("/par", &form, &[("dpop", &p)]).await;
    assert_eq!((r.status, r.error().as_str()), (400, "use_dpop_nonce"));
    let nonce = r.header("dpop-nonce").unwrap();

    // Retry with the nonce (the assertion was not consumed by the failed attempt).
    let p = proof(&env, &dpop, "/par", Some(&nonce));
    let r = https.post_form("/par", &form, &[("dpop", &p)]).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("cache-control").unwrap(), "no-store");
    let par = r.json();
    let request_uri = par["request_uri"].as_str().unwrap().to_string();
    assert!(request_uri.starts_with("urn:ietf:params:oauth:request_uri:"));
    assert_eq!(par["expires_in"], 90);

    let redirect = browser(&https, "fapi", &request_uri, PASSWORD, "allow").await;
    assert_eq!(redirect.status, 303);
    assert!(redirect.location.starts_with(REDIRECT));
    assert_eq!(redirect.params["iss"], env.issuer);
    assert_eq!(redirect.params["state"], "st-123");
    let code = redirect.params["code"].clone();

    let a = assertion(&env, "fapi", &fapi_key());
    let p = proof(&env, &dpop, "/token", Some(&nonce));
    let r = https
        .post_form("/token", &code_exchange(&code, &verifier, &a), &[("dpop", &p)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control").unwrap(), "no-store");
    let t = r.json();
    assert_eq!(t["token_type"], "DPoP");
    assert_eq!(t["expires_in"], 300);
    assert_eq!(t["scope"], "openid accounts");
    let at = t["access_token"].as_str().unwrap();
    assert_eq!(header(at)["typ"], "at+jwt");
    assert_eq!(header(at)["alg"], "ES256");
    let jwks = server_jwks(&https).await;
    let verified = verify_access_token(&env, &jwks, at);
    assert_eq!(verified.jkt(), Some(&dpop.public_key().thumbprint()));
    assert_eq!(verified.claims().sub.as_deref(), Some("alice"));
    assert_eq!(verified.claims().client_id.as_deref(), Some("fapi"));
    assert_eq!(verified.claims().scopes, vec!["openid".to_string(), "accounts".into()]);
    // The ID token: ES256, aud = client, nonce echoed.
    let id = t["id_token"].as_str().unwrap();
    let idc = claims(id);
    assert_eq!(header(id)["alg"], "ES256");
    assert_eq!(idc["aud"], "fapi");
    assert_eq!(idc["nonce"], "n-456");
    assert_eq!(idc["iss"], env.issuer);
    let jws = keybound_core::jws::Jws::parse(id, keybound_core::Part::Other, Default::default()).unwrap();
    jws.verify_with_set(&jwks, &keybound_core::jws::RustCrypto, keybound_core::Part::Other)
        .unwrap();
}

/// tls_client_auth (subject DN) + certificate-bound token (`cnf.x5t#S256`, token_type Bearer).
#[tokio::test]
async fn confidential_client_mtls_and_certificate_bound_token() {
    let env = Env::new(&Options::default());
    let _server = env.start();
    let https = Https::mtls(&env);
    let (verifier, challenge) = pkce();
    let r = https
        .post_form("/par", &authz_params("mtls", &challenge, REDIRECT), &[])
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let request_uri = r.json()["request_uri"].as_str().unwrap().to_string();
    // The browser has no client certificate.
    let redirect = browser(&Https::new(&env, None), "mtls", &request_uri, PASSWORD, "allow").await;
    let code = redirect.params["code"].clone();
    let r = https
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", "mtls"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &verifier),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.json();
    assert_eq!(t["token_type"], "Bearer");
    let verified = verify_access_token(&env, &server_jwks(&https).await, t["access_token"].as_str().unwrap());
    let pem = std::fs::read_to_string(env.path("mtls-client.pem")).unwrap();
    assert_eq!(verified.x5t_s256(), Some(&X5tS256::from_pem(&pem).unwrap()));
    assert_eq!(verified.jkt(), None);
}

/// tls_client_auth by DNS SAN, and self_signed_tls_client_auth, each to a bound token.
#[tokio::test]
async fn san_and_self_signed_certificate_clients() {
    let env = Env::new(&Options::default());
    let _server = env.start();
    for (client, https, pem) in [
        ("mtls-san", Https::mtls(&env), "mtls-client.pem"),
        ("selfsigned", Https::self_signed(&env), "selfsigned-client.pem"),
    ] {
        let (verifier, challenge) = pkce();
        let mut form = authz_params(client, &challenge, REDIRECT);
        form.retain(|(k, _)| *k != "scope");
        form.push(("scope", "accounts"));
        let r = https.post_form("/par", &form, &[]).await;
        assert_eq!(r.status, 201, "{client}: {}", r.text());
        let request_uri = r.json()["request_uri"].as_str().unwrap().to_string();
        let redirect = browser(&https, client, &request_uri, PASSWORD, "allow").await;
        let r = https
            .post_form(
                "/token",
                &[
                    ("grant_type", "authorization_code"),
                    ("client_id", client),
                    ("code", &redirect.params["code"]),
                    ("redirect_uri", REDIRECT),
                    ("code_verifier", &verifier),
                ],
                &[],
            )
            .await;
        assert_eq!(r.status, 200, "{client}: {}", r.text());
        let t = r.json();
        assert!(t.get("id_token").is_none(), "no openid scope, no ID token");
        let verified = verify_access_token(&env, &server_jwks(&https).await, t["access_token"].as_str().unwrap());
        let pem = std::fs::read_to_string(env.path(pem)).unwrap();
        assert_eq!(verified.x5t_s256(), Some(&X5tS256::from_pem(&pem).unwrap()), "{client}");
    }
}

/// A public client (auth none) with DPoP, nonces off: the happy path without nonces.
#[tokio::test]
async fn public_client_with_dpop_without_nonces() {
    let env = Env::new(&Options {
        nonce: false,
        ..Options::default()
    });
    let _server = env.start();
    let https = Https::new(&env, None);
    let dpop = key(0x52);
    let (verifier, challenge) = pkce();
    let redirect_uri = "http://127.0.0.1:8080/cb";
    let jkt = dpop.public_key().thumbprint().to_string();
    let mut form = authz_params("spa", &challenge, redirect_uri);
    form.push(("dpop_jkt", &jkt));
    let r = https.post_form("/par", &form, &[]).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let request_uri = r.json()["request_uri"].as_str().unwrap().to_string();
    let redirect = browser(&https, "spa", &request_uri, PASSWORD, "allow").await;
    let p = proof(&env, &dpop, "/token", None);
    let r = https
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", "spa"),
                ("code", &redirect.params["code"]),
                ("redirect_uri", redirect_uri),
                ("code_verifier", &verifier),
            ],
            &[("dpop", &p)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.json();
    assert_eq!(t["token_type"], "DPoP");
    let verified = verify_access_token(&env, &server_jwks(&https).await, t["access_token"].as_str().unwrap());
    assert_eq!(verified.jkt(), Some(&dpop.public_key().thumbprint()));
}

/// FAPI: a request_uri may be opened several times before authorization completes; the user may
/// deny (access_denied with iss and state); parameters without state or nonce work; scope order
/// does not matter; long state and nonce are returned intact.
#[tokio::test]
async fn request_uri_reuse_before_completion_denial_and_optional_parameters() {
    let env = Env::new(&Options {
        nonce: false,
        ..Options::default()
    });
    let _server = env.start();
    let https = Https::mtls(&env);
    let (_, challenge) = pkce();
    let form = authz_params("mtls", &challenge, REDIRECT);
    let uri = https.post_form("/par", &form, &[]).await.json()["request_uri"]
        .as_str()
        .unwrap()
        .to_string();
    let q = encode(&[("client_id", "mtls"), ("request_uri", &uri)]);
    assert_eq!(https.get(&format!("/authorize?{q}")).await.status, 200);
    let denied = browser(&https, "mtls", &uri, PASSWORD, "deny").await;
    assert_eq!(denied.status, 303);
    assert_eq!(denied.params["error"], "access_denied");
    assert_eq!(denied.params["iss"], env.issuer);
    assert_eq!(denied.params["state"], "st-123");
    assert!(!denied.params.contains_key("code"));

    let long_state = "s".repeat(500);
    let long_nonce = "n".repeat(64);
    let form = vec![
        ("client_id", "mtls"),
        ("response_type", "code"),
        ("redirect_uri", REDIRECT),
        ("scope", "accounts openid"),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
        ("state", &long_state),
        ("nonce", &long_nonce),
    ];
    let ok = par_then_allow(&https, "mtls", &form, &[]).await;
    assert_eq!(ok.params["state"], long_state);

    let minimal = vec![
        ("response_type", "code"),
        ("client_id", "mtls"),
        ("redirect_uri", REDIRECT),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ];
    let ok = par_then_allow(&https, "mtls", &minimal, &[]).await;
    assert!(ok.params.contains_key("code"));
    assert!(!ok.params.contains_key("state"));
}

/// DPoP proofs with iat 10 s in the past and 10 s in the future are accepted at the token
/// endpoint (FAPI2 ensure-dpopproof-with-iat-10seconds-before/after-succeeds).
#[tokio::test]
async fn proofs_with_iat_ten_seconds_off_are_accepted() {
    let env = Env::new(&Options {
        nonce: false,
        ..Options::default()
    });
    let _server = env.start();
    let https = Https::new(&env, None);
    for offset in [-10i64, 10] {
        let dpop = key(0x53);
        let (verifier, challenge) = pkce();
        let r = https
            .post_form(
                "/par",
                &authz_params("spa", &challenge, "http://127.0.0.1:8080/cb"),
                &[],
            )
            .await;
        let redirect = browser(
            &https,
            "spa",
            r.json()["request_uri"].as_str().unwrap(),
            PASSWORD,
            "allow",
        )
        .await;
        let iat = now().checked_add_signed(offset).unwrap();
        let p = proof_at(&env, &dpop, "POST", "/token", iat, None);
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
        assert_eq!(r.status, 200, "offset {offset}: {}", r.text());
    }
}

/// Pairwise subject identifiers (OIDC Core §8): the same for clients of one sector, different
/// across sectors, never the user name; public clients see the user name. The ID token and the
/// access token carry the same `sub`.
#[tokio::test]
async fn pairwise_subjects_per_sector() {
    let env = Env::new(&Options {
        nonce: false,
        ..Options::default()
    });
    let _server = env.start();
    let https = Https::new(&env, None);
    let mut subs = std::collections::BTreeMap::new();
    for (client, redirect_uri) in [
        ("pw1", "http://127.0.0.1:8080/cb"),
        ("pw2", "http://127.0.0.1:9090/other"),
        ("pw3", "http://127.0.0.1:8080/cb"),
        ("spa", "http://127.0.0.1:8080/cb"),
    ] {
        let dpop = key(0x54);
        let (verifier, challenge) = pkce();
        let mut form = authz_params(client, &challenge, redirect_uri);
        form.retain(|(k, _)| *k != "scope");
        form.push(("scope", "openid"));
        let redirect = par_then_allow(&https, client, &form, &[]).await;
        let p = proof(&env, &dpop, "/token", None);
        let r = https
            .post_form(
                "/token",
                &[
                    ("grant_type", "authorization_code"),
                    ("client_id", client),
                    ("code", &redirect.params["code"]),
                    ("redirect_uri", redirect_uri),
                    ("code_verifier", &verifier),
                ],
                &[("dpop", &p)],
            )
            .await;
        assert_eq!(r.status, 200, "{client}: {}", r.text());
        let t = r.json();
        let id_sub = claims(t["id_token"].as_str().unwrap())["sub"]
            .as_str()
            .unwrap()
            .to_string();
        let at_sub = claims(t["access_token"].as_str().unwrap())["sub"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(id_sub, at_sub, "{client}");
        subs.insert(client, id_sub);
    }
    assert_eq!(subs["spa"], "alice");
    assert_eq!(subs["pw1"], subs["pw2"], "same sector");
    assert_ne!(subs["pw1"], subs["pw3"], "other sector");
    for c in ["pw1", "pw3"] {
        assert_ne!(subs[c], "alice");
        assert_eq!(subs[c].len(), 43);
    }
    let d = https.get("/.well-known/openid-configuration").await.json();
    assert_eq!(d["subject_types_supported"], serde_json::json!(["public", "pairwise"]));
}
