//! Benchmark (not a test): median `createProof` time in headless Chromium beside
//! `crypto.subtle.sign` alone. Run it with the command in browser/README.md ("Measured").
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark code")]

use js_sys::{Object, Promise, Reflect};
use keybound_browser::{DpopKey, open_key};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{Criterion, console_log, wasm_bindgen_bench, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen(module = "/benches/bench.js")]
extern "C" {
    #[wasm_bindgen(js_name = benchCreateProof)]
    fn bench_create_proof(key: JsValue, samples: u32, batch: u32) -> Promise;
    #[wasm_bindgen(js_name = benchGlue)]
    fn bench_glue() -> Promise;
    #[wasm_bindgen(js_name = benchSubtleSign)]
    fn bench_subtle_sign(samples: u32, batch: u32, length: u32) -> Promise;
}

const SAMPLES: u32 = 101;
const BATCH: u32 = 20;

async fn open(options: &[(&str, &str)]) -> JsValue {
    let o = Object::new();
    for (k, v) in options {
        Reflect::set(&o, &JsValue::from_str(k), &JsValue::from_str(v)).unwrap();
    }
    let glue = JsFuture::from(bench_glue()).await.unwrap();
    let key: DpopKey = open_key(&glue, &o.into()).await.unwrap();
    key.into()
}

async fn median(p: Promise) -> f64 {
    JsFuture::from(p).await.unwrap().as_f64().unwrap()
}

#[wasm_bindgen_bench]
async fn proof_creation(_c: &mut Criterion) {
    let webcrypto = open(&[("clientId", "bench"), ("storage", "memory")]).await;
    // A proof's signing input is about 450 bytes (header with the JWK, claims with ath, nonce).
    let sign = median(bench_subtle_sign(SAMPLES, BATCH, 450)).await;
    let create = median(bench_create_proof(webcrypto, SAMPLES, BATCH)).await;
    console_log!(
        "keybound-browser proof benchmark ({SAMPLES} samples x {BATCH} operations, median per operation):\n  \
         crypto.subtle.sign alone (ES256, 450 bytes): {sign:.3} ms\n  \
         createProof, WebCrypto key:                  {create:.3} ms"
    );
    #[cfg(feature = "software-key")]
    {
        let software = open(&[("clientId", "bench"), ("softwareKey", "always")]).await;
        let create_software = median(bench_create_proof(software, SAMPLES, BATCH)).await;
        console_log!("  createProof, software key (opt-in):          {create_software:.3} ms");
    }
}
