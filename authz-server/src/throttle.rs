//! The login throttle: password and second-factor guessing is limited per account and per client
//! address, in storage, so neither a new browser transaction nor a restart resets it.
//!
//! Every password or TOTP attempt counts against two keys: the account (the user name as typed,
//! known or not, so the answers do not reveal which accounts exist) and the client address (the
//! IPv4 address, or the /64 of an IPv6 address). Limits come from the `[login]` section
//! ([`LoginThrottle`]):
//!
//! - a key with `account_max_failures` (5) resp. `address_max_failures` (20) failures is locked
//!   for `lockout` (60 s); every further failure after a lock ends doubles the lock, up to
//!   `max_lockout` (3600 s);
//! - the count starts again after `failure_window` (900 s) without a failure after the end of
//!   the last lock;
//! - a complete login (every factor) forgets the account's failures; the address keeps its own
//!   (an attacker cannot reset it by logging in to their own account).
//!
//! A locked key refuses the attempt before any password or code is checked, so a throttled
//! attempt tells nothing about the password. An attempt is counted as a failure *before* the
//! check ([`begin`]) in one atomic storage update, so parallel attempts cannot all slip in before
//! the first failure is written; a right password or code takes its own count back
//! ([`Attempt::succeeded`]).

use std::net::IpAddr;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::config::LoginThrottle;
use crate::state::App;
use crate::storage::{StorageError, ThrottleFn, ThrottleRecord};

/// The throttle key of an account (a user name as typed).
pub fn account_key(username: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"keybound-login-account-v1\0");
    h.update(username.as_bytes());
    h.finalize().into()
}

/// The client address as throttled: an IPv4 address (also IPv4-mapped IPv6), or the /64 prefix
/// of an IPv6 address (one host usually holds a whole /64).
pub fn address_label(addr: IpAddr) -> String {
    match addr.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let [a, b, c, d, ..] = v6.segments();
            let prefix = std::net::Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0);
            format!("{prefix}/64")
        }
    }
}

/// The throttle key of a client address ([`address_label`]).
pub fn address_key(addr: IpAddr) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"keybound-login-address-v1\0");
    h.update(address_label(addr).as_bytes());
    h.finalize().into()
}

/// Seconds until `rec` is unlocked at `now`, if it is locked.
pub fn locked_for(rec: Option<&ThrottleRecord>, now: u64) -> Option<u64> {
    rec.map(|r| r.locked_until.saturating_sub(now)).filter(|s| *s > 0)
}

/// The record after one more failure at `now`, for a key allowed `max_failures`.
pub fn after_failure(
    current: Option<ThrottleRecord>,
    max_failures: u32,
    settings: &LoginThrottle,
    now: u64,
) -> ThrottleRecord {
    let failures = match current {
        Some(c)
            if now
                < c.last_failure
                    .max(c.locked_until)
                    .saturating_add(settings.failure_window) =>
        {
            c.failures.saturating_add(1)
        }
        _ => 1,
    };
    let locked_until = if failures >= max_failures {
        let doublings = (failures - max_failures).min(32);
        let lock = settings
            .lockout
            .saturating_mul(1u64 << doublings)
            .min(settings.max_lockout);
        now.saturating_add(lock)
    } else {
        0
    };
    ThrottleRecord {
        failures,
        last_failure: now,
        locked_until,
        expires_at: now.max(locked_until).saturating_add(settings.failure_window),
    }
}

/// The record after a failure counted by [`begin`] turned out to be a success: the count goes
/// back one, and a lock that count set (`set_lock`, the `locked_until` it wrote) is lifted.
pub fn take_back(current: Option<ThrottleRecord>, max_failures: u32, set_lock: u64) -> Option<ThrottleRecord> {
    let c = current?;
    let failures = c.failures.saturating_sub(1);
    if failures == 0 {
        return None;
    }
    let lifted = failures < max_failures || (set_lock != 0 && c.locked_until == set_lock);
    Some(ThrottleRecord {
        failures,
        locked_until: if lifted { 0 } else { c.locked_until },
        ..c
    })
}

/// One key an attempt was counted against.
#[derive(Debug, Clone, Copy)]
struct Counted {
    key: [u8; 32],
    max_failures: u32,
    account: bool,
    /// The `locked_until` this attempt's failure wrote (0: none).
    set_lock: u64,
}

/// An attempt counted against its keys by [`begin`].
#[derive(Debug)]
pub struct Attempt {
    counted: Vec<Counted>,
    /// How long the longest lock this attempt's failure set lasts, if it set one.
    locks_for: Option<u64>,
}

impl Attempt {
    /// If this attempt fails: the lock its counted failure set, in seconds (answer 429), if any.
    pub fn failed(&self) -> Option<u64> {
        self.locks_for
    }

    /// The check succeeded: takes back this attempt's count on every key; `complete` (every
    /// factor of a login passed) forgets the account's failures altogether.
    ///
    /// # Errors
    /// [`StorageError`].
    pub async fn succeeded(&self, app: &App, complete: bool) -> Result<(), StorageError> {
        for c in &self.counted {
            let next: ThrottleFn = if c.account && complete {
                Arc::new(|_| None)
            } else {
                let Counted {
                    max_failures, set_lock, ..
                } = *c;
                Arc::new(move |r| take_back(r, max_failures, set_lock))
            };
            app.store.throttle_update(&c.key, next).await?;
        }
        Ok(())
    }
}

/// Starts an attempt for `username` from `addr`: `Ok(Err(seconds))` if the account or the address
/// is locked (the attempt must be refused unchecked), else the attempt, already counted as a
/// failure on both keys (in one atomic update each).
///
/// # Errors
/// [`StorageError`].
pub async fn begin(app: &App, username: &str, addr: IpAddr, now: u64) -> Result<Result<Attempt, u64>, StorageError> {
    let settings = app.config.login;
    let keys = [
        (account_key(username), settings.account_max_failures, true),
        (address_key(addr), settings.address_max_failures, false),
    ];
    let mut attempt = Attempt {
        counted: Vec::with_capacity(keys.len()),
        locks_for: None,
    };
    for (key, max_failures, account) in keys {
        let change = app
            .store
            .throttle_update(
                &key,
                Arc::new(move |current| {
                    if locked_for(current.as_ref(), now).is_some() {
                        return current;
                    }
                    Some(after_failure(current, max_failures, &settings, now))
                }),
            )
            .await?;
        if let Some(seconds) = locked_for(change.before.as_ref(), now) {
            // Refused: take back what was counted on the keys before this one.
            attempt.succeeded(app, false).await?;
            return Ok(Err(seconds));
        }
        let rec = change.after;
        let set_lock = rec.map_or(0, |r| r.locked_until);
        if let Some(s) = locked_for(rec.as_ref(), now) {
            attempt.locks_for = Some(attempt.locks_for.map_or(s, |l| l.max(s)));
        }
        attempt.counted.push(Counted {
            key,
            max_failures,
            account,
            set_lock,
        });
    }
    Ok(Ok(attempt))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn locks_after_the_limit_and_doubles_with_each_further_failure() {
        let s = LoginThrottle::default();
        let mut rec = None;
        let mut now = 1000;
        for _ in 1..5 {
            rec = Some(after_failure(rec, 5, &s, now));
            assert_eq!(locked_for(rec.as_ref(), now), None);
            now += 1;
        }
        for lock in [60, 120, 240, 480, 960, 1920, 3600, 3600] {
            rec = Some(after_failure(rec, 5, &s, now));
            assert_eq!(locked_for(rec.as_ref(), now), Some(lock));
            now += lock;
            assert_eq!(locked_for(rec.as_ref(), now), None);
        }
        // Quiet for the window after the lock ended: the count starts again.
        now += s.failure_window;
        rec = Some(after_failure(rec, 5, &s, now));
        assert_eq!(rec.map(|r| r.failures), Some(1));
        assert!(rec.is_some_and(|r| r.expires_at == now + s.failure_window));
    }

    #[test]
    fn a_success_takes_back_its_own_count_and_the_lock_it_set() {
        let s = LoginThrottle::default();
        let mut rec = None;
        for t in 0..5 {
            rec = Some(after_failure(rec, 5, &s, 100 + t));
        }
        assert!(locked_for(rec.as_ref(), 104).is_some());
        let set = rec.map_or(0, |r| r.locked_until);
        let back = take_back(rec, 5, set);
        assert_eq!(back.map(|r| (r.failures, r.locked_until)), Some((4, 0)));
        assert_eq!(take_back(Some(after_failure(None, 5, &s, 1)), 5, 0), None);
        // Past the limit, the lock this attempt set is lifted, another one is kept.
        let sixth = after_failure(rec, 5, &s, 200);
        let back = take_back(Some(sixth), 5, sixth.locked_until);
        assert_eq!(back.map(|r| (r.failures, r.locked_until)), Some((5, 0)));
        assert_eq!(
            take_back(Some(sixth), 5, 7).map(|r| r.locked_until),
            Some(sixth.locked_until)
        );
    }

    #[test]
    fn ipv6_addresses_are_throttled_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        assert_eq!(address_label(a), "2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(address_label(mapped), "192.0.2.7");
    }
}
