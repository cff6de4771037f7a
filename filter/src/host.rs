//! The proxy-wasm glue: contexts, shared data, metrics, logs. Only I/O; decisions are
//! [`crate::gate::Gate`]'s.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use keybound_core::jws::RustCrypto;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType, Status};

use crate::config::Config;
use crate::gate::{DecisionLog, Gate, Outcome, Request};
use crate::replay::{Cas, SharedStore, StoreError};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// Counters, defined lazily by name and cached per VM.
#[derive(Default)]
struct Metrics {
    ids: HashMap<String, u32>,
}

impl Metrics {
    fn inc(&mut self, name: &str) {
        let id = match self.ids.get(name) {
            Some(id) => *id,
            None => match hostcalls::define_metric(MetricType::Counter, name) {
                Ok(id) => {
                    self.ids.insert(name.to_owned(), id);
                    id
                }
                Err(_) => return,
            },
        };
        let _ = hostcalls::increment_metric(id, 1);
    }

    fn record(&mut self, log: &DecisionLog) {
        match log.decision {
            "allow" => self.inc("keybound.allowed"),
            "deny" => {
                self.inc("keybound.denied");
                self.inc(&format!("keybound.denied.{}", log.reason));
            }
            _ => self.inc(&format!("keybound.unavailable.{}", log.reason)),
        }
        if log.token_cache_hit {
            self.inc("keybound.token_cache_hits");
        }
        if log.nonce_challenge {
            self.inc("keybound.nonce_challenges");
        }
        if log.reason == "proof_replayed" {
            self.inc("keybound.replays");
        }
    }
}

struct Shared;

impl SharedStore for Shared {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        hostcalls::get_shared_data(key).map_err(|s| StoreError::Host(format!("{s:?}")))
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<Cas, StoreError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(Cas::Written),
            Err(Status::CasMismatch) => Ok(Cas::Mismatch),
            Err(s) => Err(StoreError::Host(format!("{s:?}"))),
        }
    }
}

#[derive(Default)]
struct Root {
    gate: Option<Rc<RefCell<Gate>>>,
    metrics: Rc<RefCell<Metrics>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        match Config::parse(&raw) {
            Ok(config) => {
                let gate = Gate::new(config);
                if let Err(e) = gate.replay().create_buckets(&Shared) {
                    log(
                        LogLevel::Critical,
                        &format!("keybound: cannot create the replay cache: {e:?}"),
                    );
                    return false;
                }
                log(
                    LogLevel::Info,
                    &format!(
                        "keybound: configured {} issuer(s); replay cache up to {} bytes",
                        gate.config().issuers.len(),
                        gate.replay().max_bytes()
                    ),
                );
                self.gate = Some(Rc::new(RefCell::new(gate)));
                true
            }
            Err(e) => {
                log(LogLevel::Critical, &format!("keybound: refusing configuration: {e}"));
                false
            }
        }
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            gate: self.gate.clone(),
            metrics: self.metrics.clone(),
            fresh_nonce: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Http {
    gate: Option<Rc<RefCell<Gate>>>,
    metrics: Rc<RefCell<Metrics>>,
    fresh_nonce: Option<String>,
}

impl Context for Http {}

fn log(level: LogLevel, msg: &str) {
    let _ = hostcalls::log(level, msg);
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let Some(gate) = self.gate.clone() else {
            // Fail closed: no configuration, no traffic.
            self.send_http_response(
                503,
                vec![("content-type", "application/json")],
                Some(br#"{"error":"temporarily_unavailable"}"#),
            );
            return Action::Pause;
        };
        let headers = self.get_http_request_headers();
        let pseudo = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        let digest = self
            .get_property(vec!["connection", "sha256_peer_certificate_digest"])
            .and_then(|b| String::from_utf8(b).ok());
        let now = self
            .get_current_time()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let req = Request {
            method: pseudo(":method"),
            scheme: pseudo(":scheme"),
            authority: pseudo(":authority"),
            path: pseudo(":path"),
            headers: &headers,
            peer_cert_digest: digest.as_deref(),
            now,
        };
        let outcome = gate.borrow_mut().decide(&req, &Shared, &RustCrypto);
        match outcome {
            Outcome::Allow {
                strip,
                set,
                fresh_nonce,
                log: l,
            } => {
                for name in gate.borrow().strip(strip) {
                    self.set_http_request_header(name, None);
                }
                for (name, value) in &set {
                    self.set_http_request_header(name, Some(value));
                }
                self.fresh_nonce = fresh_nonce;
                self.metrics.borrow_mut().record(&l);
                if l.reason != "no_auth" {
                    log(LogLevel::Info, &l.to_json());
                }
                Action::Continue
            }
            Outcome::Deny {
                status,
                headers,
                body,
                log: l,
            } => {
                self.metrics.borrow_mut().record(&l);
                log(LogLevel::Info, &l.to_json());
                let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                self.send_http_response(u32::from(status), hs, Some(body.as_bytes()));
                Action::Pause
            }
        }
    }

    fn on_http_response_headers(&mut self, _n: usize, _eos: bool) -> Action {
        if let Some(nonce) = self.fresh_nonce.take() {
            self.set_http_response_header("dpop-nonce", Some(&nonce));
        }
        Action::Continue
    }
}
