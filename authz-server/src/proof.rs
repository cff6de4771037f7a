//! DPoP proofs at this server's endpoints (PAR, token), verified with keybound-core.
//!
//! The stateless checks are core's [`verify_proof`] (RFC 9449 §4.3 order) with `htu` the
//! endpoint's URL under the issuer and `htm` `POST`; with `dpop.nonce = "required"`, a proof
//! without a valid nonce gets `400 use_dpop_nonce` and a `DPoP-Nonce` header (RFC 9449 §8). The
//! `jti` replay check is separate ([`record`]) so the endpoint can do it last.

use crate::crypto::Ring;
use axum::http::HeaderMap;
use keybound_core::dpop::{NonceCheck, ProofPolicy, ProofTarget, VerifiedProof, verify_proof};
use keybound_core::htu::Htu;
use keybound_core::nonce::NonceAge;
use keybound_core::request::single_dpop_header;

use crate::error::{Code, OAuthError};
use crate::state::App;

/// A verified proof, and the nonce to send back if the proof's was from the previous step.
#[derive(Debug)]
pub struct Proof {
    /// The verified proof.
    pub proof: VerifiedProof,
    /// A fresh nonce for the `DPoP-Nonce` response header, if one should be sent.
    pub next_nonce: Option<String>,
}

/// The error for a failed proof: 400 with the core's code, and a fresh nonce for `use_dpop_nonce`.
pub fn proof_error(app: &App, e: &keybound_core::Error, now: u64) -> OAuthError {
    let mut err = OAuthError::from_core(e);
    if err.code == Code::UseDpopNonce {
        err.dpop_nonce = app.config.dpop.nonce.as_ref().map(|n| n.issue(now));
    }
    err
}

/// Verifies the `DPoP` header of a POST to `path`, if there is one.
///
/// # Errors
/// `invalid_dpop_proof`, `use_dpop_nonce` (with a nonce) or `invalid_request` (two headers).
pub fn check(app: &App, headers: &HeaderMap, path: &str, now: u64) -> Result<Option<Proof>, OAuthError> {
    let values: Vec<&str> = headers
        .get_all("dpop")
        .iter()
        .map(|v| v.to_str())
        .collect::<Result<_, _>>()
        .map_err(|_| OAuthError::new(Code::InvalidDpopProof, "DPoP header is not ASCII"))?;
    let Some(jwt) = single_dpop_header(&values).map_err(|e| proof_error(app, &e, now))? else {
        return Ok(None);
    };
    let htu = Htu::parse(&app.config.url(path)).map_err(|e| OAuthError::server(e.reason()))?;
    let policy = ProofPolicy {
        algs: app.config.dpop.algs,
        max_age: app.config.dpop.max_age,
        ..ProofPolicy::default()
    };
    let nonce = match &app.config.dpop.nonce {
        Some(n) => NonceCheck::Required(n),
        None => NonceCheck::Off,
    };
    let target = ProofTarget {
        method: "POST",
        htu: &htu,
        access_token: None,
    };
    let proof = verify_proof(jwt, &target, &policy, nonce, now, &Ring).map_err(|e| proof_error(app, &e, now))?;
    let next_nonce = match (proof.nonce_age(), &app.config.dpop.nonce) {
        (Some(NonceAge::Previous), Some(n)) => Some(n.issue(now)),
        _ => None,
    };
    Ok(Some(Proof { proof, next_nonce }))
}

/// Records the proof's `jti` (replay check), the last step before the endpoint changes state.
///
/// # Errors
/// `invalid_dpop_proof` for a replayed proof; `server_error` on storage failure.
pub async fn record(app: &App, proof: &Proof, now: u64) -> Result<(), OAuthError> {
    if app
        .store
        .remember_once(&proof.proof.replay_key(), proof.proof.replay_expires_at(), now)
        .await?
    {
        Ok(())
    } else {
        Err(OAuthError::new(Code::InvalidDpopProof, "proof jti replayed"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;
    use crate::paths;
    use crate::test_support;
    use axum::http::HeaderValue;
    use keybound_core::dpop::{NewProof, create_proof};
    use keybound_core::jws::P256Signer;

    fn headers(proof: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("dpop", HeaderValue::from_str(proof).unwrap());
        h
    }

    /// A proof whose `iat` is exactly `max_age` old is still acceptable (RFC 9449 §4.3 step 10:
    /// the window is inclusive), so its `jti` record must be live through that very second: the
    /// same proof presented again in that second is a replay.
    #[tokio::test]
    async fn a_proof_at_the_edge_of_max_age_is_accepted_once() {
        let app = test_support::app().await;
        let now = 1_800_000_000;
        let key = P256Signer::from_bytes(&[0x21; 32]).unwrap();
        let jwt = create_proof(
            &key,
            &NewProof {
                htm: "POST",
                htu: &app.config.url(paths::TOKEN),
                iat: now - app.config.dpop.max_age,
                jti: "edge-of-the-window",
                access_token: None,
                nonce: None,
            },
        )
        .unwrap();
        let first = check(&app, &headers(&jwt), paths::TOKEN, now).unwrap().unwrap();
        record(&app, &first, now).await.unwrap();
        // A purge in between must not drop a live record.
        app.store.purge_expired(now).await.unwrap();
        let again = check(&app, &headers(&jwt), paths::TOKEN, now).unwrap().unwrap();
        let err = record(&app, &again, now).await.unwrap_err();
        assert_eq!(
            (err.code, err.reason.as_str()),
            (crate::error::Code::InvalidDpopProof, "proof jti replayed")
        );
        // One second later the proof itself is out of its window.
        let err = check(&app, &headers(&jwt), paths::TOKEN, now + 1).unwrap_err();
        assert_eq!(err.code, crate::error::Code::InvalidDpopProof);
    }
}
