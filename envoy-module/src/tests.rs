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
}

impl Host for Fake {
    fn request_headers(&self) -> Vec<(String, String)> {
        self.headers.clone()
    }
    fn set_request_header(&self, name: &str, value: Option<&str>) {
        self.set.borrow_mut().push((name.into(), value.map(Into::into)));
    }
    fn set_response_header(&self, _: &str, _: &str) {}
    fn send_response(&self, status: u16, headers: &[(String, String)], body: &[u8]) {
        *self.reply.borrow_mut() = Some((status, headers.to_vec(), body.to_vec()));
    }
    fn count(&self, _: &str) {}
    fn count_decision(&self, labels: [&str; 4]) {
        self.decisions.borrow_mut().push(labels.map(String::from));
    }
    fn log_enabled(&self, _: Level) -> bool {
        true
    }
    fn log(&self, _: Level, _: &str) {}
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
fn what_the_module_cannot_do_yet_is_refused_naming_the_field() {
    let e = load_config(br#"{"issuers": []}"#).unwrap_err();
    assert!(e.contains("issuers"), "{e}");
    let with = |extra: &str| {
        let mut v: serde_json::Value = serde_json::from_str(&config_json()).unwrap();
        let extra: serde_json::Value = serde_json::from_str(extra).unwrap();
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        load_config(v.to_string().as_bytes()).unwrap_err()
    };
    assert!(with(r#"{"filter_state": true}"#).contains("`filter_state`"));
    assert!(with(r#"{"verifier": "envoy"}"#).contains("`verifier`"));
}
