//! The SQLite backend (embedded, the default): one connection behind a mutex (SQLite serialises
//! writers anyway), every call run on tokio's blocking pool so no SQLite call blocks the async
//! executor. Schema versions are tracked with SQLite's `user_version`. The database file is
//! created with mode 0600: it holds the signing keys.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{
    CODE_RETENTION, CodeRecord, ConsentRecord, Migrated, ParRecord, RegisteredClient, SigningKeyRecord, Storage,
    StorageError, StoreFuture, StoreResult, ThrottleChange, ThrottleFn, ThrottleRecord, TokenRecord, to_i64, to_u64,
};

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        StorageError(e.to_string())
    }
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

/// The SQLite backend.
#[derive(Clone)]
pub struct SqliteStorage {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for SqliteStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStorage")
    }
}

impl SqliteStorage {
    /// Opens (creating with mode 0600 if needed) the database at `path`, or an in-memory
    /// database for `:memory:`, and applies pending migrations.
    ///
    /// # Errors
    /// [`StorageError`] if the file cannot be created or opened, or a migration fails (the
    /// database is then left at the last migration that succeeded).
    pub async fn open(path: &str) -> StoreResult<Self> {
        let s = Self::open_unmigrated(path).await?;
        s.migrate().await?;
        Ok(s)
    }

    /// Opens the database without touching its schema.
    ///
    /// # Errors
    /// [`StorageError`] if the file cannot be created or opened.
    pub async fn open_unmigrated(path: &str) -> StoreResult<Self> {
        let path = path.to_string();
        let conn = blocking(move || open_connection(&path)).await?;
        Ok(SqliteStorage {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Applies the pending migrations, each in its own transaction.
    ///
    /// # Errors
    /// [`StorageError`] if one fails, or the schema is newer than this binary.
    pub async fn migrate(&self) -> StoreResult<Migrated> {
        self.run(|conn| {
            let latest = u32::try_from(MIGRATIONS.len()).unwrap_or(u32::MAX);
            let mut from = None;
            loop {
                // IMMEDIATE: the version is read under the write lock, so handles migrating at
                // once (several processes on one file) apply each migration once.
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let current: u32 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
                let from = *from.get_or_insert(current);
                if current > latest {
                    return Err(StorageError(format!(
                        "database schema version {current} is newer than this binary ({latest})"
                    )));
                }
                let Some(sql) = usize::try_from(current).ok().and_then(|i| MIGRATIONS.get(i)) else {
                    return Ok(Migrated {
                        backend: "sqlite",
                        from,
                        to: latest,
                    });
                };
                tx.execute_batch(sql)?;
                tx.pragma_update(None, "user_version", current + 1)?;
                tx.commit()?;
            }
        })
        .await
    }

    /// Runs `f` with the connection on the blocking pool.
    fn run<T, F>(&self, f: F) -> StoreFuture<'static, T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        Box::pin(blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| StorageError("connection mutex poisoned".into()))?;
            f(&mut guard)
        }))
    }
}

async fn blocking<T, F>(f: F) -> StoreResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> StoreResult<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError(format!("blocking task: {e}")))?
}

fn open_connection(path: &str) -> StoreResult<Connection> {
    let conn = if path == ":memory:" {
        Connection::open_in_memory()?
    } else {
        let p = Path::new(path);
        if !p.exists() {
            create_private_file(p)?;
        }
        let conn = Connection::open(p)?;
        // Before the first statement: concurrent openers (a `migrate` beside a starting `serve`)
        // wait for each other instead of failing with "database is locked".
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn
    };
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
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
        .or_else(|e| match e.kind() {
            // Another opener created it between our check and our create: fine.
            std::io::ErrorKind::AlreadyExists => Ok(()),
            _ => Err(e),
        })
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

fn signing_keys(conn: &Connection) -> StoreResult<Vec<SigningKeyRecord>> {
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

fn insert_signing_key(conn: &Connection, key: &SigningKeyRecord) -> StoreResult<()> {
    conn.execute(
        "INSERT INTO signing_keys (kid, secret, created_at, retired_at) VALUES (?1, ?2, ?3, ?4)",
        params![key.kid, key.secret, to_i64(key.created_at), key.retired_at.map(to_i64)],
    )?;
    Ok(())
}

fn read_throttle(conn: &Connection, key: &[u8]) -> StoreResult<Option<ThrottleRecord>> {
    Ok(conn
        .query_row(
            "SELECT failures, last_failure, locked_until, expires_at FROM login_throttle WHERE key = ?1",
            params![key],
            throttle_row,
        )
        .optional()?)
}

impl Storage for SqliteStorage {
    fn ping(&self) -> StoreFuture<'_, ()> {
        self.run(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
    }

    fn schema_version(&self) -> StoreFuture<'_, u32> {
        self.run(|conn| Ok(conn.pragma_query_value(None, "user_version", |r| r.get(0))?))
    }

    fn put_client<'a>(&'a self, client: &'a RegisteredClient) -> StoreFuture<'a, ()> {
        let client = client.clone();
        self.run(move |conn| {
            conn.execute(
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
        })
    }

    fn client<'a>(&'a self, client_id: &'a str) -> StoreFuture<'a, Option<RegisteredClient>> {
        let client_id = client_id.to_string();
        self.run(move |conn| {
            Ok(conn
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
        })
    }

    fn delete_client<'a>(&'a self, client_id: &'a str) -> StoreFuture<'a, bool> {
        let client_id = client_id.to_string();
        self.run(move |conn| {
            let n = conn.execute(
                "DELETE FROM registered_clients WHERE client_id = ?1",
                params![client_id],
            )?;
            Ok(n == 1)
        })
    }

    fn signing_keys(&self) -> StoreFuture<'_, Vec<SigningKeyRecord>> {
        self.run(|conn| signing_keys(conn))
    }

    fn add_first_signing_key<'a>(&'a self, key: &'a SigningKeyRecord) -> StoreFuture<'a, bool> {
        let key = key.clone();
        self.run(move |conn| {
            // IMMEDIATE: the write lock is taken before the read, so two processes sharing the
            // file cannot both see no key.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let active: i64 = tx.query_row("SELECT count(*) FROM signing_keys WHERE retired_at IS NULL", [], |r| {
                r.get(0)
            })?;
            if active > 0 {
                return Ok(false);
            }
            insert_signing_key(&tx, &key)?;
            tx.commit()?;
            Ok(true)
        })
    }

    fn rotate_signing_key<'a>(&'a self, key: &'a SigningKeyRecord, delete_retired_before: u64) -> StoreFuture<'a, ()> {
        let key = key.clone();
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            insert_signing_key(&tx, &key)?;
            tx.execute(
                "UPDATE signing_keys SET retired_at = ?2 WHERE kid <> ?1 AND retired_at IS NULL",
                params![key.kid, to_i64(key.created_at)],
            )?;
            tx.execute(
                "DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < ?1",
                params![to_i64(delete_retired_before)],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    fn put_par<'a>(&'a self, par: &'a ParRecord) -> StoreFuture<'a, ()> {
        let par = par.clone();
        self.run(move |conn| {
            conn.execute(
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
        })
    }

    fn par<'a>(&'a self, request_uri: &'a str) -> StoreFuture<'a, Option<ParRecord>> {
        let request_uri = request_uri.to_string();
        self.run(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT request_uri, client_id, params, expires_at, consumed FROM par_requests WHERE request_uri = ?1",
                    params![request_uri],
                    par_row,
                )
                .optional()?)
        })
    }

    fn consume_par<'a>(&'a self, request_uri: &'a str, now: u64) -> StoreFuture<'a, bool> {
        let request_uri = request_uri.to_string();
        self.run(move |conn| {
            let n = conn.execute(
                "UPDATE par_requests SET consumed = 1 WHERE request_uri = ?1 AND consumed = 0 AND expires_at > ?2",
                params![request_uri, to_i64(now)],
            )?;
            Ok(n == 1)
        })
    }

    fn put_code<'a>(&'a self, code: &'a CodeRecord) -> StoreFuture<'a, ()> {
        let code = code.clone();
        self.run(move |conn| {
            conn.execute(
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
        })
    }

    fn code<'a>(&'a self, code_hash: &'a [u8]) -> StoreFuture<'a, Option<CodeRecord>> {
        let code_hash = code_hash.to_vec();
        self.run(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT code_hash, client_id, grant_id, data, expires_at, used, redeemed_jkt FROM codes WHERE code_hash = ?1",
                    params![code_hash],
                    code_row,
                )
                .optional()?)
        })
    }

    fn use_code<'a>(&'a self, code_hash: &'a [u8], redeemed_jkt: Option<&'a str>) -> StoreFuture<'a, bool> {
        let code_hash = code_hash.to_vec();
        let redeemed_jkt = redeemed_jkt.map(str::to_string);
        self.run(move |conn| {
            let n = conn.execute(
                "UPDATE codes SET used = 1, redeemed_jkt = ?2 WHERE code_hash = ?1 AND used = 0",
                params![code_hash, redeemed_jkt],
            )?;
            Ok(n == 1)
        })
    }

    fn put_token<'a>(&'a self, token: &'a TokenRecord) -> StoreFuture<'a, ()> {
        let token = token.clone();
        self.run(move |conn| {
            conn.execute(
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
        })
    }

    fn token<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<TokenRecord>> {
        let id = id.to_string();
        self.run(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT id, kind, grant_id, client_id, data, expires_at, revoked FROM tokens WHERE id = ?1",
                    params![id],
                    token_row,
                )
                .optional()?)
        })
    }

    fn revoke_token<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        let id = id.to_string();
        self.run(move |conn| {
            let n = conn.execute(
                "UPDATE tokens SET revoked = 1 WHERE id = ?1 AND revoked = 0",
                params![id],
            )?;
            Ok(n == 1)
        })
    }

    fn revoke_grant<'a>(&'a self, grant_id: &'a str) -> StoreFuture<'a, usize> {
        let grant_id = grant_id.to_string();
        self.run(move |conn| {
            Ok(conn.execute(
                "UPDATE tokens SET revoked = 1 WHERE grant_id = ?1 AND revoked = 0",
                params![grant_id],
            )?)
        })
    }

    fn put_consent<'a>(&'a self, consent: &'a ConsentRecord) -> StoreFuture<'a, ()> {
        let consent = consent.clone();
        self.run(move |conn| {
            conn.execute(
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
        })
    }

    fn consents<'a>(&'a self, subject: &'a str) -> StoreFuture<'a, Vec<ConsentRecord>> {
        let subject = subject.to_string();
        self.run(move |conn| {
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
        })
    }

    fn remember_once<'a>(&'a self, key: &'a [u8], expires_at: u64, now: u64) -> StoreFuture<'a, bool> {
        let key = key.to_vec();
        self.run(move |conn| {
            // One statement: a new key is inserted; an existing one is replaced only if its record
            // is no longer live (`replay_record_live` is `now < expires_at`).
            let n = conn.execute(
                "INSERT INTO replay (key, expires_at) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET expires_at = excluded.expires_at
                 WHERE replay.expires_at <= ?3",
                params![key, to_i64(expires_at), to_i64(now)],
            )?;
            Ok(n == 1)
        })
    }

    fn throttle<'a>(&'a self, key: &'a [u8]) -> StoreFuture<'a, Option<ThrottleRecord>> {
        let key = key.to_vec();
        self.run(move |conn| read_throttle(conn, &key))
    }

    fn throttle_update<'a>(&'a self, key: &'a [u8], next: ThrottleFn) -> StoreFuture<'a, ThrottleChange> {
        let key = key.to_vec();
        self.run(move |conn| {
            // IMMEDIATE: no other process can change the record between the read and the write.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let before = read_throttle(&tx, &key)?;
            let after = next(before);
            match after {
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
            Ok(ThrottleChange { before, after })
        })
    }

    fn accept_totp_step<'a>(&'a self, user: &'a str, step: u64) -> StoreFuture<'a, bool> {
        let user = user.to_string();
        self.run(move |conn| {
            let n = conn.execute(
                "INSERT INTO totp_steps (username, last_step) VALUES (?1, ?2)
                 ON CONFLICT(username) DO UPDATE SET last_step = excluded.last_step
                 WHERE totp_steps.last_step < excluded.last_step",
                params![user, to_i64(step)],
            )?;
            Ok(n == 1)
        })
    }

    fn purge_expired(&self, now: u64) -> StoreFuture<'_, ()> {
        self.run(move |conn| {
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
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[tokio::test]
    async fn migrations_apply_once_and_are_tracked() {
        let dir = std::env::temp_dir().join(format!("kb-authz-mig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.sqlite");
        let _ = std::fs::remove_file(&path);
        let path = path.to_str().unwrap();
        let s = SqliteStorage::open_unmigrated(path).await.unwrap();
        let m = s.migrate().await.unwrap();
        assert_eq!((m.from as usize, m.to as usize), (0, MIGRATIONS.len()));
        drop(s);
        let s = SqliteStorage::open(path).await.unwrap();
        assert_eq!(s.schema_version().await.unwrap() as usize, MIGRATIONS.len());
        let m = s.migrate().await.unwrap();
        assert_eq!(m.from, m.to, "nothing left to apply");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "database must not be readable by others: {mode:o}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let dir = std::env::temp_dir().join(format!("kb-authz-new-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("n.sqlite");
        let _ = std::fs::remove_file(&path);
        let path = path.to_str().unwrap();
        drop(SqliteStorage::open(path).await.unwrap());
        let conn = Connection::open(path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        assert!(SqliteStorage::open(path).await.unwrap_err().0.contains("newer"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
