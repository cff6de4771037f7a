//! The configuration file (TOML) and its validation.
//!
//! Unknown fields are refused, and every invalid value is reported with the name of its field
//! (`clients[1].redirect_uris[0]`), so `keybound-authz serve` refuses to start rather than fail
//! at request time. Relative paths are resolved against the directory of the config file. The
//! reference of every field is in the crate README.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use keybound_core::Part;
use keybound_core::cert::X5tS256;
use keybound_core::jwk::Jwks;
use keybound_core::jws::AlgSet;
use keybound_core::nonce::NonceSecrets;
use serde::Deserialize;

/// A configuration error: the field it is about and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The field, as a path (`tokens.code_lifetime`, `clients[0].jwks`); `file` for I/O and
    /// syntax errors.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config field `{}`: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

impl From<crate::overrides::FieldError> for ConfigError {
    fn from(e: crate::overrides::FieldError) -> Self {
        ConfigError {
            field: e.field,
            reason: e.reason,
        }
    }
}

fn err(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        reason: reason.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    issuer: String,
    listen: String,
    /// The SQLite file (older configs; `storage.url` is the same and more).
    #[serde(default)]
    database: Option<String>,
    #[serde(default)]
    storage: Option<RawStorage>,
    tls: RawTls,
    #[serde(default)]
    tokens: RawTokens,
    dpop: RawDpop,
    scopes: Vec<String>,
    audience: Vec<String>,
    #[serde(default)]
    default_resource: Option<String>,
    #[serde(default)]
    cors_origins: Vec<String>,
    #[serde(default)]
    pairwise_salt: Option<String>,
    #[serde(default)]
    registration: Option<RawRegistration>,
    #[serde(default)]
    login: RawLogin,
    #[serde(default)]
    clients: Vec<RawClient>,
    #[serde(default)]
    users: Vec<RawUser>,
    #[serde(default)]
    log: crate::log::LogSettings,
    #[serde(default)]
    admin: Option<RawAdmin>,
    #[serde(default)]
    trusted_proxy: Option<RawTrustedProxy>,
    #[serde(default)]
    authorization_details_types: Option<toml::Table>,
    #[serde(default)]
    psd2: Option<RawPsd2>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPsd2 {
    #[serde(default)]
    scope_roles: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrustedProxy {
    listen: String,
    addresses: Vec<String>,
    client_cert_header: CertHeader,
}

/// Where a trusted TLS-terminating proxy puts the client certificate it verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CertHeader {
    /// Envoy's `x-forwarded-client-cert`, the element the proxy appended (the last), with `Cert`
    /// (and `Chain` for intermediates) as percent-encoded PEM.
    Xfcc,
    /// RFC 9440 `Client-Cert` (and `Client-Cert-Chain`): DER as structured-field byte sequences.
    ClientCert,
}

/// The plain-HTTP listener for a TLS-terminating proxy (`[trusted_proxy]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedProxy {
    /// Where the plain-HTTP listener binds.
    pub listen: SocketAddr,
    /// The proxy's addresses: connections from any other address are closed unanswered.
    pub addresses: Vec<std::net::IpAddr>,
    /// The header the proxy puts the client certificate in.
    pub client_cert_header: CertHeader,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLogin {
    account_max_failures: u32,
    address_max_failures: u32,
    failure_window: u64,
    lockout: u64,
    max_lockout: u64,
}

impl Default for RawLogin {
    fn default() -> Self {
        let d = LoginThrottle::default();
        RawLogin {
            account_max_failures: d.account_max_failures,
            address_max_failures: d.address_max_failures,
            failure_window: d.failure_window,
            lockout: d.lockout,
            max_lockout: d.max_lockout,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    pool_size: Option<usize>,
    #[serde(default)]
    auto_migrate: Option<bool>,
    #[serde(default)]
    key_reload_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistration {
    initial_access_tokens: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTokens {
    access_token_lifetime: u64,
    refresh_token_lifetime: u64,
    code_lifetime: u64,
    par_lifetime: u64,
    id_token_lifetime: u64,
}

impl Default for RawTokens {
    fn default() -> Self {
        RawTokens {
            access_token_lifetime: 300,
            refresh_token_lifetime: 86_400,
            code_lifetime: 60,
            par_lifetime: 90,
            id_token_lifetime: 300,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDpop {
    nonce: NonceMode,
    #[serde(default)]
    nonce_secrets: Vec<String>,
    #[serde(default = "default_step")]
    nonce_step: u64,
    #[serde(default = "default_algs")]
    algs: Vec<String>,
    #[serde(default = "default_max_age")]
    max_age: u64,
}

fn default_step() -> u64 {
    keybound_core::nonce::DEFAULT_STEP_SECONDS
}
fn default_algs() -> Vec<String> {
    vec!["ES256".into(), "PS256".into(), "EdDSA".into()]
}
fn default_max_age() -> u64 {
    300
}

/// Whether DPoP proofs at this server must carry a server nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NonceMode {
    /// Every proof (at PAR and the token endpoint) must carry a valid nonce (RFC 9449 §8).
    Required,
    /// Nonces are not used.
    Off,
}

/// A client as written in the config file (or built from registration metadata).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClient {
    pub(crate) client_id: String,
    #[serde(default)]
    pub(crate) name: Option<String>,
    pub(crate) auth_method: AuthMethod,
    #[serde(default)]
    pub(crate) redirect_uris: Vec<String>,
    #[serde(default)]
    pub(crate) scopes: Vec<String>,
    #[serde(default)]
    pub(crate) resources: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) default_resource: Option<String>,
    pub(crate) sender_constraint: SenderConstraint,
    #[serde(default = "default_grants")]
    pub(crate) grant_types: Vec<GrantType>,
    #[serde(default)]
    pub(crate) jwks: Option<String>,
    #[serde(default)]
    pub(crate) jwks_file: Option<PathBuf>,
    #[serde(default)]
    pub(crate) tls_client_auth_subject_dn: Option<String>,
    #[serde(default)]
    pub(crate) tls_client_auth_san_dns: Option<String>,
    #[serde(default)]
    pub(crate) certificate: Option<PathBuf>,
    /// The self-signed certificate's thumbprint, when registered dynamically (`x5c`).
    #[serde(skip)]
    pub(crate) certificate_x5t: Option<X5tS256>,
    #[serde(default)]
    pub(crate) introspection: bool,
    #[serde(default)]
    pub(crate) subject_type: SubjectType,
    #[serde(default)]
    pub(crate) sector: Option<String>,
    #[serde(default)]
    pub(crate) authorization_details_types: Vec<String>,
    #[serde(default)]
    pub(crate) require_signed_request_object: bool,
    #[serde(default)]
    pub(crate) psd2_roles: Vec<String>,
}

/// Which subject identifiers a client gets (OIDC Core §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectType {
    /// The user name, the same for every client.
    #[default]
    Public,
    /// A different, unlinkable identifier per sector.
    Pairwise,
}

fn default_grants() -> Vec<GrantType> {
    vec![GrantType::AuthorizationCode]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    username: String,
    password_hash: String,
    #[serde(default)]
    totp_secret: Option<String>,
}

/// How a client authenticates at the PAR and token endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A JWT signed with a key from the client's registered JWKS (RFC 7523, OIDC Core §9).
    #[default]
    PrivateKeyJwt,
    /// A client certificate from the configured CA with a registered subject DN or SAN
    /// (RFC 8705 §2.1).
    TlsClientAuth,
    /// A self-signed client certificate registered with the client (RFC 8705 §2.2).
    SelfSignedTlsClientAuth,
    /// A public client: no authentication, must use DPoP.
    None,
}

impl AuthMethod {
    /// The registered name (`token_endpoint_auth_method`).
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::PrivateKeyJwt => "private_key_jwt",
            AuthMethod::TlsClientAuth => "tls_client_auth",
            AuthMethod::SelfSignedTlsClientAuth => "self_signed_tls_client_auth",
            AuthMethod::None => "none",
        }
    }
}

/// What the client's tokens are bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SenderConstraint {
    /// DPoP (RFC 9449): `cnf.jkt`, `token_type` `DPoP`.
    #[default]
    Dpop,
    /// The TLS client certificate (RFC 8705): `cnf.x5t#S256`, `token_type` `Bearer`.
    Mtls,
}

/// A grant type a client may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    /// `authorization_code`.
    AuthorizationCode,
    /// `refresh_token`.
    RefreshToken,
    /// `client_credentials`.
    ClientCredentials,
}

impl GrantType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::AuthorizationCode => "authorization_code",
            GrantType::RefreshToken => "refresh_token",
            GrantType::ClientCredentials => "client_credentials",
        }
    }
}

/// A registered client.
#[derive(Debug, Clone)]
pub struct Client {
    /// `client_id`.
    pub id: String,
    /// Display name for the consent page.
    pub name: String,
    /// Authentication method.
    pub auth_method: AuthMethod,
    /// Registered redirect URIs (exact match).
    pub redirect_uris: Vec<String>,
    /// Scopes the client may request.
    pub scopes: Vec<String>,
    /// The resources (RFC 8707) the client may ask tokens for: a subset of the server's
    /// `audience` (default: all of it).
    pub resources: Vec<String>,
    /// The resource a token is for when the client names none (see [`crate::indicators`]).
    pub default_resource: Option<String>,
    /// Token binding.
    pub sender_constraint: SenderConstraint,
    /// Allowed grant types.
    pub grant_types: Vec<GrantType>,
    /// Keys for `private_key_jwt`.
    pub jwks: Option<Jwks>,
    /// `tls_client_auth`: the expected subject DN (RFC 4514 string).
    pub tls_subject_dn: Option<String>,
    /// `tls_client_auth`: an expected DNS SAN.
    pub tls_san_dns: Option<String>,
    /// `self_signed_tls_client_auth`: the registered certificate's thumbprint.
    pub certificate: Option<X5tS256>,
    /// Whether this client (a resource server) may call the introspection endpoint.
    pub introspection: bool,
    /// The sector of a pairwise client (`None`: public subjects).
    pub sector: Option<String>,
    /// The RFC 9396 `authorization_details` types the client may request (RFC 9396 §10
    /// `authorization_details_types`).
    pub authorization_details_types: Vec<String>,
    /// Pushed requests must be signed request objects (RFC 9101 `require_signed_request_object`).
    pub require_signed_request_object: bool,
    /// PSD2 roles its client certificate must carry (ETSI TS 119 495).
    pub psd2_roles: Vec<keybound_core::qc::PspRole>,
}

/// A user who can log in.
#[derive(Clone)]
pub struct User {
    /// Login name, also the `sub` of tokens.
    pub username: String,
    /// Argon2 PHC string.
    pub password_hash: String,
    /// The TOTP secret, when the user has a second factor.
    pub totp_secret: Option<Vec<u8>>,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "User({}, totp: {})", self.username, self.totp_secret.is_some())
    }
}

/// Token and request lifetimes in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// Access tokens.
    pub access_token: u64,
    /// Refresh tokens.
    pub refresh_token: u64,
    /// Authorization codes (at most 60).
    pub code: u64,
    /// PAR `request_uri`s (below 600).
    pub par: u64,
    /// ID tokens.
    pub id_token: u64,
}

/// The DPoP settings.
#[derive(Debug, Clone)]
pub struct DpopSettings {
    /// The nonce secrets when nonces are required.
    pub nonce: Option<NonceSecrets>,
    /// Accepted proof algorithms.
    pub algs: AlgSet,
    /// How old a proof's `iat` may be, in seconds.
    pub max_age: u64,
}

/// How password and second-factor guessing is throttled (the `[login]` section). Failures are
/// counted per account and per client address; see [`crate::throttle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginThrottle {
    /// Failures of one account (any factor) before it is locked.
    pub account_max_failures: u32,
    /// Failures from one client address (IPv4 address, IPv6 /64) before it is locked.
    pub address_max_failures: u32,
    /// Seconds without a failure (after the end of the last lock) after which the count starts
    /// again.
    pub failure_window: u64,
    /// The first lock, in seconds; each further failure while the count stands doubles it.
    pub lockout: u64,
    /// The longest lock, in seconds.
    pub max_lockout: u64,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        LoginThrottle {
            account_max_failures: 5,
            address_max_failures: 20,
            failure_window: 900,
            lockout: 60,
            max_lockout: 3600,
        }
    }
}

/// The TLS files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM, PKCS#8 or SEC1).
    pub key: PathBuf,
    /// Trust anchors for `tls_client_auth` client certificates (PEM).
    pub client_ca: Option<PathBuf>,
}

/// The storage backend, from `storage.url` (or the older `database`).
#[derive(Clone, PartialEq, Eq)]
pub enum StorageUrl {
    /// An SQLite file (resolved against the config's directory), or `:memory:`.
    Sqlite(String),
    /// A PostgreSQL connection URL (`postgres://user:password@host:port/database?...`).
    Postgres(String),
}

impl fmt::Debug for StorageUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageUrl::Sqlite(path) => write!(f, "Sqlite({path:?})"),
            // The URL may hold a password.
            StorageUrl::Postgres(_) => f.write_str("Postgres(..)"),
        }
    }
}

impl StorageUrl {
    /// Parses `storage.url`: `postgres://` or `postgresql://` (checked as a connection string),
    /// `sqlite:PATH` / `sqlite://PATH`, or a plain path or `:memory:`; a relative SQLite path is
    /// resolved against `base`.
    ///
    /// # Errors
    /// A message saying what is wrong (an unknown scheme, an invalid PostgreSQL URL).
    pub fn parse(text: &str, base: &Path) -> Result<StorageUrl, String> {
        let text = text.trim();
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            let pg: tokio_postgres::Config = text.parse().map_err(|e| format!("not a valid PostgreSQL URL: {e}"))?;
            if pg.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
                return Err(
                    "sslmode=require is not supported: connections to PostgreSQL are plain TCP or a Unix socket".into(),
                );
            }
            return Ok(StorageUrl::Postgres(text.to_string()));
        }
        let path = match text.strip_prefix("sqlite:") {
            Some(rest) => rest.strip_prefix("//").unwrap_or(rest),
            None if text.contains("://") => {
                let scheme = text.split("://").next().unwrap_or_default();
                return Err(format!(
                    "unsupported scheme {scheme}: use postgres://..., sqlite:PATH or a file path"
                ));
            }
            None => text,
        };
        if path.is_empty() {
            return Err("must be a postgres:// URL, sqlite:PATH, a file path or :memory:".into());
        }
        if path == ":memory:" {
            return Ok(StorageUrl::Sqlite(path.into()));
        }
        Ok(StorageUrl::Sqlite(
            resolve(base, Path::new(path)).to_string_lossy().into_owned(),
        ))
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            StorageUrl::Sqlite(_) => "sqlite",
            StorageUrl::Postgres(_) => "postgres",
        }
    }
}

/// The `[storage]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageSettings {
    /// The backend and where it is.
    pub url: StorageUrl,
    /// PostgreSQL: the most connections this instance opens (default 16).
    pub pool_size: usize,
    /// Whether `serve` applies pending migrations at start (default `true`); when `false`, it
    /// refuses a database that `keybound-authz migrate` has not brought up to date.
    pub auto_migrate: bool,
    /// How often a running server re-reads its signing keys from storage, picking up a rotation
    /// made elsewhere (default 10 s).
    pub key_reload_seconds: u64,
}

/// The default PostgreSQL pool size.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The issuer identifier (`https://host[:port]`, no path, no trailing slash).
    pub issuer: String,
    /// The listen address.
    pub listen: SocketAddr,
    /// Where the server's state is kept.
    pub storage: StorageSettings,
    /// TLS files.
    pub tls: TlsFiles,
    /// Lifetimes.
    pub lifetimes: Lifetimes,
    /// DPoP.
    pub dpop: DpopSettings,
    /// Every scope the server knows.
    pub scopes: Vec<String>,
    /// The resource servers (RFC 8707 resource indicators): the possible `aud` of access tokens,
    /// one per token.
    pub audience: Vec<String>,
    /// The resource a token is for when neither the request nor the client names one; default:
    /// the only `audience` entry, if there is one.
    pub default_resource: Option<String>,
    /// Clients by id.
    pub clients: BTreeMap<String, Client>,
    /// Users by name.
    pub users: BTreeMap<String, User>,
    /// Browser origins allowed to call the token and PAR endpoints (CORS).
    pub cors_origins: Vec<String>,
    /// The secret salt of pairwise subject identifiers.
    pub pairwise_salt: Option<Vec<u8>>,
    /// Initial access tokens for dynamic client registration; `None`: registration is off.
    pub registration_tokens: Option<Vec<String>>,
    /// The login throttle.
    pub login: LoginThrottle,
    /// Log level and format.
    pub log: crate::log::LogSettings,
    /// The plain-HTTP admin listener (`/healthz`, `/readyz`, `/metrics`), if any.
    pub admin: Option<SocketAddr>,
    /// The plain-HTTP listener for a trusted TLS-terminating proxy, if any.
    pub trusted_proxy: Option<TrustedProxy>,
    /// The registered RFC 9396 `authorization_details` types.
    pub detail_types: keybound_core::rar::DetailTypes,
    /// PSD2 roles a client certificate must carry to be granted a scope (`psd2.scope_roles`).
    pub scope_roles: BTreeMap<String, Vec<keybound_core::qc::PspRole>>,
}

impl Config {
    /// Reads and validates a config file.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field for anything invalid, `file` if it cannot be read or
    /// parsed (the TOML error names the unknown or mistyped key).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| err("file", format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base)
    }

    /// Parses and validates config text; relative paths are resolved against `base`.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
        Config::parse_with_env(text, base, std::iter::empty())
    }

    /// Reads a config file, applies the process's `KEYBOUND_AUTHZ_*` environment overrides and
    /// the secrets given as files ([`crate::overrides`]), and validates the result.
    ///
    /// # Errors
    /// As [`Config::load`]; an override naming no table key is reported with the variable's name.
    pub fn load_with_env(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| err("file", format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse_with_env(&text, base, std::env::vars())
    }

    /// Parses config text, applies the overrides among `vars` and the secrets given as files, and
    /// validates the result.
    ///
    /// # Errors
    /// As [`Config::load_with_env`].
    pub fn parse_with_env(
        text: &str,
        base: &Path,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| toml_error(&e))?;
        crate::overrides::apply_env(&mut table, vars)?;
        crate::overrides::read_secret_files(&mut table, base, "")?;
        let raw: RawConfig = toml::Value::Table(table).try_into().map_err(|e| toml_error(&e))?;
        validate(raw, base)
    }

    /// Builds the URL of an endpoint path under the issuer.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }
}

fn toml_error(e: &toml::de::Error) -> ConfigError {
    // The message names the key ("unknown field `foo`", "missing field `issuer`"); the span gives
    // the line, and the key path is recovered from the message when possible.
    let message = e.message().to_string();
    let field = message
        .split('`')
        .nth(1)
        .filter(|_| message.contains("field"))
        .unwrap_or("file")
        .to_string();
    err(field, e.to_string().replace('\n', " "))
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
}

fn check_file(base: &Path, p: &Path, field: &str) -> Result<PathBuf, ConfigError> {
    let full = resolve(base, p);
    if !full.is_file() {
        return Err(err(field, format!("{} is not a readable file", full.display())));
    }
    Ok(full)
}

fn validate_issuer(issuer: &str) -> Result<String, ConfigError> {
    let rest = issuer
        .strip_prefix("https://")
        .ok_or_else(|| err("issuer", "must be an https URL"))?;
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ', '@']) {
        return Err(err(
            "issuer",
            "must be https://host[:port] without path, query, fragment or userinfo",
        ));
    }
    Ok(issuer.to_string())
}

/// Whether a redirect URI is acceptable: https, or http on a loopback host; no fragment.
pub fn redirect_uri_ok(uri: &str) -> bool {
    if uri.contains('#') || uri.contains(char::is_whitespace) {
        return false;
    }
    if let Some(rest) = uri.strip_prefix("https://") {
        return !rest.is_empty() && !rest.starts_with('/');
    }
    if let Some(rest) = uri.strip_prefix("http://") {
        let host = rest.split(['/', '?']).next().unwrap_or("");
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        return matches!(host, "127.0.0.1" | "[::1]" | "localhost");
    }
    false
}

fn validate(mut raw: RawConfig, base: &Path) -> Result<Config, ConfigError> {
    let issuer = validate_issuer(&raw.issuer)?;
    let listen = parse_addr(&raw.listen, "listen")?;
    let admin = raw
        .admin
        .as_ref()
        .map(|a| parse_addr(&a.listen, "admin.listen"))
        .transpose()?;
    if admin == Some(listen) {
        return Err(err("admin.listen", "must differ from listen"));
    }
    let trusted_proxy = raw
        .trusted_proxy
        .take()
        .map(|p| validate_trusted_proxy(p, listen))
        .transpose()?;
    let storage = validate_storage(raw.database.as_deref(), raw.storage.as_ref(), base)?;
    let tls = TlsFiles {
        cert: check_file(base, &raw.tls.cert, "tls.cert")?,
        key: check_file(base, &raw.tls.key, "tls.key")?,
        client_ca: raw
            .tls
            .client_ca
            .as_deref()
            .map(|p| check_file(base, p, "tls.client_ca"))
            .transpose()?,
    };
    let t = &raw.tokens;
    if !(1..=60).contains(&t.code_lifetime) {
        return Err(err("tokens.code_lifetime", "must be 1 to 60 seconds"));
    }
    if !(1..600).contains(&t.par_lifetime) {
        return Err(err("tokens.par_lifetime", "must be 1 to 599 seconds"));
    }
    if !(1..=3600).contains(&t.access_token_lifetime) {
        return Err(err("tokens.access_token_lifetime", "must be 1 to 3600 seconds"));
    }
    if t.refresh_token_lifetime == 0 {
        return Err(err("tokens.refresh_token_lifetime", "must be at least 1 second"));
    }
    if !(1..=3600).contains(&t.id_token_lifetime) {
        return Err(err("tokens.id_token_lifetime", "must be 1 to 3600 seconds"));
    }
    let lifetimes = Lifetimes {
        access_token: t.access_token_lifetime,
        refresh_token: t.refresh_token_lifetime,
        code: t.code_lifetime,
        par: t.par_lifetime,
        id_token: t.id_token_lifetime,
    };
    let nonce = match raw.dpop.nonce {
        NonceMode::Off => {
            if !raw.dpop.nonce_secrets.is_empty() {
                return Err(err("dpop.nonce_secrets", "set, but dpop.nonce is \"off\""));
            }
            None
        }
        NonceMode::Required => {
            let secrets: Vec<&str> = raw.dpop.nonce_secrets.iter().map(String::as_str).collect();
            Some(
                NonceSecrets::from_config(&secrets, raw.dpop.nonce_step, "dpop.nonce_secrets")
                    .map_err(|e| core_config_error(&e, "dpop.nonce_secrets"))?,
            )
        }
    };
    let algs = AlgSet::from_names(raw.dpop.algs.iter().map(String::as_str), "dpop.algs")
        .map_err(|e| core_config_error(&e, "dpop.algs"))?;
    if algs.contains(keybound_core::jws::Alg::Rs256) {
        return Err(err("dpop.algs", "RS256 is not allowed by FAPI 2.0"));
    }
    if !(10..=3600).contains(&raw.dpop.max_age) {
        return Err(err("dpop.max_age", "must be 10 to 3600 seconds"));
    }
    let dpop = DpopSettings {
        nonce,
        algs,
        max_age: raw.dpop.max_age,
    };
    for (i, s) in raw.scopes.iter().enumerate() {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') {
            return Err(err(
                format!("scopes[{i}]"),
                "must be a non-empty scope token (RFC 6749 §3.3)",
            ));
        }
    }
    if raw.audience.is_empty() {
        return Err(err(
            "audience",
            "at least one audience (resource server URL) is required",
        ));
    }
    for (i, a) in raw.audience.iter().enumerate() {
        if !resource_uri_ok(a) {
            return Err(err(
                format!("audience[{i}]"),
                "must be an absolute URI without fragment (RFC 8707 §2)",
            ));
        }
        if raw.audience.get(..i).is_some_and(|before| before.contains(a)) {
            return Err(err(format!("audience[{i}]"), "duplicate"));
        }
    }
    let default_resource = match (&raw.default_resource, raw.audience.as_slice()) {
        (Some(d), _) if raw.audience.contains(d) => Some(d.clone()),
        (Some(_), _) => return Err(err("default_resource", "must be one of audience")),
        (None, [only]) => Some(only.clone()),
        (None, _) => None,
    };
    for (i, o) in raw.cors_origins.iter().enumerate() {
        if !origin_ok(o) {
            return Err(err(
                format!("cors_origins[{i}]"),
                "must be an origin: scheme://host[:port], no path",
            ));
        }
    }
    let pairwise_salt = match &raw.pairwise_salt {
        Some(s) => match keybound_core::b64::decode(s) {
            Ok(k) if k.len() >= 32 => Some(k),
            _ => return Err(err("pairwise_salt", "must be base64url of at least 32 bytes")),
        },
        None => None,
    };
    let registration_tokens = match raw.registration {
        Some(r) => {
            if r.initial_access_tokens.is_empty() {
                return Err(err(
                    "registration.initial_access_tokens",
                    "at least one token is required",
                ));
            }
            for (i, t) in r.initial_access_tokens.iter().enumerate() {
                if t.len() < 32 || !t.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(err(
                        format!("registration.initial_access_tokens[{i}]"),
                        "must be at least 32 printable characters",
                    ));
                }
            }
            Some(r.initial_access_tokens)
        }
        None => None,
    };
    let login = validate_login(&raw.login)?;
    let detail_types = match &raw.authorization_details_types {
        None => keybound_core::rar::DetailTypes::default(),
        Some(table) => {
            let json = serde_json::to_value(table).map_err(|e| err("authorization_details_types", e.to_string()))?;
            keybound_core::rar::DetailTypes::from_config(&json, "authorization_details_types")
                .map_err(|e| core_config_error(&e, "authorization_details_types"))?
        }
    };
    let mut scope_roles = BTreeMap::new();
    for (scope, roles) in raw.psd2.map(|p| p.scope_roles).unwrap_or_default() {
        let field = format!("psd2.scope_roles.{scope}");
        if !raw.scopes.contains(&scope) {
            return Err(err(field, "not one of the top-level scopes"));
        }
        scope_roles.insert(scope, psd2_roles(&roles, &field)?);
    }
    let mut clients = BTreeMap::new();
    for (i, c) in raw.clients.into_iter().enumerate() {
        let client = validate_client(
            c,
            i,
            (&raw.scopes, &raw.audience, default_resource.as_deref()),
            &detail_types,
            base,
        )?;
        if client.sector.is_some() && pairwise_salt.is_none() {
            return Err(err("pairwise_salt", "required when a client uses pairwise subjects"));
        }
        if clients.contains_key(&client.id) {
            return Err(err(format!("clients[{i}].client_id"), "duplicate client_id"));
        }
        clients.insert(client.id.clone(), client);
    }
    let mut users = BTreeMap::new();
    for (i, u) in raw.users.into_iter().enumerate() {
        if u.username.is_empty() {
            return Err(err(format!("users[{i}].username"), "must not be empty"));
        }
        if argon2::PasswordHash::new(&u.password_hash).is_err() || !u.password_hash.starts_with("$argon2") {
            return Err(err(
                format!("users[{i}].password_hash"),
                "must be an argon2 PHC string (keybound-authz hash-password)",
            ));
        }
        if users.contains_key(&u.username) {
            return Err(err(format!("users[{i}].username"), "duplicate username"));
        }
        let totp_secret = match &u.totp_secret {
            Some(t) => match crate::totp::base32_decode(t) {
                Some(k) if k.len() >= 10 => Some(k),
                _ => {
                    return Err(err(
                        format!("users[{i}].totp_secret"),
                        "must be base32 of at least 80 bits",
                    ));
                }
            },
            None => None,
        };
        users.insert(
            u.username.clone(),
            User {
                username: u.username,
                password_hash: u.password_hash,
                totp_secret,
            },
        );
    }
    Ok(Config {
        issuer,
        listen,
        storage,
        tls,
        lifetimes,
        dpop,
        scopes: raw.scopes,
        audience: raw.audience,
        default_resource,
        clients,
        users,
        cors_origins: raw.cors_origins,
        pairwise_salt,
        registration_tokens,
        login,
        log: raw.log,
        admin,
        trusted_proxy,
        detail_types,
        scope_roles,
    })
}

fn parse_addr(value: &str, field: &str) -> Result<SocketAddr, ConfigError> {
    value
        .parse()
        .map_err(|_| err(field, "must be an IP address and port, e.g. 127.0.0.1:8443"))
}

fn validate_trusted_proxy(raw: RawTrustedProxy, listen: SocketAddr) -> Result<TrustedProxy, ConfigError> {
    let proxy_listen = parse_addr(&raw.listen, "trusted_proxy.listen")?;
    if proxy_listen == listen {
        return Err(err("trusted_proxy.listen", "must differ from listen"));
    }
    if raw.addresses.is_empty() {
        return Err(err("trusted_proxy.addresses", "must name at least the proxy's address"));
    }
    let addresses = raw
        .addresses
        .iter()
        .enumerate()
        .map(|(i, a)| {
            a.parse()
                .map_err(|_| err(format!("trusted_proxy.addresses[{i}]"), "must be an IP address"))
        })
        .collect::<Result<_, _>>()?;
    Ok(TrustedProxy {
        listen: proxy_listen,
        addresses,
        client_cert_header: raw.client_cert_header,
    })
}

fn validate_storage(
    database: Option<&str>,
    raw: Option<&RawStorage>,
    base: &Path,
) -> Result<StorageSettings, ConfigError> {
    let url = raw.and_then(|s| s.url.as_deref());
    let (field, text) = match (database, url) {
        (Some(_), Some(_)) => return Err(err("storage.url", "give either storage.url or database, not both")),
        (Some(d), None) => ("database", d),
        (None, Some(u)) => ("storage.url", u),
        (None, None) => {
            return Err(err(
                "storage.url",
                "required: a SQLite file path (or sqlite:PATH, :memory:) or a postgres:// URL",
            ));
        }
    };
    let url = StorageUrl::parse(text, base).map_err(|reason| err(field, reason))?;
    let pool_size = raw.and_then(|s| s.pool_size).unwrap_or(DEFAULT_POOL_SIZE);
    if !(1..=1000).contains(&pool_size) {
        return Err(err("storage.pool_size", "must be between 1 and 1000"));
    }
    let key_reload_seconds = raw.and_then(|s| s.key_reload_seconds).unwrap_or(10);
    if !(1..=3600).contains(&key_reload_seconds) {
        return Err(err("storage.key_reload_seconds", "must be between 1 and 3600"));
    }
    Ok(StorageSettings {
        url,
        pool_size,
        auto_migrate: raw.and_then(|s| s.auto_migrate).unwrap_or(true),
        key_reload_seconds,
    })
}

fn validate_login(l: &RawLogin) -> Result<LoginThrottle, ConfigError> {
    if !(1..=100).contains(&l.account_max_failures) {
        return Err(err("login.account_max_failures", "must be 1 to 100"));
    }
    if !(1..=10_000).contains(&l.address_max_failures) {
        return Err(err("login.address_max_failures", "must be 1 to 10000"));
    }
    if !(1..=86_400).contains(&l.failure_window) {
        return Err(err("login.failure_window", "must be 1 to 86400 seconds"));
    }
    if !(1..=86_400).contains(&l.lockout) {
        return Err(err("login.lockout", "must be 1 to 86400 seconds"));
    }
    if !(l.lockout..=604_800).contains(&l.max_lockout) {
        return Err(err(
            "login.max_lockout",
            "must be at least login.lockout and at most 604800 seconds",
        ));
    }
    Ok(LoginThrottle {
        account_max_failures: l.account_max_failures,
        address_max_failures: l.address_max_failures,
        failure_window: l.failure_window,
        lockout: l.lockout,
        max_lockout: l.max_lockout,
    })
}

/// The host (without port) of an http(s) URI.
fn uri_host(uri: &str) -> &str {
    let rest = uri.split_once("://").map_or(uri, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.starts_with('[') {
        return authority
            .split(']')
            .next()
            .map_or(authority, |h| h.trim_start_matches('['));
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

fn origin_ok(o: &str) -> bool {
    let rest = o.strip_prefix("https://").or_else(|| o.strip_prefix("http://"));
    rest.is_some_and(|r| !r.is_empty() && !r.contains(['/', '?', '#', ' ', '@', '*']))
}

fn core_config_error(e: &keybound_core::Error, fallback: &str) -> ConfigError {
    match e {
        keybound_core::Error::Config { field, reason } => err(field.clone(), reason.clone()),
        other => err(fallback, other.reason()),
    }
}

/// Validates a client made from registration metadata (no files, field names `clients[0]...`).
///
/// # Errors
/// The [`ConfigError`] of the first invalid field.
pub(crate) fn validate_registered(c: RawClient, config: &Config) -> Result<Client, ConfigError> {
    let client = validate_client(
        c,
        0,
        (&config.scopes, &config.audience, config.default_resource.as_deref()),
        &config.detail_types,
        Path::new("/nonexistent"),
    )?;
    if client.sector.is_some() && config.pairwise_salt.is_none() {
        return Err(err("subject_type", "pairwise subjects are not configured"));
    }
    Ok(client)
}

/// Whether `s` is acceptable as a resource indicator (RFC 8707 §2): an absolute URI (RFC 3986
/// §4.3: a scheme, `:`, and more), without fragment, whitespace or control characters.
pub fn resource_uri_ok(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && !s.contains('#')
        && s.bytes().all(|b| b.is_ascii_graphic())
}

/// PSD2 role names (`PSP_PI`) as roles, `field` naming the list in errors.
fn psd2_roles(names: &[String], field: &str) -> Result<Vec<keybound_core::qc::PspRole>, ConfigError> {
    names
        .iter()
        .enumerate()
        .map(|(j, n)| {
            keybound_core::qc::PspRole::from_name(n).ok_or_else(|| {
                err(
                    format!("{field}[{j}]"),
                    format!("{n:?}: expected PSP_AS, PSP_PI, PSP_AI or PSP_IC"),
                )
            })
        })
        .collect()
}

fn validate_client(
    c: RawClient,
    i: usize,
    (scopes, audience, server_default): (&[String], &[String], Option<&str>),
    detail_types: &keybound_core::rar::DetailTypes,
    base: &Path,
) -> Result<Client, ConfigError> {
    let f = |name: &str| format!("clients[{i}].{name}");
    for (j, t) in c.authorization_details_types.iter().enumerate() {
        if !detail_types.names().any(|n| n == t) {
            return Err(err(
                format!("clients[{i}].authorization_details_types[{j}]"),
                "not one of the registered authorization_details_types",
            ));
        }
    }
    let psd2 = psd2_roles(&c.psd2_roles, &f("psd2_roles"))?;
    if !psd2.is_empty()
        && c.auth_method != AuthMethod::TlsClientAuth
        && c.auth_method != AuthMethod::SelfSignedTlsClientAuth
        && c.sender_constraint != SenderConstraint::Mtls
    {
        return Err(err(
            f("psd2_roles"),
            "needs a client certificate: tls_client_auth, self_signed_tls_client_auth or sender_constraint mtls",
        ));
    }
    if c.client_id.is_empty() || !c.client_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(err(f("client_id"), "must be non-empty printable ASCII"));
    }
    for (j, uri) in c.redirect_uris.iter().enumerate() {
        if !redirect_uri_ok(uri) {
            return Err(err(
                format!("clients[{i}].redirect_uris[{j}]"),
                "must be https (or http on a loopback host) without fragment",
            ));
        }
    }
    if c.grant_types.contains(&GrantType::AuthorizationCode) && c.redirect_uris.is_empty() {
        return Err(err(f("redirect_uris"), "required for the authorization_code grant"));
    }
    for (j, s) in c.scopes.iter().enumerate() {
        if !scopes.contains(s) {
            return Err(err(format!("clients[{i}].scopes[{j}]"), "not in the top-level scopes"));
        }
    }
    let resources = match &c.resources {
        None => audience.to_vec(),
        Some(list) if list.is_empty() => return Err(err(f("resources"), "must not be empty (omit it for all)")),
        Some(list) => {
            for (j, r) in list.iter().enumerate() {
                if !audience.contains(r) {
                    return Err(err(
                        format!("clients[{i}].resources[{j}]"),
                        "not one of the top-level audience",
                    ));
                }
            }
            let mut unique: Vec<String> = Vec::with_capacity(list.len());
            for r in list {
                if !unique.contains(r) {
                    unique.push(r.clone());
                }
            }
            unique
        }
    };
    let default_resource = match (&c.default_resource, resources.as_slice()) {
        (Some(d), _) if resources.contains(d) => Some(d.clone()),
        (Some(_), _) => return Err(err(f("default_resource"), "not one of the client's resources")),
        (None, [only]) => Some(only.clone()),
        (None, _) => server_default
            .filter(|d| resources.iter().any(|r| r == d))
            .map(str::to_string),
    };
    if c.auth_method == AuthMethod::None && c.sender_constraint != SenderConstraint::Dpop {
        return Err(err(
            f("sender_constraint"),
            "public clients (auth_method none) must use dpop",
        ));
    }
    if c.auth_method == AuthMethod::None && c.grant_types.contains(&GrantType::ClientCredentials) {
        return Err(err(
            f("grant_types"),
            "client_credentials needs an authenticated client",
        ));
    }
    let jwks_text = match (&c.jwks, &c.jwks_file) {
        (Some(_), Some(_)) => return Err(err(f("jwks_file"), "set only one of jwks and jwks_file")),
        (Some(t), None) => Some(t.clone()),
        (None, Some(p)) => {
            let full = check_file(base, p, &f("jwks_file"))?;
            Some(std::fs::read_to_string(&full).map_err(|e| err(f("jwks_file"), e.to_string()))?)
        }
        (None, None) => None,
    };
    let jwks = match jwks_text {
        Some(t) => {
            let set = Jwks::from_json(t.as_bytes(), Part::Other)
                .map_err(|e| err(f("jwks"), format!("not a public JWKS ({})", e.reason())))?;
            if set.keys().is_empty() {
                return Err(err(f("jwks"), "no usable signing key"));
            }
            Some(set)
        }
        None => None,
    };
    if c.auth_method == AuthMethod::PrivateKeyJwt && jwks.is_none() {
        return Err(err(f("jwks"), "required for private_key_jwt"));
    }
    if c.auth_method == AuthMethod::TlsClientAuth
        && c.tls_client_auth_subject_dn.is_none()
        && c.tls_client_auth_san_dns.is_none()
    {
        return Err(err(
            f("tls_client_auth_subject_dn"),
            "tls_client_auth needs tls_client_auth_subject_dn or tls_client_auth_san_dns",
        ));
    }
    let certificate = match (&c.certificate, c.auth_method) {
        (Some(p), _) => {
            let full = check_file(base, p, &f("certificate"))?;
            let pem = std::fs::read_to_string(&full).map_err(|e| err(f("certificate"), e.to_string()))?;
            Some(X5tS256::from_pem(&pem).map_err(|_| err(f("certificate"), "not a PEM certificate"))?)
        }
        (None, AuthMethod::SelfSignedTlsClientAuth) => match c.certificate_x5t {
            Some(x) => Some(x),
            None => return Err(err(f("certificate"), "required for self_signed_tls_client_auth")),
        },
        (None, _) => c.certificate_x5t,
    };
    let sector = match (c.subject_type, &c.sector) {
        (SubjectType::Public, None) => None,
        (SubjectType::Public, Some(_)) => return Err(err(f("sector"), "only for subject_type pairwise")),
        (SubjectType::Pairwise, Some(s)) if !s.is_empty() => Some(s.clone()),
        (SubjectType::Pairwise, Some(_)) => return Err(err(f("sector"), "must not be empty")),
        (SubjectType::Pairwise, None) => {
            // OIDC Core §8.1: without a sector identifier, the host of the redirect URIs, which
            // must then all share it.
            let hosts: std::collections::BTreeSet<&str> = c.redirect_uris.iter().map(|u| uri_host(u)).collect();
            match hosts.len() {
                1 => hosts.into_iter().next().map(str::to_string),
                _ => {
                    return Err(err(
                        f("sector"),
                        "required for pairwise subjects unless all redirect_uris share one host",
                    ));
                }
            }
        }
    };
    if c.require_signed_request_object && jwks.is_none() {
        return Err(err(
            f("require_signed_request_object"),
            "needs the client's jwks to verify its request objects",
        ));
    }
    Ok(Client {
        sector,
        name: c.name.unwrap_or_else(|| c.client_id.clone()),
        id: c.client_id,
        auth_method: c.auth_method,
        redirect_uris: c.redirect_uris,
        scopes: c.scopes,
        resources,
        default_resource,
        sender_constraint: c.sender_constraint,
        grant_types: c.grant_types,
        jwks,
        tls_subject_dn: c.tls_client_auth_subject_dn,
        tls_san_dns: c.tls_client_auth_san_dns,
        certificate,
        introspection: c.introspection,
        authorization_details_types: c.authorization_details_types,
        require_signed_request_object: c.require_signed_request_object,
        psd2_roles: psd2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_https_or_loopback_only() {
        for ok in [
            "https://client.example/cb",
            "https://client.example/cb?x=1",
            "http://127.0.0.1:9000/cb",
            "http://localhost/cb",
        ] {
            assert!(redirect_uri_ok(ok), "{ok}");
        }
        for bad in [
            "http://client.example/cb",
            "https://client.example/cb#frag",
            "ftp://x",
            "https://",
            "http://127.0.0.1.evil.example/cb",
            "",
        ] {
            assert!(!redirect_uri_ok(bad), "{bad}");
        }
    }

    #[test]
    fn resource_indicators_are_absolute_uris_without_fragment() {
        for ok in [
            "https://api.example",
            "https://api.example/v1?x=1",
            "urn:example:resource",
            "http://127.0.0.1:8080/",
        ] {
            assert!(resource_uri_ok(ok), "{ok}");
        }
        for bad in [
            "",
            "api.example",
            "/relative",
            "https://api.example#f",
            "1http://x",
            "https:",
            "https://a b",
            "https://a\u{7f}",
            ":x",
        ] {
            assert!(!resource_uri_ok(bad), "{bad}");
        }
    }

    #[test]
    fn issuer_must_be_a_bare_https_origin() {
        assert!(validate_issuer("https://as.example:8443").is_ok());
        for bad in [
            "http://as.example",
            "https://as.example/",
            "https://as.example/x",
            "https://",
        ] {
            assert_eq!(validate_issuer(bad).unwrap_err().field, "issuer", "{bad}");
        }
    }
}
