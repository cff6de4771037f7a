//! Shared fixtures of the end-to-end tests: the test issuer, filter configurations, tokens and
//! DPoP proofs (all made with keybound-core), and assertions on Envoy's answers.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    dead_code,
    reason = "test helpers fail the test on bad fixtures; not every test file uses every helper"
)]

use std::time::{SystemTime, UNIX_EPOCH};

use keybound_core::b64;
use keybound_core::dpop;
use keybound_core::jws::{self, P256Signer, Signer};
use keybound_e2e::{Envoy, EnvoyOptions, Pki, Response, TlsListener, Upstream, UpstreamTls};
use serde_json::{Value, json};

/// The test issuer.
pub const ISS: &str = "https://as.example.com";
/// The resource server's audience.
pub const AUD: &str = "https://rs.example.com";
/// The `algs` every DPoP challenge lists.
pub const ALGS: &str = r#"algs="ES256 PS256 EdDSA""#;

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A unique string (per process and call), for `jti`s.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}-{nanos}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// The issuer's signing key (kid `k1`).
pub fn issuer() -> P256Signer {
    P256Signer::from_bytes(&[200; 32]).unwrap()
}

/// A client's P-256 key.
pub fn p256(seed: u8) -> P256Signer {
    P256Signer::from_bytes(&[seed; 32]).unwrap()
}

/// The public JWK of a key, as JSON.
pub fn public_jwk(signer: &dyn Signer) -> Value {
    serde_json::from_str(&signer.public_key().to_json()).unwrap()
}

/// The origins the test client calls (`host: rs.example.com`, plaintext or TLS listeners).
pub const ORIGINS: [&str; 2] = ["http://rs.example.com", "https://rs.example.com"];

/// The filter configuration: the test issuer with an inline JWKS, `/health` open, `/admin` needing
/// scope `admin`, the origins [`ORIGINS`]; members of `extra` are added at the top level
/// (replacing defaults), except `dpop`, whose members are merged into the default (which drops
/// the default origins when `extra` names its own, an `external_base_url` or
/// `dangerous_any_origin`).
pub fn config(extra: Value) -> String {
    let mut jwk = public_jwk(&issuer());
    jwk["kid"] = json!("k1");
    let mut c = json!({
        "issuers": [{"issuer": ISS, "audiences": [AUD], "jwks": {"keys": [jwk]}}],
        "rules": [
            {"prefix": "/health", "auth": "none"},
            {"prefix": "/admin", "scopes": ["admin"]},
        ],
        "dpop": {"origins": ORIGINS},
    });
    if let Some(extra) = extra.as_object() {
        for (k, v) in extra {
            match (k.as_str(), v.as_object()) {
                ("dpop", Some(dpop)) => {
                    if ["origins", "external_base_url", "dangerous_any_origin"]
                        .iter()
                        .any(|f| dpop.contains_key(*f))
                    {
                        c["dpop"] = json!({});
                    }
                    for (dk, dv) in dpop {
                        c["dpop"][dk] = dv.clone();
                    }
                }
                _ => c[k] = v.clone(),
            }
        }
    }
    c.to_string()
}

/// Standard access-token claims with this `cnf` (valid for 10 minutes).
pub fn token_claims(cnf: Option<Value>) -> Value {
    let n = now();
    let mut c = json!({"iss": ISS, "aud": AUD, "sub": "alice", "client_id": "client-1", "iat": n,
        "exp": n + 600, "jti": unique("t"), "scope": "accounts:read"});
    if let Some(cnf) = cnf {
        c["cnf"] = cnf;
    }
    c
}

/// Signs access-token claims with the issuer key (`typ` `at+jwt`, kid `k1`).
pub fn sign_token(claims: &Value) -> String {
    jws::sign_json(&issuer(), Some("at+jwt"), Some("k1"), claims).unwrap()
}

/// A token bound to a DPoP key (`cnf.jkt`).
pub fn dpop_token(key: &dyn Signer) -> String {
    sign_token(&token_claims(Some(
        json!({"jkt": key.public_key().thumbprint().to_string()}),
    )))
}

/// A token bound to a certificate (`cnf.x5t#S256`).
pub fn cert_token(x5t: &str) -> String {
    sign_token(&token_claims(Some(json!({"x5t#S256": x5t}))))
}

/// Signs arbitrary header and claims JSON with `signer` (the header as is, `alg` too).
pub fn forge(signer: &dyn Signer, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64::encode(header.to_string().as_bytes()),
        b64::encode(claims.to_string().as_bytes())
    );
    let sig = signer.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", b64::encode(&sig))
}

/// The standard proof header for `signer`.
pub fn proof_header(signer: &dyn Signer) -> Value {
    json!({"typ": "dpop+jwt", "alg": signer.alg().as_str(), "jwk": public_jwk(signer)})
}

/// Standard proof claims: `htm`, `htu` (`url`), `iat` now, a unique `jti`, `ath` of `token`.
pub fn proof_claims(method: &str, url: &str, token: &str) -> Value {
    json!({"jti": unique("p"), "htm": method, "htu": url, "iat": now(), "ath": dpop::access_token_hash(token)})
}

/// A valid proof made by core's `create_proof`.
pub fn proof(key: &dyn Signer, method: &str, url: &str, token: &str) -> String {
    proof_at(key, method, url, token, now())
}

/// A valid proof with this `iat`.
pub fn proof_at(key: &dyn Signer, method: &str, url: &str, token: &str, iat: u64) -> String {
    dpop::create_proof(
        key,
        &dpop::NewProof {
            htm: method,
            htu: url,
            iat,
            jti: &unique("p"),
            access_token: Some(token),
            nonce: None,
        },
    )
    .unwrap()
}

/// A JWKS with the keys `(seed, kid)` (P-256 keys made from the seed, as [`p256`]).
pub fn jwks(keys: &[(u8, &str)]) -> String {
    let keys: Vec<Value> = keys
        .iter()
        .map(|(seed, kid)| {
            let jwk = keybound_core::jwk::Jwk::new(p256(*seed).public_key().clone(), Some((*kid).into()), None);
            serde_json::from_str(&jwk.to_json()).unwrap()
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

/// A fixed DPoP nonce secret (base64url of 32+ bytes), for gateways that require nonces.
pub const NONCE_SECRET: &str = "ZTJlLW5vbmNlLXNlY3JldC1lMmUtbm9uY2Utc2VjcmV0LWUyZQ";

/// The gateway a browser page calls: the filter in a real Envoy (no CORS filter) in front of
/// `upstream`, `dpop.origins` = its own `http://127.0.0.1:PORT`, DPoP nonces required, and
/// `cors.allowed_origins` = `allowed_origins` (the filter's refusals are readable by those pages).
pub fn browser_gateway(allowed_origins: &[String], upstream: &Upstream) -> Envoy {
    Envoy::start_with_port(
        |port| {
            config(json!({
                "dpop": {
                    "origins": [format!("http://127.0.0.1:{port}")],
                    "nonce": {"mode": "required", "secrets": [NONCE_SECRET], "step_seconds": 60},
                },
                "cors": {"allowed_origins": allowed_origins},
            }))
        },
        upstream,
        &EnvoyOptions::default(),
    )
    .unwrap()
}

/// An access token from the test issuer bound to the DPoP key with this RFC 7638 thumbprint
/// (`cnf.jkt`), e.g. a browser page's key.
pub fn jkt_token(jkt: &str) -> String {
    sign_token(&token_claims(Some(json!({ "jkt": jkt }))))
}

/// Polls `f` every 100 ms for up to `secs` seconds.
pub fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(secs) {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}

/// Two hops, as in `envoy/behind-proxy.yaml`: the gateway (the filter configured by `cfg`, TLS
/// with client certificates optional from the CA(s) in `gateway_client_ca`, XFCC kept only on
/// mTLS connections: `FORWARD_ONLY`) and the front hop before it (the client's TLS with
/// certificates from the test CA, `SANITIZE_SET`, calling the gateway with its mesh
/// certificate). Returns `(gateway, front)`.
pub fn two_hops(pki: &Pki, up: &Upstream, cfg: &str, gateway_client_ca: &std::path::Path) -> (Envoy, Envoy) {
    let gateway_opts = EnvoyOptions {
        tls: Some(TlsListener {
            client_ca: Some(gateway_client_ca.to_path_buf()),
            ..pki.listener(&pki.gateway, false)
        }),
        forward_client_cert: Some("FORWARD_ONLY".into()),
        ..EnvoyOptions::default()
    };
    let gateway = Envoy::start_with(cfg, up, &gateway_opts).unwrap();
    let front = front_hop(pki, &gateway);
    (gateway, front)
}

/// The front hop before `gateway`: terminates the client's TLS (certificates optional, from the
/// test CA), replaces any XFCC with its own element (`SANITIZE_SET`, `Cert` and `URI`), and
/// calls the gateway over TLS with its mesh certificate.
pub fn front_hop(pki: &Pki, gateway: &Envoy) -> Envoy {
    let front_opts = EnvoyOptions {
        tls: Some(pki.listener(&pki.front, false)),
        forward_client_cert: Some("SANITIZE_SET".into()),
        set_current_client_cert: vec!["cert".into(), "uri".into()],
        upstream_tls: Some(UpstreamTls {
            ca: pki.ca.clone(),
            sni: "localhost".into(),
            client_cert: Some((pki.mesh_front.cert.clone(), pki.mesh_front.key.clone())),
        }),
        ..EnvoyOptions::default()
    };
    Envoy::start_proxy(gateway.port, &front_opts).unwrap()
}

/// The value of a counter of the keybound filter (`wasmcustom.keybound.<name>`).
pub fn counter(envoy: &Envoy, name: &str) -> u64 {
    envoy.counter(&format!("wasmcustom.keybound.{name}"))
}

/// Asserts a denial: status, exact `WWW-Authenticate`, and a JSON body with only the RFC code
/// (`error` = `None`: no body code, e.g. a bare challenge).
pub fn assert_denied(case: &str, r: &Response, status: u16, www_authenticate: &str, error: Option<&str>) {
    assert_eq!(r.status, status, "{case}: {r:?}");
    assert_eq!(r.header("www-authenticate"), Some(www_authenticate), "{case}: {r:?}");
    if let Some(code) = error {
        assert_eq!(r.json(), json!({ "error": code }), "{case}: {r:?}");
    }
}

/// The environment Istio gives a WasmPlugin's VM (`spec.vmConfig.env`, each `valueFrom: HOST`: the
/// proxy container's variable, which a Kubernetes Secret fills), with a test value for each.
pub fn wasmplugin_vm_env(spec: &serde_yaml::Value) -> Vec<(String, String)> {
    spec["vmConfig"]["env"]
        .as_sequence()
        .map(|env| {
            env.iter()
                .map(|e| {
                    assert_eq!(e["valueFrom"], "HOST", "secrets come from the proxy's environment");
                    let name = e["name"].as_str().unwrap().to_owned();
                    (name, "aXN0aW8tdGVzdC1zZWNyZXQtaXN0aW8tdGVzdC1zZWNyZXQ".to_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The npm package of keybound-browser as installed for the tests (`KEYBOUND_BROWSER_PKG`; else
/// what `cargo xtask package npm` staged, `target/package/npm`).
pub fn browser_package() -> std::path::PathBuf {
    let dir = std::env::var_os("KEYBOUND_BROWSER_PKG").map_or_else(
        || keybound_e2e::root().join("target/package/npm"),
        std::path::PathBuf::from,
    );
    assert!(
        dir.join("keybound_browser.js").exists(),
        "no keybound-browser package in {} (`cargo xtask package npm` builds it; or set KEYBOUND_BROWSER_PKG)",
        dir.display()
    );
    dir
}
