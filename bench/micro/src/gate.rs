//! Fixtures for the filter-decision benchmarks: a [`Gate`] configured like the gateway benchmark's
//! DPoP and mTLS scenarios, the filter's in-memory shared-data store, and a verifier
//! that does the filter's half of an Envoy `verify_signature` call (DER signature, SPKI key,
//! protobuf arguments) and accepts, so that a benchmark measures what runs inside the wasm VM
//! and leaves out what BoringSSL does in Envoy.

use keybound_core::dpop::{self, NewProof};
use keybound_core::jwk::PublicKey;
use keybound_core::jws::{self, Alg, P256Signer, Signer, Verifier};
use keybound_filter::config::Config;
use keybound_filter::envoy_crypto::es256_verify_args;
use keybound_filter::gate::Gate;
use keybound_filter::replay::MemoryStore;
use serde_json::{Value, json};

use crate::NOW;

const ISS: &str = "https://as.example.com";
const AUD: &str = "https://rs.example.com";

/// The filter's side of Envoy's `verify_signature` for ES256 (the arguments it encodes), then
/// "valid": BoringSSL's work is not part of the wasm VM's.
pub struct EncodeOnly;

impl Verifier for EncodeOnly {
    fn verify(&self, alg: Alg, key: &PublicKey, message: &[u8], signature: &[u8]) -> bool {
        match (alg, key) {
            (Alg::Es256, PublicKey::P256 { x, y }) => {
                std::hint::black_box(es256_verify_args(x, y, message, signature)).is_some()
            }
            _ => false,
        }
    }
}

/// A gate, its requests' tokens and proofs.
pub struct GateFixtures {
    /// Configuration of the gateway benchmark (inline issuer key, defaults otherwise), with
    /// certificates from the connection.
    pub config: Value,
    /// A DPoP-bound access token.
    pub dpop_token: String,
    /// Fresh proofs for `GET https://rs.example.com/api`, each with its own `jti`.
    pub proofs: Vec<String>,
    /// A certificate-bound access token.
    pub cert_token: String,
    /// The client certificate's digest as Envoy gives it (lower-case hex SHA-256).
    pub cert_digest: String,
}

impl GateFixtures {
    /// A new gate and a store with its replay buckets created.
    ///
    /// # Panics
    /// If the configuration is refused (it is not).
    #[allow(clippy::expect_used, reason = "fixed, valid configuration")]
    pub fn gate(&self) -> (Gate, MemoryStore) {
        let gate = Gate::new(Config::parse(self.config.to_string().as_bytes()).expect("valid configuration"));
        let store = MemoryStore::default();
        gate.prepare_shared(&store).expect("in-memory store");
        (gate, store)
    }
}

/// Builds the gate fixtures with `proofs` distinct proofs.
///
/// # Errors
/// If signing fails (it does not with these fixed keys).
pub fn gate_fixtures(proofs: usize) -> Result<GateFixtures, String> {
    let issuer = P256Signer::from_bytes(&[200; 32]).map_err(|e| e.to_string())?;
    let client = P256Signer::from_bytes(&[1; 32]).map_err(|e| e.to_string())?;
    let mut jwk: Value = serde_json::from_str(&issuer.public_key().to_json()).map_err(|e| e.to_string())?;
    if let Some(members) = jwk.as_object_mut() {
        members.insert("kid".into(), json!("k1"));
    }
    let config = json!({
        "issuers": [{"issuer": ISS, "audiences": [AUD], "jwks": {"keys": [jwk]}}],
        "mtls": {"source": "connection"},
        "dpop": {"origins": ["https://rs.example.com"]},
    });
    let cert_digest = "468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688".to_owned();
    let x5t = keybound_core::cert::X5tS256::from_hex_digest(&cert_digest).map_err(|e| e.to_string())?;
    let token = |cnf: Value| {
        let claims = json!({"iss": ISS, "aud": AUD, "sub": "alice", "client_id": "bench", "iat": NOW - 5,
            "exp": NOW + 3600, "jti": "t1", "scope": "read write", "cnf": cnf});
        jws::sign_json(&issuer, Some("at+jwt"), Some("k1"), &claims).map_err(|e| e.to_string())
    };
    let dpop_token = token(json!({"jkt": client.public_key().thumbprint().to_string()}))?;
    let cert_token = token(json!({"x5t#S256": x5t.to_string()}))?;
    let proofs = (0..proofs)
        .map(|i| {
            dpop::create_proof(
                &client,
                &NewProof {
                    htm: "GET",
                    htu: "https://rs.example.com/api",
                    iat: NOW,
                    jti: &format!("bench-{i:08}-{:016x}", (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                    access_token: Some(&dpop_token),
                    nonce: None,
                },
            )
            .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    Ok(GateFixtures {
        config,
        dpop_token,
        proofs,
        cert_token,
        cert_digest,
    })
}
