//! Access tokens, introspection, binding, and the whole resource request, down to the status
//! and `WWW-Authenticate` a client sees.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test helpers fail the test on bad fixtures"
)]

mod common;

use common::*;
use keybound_core::cert::X5tS256;
use keybound_core::dpop::{NonceCheck, ProofPolicy};
use keybound_core::error::Challenge;
use keybound_core::jwk::{Jwk, Jwks};
use keybound_core::jws::{self, Alg, AlgSet, RustCrypto, Signer};
use keybound_core::request::{
    AcceptedBinding, Binding, ResourceRequest, RoutePolicy, Scheme, VerifiedRequest, parse_authorization,
    single_dpop_header, verify_request,
};
use keybound_core::token::{self, TokenPolicy, VerifiedToken, verify_introspection, verify_jwt};
use keybound_core::{Error, ErrorCode, Part};
use serde_json::{Value, json};

fn jwt(t: &str) -> Result<VerifiedToken, Error> {
    verify_jwt(t, &issuer_jwks(), &policy(), NOW, &RustCrypto)
}

fn with(claims: &Value, member: &str, value: Value) -> Value {
    let mut c = claims.clone();
    c[member] = value;
    c
}

fn without(claims: &Value, member: &str) -> Value {
    let mut c = claims.clone();
    c.as_object_mut().unwrap().remove(member);
    c
}

#[test]
fn a_valid_rfc9068_token_verifies_with_its_claims() {
    let key = p256(1);
    let t = jwt(&dpop_token(&key)).unwrap();
    let c = t.claims();
    assert_eq!(c.iss.as_deref(), Some(ISS));
    assert_eq!(c.sub.as_deref(), Some("alice"));
    assert_eq!(c.client_id.as_deref(), Some("client-1"));
    assert_eq!(c.scopes, ["accounts:read", "payments"]);
    assert_eq!(t.jkt(), Some(&key.public_key().thumbprint()));
    assert!(t.x5t_s256().is_none());
    assert!(t.valid_at(NOW + 600, 10));
    assert!(!t.valid_at(NOW + 611, 10));
}

#[test]
fn aud_as_array_and_application_at_jwt_typ_are_accepted() {
    let c = with(&token_claims(None), "aud", json!(["https://other.example", AUD]));
    jwt(&token(&c)).unwrap();
    let typed = jws::sign_json(
        &issuer(),
        Some("application/at+jwt"),
        Some(TOKEN_KID),
        &token_claims(None),
    )
    .unwrap();
    jwt(&typed).unwrap();
}

#[test]
fn every_token_claim_check_rejects() {
    let base = token_claims(None);
    let cases: Vec<(&str, Value, Error)> = vec![
        (
            "wrong iss",
            with(&base, "iss", json!("https://evil.example")),
            Error::IssuerMismatch,
        ),
        (
            "missing iss",
            without(&base, "iss"),
            Error::MissingClaim {
                part: Part::AccessToken,
                claim: "iss",
            },
        ),
        (
            "wrong aud",
            with(&base, "aud", json!("https://other.example")),
            Error::AudienceMismatch,
        ),
        (
            "wrong aud array",
            with(&base, "aud", json!(["a", "b"])),
            Error::AudienceMismatch,
        ),
        (
            "missing aud",
            without(&base, "aud"),
            Error::MissingClaim {
                part: Part::AccessToken,
                claim: "aud",
            },
        ),
        ("expired", with(&base, "exp", json!(NOW - 11)), Error::TokenExpired),
        (
            "missing exp",
            without(&base, "exp"),
            Error::MissingClaim {
                part: Part::AccessToken,
                claim: "exp",
            },
        ),
        (
            "nbf in the future",
            with(&base, "nbf", json!(NOW + 11)),
            Error::TokenNotYetValid,
        ),
        (
            "iat in the future",
            with(&base, "iat", json!(NOW + 11)),
            Error::TokenIssuedInFuture,
        ),
        (
            "missing sub",
            without(&base, "sub"),
            Error::MissingClaim {
                part: Part::AccessToken,
                claim: "sub",
            },
        ),
        (
            "missing client_id",
            without(&base, "client_id"),
            Error::MissingClaim {
                part: Part::AccessToken,
                claim: "client_id",
            },
        ),
        (
            "missing iat",
            without(&base, "iat"),
            Error::MissingClaim {
                part: Part::AccessToken,
                claim: "iat",
            },
        ),
        (
            "missing jti",
            without(&base, "jti"),
            Error::MissingClaim {
                part: Part::AccessToken,
                claim: "jti",
            },
        ),
        (
            "exp as a string",
            with(&base, "exp", json!("tomorrow")),
            Error::Malformed {
                part: Part::AccessToken,
                what: "claims",
            },
        ),
        (
            "cnf.jkt malformed",
            with(&base, "cnf", json!({"jkt": "abc"})),
            Error::Malformed {
                part: Part::AccessToken,
                what: "jkt",
            },
        ),
        (
            "cnf with no method",
            with(&base, "cnf", json!({"x5t": "abc"})),
            Error::Malformed {
                part: Part::AccessToken,
                what: "cnf without jkt or x5t#S256",
            },
        ),
        (
            "cnf.x5t#S256 malformed",
            with(&base, "cnf", json!({"x5t#S256": "AAAA"})),
            Error::Malformed {
                part: Part::AccessToken,
                what: "cnf.x5t#S256",
            },
        ),
    ];
    for (name, claims, expected) in cases {
        let err = jwt(&token(&claims)).expect_err(name);
        assert_eq!(err, expected, "{name}");
        assert_eq!(err.code(), Some(ErrorCode::InvalidToken), "{name}");
        assert_eq!(err.status(), 401, "{name}");
    }
    // Within leeway is fine.
    jwt(&token(&with(&base, "exp", json!(NOW - 9)))).unwrap();
    jwt(&token(&with(&base, "nbf", json!(NOW + 9)))).unwrap();
}

#[test]
fn every_token_header_and_key_check_rejects() {
    let claims = token_claims(None);
    let iss = issuer();
    let stranger = p256(201);
    let forge_h = |header: Value| forge(&iss, &header, &claims);
    let cases: Vec<(&str, String, Error)> = vec![
        (
            "no typ",
            forge_h(json!({"alg": "ES256", "kid": TOKEN_KID})),
            Error::WrongType {
                part: Part::AccessToken,
            },
        ),
        (
            "typ JWT (an ID token)",
            forge_h(json!({"alg": "ES256", "kid": TOKEN_KID, "typ": "JWT"})),
            Error::WrongType {
                part: Part::AccessToken,
            },
        ),
        (
            "alg none",
            forge_h(json!({"alg": "none", "typ": "at+jwt"})),
            Error::AlgNotAllowed {
                part: Part::AccessToken,
            },
        ),
        (
            "alg HS256",
            forge_h(json!({"alg": "HS256", "typ": "at+jwt"})),
            Error::AlgNotAllowed {
                part: Part::AccessToken,
            },
        ),
        (
            "unknown kid",
            forge_h(json!({"alg": "ES256", "kid": "nope", "typ": "at+jwt"})),
            Error::UnknownKey {
                part: Part::AccessToken,
            },
        ),
        (
            "signed by a stranger with the issuer's kid",
            forge(
                &stranger,
                &json!({"alg": "ES256", "kid": TOKEN_KID, "typ": "at+jwt"}),
                &claims,
            ),
            Error::BadSignature {
                part: Part::AccessToken,
            },
        ),
        (
            "embedded jwk",
            forge(
                &stranger,
                &json!({"alg": "ES256", "typ": "at+jwt", "jwk": public_jwk(&stranger)}),
                &claims,
            ),
            Error::Malformed {
                part: Part::AccessToken,
                what: "jwk header in an access token",
            },
        ),
        (
            "EdDSA with no EdDSA key in the set",
            forge(&ed25519(3), &json!({"alg": "EdDSA", "typ": "at+jwt"}), &claims),
            Error::UnknownKey {
                part: Part::AccessToken,
            },
        ),
    ];
    for (name, t, expected) in cases {
        assert_eq!(jwt(&t), Err(expected), "{name}");
    }
    // Without a kid, the key is chosen by alg and type.
    jwt(&forge_h(json!({"alg": "ES256", "typ": "at+jwt"}))).unwrap();
}

#[test]
fn untyped_tokens_only_with_the_dangerous_flag() {
    let claims = without(&without(&token_claims(None), "client_id"), "jti");
    let t = jws::sign_json(&issuer(), None, Some(TOKEN_KID), &claims).unwrap();
    assert_eq!(
        jwt(&t),
        Err(Error::WrongType {
            part: Part::AccessToken
        })
    );
    let lax = TokenPolicy {
        dangerous_allow_untyped: true,
        ..policy()
    };
    verify_jwt(&t, &issuer_jwks(), &lax, NOW, &RustCrypto).unwrap();
}

#[test]
fn rs256_tokens_only_when_the_policy_allows_them() {
    // The RFC 7515 A.2 RS256 example (a 2048-bit key) verifies only with RS256 allowed.
    let jwk = br#"{"kty":"RSA","n":"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ","e":"AQAB"}"#;
    let keys = Jwks::new(vec![Jwk::from_json(jwk, Part::AccessToken).unwrap()]);
    let t = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";
    let lax = TokenPolicy {
        dangerous_allow_untyped: true,
        ..TokenPolicy::new("joe", vec!["x".into()])
    };
    assert_eq!(
        verify_jwt(t, &keys, &lax, 0, &RustCrypto),
        Err(Error::AlgNotAllowed {
            part: Part::AccessToken
        })
    );
    let with_rs = TokenPolicy {
        algs: AlgSet::default().with(Alg::Rs256),
        ..lax
    };
    // Signature verifies; the example has no aud, which is the next check to fail.
    assert_eq!(
        verify_jwt(t, &keys, &with_rs, 0, &RustCrypto),
        Err(Error::MissingClaim {
            part: Part::AccessToken,
            claim: "aud"
        })
    );
}

#[test]
fn introspection_results_become_verified_tokens() {
    let jkt = p256(1).public_key().thumbprint().to_string();
    let ok = json!({"active": true, "iss": ISS, "aud": AUD, "client_id": "c1", "sub": "bob", "exp": NOW + 60,
        "scope": "a b", "token_type": "DPoP", "cnf": {"jkt": jkt}});
    let t = verify_introspection(ok.to_string().as_bytes(), &policy(), NOW).unwrap();
    assert_eq!(t.jkt().map(ToString::to_string).as_deref(), Some(jkt.as_str()));
    assert_eq!(t.claims().scopes, ["a", "b"]);
    // Minimal: active, an access-token type and the audience; no iss/exp.
    verify_introspection(
        br#"{"active":true,"token_type":"Bearer","aud":["https://rs.example.com"]}"#,
        &policy(),
        NOW,
    )
    .unwrap();
    let cases: Vec<(&str, Value, Error)> = vec![
        ("inactive", json!({"active": false}), Error::TokenInactive),
        ("no active", json!({"sub": "x"}), Error::TokenInactive),
        (
            "active as a string",
            json!({"active": "true"}),
            Error::Malformed {
                part: Part::AccessToken,
                what: "introspection response",
            },
        ),
        (
            "other issuer",
            with(&ok, "iss", json!("https://evil")),
            Error::IssuerMismatch,
        ),
        (
            "other audience",
            with(&ok, "aud", json!("https://other")),
            Error::AudienceMismatch,
        ),
        ("expired", with(&ok, "exp", json!(NOW - 11)), Error::TokenExpired),
        (
            "odd token_type",
            with(&ok, "token_type", json!("mac")),
            Error::NotAnAccessToken,
        ),
    ];
    for (name, v, expected) in cases {
        assert_eq!(
            verify_introspection(v.to_string().as_bytes(), &policy(), NOW),
            Err(expected),
            "{name}"
        );
    }
    assert!(verify_introspection(b"not json", &policy(), NOW).is_err());
}

/// Issue 12, item 6: an authorization server may answer `active: true` for a refresh token (RFC
/// 7662 lets it); a resource server must never take that as an access token. An answer must
/// say it is about an access token (`token_type` Bearer or DPoP; `token_use`, when present,
/// `access_token`) and carry one of the resource server's audiences.
#[test]
fn introspection_answers_about_other_tokens_or_audiences_are_refused() {
    let ok = json!({"active": true, "iss": ISS, "aud": AUD, "client_id": "c1", "sub": "bob", "exp": NOW + 60,
        "scope": "a", "token_type": "Bearer"});
    verify_introspection(ok.to_string().as_bytes(), &policy(), NOW).unwrap();
    let without = |claim: &str| {
        let mut v = ok.clone();
        v.as_object_mut().unwrap().remove(claim);
        v
    };
    let cases: Vec<(&str, Value, Error)> = vec![
        (
            "a refresh token",
            with(&ok, "token_type", json!("refresh_token")),
            Error::NotAnAccessToken,
        ),
        ("N_A", with(&ok, "token_type", json!("N_A")), Error::NotAnAccessToken),
        ("no token_type", without("token_type"), Error::NotAnAccessToken),
        (
            "token_use refresh_token",
            with(&ok, "token_use", json!("refresh_token")),
            Error::NotAnAccessToken,
        ),
        (
            "no aud",
            without("aud"),
            Error::MissingClaim {
                part: Part::AccessToken,
                claim: "aud",
            },
        ),
        (
            "empty aud",
            with(&ok, "aud", json!([])),
            Error::MissingClaim {
                part: Part::AccessToken,
                claim: "aud",
            },
        ),
    ];
    for (name, v, expected) in cases {
        let got = verify_introspection(v.to_string().as_bytes(), &policy(), NOW);
        assert_eq!(got, Err(expected.clone()), "{name}");
        assert_eq!(expected.code(), Some(ErrorCode::InvalidToken), "{name}");
    }
    // `token_use: access_token` (Ory Hydra) is fine; an untyped answer only when the policy
    // explicitly allows it.
    let hydra = with(&ok, "token_use", json!("access_token"));
    verify_introspection(hydra.to_string().as_bytes(), &policy(), NOW).unwrap();
    let mut lenient = policy();
    lenient.dangerous_allow_untyped = true;
    verify_introspection(without("token_type").to_string().as_bytes(), &lenient, NOW).unwrap();
    let refresh = with(&ok, "token_type", json!("refresh_token"));
    assert_eq!(
        verify_introspection(refresh.to_string().as_bytes(), &lenient, NOW),
        Err(Error::NotAnAccessToken)
    );
}

#[test]
fn authorization_header_parsing() {
    for (value, scheme) in [
        ("DPoP abc", Scheme::DPoP),
        ("dpop abc", Scheme::DPoP),
        ("DPOP abc", Scheme::DPoP),
        ("bearer abc", Scheme::Bearer),
        ("Bearer  abc==", Scheme::Bearer),
    ] {
        let c = parse_authorization(&[value]).unwrap();
        assert_eq!(c.scheme, scheme, "{value}");
        assert!(c.token.starts_with("abc"));
    }
    let long = format!("DPoP {}", "a".repeat(16 * 1024 + 1));
    let cases: Vec<(Vec<&str>, Error)> = vec![
        (vec![], Error::MissingCredentials),
        (vec!["DPoP a", "DPoP b"], Error::MultipleAuthorizationHeaders),
        (vec!["DPoP"], Error::MalformedAuthorization),
        (vec!["DPoP a b"], Error::MalformedAuthorization),
        (vec!["DPoP a=b"], Error::MalformedAuthorization),
        (vec!["DPoP a,b"], Error::MalformedAuthorization),
        (vec![long.as_str()], Error::MalformedAuthorization),
        (vec!["Basic dXNlcjpwYXNz"], Error::UnsupportedScheme),
    ];
    for (values, expected) in cases {
        assert_eq!(parse_authorization(&values), Err(expected.clone()), "{values:.40?}");
    }
    assert_eq!(Error::MultipleAuthorizationHeaders.status(), 400);
    assert_eq!(single_dpop_header(&[]), Ok(None));
    assert_eq!(single_dpop_header(&["a.b.c"]), Ok(Some("a.b.c")));
    assert_eq!(single_dpop_header(&["a.b.c", "d.e.f"]), Err(Error::MultipleDpopHeaders));
    assert_eq!(single_dpop_header(&["a.b.c, d.e.f"]), Err(Error::MultipleDpopHeaders));
}

/// A request through `verify_request` with the default DPoP route policy.
struct Req<'a> {
    method: &'a str,
    url: &'a str,
    authorization: Vec<String>,
    dpop: Vec<String>,
    cert: Option<X5tS256>,
    allow_bearer: bool,
    scopes: Vec<String>,
}

impl<'a> Req<'a> {
    fn new(authorization: Vec<String>, dpop: Vec<String>) -> Self {
        Req {
            method: "GET",
            url: URL,
            authorization,
            dpop,
            cert: None,
            allow_bearer: false,
            scopes: vec![],
        }
    }

    fn run(&self) -> Result<VerifiedRequest<VerifiedToken>, Error> {
        let htu = htu(self.url);
        let auth: Vec<&str> = self.authorization.iter().map(String::as_str).collect();
        let dpop: Vec<&str> = self.dpop.iter().map(String::as_str).collect();
        let req = ResourceRequest {
            method: self.method,
            htu: &htu,
            authorization: &auth,
            dpop: &dpop,
            client_cert: self.cert.as_ref(),
        };
        let proof_policy = ProofPolicy::default();
        let route = RoutePolicy {
            proof: &proof_policy,
            nonce: NonceCheck::Off,
            allow_bearer: self.allow_bearer,
            required_scopes: &self.scopes,
        };
        verify_request(&req, &route, NOW, &RustCrypto, jwt)
    }

    /// The challenge the adapter would send for this request's error.
    fn challenge(&self, err: &Error) -> String {
        let auth: Vec<&str> = self.authorization.iter().map(String::as_str).collect();
        let scope = keybound_core::request::join_scopes(&self.scopes);
        err.www_authenticate(&Challenge {
            scheme_used: keybound_core::request::scheme_of(&auth),
            bearer_allowed: self.allow_bearer,
            algs: &AlgSet::default().to_vec(),
            realm: None,
            required_scope: &scope,
            resource_metadata: None,
        })
    }
}

#[test]
fn dpop_bound_token_with_a_valid_proof_is_accepted() {
    let key = p256(1);
    let t = dpop_token(&key);
    for scheme in ["DPoP", "dpop", "DPOP"] {
        let r = Req::new(
            vec![format!("{scheme} {t}")],
            vec![proof(&key, "GET", URL, Some(&t), "j1")],
        )
        .run()
        .unwrap();
        assert_eq!(r.binding(), &Binding::Dpop(key.public_key().thumbprint()));
        assert_eq!(r.proof().unwrap().jti(), "j1");
        assert_eq!(r.token().claims().sub.as_deref(), Some("alice"));
    }
}

#[test]
fn stolen_dpop_token_fails_every_way_it_can_be_presented() {
    let key = p256(1);
    let thief = p256(66);
    let t = dpop_token(&key);
    let auth = vec![format!("DPoP {t}")];
    // As Bearer.
    let r = Req::new(vec![format!("Bearer {t}")], vec![]);
    let e = r.run().unwrap_err();
    assert_eq!(e, Error::DpopBoundTokenAsBearer);
    assert_eq!(
        r.challenge(&e),
        r#"DPoP error="invalid_token", algs="ES256 PS256 EdDSA""#
    );
    // As Bearer even with the thief's proof attached.
    let r = Req::new(
        vec![format!("Bearer {t}")],
        vec![proof(&thief, "GET", URL, Some(&t), "x")],
    );
    assert_eq!(r.run().unwrap_err(), Error::DpopBoundTokenAsBearer);
    // With a proof from the thief's key.
    let r = Req::new(auth.clone(), vec![proof(&thief, "GET", URL, Some(&t), "x")]);
    let e = r.run().unwrap_err();
    assert_eq!(e, Error::JktMismatch);
    assert_eq!(e.code(), Some(ErrorCode::InvalidToken));
    assert_eq!(
        r.challenge(&e),
        r#"DPoP error="invalid_token", algs="ES256 PS256 EdDSA""#
    );
    // With no proof.
    let r = Req::new(auth.clone(), vec![]);
    let e = r.run().unwrap_err();
    assert_eq!(e, Error::MissingProof);
    assert_eq!(
        r.challenge(&e),
        r#"DPoP error="invalid_dpop_proof", algs="ES256 PS256 EdDSA""#
    );
    // With two proofs.
    let p = proof(&key, "GET", URL, Some(&t), "j");
    let r = Req::new(auth.clone(), vec![p.clone(), p.clone()]);
    let e = r.run().unwrap_err();
    assert_eq!(e, Error::MultipleDpopHeaders);
    assert_eq!(e.status(), 400);
    assert_eq!(
        r.challenge(&e),
        r#"DPoP error="invalid_request", algs="ES256 PS256 EdDSA""#
    );
    // The owner's proof for another request.
    let r = Req::new(auth, vec![proof(&key, "POST", URL, Some(&t), "j")]);
    assert_eq!(r.run().unwrap_err(), Error::HtmMismatch);
}

#[test]
fn unbound_tokens_only_where_the_route_allows_bearer() {
    let t = token(&token_claims(None));
    let mut r = Req::new(vec![format!("Bearer {t}")], vec![]);
    let e = r.run().unwrap_err();
    assert_eq!(e, Error::UnboundToken);
    assert_eq!(r.challenge(&e), r#"Bearer error="invalid_token""#);
    r.allow_bearer = true;
    assert_eq!(r.run().unwrap().binding(), &Binding::Bearer);
    // The DPoP scheme with an unbound token is refused even where bearer is allowed.
    let key = p256(1);
    let mut r = Req::new(vec![format!("DPoP {t}")], vec![proof(&key, "GET", URL, Some(&t), "j")]);
    r.allow_bearer = true;
    assert_eq!(r.run().unwrap_err(), Error::TokenNotDpopBound);
}

#[test]
fn certificate_bound_tokens_need_the_matching_certificate() {
    let mine = X5tS256::from_der(b"client certificate one");
    let theirs = X5tS256::from_der(b"client certificate two");
    let t = token(&token_claims(Some(json!({"x5t#S256": mine.to_string()}))));
    let mut r = Req::new(vec![format!("Bearer {t}")], vec![]);
    assert_eq!(r.run().unwrap_err(), Error::CertificateRequired);
    r.cert = Some(theirs);
    let e = r.run().unwrap_err();
    assert_eq!(e, Error::CertificateMismatch);
    assert_eq!(r.challenge(&e), r#"Bearer error="invalid_token""#);
    r.cert = Some(mine);
    assert_eq!(r.run().unwrap().binding(), &Binding::Certificate(mine));
}

#[test]
fn a_token_bound_to_both_needs_both() {
    let key = p256(1);
    let cert = X5tS256::from_der(b"cert");
    let t = token(&token_claims(Some(
        json!({"jkt": key.public_key().thumbprint().to_string(), "x5t#S256": cert.to_string()}),
    )));
    let mut r = Req::new(vec![format!("DPoP {t}")], vec![proof(&key, "GET", URL, Some(&t), "j")]);
    assert_eq!(r.run().unwrap_err(), Error::CertificateRequired);
    r.cert = Some(cert);
    assert_eq!(
        r.run().unwrap().binding(),
        &Binding::Dpop(key.public_key().thumbprint())
    );
}

#[test]
fn credentials_are_present_when_any_bearer_or_dpop_credential_is_sent() {
    use keybound_core::request::presents_credentials;
    assert!(!presents_credentials(&[], &[]));
    assert!(!presents_credentials(&["Basic dTpw"], &[]), "not an OAuth credential");
    assert!(presents_credentials(&["Bearer x"], &[]));
    assert!(presents_credentials(&["  dpop\tx"], &[]));
    assert!(
        presents_credentials(&["Bearer"], &[]),
        "malformed, but present: it must be valid"
    );
    assert!(presents_credentials(&["Basic a", "Bearer b"], &[]), "one of several");
    assert!(presents_credentials(&[], &["proof"]), "a DPoP header alone");
    assert_eq!(Scheme::from_name("DPOP"), Some(Scheme::DPoP));
    assert_eq!(Scheme::from_name("Basic"), None);
}

#[test]
fn a_route_can_accept_only_dpop_or_only_certificates() {
    let key = p256(1);
    let cert = X5tS256::from_der(b"cert");
    let dpop_t = dpop_token(&key);
    let dpop = Req::new(
        vec![format!("DPoP {dpop_t}")],
        vec![proof(&key, "GET", URL, Some(&dpop_t), "j")],
    )
    .run()
    .unwrap();
    let cert_t = token(&token_claims(Some(json!({"x5t#S256": cert.to_string()}))));
    let mut r = Req::new(vec![format!("Bearer {cert_t}")], vec![]);
    r.cert = Some(cert);
    let mtls = r.run().unwrap();
    let both_t = token(&token_claims(Some(
        json!({"jkt": key.public_key().thumbprint().to_string(), "x5t#S256": cert.to_string()}),
    )));
    let mut r = Req::new(
        vec![format!("DPoP {both_t}")],
        vec![proof(&key, "GET", URL, Some(&both_t), "j")],
    );
    r.cert = Some(cert);
    let both = r.run().unwrap();
    let check = |a: AcceptedBinding, v: &VerifiedRequest<VerifiedToken>| a.check(v.binding(), v.token());
    for v in [&dpop, &mtls, &both] {
        assert_eq!(check(AcceptedBinding::Any, v), Ok(()));
    }
    assert_eq!(check(AcceptedBinding::Dpop, &dpop), Ok(()));
    assert_eq!(check(AcceptedBinding::Dpop, &both), Ok(()));
    assert_eq!(check(AcceptedBinding::Dpop, &mtls), Err(Error::BindingNotAccepted));
    assert_eq!(check(AcceptedBinding::Certificate, &mtls), Ok(()));
    assert_eq!(check(AcceptedBinding::Certificate, &both), Ok(()));
    assert_eq!(
        check(AcceptedBinding::Certificate, &dpop),
        Err(Error::BindingNotAccepted)
    );
}

#[test]
fn challenges_point_at_the_resource_metadata() {
    let e = Error::MissingCredentials;
    let url = "https://api.example.com/.well-known/oauth-protected-resource";
    let c = e.www_authenticate(&Challenge {
        algs: &[Alg::Es256],
        bearer_allowed: true,
        resource_metadata: Some(url),
        ..Challenge::default()
    });
    assert_eq!(
        c,
        format!(r#"DPoP resource_metadata="{url}", algs="ES256", Bearer resource_metadata="{url}""#)
    );
}

#[test]
fn claims_by_json_pointer_as_header_text() {
    let mut claims = token_claims(None);
    claims["address"] = json!({"country": "NL", "lines": ["a", "b"]});
    claims["age"] = json!(42);
    claims["evil"] = json!("a\r\nx-injected: 1");
    claims["nothing"] = Value::Null;
    let t = token(&claims);
    let c = token::jwt_claims(&t).unwrap();
    assert_eq!(token::claim_text(&c, "/address/country").as_deref(), Some("NL"));
    assert_eq!(token::claim_text(&c, "/address/lines").as_deref(), Some(r#"["a","b"]"#));
    assert_eq!(token::claim_text(&c, "/address/lines/1").as_deref(), Some("b"));
    assert_eq!(token::claim_text(&c, "/age").as_deref(), Some("42"));
    assert_eq!(token::claim_text(&c, "/sub").as_deref(), Some("alice"));
    assert_eq!(token::claim_text(&c, "/evil"), None, "a header cannot carry CR LF");
    assert_eq!(token::claim_text(&c, "/nothing"), None);
    assert_eq!(token::claim_text(&c, "/absent"), None);
    assert_eq!(token::jwt_claims("opaque-token"), None);
}

#[test]
fn missing_credentials_get_a_bare_challenge() {
    let r = Req::new(vec![], vec![]);
    let e = r.run().unwrap_err();
    assert_eq!(e, Error::MissingCredentials);
    assert_eq!(e.code(), None);
    assert_eq!(e.status(), 401);
    assert_eq!(r.challenge(&e), r#"DPoP algs="ES256 PS256 EdDSA""#);
    let mut r = r;
    r.allow_bearer = true;
    assert_eq!(r.challenge(&e), r#"DPoP algs="ES256 PS256 EdDSA", Bearer"#);
}

#[test]
fn insufficient_scope_is_403_with_the_scope() {
    let key = p256(1);
    let t = dpop_token(&key);
    let mut r = Req::new(vec![format!("DPoP {t}")], vec![proof(&key, "GET", URL, Some(&t), "j")]);
    r.scopes = vec!["accounts:read".into()];
    r.run().unwrap();
    r.scopes = vec!["accounts:read".into(), "accounts:write".into()];
    let e = r.run().unwrap_err();
    assert_eq!(e, Error::InsufficientScope);
    assert_eq!(e.status(), 403);
    assert_eq!(
        r.challenge(&e),
        r#"DPoP error="insufficient_scope", scope="accounts:read accounts:write", algs="ES256 PS256 EdDSA""#
    );
}

#[test]
fn the_challenge_never_carries_the_reason() {
    let e = Error::BadSignature {
        part: Part::AccessToken,
    };
    let c = e.www_authenticate(&Challenge {
        scheme_used: Some(Scheme::Bearer),
        bearer_allowed: true,
        ..Challenge::default()
    });
    assert_eq!(c, r#"Bearer error="invalid_token""#);
    assert!(!c.contains("signature"));
    let realm = Error::TokenExpired.www_authenticate(&Challenge {
        scheme_used: Some(Scheme::DPoP),
        realm: Some(r#"api "v1""#),
        algs: &[Alg::Es256],
        ..Challenge::default()
    });
    assert_eq!(realm, r#"DPoP realm="api \"v1\"", error="invalid_token", algs="ES256""#);
}

/// The total mapping, spelled out: every variant, its code, status and reason.
#[test]
fn every_error_maps_to_code_status_and_reason() {
    use ErrorCode::*;
    let p = Part::Proof;
    let t = Part::AccessToken;
    let o = Part::Other;
    let table: Vec<(Error, Option<ErrorCode>, u16, &str)> = vec![
        (Error::MissingCredentials, None, 401, "missing_credentials"),
        (
            Error::MultipleAuthorizationHeaders,
            Some(InvalidRequest),
            400,
            "multiple_authorization_headers",
        ),
        (
            Error::MalformedAuthorization,
            Some(InvalidRequest),
            400,
            "malformed_authorization",
        ),
        (
            Error::UnsupportedScheme,
            Some(InvalidRequest),
            400,
            "unsupported_scheme",
        ),
        (
            Error::MultipleDpopHeaders,
            Some(InvalidRequest),
            400,
            "multiple_dpop_headers",
        ),
        (Error::MissingProof, Some(InvalidDpopProof), 401, "missing_proof"),
        (
            Error::Malformed { part: p, what: "x" },
            Some(InvalidDpopProof),
            401,
            "proof_malformed",
        ),
        (
            Error::Malformed { part: t, what: "x" },
            Some(InvalidToken),
            401,
            "token_malformed",
        ),
        (
            Error::Malformed { part: o, what: "x" },
            Some(InvalidRequest),
            400,
            "jws_malformed",
        ),
        (
            Error::WrongType { part: p },
            Some(InvalidDpopProof),
            401,
            "proof_wrong_typ",
        ),
        (
            Error::AlgNotAllowed { part: t },
            Some(InvalidToken),
            401,
            "token_alg_not_allowed",
        ),
        (
            Error::AlgKeyMismatch { part: p },
            Some(InvalidDpopProof),
            401,
            "proof_alg_key_mismatch",
        ),
        (
            Error::InvalidKey { part: p, what: "x" },
            Some(InvalidDpopProof),
            401,
            "proof_invalid_key",
        ),
        (
            Error::PrivateKeyInJwk { part: p },
            Some(InvalidDpopProof),
            401,
            "proof_private_key_in_jwk",
        ),
        (
            Error::UnknownKey { part: t },
            Some(InvalidToken),
            401,
            "token_unknown_key",
        ),
        (
            Error::BadSignature { part: p },
            Some(InvalidDpopProof),
            401,
            "proof_bad_signature",
        ),
        (
            Error::BadSignature { part: t },
            Some(InvalidToken),
            401,
            "token_bad_signature",
        ),
        (
            Error::MissingClaim { part: t, claim: "exp" },
            Some(InvalidToken),
            401,
            "token_missing_claim",
        ),
        (Error::HtmMismatch, Some(InvalidDpopProof), 401, "proof_htm_mismatch"),
        (Error::HtuMismatch, Some(InvalidDpopProof), 401, "proof_htu_mismatch"),
        (Error::InvalidHtu, Some(InvalidDpopProof), 401, "proof_invalid_htu"),
        (
            Error::IatOutOfWindow,
            Some(InvalidDpopProof),
            401,
            "proof_iat_out_of_window",
        ),
        (Error::AthMismatch, Some(InvalidDpopProof), 401, "proof_ath_mismatch"),
        (Error::NonceRequired, Some(UseDpopNonce), 401, "proof_nonce_required"),
        (Error::NonceInvalid, Some(UseDpopNonce), 401, "proof_nonce_invalid"),
        (Error::ProofReplayed, Some(InvalidDpopProof), 401, "proof_replayed"),
        (Error::IssuerMismatch, Some(InvalidToken), 401, "token_issuer_mismatch"),
        (
            Error::AudienceMismatch,
            Some(InvalidToken),
            401,
            "token_audience_mismatch",
        ),
        (Error::TokenExpired, Some(InvalidToken), 401, "token_expired"),
        (Error::TokenNotYetValid, Some(InvalidToken), 401, "token_not_yet_valid"),
        (
            Error::TokenIssuedInFuture,
            Some(InvalidToken),
            401,
            "token_issued_in_future",
        ),
        (Error::TokenInactive, Some(InvalidToken), 401, "token_inactive"),
        (
            Error::InsufficientScope,
            Some(InsufficientScope),
            403,
            "insufficient_scope",
        ),
        (
            Error::DpopBoundTokenAsBearer,
            Some(InvalidToken),
            401,
            "dpop_bound_token_as_bearer",
        ),
        (
            Error::TokenNotDpopBound,
            Some(InvalidToken),
            401,
            "token_not_dpop_bound",
        ),
        (Error::JktMismatch, Some(InvalidToken), 401, "jkt_mismatch"),
        (
            Error::CertificateRequired,
            Some(InvalidToken),
            401,
            "certificate_required",
        ),
        (
            Error::CertificateMismatch,
            Some(InvalidToken),
            401,
            "certificate_mismatch",
        ),
        (Error::UnboundToken, Some(InvalidToken), 401, "unbound_token"),
        (
            Error::BindingNotAccepted,
            Some(InvalidToken),
            401,
            "binding_not_accepted",
        ),
        (
            Error::InvalidCertificate { what: "x" },
            Some(InvalidRequest),
            400,
            "invalid_certificate",
        ),
        (
            Error::PkceMethodNotAllowed,
            Some(InvalidRequest),
            400,
            "pkce_method_not_allowed",
        ),
        (Error::PkceMalformed, Some(InvalidRequest), 400, "pkce_malformed"),
        (Error::PkceMismatch, Some(InvalidGrant), 400, "pkce_mismatch"),
        (
            Error::Malformed {
                part: Part::IdToken,
                what: "x",
            },
            Some(InvalidToken),
            401,
            "id_token_malformed",
        ),
        (
            Error::WrongType { part: Part::IdToken },
            Some(InvalidToken),
            401,
            "id_token_wrong_typ",
        ),
        (
            Error::AlgNotAllowed { part: Part::IdToken },
            Some(InvalidToken),
            401,
            "id_token_alg_not_allowed",
        ),
        (
            Error::UnknownKey { part: Part::IdToken },
            Some(InvalidToken),
            401,
            "id_token_unknown_key",
        ),
        (
            Error::BadSignature { part: Part::IdToken },
            Some(InvalidToken),
            401,
            "id_token_bad_signature",
        ),
        (
            Error::MissingClaim {
                part: Part::IdToken,
                claim: "nonce",
            },
            Some(InvalidToken),
            401,
            "id_token_missing_claim",
        ),
        (
            Error::IdTokenIssuerMismatch,
            Some(InvalidToken),
            401,
            "id_token_issuer_mismatch",
        ),
        (
            Error::IdTokenAudienceMismatch,
            Some(InvalidToken),
            401,
            "id_token_audience_mismatch",
        ),
        (
            Error::IdTokenAzpMismatch,
            Some(InvalidToken),
            401,
            "id_token_azp_mismatch",
        ),
        (
            Error::IdTokenNonceMismatch,
            Some(InvalidToken),
            401,
            "id_token_nonce_mismatch",
        ),
        (Error::IdTokenExpired, Some(InvalidToken), 401, "id_token_expired"),
        (
            Error::IdTokenIssuedInFuture,
            Some(InvalidToken),
            401,
            "id_token_issued_in_future",
        ),
        (Error::IdTokenTooOld, Some(InvalidToken), 401, "id_token_too_old"),
        (
            Error::IdTokenAtHashMismatch,
            Some(InvalidToken),
            401,
            "id_token_at_hash_mismatch",
        ),
        (
            Error::IdTokenRefreshMismatch,
            Some(InvalidToken),
            401,
            "id_token_refresh_mismatch",
        ),
        (
            Error::Config {
                field: "f".into(),
                reason: "r".into(),
            },
            Some(InvalidRequest),
            400,
            "config",
        ),
    ];
    for (err, code, status, reason) in table {
        assert_eq!(err.code(), code, "{err:?}");
        assert_eq!(err.status(), status, "{err:?}");
        assert_eq!(err.reason(), reason, "{err:?}");
    }
    assert_eq!(
        Error::Config {
            field: "dpop.max_age".into(),
            reason: "must be > 0".into()
        }
        .to_string(),
        "invalid configuration `dpop.max_age`: must be > 0"
    );
}

#[test]
fn the_unverified_issuer_picks_the_policy_only() {
    assert_eq!(
        token::unverified_issuer(&token(&token_claims(None))).as_deref(),
        Some(ISS)
    );
    assert_eq!(token::unverified_issuer("opaque-token"), None);
    assert_eq!(token::unverified_issuer("a.bm90IGpzb24.c"), None);
}

#[test]
fn token_policy_defaults_are_safe() {
    let p = TokenPolicy::new(ISS, vec![AUD.into()]);
    assert_eq!(p.algs.to_vec(), [Alg::Es256, Alg::Ps256, Alg::EdDsa]);
    assert!(!p.dangerous_allow_untyped);
    assert_eq!(p.leeway, 10);
    let d = ProofPolicy::default();
    assert_eq!((d.max_age, d.future_leeway), (300, 10));
    let _ = token::Confirmation::default();
}

/// RFC 9396 §9: the token's `authorization_details` types, required by a route; a malformed
/// claim refuses the token, since it could not be enforced.
#[test]
fn authorization_detail_types_are_read_and_required() {
    let details = json!([
        {"type": "payment_initiation", "instructedAmount": {"currency": "EUR", "amount": "10.00"}},
        {"type": "account_information"}
    ]);
    let v = jwt(&token(&with(&token_claims(None), "authorization_details", details))).unwrap();
    assert_eq!(
        v.claims().authorization_detail_types,
        ["payment_initiation", "account_information"]
    );
    v.require_authorization_detail_types(&["payment_initiation"]).unwrap();
    v.require_authorization_detail_types::<&str>(&[]).unwrap();
    let e = v
        .require_authorization_detail_types(&["payment_initiation", "card"])
        .unwrap_err();
    assert_eq!(e, Error::AuthorizationDetailsMissing);
    assert_eq!((e.status(), e.code().unwrap().as_str()), (403, "insufficient_scope"));
    let none = jwt(&token(&token_claims(None))).unwrap();
    assert!(
        none.require_authorization_detail_types(&["payment_initiation"])
            .is_err()
    );
    for bad in [
        json!({"type": "x"}),
        json!([{"actions": []}]),
        json!([{"type": 7}]),
        json!("x"),
    ] {
        let e = jwt(&token(&with(&token_claims(None), "authorization_details", bad.clone()))).unwrap_err();
        assert!(matches!(e, Error::Malformed { .. }), "{bad}: {e:?}");
    }
}
