//! The storage suite, run against both backends: every test runs once on SQLite (a file, so
//! two handles are two connections to one database, like two processes) and once on a real
//! PostgreSQL (started by the harness, `keybound_e2e::postgres`, a fresh database per test).
//!
//! Besides what each operation does, it checks that every use-once operation succeeds exactly
//! once when many callers race for it through two handles ("instances") to the same database:
//! code redemption, PAR `request_uri` use, `jti` replay records, TOTP steps, throttle counters
//! and signing-key creation and rotation.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::path::Path;
use std::sync::Arc;

use keybound_authz::config::{DEFAULT_POOL_SIZE, StorageSettings, StorageUrl};
use keybound_authz::keys::KeyRing;
use keybound_authz::storage::{
    self, CodeRecord, ConsentRecord, ParRecord, RegisteredClient, Storage, ThrottleFn, ThrottleRecord, TokenRecord,
};
use keybound_e2e::TempDir;
use keybound_e2e::postgres::Postgres;

#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// One database of the backend under test (removed with the fixture for SQLite).
struct Db {
    url: StorageUrl,
    _dir: Option<TempDir>,
}

impl Db {
    async fn new(backend: Backend) -> Db {
        match backend {
            Backend::Sqlite => {
                let dir = TempDir::new("authz-storage").unwrap();
                let path = dir.0.join("authz.sqlite").to_string_lossy().into_owned();
                Db {
                    url: StorageUrl::Sqlite(path),
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let url = tokio::task::spawn_blocking(|| Postgres::shared()?.create_database())
                    .await
                    .unwrap()
                    .unwrap_or_else(|e| panic!("PostgreSQL for the storage tests: {e}"));
                Db {
                    url: StorageUrl::Postgres(url),
                    _dir: None,
                }
            }
        }
    }

    fn settings(&self, auto_migrate: bool) -> StorageSettings {
        StorageSettings {
            url: self.url.clone(),
            pool_size: DEFAULT_POOL_SIZE,
            auto_migrate,
            key_reload_seconds: 10,
        }
    }

    /// A new handle (an "instance") on the database, migrated.
    async fn open(&self) -> Arc<dyn Storage> {
        storage::open(&self.settings(true)).await.unwrap()
    }
}

/// Runs `$test(db)` once per backend, as `$test::sqlite` and `$test::postgres`.
macro_rules! both_backends {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$test(super::Db::new(super::Backend::Sqlite).await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$test(super::Db::new(super::Backend::Postgres).await).await;
            }
        }
    )*};
}

both_backends!(
    one_time_operations_succeed_once,
    replay_records_follow_the_core_liveness_rule,
    totp_steps_are_accepted_once_and_only_forward,
    throttle_records_are_updated_and_purged,
    revoking_a_grant_revokes_its_tokens_only,
    clients_and_consents_round_trip,
    racing_redemptions_of_one_code_succeed_once_across_instances,
    racing_uses_of_one_request_uri_and_jti_succeed_once_across_instances,
    racing_throttle_updates_lose_no_count_across_instances,
    racing_first_keys_and_rotations_leave_one_signing_key,
    migrations_are_versioned_and_applied_once,
    a_schema_behind_the_binary_is_refused_without_auto_migrate,
    ping_answers,
);

fn par(uri: &str, expires_at: u64) -> ParRecord {
    ParRecord {
        request_uri: uri.into(),
        client_id: "c".into(),
        params: "{}".into(),
        expires_at,
        consumed: false,
    }
}

fn code(hash: &[u8], grant: &str) -> CodeRecord {
    CodeRecord {
        code_hash: hash.to_vec(),
        client_id: "c".into(),
        grant_id: grant.into(),
        data: "{}".into(),
        expires_at: 200,
        used: false,
        redeemed_jkt: None,
    }
}

fn token(id: &str, grant: &str) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        kind: "access".into(),
        grant_id: grant.into(),
        client_id: "c".into(),
        data: "{}".into(),
        expires_at: 1000,
        revoked: false,
    }
}

async fn one_time_operations_succeed_once(db: Db) {
    let s = db.open().await;
    s.put_par(&par("urn:x", 200)).await.unwrap();
    assert_eq!(s.par("urn:x").await.unwrap().unwrap(), par("urn:x", 200));
    assert!(!s.consume_par("urn:x", 200).await.unwrap(), "expired at 200");
    assert!(s.consume_par("urn:x", 100).await.unwrap());
    assert!(!s.consume_par("urn:x", 100).await.unwrap());
    assert!(!s.consume_par("urn:other", 100).await.unwrap());
    assert!(s.par("urn:x").await.unwrap().unwrap().consumed);
    assert!(s.par("urn:other").await.unwrap().is_none());

    s.put_code(&code(&[1; 32], "g")).await.unwrap();
    assert!(s.put_code(&code(&[1; 32], "g")).await.is_err(), "codes are unique");
    assert!(s.use_code(&[1; 32], Some("jkt-1")).await.unwrap());
    assert!(!s.use_code(&[1; 32], Some("jkt-2")).await.unwrap());
    assert!(!s.use_code(&[2; 32], None).await.unwrap(), "unknown code");
    let c = s.code(&[1; 32]).await.unwrap().unwrap();
    assert_eq!((c.used, c.redeemed_jkt.as_deref()), (true, Some("jkt-1")));
    assert!(s.code(&[2; 32]).await.unwrap().is_none());

    assert!(s.remember_once(b"jti", 150, 100).await.unwrap());
    assert!(!s.remember_once(b"jti", 150, 120).await.unwrap());
    assert!(
        s.remember_once(b"jti", 300, 150).await.unwrap(),
        "expired record is replaced"
    );
    assert!(
        !s.remember_once(b"jti", 300, 299).await.unwrap(),
        "the new record is live"
    );
}

/// The table keeps a record exactly while keybound-core's rule says it is live: refused up to
/// the second before `expires_at` (and a purge then keeps it), free again from then on, and
/// purged at `expires_at` (a purged key is accepted again even at an earlier `now`).
async fn replay_records_follow_the_core_liveness_rule(db: Db) {
    use keybound_core::dpop::replay_record_live;
    let s = db.open().await;
    let expires_at = 1000;
    assert!(s.remember_once(b"k", expires_at, 990).await.unwrap());
    for now in [990, 995, 999] {
        assert!(replay_record_live(expires_at, now));
        s.purge_expired(now).await.unwrap();
        assert!(!s.remember_once(b"k", expires_at, now).await.unwrap(), "now {now}");
    }
    assert!(!replay_record_live(expires_at, 1000));
    assert!(s.remember_once(b"k", 2000, 1000).await.unwrap(), "free at expires_at");
    s.purge_expired(1999).await.unwrap();
    assert!(!s.remember_once(b"k", 3000, 1999).await.unwrap());
    s.purge_expired(2000).await.unwrap();
    assert!(
        s.remember_once(b"k", 3000, 1500).await.unwrap(),
        "purged at expires_at: no record left to refuse it"
    );
}

async fn totp_steps_are_accepted_once_and_only_forward(db: Db) {
    let s = db.open().await;
    assert!(s.accept_totp_step("bob", 100).await.unwrap());
    assert!(!s.accept_totp_step("bob", 100).await.unwrap(), "the same step again");
    assert!(!s.accept_totp_step("bob", 99).await.unwrap(), "an earlier step");
    assert!(s.accept_totp_step("alice", 99).await.unwrap(), "per user");
    assert!(s.accept_totp_step("bob", 101).await.unwrap());
}

fn bump() -> ThrottleFn {
    Arc::new(|c: Option<ThrottleRecord>| {
        let c = c.unwrap_or_default();
        Some(ThrottleRecord {
            failures: c.failures + 1,
            last_failure: 10,
            locked_until: 0,
            expires_at: 100,
        })
    })
}

async fn throttle_records_are_updated_and_purged(db: Db) {
    let s = db.open().await;
    let first = s.throttle_update(b"k", bump()).await.unwrap();
    assert_eq!((first.before, first.after.unwrap().failures), (None, 1));
    let second = s.throttle_update(b"k", bump()).await.unwrap();
    assert_eq!(
        (second.before.unwrap().failures, second.after.unwrap().failures),
        (1, 2)
    );
    assert_eq!(s.throttle(b"k").await.unwrap().unwrap().failures, 2);
    s.purge_expired(99).await.unwrap();
    assert!(s.throttle(b"k").await.unwrap().is_some());
    s.purge_expired(100).await.unwrap();
    assert!(s.throttle(b"k").await.unwrap().is_none());
    s.throttle_update(b"k", bump()).await.unwrap();
    let gone = s.throttle_update(b"k", Arc::new(|_| None)).await.unwrap();
    assert!(gone.before.is_some() && gone.after.is_none());
    assert!(s.throttle(b"k").await.unwrap().is_none());
    let nothing = s.throttle_update(b"k", Arc::new(|_| None)).await.unwrap();
    assert_eq!((nothing.before, nothing.after), (None, None));
}

async fn revoking_a_grant_revokes_its_tokens_only(db: Db) {
    let s = db.open().await;
    for (id, grant) in [("a", "g1"), ("b", "g1"), ("c", "g2")] {
        s.put_token(&token(id, grant)).await.unwrap();
    }
    assert_eq!(s.token("a").await.unwrap().unwrap(), token("a", "g1"));
    assert_eq!(s.revoke_grant("g1").await.unwrap(), 2);
    assert_eq!(s.revoke_grant("g1").await.unwrap(), 0, "already revoked");
    assert!(s.token("a").await.unwrap().unwrap().revoked);
    assert!(!s.token("c").await.unwrap().unwrap().revoked);
    assert!(s.revoke_token("c").await.unwrap());
    assert!(!s.revoke_token("c").await.unwrap());
    assert!(!s.revoke_token("unknown").await.unwrap());
    s.purge_expired(1000).await.unwrap();
    assert!(s.token("a").await.unwrap().is_none());
}

async fn clients_and_consents_round_trip(db: Db) {
    let s = db.open().await;
    let client = RegisteredClient {
        client_id: "dyn-1".into(),
        metadata: r#"{"client_name":"x"}"#.into(),
        registration_token_hash: "h".into(),
        created_at: 5,
    };
    s.put_client(&client).await.unwrap();
    assert_eq!(s.client("dyn-1").await.unwrap().unwrap(), client);
    let changed = RegisteredClient {
        metadata: r#"{"client_name":"y"}"#.into(),
        ..client.clone()
    };
    s.put_client(&changed).await.unwrap();
    assert_eq!(s.client("dyn-1").await.unwrap().unwrap(), changed, "replaced");
    assert!(s.delete_client("dyn-1").await.unwrap());
    assert!(!s.delete_client("dyn-1").await.unwrap());
    assert!(s.client("dyn-1").await.unwrap().is_none());

    for (id, at) in [("c1", 10), ("c2", 20), ("c3", 20)] {
        s.put_consent(&ConsentRecord {
            id: id.into(),
            subject: "alice".into(),
            client_id: "c".into(),
            scope: "openid".into(),
            jwt: format!("jwt-{id}"),
            created_at: at,
        })
        .await
        .unwrap();
    }
    let ids: Vec<String> = s.consents("alice").await.unwrap().into_iter().map(|c| c.id).collect();
    assert_eq!(ids, ["c3", "c2", "c1"], "newest first, the later insert first on a tie");
    assert!(s.consents("bob").await.unwrap().is_empty());
}

/// Runs `n` copies of `op` at once, alternating between two handles ("instances") on the same
/// database; returns how many returned `true`.
async fn race<F, Fut>(db: &Db, n: usize, op: F) -> usize
where
    F: Fn(Arc<dyn Storage>, usize) -> Fut,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let instances = [db.open().await, db.open().await];
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = Vec::new();
    for i in 0..n {
        let fut = op(instances[i % 2].clone(), i);
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            fut.await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    wins
}

async fn racing_redemptions_of_one_code_succeed_once_across_instances(db: Db) {
    db.open().await.put_code(&code(&[7; 32], "g")).await.unwrap();
    let wins = race(&db, 16, |s, i| async move {
        s.use_code(&[7; 32], Some(&format!("jkt-{i}"))).await.unwrap()
    })
    .await;
    assert_eq!(wins, 1);
    let c = db.open().await.code(&[7; 32]).await.unwrap().unwrap();
    assert!(c.used && c.redeemed_jkt.is_some());
}

async fn racing_uses_of_one_request_uri_and_jti_succeed_once_across_instances(db: Db) {
    db.open().await.put_par(&par("urn:race", 500)).await.unwrap();
    let wins = race(
        &db,
        16,
        |s, _| async move { s.consume_par("urn:race", 100).await.unwrap() },
    )
    .await;
    assert_eq!(wins, 1, "request_uri");
    let wins = race(&db, 16, |s, _| async move {
        s.remember_once(b"race-jti", 500, 100).await.unwrap()
    })
    .await;
    assert_eq!(wins, 1, "a new jti");
    // A record that is no longer live is replaced once too.
    let wins = race(&db, 16, |s, _| async move {
        s.remember_once(b"race-jti", 900, 600).await.unwrap()
    })
    .await;
    assert_eq!(wins, 1, "an expired jti");
    let wins = race(
        &db,
        16,
        |s, _| async move { s.accept_totp_step("carol", 42).await.unwrap() },
    )
    .await;
    assert_eq!(wins, 1, "TOTP step");
}

async fn racing_throttle_updates_lose_no_count_across_instances(db: Db) {
    let n = 24;
    let seen = race(&db, n, |s, _| async move {
        let change = s.throttle_update(b"acct", bump()).await.unwrap();
        change.after.unwrap().failures == change.before.map_or(0, |b| b.failures) + 1
    })
    .await;
    assert_eq!(seen, n, "every update saw the record it replaced");
    let rec = db.open().await.throttle(b"acct").await.unwrap().unwrap();
    assert_eq!(rec.failures as usize, n, "no increment lost");
}

async fn racing_first_keys_and_rotations_leave_one_signing_key(db: Db) {
    // Instances starting together on an empty database create one key between them.
    let n = 8;
    let rings = race(&db, n, |s, _| async move {
        KeyRing::load_or_create(s.as_ref(), 100)
            .await
            .unwrap()
            .active()
            .is_some()
    })
    .await;
    assert_eq!(rings, n);
    let s = db.open().await;
    let keys = s.signing_keys().await.unwrap();
    assert_eq!(keys.len(), 1, "one first key: {keys:?}");
    let first = keys[0].kid.clone();

    // Rotations at once: every new key is added, exactly one stays unretired.
    race(&db, 6, |s, _| async move {
        KeyRing::rotate(s.as_ref(), 1000, 300).await.unwrap();
        true
    })
    .await;
    let keys = s.signing_keys().await.unwrap();
    assert_eq!(keys.len(), 7);
    let active: Vec<_> = keys.iter().filter(|k| k.retired_at.is_none()).collect();
    assert_eq!(active.len(), 1, "{keys:?}");
    let ring = KeyRing::load_or_create(s.as_ref(), 1000).await.unwrap();
    assert_eq!(ring.active().unwrap().kid, active[0].kid);
    assert!(
        ring.published(1000, 300).any(|k| k.kid == first),
        "retired keys stay published"
    );
    // A later rotation deletes the keys retired longer than the retention.
    KeyRing::rotate(s.as_ref(), 2000, 300).await.unwrap();
    let keys = s.signing_keys().await.unwrap();
    assert_eq!(keys.len(), 2, "the previous signer (retired now) and the new one");
    assert!(!keys.iter().any(|k| k.kid == first));
}

async fn migrations_are_versioned_and_applied_once(db: Db) {
    let latest = match db.url {
        StorageUrl::Sqlite(_) => storage::sqlite::MIGRATIONS.len(),
        StorageUrl::Postgres(_) => storage::postgres::MIGRATIONS.len(),
    } as u32;
    // Several instances migrating at once apply each migration once.
    let settings = db.settings(true);
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let settings = settings.clone();
        tasks.push(tokio::spawn(async move { storage::migrate(&settings).await }));
    }
    let mut froms = Vec::new();
    for t in tasks {
        let m = t.await.unwrap().unwrap();
        assert_eq!(m.to, latest);
        froms.push(m.from);
    }
    assert!(froms.contains(&0), "{froms:?}");
    let again = storage::migrate(&settings).await.unwrap();
    assert_eq!((again.from, again.to), (latest, latest), "nothing left to apply");
    let s = db.open().await;
    assert_eq!(s.schema_version().await.unwrap(), latest);
    // A database migrated by a newer binary is refused.
    drop(s);
    match &db.url {
        StorageUrl::Sqlite(path) => set_sqlite_user_version(path, 99),
        StorageUrl::Postgres(url) => {
            let pg = Postgres::shared().unwrap();
            let name = url.rsplit('/').next().unwrap();
            pg.psql(name, "INSERT INTO keybound_schema (version, applied_at) VALUES (99, 0)")
                .unwrap();
        }
    }
    let err = storage::open(&settings).await.unwrap_err();
    assert!(err.0.contains("newer than this binary"), "{err}");
}

fn set_sqlite_user_version(path: &str, v: u32) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.pragma_update(None, "user_version", v).unwrap();
}

async fn a_schema_behind_the_binary_is_refused_without_auto_migrate(db: Db) {
    let err = storage::open(&db.settings(false)).await.unwrap_err();
    assert!(
        err.0.contains("is at version 0") && err.0.contains("keybound-authz migrate"),
        "{err}"
    );
    storage::migrate(&db.settings(false)).await.unwrap();
    let s = storage::open(&db.settings(false)).await.unwrap();
    s.ping().await.unwrap();
}

async fn ping_answers(db: Db) {
    db.open().await.ping().await.unwrap();
}

/// `/readyz` relies on `ping` failing when the database is gone.
#[tokio::test]
async fn ping_fails_when_postgres_is_unreachable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = storage::PostgresStorage::connect(&format!("postgres://keybound@127.0.0.1:{port}/none"), 2).unwrap();
    let err = s.ping().await.unwrap_err();
    assert!(err.0.contains("postgres"), "{err}");
}

/// `storage.url` (and the older `database`) select the backend; bad values are config errors
/// naming the field.
#[test]
fn the_storage_url_selects_the_backend_and_bad_ones_name_the_field() {
    let dir = TempDir::new("authz-storage-config").unwrap();
    std::fs::write(dir.0.join("cert.pem"), "").unwrap();
    std::fs::write(dir.0.join("key.pem"), "").unwrap();
    let parse = |top: &str, storage: &str| {
        let text = format!(
            "issuer = \"https://127.0.0.1:8443\"\nlisten = \"127.0.0.1:8443\"\n{top}\n\
             scopes = [\"openid\"]\naudience = [\"https://api.test\"]\n\
             [tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n[dpop]\nnonce = \"off\"\n{storage}\n"
        );
        keybound_authz::config::Config::parse(&text, &dir.0)
    };
    let base = dir.0.to_string_lossy().into_owned();
    let ok = |top: &str, storage: &str| parse(top, storage).unwrap().storage;

    let s = ok("database = \"a.sqlite\"", "");
    assert_eq!(s.url, StorageUrl::Sqlite(format!("{base}/a.sqlite")));
    assert!(s.auto_migrate && s.pool_size == DEFAULT_POOL_SIZE && s.key_reload_seconds == 10);
    assert_eq!(
        ok("", "[storage]\nurl = \"sqlite:b.sqlite\"").url,
        StorageUrl::Sqlite(format!("{base}/b.sqlite"))
    );
    assert_eq!(
        ok("", "[storage]\nurl = \"sqlite:///abs/c.sqlite\"").url,
        StorageUrl::Sqlite("/abs/c.sqlite".into())
    );
    assert_eq!(
        ok("", "[storage]\nurl = \":memory:\"").url,
        StorageUrl::Sqlite(":memory:".into())
    );
    let pg = ok(
        "",
        "[storage]\nurl = \"postgres://kb:secret@db.internal:5433/authz\"\npool_size = 4\nauto_migrate = false\nkey_reload_seconds = 2",
    );
    assert_eq!(
        pg.url,
        StorageUrl::Postgres("postgres://kb:secret@db.internal:5433/authz".into())
    );
    assert_eq!((pg.pool_size, pg.auto_migrate, pg.key_reload_seconds), (4, false, 2));
    assert!(
        !format!("{:?}", pg.url).contains("secret"),
        "the password is not logged"
    );
    assert_eq!(
        ok("", "[storage]\nurl = \"postgresql://kb@h/authz\"").url.backend(),
        "postgres"
    );

    for (top, storage, field, says) in [
        ("", "", "storage.url", "required"),
        ("database = \"\"", "", "database", "must be"),
        (
            "database = \"a.sqlite\"",
            "[storage]\nurl = \"b.sqlite\"",
            "storage.url",
            "not both",
        ),
        (
            "",
            "[storage]\nurl = \"mysql://h/db\"",
            "storage.url",
            "unsupported scheme mysql",
        ),
        (
            "",
            "[storage]\nurl = \"postgres://h:notaport/db\"",
            "storage.url",
            "not a valid PostgreSQL URL",
        ),
        (
            "",
            "[storage]\nurl = \"postgres://h/db?sslmode=require\"",
            "storage.url",
            "sslmode=require",
        ),
        ("", "[storage]\nurl = \"sqlite:\"", "storage.url", "must be"),
        (
            "",
            "[storage]\nurl = \"a.sqlite\"\npool_size = 0",
            "storage.pool_size",
            "between",
        ),
        (
            "",
            "[storage]\nurl = \"a.sqlite\"\nkey_reload_seconds = 0",
            "storage.key_reload_seconds",
            "between",
        ),
        (
            "",
            "[storage]\nurl = \"a.sqlite\"\nflavour = 1",
            "flavour",
            "unknown field",
        ),
    ] {
        let e = parse(top, storage).unwrap_err();
        assert_eq!(e.field, field, "{top} {storage}: {e}");
        assert!(e.reason.contains(says), "{top} {storage}: {e}");
    }
    assert!(Path::new(&base).exists());
}
