//! Writes the generated seed inputs of the `jws`, `jwk` and `dpop` fuzz targets.
//!
//! Run from the repository root (stable is fine):
//! `cargo run --manifest-path fuzz/Cargo.toml --bin make_seeds`
//!
//! Every signature is deterministic (RFC 6979 ES256, Ed25519, PKCS#1 v1.5 RS256, and PS256 with
//! salt from a fixed SHA-256 counter stream), so re-running it rewrites byte-identical files. The
//! keys are published test keys: RFC 7515 A.2 (RSA) and A.3 (P-256), RFC 8037 A.1 (Ed25519).
//!
//! The DPoP seeds are real proofs for the target's request (`GET https://rs.example.com/r`,
//! access token `tok`, now 1_700_000_000), valid ones and ones failing exactly one later check,
//! so that mutations start from inputs that already pass the signature and reach the claim checks.
//! Each seed is also asserted to give the documented result.

use std::cell::RefCell;
use std::convert::Infallible;
use std::path::{Path, PathBuf};

use keybound_core::jwk::PublicKey;
use keybound_core::jws::{Alg, Ed25519Signer, P256Signer, SignError, Signer, UnsignedJws};
use keybound_core::{Error, Part, b64, dpop};
use keybound_fuzz::{DPOP_ACCESS_TOKEN, DPOP_HTU, DPOP_NOW, check_dpop, check_jwk, check_jws};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

const RFC7515_A2_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
const RFC7515_A2_D: &str = "Eq5xpGnNCivDflJsRQBXHx1hdR1k6Ulwe2JZD50LpXyWPEAeP88vLNO97IjlA7_GQ5sLKMgvfTeXZx9SE-7YwVol2NXOoAJe46sui395IW_GO-pWJ1O0BkTGoVEn2bKVRUCgu-GjBVaYLU6f3l9kJfFNS3E0QbVdxzubSu3Mkqzjkn439X0M_V51gfpRLI9JYanrC4D4qAdGcopV_0ZHHzQlBjudU2QvXt4ehNYTCBr6XCLQUShb1juUO1ZdiYoFaFQT5Tw8bGUl_x_jTj3ccPDVZFD9pIuhLhBOneufuBiB4cS98l2SR_RQyGWSeWjnczT0QU91p1DhOVRuOopznQ";
const RFC7515_A2_P: &str = "4BzEEOtIpmVdVEZNCqS7baC4crd0pqnRH_5IB3jw3bcxGn6QLvnEtfdUdiYrqBdss1l58BQ3KhooKeQTa9AB0Hw_Py5PJdTJNPY8cQn7ouZ2KKDcmnPGBY5t7yLc1QlQ5xHdwW1VhvKn-nXqhJTBgIPgtldC-KDV5z-y2XDwGUc";
const RFC7515_A2_Q: &str = "uQPEfgmVtjL0Uyyx88GZFF1fOunH3-7cepKmtH4pxhtCoHqpWmT8YAmZxaewHgHAjLYsp1ZSe7zFYHj7C6ul7TjeLQeZD_YwD66t62wDmpe_HlB-TnBA-njbglfIsRLtXlnDzQkv5dTltRJ11BKBBypeeF6689rjcJIDEz9RWdc";
/// RFC 7515 A.2: the RS256 signature of this signing input under the key above.
const RFC7515_A2_INPUT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
const RFC7515_A2_SIG: &str = "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";
/// RFC 7515 A.3: the P-256 private key `d`.
const RFC7515_A3_D: &str = "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI";
/// RFC 8037 A.1: the Ed25519 seed `d`.
const RFC8037_A1_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// A deterministic byte stream (SHA-256 in counter mode) standing in for a random source, so
/// the PS256 salt, and so the seed files, are the same on every run. Only for seeds.
struct CounterRng(u64);

impl rand_core::TryRng for CounterRng {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(32) {
            self.0 += 1;
            let block = Sha256::digest(self.0.to_be_bytes());
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
        Ok(())
    }
}

impl rand_core::TryCryptoRng for CounterRng {}

/// An RSA software signer (RS256 or PS256) for the RFC 7515 A.2 key.
struct RsaSigner {
    key: rsa::RsaPrivateKey,
    public: PublicKey,
    alg: Alg,
    rng: RefCell<CounterRng>,
}

impl RsaSigner {
    fn rfc7515_a2(alg: Alg) -> Res<Self> {
        let int = |s: &str| -> Res<rsa::BoxedUint> {
            let bytes = b64::decode(s)?;
            Ok(rsa::BoxedUint::from_be_slice(&bytes, (bytes.len() * 8) as u32).map_err(|e| format!("{e:?}"))?)
        };
        let key = rsa::RsaPrivateKey::from_components(
            int(RFC7515_A2_N)?,
            int("AQAB")?,
            int(RFC7515_A2_D)?,
            vec![int(RFC7515_A2_P)?, int(RFC7515_A2_Q)?],
        )?;
        let public = PublicKey::from_json(
            format!(r#"{{"kty":"RSA","n":"{RFC7515_A2_N}","e":"AQAB"}}"#).as_bytes(),
            Part::Other,
        )?;
        Ok(RsaSigner {
            key,
            public,
            alg,
            rng: RefCell::new(CounterRng(0)),
        })
    }
}

impl Signer for RsaSigner {
    fn alg(&self) -> Alg {
        self.alg
    }
    fn public_key(&self) -> &PublicKey {
        &self.public
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        use signature::{RandomizedSigner, SignatureEncoding, Signer as _};
        match self.alg {
            Alg::Rs256 => {
                let sk = rsa::pkcs1v15::SigningKey::<Sha256>::new(self.key.clone());
                Ok(sk.try_sign(message).map_err(|_| SignError)?.to_vec())
            }
            Alg::Ps256 => {
                let sk = rsa::pss::SigningKey::<Sha256>::new(self.key.clone());
                let mut rng = self.rng.borrow_mut();
                Ok(sk
                    .try_sign_with_rng(&mut *rng, message)
                    .map_err(|_| SignError)?
                    .to_vec())
            }
            _ => Err(SignError),
        }
    }
}

fn seed32(s: &str) -> Res<[u8; 32]> {
    b64::decode(s)?.try_into().map_err(|_| "not 32 bytes".into())
}

/// A compact JWS with an arbitrary header (the signer's `alg` is set) and payload.
fn sign(signer: &dyn Signer, header: Value, payload: &[u8]) -> Res<String> {
    let Value::Object(header) = header else {
        return Err("header must be an object".into());
    };
    Ok(UnsignedJws::new(signer.alg(), header, payload)
        .sign(signer)
        .map_err(|_| "signing failed")?)
}

fn jwk_value(signer: &dyn Signer) -> Res<Value> {
    Ok(serde_json::from_str(&signer.public_key().to_json())?)
}

/// Claims of a proof for the dpop target; `edit` changes them before signing.
fn claims(edit: impl FnOnce(&mut Map<String, Value>)) -> Vec<u8> {
    let mut c = Map::new();
    c.insert("jti".into(), "e1j3V_bKic8-LAEB_lccD0G".into());
    c.insert("htm".into(), "GET".into());
    c.insert("htu".into(), DPOP_HTU.into());
    c.insert("iat".into(), DPOP_NOW.into());
    c.insert("ath".into(), dpop::access_token_hash(DPOP_ACCESS_TOKEN).into());
    edit(&mut c);
    Value::Object(c).to_string().into_bytes()
}

fn dpop_header(signer: &dyn Signer) -> Res<Value> {
    Ok(json!({"typ": "dpop+jwt", "jwk": jwk_value(signer)?}))
}

fn verify_seed(proof: &str) -> Result<dpop::VerifiedProof, Error> {
    let htu = keybound_core::htu::Htu::parse(DPOP_HTU)?;
    let target = dpop::ProofTarget {
        method: "GET",
        htu: &htu,
        access_token: Some(DPOP_ACCESS_TOKEN),
    };
    dpop::verify_proof(
        proof,
        &target,
        &dpop::ProofPolicy::default(),
        dpop::NonceCheck::Off,
        DPOP_NOW,
        &keybound_core::jws::RustCrypto,
    )
}

struct Out {
    dir: PathBuf,
}

impl Out {
    fn write(&self, target: &str, name: &str, data: &str) -> Res<()> {
        let dir = self.dir.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), data)?;
        println!(
            "{}/{target}/{name}",
            self.dir.file_name().unwrap_or_default().to_string_lossy()
        );
        Ok(())
    }
}

fn main() -> Res<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let out = Out { dir };

    let es = P256Signer::from_bytes(&seed32(RFC7515_A3_D)?).map_err(|_| "P-256 key")?;
    let ed = Ed25519Signer::from_seed(&seed32(RFC8037_A1_D)?);
    let rs = RsaSigner::rfc7515_a2(Alg::Rs256)?;
    let ps = RsaSigner::rfc7515_a2(Alg::Ps256)?;

    // The RSA signer reproduces RFC 7515 A.2 exactly.
    let sig = rs.sign(RFC7515_A2_INPUT.as_bytes()).map_err(|_| "RS256")?;
    assert_eq!(b64::encode(&sig), RFC7515_A2_SIG, "RFC 7515 A.2 signature");

    // ---- dpop ----
    let new = |htm, htu, iat, token| dpop::NewProof {
        htm,
        htu,
        iat,
        jti: "e1j3V_bKic8-LAEB_lccD0G",
        access_token: token,
        nonce: None,
    };
    let tok = Some(DPOP_ACCESS_TOKEN);
    let valid: [(&str, &dyn Signer, dpop::NewProof<'_>); 4] = [
        ("es256-valid", &es, new("GET", DPOP_HTU, DPOP_NOW, tok)),
        (
            "eddsa-valid-unnormalised-htu",
            &ed,
            new("GET", "HTTPS://RS.Example.COM:443/a/../r?x=1#f", DPOP_NOW - 299, tok),
        ),
        (
            "ps256-valid",
            &ps,
            new("GET", "https://rs.example.com/%72", DPOP_NOW + 10, tok),
        ),
        (
            "es256-valid-with-nonce",
            &es,
            dpop::NewProof {
                nonce: Some("eyJ7S_zG.eyJH0-Z.HX4w-7v"),
                ..new("GET", DPOP_HTU, DPOP_NOW, tok)
            },
        ),
    ];
    for (name, signer, c) in valid {
        let proof = dpop::create_proof(signer, &c)?;
        assert!(verify_seed(&proof).is_ok(), "{name}: {:?}", verify_seed(&proof));
        check_dpop(proof.as_bytes());
        out.write("dpop", name, &proof)?;
    }
    let failing: [(&str, &dyn Signer, dpop::NewProof<'_>, Error); 7] = [
        (
            "es256-htm-post",
            &es,
            new("POST", DPOP_HTU, DPOP_NOW, tok),
            Error::HtmMismatch,
        ),
        (
            "es256-htu-other-path",
            &es,
            new("GET", "https://rs.example.com/other", DPOP_NOW, tok),
            Error::HtuMismatch,
        ),
        (
            "eddsa-htu-other-port",
            &ed,
            new("GET", "https://rs.example.com:8443/r", DPOP_NOW, tok),
            Error::HtuMismatch,
        ),
        (
            "es256-iat-too-old",
            &es,
            new("GET", DPOP_HTU, DPOP_NOW - 301, tok),
            Error::IatOutOfWindow,
        ),
        (
            "eddsa-iat-future",
            &ed,
            new("GET", DPOP_HTU, DPOP_NOW + 11, tok),
            Error::IatOutOfWindow,
        ),
        (
            "es256-ath-other-token",
            &es,
            new("GET", DPOP_HTU, DPOP_NOW, Some("other")),
            Error::AthMismatch,
        ),
        (
            "es256-no-ath",
            &es,
            new("GET", DPOP_HTU, DPOP_NOW, None),
            Error::MissingClaim {
                part: Part::Proof,
                claim: "ath",
            },
        ),
    ];
    for (name, signer, c, want) in failing {
        let proof = dpop::create_proof(signer, &c)?;
        assert_eq!(verify_seed(&proof), Err(want), "{name}");
        check_dpop(proof.as_bytes());
        out.write("dpop", name, &proof)?;
    }
    // Hand-built proofs for the header checks and claim types.
    // Hand-built proofs for the header checks and claim types (`None`: accepted).
    let other_p256 = P256Signer::from_bytes(&[7; 32]).map_err(|_| "P-256 key")?;
    let hand: Vec<(&str, String, Option<Error>)> = vec![
        (
            "es256-typ-jwt",
            sign(&es, json!({"typ": "JWT", "jwk": jwk_value(&es)?}), &claims(|_| {}))?,
            Some(Error::WrongType { part: Part::Proof }),
        ),
        (
            "es256-no-jwk",
            sign(&es, json!({"typ": "dpop+jwt", "kid": "k1"}), &claims(|_| {}))?,
            Some(Error::MissingClaim {
                part: Part::Proof,
                claim: "jwk",
            }),
        ),
        (
            "rs256-not-allowed",
            sign(&rs, dpop_header(&rs)?, &claims(|_| {}))?,
            Some(Error::AlgNotAllowed { part: Part::Proof }),
        ),
        (
            "es256-jwk-of-other-key",
            sign(&es, dpop_header(&other_p256)?, &claims(|_| {}))?,
            Some(Error::BadSignature { part: Part::Proof }),
        ),
        (
            "eddsa-header-jwk-is-p256",
            sign(&ed, dpop_header(&es)?, &claims(|_| {}))?,
            Some(Error::AlgKeyMismatch { part: Part::Proof }),
        ),
        (
            "es256-private-jwk",
            sign(
                &es,
                json!({"typ": "dpop+jwt", "jwk": {"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","d":RFC7515_A3_D}}),
                &claims(|_| {}),
            )?,
            Some(Error::PrivateKeyInJwk { part: Part::Proof }),
        ),
        (
            "es256-iat-string",
            sign(
                &es,
                dpop_header(&es)?,
                &claims(|c| {
                    c.insert("iat".into(), "1700000000".into());
                }),
            )?,
            Some(Error::Malformed {
                part: Part::Proof,
                what: "claims",
            }),
        ),
        (
            "es256-jti-empty",
            sign(
                &es,
                dpop_header(&es)?,
                &claims(|c| {
                    c.insert("jti".into(), "".into());
                }),
            )?,
            Some(Error::MissingClaim {
                part: Part::Proof,
                claim: "jti",
            }),
        ),
        (
            "eddsa-valid-fractional-iat-extra-claims",
            sign(
                &ed,
                dpop_header(&ed)?,
                &claims(|c| {
                    c.insert("iat".into(), json!(1_699_999_999.75));
                    c.insert("exp".into(), json!(1_700_000_060));
                    c.insert("nonce".into(), json!("n"));
                }),
            )?,
            None,
        ),
    ];
    for (name, proof, want) in hand {
        let got = verify_seed(&proof);
        match want {
            None => assert!(got.is_ok(), "{name}: {got:?}"),
            Some(e) => assert_eq!(got, Err(e), "{name}"),
        }
        check_dpop(proof.as_bytes());
        out.write("dpop", name, &proof)?;
    }

    // Boundary cases, written to regressions/dpop/ (replayed by core/tests/fuzz_regressions.rs).
    let edge: Vec<(&str, Vec<u8>, Option<Error>)> = vec![
        (
            "jti-256-bytes-accepted",
            claims(|c| {
                c.insert("jti".into(), "j".repeat(256).into());
            }),
            None,
        ),
        (
            "jti-257-bytes-refused",
            claims(|c| {
                c.insert("jti".into(), "j".repeat(257).into());
            }),
            Some(Error::MissingClaim {
                part: Part::Proof,
                claim: "jti",
            }),
        ),
        (
            "iat-exactly-max-age-accepted",
            claims(|c| {
                c.insert("iat".into(), (DPOP_NOW - 300).into());
            }),
            None,
        ),
        (
            "iat-exactly-future-leeway-accepted",
            claims(|c| {
                c.insert("iat".into(), (DPOP_NOW + 10).into());
            }),
            None,
        ),
        (
            "iat-i64-min-refused",
            claims(|c| {
                c.insert("iat".into(), i64::MIN.into());
            }),
            Some(Error::IatOutOfWindow),
        ),
        (
            "iat-u64-max-refused",
            claims(|c| {
                c.insert("iat".into(), u64::MAX.into());
            }),
            Some(Error::Malformed {
                part: Part::Proof,
                what: "claims",
            }),
        ),
        (
            "iat-1e300-refused",
            claims(|c| {
                c.insert("iat".into(), json!(1e300));
            }),
            Some(Error::Malformed {
                part: Part::Proof,
                what: "claims",
            }),
        ),
        (
            "htu-claim-with-query-accepted",
            claims(|c| {
                c.insert("htu".into(), "https://rs.example.com/r?a=b#c".into());
            }),
            None,
        ),
        (
            "htu-claim-ftp-refused",
            claims(|c| {
                c.insert("htu".into(), "ftp://rs.example.com/r".into());
            }),
            Some(Error::InvalidHtu),
        ),
        (
            "htm-lowercase-refused",
            claims(|c| {
                c.insert("htm".into(), "get".into());
            }),
            Some(Error::HtmMismatch),
        ),
        (
            "claims-array-refused",
            b"[1,2]".to_vec(),
            Some(Error::Malformed {
                part: Part::Proof,
                what: "claims",
            }),
        ),
    ];
    let regressions = Out {
        dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions"),
    };
    for (name, payload, want) in edge {
        let proof = sign(&ed, dpop_header(&ed)?, &payload)?;
        let got = verify_seed(&proof);
        match want {
            None => assert!(got.is_ok(), "{name}: {got:?}"),
            Some(e) => assert_eq!(got, Err(e), "{name}"),
        }
        check_dpop(proof.as_bytes());
        regressions.write("dpop", name, &proof)?;
    }

    // ---- jws ----
    let a2 = format!("{RFC7515_A2_INPUT}.{RFC7515_A2_SIG}");
    let a3 = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
    let ed_rfc = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
    let payload = br#"{"iss":"https://as.example.com","sub":"alice","aud":"https://rs.example.com","exp":1700000300,"iat":1700000000,"scope":"read"}"#;
    let jws_seeds: Vec<(&str, String)> = vec![
        ("rfc7515-a2-rs256", a2),
        ("rfc7515-a3-es256", a3.into()),
        ("rfc8037-a4-eddsa", ed_rfc.into()),
        (
            "es256-header-jwk",
            sign(&es, json!({"typ":"at+jwt","jwk": jwk_value(&es)?}), payload)?,
        ),
        (
            "eddsa-header-jwk-kid",
            sign(&ed, json!({"kid":"ed","jwk": jwk_value(&ed)?}), payload)?,
        ),
        (
            "rs256-header-jwk",
            sign(&rs, json!({"kid":"2010-12-29","jwk": jwk_value(&rs)?}), payload)?,
        ),
        (
            "ps256-header-jwk",
            sign(&ps, json!({"typ":"JWT","jwk": jwk_value(&ps)?}), payload)?,
        ),
        ("ps256-no-jwk-unknown-kid", sign(&ps, json!({"kid":"nope"}), payload)?),
        ("es256-empty-payload", sign(&es, json!({}), b"")?),
        ("es256-crit", sign(&es, json!({"crit":["exp"],"exp":1}), payload)?),
        (
            "none-alg",
            format!("{}.{}.", b64::encode(br#"{"alg":"none"}"#), b64::encode(payload)),
        ),
        (
            "hs256-alg",
            format!(
                "{}.{}.AAAA",
                b64::encode(br#"{"alg":"HS256","typ":"JWT"}"#),
                b64::encode(payload)
            ),
        ),
    ];
    for (name, token) in &jws_seeds {
        check_jws(token.as_bytes());
        out.write("jws", name, token)?;
    }

    // ---- jwk ----
    let mut keys = Vec::new();
    for (name, signer, kid, alg) in [
        ("p256-rfc7515-a3", &es as &dyn Signer, "p256", "ES256"),
        ("ed25519-rfc8037", &ed, "ed", "EdDSA"),
        ("rsa-rfc7515-a2", &rs, "2010-12-29", "RS256"),
    ] {
        let mut v = jwk_value(signer)?;
        if let Value::Object(m) = &mut v {
            m.insert("kid".into(), kid.into());
            m.insert("alg".into(), alg.into());
            m.insert("use".into(), "sig".into());
        }
        let json = v.to_string();
        check_jwk(json.as_bytes());
        out.write("jwk", name, &json)?;
        keys.push(v);
    }
    keys.push(json!({"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"}));
    keys.push(json!({"kty":"EC","crv":"P-384","x":"AA","y":"AA"}));
    let set = json!({ "keys": keys }).to_string();
    check_jwk(set.as_bytes());
    out.write("jwk", "jwks-three-usable-two-skipped", &set)?;
    Ok(())
}
