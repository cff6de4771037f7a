//! Issue 16, item 3 (the bundlers): the keybound-browser npm tarball installed into real app
//! projects (`browser/bundlers/`) and used from headless Chromium through the keybound filter in a
//! real Envoy (DPoP nonces required, no CORS filter, `cors.allowed_origins` = the app's origin,
//! in front of an upstream that does its own CORS):
//!
//! - `vite`: Vite 8 from npm with **no configuration**, both its dev server (`npm run dev`, started
//!   in its own session with `setsid` on a free port and stopped by its process group) and its
//!   production build (`npm run build`, `dist/` served by the test);
//! - `vite7`: the same with Vite 7, whose dev server needs one line of configuration
//!   (`optimizeDeps.exclude`, in its `vite.config.js`); the dev server also runs without it, and
//!   the page must then fail to compile the wasm (Vite served its `index.html` in its place), so
//!   the line is known to be needed;
//! - `webpack`: webpack 5 from npm with no configuration (`npm run build`: `webpack --mode
//!   production`, default entry `src/index.js`, `dist/main.js` loaded by `index.html`);
//! - `plain`: no bundler, a page whose `<script type="module">` imports the package's files from
//!   `node_modules/keybound-browser/` (served by the test).
//!
//! Each app's `src/index.js` (`browser/bundlers/app.js`, copied there by `entries.mjs`) loads
//! every JavaScript entry point the package exports (the full entry and, when the tarball has it, `keybound-browser/dpop`), each with its own `init()`
//! without arguments (so the wasm is found where the bundler put it), and opens a DPoP key per
//! entry. For each entry the test reads the key's thumbprint, mints a token bound to it, has the
//! page call the gateway with the module's `fetch` (a `401 use_dpop_nonce`, then the retry), and
//! expects 200 with the upstream's echo: the gateway verified a proof from that key. How long
//! each install, build, server start, page load and call took is printed.
//!
//! Ignored by a plain `cargo test` (it needs Chromium, chromedriver, Envoy, the release filter,
//! node and npm, the projects' own npm packages and the tarball): the browser step of
//! `cargo xtask test` runs it with `--ignored` after `npm ci` in each project, naming the tarball
//! with `KEYBOUND_BROWSER_TGZ` (default: the newest `target/package/keybound-browser-*.tgz`). The
//! test installs the tarball with `npm install --no-save` (the projects' committed `package.json`
//! and `package-lock.json` stay as they are).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test"
)]

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keybound_e2e::StaticSite;
use keybound_e2e::Upstream;
use keybound_e2e::webdriver::Browser;
use serde_json::{Value, json};

/// The package's name on npm.
const PACKAGE: &str = "keybound-browser";

/// The path the pages call on the gateway.
const API_PATH: &str = "/api/bundlers";

/// The folder of the app projects.
fn projects() -> PathBuf {
    keybound_e2e::root().join("browser/bundlers")
}

/// The tarball: `KEYBOUND_BROWSER_TGZ`, else the newest `target/package/keybound-browser-*.tgz`.
fn tarball() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("KEYBOUND_BROWSER_TGZ") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("KEYBOUND_BROWSER_TGZ: no file {}", path.display()))
        };
    }
    let dir = keybound_e2e::root().join("target/package");
    let newest = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{PACKAGE}-")) && n.ends_with(".tgz"))
        })
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    newest.ok_or_else(|| {
        format!(
            "no {PACKAGE} tarball: set KEYBOUND_BROWSER_TGZ, or build one into {} (`cargo xtask test` does)",
            dir.display()
        )
    })
}

/// Runs `cmd` to the end; its time, or an error with the end of its output.
fn run(what: &str, cmd: &mut Command) -> Result<Duration, String> {
    let start = Instant::now();
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("{what}: {e}"))?;
    let took = start.elapsed();
    if out.status.success() {
        Ok(took)
    } else {
        Err(format!(
            "{what}: {}\n{}{}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stdout)),
            tail(&String::from_utf8_lossy(&out.stderr))
        ))
    }
}

/// The last 40 lines of `text`.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(40);
    lines[from..].iter().map(|l| format!("{l}\n")).collect()
}

/// Installs the tarball into the project (after making sure its own npm packages are there).
fn install(project: &Path, tgz: &Path) -> Result<Duration, String> {
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(project.join("package.json")).map_err(|e| format!("{}: {e}", project.display()))?,
    )
    .map_err(|e| format!("{}/package.json: {e}", project.display()))?;
    if let Some(deps) = manifest["devDependencies"].as_object() {
        for name in deps.keys() {
            if !project.join("node_modules").join(name).is_dir() {
                return Err(format!(
                    "{} has no node_modules/{name}: run `npm ci` there (the browser step of `cargo xtask test` does)",
                    project.display()
                ));
            }
        }
    }
    run(
        &format!("npm install --no-save {} in {}", tgz.display(), project.display()),
        Command::new("npm")
            .current_dir(project)
            .args(["install", "--no-save", "--no-audit", "--no-fund"])
            .arg(tgz),
    )
}

/// `npm run build` in the project, after removing its `dist/` (webpack keeps old files there).
fn build(project: &Path) -> Result<Duration, String> {
    let dist = project.join("dist");
    if dist.exists() {
        std::fs::remove_dir_all(&dist).map_err(|e| format!("{}: {e}", dist.display()))?;
    }
    run(
        &format!("npm run build in {}", project.display()),
        Command::new("npm").current_dir(project).args(["run", "build"]),
    )
}

/// The names of the JavaScript entry points the installed package exports (`keybound-browser`,
/// `keybound-browser/dpop`, …): the subpaths of its `exports` map whose target for a browser
/// (conditions `browser`, `import`, `module`, `default`) is a `.js`/`.mjs` file. The apps'
/// `../entries.mjs` reads the same map.
fn exported_entries(project: &Path) -> Result<Vec<String>, String> {
    fn target(value: &Value) -> Option<&str> {
        match value {
            Value::String(s) => Some(s),
            Value::Object(map) => ["browser", "import", "module", "default"]
                .iter()
                .filter_map(|c| map.get(*c))
                .find_map(target),
            _ => None,
        }
    }
    let path = project.join("node_modules").join(PACKAGE).join("package.json");
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    let exports = manifest["exports"]
        .as_object()
        .ok_or_else(|| format!("{}: no exports map", path.display()))?;
    let mut names: Vec<String> = exports
        .iter()
        .filter(|(subpath, value)| {
            !subpath.contains('*') && target(value).is_some_and(|f| f.ends_with(".js") || f.ends_with(".mjs"))
        })
        .map(|(subpath, _)| match subpath.as_str() {
            "." => PACKAGE.to_owned(),
            s => format!("{PACKAGE}/{}", s.trim_start_matches("./")),
        })
        .collect();
    names.sort();
    if names.first().map(String::as_str) != Some(PACKAGE) {
        return Err(format!("{}: no JavaScript entry \".\": {names:?}", path.display()));
    }
    Ok(names)
}

/// The files of a build's output folder with their sizes, for the log.
fn files(dir: &Path) -> String {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        let mut entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, base, out);
            } else if let (Ok(rel), Ok(meta)) = (path.strip_prefix(base), std::fs::metadata(&path)) {
                out.push(format!("{} {} B", rel.display(), meta.len()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.join(", ")
}

/// Vite's dev server (`npm run dev`), started with `setsid` (its own session and process group,
/// whose id is the child's PID) and stopped, with everything npm started under it, by signalling
/// that group: SIGTERM, then SIGKILL after 10 s.
struct DevServer {
    child: Child,
    log: PathBuf,
}

impl DevServer {
    /// Starts it on `port` with `extra` arguments for `vite`, and waits until it answers; also
    /// returns how long that took.
    fn start(project: &Path, port: u16, extra: &[String]) -> Result<(DevServer, Duration), String> {
        let start = Instant::now();
        let log = std::env::temp_dir().join(format!("kb-vite-dev-{}-{port}.log", std::process::id()));
        let out = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new("setsid")
            .current_dir(project)
            .args(["npm", "run", "dev", "--", "--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .args(["--strictPort", "--clearScreen", "false"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("setsid npm run dev: {e}"))?;
        let mut server = DevServer { child, log };
        server.wait_ready(port)?;
        Ok((server, start.elapsed()))
    }

    /// Waits until it answers `/` with 200.
    fn wait_ready(&mut self, port: u16) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let host = format!("127.0.0.1:{port}");
        loop {
            if let Ok(r) = keybound_e2e::request(port, "GET", "/", &[("host", &host)])
                && r.status == 200
            {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("the Vite dev server exited ({status}): {}", self.log_tail()));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the Vite dev server did not answer in 60 s: {}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_tail(&self) -> String {
        tail(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        self.signal("-KILL");
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// What one app run measured.
struct Measured {
    /// The page load: navigation until every entry's module is initialised and its key open.
    load: Duration,
    /// The DPoP calls through the gateway (each: 401 with a nonce, then 200).
    calls: Duration,
    /// The entries exercised.
    entries: Vec<String>,
}

/// The app at `origin` in `browser`: a gateway for that origin, the page loaded, then for each of
/// `entries` a token for its key and a call through the gateway that must come back 200 with the
/// upstream's echo of the key's thumbprint.
fn exercise(browser: &Browser, origin: &str, entries: &[String]) -> Result<Measured, String> {
    let upstream = Upstream::start_cors(&[origin.to_owned()])?;
    let envoy = common::browser_gateway(&[origin.to_owned()], &upstream);
    let api = format!("http://127.0.0.1:{}{API_PATH}", envoy.port);

    let start = Instant::now();
    browser.go(&format!("{origin}/"))?;
    browser.wait_until("the app's keys", || {
        match browser.attr("body", "data-ready")?.as_deref() {
            Some("yes") => Ok(true),
            Some(other) => Err(format!("the page says {other}: {}", browser.page_state())),
            None => Ok(false),
        }
    })?;
    let load = start.elapsed();

    let mut loaded: Vec<String> =
        serde_json::from_value(browser.execute("return Object.keys(window.keybound.entries);")?)
            .map_err(|e| e.to_string())?;
    loaded.sort();
    if loaded != entries {
        return Err(format!(
            "the page loaded the entries {loaded:?}, the package exports {entries:?}"
        ));
    }

    let start = Instant::now();
    for name in entries {
        let jkt = browser.execute_with(
            "return window.keybound.entries[arguments[0]].thumbprint;",
            &[json!(name)],
        )?;
        let jkt = jkt
            .as_str()
            .filter(|j| j.len() == 43)
            .ok_or_else(|| format!("{name}: not a thumbprint: {jkt}"))?;
        let token = common::jkt_token(jkt);
        let result = browser.execute_with(
            "return window.keybound.entries[arguments[0]].call(arguments[1], arguments[2]);",
            &[json!(name), json!(api), json!(token)],
        )?;
        if result["ok"] != true || result["status"] != 200 {
            return Err(format!(
                "{name}: the call through the gateway: {result}\n{}",
                envoy.log_tail()
            ));
        }
        let seen: Value = serde_json::from_str(result["body"].as_str().unwrap_or_default())
            .map_err(|e| format!("{name}: not the upstream's echo: {e}: {result}"))?;
        if seen["x-keybound-jkt"] != jkt || seen[":path"] != API_PATH || seen["origin"] != origin {
            return Err(format!(
                "{name}: the upstream saw {seen}, expected x-keybound-jkt {jkt} from {origin}"
            ));
        }
        if !result["nonce"].is_string() {
            return Err(format!(
                "{name}: the module learned no nonce from the gateway: {result}"
            ));
        }
    }
    let calls = start.elapsed();
    let allowed = envoy.decisions("allow", Some("ok"));
    if allowed != entries.len() as u64 {
        return Err(format!(
            "the gateway allowed {allowed} requests, expected one per entry ({})",
            entries.len()
        ));
    }
    Ok(Measured {
        load,
        calls,
        entries: entries.to_vec(),
    })
}

/// Seconds with two decimals.
fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// One app run's line for the summary.
fn summary(name: &str, steps: &[(&str, Duration)], measured: &Measured) -> String {
    let mut parts: Vec<String> = steps.iter().map(|(what, d)| format!("{what} {}", secs(*d))).collect();
    parts.push(format!("page load {}", secs(measured.load)));
    parts.push(format!("DPoP calls {}", secs(measured.calls)));
    format!("{name}: ok ({}); {}", measured.entries.join(", "), parts.join(", "))
}

/// A Vite project (`name`, shown as `label`): install, then the dev server, then the production
/// build. For a project with a `vite.config.js` (a Vite that needs configuration for the package),
/// the dev server also runs without it (`--config` naming an empty configuration), and the page
/// must fail to compile the wasm: the configuration is truly needed.
fn vite(name: &str, label: &str, browser: &Browser, tgz: &Path, report: &mut Vec<Result<String, String>>) {
    let project = projects().join(name);
    let installed = install(&project, tgz).and_then(|t| Ok((t, exported_entries(&project)?)));
    let (install_time, entries) = match installed {
        Ok(done) => done,
        Err(e) => {
            report.push(Err(format!("{label}: {e}")));
            return;
        }
    };

    // The dev server, with its dependency cache (node_modules/.vite) emptied each time: the
    // optimizer starts from the package just installed, as after a fresh `npm install`.
    let dev = |extra: &[String]| {
        let _ = std::fs::remove_dir_all(project.join("node_modules/.vite"));
        let port = keybound_e2e::free_port()?;
        let (server, ready) = DevServer::start(&project, port, extra)?;
        Ok::<_, String>((server, format!("http://127.0.0.1:{port}"), ready))
    };
    let with_config = dev(&[]).and_then(|(server, origin, ready)| {
        let measured = exercise(browser, &origin, &entries)
            .map_err(|e| format!("{e}\nthe dev server's log:\n{}", server.log_tail()))?;
        Ok(summary(
            &format!("{label} dev server"),
            &[("install", install_time), ("server start", ready)],
            &measured,
        ))
    });
    report.push(with_config.map_err(|e| format!("{label} dev server: {e}")));

    if project.join("vite.config.js").exists() {
        let empty = std::env::temp_dir().join(format!("kb-vite-empty-config-{}.mjs", std::process::id()));
        let without = std::fs::write(&empty, "export default {};\n")
            .map_err(|e| format!("{}: {e}", empty.display()))
            .and_then(|()| dev(&["--config".to_owned(), empty.display().to_string()]))
            .and_then(|(server, origin, _)| {
                let error = wasm_fails(browser, &origin)?;
                drop(server);
                Ok(format!(
                    "{label} dev server without vite.config.js: fails as expected ({error})"
                ))
            });
        let _ = std::fs::remove_file(&empty);
        report.push(without.map_err(|e| format!("{label} dev server without vite.config.js: {e}")));
    }

    let built = (|| {
        let took = build(&project)?;
        println!("bundlers: {label} build: dist/: {}", files(&project.join("dist")));
        let site = StaticSite::dir(&project.join("dist"))?;
        let measured = exercise(browser, &site.origin(), &entries)?;
        Ok::<_, String>(summary(
            &format!("{label} build"),
            &[("install", install_time), ("build", took)],
            &measured,
        ))
    })();
    report.push(built.map_err(|e| format!("{label} build: {e}")));
}

/// Loads the app at `origin` and expects it to fail to compile the package's wasm (a bundler
/// that served something else in its place); returns the page's error.
fn wasm_fails(browser: &Browser, origin: &str) -> Result<String, String> {
    browser.go(&format!("{origin}/"))?;
    browser.wait_until("the app's failure", || {
        Ok(browser.attr("body", "data-ready")?.is_some())
    })?;
    let error = browser.text("#error")?;
    if browser.attr("body", "data-ready")?.as_deref() == Some("error") && error.starts_with("CompileError") {
        Ok(error)
    } else {
        Err(format!(
            "the app was expected to fail to compile the wasm: {}",
            browser.page_state()
        ))
    }
}

/// A project built with `npm run build` and served from `served` (relative to the project).
fn built_app(name: &str, served: &str, browser: &Browser, tgz: &Path) -> Result<String, String> {
    let project = projects().join(name);
    let install_time = install(&project, tgz)?;
    let entries = exported_entries(&project)?;
    let took = build(&project)?;
    if project.join("dist").is_dir() {
        println!("bundlers: {name}: dist/: {}", files(&project.join("dist")));
    }
    let site = StaticSite::dir(&project.join(served))?;
    let measured = exercise(browser, &site.origin(), &entries)?;
    Ok(summary(name, &[("install", install_time), ("build", took)], &measured))
}

#[test]
#[ignore = "needs Chromium, chromedriver, Envoy, the release filter, node, npm, the projects' npm packages and the package tarball: run by `cargo xtask test` (browser step)"]
fn the_tarball_works_in_vite_dev_and_build_webpack_5_and_a_plain_module_page_through_the_gateway() {
    let tgz = tarball().unwrap();
    println!("bundlers: the tarball {}", tgz.display());
    let browser = Browser::start(&[]).unwrap();
    let mut report = Vec::new();
    vite("vite", "vite", &browser, &tgz, &mut report);
    vite("vite7", "vite 7 (optimizeDeps.exclude)", &browser, &tgz, &mut report);
    report.push(built_app("webpack", ".", &browser, &tgz).map_err(|e| format!("webpack: {e}")));
    report.push(built_app("plain", ".", &browser, &tgz).map_err(|e| format!("plain: {e}")));

    let mut failed = Vec::new();
    for line in &report {
        match line {
            Ok(line) => println!("bundlers: {line}"),
            Err(e) => {
                println!("bundlers: FAILED {e}");
                failed.push(e.clone());
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} app runs failed:\n{}",
        failed.len(),
        report.len(),
        failed.join("\n\n")
    );
}
