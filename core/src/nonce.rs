//! Stateless DPoP server nonces ([RFC 9449 §8] and §9).
//!
//! A nonce is `base64url(step || HMAC-SHA256(secret, "keybound-dpop-nonce-v1" || step)[..16])`
//! where `step = floor(now / step_seconds)`. Anyone without the secret cannot predict the next
//! step's nonce; anyone with it, every gateway instance and the authorization server, can check a
//! nonce another one issued, with no shared state. A nonce of the current or the previous step
//! is accepted, so a nonce lives between one and two steps.
//!
//! ## Rotating the secret
//! Secrets are an ordered list: the first issues, every one verifies. To rotate, deploy
//! `[new, old]` everywhere, wait one step (until no instance issues with the old secret any
//! more) plus one more (until the old nonces have expired), then deploy `[new]`.
//!
//! The nonces are the same for every client within a step: they limit how long a pre-made proof
//! can be used, which is what RFC 9449 §8 asks of them; `jti` replay protection is separate.
//!
//! [RFC 9449 §8]: https://www.rfc-editor.org/rfc/rfc9449#section-8

use alloc::string::String;
use alloc::vec::Vec;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::b64;
use crate::error::{Error, Result};

const LABEL: &[u8] = b"keybound-dpop-nonce-v1";
const MAC_LEN: usize = 16;
/// Shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 32;
/// The default step length in seconds.
pub const DEFAULT_STEP_SECONDS: u64 = 120;

/// How a presented nonce relates to the current step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceAge {
    /// Issued in the current step.
    Current,
    /// Issued in the previous step: still accepted, and the server should send a fresh one
    /// (`DPoP-Nonce` on the response).
    Previous,
}

/// The secrets and step length shared by every server that issues or checks nonces.
#[derive(Clone)]
pub struct NonceSecrets {
    secrets: Vec<Vec<u8>>,
    step: u64,
}

impl core::fmt::Debug for NonceSecrets {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "NonceSecrets({} secrets, step {} s)", self.secrets.len(), self.step)
    }
}

impl NonceSecrets {
    /// Builds from base64url secrets (the configuration format shared by the gateway and the
    /// authorization server); the first issues, all verify.
    ///
    /// # Errors
    /// [`Error::Config`] naming `field` (e.g. `dpop.nonce.secrets[1]`) if a secret is not base64url,
    /// shorter than 32 bytes, the list is empty, or the step is 0.
    pub fn from_config(secrets: &[&str], step_seconds: u64, field: &str) -> Result<Self> {
        if secrets.is_empty() {
            return Err(Error::Config {
                field: field.into(),
                reason: "at least one secret is required".into(),
            });
        }
        if step_seconds == 0 {
            return Err(Error::Config {
                field: field.into(),
                reason: "the step must be at least 1 second".into(),
            });
        }
        let mut out = Vec::with_capacity(secrets.len());
        for (i, s) in secrets.iter().enumerate() {
            let field = alloc::format!("{field}[{i}]");
            let raw = b64::decode(s).map_err(|_| Error::Config {
                field: field.clone(),
                reason: "not base64url without padding".into(),
            })?;
            if raw.len() < MIN_SECRET_LEN {
                return Err(Error::Config {
                    field,
                    reason: alloc::format!("{} bytes; at least {MIN_SECRET_LEN} are required", raw.len()),
                });
            }
            out.push(raw);
        }
        Ok(NonceSecrets {
            secrets: out,
            step: step_seconds,
        })
    }

    /// The step length in seconds.
    pub fn step_seconds(&self) -> u64 {
        self.step
    }

    fn mac(secret: &[u8], step: u64) -> [u8; MAC_LEN] {
        let mut out = [0u8; MAC_LEN];
        if let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret) {
            mac.update(LABEL);
            mac.update(&step.to_be_bytes());
            let full = mac.finalize().into_bytes();
            for (o, b) in out.iter_mut().zip(full.iter()) {
                *o = *b;
            }
        }
        out
    }

    /// The nonce for `now` (Unix seconds).
    pub fn issue(&self, now: u64) -> String {
        let step = now / self.step;
        let mut raw = [0u8; 8 + MAC_LEN];
        let (s, m) = raw.split_at_mut(8);
        s.copy_from_slice(&step.to_be_bytes());
        if let Some(secret) = self.secrets.first() {
            m.copy_from_slice(&Self::mac(secret, step));
        }
        b64::encode(&raw)
    }

    /// Checks a nonce presented in a proof at `now`.
    ///
    /// # Errors
    /// [`Error::NonceInvalid`] if it is malformed, from neither the current nor the previous step,
    /// or made with a secret not in the list.
    pub fn check(&self, nonce: &str, now: u64) -> Result<NonceAge> {
        let raw = b64::decode(nonce).map_err(|_| Error::NonceInvalid)?;
        let (Some(step), Some(mac)) = (raw.get(..8), raw.get(8..)) else {
            return Err(Error::NonceInvalid);
        };
        if mac.len() != MAC_LEN {
            return Err(Error::NonceInvalid);
        }
        let mut s = [0u8; 8];
        s.copy_from_slice(step);
        let step = u64::from_be_bytes(s);
        let current = now / self.step;
        let age = if step == current {
            NonceAge::Current
        } else if current.checked_sub(1) == Some(step) {
            NonceAge::Previous
        } else {
            return Err(Error::NonceInvalid);
        };
        let ok = self.secrets.iter().any(|secret| {
            let expected = Self::mac(secret, step);
            subtle::ConstantTimeEq::ct_eq(&expected[..], mac).into()
        });
        if ok { Ok(age) } else { Err(Error::NonceInvalid) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "c2VjcmV0LWEtc2VjcmV0LWEtc2VjcmV0LWEtc2VjcmV0LWE";
    const B: &str = "c2VjcmV0LWItc2VjcmV0LWItc2VjcmV0LWItc2VjcmV0LWI";

    #[test]
    fn another_instance_with_the_same_secret_accepts_the_nonce() {
        let gw1 = NonceSecrets::from_config(&[A], 60, "n").unwrap();
        let gw2 = NonceSecrets::from_config(&[A], 60, "n").unwrap();
        let nonce = gw1.issue(1_000_000);
        assert_eq!(gw2.check(&nonce, 1_000_000), Ok(NonceAge::Current));
        assert_eq!(gw2.check(&nonce, 1_000_000 + 60), Ok(NonceAge::Previous));
        assert_eq!(gw2.check(&nonce, 1_000_000 + 120), Err(Error::NonceInvalid));
        // a nonce from the future step is not accepted either
        assert_eq!(
            gw2.check(&gw1.issue(1_000_000 + 60), 1_000_000),
            Err(Error::NonceInvalid)
        );
    }

    #[test]
    fn a_different_secret_or_a_forged_nonce_is_refused() {
        let a = NonceSecrets::from_config(&[A], 60, "n").unwrap();
        let b = NonceSecrets::from_config(&[B], 60, "n").unwrap();
        assert_eq!(b.check(&a.issue(5000), 5000), Err(Error::NonceInvalid));
        let mut forged = b64::decode(&a.issue(5000)).unwrap();
        *forged.last_mut().unwrap() ^= 1;
        assert_eq!(a.check(&b64::encode(&forged), 5000), Err(Error::NonceInvalid));
        for junk in ["", "x", "AAAA", "not base64!"] {
            assert_eq!(a.check(junk, 5000), Err(Error::NonceInvalid));
        }
    }

    #[test]
    fn rotation_new_secret_issues_old_still_verifies() {
        let old = NonceSecrets::from_config(&[A], 60, "n").unwrap();
        let rotating = NonceSecrets::from_config(&[B, A], 60, "n").unwrap();
        let new_only = NonceSecrets::from_config(&[B], 60, "n").unwrap();
        assert!(rotating.check(&old.issue(9000), 9000).is_ok());
        assert!(new_only.check(&rotating.issue(9000), 9000).is_ok());
        assert_ne!(old.issue(9000), rotating.issue(9000));
    }

    #[test]
    fn nonces_change_every_step() {
        let a = NonceSecrets::from_config(&[A], 60, "n").unwrap();
        assert_eq!(a.issue(120), a.issue(179));
        assert_ne!(a.issue(179), a.issue(180));
    }

    #[test]
    fn bad_configuration_names_the_field() {
        let e = NonceSecrets::from_config(&[A, "c2hvcnQ"], 60, "dpop.nonce.secrets").unwrap_err();
        assert!(
            matches!(e, Error::Config { ref field, .. } if field == "dpop.nonce.secrets[1]"),
            "{e}"
        );
        assert!(NonceSecrets::from_config(&[], 60, "f").is_err());
        assert!(NonceSecrets::from_config(&[A], 0, "f").is_err());
        assert!(NonceSecrets::from_config(&["c2VjcmV0LWEtc2VjcmV0LWEtc2VjcmV0LWEtc2VjcmV0LWE="], 60, "f").is_err());
    }
}
