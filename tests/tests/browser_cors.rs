//! Issue 13, item 3 (the browser half): the keybound filter in a real Envoy with **no CORS
//! filter**, DPoP nonces required, `cors.allowed_origins` naming a page's origin, in front of an
//! upstream that does its own CORS (preflights, `Access-Control-Allow-Origin` on its answers).
//! A page on another origin (another port of 127.0.0.1) loads the keybound-browser npm package in
//! headless Chromium, opens a DPoP key, and calls the gateway with the module's `fetch` wrapper
//! and a token the test minted for that key's thumbprint: the browser must be able to read the
//! filter's `401 use_dpop_nonce` and its `DPoP-Nonce`, so the module retries once and gets the
//! upstream's 200. The same page on an origin not in `cors.allowed_origins` cannot read the
//! filter's refusal: its fetch fails, and the module never learns the nonce.
//!
//! The browser test is ignored by a plain `cargo test`: it needs Chromium, chromedriver, Envoy, the
//! release filter and the built package. The browser step of `cargo xtask test` runs it with
//! `--ignored` after building the package, naming it with `KEYBOUND_BROWSER_PKG` (default:
//! `browser/pkg`). The other test checks the same gateway's headers with a plain HTTP client.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test"
)]

mod common;

use std::path::Path;

use keybound_e2e::webdriver::Browser;
use keybound_e2e::{Envoy, SiteContent, StaticSite, Upstream};
use serde_json::{Value, json};

/// The page: loads the package from `/pkg/`, opens a DPoP key, records every `fetch` the module
/// makes after loading (method, URL, the proof's `nonce`, the status or the error), and offers
/// `window.keybound.call(url, token)`, which calls `key.fetch` and resolves to what happened.
const PAGE: &str = r#"<!doctype html>
<html>
<head><meta charset="utf-8"><title>keybound-browser, cross-origin through Envoy</title></head>
<body>
<pre id="log"></pre>
<pre id="error"></pre>
<script type="module">
import init, { DpopKey } from "/pkg/index.js";

const log = (m) => { document.getElementById("log").textContent += m + "\n"; };
const fail = (e) => {
  document.getElementById("error").textContent = `${e && e.name}: ${e && e.message} (${e && e.code} ${e && e.reason})`;
};
const claims = (jwt) => {
  const part = (jwt || "").split(".")[1] || "";
  const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
  try { return JSON.parse(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4))); } catch { return {}; }
};

try {
  await init({ module_or_path: "/pkg/keybound_browser_bg.wasm" });
  const key = await DpopKey.open({ clientId: "cors-e2e" });
  const calls = [];
  const realFetch = globalThis.fetch.bind(globalThis);
  globalThis.fetch = async (input, init) => {
    const request = input instanceof Request ? input : new Request(input, init);
    const call = { method: request.method, url: request.url, nonce: claims(request.headers.get("dpop")).nonce ?? null };
    calls.push(call);
    try {
      const response = await realFetch(input, init);
      call.status = response.status;
      return response;
    } catch (e) {
      call.error = `${e.name}: ${e.message}`;
      throw e;
    }
  };
  window.keybound = {
    thumbprint: key.thumbprint(),
    storage: key.storage,
    async call(url, token) {
      const first = calls.length;
      const done = (result) => {
        result.calls = calls.slice(first);
        result.nonce = key.nonceFor(url) ?? null;
        log(JSON.stringify(result));
        return result;
      };
      try {
        const response = await key.fetch(url, { method: "GET" }, token);
        return done({ ok: true, status: response.status, body: await response.text() });
      } catch (e) {
        return done({ ok: false, error: `${e.name}: ${e.message}`, code: e.code ?? null, reason: e.reason ?? null });
      }
    },
  };
  log(`key ${key.thumbprint()} (${key.storage})`);
  document.body.dataset.ready = "yes";
} catch (e) {
  fail(e);
}
</script>
</body>
</html>
"#;

/// A static site on a free port of 127.0.0.1: [`PAGE`] at `/`, the package's files under
/// `/pkg/`, 404 for anything else.
fn site(pkg: &Path) -> StaticSite {
    StaticSite::start(SiteContent {
        index: Some(PAGE.to_owned()),
        mount: "/pkg/".into(),
        dir: pkg.to_path_buf(),
        ..SiteContent::default()
    })
    .unwrap()
}

/// Loads the page from `site`, waits for its key, mints a token bound to that key (`cnf.jkt`)
/// with the test issuer, and has the page call `url` with the module's `fetch`. Returns the
/// key's thumbprint and what the page saw.
fn call_from_page(browser: &Browser, site: &StaticSite, url: &str) -> (String, Value) {
    browser.go(&format!("{}/", site.origin())).unwrap();
    browser
        .wait_until("the page's key", || {
            Ok(browser.attr("body", "data-ready")?.as_deref() == Some("yes"))
        })
        .unwrap();
    let jkt = browser.execute("return window.keybound.thumbprint;").unwrap();
    let jkt = jkt.as_str().expect("a thumbprint").to_owned();
    assert_eq!(jkt.len(), 43, "a base64url SHA-256 thumbprint: {jkt}");
    let token = common::jkt_token(&jkt);
    let result = browser
        .execute_with(
            "return window.keybound.call(arguments[0], arguments[1]);",
            &[json!(url), json!(token)],
        )
        .unwrap();
    (jkt, result)
}

#[test]
#[ignore = "needs Chromium, chromedriver, Envoy, the release filter and the browser package: run by `cargo xtask test` (browser step)"]
fn a_page_on_an_allowed_origin_gets_its_nonce_from_envoy_without_a_cors_filter_and_another_origin_cannot() {
    let pkg = common::browser_package();
    let allowed = site(&pkg);
    let other = site(&pkg);
    // The application does CORS for both pages; only the filter's own replies tell them apart.
    let upstream = Upstream::start_cors(&[allowed.origin(), other.origin()]).unwrap();
    let envoy = common::browser_gateway(&[allowed.origin()], &upstream);
    let api = format!("http://127.0.0.1:{}/api/accounts", envoy.port);
    let browser = Browser::start(&[]).unwrap();

    // 1. The allowed origin: 401 use_dpop_nonce (readable), exactly one retry with the nonce, 200.
    let (jkt, result) = call_from_page(&browser, &allowed, &api);
    println!(
        "the page on the allowed origin: {} (calls: {})",
        result["status"], result["calls"]
    );
    assert_eq!(result["ok"], true, "{result}\n{}", envoy.log_tail());
    assert_eq!(result["status"], 200, "{result}");
    let calls = result["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "one call and exactly one nonce retry: {result}");
    assert_eq!(calls[0]["status"], 401, "{result}");
    assert_eq!(calls[0]["nonce"], Value::Null, "the first proof had no nonce: {result}");
    assert_eq!(calls[1]["status"], 200, "{result}");
    let nonce = calls[1]["nonce"].as_str().expect("the retry's proof carries the nonce");
    assert_eq!(
        result["nonce"], nonce,
        "the module learned the nonce from the filter's 401"
    );
    let seen: Value = serde_json::from_str(result["body"].as_str().unwrap()).unwrap();
    assert_eq!(seen[":path"], "/api/accounts", "the upstream's echo: {seen}");
    assert_eq!(seen["origin"], allowed.origin(), "{seen}");
    assert_eq!(
        seen["x-keybound-jkt"], jkt,
        "the gateway verified the page's key: {seen}"
    );
    assert_eq!(envoy.decisions("deny", Some("proof_nonce_required")), 1);
    assert_eq!(envoy.decisions("allow", Some("ok")), 1);
    assert!(
        envoy.decisions("allow", Some("cors_preflight")) >= 1,
        "the preflight went to the upstream"
    );

    // 2. Another origin (the upstream allows it, the filter does not): the request reaches the
    // filter, whose 401 the browser does not let the page read; the module never sees the nonce.
    let (_, result) = call_from_page(&browser, &other, &api);
    println!(
        "the page on the other origin: {} (calls: {})",
        result["error"], result["calls"]
    );
    assert_eq!(result["ok"], false, "{result}");
    assert!(
        result["error"].as_str().unwrap().starts_with("TypeError"),
        "fetch's own network error: {result}"
    );
    let calls = result["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "no retry: {result}");
    assert!(calls[0]["error"].is_string(), "{result}");
    assert_eq!(result["nonce"], Value::Null, "no nonce learned: {result}");
    assert_eq!(
        envoy.decisions("deny", Some("proof_nonce_required")),
        2,
        "the refused request went through the upstream's preflight to the filter"
    );
    assert_eq!(envoy.decisions("allow", Some("ok")), 1);
}

/// The CORS upstream and the filter's CORS headers without a browser (runs in every `cargo test`
/// with Envoy): a preflight passes the filter unchecked and the upstream answers it; the filter's
/// 401 carries the CORS headers for the allowed origin only; the upstream's echo carries its own.
#[test]
fn the_cors_upstream_answers_preflights_and_the_filter_labels_only_its_replies_to_allowed_origins() {
    let (app, other) = ("http://app.example:8080", "http://other.example");
    let upstream = Upstream::start_cors(&[app.to_owned()]).unwrap();
    let envoy = Envoy::start(&common::config(json!({"cors": {"allowed_origins": [app]}})), &upstream).unwrap();
    let preflight = |origin: &str| {
        keybound_e2e::request(
            envoy.port,
            "OPTIONS",
            "/api",
            &[
                ("origin", origin),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "authorization,dpop"),
            ],
        )
        .unwrap()
    };
    let r = preflight(app);
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), Some(app));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some(keybound_e2e::CORS_ALLOW_HEADERS)
    );
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some(keybound_e2e::CORS_ALLOW_METHODS)
    );
    let r = preflight(other);
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(envoy.decisions("allow", Some("cors_preflight")), 2);

    let r = keybound_e2e::request(envoy.port, "GET", "/api", &[("origin", app)]).unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.header("access-control-allow-origin"), Some(app));
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("WWW-Authenticate, DPoP-Nonce")
    );
    let r = keybound_e2e::request(envoy.port, "GET", "/api", &[("origin", other)]).unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.header("access-control-allow-origin"), None);

    let r = keybound_e2e::request(envoy.port, "GET", "/health", &[("origin", app)]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some(app), "the upstream's own");
    assert_eq!(r.json()["origin"], app, "the echo");
}
