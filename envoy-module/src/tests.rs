//! The decision flow with a fake Envoy.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a failed step fails the test"
)]

use std::cell::RefCell;

use super::*;
use keybound_core::jws::Signer;

/// A local reply: status, headers, body.
type Reply = (u16, Vec<(String, String)>, Vec<u8>);

#[derive(Default)]
struct Fake {
    headers: Vec<(String, String)>,
    set: RefCell<Vec<(String, Option<String>)>>,
    reply: RefCell<Option<Reply>>,
    decisions: RefCell<Vec<[String; 4]>>,
    calls: RefCell<Vec<String>>,
    resumed: RefCell<bool>,
}

impl Host for Fake {
    fn request_headers(&self) -> Vec<(String, String)> {
        self.headers.clone()
    }
    fn property(&self, _: Property) -> Option<String> {
        None
    }
    fn set_request_header(&self, name: &str, value: Option<&str>) {
        self.set.borrow_mut().push((name.into(), value.map(Into::into)));
    }
    fn set_response_header(&self, _: &str, _: &str) {}
    fn send_response(&self, status: u16, headers: &[(String, String)], body: &[u8]) {
        *self.reply.borrow_mut() = Some((status, headers.to_vec(), body.to_vec()));
    }
    fn record(&self, gate: &Gate, log: &keybound_filter::gate::DecisionLog) {
        self.decisions.borrow_mut().push(
            [
                log.decision,
                log.reason,
                gate.requirement_name(log.requirement),
                log.mode.as_str(),
            ]
            .map(String::from),
        );
    }
    fn count(&self, _: &'static str) {}
    fn log_enabled(&self, _: Level, _: u64) -> bool {
        true
    }
    fn log(&self, _: Level, _: &str) {}
    fn set_filter_state(&self, _: &str, _: &str) {}
    fn http_call(&self, call: &keybound_filter::gate::HttpCall<'_>) -> Result<(), String> {
        self.calls.borrow_mut().push(call.target.cluster.clone());
        Ok(())
    }
    fn resume(&self) {
        *self.resumed.borrow_mut() = true;
    }
    fn now(&self) -> u64 {
        1_700_000_000
    }
}

fn config_json() -> String {
    let key = keybound_core::jws::P256Signer::from_bytes(&[200; 32]).unwrap();
    let mut jwk: serde_json::Value = serde_json::from_str(&key.public_key().to_json()).unwrap();
    jwk["kid"] = "k1".into();
    serde_json::json!({
        "issuers": [{"issuer": "https://as.example.com", "audiences": ["https://rs.example.com"],
                     "jwks": {"keys": [jwk]}}],
        "dpop": {"origins": ["http://rs.example.com"]},
        "rules": [{"prefix": "/health", "auth": "none"}],
    })
    .to_string()
}

fn fake(path: &str, extra: &[(&str, &str)]) -> Fake {
    let mut headers: Vec<(String, String)> = [
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "rs.example.com"),
        (":path", path),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    headers.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    Fake {
        headers,
        ..Fake::default()
    }
}

#[test]
fn a_request_without_a_token_is_refused_and_an_open_route_passes_with_spoofed_headers_removed() {
    let config = load_config(config_json().as_bytes()).unwrap();
    let host = fake("/api", &[]);
    assert_eq!(on_request_headers(&config, &mut Stream::default(), &host), Action::Stop);
    let (status, headers, _) = host.reply.borrow().clone().unwrap();
    assert_eq!(status, 401);
    assert!(headers.iter().any(|(k, _)| k == "www-authenticate"));
    assert_eq!(host.decisions.borrow()[0][0], "deny");

    let host = fake("/health", &[("x-keybound-sub", "mallory")]);
    assert_eq!(
        on_request_headers(&config, &mut Stream::default(), &host),
        Action::Continue
    );
    assert!(host.reply.borrow().is_none());
    assert!(host.set.borrow().contains(&("x-keybound-sub".into(), None)));
}

#[test]
fn what_the_module_cannot_do_is_refused_naming_the_field() {
    let e = load_config(br#"{"issuers": []}"#).unwrap_err();
    assert!(e.contains("issuers"), "{e}");
    let mut v: serde_json::Value = serde_json::from_str(&config_json()).unwrap();
    v["verifier"] = "envoy".into();
    let e = load_config(v.to_string().as_bytes()).unwrap_err();
    assert!(e.contains("`verifier`"), "{e}");
}

/// A token from a remote issuer the worker has no keys for: the request pauses for a JWKS
/// callout; the answer's keys let it through (resumed), and they are published for the others.
#[test]
fn a_remote_jwks_is_fetched_through_a_callout_and_the_request_resumes() {
    let issuer = keybound_core::jws::P256Signer::from_bytes(&[200; 32]).unwrap();
    let mut jwk: serde_json::Value = serde_json::from_str(&issuer.public_key().to_json()).unwrap();
    jwk["kid"] = "k1".into();
    let jwks = serde_json::json!({"keys": [jwk]}).to_string();
    let config = serde_json::json!({
        "issuers": [{"issuer": "https://as.example.com", "audiences": ["https://rs.example.com"],
                     "jwks_uri": "http://as.internal/jwks", "jwks_cluster": "as"}],
        "rules": [{"prefix": "/", "allow_bearer": true}], "dpop": {"origins": ["http://rs.example.com"]},
    })
    .to_string();
    let config = load_config(config.as_bytes()).unwrap();
    assert!(config.has_remote_keys());
    let claims = serde_json::json!({"iss": "https://as.example.com", "aud": "https://rs.example.com",
        "exp": 1_700_000_600u64, "iat": 1_700_000_000u64, "sub": "alice", "client_id": "c1", "jti": "t1"});
    let token = keybound_core::jws::sign_json(&issuer, Some("at+jwt"), Some("k1"), &claims).unwrap();
    let host = fake("/api", &[("authorization", &format!("Bearer {token}"))]);
    let mut stream = Stream::default();
    assert_eq!(on_request_headers(&config, &mut stream, &host), Action::Stop);
    assert_eq!(*host.calls.borrow(), ["as"]);
    assert!(host.reply.borrow().is_none());
    on_fetch_answer(&config, &mut stream, &host, Some(200), jwks.as_bytes());
    assert!(*host.resumed.borrow(), "{:?}", host.decisions.borrow());
    assert_eq!(host.decisions.borrow().last().unwrap()[0], "allow");

    // A failed fetch: refused with 503, never resumed.
    let config2 = load_config(
        serde_json::json!({"issuers": [{"issuer": "https://as2.example.com", "audiences": ["x"],
            "jwks_uri": "http://as.internal/jwks2", "jwks_cluster": "as"}],
            "rules": [{"prefix": "/", "allow_bearer": true}], "dpop": {"origins": ["http://rs.example.com"]}})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let claims = serde_json::json!({"iss": "https://as2.example.com", "aud": "x", "exp": 1_700_000_600u64,
        "iat": 1_700_000_000u64, "sub": "alice", "client_id": "c1", "jti": "t2"});
    let token = keybound_core::jws::sign_json(&issuer, Some("at+jwt"), Some("k1"), &claims).unwrap();
    let host = fake("/api", &[("authorization", &format!("Bearer {token}"))]);
    let mut stream = Stream::default();
    assert_eq!(on_request_headers(&config2, &mut stream, &host), Action::Stop);
    on_fetch_answer(&config2, &mut stream, &host, None, b"");
    assert!(!*host.resumed.borrow());
    assert_eq!(host.reply.borrow().as_ref().unwrap().0, 503);
}

/// A worker frees its gates of destroyed configurations at its next request.
#[test]
fn gates_of_destroyed_configurations_are_freed() {
    std::thread::spawn(|| {
        let a = load_config(config_json().as_bytes()).unwrap();
        let b = load_config(config_json().as_bytes()).unwrap();
        on_request_headers(&a, &mut Stream::default(), &fake("/health", &[]));
        on_request_headers(&b, &mut Stream::default(), &fake("/health", &[]));
        assert_eq!(gates_on_this_thread(), 2);
        drop(a);
        on_request_headers(&b, &mut Stream::default(), &fake("/health", &[]));
        assert_eq!(gates_on_this_thread(), 1);
    })
    .join()
    .unwrap();
}
