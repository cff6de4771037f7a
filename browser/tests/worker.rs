//! keybound-browser inside a dedicated Web Worker of headless Chromium: the module uses the
//! global scope's `crypto.subtle`, `indexedDB` and `fetch`, which workers have too.
#![cfg(target_arch = "wasm32")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::option_env_unwrap,
    reason = "test code; the server URL is missing only outside `cargo xtask test`"
)]

use js_sys::{Object, Reflect};
use keybound_browser::DpopKey;
use keybound_core::dpop::{NonceCheck, ProofPolicy, ProofTarget, verify_proof};
use keybound_core::htu::Htu;
use keybound_core::jws::RustCrypto;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_dedicated_worker);

mod common;

/// Opens a key (see `common`); panics if it cannot.
async fn open_key(options: &JsValue) -> DpopKey {
    common::open_key(options).await.unwrap()
}

fn options(entries: &[(&str, &str)]) -> JsValue {
    let o = Object::new();
    for (k, v) in entries {
        Reflect::set(&o, &JsValue::from_str(k), &JsValue::from_str(v)).unwrap();
    }
    o.into()
}

async fn open(client_id: &str) -> DpopKey {
    open_key(&options(&[("clientId", client_id)])).await
}

#[wasm_bindgen_test]
async fn in_a_worker_keys_persist_and_proofs_verify() {
    assert!(
        js_sys::global().is_instance_of::<js_sys::Object>()
            && Reflect::has(&js_sys::global(), &"importScripts".into()).unwrap(),
        "not running in a worker"
    );
    let id = format!("worker-{}", (js_sys::Math::random() * 1e15) as u64);
    let key = open(&id).await;
    assert_eq!(key.storage(), "indexeddb");
    assert_eq!(open(&id).await.thumbprint(), key.thumbprint());

    let url = "https://api.example.com/items";
    let proof = JsFuture::from(key.create_proof(&options(&[("method", "GET"), ("url", url)])))
        .await
        .unwrap()
        .as_string()
        .unwrap();
    let htu = Htu::parse(url).unwrap();
    let target = ProofTarget {
        method: "GET",
        htu: &htu,
        access_token: None,
    };
    let now = (js_sys::Date::now() / 1000.0) as u64;
    let verified = verify_proof(
        &proof,
        &target,
        &ProofPolicy::default(),
        NonceCheck::Off,
        now,
        &RustCrypto,
    )
    .unwrap();
    assert_eq!(verified.jkt().to_string(), key.thumbprint());
}

#[wasm_bindgen_test]
async fn in_a_worker_fetch_retries_once_with_the_nonce() {
    let server = option_env!("KEYBOUND_TEST_SERVER")
        .expect("KEYBOUND_TEST_SERVER is not set: run these tests through `cargo xtask test`");
    let key = open("worker-fetch").await;
    let url = format!(
        "{server}/api?id=worker-{}&nonce=1",
        (js_sys::Math::random() * 1e15) as u64
    );
    let response: web_sys::Response = JsFuture::from(key.fetch(&url, None, None))
        .await
        .unwrap()
        .unchecked_into();
    assert_eq!(response.status(), 200);
    assert!(key.nonce_for(&url).is_some());
}
