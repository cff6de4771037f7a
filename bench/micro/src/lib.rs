//! Fixtures for the keybound-core micro-benchmarks (`benches/core.rs`): a signed DPoP proof and
//! access token, the keys to verify them, and an XFCC header, all built with keybound-core.
//!
//! Run natively with `cargo bench -p keybound-micro`, and inside V8 with `cargo xtask bench
//! --micro` (builds the bench for `wasm32-wasip1` and runs it under node's WASI).

pub mod gate;

use keybound_core::dpop::{self, NewProof};
use keybound_core::htu::Htu;
use keybound_core::jwk::{Jwk, Jwks};
use keybound_core::jws::{self, P256Signer, Signer};
use keybound_core::token::TokenPolicy;

/// The instant every fixture is valid at.
pub const NOW: u64 = 1_800_000_000;

/// Everything a benchmark needs.
pub struct Fixtures {
    /// A DPoP proof for `GET https://rs.example.com/api` bound to `token`.
    pub proof: String,
    /// An RFC 9068 access token bound to the proof's key.
    pub token: String,
    /// The issuer's keys.
    pub jwks: Jwks,
    /// The token policy.
    pub policy: TokenPolicy,
    /// The request URI.
    pub htu: Htu,
    /// The client's public JWK as JSON.
    pub client_jwk: String,
    /// A two-element XFCC header.
    pub xfcc: String,
}

/// Builds the fixtures.
///
/// # Errors
/// If signing fails (it does not with these fixed keys).
pub fn fixtures() -> Result<Fixtures, String> {
    let issuer = P256Signer::from_bytes(&[200; 32]).map_err(|e| e.to_string())?;
    let client = P256Signer::from_bytes(&[1; 32]).map_err(|e| e.to_string())?;
    let claims = serde_json::json!({"iss": "https://as.example.com", "aud": "https://rs.example.com",
        "sub": "alice", "client_id": "c1", "iat": NOW, "exp": NOW + 600, "jti": "t1", "scope": "read",
        "cnf": {"jkt": client.public_key().thumbprint().to_string()}});
    let token = jws::sign_json(&issuer, Some("at+jwt"), Some("k1"), &claims).map_err(|e| e.to_string())?;
    let proof = dpop::create_proof(
        &client,
        &NewProof {
            htm: "GET",
            htu: "https://rs.example.com/api",
            iat: NOW,
            jti: "e1j3V_bKic8-LAEB",
            access_token: Some(&token),
            nonce: None,
        },
    )
    .map_err(|e| e.to_string())?;
    let jwks = Jwks::new(vec![Jwk::new(issuer.public_key().clone(), Some("k1".into()), None)]);
    let xfcc = concat!(
        "By=spiffe://keybound.test/front;Hash=",
        "468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688;",
        "Subject=\"CN=alice,O=Example\";URI=spiffe://keybound.test/client/alice,",
        "By=spiffe://keybound.test/gateway;Hash=",
        "0f3ae2b31bb5c2e8e5e0a4d5f9c3b1a2d4e6f80123456789abcdef0123456789;URI=spiffe://keybound.test/front"
    )
    .to_owned();
    Ok(Fixtures {
        proof,
        token,
        jwks,
        policy: TokenPolicy::new("https://as.example.com", vec!["https://rs.example.com".into()]),
        htu: Htu::parse("https://rs.example.com/api").map_err(|e| e.to_string())?,
        client_jwk: client.public_key().to_json(),
        xfcc,
    })
}

/// An RSA modulus of `bits` bits (top bit set, odd): filler, not a product of primes. A
/// verification with it does all the work of a real one and then fails.
pub fn rsa_modulus(bits: usize) -> Vec<u8> {
    let mut n = vec![0xA5u8; bits / 8];
    if let Some(first) = n.first_mut() {
        *first = 0xC3;
    }
    if let Some(last) = n.last_mut() {
        *last |= 1;
    }
    n
}

/// A DPoP proof for `GET https://rs.example.com/api` (no access token) whose header carries an
/// RSA key (`PS256`) with a `bits`-bit modulus and exponent `e`, and a signature that does not
/// verify: the most work an unauthenticated client can make the gateway do for one proof with
/// such a key.
pub fn rsa_proof(bits: usize, e: &[u8]) -> String {
    use keybound_core::b64;
    let header = serde_json::json!({"typ": "dpop+jwt", "alg": "PS256",
        "jwk": {"kty": "RSA", "n": b64::encode(&rsa_modulus(bits)), "e": b64::encode(e)}});
    let claims = serde_json::json!({"jti": "rsa", "htm": "GET", "htu": "https://rs.example.com/api", "iat": NOW});
    format!(
        "{}.{}.{}",
        b64::encode(header.to_string().as_bytes()),
        b64::encode(claims.to_string().as_bytes()),
        b64::encode(&vec![0x11u8; bits / 8])
    )
}
