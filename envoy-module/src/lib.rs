//! # keybound-envoy-module
//!
//! keybound as a native Envoy HTTP filter (`envoy.filters.http.dynamic_modules`, ABI v0.2.0,
//! Envoy 1.40): the same JSON configuration and the same decision ([`keybound_filter::gate::Gate`],
//! keybound-core) as the proxy-wasm filter, without the VM.
//!
//! - `ffi` (private) is the only code that touches Envoy: our own bindings for the part of the
//!   dynamic-module C ABI the module uses, and the event hooks Envoy calls.
//! - [`Host`] is what a request needs from Envoy (headers in and out, local replies, counters,
//!   logs, the clock); [`on_request_headers`] decides a request through it, so the decision flow
//!   is tested here without Envoy.
//! - [`store`] is the state shared by all workers (the `jti` replay cache).
//!
//! This first slice verifies DPoP-bound and Bearer tokens against inline keys. A configuration
//! that needs what the module cannot do yet (remote JWKS, introspection, client certificates,
//! route metadata or names, filter state) is refused at load, naming the field: it never
//! half-works. ES256 and the other algorithms are verified by keybound-core (pure Rust), as the
//! wasm filter does without Envoy's `verify_signature`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use keybound_core::jws::RustCrypto;
use keybound_filter::adapter::{self, Edit, UNAVAILABLE};
use keybound_filter::config::{CertSource, Config, VerifierChoice};
use keybound_filter::gate::{DecisionLog, Fetch, Gate, Outcome};

#[cfg(not(test))]
mod ffi;
pub mod store;

/// The dynamic-module ABI version this module is built for (Envoy 1.40). Envoy compares it with
/// its own and warns on a mismatch; a callback missing from the loading Envoy fails the load
/// (see `build.rs`).
pub const ABI_VERSION: &str = "v0.2.0";

/// Log levels, in the ABI's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Debug.
    Debug,
    /// Info.
    Info,
    /// Warn.
    Warn,
    /// Critical.
    Critical,
}

/// The counters the module defines when a configuration loads (Envoy freezes stat creation
/// after that), by name without Envoy's namespace prefix.
pub const COUNTERS: [&str; 3] = [
    "keybound.token_cache_hits",
    "keybound.nonce_challenges",
    "keybound.replays",
];

/// The decision counter's name; its labels are [`keybound_filter::metrics::LABELS`].
pub const DECISION_COUNTER: &str = "keybound.requests_total";

/// What a request needs from Envoy.
pub trait Host {
    /// All request headers (pseudo-headers included), names lower case, in order.
    fn request_headers(&self) -> Vec<(String, String)>;
    /// Sets (`Some`) or removes (`None`) a request header.
    fn set_request_header(&self, name: &str, value: Option<&str>);
    /// Sets a response header (in the response-headers event).
    fn set_response_header(&self, name: &str, value: &str);
    /// Replies locally.
    fn send_response(&self, status: u16, headers: &[(String, String)], body: &[u8]);
    /// Increments one of [`COUNTERS`].
    fn count(&self, name: &str);
    /// Increments the decision counter with these label values.
    fn count_decision(&self, labels: [&str; 4]);
    /// Whether a line at `level` would be printed.
    fn log_enabled(&self, level: Level) -> bool;
    /// Logs a line.
    fn log(&self, level: Level, message: &str);
    /// Unix seconds.
    fn now(&self) -> u64;
}

/// What Envoy should do with the request after its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Forward it.
    Continue,
    /// Stop: a local reply was sent.
    Stop,
}

/// A loaded filter configuration (one per `filter_config` in Envoy's configuration).
#[derive(Debug)]
pub struct ModuleConfig {
    /// Distinguishes configurations in the per-worker gate table.
    id: u64,
    config: Config,
}

/// Parses the filter configuration (the wasm filter's JSON) and refuses what this module does
/// not support yet, naming the field.
///
/// # Errors
/// The message to log, naming the field: ``invalid configuration `FIELD`: REASON``.
pub fn load_config(json: &[u8]) -> Result<ModuleConfig, String> {
    let config = Config::parse(json).map_err(|e| e.to_string())?;
    let unsupported = |field: &str, what: &str| {
        Err(format!(
            "invalid configuration `{field}`: {what} is not supported by the Envoy module yet (use the wasm filter)"
        ))
    };
    if let Some(i) = config
        .issuers
        .iter()
        .position(|i| matches!(i.keys, keybound_filter::config::Keys::Remote(_)))
    {
        return unsupported(&format!("issuers[{i}].jwks_uri"), "a remote JWKS");
    }
    if config.introspection.is_some() {
        return unsupported("introspection", "token introspection");
    }
    if config.cert_source != CertSource::None {
        return unsupported("mtls", "a client certificate");
    }
    if config.routes.metadata {
        return unsupported("routes.metadata", "route metadata");
    }
    if !config.routes.names.is_empty() {
        return unsupported("routes.names", "route names");
    }
    if config.filter_state {
        return unsupported("filter_state", "Envoy filter state");
    }
    if config.verifier == VerifierChoice::Envoy {
        return unsupported("verifier", "\"envoy\" (the wasm host's verify_signature)");
    }
    static NEXT: AtomicU64 = AtomicU64::new(1);
    Ok(ModuleConfig {
        id: NEXT.fetch_add(1, Ordering::Relaxed),
        config,
    })
}

impl ModuleConfig {
    /// The validated configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The one-line summary logged when the configuration loads.
    pub fn summary(&self) -> String {
        let gate = Gate::new(self.config.clone());
        format!(
            "keybound: configured {} issuer(s); replay cache up to {} bytes shared by all workers; ES256 verified by keybound-core (pure Rust); ABI {ABI_VERSION}",
            self.config.issuers.len(),
            gate.replay().max_bytes(),
        )
    }

    /// This worker's gate for this configuration, created on first use (a gate keeps per-worker
    /// caches and is not thread-safe, like a wasm VM's).
    fn gate(&self) -> Result<Rc<RefCell<Gate>>, String> {
        thread_local! {
            static GATES: RefCell<HashMap<u64, Rc<RefCell<Gate>>>> = RefCell::new(HashMap::new());
        }
        GATES.with(|gates| {
            if let Some(g) = gates.borrow().get(&self.id) {
                return Ok(g.clone());
            }
            let gate = Gate::new(self.config.clone());
            gate.prepare_shared(store::shared())
                .map_err(|e| format!("cannot create the shared replay cache: {e:?}"))?;
            let gate = Rc::new(RefCell::new(gate));
            gates.borrow_mut().insert(self.id, gate.clone());
            Ok(gate)
        })
    }
}

/// Per-request state.
#[derive(Debug, Default)]
pub struct Stream {
    /// The nonce to add to the response.
    fresh_nonce: Option<String>,
}

fn record(host: &dyn Host, gate: &Gate, log: &DecisionLog) {
    host.count_decision([
        log.decision,
        log.reason,
        gate.requirement_name(log.requirement),
        log.mode.as_str(),
    ]);
    for name in adapter::extra_counters(log) {
        host.count(name);
    }
}

fn unavailable(host: &dyn Host) -> Action {
    host.send_response(
        503,
        &[("content-type".to_owned(), "application/json".to_owned())],
        UNAVAILABLE,
    );
    Action::Stop
}

/// Decides a request on its headers.
pub fn on_request_headers(config: &ModuleConfig, stream: &mut Stream, host: &dyn Host) -> Action {
    let gate = match config.gate() {
        Ok(g) => g,
        Err(e) => {
            host.log(Level::Critical, &format!("keybound: {e}"));
            return unavailable(host);
        }
    };
    let headers = host.request_headers();
    let now = host.now();
    let req = adapter::request(&headers, now);
    let outcome = gate.borrow_mut().decide(&req, store::shared(), &RustCrypto);
    let gate = gate.borrow();
    match outcome {
        Outcome::Allow {
            strip,
            path,
            set,
            fresh_nonce,
            log,
        } => {
            for edit in adapter::allow_edits(&gate, strip, path.as_deref(), &set, &headers) {
                match edit {
                    Edit::Remove(name) => host.set_request_header(name, None),
                    Edit::Set(name, value) => host.set_request_header(name, Some(value)),
                }
            }
            stream.fresh_nonce = fresh_nonce;
            record(host, &gate, &log);
            if adapter::logs_allow(&log) && host.log_enabled(Level::Info) {
                host.log(Level::Info, &log.to_json());
            }
            Action::Continue
        }
        Outcome::Deny {
            status,
            headers,
            body,
            log,
        } => {
            record(host, &gate, &log);
            if adapter::logs_reply(&log) && host.log_enabled(Level::Info) {
                host.log(Level::Info, &log.to_json());
            }
            host.send_response(status, &headers, body.as_bytes());
            Action::Stop
        }
        Outcome::Fetch(fetch) => {
            // Unreachable with the configurations `load_config` accepts (inline keys, no
            // introspection); fail closed if it ever happens.
            let reason = match fetch {
                Fetch::Jwks(_) => "jwks_unavailable",
                Fetch::Introspect(_) => "introspection_unavailable",
            };
            record(
                host,
                &gate,
                &DecisionLog {
                    decision: "unavailable",
                    reason,
                    ..DecisionLog::default()
                },
            );
            host.log(
                Level::Warn,
                "keybound: a fetch was needed; the module makes no HTTP calls yet",
            );
            unavailable(host)
        }
    }
}

/// Adds the fresh DPoP nonce, if the decision made one, to the response.
pub fn on_response_headers(stream: &mut Stream, host: &dyn Host) {
    if let Some(nonce) = stream.fresh_nonce.take() {
        host.set_response_header(adapter::NONCE_HEADER, &nonce);
    }
}

#[cfg(test)]
mod tests;
