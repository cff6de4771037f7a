//! The login flow of keybound-browser in headless Chromium, for what does not need the real
//! authorization server (the demo's end-to-end test, `demo/tests/browser.rs`, runs the whole flow
//! against keybound-authz): PKCE against keybound-core, discovery and its issuer check, the pushed
//! request (checked by `examples/dpop_test_server.rs` with keybound-core: proof with a nonce,
//! `dpop_jkt`, S256), the callback checks (`state`, `iss`, errors) and the session storage of the
//! verifier and state.
#![cfg(target_arch = "wasm32")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::option_env_unwrap,
    reason = "test code; the server URL is missing only outside `cargo xtask test`"
)]

use js_sys::{Object, Promise, Reflect};
use keybound_browser::DpopKey;
use keybound_browser::error::is_keybound_error;
use keybound_browser::js::session_get;
use keybound_browser::login::{OAuthClient, new_pkce, new_state, pending_key};
use keybound_core::pkce;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

mod common;

/// Opens a key (see `common`); panics if it cannot.
async fn open_key(options: &JsValue) -> DpopKey {
    common::open_key(options).await.unwrap()
}

const REDIRECT: &str = "https://app.example/cb";

fn obj(entries: &[(&str, JsValue)]) -> JsValue {
    let o = Object::new();
    for (k, v) in entries {
        Reflect::set(&o, &JsValue::from_str(k), v).unwrap();
    }
    o.into()
}

fn s(v: &str) -> JsValue {
    JsValue::from_str(v)
}

fn get(v: &JsValue, key: &str) -> JsValue {
    Reflect::get(v, &JsValue::from_str(key)).unwrap()
}

async fn wait(p: Promise) -> Result<JsValue, JsValue> {
    JsFuture::from(p).await
}

fn server() -> &'static str {
    option_env!("KEYBOUND_TEST_SERVER")
        .expect("KEYBOUND_TEST_SERVER is not set: run these tests through `cargo xtask test`")
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", (js_sys::Math::random() * 1e15) as u64)
}

fn assert_keybound_error(err: &JsValue, code: Option<&str>, reason: &str) {
    assert!(is_keybound_error(err), "not a KeyboundError: {err:?}");
    assert_eq!(get(err, "code").as_string().as_deref(), code, "{err:?}");
    assert_eq!(get(err, "reason").as_string().as_deref(), Some(reason), "{err:?}");
}

async fn key(client_id: &str) -> DpopKey {
    open_key(&obj(&[("clientId", s(client_id)), ("storage", s("memory"))])).await
}

async fn client_with(key: &DpopKey, entries: &[(&str, JsValue)]) -> Result<OAuthClient, JsValue> {
    let mut all = vec![
        ("clientId", s(&key.client_id())),
        ("redirectUri", s(REDIRECT)),
        ("scope", s("openid accounts")),
    ];
    all.extend(entries.iter().cloned());
    let client = wait(OAuthClient::create(key, obj(&all).unchecked_into())).await?;
    // A wasm-bindgen object crosses as a JS wrapper; take it back by its pointer.
    Ok(wasm_bindgen::convert::TryFromJsValue::try_from_js_value(client).unwrap())
}

async fn client(key: &DpopKey) -> OAuthClient {
    client_with(key, &[("issuer", s(server()))]).await.unwrap()
}

fn pending(client_id: &str) -> Option<serde_json::Value> {
    session_get(&pending_key(client_id))
        .unwrap()
        .map(|t| serde_json::from_str(&t).unwrap())
}

/// Starts a login; returns the authorization URL and the pending login kept in sessionStorage.
async fn start(client: &OAuthClient, client_id: &str) -> (String, serde_json::Value) {
    let url = wait(client.start_login(None)).await.unwrap().as_string().unwrap();
    (url, pending(client_id).expect("a pending login in sessionStorage"))
}

async fn complete(client: &OAuthClient, url: &str) -> Result<JsValue, JsValue> {
    wait(client.complete_login(url)).await
}

#[wasm_bindgen_test]
fn pkce_is_s256_of_a_fresh_43_character_verifier() {
    let a = new_pkce().unwrap();
    let b = new_pkce().unwrap();
    assert_eq!(a.verifier.len(), 43);
    assert!(
        a.verifier
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    );
    assert_eq!(a.challenge, pkce::challenge_s256(&a.verifier).unwrap());
    pkce::verify_s256(&a.verifier, &a.challenge).unwrap();
    pkce::check_challenge(Some("S256"), &a.challenge).unwrap();
    assert_ne!(a.verifier, b.verifier, "random verifiers");
    let state = new_state().unwrap();
    assert_eq!(state.len(), 22, "128 bits base64url: {state}");
    assert_ne!(state, new_state().unwrap());
}

#[wasm_bindgen_test]
async fn discovery_reads_the_endpoints_and_checks_the_issuer() {
    let key = key(&unique("disco")).await;
    let c = client(&key).await;
    assert_eq!(c.issuer(), server());
    assert_eq!(c.token_endpoint(), format!("{}/login/token?as=1&nonce=1", server()));

    // The metadata at /.well-known/oauth-authorization-server/other names another issuer.
    let err = client_with(&key, &[("issuer", s(&format!("{}/other", server())))])
        .await
        .err()
        .unwrap();
    assert_keybound_error(&err, Some("invalid_request"), "issuer_mismatch");

    // Metadata given by the app is checked the same way.
    let metadata = |issuer: &str, token: Option<&str>| {
        let mut m = vec![
            ("issuer", s(issuer)),
            ("pushed_authorization_request_endpoint", s("https://as.example/par")),
            ("authorization_endpoint", s("https://as.example/authorize")),
        ];
        if let Some(t) = token {
            m.push(("token_endpoint", s(t)));
        }
        obj(&m)
    };
    let given = client_with(
        &key,
        &[
            ("issuer", s("https://as.example")),
            (
                "metadata",
                metadata("https://as.example", Some("https://as.example/token")),
            ),
        ],
    )
    .await
    .unwrap();
    assert_eq!(given.token_endpoint(), "https://as.example/token");
    let err = client_with(
        &key,
        &[
            ("issuer", s("https://as.example")),
            (
                "metadata",
                metadata("https://evil.example", Some("https://as.example/token")),
            ),
        ],
    )
    .await
    .err()
    .unwrap();
    assert_keybound_error(&err, Some("invalid_request"), "issuer_mismatch");
    for token in [None, Some("http://as.example/token"), Some("not a url")] {
        let err = client_with(
            &key,
            &[
                ("issuer", s("https://as.example")),
                ("metadata", metadata("https://as.example", token)),
            ],
        )
        .await
        .err()
        .unwrap();
        assert_keybound_error(&err, Some("invalid_request"), "metadata_invalid");
    }

    // Bad options.
    for (name, value) in [
        ("issuer", "ftp://as.example"),
        ("issuer", "http://as.example"),
        ("issuer", "https://as.example?x=1"),
        ("redirectUri", "/cb"),
        ("redirectUri", "https://app.example/cb#x"),
        ("clientId", "another-client"),
    ] {
        let mut entries = vec![("issuer", s(server()))];
        entries.retain(|(n, _)| *n != name);
        entries.push((name, s(value)));
        let err = client_with(&key, &entries).await.err().unwrap();
        assert_keybound_error(&err, Some("invalid_request"), "invalid_argument");
    }
}

#[wasm_bindgen_test]
async fn start_login_pushes_pkce_state_and_dpop_jkt_and_keeps_them_in_session_storage() {
    let id = unique("par");
    let key = key(&id).await;
    let c = client(&key).await;
    assert!(pending(&id).is_none());
    // The PAR endpoint requires a server nonce: the first proof is answered 400 use_dpop_nonce and
    // the request is retried once; the server then checks dpop_jkt against the proof's key and the
    // S256 challenge with keybound-core, and puts the challenge it got into the request_uri.
    let (url, saved) = start(&c, &id).await;
    let parsed = web_sys::Url::new(&url).unwrap();
    assert_eq!(
        format!("{}{}", parsed.origin(), parsed.pathname()),
        format!("{}/authorize", server())
    );
    assert_eq!(parsed.search_params().get("client_id"), Some(id.clone()));
    let request_uri = parsed.search_params().get("request_uri").unwrap();
    let challenge = request_uri.strip_prefix("urn:ietf:params:oauth:request_uri:").unwrap();
    let verifier = saved["verifier"].as_str().unwrap();
    assert_eq!(verifier.len(), 43);
    assert_eq!(
        challenge,
        pkce::challenge_s256(verifier).unwrap(),
        "the challenge sent is S256(verifier)"
    );
    assert_eq!(saved["state"].as_str().unwrap().len(), 22);
    assert_eq!(saved["issuer"].as_str(), Some(server()));
    assert!(key.nonce_for(server()).is_some(), "the PAR nonce was learned");
    // Tokens are not in any storage.
    assert!(c.access_token().is_none());

    // A second login replaces the first (a new verifier and state).
    let (_, again) = start(&c, &id).await;
    assert_ne!(again["verifier"], saved["verifier"]);
    assert_ne!(again["state"], saved["state"]);

    // logout() forgets the pending login.
    c.logout(None).unwrap();
    assert!(pending(&id).is_none());
}

#[wasm_bindgen_test]
async fn a_failed_par_stores_nothing_and_carries_the_servers_code() {
    let id = unique("parfail");
    let key = key(&id).await;
    // A "PAR endpoint" that answers 400 invalid_grant to every verified proof.
    let metadata = obj(&[
        ("issuer", s(server())),
        (
            "pushed_authorization_request_endpoint",
            s(&format!("{}/login/token?as=1", server())),
        ),
        ("authorization_endpoint", s(&format!("{}/authorize", server()))),
        ("token_endpoint", s(&format!("{}/login/token?as=1", server()))),
    ]);
    let c = client_with(&key, &[("issuer", s(server())), ("metadata", metadata)])
        .await
        .unwrap();
    let err = wait(c.start_login(None)).await.unwrap_err();
    assert_keybound_error(&err, Some("invalid_grant"), "par_failed");
    assert!(pending(&id).is_none());
}

/// Makes a callback URL from the pending login's state.
type MakeCallback<'a> = Box<dyn Fn(&str) -> String + 'a>;

#[wasm_bindgen_test]
async fn callbacks_are_checked_for_state_iss_and_errors_and_end_the_pending_login() {
    let id = unique("cb");
    let key = key(&id).await;
    let c = client(&key).await;
    let issuer = server();
    let cb = |query: &str| format!("{REDIRECT}?{query}");

    // Without a pending login.
    let err = complete(&c, &cb(&format!("code=x&state=y&iss={issuer}")))
        .await
        .unwrap_err();
    assert_keybound_error(&err, Some("invalid_request"), "no_pending_login");

    let cases: Vec<(MakeCallback, Option<&str>, &str)> = vec![
        (
            Box::new(|_| cb(&format!("code=x&state=forged&iss={issuer}"))),
            Some("invalid_request"),
            "state_mismatch",
        ),
        (
            Box::new(|_| cb(&format!("code=x&iss={issuer}"))),
            Some("invalid_request"),
            "state_missing",
        ),
        (
            Box::new(|st| cb(&format!("code=x&state={st}&state={st}&iss={issuer}"))),
            Some("invalid_request"),
            "duplicate_parameter",
        ),
        (
            Box::new(|st| cb(&format!("code=x&state={st}&iss=https%3A%2F%2Fevil.example"))),
            Some("invalid_request"),
            "iss_mismatch",
        ),
        (
            Box::new(|st| cb(&format!("code=x&state={st}"))),
            Some("invalid_request"),
            "iss_missing",
        ),
        (
            Box::new(|st| {
                cb(&format!(
                    "error=access_denied&error_description=no&state={st}&iss={issuer}"
                ))
            }),
            Some("access_denied"),
            "authorization_error",
        ),
        (
            Box::new(|st| cb(&format!("state={st}&iss={issuer}"))),
            Some("invalid_request"),
            "code_missing",
        ),
        (
            Box::new(|st| format!("https://app.example/other?code=x&state={st}&iss={issuer}")),
            Some("invalid_request"),
            "redirect_uri_mismatch",
        ),
        // Every check passes: the code goes to the token endpoint with the verifier and a proof
        // (with the server's nonce after one retry); the test server knows no codes.
        (
            Box::new(|st| cb(&format!("code=abc&state={st}&iss={issuer}"))),
            Some("invalid_grant"),
            "token_failed",
        ),
    ];
    for (make, code, reason) in cases {
        let (_, saved) = start(&c, &id).await;
        let state = saved["state"].as_str().unwrap().to_string();
        let err = complete(&c, &make(&state)).await.unwrap_err();
        assert_keybound_error(&err, code, reason);
        // The verifier and state were removed when the callback was processed ...
        assert!(pending(&id).is_none(), "{reason}: the pending login is gone");
        // ... so the same callback with the right state cannot be replayed.
        let err = complete(&c, &cb(&format!("code=x&state={state}&iss={issuer}")))
            .await
            .unwrap_err();
        assert_keybound_error(&err, Some("invalid_request"), "no_pending_login");
        assert!(c.access_token().is_none(), "{reason}: no token");
    }
}

#[wasm_bindgen_test]
async fn without_tokens_refresh_and_fetch_are_refused() {
    let key = key(&unique("notoken")).await;
    let c = client(&key).await;
    assert!(!c.has_refresh_token());
    let err = wait(c.refresh()).await.unwrap_err();
    assert_keybound_error(&err, None, "no_refresh_token");
    let err = wait(c.fetch(&format!("{}/api", server()), None)).await.unwrap_err();
    assert_keybound_error(&err, None, "not_logged_in");
    assert!(c.is_callback(&format!("{REDIRECT}?code=x")));
    assert!(!c.is_callback("https://app.example/"));
}
