//! In-process test fixtures: an [`App`] built from a small config (in-memory database, no
//! listener), so checks can run with a fixed `now`. Tests only.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test fixtures"
)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use keybound_core::jws::{P256Signer, Signer};

use crate::config::Config;
use crate::state::App;

/// The issuer of the test config.
pub const ISSUER: &str = "https://127.0.0.1:8443";
/// The resource server of the test config.
pub const AUDIENCE: &str = "https://api.keybound.test";
/// The demo user's password.
pub const PASSWORD: &str = "correct horse battery staple";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The `private_key_jwt` key of client `fapi`.
pub fn fapi_key() -> P256Signer {
    P256Signer::from_bytes(&[0x11; 32]).unwrap()
}

/// A fresh directory with (empty) TLS files, which config validation only checks exist.
pub fn dir() -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("kb-authz-unit-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), "").unwrap();
    std::fs::write(dir.join("key.pem"), "").unwrap();
    dir
}

/// The test config text; `extra` is appended (more tables, e.g. `[login]`), `top` is inserted
/// before the first table (top-level keys).
pub fn config_text(top: &str, extra: &str) -> String {
    let jwk = keybound_core::jwk::Jwk::new(
        fapi_key().public_key().clone(),
        Some("fapi-1".into()),
        Some(keybound_core::jws::Alg::Es256),
    )
    .to_json();
    let hash = crate::init::hash_password(PASSWORD).unwrap();
    format!(
        r#"issuer = "{ISSUER}"
listen = "127.0.0.1:8443"
database = ":memory:"
scopes = ["openid", "accounts"]
audience = ["{AUDIENCE}"]
{top}

[tls]
cert = "cert.pem"
key = "key.pem"

[dpop]
nonce = "off"

[[clients]]
client_id = "fapi"
auth_method = "private_key_jwt"
sender_constraint = "dpop"
redirect_uris = ["https://client.keybound.test/cb"]
scopes = ["openid", "accounts"]
grant_types = ["authorization_code", "refresh_token", "client_credentials"]
jwks = '{{"keys":[{jwk}]}}'

[[clients]]
client_id = "spa"
auth_method = "none"
sender_constraint = "dpop"
redirect_uris = ["http://127.0.0.1:8080/cb"]
scopes = ["openid", "accounts"]

[[users]]
username = "alice"
password_hash = "{hash}"
{extra}
"#
    )
}

/// A config parsed from [`config_text`] (the TLS files are only checked at parse, so their
/// directory is removed again).
pub fn config(top: &str, extra: &str) -> Config {
    let dir = dir();
    let config = Config::parse(&config_text(top, extra), &dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    config
}

/// An app on the default test config.
pub async fn app() -> App {
    App::new(config("", "")).await.unwrap()
}
