//! Test helpers shared by the filter's native tests.
#![allow(dead_code, reason = "not every test file uses every helper")]

use std::cell::RefCell;
use std::collections::HashMap;

use keybound_filter::replay::{Cas, SharedStore, StoreError};

/// Envoy's shared-data semantics, single-threaded: a CAS version per key, and CAS ignored for a
/// key that does not exist yet.
#[derive(Default)]
pub struct Store(pub RefCell<HashMap<String, (Vec<u8>, u32)>>);

impl SharedStore for Store {
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
