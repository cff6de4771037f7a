//! End-to-end browser test: real headless Chromium (Debian's `chromium`, driven through
//! `chromedriver`'s WebDriver HTTP API) uses the demo page of a running keybound-demo: it logs in
//! at keybound-authz (PAR + PKCE + DPoP, the login and consent forms), the page calls the API
//! through the real Envoy filter and must show success, then the replay button must show the
//! rejection. The page's login is keybound-browser's `OAuthClient` (PKCE, PAR with `dpop_jkt`,
//! `state` and `iss` checks, code exchange and refresh with DPoP), so this also proves the
//! module's login against the real keybound-authz: the test refreshes the token and calls the API
//! again, and sends the page a callback with a forged `state` and one with the right `state` but a
//! wrong `iss`, both refused with the pending login removed.
//!
//! Ignored by a plain `cargo test`: it needs Chromium, Envoy, the release filter and the browser
//! package. The demo step of `cargo xtask test` installs and builds those and runs it with
//! `--ignored` (`KEYBOUND_DEMO_PKG` and `KEYBOUND_DEMO_ENVOY` name the package and Envoy).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test"
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keybound_demo::http::request;
use serde_json::{Value, json};

/// A running keybound-demo (`--no-scenario --free-ports`), stopped with SIGTERM on drop so it
/// stops its own children.
struct Demo {
    child: Child,
    endpoints: Value,
    dir: PathBuf,
}

impl Demo {
    fn start() -> Demo {
        let dir = std::env::temp_dir().join(format!("kb-demo-browser-{}", std::process::id()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keybound-demo"));
        cmd.args(["--no-scenario", "--free-ports", "--dir"]).arg(&dir);
        if let Some(pkg) = std::env::var_os("KEYBOUND_DEMO_PKG") {
            cmd.arg("--pkg").arg(pkg);
        }
        if let Some(envoy) = std::env::var_os("KEYBOUND_DEMO_ENVOY") {
            cmd.arg("--envoy").arg(envoy);
        }
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = String::new();
        let mut endpoints = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            seen.push_str(&line);
            seen.push('\n');
            if let Some(path) = line.strip_prefix("demo: ready (endpoints: ") {
                endpoints = Some(PathBuf::from(path.trim_end_matches(')')));
                break;
            }
        }
        let Some(path) = endpoints else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("keybound-demo did not get ready:\n{seen}");
        };
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let endpoints = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        Demo { child, endpoints, dir }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver with one headless Chromium session (fresh profile); both stopped on drop.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    profile: PathBuf,
}

impl Browser {
    fn start(spki: &str) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian chromium-driver; `cargo xtask test` installs it)");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while request(&format!("{base}/status"), None, "GET", &[], None).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = std::env::temp_dir().join(format!("kb-demo-chromium-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    format!("--user-data-dir={}", profile.display()),
                    // Trust exactly the demo's server key (keybound-authz and Envoy), nothing else.
                    format!("--ignore-certificate-errors-spki-list={spki}"),
                ],
            },
        }}});
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            profile,
        };
        let res = b.call("POST", "/session", &caps);
        b.session = res["sessionId"].as_str().expect("a WebDriver session").to_string();
        b
    }

    fn call(&self, method: &str, path: &str, body: &Value) -> Value {
        let url = format!("{}{path}", self.base);
        let body = body.to_string();
        let res = request(
            &url,
            None,
            method,
            &[("content-type", "application/json")],
            (method == "POST").then_some(body.as_bytes()),
        )
        .unwrap();
        let json = res.json().unwrap();
        assert_eq!(res.status, 200, "WebDriver {method} {path}: {json}");
        json["value"].clone()
    }

    fn s(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    fn go(&self, url: &str) {
        self.call("POST", &self.s("/url"), &json!({ "url": url }));
    }

    fn url(&self) -> String {
        self.call("GET", &self.s("/url"), &json!({}))
            .as_str()
            .unwrap()
            .to_string()
    }

    fn find(&self, css: &str) -> Option<String> {
        let url = format!("{}{}", self.base, self.s("/element"));
        let body = json!({"using": "css selector", "value": css}).to_string();
        let res = request(
            &url,
            None,
            "POST",
            &[("content-type", "application/json")],
            Some(body.as_bytes()),
        )
        .unwrap();
        let json = res.json().unwrap();
        let element = json["value"][ELEMENT].as_str().map(str::to_string);
        assert!(
            res.status != 200 || element.is_some(),
            "WebDriver find {css}: {} {json}",
            res.status
        );
        element
    }

    fn wait_find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(e) = self.find(css) {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no {css} on {}: {}",
                self.url(),
                self.page_state()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn click(&self, css: &str) {
        let e = self.wait_find(css);
        self.call("POST", &self.s(&format!("/element/{e}/click")), &json!({}));
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.wait_find(css);
        self.call(
            "POST",
            &self.s(&format!("/element/{e}/value")),
            &json!({ "text": text }),
        );
    }

    fn text(&self, css: &str) -> String {
        let e = self.wait_find(css);
        self.call("GET", &self.s(&format!("/element/{e}/text")), &json!({}))
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    fn attr(&self, css: &str, name: &str) -> Option<String> {
        let e = self.find(css)?;
        self.call("GET", &self.s(&format!("/element/{e}/attribute/{name}")), &json!({}))
            .as_str()
            .map(str::to_string)
    }

    fn enabled(&self, css: &str) -> bool {
        self.find(css).is_some_and(|e| {
            self.call("GET", &self.s(&format!("/element/{e}/enabled")), &json!({}))
                .as_bool()
                .unwrap_or(false)
        })
    }

    /// Saves a PNG of the page (for looking at it: `KEYBOUND_DEMO_SCREENSHOT=file.png`).
    fn screenshot(&self, path: &Path) {
        let b64 = self.call("GET", &self.s("/screenshot"), &json!({}));
        let url_safe: String = b64
            .as_str()
            .unwrap()
            .chars()
            .filter(|c| *c != '=')
            .map(|c| match c {
                '+' => '-',
                '/' => '_',
                c => c,
            })
            .collect();
        std::fs::write(path, keybound_core::b64::decode(&url_safe).unwrap()).unwrap();
    }

    /// The page's error and log, for failure messages.
    fn page_state(&self) -> String {
        let get = |css: &str| {
            self.find(css)
                .map(|e| {
                    self.call("GET", &self.s(&format!("/element/{e}/text")), &json!({}))
                        .as_str()
                        .unwrap_or("")
                        .to_string()
                })
                .unwrap_or_default()
        };
        format!("error: {:?}; log: {:?}", get("#error"), get("#log"))
    }

    /// Runs a script in the page (WebDriver "execute script") and returns its result.
    fn execute(&self, script: &str) -> Value {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            &json!({ "script": script, "args": [] }),
        )
    }

    fn wait_until(&self, what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(45);
        while !f() {
            assert!(
                Instant::now() < deadline,
                "{what} did not happen on {}: {}",
                self.url(),
                self.page_state()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let url = format!("{}{}", self.base, self.s(""));
            let _ = request(&url, None, "DELETE", &[], None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

#[test]
#[ignore = "needs Chromium, Envoy, the release filter and the browser package: run by `cargo xtask test` (demo step)"]
fn the_demo_page_logs_in_calls_the_api_through_envoy_and_shows_the_replay_rejected() {
    let demo = Demo::start();
    let ep = &demo.endpoints;
    let page = ep["demo_page"].as_str().unwrap().to_string();
    let issuer = ep["authorization_server"]["issuer"].as_str().unwrap().to_string();
    let browser = Browser::start(ep["server_spki_sha256"].as_str().unwrap());

    browser.go(&page);
    browser.wait_until("the key and the login button", || browser.enabled("#login"));
    let key_jkt = browser.text("#key-jkt");
    assert_eq!(key_jkt.len(), 43, "a base64url SHA-256 thumbprint: {key_jkt}");

    browser.click("#login");
    browser.wait_until("the redirect to keybound-authz", || browser.url().starts_with(&issuer));
    browser.type_into("input[name=username]", ep["user"]["username"].as_str().unwrap());
    browser.type_into("input[name=password]", ep["user"]["password"].as_str().unwrap());
    browser.click("button[type=submit]");
    browser.click("button[value=allow]");

    browser.wait_until("the API call's success", || {
        browser.attr("#api-result", "data-status").as_deref() == Some("success")
    });
    assert!(browser.url().starts_with(&page), "back on the page: {}", browser.url());
    assert!(browser.text("#api-result").starts_with("Success"));
    assert_eq!(browser.text("#token-type"), "DPoP");
    assert_eq!(browser.text("#token-jkt"), key_jkt, "cnf.jkt is the page's key");
    let answer = browser.text("#api-answer");
    assert!(answer.starts_with("200"), "{answer}");
    assert!(answer.contains(&key_jkt), "the API saw x-keybound-jkt: {answer}");
    let proof = browser.text("#proof");
    for claim in ["\"htm\": \"GET\"", "\"ath\"", "\"nonce\"", "\"typ\": \"dpop+jwt\""] {
        assert!(proof.contains(claim), "{claim} in the shown proof: {proof}");
    }
    assert!(browser.text("#error").is_empty(), "{}", browser.page_state());

    if let Some(path) = std::env::var_os("KEYBOUND_DEMO_SCREENSHOT") {
        browser.screenshot(Path::new(&path));
    }

    // Refresh (the refresh token never leaves the module): a new token, bound to the same key,
    // and the API accepts it.
    let claims_before = browser.text("#token-claims");
    browser.click("#refresh");
    browser.wait_until("the refresh", || {
        browser.attr("#refresh-result", "data-status").as_deref() == Some("success")
    });
    browser.wait_until("the second API call", || {
        browser.attr("#api-result", "data-calls").as_deref() == Some("2")
    });
    assert_eq!(
        browser.attr("#api-result", "data-status").as_deref(),
        Some("success"),
        "{}",
        browser.text("#api-result")
    );
    let claims_after = browser.text("#token-claims");
    assert_ne!(claims_before, claims_after, "a new access token");
    assert_eq!(
        browser.text("#token-jkt"),
        key_jkt,
        "the refreshed token is bound to the page's key"
    );
    assert!(browser.text("#error").is_empty(), "{}", browser.page_state());

    browser.click("#replay");
    browser.wait_until("the replay's rejection", || {
        browser.attr("#replay-result", "data-status").as_deref() == Some("rejected")
    });
    let rejected = browser.text("#replay-result");
    assert!(
        rejected.contains("401") && rejected.contains("invalid_token"),
        "{rejected}"
    );

    // The gateway counted one allowed request (after at most one nonce challenge) and the
    // rejection as a key mismatch.
    let admin = ep["gateway"]["admin"].as_str().unwrap();
    let stats = request(&format!("{admin}/stats?filter=keybound"), None, "GET", &[], None)
        .unwrap()
        .text();
    assert!(
        stats
            .lines()
            .any(|l| l.split_once(": ").is_some_and(|(name, value)| value == "1"
                && keybound_filter::metrics::parse_decision_counter(name)
                    .is_some_and(|[d, r, ..]| d == "deny" && r == "jkt_mismatch"))),
        "{stats}"
    );

    if let Some(path) = std::env::var_os("KEYBOUND_DEMO_SCREENSHOT") {
        browser.screenshot(&PathBuf::from(path).with_extension("replay.png"));
    }

    // A callback that is not the answer to our request (forged state), while a login is pending:
    // refused by the module, and the pending login (PKCE verifier and state) is gone.
    let client_id = browser.text("#client-id");
    let pending_script = format!("return sessionStorage.getItem('keybound-login:{client_id}');");
    browser.click("#login");
    browser.wait_until("the second redirect to keybound-authz", || {
        browser.url().starts_with(&issuer)
    });
    browser.go(&format!("{page}cb?code=forged&state=forged&iss={issuer}"));
    browser.wait_until("the state check", || browser.text("#error").contains("state_mismatch"));
    assert_eq!(browser.text("#token-type"), "none yet");
    assert_eq!(
        browser.execute(&pending_script),
        Value::Null,
        "the pending login was removed"
    );

    // The right state but a wrong iss (RFC 9207: a mix-up attack): refused too.
    browser.go(&page);
    browser.wait_until("the page", || browser.enabled("#login"));
    browser.click("#login");
    browser.wait_until("the third redirect to keybound-authz", || {
        browser.url().starts_with(&issuer)
    });
    browser.go(&page);
    browser.wait_until("the page", || browser.enabled("#login"));
    let pending = browser.execute(&pending_script);
    let pending: Value = serde_json::from_str(pending.as_str().expect("a pending login")).unwrap();
    let state = pending["state"].as_str().unwrap();
    assert_eq!(
        pending["verifier"].as_str().unwrap().len(),
        43,
        "a 43-character PKCE verifier"
    );
    browser.go(&format!(
        "{page}cb?code=stolen&state={state}&iss=https%3A%2F%2Fevil.example"
    ));
    browser.wait_until("the iss check", || browser.text("#error").contains("iss_mismatch"));
    assert_eq!(browser.text("#token-type"), "none yet");
    assert_eq!(
        browser.execute(&pending_script),
        Value::Null,
        "the pending login was removed"
    );
}
