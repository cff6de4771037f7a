//! Open banking in a real Envoy: a payments route needs a token carrying `payment_initiation`
//! authorization details (RFC 9396) and a client certificate with the PSD2 role `PSP_PI` (ETSI TS
//! 119 495), over Envoy's own mutual TLS; Envoy hands the filter the certificate in the XFCC
//! element it writes (`SANITIZE_SET`, `cert: true`), and the granted details go upstream.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test helpers fail the test on bad fixtures"
)]

mod common;

use common::{config, sign_token, token_claims};
use keybound_e2e::{Envoy, EnvoyOptions, Identity, Pki, Response, Upstream, request_tls};
use serde_json::{Value, json};

fn pay(envoy: &Envoy, pki: &Pki, client: &Identity, token: &str, headers: &[(&str, &str)]) -> Response {
    let auth = format!("Bearer {token}");
    let mut h = vec![("authorization", auth.as_str())];
    h.extend_from_slice(headers);
    request_tls(envoy.port, pki, Some(client), "POST", "/payments/domestic", &h).unwrap()
}

/// A token bound to `client`'s certificate, with these authorization details.
fn token(client: &Identity, details: Option<&Value>) -> String {
    let mut claims = token_claims(Some(json!({"x5t#S256": client.x5t_s256()})));
    if let Some(d) = details {
        claims["authorization_details"] = d.clone();
    }
    sign_token(&claims)
}

#[test]
fn a_payment_needs_its_consent_in_the_token_and_the_pi_role_in_the_certificate() {
    let pki = Pki::generate().unwrap();
    let up = Upstream::start().unwrap();
    let cfg = config(json!({
        "mtls": {"source": "connection"},
        "requirements": {"payments": {"binding": "mtls", "authorization_details_types": ["payment_initiation"], "psd2_roles": ["PSP_PI"]}},
        "rules": [{"prefix": "/payments", "requirement": "payments"}],
        "forward": {"claims": {"x-authorization-details": "/authorization_details"}},
    }));
    let opts = EnvoyOptions {
        tls: Some(pki.listener(&pki.gateway, false)),
        forward_client_cert: Some("SANITIZE_SET".into()),
        set_current_client_cert: vec!["cert".into()],
        ..EnvoyOptions::default()
    };
    let envoy = Envoy::start_with(&cfg, &up, &opts).unwrap();
    let details = json!([{
        "type": "payment_initiation",
        "instructedAmount": {"currency": "EUR", "amount": "123.50"},
        "creditorName": "Merchant A",
        "creditorAccount": {"iban": "DE02100100109307118603"}
    }]);

    // The PI provider with its consent: forwarded, with the granted details for the bank's API.
    let r = pay(&envoy, &pki, &pki.tpp_pi, &token(&pki.tpp_pi, Some(&details)), &[]);
    assert_eq!(r.status, 200, "{r:?}\n{}", envoy.log_tail());
    let seen = r.json();
    let forwarded: Value = serde_json::from_str(seen["x-authorization-details"].as_str().unwrap()).unwrap();
    assert_eq!(forwarded, details);

    // A token without the payment consent.
    let r = pay(&envoy, &pki, &pki.tpp_pi, &token(&pki.tpp_pi, None), &[]);
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.header("www-authenticate").unwrap().contains("insufficient_scope"));
    assert_eq!(envoy.decisions("deny", Some("authorization_details_missing")), 1);

    // An account-information provider cannot initiate, even with a consent-bearing token, and
    // even claiming the PI provider's certificate in its own XFCC header (Envoy replaces it).
    let ai_token = token(&pki.tpp_ai, Some(&details));
    let forged = format!(
        "Hash={};Cert=\"{}\"",
        pki.tpp_pi.sha256_hex(),
        std::fs::read_to_string(&pki.tpp_pi.cert)
            .unwrap()
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            })
            .collect::<String>()
    );
    for headers in [vec![], vec![("x-forwarded-client-cert", forged.as_str())]] {
        let r = pay(&envoy, &pki, &pki.tpp_ai, &ai_token, &headers);
        assert_eq!(r.status, 403, "{headers:?}: {r:?}");
    }
    assert_eq!(envoy.decisions("deny", Some("psd2_role_missing")), 2);

    // A certificate with a malformed PSD2 statement is refused as such.
    let r = pay(&envoy, &pki, &pki.tpp_bad, &token(&pki.tpp_bad, Some(&details)), &[]);
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(envoy.decisions("deny", Some("invalid_certificate")), 1);

    // A client without PSD2 statements at all (Alice): no role.
    let r = pay(&envoy, &pki, &pki.alice, &token(&pki.alice, Some(&details)), &[]);
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(envoy.decisions("deny", Some("psd2_role_missing")), 3);
}
