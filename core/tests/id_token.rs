//! OpenID Connect ID tokens as a client validates them: one valid token, then every rejection,
//! each with its named error, code and reason.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test helpers fail the test on bad fixtures"
)]

mod common;

use common::*;
use keybound_core::b64;
use keybound_core::id_token::{
    IdTokenChecks, IdTokenClaims, IdTokenPolicy, UnverifiedIdToken, left_half_hash, verify_id_token,
};
use keybound_core::jwk::{Jwk, Jwks};
use keybound_core::jws::{self, Alg, RustCrypto, Signer as _};
use keybound_core::{Error, ErrorCode, Part};
use serde_json::{Value, json};

const CLIENT: &str = "spa-client";
const NONCE: &str = "n-0S6_WzA2Mj";

fn policy() -> IdTokenPolicy {
    IdTokenPolicy::new(ISS, CLIENT)
}

fn claims() -> Value {
    json!({
        "iss": ISS, "sub": "alice", "aud": CLIENT, "exp": NOW + 300, "iat": NOW - 5,
        "nonce": NONCE, "auth_time": NOW - 30, "sid": "session-1", "email": "alice@example.com"
    })
}

fn sign(claims: &Value) -> String {
    jws::sign_json(&issuer(), Some("JWT"), Some(TOKEN_KID), claims).unwrap()
}

fn nonce_only() -> IdTokenChecks<'static> {
    IdTokenChecks {
        nonce: Some(NONCE),
        ..IdTokenChecks::default()
    }
}

fn verify(token: &str) -> Result<IdTokenClaims, Error> {
    verify_with(token, &nonce_only())
}

fn verify_with(token: &str, checks: &IdTokenChecks<'_>) -> Result<IdTokenClaims, Error> {
    verify_id_token(token, &issuer_jwks(), &policy(), checks, NOW, &RustCrypto)
}

fn with(member: &str, value: Value) -> Value {
    let mut c = claims();
    c[member] = value;
    c
}

fn without(member: &str) -> Value {
    let mut c = claims();
    c.as_object_mut().unwrap().remove(member);
    c
}

#[test]
fn a_valid_id_token_verifies_with_its_claims() {
    let c = verify(&sign(&claims())).unwrap();
    assert_eq!(c.iss, ISS);
    assert_eq!(c.sub, "alice");
    assert_eq!(c.aud, [CLIENT]);
    assert_eq!(c.azp, None);
    assert_eq!(
        (c.exp, c.iat),
        (i64::try_from(NOW).unwrap() + 300, i64::try_from(NOW).unwrap() - 5)
    );
    assert_eq!(c.nonce.as_deref(), Some(NONCE));
    assert_eq!(c.auth_time, Some(i64::try_from(NOW).unwrap() - 30));
    assert_eq!(c.sid.as_deref(), Some("session-1"));
    assert_eq!(c.all()["email"], "alice@example.com");

    // Several audiences with azp = the client; no typ; no nonce expected (then not checked).
    let several = with("aud", json!(["https://api.example", CLIENT]));
    let mut several = several;
    several["azp"] = json!(CLIENT);
    verify(&sign(&several)).unwrap();
    let untyped = jws::sign_json(&issuer(), None, Some(TOKEN_KID), &claims()).unwrap();
    verify(&untyped).unwrap();
    verify_with(&sign(&without("nonce")), &IdTokenChecks::default()).unwrap();
    // Within leeway (60 s by default) and within the iat age (600 s).
    verify(&sign(&with("exp", json!(NOW - 59)))).unwrap();
    verify(&sign(&with("iat", json!(NOW + 59)))).unwrap();
    verify(&sign(&with("iat", json!(NOW - 659)))).unwrap();
}

#[test]
fn the_two_step_api_is_the_same_checks_with_the_signature_verified_by_the_caller() {
    let token = sign(&claims());
    let keys = issuer_jwks();
    let parsed = UnverifiedIdToken::parse(&token, &policy()).unwrap();
    assert_eq!(parsed.alg(), Alg::Es256);
    let candidates = parsed.candidates(&keys).unwrap();
    assert_eq!(candidates.len(), 1);
    let key = candidates[0];
    assert!(keybound_core::jws::Verifier::verify(
        &RustCrypto,
        parsed.alg(),
        key.key(),
        parsed.signing_input().as_bytes(),
        parsed.signature()
    ));
    let c = parsed
        .signature_verified_by(key, &policy(), &nonce_only(), NOW)
        .unwrap();
    assert_eq!(c.sub, "alice");

    let other = Jwks::new(vec![Jwk::new(p256(9).public_key().clone(), Some("other".into()), None)]);
    let parsed = UnverifiedIdToken::parse(&token, &policy()).unwrap();
    assert_eq!(
        parsed.candidates(&other).unwrap_err(),
        Error::UnknownKey { part: Part::IdToken }
    );
}

#[test]
fn every_id_token_rejection_has_its_error() {
    let id = Part::IdToken;
    let missing = |claim| Error::MissingClaim { part: id, claim };
    let mut several_without_azp = claims();
    several_without_azp["aud"] = json!([CLIENT, "https://api.example"]);
    let mut azp_other = claims();
    azp_other["azp"] = json!("another-client");
    let cases: Vec<(&str, String, Error)> = vec![
        (
            "wrong iss",
            sign(&with("iss", json!("https://evil.example"))),
            Error::IdTokenIssuerMismatch,
        ),
        ("missing iss", sign(&without("iss")), missing("iss")),
        ("missing sub", sign(&without("sub")), missing("sub")),
        ("empty sub", sign(&with("sub", json!(""))), missing("sub")),
        (
            "wrong aud",
            sign(&with("aud", json!("another-client"))),
            Error::IdTokenAudienceMismatch,
        ),
        (
            "aud array without the client",
            sign(&with("aud", json!(["a", "b"]))),
            Error::IdTokenAudienceMismatch,
        ),
        ("missing aud", sign(&without("aud")), missing("aud")),
        ("empty aud array", sign(&with("aud", json!([]))), missing("aud")),
        ("azp of another client", sign(&azp_other), Error::IdTokenAzpMismatch),
        (
            "several audiences without azp",
            sign(&several_without_azp),
            missing("azp"),
        ),
        (
            "wrong nonce",
            sign(&with("nonce", json!("replayed"))),
            Error::IdTokenNonceMismatch,
        ),
        ("missing nonce", sign(&without("nonce")), missing("nonce")),
        ("expired", sign(&with("exp", json!(NOW - 61))), Error::IdTokenExpired),
        ("missing exp", sign(&without("exp")), missing("exp")),
        (
            "iat in the future",
            sign(&with("iat", json!(NOW + 61))),
            Error::IdTokenIssuedInFuture,
        ),
        (
            "iat too old",
            sign(&with("iat", json!(NOW - 661))),
            Error::IdTokenTooOld,
        ),
        ("missing iat", sign(&without("iat")), missing("iat")),
        (
            "exp as a string",
            sign(&with("exp", json!("tomorrow"))),
            Error::Malformed {
                part: id,
                what: "claims",
            },
        ),
        (
            "payload not an object",
            jws::sign_json(&issuer(), None, Some(TOKEN_KID), &json!(["iss"])).unwrap(),
            Error::Malformed {
                part: id,
                what: "claims",
            },
        ),
        (
            "an access token (typ at+jwt)",
            jws::sign_json(&issuer(), Some("at+jwt"), Some(TOKEN_KID), &claims()).unwrap(),
            Error::WrongType { part: id },
        ),
        (
            "signed by a key not in the issuer's set",
            jws::sign_json(&p256(7), Some("JWT"), Some("unknown-kid"), &claims()).unwrap(),
            Error::UnknownKey { part: id },
        ),
        (
            "signed by another key under the issuer's kid",
            jws::sign_json(&p256(7), Some("JWT"), Some(TOKEN_KID), &claims()).unwrap(),
            Error::BadSignature { part: id },
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64::encode(br#"{"alg":"none"}"#),
                b64::encode(claims().to_string().as_bytes())
            ),
            Error::AlgNotAllowed { part: id },
        ),
        (
            "a key in the header",
            forge(
                &p256(7),
                &json!({"alg": "ES256", "kid": TOKEN_KID, "jwk": public_jwk(&p256(7))}),
                &claims(),
            ),
            Error::Malformed {
                part: id,
                what: "jwk header in an ID token",
            },
        ),
        (
            "not a JWS",
            "not.a.jws".into(),
            Error::Malformed {
                part: id,
                what: "header base64url",
            },
        ),
    ];
    for (name, token, expected) in cases {
        let err = verify(&token).expect_err(name);
        assert_eq!(err, expected, "{name}");
        assert_eq!(err.code(), Some(ErrorCode::InvalidToken), "{name}");
        assert_eq!(err.status(), 401, "{name}");
        assert!(err.reason().starts_with("id_token_"), "{name}: {}", err.reason());
    }
}

#[test]
fn rs256_is_allowed_for_id_tokens_and_can_be_taken_out() {
    assert!(policy().algs.contains(Alg::Rs256));
    let mut strict = policy();
    strict.algs = keybound_core::jws::AlgSet::default();
    let header = json!({"alg": "RS256", "kid": TOKEN_KID});
    let token = format!(
        "{}.{}.AAAA",
        b64::encode(header.to_string().as_bytes()),
        b64::encode(claims().to_string().as_bytes())
    );
    assert_eq!(
        UnverifiedIdToken::parse(&token, &strict).unwrap_err(),
        Error::AlgNotAllowed { part: Part::IdToken }
    );
    assert!(UnverifiedIdToken::parse(&token, &policy()).is_ok());
    // The issuer's key set has only an ES256 key: nothing can verify an RS256 token.
    assert_eq!(verify(&token).unwrap_err(), Error::UnknownKey { part: Part::IdToken });
}

const ACCESS_TOKEN: &str = "dpop-bound-access-token";

#[test]
fn at_hash_is_the_left_half_of_the_access_token_hash_by_the_alg() {
    // Expected values computed independently (Python: base64url of hashlib.sha256(t).digest()[:16],
    // and of hashlib.sha512(t).digest()[:32] for EdDSA with Ed25519).
    for alg in [Alg::Es256, Alg::Ps256, Alg::Rs256] {
        assert_eq!(left_half_hash(alg, ACCESS_TOKEN), "i8EJMxYZXT4atLTJQGBGWg");
    }
    assert_eq!(
        left_half_hash(Alg::EdDsa, ACCESS_TOKEN),
        "SxT4c4Cd-MnrNP3nI8Xqoru7trAY4_NrpVCuiWt-6IY"
    );

    let checks = IdTokenChecks {
        nonce: Some(NONCE),
        access_token: Some(ACCESS_TOKEN),
        previous: None,
    };
    let good = sign(&with("at_hash", json!(left_half_hash(Alg::Es256, ACCESS_TOKEN))));
    verify_with(&good, &checks).unwrap();
    // Without at_hash the access token is not checked (optional for the code flow).
    verify_with(&sign(&claims()), &checks).unwrap();
    // Another token's hash, or the hash by another alg's function: refused.
    for bad in [
        left_half_hash(Alg::Es256, "another-access-token"),
        left_half_hash(Alg::EdDsa, ACCESS_TOKEN),
        String::new(),
    ] {
        let err = verify_with(&sign(&with("at_hash", json!(bad))), &checks).unwrap_err();
        assert_eq!(err, Error::IdTokenAtHashMismatch, "{bad}");
        assert_eq!(err.code(), Some(ErrorCode::InvalidToken));
        assert_eq!(err.reason(), "id_token_at_hash_mismatch");
    }
    // An at_hash that is not a string is malformed claims.
    assert!(matches!(
        verify_with(&sign(&with("at_hash", json!(7))), &checks),
        Err(Error::Malformed { .. })
    ));
}

#[test]
fn a_refreshed_id_token_keeps_the_original_iss_sub_and_aud() {
    let original = verify(&sign(&claims())).unwrap();
    let refresh = |claims: &Value| {
        verify_with(
            &sign(claims),
            &IdTokenChecks {
                nonce: None,
                access_token: None,
                previous: Some(&original),
            },
        )
    };
    // The same end-user, a new iat and exp, no nonce: accepted.
    let mut renewed = without("nonce");
    renewed["iat"] = json!(NOW);
    renewed["exp"] = json!(NOW + 600);
    let c = refresh(&renewed).unwrap();
    assert_eq!(c.sub, "alice");
    // The same audiences in another order: accepted.
    let mut multi = claims();
    multi["aud"] = json!(["https://api.example", CLIENT]);
    multi["azp"] = json!(CLIENT);
    let original_multi = verify(&sign(&multi)).unwrap();
    let mut reordered = multi.clone();
    reordered["aud"] = json!([CLIENT, "https://api.example"]);
    verify_with(
        &sign(&reordered),
        &IdTokenChecks {
            previous: Some(&original_multi),
            ..IdTokenChecks::default()
        },
    )
    .unwrap();

    let mut other_aud = claims();
    other_aud["aud"] = json!([CLIENT, "https://other.example"]);
    other_aud["azp"] = json!(CLIENT);
    for (name, claims) in [
        ("another sub", with("sub", json!("mallory"))),
        ("another audience added", other_aud),
    ] {
        let err = refresh(&claims).unwrap_err();
        assert_eq!(err, Error::IdTokenRefreshMismatch, "{name}");
        assert_eq!(err.code(), Some(ErrorCode::InvalidToken), "{name}");
        assert_eq!(err.reason(), "id_token_refresh_mismatch", "{name}");
    }
    // Another iss fails the policy's issuer check first; with a policy for that issuer (a client
    // whose issuer changed under it), the refresh check still refuses it.
    let moved = IdTokenPolicy::new("https://other-issuer.example", CLIENT);
    let token = sign(&with("iss", json!("https://other-issuer.example")));
    assert_eq!(
        verify_id_token(
            &token,
            &issuer_jwks(),
            &moved,
            &IdTokenChecks {
                previous: Some(&original),
                ..IdTokenChecks::default()
            },
            NOW,
            &RustCrypto
        )
        .unwrap_err(),
        Error::IdTokenRefreshMismatch
    );
    assert_eq!(
        refresh(&with("iss", json!("https://other-issuer.example"))).unwrap_err(),
        Error::IdTokenIssuerMismatch
    );
}
