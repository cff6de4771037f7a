//! Property tests: whatever is signed verifies; any single-byte change to a signed proof or
//! token makes it fail; normalisation is idempotent; base64url round-trips.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test helpers fail the test on bad fixtures"
)]

mod common;

use common::*;
use keybound_core::b64;
use keybound_core::dpop::{self, NewProof, NonceCheck, ProofPolicy, ProofTarget, verify_proof};
use keybound_core::htu::Htu;
use keybound_core::jws::{Ed25519Signer, P256Signer, RustCrypto, Signer, UnsignedJws};
use keybound_core::path::CanonicalPath;
use keybound_core::token::verify_jwt;
use proptest::prelude::*;
use serde_json::json;

fn signer(kind: bool, seed: [u8; 32]) -> Option<Box<dyn Signer>> {
    if kind {
        P256Signer::from_bytes(&seed)
            .ok()
            .map(|s| Box::new(s) as Box<dyn Signer>)
    } else {
        Some(Box::new(Ed25519Signer::from_seed(&seed)))
    }
}

fn method() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH"])
}

/// A proof's signing input as core built it with serde_json values (before it wrote the JSON
/// itself): `unsigned_proof` must give the same bytes.
fn signing_input_through_json_values(signer: &dyn Signer, p: &NewProof<'_>) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    header.insert("typ".into(), "dpop+jwt".into());
    header.insert(
        "jwk".into(),
        serde_json::from_str(&signer.public_key().to_json()).unwrap(),
    );
    let mut payload = serde_json::Map::new();
    payload.insert("jti".into(), p.jti.into());
    payload.insert("htm".into(), p.htm.into());
    payload.insert("htu".into(), p.htu.split(['?', '#']).next().unwrap().into());
    payload.insert("iat".into(), p.iat.into());
    if let Some(token) = p.access_token {
        payload.insert("ath".into(), dpop::access_token_hash(token).into());
    }
    if let Some(nonce) = p.nonce {
        payload.insert("nonce".into(), nonce.into());
    }
    let payload = serde_json::Value::Object(payload).to_string();
    UnsignedJws::new(signer.alg(), header, payload.as_bytes())
        .signing_input()
        .to_vec()
}

#[test]
fn proof_json_of_awkward_strings_is_what_serde_json_values_give() {
    let awkward = [
        " GET ",
        "a\"b\\c",
        "\u{0}\u{1f}\u{8}\u{c}\n\r\t",
        "/π/\u{7f}/\u{1F600}",
        "",
    ];
    for kind in [true, false] {
        let signer = signer(kind, [7; 32]).unwrap();
        for s in awkward {
            for (token, nonce) in [(None, None), (Some("tok.en"), Some(s))] {
                let p = NewProof {
                    htm: s,
                    htu: "https://rs.example.com/a?q#f",
                    iat: 1,
                    jti: s,
                    access_token: token,
                    nonce,
                };
                let ours = dpop::unsigned_proof(signer.public_key(), signer.alg(), &p).unwrap();
                let expected = signing_input_through_json_values(signer.as_ref(), &p);
                assert_eq!(ours.signing_input(), expected.as_slice(), "{s:?}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn proof_json_is_what_serde_json_values_give(
        kind in any::<bool>(),
        seed in any::<[u8; 32]>(),
        htm in any::<String>(),
        path in "(/[a-zA-Z0-9._~-]{0,12}){0,4}(\\?[a-z=&]{0,8})?",
        jti in any::<String>(),
        token in proptest::option::of("[a-zA-Z0-9._~+/-]{1,80}"),
        nonce in proptest::option::of(any::<String>()),
        iat in any::<u64>(),
    ) {
        let Some(signer) = signer(kind, seed) else { return Ok(()) };
        let url = format!("https://rs.example.com{path}");
        // The generator can make paths no htu may have ("/..": above the root); the property is
        // about the JSON, for the URLs a proof can be made for.
        prop_assume!(Htu::parse(&url).is_ok());
        let p = NewProof { htm: &htm, htu: &url, iat, jti: &jti, access_token: token.as_deref(), nonce: nonce.as_deref() };
        let ours = dpop::unsigned_proof(signer.public_key(), signer.alg(), &p).unwrap();
        let expected = signing_input_through_json_values(signer.as_ref(), &p);
        prop_assert_eq!(ours.signing_input(), expected.as_slice());
    }

    #[test]
    fn signed_proofs_verify_and_any_byte_change_fails(
        kind in any::<bool>(),
        seed in any::<[u8; 32]>(),
        htm in method(),
        path in "(/[a-zA-Z0-9._~-]{0,12}){0,4}",
        jti in "[a-zA-Z0-9_-]{1,64}",
        token in "[a-zA-Z0-9._~+/-]{1,80}",
        iat_offset in -300i64..=10,
        position in any::<prop::sample::Index>(),
        replacement in any::<u8>(),
    ) {
        let Some(signer) = signer(kind, seed) else { return Ok(()) };
        let url = format!("https://rs.example.com{path}");
        let iat = NOW.checked_add_signed(iat_offset).unwrap();
        let proof = dpop::create_proof(signer.as_ref(), &NewProof { htm, htu: &url, iat, jti: &jti, access_token: Some(&token), nonce: None }).unwrap();
        let htu = Htu::parse(&url).unwrap();
        let target = ProofTarget { method: htm, htu: &htu, access_token: Some(&token) };
        let verified = verify_proof(&proof, &target, &ProofPolicy::default(), NonceCheck::Off, NOW, &RustCrypto).unwrap();
        prop_assert_eq!(verified.jkt(), &signer.public_key().thumbprint());
        prop_assert_eq!(verified.jti(), jti.as_str());

        let mut bytes = proof.clone().into_bytes();
        let i = position.index(bytes.len());
        prop_assume!(bytes[i] != replacement);
        bytes[i] = replacement;
        if let Ok(mutated) = String::from_utf8(bytes) {
            prop_assert!(verify_proof(&mutated, &target, &ProofPolicy::default(), NonceCheck::Off, NOW, &RustCrypto).is_err());
        }
    }

    #[test]
    fn signed_tokens_verify_and_any_byte_change_fails(
        sub in "[a-z]{1,16}",
        scope in "[a-z:]{1,10}( [a-z:]{1,10}){0,3}",
        position in any::<prop::sample::Index>(),
        replacement in any::<u8>(),
    ) {
        let mut claims = token_claims(Some(json!({"jkt": p256(1).public_key().thumbprint().to_string()})));
        claims["sub"] = json!(sub);
        claims["scope"] = json!(scope);
        let t = token(&claims);
        let v = verify_jwt(&t, &issuer_jwks(), &policy(), NOW, &RustCrypto).unwrap();
        prop_assert_eq!(v.claims().sub.as_deref(), Some(sub.as_str()));

        let mut bytes = t.into_bytes();
        let i = position.index(bytes.len());
        prop_assume!(bytes[i] != replacement);
        bytes[i] = replacement;
        if let Ok(mutated) = String::from_utf8(bytes) {
            prop_assert!(verify_jwt(&mutated, &issuer_jwks(), &policy(), NOW, &RustCrypto).is_err());
        }
    }

    #[test]
    fn base64url_round_trips_and_is_canonical(data in prop::collection::vec(any::<u8>(), 0..100)) {
        let enc = b64::encode(&data);
        prop_assert_eq!(b64::decode(&enc).unwrap(), data);
        prop_assert!(!enc.contains(['=', '+', '/']));
    }

    #[test]
    fn htu_normalisation_is_idempotent(
        scheme in prop::sample::select(vec!["http", "https", "HTTP", "HttpS"]),
        host in "[a-zA-Z0-9-]{1,10}(\\.[a-zA-Z0-9-]{1,10}){0,2}",
        port in prop::option::of(0u16..),
        path in "(/([a-zA-Z0-9._~!$&'()*+,;=:@ -]|%[0-9a-fA-F]{2}){0,8}){0,4}",
        query in prop::option::of("[a-z=&]{0,10}"),
    ) {
        let mut url = format!("{scheme}://{host}");
        if let Some(p) = port { url.push_str(&format!(":{p}")); }
        url.push_str(&path);
        if let Some(q) = &query { url.push('?'); url.push_str(q); }
        // Htu refuses exactly the paths the gateway refuses (an encoded `/`, `..` above the root).
        let Ok(once) = Htu::parse(&url) else {
            prop_assert!(path.is_empty() || CanonicalPath::parse(&path).is_err(), "{}", url);
            return Ok(());
        };
        let twice = Htu::parse(once.as_str()).unwrap();
        prop_assert_eq!(&once, &twice);
        prop_assert!(once.as_str().starts_with("http"));
        prop_assert!(!once.as_str().contains('?'));
    }
}

proptest! {
    /// The canonical path is a fixed point, and it is the path of the `htu` built from the same
    /// request: rules and proofs see one path.
    #[test]
    fn the_canonical_path_is_idempotent_and_is_the_htu_path(
        path in "(/([a-zA-Z0-9._~!$&'()*+,;=:@ \\\\]|%[0-9a-fA-F]{2}|\\.\\.|\\.){0,6}){1,5}",
        query in prop::option::of("[a-z=&/.]{0,10}"),
    ) {
        let raw = match &query { Some(q) => format!("{path}?{q}"), None => path.clone() };
        match CanonicalPath::parse(&raw) {
            Ok(once) => {
                let twice = CanonicalPath::parse(once.as_str()).unwrap();
                prop_assert_eq!(&once, &twice);
                let htu = Htu::from_parts("https", "rs.example.com", &raw).unwrap();
                prop_assert_eq!(htu.as_str(), format!("https://rs.example.com{once}"));
            }
            Err(_) => prop_assert!(Htu::from_parts("https", "rs.example.com", &raw).is_err()),
        }
    }
}

/// Verifies `proof` for `GET URL` at `t` under `policy`.
fn accepted_at(proof: &str, policy: &ProofPolicy, t: u64) -> Option<dpop::VerifiedProof> {
    let target = ProofTarget {
        method: "GET",
        htu: &htu(URL),
        access_token: None,
    };
    verify_proof(proof, &target, policy, NonceCheck::Off, t, &RustCrypto).ok()
}

/// Issue 12, item 2: at `iat = now - max_age` a proof is still acceptable for that whole second,
/// so its replay record must still be live then (it was counted as gone, and the proof could be
/// replayed any number of times during that second).
#[test]
fn replay_record_outlives_the_last_second_of_the_window() {
    let policy = ProofPolicy::default();
    let key = ed25519(3);
    let p = dpop::create_proof(
        &key,
        &NewProof {
            htm: "GET",
            htu: URL,
            iat: NOW - policy.max_age,
            jti: "edge",
            access_token: None,
            nonce: None,
        },
    )
    .unwrap();
    let v = accepted_at(&p, &policy, NOW).expect("the proof is inside the window at NOW");
    assert!(
        dpop::replay_record_live(v.replay_expires_at(), NOW),
        "record expires at {} but the proof is accepted at {NOW}",
        v.replay_expires_at()
    );
    assert!(accepted_at(&p, &policy, NOW + 1).is_none());
    assert!(!dpop::replay_record_live(v.replay_expires_at(), NOW + 1));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A `jti` record outlives every instant at which its proof is still acceptable: whenever the
    /// proof verifies at `now` (when it is recorded) and again at any later `t`, the record made at
    /// `now` is live at `t`. And it is not kept for nothing: one second after the last acceptable
    /// instant it has expired.
    #[test]
    fn a_replay_record_lives_while_its_proof_is_acceptable(
        max_age in 1u64..=3600,
        leeway in 0u64..=300,
        iat_offset in -4000i64..=400,
        later in 0u64..=4000,
    ) {
        let policy = ProofPolicy { max_age, future_leeway: leeway, ..ProofPolicy::default() };
        let iat = NOW.checked_add_signed(iat_offset).unwrap();
        let key = ed25519(4);
        let p = dpop::create_proof(&key, &NewProof {
            htm: "GET", htu: URL, iat, jti: "j", access_token: None, nonce: None,
        }).unwrap();
        if let Some(v) = accepted_at(&p, &policy, NOW) {
            let exp = v.replay_expires_at();
            prop_assert!(dpop::replay_record_live(exp, NOW));
            let t = NOW + later;
            if accepted_at(&p, &policy, t).is_some() {
                prop_assert!(dpop::replay_record_live(exp, t), "accepted at {} but record expired at {}", t, exp);
            }
            // The last acceptable instant is iat + max_age; the record is gone right after it.
            prop_assert!(accepted_at(&p, &policy, iat + max_age).is_some());
            prop_assert!(dpop::replay_record_live(exp, iat + max_age));
            prop_assert!(!dpop::replay_record_live(exp, iat + max_age + 1));
        }
    }
}
