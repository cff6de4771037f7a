//! The browser module's step of `cargo xtask test`: installs what it needs (wasm-bindgen-cli
//! matching Cargo.lock into `.tools/wasm-bindgen`, Debian's `chromium` and `chromium-driver`, the
//! npm packages of `browser/js`), lints the crate for `wasm32-unknown-unknown` (default features,
//! without `login`, with `software-key`), runs keybound-core's unit tests without its default
//! `curve-checks` feature (as the browser builds it), runs its wasm-bindgen tests in headless Chromium against a
//! local test server (default build and software-key build), builds the npm package with the
//! function `cargo xtask package npm` uses (`npm.rs`: both entries, the tarball; it fails when
//! `keybound-browser/dpop` is over its 20 KB size budget), installs **the tarball** into
//! `browser/js` and
//! checks what got installed: the TypeScript example against its types (both entries), and under
//! node (`node --test`): `init()` loading the package's own wasm, proofs verified by an independent
//! JOSE implementation (npm `jose`) from both entries, and the npm README's example as written.
//! The build with the opt-in `software-key` feature (not published) is built into the target
//! directory and its proofs checked by jose too. Last, the installed package is used cross-origin
//! through the filter in a real Envoy without a CORS filter (`tests/tests/browser_cors.rs`, an
//! ignored test run here with `KEYBOUND_BROWSER_PKG`), its login against node-oidc-provider with
//! PAR on and off (`tests/tests/browser_oidc_provider.rs`), and the tarball in apps built with Vite
//! and webpack and in a plain page (`bundlers.rs`).
//!
//! Every action prints a line; everything already in place is left alone.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{npm, run, tools};

const WASM_TARGET: &str = "wasm32-unknown-unknown";
/// wasm-opt's flags: optimise for size, with the wasm features rustc emits for this target.
pub const WASM_OPT_FLAGS: [&str; 7] = [
    "-Oz",
    "--enable-bulk-memory",
    "--enable-nontrapping-float-to-int",
    "--enable-sign-ext",
    "--enable-mutable-globals",
    "--enable-reference-types",
    "--enable-multivalue",
];

/// Runs the browser checks; see the module docs.
pub fn test(root: &Path) -> Result<(), String> {
    let wasm_bindgen_bin = tools::wasm_bindgen_cli(root)?;
    tools::chromium()?;
    tools::node()?;
    let target_dir = tools::target_dir(root);

    for features in LINT_SETS {
        println!("browser: clippy for {WASM_TARGET}{}", describe(features));
        let mut args = vec![
            "clippy",
            "-p",
            "keybound-browser",
            "--all-targets",
            "--locked",
            "--target",
            WASM_TARGET,
        ];
        args.extend(features);
        args.extend(["--", "-D", "warnings"]);
        crate::cargo(root, &args)?;
    }

    // The browser builds keybound-core without its default `curve-checks` feature.
    println!("browser: keybound-core's unit tests without its default features (as the browser builds it)");
    crate::cargo(
        root,
        &[
            "test",
            "-p",
            "keybound-core",
            "--no-default-features",
            "--lib",
            "--locked",
        ],
    )?;

    let server = TestServer::start(root, &target_dir)?;
    for features in FEATURE_SETS {
        println!("browser: wasm-bindgen tests in headless Chromium{}", describe(features));
        browser_tests(root, &target_dir, &wasm_bindgen_bin, &server.url, features)?;
    }
    drop(server);

    // The npm package as shipped: the tarball of `cargo xtask package npm`, installed into
    // browser/js (not saved to its package.json), where the checks import it by name.
    let js = root.join("browser/js");
    // Fails when keybound-browser/dpop is over its size budget.
    let pkg = npm::build(root)?;
    npm::print_sizes(&pkg);
    let installed = npm::install(&pkg, &js)?;
    println!("browser: tsc --noEmit (browser/js/example.ts against the installed package's types, both entries)");
    run(Command::new("node")
        .current_dir(&js)
        .args(["node_modules/typescript/bin/tsc", "-p", "tsconfig.json"]))?;
    println!(
        "browser: under node, from the installed tarball: init() loads the package's own wasm, proofs verified by jose (both entries), the README's example"
    );
    run(Command::new("node")
        .current_dir(&js)
        .env("KEYBOUND_SOFTWARE_KEY", "0")
        .args(["--test", "interop.test.mjs", "package.test.mjs"]))?;

    // The software-key build (not published), checked beside it from its directory.
    let software = target_dir.join("browser-pkg-software-key");
    let features = FEATURE_SETS[1];
    println!(
        "browser: the software-key build into {} (release wasm, wasm-bindgen --target web, wasm-opt -Oz){}",
        software.display(),
        describe(features)
    );
    npm::stage_entry(
        root,
        &wasm_bindgen_bin.join("wasm-bindgen"),
        features,
        &software,
        "keybound_browser",
    )?;
    report_sizes(&software)?;
    println!(
        "browser: the package's proofs verified by jose under node{}",
        describe(features)
    );
    run(Command::new("node")
        .current_dir(&js)
        .env("KEYBOUND_PKG", &software)
        .env("KEYBOUND_SOFTWARE_KEY", "1")
        .args(["--test", "interop.test.mjs"]))?;

    cors_through_envoy(root, &installed)?;
    against_oidc_provider(root, &installed)?;
    crate::bundlers::test(root, &pkg.tarball)?;
    Ok(())
}

/// The package's login against a foreign authorization server, node-oidc-provider (npm, in
/// `tests/oidc-provider`), with PAR on and off, DPoP calls through Envoy with the filter, refresh
/// and logout: the ignored test `keybound-e2e`'s `browser_oidc_provider`, after `npm ci` there
/// (skipped when installed). Envoy and the filter were made sure of by [`cors_through_envoy`].
fn against_oidc_provider(root: &Path, pkg: &Path) -> Result<(), String> {
    let dir = root.join("tests/oidc-provider");
    if dir.join("node_modules/oidc-provider").exists() {
        println!("browser: npm packages of tests/oidc-provider already installed");
    } else {
        println!("browser: npm ci in tests/oidc-provider (oidc-provider)");
        run(Command::new("npm")
            .current_dir(&dir)
            .args(["ci", "--no-audit", "--no-fund"]))?;
    }
    println!("browser: the login against node-oidc-provider, PAR on and off (headless Chromium, Envoy)");
    crate::e2e_ignored(root, "browser_oidc_provider", &[("KEYBOUND_BROWSER_PKG", pkg)], false)
}

/// The npm package in `pkg` loaded by a page on another origin in headless Chromium, calling the
/// keybound filter in a real Envoy with no CORS filter (nonces required): the ignored test
/// `keybound-e2e`'s `browser_cors`, with Envoy and the release filter made sure of first (both
/// are left alone when already in place).
fn cors_through_envoy(root: &Path, pkg: &Path) -> Result<(), String> {
    tools::envoy(root)?;
    tools::build_filter(root)?;
    println!(
        "browser: the package from a page on another origin, through Envoy with no CORS filter (headless Chromium)"
    );
    crate::e2e_ignored(root, "browser_cors", &[("KEYBOUND_BROWSER_PKG", pkg)], false)
}

/// The cargo feature flags of the builds tested in Chromium: default, and with the software key.
const FEATURE_SETS: [&[&str]; 2] = [&[], &["--features", "software-key"]];

/// The feature flags the crate is linted with: the two above, and without login (the
/// `keybound-browser/dpop` entry).
const LINT_SETS: [&[&str]; 3] = [&[], &["--no-default-features"], &["--features", "software-key"]];

fn describe(features: &[&str]) -> &'static str {
    match features {
        [] => "",
        ["--no-default-features"] => " (without login: the dpop entry)",
        _ => " (feature software-key)",
    }
}

/// The local test server (`browser/examples/dpop_test_server.rs`), killed when dropped.
struct TestServer {
    child: Child,
    url: String,
}

impl TestServer {
    fn start(root: &Path, target_dir: &Path) -> Result<TestServer, String> {
        crate::cargo(
            root,
            &[
                "build",
                "-p",
                "keybound-browser",
                "--example",
                "dpop_test_server",
                "--locked",
            ],
        )?;
        let exe = target_dir.join("debug/examples/dpop_test_server");
        let mut child = Command::new(&exe)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{}: {e}", exe.display()))?;
        let mut line = String::new();
        let read = match child.stdout.take() {
            Some(out) => BufReader::new(out).read_line(&mut line).map_err(|e| e.to_string()),
            None => Err("no stdout".to_string()),
        };
        let url = line.trim().strip_prefix("listening on ").map(str::to_string);
        match (read, url) {
            (Ok(_), Some(url)) => {
                println!("browser: test server on {url}");
                Ok(TestServer { child, url })
            }
            (read, _) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!("the test server did not start: {read:?} {line:?}"))
            }
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cargo test -p keybound-browser --target wasm32-unknown-unknown` through
/// wasm-bindgen-test-runner in headless Chromium with a fresh profile, against the test server.
fn browser_tests(
    root: &Path,
    target_dir: &Path,
    wasm_bindgen_bin: &Path,
    server_url: &str,
    features: &[&str],
) -> Result<(), String> {
    let work = target_dir.join("browser-tests");
    let profile = work.join(format!("chromium-profile-{}", std::process::id()));
    if profile.exists() {
        std::fs::remove_dir_all(&profile).map_err(|e| format!("{}: {e}", profile.display()))?;
    }
    std::fs::create_dir_all(&profile).map_err(|e| format!("{}: {e}", profile.display()))?;
    let webdriver = std::fs::read_to_string(root.join("browser/webdriver.json"))
        .map_err(|e| format!("browser/webdriver.json: {e}"))?;
    let with_profile = webdriver.replacen(
        "\"args\": [",
        &format!("\"args\": [\n      \"--user-data-dir={}\",", profile.display()),
        1,
    );
    if with_profile == webdriver {
        return Err("browser/webdriver.json has no \"args\": [ list".into());
    }
    let webdriver_json = work.join("webdriver.json");
    std::fs::write(&webdriver_json, with_profile).map_err(|e| format!("{}: {e}", webdriver_json.display()))?;
    let mut args = vec![
        "test",
        "-p",
        "keybound-browser",
        "--target",
        WASM_TARGET,
        "--tests",
        "--locked",
    ];
    args.extend(features);
    let result = run(crate::cargo_cmd()
        .current_dir(root)
        .env(
            "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER",
            wasm_bindgen_bin.join("wasm-bindgen-test-runner"),
        )
        .env("CHROMEDRIVER", tools::CHROMEDRIVER)
        .env("WASM_BINDGEN_TEST_WEBDRIVER_JSON", &webdriver_json)
        .env("WASM_BINDGEN_TEST_TIMEOUT", "120")
        .env("KEYBOUND_TEST_SERVER", server_url)
        .args(&args));
    let _ = std::fs::remove_dir_all(&profile);
    result
}

/// The workspace version (`[workspace.package] version` of the root Cargo.toml).
pub fn workspace_version(root: &Path) -> Result<String, String> {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).map_err(|e| format!("Cargo.toml: {e}"))?;
    let mut in_package = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[workspace.package]";
        } else if in_package && let Some(v) = line.strip_prefix("version = \"").and_then(|v| v.strip_suffix('"')) {
            return Ok(v.to_string());
        }
    }
    Err("no [workspace.package] version in Cargo.toml".into())
}

/// Builds keybound-browser's cdylib for the browser in the size-optimised `wasm-release` profile;
/// returns the `.wasm` (before wasm-bindgen).
pub fn build_wasm(root: &Path, target_dir: &Path, features: &[&str]) -> Result<PathBuf, String> {
    let mut args = vec![
        // `cargo rustc` to build the cdylib alone: with the manifest's `rlib` beside it (which the
        // tests need), LTO removes far less (about 40 KB more wasm).
        "rustc",
        "-p",
        "keybound-browser",
        "--lib",
        "--crate-type",
        "cdylib",
        "--locked",
        "--target",
        WASM_TARGET,
        // A size-optimised profile defined here, so the workspace's release builds are untouched.
        "--config",
        "profile.wasm-release.inherits=\"release\"",
        "--config",
        "profile.wasm-release.opt-level=\"z\"",
        "--config",
        "profile.wasm-release.panic=\"abort\"",
        // sha2's compact software SHA-256 (rounds in a loop, not unrolled): about 7 KB less code.
        // Hashing is a small part of a proof's cost (the signature is WebCrypto's).
        "--config",
        "target.wasm32-unknown-unknown.rustflags=[\"--cfg\", \"sha2_backend_soft=\\\"compact\\\"\"]",
        "--profile",
        "wasm-release",
    ];
    args.extend(features);
    crate::cargo(root, &args)?;
    Ok(target_dir.join(WASM_TARGET).join("wasm-release/keybound_browser.wasm"))
}

/// wasm-bindgen `--target web` of `wasm` into a fresh `out_dir` (the glue `<name>.js`, the wasm
/// `<name>_bg.wasm`, types and snippets), then `wasm-opt -Oz` on the wasm (binaryen from npm, in
/// `browser/js/node_modules`).
pub fn bindgen(root: &Path, wasm_bindgen: &Path, wasm: &Path, out_dir: &Path, name: &str) -> Result<(), String> {
    if out_dir.exists() {
        std::fs::remove_dir_all(out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    }
    run(Command::new(wasm_bindgen)
        .args([
            "--target",
            "web",
            "--remove-name-section",
            "--remove-producers-section",
            "--out-name",
            name,
            "--out-dir",
        ])
        .arg(out_dir)
        .arg(wasm))?;
    let bg = out_dir.join(format!("{name}_bg.wasm"));
    run(Command::new("node")
        .arg(root.join("browser/js/node_modules/binaryen/bin/wasm-opt"))
        .args(WASM_OPT_FLAGS)
        .arg(&bg)
        .arg("-o")
        .arg(&bg))
}

/// Prints the sizes README.md reports: the wasm and the JS glue, raw and `gzip -9`.
fn report_sizes(pkg: &Path) -> Result<(), String> {
    let size = |name: &str| std::fs::metadata(pkg.join(name)).map(|m| m.len()).unwrap_or(0);
    let gzipped = |name: &str| -> Result<usize, String> {
        let out = Command::new("gzip")
            .args(["-9", "-c"])
            .arg(pkg.join(name))
            .output()
            .map_err(|e| format!("gzip: {e}"))?;
        Ok(out.stdout.len())
    };
    println!(
        "browser: sizes: keybound_browser_bg.wasm {} bytes ({} gzipped), JS glue keybound_browser.js {} bytes ({} gzipped) + snippets {} bytes",
        size("keybound_browser_bg.wasm"),
        gzipped("keybound_browser_bg.wasm")?,
        size("keybound_browser.js"),
        gzipped("keybound_browser.js")?,
        walk_size(&pkg.join("snippets"))
    );
    Ok(())
}

fn walk_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                walk_size(&path)
            } else {
                std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}
