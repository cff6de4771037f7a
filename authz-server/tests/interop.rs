//! An independent OAuth/OIDC client library from npm (panva's `oauth4webapi`, an exact version in
//! `interop/package.json`, no dependencies of its own) completes a DPoP code flow against the
//! server: discovery, PAR with private_key_jwt and DPoP (server nonces required, so it must follow
//! `use_dpop_nonce`), login and consent, `iss`/`state` checks, code exchange with PKCE, ID token,
//! UserInfo with the DPoP-bound token, refresh. The tokens it got are then verified here with
//! keybound-core. It runs against both storage backends (SQLite, PostgreSQL).
//!
//! Needs Node.js 20+ and npm (the npm registry, on first run, to install `interop/node_modules`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]

mod common;

use common::*;
use keybound_core::jws::Signer;
use keybound_core::token::{TokenPolicy, verify_jwt};
use std::path::PathBuf;
use std::process::Command;

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop")
}

fn ensure_installed() {
    let dir = interop_dir();
    if dir.join("node_modules/oauth4webapi/package.json").is_file() {
        return;
    }
    let out = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--no-package-lock"])
        .current_dir(&dir)
        .output()
        .expect("npm is required for the interop test");
    assert!(
        out.status.success(),
        "npm install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn oauth4webapi_completes_a_dpop_code_flow() {
    oauth4webapi_flow(&Options {
        postgres: false,
        ..Options::default()
    })
    .await;
}

/// The same flow with the server's state in PostgreSQL.
#[tokio::test]
async fn oauth4webapi_completes_a_dpop_code_flow_on_postgres() {
    oauth4webapi_flow(&on_postgres(Options::default())).await;
}

async fn oauth4webapi_flow(opts: &Options) {
    ensure_installed();
    let env = Env::new(opts);
    let _server = env.start();
    let signer = fapi_key();
    let mut jwk: serde_json::Value = serde_json::from_str(&signer.public_key().to_json()).unwrap();
    jwk["d"] = keybound_core::b64::encode(&[0x11; 32]).into();
    jwk["kid"] = "fapi-1".into();
    let out = tokio::task::spawn_blocking({
        let (issuer, ca) = (env.issuer.clone(), env.path("ca.pem"));
        move || {
            Command::new("node")
                .arg("flow.mjs")
                .current_dir(interop_dir())
                .env("ISSUER", issuer)
                .env("CLIENT_ID", "fapi")
                .env("CLIENT_JWK", jwk.to_string())
                .env("USERNAME", "alice")
                .env("PASSWORD", PASSWORD)
                .env("REDIRECT_URI", REDIRECT)
                .env("NODE_EXTRA_CA_CERTS", ca)
                .output()
                .expect("node is required for the interop test")
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "oauth4webapi flow failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["token_type"].as_str().unwrap().to_ascii_lowercase(), "dpop");
    assert_eq!(
        result["refreshed_token_type"].as_str().unwrap().to_ascii_lowercase(),
        "dpop"
    );
    assert_eq!(result["id_token_sub"], "alice");
    assert_eq!(result["userinfo_sub"], "alice");
    assert!(
        result["nonce_retries"].as_u64().unwrap() >= 1,
        "the client had to fetch a nonce"
    );
    // The tokens it obtained are DPoP-bound RFC 9068 tokens, both bound to the library's key.
    let https = Https::new(&env, None);
    let jwks = server_jwks(&https).await;
    let policy = TokenPolicy::new(env.issuer.clone(), vec![AUDIENCE.into()]);
    let a = verify_jwt(
        result["access_token"].as_str().unwrap(),
        &jwks,
        &policy,
        now(),
        &keybound_core::jws::RustCrypto,
    )
    .unwrap();
    let b = verify_jwt(
        result["refreshed_access_token"].as_str().unwrap(),
        &jwks,
        &policy,
        now(),
        &keybound_core::jws::RustCrypto,
    )
    .unwrap();
    assert!(a.jkt().is_some());
    assert_eq!(a.jkt(), b.jkt());
}
