//! Persistent state behind one async interface, [`Storage`], with two backends: SQLite
//! ([`sqlite`], embedded, the default) and PostgreSQL ([`postgres`], for several instances
//! sharing one database). [`open`] picks the backend from the configured URL
//! ([`crate::config::StorageUrl`]).
//!
//! Every method is one short transaction, and every operation that must happen once across
//! instances is decided by the database in one atomic step, never by a read then a write in Rust:
//! a PAR `request_uri`, an authorization code and a revocation are single conditional `UPDATE`s
//! whose row count says whether this caller won; a `jti` (client assertion, DPoP proof) is one
//! `INSERT ... ON CONFLICT DO UPDATE ... WHERE` the old record is no longer live; a TOTP step
//! one such upsert; a login throttle record is changed under a row lock (PostgreSQL
//! `SELECT ... FOR UPDATE`, SQLite `BEGIN IMMEDIATE`); the signing keys are created and rotated
//! in one transaction holding the table's lock. Structured data that only the server reads is
//! stored as JSON text.
//!
//! Schema changes are numbered migrations per backend ([`sqlite::MIGRATIONS`],
//! [`postgres::MIGRATIONS`]), applied by [`migrate`] (`keybound-authz migrate`) and, unless
//! `storage.auto_migrate = false`, when the server starts.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::{StorageSettings, StorageUrl};

pub mod postgres;
pub mod sqlite;
pub mod timed;

pub use postgres::PostgresStorage;
pub use sqlite::SqliteStorage;

/// A storage failure (I/O, a corrupt database, an unreachable server). Requests that hit one fail
/// with `server_error`.
#[derive(Debug)]
pub struct StorageError(pub String);

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "storage: {}", self.0)
    }
}

impl std::error::Error for StorageError {}

/// Result of a storage call.
pub type StoreResult<T> = Result<T, StorageError>;

/// What every [`Storage`] method returns: a boxed future, so the trait stays dyn-compatible
/// (`Arc<dyn Storage>`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = StoreResult<T>> + Send + 'a>>;

/// How [`Storage::throttle_update`] changes a record: gets the current one (if any), returns the
/// one to store (`None` deletes it). It may be called more than once (a retried transaction).
pub type ThrottleFn = Arc<dyn Fn(Option<ThrottleRecord>) -> Option<ThrottleRecord> + Send + Sync>;

/// A login throttle record before and after one [`Storage::throttle_update`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ThrottleChange {
    /// The record the update saw.
    pub before: Option<ThrottleRecord>,
    /// The record it stored (`None`: there is none now).
    pub after: Option<ThrottleRecord>,
}

/// How many migrations a [`migrate`] found applied and how many there are now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// The backend (`sqlite` or `postgres`).
    pub backend: &'static str,
    /// The schema version before.
    pub from: u32,
    /// The schema version after (the number of migrations this binary knows).
    pub to: u32,
}

/// An ES256 signing key of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    /// The `kid` (the key's RFC 7638 thumbprint).
    pub kid: String,
    /// The 32-byte private scalar.
    pub secret: Vec<u8>,
    /// When it was created (Unix seconds); the newest unretired key signs.
    pub created_at: u64,
    /// When it stopped signing, if it did.
    pub retired_at: Option<u64>,
}

/// A pushed authorization request (RFC 9126).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParRecord {
    /// The `request_uri` handed to the client.
    pub request_uri: String,
    /// The client that pushed it.
    pub client_id: String,
    /// The validated authorization parameters (JSON).
    pub params: String,
    /// Expiry (Unix seconds).
    pub expires_at: u64,
    /// Whether the user completed authorization with it.
    pub consumed: bool,
}

/// An authorization code (only its SHA-256 is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRecord {
    /// SHA-256 of the code.
    pub code_hash: Vec<u8>,
    /// The client it was issued to.
    pub client_id: String,
    /// The grant it starts: tokens issued from it carry this id, so a reuse can revoke them.
    pub grant_id: String,
    /// What the code stands for (JSON).
    pub data: String,
    /// Expiry (Unix seconds).
    pub expires_at: u64,
    /// Whether it was redeemed.
    pub used: bool,
    /// The DPoP key thumbprint the tokens issued from it are bound to (set when redeemed), so a
    /// later reuse can be told apart from the client's own retry.
    pub redeemed_jkt: Option<String>,
}

/// An issued token (access or refresh): what introspection and revocation need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// The access token's `jti`, or the SHA-256 (base64url) of a refresh token.
    pub id: String,
    /// `access` or `refresh`.
    pub kind: String,
    /// The grant the token belongs to.
    pub grant_id: String,
    /// The client.
    pub client_id: String,
    /// The token's claims (JSON), as introspection reports them.
    pub data: String,
    /// Expiry (Unix seconds).
    pub expires_at: u64,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// A recorded consent: the signed JWT is the non-repudiable record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentRecord {
    /// Its id (the JWT's `jti`).
    pub id: String,
    /// The user.
    pub subject: String,
    /// The client.
    pub client_id: String,
    /// The scopes granted (space-separated).
    pub scope: String,
    /// The consent as a JWT signed by the server.
    pub jwt: String,
    /// When (Unix seconds).
    pub created_at: u64,
}

/// A dynamically registered client (RFC 7591).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredClient {
    /// The `client_id`.
    pub client_id: String,
    /// Its metadata (JSON), as validated at registration.
    pub metadata: String,
    /// base64url(SHA-256) of its registration access token (RFC 7592).
    pub registration_token_hash: String,
    /// When it was registered.
    pub created_at: u64,
}

/// The failure count of one login throttle key (an account or a client address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ThrottleRecord {
    /// Failures counted since the count last started again.
    pub failures: u32,
    /// When the last failure was (Unix seconds).
    pub last_failure: u64,
    /// Attempts are refused while `now < locked_until`.
    pub locked_until: u64,
    /// When the record stops mattering (the count would start again), so it may be purged.
    pub expires_at: u64,
}

/// Everything the server persists. Every method's error is a [`StorageError`] on database
/// failure.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// A cheap round trip to the database (for `/readyz`).
    fn ping(&self) -> StoreFuture<'_, ()>;
    /// The schema version (number of migrations applied).
    fn schema_version(&self) -> StoreFuture<'_, u32>;

    /// Stores or replaces a registered client.
    fn put_client<'a>(&'a self, client: &'a RegisteredClient) -> StoreFuture<'a, ()>;
    /// Looks up a registered client.
    fn client<'a>(&'a self, client_id: &'a str) -> StoreFuture<'a, Option<RegisteredClient>>;
    /// Deletes a registered client; `true` if it existed.
    fn delete_client<'a>(&'a self, client_id: &'a str) -> StoreFuture<'a, bool>;

    /// All signing keys, oldest first.
    fn signing_keys(&self) -> StoreFuture<'_, Vec<SigningKeyRecord>>;
    /// Adds `key` only if no unretired key exists (decided under the table's lock, so instances
    /// starting together on an empty database create one key between them): `true` if added.
    fn add_first_signing_key<'a>(&'a self, key: &'a SigningKeyRecord) -> StoreFuture<'a, bool>;
    /// Rotation, in one transaction holding the table's lock: adds `key`, retires every other
    /// unretired key at `key.created_at`, and deletes keys retired before `delete_retired_before`.
    fn rotate_signing_key<'a>(&'a self, key: &'a SigningKeyRecord, delete_retired_before: u64) -> StoreFuture<'a, ()>;

    /// Stores a pushed authorization request.
    fn put_par<'a>(&'a self, par: &'a ParRecord) -> StoreFuture<'a, ()>;
    /// Looks up a pushed authorization request.
    fn par<'a>(&'a self, request_uri: &'a str) -> StoreFuture<'a, Option<ParRecord>>;
    /// Consumes a request: `true` if it existed, was unconsumed and not expired at `now`, and is
    /// now consumed by this call.
    fn consume_par<'a>(&'a self, request_uri: &'a str, now: u64) -> StoreFuture<'a, bool>;

    /// Stores an authorization code.
    fn put_code<'a>(&'a self, code: &'a CodeRecord) -> StoreFuture<'a, ()>;
    /// Looks up a code by its hash.
    fn code<'a>(&'a self, code_hash: &'a [u8]) -> StoreFuture<'a, Option<CodeRecord>>;
    /// Marks a code used, recording the DPoP key its tokens are bound to (if any): `true` if
    /// this call did (it was unused).
    fn use_code<'a>(&'a self, code_hash: &'a [u8], redeemed_jkt: Option<&'a str>) -> StoreFuture<'a, bool>;

    /// Stores an issued token.
    fn put_token<'a>(&'a self, token: &'a TokenRecord) -> StoreFuture<'a, ()>;
    /// Looks up a token by id.
    fn token<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<TokenRecord>>;
    /// Revokes one token; `true` if it existed and was not revoked.
    fn revoke_token<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool>;
    /// Revokes every token of a grant; returns how many were revoked.
    fn revoke_grant<'a>(&'a self, grant_id: &'a str) -> StoreFuture<'a, usize>;

    /// Records a consent.
    fn put_consent<'a>(&'a self, consent: &'a ConsentRecord) -> StoreFuture<'a, ()>;
    /// The consents of a user, newest first.
    fn consents<'a>(&'a self, subject: &'a str) -> StoreFuture<'a, Vec<ConsentRecord>>;

    /// The replay cache: records `key` until `expires_at`; `true` if it was not already
    /// recorded (or its record is no longer live at `now`), `false` for a replay. Liveness is
    /// keybound-core's one rule, [`keybound_core::dpop::replay_record_live`]
    /// (`now < expires_at`), for DPoP proofs, client assertions and every other use-once value.
    fn remember_once<'a>(&'a self, key: &'a [u8], expires_at: u64, now: u64) -> StoreFuture<'a, bool>;

    /// The login throttle record of `key`, if any.
    fn throttle<'a>(&'a self, key: &'a [u8]) -> StoreFuture<'a, Option<ThrottleRecord>>;
    /// Changes the record of `key` in one atomic read-modify-write under the record's lock:
    /// `next` gets the current record and returns the one to store.
    fn throttle_update<'a>(&'a self, key: &'a [u8], next: ThrottleFn) -> StoreFuture<'a, ThrottleChange>;

    /// Accepts TOTP time step `step` for `user` if it is later than every step accepted before
    /// (RFC 6238 §5.2: a code is accepted once, and no earlier one after it): `true` if this call
    /// recorded it.
    fn accept_totp_step<'a>(&'a self, user: &'a str, step: u64) -> StoreFuture<'a, bool>;

    /// Deletes expired PAR requests, tokens, replay and throttle records, and codes expired more
    /// than [`CODE_RETENTION`] seconds ago.
    fn purge_expired(&self, now: u64) -> StoreFuture<'_, ()>;
}

/// How long after expiry a code record is kept (seconds), for reuse detection.
pub const CODE_RETENTION: u64 = 3600;

/// Opens the configured backend; applies pending migrations first if `auto_migrate` is on, else
/// refuses a database whose schema is behind this binary (run `keybound-authz migrate`).
///
/// # Errors
/// [`StorageError`] if the database cannot be opened or reached, a migration fails, or the
/// schema is behind (without `auto_migrate`) or newer than this binary.
pub async fn open(settings: &StorageSettings) -> StoreResult<Arc<dyn Storage>> {
    match &settings.url {
        StorageUrl::Sqlite(path) => {
            let s = SqliteStorage::open_unmigrated(path).await?;
            if settings.auto_migrate {
                s.migrate().await?;
            }
            require_current(&s, sqlite::MIGRATIONS.len()).await?;
            Ok(Arc::new(s))
        }
        StorageUrl::Postgres(url) => {
            let s = PostgresStorage::connect(url, settings.pool_size)?;
            if settings.auto_migrate {
                s.migrate().await?;
            }
            require_current(&s, postgres::MIGRATIONS.len()).await?;
            Ok(Arc::new(s))
        }
    }
}

async fn require_current(store: &dyn Storage, latest: usize) -> StoreResult<()> {
    let current = store.schema_version().await?;
    if usize::try_from(current).unwrap_or(usize::MAX) == latest {
        return Ok(());
    }
    Err(StorageError(format!(
        "the database schema is at version {current}, this binary needs {latest}: run \
         `keybound-authz migrate` (or set storage.auto_migrate = true)"
    )))
}

/// `keybound-authz migrate`: applies the pending migrations of the configured database (on
/// PostgreSQL under an advisory lock, so instances migrating together apply each one once).
///
/// # Errors
/// [`StorageError`] if the database cannot be reached, a migration fails (the schema is then
/// left at the last one that succeeded), or its schema is newer than this binary.
pub async fn migrate(settings: &StorageSettings) -> StoreResult<Migrated> {
    match &settings.url {
        StorageUrl::Sqlite(path) => SqliteStorage::open_unmigrated(path).await?.migrate().await,
        StorageUrl::Postgres(url) => PostgresStorage::connect(url, 1)?.migrate().await,
    }
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
