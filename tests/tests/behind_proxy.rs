//! Two hops, as in `envoy/behind-proxy.yaml`: a front Envoy terminates the client's mTLS and
//! forwards the certificate in XFCC (`SANITIZE_SET`, its own URI SAN as `By`) over mTLS to the
//! gateway Envoy with the filter. The gateway accepts client certificates only from the internal
//! CA that issued the front's (optional here, so that a client can reach the gateway directly and
//! be refused by the filter), keeps XFCC only on such mTLS connections (`FORWARD_ONLY`: Envoy
//! removes it from any other connection before the filters run), and the filter trusts the
//! element whose `By` is the front (`mtls.source: xfcc`, `expected_by`).
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test helpers fail the test on bad fixtures"
)]

mod common;

use common::{assert_denied, cert_token, config};
use keybound_e2e::tls::FRONT_URI;
use keybound_e2e::tls::GATEWAY_URI;
use keybound_e2e::{Envoy, EnvoyOptions, Identity, Pki, Response, TlsListener, Upstream, request_tls};
use serde_json::json;

/// The gateway (with the filter configured by `cfg`, client certificates only from the mesh CA)
/// and the front hop before it.
fn two_hops(pki: &Pki, up: &Upstream, cfg: &str) -> (Envoy, Envoy) {
    common::two_hops(pki, up, cfg, &pki.mesh_ca)
}

fn get(port: u16, pki: &Pki, client: Option<&Identity>, headers: &[(&str, &str)]) -> Response {
    request_tls(port, pki, client, "GET", "/api/accounts", headers).unwrap()
}

#[test]
fn the_gateway_trusts_xfcc_only_from_the_front_hop() {
    let pki = Pki::generate().unwrap();
    let up = Upstream::start().unwrap();
    let cfg = config(json!({"mtls": {"source": "xfcc", "element_from_end": 0, "expected_by": FRONT_URI}}));
    let (gateway, front) = two_hops(&pki, &up, &cfg);
    let auth = format!("Bearer {}", cert_token(&pki.alice.x5t_s256()));
    let forged = format!("By={FRONT_URI};Hash={}", pki.alice.sha256_hex());

    // Alice through the front hop: allowed, bound to her certificate.
    let r = get(front.port, &pki, Some(&pki.alice), &[("authorization", &auth)]);
    assert_eq!(r.status, 200, "{r:?}\n{}\n{}", front.log_tail(), gateway.log_tail());
    let seen = r.json();
    assert_eq!(seen["x-keybound-binding"], "mtls", "{seen}");
    assert_eq!(seen["x-keybound-x5t-s256"], pki.alice.x5t_s256(), "{seen}");
    let xfcc = seen["x-forwarded-client-cert"].as_str().unwrap();
    assert!(
        xfcc.starts_with(&format!("By={FRONT_URI};Hash={}", pki.alice.sha256_hex())),
        "{xfcc}"
    );
    assert!(!xfcc.contains(','), "exactly one element: {xfcc}");
    assert_eq!(gateway.decisions("allow", None), 1);

    // Bob through the front with Alice's token: the front reports Bob's certificate.
    let r = get(front.port, &pki, Some(&pki.bob), &[("authorization", &auth)]);
    assert_denied(
        "another client's certificate",
        &r,
        401,
        r#"Bearer error="invalid_token""#,
        Some("invalid_token"),
    );
    assert_eq!(gateway.decisions("deny", Some("certificate_mismatch")), 1);

    // Bob injects an XFCC naming Alice's certificate: SANITIZE_SET replaces it with his own.
    let r = get(
        front.port,
        &pki,
        Some(&pki.bob),
        &[("authorization", &auth), ("x-forwarded-client-cert", &forged)],
    );
    assert_denied(
        "XFCC injected at the front",
        &r,
        401,
        r#"Bearer error="invalid_token""#,
        Some("invalid_token"),
    );
    assert_eq!(gateway.decisions("deny", Some("certificate_mismatch")), 2);

    // No client certificate at the front, and a forged XFCC: the front removes it.
    let r = get(
        front.port,
        &pki,
        None,
        &[("authorization", &auth), ("x-forwarded-client-cert", &forged)],
    );
    assert_denied(
        "no certificate at the front",
        &r,
        401,
        r#"Bearer error="invalid_token""#,
        Some("invalid_token"),
    );
    assert_eq!(gateway.decisions("deny", Some("certificate_required")), 1);

    // Straight to the gateway, without a certificate, with a forged XFCC naming the front as
    // `By`: not an mTLS connection from the front, so Envoy drops the header before the filter.
    let r = get(
        gateway.port,
        &pki,
        None,
        &[("authorization", &auth), ("x-forwarded-client-cert", &forged)],
    );
    assert_denied(
        "XFCC injected at the gateway",
        &r,
        401,
        r#"Bearer error="invalid_token""#,
        Some("invalid_token"),
    );
    assert_eq!(gateway.decisions("deny", Some("certificate_required")), 2);
    // Several forged elements, quoted values, the gateway's own URI: all dropped the same way.
    for header in [
        format!("{forged},{forged}"),
        format!("By=\"{FRONT_URI}\";Hash={}", pki.alice.sha256_hex()),
        format!("By={GATEWAY_URI};Hash={}", pki.alice.sha256_hex()),
    ] {
        let r = get(
            gateway.port,
            &pki,
            None,
            &[("authorization", &auth), ("x-forwarded-client-cert", &header)],
        );
        assert_eq!(r.status, 401, "{header}: {r:?}");
    }
    assert_eq!(gateway.decisions("deny", Some("certificate_required")), 5);

    // Straight to the gateway with Alice's own certificate: refused in the handshake (only the
    // internal CA is trusted there), so no request reaches the filter.
    assert!(
        request_tls(
            gateway.port,
            &pki,
            Some(&pki.alice),
            "GET",
            "/api",
            &[("authorization", &auth), ("x-forwarded-client-cert", &forged)]
        )
        .is_err()
    );
    assert_eq!(gateway.decisions("allow", None), 1);
    assert_eq!(gateway.decisions("deny", None), 7);
}

#[test]
fn an_xfcc_element_from_another_hop_than_expected_by_is_refused() {
    // The gateway forwards the XFCC of the front's mTLS connection, but the filter expects a
    // different `By`: the element is not trusted. The filter answers 400 invalid_request (core's
    // code for unusable certificate data), counted as `invalid_certificate`.
    let pki = Pki::generate().unwrap();
    let up = Upstream::start().unwrap();
    let cfg = config(json!({"mtls": {"source": "xfcc", "expected_by": "spiffe://keybound.test/other-front"}}));
    let (gateway, front) = two_hops(&pki, &up, &cfg);
    let auth = format!("Bearer {}", cert_token(&pki.alice.x5t_s256()));
    let r = get(front.port, &pki, Some(&pki.alice), &[("authorization", &auth)]);
    assert_denied(
        "unexpected By",
        &r,
        400,
        r#"Bearer error="invalid_request""#,
        Some("invalid_request"),
    );
    assert_eq!(gateway.decisions("deny", Some("invalid_certificate")), 1);
    assert_eq!(gateway.decisions("allow", None), 0);
}

#[test]
fn behind_an_appending_hop_the_filter_takes_the_element_second_from_the_end() {
    // The Istio workload variant (envoy/istio/wasmplugin-workload.yaml): the gateway appends its
    // own element for the front's mesh connection (APPEND_FORWARD), so the client's certificate
    // is in the element second from the end (element_from_end 1).
    let pki = Pki::generate().unwrap();
    let up = Upstream::start().unwrap();
    let gateway_opts = EnvoyOptions {
        tls: Some(TlsListener {
            client_ca: Some(pki.mesh_ca.clone()),
            ..pki.listener(&pki.gateway, false)
        }),
        forward_client_cert: Some("APPEND_FORWARD".into()),
        set_current_client_cert: vec!["uri".into(), "subject".into(), "dns".into()],
        ..EnvoyOptions::default()
    };
    let cfg = config(json!({"mtls": {"source": "xfcc", "element_from_end": 1}}));
    let gateway = Envoy::start_with(&cfg, &up, &gateway_opts).unwrap();
    let front = common::front_hop(&pki, &gateway);
    let auth = format!("Bearer {}", cert_token(&pki.alice.x5t_s256()));

    let r = get(front.port, &pki, Some(&pki.alice), &[("authorization", &auth)]);
    assert_eq!(r.status, 200, "{r:?}\n{}", gateway.log_tail());
    let xfcc = r.json()["x-forwarded-client-cert"].as_str().unwrap().to_owned();
    let elements: Vec<&str> = xfcc.split(",By=").collect();
    assert_eq!(elements.len(), 2, "the front's and the gateway's element: {xfcc}");
    assert!(
        elements[1].starts_with(&format!("{GATEWAY_URI};Hash={}", pki.mesh_front.sha256_hex())),
        "the gateway's element describes the front's mesh certificate: {xfcc}"
    );
    // Bob through the front: his certificate is in that element.
    let r = get(front.port, &pki, Some(&pki.bob), &[("authorization", &auth)]);
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(gateway.decisions("deny", Some("certificate_mismatch")), 1);
    // A client going straight to the gateway with a two-element XFCC naming Alice: not an mTLS
    // connection from the mesh, so Envoy drops the header.
    let forged = format!(
        "Hash={},By={GATEWAY_URI};Hash={}",
        pki.alice.sha256_hex(),
        pki.mesh_front.sha256_hex()
    );
    let r = get(
        gateway.port,
        &pki,
        None,
        &[("authorization", &auth), ("x-forwarded-client-cert", &forged)],
    );
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(gateway.decisions("deny", Some("certificate_required")), 1);
    assert_eq!(gateway.decisions("allow", None), 1);
}
