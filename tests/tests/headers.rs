//! Awkward and oversized headers through a real Envoy: each gets a clear 4xx (from the filter, with
//! its RFC error code and counter, or from Envoy's own header limits), and Envoy keeps serving.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test helpers fail the test on bad fixtures"
)]

mod common;

use common::{ALGS, config, dpop_token, p256, proof, sign_token, token_claims};
use keybound_core::jws::Signer;
use keybound_e2e::{Envoy, Upstream, request};
use serde_json::json;

const URL: &str = "http://rs.example.com/api/accounts";

/// (case, headers, status, `WWW-Authenticate`, body code, reason counter)
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16, String, &'a str, &'a str);

#[test]
fn duplicated_and_oversized_headers_get_a_clear_4xx_and_envoy_keeps_serving() {
    let up = Upstream::start().unwrap();
    let envoy = Envoy::start(&config(json!({})), &up).unwrap();
    let key = p256(21);
    let token = dpop_token(&key);
    let auth = format!("DPoP {token}");
    let p = || proof(&key, "GET", URL, &token);
    let get = |headers: &[(&str, &str)]| request(envoy.port, "GET", "/api/accounts", headers).unwrap();
    let dpop_challenge = |code: &str| format!(r#"DPoP error="{code}", {ALGS}"#);

    // A valid token padded to 8 KB is accepted (no arbitrary small limit) ...
    let mut claims = token_claims(Some(json!({"jkt": key.public_key().thumbprint().to_string()})));
    claims["padding"] = json!("p".repeat(6000));
    let big = sign_token(&claims);
    assert!((8000..9000).contains(&big.len()), "{}", big.len());
    let r = get(&[
        ("authorization", &format!("DPoP {big}")),
        ("dpop", &proof(&key, "GET", URL, &big)),
    ]);
    assert_eq!(r.status, 200, "{r:?}\n{}", envoy.log_tail());
    let allowed = envoy.decisions("allow", None);
    assert_eq!(allowed, 1);

    // Tokens the filter must refuse, each with an otherwise valid proof for it (right `ath`), so
    // that the token itself is what fails.
    let garbage_8k = "A".repeat(8 * 1024);
    let over_limit = format!("{}.{}.{}", "A".repeat(7000), "B".repeat(7000), "C".repeat(3000));
    let (garbage_proof, over_proof) = (
        proof(&key, "GET", URL, &garbage_8k),
        proof(&key, "GET", URL, &over_limit),
    );
    let (garbage_8k, over_limit) = (format!("DPoP {garbage_8k}"), format!("DPoP {over_limit}"));
    let (p1, p2) = (p(), p());
    // Envoy folds repeated
    // `Authorization` headers (an inline header) into one comma-joined value, which the filter
    // sees as a malformed Authorization header; repeated `DPoP` headers stay separate.
    let cases: Vec<Case<'_>> = vec![
        (
            "two Authorization headers",
            vec![("authorization", &auth), ("authorization", &auth), ("dpop", &p1)],
            400,
            dpop_challenge("invalid_request"),
            "invalid_request",
            "malformed_authorization",
        ),
        (
            "two Authorization headers in different letter case",
            vec![("Authorization", &auth), ("authorization", "Bearer x"), ("dpop", &p1)],
            400,
            dpop_challenge("invalid_request"),
            "invalid_request",
            "malformed_authorization",
        ),
        (
            "two DPoP headers",
            vec![("authorization", &auth), ("dpop", &p1), ("dpop", &p2)],
            400,
            dpop_challenge("invalid_request"),
            "invalid_request",
            "multiple_dpop_headers",
        ),
        (
            "an 8 KB token that is not a JWT",
            vec![("authorization", &garbage_8k), ("dpop", &garbage_proof)],
            401,
            dpop_challenge("invalid_token"),
            "invalid_token",
            "token_malformed",
        ),
        (
            "a 17 KB token, over the 16 KB limit: a malformed Authorization header",
            vec![("authorization", &over_limit), ("dpop", &over_proof)],
            400,
            dpop_challenge("invalid_request"),
            "invalid_request",
            "malformed_authorization",
        ),
    ];
    for (name, headers, status, challenge, code, reason) in &cases {
        let before = envoy.decisions("deny", Some(reason));
        let r = get(headers);
        assert_eq!(r.status, *status, "{name}: {r:?}");
        assert_eq!(r.header("www-authenticate"), Some(challenge.as_str()), "{name}: {r:?}");
        assert_eq!(r.json(), json!({ "error": code }), "{name}");
        assert_eq!(
            envoy.decisions("deny", Some(reason)),
            before + 1,
            "{name}: denied.{reason}\n{}\n{}",
            keybound_e2e::request(envoy.admin, "GET", "/stats?filter=keybound", &[])
                .unwrap()
                .body,
            envoy.log_tail()
        );
    }
    let denied = envoy.decisions("deny", None);
    assert_eq!(denied, cases.len() as u64);

    // 100 KB headers exceed Envoy's own limit (60 KiB by default): 431 before the filter runs.
    let huge = "h".repeat(100 * 1024);
    for headers in [
        vec![
            ("authorization", auth.as_str()),
            ("dpop", p1.as_str()),
            ("x-big", &huge),
        ],
        vec![("authorization", huge.as_str())],
        vec![("authorization", auth.as_str()), ("dpop", huge.as_str())],
    ] {
        let r = get(&headers);
        assert_eq!(r.status, 431, "{r:?}");
    }
    assert_eq!(envoy.decisions("deny", None), denied, "the filter never saw them");

    // Envoy keeps serving: a normal request afterwards succeeds.
    let r = get(&[("authorization", &auth), ("dpop", &p())]);
    assert_eq!(r.status, 200, "{r:?}\n{}", envoy.log_tail());
    assert_eq!(envoy.decisions("allow", None), allowed + 1);
}
