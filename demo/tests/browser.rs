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
//! Chromium is driven by the WebDriver client shared with the e2e tests
//! ([`keybound_e2e::webdriver`]).
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
use keybound_e2e::webdriver::Browser;
use serde_json::Value;

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

#[test]
#[ignore = "needs Chromium, Envoy, the release filter and the browser package: run by `cargo xtask test` (demo step)"]
fn the_demo_page_logs_in_calls_the_api_through_envoy_and_shows_the_replay_rejected() -> Result<(), String> {
    let demo = Demo::start();
    let ep = &demo.endpoints;
    let page = ep["demo_page"].as_str().unwrap().to_string();
    let issuer = ep["authorization_server"]["issuer"].as_str().unwrap().to_string();
    // Trust exactly the demo's server key (keybound-authz and Envoy), nothing else.
    let spki = ep["server_spki_sha256"].as_str().unwrap();
    let browser = Browser::start(&[format!("--ignore-certificate-errors-spki-list={spki}")])?;

    browser.go(&page)?;
    browser.wait_until("the key and the login button", || browser.enabled("#login"))?;
    let key_jkt = browser.text("#key-jkt")?;
    assert_eq!(key_jkt.len(), 43, "a base64url SHA-256 thumbprint: {key_jkt}");

    browser.click("#login")?;
    browser.wait_until("the redirect to keybound-authz", || {
        Ok(browser.url()?.starts_with(&issuer))
    })?;
    browser.type_into("input[name=username]", ep["user"]["username"].as_str().unwrap())?;
    browser.type_into("input[name=password]", ep["user"]["password"].as_str().unwrap())?;
    browser.click("button[type=submit]")?;
    browser.click("button[value=allow]")?;

    browser.wait_until("the API call's success", || {
        Ok(browser.attr("#api-result", "data-status")?.as_deref() == Some("success"))
    })?;
    let url = browser.url()?;
    assert!(url.starts_with(&page), "back on the page: {url}");
    assert!(browser.text("#api-result")?.starts_with("Success"));
    assert_eq!(browser.text("#token-type")?, "DPoP");
    assert_eq!(browser.text("#token-jkt")?, key_jkt, "cnf.jkt is the page's key");
    let answer = browser.text("#api-answer")?;
    assert!(answer.starts_with("200"), "{answer}");
    assert!(answer.contains(&key_jkt), "the API saw x-keybound-jkt: {answer}");
    let proof = browser.text("#proof")?;
    for claim in ["\"htm\": \"GET\"", "\"ath\"", "\"nonce\"", "\"typ\": \"dpop+jwt\""] {
        assert!(proof.contains(claim), "{claim} in the shown proof: {proof}");
    }
    assert!(browser.text("#error")?.is_empty(), "{}", browser.page_state());

    if let Some(path) = std::env::var_os("KEYBOUND_DEMO_SCREENSHOT") {
        browser.screenshot(Path::new(&path))?;
    }

    // Refresh (the refresh token never leaves the module): a new token, bound to the same key,
    // and the API accepts it.
    let claims_before = browser.text("#token-claims")?;
    browser.click("#refresh")?;
    browser.wait_until("the refresh", || {
        Ok(browser.attr("#refresh-result", "data-status")?.as_deref() == Some("success"))
    })?;
    browser.wait_until("the second API call", || {
        Ok(browser.attr("#api-result", "data-calls")?.as_deref() == Some("2"))
    })?;
    assert_eq!(
        browser.attr("#api-result", "data-status")?.as_deref(),
        Some("success"),
        "{}",
        browser.text("#api-result")?
    );
    let claims_after = browser.text("#token-claims")?;
    assert_ne!(claims_before, claims_after, "a new access token");
    assert_eq!(
        browser.text("#token-jkt")?,
        key_jkt,
        "the refreshed token is bound to the page's key"
    );
    assert!(browser.text("#error")?.is_empty(), "{}", browser.page_state());

    browser.click("#replay")?;
    browser.wait_until("the replay's rejection", || {
        Ok(browser.attr("#replay-result", "data-status")?.as_deref() == Some("rejected"))
    })?;
    let rejected = browser.text("#replay-result")?;
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
        browser.screenshot(&PathBuf::from(path).with_extension("replay.png"))?;
    }

    // A callback that is not the answer to our request (forged state), while a login is pending:
    // refused by the module, and the pending login (PKCE verifier and state) is gone.
    let client_id = browser.text("#client-id")?;
    let pending_script = format!("return sessionStorage.getItem('keybound-login:{client_id}');");
    browser.click("#login")?;
    browser.wait_until("the second redirect to keybound-authz", || {
        Ok(browser.url()?.starts_with(&issuer))
    })?;
    browser.go(&format!("{page}cb?code=forged&state=forged&iss={issuer}"))?;
    browser.wait_until("the state check", || {
        Ok(browser.text("#error")?.contains("state_mismatch"))
    })?;
    assert_eq!(browser.text("#token-type")?, "none yet");
    assert_eq!(
        browser.execute(&pending_script)?,
        Value::Null,
        "the pending login was removed"
    );

    // The right state but a wrong iss (RFC 9207: a mix-up attack): refused too.
    browser.go(&page)?;
    browser.wait_until("the page", || browser.enabled("#login"))?;
    browser.click("#login")?;
    browser.wait_until("the third redirect to keybound-authz", || {
        Ok(browser.url()?.starts_with(&issuer))
    })?;
    browser.go(&page)?;
    browser.wait_until("the page", || browser.enabled("#login"))?;
    let pending = browser.execute(&pending_script)?;
    let pending: Value = serde_json::from_str(pending.as_str().expect("a pending login")).unwrap();
    let state = pending["state"].as_str().unwrap();
    assert_eq!(
        pending["verifier"].as_str().unwrap().len(),
        43,
        "a 43-character PKCE verifier"
    );
    browser.go(&format!(
        "{page}cb?code=stolen&state={state}&iss=https%3A%2F%2Fevil.example"
    ))?;
    browser.wait_until("the iss check", || Ok(browser.text("#error")?.contains("iss_mismatch")))?;
    assert_eq!(browser.text("#token-type")?, "none yet");
    assert_eq!(
        browser.execute(&pending_script)?,
        Value::Null,
        "the pending login was removed"
    );
    Ok(())
}
