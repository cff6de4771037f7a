//! The FAPI 2.0 conformance checklist (`docs/fapi2-conformance-modules.txt`), end to end:
//! every REJECTED and every must-PASS case of `fapi2-security-profile-final-dpop-negative-tests`
//! (and the resource-server cases of the other modules), sent through one real Envoy with a TLS
//! listener, each asserting the status, the `WWW-Authenticate` challenge, the JSON error body and
//! the counter that moved.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test helpers fail the test on bad fixtures"
)]

mod common;

use common::{
    ALGS, config, counter, dpop_token, forge, now, p256, proof, proof_claims, proof_header, public_jwk, sign_token,
    token_claims,
};
use keybound_core::dpop;
use keybound_e2e::{Envoy, EnvoyOptions, Pki, Response, TlsListener, Upstream, request_tls};
use serde_json::{Value, json};

const PATH: &str = "/api/accounts";
const URL: &str = "https://rs.example.com/api/accounts";

/// One request of the table.
struct Case {
    name: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
}

fn case(name: &'static str, auth: &str, proofs: &[&str]) -> Case {
    let mut headers = vec![("authorization", auth.to_owned())];
    headers.extend(proofs.iter().map(|p| ("dpop", (*p).to_owned())));
    Case {
        name,
        path: PATH.into(),
        headers,
    }
}

fn send(envoy: &Envoy, pki: &Pki, c: &Case) -> Response {
    let headers: Vec<(&str, &str)> = c.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    request_tls(envoy.port, pki, None, "GET", &c.path, &headers).unwrap()
}

fn without(v: &Value, member: &str) -> Value {
    let mut v = v.clone();
    v.as_object_mut().unwrap().remove(member);
    v
}

fn with(v: &Value, member: &str, value: Value) -> Value {
    let mut v = v.clone();
    v[member] = value;
    v
}

#[test]
fn fapi2_dpop_negative_tests_and_must_pass_cases_through_envoy() {
    let pki = Pki::generate().unwrap();
    let up = Upstream::start().unwrap();
    let opts = EnvoyOptions {
        tls: Some(TlsListener {
            cert: pki.gateway.cert.clone(),
            key: pki.gateway.key.clone(),
            ..TlsListener::default()
        }),
        ..EnvoyOptions::default()
    };
    let envoy = Envoy::start_with(&config(json!({})), &up, &opts).unwrap();

    let key = p256(11);
    let other = p256(12);
    let token = dpop_token(&key);
    let auth = format!("DPoP {token}");
    let header = proof_header(&key);
    let claims = || proof_claims("GET", URL, &token);
    let signed = |h: &Value, c: &Value| forge(&key, h, c);
    let good = signed(&header, &claims());
    let mut parts = good.split('.');
    let (h64, p64) = (parts.next().unwrap(), parts.next().unwrap());
    let other_sig = signed(&header, &claims()).rsplit('.').next().unwrap().to_owned();
    let mut private_jwk = public_jwk(&key);
    private_jwk["d"] = json!("AQAB");
    let none_header = json!({"typ": "dpop+jwt", "alg": "none", "jwk": public_jwk(&key)});
    let b64 = |v: &Value| keybound_core::b64::encode(v.to_string().as_bytes());
    let replayed = proof(&key, "GET", URL, &token);
    let dpop_challenge = |code: &str| format!(r#"DPoP error="{code}", {ALGS}"#);

    // (case, status, WWW-Authenticate, body error code, reason counter)
    let rejected: Vec<(Case, u16, String, &str, &str)> = vec![
        (
            case("two DPoP headers", &auth, &[&good, &good]),
            400,
            dpop_challenge("invalid_request"),
            "invalid_request",
            "multiple_dpop_headers",
        ),
        (
            case("malformed JWT", &auth, &["not.a.jwt"]),
            401,
            dpop_challenge("invalid_dpop_proof"),
            "invalid_dpop_proof",
            "proof_malformed",
        ),
        (
            case("missing typ", &auth, &[&signed(&without(&header, "typ"), &claims())]),
            401,
            dpop_challenge("invalid_dpop_proof"),
            "invalid_dpop_proof",
            "proof_wrong_typ",
        ),
        (
            case("missing alg", &auth, &[&signed(&without(&header, "alg"), &claims())]),
            401,
            dpop_challenge("invalid_dpop_proof"),
            "invalid_dpop_proof",
            "proof_alg_not_allowed",
        ),
        (
            case("missing jwk", &auth, &[&signed(&without(&header, "jwk"), &claims())]),
            401,
            dpop_challenge("invalid_dpop_proof"),
            "invalid_dpop_proof",
            "proof_missing_claim",
        ),
        (
            case("missing jti", &auth, &[&signed(&header, &without(&claims(), "jti"))]),
            401,
            dpop_challenge("invalid_dpop_proof"),
            "invalid_dpop_proof",
            "proof_missing_claim",
        ),
        (
            case("missing htm", &auth, &[&signed(&header, &without(&claims(), "htm"))]),
            401,
            dpop_challenge("invalid_dpop_proof"),
            "invalid_dpop_proof",
            "proof_missing_claim",
        ),
        (
            case("missing htu", &auth, &[&signed(&header, &without(&claims(), "htu"))]),
            401,
            dpop_challenge("invalid_dpop_proof"),
            "invalid_dpop_proof",
            "proof_missing_claim",
        ),
        (
            case("missing iat", &auth, &[&signed(&header, &without(&claims(), "iat"))]),
            401,
            dpop_challenge("invalid_dpop_proof"),
            "invalid_dpop_proof",
            "proof_missing_claim",
        ),
        (
            case("missing ath", &auth, &[&signed(&header, &without(&claims(), "ath"))]),
            401,
            dpop_challenge("invalid_dpop_proof"),
            "invalid_dpop_proof",
            "proof_missing_claim",
        ),
        (
            case(
                "wrong typ",
                &auth,
                &[&signed(&with(&header, "typ", json!("JWT")), &claims())],
            ),
            401,
            dpop_challenge("invalid_dpop_proof"),
            "invalid_dpop_proof",
            "proof_wrong_typ",
        ),
        (
            case(
                "alg RS256",
                &auth,
                &[&signed(&with(&header, "alg", json!("RS256")), &claims())],
            ),
            401,
            dpop_challenge("invalid_dpop_proof"),
            "invalid_dpop_proof",
            "proof_alg_not_allowed",
        ),
        (
            case(
                "alg none, no signature",
                &auth,
                &[&format!("{}.{}.", b64(&none_header), b64(&claims()))],
            ),
            401,
            dpop_challenge("invalid_dpop_proof"),
            "invalid_dpop_proof",
            "proof_alg_not_allowed",
        ),
        (
            case("signature stripped", &auth, &[&format!("{h64}.{p64}.")]),
            401,
            dpop_challenge("invalid_dpop_proof"),
            "invalid_dpop_proof",
            "proof_bad_signature",
        ),
        (
            case("bad signature", &auth, &[&format!("{h64}.{p64}.{other_sig}")]),
            401,
            dpop_challenge("invalid_dpop_proof"),
            "invalid_dpop_proof",
            "proof_bad_signature",
        ),
        (
            case(
                "private key in jwk",
                &auth,
                &[&signed(&with(&header, "jwk", private_jwk.clone()), &claims())],
            ),
            401,
            dpop_challenge("invalid_dpop_proof"),
            "invalid_dpop_proof",
            "proof_private_key_in_jwk",
        ),
        (
            case(
                "wrong htm",
                &auth,
                &[&signed(&header, &with(&claims(), "htm", json!("POST")))],
            ),
            401,
            dpop_challenge("invalid_dpop_proof"),
            "invalid_dpop_proof",
            "proof_htm_mismatch",
        ),
        (
            case(
                "htu of a different URL",
                &auth,
                &[&signed(
                    &header,
                    &with(&claims(), "htu", json!("https://rs.example.com/api/other")),
                )],
            ),
            401,
            dpop_challenge("invalid_dpop_proof"),
            "invalid_dpop_proof",
            "proof_htu_mismatch",
        ),
        (
            case(
                "htu of another host",
                &auth,
                &[&signed(
                    &header,
                    &with(&claims(), "htu", json!("https://evil.example.com/api/accounts")),
                )],
            ),
            401,
            dpop_challenge("invalid_dpop_proof"),
            "invalid_dpop_proof",
            "proof_htu_mismatch",
        ),
        (
            case(
                "htu over http while the request came over https",
                &auth,
                &[&signed(
                    &header,
                    &with(&claims(), "htu", json!("http://rs.example.com/api/accounts")),
                )],
            ),
            401,
            dpop_challenge("invalid_dpop_proof"),
            "invalid_dpop_proof",
            "proof_htu_mismatch",
        ),
        (
            case(
                "iat one hour in the past",
                &auth,
                &[&signed(&header, &with(&claims(), "iat", json!(now() - 3600)))],
            ),
            401,
            dpop_challenge("invalid_dpop_proof"),
            "invalid_dpop_proof",
            "proof_iat_out_of_window",
        ),
        (
            case(
                "iat one hour in the future",
                &auth,
                &[&signed(&header, &with(&claims(), "iat", json!(now() + 3600)))],
            ),
            401,
            dpop_challenge("invalid_dpop_proof"),
            "invalid_dpop_proof",
            "proof_iat_out_of_window",
        ),
        (
            case(
                "wrong ath",
                &auth,
                &[&signed(
                    &header,
                    &with(&claims(), "ath", json!(dpop::access_token_hash("another token"))),
                )],
            ),
            401,
            dpop_challenge("invalid_dpop_proof"),
            "invalid_dpop_proof",
            "proof_ath_mismatch",
        ),
        (
            case(
                "proof signed by another key than cnf.jkt",
                &auth,
                &[&proof(&other, "GET", URL, &token)],
            ),
            401,
            dpop_challenge("invalid_token"),
            "invalid_token",
            "jkt_mismatch",
        ),
        (
            case("no proof at all", &auth, &[]),
            401,
            dpop_challenge("invalid_dpop_proof"),
            "invalid_dpop_proof",
            "missing_proof",
        ),
        (
            case(
                "DPoP-bound token with the Bearer scheme",
                &format!("Bearer {token}"),
                &[],
            ),
            401,
            dpop_challenge("invalid_token"),
            "invalid_token",
            "dpop_bound_token_as_bearer",
        ),
        (
            case(
                "holder of key required: an unbound token",
                &format!("Bearer {}", sign_token(&token_claims(None))),
                &[],
            ),
            401,
            r#"Bearer error="invalid_token""#.into(),
            "invalid_token",
            "unbound_token",
        ),
    ];
    let total = rejected.len() as u64;
    for (c, status, challenge, code, reason) in &rejected {
        let before = envoy.decisions("deny", Some(reason));
        let r = send(&envoy, &pki, c);
        assert_eq!(r.status, *status, "{}: {r:?}", c.name);
        assert_eq!(r.header("www-authenticate"), Some(challenge.as_str()), "{}", c.name);
        assert_eq!(r.json(), json!({ "error": code }), "{}", c.name);
        assert_eq!(
            envoy.decisions("deny", Some(reason)),
            before + 1,
            "{}: counter denied.{reason}",
            c.name
        );
    }
    assert_eq!(envoy.decisions("deny", None), total);
    assert_eq!(envoy.decisions("allow", None), 0);

    // A reused jti: the first use passes, the second is a replay.
    let c = case("reused jti", &auth, &[&replayed]);
    assert_eq!(send(&envoy, &pki, &c).status, 200);
    let r = send(&envoy, &pki, &c);
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(
        r.header("www-authenticate"),
        Some(dpop_challenge("invalid_dpop_proof").as_str())
    );
    assert_eq!(r.json(), json!({"error": "invalid_dpop_proof"}));
    assert_eq!(envoy.decisions("deny", Some("proof_replayed")), 1);
    assert_eq!(counter(&envoy, "replays"), 1);

    // The must-PASS cases, each with a fresh jti.
    let mut passing: Vec<Case> = vec![
        case(
            "extra claims nbf, exp and others in the proof",
            &auth,
            &[&signed(&header, &{
                let mut c = claims();
                c["nbf"] = json!(now() + 100_000);
                c["exp"] = json!(now() - 100_000);
                c["foo"] = json!({"bar": [1, 2]});
                c
            })],
        ),
        case(
            "htu with a query and a fragment",
            &auth,
            &[&signed(
                &header,
                &with(&claims(), "htu", json!(format!("{URL}?page=2#top"))),
            )],
        ),
        case(
            "upper-case scheme and host, explicit default port",
            &auth,
            &[&signed(
                &header,
                &with(&claims(), "htu", json!("HTTPS://RS.Example.COM:443/api/accounts")),
            )],
        ),
        case(
            "iat 10 seconds in the future",
            &auth,
            &[&signed(&header, &with(&claims(), "iat", json!(now() + 10)))],
        ),
        case(
            "iat 10 seconds in the past",
            &auth,
            &[&signed(&header, &with(&claims(), "iat", json!(now() - 10)))],
        ),
        case(
            "typ as a full media type in upper case",
            &auth,
            &[&signed(&with(&header, "typ", json!("application/DPoP+JWT")), &claims())],
        ),
    ];
    for scheme in ["dpop", "DPOP", "dPoP"] {
        passing.push(case(
            "the scheme word in any letter case",
            &format!("{scheme} {token}"),
            &[&proof(&key, "GET", URL, &token)],
        ));
    }
    let mut query = case(
        "the request has a query the htu lacks",
        &auth,
        &[&proof(&key, "GET", URL, &token)],
    );
    query.path = format!("{PATH}?page=2&sort=asc");
    passing.push(query);
    let mut fragmentless = case(
        "the htu has a query the request lacks",
        &auth,
        &[&signed(
            &header,
            &with(&claims(), "htu", json!(format!("{URL}?page=9"))),
        )],
    );
    fragmentless.path = PATH.into();
    passing.push(fragmentless);
    let allowed_before = envoy.decisions("allow", None);
    for (i, c) in passing.iter().enumerate() {
        let r = send(&envoy, &pki, c);
        assert_eq!(r.status, 200, "{}: {r:?}\n{}", c.name, envoy.log_tail());
        assert_eq!(r.json()["x-keybound-binding"], "dpop", "{}", c.name);
        assert_eq!(
            envoy.decisions("allow", None),
            allowed_before + i as u64 + 1,
            "{}",
            c.name
        );
    }
    // Nothing else was denied along the way.
    assert_eq!(envoy.decisions("deny", None), total + 1);
}
