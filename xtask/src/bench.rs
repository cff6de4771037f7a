//! `cargo xtask bench`: installs what the benchmarks need (wasm targets, Envoy, a Python venv with
//! matplotlib), runs the keybound-core micro-benchmarks (criterion, natively and as
//! `wasm32-wasip1` inside V8 under node's WASI), builds the filter and `keybound-bench` in release
//! mode, runs the gateway scenarios pinned to CPU 1 (each Envoy it starts is pinned to CPU 0), and
//! renders the plot. `keybound-bench` rewrites `BENCHMARKS.md`; arguments are passed through
//! (`--runs`, `--seconds`, `--only`, `--connections`, `--memory-proofs`); `--no-micro` skips the
//! micro-benchmarks, `--no-authz` the token-endpoint benchmark (`bench/authz`), `--no-browser` the
//! browser one (`bench/browser`); `--only` skips both. `--browser-only` runs the browser benchmark
//! alone, then rewrites BENCHMARKS.md from the results on disk (`keybound-bench --report-only`:
//! the other sections from their last runs).

use std::path::Path;
use std::process::{Command, ExitCode};

use crate::{cargo, run, tools};

/// Runs the benchmarks; `args` go to `keybound-bench`.
pub fn bench(root: &Path, args: &[String]) -> ExitCode {
    match steps(root, args) {
        Ok(()) => {
            if args.iter().any(|a| a == "--browser-only") {
                println!(
                    "xtask bench: done; the browser benchmark in target/bench/browser.json and BENCHMARKS.md (its other sections from their last runs)"
                );
            } else if args.iter().any(|a| a == "--only") {
                println!(
                    "xtask bench: done; results in target/bench/gateway-only.json (BENCHMARKS.md and target/bench/gateway.json are rewritten only by a run of every scenario)"
                );
            } else {
                println!("xtask bench: done; results in BENCHMARKS.md and target/bench/gateway.json");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xtask bench: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn steps(root: &Path, args: &[String]) -> Result<(), String> {
    if args.iter().any(|a| a == "--browser-only") {
        return browser_only(root);
    }
    let micro_wanted = !args.iter().any(|a| a == "--no-micro");
    // The token-endpoint and browser benchmarks run unless skipped, or unless `--only` picks
    // gateway scenarios.
    let only = args.iter().any(|a| a == "--only");
    let authz_wanted = !only && !args.iter().any(|a| a == "--no-authz");
    let browser_wanted = !only && !args.iter().any(|a| a == "--no-browser");
    let args: Vec<String> = args
        .iter()
        .filter(|a| !["--no-micro", "--no-authz", "--no-browser"].contains(&a.as_str()))
        .cloned()
        .collect();
    let args = args.as_slice();
    println!("==> set up: rust targets, Envoy, matplotlib");
    tools::rust_targets(root)?;
    tools::envoy(root)?;
    let plot_venv = tools::python_venv(root, "plot", "bench/requirements.txt")?;
    if micro_wanted {
        micro(root)?;
    }
    if authz_wanted {
        authz(root)?;
    }
    if browser_wanted {
        browser(root)?;
    }
    println!("==> build the filter and keybound-bench (release)");
    tools::build_filter(root)?;
    cargo(root, &["build", "-p", "keybound-bench", "--release", "--locked"])?;
    println!("==> run the gateway scenarios (on CPU 1; each Envoy on CPU 0)");
    let (mut cmd, _) = tools::pinned("1", &tools::target_dir(root).join("release/keybound-bench"));
    run(cmd.current_dir(root).args(args))?;
    if args.iter().any(|a| a == "--only") {
        return Ok(());
    }
    println!("==> plot");
    std::fs::create_dir_all(root.join("docs")).map_err(|e| e.to_string())?;
    run(Command::new(plot_venv.join("bin/python"))
        .current_dir(root)
        .arg("bench/plot.py")
        .arg("target/bench/gateway.json")
        .arg("docs/bench-gateway.png"))
}

/// The criterion benchmarks of keybound-core, natively and in V8 (node's WASI); medians to
/// `target/bench/micro.json`.
fn micro(root: &Path) -> Result<(), String> {
    let out = root.join("target/bench");
    let native_home = out.join("criterion-native");
    let wasm_dir = out.join("wasm");
    // Fresh results only: a benchmark renamed or removed must not linger in the report.
    for dir in [&native_home, &wasm_dir] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
    }
    std::fs::create_dir_all(&wasm_dir).map_err(|e| e.to_string())?;
    let criterion_args = ["--warm-up-time", "1", "--measurement-time", "3"];
    println!("==> keybound-core micro-benchmarks, native");
    run(crate::cargo_cmd()
        .current_dir(root)
        .env("CRITERION_HOME", &native_home)
        .args(["bench", "--locked", "-p", "keybound-micro", "--bench", "core", "--"])
        .args(criterion_args))?;
    println!("==> keybound-core micro-benchmarks, wasm32-wasip1 in V8 (node)");
    let built = crate::cargo_cmd()
        .current_dir(root)
        .args([
            "bench",
            "--locked",
            "-p",
            "keybound-micro",
            "--bench",
            "core",
            "--target",
            "wasm32-wasip1",
            "--no-run",
            "--message-format=json",
        ])
        .output()
        .map_err(|e| format!("cargo bench --no-run: {e}"))?;
    if !built.status.success() {
        return Err(format!(
            "building the wasm micro-benchmarks failed: {}",
            String::from_utf8_lossy(&built.stderr)
        ));
    }
    let wasm = String::from_utf8_lossy(&built.stdout)
        .lines()
        .filter_map(serde_json_lite::executable)
        .find(|e| e.ends_with(".wasm"))
        .ok_or("cargo did not report the wasm bench executable")?;
    run(Command::new("node")
        .current_dir(root)
        .env("CRITERION_HOME", "/criterion")
        .args(["--no-warnings", "bench/micro/run-wasi.mjs", &wasm])
        .arg(&wasm_dir)
        .arg("--bench")
        .args(criterion_args))?;
    let mut rows = Vec::new();
    for entry in std::fs::read_dir(&native_home).map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "report" {
            continue;
        }
        let median = |home: &Path| -> Option<String> {
            let text = std::fs::read_to_string(home.join(&name).join("new/estimates.json")).ok()?;
            serde_json_lite::median_ns(&text)
        };
        rows.push(format!(
            "{{\"name\":{:?},\"native_ns\":{},\"wasm_ns\":{}}}",
            name,
            median(&native_home).unwrap_or_else(|| "null".into()),
            median(&wasm_dir.join("criterion")).unwrap_or_else(|| "null".into())
        ));
    }
    rows.sort();
    std::fs::write(out.join("micro.json"), format!("[{}]\n", rows.join(",\n"))).map_err(|e| e.to_string())
}

/// `npm ci` in `dir` unless its `node_modules` already has `package` (the lock file pins it).
fn npm_ci(root: &Path, dir: &str, package: &str) -> Result<(), String> {
    if root
        .join(dir)
        .join("node_modules")
        .join(package)
        .join("package.json")
        .exists()
    {
        println!("{dir}: {package} installed");
        return Ok(());
    }
    println!("{dir}: npm ci (package-lock.json)");
    run(Command::new("npm")
        .current_dir(root.join(dir))
        .args(["ci", "--no-audit", "--no-fund"]))
}

/// The token-endpoint benchmark (`bench/authz`): keybound-authz beside npm `oidc-provider`,
/// client_credentials with private_key_jwt and DPoP over TLS, 16 connections, the servers pinned to
/// CPU 0 and the load generator to CPU 1; results to `target/bench/authz.json`.
fn authz(root: &Path) -> Result<(), String> {
    println!("==> token endpoint: keybound-authz beside oidc-provider");
    npm_ci(root, "bench/authz/oidc-provider", "oidc-provider")?;
    cargo(root, &["build", "-p", "keybound-authz", "--release", "--locked"])?;
    cargo(root, &["build", "-p", "keybound-bench-authz", "--release", "--locked"])?;
    let target = tools::target_dir(root);
    let exe = target.join("release/keybound-bench-authz");
    let authz = target.join("release/keybound-authz");
    let (mut cmd, pinned) = tools::pinned("1", &exe);
    if !pinned {
        cmd.args(["--server-cpu", "none"]);
    }
    run(cmd.current_dir(root).arg("--authz-bin").arg(&authz))
}

/// The browser benchmark (`bench/browser`): proof creation time of the keybound-browser npm
/// package beside npm `dpop` in headless Chromium, and the sizes of both of its entries beside
/// `dpop` and `oauth4webapi`; results to `target/bench/browser.json`. The package is built with
/// `cargo xtask package npm`'s function and its tarball installed into `bench/browser`.
fn browser(root: &Path) -> Result<(), String> {
    println!("==> browser: keybound-browser beside the npm dpop and oauth4webapi packages in headless Chromium");
    // Always (re)build the package: a stale one would measure old code.
    let pkg = crate::npm::build(root)?;
    crate::npm::print_sizes(&pkg);
    tools::chromium()?;
    npm_ci(root, "bench/browser", "oauth4webapi")?;
    crate::npm::install(&pkg, &root.join("bench/browser"))?;
    run(Command::new("node").current_dir(root).arg("bench/browser/run.mjs"))
}

/// `--browser-only`: the browser benchmark, then BENCHMARKS.md rewritten from `target/bench/`.
fn browser_only(root: &Path) -> Result<(), String> {
    browser(root)?;
    println!("==> BENCHMARKS.md from the results on disk (keybound-bench --report-only)");
    cargo(root, &["build", "-p", "keybound-bench", "--release", "--locked"])?;
    run(Command::new(tools::target_dir(root).join("release/keybound-bench"))
        .current_dir(root)
        .arg("--report-only"))
}

/// Just enough JSON reading for two fields, so xtask stays dependency-free.
mod serde_json_lite {
    /// The `executable` of a cargo `compiler-artifact` message line.
    pub fn executable(line: &str) -> Option<String> {
        let start = line.find("\"executable\":\"")? + "\"executable\":\"".len();
        let rest = line.get(start..)?;
        Some(rest.get(..rest.find('"')?)?.to_owned())
    }

    /// `median.point_estimate` of a criterion `estimates.json`, in ns.
    pub fn median_ns(text: &str) -> Option<String> {
        let median = text.get(text.find("\"median\"")?..)?;
        let start = median.find("\"point_estimate\":")? + "\"point_estimate\":".len();
        let rest = median.get(start..)?;
        let end = rest.find([',', '}'])?;
        Some(rest.get(..end)?.trim().to_owned())
    }
}
