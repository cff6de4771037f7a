//! What the browser tests share: a `DpopKey` opened with the class of `src/dpop.js` bound to the
//! test's own wasm-bindgen module (as a package's `index.js` binds it to its glue).

use keybound_browser::DpopKey;
use wasm_bindgen::JsValue;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen_futures::JsFuture;

#[wasm_bindgen(module = "/tests/helpers.js")]
extern "C" {
    #[wasm_bindgen(js_name = testGlue)]
    fn test_glue() -> js_sys::Promise;
}

/// `DpopKey.open(options)`.
///
/// # Errors
/// What `DpopKey.open` rejects with.
pub async fn open_key(options: &JsValue) -> Result<DpopKey, JsValue> {
    let glue = JsFuture::from(test_glue()).await?;
    keybound_browser::open_key(&glue, options).await
}
