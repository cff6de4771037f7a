//! The WebDriver client of the end-to-end browser tests: `chromedriver` (Debian's
//! `chromium-driver`) with one headless Chromium session (Debian's `chromium`, a fresh profile),
//! driven with [fantoccini](https://docs.rs/fantoccini) on a one-thread tokio runtime behind a
//! blocking API. Used by `tests/tests/browser_*.rs`, `tests/tests/bundlers.rs` and
//! `demo/tests/browser.rs`.
//!
//! Every call returns an error instead of panicking; waits give up after a deadline with the
//! page's URL and state in the message.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use crate::free_port;

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

/// chromedriver with one headless Chromium session (fresh profile); the session closed, both
/// stopped, and the profile removed, on drop.
pub struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    profile: PathBuf,
}

impl Browser {
    /// Starts chromedriver on a free port and a session of headless Chromium with [`FLAGS`], a
    /// fresh `--user-data-dir` and `extra_args` (e.g. `--ignore-certificate-errors-spki-list=…`).
    ///
    /// # Errors
    /// If chromedriver is missing or does not listen within 20 s, or the session is refused.
    pub fn start(extra_args: &[String]) -> Result<Browser, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("a tokio runtime: {e}"))?;
        let port = free_port()?;
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{CHROMEDRIVER} (Debian chromium-driver; `cargo xtask test` installs it): {e}"))?;
        let mut b = Browser {
            runtime,
            client: None,
            driver,
            profile: PathBuf::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() >= deadline {
                return Err("chromedriver did not start".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        b.profile = fresh_profile()?;
        let mut args: Vec<String> = FLAGS.iter().map(|f| (*f).to_owned()).collect();
        args.push(format!("--user-data-dir={}", b.profile.display()));
        args.extend(extra_args.iter().cloned());
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("goog:chromeOptions".into(), json!({ "binary": CHROMIUM, "args": args }));
        let client = b
            .runtime
            .block_on(
                ClientBuilder::new(HttpConnector::new())
                    .capabilities(caps)
                    .connect(&format!("http://127.0.0.1:{port}")),
            )
            .map_err(|e| format!("no WebDriver session: {e}"))?;
        b.client = Some(client);
        Ok(b)
    }

    /// Runs one WebDriver command of the session; `what` names it in the error.
    fn run<T, F>(&self, what: &str, command: impl FnOnce(Client) -> F) -> Result<T, String>
    where
        F: Future<Output = Result<T, fantoccini::error::CmdError>>,
    {
        let client = self.client.clone().ok_or("no WebDriver session")?;
        self.runtime
            .block_on(command(client))
            .map_err(|e| format!("WebDriver {what}: {e}"))
    }

    /// Navigates to `url`.
    ///
    /// # Errors
    /// If chromedriver cannot be reached or refuses.
    pub fn go(&self, url: &str) -> Result<(), String> {
        let url = url.to_owned();
        self.run(&format!("go {url}"), |c| async move { c.goto(&url).await })
    }

    /// The current page's URL.
    ///
    /// # Errors
    /// If chromedriver cannot be reached or refuses.
    pub fn url(&self) -> Result<String, String> {
        self.run("url", |c| async move { c.current_url().await })
            .map(String::from)
    }

    /// The first element matching the CSS selector, if any (its WebDriver reference).
    ///
    /// # Errors
    /// If chromedriver cannot be reached, or fails other than with "no such element".
    pub fn find(&self, css: &str) -> Result<Option<String>, String> {
        Ok(self.find_element(css)?.map(|e| e.element_id().to_string()))
    }

    /// [`Browser::find`], waiting up to 30 s for the element.
    ///
    /// # Errors
    /// If it does not appear (the message has the page's URL and state).
    pub fn wait_find(&self, css: &str) -> Result<String, String> {
        Ok(self.wait_element(css)?.element_id().to_string())
    }

    /// The first element matching the CSS selector, if any.
    fn find_element(&self, css: &str) -> Result<Option<Element>, String> {
        let css = css.to_owned();
        self.run(&format!("find {css}"), |c| async move {
            match c.find(Locator::Css(&css)).await {
                Ok(e) => Ok(Some(e)),
                Err(e) if e.is_no_such_element() => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    /// [`Browser::find_element`], waiting up to 30 s for the element.
    fn wait_element(&self, css: &str) -> Result<Element, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(e) = self.find_element(css)? {
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
    /// If it does not appear, or chromedriver refuses.
    pub fn click(&self, css: &str) -> Result<(), String> {
        let e = self.wait_element(css)?;
        self.run(&format!("click {css}"), |_| async move { e.click().await })
    }

    /// Types `text` into the element (waiting for it).
    ///
    /// # Errors
    /// If it does not appear, or chromedriver refuses.
    pub fn type_into(&self, css: &str, text: &str) -> Result<(), String> {
        let e = self.wait_element(css)?;
        let text = text.to_owned();
        self.run(&format!("type into {css}"), |_| async move { e.send_keys(&text).await })
    }

    /// The element's rendered text (waiting for it).
    ///
    /// # Errors
    /// If it does not appear, or chromedriver refuses.
    pub fn text(&self, css: &str) -> Result<String, String> {
        let e = self.wait_element(css)?;
        self.run(&format!("text of {css}"), |_| async move { e.text().await })
    }

    /// An attribute of the element, if the element and the attribute exist (no waiting).
    ///
    /// # Errors
    /// If chromedriver cannot be reached or refuses.
    pub fn attr(&self, css: &str, name: &str) -> Result<Option<String>, String> {
        let Some(e) = self.find_element(css)? else {
            return Ok(None);
        };
        let name = name.to_owned();
        self.run(
            &format!("attribute {name} of {css}"),
            |_| async move { e.attr(&name).await },
        )
    }

    /// Whether the element exists and is enabled (no waiting).
    ///
    /// # Errors
    /// If chromedriver cannot be reached or refuses.
    pub fn enabled(&self, css: &str) -> Result<bool, String> {
        let Some(e) = self.find_element(css)? else {
            return Ok(false);
        };
        self.run(&format!("enabled {css}"), |_| async move { e.is_enabled().await })
    }

    /// Saves a PNG of the page.
    ///
    /// # Errors
    /// If chromedriver refuses, or the file cannot be written.
    pub fn screenshot(&self, path: &Path) -> Result<(), String> {
        let png = self.run("screenshot", |c| async move { c.screenshot().await })?;
        std::fs::write(path, png).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The text of the page's `#error` and `#log` elements (empty when absent), for failure
    /// messages.
    pub fn page_state(&self) -> String {
        let get = |css: &str| {
            self.find_element(css)
                .ok()
                .flatten()
                .and_then(|e| self.run("text", |_| async move { e.text().await }).ok())
                .unwrap_or_default()
        };
        format!("error: {:?}; log: {:?}", get("#error"), get("#log"))
    }

    /// Runs a script in the page (WebDriver "execute script") and returns its result.
    ///
    /// # Errors
    /// If chromedriver cannot be reached, or the script throws.
    pub fn execute(&self, script: &str) -> Result<Value, String> {
        self.execute_with(script, &[])
    }

    /// [`Browser::execute`] with arguments (`arguments[0]`, … in the script). A script that
    /// returns a Promise is awaited (WebDriver waits for it, up to the session's script timeout,
    /// 30 s by default).
    ///
    /// # Errors
    /// If chromedriver cannot be reached, or the script throws or rejects.
    pub fn execute_with(&self, script: &str, args: &[Value]) -> Result<Value, String> {
        let (script, args) = (script.to_owned(), args.to_vec());
        self.run("execute script", |c| async move { c.execute(&script, args).await })
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
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(client.close());
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
