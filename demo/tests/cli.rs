//! The keybound-demo command line: bad arguments, missing programs and ports in use are refused
//! with a clear message and exit status 2, before anything is started.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "test")]

use std::process::{Command, Output};

fn demo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keybound-demo"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn unknown_arguments_and_bad_ports_are_refused_with_the_usage() {
    let o = demo(&["--no-such-flag"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown argument --no-such-flag") && stderr(&o).contains("usage:"));
    let o = demo(&["--authz-port", "99999"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--authz-port: not a port: 99999"), "{}", stderr(&o));
    let o = demo(&["--page-port"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--page-port needs a value"), "{}", stderr(&o));
}

#[test]
fn a_missing_program_is_named_with_how_to_build_it() {
    let dir = std::env::temp_dir().join(format!("kb-demo-cli-{}", std::process::id()));
    let o = demo(&[
        "--scenario-only",
        "--free-ports",
        "--dir",
        dir.to_str().unwrap(),
        "--authz-bin",
        "/nonexistent/keybound-authz",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("keybound-authz is missing at /nonexistent/keybound-authz"),
        "{e}"
    );
    assert!(e.contains("cargo xtask demo"), "{e}");
    assert!(!dir.exists(), "nothing generated before the checks pass");
}

#[test]
fn a_port_in_use_is_named_with_its_role_and_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dir = std::env::temp_dir().join(format!("kb-demo-cli-port-{}", std::process::id()));
    // Every program "exists" (this binary stands in for them): the port check comes next.
    let exe = env!("CARGO_BIN_EXE_keybound-demo");
    let o = demo(&[
        "--scenario-only",
        "--dir",
        dir.to_str().unwrap(),
        "--authz-bin",
        exe,
        "--envoy",
        exe,
        "--filter",
        exe,
        "--dpop-port",
        &port,
    ]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("port {port} (for Envoy's DPoP listener) is in use")) && e.contains("--dpop-port N"),
        "{e}"
    );
    assert!(!dir.exists(), "nothing generated before the checks pass");
}
