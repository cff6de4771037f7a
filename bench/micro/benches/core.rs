//! keybound-core micro-benchmarks: what one gateway request costs in protocol work.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, reason = "benchmark code")]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use keybound_core::Part;
use keybound_core::cert::{Xfcc, XfccPolicy};
use keybound_core::dpop::{self, NonceCheck, ProofPolicy, ProofTarget};
use keybound_core::jwk::PublicKey;
use keybound_core::jws::{Alg, RustCrypto, Verifier};
use keybound_core::token;
use keybound_filter::gate::{Outcome, Request};
use keybound_micro::gate::{EncodeOnly, gate_fixtures};
use keybound_micro::{NOW, fixtures, rsa_modulus, rsa_proof};

fn benches(c: &mut Criterion) {
    let f = fixtures().unwrap();
    let policy = ProofPolicy::default();
    let target = ProofTarget {
        method: "GET",
        htu: &f.htu,
        access_token: Some(&f.token),
    };
    c.bench_function("proof verify (ES256, RustCrypto)", |b| {
        b.iter(|| dpop::verify_proof(black_box(&f.proof), &target, &policy, NonceCheck::Off, NOW, &RustCrypto).unwrap())
    });
    c.bench_function("token verify (ES256, RustCrypto)", |b| {
        b.iter(|| token::verify_jwt(black_box(&f.token), &f.jwks, &f.policy, NOW, &RustCrypto).unwrap())
    });
    c.bench_function("JWK parse + RFC 7638 thumbprint (P-256)", |b| {
        b.iter(|| {
            PublicKey::from_json(black_box(f.client_jwk.as_bytes()), Part::Proof)
                .unwrap()
                .thumbprint()
        })
    });
    c.bench_function("access token hash (ath, SHA-256)", |b| {
        b.iter(|| dpop::access_token_hash(black_box(&f.token)))
    });
    let xfcc = XfccPolicy {
        element_from_end: 1,
        expected_by: Some("spiffe://keybound.test/front".into()),
    };
    c.bench_function("XFCC parse + select + thumbprint", |b| {
        b.iter(|| Xfcc::thumbprint(black_box(&f.xfcc), &xfcc).unwrap())
    });
    rejected_proof_benches(c, &policy);
}

/// The worst a client can make the gateway verify before the token is looked at: a proof with
/// an RSA key and a bad signature. Before the proof-key cap (issue 12, item 9) that was an
/// 8192-bit key with e = 2^32 - 1; now it is a 4096-bit key with e = 65537, and anything larger
/// is refused while parsing.
fn rejected_proof_benches(c: &mut Criterion, policy: &ProofPolicy) {
    let htu = keybound_core::htu::Htu::parse("https://rs.example.com/api").unwrap();
    let target = ProofTarget {
        method: "GET",
        htu: &htu,
        access_token: None,
    };
    let reject = |proof: &str| dpop::verify_proof(proof, &target, policy, NonceCheck::Off, NOW, &RustCrypto);
    let worst = rsa_proof(4096, &[1, 0, 1]);
    assert!(matches!(reject(&worst), Err(keybound_core::Error::BadSignature { .. })));
    c.bench_function(
        "rejected proof: RSA-4096, e = 65537, bad signature (worst after the cap)",
        |b| b.iter(|| reject(black_box(&worst)).unwrap_err()),
    );
    let refused = rsa_proof(8192, &[0xff, 0xff, 0xff, 0xff]);
    assert!(matches!(reject(&refused), Err(keybound_core::Error::InvalidKey { .. })));
    c.bench_function("rejected proof: RSA-8192, e = 2^32 - 1 (refused while parsing)", |b| {
        b.iter(|| reject(black_box(&refused)).unwrap_err())
    });
    // The signature check such a proof cost before the cap: the key parsed, then verified.
    let key = PublicKey::Rsa {
        n: rsa_modulus(8192),
        e: vec![0xff, 0xff, 0xff, 0xff],
    };
    let message = b"header.payload";
    let signature = vec![0x11u8; 1024];
    c.bench_function(
        "PS256 verify, RSA-8192, e = 2^32 - 1 (worst proof key before the cap)",
        |b| b.iter(|| RustCrypto.verify(Alg::Ps256, black_box(&key), message, &signature)),
    );
}

/// The headers Envoy hands the filter (the SDK turns them into owned strings, so building them is
/// part of each decision).
fn headers(token: &str, proof: Option<&str>) -> Vec<(String, String)> {
    let mut h = vec![
        (":authority".to_owned(), "rs.example.com".to_owned()),
        (":path".into(), "/api".into()),
        (":method".into(), "GET".into()),
        (":scheme".into(), "https".into()),
        ("user-agent".into(), "keybound-bench".into()),
        ("x-forwarded-proto".into(), "https".into()),
        ("x-request-id".into(), "9b0e7c2e-8f5d-4a43-9d1e-3c1f0f7b2a11".into()),
    ];
    match proof {
        Some(p) => {
            h.push(("authorization".into(), format!("DPoP {token}")));
            h.push(("dpop".into(), p.to_owned()));
        }
        None => h.push(("authorization".into(), format!("Bearer {token}"))),
    }
    h
}

fn request<'a>(headers: &'a [(String, String)], digest: Option<&'a str>) -> Request<'a> {
    Request {
        method: "GET",
        scheme: "https",
        authority: "rs.example.com",
        path: "/api",
        headers,
        peer_cert_digest: digest,
        peer_uri_san: None,
        route_name: None,
        route_requirement: None,
        now: NOW,
    }
}

/// The filter's whole decision as it runs in the wasm VM, without the host calls around it and
/// without BoringSSL's signature check (the verifier only encodes the `verify_signature` call).
fn gate_benches(c: &mut Criterion) {
    const PROOFS: usize = 2_000;
    let f = gate_fixtures(PROOFS).unwrap();
    c.bench_function("filter decision (DPoP, fresh proof)", |b| {
        b.iter_custom(|iters| {
            let mut spent = std::time::Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                // A new gate and replay cache for each pass over the proofs (they are unique
                // within one pass); the token is verified once, then cached, as in Envoy.
                let (mut gate, store) = f.gate();
                let warm = headers(&f.dpop_token, Some(f.proofs.last().unwrap()));
                assert!(matches!(
                    gate.decide(&request(&warm, None), &store, &EncodeOnly),
                    Outcome::Allow { .. }
                ));
                let n = left.min(PROOFS as u64 - 1);
                let mut allowed = 0;
                let started = std::time::Instant::now();
                for proof in f.proofs.iter().take(n as usize) {
                    let h = headers(&f.dpop_token, Some(proof));
                    let out = gate.decide(&request(&h, None), &store, &EncodeOnly);
                    allowed += u64::from(matches!(out, Outcome::Allow { .. }));
                    black_box(out);
                }
                spent += started.elapsed();
                // Every fresh proof was accepted: the loop measured the full path.
                assert_eq!(allowed, n);
                left -= n;
            }
            spent
        })
    });
    let (mut gate, store) = f.gate();
    c.bench_function("filter decision (cert-bound token, cached)", |b| {
        b.iter(|| {
            let h = headers(&f.cert_token, None);
            let out = gate.decide(&request(&h, Some(&f.cert_digest)), &store, &EncodeOnly);
            assert!(matches!(out, Outcome::Allow { .. }));
            black_box(out)
        })
    });
}

criterion_group!(core, benches, gate_benches);
criterion_main!(core);
