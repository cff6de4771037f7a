//! A [`Storage`] that times every call of the one it wraps into the
//! `keybound_authz_storage_duration_seconds{op}` histogram ([`crate::metrics`]), whatever the
//! backend.

use std::sync::Arc;
use std::time::Instant;

use super::{
    CodeRecord, ConsentRecord, ParRecord, RegisteredClient, SigningKeyRecord, Storage, StoreFuture, ThrottleChange,
    ThrottleFn, ThrottleRecord, TokenRecord,
};
use crate::metrics::Metrics;

/// Times the calls of `inner`.
#[derive(Debug)]
pub struct Timed {
    inner: Arc<dyn Storage>,
    metrics: Arc<Metrics>,
}

impl Timed {
    /// Wraps `inner`, recording into `metrics`.
    pub fn new(inner: Arc<dyn Storage>, metrics: Arc<Metrics>) -> Timed {
        Timed { inner, metrics }
    }
}

/// One delegating method that records how long the call took under the method's name.
macro_rules! timed {
    ($name:ident <$a:lifetime> ($($arg:ident: $ty:ty),*) -> $out:ty) => {
        fn $name<$a>(&$a self, $($arg: $ty),*) -> StoreFuture<$a, $out> {
            Box::pin(async move {
                let started = Instant::now();
                let result = self.inner.$name($($arg),*).await;
                self.metrics.storage(stringify!($name), started.elapsed());
                result
            })
        }
    };
}

impl Storage for Timed {
    timed!(ping<'a>() -> ());
    timed!(schema_version<'a>() -> u32);
    timed!(put_client<'a>(client: &'a RegisteredClient) -> ());
    timed!(client<'a>(client_id: &'a str) -> Option<RegisteredClient>);
    timed!(delete_client<'a>(client_id: &'a str) -> bool);
    timed!(signing_keys<'a>() -> Vec<SigningKeyRecord>);
    timed!(add_first_signing_key<'a>(key: &'a SigningKeyRecord) -> bool);
    timed!(rotate_signing_key<'a>(key: &'a SigningKeyRecord, delete_retired_before: u64) -> ());
    timed!(put_par<'a>(par: &'a ParRecord) -> ());
    timed!(par<'a>(request_uri: &'a str) -> Option<ParRecord>);
    timed!(consume_par<'a>(request_uri: &'a str, now: u64) -> bool);
    timed!(put_code<'a>(code: &'a CodeRecord) -> ());
    timed!(code<'a>(code_hash: &'a [u8]) -> Option<CodeRecord>);
    timed!(use_code<'a>(code_hash: &'a [u8], redeemed_jkt: Option<&'a str>) -> bool);
    timed!(put_token<'a>(token: &'a TokenRecord) -> ());
    timed!(token<'a>(id: &'a str) -> Option<TokenRecord>);
    timed!(revoke_token<'a>(id: &'a str) -> bool);
    timed!(revoke_grant<'a>(grant_id: &'a str) -> usize);
    timed!(put_consent<'a>(consent: &'a ConsentRecord) -> ());
    timed!(consents<'a>(subject: &'a str) -> Vec<ConsentRecord>);
    timed!(remember_once<'a>(key: &'a [u8], expires_at: u64, now: u64) -> bool);
    timed!(throttle<'a>(key: &'a [u8]) -> Option<ThrottleRecord>);
    timed!(throttle_update<'a>(key: &'a [u8], next: ThrottleFn) -> ThrottleChange);
    timed!(accept_totp_step<'a>(user: &'a str, step: u64) -> bool);
    timed!(purge_expired<'a>(now: u64) -> ());
}
