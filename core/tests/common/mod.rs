//! Helpers shared by the integration tests: keys, forged proofs, issued tokens.
#![allow(dead_code)]
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test helpers fail the test on bad fixtures"
)]

use keybound_core::b64;
use keybound_core::dpop::{self, NewProof};
use keybound_core::htu::Htu;
use keybound_core::jwk::{Jwk, Jwks};
use keybound_core::jws::{self, Alg, Ed25519Signer, P256Signer, Signer};
use keybound_core::token::TokenPolicy;
use serde_json::{Value, json};

pub const NOW: u64 = 1_700_000_000;
pub const ISS: &str = "https://as.example.com";
pub const AUD: &str = "https://rs.example.com";
pub const URL: &str = "https://rs.example.com/api/accounts";
pub const TOKEN_KID: &str = "issuer-key-1";

pub fn p256(seed: u8) -> P256Signer {
    P256Signer::from_bytes(&[seed; 32]).unwrap()
}

pub fn ed25519(seed: u8) -> Ed25519Signer {
    Ed25519Signer::from_seed(&[seed; 32])
}

pub fn htu(url: &str) -> Htu {
    Htu::parse(url).unwrap()
}

/// A valid proof for `GET URL` at `NOW`, bound to `token`.
pub fn proof(signer: &dyn Signer, method: &str, url: &str, token: Option<&str>, jti: &str) -> String {
    dpop::create_proof(
        signer,
        &NewProof {
            htm: method,
            htu: url,
            iat: NOW,
            jti,
            access_token: token,
            nonce: None,
        },
    )
    .unwrap()
}

/// Signs arbitrary header and claims JSON with `signer` (the header is taken as is, `alg` too).
pub fn forge(signer: &dyn Signer, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64::encode(header.to_string().as_bytes()),
        b64::encode(claims.to_string().as_bytes())
    );
    let sig = signer.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", b64::encode(&sig))
}

pub fn public_jwk(signer: &dyn Signer) -> Value {
    serde_json::from_str(&signer.public_key().to_json()).unwrap()
}

/// The standard proof header for `signer`.
pub fn proof_header(signer: &dyn Signer) -> Value {
    json!({"typ": "dpop+jwt", "alg": signer.alg().as_str(), "jwk": public_jwk(signer)})
}

/// Standard proof claims for `GET URL` with `ath` of `token`.
pub fn proof_claims(token: &str) -> Value {
    json!({"jti": "jti-0001", "htm": "GET", "htu": URL, "iat": NOW, "ath": dpop::access_token_hash(token)})
}

pub fn issuer() -> P256Signer {
    p256(200)
}

pub fn issuer_jwks() -> Jwks {
    let s = issuer();
    Jwks::new(vec![Jwk::new(
        s.public_key().clone(),
        Some(TOKEN_KID.into()),
        Some(Alg::Es256),
    )])
}

pub fn policy() -> TokenPolicy {
    TokenPolicy::new(ISS, vec![AUD.into()])
}

/// RFC 9068 claims valid at `NOW`.
pub fn token_claims(cnf: Option<Value>) -> Value {
    let mut c = json!({
        "iss": ISS, "aud": AUD, "sub": "alice", "client_id": "client-1",
        "iat": NOW - 10, "exp": NOW + 600, "jti": "token-1", "scope": "accounts:read payments"
    });
    if let Some(cnf) = cnf {
        c["cnf"] = cnf;
    }
    c
}

/// An access token signed by the issuer with `claims`.
pub fn token(claims: &Value) -> String {
    jws::sign_json(&issuer(), Some("at+jwt"), Some(TOKEN_KID), claims).unwrap()
}

/// An access token bound to `signer`'s DPoP key.
pub fn dpop_token(signer: &dyn Signer) -> String {
    token(&token_claims(Some(
        json!({"jkt": signer.public_key().thumbprint().to_string()}),
    )))
}
