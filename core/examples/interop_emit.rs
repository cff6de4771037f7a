//! Interop, keybound-core → jwcrypto: prints, as one JSON document on stdout, DPoP proofs and
//! RFC 9068 access tokens made with keybound-core's pure-Rust signers (ES256 and EdDSA), with the
//! public JWKs, core's RFC 7638 thumbprints, the issuer JWKS and the claims a verifier must find.
//!
//! `tests/interop/check.py` verifies the output with Python's `jwcrypto`:
//!
//! ```text
//! cargo run -q -p keybound-core --example interop_emit > /tmp/core.json
//! python core/tests/interop/check.py /tmp/core.json
//! ```
//!
//! The keys are fixed test keys (so the output is the same on every run): never use them.

use keybound_core::dpop::{self, NewProof};
use keybound_core::jwk::{Jwk, PublicKey};
use keybound_core::jws::{self, Ed25519Signer, P256Signer, Signer};
use serde_json::{Value, json};

const ISSUER: &str = "https://as.example.com";
const AUDIENCE: &str = "https://rs.example.com";
const HTM: &str = "POST";
/// The request URL handed to `create_proof`, which must drop the query.
const REQUEST_URL: &str = "https://rs.example.com/api/resource?x=1";
/// The `htu` a verifier must find in the proof.
const HTU: &str = "https://rs.example.com/api/resource";
const IAT: u64 = 1_700_000_000;
const EXP: u64 = IAT + 3600;
const NOW: u64 = IAT + 5;
const SCOPE: &str = "read write";

/// Fixed test keys: P-256 scalars and Ed25519 seeds. Test keys only, never use them.
const ES256_DPOP_KEY: [u8; 32] = [0x11; 32];
const ES256_ISSUER_KEY: [u8; 32] = [0x12; 32];
const EDDSA_DPOP_SEED: [u8; 32] = [0x21; 32];
const EDDSA_ISSUER_SEED: [u8; 32] = [0x22; 32];

fn parse_json(s: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str(s)
}

/// One algorithm's proof, token and expectations.
fn case(dpop_key: &dyn Signer, issuer_key: &dyn Signer) -> Result<Value, Box<dyn std::error::Error>> {
    let alg = dpop_key.alg().as_str();
    let lower = alg.to_ascii_lowercase();
    let kid = format!("core-issuer-{lower}-1");
    let jkt = dpop_key.public_key().thumbprint().to_string();

    let claims = json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": format!("user-{lower}"),
        "client_id": format!("client-{lower}"),
        "iat": IAT,
        "exp": EXP,
        "jti": format!("core-{lower}-token-1"),
        "scope": SCOPE,
        "cnf": { "jkt": jkt },
    });
    let token = jws::sign_json(issuer_key, Some("at+jwt"), Some(&kid), &claims)?;

    let jti = format!("core-{lower}-proof-1");
    let proof = dpop::create_proof(
        dpop_key,
        &NewProof {
            htm: HTM,
            htu: REQUEST_URL,
            iat: IAT,
            jti: &jti,
            access_token: Some(&token),
            nonce: None,
        },
    )?;

    let issuer_jwk = Jwk::new(
        issuer_key.public_key().clone(),
        Some(kid.clone()),
        Some(issuer_key.alg()),
    );
    Ok(json!({
        "alg": alg,
        "dpop_jwk": parse_json(&dpop_key.public_key().to_json())?,
        "dpop_jkt": jkt,
        "proof": proof,
        "expected_proof_header": { "typ": dpop::TYP, "alg": alg },
        "expected_proof_claims": {
            "jti": jti,
            "htm": HTM,
            "htu": HTU,
            "iat": IAT,
            "ath": dpop::access_token_hash(&token),
        },
        "request_url": REQUEST_URL,
        "issuer_jwks": { "keys": [parse_json(&issuer_jwk.to_json())?] },
        "token": token,
        "expected_token_header": { "typ": "at+jwt", "alg": alg, "kid": kid },
        "expected_token_claims": claims,
    }))
}

fn thumbprint_of(key: &PublicKey) -> String {
    key.thumbprint().to_string()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let es256_dpop = P256Signer::from_bytes(&ES256_DPOP_KEY)?;
    let es256_issuer = P256Signer::from_bytes(&ES256_ISSUER_KEY)?;
    let eddsa_dpop = Ed25519Signer::from_seed(&EDDSA_DPOP_SEED);
    let eddsa_issuer = Ed25519Signer::from_seed(&EDDSA_ISSUER_SEED);
    // the DPoP and issuer keys must differ, or a mix-up would go unnoticed
    if thumbprint_of(es256_dpop.public_key()) == thumbprint_of(es256_issuer.public_key())
        || thumbprint_of(eddsa_dpop.public_key()) == thumbprint_of(eddsa_issuer.public_key())
    {
        return Err("test keys must differ".into());
    }
    let doc = json!({
        "generated_by": concat!("keybound-core ", env!("CARGO_PKG_VERSION"), " examples/interop_emit.rs"),
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "now": NOW,
        "cases": [case(&es256_dpop, &es256_issuer)?, case(&eddsa_dpop, &eddsa_issuer)?],
    });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}
