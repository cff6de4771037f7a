//! The state every worker of the Envoy process shares: a [`SharedStore`] over a process-global,
//! lock-striped map, with proxy-wasm shared data's semantics (a compare-and-swap version per key,
//! bumped on every write; a version given for a key that does not exist yet is ignored).
//!
//! The gate's [`ReplayCache`](keybound_filter::replay::ReplayCache) runs over it unchanged, so the
//! module keeps the wasm filter's guarantees: of N concurrent copies of one proof exactly one is
//! accepted (its read-modify-write is a CAS on the bucket's key), memory is bounded by
//! `buckets × entries_per_bucket × 24` bytes of values, and a bucket full of live records refuses
//! new proofs (fail closed). What the module gains is the cost: a get or set is a mutex on one
//! stripe and a copy of one bucket, not a call out of a VM.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, OnceLock};

use keybound_filter::replay::{Cas, SharedStore, StoreError};

/// Number of stripes (independent locks). Keys spread over them by hash, so workers touching
/// different replay buckets rarely wait for each other.
const STRIPES: usize = 64;

type Entries = HashMap<String, (Vec<u8>, u32)>;

/// A lock-striped map with CAS versions.
#[derive(Debug)]
pub struct StripedStore {
    stripes: Vec<Mutex<Entries>>,
    hasher: RandomState,
}

impl Default for StripedStore {
    fn default() -> Self {
        StripedStore {
            stripes: (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl StripedStore {
    fn stripe(&self, key: &str) -> Result<std::sync::MutexGuard<'_, Entries>, StoreError> {
        let n = (self.hasher.hash_one(key) as usize) % STRIPES;
        let stripe = self.stripes.get(n).ok_or(StoreError::MissingBucket)?;
        // A poisoned stripe means a thread panicked while holding it: refuse (fail closed).
        stripe
            .lock()
            .map_err(|_| StoreError::Host("shared store lock poisoned".into()))
    }
}

impl SharedStore for StripedStore {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        Ok(self
            .stripe(key)?
            .get(key)
            .map_or((None, None), |(v, c)| (Some(v.clone()), Some(*c))))
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<Cas, StoreError> {
        let mut m = self.stripe(key)?;
        let current = m.get(key).map(|(_, c)| *c);
        if let (Some(cur), Some(c)) = (current, cas)
            && cur != c
        {
            return Ok(Cas::Mismatch);
        }
        m.insert(key.into(), (value.to_vec(), current.map_or(1, |c| c.wrapping_add(1))));
        Ok(Cas::Written)
    }
}

/// The store of this process (all workers, all filter configurations).
pub fn shared() -> &'static StripedStore {
    static STORE: OnceLock<StripedStore> = OnceLock::new();
    STORE.get_or_init(StripedStore::default)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed step fails the test")]
mod tests {
    use super::*;
    use keybound_filter::replay::{ReplayCache, Verdict};
    use std::sync::Arc;

    #[test]
    fn cas_versions_behave_like_envoy_shared_data() {
        let s = StripedStore::default();
        assert_eq!(s.get("k").unwrap(), (None, None));
        // A version for a missing key is ignored.
        assert_eq!(s.set("k", b"a", Some(42)).unwrap(), Cas::Written);
        let (v, c) = s.get("k").unwrap();
        assert_eq!(v.as_deref(), Some(&b"a"[..]));
        assert_eq!(s.set("k", b"b", c.map(|c| c + 1)).unwrap(), Cas::Mismatch);
        assert_eq!(s.set("k", b"b", c).unwrap(), Cas::Written);
        assert_eq!(s.set("k", b"c", c).unwrap(), Cas::Mismatch);
    }

    /// N threads (Envoy workers) present the same 50 proofs at once: each is accepted exactly
    /// once; a full bucket refuses.
    #[test]
    fn concurrent_copies_of_a_proof_are_accepted_exactly_once_and_full_fails_closed() {
        let store = Arc::new(StripedStore::default());
        let cache = ReplayCache::new(8, 64);
        cache.create_buckets(store.as_ref()).unwrap();
        let fresh: usize = std::thread::scope(|s| {
            let runs: Vec<_> = (0..8)
                .map(|_| {
                    let (store, cache) = (store.clone(), cache.clone());
                    s.spawn(move || {
                        (0..50u8)
                            .filter(|n| {
                                let key = [*n; 32];
                                cache.check_and_insert(store.as_ref(), &key, 100, 1).unwrap() == Verdict::Fresh
                            })
                            .count()
                    })
                })
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).sum()
        });
        assert_eq!(fresh, 50);

        let small = ReplayCache::new(1, 2);
        let store = StripedStore::default();
        small.create_buckets(&store).unwrap();
        assert_eq!(
            small.check_and_insert(&store, &[1; 32], 100, 1).unwrap(),
            Verdict::Fresh
        );
        assert_eq!(
            small.check_and_insert(&store, &[2; 32], 100, 1).unwrap(),
            Verdict::Fresh
        );
        assert_eq!(small.check_and_insert(&store, &[3; 32], 100, 1).unwrap(), Verdict::Full);
        assert_eq!(
            small.check_and_insert(&store, &[1; 32], 100, 1).unwrap(),
            Verdict::Replayed
        );
    }
}
