//! The `jti` replay cache, shared by every Envoy worker of an instance through proxy-wasm shared
//! data.
//!
//! Keys are spread over a fixed number of buckets, each a shared-data key created once at start
//! (`kb/jti/<n>`), because Envoy ignores the compare-and-swap version for a key that does not
//! exist yet: an insert must be a read-modify-write with CAS on a key that already exists. A bucket
//! holds at most `entries_per_bucket` records of 24 bytes (16 bytes of the replay key, 8 bytes of
//! expiry); expired records are dropped on every write, so memory is bounded by
//! `buckets * entries_per_bucket * 24` bytes whatever the traffic. A bucket full of live records
//! refuses new proofs (fail closed: evicting a live record would let that proof be replayed).

/// What went wrong talking to the shared store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The host refused an operation.
    Host(String),
    /// The bucket was not created at start.
    MissingBucket,
    /// Too many concurrent writers: gave up after several CAS retries.
    Contention,
}

/// The result of a compare-and-swap write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cas {
    /// Written.
    Written,
    /// Someone else wrote first.
    Mismatch,
}

/// The subset of proxy-wasm shared data the cache needs.
pub trait SharedStore {
    /// The value and its CAS version; `(None, None)` if the key does not exist.
    ///
    /// # Errors
    /// [`StoreError::Host`] if the host refuses.
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError>;
    /// Writes `value` if the version is still `cas` (`None`: unconditionally).
    ///
    /// # Errors
    /// [`StoreError::Host`] if the host refuses for another reason than a CAS mismatch.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<Cas, StoreError>;
}

/// The verdict for one proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// First use: recorded.
    Fresh,
    /// Seen before within its lifetime.
    Replayed,
    /// The bucket is full of live records: refused.
    Full,
}

const ENTRY: usize = 24;
const RETRIES: usize = 32;

/// The cache's shape; the state lives in the [`SharedStore`].
#[derive(Debug, Clone)]
pub struct ReplayCache {
    buckets: usize,
    per_bucket: usize,
}

impl ReplayCache {
    /// A cache with `buckets` buckets of `per_bucket` entries.
    pub fn new(buckets: usize, per_bucket: usize) -> Self {
        ReplayCache {
            buckets: buckets.max(1),
            per_bucket: per_bucket.max(1),
        }
    }

    fn bucket_key(&self, key: &[u8; 32]) -> String {
        let [a, b, c, d, ..] = *key;
        let n = u32::from_be_bytes([a, b, c, d]) as usize % self.buckets;
        format!("kb/jti/{n}")
    }

    /// Creates every bucket key that does not exist yet. Call once per VM at start, before
    /// requests are served.
    ///
    /// # Errors
    /// The store's error.
    pub fn create_buckets(&self, store: &dyn SharedStore) -> Result<(), StoreError> {
        for n in 0..self.buckets {
            let key = format!("kb/jti/{n}");
            if store.get(&key)?.1.is_none() {
                store.set(&key, &[], None)?;
            }
        }
        Ok(())
    }

    /// Records `key` until `expires_at` unless a live record exists.
    ///
    /// # Errors
    /// [`StoreError`] if the store fails, the bucket is missing, or CAS keeps failing; the caller
    /// must then refuse the request (fail closed).
    pub fn check_and_insert(
        &self,
        store: &dyn SharedStore,
        key: &[u8; 32],
        expires_at: u64,
        now: u64,
    ) -> Result<Verdict, StoreError> {
        let bucket = self.bucket_key(key);
        let id = key.get(4..20).ok_or(StoreError::MissingBucket)?;
        for _ in 0..RETRIES {
            let (value, cas) = store.get(&bucket)?;
            let Some(cas) = cas else {
                return Err(StoreError::MissingBucket);
            };
            let value = value.unwrap_or_default();
            let mut live = Vec::with_capacity(value.len() + ENTRY);
            for rec in value.chunks_exact(ENTRY) {
                let (rid, exp) = rec.split_at(16);
                let exp = u64::from_be_bytes(exp.try_into().unwrap_or([0; 8]));
                if !keybound_core::dpop::replay_record_live(exp, now) {
                    continue;
                }
                if rid == id {
                    return Ok(Verdict::Replayed);
                }
                live.extend_from_slice(rec);
            }
            if live.len() / ENTRY >= self.per_bucket {
                return Ok(Verdict::Full);
            }
            live.extend_from_slice(id);
            live.extend_from_slice(&expires_at.to_be_bytes());
            match store.set(&bucket, &live, Some(cas))? {
                Cas::Written => return Ok(Verdict::Fresh),
                Cas::Mismatch => continue,
            }
        }
        Err(StoreError::Contention)
    }

    /// The most memory the cache can hold, in bytes of values.
    pub fn max_bytes(&self) -> usize {
        self.buckets * self.per_bucket * ENTRY
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    type Entries = HashMap<String, (Vec<u8>, u32)>;

    /// Envoy's semantics: CAS is ignored for a key that does not exist; versions increase.
    #[derive(Default, Clone)]
    struct Store(Arc<Mutex<Entries>>);

    impl SharedStore for Store {
        fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
            let m = self.0.lock().unwrap();
            Ok(m.get(key).map_or((None, None), |(v, c)| (Some(v.clone()), Some(*c))))
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<Cas, StoreError> {
            let mut m = self.0.lock().unwrap();
            match (m.get(key), cas) {
                (Some((_, current)), Some(c)) if *current != c => Ok(Cas::Mismatch),
                (existing, _) => {
                    let next = existing.map_or(1, |(_, c)| c + 1);
                    m.insert(key.into(), (value.to_vec(), next));
                    Ok(Cas::Written)
                }
            }
        }
    }

    fn key(n: u32) -> [u8; 32] {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&n.to_be_bytes());
        k[4..8].copy_from_slice(&n.to_le_bytes());
        k
    }

    #[test]
    fn first_use_is_fresh_and_the_second_is_a_replay_until_expiry() {
        let store = Store::default();
        let cache = ReplayCache::new(8, 4);
        cache.create_buckets(&store).unwrap();
        assert_eq!(cache.check_and_insert(&store, &key(1), 100, 10), Ok(Verdict::Fresh));
        assert_eq!(cache.check_and_insert(&store, &key(1), 100, 50), Ok(Verdict::Replayed));
        assert_eq!(cache.check_and_insert(&store, &key(2), 100, 50), Ok(Verdict::Fresh));
        // After expiry the record is gone (the proof itself is then too old anyway).
        assert_eq!(cache.check_and_insert(&store, &key(1), 200, 100), Ok(Verdict::Fresh));
    }

    #[test]
    fn a_missing_bucket_fails_closed() {
        let store = Store::default();
        let cache = ReplayCache::new(8, 4);
        assert_eq!(
            cache.check_and_insert(&store, &key(1), 100, 10),
            Err(StoreError::MissingBucket)
        );
    }

    #[test]
    fn a_full_bucket_refuses_and_memory_is_bounded() {
        let store = Store::default();
        let cache = ReplayCache::new(1, 3);
        cache.create_buckets(&store).unwrap();
        for n in 0..3 {
            assert_eq!(cache.check_and_insert(&store, &key(n), 100, 10), Ok(Verdict::Fresh));
        }
        assert_eq!(cache.check_and_insert(&store, &key(9), 100, 10), Ok(Verdict::Full));
        // Once they expire, there is room again; a million distinct proofs over time stay bounded.
        for n in 0..1_000_000u32 {
            let now = 200 + u64::from(n);
            let v = cache.check_and_insert(&store, &key(n + 10), now + 1, now).unwrap();
            assert_eq!(v, Verdict::Fresh);
        }
        let bytes: usize = store.0.lock().unwrap().values().map(|(v, _)| v.len()).sum();
        assert!(bytes <= cache.max_bytes(), "{bytes} > {}", cache.max_bytes());
    }

    #[test]
    fn concurrent_writers_accept_a_key_exactly_once() {
        let store = Store::default();
        let cache = ReplayCache::new(4, 1024);
        cache.create_buckets(&store).unwrap();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (store, cache) = (store.clone(), cache.clone());
                std::thread::spawn(move || {
                    (0..200u32)
                        .filter(|n| cache.check_and_insert(&store, &key(*n), 1000, 1) == Ok(Verdict::Fresh))
                        .count()
                })
            })
            .collect();
        let fresh: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(fresh, 200);
    }
}

/// Envoy's shared-data semantics in memory, for one thread: a CAS version per key, bumped on
/// every write; a CAS version is ignored for a key that does not exist yet (as Envoy does); `get`
/// copies the value out (as the host does). For tests and benchmarks of the decision logic
/// outside Envoy.
#[derive(Debug, Default)]
pub struct MemoryStore(std::cell::RefCell<std::collections::HashMap<String, (Vec<u8>, u32)>>);

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        Ok(self
            .0
            .borrow()
            .get(key)
            .map_or((None, None), |(v, c)| (Some(v.clone()), Some(*c))))
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<Cas, StoreError> {
        let mut m = self.0.borrow_mut();
        let current = m.get(key).map(|(_, c)| *c);
        if let (Some(cur), Some(c)) = (current, cas)
            && cur != c
        {
            return Ok(Cas::Mismatch);
        }
        m.insert(key.into(), (value.to_vec(), current.map_or(1, |c| c + 1)));
        Ok(Cas::Written)
    }
}
