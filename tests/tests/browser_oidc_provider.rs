//! Issue 16, item 5: keybound-browser's login against a foreign authorization server,
//! **node-oidc-provider** (npm `oidc-provider`, `tests/oidc-provider/server.mjs`: a public client,
//! DPoP with nonces required, PKCE, OpenID Connect with RS256 ID tokens, refresh tokens,
//! RP-initiated logout, JWT access tokens), once with PAR offered and once without, in headless
//! Chromium. The page (on its own origin) uses the npm package's `OAuthClient`; the test drives the
//! provider's own login and consent pages with WebDriver. Then the page calls an API through the
//! keybound filter in a real Envoy (configured with the provider's issuer and signing key, nonces
//! required, no CORS filter) with the DPoP-bound token; waits for the token to expire so the
//! gateway answers `401 invalid_token`, which the module answers with one refresh and one retry;
//! turns the refresh timer on and sees it refresh; and logs out at the provider's
//! `end_session_endpoint`, after which the provider asks for a login again.
//!
//! Ignored by a plain `cargo test`: it needs Chromium, chromedriver, node with the npm packages of
//! `tests/oidc-provider`, Envoy, the release filter and the built package. The browser step of
//! `cargo xtask test` runs it with `--ignored` after building the package, naming it with
//! `KEYBOUND_BROWSER_PKG` (default: `browser/pkg`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test"
)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use keybound_e2e::webdriver::Browser;
use keybound_e2e::{Envoy, EnvoyOptions, SiteContent, StaticSite, Upstream};
use serde_json::{Value, json};

const CLIENT_ID: &str = "keybound-spa";
const AUDIENCE: &str = "https://api.keybound.test";
/// The access tokens' lifetime: short, so the test can wait for the gateway to refuse one.
const ACCESS_TOKEN_TTL: u64 = 6;
/// A fixed nonce secret for the gateway (base64url of 32+ bytes).
const NONCE_SECRET: &str = "ZTJlLW5vbmNlLXNlY3JldC1lMmUtbm9uY2Utc2VjcmV0LWUyZQ";

/// The page, served at `/` and at the redirect URI `/cb`: loads the package, makes an
/// `OAuthClient` for the provider (discovered, so its JWKS validates the ID token), completes the
/// login when it is the callback, records every `fetch` of the module and every client event, and
/// offers `window.kb` to the test. `__ISSUER__` and `__CLIENT_ID__` are replaced when served.
const PAGE: &str = r#"<!doctype html>
<html>
<head><meta charset="utf-8"><title>keybound-browser against node-oidc-provider</title></head>
<body>
<pre id="log"></pre>
<pre id="error"></pre>
<script type="module">
import init, { DpopKey, OAuthClient } from "/pkg/index.js";

const log = (m) => { document.getElementById("log").textContent += m + "\n"; };
const describe = (e) => `${e && e.name}: ${e && e.message} (${e && e.code} ${e && e.reason})`;
const fail = (e) => { document.getElementById("error").textContent = describe(e); document.body.dataset.state = "error"; };
const claims = (jwt) => {
  const part = (jwt || "").split(".")[1] || "";
  const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
  try { return JSON.parse(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4))); } catch { return {}; }
};
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

try {
  await init({ module_or_path: "/pkg/keybound_browser_bg.wasm" });
  const key = await DpopKey.open({ clientId: "__CLIENT_ID__" });
  const client = await OAuthClient.create(key, {
    issuer: "__ISSUER__",
    clientId: "__CLIENT_ID__",
    redirectUri: `${location.origin}/cb`,
    postLogoutRedirectUri: `${location.origin}/`,
    scope: "openid accounts",
    autoRefresh: false,
  });
  const events = [];
  for (const type of ["tokenRefreshed", "refreshFailed", "sessionEnded"]) {
    client.on(type, (e) => { events.push({ type: e.type, trigger: e.trigger ?? null, error: e.error ? describe(e.error) : null }); log(`event ${e.type} ${e.trigger ?? ""}`); });
  }
  window.kb = {
    thumbprint: key.thumbprint(),
    usesPar: client.usesPar,
    calls, events,
    startLogin: () => client.startLogin(),
    token: () => ({ accessToken: client.accessToken ?? null, claims: claims(client.accessToken), idTokenClaims: client.idTokenClaims ?? null, hasRefreshToken: client.hasRefreshToken }),
    async call(url) {
      const first = calls.length;
      try {
        const response = await client.fetch(url, { method: "GET" });
        return { ok: true, status: response.status, body: await response.text(), calls: calls.slice(first) };
      } catch (e) {
        return { ok: false, error: describe(e), calls: calls.slice(first) };
      }
    },
    setAutoRefresh(on) { client.autoRefresh = on; },
    logout: () => ({ url: client.logout() ?? null, events: events.slice(), accessToken: client.accessToken ?? null }),
  };
  if (client.isCallback(location.href)) {
    const callback = location.href;
    history.replaceState(null, "", "/");
    await client.completeLogin(callback);
    log(`logged in: ${client.accessToken ? "yes" : "no"}`);
    document.body.dataset.state = "logged-in";
  } else {
    document.body.dataset.state = "ready";
  }
} catch (e) {
  fail(e);
}
</script>
</body>
</html>
"#;

/// The page's site on a free port of 127.0.0.1: the package under `/pkg/`, and once the provider
/// runs (it needs the site's redirect URI first), [`PAGE`] at `/` and `/cb` ([`set_page`]).
fn site(pkg: &Path) -> StaticSite {
    StaticSite::start(SiteContent {
        index_paths: vec!["/cb".into()],
        mount: "/pkg/".into(),
        dir: pkg.to_path_buf(),
        ..SiteContent::default()
    })
    .unwrap()
}

/// [`PAGE`] for this provider's issuer.
fn set_page(site: &StaticSite, issuer: &str) {
    site.set_index(PAGE.replace("__ISSUER__", issuer).replace("__CLIENT_ID__", CLIENT_ID));
}

/// node-oidc-provider (`tests/oidc-provider/server.mjs`), killed on drop.
struct Provider {
    child: Child,
    issuer: String,
    dir: PathBuf,
}

impl Provider {
    fn start(site: &StaticSite, par: bool) -> Provider {
        let script_dir = keybound_e2e::root().join("tests/oidc-provider");
        assert!(
            script_dir.join("node_modules/oidc-provider").exists(),
            "npm ci in tests/oidc-provider first (`cargo xtask test` does)"
        );
        let dir = std::env::temp_dir().join(format!("kb-oidc-provider-{}-{par}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = json!({
            "port": 0,
            "client_id": CLIENT_ID,
            "redirect_uri": format!("{}/cb", site.origin()),
            "post_logout_redirect_uri": format!("{}/", site.origin()),
            "audience": AUDIENCE,
            "access_token_ttl": ACCESS_TOKEN_TTL,
            "par": par,
        });
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let mut child = Command::new("node")
            .arg(script_dir.join("server.mjs"))
            .arg(dir.join("config.json"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let issuer = lines
            .next()
            .and_then(Result::ok)
            .and_then(|l| l.strip_prefix("listening on ").map(str::to_owned));
        let Some(issuer) = issuer else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("oidc-provider did not start");
        };
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                println!("oidc-provider: {line}");
            }
        });
        Provider { child, issuer, dir }
    }

    fn port(&self) -> u16 {
        self.issuer.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// The provider's access-token signing key (ES256) from its JWKS.
    fn access_token_key(&self) -> Value {
        let r = keybound_e2e::request(self.port(), "GET", "/jwks", &[]).unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        let jwks = r.json();
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["alg"] == "ES256")
            .cloned()
            .expect("an ES256 key in the provider's JWKS")
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_state(browser: &Browser, what: &str, state: &str) {
    // Through a script, not an element reference: the page may be navigating (a stale element).
    let current = || {
        browser
            .execute("return (document.body && document.body.dataset.state) || null;")
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
    };
    browser
        .wait_until(what, || {
            let now = current();
            assert_ne!(now.as_deref(), Some("error"), "{}", browser.page_state());
            Ok(now.as_deref() == Some(state))
        })
        .unwrap();
}

/// The provider's development login and consent pages, as a user fills them in.
fn log_in_at_the_provider(browser: &Browser, provider: &Provider) {
    browser
        .wait_until("the provider's login page", || {
            Ok(browser.url()?.starts_with(&provider.issuer))
        })
        .unwrap();
    browser.type_into("input[name=login]", "alice").unwrap();
    browser.type_into("input[name=password]", "any password").unwrap();
    browser.click("button[type=submit]").unwrap();
    browser.wait_find("input[name=prompt][value=consent]").unwrap();
    browser.click("button[type=submit]").unwrap();
}

fn page_token(browser: &Browser) -> Value {
    browser.execute("return window.kb.token();").unwrap()
}

fn call(browser: &Browser, url: &str) -> Value {
    browser
        .execute_with("return window.kb.call(arguments[0]);", &[json!(url)])
        .unwrap()
}

/// The whole run against one provider: login, API call, refresh on 401, refresh by timer, logout.
fn run(par: bool) {
    let pkg = common::browser_package();
    let site = site(&pkg);
    let provider = Provider::start(&site, par);
    set_page(&site, &provider.issuer);
    let mut key = provider.access_token_key();
    key.as_object_mut()
        .unwrap()
        .retain(|k, _| ["kty", "crv", "x", "y", "kid", "alg"].contains(&k.as_str()));
    let upstream = Upstream::start_cors(&[site.origin()]).unwrap();
    let (issuer, origin) = (provider.issuer.clone(), site.origin());
    let envoy = Envoy::start_with_port(
        |port| {
            common::config(json!({
                "issuers": [{"issuer": issuer, "audiences": [AUDIENCE], "jwks": {"keys": [key]}, "leeway_seconds": 0}],
                "dpop": {
                    "origins": [format!("http://127.0.0.1:{port}")],
                    "nonce": {"mode": "required", "secrets": [NONCE_SECRET], "step_seconds": 60},
                },
                "cors": {"allowed_origins": [origin]},
            }))
        },
        &upstream,
        &EnvoyOptions::default(),
    )
    .unwrap();
    let api = format!("http://127.0.0.1:{}/api/accounts", envoy.port);
    let browser = Browser::start(&[]).unwrap();
    let label = if par { "PAR on" } else { "PAR off" };

    // 1. Login: discovery, the authorization request (pushed or in the URL), the provider's
    // pages, the callback, the code exchange with DPoP, the ID token validated.
    browser.go(&format!("{}/", site.origin())).unwrap();
    wait_state(&browser, "the page", "ready");
    assert_eq!(browser.execute("return window.kb.usesPar;").unwrap(), json!(par));
    let jkt = browser.execute("return window.kb.thumbprint;").unwrap();
    let authorize = browser.execute("return window.kb.startLogin();").unwrap();
    let authorize = authorize.as_str().expect("an authorization URL").to_owned();
    let login_calls = browser.execute("return window.kb.calls;").unwrap();
    println!("[{label}] authorization URL: {authorize}\n[{label}] calls before the redirect: {login_calls}");
    assert!(
        authorize.starts_with(&format!("{}/auth?", provider.issuer)),
        "{authorize}"
    );
    if par {
        assert!(authorize.contains("request_uri="), "{authorize}");
        assert!(!authorize.contains("code_challenge="), "{authorize}");
        let pushes: Vec<&Value> = login_calls
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["url"] == format!("{}/request", provider.issuer))
            .collect();
        assert_eq!(pushes.last().unwrap()["status"], 201, "{login_calls}");
    } else {
        for param in ["code_challenge=", "dpop_jkt=", "nonce=", "state="] {
            assert!(authorize.contains(param), "{param} in {authorize}");
        }
        assert!(!authorize.contains("request_uri="), "{authorize}");
    }
    browser.go(&authorize).unwrap();
    log_in_at_the_provider(&browser, &provider);
    wait_state(&browser, "the completed login", "logged-in");
    let token = page_token(&browser);
    println!("[{label}] logged in: {token}");
    assert_eq!(token["claims"]["cnf"]["jkt"], jkt, "DPoP-bound to the page's key");
    assert_eq!(token["claims"]["iss"], json!(provider.issuer));
    assert_eq!(token["claims"]["aud"], AUDIENCE);
    assert_eq!(token["idTokenClaims"]["sub"], "alice", "the ID token was validated");
    assert_eq!(token["idTokenClaims"]["aud"], CLIENT_ID);
    assert_eq!(token["hasRefreshToken"], true);

    // 2. A DPoP call through the gateway: 401 use_dpop_nonce, one retry, 200.
    let result = call(&browser, &api);
    println!("[{label}] API call: {}", result["calls"]);
    assert_eq!(result["status"], 200, "{result}\n{}", envoy.log_tail());
    let echo: Value = serde_json::from_str(result["body"].as_str().unwrap()).unwrap();
    assert_eq!(echo["x-keybound-jkt"], jkt, "{echo}");

    // 3. The token expires: the gateway says 401 invalid_token, the module refreshes once (with
    // the provider's nonce) and retries once with the new token.
    let first_token = token["accessToken"].clone();
    std::thread::sleep(Duration::from_secs(ACCESS_TOKEN_TTL + 1));
    let result = call(&browser, &api);
    println!("[{label}] API call with an expired token: {}", result["calls"]);
    assert_eq!(result["status"], 200, "{result}\n{}", envoy.log_tail());
    let token = page_token(&browser);
    assert_ne!(token["accessToken"], first_token, "a new access token");
    assert_eq!(token["claims"]["cnf"]["jkt"], jkt);
    let events = browser.execute("return window.kb.events;").unwrap();
    assert_eq!(
        events,
        json!([{"type": "tokenRefreshed", "trigger": "invalid_token", "error": null}])
    );
    assert!(
        envoy.decisions("deny", Some("token_expired")) >= 1,
        "{}",
        envoy.log_tail()
    );

    // 4. The refresh timer: on, it refreshes the 6-second token halfway.
    browser.execute("window.kb.setAutoRefresh(true);").unwrap();
    browser
        .wait_until("the timer's refresh", || {
            let events = browser.execute("return window.kb.events;")?;
            Ok(events.as_array().is_some_and(|e| e.len() == 2))
        })
        .unwrap();
    let events = browser.execute("return window.kb.events;").unwrap();
    assert_eq!(
        events[1],
        json!({"type": "tokenRefreshed", "trigger": "timer", "error": null})
    );
    let result = call(&browser, &api);
    assert_eq!(result["status"], 200, "{result}");

    // 5. RP-initiated logout: tokens gone, sessionEnded, the provider's end-session page with the
    // ID token hint, back at the post-logout redirect URI; the provider then asks for a login.
    let out = browser.execute("return window.kb.logout();").unwrap();
    println!("[{label}] logout: {out}");
    assert_eq!(out["accessToken"], Value::Null);
    assert_eq!(
        out["events"].as_array().unwrap().last().unwrap()["type"],
        "sessionEnded"
    );
    let url = out["url"].as_str().expect("an end-session URL");
    assert!(url.starts_with(&format!("{}/session/end?", provider.issuer)), "{url}");
    assert!(url.contains("id_token_hint="), "{url}");
    browser.go(url).unwrap();
    browser.click("button[name=logout]").unwrap();
    browser
        .wait_until("the post-logout redirect", || {
            Ok(browser.url()?.starts_with(&format!("{}/", site.origin())))
        })
        .unwrap();
    wait_state(&browser, "the page after logout", "ready");
    let again = browser.execute("return window.kb.startLogin();").unwrap();
    browser.go(again.as_str().unwrap()).unwrap();
    browser.wait_find("input[name=login]").unwrap();
    println!("[{label}] after logout the provider asks for a login again");
}

#[test]
#[ignore = "needs Chromium, chromedriver, node (tests/oidc-provider), Envoy, the release filter and the browser package: run by `cargo xtask test` (browser step)"]
fn the_login_dpop_calls_refresh_and_logout_work_against_node_oidc_provider_with_par() {
    run(true);
}

#[test]
#[ignore = "needs Chromium, chromedriver, node (tests/oidc-provider), Envoy, the release filter and the browser package: run by `cargo xtask test` (browser step)"]
fn the_login_dpop_calls_refresh_and_logout_work_against_node_oidc_provider_without_par() {
    run(false);
}
