//! A small WebDriver client: `chromedriver` (Debian's `chromium-driver`) with one headless
//! Chromium session (Debian's `chromium`, a fresh profile), driven over WebDriver's HTTP API.
//! Used by the end-to-end browser tests (`tests/tests/browser_cors.rs`, `demo/tests/browser.rs`).
//!
//! Every call returns an error instead of panicking; waits give up after a deadline with the
//! page's URL and state in the message.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Response, free_port, parse_response, tls};

/// The key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver as Debian installs it.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Chromium as Debian installs it.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// The Chromium flags of every session (the profile directory is added to them).
pub const FLAGS: [&str; 7] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
];

/// chromedriver with one headless Chromium session (fresh profile); both stopped, and the
/// profile removed, on drop.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    profile: PathBuf,
}

impl Browser {
    /// Starts chromedriver on a free port and a session of headless Chromium with [`FLAGS`], a
    /// fresh `--user-data-dir` and `extra_args` (e.g. `--ignore-certificate-errors-spki-list=…`).
    ///
    /// # Errors
    /// If chromedriver is missing or does not answer within 20 s, or the session is refused.
    pub fn start(extra_args: &[String]) -> Result<Browser, String> {
        let port = free_port()?;
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{CHROMEDRIVER} (Debian chromium-driver; `cargo xtask test` installs it): {e}"))?;
        let mut b = Browser {
            driver,
            port,
            session: String::new(),
            profile: PathBuf::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while b.http("GET", "/status", None).is_err() {
            if Instant::now() >= deadline {
                return Err("chromedriver did not start".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        b.profile = fresh_profile()?;
        let mut args: Vec<String> = FLAGS.iter().map(|f| (*f).to_owned()).collect();
        args.push(format!("--user-data-dir={}", b.profile.display()));
        args.extend(extra_args.iter().cloned());
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
        }}});
        let res = b.call("POST", "/session", &caps)?;
        b.session = res
            .get("sessionId")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("no WebDriver session: {res}"))?
            .to_owned();
        Ok(b)
    }

    /// One HTTP request to chromedriver.
    fn http(&self, method: &str, path: &str, body: Option<&str>) -> Result<Response, String> {
        let mut s =
            std::net::TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| format!("connect chromedriver: {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(90)))
            .map_err(|e| e.to_string())?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{}\r\nconnection: close\r\n",
            self.port
        );
        if let Some(b) = body {
            req.push_str(&format!(
                "content-type: application/json\r\ncontent-length: {}\r\n",
                b.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(body.unwrap_or(""));
        parse_response(&tls::write_then_read_response(&mut s, req.as_bytes())?)
    }

    /// A WebDriver command (the body is sent with POST only); its `value`.
    ///
    /// # Errors
    /// If chromedriver cannot be reached or answers other than 200.
    pub fn call(&self, method: &str, path: &str, body: &Value) -> Result<Value, String> {
        let body = body.to_string();
        let res = self.http(method, path, (method == "POST").then_some(body.as_str()))?;
        let json = res.json();
        if res.status != 200 {
            return Err(format!("WebDriver {method} {path}: {} {json}", res.status));
        }
        Ok(json.get("value").cloned().unwrap_or(Value::Null))
    }

    /// The path of a command of this session.
    fn s(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    /// Navigates to `url`.
    ///
    /// # Errors
    /// As [`Browser::call`].
    pub fn go(&self, url: &str) -> Result<(), String> {
        self.call("POST", &self.s("/url"), &json!({ "url": url })).map(|_| ())
    }

    /// The current page's URL.
    ///
    /// # Errors
    /// As [`Browser::call`].
    pub fn url(&self) -> Result<String, String> {
        let v = self.call("GET", &self.s("/url"), &json!({}))?;
        v.as_str().map(str::to_owned).ok_or_else(|| format!("not a URL: {v}"))
    }

    /// The first element matching the CSS selector, if any (its WebDriver reference).
    ///
    /// # Errors
    /// If chromedriver cannot be reached, or answers 200 without an element.
    pub fn find(&self, css: &str) -> Result<Option<String>, String> {
        let body = json!({"using": "css selector", "value": css}).to_string();
        let res = self.http("POST", &self.s("/element"), Some(&body))?;
        let json = res.json();
        let element = json
            .get("value")
            .and_then(|v| v.get(ELEMENT))
            .and_then(Value::as_str)
            .map(str::to_owned);
        if res.status == 200 && element.is_none() {
            return Err(format!("WebDriver find {css}: {} {json}", res.status));
        }
        Ok(element)
    }

    /// [`Browser::find`], waiting up to 30 s for the element.
    ///
    /// # Errors
    /// If it does not appear (the message has the page's URL and state).
    pub fn wait_find(&self, css: &str) -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(e) = self.find(css)? {
                return Ok(e);
            }
            if Instant::now() >= deadline {
                return Err(format!("no {css} on {}: {}", self.url()?, self.page_state()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Clicks the element (waiting for it).
    ///
    /// # Errors
    /// As [`Browser::wait_find`] and [`Browser::call`].
    pub fn click(&self, css: &str) -> Result<(), String> {
        let e = self.wait_find(css)?;
        self.call("POST", &self.s(&format!("/element/{e}/click")), &json!({}))
            .map(|_| ())
    }

    /// Types `text` into the element (waiting for it).
    ///
    /// # Errors
    /// As [`Browser::wait_find`] and [`Browser::call`].
    pub fn type_into(&self, css: &str, text: &str) -> Result<(), String> {
        let e = self.wait_find(css)?;
        self.call(
            "POST",
            &self.s(&format!("/element/{e}/value")),
            &json!({ "text": text }),
        )
        .map(|_| ())
    }

    /// The element's rendered text (waiting for it).
    ///
    /// # Errors
    /// As [`Browser::wait_find`] and [`Browser::call`].
    pub fn text(&self, css: &str) -> Result<String, String> {
        let e = self.wait_find(css)?;
        Ok(self
            .call("GET", &self.s(&format!("/element/{e}/text")), &json!({}))?
            .as_str()
            .unwrap_or("")
            .to_owned())
    }

    /// An attribute of the element, if the element and the attribute exist (no waiting).
    ///
    /// # Errors
    /// As [`Browser::call`].
    pub fn attr(&self, css: &str, name: &str) -> Result<Option<String>, String> {
        let Some(e) = self.find(css)? else {
            return Ok(None);
        };
        Ok(self
            .call("GET", &self.s(&format!("/element/{e}/attribute/{name}")), &json!({}))?
            .as_str()
            .map(str::to_owned))
    }

    /// Whether the element exists and is enabled (no waiting).
    ///
    /// # Errors
    /// As [`Browser::call`].
    pub fn enabled(&self, css: &str) -> Result<bool, String> {
        let Some(e) = self.find(css)? else {
            return Ok(false);
        };
        Ok(self
            .call("GET", &self.s(&format!("/element/{e}/enabled")), &json!({}))?
            .as_bool()
            .unwrap_or(false))
    }

    /// Saves a PNG of the page.
    ///
    /// # Errors
    /// As [`Browser::call`], an undecodable screenshot, or if the file cannot be written.
    pub fn screenshot(&self, path: &Path) -> Result<(), String> {
        let b64 = self.call("GET", &self.s("/screenshot"), &json!({}))?;
        let url_safe: String = b64
            .as_str()
            .ok_or("no screenshot")?
            .chars()
            .filter(|c| *c != '=')
            .map(|c| match c {
                '+' => '-',
                '/' => '_',
                c => c,
            })
            .collect();
        let png = keybound_core::b64::decode(&url_safe).map_err(|e| format!("screenshot: {e:?}"))?;
        std::fs::write(path, png).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The text of the page's `#error` and `#log` elements (empty when absent), for failure
    /// messages.
    pub fn page_state(&self) -> String {
        let get = |css: &str| {
            self.find(css)
                .ok()
                .flatten()
                .and_then(|e| {
                    self.call("GET", &self.s(&format!("/element/{e}/text")), &json!({}))
                        .ok()
                })
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        };
        format!("error: {:?}; log: {:?}", get("#error"), get("#log"))
    }

    /// Runs a script in the page (WebDriver "execute script") and returns its result.
    ///
    /// # Errors
    /// As [`Browser::call`] (a script that throws is an error).
    pub fn execute(&self, script: &str) -> Result<Value, String> {
        self.execute_with(script, &[])
    }

    /// [`Browser::execute`] with arguments (`arguments[0]`, … in the script). A script that
    /// returns a Promise is awaited (WebDriver waits for it, up to the session's script timeout,
    /// 30 s by default).
    ///
    /// # Errors
    /// As [`Browser::call`] (a script that throws or rejects is an error).
    pub fn execute_with(&self, script: &str, args: &[Value]) -> Result<Value, String> {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            &json!({ "script": script, "args": args }),
        )
    }

    /// Waits up to 45 s until `f` says yes.
    ///
    /// # Errors
    /// An error of `f`, or, when time is up, one naming `what` with the page's URL and state.
    pub fn wait_until(&self, what: &str, mut f: impl FnMut() -> Result<bool, String>) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(45);
        while !f()? {
            if Instant::now() >= deadline {
                return Err(format!(
                    "{what} did not happen on {}: {}",
                    self.url()?,
                    self.page_state()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.http("DELETE", &self.s(""), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        if !self.profile.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.profile);
        }
    }
}

/// A new, empty Chromium profile directory in the temporary directory (unique per process and
/// call).
fn fresh_profile() -> Result<PathBuf, String> {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "kb-chromium-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}
