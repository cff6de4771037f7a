//! The state every handler shares ([`App`]): configuration, storage, keys, the clock, metrics,
//! the browser transactions in memory.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use crate::config::Config;
use crate::error::OAuthError;
use crate::keys::KeyRing;
use crate::log::log_line;
use crate::storage::Storage;
use crate::tls::CaVerifier;

/// Where the time comes from: Unix seconds. The server reads the system clock; tests set it.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now, in Unix seconds.
    fn now(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        crate::random::now()
    }
}

/// A clock that stands still until it is set or advanced (for tests and simulations).
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicU64);

impl ManualClock {
    /// A clock at `now`.
    pub fn at(now: u64) -> ManualClock {
        ManualClock(std::sync::atomic::AtomicU64::new(now))
    }

    /// Moves the clock to `now`.
    pub fn set(&self, now: u64) {
        self.0.store(now, std::sync::atomic::Ordering::SeqCst);
    }

    /// Moves the clock forward by `seconds`.
    pub fn advance(&self, seconds: u64) {
        self.0.fetch_add(seconds, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
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
/// Every transaction lives [`crate::endpoints::authorize::TRANSACTION_LIFETIME`] seconds from its start, so
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
    /// Where the time comes from.
    pub clock: Arc<dyn Clock>,
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
        App::with_clock(config, Arc::new(SystemClock)).await
    }

    /// As [`App::new`], with time from `clock` (tests set it; the server uses [`SystemClock`]).
    ///
    /// # Errors
    /// As [`App::new`].
    pub async fn with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<App, String> {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let store: Arc<dyn Storage> = Arc::new(crate::storage::timed::Timed::new(
            crate::storage::open(&config.storage).await.map_err(|e| e.to_string())?,
            metrics.clone(),
        ));
        let keys = KeyRing::load_or_create(store.as_ref(), clock.now())
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
            clock,
        })
    }

    /// Now, in Unix seconds, from the clock.
    pub fn now(&self) -> u64 {
        self.clock.now()
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
        crate::clients::client_from_metadata(&self.config, id, &meta)
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
        match KeyRing::load_or_create(self.store.as_ref(), self.now()).await {
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

/// How many argon2 password checks may run at once.
pub const PASSWORD_SLOTS: usize = 4;

/// The shared state type of the router.
pub type AppState = Arc<App>;

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
