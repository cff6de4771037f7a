//! The OAuth client for servers without PAR and with OpenID Connect, in headless Chromium, against
//! a stubbed `fetch` (the test plays the authorization server and the API): the authorization URL
//! without PAR, the ID token validated after the code exchange (WebCrypto verifying a signature
//! made by keybound-core, the `nonce` sent, the rejections), the refresh timer, the refresh and
//! single retry on `401 invalid_token`, the events, and RP-initiated logout. The whole flow
//! against real servers is `tests/tests/browser_oidc_provider.rs` (node-oidc-provider, Envoy).
#![cfg(target_arch = "wasm32")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]

use js_sys::{Function, Promise, Reflect};
use keybound_browser::DpopKey;
use keybound_browser::error::is_keybound_error;
use keybound_browser::js::session_get;
use keybound_browser::login::{OAuthClient, is_openid, pending_key, refresh_delay_ms};
use keybound_core::id_token::left_half_hash;
use keybound_core::jwk::Jwk;
use keybound_core::jws::{self, Alg, P256Signer, Signer as _};
use serde_json::{Value, json};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

mod common;

/// Opens a key (see `common`); panics if it cannot.
async fn open_key(options: &JsValue) -> DpopKey {
    common::open_key(options).await.unwrap()
}

const AS: &str = "https://as.example";
const REDIRECT: &str = "https://app.example/cb";
const API: &str = "https://api.example/accounts";
const KID: &str = "as-key-1";

fn js(v: &Value) -> JsValue {
    js_sys::JSON::parse(&v.to_string()).unwrap()
}

fn get(v: &JsValue, key: &str) -> JsValue {
    Reflect::get(v, &JsValue::from_str(key)).unwrap()
}

async fn wait(p: Promise) -> Result<JsValue, JsValue> {
    JsFuture::from(p).await
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", (js_sys::Math::random() * 1e15) as u64)
}

fn assert_keybound_error(err: &JsValue, code: Option<&str>, reason: &str) {
    assert!(is_keybound_error(err), "not a KeyboundError: {err:?}");
    assert_eq!(get(err, "code").as_string().as_deref(), code, "{err:?}");
    assert_eq!(get(err, "reason").as_string().as_deref(), Some(reason), "{err:?}");
}

fn issuer_key() -> P256Signer {
    P256Signer::from_bytes(&[42; 32]).unwrap()
}

fn jwks() -> Value {
    let jwk = Jwk::new(issuer_key().public_key().clone(), Some(KID.into()), Some(Alg::Es256));
    json!({ "keys": [serde_json::from_str::<Value>(&jwk.to_json()).unwrap()] })
}

fn now() -> i64 {
    (js_sys::Date::now() / 1000.0) as i64
}

fn id_token(client_id: &str, nonce: &str) -> String {
    id_token_with(client_id, &json!({ "nonce": nonce }))
}

/// An ID token for `client_id` about alice, with `extra` claims (`null` removes one).
fn id_token_with(client_id: &str, extra: &Value) -> String {
    let mut claims = json!({
        "iss": AS, "sub": "alice", "aud": client_id, "iat": now(), "exp": now() + 300,
    });
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    jws::sign_json(&issuer_key(), Some("JWT"), Some(KID), &claims).unwrap()
}

/// Replaces `globalThis.fetch` with a stub: `routes[url without query]` is a list of responses
/// (`{status, headers, body}`) served in order (the last one repeats); every request is recorded
/// in `globalThis.__kbCalls` (`{url, method, body, authorization}`). [`restore_fetch`] undoes it.
fn stub_fetch(routes: &Value) {
    let install = Function::new_with_args(
        "routes",
        r#"
        if (!globalThis.__kbRealFetch) globalThis.__kbRealFetch = globalThis.fetch;
        globalThis.__kbCalls = [];
        globalThis.__kbRoutes = routes;
        globalThis.fetch = async (req) => {
          const body = req.method === "POST" ? await req.clone().text() : "";
          globalThis.__kbCalls.push({ url: req.url, method: req.method, body, authorization: req.headers.get("authorization") });
          const queue = globalThis.__kbRoutes[req.url.split("?")[0]];
          if (!queue || queue.length === 0) return new Response("not found", { status: 404 });
          const r = queue.length > 1 ? queue.shift() : queue[0];
          return new Response(typeof r.body === "string" ? r.body : JSON.stringify(r.body), { status: r.status, headers: r.headers || {} });
        };
        "#,
    );
    install.call1(&JsValue::NULL, &js(routes)).unwrap();
}

/// Adds responses to a route of the stub.
fn add_route(url: &str, responses: &Value) {
    let routes = get(&js_sys::global(), "__kbRoutes");
    Reflect::set(&routes, &JsValue::from_str(url), &js(responses)).unwrap();
}

fn calls() -> Value {
    let calls = get(&js_sys::global(), "__kbCalls");
    serde_json::from_str(&js_sys::JSON::stringify(&calls).unwrap().as_string().unwrap()).unwrap()
}

fn restore_fetch() {
    Function::new_no_args("if (globalThis.__kbRealFetch) globalThis.fetch = globalThis.__kbRealFetch;")
        .call0(&JsValue::NULL)
        .unwrap();
}

async fn key(client_id: &str) -> DpopKey {
    let options = js(&json!({"clientId": client_id, "storage": "memory"}));
    open_key(&options).await
}

fn metadata(par: bool) -> Value {
    let mut m = json!({
        "issuer": AS,
        "authorization_endpoint": format!("{AS}/authorize"),
        "token_endpoint": format!("{AS}/token"),
        "end_session_endpoint": format!("{AS}/logout"),
    });
    if par {
        m["pushed_authorization_request_endpoint"] = json!(format!("{AS}/par"));
    }
    m
}

async fn client_with(key: &DpopKey, extra: &Value) -> Result<OAuthClient, JsValue> {
    let mut options = json!({
        "issuer": AS, "clientId": key.client_id(), "redirectUri": REDIRECT, "scope": "openid accounts",
        "metadata": metadata(false), "jwks": jwks(), "postLogoutRedirectUri": "https://app.example/bye",
    });
    for (k, v) in extra.as_object().unwrap() {
        options[k] = v.clone();
    }
    let client = wait(OAuthClient::create(key, js(&options).unchecked_into())).await?;
    Ok(wasm_bindgen::convert::TryFromJsValue::try_from_js_value(client).unwrap())
}

/// Starts a login (no PAR: no request) and returns the authorization URL's parameters and the
/// pending login.
async fn start(client: &OAuthClient, client_id: &str) -> (web_sys::UrlSearchParams, Value) {
    let url = wait(client.start_login(None)).await.unwrap().as_string().unwrap();
    let url = web_sys::Url::new(&url).unwrap();
    assert_eq!(format!("{}{}", url.origin(), url.pathname()), format!("{AS}/authorize"));
    let pending = session_get(&pending_key(client_id)).unwrap().unwrap();
    (url.search_params(), serde_json::from_str(&pending).unwrap())
}

/// A client (no auto-refresh) of a fresh key for the client id `<prefix>-<random>`, with a login
/// started: the client id, the key, the client and the pending login.
async fn started(prefix: &str) -> (String, DpopKey, OAuthClient, Value) {
    let id = unique(prefix);
    let key = key(&id).await;
    let client = client_with(&key, &json!({"autoRefresh": false})).await.unwrap();
    let (_, pending) = start(&client, &id).await;
    (id, key, client, pending)
}

fn callback(pending: &Value) -> String {
    format!(
        "{REDIRECT}?code=the-code&state={}&iss={}",
        pending["state"].as_str().unwrap(),
        js_sys::encode_uri_component(AS)
    )
}

/// Records the events of `client` in a JS array; returns it.
fn record_events(client: &OAuthClient) -> js_sys::Array {
    let events = js_sys::Array::new();
    for kind in ["tokenRefreshed", "refreshFailed", "sessionEnded"] {
        let push = Function::new_with_args("e", "this.push(e)").bind0(&events);
        client.on(kind, push).unwrap();
    }
    events
}

fn event_types(events: &js_sys::Array) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let t = get(&e, "type").as_string().unwrap();
            match get(&e, "trigger").as_string() {
                Some(trigger) => format!("{t}:{trigger}"),
                None => t,
            }
        })
        .collect()
}

#[wasm_bindgen_test]
fn refresh_timing_and_openid_scope() {
    assert_eq!(refresh_delay_ms(300.0, 60.0), 240_000.0);
    assert_eq!(refresh_delay_ms(10.0, 60.0), 5_000.0, "at most half the lifetime early");
    assert_eq!(refresh_delay_ms(0.0, 60.0), 0.0);
    assert!(is_openid(Some("openid accounts")));
    assert!(!is_openid(Some("openidx accounts")));
    assert!(!is_openid(None));
}

#[wasm_bindgen_test]
async fn without_par_the_whole_request_goes_in_the_authorization_url() {
    let id = unique("nopar");
    let key = key(&id).await;
    let client = client_with(&key, &json!({})).await.unwrap();
    assert!(!client.uses_par());
    let (params, pending) = start(&client, &id).await;
    for (name, value) in [
        ("client_id", id.as_str()),
        ("response_type", "code"),
        ("redirect_uri", REDIRECT),
        ("scope", "openid accounts"),
        ("code_challenge_method", "S256"),
        ("dpop_jkt", key.thumbprint().as_str()),
        ("state", pending["state"].as_str().unwrap()),
        ("nonce", pending["nonce"].as_str().unwrap()),
    ] {
        assert_eq!(params.get(name).as_deref(), Some(value), "{name}");
    }
    assert_eq!(
        params.get("code_challenge").unwrap(),
        keybound_core::pkce::challenge_s256(pending["verifier"].as_str().unwrap()).unwrap()
    );
    assert_eq!(params.get("request_uri"), None);
    assert_eq!(pending["nonce"].as_str().unwrap().len(), 22, "a 128-bit nonce");

    // Without openid, no nonce.
    let plain = client_with(&key, &json!({"scope": "accounts"})).await.unwrap();
    let (params, pending) = start(&plain, &id).await;
    assert_eq!(params.get("nonce"), None);
    assert!(pending.get("nonce").is_none_or(Value::is_null));

    // With PAR in the metadata, PAR is used; metadata requiring PAR without the endpoint is refused.
    let with_par = client_with(&key, &json!({"metadata": metadata(true)})).await.unwrap();
    assert!(with_par.uses_par());
    let mut requires = metadata(false);
    requires["require_pushed_authorization_requests"] = json!(true);
    let err = client_with(&key, &json!({"metadata": requires})).await.err().unwrap();
    assert_keybound_error(&err, Some("invalid_request"), "metadata_invalid");
    // Bad options.
    for bad in [
        json!({"jwks": {"nope": 1}}),
        json!({"postLogoutRedirectUri": "/bye"}),
        json!({"autoRefresh": "yes"}),
        json!({"refreshMargin": -1}),
    ] {
        let err = client_with(&key, &bad).await.err().unwrap();
        assert!(is_keybound_error(&err), "{bad}");
        let reason = get(&err, "reason").as_string().unwrap();
        assert!(
            reason == "invalid_argument" || reason == "id_token_malformed",
            "{bad}: {reason}"
        );
    }
}

#[wasm_bindgen_test]
async fn the_id_token_is_validated_after_the_code_exchange() {
    let id = unique("oidc");
    let key = key(&id).await;
    let client = client_with(&key, &json!({"autoRefresh": false})).await.unwrap();
    let token_response = |id_token: Option<String>| {
        let mut body =
            json!({"access_token": "at-1", "token_type": "DPoP", "expires_in": 300, "refresh_token": "rt-1"});
        if let Some(t) = id_token {
            body["id_token"] = json!(t);
        }
        json!([{"status": 200, "body": body, "headers": {"content-type": "application/json"}}])
    };

    // The right nonce: the claims are there.
    let (_, pending) = start(&client, &id).await;
    stub_fetch(&json!({}));
    add_route(
        &format!("{AS}/token"),
        &token_response(Some(id_token_with(
            &id,
            &json!({ "nonce": pending["nonce"], "at_hash": left_half_hash(Alg::Es256, "at-1") }),
        ))),
    );
    let result = wait(client.complete_login(&callback(&pending))).await;
    let exchange = calls();
    restore_fetch();
    let result = result.unwrap();
    assert_eq!(
        get(&get(&result, "idTokenClaims"), "sub").as_string().as_deref(),
        Some("alice")
    );
    assert_eq!(
        get(&client.id_token_claims(), "sub").as_string().as_deref(),
        Some("alice")
    );
    assert!(client.id_token().is_some());
    assert!(
        exchange[0]["body"]
            .as_str()
            .unwrap()
            .contains("grant_type=authorization_code")
    );

    // Each rejection: the login fails with keybound-core's reason, no token is kept.
    let mut other_key = jwks();
    other_key["keys"][0]["kid"] = json!("another-kid");
    type MakeIdToken<'a> = Box<dyn Fn(&str) -> Option<String> + 'a>;
    let cases: Vec<(&str, MakeIdToken<'_>, Value, &str)> = vec![
        (
            "a nonce of another login",
            Box::new(|_| Some(id_token(&id, "another-nonce"))),
            json!({}),
            "id_token_nonce_mismatch",
        ),
        (
            "for another client",
            Box::new(|n| Some(id_token("another-client", n))),
            json!({}),
            "id_token_audience_mismatch",
        ),
        (
            "a tampered signature",
            Box::new(|n| {
                let t = id_token(&id, n);
                let (head, sig) = t.rsplit_once('.').unwrap();
                let flipped = if sig.starts_with('A') { "B" } else { "A" };
                Some(format!("{head}.{flipped}{}", &sig[1..]))
            }),
            json!({}),
            "id_token_bad_signature",
        ),
        (
            "a key the issuer does not have",
            Box::new(|n| Some(id_token(&id, n))),
            json!({"jwks": other_key}),
            "id_token_unknown_key",
        ),
        ("no ID token", Box::new(|_| None), json!({}), "id_token_missing"),
        (
            "the at_hash of another access token",
            Box::new(|n| {
                let at_hash = left_half_hash(Alg::Es256, "another-access-token");
                Some(id_token_with(&id, &json!({ "nonce": n, "at_hash": at_hash })))
            }),
            json!({}),
            "id_token_at_hash_mismatch",
        ),
    ];
    for (name, make, options, reason) in cases {
        let mut options = options;
        options["autoRefresh"] = json!(false);
        let client = client_with(&key, &options).await.unwrap();
        let (_, pending) = start(&client, &id).await;
        stub_fetch(&json!({}));
        add_route(
            &format!("{AS}/token"),
            &token_response(make(pending["nonce"].as_str().unwrap())),
        );
        let err = wait(client.complete_login(&callback(&pending))).await;
        restore_fetch();
        let err = err.err().unwrap_or_else(|| panic!("{name}: accepted"));
        assert_keybound_error(&err, Some("invalid_token"), reason);
        assert!(client.access_token().is_none(), "{name}");
    }
}

#[wasm_bindgen_test]
async fn a_refreshed_id_token_must_be_about_the_same_end_user() {
    let (id, _key, client, pending) = started("refresh-sub").await;
    let response = |access: &str, id_token: String| {
        json!({"status": 200, "headers": {"content-type": "application/json"}, "body": {
            "access_token": access, "token_type": "DPoP", "expires_in": 300, "refresh_token": "rt",
            "id_token": id_token,
        }})
    };
    // A refreshed ID token has no nonce (OpenID Connect Core §12.2), and its at_hash is the new
    // access token's.
    let renewed = |sub: &str, access: &str| {
        id_token_with(
            &id,
            &json!({ "sub": sub, "at_hash": left_half_hash(Alg::Es256, access) }),
        )
    };
    stub_fetch(&json!({}));
    add_route(
        &format!("{AS}/token"),
        &json!([
            response("at-1", id_token(&id, pending["nonce"].as_str().unwrap())),
            response("at-2", renewed("alice", "at-2")),
            response("at-3", renewed("mallory", "at-3")),
        ]),
    );
    let login = wait(client.complete_login(&callback(&pending))).await;
    let same_user = wait(client.refresh()).await;
    let other_user = wait(client.refresh()).await;
    restore_fetch();
    login.unwrap();
    same_user.unwrap();
    assert_eq!(client.access_token().as_deref(), Some("at-2"));
    let err = other_user.err().unwrap();
    assert_keybound_error(&err, Some("invalid_token"), "id_token_refresh_mismatch");
    assert_eq!(
        client.access_token().as_deref(),
        Some("at-2"),
        "the refused refresh's tokens are not kept"
    );
    assert_eq!(
        get(&client.id_token_claims(), "sub").as_string().as_deref(),
        Some("alice")
    );
}

#[wasm_bindgen_test]
async fn a_401_invalid_token_refreshes_once_and_retries_once_and_the_timer_refreshes() {
    let id = unique("refresh");
    let key = key(&id).await;
    let client = client_with(&key, &json!({"scope": "accounts", "autoRefresh": false}))
        .await
        .unwrap();
    let events = record_events(&client);
    let (_, pending) = start(&client, &id).await;
    let token = |n: u32, expires_in: u32| json!({"status": 200, "body": {"access_token": format!("at-{n}"), "token_type": "DPoP", "expires_in": expires_in, "refresh_token": format!("rt-{n}")}});
    let invalid_token = json!({"status": 401, "body": "", "headers": {"WWW-Authenticate": "DPoP algs=\"ES256\", error=\"invalid_token\""}});
    stub_fetch(&json!({}));
    add_route(
        &format!("{AS}/token"),
        &json!([token(1, 300), token(2, 300), token(3, 4)]),
    );
    add_route(API, &json!([invalid_token, {"status": 200, "body": "ok"}]));
    wait(client.complete_login(&callback(&pending))).await.unwrap();
    assert_eq!(client.access_token().as_deref(), Some("at-1"));

    // 401 invalid_token: one refresh (rt-1), one retry with the new token: 200.
    let response: web_sys::Response = wait(client.fetch(API, None)).await.unwrap().unchecked_into();
    assert_eq!(response.status(), 200);
    assert_eq!(client.access_token().as_deref(), Some("at-2"));
    let seen = calls();
    let api_calls: Vec<&Value> = seen.as_array().unwrap().iter().filter(|c| c["url"] == API).collect();
    assert_eq!(api_calls.len(), 2, "{seen}");
    assert_eq!(api_calls[0]["authorization"], "DPoP at-1");
    assert_eq!(api_calls[1]["authorization"], "DPoP at-2");
    assert!(
        seen[2]["body"].as_str().unwrap().contains("refresh_token=rt-1"),
        "{seen}"
    );
    assert_eq!(event_types(&events), ["tokenRefreshed:invalid_token"]);

    // A 401 invalid_token again after the refresh is returned as it is: no loop.
    add_route(API, &json!([invalid_token]));
    add_route(
        &format!("{AS}/token"),
        &json!([{"status": 400, "body": {"error": "invalid_grant"}}]),
    );
    let response: web_sys::Response = wait(client.fetch(API, None)).await.unwrap().unchecked_into();
    assert_eq!(response.status(), 401);
    assert_eq!(
        event_types(&events),
        ["tokenRefreshed:invalid_token", "refreshFailed:invalid_token"]
    );
    let failed = events.get(1);
    assert_keybound_error(&get(&failed, "error"), Some("invalid_grant"), "refresh_failed");
    assert_eq!(
        client.access_token().as_deref(),
        Some("at-2"),
        "kept after a failed refresh"
    );

    // Two refreshes asked at once share one request.
    add_route(&format!("{AS}/token"), &json!([token(3, 4)]));
    let before = calls().as_array().unwrap().len();
    let (a, b) = futures_join(wait(client.refresh()), wait(client.refresh())).await;
    assert_eq!(get(&a.unwrap(), "accessToken"), get(&b.unwrap(), "accessToken"));
    assert_eq!(calls().as_array().unwrap().len(), before + 1, "one token request");

    // The timer: at-3 expires in 4 s, so with autoRefresh on it is refreshed after 2 s.
    add_route(&format!("{AS}/token"), &json!([token(4, 300)]));
    client.set_auto_refresh(true);
    let deadline = js_sys::Date::now() + 10_000.0;
    while client.access_token().as_deref() != Some("at-4") && js_sys::Date::now() < deadline {
        keybound_browser::login::oidc::sleep(200.0).await;
    }
    assert_eq!(client.access_token().as_deref(), Some("at-4"));
    assert_eq!(
        event_types(&events).last().map(String::as_str),
        Some("tokenRefreshed:timer")
    );
    restore_fetch();

    // Logout: tokens and timer gone, sessionEnded, the end-session URL.
    let url = client.logout(None).unwrap().unwrap();
    assert!(client.access_token().is_none());
    assert_eq!(event_types(&events).last().map(String::as_str), Some("sessionEnded"));
    let url = web_sys::Url::new(&url).unwrap();
    assert_eq!(url.pathname(), "/logout");
    assert_eq!(url.search_params().get("client_id"), Some(id.clone()));
    assert_eq!(
        url.search_params().get("post_logout_redirect_uri").as_deref(),
        Some("https://app.example/bye")
    );
}

#[wasm_bindgen_test]
async fn logout_builds_the_end_session_url_and_events_can_be_removed() {
    let (id, key, client, pending) = started("logout").await;
    stub_fetch(&json!({}));
    add_route(
        &format!("{AS}/token"),
        &json!([{"status": 200, "body": {"access_token": "at", "token_type": "DPoP", "id_token": id_token(&id, pending["nonce"].as_str().unwrap())}}]),
    );
    wait(client.complete_login(&callback(&pending))).await.unwrap();
    restore_fetch();
    let hint = client.id_token().unwrap();

    let events = js_sys::Array::new();
    let listener = Function::new_with_args("e", "this.push(e)").bind0(&events);
    client.on("sessionEnded", listener.clone()).unwrap();
    let err = client.on("loggedOut", listener.clone()).err().unwrap();
    assert_keybound_error(&err, Some("invalid_request"), "invalid_argument");
    let options = js(&json!({"postLogoutRedirectUri": "https://app.example/other", "state": "s1"}));
    let url = client.logout(Some(options.unchecked_into())).unwrap().unwrap();
    let url = web_sys::Url::new(&url).unwrap();
    let params = url.search_params();
    assert_eq!(params.get("id_token_hint"), Some(hint));
    assert_eq!(
        params.get("post_logout_redirect_uri").as_deref(),
        Some("https://app.example/other")
    );
    assert_eq!(params.get("state").as_deref(), Some("s1"));
    assert_eq!(events.length(), 1);
    assert!(client.id_token().is_none());

    client.off("sessionEnded", listener);
    let bad = js(&json!({"postLogoutRedirectUri": "not a url"}));
    let err = client.logout(Some(bad.unchecked_into())).err().unwrap();
    assert_keybound_error(&err, Some("invalid_request"), "invalid_argument");
    assert_eq!(events.length(), 1, "removed listeners are not called");

    // A server without end_session_endpoint: nothing to navigate to.
    let mut m = metadata(false);
    m.as_object_mut().unwrap().remove("end_session_endpoint");
    let plain = client_with(&key, &json!({"metadata": m})).await.unwrap();
    assert!(plain.logout(None).unwrap().is_none());
}

/// Awaits two futures together.
async fn futures_join<A: std::future::Future, B: std::future::Future>(a: A, b: B) -> (A::Output, B::Output) {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none()
            && let std::task::Poll::Ready(v) = a.as_mut().poll(cx)
        {
            ra = Some(v);
        }
        if rb.is_none()
            && let std::task::Poll::Ready(v) = b.as_mut().poll(cx)
        {
            rb = Some(v);
        }
        if ra.is_some() && rb.is_some() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    (ra.unwrap(), rb.unwrap())
}

/// RFC 9396: `authorizationDetails` go with the request (in the URL without PAR, in the pushed
/// form with it) as the `authorization_details` JSON, and the granted ones come back in the
/// token result; anything but an array of typed objects is refused before any request.
#[wasm_bindgen_test]
async fn authorization_details_go_with_the_request_and_come_back_with_the_token() {
    let payment = json!([{"type": "payment_initiation", "instructedAmount": {"currency": "EUR", "amount": "42.00"},
        "creditorName": "Café Example"}]);
    let id = unique("rar");
    let key = key(&id).await;
    let client = client_with(&key, &json!({"scope": "accounts", "autoRefresh": false})).await.unwrap();
    let options = js(&json!({"authorizationDetails": payment}));
    let url = wait(client.start_login(Some(options.unchecked_into()))).await.unwrap().as_string().unwrap();
    let params = web_sys::Url::new(&url).unwrap().search_params();
    let sent: Value = serde_json::from_str(&params.get("authorization_details").unwrap()).unwrap();
    assert_eq!(sent, payment);
    let pending: Value = serde_json::from_str(&session_get(&pending_key(&id)).unwrap().unwrap()).unwrap();
    stub_fetch(&json!({}));
    add_route(
        &format!("{AS}/token"),
        &json!([{"status": 200, "body": {"access_token": "at", "token_type": "DPoP", "authorization_details": payment}}]),
    );
    let result = wait(client.complete_login(&callback(&pending))).await.unwrap();
    restore_fetch();
    let granted: Value =
        serde_json::from_str(&js_sys::JSON::stringify(&get(&result, "authorizationDetails")).unwrap().as_string().unwrap())
            .unwrap();
    assert_eq!(granted, payment);

    // With PAR: in the pushed form.
    let par = client_with(&key, &json!({"scope": "accounts", "metadata": metadata(true)})).await.unwrap();
    stub_fetch(&json!({}));
    add_route(
        &format!("{AS}/par"),
        &json!([{"status": 201, "body": {"request_uri": "urn:ietf:params:oauth:request_uri:x", "expires_in": 60}}]),
    );
    let options = js(&json!({"authorizationDetails": payment}));
    wait(par.start_login(Some(options.unchecked_into()))).await.unwrap();
    let pushed = calls()[0]["body"].as_str().unwrap().to_owned();
    restore_fetch();
    let form: std::collections::HashMap<String, String> = web_sys::UrlSearchParams::new_with_str(&pushed)
        .map(|p| {
            ["authorization_details", "client_id"]
                .iter()
                .filter_map(|k| p.get(k).map(|v| ((*k).to_owned(), v)))
                .collect()
        })
        .unwrap();
    assert_eq!(serde_json::from_str::<Value>(&form["authorization_details"]).unwrap(), payment);

    for bad in [json!({"type": "x"}), json!([]), json!([{"amount": 1}]), json!(["x"]), json!([[]])] {
        let options = js(&json!({"authorizationDetails": bad}));
        let err = wait(client.start_login(Some(options.unchecked_into()))).await.unwrap_err();
        assert_keybound_error(&err, Some("invalid_request"), "invalid_argument");
    }
}
