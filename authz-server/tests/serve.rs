//! Step 1: `init`, config errors, TLS with optional client certificates, discovery, JWKS,
//! persisted signing keys.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

mod common;

use common::*;
use std::process::Command;

#[test]
fn init_writes_certificates_keys_and_a_config_that_serve_accepts() {
    let dir = std::env::temp_dir().join(format!("kb-authz-init-{}", unique()));
    let out = Command::new(BIN)
        .args(["init", "--dir", dir.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("password"));
    for f in [
        "ca.pem",
        "server.pem",
        "server-key.pem",
        "mtls-client.pem",
        "mtls-client-key.pem",
        "selfsigned-client.pem",
        "selfsigned-client-key.pem",
        "fapi-dpop.key",
        "resource-server.key",
        "authz.toml",
    ] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["server-key.pem", "fapi-dpop.key", "authz.toml"] {
            let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{f} must be private");
        }
    }
    // A second init refuses to overwrite.
    let again = Command::new(BIN)
        .args(["init", "--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!again.status.success());
    // The demo config loads and serves (port 0: the demo issuer names port 0, fine for a load test).
    let server = Server::start(&dir.join("authz.toml"), 0);
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A bad config makes `serve` exit with a message naming the field.
#[test]
fn bad_config_exits_naming_the_field() {
    let env = Env::new(&Options::default());
    let good = std::fs::read_to_string(&env.config).unwrap();
    let cases: Vec<(String, &str)> = vec![
        (format!("bogus = 1\n{good}"), "bogus"),
        (
            good.replace("code_lifetime = 60", "code_lifetime = 61"),
            "tokens.code_lifetime",
        ),
        (
            good.replace("par_lifetime = 90", "par_lifetime = 600"),
            "tokens.par_lifetime",
        ),
        (
            good.replace(&format!("issuer = \"{}\"", env.issuer), "issuer = \"http://x\""),
            "issuer",
        ),
        (
            good.replacen(REDIRECT, "http://evil.example/cb", 1),
            "clients[0].redirect_uris[0]",
        ),
        (good.replace("nonce = \"required\"", "nonce = \"sometimes\""), "nonce"),
        (good.replace(NONCE_SECRET, "c2hvcnQ"), "dpop.nonce_secrets[0]"),
        (
            good.replace("cert = \"server.pem\"", "cert = \"missing.pem\""),
            "tls.cert",
        ),
        (
            good.replace(
                "scopes = [\"accounts\"]\n\n[[clients]]\nclient_id = \"selfsigned\"",
                "scopes = [\"nope\"]\n\n[[clients]]\nclient_id = \"selfsigned\"",
            ),
            "clients[3].scopes[0]",
        ),
        (
            good.replace("password_hash = \"$argon2", "password_hash = \"$plain"),
            "users[0].password_hash",
        ),
        (
            good.replace(
                "sender_constraint = \"dpop\"\nredirect_uris = [\"http://127.0.0.1:8080/cb\"]",
                "sender_constraint = \"mtls\"\nredirect_uris = [\"http://127.0.0.1:8080/cb\"]",
            ),
            "clients[5].sender_constraint",
        ),
        (
            good.lines()
                .filter(|l| !l.starts_with("pairwise_salt"))
                .collect::<Vec<_>>()
                .join("\n"),
            "pairwise_salt",
        ),
        (
            good.replace(
                "redirect_uris = [\"http://127.0.0.1:9090/other\"]\nscopes = [\"openid\"]\nsubject_type = \"pairwise\"\nsector = \"127.0.0.1\"\n",
                "redirect_uris = [\"http://127.0.0.1:9090/other\", \"http://localhost:9090/other\"]\nscopes = [\"openid\"]\nsubject_type = \"pairwise\"\n",
            ),
            "clients[7].sector",
        ),
        (
            good.replace("totp_secret = \"", "totp_secret = \"1"),
            "users[1].totp_secret",
        ),
        (
            good.replace(
                "cors_origins = [\"http://127.0.0.1:8080\"]",
                "cors_origins = [\"http://127.0.0.1:8080/path\"]",
            ),
            "cors_origins[0]",
        ),
        (
            good.replace(&format!("\"{PAYMENTS_API}\"]\ngrant_types"), "\"https://other.example\"]\ngrant_types"),
            "clients[0].resources[1]",
        ),
        (
            good.replace(&format!("\"{REPORTS}\"]"), &format!("\"{REPORTS}#part\"]")),
            "audience[2]",
        ),
        (
            good.replace(&format!("default_resource = \"{AUDIENCE}\""), "default_resource = \"https://other.example\""),
            "default_resource",
        ),
        (format!("{good}\n[login]\nlockout = 0\n"), "login.lockout"),
        (
            format!("{good}\n[login]\nlockout = 600\nmax_lockout = 60\n"),
            "login.max_lockout",
        ),
        (
            format!("{good}\n[login]\naccount_max_failures = 0\n"),
            "login.account_max_failures",
        ),
    ];
    for (i, (text, field)) in cases.iter().enumerate() {
        assert_ne!(text, &good, "case {i} did not change the config");
        let path = env.path(&format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let mut child = Command::new(BIN)
            .args(["serve", "--config", path.to_str().unwrap()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A config that is (wrongly) accepted would serve forever: give it 20 s, then fail.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("case {i}: the config was accepted");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(2), "case {i}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(field), "case {i}: expected {field} in {err}");
    }
}

#[tokio::test]
async fn discovery_documents_are_truthful_and_identical() {
    let env = Env::new(&Options::default());
    let _server = env.start();
    let https = Https::new(&env, None);
    let a = https.get("/.well-known/openid-configuration").await;
    let b = https.get("/.well-known/oauth-authorization-server").await;
    assert_eq!((a.status, b.status), (200, 200));
    let (a, b) = (a.json(), b.json());
    assert_eq!(a, b);
    assert_eq!(a["issuer"], env.issuer);
    assert_eq!(a["pushed_authorization_request_endpoint"], env.url("/par"));
    assert_eq!(a["token_endpoint"], env.url("/token"));
    assert_eq!(a["authorization_endpoint"], env.url("/authorize"));
    assert_eq!(a["jwks_uri"], env.url("/jwks"));
    assert_eq!(a["require_pushed_authorization_requests"], true);
    assert_eq!(a["code_challenge_methods_supported"], serde_json::json!(["S256"]));
    assert_eq!(a["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(a["authorization_response_iss_parameter_supported"], true);
    assert_eq!(a["tls_client_certificate_bound_access_tokens"], true);
    assert_eq!(a["mtls_endpoint_aliases"]["token_endpoint"], env.url("/token"));
    assert_eq!(
        a["dpop_signing_alg_values_supported"],
        serde_json::json!(["ES256", "PS256", "EdDSA"])
    );
    let methods = a["token_endpoint_auth_methods_supported"].as_array().unwrap();
    for m in [
        "private_key_jwt",
        "tls_client_auth",
        "self_signed_tls_client_auth",
        "none",
    ] {
        assert!(methods.iter().any(|v| v == m), "{m}");
    }
    assert!(
        !a["token_endpoint_auth_signing_alg_values_supported"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "RS256" || v == "none")
    );
    // Every advertised endpoint exists (GET on POST-only endpoints gives 405, not 404).
    for (path, status) in [("/jwks", 200), ("/par", 405), ("/token", 405)] {
        assert_eq!(https.get(path).await.status, status, "{path}");
    }
}

#[tokio::test]
async fn jwks_publishes_the_es256_key_and_it_survives_a_restart() {
    let env = Env::new(&Options::default());
    let server = env.start();
    let https = Https::new(&env, None);
    let r = https.get("/jwks").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type").unwrap(), "application/jwk-set+json");
    let doc = r.json();
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "EC");
    assert_eq!(keys[0]["alg"], "ES256");
    assert!(keys[0].get("d").is_none(), "no private member");
    let kid = keys[0]["kid"].as_str().unwrap().to_string();
    drop(server);
    let _server = env.start();
    let doc = https.get("/jwks").await.json();
    assert_eq!(doc["keys"][0]["kid"], kid.as_str(), "the persisted key is reused");
    #[cfg(unix)]
    if !env.postgres {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(env.path("test.sqlite")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the database holds private keys");
    }
}

#[tokio::test]
async fn tls_12_and_13_with_and_without_client_certificates() {
    let env = Env::new(&Options::default());
    let _server = env.start();
    for versions in [&[&rustls::version::TLS12][..], &[&rustls::version::TLS13][..]] {
        for cert in [
            None,
            Some(("mtls-client.pem", "mtls-client-key.pem")),
            Some(("selfsigned-client.pem", "selfsigned-client-key.pem")),
        ] {
            let https = Https::with_versions(&env, cert, versions);
            assert_eq!(https.get("/jwks").await.status, 200);
        }
    }
}

#[tokio::test]
async fn plain_http_is_not_served() {
    let env = Env::new(&Options::default());
    let _server = env.start();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", env.port)).await.unwrap();
    tcp.write_all(b"GET /jwks HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(!String::from_utf8_lossy(&buf).contains("keys"));
}
