//! Running keybound-authz like its peers: the CLI, liveness and readiness, Prometheus metrics,
//! structured logs with levels and formats, environment overrides and secrets from files, and a
//! graceful shutdown on SIGTERM.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::*;

/// A plain HTTP/1.1 GET on the admin listener: status and body.
fn admin_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).unwrap().parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn lines(log: &str) -> Vec<serde_json::Value> {
    log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[test]
fn the_cli_answers_help_and_version_and_refuses_unknown_flags() {
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    for command in ["serve", "init", "check", "hash-password", "keys"] {
        assert!(text.contains(command), "{command} missing from --help:\n{text}");
    }
    let serve_help = Command::new(BIN).args(["serve", "--help"]).output().unwrap();
    assert_eq!(serve_help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&serve_help.stdout).contains("--config"));
    let version = Command::new(BIN).arg("--version").output().unwrap();
    assert_eq!(version.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("keybound-authz {}", env!("CARGO_PKG_VERSION"))
    );
    for args in [
        &["serve", "--config", "x.toml", "--bogus"][..],
        &["serve"][..],
        &["frobnicate"][..],
        &["--verbose"][..],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("error:") && err.contains("Usage"), "{args:?}: {err}");
    }
}

/// The environment overrides the file, secrets come from files, and every mistake names its
/// field (or variable).
#[test]
fn environment_overrides_and_secret_files_are_checked_like_the_file() {
    let env = Env::new(&Options::default());
    let check = |vars: &[(&str, &str)]| {
        let out = Command::new(BIN)
            .args(["check", "--config", env.config.to_str().unwrap()])
            .envs(vars.iter().copied())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, out) = check(&[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("ok (issuer https://"), "{out}");
    let (code, out) = check(&[("KEYBOUND_AUTHZ_TOKENS__CODE_LIFETIME", "999")]);
    assert_eq!(code, Some(2));
    assert!(out.contains("`tokens.code_lifetime`"), "{out}");
    let (code, out) = check(&[("KEYBOUND_AUTHZ_BOGUS", "1")]);
    assert_eq!(code, Some(2));
    assert!(out.contains("bogus"), "{out}");
    let (code, out) = check(&[("KEYBOUND_AUTHZ_LOG__LEVEL", "loud")]);
    assert_eq!(code, Some(2));
    assert!(out.contains("loud"), "{out}");
    // A secret from a file: the nonce secret moves out of the config file.
    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(env.path("nonce.secret"), format!("{NONCE_SECRET}\n")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("nonce_secrets"))
        .unwrap()
        .to_owned();
    std::fs::write(
        &env.config,
        text.replace(&line, "nonce_secrets_file = \"nonce.secret\""),
    )
    .unwrap();
    let (code, out) = check(&[]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = check(&[("KEYBOUND_AUTHZ_DPOP__NONCE_SECRETS_FILE", "missing.secret")]);
    assert_eq!(code, Some(2));
    assert!(
        out.contains("`dpop.nonce_secrets_file`") && out.contains("missing.secret"),
        "{out}"
    );
    // The environment's inline value wins over the file's `_file`.
    let (code, out) = check(&[("KEYBOUND_AUTHZ_DPOP__NONCE_SECRETS", &format!("[\"{NONCE_SECRET}\"]"))]);
    assert_eq!(code, Some(0), "{out}");
}

/// `/healthz` and `/readyz` on both listeners, `/metrics` on the admin listener only, one log
/// line per request without secrets.
#[tokio::test]
async fn health_readiness_metrics_and_request_logs() {
    let env = Env::new(&no_nonce());
    let admin = free_port();
    let server = Server::start_with_env(
        &env.config,
        env.port,
        &[("KEYBOUND_AUTHZ_ADMIN__LISTEN", &format!("127.0.0.1:{admin}"))],
    );
    let https = Https::new(&env, None);
    let r = https.get("/healthz").await;
    assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("ok")));
    let r = https.get("/readyz").await;
    assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("ready")));
    assert_eq!(https.get("/metrics").await.status, 404, "metrics are not public");
    assert_eq!(admin_get(admin, "/readyz").0, 200);
    // A certificate-bound token, an unauthenticated client, an unknown path.
    let r = mtls_client_credentials(&Https::mtls(&env)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.json()["access_token"].as_str().unwrap().to_owned();
    let r = https
        .post_form(
            "/token",
            &[("grant_type", "client_credentials"), ("client_id", "mtls")],
            &[],
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(https.get("/nowhere/secret-looking?code=abc").await.status, 404);
    let (status, metrics) = admin_get(admin, "/metrics");
    assert_eq!(status, 200);
    for line in [
        r#"keybound_authz_tokens_issued_total{grant="client_credentials",binding="mtls"} 1"#,
        r#"keybound_authz_http_requests_total{endpoint="/token",status="200"} 1"#,
        r#"keybound_authz_http_requests_total{endpoint="/token",status="401"} 1"#,
        // The unknown path and `/metrics` on the TLS listener.
        r#"keybound_authz_http_requests_total{endpoint="other",status="404"} 2"#,
        // One on each listener.
        r#"keybound_authz_http_requests_total{endpoint="/readyz",status="200"} 2"#,
        r#"keybound_authz_storage_duration_seconds_count{op="ping"} 2"#,
        // The certificate-bound token was recorded.
        r#"keybound_authz_storage_duration_seconds_count{op="put_token"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    let log = server.stop();
    let requests: Vec<serde_json::Value> = lines(&log).into_iter().filter(|l| l["event"] == "request").collect();
    let token_lines: Vec<&serde_json::Value> = requests.iter().filter(|l| l["path"] == "/token").collect();
    assert_eq!(token_lines.len(), 2, "{log}");
    assert_eq!(token_lines[0]["status"], 200);
    assert_eq!(token_lines[0]["method"], "POST");
    assert_eq!(token_lines[0]["client"], "127.0.0.1");
    assert!(token_lines[0]["ms"].is_number());
    assert!(
        requests
            .iter()
            .any(|l| l["path"] == "/nowhere/secret-looking" && l["status"] == 404)
    );
    assert!(
        !requests.iter().any(|l| l["path"] == "/healthz"),
        "probes are logged at debug only"
    );
    assert!(!log.contains("code=abc"), "queries are never logged");
    assert!(!log.contains(&token), "tokens are never logged");
    assert!(
        lines(&log)
            .iter()
            .any(|l| l["event"] == "oauth_error" && l["error"] == "invalid_client")
    );
}

/// `log.level = "warn"` drops request lines; `log.format = "text"` writes `key=value` lines.
#[tokio::test]
async fn log_level_and_text_format() {
    let env = Env::new(&no_nonce());
    let server = Server::start_with_env(&env.config, env.port, &[("KEYBOUND_AUTHZ_LOG__LEVEL", "warn")]);
    let https = Https::new(&env, None);
    assert_eq!(https.post_form("/token", &[("grant_type", "x")], &[]).await.status, 401);
    let log = server.stop();
    assert!(!log.contains("\"request\"") && !log.contains("oauth_error"), "{log}");

    let server = Server::start_with_env(
        &env.config,
        env.port,
        &[
            ("KEYBOUND_AUTHZ_LOG__FORMAT", "text"),
            ("KEYBOUND_AUTHZ_LOG__LEVEL", "debug"),
        ],
    );
    assert_eq!(https.get("/healthz").await.status, 200);
    let log = server.stop();
    let line = log
        .lines()
        .find(|l| l.contains("event=request"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.starts_with("ts=") && line.contains("level=debug"), "{line}");
    assert!(line.contains("path=/healthz") && line.contains("status=200"), "{line}");
}

/// SIGTERM: new connections are refused at once, the request in flight (its body still arriving)
/// is answered, then the process exits 0.
#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish_then_exits_0() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = Env::new(&no_nonce());
    let server = Server::start(&env.config, env.port);
    let https = Https::new(&env, None);
    let mut inflight = https.connect().await;
    let body = "grant_type=client_credentials&client_id=nobody";
    let (first, rest) = body.split_at(10);
    inflight
        .write_all(
            format!(
                "POST /token HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{first}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    inflight.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let port = env.port;
    let terminated = tokio::task::spawn_blocking(move || server.terminate(Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let refused = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err();
    inflight.write_all(rest.as_bytes()).await.unwrap();
    inflight.flush().await.unwrap();
    let mut answer = Vec::new();
    let _ = inflight.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    let (status, log) = terminated.await.unwrap();
    assert!(refused, "the listener is closed once the shutdown starts");
    assert!(
        answer.starts_with("HTTP/1.1 401") && answer.contains("invalid_client"),
        "the request in flight is answered: {answer:?}"
    );
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{log}");
    let shutdown: Vec<String> = lines(&log)
        .into_iter()
        .filter(|l| l["event"] == "shutdown")
        .map(|l| l["detail"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        shutdown.first().map(String::as_str),
        Some("stopped accepting; waiting for requests in flight")
    );
    assert_eq!(shutdown.last().map(String::as_str), Some("done"), "{log}");
}

/// The container image definition builds this binary from this workspace, runs it unprivileged
/// with the documented config path, and copies only what the build stage produced. (No container
/// engine runs here: this checks the definition against the repository.)
#[test]
fn the_container_image_definition_matches_the_workspace() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let file = std::fs::read_to_string(root.join("Containerfile")).unwrap();
    let instructions: Vec<&str> = file
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty() && !l.starts_with(' '))
        .collect();
    let from: Vec<&&str> = instructions.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(from.len(), 2, "a build stage and a runtime stage");
    assert!(from[0].ends_with(" AS build"));
    assert!(file.contains("cargo build --locked --release -p keybound-authz"));
    assert!(file.contains(&format!("--from=build /out/{0} /usr/local/bin/{0}", "keybound-authz")));
    assert!(instructions.contains(&"USER nonroot"), "runs unprivileged");
    assert!(instructions.contains(&r#"ENTRYPOINT ["/usr/local/bin/keybound-authz"]"#));
    assert!(instructions.contains(&r#"CMD ["serve", "--config", "/etc/keybound/authz.toml"]"#));
    // The binary the image runs answers the image's command line.
    let out = Command::new(BIN).args(["serve", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--config"));
    // `cargo build --locked` needs the lock file in the build context.
    assert!(root.join("../Cargo.lock").is_file());
}

/// `/readyz` follows the database: 200 while PostgreSQL answers, 503 `storage_unreachable` once it
/// is gone, while `/healthz` (the process lives) stays 200 and the failed pings are timed.
#[tokio::test]
async fn readiness_follows_the_database() {
    let pg = keybound_e2e::postgres::Postgres::start().unwrap();
    let url = pg.create_database().unwrap();
    // Its own PostgreSQL (stopped below), whatever KEYBOUND_TEST_AUTHZ_STORAGE says.
    let env = Env::new(&Options {
        postgres: false,
        ..no_nonce()
    });
    let text = std::fs::read_to_string(&env.config).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("database"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&env.config, format!("{text}\n[storage]\nurl = \"{url}\"\n")).unwrap();
    let admin = free_port();
    let server = Server::start_with_env(
        &env.config,
        env.port,
        &[("KEYBOUND_AUTHZ_ADMIN__LISTEN", &format!("127.0.0.1:{admin}"))],
    );
    assert_eq!(admin_get(admin, "/readyz").0, 200);
    pg.stop();
    let (status, body) = admin_get(admin, "/readyz");
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["status"].as_str(), v["reason"].as_str()),
        (Some("not_ready"), Some("storage_unreachable"))
    );
    assert_eq!(admin_get(admin, "/healthz").0, 200);
    let (_, metrics) = admin_get(admin, "/metrics");
    assert!(
        metrics.contains(r#"keybound_authz_storage_duration_seconds_count{op="ping"} 2"#),
        "{metrics}"
    );
    drop(server);
}
