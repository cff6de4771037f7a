//! `cargo xtask bench`: installs what the gateway benchmark needs (wasm targets, Envoy, a Python
//! venv with matplotlib), builds the filter and `keybound-bench` in release mode, runs it pinned
//! to CPU 1 (each Envoy it starts is pinned to CPU 0), and renders the plot. The bench itself
//! rewrites `BENCHMARKS.md`; arguments are passed through (`--runs`, `--seconds`, `--only`,
//! `--connections`, `--memory-proofs`).

use std::path::Path;
use std::process::{Command, ExitCode};

use crate::{cargo, run, tools};

/// Runs the benchmarks; `args` go to `keybound-bench`.
pub fn bench(root: &Path, args: &[String]) -> ExitCode {
    match steps(root, args) {
        Ok(()) => {
            println!("xtask bench: done; results in BENCHMARKS.md and target/bench/gateway.json");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xtask bench: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn steps(root: &Path, args: &[String]) -> Result<(), String> {
    println!("==> set up: rust targets, Envoy, matplotlib");
    tools::rust_targets(root)?;
    tools::envoy(root)?;
    let plot_venv = tools::python_venv(root, "plot", "bench/requirements.txt")?;
    println!("==> build the filter and keybound-bench (release)");
    cargo(
        root,
        &[
            "build",
            "-p",
            "keybound-filter",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip1",
        ],
    )?;
    cargo(root, &["build", "-p", "keybound-bench", "--release", "--locked"])?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), Into::into);
    let exe = target.join("release/keybound-bench");
    let pinned = Command::new("taskset").arg("--version").output().is_ok();
    println!(
        "==> run the gateway scenarios{}",
        if pinned { " (pinned to CPU 1)" } else { "" }
    );
    let mut cmd = if pinned {
        let mut c = Command::new("taskset");
        c.args(["-c", "1"]).arg(&exe);
        c
    } else {
        println!("taskset not found: running without CPU pinning (numbers will be noisier)");
        Command::new(&exe)
    };
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
