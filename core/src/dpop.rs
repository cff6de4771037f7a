//! DPoP proofs ([RFC 9449]): create them, and verify them in one fixed, documented order.
//!
//! ## The check order of [`verify_proof`] ([RFC 9449 §4.3])
//! 1. the proof is a compact JWS (three strict base64url parts, JSON header, no `crit`);
//! 2. `alg` is in the policy's allowlist (never `none` or a MAC);
//! 3. a header `jwk` is public (no private member), a supported, valid key, and fits `alg`;
//! 4. `typ` is `dpop+jwt` (case-insensitive, `application/` prefix allowed, RFC 7515 §4.1.9);
//! 5. the header has a `jwk`;
//! 6. the signature verifies with that `jwk`;
//! 7. the claims are a JSON object with `jti` (1 to 256 bytes), `htm`, `htu`, `iat`, and `ath` when
//!    an access token is presented;
//! 8. `htm` equals the request method;
//! 9. `htu` equals the request URI after normalisation, ignoring query and fragment on both sides;
//! 10. `iat` is within the window: at most `max_age` seconds old, at most `future_leeway` ahead;
//! 11. `ath` equals base64url(SHA-256(access token));
//! 12. when the server requires a nonce: `nonce` is present and valid.
//!
//! Steps 1-3 happen while parsing the header ([`Jws::parse`]), so no key is built from a header
//! whose algorithm is not allowed.
//!
//! Other claims (`nbf`, `exp`, anything else) are tolerated and not checked.
//!
//! ## What this module does **not** check
//! - `jti` replay: that needs state shared across requests. [`VerifiedProof::replay_key`] and
//!   [`VerifiedProof::replay_expires_at`] give the adapter the key to store and for how long;
//!   the adapter must do this check last, after every stateless check passed, so bad input
//!   changes no state.
//! - That the proof's key is the one the access token is bound to (`cnf.jkt`): see
//!   [`crate::request::check_binding`].
//! - That there is exactly one `DPoP` header: see [`crate::request::single_dpop_header`].
//!
//! [RFC 9449]: https://www.rfc-editor.org/rfc/rfc9449
//! [RFC 9449 §4.3]: https://www.rfc-editor.org/rfc/rfc9449#section-4.3

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::b64;
use crate::error::{Error, Part, Result};
use crate::htu::Htu;
use crate::json;
use crate::jwk::{Jkt, PublicKey};
use crate::jws::{Alg, AlgSet, Compact, Jws, SignError, Signer, UnsignedJws, Verifier, verify_signature};
use crate::nonce::{NonceAge, NonceSecrets};
use crate::time::{NumericDate, UnixTime};

/// The `typ` of a DPoP proof.
pub const TYP: &str = "dpop+jwt";
/// The longest `jti` accepted (bytes).
pub const MAX_JTI_LEN: usize = 256;

/// What a proof must satisfy, apart from the request it is for.
#[derive(Debug, Clone)]
pub struct ProofPolicy {
    /// Allowed algorithms (default ES256, PS256, EdDSA).
    pub algs: AlgSet,
    /// How old `iat` may be, in seconds (default 300).
    pub max_age: u64,
    /// How far in the future `iat` may be, in seconds (default 10).
    pub future_leeway: u64,
}

impl Default for ProofPolicy {
    fn default() -> Self {
        ProofPolicy {
            algs: AlgSet::default(),
            max_age: 300,
            future_leeway: 10,
        }
    }
}

/// Whether the server requires a nonce in proofs.
#[derive(Debug, Clone, Copy)]
pub enum NonceCheck<'a> {
    /// Nonces are not required (a nonce in the proof is ignored).
    Off,
    /// Every proof must carry a valid nonce from these secrets.
    Required(&'a NonceSecrets),
}

/// The request a proof must be for.
#[derive(Debug, Clone, Copy)]
pub struct ProofTarget<'a> {
    /// The HTTP method (`GET`, `POST`, ...), compared case-sensitively as RFC 9110 methods are.
    pub method: &'a str,
    /// The request URI, normalised.
    pub htu: &'a Htu,
    /// The access token sent with the proof, if any (then `ath` is required).
    pub access_token: Option<&'a str>,
}

#[derive(Deserialize)]
struct RawClaims {
    jti: Option<String>,
    htm: Option<String>,
    htu: Option<String>,
    iat: Option<NumericDate>,
    ath: Option<String>,
    nonce: Option<String>,
}

/// A proof that passed every stateless check of [`verify_proof`]. Only this crate builds one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    jkt: Jkt,
    alg: Alg,
    jti: String,
    iat: i64,
    nonce_age: Option<NonceAge>,
    expires_at: UnixTime,
}

impl VerifiedProof {
    /// The RFC 7638 thumbprint of the key that signed the proof.
    pub fn jkt(&self) -> &Jkt {
        &self.jkt
    }

    /// The proof's algorithm.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The proof's `jti`.
    pub fn jti(&self) -> &str {
        &self.jti
    }

    /// The proof's `iat`.
    pub fn iat(&self) -> i64 {
        self.iat
    }

    /// How the proof's nonce relates to the current step, when nonces are required.
    /// `Some(NonceAge::Previous)` means the server should send a fresh `DPoP-Nonce`.
    pub fn nonce_age(&self) -> Option<NonceAge> {
        self.nonce_age
    }

    /// The key to record for replay detection: SHA-256 over the signing key's thumbprint and the
    /// `jti`, so `jti` values of different clients never collide and the stored key has a fixed
    /// size whatever the `jti`.
    pub fn replay_key(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"keybound-jti-v1\0");
        h.update(self.jkt.as_bytes());
        h.update(self.jti.as_bytes());
        h.finalize().into()
    }

    /// Until when (Unix seconds) the replay record must be kept: the first second at which the
    /// proof's `iat` is outside the window (`iat + max_age + 1`), so the record is live
    /// ([`replay_record_live`]) at every instant at which the proof is still acceptable.
    pub fn replay_expires_at(&self) -> UnixTime {
        self.expires_at
    }
}

/// Whether a replay record that expires at `expires_at` ([`VerifiedProof::replay_expires_at`])
/// is still live at `now`. Every replay store (the gateway's shared cache, the authorization
/// server's table) uses this one rule: a record is live while `now < expires_at`, and may be
/// dropped from `expires_at` on.
pub fn replay_record_live(expires_at: UnixTime, now: UnixTime) -> bool {
    now < expires_at
}

/// Verifies a DPoP proof for a request, in the order documented in the module docs.
///
/// # Errors
/// The first failed check, as an [`Error`] whose [`Error::code`] is `invalid_dpop_proof` (or
/// `use_dpop_nonce` when a nonce is required and missing).
pub fn verify_proof(
    proof: &str,
    target: &ProofTarget<'_>,
    policy: &ProofPolicy,
    nonce: NonceCheck<'_>,
    now: UnixTime,
    verifier: &dyn Verifier,
) -> Result<VerifiedProof> {
    verify_proof_with(proof, target, policy, nonce, now, verifier, None)
}

/// [`verify_proof`], remembering in `memo` what repeats across one client's proofs: the parsed
/// header (its key, checked once, and the key's thumbprint) and the `ath` of each access token.
/// Every check still runs for every proof in the same order and with the same result; the memo
/// only saves recomputing pure functions of bytes it has seen (see [`ProofMemo`]).
///
/// # Errors
/// As [`verify_proof`].
pub fn verify_proof_with(
    proof: &str,
    target: &ProofTarget<'_>,
    policy: &ProofPolicy,
    nonce: NonceCheck<'_>,
    now: UnixTime,
    verifier: &dyn Verifier,
    mut memo: Option<&mut ProofMemo>,
) -> Result<VerifiedProof> {
    const P: Part = Part::Proof;
    let malformed = |what| Error::Malformed { part: P, what };
    // 1-5, from the memo when this exact header was accepted before (only the allowlist, which
    // may differ between routes, is checked again), else parsed and checked in full.
    let compact = Compact::split(proof, P)?;
    let remembered = memo.as_deref().and_then(|m| m.headers.get(compact.header).cloned());
    let (header, payload, signature) = match remembered {
        Some(header) => {
            let (payload, signature) = compact.decode_body(P)?;
            if !policy.algs.contains(header.alg) {
                return Err(Error::AlgNotAllowed { part: P });
            }
            (header, payload, signature)
        }
        None => {
            let jws = Jws::parse(proof, P, policy.algs)?;
            if !crate::jws::typ_is(jws.typ(), TYP) {
                return Err(Error::WrongType { part: P });
            }
            let jwk = jws.jwk().ok_or(Error::MissingClaim { part: P, claim: "jwk" })?;
            let header = ProofHeader {
                alg: jws.alg(),
                key: jwk.key().clone(),
                jkt: jwk.thumbprint(),
            };
            if let Some(m) = memo.as_deref_mut() {
                m.remember_header(compact.header, &header);
            }
            let (payload, signature) = jws.into_payload_and_signature();
            (header, payload, signature)
        }
    };
    // 6
    verify_signature(header.alg, &header.key, compact.signing_input, &signature, verifier, P)?;
    // 7
    let claims: RawClaims = serde_json::from_slice(&payload).map_err(|_| malformed("claims"))?;
    let missing = |claim| Error::MissingClaim { part: P, claim };
    let jti = claims
        .jti
        .filter(|j| !j.is_empty() && j.len() <= MAX_JTI_LEN)
        .ok_or(missing("jti"))?;
    let htm = claims.htm.ok_or(missing("htm"))?;
    let htu = claims.htu.ok_or(missing("htu"))?;
    let iat = claims.iat.ok_or(missing("iat"))?.0;
    let ath = match target.access_token {
        Some(_) => Some(claims.ath.ok_or(missing("ath"))?),
        None => None,
    };
    // 8
    if htm != target.method {
        return Err(Error::HtmMismatch);
    }
    // 9
    let htu = Htu::parse(&htu)?;
    if &htu != target.htu {
        return Err(Error::HtuMismatch);
    }
    // 10
    let now_i = i64::try_from(now).map_err(|_| Error::IatOutOfWindow)?;
    let oldest = now_i.saturating_sub(i64::try_from(policy.max_age).unwrap_or(i64::MAX));
    let newest = now_i.saturating_add(i64::try_from(policy.future_leeway).unwrap_or(i64::MAX));
    if iat < oldest || iat > newest {
        return Err(Error::IatOutOfWindow);
    }
    // 11
    if let (Some(token), Some(ath)) = (target.access_token, ath) {
        let remembered = memo
            .as_deref()
            .and_then(|m| m.aths.get(ath.as_str()))
            .is_some_and(|t| t.as_str() == token);
        if !remembered {
            if ath != access_token_hash(token) {
                return Err(Error::AthMismatch);
            }
            if let Some(m) = memo {
                m.remember_ath(ath, token);
            }
        }
    }
    // 12
    let nonce_age = match nonce {
        NonceCheck::Off => None,
        NonceCheck::Required(secrets) => {
            let n = claims.nonce.ok_or(Error::NonceRequired)?;
            Some(secrets.check(&n, now).map_err(|_| Error::NonceInvalid)?)
        }
    };
    // The proof is acceptable up to and including `iat + max_age` (step 10), so its record must
    // be live through that whole second: it expires one second later ([`replay_record_live`]).
    let last_acceptable = iat.saturating_add(i64::try_from(policy.max_age).unwrap_or(i64::MAX));
    let expires_at = u64::try_from(last_acceptable.saturating_add(1))
        .unwrap_or(0)
        .max(now.saturating_add(1));
    Ok(VerifiedProof {
        jkt: header.jkt,
        alg: header.alg,
        jti,
        iat,
        nonce_age,
        expires_at,
    })
}

/// A proof header that passed steps 1-5 of [`verify_proof`].
#[derive(Debug, Clone)]
struct ProofHeader {
    alg: Alg,
    key: PublicKey,
    jkt: Jkt,
}

/// What [`verify_proof_with`] remembers between proofs, bounded.
///
/// A client signs every proof with the same key and sends the same access token many times, so
/// two things repeat byte for byte: the proof's protected header (`typ`, `alg`, `jwk`) and the
/// proof's `ath` for a given token. Parsing that header (base64url, JSON, checking the key is a
/// valid public key, its RFC 7638 thumbprint) and hashing the token are pure functions of those
/// bytes, so their results can be reused:
///
/// - a header is remembered, by its exact base64url text, only after it passed every header
///   check (compact JWS, JSON, no `crit`, a supported `alg`, a public `jwk` that is a valid key
///   fitting the `alg`, `typ` `dpop+jwt`); on reuse, `alg` is checked again against the caller's
///   allowlist;
/// - an `ath` is remembered with the token it was computed from, only after it matched; on reuse
///   it counts as matching only for that same token (compared in full), anything else is hashed.
///
/// Each map holds at most `max_entries` entries and is emptied when full (the memo only saves
/// work; no result depends on it). Memory: up to `max_entries` × (the base64url header, its decoded
/// key and thumbprint) plus `max_entries` × (the token and its 43-byte `ath`), and the maps' overhead.
#[derive(Debug, Clone, Default)]
pub struct ProofMemo {
    headers: BTreeMap<String, ProofHeader>,
    aths: BTreeMap<String, String>,
    max_entries: usize,
}

impl ProofMemo {
    /// A memo holding at most `max_entries` headers and as many `ath` values (0: remembers
    /// nothing).
    pub fn new(max_entries: usize) -> Self {
        ProofMemo {
            headers: BTreeMap::new(),
            aths: BTreeMap::new(),
            max_entries,
        }
    }

    /// How many headers and `ath` values are remembered.
    pub fn len(&self) -> (usize, usize) {
        (self.headers.len(), self.aths.len())
    }

    fn remember_header(&mut self, b64: &str, header: &ProofHeader) {
        if self.max_entries == 0 {
            return;
        }
        if self.headers.len() >= self.max_entries {
            self.headers.clear();
        }
        self.headers.insert(b64.to_string(), header.clone());
    }

    fn remember_ath(&mut self, ath: String, token: &str) {
        if self.max_entries == 0 {
            return;
        }
        if self.aths.len() >= self.max_entries {
            self.aths.clear();
        }
        self.aths.insert(ath, token.to_string());
    }
}

/// `ath`: base64url(SHA-256(ASCII access token)) ([RFC 9449 §4.2]).
///
/// [RFC 9449 §4.2]: https://www.rfc-editor.org/rfc/rfc9449#section-4.2
pub fn access_token_hash(token: &str) -> String {
    b64::encode(&Sha256::digest(token.as_bytes()))
}

/// The claims of a proof to create.
#[derive(Debug, Clone, Copy)]
pub struct NewProof<'a> {
    /// The HTTP method.
    pub htm: &'a str,
    /// The target URI (query and fragment are dropped, as RFC 9449 §4.2 says).
    pub htu: &'a str,
    /// Creation time (Unix seconds), corrected for clock skew by the caller.
    pub iat: UnixTime,
    /// A unique identifier with at least 128 bits of randomness, from the caller's random source.
    pub jti: &'a str,
    /// The access token, to bind the proof to it with `ath`.
    pub access_token: Option<&'a str>,
    /// A server-provided nonce.
    pub nonce: Option<&'a str>,
}

/// Builds the unsigned proof for `key` and `alg`; sign its [`UnsignedJws::signing_input`] and call
/// [`UnsignedJws::finish`]. For a synchronous signer, [`create_proof`] does both.
///
/// # Errors
/// [`Error::InvalidHtu`] if `htu` is not an absolute http(s) URI;
/// [`Error::AlgKeyMismatch`] if `alg` does not fit `key`.
pub fn unsigned_proof(key: &PublicKey, alg: Alg, claims: &NewProof<'_>) -> Result<UnsignedJws> {
    if !alg.fits(key) {
        return Err(Error::AlgKeyMismatch { part: Part::Proof });
    }
    // Validate, but send the URI without query and fragment as the client wrote it.
    Htu::parse(claims.htu)?;
    let htu = claims.htu.split(['?', '#']).next().unwrap_or(claims.htu);
    // The JSON is written directly, members in lexicographic order (what a `serde_json::Map`
    // gives): no JSON value tree, which keeps serde_json's parser and maps out of the browser's
    // wasm. `key.to_json()` is already canonical (RFC 7638 members, sorted, no whitespace).
    let mut header = String::with_capacity(160);
    header.push_str(r#"{"alg":"#);
    json::push_str(&mut header, alg.as_str());
    header.push_str(r#","jwk":"#);
    header.push_str(&key.to_json());
    header.push_str(r#","typ":"#);
    json::push_str(&mut header, TYP);
    header.push('}');
    let mut payload = String::with_capacity(256);
    payload.push('{');
    if let Some(token) = claims.access_token {
        payload.push_str(r#""ath":"#);
        json::push_str(&mut payload, &access_token_hash(token));
        payload.push(',');
    }
    payload.push_str(r#""htm":"#);
    json::push_str(&mut payload, claims.htm);
    payload.push_str(r#","htu":"#);
    json::push_str(&mut payload, htu);
    payload.push_str(r#","iat":"#);
    json::push_u64(&mut payload, claims.iat);
    payload.push_str(r#","jti":"#);
    json::push_str(&mut payload, claims.jti);
    if let Some(nonce) = claims.nonce {
        payload.push_str(r#","nonce":"#);
        json::push_str(&mut payload, nonce);
    }
    payload.push('}');
    Ok(UnsignedJws::from_json(header.as_bytes(), payload.as_bytes()))
}

/// Creates and signs a DPoP proof.
///
/// # Errors
/// As [`unsigned_proof`]; [`Error::BadSignature`] (part `Proof`) if the signer fails.
pub fn create_proof(signer: &dyn Signer, claims: &NewProof<'_>) -> Result<String> {
    unsigned_proof(signer.public_key(), signer.alg(), claims)?
        .sign(signer)
        .map_err(|SignError| Error::BadSignature { part: Part::Proof })
}
