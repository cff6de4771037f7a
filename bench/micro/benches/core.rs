//! keybound-core micro-benchmarks: what one gateway request costs in protocol work.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, reason = "benchmark code")]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use keybound_core::Part;
use keybound_core::cert::{Xfcc, XfccPolicy};
use keybound_core::dpop::{self, NonceCheck, ProofPolicy, ProofTarget};
use keybound_core::jwk::PublicKey;
use keybound_core::jws::RustCrypto;
use keybound_core::token;
use keybound_micro::{NOW, fixtures};

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
}

criterion_group!(core, benches);
criterion_main!(core);
