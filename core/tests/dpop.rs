//! DPoP proofs: the RFC 9449 examples, every rejection of the FAPI 2.0
//! `fapi2-security-profile-final-dpop-negative-tests` module, and the must-pass cases.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test helpers fail the test on bad fixtures"
)]

mod common;

use common::*;
use std::cell::RefCell;

use keybound_core::dpop::{self, NewProof, NonceCheck, ProofMemo, ProofPolicy, ProofTarget, verify_proof_with};
use keybound_core::jws::Verifier;
use keybound_core::jws::{Alg, AlgSet, RustCrypto, Signer};
use keybound_core::nonce::{NonceAge, NonceSecrets};
use keybound_core::{Error, ErrorCode, Part};
use serde_json::json;

const RFC_TOKEN_PROOF: &str = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ.2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg";
const RFC_RESOURCE_PROOF: &str = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiJlMWozVl9iS2ljOC1MQUVCIiwiaHRtIjoiR0VUIiwiaHR1IjoiaHR0cHM6Ly9yZXNvdXJjZS5leGFtcGxlLm9yZy9wcm90ZWN0ZWRyZXNvdXJjZSIsImlhdCI6MTU2MjI2MjYxOCwiYXRoIjoiZlVIeU8ycjJaM0RaNTNFc05yV0JiMHhXWG9hTnk1OUlpS0NBcWtzbVFFbyJ9.2oW9RP35yRqzhrtNP86L-Ey71EOptxRimPPToA1plemAgR6pxHF8y6-yqyVnmcw6Fy1dqd-jfxSYoMxhAJpLjA";
const RFC_ACCESS_TOKEN: &str = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU";
/// RFC 9449 §6.1: the `cnf.jkt` of the example key.
const RFC_JKT: &str = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";

thread_local! {
    /// One memo for everything a test verifies, so later proofs meet headers and `ath` values
    /// that earlier ones (good or bad) left in it.
    static MEMO: RefCell<ProofMemo> = RefCell::new(ProofMemo::new(64));
}

/// `verify_proof` three ways: without a memo, with an empty one, and with the test's shared
/// memo. They must agree on every proof, accepted or refused (the memo only saves work).
fn verify_proof_all_ways(
    proof: &str,
    target: &ProofTarget<'_>,
    policy: &ProofPolicy,
    nonce: NonceCheck<'_>,
    now: u64,
    verifier: &dyn Verifier,
) -> Result<dpop::VerifiedProof, Error> {
    let plain = dpop::verify_proof(proof, target, policy, nonce, now, verifier);
    let mut cold = ProofMemo::new(64);
    let first = verify_proof_with(proof, target, policy, nonce, now, verifier, Some(&mut cold));
    assert_eq!(first, plain, "empty memo: {proof}");
    let again = verify_proof_with(proof, target, policy, nonce, now, verifier, Some(&mut cold));
    assert_eq!(
        again, plain,
        "the same proof again with what it left in the memo: {proof}"
    );
    let warm = MEMO.with(|m| verify_proof_with(proof, target, policy, nonce, now, verifier, Some(&mut m.borrow_mut())));
    assert_eq!(warm, plain, "shared memo: {proof}");
    plain
}

fn verify_at(
    proof: &str,
    method: &str,
    url: &str,
    token: Option<&str>,
    now: u64,
) -> Result<dpop::VerifiedProof, Error> {
    let htu = htu(url);
    let target = ProofTarget {
        method,
        htu: &htu,
        access_token: token,
    };
    verify_proof_all_ways(
        proof,
        &target,
        &ProofPolicy::default(),
        NonceCheck::Off,
        now,
        &RustCrypto,
    )
}

fn verify(proof: &str, token: Option<&str>) -> Result<dpop::VerifiedProof, Error> {
    verify_at(proof, "GET", URL, token, NOW)
}

#[test]
fn rfc9449_section_4_1_example_proof_verifies() {
    let p = verify_at(
        RFC_TOKEN_PROOF,
        "POST",
        "https://server.example.com/token",
        None,
        1_562_262_620,
    )
    .unwrap();
    assert_eq!(p.jkt().to_string(), RFC_JKT);
    assert_eq!(p.jti(), "-BwC3ESc6acc2lTc");
    assert_eq!(p.iat(), 1_562_262_616);
    assert_eq!(p.alg(), Alg::Es256);
    // Acceptable through iat + max_age, so recorded until one second later.
    assert_eq!(p.replay_expires_at(), 1_562_262_616 + 300 + 1);
    // The same proof a day later is outside the window.
    assert_eq!(
        verify_at(
            RFC_TOKEN_PROOF,
            "POST",
            "https://server.example.com/token",
            None,
            1_562_349_016
        ),
        Err(Error::IatOutOfWindow)
    );
}

#[test]
fn rfc9449_section_7_1_resource_proof_and_ath() {
    assert_eq!(
        dpop::access_token_hash(RFC_ACCESS_TOKEN),
        "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
    );
    let url = "https://resource.example.org/protectedresource";
    let p = verify_at(RFC_RESOURCE_PROOF, "GET", url, Some(RFC_ACCESS_TOKEN), 1_562_262_620).unwrap();
    assert_eq!(p.jkt().to_string(), RFC_JKT);
    assert_eq!(
        verify_at(RFC_RESOURCE_PROOF, "GET", url, Some("another token"), 1_562_262_620),
        Err(Error::AthMismatch)
    );
}

#[test]
fn created_proofs_verify_for_every_software_key() {
    let token = "token-abc";
    for signer in [&p256(1) as &dyn Signer, &ed25519(2)] {
        let p = verify(&proof(signer, "GET", URL, Some(token), "j1"), Some(token)).unwrap();
        assert_eq!(p.jkt(), &signer.public_key().thumbprint());
        assert_eq!(p.alg(), signer.alg());
    }
}

/// Every REJECTED case of the conformance module, each with the error and the RFC code.
#[test]
fn fapi2_dpop_negative_tests_are_rejected() {
    let key = p256(1);
    let token = dpop_token(&key);
    let header = proof_header(&key);
    let claims = proof_claims(&token);
    let without = |v: &serde_json::Value, member: &str| {
        let mut v = v.clone();
        v.as_object_mut().unwrap().remove(member);
        v
    };
    let with = |v: &serde_json::Value, member: &str, value: serde_json::Value| {
        let mut v = v.clone();
        v[member] = value;
        v
    };
    let good = forge(&key, &header, &claims);
    let (h, p, _) = {
        let mut it = good.split('.');
        (it.next().unwrap(), it.next().unwrap(), it.next().unwrap())
    };
    let other_sig = forge(&key, &header, &with(&claims, "jti", json!("other")))
        .rsplit('.')
        .next()
        .unwrap()
        .to_owned();
    let mut private_jwk = public_jwk(&key);
    private_jwk["d"] = json!("AQAB");
    let other = p256(9);

    let cases: Vec<(&str, String, Error)> = vec![
        (
            "malformed JWT",
            "not.a.jwt".into(),
            Error::Malformed {
                part: Part::Proof,
                what: "header base64url",
            },
        ),
        (
            "missing typ",
            forge(&key, &without(&header, "typ"), &claims),
            Error::WrongType { part: Part::Proof },
        ),
        (
            "missing alg",
            forge(&key, &without(&header, "alg"), &claims),
            Error::AlgNotAllowed { part: Part::Proof },
        ),
        (
            "missing jwk",
            forge(&key, &without(&header, "jwk"), &claims),
            Error::MissingClaim {
                part: Part::Proof,
                claim: "jwk",
            },
        ),
        (
            "missing jti",
            forge(&key, &header, &without(&claims, "jti")),
            Error::MissingClaim {
                part: Part::Proof,
                claim: "jti",
            },
        ),
        (
            "missing htm",
            forge(&key, &header, &without(&claims, "htm")),
            Error::MissingClaim {
                part: Part::Proof,
                claim: "htm",
            },
        ),
        (
            "missing htu",
            forge(&key, &header, &without(&claims, "htu")),
            Error::MissingClaim {
                part: Part::Proof,
                claim: "htu",
            },
        ),
        (
            "missing iat",
            forge(&key, &header, &without(&claims, "iat")),
            Error::MissingClaim {
                part: Part::Proof,
                claim: "iat",
            },
        ),
        (
            "missing ath",
            forge(&key, &header, &without(&claims, "ath")),
            Error::MissingClaim {
                part: Part::Proof,
                claim: "ath",
            },
        ),
        (
            "typ JWT",
            forge(&key, &with(&header, "typ", json!("JWT")), &claims),
            Error::WrongType { part: Part::Proof },
        ),
        (
            "alg RS256",
            forge(&key, &with(&header, "alg", json!("RS256")), &claims),
            Error::AlgNotAllowed { part: Part::Proof },
        ),
        (
            "signature stripped",
            format!("{h}.{p}."),
            Error::BadSignature { part: Part::Proof },
        ),
        (
            "alg none header",
            forge(&key, &with(&header, "alg", json!("none")), &claims),
            Error::AlgNotAllowed { part: Part::Proof },
        ),
        (
            "bad signature",
            format!("{h}.{p}.{other_sig}"),
            Error::BadSignature { part: Part::Proof },
        ),
        (
            "private key in jwk",
            forge(&key, &with(&header, "jwk", private_jwk), &claims),
            Error::PrivateKeyInJwk { part: Part::Proof },
        ),
        (
            "jwk of another key",
            forge(&key, &with(&header, "jwk", public_jwk(&other)), &claims),
            Error::BadSignature { part: Part::Proof },
        ),
        (
            "wrong htm",
            forge(&key, &header, &with(&claims, "htm", json!("POST"))),
            Error::HtmMismatch,
        ),
        (
            "lower-case htm",
            forge(&key, &header, &with(&claims, "htm", json!("get"))),
            Error::HtmMismatch,
        ),
        (
            "htu of another URL",
            forge(
                &key,
                &header,
                &with(&claims, "htu", json!("https://rs.example.com/api/other")),
            ),
            Error::HtuMismatch,
        ),
        (
            "htu of another host",
            forge(
                &key,
                &header,
                &with(&claims, "htu", json!("https://evil.example.com/api/accounts")),
            ),
            Error::HtuMismatch,
        ),
        (
            "htu with another port",
            forge(
                &key,
                &header,
                &with(&claims, "htu", json!("https://rs.example.com:8443/api/accounts")),
            ),
            Error::HtuMismatch,
        ),
        (
            "htu over http",
            forge(
                &key,
                &header,
                &with(&claims, "htu", json!("http://rs.example.com/api/accounts")),
            ),
            Error::HtuMismatch,
        ),
        (
            "relative htu",
            forge(&key, &header, &with(&claims, "htu", json!("/api/accounts"))),
            Error::InvalidHtu,
        ),
        (
            "iat an hour ago",
            forge(&key, &header, &with(&claims, "iat", json!(NOW - 3600))),
            Error::IatOutOfWindow,
        ),
        (
            "iat in an hour",
            forge(&key, &header, &with(&claims, "iat", json!(NOW + 3600))),
            Error::IatOutOfWindow,
        ),
        (
            "iat as a string",
            forge(&key, &header, &with(&claims, "iat", json!("now"))),
            Error::Malformed {
                part: Part::Proof,
                what: "claims",
            },
        ),
        (
            "empty jti",
            forge(&key, &header, &with(&claims, "jti", json!(""))),
            Error::MissingClaim {
                part: Part::Proof,
                claim: "jti",
            },
        ),
        (
            "jti too long",
            forge(&key, &header, &with(&claims, "jti", json!("j".repeat(257)))),
            Error::MissingClaim {
                part: Part::Proof,
                claim: "jti",
            },
        ),
        (
            "wrong ath",
            forge(
                &key,
                &header,
                &with(&claims, "ath", json!(dpop::access_token_hash("other"))),
            ),
            Error::AthMismatch,
        ),
        (
            "claims not an object",
            forge(&key, &header, &json!(["jti"])),
            Error::Malformed {
                part: Part::Proof,
                what: "claims",
            },
        ),
    ];
    for (name, proof, expected) in cases {
        let err = verify(&proof, Some(&token)).expect_err(name);
        assert_eq!(err, expected, "{name}");
        assert_eq!(err.code(), Some(ErrorCode::InvalidDpopProof), "{name}");
        assert_eq!(err.status(), 401, "{name}");
        assert!(err.reason().starts_with("proof_"), "{name}: {}", err.reason());
    }
    // And the good proof does verify, so each case above failed for its own reason.
    verify(&good, Some(&token)).unwrap();
}

#[test]
fn reused_jti_gives_the_same_replay_key_and_other_keys_or_jtis_do_not() {
    let a = p256(1);
    let b = p256(2);
    let t = "tok";
    let first = verify(&proof(&a, "GET", URL, Some(t), "jti-1"), Some(t)).unwrap();
    // A new proof, same key, same jti (a replayed jti with a fresh signature): same replay key.
    let again = verify(
        &forge(&a, &proof_header(&a), &{
            let mut c = proof_claims(t);
            c["jti"] = json!("jti-1");
            c
        }),
        Some(t),
    )
    .unwrap();
    assert_eq!(first.replay_key(), again.replay_key());
    let other_jti = verify(&proof(&a, "GET", URL, Some(t), "jti-2"), Some(t)).unwrap();
    let other_key = verify(&proof(&b, "GET", URL, Some(t), "jti-1"), Some(t)).unwrap();
    assert_ne!(first.replay_key(), other_jti.replay_key());
    assert_ne!(first.replay_key(), other_key.replay_key());

    // An adapter's store: insert-if-absent rejects the replay.
    let mut seen = std::collections::HashMap::new();
    let mut accept = |p: &dpop::VerifiedProof| -> Result<(), Error> {
        match seen.insert(p.replay_key(), p.replay_expires_at()) {
            None => Ok(()),
            Some(_) => Err(Error::ProofReplayed),
        }
    };
    accept(&first).unwrap();
    assert_eq!(accept(&again), Err(Error::ProofReplayed));
    assert_eq!(Error::ProofReplayed.code(), Some(ErrorCode::InvalidDpopProof));
}

/// The must-PASS cases of the conformance module.
#[test]
fn fapi2_dpop_must_pass_cases() {
    let key = p256(1);
    let token = dpop_token(&key);
    let header = proof_header(&key);
    let with = |member: &str, value: serde_json::Value| {
        let mut v = proof_claims(&token);
        v[member] = value;
        v
    };
    let cases = [
        ("nbf and exp and other claims", {
            let mut c = proof_claims(&token);
            c["nbf"] = json!(NOW + 100_000);
            c["exp"] = json!(NOW - 100_000);
            c["foo"] = json!({"bar": [1, 2]});
            c
        }),
        (
            "htu with query and fragment",
            with("htu", json!(format!("{URL}?page=2#top"))),
        ),
        (
            "upper-case scheme and host, default port",
            with("htu", json!("HTTPS://RS.Example.COM:443/api/accounts")),
        ),
        (
            "dot segments and percent-encoded unreserved",
            with("htu", json!("https://rs.example.com/api/./x/../%61ccounts")),
        ),
        ("iat 10 seconds in the future", with("iat", json!(NOW + 10))),
        ("iat 10 seconds in the past", with("iat", json!(NOW - 10))),
        ("iat 300 seconds in the past", with("iat", json!(NOW - 300))),
        ("fractional iat", with("iat", json!(NOW as f64 + 0.5))),
    ];
    for (name, claims) in cases {
        verify(&forge(&key, &header, &claims), Some(&token)).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
    // typ is a media type: case-insensitive, `application/` prefix optional (RFC 7515 §4.1.9).
    for typ in ["application/dpop+jwt", "DPoP+JWT"] {
        let mut h = header.clone();
        h["typ"] = json!(typ);
        verify(&forge(&key, &h, &proof_claims(&token)), Some(&token)).unwrap_or_else(|e| panic!("typ {typ}: {e:?}"));
    }
    // The request carries a query the htu lacks.
    let p = forge(&key, &header, &proof_claims(&token));
    verify_at(&p, "GET", &format!("{URL}?page=2"), Some(&token), NOW).unwrap();
    // Just outside the window on either side.
    assert_eq!(
        verify(&forge(&key, &header, &with("iat", json!(NOW + 11))), Some(&token)),
        Err(Error::IatOutOfWindow)
    );
    assert_eq!(
        verify(&forge(&key, &header, &with("iat", json!(NOW - 301))), Some(&token)),
        Err(Error::IatOutOfWindow)
    );
}

#[test]
fn the_window_and_the_allowlist_come_from_the_policy() {
    let key = ed25519(3);
    let p = proof(&key, "GET", URL, None, "j");
    let u = htu(URL);
    let target = ProofTarget {
        method: "GET",
        htu: &u,
        access_token: None,
    };
    let es_only = ProofPolicy {
        algs: AlgSet::EMPTY.with(Alg::Es256),
        ..ProofPolicy::default()
    };
    assert_eq!(
        verify_proof_all_ways(&p, &target, &es_only, NonceCheck::Off, NOW, &RustCrypto),
        Err(Error::AlgNotAllowed { part: Part::Proof })
    );
    let short = ProofPolicy {
        max_age: 5,
        ..ProofPolicy::default()
    };
    assert_eq!(
        verify_proof_all_ways(&p, &target, &short, NonceCheck::Off, NOW + 6, &RustCrypto),
        Err(Error::IatOutOfWindow)
    );
    assert!(verify_proof_all_ways(&p, &target, &short, NonceCheck::Off, NOW + 5, &RustCrypto).is_ok());
}

#[test]
fn a_proof_without_a_token_needs_no_ath_but_a_token_needs_one() {
    let key = p256(4);
    let p = proof(&key, "GET", URL, None, "j");
    verify(&p, None).unwrap();
    assert_eq!(
        verify(&p, Some("tok")),
        Err(Error::MissingClaim {
            part: Part::Proof,
            claim: "ath"
        })
    );
}

#[test]
fn nonces_required_missing_stale_foreign_and_fresh() {
    const SECRET: &str = "bm9uY2Utc2VjcmV0LWZvci10ZXN0cy1ub25jZS1zZWNyZXQ";
    let secrets = NonceSecrets::from_config(&[SECRET], 60, "dpop.nonce.secrets").unwrap();
    let other_gateway = NonceSecrets::from_config(&[SECRET], 60, "dpop.nonce.secrets").unwrap();
    let foreign = NonceSecrets::from_config(&["b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldC1vdGhlci1zZWNyZXQ"], 60, "x").unwrap();
    let key = p256(5);
    let u = htu(URL);
    let target = ProofTarget {
        method: "GET",
        htu: &u,
        access_token: None,
    };
    let check = |nonce: Option<&str>, now: u64| {
        let p = dpop::create_proof(
            &key,
            &NewProof {
                htm: "GET",
                htu: URL,
                iat: now,
                jti: "n",
                access_token: None,
                nonce,
            },
        )
        .unwrap();
        verify_proof_all_ways(
            &p,
            &target,
            &ProofPolicy::default(),
            NonceCheck::Required(&secrets),
            now,
            &RustCrypto,
        )
    };
    let missing = check(None, NOW).unwrap_err();
    assert_eq!(missing, Error::NonceRequired);
    assert_eq!(missing.code(), Some(ErrorCode::UseDpopNonce));
    let fresh = other_gateway.issue(NOW);
    assert_eq!(check(Some(&fresh), NOW).unwrap().nonce_age(), Some(NonceAge::Current));
    assert_eq!(
        check(Some(&fresh), NOW + 60).unwrap().nonce_age(),
        Some(NonceAge::Previous)
    );
    let stale = check(Some(&fresh), NOW + 180).unwrap_err();
    assert_eq!(stale, Error::NonceInvalid);
    assert_eq!(stale.code(), Some(ErrorCode::UseDpopNonce));
    assert_eq!(check(Some(&foreign.issue(NOW)), NOW), Err(Error::NonceInvalid));
    // With nonces off, a nonce in the proof is ignored.
    let p = dpop::create_proof(
        &key,
        &NewProof {
            htm: "GET",
            htu: URL,
            iat: NOW,
            jti: "n",
            access_token: None,
            nonce: Some("x"),
        },
    )
    .unwrap();
    assert!(verify_proof_all_ways(&p, &target, &ProofPolicy::default(), NonceCheck::Off, NOW, &RustCrypto).is_ok());
}

#[test]
fn created_proofs_have_the_rfc_shape() {
    let key = p256(6);
    let p = dpop::create_proof(
        &key,
        &NewProof {
            htm: "POST",
            htu: "https://as.example.com/token?x=1#f",
            iat: NOW,
            jti: "abc",
            access_token: Some("t"),
            nonce: Some("n1"),
        },
    )
    .unwrap();
    let mut parts = p.split('.');
    let header: serde_json::Value =
        serde_json::from_slice(&keybound_core::b64::decode(parts.next().unwrap()).unwrap()).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&keybound_core::b64::decode(parts.next().unwrap()).unwrap()).unwrap();
    assert_eq!(
        header,
        json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(&key)})
    );
    assert_eq!(
        claims,
        json!({"jti": "abc", "htm": "POST", "htu": "https://as.example.com/token", "iat": NOW, "ath": dpop::access_token_hash("t"), "nonce": "n1"})
    );
    assert!(header["jwk"].get("d").is_none());
    assert_eq!(
        dpop::create_proof(
            &key,
            &NewProof {
                htm: "GET",
                htu: "/relative",
                iat: NOW,
                jti: "a",
                access_token: None,
                nonce: None
            }
        ),
        Err(Error::InvalidHtu)
    );
}

fn with_memo(
    memo: &mut ProofMemo,
    proof: &str,
    token: &str,
    policy: &ProofPolicy,
) -> Result<dpop::VerifiedProof, Error> {
    let u = htu(URL);
    let target = ProofTarget {
        method: "GET",
        htu: &u,
        access_token: Some(token),
    };
    verify_proof_with(proof, &target, policy, NonceCheck::Off, NOW, &RustCrypto, Some(memo))
}

#[test]
fn the_memo_remembers_headers_and_aths_but_decides_nothing() {
    let key = p256(1);
    let token = dpop_token(&key);
    let policy = ProofPolicy::default();
    let mut memo = ProofMemo::new(8);
    let p1 = proof(&key, "GET", URL, Some(&token), "j1");
    with_memo(&mut memo, &p1, &token, &policy).unwrap();
    assert_eq!(memo.len(), (1, 1));
    // A header that passed is still held to the caller's allowlist.
    let ps_only = ProofPolicy {
        algs: AlgSet::EMPTY.with(Alg::Ps256),
        ..ProofPolicy::default()
    };
    let p2 = proof(&key, "GET", URL, Some(&token), "j2");
    assert_eq!(
        with_memo(&mut memo, &p2, &token, &ps_only),
        Err(Error::AlgNotAllowed { part: Part::Proof })
    );
    // A remembered header does not make a bad signature good.
    let (signed, _) = p2.rsplit_once('.').unwrap();
    let other_sig = p1.rsplit('.').next().unwrap();
    assert_eq!(
        with_memo(&mut memo, &format!("{signed}.{other_sig}"), &token, &policy),
        Err(Error::BadSignature { part: Part::Proof })
    );
    // A remembered `ath` matches only the token it was computed from: a proof made for this
    // token, sent with another, is refused.
    let other_token = dpop_token(&p256(2));
    assert_eq!(
        with_memo(&mut memo, &p2, &other_token, &policy),
        Err(Error::AthMismatch)
    );
    with_memo(&mut memo, &p2, &token, &policy).unwrap();
    // Bounded: more distinct keys than entries never grow it past the bound.
    for seed in 10..30 {
        let k = p256(seed);
        let t = dpop_token(&k);
        with_memo(&mut memo, &proof(&k, "GET", URL, Some(&t), "j"), &t, &policy).unwrap();
        let (headers, aths) = memo.len();
        assert!(headers <= 8 && aths <= 8, "{headers} headers, {aths} aths");
    }
    // Zero entries: remembers nothing, decides the same.
    let mut none = ProofMemo::new(0);
    with_memo(&mut none, &p1, &token, &policy).unwrap();
    assert_eq!(none.len(), (0, 0));
}

/// An RSA proof header whose modulus has `bits` bits (top bit set, otherwise filler: parsing
/// only looks at the size and encoding) and exponent `e`, with a junk signature.
fn rsa_proof(bits: usize, e: &[u8]) -> String {
    let mut n = vec![0xA5u8; bits / 8];
    n[0] = 0xC3;
    let header = json!({"typ": "dpop+jwt", "alg": "PS256",
        "jwk": {"kty": "RSA", "n": keybound_core::b64::encode(&n), "e": keybound_core::b64::encode(e)}});
    let claims = json!({"jti": "rsa", "htm": "GET", "htu": URL, "iat": NOW});
    format!(
        "{}.{}.{}",
        keybound_core::b64::encode(header.to_string().as_bytes()),
        keybound_core::b64::encode(claims.to_string().as_bytes()),
        keybound_core::b64::encode(&vec![0x11u8; bits / 8])
    )
}

/// Issue 12, item 9: RSA proof keys are a CPU lever (an 8192-bit modulus with a 32-bit exponent
/// costs milliseconds per verification, before the token is looked at). A proof key must be
/// 2048 to 4096 bits with e = 65537; anything else is refused while parsing, before any
/// signature work.
#[test]
fn rsa_proof_keys_are_capped_at_4096_bits_and_e_65537() {
    for (bits, e) in [
        (8192, &[1u8, 0, 1][..]),
        (4104, &[1, 0, 1]),
        (2048, &[3]),
        (4096, &[0xff, 0xff, 0xff, 0xff]),
        (4096, &[1, 0, 0, 1]),
        (2040, &[1, 0, 1]),
    ] {
        let got = verify(&rsa_proof(bits, e), None);
        assert!(
            matches!(got, Err(Error::InvalidKey { part: Part::Proof, .. })),
            "{bits} bits, e = {e:?}: {got:?}"
        );
    }
    // Within the cap, the key is parsed and the (junk) signature is what fails.
    for bits in [2048, 3072, 4096] {
        assert_eq!(
            verify(&rsa_proof(bits, &[1, 0, 1]), None),
            Err(Error::BadSignature { part: Part::Proof }),
            "{bits} bits"
        );
    }
}
