//! Persistent state behind one trait, [`Storage`], with an SQLite implementation.
//!
//! The trait is written so a PostgreSQL backend can follow: every method is one short
//! transaction, every "use once" operation (a PAR `request_uri`, an authorization code, a `jti`)
//! is a single conditional write whose result says whether this caller won, so two instances
//! sharing a database cannot both use the same code. Structured data that only the server reads
//! is stored as JSON text.
//!
//! Schema changes are numbered migrations ([`MIGRATIONS`]) applied at open, tracked with SQLite's
//! `user_version`. The database file is created with mode 0600: it holds the signing keys.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use keybound_core::dpop::replay_record_live;
use rusqlite::{Connection, OptionalExtension, params};

/// A storage failure (I/O, a corrupt database). Requests that hit one fail with `server_error`.
#[derive(Debug)]
pub struct StorageError(pub String);

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "storage: {}", self.0)
    }
}

impl std::error::Error for StorageError {}

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        StorageError(e.to_string())
    }
}

/// Result of a storage call.
pub type StoreResult<T> = Result<T, StorageError>;

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

/// Everything the server persists.
pub trait Storage: Send + Sync {
    /// Checks that the database answers (the readiness probe).
    ///
    /// # Errors
    /// [`StorageError`] if it does not.
    fn ping(&self) -> StoreResult<()>;

    /// Stores or replaces a registered client.
    ///
    /// # Errors
    /// [`StorageError`] on database failure (the same for every method).
    fn put_client(&self, client: &RegisteredClient) -> StoreResult<()>;
    /// Looks up a registered client.
    ///
    /// # Errors
    /// See [`Storage::put_client`].
    fn client(&self, client_id: &str) -> StoreResult<Option<RegisteredClient>>;
    /// Deletes a registered client; `true` if it existed.
    ///
    /// # Errors
    /// See [`Storage::put_client`].
    fn delete_client(&self, client_id: &str) -> StoreResult<bool>;

    /// All signing keys, oldest first.
    ///
    /// # Errors
    /// [`StorageError`] on database failure (the same for every method).
    fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>>;
    /// Adds a signing key.
    ///
    /// # Errors
    /// See [`Storage::signing_keys`].
    fn add_signing_key(&self, key: &SigningKeyRecord) -> StoreResult<()>;
    /// Marks every key except `kid` as retired at `now` (rotation).
    ///
    /// # Errors
    /// See [`Storage::signing_keys`].
    fn retire_signing_keys_except(&self, kid: &str, now: u64) -> StoreResult<()>;
    /// Deletes retired keys retired before `before`.
    ///
    /// # Errors
    /// See [`Storage::signing_keys`].
    fn delete_signing_keys_retired_before(&self, before: u64) -> StoreResult<usize>;

    /// Stores a pushed authorization request.
    ///
    /// # Errors
    /// See [`Storage::signing_keys`].
    fn put_par(&self, par: &ParRecord) -> StoreResult<()>;
    /// Looks up a pushed authorization request.
    ///
    /// # Errors
    /// See [`Storage::signing_keys`].
    fn par(&self, request_uri: &str) -> StoreResult<Option<ParRecord>>;
    /// Consumes a request: `true` if it existed, was unconsumed and not expired at `now`, and is
    /// now consumed by this call.
    ///
    /// # Errors
    /// See [`Storage::signing_keys`].
    fn consume_par(&self, request_uri: &str, now: u64) -> StoreResult<bool>;

    /// Stores an authorization code.
    ///
    /// # Errors
    /// See [`Storage::signing_keys`].
    fn put_code(&self, code: &CodeRecord) -> StoreResult<()>;
    /// Looks up a code by its hash.
    ///
    /// # Errors
    /// See [`Storage::signing_keys`].
    fn code(&self, code_hash: &[u8]) -> StoreResult<Option<CodeRecord>>;
    /// Marks a code used, recording the DPoP key its tokens are bound to (if any): `true` if
    /// this call did (it was unused).
    ///
    /// # Errors
    /// See [`Storage::signing_keys`].
    fn use_code(&self, code_hash: &[u8], redeemed_jkt: Option<&str>) -> StoreResult<bool>;

    /// Stores an issued token.
    ///
    /// # Errors
    /// See [`Storage::signing_keys`].
    fn put_token(&self, token: &TokenRecord) -> StoreResult<()>;
    /// Looks up a token by id.
    ///
    /// # Errors
    /// See [`Storage::signing_keys`].
    fn token(&self, id: &str) -> StoreResult<Option<TokenRecord>>;
    /// Revokes one token; `true` if it existed and was not revoked.
    ///
    /// # Errors
    /// See [`Storage::signing_keys`].
    fn revoke_token(&self, id: &str) -> StoreResult<bool>;
    /// Revokes every token of a grant; returns how many were revoked.
    ///
    /// # Errors
    /// See [`Storage::signing_keys`].
    fn revoke_grant(&self, grant_id: &str) -> StoreResult<usize>;

    /// Records a consent.
    ///
    /// # Errors
    /// See [`Storage::signing_keys`].
    fn put_consent(&self, consent: &ConsentRecord) -> StoreResult<()>;
    /// The consents of a user, newest first.
    ///
    /// # Errors
    /// See [`Storage::signing_keys`].
    fn consents(&self, subject: &str) -> StoreResult<Vec<ConsentRecord>>;

    /// The replay cache: records `key` until `expires_at`; `true` if it was not already
    /// recorded (or its record is no longer live at `now`), `false` for a replay. Liveness is
    /// keybound-core's one rule, [`replay_record_live`] (`now < expires_at`), for DPoP proofs,
    /// client assertions and every other use-once value.
    ///
    /// # Errors
    /// See [`Storage::signing_keys`].
    fn remember_once(&self, key: &[u8], expires_at: u64, now: u64) -> StoreResult<bool>;

    /// The login throttle record of `key`, if any.
    ///
    /// # Errors
    /// See [`Storage::signing_keys`].
    fn throttle(&self, key: &[u8]) -> StoreResult<Option<ThrottleRecord>>;
    /// Changes the record of `key` in one atomic read-modify-write: `next` gets the current
    /// record (if any) and returns the one to store (`None` deletes it), which is returned.
    ///
    /// # Errors
    /// See [`Storage::signing_keys`].
    fn throttle_update(
        &self,
        key: &[u8],
        next: &dyn Fn(Option<ThrottleRecord>) -> Option<ThrottleRecord>,
    ) -> StoreResult<Option<ThrottleRecord>>;

    /// Accepts TOTP time step `step` for `user` if it is later than every step accepted before
    /// (RFC 6238 §5.2: a code is accepted once, and no earlier one after it): `true` if this call
    /// recorded it.
    ///
    /// # Errors
    /// See [`Storage::signing_keys`].
    fn accept_totp_step(&self, user: &str, step: u64) -> StoreResult<bool>;

    /// Deletes expired PAR requests, tokens, replay and throttle records, and codes expired more
    /// than [`CODE_RETENTION`] seconds ago.
    ///
    /// # Errors
    /// See [`Storage::signing_keys`].
    fn purge_expired(&self, now: u64) -> StoreResult<()>;
}

/// The schema migrations, applied in order; `user_version` is the number applied.
pub const MIGRATIONS: &[&str] = &[
    // 1: initial schema
    "CREATE TABLE signing_keys (
        kid TEXT PRIMARY KEY,
        secret BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        retired_at INTEGER
     );
     CREATE TABLE par_requests (
        request_uri TEXT PRIMARY KEY,
        client_id TEXT NOT NULL,
        params TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        consumed INTEGER NOT NULL DEFAULT 0
     );
     CREATE TABLE codes (
        code_hash BLOB PRIMARY KEY,
        client_id TEXT NOT NULL,
        grant_id TEXT NOT NULL,
        data TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        used INTEGER NOT NULL DEFAULT 0
     );
     CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        grant_id TEXT NOT NULL,
        client_id TEXT NOT NULL,
        data TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        revoked INTEGER NOT NULL DEFAULT 0
     );
     CREATE INDEX tokens_grant ON tokens(grant_id);
     CREATE TABLE consents (
        id TEXT PRIMARY KEY,
        subject TEXT NOT NULL,
        client_id TEXT NOT NULL,
        scope TEXT NOT NULL,
        jwt TEXT NOT NULL,
        created_at INTEGER NOT NULL
     );
     CREATE INDEX consents_subject ON consents(subject);
     CREATE TABLE replay (
        key BLOB PRIMARY KEY,
        expires_at INTEGER NOT NULL
     );",
    // 2: dynamically registered clients (RFC 7591/7592)
    "CREATE TABLE registered_clients (
        client_id TEXT PRIMARY KEY,
        metadata TEXT NOT NULL,
        registration_token_hash TEXT NOT NULL,
        created_at INTEGER NOT NULL
     );",
    // 3: the DPoP key a redeemed code's tokens are bound to (code reuse needs proof of the client)
    "ALTER TABLE codes ADD COLUMN redeemed_jkt TEXT;",
    // 4: the login throttle (per account and per client address) and the last accepted TOTP step
    "CREATE TABLE login_throttle (
        key BLOB PRIMARY KEY,
        failures INTEGER NOT NULL,
        last_failure INTEGER NOT NULL,
        locked_until INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
     );
     CREATE TABLE totp_steps (
        username TEXT PRIMARY KEY,
        last_step INTEGER NOT NULL
     );",
];

/// How long after expiry a code record is kept (seconds), for reuse detection.
pub const CODE_RETENTION: u64 = 3600;

/// The SQLite backend: one connection behind a mutex (SQLite serialises writers anyway).
pub struct SqliteStorage {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStorage")
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl SqliteStorage {
    /// Opens (creating with mode 0600 if needed) the database at `path`, or an in-memory
    /// database for `:memory:`, and applies pending migrations.
    ///
    /// # Errors
    /// [`StorageError`] if the file cannot be created or opened, or a migration fails (the
    /// database is then left at the last migration that succeeded).
    pub fn open(path: &str) -> StoreResult<Self> {
        let conn = if path == ":memory:" {
            Connection::open_in_memory()?
        } else {
            let p = Path::new(path);
            if !p.exists() {
                create_private_file(p)?;
            }
            let conn = Connection::open(p)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn
        };
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let storage = SqliteStorage { conn: Mutex::new(conn) };
        storage.migrate()?;
        Ok(storage)
    }

    /// The schema version (number of migrations applied).
    ///
    /// # Errors
    /// [`StorageError`] on database failure.
    pub fn schema_version(&self) -> StoreResult<u32> {
        let conn = self.lock()?;
        Ok(conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    fn migrate(&self) -> StoreResult<()> {
        let mut conn = self.lock()?;
        let current: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let current = usize::try_from(current).unwrap_or(usize::MAX);
        if current > MIGRATIONS.len() {
            return Err(StorageError(format!(
                "database schema version {current} is newer than this binary ({})",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i + 1)?;
            tx.commit()?;
        }
        Ok(())
    }

    fn lock(&self) -> StoreResult<MutexGuard<'_, Connection>> {
        self.conn
            .lock()
            .map_err(|_| StorageError("connection mutex poisoned".into()))
    }
}

#[cfg(unix)]
fn create_private_file(p: &Path) -> StoreResult<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(p)
        .map(drop)
        .map_err(|e| StorageError(format!("{}: {e}", p.display())))
}

#[cfg(not(unix))]
fn create_private_file(p: &Path) -> StoreResult<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(p)
        .map(drop)
        .map_err(|e| StorageError(format!("{}: {e}", p.display())))
}

fn par_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ParRecord> {
    Ok(ParRecord {
        request_uri: r.get(0)?,
        client_id: r.get(1)?,
        params: r.get(2)?,
        expires_at: to_u64(r.get(3)?),
        consumed: r.get::<_, i64>(4)? != 0,
    })
}

fn code_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CodeRecord> {
    Ok(CodeRecord {
        code_hash: r.get(0)?,
        client_id: r.get(1)?,
        grant_id: r.get(2)?,
        data: r.get(3)?,
        expires_at: to_u64(r.get(4)?),
        used: r.get::<_, i64>(5)? != 0,
        redeemed_jkt: r.get(6)?,
    })
}

fn throttle_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ThrottleRecord> {
    Ok(ThrottleRecord {
        failures: u32::try_from(r.get::<_, i64>(0)?).unwrap_or(u32::MAX),
        last_failure: to_u64(r.get(1)?),
        locked_until: to_u64(r.get(2)?),
        expires_at: to_u64(r.get(3)?),
    })
}

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        id: r.get(0)?,
        kind: r.get(1)?,
        grant_id: r.get(2)?,
        client_id: r.get(3)?,
        data: r.get(4)?,
        expires_at: to_u64(r.get(5)?),
        revoked: r.get::<_, i64>(6)? != 0,
    })
}

impl Storage for SqliteStorage {
    fn ping(&self) -> StoreResult<()> {
        let conn = self.lock()?;
        conn.query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }

    fn put_client(&self, client: &RegisteredClient) -> StoreResult<()> {
        self.lock()?.execute(
            "INSERT OR REPLACE INTO registered_clients (client_id, metadata, registration_token_hash, created_at)
             VALUES (?1, ?2, ?3, ?4)",
            params![
                client.client_id,
                client.metadata,
                client.registration_token_hash,
                to_i64(client.created_at)
            ],
        )?;
        Ok(())
    }

    fn client(&self, client_id: &str) -> StoreResult<Option<RegisteredClient>> {
        Ok(self
            .lock()?
            .query_row(
                "SELECT client_id, metadata, registration_token_hash, created_at FROM registered_clients
                 WHERE client_id = ?1",
                params![client_id],
                |r| {
                    Ok(RegisteredClient {
                        client_id: r.get(0)?,
                        metadata: r.get(1)?,
                        registration_token_hash: r.get(2)?,
                        created_at: to_u64(r.get(3)?),
                    })
                },
            )
            .optional()?)
    }

    fn delete_client(&self, client_id: &str) -> StoreResult<bool> {
        let n = self.lock()?.execute(
            "DELETE FROM registered_clients WHERE client_id = ?1",
            params![client_id],
        )?;
        Ok(n == 1)
    }

    fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>> {
        let conn = self.lock()?;
        let mut stmt =
            conn.prepare("SELECT kid, secret, created_at, retired_at FROM signing_keys ORDER BY created_at, rowid")?;
        let rows = stmt.query_map([], |r| {
            Ok(SigningKeyRecord {
                kid: r.get(0)?,
                secret: r.get(1)?,
                created_at: to_u64(r.get(2)?),
                retired_at: r.get::<_, Option<i64>>(3)?.map(to_u64),
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn add_signing_key(&self, key: &SigningKeyRecord) -> StoreResult<()> {
        self.lock()?.execute(
            "INSERT INTO signing_keys (kid, secret, created_at, retired_at) VALUES (?1, ?2, ?3, ?4)",
            params![key.kid, key.secret, to_i64(key.created_at), key.retired_at.map(to_i64)],
        )?;
        Ok(())
    }

    fn retire_signing_keys_except(&self, kid: &str, now: u64) -> StoreResult<()> {
        self.lock()?.execute(
            "UPDATE signing_keys SET retired_at = ?2 WHERE kid <> ?1 AND retired_at IS NULL",
            params![kid, to_i64(now)],
        )?;
        Ok(())
    }

    fn delete_signing_keys_retired_before(&self, before: u64) -> StoreResult<usize> {
        Ok(self.lock()?.execute(
            "DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < ?1",
            params![to_i64(before)],
        )?)
    }

    fn put_par(&self, par: &ParRecord) -> StoreResult<()> {
        self.lock()?.execute(
            "INSERT INTO par_requests (request_uri, client_id, params, expires_at, consumed) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                par.request_uri,
                par.client_id,
                par.params,
                to_i64(par.expires_at),
                i64::from(par.consumed)
            ],
        )?;
        Ok(())
    }

    fn par(&self, request_uri: &str) -> StoreResult<Option<ParRecord>> {
        Ok(self
            .lock()?
            .query_row(
                "SELECT request_uri, client_id, params, expires_at, consumed FROM par_requests WHERE request_uri = ?1",
                params![request_uri],
                par_row,
            )
            .optional()?)
    }

    fn consume_par(&self, request_uri: &str, now: u64) -> StoreResult<bool> {
        let n = self.lock()?.execute(
            "UPDATE par_requests SET consumed = 1 WHERE request_uri = ?1 AND consumed = 0 AND expires_at > ?2",
            params![request_uri, to_i64(now)],
        )?;
        Ok(n == 1)
    }

    fn put_code(&self, code: &CodeRecord) -> StoreResult<()> {
        self.lock()?.execute(
            "INSERT INTO codes (code_hash, client_id, grant_id, data, expires_at, used) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                code.code_hash,
                code.client_id,
                code.grant_id,
                code.data,
                to_i64(code.expires_at),
                i64::from(code.used)
            ],
        )?;
        Ok(())
    }

    fn code(&self, code_hash: &[u8]) -> StoreResult<Option<CodeRecord>> {
        Ok(self
            .lock()?
            .query_row(
                "SELECT code_hash, client_id, grant_id, data, expires_at, used, redeemed_jkt FROM codes WHERE code_hash = ?1",
                params![code_hash],
                code_row,
            )
            .optional()?)
    }

    fn use_code(&self, code_hash: &[u8], redeemed_jkt: Option<&str>) -> StoreResult<bool> {
        let n = self.lock()?.execute(
            "UPDATE codes SET used = 1, redeemed_jkt = ?2 WHERE code_hash = ?1 AND used = 0",
            params![code_hash, redeemed_jkt],
        )?;
        Ok(n == 1)
    }

    fn put_token(&self, token: &TokenRecord) -> StoreResult<()> {
        self.lock()?.execute(
            "INSERT INTO tokens (id, kind, grant_id, client_id, data, expires_at, revoked) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                token.id,
                token.kind,
                token.grant_id,
                token.client_id,
                token.data,
                to_i64(token.expires_at),
                i64::from(token.revoked)
            ],
        )?;
        Ok(())
    }

    fn token(&self, id: &str) -> StoreResult<Option<TokenRecord>> {
        Ok(self
            .lock()?
            .query_row(
                "SELECT id, kind, grant_id, client_id, data, expires_at, revoked FROM tokens WHERE id = ?1",
                params![id],
                token_row,
            )
            .optional()?)
    }

    fn revoke_token(&self, id: &str) -> StoreResult<bool> {
        let n = self.lock()?.execute(
            "UPDATE tokens SET revoked = 1 WHERE id = ?1 AND revoked = 0",
            params![id],
        )?;
        Ok(n == 1)
    }

    fn revoke_grant(&self, grant_id: &str) -> StoreResult<usize> {
        Ok(self.lock()?.execute(
            "UPDATE tokens SET revoked = 1 WHERE grant_id = ?1 AND revoked = 0",
            params![grant_id],
        )?)
    }

    fn put_consent(&self, consent: &ConsentRecord) -> StoreResult<()> {
        self.lock()?.execute(
            "INSERT INTO consents (id, subject, client_id, scope, jwt, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                consent.id,
                consent.subject,
                consent.client_id,
                consent.scope,
                consent.jwt,
                to_i64(consent.created_at)
            ],
        )?;
        Ok(())
    }

    fn consents(&self, subject: &str) -> StoreResult<Vec<ConsentRecord>> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare(
            "SELECT id, subject, client_id, scope, jwt, created_at FROM consents WHERE subject = ?1
             ORDER BY created_at DESC, rowid DESC",
        )?;
        let rows = stmt.query_map(params![subject], |r| {
            Ok(ConsentRecord {
                id: r.get(0)?,
                subject: r.get(1)?,
                client_id: r.get(2)?,
                scope: r.get(3)?,
                jwt: r.get(4)?,
                created_at: to_u64(r.get(5)?),
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn remember_once(&self, key: &[u8], expires_at: u64, now: u64) -> StoreResult<bool> {
        let mut conn = self.lock()?;
        // IMMEDIATE: the write lock is taken before the read, so two processes sharing the file
        // cannot both see the key absent.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let existing: Option<i64> = tx
            .query_row("SELECT expires_at FROM replay WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()?;
        if existing.is_some_and(|e| replay_record_live(to_u64(e), now)) {
            return Ok(false);
        }
        tx.execute(
            "INSERT OR REPLACE INTO replay (key, expires_at) VALUES (?1, ?2)",
            params![key, to_i64(expires_at)],
        )?;
        tx.commit()?;
        Ok(true)
    }

    fn throttle(&self, key: &[u8]) -> StoreResult<Option<ThrottleRecord>> {
        Ok(self
            .lock()?
            .query_row(
                "SELECT failures, last_failure, locked_until, expires_at FROM login_throttle WHERE key = ?1",
                params![key],
                throttle_row,
            )
            .optional()?)
    }

    fn throttle_update(
        &self,
        key: &[u8],
        next: &dyn Fn(Option<ThrottleRecord>) -> Option<ThrottleRecord>,
    ) -> StoreResult<Option<ThrottleRecord>> {
        let mut conn = self.lock()?;
        // IMMEDIATE: no other process can change the record between the read and the write.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let current = tx
            .query_row(
                "SELECT failures, last_failure, locked_until, expires_at FROM login_throttle WHERE key = ?1",
                params![key],
                throttle_row,
            )
            .optional()?;
        let rec = next(current);
        match rec {
            Some(rec) => tx.execute(
                "INSERT OR REPLACE INTO login_throttle (key, failures, last_failure, locked_until, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    key,
                    i64::from(rec.failures),
                    to_i64(rec.last_failure),
                    to_i64(rec.locked_until),
                    to_i64(rec.expires_at)
                ],
            )?,
            None => tx.execute("DELETE FROM login_throttle WHERE key = ?1", params![key])?,
        };
        tx.commit()?;
        Ok(rec)
    }

    fn accept_totp_step(&self, user: &str, step: u64) -> StoreResult<bool> {
        let n = self.lock()?.execute(
            "INSERT INTO totp_steps (username, last_step) VALUES (?1, ?2)
             ON CONFLICT(username) DO UPDATE SET last_step = excluded.last_step
             WHERE totp_steps.last_step < excluded.last_step",
            params![user, to_i64(step)],
        )?;
        Ok(n == 1)
    }

    fn purge_expired(&self, now: u64) -> StoreResult<()> {
        let conn = self.lock()?;
        let now = to_i64(now);
        conn.execute("DELETE FROM par_requests WHERE expires_at <= ?1", params![now])?;
        // Used codes are kept an hour longer, so a late reuse still revokes what they issued.
        conn.execute(
            "DELETE FROM codes WHERE expires_at <= ?1 - ?2",
            params![now, to_i64(CODE_RETENTION)],
        )?;
        conn.execute("DELETE FROM tokens WHERE expires_at <= ?1", params![now])?;
        // Exactly the records that are no longer live (`replay_record_live` is `now < expires_at`).
        conn.execute("DELETE FROM replay WHERE expires_at <= ?1", params![now])?;
        conn.execute("DELETE FROM login_throttle WHERE expires_at <= ?1", params![now])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once_and_are_tracked() {
        let dir = std::env::temp_dir().join(format!("kb-authz-mig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.sqlite");
        let _ = std::fs::remove_file(&path);
        let path = path.to_str().unwrap();
        let s = SqliteStorage::open(path).unwrap();
        assert_eq!(s.schema_version().unwrap() as usize, MIGRATIONS.len());
        drop(s);
        let s = SqliteStorage::open(path).unwrap();
        assert_eq!(s.schema_version().unwrap() as usize, MIGRATIONS.len());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "database must not be readable by others: {mode:o}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = std::env::temp_dir().join(format!("kb-authz-new-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("n.sqlite");
        let _ = std::fs::remove_file(&path);
        let path = path.to_str().unwrap();
        drop(SqliteStorage::open(path).unwrap());
        let conn = Connection::open(path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        assert!(SqliteStorage::open(path).unwrap_err().0.contains("newer"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn one_time_operations_succeed_once() {
        let s = SqliteStorage::open(":memory:").unwrap();
        s.put_par(&ParRecord {
            request_uri: "urn:x".into(),
            client_id: "c".into(),
            params: "{}".into(),
            expires_at: 200,
            consumed: false,
        })
        .unwrap();
        assert!(!s.consume_par("urn:x", 200).unwrap(), "expired at 200");
        assert!(s.consume_par("urn:x", 100).unwrap());
        assert!(!s.consume_par("urn:x", 100).unwrap());
        assert!(!s.consume_par("urn:other", 100).unwrap());

        s.put_code(&CodeRecord {
            code_hash: vec![1; 32],
            client_id: "c".into(),
            grant_id: "g".into(),
            data: "{}".into(),
            expires_at: 200,
            used: false,
            redeemed_jkt: None,
        })
        .unwrap();
        assert!(s.use_code(&[1; 32], Some("jkt-1")).unwrap());
        assert!(!s.use_code(&[1; 32], Some("jkt-2")).unwrap());
        let c = s.code(&[1; 32]).unwrap().unwrap();
        assert_eq!((c.used, c.redeemed_jkt.as_deref()), (true, Some("jkt-1")));

        assert!(s.remember_once(b"jti", 150, 100).unwrap());
        assert!(!s.remember_once(b"jti", 150, 120).unwrap());
        assert!(s.remember_once(b"jti", 300, 150).unwrap(), "expired record is replaced");
    }

    /// The table keeps a record exactly while keybound-core's rule says it is live: refused up
    /// to the second before `expires_at` (and a purge then keeps it), free again from then on.
    #[test]
    fn replay_records_follow_the_core_liveness_rule() {
        let s = SqliteStorage::open(":memory:").unwrap();
        let expires_at = 1000;
        assert!(s.remember_once(b"k", expires_at, 990).unwrap());
        for now in [990, 995, 999] {
            assert!(replay_record_live(expires_at, now));
            s.purge_expired(now).unwrap();
            assert!(!s.remember_once(b"k", expires_at, now).unwrap(), "now {now}");
        }
        assert!(!replay_record_live(expires_at, 1000));
        assert!(s.remember_once(b"k", 2000, 1000).unwrap(), "free at expires_at");
        s.purge_expired(1999).unwrap();
        assert!(!s.remember_once(b"k", 3000, 1999).unwrap());
        s.purge_expired(2000).unwrap();
        let n: i64 = s
            .lock()
            .unwrap()
            .query_row("SELECT count(*) FROM replay", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0, "purged at expires_at");
    }

    #[test]
    fn totp_steps_are_accepted_once_and_only_forward() {
        let s = SqliteStorage::open(":memory:").unwrap();
        assert!(s.accept_totp_step("bob", 100).unwrap());
        assert!(!s.accept_totp_step("bob", 100).unwrap(), "the same step again");
        assert!(!s.accept_totp_step("bob", 99).unwrap(), "an earlier step");
        assert!(s.accept_totp_step("alice", 99).unwrap(), "per user");
        assert!(s.accept_totp_step("bob", 101).unwrap());
    }

    #[test]
    fn throttle_records_are_updated_atomically_and_purged() {
        let s = SqliteStorage::open(":memory:").unwrap();
        let bump = |c: Option<ThrottleRecord>| {
            let c = c.unwrap_or_default();
            Some(ThrottleRecord {
                failures: c.failures + 1,
                last_failure: 10,
                locked_until: 0,
                expires_at: 100,
            })
        };
        assert_eq!(s.throttle_update(b"k", &bump).unwrap().unwrap().failures, 1);
        assert_eq!(s.throttle_update(b"k", &bump).unwrap().unwrap().failures, 2);
        assert_eq!(s.throttle(b"k").unwrap().unwrap().failures, 2);
        s.purge_expired(99).unwrap();
        assert!(s.throttle(b"k").unwrap().is_some());
        s.purge_expired(100).unwrap();
        assert!(s.throttle(b"k").unwrap().is_none());
        s.throttle_update(b"k", &bump).unwrap();
        assert!(s.throttle_update(b"k", &|_| None).unwrap().is_none());
        assert!(s.throttle(b"k").unwrap().is_none());
    }

    #[test]
    fn revoking_a_grant_revokes_its_tokens_only() {
        let s = SqliteStorage::open(":memory:").unwrap();
        for (id, grant) in [("a", "g1"), ("b", "g1"), ("c", "g2")] {
            s.put_token(&TokenRecord {
                id: id.into(),
                kind: "access".into(),
                grant_id: grant.into(),
                client_id: "c".into(),
                data: "{}".into(),
                expires_at: 1000,
                revoked: false,
            })
            .unwrap();
        }
        assert_eq!(s.revoke_grant("g1").unwrap(), 2);
        assert!(s.token("a").unwrap().unwrap().revoked);
        assert!(!s.token("c").unwrap().unwrap().revoked);
        assert!(s.revoke_token("c").unwrap());
        assert!(!s.revoke_token("c").unwrap());
        s.purge_expired(1000).unwrap();
        assert!(s.token("a").unwrap().is_none());
    }
}
