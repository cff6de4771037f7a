//! The server's ES256 signing keys: generated from OS randomness, persisted in storage, published
//! as a JWKS.
//!
//! The newest key that is not retired signs. A retired key (see `keybound-authz keys rotate`)
//! stays in the JWKS for `retention` seconds after retirement (the longest token lifetime), so
//! tokens it signed still verify, and is deleted after that.

use keybound_core::jwk::{Jwk, Jwks};
use keybound_core::jws::{Alg, Signer};

use crate::crypto::RingP256Signer;

use crate::storage::{SigningKeyRecord, Storage, StorageError};

/// A loaded signing key.
#[derive(Debug, Clone)]
pub struct SigningKey {
    /// The `kid`.
    pub kid: String,
    /// The signer.
    pub signer: RingP256Signer,
    /// Retirement time, if retired.
    pub retired_at: Option<u64>,
}

/// The set of signing keys.
#[derive(Debug, Clone)]
pub struct KeyRing {
    keys: Vec<SigningKey>,
}

/// Why keys could not be loaded or made.
#[derive(Debug)]
pub enum KeyError {
    /// Storage failed.
    Storage(StorageError),
    /// The OS random source failed.
    Random,
    /// A stored key is not a valid P-256 scalar.
    Corrupt(String),
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Storage(e) => write!(f, "{e}"),
            KeyError::Random => f.write_str("the OS random source failed"),
            KeyError::Corrupt(kid) => write!(f, "stored signing key {kid} is corrupt"),
        }
    }
}

impl std::error::Error for KeyError {}

impl From<StorageError> for KeyError {
    fn from(e: StorageError) -> Self {
        KeyError::Storage(e)
    }
}

/// Generates a new ES256 key from OS randomness.
///
/// # Errors
/// [`KeyError::Random`] if the random source fails.
pub fn generate(now: u64) -> Result<SigningKeyRecord, KeyError> {
    // A random 32-byte string is a valid scalar with overwhelming probability; retry otherwise.
    for _ in 0..8 {
        let secret = crate::random::bytes::<32>().map_err(|_| KeyError::Random)?;
        if let Ok(signer) = RingP256Signer::from_bytes(&secret) {
            return Ok(SigningKeyRecord {
                kid: signer.public_key().thumbprint().to_string(),
                secret: secret.to_vec(),
                created_at: now,
                retired_at: None,
            });
        }
    }
    Err(KeyError::Random)
}

impl KeyRing {
    /// Loads the keys from storage, creating the first one if there is none.
    ///
    /// # Errors
    /// [`KeyError`] if storage fails, a stored key is corrupt, or a new key cannot be made.
    pub async fn load_or_create(store: &dyn Storage, now: u64) -> Result<KeyRing, KeyError> {
        let mut records = store.signing_keys().await?;
        if !records.iter().any(|r| r.retired_at.is_none()) {
            // Instances starting together on an empty database: one key is added between them.
            store.add_first_signing_key(&generate(now)?).await?;
            records = store.signing_keys().await?;
        }
        let mut keys = Vec::with_capacity(records.len());
        for r in records {
            let secret: [u8; 32] = r
                .secret
                .as_slice()
                .try_into()
                .map_err(|_| KeyError::Corrupt(r.kid.clone()))?;
            let signer = RingP256Signer::from_bytes(&secret).map_err(|_| KeyError::Corrupt(r.kid.clone()))?;
            keys.push(SigningKey {
                kid: r.kid,
                signer,
                retired_at: r.retired_at,
            });
        }
        Ok(KeyRing { keys })
    }

    /// Rotates: adds a new key that signs from now on and retires the others, deleting keys
    /// retired more than `retention` seconds ago, in one storage transaction. Returns the new
    /// `kid`.
    ///
    /// # Errors
    /// [`KeyError`] if storage or randomness fails.
    pub async fn rotate(store: &dyn Storage, now: u64, retention: u64) -> Result<String, KeyError> {
        let rec = generate(now)?;
        store.rotate_signing_key(&rec, now.saturating_sub(retention)).await?;
        Ok(rec.kid)
    }

    /// The key that signs: the newest unretired one.
    pub fn active(&self) -> Option<&SigningKey> {
        self.keys.iter().rev().find(|k| k.retired_at.is_none())
    }

    /// Every key still published (unretired, or retired less than `retention` seconds ago).
    pub fn published(&self, now: u64, retention: u64) -> impl Iterator<Item = &SigningKey> {
        self.keys
            .iter()
            .filter(move |k| k.retired_at.is_none_or(|r| r.saturating_add(retention) > now))
    }

    /// The published keys as a [`Jwks`] (for verifying the server's own tokens).
    pub fn jwks(&self, now: u64, retention: u64) -> Jwks {
        Jwks::new(
            self.published(now, retention)
                .map(|k| Jwk::new(k.signer.public_key().clone(), Some(k.kid.clone()), Some(Alg::Es256)))
                .collect(),
        )
    }

    /// The JWKS document served at the `jwks_uri`.
    pub fn jwks_json(&self, now: u64, retention: u64) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self
            .published(now, retention)
            .filter_map(|k| {
                let jwk = Jwk::new(k.signer.public_key().clone(), Some(k.kid.clone()), Some(Alg::Es256));
                serde_json::from_str(&jwk.to_json()).ok()
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SqliteStorage;

    #[tokio::test]
    async fn first_load_creates_a_key_and_later_loads_keep_it() {
        let s = SqliteStorage::open(":memory:").await.unwrap();
        let a = KeyRing::load_or_create(&s, 100).await.unwrap();
        let b = KeyRing::load_or_create(&s, 200).await.unwrap();
        assert_eq!(a.active().unwrap().kid, b.active().unwrap().kid);
        assert_eq!(s.signing_keys().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn rotation_switches_the_signer_and_keeps_the_old_key_published_for_the_retention() {
        let s = SqliteStorage::open(":memory:").await.unwrap();
        let old = KeyRing::load_or_create(&s, 100)
            .await
            .unwrap()
            .active()
            .unwrap()
            .kid
            .clone();
        let new = KeyRing::rotate(&s, 1000, 300).await.unwrap();
        assert_ne!(old, new);
        let ring = KeyRing::load_or_create(&s, 1000).await.unwrap();
        assert_eq!(ring.active().unwrap().kid, new);
        let kids = |now| ring.published(now, 300).map(|k| k.kid.clone()).collect::<Vec<_>>();
        assert_eq!(kids(1299), vec![old.clone(), new.clone()]);
        assert_eq!(kids(1300), vec![new.clone()]);
        // a later rotation deletes keys retired longer than the retention
        KeyRing::rotate(&s, 2000, 300).await.unwrap();
        assert!(!s.signing_keys().await.unwrap().iter().any(|k| k.kid == old));
    }
}
