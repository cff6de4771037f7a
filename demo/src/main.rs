//! `keybound-demo`: runs the keybound system on 127.0.0.1 and tells its story (see the library
//! docs). Usually started by `cargo xtask demo`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use keybound_demo::setup::Ports;
use keybound_demo::{Mode, Options};

const USAGE: &str =
    "usage: keybound-demo [--scenario-only | --no-scenario | --prepare-only | --web-only | --story-only]
       [--free-ports]
       [--page-port N] [--authz-port N] [--dpop-port N] [--mtls-port N] [--echo-port N] [--admin-port N]
       [--dir DIR] [--authz-bin FILE] [--envoy FILE] [--filter FILE] [--pkg DIR]

  --scenario-only  run the story and exit with its status
  --no-scenario    start everything and wait for Ctrl-C without running the story
  --prepare-only   only generate the demo directory (PKI, configs, endpoints.json) and exit
  --web-only       only serve the echo API and the demo page (until Ctrl-C)
  --story-only     only run the story against a demo started by someone else (docker compose)
  --free-ports     let the OS choose every port (default: page 8080, authz 8443, DPoP 9443,
                   mTLS 9444, echo 8081, Envoy admin 9901)";

/// The workspace root (this crate's parent directory).
fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// The cargo target directory this binary was built into (`<target>/<profile>/keybound-demo`).
fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().and_then(Path::parent).map(Path::to_path_buf))
        .unwrap_or_else(|| root().join("target"))
}

fn parse(args: &[String]) -> Result<Options, String> {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let target = target_dir();
    let mut opts = Options {
        dir: target.join("demo"),
        ports: Ports::default(),
        authz_bin: exe_dir.join("keybound-authz"),
        envoy_bin: root().join(".tools/envoy/bin/envoy"),
        filter_wasm: target.join("wasm32-wasip1/release/keybound_filter.wasm"),
        pkg_dir: root().join("browser/pkg"),
        mode: Mode::Interactive,
    };
    let mut free = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))
        };
        let mut port = || -> Result<u16, String> {
            let v = value()?;
            v.parse().map_err(|_| format!("{arg}: not a port: {v}"))
        };
        match arg.as_str() {
            "--scenario-only" => opts.mode = Mode::ScenarioOnly,
            "--no-scenario" => opts.mode = Mode::ServeOnly,
            "--prepare-only" => opts.mode = Mode::PrepareOnly,
            "--web-only" => opts.mode = Mode::WebOnly,
            "--story-only" => opts.mode = Mode::StoryOnly,
            "--free-ports" => free = true,
            "--page-port" => opts.ports.page = port()?,
            "--authz-port" => opts.ports.authz = port()?,
            "--dpop-port" => opts.ports.dpop = port()?,
            "--mtls-port" => opts.ports.mtls = port()?,
            "--echo-port" => opts.ports.echo = port()?,
            "--admin-port" => opts.ports.admin = port()?,
            "--dir" => opts.dir = PathBuf::from(value()?),
            "--authz-bin" => opts.authz_bin = PathBuf::from(value()?),
            "--envoy" => opts.envoy_bin = PathBuf::from(value()?),
            "--filter" => opts.filter_wasm = PathBuf::from(value()?),
            "--pkg" => opts.pkg_dir = PathBuf::from(value()?),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if free {
        opts.ports = Ports::free()?;
    }
    Ok(opts)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match keybound_demo::run(&opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("keybound-demo: {e}");
            ExitCode::from(2)
        }
    }
}
