//! Certificate-bound tokens (RFC 8705) over Envoy's own downstream TLS: the filter takes the
//! client certificate from the connection (`mtls.source: connection`).
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test helpers fail the test on bad fixtures"
)]

mod common;

use common::{ALGS, assert_denied, cert_token, config, dpop_token, p256, proof};
use keybound_e2e::{Envoy, Identity, Response};
use keybound_e2e::{EnvoyOptions, Pki, TlsListener, Upstream, request_tls};
use serde_json::json;

fn get(envoy: &Envoy, pki: &Pki, client: Option<&Identity>, headers: &[(&str, &str)]) -> Response {
    request_tls(envoy.port, pki, client, "GET", "/api/accounts", headers).unwrap()
}

#[test]
fn certificate_bound_tokens_need_the_same_certificate_on_the_connection() {
    let pki = Pki::generate().unwrap();
    let up = Upstream::start().unwrap();
    let cfg = config(json!({"mtls": {"source": "connection"}}));
    // Gateway A asks for (optional) client certificates; gateway B is plain TLS (asks for none).
    let mtls = EnvoyOptions {
        tls: Some(pki.listener(&pki.gateway, false)),
        ..EnvoyOptions::default()
    };
    let plain = EnvoyOptions {
        tls: Some(TlsListener {
            cert: pki.gateway.cert.clone(),
            key: pki.gateway.key.clone(),
            ..TlsListener::default()
        }),
        ..EnvoyOptions::default()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Envoy::start_with(&cfg, &up, &mtls).unwrap());
        let b = s.spawn(|| Envoy::start_with(&cfg, &up, &plain).unwrap());
        (a.join().unwrap(), b.join().unwrap())
    });
    let alice_token = cert_token(&pki.alice.x5t_s256());
    let auth = format!("Bearer {alice_token}");

    // Alice's token over Alice's certificate: allowed; the upstream sees the binding, not the
    // client's copies of the claim headers.
    let r = get(
        &a,
        &pki,
        Some(&pki.alice),
        &[
            ("authorization", &auth),
            ("x-keybound-x5t-s256", "spoofed"),
            ("x-keybound-binding", "none"),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}\n{}", a.log_tail());
    let seen = r.json();
    assert_eq!(seen["x-keybound-binding"], "mtls", "{seen}");
    assert_eq!(seen["x-keybound-x5t-s256"], pki.alice.x5t_s256(), "{seen}");
    assert_eq!(seen["x-keybound-sub"], "alice");
    assert_eq!(a.decisions("allow", None), 1);

    // Bob's certificate with Alice's token: the certificate does not match.
    let r = get(&a, &pki, Some(&pki.bob), &[("authorization", &auth)]);
    assert_denied(
        "another client's certificate",
        &r,
        401,
        r#"Bearer error="invalid_token""#,
        Some("invalid_token"),
    );
    assert_eq!(a.decisions("deny", Some("certificate_mismatch")), 1);

    // Bob again, now also claiming Alice's certificate in an XFCC header: with source
    // `connection` the header is ignored (and Envoy's default SANITIZE drops it anyway).
    let xfcc = format!("By=spiffe://keybound.test/front;Hash={}", pki.alice.sha256_hex());
    let r = get(
        &a,
        &pki,
        Some(&pki.bob),
        &[("authorization", &auth), ("x-forwarded-client-cert", &xfcc)],
    );
    assert_denied(
        "another client's certificate and a forged XFCC",
        &r,
        401,
        r#"Bearer error="invalid_token""#,
        Some("invalid_token"),
    );
    assert_eq!(a.decisions("deny", Some("certificate_mismatch")), 2);

    // No certificate on the connection.
    let r = get(&a, &pki, None, &[("authorization", &auth)]);
    assert_denied(
        "no certificate",
        &r,
        401,
        r#"Bearer error="invalid_token""#,
        Some("invalid_token"),
    );
    assert_eq!(a.decisions("deny", Some("certificate_required")), 1);

    // Plain TLS: the server asks for no certificate, so Alice's is never sent.
    let r = get(&b, &pki, Some(&pki.alice), &[("authorization", &auth)]);
    assert_denied(
        "plain TLS",
        &r,
        401,
        r#"Bearer error="invalid_token""#,
        Some("invalid_token"),
    );
    assert_eq!(b.decisions("deny", Some("certificate_required")), 1);
    assert_eq!(b.decisions("allow", None), 0);

    // A DPoP-bound token still works over mTLS (the certificate is not needed for it).
    let key = p256(7);
    let t = dpop_token(&key);
    let p = proof(&key, "GET", "https://rs.example.com/api/accounts", &t);
    let r = get(
        &a,
        &pki,
        Some(&pki.alice),
        &[("authorization", &format!("DPoP {t}")), ("dpop", &p)],
    );
    assert_eq!(r.status, 200, "{r:?}\n{}", a.log_tail());
    assert_eq!(r.json()["x-keybound-binding"], "dpop");
    // ... but not with the Bearer scheme, certificate or not.
    let r = get(&a, &pki, Some(&pki.alice), &[("authorization", &format!("Bearer {t}"))]);
    assert_denied(
        "DPoP-bound token as Bearer over mTLS",
        &r,
        401,
        &format!(r#"DPoP error="invalid_token", {ALGS}"#),
        Some("invalid_token"),
    );
    assert_eq!(a.decisions("allow", None), 2);
}

#[test]
fn a_required_client_certificate_is_enforced_by_envoy_before_the_filter() {
    let pki = Pki::generate().unwrap();
    let up = Upstream::start().unwrap();
    let opts = EnvoyOptions {
        tls: Some(pki.listener(&pki.gateway, true)),
        ..EnvoyOptions::default()
    };
    let envoy = Envoy::start_with(&config(json!({"mtls": {"source": "connection"}})), &up, &opts).unwrap();
    let auth = format!("Bearer {}", cert_token(&pki.alice.x5t_s256()));
    // Without a certificate the handshake fails: no HTTP response at all.
    let err = request_tls(envoy.port, &pki, None, "GET", "/api", &[("authorization", &auth)]).unwrap_err();
    assert!(!err.is_empty());
    assert_eq!(envoy.decisions("deny", None), 0);
    let r = get(&envoy, &pki, Some(&pki.alice), &[("authorization", &auth)]);
    assert_eq!(r.status, 200, "{r:?}");
}
