//! The PostgreSQL backend, for several keybound-authz instances sharing one database: a bounded
//! pool of tokio-postgres connections (deadpool-postgres), prepared statements cached per
//! connection. Every use-once decision is one statement or one transaction holding a lock, so it
//! is made once across all instances (see the [module](super) documentation).
//!
//! Schema versions are rows of `keybound_schema`; [`PostgresStorage::migrate`] applies each
//! pending migration in its own transaction under an advisory lock, so instances started together
//! apply it once.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

use super::{
    CODE_RETENTION, CodeRecord, ConsentRecord, Migrated, ParRecord, RegisteredClient, SigningKeyRecord, Storage,
    StorageError, StoreFuture, StoreResult, ThrottleChange, ThrottleFn, ThrottleRecord, TokenRecord, to_i64, to_u64,
};

/// The schema migrations, applied in order; `keybound_schema` holds one row per applied one.
pub const MIGRATIONS: &[&str] = &[
    // 1: the schema of SQLite's migrations 1 to 4
    "CREATE TABLE signing_keys (
        kid TEXT PRIMARY KEY,
        secret BYTEA NOT NULL,
        created_at BIGINT NOT NULL,
        retired_at BIGINT,
        seq BIGINT GENERATED ALWAYS AS IDENTITY
     );
     CREATE TABLE par_requests (
        request_uri TEXT PRIMARY KEY,
        client_id TEXT NOT NULL,
        params TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        consumed BOOLEAN NOT NULL DEFAULT FALSE
     );
     CREATE INDEX par_requests_expires ON par_requests(expires_at);
     CREATE TABLE codes (
        code_hash BYTEA PRIMARY KEY,
        client_id TEXT NOT NULL,
        grant_id TEXT NOT NULL,
        data TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        used BOOLEAN NOT NULL DEFAULT FALSE,
        redeemed_jkt TEXT
     );
     CREATE INDEX codes_expires ON codes(expires_at);
     CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        grant_id TEXT NOT NULL,
        client_id TEXT NOT NULL,
        data TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        revoked BOOLEAN NOT NULL DEFAULT FALSE
     );
     CREATE INDEX tokens_grant ON tokens(grant_id);
     CREATE INDEX tokens_expires ON tokens(expires_at);
     CREATE TABLE consents (
        id TEXT PRIMARY KEY,
        subject TEXT NOT NULL,
        client_id TEXT NOT NULL,
        scope TEXT NOT NULL,
        jwt TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        seq BIGINT GENERATED ALWAYS AS IDENTITY
     );
     CREATE INDEX consents_subject ON consents(subject);
     CREATE TABLE replay (
        key BYTEA PRIMARY KEY,
        expires_at BIGINT NOT NULL
     );
     CREATE INDEX replay_expires ON replay(expires_at);
     CREATE TABLE registered_clients (
        client_id TEXT PRIMARY KEY,
        metadata TEXT NOT NULL,
        registration_token_hash TEXT NOT NULL,
        created_at BIGINT NOT NULL
     );
     CREATE TABLE login_throttle (
        key BYTEA PRIMARY KEY,
        failures BIGINT NOT NULL,
        last_failure BIGINT NOT NULL,
        locked_until BIGINT NOT NULL,
        expires_at BIGINT NOT NULL
     );
     CREATE INDEX login_throttle_expires ON login_throttle(expires_at);
     CREATE TABLE totp_steps (
        username TEXT PRIMARY KEY,
        last_step BIGINT NOT NULL
     );",
];

/// The advisory lock key held while migrating ("keybound" in ASCII).
const MIGRATION_LOCK: i64 = 0x6b65_7962_6f75_6e64;

/// How long a request waits for a free pooled connection, or for a new one.
const POOL_WAIT: Duration = Duration::from_secs(10);

impl From<tokio_postgres::Error> for StorageError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => StorageError(format!("postgres: {} ({})", db.message(), db.code().code())),
            None => StorageError(format!("postgres: {e}")),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StorageError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            e => StorageError(format!("postgres pool: {e}")),
        }
    }
}

/// The PostgreSQL backend.
#[derive(Clone)]
pub struct PostgresStorage {
    pool: Pool,
}

impl std::fmt::Debug for PostgresStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgresStorage(pool of {})", self.pool.status().max_size)
    }
}

fn row_par(r: &tokio_postgres::Row) -> StoreResult<ParRecord> {
    Ok(ParRecord {
        request_uri: r.try_get(0)?,
        client_id: r.try_get(1)?,
        params: r.try_get(2)?,
        expires_at: to_u64(r.try_get(3)?),
        consumed: r.try_get(4)?,
    })
}

fn row_code(r: &tokio_postgres::Row) -> StoreResult<CodeRecord> {
    Ok(CodeRecord {
        code_hash: r.try_get(0)?,
        client_id: r.try_get(1)?,
        grant_id: r.try_get(2)?,
        data: r.try_get(3)?,
        expires_at: to_u64(r.try_get(4)?),
        used: r.try_get(5)?,
        redeemed_jkt: r.try_get(6)?,
    })
}

fn row_token(r: &tokio_postgres::Row) -> StoreResult<TokenRecord> {
    Ok(TokenRecord {
        id: r.try_get(0)?,
        kind: r.try_get(1)?,
        grant_id: r.try_get(2)?,
        client_id: r.try_get(3)?,
        data: r.try_get(4)?,
        expires_at: to_u64(r.try_get(5)?),
        revoked: r.try_get(6)?,
    })
}

fn row_throttle(r: &tokio_postgres::Row) -> StoreResult<ThrottleRecord> {
    Ok(ThrottleRecord {
        failures: u32::try_from(r.try_get::<_, i64>(0)?).unwrap_or(u32::MAX),
        last_failure: to_u64(r.try_get(1)?),
        locked_until: to_u64(r.try_get(2)?),
        expires_at: to_u64(r.try_get(3)?),
    })
}

const SELECT_THROTTLE: &str =
    "SELECT failures, last_failure, locked_until, expires_at FROM login_throttle WHERE key = $1";
const INSERT_KEY: &str = "INSERT INTO signing_keys (kid, secret, created_at, retired_at) VALUES ($1, $2, $3, $4)";
/// Taken by key creation and rotation: conflicts with itself, so they run one at a time, while
/// plain reads of the keys go on.
const LOCK_KEYS: &str = "LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE";

impl PostgresStorage {
    /// A pool of at most `pool_size` connections to `url` (`postgres://user:password@host/db`);
    /// connections are made when first needed.
    ///
    /// # Errors
    /// [`StorageError`] if the URL is not a valid connection string.
    pub fn connect(url: &str, pool_size: usize) -> StoreResult<Self> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| StorageError(format!("postgres URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(POOL_WAIT);
        }
        if config.get_application_name().is_none() {
            config.application_name("keybound-authz");
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| StorageError(format!("postgres pool: {e}")))?;
        Ok(PostgresStorage { pool })
    }

    /// Applies the pending migrations, each in its own transaction under an advisory lock.
    ///
    /// # Errors
    /// [`StorageError`] if the database cannot be reached, one fails, or the schema is newer
    /// than this binary.
    pub async fn migrate(&self) -> StoreResult<Migrated> {
        let latest = i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX);
        let mut client = self.pool.get().await?;
        let mut from = None;
        loop {
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS keybound_schema (
                    version INTEGER PRIMARY KEY,
                    applied_at BIGINT NOT NULL
                 )",
            )
            .await?;
            let current: i32 = tx
                .query_one("SELECT COALESCE(max(version), 0) FROM keybound_schema", &[])
                .await?
                .try_get(0)?;
            let from = *from.get_or_insert(current);
            if current > latest {
                return Err(StorageError(format!(
                    "database schema version {current} is newer than this binary ({latest})"
                )));
            }
            let Some(sql) = usize::try_from(current).ok().and_then(|i| MIGRATIONS.get(i)) else {
                tx.commit().await?;
                return Ok(Migrated {
                    backend: "postgres",
                    from: u32::try_from(from).unwrap_or(0),
                    to: u32::try_from(latest).unwrap_or(0),
                });
            };
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO keybound_schema (version, applied_at) VALUES ($1, extract(epoch from now())::bigint)",
                &[&(current + 1)],
            )
            .await?;
            tx.commit().await?;
        }
    }

    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<u64> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(sql).await?;
        Ok(client.execute(&stmt, params).await?)
    }

    async fn query_opt(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Option<tokio_postgres::Row>> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(sql).await?;
        Ok(client.query_opt(&stmt, params).await?)
    }

    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Vec<tokio_postgres::Row>> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(sql).await?;
        Ok(client.query(&stmt, params).await?)
    }

    async fn throttle_update_once(&self, key: &[u8], next: &ThrottleFn) -> StoreResult<Option<ThrottleChange>> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let select = tx.prepare_cached(&format!("{SELECT_THROTTLE} FOR UPDATE")).await?;
        let before = tx
            .query_opt(&select, &[&key])
            .await?
            .as_ref()
            .map(row_throttle)
            .transpose()?;
        let after = next(before);
        match (before, after) {
            (_, Some(rec)) => {
                let values: [&(dyn ToSql + Sync); 5] = [
                    &key,
                    &i64::from(rec.failures),
                    &to_i64(rec.last_failure),
                    &to_i64(rec.locked_until),
                    &to_i64(rec.expires_at),
                ];
                if before.is_some() {
                    // The row is locked by the SELECT above.
                    tx.execute(
                        "UPDATE login_throttle SET failures = $2, last_failure = $3, locked_until = $4, expires_at = $5
                         WHERE key = $1",
                        &values,
                    )
                    .await?;
                } else if tx
                    .execute(
                        "INSERT INTO login_throttle (key, failures, last_failure, locked_until, expires_at)
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key) DO NOTHING",
                        &values,
                    )
                    .await?
                    == 0
                {
                    // Another instance created the record since our read: start again, this
                    // time locking it.
                    tx.rollback().await?;
                    return Ok(None);
                }
            }
            (Some(_), None) => {
                tx.execute("DELETE FROM login_throttle WHERE key = $1", &[&key]).await?;
            }
            (None, None) => {}
        }
        tx.commit().await?;
        Ok(Some(ThrottleChange { before, after }))
    }
}

impl Storage for PostgresStorage {
    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let client = self.pool.get().await?;
            client.simple_query("SELECT 1").await?;
            Ok(())
        })
    }

    fn schema_version(&self) -> StoreFuture<'_, u32> {
        Box::pin(async move {
            let client = self.pool.get().await?;
            let exists: bool = client
                .query_one("SELECT to_regclass('keybound_schema') IS NOT NULL", &[])
                .await?
                .try_get(0)?;
            if !exists {
                return Ok(0);
            }
            let v: i32 = client
                .query_one("SELECT COALESCE(max(version), 0) FROM keybound_schema", &[])
                .await?
                .try_get(0)?;
            Ok(u32::try_from(v).unwrap_or(0))
        })
    }

    fn put_client<'a>(&'a self, client: &'a RegisteredClient) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.execute(
                "INSERT INTO registered_clients (client_id, metadata, registration_token_hash, created_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (client_id) DO UPDATE SET metadata = EXCLUDED.metadata,
                   registration_token_hash = EXCLUDED.registration_token_hash, created_at = EXCLUDED.created_at",
                &[
                    &client.client_id,
                    &client.metadata,
                    &client.registration_token_hash,
                    &to_i64(client.created_at),
                ],
            )
            .await?;
            Ok(())
        })
    }

    fn client<'a>(&'a self, client_id: &'a str) -> StoreFuture<'a, Option<RegisteredClient>> {
        Box::pin(async move {
            let row = self
                .query_opt(
                    "SELECT client_id, metadata, registration_token_hash, created_at FROM registered_clients
                     WHERE client_id = $1",
                    &[&client_id],
                )
                .await?;
            row.map(|r| {
                Ok(RegisteredClient {
                    client_id: r.try_get(0)?,
                    metadata: r.try_get(1)?,
                    registration_token_hash: r.try_get(2)?,
                    created_at: to_u64(r.try_get(3)?),
                })
            })
            .transpose()
        })
    }

    fn delete_client<'a>(&'a self, client_id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            Ok(self
                .execute("DELETE FROM registered_clients WHERE client_id = $1", &[&client_id])
                .await?
                == 1)
        })
    }

    fn signing_keys(&self) -> StoreFuture<'_, Vec<SigningKeyRecord>> {
        Box::pin(async move {
            let rows = self
                .query(
                    "SELECT kid, secret, created_at, retired_at FROM signing_keys ORDER BY created_at, seq",
                    &[],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(SigningKeyRecord {
                        kid: r.try_get(0)?,
                        secret: r.try_get(1)?,
                        created_at: to_u64(r.try_get(2)?),
                        retired_at: r.try_get::<_, Option<i64>>(3)?.map(to_u64),
                    })
                })
                .collect()
        })
    }

    fn add_first_signing_key<'a>(&'a self, key: &'a SigningKeyRecord) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            tx.batch_execute(LOCK_KEYS).await?;
            let n = tx
                .execute(
                    "INSERT INTO signing_keys (kid, secret, created_at, retired_at)
                     SELECT $1, $2, $3, $4
                     WHERE NOT EXISTS (SELECT 1 FROM signing_keys WHERE retired_at IS NULL)",
                    &[
                        &key.kid,
                        &key.secret,
                        &to_i64(key.created_at),
                        &key.retired_at.map(to_i64),
                    ],
                )
                .await?;
            tx.commit().await?;
            Ok(n == 1)
        })
    }

    fn rotate_signing_key<'a>(&'a self, key: &'a SigningKeyRecord, delete_retired_before: u64) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            tx.batch_execute(LOCK_KEYS).await?;
            tx.execute(
                INSERT_KEY,
                &[
                    &key.kid,
                    &key.secret,
                    &to_i64(key.created_at),
                    &key.retired_at.map(to_i64),
                ],
            )
            .await?;
            tx.execute(
                "UPDATE signing_keys SET retired_at = $2 WHERE kid <> $1 AND retired_at IS NULL",
                &[&key.kid, &to_i64(key.created_at)],
            )
            .await?;
            tx.execute(
                "DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < $1",
                &[&to_i64(delete_retired_before)],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn put_par<'a>(&'a self, par: &'a ParRecord) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.execute(
                "INSERT INTO par_requests (request_uri, client_id, params, expires_at, consumed)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &par.request_uri,
                    &par.client_id,
                    &par.params,
                    &to_i64(par.expires_at),
                    &par.consumed,
                ],
            )
            .await?;
            Ok(())
        })
    }

    fn par<'a>(&'a self, request_uri: &'a str) -> StoreFuture<'a, Option<ParRecord>> {
        Box::pin(async move {
            self.query_opt(
                "SELECT request_uri, client_id, params, expires_at, consumed FROM par_requests WHERE request_uri = $1",
                &[&request_uri],
            )
            .await?
            .as_ref()
            .map(row_par)
            .transpose()
        })
    }

    fn consume_par<'a>(&'a self, request_uri: &'a str, now: u64) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            Ok(self
                .execute(
                    "UPDATE par_requests SET consumed = TRUE
                     WHERE request_uri = $1 AND NOT consumed AND expires_at > $2",
                    &[&request_uri, &to_i64(now)],
                )
                .await?
                == 1)
        })
    }

    fn put_code<'a>(&'a self, code: &'a CodeRecord) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.execute(
                "INSERT INTO codes (code_hash, client_id, grant_id, data, expires_at, used, redeemed_jkt)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &code.code_hash,
                    &code.client_id,
                    &code.grant_id,
                    &code.data,
                    &to_i64(code.expires_at),
                    &code.used,
                    &code.redeemed_jkt,
                ],
            )
            .await?;
            Ok(())
        })
    }

    fn code<'a>(&'a self, code_hash: &'a [u8]) -> StoreFuture<'a, Option<CodeRecord>> {
        Box::pin(async move {
            self.query_opt(
                "SELECT code_hash, client_id, grant_id, data, expires_at, used, redeemed_jkt FROM codes
                 WHERE code_hash = $1",
                &[&code_hash],
            )
            .await?
            .as_ref()
            .map(row_code)
            .transpose()
        })
    }

    fn use_code<'a>(&'a self, code_hash: &'a [u8], redeemed_jkt: Option<&'a str>) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            // One statement: of two concurrent redemptions, the second waits for the first's row
            // lock, re-checks `NOT used` against the committed row and updates nothing.
            Ok(self
                .execute(
                    "UPDATE codes SET used = TRUE, redeemed_jkt = $2 WHERE code_hash = $1 AND NOT used",
                    &[&code_hash, &redeemed_jkt],
                )
                .await?
                == 1)
        })
    }

    fn put_token<'a>(&'a self, token: &'a TokenRecord) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.execute(
                "INSERT INTO tokens (id, kind, grant_id, client_id, data, expires_at, revoked)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &token.id,
                    &token.kind,
                    &token.grant_id,
                    &token.client_id,
                    &token.data,
                    &to_i64(token.expires_at),
                    &token.revoked,
                ],
            )
            .await?;
            Ok(())
        })
    }

    fn token<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<TokenRecord>> {
        Box::pin(async move {
            self.query_opt(
                "SELECT id, kind, grant_id, client_id, data, expires_at, revoked FROM tokens WHERE id = $1",
                &[&id],
            )
            .await?
            .as_ref()
            .map(row_token)
            .transpose()
        })
    }

    fn revoke_token<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            Ok(self
                .execute("UPDATE tokens SET revoked = TRUE WHERE id = $1 AND NOT revoked", &[&id])
                .await?
                == 1)
        })
    }

    fn revoke_grant<'a>(&'a self, grant_id: &'a str) -> StoreFuture<'a, usize> {
        Box::pin(async move {
            let n = self
                .execute(
                    "UPDATE tokens SET revoked = TRUE WHERE grant_id = $1 AND NOT revoked",
                    &[&grant_id],
                )
                .await?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    fn put_consent<'a>(&'a self, consent: &'a ConsentRecord) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.execute(
                "INSERT INTO consents (id, subject, client_id, scope, jwt, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &consent.id,
                    &consent.subject,
                    &consent.client_id,
                    &consent.scope,
                    &consent.jwt,
                    &to_i64(consent.created_at),
                ],
            )
            .await?;
            Ok(())
        })
    }

    fn consents<'a>(&'a self, subject: &'a str) -> StoreFuture<'a, Vec<ConsentRecord>> {
        Box::pin(async move {
            let rows = self
                .query(
                    "SELECT id, subject, client_id, scope, jwt, created_at FROM consents WHERE subject = $1
                     ORDER BY created_at DESC, seq DESC",
                    &[&subject],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(ConsentRecord {
                        id: r.try_get(0)?,
                        subject: r.try_get(1)?,
                        client_id: r.try_get(2)?,
                        scope: r.try_get(3)?,
                        jwt: r.try_get(4)?,
                        created_at: to_u64(r.try_get(5)?),
                    })
                })
                .collect()
        })
    }

    fn remember_once<'a>(&'a self, key: &'a [u8], expires_at: u64, now: u64) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            // One statement: of two concurrent inserts of the same key, the second sees the
            // first's committed row in ON CONFLICT and, while that record is live, writes nothing.
            Ok(self
                .execute(
                    "INSERT INTO replay (key, expires_at) VALUES ($1, $2)
                     ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at
                     WHERE replay.expires_at <= $3",
                    &[&key, &to_i64(expires_at), &to_i64(now)],
                )
                .await?
                == 1)
        })
    }

    fn throttle<'a>(&'a self, key: &'a [u8]) -> StoreFuture<'a, Option<ThrottleRecord>> {
        Box::pin(async move {
            self.query_opt(SELECT_THROTTLE, &[&key])
                .await?
                .as_ref()
                .map(row_throttle)
                .transpose()
        })
    }

    fn throttle_update<'a>(&'a self, key: &'a [u8], next: ThrottleFn) -> StoreFuture<'a, ThrottleChange> {
        Box::pin(async move {
            // A record that did not exist when read may be created by another instance before
            // our insert: then the insert writes nothing and the update starts again, now
            // finding (and locking) that record. Each round that fails lost to a committed
            // insert, so a few rounds always do.
            for _ in 0..8 {
                if let Some(change) = self.throttle_update_once(key, &next).await? {
                    return Ok(change);
                }
            }
            Err(StorageError("login throttle record kept changing".into()))
        })
    }

    fn accept_totp_step<'a>(&'a self, user: &'a str, step: u64) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            Ok(self
                .execute(
                    "INSERT INTO totp_steps (username, last_step) VALUES ($1, $2)
                     ON CONFLICT (username) DO UPDATE SET last_step = EXCLUDED.last_step
                     WHERE totp_steps.last_step < EXCLUDED.last_step",
                    &[&user, &to_i64(step)],
                )
                .await?
                == 1)
        })
    }

    fn purge_expired(&self, now: u64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let now = to_i64(now);
            let codes_before = now.saturating_sub(to_i64(CODE_RETENTION));
            self.execute("DELETE FROM par_requests WHERE expires_at <= $1", &[&now])
                .await?;
            // Used codes are kept an hour longer, so a late reuse still revokes what they issued.
            self.execute("DELETE FROM codes WHERE expires_at <= $1", &[&codes_before])
                .await?;
            self.execute("DELETE FROM tokens WHERE expires_at <= $1", &[&now])
                .await?;
            // Exactly the records that are no longer live (`replay_record_live` is `now < expires_at`).
            self.execute("DELETE FROM replay WHERE expires_at <= $1", &[&now])
                .await?;
            self.execute("DELETE FROM login_throttle WHERE expires_at <= $1", &[&now])
                .await?;
            Ok(())
        })
    }
}
