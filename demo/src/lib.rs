//! # keybound-demo
//!
//! Runs the whole keybound system on 127.0.0.1 and tells its story:
//!
//! - generates (first run only) a demo directory with a dev PKI, client keys and a demo user
//!   (`keybound-authz init`, plus a second client certificate), and on every run the
//!   authorization server's configuration and the Envoy bootstrap for the chosen ports;
//! - starts keybound-authz (SQLite file in the demo directory), Envoy with the keybound filter
//!   (a DPoP listener and an mTLS listener), an upstream echo API, and the demo page server;
//! - writes `endpoints.json` (every URL, the CA file, the clients and their key files, the demo
//!   user, the DPoP nonce mode);
//! - runs the scripted story ([`scenario`]) with a native client;
//! - keeps running until Ctrl-C (or SIGTERM), then stops every process it started. They are
//!   also stopped on errors and panics (their handles kill them when dropped).
//!
//! `cargo xtask demo` builds everything and runs the binary; see the README's Quick start.

pub mod http;
pub mod procs;
pub mod scenario;
pub mod setup;
pub mod web;

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use setup::{Ports, Urls};

/// What to do once everything runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Run the story, then keep running until Ctrl-C.
    Interactive,
    /// Run the story and exit with its status (`--scenario-only`).
    ScenarioOnly,
    /// Skip the story, keep running until Ctrl-C (`--no-scenario`; used by the browser test).
    ServeOnly,
    /// Only generate the demo directory and exit (`--prepare-only`; the compose `init` service).
    PrepareOnly,
    /// Only the echo API and the page, until Ctrl-C (`--web-only`; the compose `web` service).
    WebOnly,
    /// Only the story, against services started by someone else (`--story-only`; the compose
    /// `story` service): waits for the gateway's first JWKS fetch, then runs it.
    StoryOnly,
}

/// The demo's inputs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The demo directory (default `target/demo`).
    pub dir: PathBuf,
    /// The ports.
    pub ports: Ports,
    /// The keybound-authz executable.
    pub authz_bin: PathBuf,
    /// The Envoy executable.
    pub envoy_bin: PathBuf,
    /// The filter (release wasm32-wasip1 build).
    pub filter_wasm: PathBuf,
    /// The browser npm package (`browser/pkg`).
    pub pkg_dir: PathBuf,
    /// What to do.
    pub mode: Mode,
}

fn bind(port: u16, role: &str, flag: &str) -> Result<TcpListener, String> {
    TcpListener::bind(("127.0.0.1", port)).map_err(|e| {
        format!(
            "port {port} (for {role}) is in use on 127.0.0.1 ({e}): stop what uses it or choose another with {flag} N"
        )
    })
}

fn counter(admin: &str, name: &str) -> u64 {
    let url = format!("{admin}/stats?filter={name}");
    http::request(&url, None, "GET", &[], None)
        .ok()
        .and_then(|r| {
            r.text().lines().find_map(|l| {
                let (k, v) = l.split_once(": ")?;
                if k.ends_with(name) { v.trim().parse().ok() } else { None }
            })
        })
        .unwrap_or(0)
}

/// Starts the echo API and the page server.
fn start_web(opts: &Options, urls: &Urls) -> Result<(), String> {
    let echo = bind(opts.ports.echo, "the echo API", "--echo-port")?;
    let page = bind(opts.ports.page, "the demo page", "--page-port")?;
    web::start_echo(echo)?;
    println!("demo: echo API on {}", urls.echo);
    web::start_page(
        page,
        web::PageConfig {
            issuer: urls.issuer.clone(),
            client_id: setup::PAGE_CLIENT.into(),
            redirect_uri: urls.redirect_uri(),
            api: urls.dpop_api.clone(),
            scope: "openid accounts".into(),
        },
        opts.pkg_dir.clone(),
    )?;
    println!("demo: demo page on {}/", urls.page);
    Ok(())
}

fn write_endpoints(files: &setup::DemoFiles, urls: &Urls) -> Result<(), String> {
    let endpoints = setup::endpoints_json(files, urls);
    let text = serde_json::to_string_pretty(&endpoints).map_err(|e| e.to_string())?;
    std::fs::write(&files.endpoints, text + "\n").map_err(|e| format!("{}: {e}", files.endpoints.display()))?;
    println!("demo: endpoints written to {}", files.endpoints.display());
    Ok(())
}

/// Runs the demo; returns whether it ended well (the story passed, or it was stopped cleanly).
///
/// # Errors
/// A message naming what failed (a missing file, a port in use, a process that did not start).
/// Every process started so far is stopped before this returns.
pub fn run(opts: &Options) -> Result<bool, String> {
    match opts.mode {
        Mode::PrepareOnly => {
            let files = setup::prepare(&opts.dir, &opts.authz_bin, &opts.filter_wasm, &opts.ports)?;
            write_endpoints(&files, &Urls::new(&opts.ports))?;
            return Ok(true);
        }
        Mode::WebOnly => {
            let (stop_tx, stop_rx) = mpsc::channel();
            ctrlc::set_handler(move || {
                let _ = stop_tx.send(());
            })
            .map_err(|e| format!("could not install the signal handler: {e}"))?;
            start_web(opts, &Urls::new(&opts.ports))?;
            let _ = stop_rx.recv();
            return Ok(true);
        }
        Mode::StoryOnly => {
            let files = setup::prepare(&opts.dir, &opts.authz_bin, &opts.filter_wasm, &opts.ports)?;
            let urls = Urls::new(&opts.ports);
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            while counter(&urls.admin, "keybound.jwks_fetch_ok") == 0 {
                if std::time::Instant::now() > deadline {
                    return Err(format!(
                        "the gateway at {} did not fetch the JWKS within 120 s",
                        urls.admin
                    ));
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            return scenario::run(&files, &urls).map(|o| o.ok());
        }
        Mode::Interactive | Mode::ScenarioOnly | Mode::ServeOnly => {}
    }
    for (path, what, how) in [
        (&opts.authz_bin, "keybound-authz", "cargo build -p keybound-authz"),
        (
            &opts.envoy_bin,
            "Envoy",
            "cargo xtask test (installs Envoy into .tools/envoy)",
        ),
        (
            &opts.filter_wasm,
            "the filter",
            "cargo build -p keybound-filter --release --target wasm32-wasip1",
        ),
    ] {
        if !path.exists() {
            return Err(format!(
                "{what} is missing at {}: `cargo xtask demo` builds it (or: {how})",
                path.display()
            ));
        }
    }
    let page_ready = opts.pkg_dir.join("keybound_browser.js").exists();
    if !page_ready {
        println!(
            "demo: note: the browser package is missing at {} (`cargo xtask demo` builds it); the page will say so",
            opts.pkg_dir.display()
        );
    }
    let ports = opts.ports;
    ports.check_free()?;
    let urls = Urls::new(&ports);
    std::fs::create_dir_all(&opts.dir).map_err(|e| format!("{}: {e}", opts.dir.display()))?;
    let files = setup::prepare(&opts.dir, &opts.authz_bin, &opts.filter_wasm, &ports)?;

    let (stop_tx, stop_rx) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = stop_tx.send(());
    })
    .map_err(|e| format!("could not install the Ctrl-C handler: {e}"))?;

    start_web(opts, &urls)?;

    println!("demo: starting keybound-authz ({})", files.authz_config.display());
    let authz = procs::start_authz(&opts.authz_bin, &files.authz_config)?;
    println!("demo: keybound-authz: issuer {} (pid {})", urls.issuer, authz.id());
    println!(
        "demo: starting Envoy with the keybound filter ({})",
        files.envoy_config.display()
    );
    let mut envoy = procs::start_envoy(&opts.envoy_bin, &files.envoy_config)?;
    let admin = urls.admin.clone();
    envoy.wait_until("the filter's first JWKS fetch", Duration::from_secs(60), || {
        counter(&admin, "keybound.jwks_fetch_ok") > 0
    })?;
    println!(
        "demo: Envoy (pid {}): DPoP route {}, mTLS route {}, admin {}; JWKS fetched from keybound-authz",
        envoy.id(),
        urls.dpop_api,
        urls.mtls_api,
        urls.admin
    );

    write_endpoints(&files, &urls)?;

    let mut ok = true;
    if opts.mode != Mode::ServeOnly {
        let outcome = scenario::run(&files, &urls)?;
        ok = outcome.ok();
        if opts.mode == Mode::ScenarioOnly {
            if !ok {
                println!(
                    "\nkeybound-authz's last output:\n{}\n\nEnvoy's last output:\n{}",
                    authz.tail(20),
                    envoy.tail(20)
                );
            }
            return Ok(ok);
        }
    }

    println!(
        "\nThe demo runs. Open the demo page: {}/\n\
         The certificates come from the demo's own CA ({}): import it into your browser, or start Chromium with\n  \
         chromium --user-data-dir=$(mktemp -d) --ignore-certificate-errors-spki-list={} {}/\n\
         Log in as {} with password {}.\n\
         demo: ready (endpoints: {})\n\
         The gateway's decisions are printed below as they happen. Press Ctrl-C to stop.",
        urls.page,
        files.ca().display(),
        files.server_spki_sha256,
        urls.page,
        files.user.0,
        files.user.1,
        files.endpoints.display()
    );
    let mut authz = authz;
    // The story's decisions were shown by the story itself.
    let _ = envoy.new_lines();
    loop {
        match stop_rx.recv_timeout(Duration::from_secs(1)) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // The filter's decision log (one JSON line per request), as it happens.
                for line in envoy.new_lines() {
                    if line.contains("\"keybound\":\"")
                        && let Some(i) = line.find('{')
                    {
                        println!("gateway: {}", line.get(i..).unwrap_or_default());
                    }
                }
                if let Err(e) = authz.check_alive().and_then(|()| envoy.check_alive()) {
                    // Ctrl-C in a terminal reaches the children too; that is a stop, not a failure.
                    if stop_rx.recv_timeout(Duration::from_millis(500)).is_ok() {
                        break;
                    }
                    return Err(e);
                }
            }
        }
    }
    println!("\ndemo: stopping");
    drop(envoy);
    drop(authz);
    Ok(ok)
}
