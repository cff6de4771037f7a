// The checks run by the fuzz targets (`fuzz_targets/*.rs`) and, on every stored input, by
// `core/tests/fuzz_regressions.rs`, which `include!`s this file: one copy of the properties, so
// the stable regression test replays exactly what the fuzzer checked.
//
// Included from another crate, so: no inner attributes or `//!` comments, only `std` and
// `keybound_core` paths, and no `unwrap`/`expect`/`panic!`/indexing (the core workspace denies
// them); failures are `assert!`s.

use std::string::String;
use std::sync::OnceLock;

use keybound_core::b64;
use keybound_core::cert::{MAX_XFCC_ELEMENTS, MAX_XFCC_LEN, X5tS256, Xfcc, XfccElement, XfccPolicy};
use keybound_core::dpop::{self, MAX_JTI_LEN, NonceCheck, ProofPolicy, ProofTarget};
use keybound_core::htu::{Htu, MAX_HTU_LEN};
use keybound_core::jwk::{Jkt, Jwk, Jwks, PublicKey};
use keybound_core::jws::{Alg, AlgSet, Jws, RustCrypto, Verifier};
use keybound_core::{Error, ErrorCode, Part};

/// The `now` (Unix seconds) of the `dpop` target.
pub const DPOP_NOW: u64 = 1_700_000_000;
/// The request method of the `dpop` target.
pub const DPOP_METHOD: &str = "GET";
/// The request URI of the `dpop` target.
pub const DPOP_HTU: &str = "https://rs.example.com/r";
/// The access token of the `dpop` target.
pub const DPOP_ACCESS_TOKEN: &str = "tok";

/// A fixed key set for `Jws::verify_with_set`: the RFC 7515 A.3 P-256 key, the RFC 8037 Ed25519
/// key and the RFC 7638 RSA key (`kid` "2011-04-29", `alg` RS256).
pub const FIXED_JWKS: &str = r#"{"keys":[
{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"ed"},
{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}
]}"#;

fn fixed_jwks() -> &'static Jwks {
    static KEYS: OnceLock<Jwks> = OnceLock::new();
    KEYS.get_or_init(|| {
        let keys = Jwks::from_json(FIXED_JWKS.as_bytes(), Part::Other);
        assert!(keys.is_ok(), "FIXED_JWKS must parse: {keys:?}");
        keys.unwrap_or_default()
    })
}

fn dpop_htu() -> &'static Htu {
    static HTU: OnceLock<Htu> = OnceLock::new();
    HTU.get_or_init(|| {
        let htu = Htu::parse(DPOP_HTU);
        assert!(htu.is_ok(), "DPOP_HTU must parse");
        htu.unwrap_or_else(|_| unreachable!())
    })
}

/// `jws`: `Jws::parse` (RS256 allowed too), then `verify` with the header `jwk` and
/// `verify_with_set` with [`FIXED_JWKS`].
///
/// Properties: a parsed JWS re-encodes to exactly the input (strict base64url has one encoding
/// per byte string); a header `jwk` fits `alg`; verification only ever fails with
/// `BadSignature` / `UnknownKey`, and a key returned by `verify_with_set` matches the header.
pub fn check_jws(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let algs = AlgSet::default().with(Alg::Rs256);
    let jws = match Jws::parse(token, Part::Other, algs) {
        Ok(jws) => jws,
        Err(e) => {
            assert_eq!(e.code(), Some(ErrorCode::InvalidRequest), "{e:?}");
            return;
        }
    };
    assert!(algs.contains(jws.alg()));
    let header = token.split('.').next().unwrap_or("");
    assert_eq!(
        jws.signing_input(),
        format!("{header}.{}", b64::encode(jws.payload())),
        "signing input is not header.payload"
    );
    assert_eq!(
        format!("{}.{}", jws.signing_input(), b64::encode(jws.signature())),
        token,
        "a parsed JWS does not re-encode to its input"
    );
    if let Some(jwk) = jws.jwk() {
        assert!(jws.alg().fits(jwk.key()), "header jwk does not fit alg");
        let r = jws.verify(jwk.key(), &RustCrypto, Part::Other);
        assert!(
            matches!(r, Ok(()) | Err(Error::BadSignature { part: Part::Other })),
            "{r:?}"
        );
    }
    match jws.verify_with_set(fixed_jwks(), &RustCrypto, Part::Other) {
        Ok(key) => assert!(key.matches(jws.alg(), jws.kid())),
        Err(e) => assert!(
            matches!(e, Error::BadSignature { .. } | Error::UnknownKey { .. }),
            "{e:?}"
        ),
    }
}

/// `jwk`: `Jwk::from_json` and `Jwks::from_json`.
///
/// Properties, for every key that parses: `to_json()` re-parses to an equal `Jwk` (key, `kid`,
/// `alg`, `use`) with the same RFC 7638 thumbprint; the thumbprint input re-parses to the same
/// key; the thumbprint's base64url form parses back (`Jkt::parse`).
pub fn check_jwk(data: &[u8]) {
    if let Ok(jwk) = Jwk::from_json(data, Part::Other) {
        jwk_round_trip(&jwk);
        let key = PublicKey::from_json(data, Part::Other);
        assert_eq!(key.as_ref(), Ok(jwk.key()));
    }
    if let Ok(set) = Jwks::from_json(data, Part::Other) {
        for jwk in set.keys() {
            jwk_round_trip(jwk);
            for alg in Alg::ALL {
                assert!(set.candidates(alg, jwk.kid()).all(|k| alg.fits(k.key())));
            }
        }
    }
}

fn jwk_round_trip(jwk: &Jwk) {
    let thumbprint = jwk.thumbprint();
    let json = jwk.to_json();
    let again = Jwk::from_json(json.as_bytes(), Part::Other);
    assert!(
        again.is_ok(),
        "to_json() does not re-parse: {} -> {again:?}",
        short(&json)
    );
    if let Ok(again) = again {
        assert_eq!(
            again.thumbprint(),
            thumbprint,
            "thumbprint changed through to_json(): {}",
            short(&json)
        );
        assert!(&again == jwk, "to_json() lost or changed a member: {}", short(&json));
    }
    let canonical = jwk.key().thumbprint_input();
    assert_eq!(
        PublicKey::from_json(canonical.as_bytes(), Part::Other).as_ref(),
        Ok(jwk.key()),
        "thumbprint input does not re-parse to the key: {}",
        short(&canonical)
    );
    assert_eq!(Jkt::parse(&thumbprint.to_string(), Part::Other), Ok(thumbprint));
}

/// `dpop`: `dpop::verify_proof` for `GET https://rs.example.com/r` with access token `tok`,
/// the default policy, no nonce, `now` = [`DPOP_NOW`], with `RustCrypto` and again with a
/// verifier that accepts every signature ([`AcceptAnySignature`]), so that mutated proofs, whose
/// signatures no longer verify, still reach the claim checks (steps 7 to 11).
///
/// Properties: the two runs agree except where `RustCrypto` says `BadSignature` (the signature is
/// checked at step 6 and nothing after it depends on the signature); every failure maps to
/// `invalid_dpop_proof`; an accepted proof has a bounded `jti`, an allowed `alg`, an `iat` inside
/// the window, a replay record that outlives `now`, the thumbprint of its header `jwk`; and the
/// same proof is refused, with the specific error, for another method, URI, access token, or a
/// time outside the window.
pub fn check_dpop(data: &[u8]) {
    let Ok(proof) = std::str::from_utf8(data) else {
        return;
    };
    let real = verify_dpop(proof, &RustCrypto, None, DPOP_NOW);
    let any_signature = verify_dpop(proof, &AcceptAnySignature, None, DPOP_NOW);
    match &real {
        Ok(v) => assert_eq!(any_signature.as_ref(), Ok(v)),
        Err(Error::BadSignature { part: Part::Proof }) => {}
        Err(e) => assert_eq!(any_signature.as_ref(), Err(e)),
    }
    assert!(
        !matches!(any_signature, Err(Error::BadSignature { .. })),
        "BadSignature although every signature is accepted"
    );
    dpop_properties(proof, &RustCrypto, real);
    dpop_properties(proof, &AcceptAnySignature, any_signature);
}

/// A [`Verifier`] that accepts every signature. Only for fuzzing the checks after the signature.
pub struct AcceptAnySignature;

impl Verifier for AcceptAnySignature {
    fn verify(&self, _: Alg, _: &PublicKey, _: &[u8], _: &[u8]) -> bool {
        true
    }
}

/// `verify_proof` for the fixed request, or for a variant of it (`other`: method, URI, token).
fn verify_dpop(
    proof: &str,
    verifier: &dyn Verifier,
    other: Option<(&str, &Htu, Option<&str>)>,
    now: u64,
) -> keybound_core::Result<dpop::VerifiedProof> {
    let (method, htu, access_token) = other.unwrap_or((DPOP_METHOD, dpop_htu(), Some(DPOP_ACCESS_TOKEN)));
    let target = ProofTarget {
        method,
        htu,
        access_token,
    };
    dpop::verify_proof(proof, &target, &ProofPolicy::default(), NonceCheck::Off, now, verifier)
}

fn dpop_properties(proof: &str, verifier: &dyn Verifier, result: keybound_core::Result<dpop::VerifiedProof>) {
    let verified = match result {
        Ok(v) => v,
        Err(e) => {
            assert_eq!(e.code(), Some(ErrorCode::InvalidDpopProof), "{e:?}");
            assert_eq!(e.status(), 401);
            return;
        }
    };
    let policy = ProofPolicy::default();
    assert!(!verified.jti().is_empty() && verified.jti().len() <= MAX_JTI_LEN);
    assert!(policy.algs.contains(verified.alg()));
    let now = i64::try_from(DPOP_NOW).unwrap_or(i64::MAX);
    assert!(
        verified.iat() >= now - 300 && verified.iat() <= now + 10,
        "iat {}",
        verified.iat()
    );
    assert!(verified.replay_expires_at() >= DPOP_NOW);
    let header_jwk = Jws::parse(proof, Part::Proof, policy.algs)
        .ok()
        .and_then(|j| j.jwk().map(Jwk::thumbprint));
    assert_eq!(header_jwk.as_ref(), Some(verified.jkt()));
    // Deterministic.
    assert_eq!(verify_dpop(proof, verifier, None, DPOP_NOW).as_ref(), Ok(&verified));
    // Bound to the method, the URI, the access token and the time.
    let htu = dpop_htu();
    let token = Some(DPOP_ACCESS_TOKEN);
    let post = verify_dpop(proof, verifier, Some(("POST", htu, token)), DPOP_NOW);
    assert_eq!(post, Err(Error::HtmMismatch));
    let other_uri = Htu::parse("https://rs.example.com/other").unwrap_or_else(|_| htu.clone());
    let elsewhere = verify_dpop(proof, verifier, Some((DPOP_METHOD, &other_uri, token)), DPOP_NOW);
    assert_eq!(elsewhere, Err(Error::HtuMismatch));
    let other_token = verify_dpop(proof, verifier, Some((DPOP_METHOD, htu, Some("other"))), DPOP_NOW);
    assert_eq!(other_token, Err(Error::AthMismatch));
    let no_token = verify_dpop(proof, verifier, Some((DPOP_METHOD, htu, None)), DPOP_NOW);
    assert!(no_token.is_ok(), "ath is only checked with a token: {no_token:?}");
    assert_eq!(
        verify_dpop(proof, verifier, None, DPOP_NOW + 400),
        Err(Error::IatOutOfWindow)
    );
    assert_eq!(
        verify_dpop(proof, verifier, None, DPOP_NOW - 400),
        Err(Error::IatOutOfWindow)
    );
}

/// `xfcc`: `Xfcc::parse`, then `select` with the default policy and the element's `thumbprint()`.
///
/// Properties: errors are `InvalidCertificate`; a parsed header has 1..=`MAX_XFCC_ELEMENTS`
/// elements; `select` picks the element counted from the end and honours `expected_by`;
/// `Xfcc::thumbprint` agrees with parse/select/thumbprint and with the `Hash` member; and the
/// elements, written back as an XFCC header with every value quoted (and `Cert`/`Chain`
/// percent-encoded), parse to the same elements.
pub fn check_xfcc(data: &[u8]) {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    let xfcc = match Xfcc::parse(header) {
        Ok(x) => x,
        Err(e) => {
            assert!(matches!(e, Error::InvalidCertificate { .. }), "{e:?}");
            return;
        }
    };
    let elements = xfcc.elements();
    assert!(!elements.is_empty() && elements.len() <= MAX_XFCC_ELEMENTS);
    let policy = XfccPolicy::default();
    let selected = xfcc.select(&policy);
    assert_eq!(selected, Ok(elements.last().unwrap_or(&XfccElement::default())));
    for (from_end, element) in elements.iter().rev().enumerate() {
        let p = XfccPolicy {
            element_from_end: from_end,
            expected_by: None,
        };
        assert_eq!(xfcc.select(&p), Ok(element));
        let by = XfccPolicy {
            element_from_end: from_end,
            expected_by: Some(element.by.clone().unwrap_or_default() + "x"),
        };
        assert!(xfcc.select(&by).is_err());
        if element.by.is_some() {
            let by = XfccPolicy {
                element_from_end: from_end,
                expected_by: element.by.clone(),
            };
            assert_eq!(xfcc.select(&by), Ok(element));
        }
    }
    let beyond = XfccPolicy {
        element_from_end: elements.len(),
        expected_by: None,
    };
    assert!(xfcc.select(&beyond).is_err());
    if let Ok(element) = selected {
        let thumbprint = element.thumbprint();
        assert_eq!(Xfcc::thumbprint(header, &policy), thumbprint);
        if let (Ok(t), Some(hash)) = (&thumbprint, &element.hash) {
            assert_eq!(X5tS256::from_hex_digest(hash).as_ref(), Ok(t));
        }
    }
    let written = write_xfcc(elements);
    if written.len() <= MAX_XFCC_LEN {
        let again = Xfcc::parse(&written);
        assert!(
            again.is_ok(),
            "re-written XFCC does not parse: {:?}: {again:?}",
            short(&written)
        );
        if let Ok(again) = again {
            assert!(
                again.elements() == elements,
                "re-written XFCC differs: {:?}",
                short(&written)
            );
        }
    }
}

/// Writes elements as an XFCC header: every value quoted with `\"` and `\\` escapes, `Cert` and
/// `Chain` percent-encoded byte by byte.
fn write_xfcc(elements: &[XfccElement]) -> String {
    fn quoted(out: &mut String, key: &str, value: &str) {
        if !out.is_empty() && !out.ends_with(',') {
            out.push(';');
        }
        out.push_str(key);
        out.push_str("=\"");
        for c in value.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    fn pct(value: &str) -> String {
        value.bytes().map(|b| format!("%{b:02X}")).collect()
    }
    let mut out = String::new();
    for (i, el) in elements.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let single = [
            ("By", el.by.clone()),
            ("Hash", el.hash.clone()),
            ("Cert", el.cert.as_deref().map(pct)),
            ("Chain", el.chain.as_deref().map(pct)),
            ("Subject", el.subject.clone()),
        ];
        for (key, value) in single {
            if let Some(v) = value {
                quoted(&mut out, key, &v);
            }
        }
        for v in &el.uri {
            quoted(&mut out, "URI", v);
        }
        for v in &el.dns {
            quoted(&mut out, "DNS", v);
        }
    }
    out
}

/// `htu`: `Htu::parse`, and `Htu::from_parts` on the input split at the first `://`.
///
/// Properties: normalisation is idempotent (`parse(h.as_str()) == h`); the result never has a
/// query or fragment and starts with `http://` or `https://`; a query appended to a URI without
/// one changes nothing; `from_parts` on the input split as a request would carry it (scheme,
/// authority, path-and-query) equals `parse`; and anything `from_parts` accepts is normalised.
pub fn check_htu(data: &[u8]) {
    let Ok(uri) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = Htu::parse(uri);
    if let Ok(h) = &parsed {
        assert_idempotent(h);
        if !uri.contains(['?', '#']) && uri.len() + 6 <= MAX_HTU_LEN {
            let with_query = Htu::parse(&format!("{uri}?q=1#f"));
            assert!(with_query.as_ref() == Ok(h), "a query changes {}", short(uri));
        }
    } else {
        assert_eq!(parsed, Err(Error::InvalidHtu));
    }
    let Some((scheme, rest)) = uri.split_once("://") else {
        assert!(parsed.is_err());
        return;
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let parts = Htu::from_parts(scheme, authority, path);
    if uri.len() <= MAX_HTU_LEN {
        assert!(parts == parsed, "from_parts and parse disagree on {}", short(uri));
    }
    // Split at the first '/' only: the authority may then hold '?' or '#'.
    let end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if let Ok(h) = Htu::from_parts(scheme, authority, path) {
        assert_idempotent(&h);
    }
}

fn assert_idempotent(h: &Htu) {
    let s = h.as_str();
    assert!(s.starts_with("http://") || s.starts_with("https://"), "{}", short(s));
    assert!(!s.contains(['?', '#']), "{}", short(s));
    let again = Htu::parse(s);
    assert!(
        again.as_ref() == Ok(h),
        "normalising {} again gives {}",
        short(s),
        again.as_ref().map_or_else(|e| format!("{e:?}"), |a| short(a.as_str()))
    );
}

/// A string for an assertion message: whole when short, else its start and its length.
fn short(s: &str) -> String {
    if s.len() <= 200 {
        s.to_owned()
    } else {
        format!("{:?}... ({} bytes)", s.chars().take(120).collect::<String>(), s.len())
    }
}

/// `path`: `CanonicalPath::parse` on a request's `:path`.
///
/// Properties, for a path it accepts:
/// - canonical form: it starts with `/`, has no empty, `.` or `..` segment (but a trailing `/`),
///   no encoded `/` or `\`, no `\`, `?`, `#` or control character, and no lower-case hex in a
///   percent-encoding; parsing it again gives itself (idempotent);
/// - it means what upstreams take the raw path to mean: fully percent-decoded, it equals the raw
///   path as an upstream that decodes everything, merges slashes and then resolves dot segments
///   sees it (nginx); its rule view (what rules match), decoded, is the raw path as one that also
///   drops `;` parameters from each segment first sees it (Tomcat, Spring); so it never widens a
///   prefix match: every segment prefix of the canonical path is, decoded, a segment prefix of
///   what such an upstream serves, and no other;
/// - it agrees with the `htu` normalisation: `Htu::from_parts("https", host, raw)` is the origin
///   followed by the canonical path.
///
/// A path it refuses is refused with `PathNotCanonical` (`400 invalid_request`), and is no `htu`
/// path either.
pub fn check_path(data: &[u8]) {
    use keybound_core::path::{CanonicalPath, MAX_PATH_LEN};
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let host = "rs.example.com";
    match CanonicalPath::parse(raw) {
        Err(e) => {
            assert!(matches!(e, Error::PathNotCanonical { .. }), "{e:?} for {}", short(raw));
            assert_eq!(e.code(), Some(ErrorCode::InvalidRequest));
            assert_eq!(e.status(), 400);
            // (An empty path, `?query` alone, is `/` in an `htu` but no request's `:path`.)
            let path_part = raw.split('?').next().unwrap_or("");
            if !path_part.is_empty() && !raw.contains('#') && raw.len() + 40 < MAX_HTU_LEN {
                assert!(
                    Htu::from_parts("https", host, raw).is_err(),
                    "htu accepts the refused path {}",
                    short(raw)
                );
            }
        }
        Ok(c) => {
            let s = c.as_str();
            assert!(s.starts_with('/'), "{}", short(s));
            assert!(s.len() <= MAX_PATH_LEN);
            assert!(
                !s.contains(['\\', '?', '#']) && !s.bytes().any(|b| b < 0x20 || b == 0x7f),
                "{}",
                short(s)
            );
            let upper = s.to_ascii_uppercase();
            assert!(!upper.contains("%2F") && !upper.contains("%5C"), "{}", short(s));
            let segments: Vec<&str> = s.split('/').skip(1).collect();
            let inner = segments.len().saturating_sub(1);
            for (i, seg) in segments.iter().enumerate() {
                assert!(*seg != "." && *seg != "..", "dot segment in {}", short(s));
                assert!(!seg.is_empty() || i == inner, "empty segment in {}", short(s));
            }
            let bytes = s.as_bytes();
            for (i, b) in bytes.iter().enumerate() {
                if *b == b'%' {
                    let hex = bytes.get(i + 1..i + 3).unwrap_or(&[]);
                    assert!(
                        hex.len() == 2 && hex.iter().all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(h)),
                        "{}",
                        short(s)
                    );
                }
            }
            let again = CanonicalPath::parse(s);
            assert!(again.as_ref() == Ok(&c), "not a fixed point: {}", short(s));
            // What upstreams serve.
            let decoded = decode_all(s.as_bytes());
            let nginx = upstream_view(raw, false);
            assert!(
                nginx.as_deref() == Some(decoded.as_slice()),
                "{} is {} to an upstream, {} here",
                short(raw),
                nginx.map_or("refused".into(), |v| short(&String::from_utf8_lossy(&v))),
                short(s)
            );
            let tomcat = upstream_view(raw, true);
            assert!(
                tomcat == upstream_view(s, true),
                "{} and {} differ to Tomcat",
                short(raw),
                short(s)
            );
            // Rules match the rule view: what Tomcat serves, decoded.
            let rules = c.rule_view(false);
            assert!(
                tomcat.as_deref() == Some(decode_all(rules.as_bytes()).as_slice()),
                "{} is {} to the rules, not what Tomcat serves",
                short(raw),
                short(&rules)
            );
            // Never widens a prefix match: the segment prefixes agree one to one.
            let view = decoded;
            for (n, _) in s.match_indices('/') {
                let prefix = s.get(..n.max(1)).unwrap_or("/");
                assert!(c.starts_with_segments(prefix));
                let p = decode_all(prefix.as_bytes());
                assert!(
                    view.starts_with(&p) && (p == b"/" || view.len() == p.len() || view.get(p.len()) == Some(&b'/')),
                    "{} under {} here, not upstream",
                    short(raw),
                    short(prefix)
                );
            }
            // Agrees with the htu normalisation: the same path, refused only for length.
            let expected = format!("https://{host}{s}");
            match Htu::from_parts("https", host, raw) {
                Ok(h) => assert!(h.as_str() == expected, "htu of {} is {}", short(raw), short(h.as_str())),
                Err(e) => {
                    assert_eq!(e, Error::InvalidHtu);
                    let raw_len = "https".len() + host.len() + raw.split('?').next().unwrap_or("").len();
                    assert!(
                        raw_len > MAX_HTU_LEN || expected.len() > MAX_HTU_LEN,
                        "htu refuses {}",
                        short(raw)
                    );
                }
            }
        }
    }
}

/// Every percent-encoding decoded (an invalid one left as it is).
fn decode_all(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok());
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        if b == b'%'
            && let (Some(h), Some(l)) = (s.get(i + 1).copied().and_then(hex), s.get(i + 2).copied().and_then(hex))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b);
        i += 1;
    }
    out
}

/// The path an upstream serves for the raw `:path`, modelled independently of core: the query
/// cut off, every percent-encoding decoded, (with `drop_params`, each segment's `;` parameters
/// removed, as Tomcat and Spring do), empty segments merged, dot segments resolved. `None`:
/// above the root.
fn upstream_view(raw: &str, drop_params: bool) -> Option<Vec<u8>> {
    let path = raw.split('?').next().unwrap_or("");
    let decoded = decode_all(path.as_bytes());
    let mut out: Vec<&[u8]> = Vec::new();
    let parts: Vec<&[u8]> = decoded.split(|b| *b == b'/').skip(1).collect();
    let mut trailing = false;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let seg: &[u8] = if drop_params {
            part.split(|b| *b == b';').next().unwrap_or(&[])
        } else {
            part
        };
        match seg {
            b"" => trailing |= last,
            b"." => trailing = last,
            b".." => {
                out.pop()?;
                trailing = last;
            }
            _ => {
                out.push(seg);
                trailing = false;
            }
        }
    }
    let mut v = Vec::new();
    for s in &out {
        v.push(b'/');
        v.extend_from_slice(s);
    }
    if trailing || v.is_empty() {
        v.push(b'/');
    }
    Some(v)
}

/// `qc`: the same bytes as a certificate and as a QCStatements extension value. Refusals are
/// `InvalidCertificate`; a PSD2 statement that parses re-encodes to a value that parses to the
/// same roles and authority, and roles are never repeated.
pub fn check_qc(data: &[u8]) {
    use keybound_core::qc::{encode_psd2_qc_statements, parse_qc_statements, psd2_from_certificate};
    match psd2_from_certificate(data) {
        Ok(Some(a)) => {
            assert!(!a.roles.is_empty());
            for (i, r) in a.roles.iter().enumerate() {
                assert!(!a.roles.iter().skip(i + 1).any(|o| o == r), "repeated role");
            }
        }
        Ok(None) => {}
        Err(e) => assert!(matches!(e, Error::InvalidCertificate { .. }), "{e:?}"),
    }
    match parse_qc_statements(data) {
        Ok(Some((roles, name, id))) => {
            let again = parse_qc_statements(&encode_psd2_qc_statements(&roles, &name, &id));
            assert!(
                matches!(&again, Ok(Some((r, n, i))) if *r == roles && *n == name && *i == id),
                "{again:?}"
            );
        }
        Ok(None) => {}
        Err(e) => assert!(matches!(e, Error::InvalidCertificate { .. }), "{e:?}"),
    }
}
