//! The native Rust client driver for the authorization server tests: runs the real binary on a
//! free port with a generated config, and talks to it over real TLS sockets (optionally with a
//! client certificate) with hyper. Keys, PAR, PKCE, DPoP proofs and client assertions are made
//! with keybound-core.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    dead_code,
    reason = "test driver"
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use keybound_core::dpop::{NewProof, create_proof};
use keybound_core::jws::{P256Signer, Signer, sign_json};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

pub const BIN: &str = env!("CARGO_BIN_EXE_keybound-authz");
pub const NONCE_SECRET: &str = "dGVzdC1ub25jZS1zZWNyZXQtdGVzdC1ub25jZS1zZWNyZXQ";
pub const REDIRECT: &str = "https://client.keybound.test/cb";
pub const PASSWORD: &str = "correct horse battery staple";
pub const AUDIENCE: &str = "https://api.keybound.test";
/// A second resource server (RFC 8707 resource indicators), registered for `fapi` only.
pub const PAYMENTS_API: &str = "https://payments.keybound.test/v1";
/// A third configured resource, registered for no client of the test config.
pub const REPORTS: &str = "urn:keybound:test:reports";
/// The initial access token for dynamic client registration.
pub const INITIAL_ACCESS_TOKEN: &str = "initial-access-token-for-the-keybound-tests";
/// Bob's TOTP secret (the RFC 6238 test secret, base32).
pub const TOTP_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A unique id (for jti values and directories).
pub fn unique() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{t}-{n}", std::process::id())
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A fixed P-256 test key.
pub fn key(byte: u8) -> P256Signer {
    P256Signer::from_bytes(&[byte; 32]).unwrap()
}

pub fn jwk_json(signer: &P256Signer, kid: &str) -> String {
    keybound_core::jwk::Jwk::new(
        signer.public_key().clone(),
        Some(kid.into()),
        Some(keybound_core::jws::Alg::Es256),
    )
    .to_json()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Options for the generated test config.
#[derive(Clone)]
pub struct Options {
    pub nonce: bool,
    pub par_lifetime: u64,
    pub code_lifetime: u64,
    /// TOML appended to the config (whole tables, e.g. a `[login]` section).
    pub extra: String,
    /// Keep the server's state in a fresh database of the harness's PostgreSQL (started on
    /// first use, `keybound_e2e::postgres`) instead of an SQLite file. Default: whether
    /// `KEYBOUND_TEST_AUTHZ_STORAGE=postgres` is set, so the whole suite can run on PostgreSQL
    /// (not `KEYBOUND_AUTHZ_*`: the server reads those as overrides of its configuration).
    pub postgres: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            nonce: true,
            par_lifetime: 90,
            code_lifetime: 60,
            extra: String::new(),
            postgres: std::env::var("KEYBOUND_TEST_AUTHZ_STORAGE").is_ok_and(|v| v == "postgres"),
        }
    }
}

/// The options on PostgreSQL.
pub fn on_postgres(opts: Options) -> Options {
    Options { postgres: true, ..opts }
}

/// The `[storage]` table of a fresh PostgreSQL database (keys re-read every second, so a
/// rotation by one instance is soon seen by the others).
pub fn postgres_storage() -> String {
    let url = keybound_e2e::postgres::Postgres::shared()
        .and_then(|pg| pg.create_database())
        .unwrap_or_else(|e| panic!("PostgreSQL for the authz tests: {e}"));
    format!("\n[storage]\nurl = \"{url}\"\nkey_reload_seconds = 1\n")
}

/// The default options without DPoP nonces.
pub fn no_nonce() -> Options {
    Options {
        nonce: false,
        ..Options::default()
    }
}

/// `client_assertion_type` of `private_key_jwt` (RFC 7523).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A directory with dev certificates (from `keybound-authz init`) and a test config.
pub struct Env {
    pub dir: PathBuf,
    pub port: u16,
    pub issuer: String,
    pub config: PathBuf,
    /// Whether the state is in PostgreSQL (else in `test.sqlite` in `dir`).
    pub postgres: bool,
}

/// The client keys of the test config.
pub fn fapi_key() -> P256Signer {
    key(0x11)
}
pub fn fapi2_key() -> P256Signer {
    key(0x12)
}
pub fn rs_key() -> P256Signer {
    key(0x13)
}

impl Env {
    pub fn new(opts: &Options) -> Env {
        let dir = std::env::temp_dir().join(format!("kb-authz-test-{}", unique()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let out = Command::new(BIN)
            .args([
                "init",
                "--dir",
                dir.to_str().unwrap(),
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let issuer = format!("https://127.0.0.1:{port}");
        let hash = {
            let mut child = Command::new(BIN)
                .arg("hash-password")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(format!("{PASSWORD}\n").as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success());
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        let nonce = if opts.nonce {
            format!("nonce = \"required\"\nnonce_secrets = [\"{NONCE_SECRET}\"]")
        } else {
            "nonce = \"off\"".to_string()
        };
        let (database, storage) = if opts.postgres {
            (String::new(), postgres_storage())
        } else {
            ("database = \"test.sqlite\"".to_string(), String::new())
        };
        let config = format!(
            r#"issuer = "{issuer}"
listen = "127.0.0.1:{port}"
{database}
scopes = ["openid", "accounts", "payments"]
audience = ["{AUDIENCE}", "{PAYMENTS_API}", "{REPORTS}"]
default_resource = "{AUDIENCE}"
cors_origins = ["http://127.0.0.1:8080"]
pairwise_salt = "cGFpcndpc2Utc2FsdC1wYWlyd2lzZS1zYWx0LXBhaXJ3aXNlLXNhbHQ"

[tls]
cert = "server.pem"
key = "server-key.pem"
client_ca = "ca.pem"

[tokens]
par_lifetime = {par}
code_lifetime = {code}

[dpop]
{nonce}

[registration]
initial_access_tokens = ["{INITIAL_ACCESS_TOKEN}"]

[[clients]]
client_id = "fapi"
name = "FAPI <Test> Client"
auth_method = "private_key_jwt"
sender_constraint = "dpop"
redirect_uris = ["{REDIRECT}"]
scopes = ["openid", "accounts", "payments"]
resources = ["{AUDIENCE}", "{PAYMENTS_API}"]
grant_types = ["authorization_code", "refresh_token", "client_credentials"]
jwks = '{{"keys":[{fapi}]}}'

[[clients]]
client_id = "fapi2"
auth_method = "private_key_jwt"
sender_constraint = "dpop"
redirect_uris = ["{REDIRECT}"]
scopes = ["openid", "accounts"]
jwks = '{{"keys":[{fapi2}]}}'

[[clients]]
client_id = "mtls"
auth_method = "tls_client_auth"
tls_client_auth_subject_dn = "CN=mtls-client,O=keybound demo"
sender_constraint = "mtls"
redirect_uris = ["{REDIRECT}"]
scopes = ["openid", "accounts"]
grant_types = ["authorization_code", "refresh_token", "client_credentials"]

[[clients]]
client_id = "mtls-san"
auth_method = "tls_client_auth"
tls_client_auth_san_dns = "mtls-client.keybound.test"
sender_constraint = "mtls"
redirect_uris = ["{REDIRECT}"]
scopes = ["accounts"]

[[clients]]
client_id = "selfsigned"
auth_method = "self_signed_tls_client_auth"
certificate = "selfsigned-client.pem"
sender_constraint = "mtls"
redirect_uris = ["{REDIRECT}"]
scopes = ["accounts"]

[[clients]]
client_id = "spa"
auth_method = "none"
sender_constraint = "dpop"
redirect_uris = ["http://127.0.0.1:8080/cb"]
scopes = ["openid", "accounts"]
grant_types = ["authorization_code", "refresh_token"]

[[clients]]
client_id = "pw1"
auth_method = "none"
sender_constraint = "dpop"
redirect_uris = ["http://127.0.0.1:8080/cb"]
scopes = ["openid"]
subject_type = "pairwise"

[[clients]]
client_id = "pw2"
auth_method = "none"
sender_constraint = "dpop"
redirect_uris = ["http://127.0.0.1:9090/other"]
scopes = ["openid"]
subject_type = "pairwise"
sector = "127.0.0.1"

[[clients]]
client_id = "pw3"
auth_method = "none"
sender_constraint = "dpop"
redirect_uris = ["http://127.0.0.1:8080/cb"]
scopes = ["openid"]
subject_type = "pairwise"
sector = "other.keybound.test"

[[clients]]
client_id = "rs"
auth_method = "private_key_jwt"
sender_constraint = "dpop"
grant_types = []
introspection = true
jwks = '{{"keys":[{rs}]}}'

[[users]]
username = "alice"
password_hash = "{hash}"

[[users]]
username = "bob"
password_hash = "{hash}"
totp_secret = "{TOTP_SECRET}"
{extra}
{storage}
"#,
            extra = opts.extra,
            par = opts.par_lifetime,
            code = opts.code_lifetime,
            fapi = jwk_json(&fapi_key(), "fapi-1"),
            fapi2 = jwk_json(&fapi2_key(), "fapi2-1"),
            rs = jwk_json(&rs_key(), "rs-1"),
        );
        let config_path = dir.join("test.toml");
        std::fs::write(&config_path, config).unwrap();
        Env {
            dir,
            port,
            issuer,
            config: config_path,
            postgres: opts.postgres,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    pub fn start(&self) -> Server {
        Server::start(&self.config, self.port)
    }

    /// Starts another instance of the same server (same issuer, configuration and storage) on a
    /// port of its own, as a second replica behind a load balancer would be.
    pub fn start_another(&self) -> Server {
        let port = free_port();
        let text = std::fs::read_to_string(&self.config).unwrap().replacen(
            &format!("listen = \"127.0.0.1:{}\"", self.port),
            &format!("listen = \"127.0.0.1:{port}\""),
            1,
        );
        let config = self.dir.join(format!("test-{port}.toml"));
        std::fs::write(&config, text).unwrap();
        Server::start(&config, port)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The running server process; killed on drop.
pub struct Server {
    child: Child,
    pub port: u16,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Server {
    pub fn start(config: &Path, port: u16) -> Server {
        Server::start_with_env(config, port, &[])
    }

    /// Starts the server with extra environment variables (`KEYBOUND_AUTHZ_*` overrides).
    pub fn start_with_env(config: &Path, port: u16, vars: &[(&str, &str)]) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", "--config", config.to_str().unwrap()])
            .envs(vars.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let errs = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        if !line.starts_with("listening on") {
            let _ = child.kill();
            let _ = child.wait();
            panic!("server did not start: {line} {}", errs.join().unwrap_or_default());
        }
        Server {
            child,
            port,
            stderr: Some(errs),
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits (at most `limit`) for the process to exit: its exit status, or
    /// `None` if it was still running (then it is killed), and what it logged.
    pub fn terminate(mut self, limit: std::time::Duration) -> (Option<std::process::ExitStatus>, String) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = std::time::Instant::now() + limit;
        let mut status = None;
        while std::time::Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                status = Some(s);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        (
            status,
            self.stderr.take().and_then(|h| h.join().ok()).unwrap_or_default(),
        )
    }

    /// Stops the server; returns what it logged.
    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr.take().and_then(|h| h.join().ok()).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.text()))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_string())
    }
    /// The OAuth `error` of a JSON error response.
    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or("").to_string()
    }
    /// The error code on an HTML error page.
    pub fn page_error(&self) -> String {
        let t = self.text();
        let start = t.find("<p id=\"error\">").map(|i| i + 14).unwrap_or(0);
        t[start..].split('<').next().unwrap_or("").to_string()
    }
}

/// An HTTPS client for the test server, optionally with a client certificate.
#[derive(Clone)]
pub struct Https {
    config: Arc<rustls::ClientConfig>,
    pub port: u16,
    /// Set for an in-process client ([`InProcess::client`]): requests go through the router,
    /// with this certificate chain as the connection's.
    local: Option<(axum::Router, Option<Arc<Vec<CertificateDer<'static>>>>)>,
}

/// keybound-authz in this process: the real router and handlers, an in-memory SQLite store, and
/// a clock the test sets (no sockets, no sleeping). Clients from [`InProcess::client`] are
/// [`Https`] values, so every helper that drives a server drives this one too.
pub struct InProcess {
    /// The state.
    pub app: Arc<keybound_authz::state::App>,
    /// The clock every handler reads.
    pub clock: Arc<keybound_authz::state::ManualClock>,
    router: axum::Router,
}

impl InProcess {
    /// The server of `env`'s configuration, storage in memory, the clock at [`now`].
    pub async fn start(env: &Env) -> InProcess {
        let text = std::fs::read_to_string(&env.config).unwrap();
        let config = keybound_authz::config::Config::parse_with_env(
            &text,
            &env.dir,
            // In memory whatever the suite's storage (the `database` spelling or `storage.url`).
            [(
                if env.postgres {
                    "KEYBOUND_AUTHZ_STORAGE__URL"
                } else {
                    "KEYBOUND_AUTHZ_DATABASE"
                }
                .to_owned(),
                ":memory:".to_owned(),
            )],
        )
        .unwrap();
        let clock = Arc::new(keybound_authz::state::ManualClock::at(now()));
        let app = Arc::new(
            keybound_authz::state::App::with_clock(config, clock.clone())
                .await
                .unwrap(),
        );
        let router = keybound_authz::routes::router(app.clone());
        InProcess { app, clock, router }
    }

    /// A client presenting this certificate and key from `env` (`None`: no certificate).
    pub fn client(&self, env: &Env, cert: Option<(&str, &str)>) -> Https {
        let mut https = Https::new(env, None);
        let chain = cert.map(|(c, _)| Arc::new(read_pem_certs(&env.path(c))));
        https.local = Some((self.router.clone(), chain));
        https
    }

    /// A client with the mTLS client certificate.
    pub fn mtls(&self, env: &Env) -> Https {
        self.client(env, Some(("mtls-client.pem", "mtls-client-key.pem")))
    }
}

fn read_pem_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    let f = std::fs::File::open(path).unwrap();
    rustls_pemfile::certs(&mut BufReader::new(f))
        .map(|c| c.unwrap())
        .collect()
}

fn read_pem_key(path: &Path) -> PrivateKeyDer<'static> {
    let f = std::fs::File::open(path).unwrap();
    rustls_pemfile::private_key(&mut BufReader::new(f)).unwrap().unwrap()
}

impl Https {
    pub fn new(env: &Env, cert: Option<(&str, &str)>) -> Https {
        Self::with_versions(env, cert, &[&rustls::version::TLS13, &rustls::version::TLS12])
    }

    pub fn with_versions(
        env: &Env,
        cert: Option<(&str, &str)>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Https {
        let mut roots = rustls::RootCertStore::empty();
        for c in read_pem_certs(&env.path("ca.pem")) {
            roots.add(c).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
        let config = match cert {
            Some((c, k)) => builder
                .with_client_auth_cert(read_pem_certs(&env.path(c)), read_pem_key(&env.path(k)))
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        Https {
            config: Arc::new(config),
            port: env.port,
            local: None,
        }
    }

    /// The same client talking to the server instance on `port`.
    pub fn at(&self, port: u16) -> Https {
        Https {
            config: self.config.clone(),
            port,
            local: None,
        }
    }

    /// The mTLS client certificate (issued by the dev CA).
    pub fn mtls(env: &Env) -> Https {
        Self::new(env, Some(("mtls-client.pem", "mtls-client-key.pem")))
    }

    /// The self-signed client certificate.
    pub fn self_signed(env: &Env) -> Https {
        Self::new(env, Some(("selfsigned-client.pem", "selfsigned-client-key.pem")))
    }

    /// A new TLS connection to the server, to write raw HTTP on.
    pub async fn connect(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    }

    /// Sends one request on a new TLS connection (or through the router, in process).
    pub async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<String>) -> Resp {
        if let Some((router, chain)) = &self.local {
            use tower::ServiceExt;
            let mut req = axum::http::Request::builder()
                .method(method)
                .uri(path)
                .header("host", format!("127.0.0.1:{}", self.port));
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let req = req.body(axum::body::Body::from(body.unwrap_or_default())).unwrap();
            let routes = router
                .clone()
                .layer(axum::extract::Extension(keybound_authz::tls::PeerCerts(chain.clone())))
                .layer(axum::extract::Extension(keybound_authz::http::ClientAddr(
                    std::net::Ipv4Addr::LOCALHOST.into(),
                )));
            let res = routes.oneshot(req).await.unwrap();
            let status = res.status().as_u16();
            let headers = res.headers().clone();
            let body = axum::body::to_bytes(res.into_body(), usize::MAX)
                .await
                .unwrap()
                .to_vec();
            return Resp { status, headers, body };
        }
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let name = ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("127.0.0.1:{}", self.port));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default()))).unwrap();
        let res = sender.send_request(req).await.unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
        Resp { status, headers, body }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send("GET", path, &[], None).await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.send("GET", path, headers, None).await
    }

    pub async fn post_form(&self, path: &str, form: &[(&str, &str)], headers: &[(&str, &str)]) -> Resp {
        let mut h = vec![("content-type", "application/x-www-form-urlencoded")];
        h.extend_from_slice(headers);
        self.send("POST", path, &h, Some(encode(form))).await
    }
}

pub fn encode(form: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form {
        s.append_pair(k, v);
    }
    s.finish()
}

/// A client assertion for `client_id` signed with `signer`, with claims patched by `patch`.
pub fn assertion_with(
    env: &Env,
    client_id: &str,
    signer: &P256Signer,
    patch: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> String {
    let now = now();
    let mut claims = serde_json::Map::new();
    claims.insert("iss".into(), client_id.into());
    claims.insert("sub".into(), client_id.into());
    claims.insert("aud".into(), env.issuer.clone().into());
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), (now + 60).into());
    claims.insert("jti".into(), unique().into());
    patch(&mut claims);
    sign_json(signer, Some("JWT"), None, &serde_json::Value::Object(claims)).unwrap()
}

pub fn assertion(env: &Env, client_id: &str, signer: &P256Signer) -> String {
    assertion_with(env, client_id, signer, |_| {})
}

/// A DPoP proof for POST to `path` of the server.
pub fn proof(env: &Env, signer: &P256Signer, path: &str, nonce: Option<&str>) -> String {
    proof_at(env, signer, "POST", path, now(), nonce)
}

pub fn proof_at(env: &Env, signer: &P256Signer, htm: &str, path: &str, iat: u64, nonce: Option<&str>) -> String {
    create_proof(
        signer,
        &NewProof {
            htm,
            htu: &env.url(path),
            iat,
            jti: &unique(),
            access_token: None,
            nonce,
        },
    )
    .unwrap()
}

/// PKCE: (verifier, challenge).
pub fn pkce() -> (String, String) {
    let mut random = [0u8; 32];
    let u = unique();
    for (i, b) in u.bytes().enumerate() {
        random[i % 32] ^= b;
    }
    let verifier = keybound_core::pkce::verifier_from_random(&random);
    let challenge = keybound_core::pkce::challenge_s256(&verifier).unwrap();
    (verifier, challenge)
}

/// Gets a DPoP nonce: a proof without one (from the public client) is answered with
/// `use_dpop_nonce` and the header.
pub async fn fetch_nonce(env: &Env, https: &Https, signer: &P256Signer) -> String {
    let p = proof(env, signer, "/token", None);
    let r = https
        .post_form(
            "/token",
            &[("grant_type", "authorization_code"), ("client_id", "spa")],
            &[("dpop", &p)],
        )
        .await;
    r.header("dpop-nonce")
        .unwrap_or_else(|| panic!("no nonce: {} {}", r.status, r.text()))
}

/// The standard authorization parameters for a client.
/// `form` with a `private_key_jwt` client assertion (RFC 7523) added.
pub fn with_assertion<'a>(mut form: Vec<(&'a str, &'a str)>, assertion: &'a str) -> Vec<(&'a str, &'a str)> {
    form.push(("client_assertion_type", JWT_BEARER));
    form.push(("client_assertion", assertion));
    form
}

/// `client_credentials` for the certificate-bound client `mtls` (`https` presents its
/// certificate).
pub async fn mtls_client_credentials(https: &Https) -> Resp {
    https
        .post_form(
            "/token",
            &[("grant_type", "client_credentials"), ("client_id", "mtls")],
            &[],
        )
        .await
}

pub fn authz_params<'a>(client_id: &'a str, challenge: &'a str, redirect: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("client_id", client_id),
        ("response_type", "code"),
        ("redirect_uri", redirect),
        ("scope", "openid accounts"),
        ("state", "st-123"),
        ("nonce", "n-456"),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ]
}

/// The result of the browser part.
#[derive(Debug)]
pub struct Redirect {
    pub status: u16,
    pub location: String,
    pub params: std::collections::BTreeMap<String, String>,
}

/// The hidden `txn` field of a login page.
pub fn hidden_txn(html: &str) -> String {
    let i = html.find("name=\"txn\" value=\"").unwrap() + 18;
    html[i..].split('"').next().unwrap().to_string()
}

/// The transaction cookie (`name=value`) a login page set.
pub fn txn_cookie(r: &Resp) -> String {
    r.header("set-cookie").unwrap().split(';').next().unwrap().to_string()
}

/// Opens the login page of `request_uri` for `client_id`: (cookie, `txn`).
pub async fn login_page(https: &Https, client_id: &str, request_uri: &str) -> (String, String) {
    let q = encode(&[("client_id", client_id), ("request_uri", request_uri)]);
    let r = https.get(&format!("/authorize?{q}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    (txn_cookie(&r), hidden_txn(&r.text()))
}

/// The form of an `authorization_code` token request of a `private_key_jwt` client.
pub fn code_exchange<'a>(code: &'a str, verifier: &'a str, assertion: &'a str) -> Vec<(&'a str, &'a str)> {
    with_assertion(
        vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ],
        assertion,
    )
}

/// Pushes `form` to `/par` (with `headers`), checks that it was accepted (201), and goes through the
/// front channel as the demo user allowing consent: the redirect back to the client.
pub async fn par_then_allow(
    https: &Https,
    client_id: &str,
    form: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> Redirect {
    let r = https.post_form("/par", form, headers).await;
    assert_eq!(r.status, 201, "{client_id}: {}", r.text());
    browser(
        https,
        client_id,
        r.json()["request_uri"].as_str().unwrap(),
        PASSWORD,
        "allow",
    )
    .await
}

/// Opens the authorization URL, logs in and answers the consent page (`allow` or `deny`).
pub async fn browser(https: &Https, client_id: &str, request_uri: &str, password: &str, decision: &str) -> Redirect {
    let q = encode(&[("client_id", client_id), ("request_uri", request_uri)]);
    let r = https.get(&format!("/authorize?{q}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("access-control-allow-origin").is_none(),
        "no CORS on /authorize"
    );
    let cookie = r.header("set-cookie").unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let txn = hidden_txn(&r.text());
    let r = https
        .post_form(
            "/authorize/login",
            &[("txn", &txn), ("username", "alice"), ("password", password)],
            &[("cookie", &cookie)],
        )
        .await;
    assert_eq!(r.status, 200, "login: {}", r.text());
    let r = https
        .post_form(
            "/authorize/consent",
            &[("txn", &txn), ("decision", decision)],
            &[("cookie", &cookie)],
        )
        .await;
    let location = r.header("location").unwrap_or_default();
    let query = location.split_once('?').map(|(_, q)| q).unwrap_or("");
    let params = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    Redirect {
        status: r.status,
        location,
        params,
    }
}

/// The server's JWKS, for verifying its tokens with keybound-core.
pub async fn server_jwks(https: &Https) -> keybound_core::jwk::Jwks {
    let r = https.get("/jwks").await;
    keybound_core::jwk::Jwks::from_json(&r.body, keybound_core::Part::AccessToken).unwrap()
}

/// Decodes a JWT's payload without verifying.
pub fn claims(jwt: &str) -> serde_json::Value {
    let p = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&keybound_core::b64::decode(p).unwrap()).unwrap()
}

pub fn header(jwt: &str) -> serde_json::Value {
    let p = jwt.split('.').next().unwrap();
    serde_json::from_slice(&keybound_core::b64::decode(p).unwrap()).unwrap()
}
