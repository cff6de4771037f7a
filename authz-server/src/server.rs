//! The HTTPS server: state, routes, the TLS accept loop, and the OAuth error response.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use axum::Router;
use axum::extract::Extension;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::keys::KeyRing;
use crate::storage::{Storage, StorageError};
use crate::tls::{CaVerifier, PeerCerts};

/// The endpoint paths, under the issuer.
pub mod paths {
    /// OpenID Provider metadata.
    pub const OPENID_CONFIGURATION: &str = "/.well-known/openid-configuration";
    /// RFC 8414 metadata.
    pub const OAUTH_METADATA: &str = "/.well-known/oauth-authorization-server";
    /// The JWKS.
    pub const JWKS: &str = "/jwks";
    /// Pushed authorization requests (RFC 9126).
    pub const PAR: &str = "/par";
    /// The authorization endpoint.
    pub const AUTHORIZE: &str = "/authorize";
    /// The login form target.
    pub const LOGIN: &str = "/authorize/login";
    /// The TOTP form target.
    pub const TOTP: &str = "/authorize/totp";
    /// The consent form target.
    pub const CONSENT: &str = "/authorize/consent";
    /// The token endpoint.
    pub const TOKEN: &str = "/token";
    /// Token introspection (RFC 7662).
    pub const INTROSPECT: &str = "/introspect";
    /// Token revocation (RFC 7009).
    pub const REVOKE: &str = "/revoke";
    /// Dynamic client registration (RFC 7591); `/register/{client_id}` for RFC 7592.
    pub const REGISTER: &str = "/register";
    /// OpenID Connect UserInfo.
    pub const USERINFO: &str = "/userinfo";
}

/// An in-progress browser authorization (between the authorization endpoint and consent).
#[derive(Debug, Clone)]
pub struct Transaction {
    /// The PAR `request_uri` being authorized.
    pub request_uri: String,
    /// The client.
    pub client_id: String,
    /// The user, once logged in (every factor).
    pub user: Option<String>,
    /// The user whose password was right, while the TOTP code is awaited.
    pub pending_user: Option<String>,
    /// Failed password or TOTP attempts.
    pub failures: u32,
    /// When the user logged in.
    pub auth_time: Option<u64>,
    /// Expiry (Unix seconds).
    pub expires_at: u64,
    /// When it started (the `request_uri` was valid then).
    pub started_at: u64,
}

/// How many browser transactions are held at once. A flood of `GET /authorize` evicts the oldest
/// ones beyond this (about 3 MiB of memory), never more.
pub const MAX_TRANSACTIONS: usize = 10_000;

/// The browser transactions in memory, bounded: at most `cap` of them, the oldest evicted first.
///
/// Every transaction lives [`crate::authorize::TRANSACTION_LIFETIME`] seconds from its start, so
/// insertion order is expiry order: an insert drops expired entries from the front of the queue,
/// and the oldest one while the queue is full. Each id is queued once and dequeued once, so an
/// insert costs amortised O(1) (no sweep of the whole map). Lookups check expiry themselves.
#[derive(Debug)]
pub struct Transactions {
    map: HashMap<String, Transaction>,
    /// Ids in insertion order with their expiry; may still name ids already removed.
    order: VecDeque<(String, u64)>,
    cap: usize,
}

impl Transactions {
    /// An empty set holding at most `cap` transactions (at least one).
    pub fn new(cap: usize) -> Self {
        Transactions {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Adds a transaction, first dropping expired ones at the front and evicting the oldest
    /// while full.
    pub fn insert(&mut self, id: String, txn: Transaction, now: u64) {
        while let Some((_, expires_at)) = self.order.front() {
            if *expires_at > now && self.order.len() < self.cap {
                break;
            }
            if let Some((old, _)) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
        self.order.push_back((id.clone(), txn.expires_at));
        self.map.insert(id, txn);
    }

    /// A transaction that has not expired at `now`.
    pub fn get(&self, id: &str, now: u64) -> Option<&Transaction> {
        self.map.get(id).filter(|t| t.expires_at > now)
    }

    /// A transaction to update (expired or not).
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Transaction> {
        self.map.get_mut(id)
    }

    /// Ends a transaction.
    pub fn remove(&mut self, id: &str) -> Option<Transaction> {
        self.map.remove(id)
    }

    /// How many transactions are held (expired ones not yet dropped included).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Everything a request handler needs.
pub struct App {
    /// The configuration.
    pub config: Config,
    /// Persistent state.
    pub store: Arc<dyn Storage>,
    /// Signing keys.
    pub keys: RwLock<KeyRing>,
    /// Verifier for `tls_client_auth` chains.
    pub ca: Option<CaVerifier>,
    /// Browser transactions by id (in memory: an unfinished login is not committed state),
    /// bounded by [`MAX_TRANSACTIONS`].
    pub transactions: Mutex<Transactions>,
    /// An argon2 hash of a random password, checked for unknown users.
    pub dummy_hash: String,
    /// Bounds concurrent argon2 checks (each takes ~19 MiB and tens of ms of CPU).
    pub password_slots: tokio::sync::Semaphore,
    /// Prometheus metrics (shared with the storage timer).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Set when a shutdown starts: `/readyz` answers 503 from then on.
    pub draining: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "App({})", self.config.issuer)
    }
}

impl App {
    /// Opens storage (the configured backend, migrated unless `storage.auto_migrate` is off),
    /// loads keys and builds the state.
    ///
    /// # Errors
    /// A message if storage, keys or the CA file fail.
    pub async fn new(config: Config) -> Result<App, String> {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let store: Arc<dyn Storage> = Arc::new(crate::storage::timed::Timed::new(
            crate::storage::open(&config.storage).await.map_err(|e| e.to_string())?,
            metrics.clone(),
        ));
        let keys = KeyRing::load_or_create(store.as_ref(), crate::random::now())
            .await
            .map_err(|e| e.to_string())?;
        let ca = config
            .tls
            .client_ca
            .as_deref()
            .map(CaVerifier::from_pem_file)
            .transpose()?;
        Ok(App {
            config,
            store,
            keys: RwLock::new(keys),
            ca,
            transactions: Mutex::new(Transactions::new(MAX_TRANSACTIONS)),
            dummy_hash: crate::init::hash_password(&crate::random::token().map_err(|e| e.to_string())?)?,
            password_slots: tokio::sync::Semaphore::new(PASSWORD_SLOTS),
            metrics,
            draining: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// A client by id: from the configuration, else a dynamically registered one.
    ///
    /// # Errors
    /// `server_error` if storage fails.
    pub async fn client(&self, id: &str) -> Result<Option<Arc<crate::config::Client>>, OAuthError> {
        if let Some(c) = self.config.clients.get(id) {
            return Ok(Some(Arc::new(c.clone())));
        }
        let Some(rec) = self.store.client(id).await? else {
            return Ok(None);
        };
        let meta: serde_json::Value =
            serde_json::from_str(&rec.metadata).map_err(|e| OAuthError::server(e.to_string()))?;
        crate::registration::client_from_metadata(&self.config, id, &meta)
            .map(|c| Some(Arc::new(c)))
            .map_err(|e| OAuthError::server(format!("stored client {id}: {}", e.reason)))
    }

    /// The subject identifier `client` sees for the local user `local` (OIDC Core §8): the user
    /// name for public clients; for pairwise clients base64url(SHA-256(sector, user, salt)), the
    /// same for every client of a sector and unlinkable across sectors.
    pub fn subject(&self, client: &crate::config::Client, local: &str) -> String {
        use sha2::{Digest, Sha256};
        match (&client.sector, &self.config.pairwise_salt) {
            (Some(sector), Some(salt)) => {
                let mut h = Sha256::new();
                h.update(b"keybound-pairwise-v1\0");
                h.update(sector.as_bytes());
                h.update(b"\0");
                h.update(local.as_bytes());
                h.update(b"\0");
                h.update(salt);
                keybound_core::b64::encode(&h.finalize())
            }
            _ => local.to_string(),
        }
    }

    /// How long a retired signing key stays published: the longest token it may have signed.
    pub fn key_retention(&self) -> u64 {
        let l = &self.config.lifetimes;
        l.access_token.max(l.id_token).saturating_add(60)
    }

    /// Reloads the signing keys from storage (picks up `keybound-authz keys rotate` and a
    /// rotation by another instance sharing the database).
    pub async fn reload_keys(&self) {
        match KeyRing::load_or_create(self.store.as_ref(), crate::random::now()).await {
            Ok(ring) => match self.keys.write() {
                Ok(mut k) => *k = ring,
                Err(p) => *p.into_inner() = ring,
            },
            Err(e) => log_line("error", "key_reload_failed", &e.to_string()),
        }
    }

    /// The key ring (a poisoned lock still holds valid keys).
    pub fn keyring(&self) -> KeyRing {
        match self.keys.read() {
            Ok(k) => k.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

/// An OAuth error response (RFC 6749 §5.2 and the RFCs that extend it): only the code is sent.
#[derive(Debug)]
pub struct OAuthError {
    /// HTTP status.
    pub status: StatusCode,
    /// The RFC error code.
    pub code: &'static str,
    /// A fresh DPoP nonce to send (`use_dpop_nonce`, RFC 9449 §8).
    pub dpop_nonce: Option<String>,
    /// What happened, for the log only.
    pub reason: String,
}

impl OAuthError {
    /// A 400 error.
    pub fn bad(code: &'static str, reason: impl Into<String>) -> Self {
        OAuthError {
            status: StatusCode::BAD_REQUEST,
            code,
            dpop_nonce: None,
            reason: reason.into(),
        }
    }

    /// `invalid_request`.
    pub fn invalid_request(reason: impl Into<String>) -> Self {
        Self::bad("invalid_request", reason)
    }

    /// `invalid_client` (401).
    pub fn invalid_client(reason: impl Into<String>) -> Self {
        OAuthError {
            status: StatusCode::UNAUTHORIZED,
            code: "invalid_client",
            dpop_nonce: None,
            reason: reason.into(),
        }
    }

    /// `invalid_grant`.
    pub fn invalid_grant(reason: impl Into<String>) -> Self {
        Self::bad("invalid_grant", reason)
    }

    /// `server_error` (500).
    pub fn server(reason: impl Into<String>) -> Self {
        OAuthError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "server_error",
            dpop_nonce: None,
            reason: reason.into(),
        }
    }

    /// A core error at an endpoint of this server (400 with the core's RFC code).
    pub fn from_core(e: &keybound_core::Error) -> Self {
        let code = e.code().map_or("invalid_request", |c| c.as_str());
        Self::bad(code, e.reason())
    }
}

impl From<StorageError> for OAuthError {
    fn from(e: StorageError) -> Self {
        OAuthError::server(e.to_string())
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let level = if self.status.is_server_error() { "error" } else { "info" };
        log_event(
            level,
            "oauth_error",
            serde_json::json!({ "error": self.code, "status": self.status.as_u16(), "reason": self.reason }),
        );
        let mut res = (self.status, axum::Json(serde_json::json!({ "error": self.code }))).into_response();
        let h = res.headers_mut();
        no_store(h);
        if let Some(nonce) = self.dpop_nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
            h.insert("dpop-nonce", nonce);
        }
        res
    }
}

fn level(name: &str) -> crate::log::Level {
    match name {
        "debug" => crate::log::Level::Debug,
        "info" => crate::log::Level::Info,
        "warn" => crate::log::Level::Warn,
        _ => crate::log::Level::Error,
    }
}

/// Logs one line (`debug`, `info`, `warn`, `error`; see [`crate::log`]) with a `detail`.
pub fn log_line(level_name: &str, event: &str, detail: &str) {
    crate::log::event(level(level_name), event, serde_json::json!({ "detail": detail }));
}

/// Logs one line with `fields` (an object) next to `ts`, `level`, `event`.
pub fn log_event(level_name: &str, event: &str, fields: serde_json::Value) {
    crate::log::event(level(level_name), event, fields);
}

/// The address of the TCP peer of a request (a request extension set per connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::IpAddr);

/// `Cache-Control: no-store` and `Pragma: no-cache` (RFC 6749 §5.1).
pub fn no_store(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// A JSON response with `no-store`.
pub fn json_no_store(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut res = (status, axum::Json(body.clone())).into_response();
    no_store(res.headers_mut());
    res
}

/// The name of the one parameter that may repeat: `resource` (RFC 8707 §2).
pub const RESOURCE: &str = "resource";

/// Form parameters with each name at most once (RFC 6749 §3.1), except `resource`, which may be
/// given several times (RFC 8707 §2) and is kept apart, in order.
#[derive(Debug, Clone, Default)]
pub struct Params {
    /// Every other parameter by name.
    pub values: BTreeMap<String, String>,
    /// The non-empty `resource` values, in request order.
    pub resources: Vec<String>,
}

impl Params {
    /// Parses an `application/x-www-form-urlencoded` body.
    ///
    /// # Errors
    /// `invalid_request` if the content type is not a form or a parameter repeats.
    pub fn from_form(headers: &HeaderMap, body: &[u8]) -> Result<Params, OAuthError> {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(OAuthError::invalid_request("content type is not a form"));
        }
        Params::parse(body)
    }

    /// Parses urlencoded pairs (a query string or form body).
    ///
    /// # Errors
    /// `invalid_request` if a parameter other than `resource` repeats.
    pub fn parse(raw: &[u8]) -> Result<Params, OAuthError> {
        let mut params = Params::default();
        for (k, v) in form_urlencoded::parse(raw) {
            if k == RESOURCE {
                if !v.is_empty() {
                    params.resources.push(v.into_owned());
                }
            } else if params.values.insert(k.into_owned(), v.into_owned()).is_some() {
                return Err(OAuthError::invalid_request("repeated parameter"));
            }
        }
        Ok(params)
    }

    /// Whether a parameter was sent at all (even empty).
    pub fn contains(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// A parameter; an empty value counts as absent (RFC 6749 §3.1).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// A required parameter.
    ///
    /// # Errors
    /// `invalid_request` if absent.
    pub fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("missing {name}")))
    }
}

/// How many argon2 password checks may run at once.
pub const PASSWORD_SLOTS: usize = 4;

/// How often a running server deletes expired records from storage (seconds).
pub const PURGE_SECONDS: u64 = 60;

/// The shared state type of the router.
pub type AppState = Arc<App>;

/// The routes of the TLS listener (and of the trusted-proxy listener).
pub fn router(app: AppState) -> Router {
    Router::new()
        .route(paths::OPENID_CONFIGURATION, get(crate::discovery::metadata))
        .route(paths::OAUTH_METADATA, get(crate::discovery::metadata))
        .route(paths::JWKS, get(crate::discovery::jwks))
        .route(paths::PAR, post(crate::par::push).options(crate::cors::preflight))
        .route(paths::AUTHORIZE, get(crate::authorize::start))
        .route(paths::LOGIN, post(crate::authorize::login))
        .route(paths::TOTP, post(crate::authorize::totp))
        .route(paths::CONSENT, post(crate::authorize::consent))
        .route(paths::TOKEN, post(crate::token::token).options(crate::cors::preflight))
        .route(paths::INTROSPECT, post(crate::introspect::introspect))
        .route(paths::REVOKE, post(crate::introspect::revoke))
        .route(
            paths::USERINFO,
            get(crate::userinfo::userinfo).post(crate::userinfo::userinfo),
        )
        .route(paths::REGISTER, post(crate::registration::register))
        .route(
            "/register/{client_id}",
            get(crate::registration::read)
                .put(crate::registration::update)
                .delete(crate::registration::delete),
        )
        .route(crate::ops::HEALTHZ, get(crate::ops::healthz))
        .route(crate::ops::READYZ, get(crate::ops::readyz))
        .layer(axum::middleware::from_fn_with_state(app.clone(), crate::cors::cors))
        .layer(axum::middleware::from_fn_with_state(app.clone(), crate::ops::observe))
        .with_state(app)
}

/// How long a shutdown waits for requests in flight before it exits anyway (seconds).
pub const SHUTDOWN_GRACE_SECONDS: u64 = 30;

/// Binds every configured listener and serves until SIGTERM or SIGINT; then stops accepting,
/// lets requests in flight finish (at most [`SHUTDOWN_GRACE_SECONDS`]) and returns. Prints one
/// line, `listening on <addr>` (with ` (admin on <addr>)` and ` (trusted proxy on <addr>)` when
/// configured), to stdout once the sockets are bound.
///
/// # Errors
/// A message if an address cannot be bound or the TLS files are unusable.
pub async fn run(config: Config) -> Result<(), String> {
    let tls = crate::tls::server_config(&config.tls.cert, &config.tls.key)?;
    let (listen, admin, proxy) = (config.listen, config.admin, config.trusted_proxy.clone());
    let app = Arc::new(App::new(config).await?);
    let bind = |addr: SocketAddr| async move {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("listen {addr}: {e}"))?;
        let local = l.local_addr().map_err(|e| e.to_string())?;
        Ok::<_, String>((l, local))
    };
    let (main, addr) = bind(listen).await?;
    let admin = match admin {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let proxied = match &proxy {
        Some(p) => Some(bind(p.listen).await?),
        None => None,
    };
    // One line only: whoever waits for it may close the pipe after reading it.
    let mut line = format!("listening on {addr}");
    if let Some((_, a)) = &admin {
        line.push_str(&format!(" (admin on {a})"));
    }
    if let Some((_, a)) = &proxied {
        line.push_str(&format!(" (trusted proxy on {a})"));
    }
    println!("{line}");
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (done_tx, mut done) = tokio::sync::mpsc::channel::<()>(1);
    background(app.clone(), stop.clone());
    let routes = router(app.clone());
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    tokio::spawn(accept_loop(
        main,
        Listener::Tls(acceptor),
        routes.clone(),
        stop.clone(),
        done_tx.clone(),
    ));
    if let Some((l, _)) = admin {
        let admin_routes = crate::ops::admin_router(app.clone())
            .layer(axum::middleware::from_fn_with_state(app.clone(), crate::ops::observe));
        tokio::spawn(accept_loop(
            l,
            Listener::Plain(None),
            admin_routes,
            stop.clone(),
            done_tx.clone(),
        ));
    }
    if let (Some((l, _)), Some(p)) = (proxied, proxy) {
        tokio::spawn(accept_loop(
            l,
            Listener::Plain(Some(p)),
            routes,
            stop.clone(),
            done_tx.clone(),
        ));
    }
    drop(done_tx);
    shutdown_signal().await;
    app.draining.store(true, std::sync::atomic::Ordering::Relaxed);
    log_line("info", "shutdown", "stopped accepting; waiting for requests in flight");
    let _ = stop_tx.send(true);
    // Every accept loop and connection holds a sender: `recv` returns when the last one ends.
    let drained = tokio::time::timeout(std::time::Duration::from_secs(SHUTDOWN_GRACE_SECONDS), done.recv()).await;
    if drained.is_err() {
        log_line("warn", "shutdown", "requests still in flight after the grace period");
    }
    log_line("info", "shutdown", "done");
    Ok(())
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                log_line("error", "signal", &e.to_string());
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// Reloads keys every `storage.key_reload_seconds` and purges expired records every
/// [`PURGE_SECONDS`], until `stop`.
fn background(app: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        let reload = std::time::Duration::from_secs(app.config.storage.key_reload_seconds);
        let mut last_purge = std::time::Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(reload) => {}
                _ = stop.changed() => return,
            }
            app.reload_keys().await;
            if last_purge.elapsed().as_secs() >= PURGE_SECONDS {
                last_purge = std::time::Instant::now();
                if let Err(e) = app.store.purge_expired(crate::random::now()).await {
                    log_line("error", "purge_failed", &e.to_string());
                }
            }
        }
    });
}

/// What a listener speaks.
#[derive(Clone)]
enum Listener {
    /// TLS with an optional client certificate.
    Tls(TlsAcceptor),
    /// Plain HTTP: the admin listener (`None`) or the trusted-proxy listener.
    Plain(Option<crate::config::TrustedProxy>),
}

/// Accepts connections until `stop`, serving each on its own task; `done` is held by the loop and
/// by every connection so the caller can wait for all of them.
async fn accept_loop(
    listener: TcpListener,
    kind: Listener,
    routes: Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
    done: tokio::sync::mpsc::Sender<()>,
) {
    loop {
        let (tcp, peer_addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    log_line("error", "accept_failed", &e.to_string());
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let (kind, routes, stop, done) = (kind.clone(), routes.clone(), stop.clone(), done.clone());
        tokio::spawn(async move {
            handle_connection(tcp, peer_addr, kind, routes, stop).await;
            drop(done);
        });
    }
}

async fn handle_connection(
    tcp: tokio::net::TcpStream,
    peer_addr: SocketAddr,
    kind: Listener,
    routes: Router,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    match kind {
        Listener::Tls(acceptor) => {
            let tls = match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    log_line("info", "tls_handshake_failed", &format!("{peer_addr}: {e}"));
                    return;
                }
                Err(_) => return,
            };
            let certs = tls
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| Arc::new(c.iter().map(|c| c.clone().into_owned()).collect::<Vec<_>>()));
            let routes = routes
                .layer(Extension(PeerCerts(certs)))
                .layer(Extension(ClientAddr(peer_addr.ip())));
            serve_http(TokioIo::new(tls), routes, stop).await;
        }
        Listener::Plain(None) => {
            let routes = routes.layer(Extension(ClientAddr(peer_addr.ip())));
            serve_http(TokioIo::new(tcp), routes, stop).await;
        }
        Listener::Plain(Some(proxy)) => {
            if !crate::proxy::trusted(&proxy.addresses, peer_addr.ip()) {
                log_event(
                    "warn",
                    "untrusted_proxy_connection",
                    serde_json::json!({ "client": peer_addr.ip().to_string() }),
                );
                return;
            }
            let (header, ip) = (proxy.client_cert_header, peer_addr.ip());
            let routes = routes.layer(axum::middleware::from_fn(move |req, next| {
                crate::proxy::from_proxy(header, ip, req, next)
            }));
            serve_http(TokioIo::new(tcp), routes, stop).await;
        }
    }
}

/// Serves HTTP/1.1 on one connection until it closes; on `stop`, finishes the request in flight
/// and closes.
async fn serve_http<I>(io: I, routes: Router, mut stop: tokio::sync::watch::Receiver<bool>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = TowerToHyperService::new(routes);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(30))
        .serve_connection(io, svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        log_line("info", "connection_error", &e.to_string());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn txn(now: u64, lifetime: u64) -> Transaction {
        Transaction {
            request_uri: "urn:x".into(),
            client_id: "c".into(),
            user: None,
            pending_user: None,
            failures: 0,
            auth_time: None,
            expires_at: now + lifetime,
            started_at: now,
        }
    }

    /// Expired transactions are dropped by later inserts, the oldest is evicted when full, and
    /// ids removed early (completed logins) never let the queue grow past the bound.
    #[test]
    fn transactions_drop_expired_then_evict_the_oldest_and_stay_bounded() {
        let mut t = Transactions::new(3);
        t.insert("a".into(), txn(100, 10), 100);
        t.insert("b".into(), txn(105, 10), 105);
        assert!(t.get("a", 109).is_some() && t.get("a", 110).is_none());
        t.insert("c".into(), txn(111, 10), 111);
        assert_eq!(t.len(), 2, "a expired and was dropped");
        t.insert("d".into(), txn(112, 10), 112);
        t.insert("e".into(), txn(113, 10), 113);
        assert_eq!(t.len(), 3);
        assert!(t.get("b", 113).is_none() && t.get("e", 113).is_some(), "oldest evicted");
        for i in 0..1000u64 {
            let id = format!("x{i}");
            t.insert(id.clone(), txn(200, 600), 200);
            t.remove(&id);
        }
        assert!(t.order.len() <= 3 && t.is_empty());
    }
}
