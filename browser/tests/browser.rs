//! keybound-browser in a real headless Chromium (`cargo xtask test` runs these through
//! wasm-bindgen-test-runner and chromedriver; the fetch tests talk to the xtask's local test server,
//! `examples/dpop_test_server.rs`, whose URL is baked in at compile time as
//! `KEYBOUND_TEST_SERVER`).
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
use keybound_browser::error::is_keybound_error;
use keybound_browser::{DpopKey, open_key};

mod common;
use keybound_core::b64;
use keybound_core::dpop::{NonceCheck, ProofPolicy, ProofTarget, VerifiedProof, access_token_hash, verify_proof};
use keybound_core::htu::Htu;
use keybound_core::jws::RustCrypto;
use wasm_bindgen::prelude::*;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen(module = "/tests/helpers.js")]
extern "C" {
    #[wasm_bindgen(js_name = newInstance)]
    fn new_instance() -> Promise;
    fn hide(target: &JsValue, name: &str) -> js_sys::Function;
    #[wasm_bindgen(js_name = cryptoObject)]
    fn crypto_object() -> JsValue;
    #[wasm_bindgen(js_name = storedRecord)]
    fn stored_record(client_id: &str) -> Promise;
    #[wasm_bindgen(js_name = storeRecord)]
    fn store_record(client_id: &str, value: &JsValue) -> Promise;
    #[wasm_bindgen(js_name = tryExport)]
    fn try_export(key: &JsValue) -> Promise;
    #[wasm_bindgen(js_name = getJson)]
    fn get_json(url: &str) -> Promise;
    #[wasm_bindgen(js_name = exportJwk)]
    fn export_jwk(key: &JsValue) -> Promise;
    #[wasm_bindgen(js_name = fetchPlain)]
    fn fetch_plain(url: &str) -> Promise;
}

// IndexedDB as the key store uses it (src/dpop.js).
#[wasm_bindgen(module = "/src/dpop.js")]
extern "C" {
    #[wasm_bindgen(js_name = idbOpen)]
    fn idb_open() -> Promise;
    #[wasm_bindgen(js_name = idbGet)]
    fn idb_get(db: &JsValue, id: &str) -> Promise;
    #[wasm_bindgen(js_name = idbAddIfAbsent)]
    fn idb_add_if_absent(db: &JsValue, id: &str, value: &JsValue) -> Promise;
}

// ---------- helpers ----------

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

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", (js_sys::Math::random() * 1e15) as u64)
}

fn now() -> u64 {
    (js_sys::Date::now() / 1000.0) as u64
}

async fn open(client_id: &str) -> DpopKey {
    open_with(obj(&[("clientId", s(client_id))])).await.unwrap()
}

async fn open_with(options: JsValue) -> Result<DpopKey, JsValue> {
    common::open_key(&options).await
}

async fn proof(key: &DpopKey, entries: &[(&str, JsValue)]) -> Result<String, JsValue> {
    wait(key.create_proof(&obj(entries)))
        .await
        .map(|v| v.as_string().unwrap())
}

/// Checks that `err` is a KeyboundError with this code and reason.
fn assert_keybound_error(err: &JsValue, code: Option<&str>, reason: &str) {
    assert!(is_keybound_error(err), "not a KeyboundError: {err:?}");
    assert!(err.is_instance_of::<js_sys::Error>());
    assert_eq!(get(err, "name").as_string().as_deref(), Some("KeyboundError"));
    assert_eq!(get(err, "code").as_string().as_deref(), code, "{err:?}");
    let got = get(err, "reason").as_string().unwrap();
    assert!(got.starts_with(reason), "reason {got:?}, wanted {reason:?}");
}

/// Verifies a proof with keybound-core as a server would, at `now`.
fn verify(proof: &str, method: &str, url: &str, token: Option<&str>, now: u64) -> VerifiedProof {
    let htu = Htu::parse(url).unwrap();
    let target = ProofTarget {
        method,
        htu: &htu,
        access_token: token,
    };
    verify_proof(
        proof,
        &target,
        &ProofPolicy::default(),
        NonceCheck::Off,
        now,
        &RustCrypto,
    )
    .unwrap()
}

fn json_part(jws: &str, index: usize) -> serde_json::Value {
    let part = jws.split('.').nth(index).unwrap();
    serde_json::from_slice(&b64::decode(part).unwrap()).unwrap()
}

fn server() -> &'static str {
    option_env!("KEYBOUND_TEST_SERVER")
        .expect("KEYBOUND_TEST_SERVER is not set: run these tests through `cargo xtask test`")
}

async fn fetch(key: &DpopKey, url: &str, init: Option<JsValue>, token: Option<&str>) -> web_sys::Response {
    let init = init.map(|i| i.unchecked_into::<web_sys::RequestInit>());
    wait(key.fetch(url, init, token.map(String::from)))
        .await
        .unwrap()
        .unchecked_into()
}

async fn count(id: &str) -> u64 {
    let v = wait(get_json(&format!("{}/count?id={id}", server()))).await.unwrap();
    get(&v, "count").as_f64().unwrap() as u64
}

async fn body(response: &web_sys::Response) -> serde_json::Value {
    let text = wait(response.text().unwrap()).await.unwrap().as_string().unwrap();
    serde_json::from_str(&text).unwrap()
}

// ---------- keys ----------

#[wasm_bindgen_test]
async fn key_persists_across_a_reload_in_a_new_module_instance() {
    let id = unique("reload");
    let first = open(&id).await;
    assert_eq!(first.storage(), "indexeddb");
    assert_eq!(first.fallback_reason(), None);
    assert!(!first.software());
    let jkt = first.thumbprint();
    drop(first);

    // A new JS module and wasm instance, same origin and IndexedDB: the same key.
    let glue = wait(new_instance()).await.unwrap();
    let reloaded = open_key(&glue, &obj(&[("clientId", s(&id))])).await.unwrap();
    assert_eq!(reloaded.thumbprint(), jkt);
    assert_eq!(reloaded.storage(), "indexeddb");

    // And here again.
    assert_eq!(open(&id).await.thumbprint(), jkt);
    // Another client id in the same origin has its own key.
    assert_ne!(open(&unique("other")).await.thumbprint(), jkt);
}

#[wasm_bindgen_test]
async fn stored_private_key_is_non_extractable_and_sign_only() {
    let id = unique("extract");
    let key = open(&id).await;
    let record = wait(stored_record(&id)).await.unwrap();
    let private: web_sys::CryptoKey = get(&record, "privateKey").dyn_into().unwrap();
    assert!(!private.extractable());
    assert_eq!(private.type_(), "private");
    let usages: Vec<String> = private.usages().iter().map(|u| u.as_string().unwrap()).collect();
    assert_eq!(usages, ["sign"]);
    // exportKey is rejected in every format, by the browser itself.
    let names = wait(try_export(&private)).await.unwrap();
    let names: Vec<String> = js_sys::Array::from(&names)
        .iter()
        .map(|n| n.as_string().unwrap())
        .collect();
    assert_eq!(names.len(), 4);
    assert!(
        names
            .iter()
            .all(|n| n == "InvalidAccessError" || n == "NotSupportedError"),
        "{names:?}"
    );
    // The record holds only the two CryptoKeys; the public one exports to the key's JWK.
    let fields: Vec<String> = js_sys::Object::keys(record.unchecked_ref::<js_sys::Object>())
        .iter()
        .map(|k| k.as_string().unwrap())
        .collect();
    assert_eq!(fields, ["privateKey", "publicKey"]);
    let stored_public = wait(export_jwk(&get(&record, "publicKey"))).await.unwrap();
    let jwk: serde_json::Value = serde_json::from_str(&key.public_jwk()).unwrap();
    assert_eq!(jwk["x"].as_str(), get(&stored_public, "x").as_string().as_deref());
    assert_eq!(jwk["y"].as_str(), get(&stored_public, "y").as_string().as_deref());
    assert!(jwk.get("d").is_none());
}

#[wasm_bindgen_test]
async fn two_tabs_opening_at_once_share_one_key() {
    let id = unique("tabs");
    // Two concurrent opens, each with its own IndexedDB connection, as two tabs would: both find no
    // key, both generate one, and only one `add` commits.
    let (a, b) = futures_join(open(&id), open(&id)).await;
    assert_eq!(a.thumbprint(), b.thumbprint());
    assert_eq!(a.storage(), "indexeddb");
    assert_eq!(b.storage(), "indexeddb");
    assert_eq!(open(&id).await.thumbprint(), a.thumbprint());
    // Both sign proofs the server binds to the same jkt.
    let url = "https://api.example.com/x";
    for key in [&a, &b] {
        let p = proof(key, &[("method", s("GET")), ("url", s(url))]).await.unwrap();
        assert_eq!(verify(&p, "GET", url, None, now()).jkt().to_string(), a.thumbprint());
    }
}

#[wasm_bindgen_test]
async fn creating_a_key_record_never_overwrites_one_that_exists() {
    // The primitive behind the multi-tab guarantee, deterministically: the second writer loses and
    // the first record stays.
    let db = wait(idb_open()).await.unwrap();
    let id = unique("add");
    let first = obj(&[("x", s("first"))]);
    let second = obj(&[("x", s("second"))]);
    assert_eq!(wait(idb_add_if_absent(&db, &id, &first)).await.unwrap(), true);
    assert_eq!(wait(idb_add_if_absent(&db, &id, &second)).await.unwrap(), false);
    let stored = wait(idb_get(&db, &id)).await.unwrap();
    assert_eq!(get(&stored, "x").as_string().as_deref(), Some("first"));
    // A value IndexedDB cannot store is an error, not a silent loss.
    let function = js_sys::Function::new_no_args("return 1");
    assert!(wait(idb_add_if_absent(&db, &unique("clone"), &function)).await.is_err());
}

/// Polls two futures to completion concurrently (no executor crate needed).
async fn futures_join<A: std::future::Future, B: std::future::Future>(a: A, b: B) -> (A::Output, B::Output) {
    use std::pin::pin;
    use std::task::Poll;
    let mut a = pin!(a);
    let mut b = pin!(b);
    let mut out_a = None;
    let mut out_b = None;
    std::future::poll_fn(|cx| {
        if out_a.is_none()
            && let Poll::Ready(v) = a.as_mut().poll(cx)
        {
            out_a = Some(v);
        }
        if out_b.is_none()
            && let Poll::Ready(v) = b.as_mut().poll(cx)
        {
            out_b = Some(v);
        }
        if out_a.is_some() && out_b.is_some() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    (out_a.unwrap(), out_b.unwrap())
}

#[wasm_bindgen_test]
async fn without_indexeddb_the_key_is_memory_only_and_the_app_is_told() {
    let global: JsValue = js_sys::global().into();
    let restore = hide(&global, "indexedDB");
    let result = open_with(obj(&[("clientId", s(&unique("noidb")))])).await;
    restore.call0(&JsValue::UNDEFINED).unwrap();
    let key = result.unwrap();
    assert_eq!(key.storage(), "memory");
    assert!(key.fallback_reason().unwrap().starts_with("indexeddb_unavailable"));
    assert!(!key.software());
    // It still makes good proofs.
    let url = "https://api.example.com/";
    let p = proof(&key, &[("method", s("GET")), ("url", s(url))]).await.unwrap();
    assert_eq!(verify(&p, "GET", url, None, now()).jkt().to_string(), key.thumbprint());
}

#[wasm_bindgen_test]
async fn memory_storage_on_request_and_invalid_stored_records_fall_back() {
    let id = unique("mem");
    let a = open_with(obj(&[("clientId", s(&id)), ("storage", s("memory"))]))
        .await
        .unwrap();
    assert_eq!(a.storage(), "memory");
    assert_eq!(a.fallback_reason(), None);
    // Not stored: the next open makes another key.
    assert!(wait(stored_record(&id)).await.unwrap().is_undefined());
    let b = open(&id).await;
    assert_ne!(a.thumbprint(), b.thumbprint());

    // A record that is not a usable key is left alone, and reported.
    let bad = unique("corrupt");
    wait(store_record(&bad, &obj(&[("x", s("AAAA"))]))).await.unwrap();
    let key = open(&bad).await;
    assert_eq!(key.storage(), "memory");
    assert_eq!(key.fallback_reason().as_deref(), Some("stored_key_invalid"));
    assert_eq!(
        get(&wait(stored_record(&bad)).await.unwrap(), "x")
            .as_string()
            .as_deref(),
        Some("AAAA")
    );
    // wipe() clears it, and the next open stores a good key again.
    wait(key.wipe()).await.unwrap();
    assert!(wait(stored_record(&bad)).await.unwrap().is_undefined());
    assert_eq!(open(&bad).await.storage(), "indexeddb");
}

#[cfg(feature = "software-key")]
#[wasm_bindgen_test]
async fn without_webcrypto_only_an_opted_in_software_key_is_used() {
    let crypto = crypto_object();
    let restore = hide(&crypto, "subtle");
    let refused = open_with(obj(&[("clientId", s(&unique("nosubtle")))])).await;
    let software = open_with(obj(&[
        ("clientId", s(&unique("nosubtle"))),
        ("softwareKey", s("if-needed")),
    ]))
    .await;
    restore.call0(&JsValue::UNDEFINED).unwrap();
    assert_keybound_error(&refused.err().unwrap(), None, "webcrypto_unavailable");
    let key = software.unwrap();
    assert!(key.software());
    assert_eq!(key.storage(), "memory");
    assert_eq!(key.fallback_reason().as_deref(), Some("webcrypto_unavailable"));
    let url = "https://api.example.com/r";
    let p = proof(&key, &[("method", s("PUT")), ("url", s(url)), ("accessToken", s("t"))])
        .await
        .unwrap();
    assert_eq!(
        verify(&p, "PUT", url, Some("t"), now()).jkt().to_string(),
        key.thumbprint()
    );

    // With WebCrypto present, "if-needed" still uses WebCrypto; "always" forces software.
    let webcrypto = open_with(obj(&[("clientId", s(&unique("sw"))), ("softwareKey", s("if-needed"))]))
        .await
        .unwrap();
    assert!(!webcrypto.software());
    let forced = open_with(obj(&[("clientId", s(&unique("sw"))), ("softwareKey", s("always"))]))
        .await
        .unwrap();
    assert!(forced.software());
    assert_eq!(forced.fallback_reason(), None);
}

#[cfg(not(feature = "software-key"))]
#[wasm_bindgen_test]
async fn without_the_software_key_feature_there_is_no_software_key() {
    let crypto = crypto_object();
    let restore = hide(&crypto, "subtle");
    let refused = open_with(obj(&[("clientId", s(&unique("nosubtle")))])).await;
    let if_needed = open_with(obj(&[
        ("clientId", s(&unique("nosubtle"))),
        ("softwareKey", s("if-needed")),
    ]))
    .await;
    restore.call0(&JsValue::UNDEFINED).unwrap();
    assert_keybound_error(&refused.err().unwrap(), None, "webcrypto_unavailable");
    assert_keybound_error(&if_needed.err().unwrap(), None, "software_key_not_built");
    let always = open_with(obj(&[("clientId", s(&unique("sw"))), ("softwareKey", s("always"))])).await;
    assert_keybound_error(&always.err().unwrap(), None, "software_key_not_built");
    // With WebCrypto present, "if-needed" uses WebCrypto.
    let webcrypto = open_with(obj(&[("clientId", s(&unique("sw"))), ("softwareKey", s("if-needed"))]))
        .await
        .unwrap();
    assert!(!webcrypto.software());
}

#[wasm_bindgen_test]
async fn bad_open_options_are_refused_with_invalid_request() {
    for options in [
        JsValue::UNDEFINED,
        s("client"),
        obj(&[]),
        obj(&[("clientId", s(""))]),
        obj(&[("clientId", s(&"c".repeat(257)))]),
        obj(&[("clientId", JsValue::from_f64(7.0))]),
        obj(&[("clientId", s("c")), ("storage", s("cookies"))]),
        obj(&[("clientId", s("c")), ("softwareKey", s("yes"))]),
    ] {
        let err = open_with(options).await.err().unwrap();
        assert_keybound_error(&err, Some("invalid_request"), "invalid_argument");
    }
}

#[wasm_bindgen_test]
async fn wipe_forgets_the_key_everywhere() {
    let id = unique("wipe");
    let key = open(&id).await;
    let jkt = key.thumbprint();
    wait(key.wipe()).await.unwrap();
    assert!(wait(stored_record(&id)).await.unwrap().is_undefined());
    let err = proof(&key, &[("method", s("GET")), ("url", s("https://a.example/"))])
        .await
        .unwrap_err();
    assert_keybound_error(&err, None, "key_wiped");
    let fresh = open(&id).await;
    assert_ne!(fresh.thumbprint(), jkt);
}

// ---------- proofs ----------

#[wasm_bindgen_test]
async fn proofs_carry_the_rfc_9449_claims_and_verify_in_keybound_core() {
    let key = open(&unique("proof")).await;
    let url = "https://API.Example.com:443/accounts/./1?page=2#frag";
    let before = now();
    let p = proof(
        &key,
        &[
            ("method", s("POST")),
            ("url", s(url)),
            ("accessToken", s("the-token")),
            ("nonce", s("server-nonce")),
        ],
    )
    .await
    .unwrap();
    let header = json_part(&p, 0);
    assert_eq!(header["typ"], "dpop+jwt");
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["jwk"]["kty"], "EC");
    assert!(header["jwk"].get("d").is_none());
    let claims = json_part(&p, 1);
    assert_eq!(claims["htm"], "POST");
    assert_eq!(claims["htu"], "https://API.Example.com:443/accounts/./1");
    assert_eq!(claims["nonce"], "server-nonce");
    assert_eq!(claims["ath"].as_str().unwrap(), access_token_hash("the-token"));
    let jti = b64::decode(claims["jti"].as_str().unwrap()).unwrap();
    assert!(jti.len() >= 16, "jti has {} bytes", jti.len());
    let iat = claims["iat"].as_u64().unwrap();
    assert!(iat >= before && iat <= now() + 1);

    // keybound-core verifies it against the normalised request URI, with the token.
    let verified = verify(
        &p,
        "POST",
        "https://api.example.com/accounts/1",
        Some("the-token"),
        now(),
    );
    assert_eq!(verified.jkt().to_string(), key.thumbprint());
    // ... and refuses it for another method, URI or token.
    let htu = Htu::parse("https://api.example.com/accounts/2").unwrap();
    let other = ProofTarget {
        method: "POST",
        htu: &htu,
        access_token: Some("the-token"),
    };
    let err = verify_proof(&p, &other, &ProofPolicy::default(), NonceCheck::Off, now(), &RustCrypto).unwrap_err();
    assert_eq!(err.code().unwrap().as_str(), "invalid_dpop_proof");

    // Every proof has a fresh jti.
    let q = proof(&key, &[("method", s("POST")), ("url", s(url))]).await.unwrap();
    assert_ne!(json_part(&q, 1)["jti"], claims["jti"]);
    assert!(json_part(&q, 1).get("ath").is_none());
}

#[wasm_bindgen_test]
async fn bad_proof_requests_get_rfc_codes() {
    let key = open(&unique("badproof")).await;
    type Case<'a> = (&'a [(&'a str, JsValue)], &'a str, &'a str);
    let cases: [Case<'_>; 6] = [
        (
            &[("method", s("GET")), ("url", s("/relative"))],
            "invalid_dpop_proof",
            "proof_invalid_htu",
        ),
        (
            &[("method", s("GET")), ("url", s("ftp://x.example/"))],
            "invalid_dpop_proof",
            "proof_invalid_htu",
        ),
        (
            &[("method", s("G T")), ("url", s("https://x.example/"))],
            "invalid_request",
            "invalid_argument",
        ),
        (
            &[("url", s("https://x.example/"))],
            "invalid_request",
            "invalid_argument",
        ),
        (&[("method", s("GET"))], "invalid_request", "invalid_argument"),
        (
            &[
                ("method", s("GET")),
                ("url", s("https://x.example/")),
                ("accessToken", s("")),
            ],
            "invalid_request",
            "invalid_argument",
        ),
    ];
    for (entries, code, reason) in cases {
        let err = proof(&key, entries).await.unwrap_err();
        assert_keybound_error(&err, Some(code), reason);
    }
    let err = wait(key.create_proof(&JsValue::NULL)).await.unwrap_err();
    assert_keybound_error(&err, Some("invalid_request"), "invalid_argument");
}

#[wasm_bindgen_test]
async fn clock_offset_moves_iat() {
    let key = open(&unique("clock")).await;
    key.set_clock_offset(-3600.0);
    let url = "https://api.example.com/";
    let p = proof(&key, &[("method", s("GET")), ("url", s(url))]).await.unwrap();
    let iat = json_part(&p, 1)["iat"].as_u64().unwrap();
    assert!(iat.abs_diff(now() - 3600) <= 1, "iat {iat}");
    // A server whose clock is an hour behind accepts it; one on time does not.
    verify(&p, "GET", url, None, now() - 3600);
    let htu = Htu::parse(url).unwrap();
    let target = ProofTarget {
        method: "GET",
        htu: &htu,
        access_token: None,
    };
    let err = verify_proof(
        &p,
        &target,
        &ProofPolicy::default(),
        NonceCheck::Off,
        now(),
        &RustCrypto,
    )
    .unwrap_err();
    assert_eq!(err.reason(), "proof_iat_out_of_window");
}

// ---------- fetch, against the local test server ----------

#[wasm_bindgen_test]
async fn fetch_learns_the_nonce_and_retries_once_at_a_resource_server() {
    let key = open(&unique("rsnonce")).await;
    let id = unique("rs");
    let url = format!("{}/api/items?id={id}&nonce=1", server());
    assert_eq!(key.nonce_for(&url), None);
    let response = fetch(&key, &url, None, Some("at-123")).await;
    assert_eq!(response.status(), 200);
    // 401 use_dpop_nonce, then one retry with the nonce.
    assert_eq!(count(&id).await, 2);
    let verified = body(&response).await;
    assert_eq!(verified["jkt"], key.thumbprint());
    assert_eq!(verified["htm"], "GET");
    assert_eq!(verified["ath"].as_str().unwrap(), access_token_hash("at-123"));
    let nonce = key.nonce_for(&url).unwrap();
    assert_eq!(verified["nonce"], nonce.as_str());

    // The nonce is cached for the origin: the next request needs no retry.
    let again = fetch(
        &key,
        &format!("{}/api/other?id={id}&nonce=1", server()),
        None,
        Some("at-123"),
    )
    .await;
    assert_eq!(again.status(), 200);
    assert_eq!(count(&id).await, 3);
    // Only for that origin.
    let other_origin = server().replace("127.0.0.1", "localhost");
    assert_eq!(key.nonce_for(&other_origin), None);
}

#[wasm_bindgen_test]
async fn fetch_caches_nonces_from_successful_responses_per_origin() {
    let key = open(&unique("success")).await;
    let id = unique("offer");
    // A 200 that offers a nonce: remembered for that origin...
    let offered = format!("{}/api?id={id}&nonce=offer", server());
    assert_eq!(fetch(&key, &offered, None, None).await.status(), 200);
    let nonce = key.nonce_for(&offered).unwrap();
    // ... so a route of the same origin that requires one is satisfied at the first try.
    let required = format!("{}/api/strict?id={id}&nonce=1", server());
    let response = fetch(&key, &required, None, None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(body(&response).await["nonce"], nonce.as_str());
    assert_eq!(count(&id).await, 2);

    // Another origin (same server, other host name) never gets it: it needs its own retry.
    let other = format!("{}/api?id={id}&nonce=1", server().replace("127.0.0.1", "localhost"));
    assert_eq!(key.nonce_for(&other), None);
    let response = fetch(&key, &other, None, None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(count(&id).await, 4);
    assert!(key.nonce_for(&other).is_some());
}

#[wasm_bindgen_test]
async fn fetch_retries_once_on_400_use_dpop_nonce_at_an_authorization_server() {
    let key = open(&unique("asnonce")).await;
    let id = unique("as");
    let url = format!("{}/token?id={id}&nonce=1&as=1", server());
    let init = obj(&[
        ("method", s("POST")),
        ("body", s("grant_type=authorization_code&code=abc")),
        (
            "headers",
            obj(&[("Content-Type", s("application/x-www-form-urlencoded"))]),
        ),
    ]);
    let response = fetch(&key, &url, Some(init), None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(count(&id).await, 2);
    let verified = body(&response).await;
    assert_eq!(verified["htm"], "POST");
    assert_eq!(verified["jkt"], key.thumbprint());
}

#[wasm_bindgen_test]
async fn fetch_never_loops_on_a_server_that_always_asks_for_a_nonce() {
    let key = open(&unique("loop")).await;
    for (mode, status) in [("", 401), ("&as=1", 400)] {
        let id = unique("always");
        let url = format!("{}/api?id={id}&nonce=always{mode}", server());
        let response = fetch(&key, &url, None, None).await;
        assert_eq!(response.status(), status);
        assert_eq!(count(&id).await, 2, "exactly one retry ({mode})");
        assert_eq!(body(&response).await["error"], "use_dpop_nonce");
        // The nonce of the last answer is remembered anyway.
        assert!(key.nonce_for(&url).unwrap().starts_with("never-good-"));
    }
}

#[wasm_bindgen_test]
async fn fetch_does_not_retry_when_the_server_repeats_the_nonce_it_was_sent() {
    let key = open(&unique("fixed")).await;
    let id = unique("fixed");
    let url = format!("{}/api?id={id}&nonce=fixed", server());
    // No nonce yet: the answer brings one, so one retry.
    assert_eq!(fetch(&key, &url, None, None).await.status(), 401);
    assert_eq!(count(&id).await, 2);
    // Now the request carries that nonce; the same nonce back means a retry cannot help.
    assert_eq!(fetch(&key, &url, None, None).await.status(), 401);
    assert_eq!(count(&id).await, 3);
    assert_eq!(key.nonce_for(&url).as_deref(), Some("the-same-nonce"));
}

#[wasm_bindgen_test]
async fn fetch_does_not_retry_other_errors() {
    let key = open(&unique("noretry")).await;
    let id = unique("plain");
    // The server's clock is an hour behind: it refuses the proof (iat too new) with
    // invalid_dpop_proof, which a retry cannot fix.
    let url = format!("{}/api?id={id}&skew=-3600", server());
    let response = fetch(&key, &url, None, None).await;
    assert_eq!(response.status(), 401);
    assert_eq!(count(&id).await, 1);
    let challenge = response.headers().get("WWW-Authenticate").unwrap().unwrap();
    assert!(challenge.contains("invalid_dpop_proof"), "{challenge}");
}

#[wasm_bindgen_test]
async fn fetch_learns_the_clock_offset_from_the_server_date() {
    let key = open(&unique("skew")).await;
    let id = unique("skew");
    let url = format!("{}/api?id={id}&skew=-3600", server());
    // First request: our iat is an hour in the server's future; its Date teaches us the offset.
    let first = fetch(&key, &url, None, None).await;
    assert_eq!(first.status(), 401);
    let offset = key.clock_offset();
    assert!((offset + 3600.0).abs() < 3.0, "offset {offset}");
    // Now the server accepts our proofs.
    let second = fetch(&key, &url, None, None).await;
    assert_eq!(second.status(), 200);
    let verified = body(&second).await;
    let iat = verified["iat"].as_i64().unwrap();
    let server_now = verified["server_now"].as_i64().unwrap();
    assert!((iat - server_now).abs() <= 2, "iat {iat} server {server_now}");

    // One offset, from the latest `Date`: a server on time refuses the hour-old iat once, and
    // brings the offset back to 0 (clocks within the tolerance agree).
    let on_time = format!("{}/api?id={id}", server());
    assert_eq!(fetch(&key, &on_time, None, None).await.status(), 401);
    assert_eq!(key.clock_offset(), 0.0);
    assert_eq!(fetch(&key, &on_time, None, None).await.status(), 200);
    assert_eq!(count(&id).await, 4);
}

#[wasm_bindgen_test]
async fn observe_learns_from_responses_fetched_elsewhere() {
    let key = open(&unique("observe")).await;
    let url = format!("{}/api?id={}&nonce=1&skew=600", server(), unique("obs"));
    let response: web_sys::Response = wait(fetch_plain(&url)).await.unwrap().unchecked_into();
    assert_eq!(response.status(), 401);
    key.observe(&response);
    assert!(key.nonce_for(&url).is_some());
    assert!((key.clock_offset() - 600.0).abs() < 3.0);
}
