//! The proxy-wasm glue: contexts, shared data, metrics, logs. Only I/O; decisions are
//! [`crate::gate::Gate`]'s.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use keybound_core::jwk::PublicKey;
use keybound_core::jws::{Alg, P256Signer, RustCrypto, Signer, Verifier};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType, MetricType, Status};

use crate::adapter::{self, Level, Property, UNAVAILABLE};
use crate::config::{Config, VerifierChoice};
use crate::envoy_crypto::{es256_verify_args, result_is_valid};
use crate::gate::{DecisionLog, Fetch, Gate, HttpCall};
use crate::policy::Mode;
use crate::replay::{Cas, SharedStore, StoreError};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// Counters, defined lazily by name and cached per VM.
#[derive(Default)]
struct Metrics {
    ids: HashMap<String, u32>,
    /// The decision counters, by (decision, reason, requirement, mode).
    decisions: HashMap<(&'static str, &'static str, Option<usize>, Mode), u32>,
    /// Decisions since the gauges were last updated.
    since_gauges: u32,
    /// Whether Envoy prints info lines, and the second that was asked (see
    /// [`Metrics::info_enabled`]).
    info: Option<(u64, bool)>,
}

/// The gauges are refreshed every this many decisions (they cost a call into Envoy each).
const GAUGE_EVERY: u32 = 1024;

impl Metrics {
    fn id(&mut self, kind: MetricType, name: &str) -> Option<u32> {
        if let Some(id) = self.ids.get(name) {
            return Some(*id);
        }
        let id = hostcalls::define_metric(kind, name).ok()?;
        self.ids.insert(name.to_owned(), id);
        Some(id)
    }

    fn inc(&mut self, name: &str) {
        if let Some(id) = self.id(MetricType::Counter, name) {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }

    fn gauge(&mut self, name: &str, value: u64) {
        if let Some(id) = self.id(MetricType::Gauge, name) {
            let _ = hostcalls::record_metric(id, value);
        }
    }

    /// Every [`GAUGE_EVERY`] decisions: this VM's memory (wasm linear memory, which only grows)
    /// and its token-cache size. The replay cache lives in shared data and is bounded by its
    /// configuration (`buckets × entries_per_bucket × 24` bytes), whatever the traffic.
    fn maybe_gauges(&mut self, gate: &Gate) {
        self.since_gauges += 1;
        if self.since_gauges < GAUGE_EVERY {
            return;
        }
        self.since_gauges = 0;
        let memory = core::arch::wasm32::memory_size::<0>() as u64 * 65_536;
        self.gauge("keybound.vm_memory_bytes", memory);
        self.gauge("keybound.token_cache_entries", gate.cached_tokens() as u64);
    }

    /// Whether Envoy would print an info line, so that the decision line is only built when it is
    /// shown. Asked at most once a second (each ask is a call into Envoy), so a log level changed
    /// through Envoy's admin interface applies within a second.
    fn info_enabled(&mut self, now: u64) -> bool {
        match self.info {
            Some((at, enabled)) if at == now => enabled,
            _ => {
                let enabled = hostcalls::get_log_level().map_or(true, |l| l as u32 <= LogLevel::Info as u32);
                self.info = Some((now, enabled));
                enabled
            }
        }
    }

    fn record(&mut self, log: &DecisionLog, gate: &Gate) {
        let key = (log.decision, log.reason, log.requirement, log.mode);
        let id = match self.decisions.get(&key) {
            Some(id) => Some(*id),
            None => {
                let name = decision_metric(log, gate.requirement_name(log.requirement));
                let id = hostcalls::define_metric(MetricType::Counter, &name).ok();
                if let Some(id) = id {
                    self.decisions.insert(key, id);
                }
                id
            }
        };
        if let Some(id) = id {
            let _ = hostcalls::increment_metric(id, 1);
        }
        for name in adapter::extra_counters(log) {
            self.inc(name);
        }
    }
}

/// The name of the decision counter for `log` (see [`crate::metrics`]).
fn decision_metric(log: &DecisionLog, requirement: &str) -> String {
    crate::metrics::decision_counter(log.decision, log.reason, requirement, log.mode.as_str())
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

/// Signature verification: ES256 through Envoy's `verify_signature` (BoringSSL) when chosen,
/// everything else (and ES256 otherwise) in pure Rust.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum HostVerifier {
    Envoy,
    #[default]
    Rust,
}

impl Verifier for HostVerifier {
    fn verify(&self, alg: Alg, key: &PublicKey, message: &[u8], signature: &[u8]) -> bool {
        match (self, alg, key) {
            (HostVerifier::Envoy, Alg::Es256, PublicKey::P256 { x, y }) => envoy_es256(x, y, message, signature),
            _ => RustCrypto.verify(alg, key, message, signature),
        }
    }
}

fn envoy_es256(x: &[u8; 32], y: &[u8; 32], message: &[u8], jose: &[u8]) -> bool {
    let Some(args) = es256_verify_args(x, y, message, jose) else {
        return false;
    };
    matches!(
        hostcalls::call_foreign_function("verify_signature", Some(&args)),
        Ok(Some(out)) if result_is_valid(&out)
    )
}

/// Whether the host's `verify_signature` works: it must accept a good ES256 signature and refuse
/// the same signature with one bit flipped.
fn host_verifier_works() -> bool {
    let Ok(signer) = P256Signer::from_bytes(&[0x4b; 32]) else {
        return false;
    };
    let message = b"keybound: verify_signature probe";
    let (Ok(mut sig), PublicKey::P256 { x, y }) = (signer.sign(message), signer.public_key()) else {
        return false;
    };
    let good = envoy_es256(x, y, message, &sig);
    if let Some(b) = sig.get_mut(10) {
        *b ^= 1;
    }
    good && !envoy_es256(x, y, message, &sig)
}

fn now_secs(t: SystemTime) -> u64 {
    adapter::unix_secs(t)
}

/// Makes an HTTP call from the current context; returns the call's token.
fn dispatch(call: &HttpCall<'_>) -> Result<u32, String> {
    let headers: Vec<(&str, &str)> = call.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    hostcalls::dispatch_http_call(
        &call.target.cluster,
        headers,
        call.body.as_deref(),
        vec![],
        Duration::from_millis(call.target.timeout_ms),
    )
    .map_err(|s| format!("dispatch to cluster {:?} failed: {s:?}", call.target.cluster))
}

/// Hands a background fetch's answer to the gate, with metrics and a log line.
fn take_answer(gate: &mut Gate, metrics: &mut Metrics, fetch: &Fetch, status: Option<u16>, body: &[u8], now: u64) {
    let report = adapter::take_answer(gate, fetch, status, body, &Shared, now);
    if let Some(c) = report.counter {
        metrics.inc(c);
    }
    if report.level != Level::Debug {
        log(wasm_level(report.level), &report.message);
    }
}

fn wasm_level(l: Level) -> LogLevel {
    match l {
        Level::Debug => LogLevel::Debug,
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Critical => LogLevel::Critical,
    }
}

fn call_answer(ctx: &dyn Context, body_size: usize) -> (Option<u16>, Vec<u8>) {
    let status = ctx
        .get_http_call_response_header(":status")
        .and_then(|s| s.parse().ok());
    let body = if body_size > 0 {
        ctx.get_http_call_response_body(0, body_size).unwrap_or_default()
    } else {
        Vec::new()
    };
    (status, body)
}

#[derive(Default)]
struct Root {
    gate: Option<Rc<RefCell<Gate>>>,
    metrics: Rc<RefCell<Metrics>>,
    verifier: HostVerifier,
    /// JWKS fetches in flight from this root context, by call token.
    pending: HashMap<u32, Fetch>,
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        let (Some(fetch), Some(gate)) = (self.pending.remove(&token), self.gate.clone()) else {
            return;
        };
        let (status, body) = call_answer(self, body_size);
        let now = now_secs(self.get_current_time());
        take_answer(
            &mut gate.borrow_mut(),
            &mut self.metrics.borrow_mut(),
            &fetch,
            status,
            &body,
            now,
        );
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        let config = match Config::parse(&raw) {
            Ok(config) => config,
            Err(e) => {
                log(LogLevel::Critical, &format!("keybound: refusing configuration: {e}"));
                return false;
            }
        };
        self.verifier = match config.verifier {
            VerifierChoice::Rust => HostVerifier::Rust,
            VerifierChoice::Auto if host_verifier_works() => HostVerifier::Envoy,
            VerifierChoice::Auto => HostVerifier::Rust,
            VerifierChoice::Envoy if host_verifier_works() => HostVerifier::Envoy,
            VerifierChoice::Envoy => {
                log(
                    LogLevel::Critical,
                    "keybound: refusing configuration: verifier: \"envoy\" but this host has no working verify_signature",
                );
                return false;
            }
        };
        let gate = Gate::new(config);
        if let Err(e) = gate.prepare_shared(&Shared) {
            log(
                LogLevel::Critical,
                &format!("keybound: cannot create shared data: {e:?}"),
            );
            return false;
        }
        if gate.config().has_remote_keys() {
            self.set_tick_period(Duration::from_millis(500));
        }
        log(
            LogLevel::Info,
            &format!(
                "keybound: configured {} issuer(s); replay cache up to {} bytes; ES256 verified by {}",
                gate.config().issuers.len(),
                gate.replay().max_bytes(),
                match self.verifier {
                    HostVerifier::Envoy => "Envoy (BoringSSL verify_signature)",
                    HostVerifier::Rust => "keybound-core (pure Rust)",
                }
            ),
        );
        self.gate = Some(Rc::new(RefCell::new(gate)));
        true
    }

    fn on_tick(&mut self) {
        let Some(gate) = self.gate.clone() else {
            return;
        };
        let now = now_secs(self.get_current_time());
        let fetches = gate.borrow_mut().due_fetches(&Shared, now);
        for fetch in fetches {
            self.metrics.borrow_mut().inc("keybound.jwks_fetches");
            let sent = gate
                .borrow()
                .call_for(&fetch)
                .ok_or_else(|| "no such fetch".to_owned())
                .and_then(|call| dispatch(&call));
            match sent {
                Ok(token) => {
                    self.pending.insert(token, fetch);
                }
                Err(e) => {
                    self.metrics.borrow_mut().inc("keybound.jwks_fetch_failed");
                    log(LogLevel::Warn, &format!("keybound: JWKS fetch not sent: {e}"));
                }
            }
        }
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            gate: self.gate.clone(),
            metrics: self.metrics.clone(),
            verifier: self.verifier,
            stream: adapter::Stream::default(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Http {
    gate: Option<Rc<RefCell<Gate>>>,
    metrics: Rc<RefCell<Metrics>>,
    verifier: HostVerifier,
    stream: adapter::Stream,
}

fn log(level: LogLevel, msg: &str) {
    let _ = hostcalls::log(level, msg);
}

/// The proxy-wasm host of the current HTTP context.
struct WasmHost<'a> {
    metrics: &'a RefCell<Metrics>,
}

impl adapter::Host for WasmHost<'_> {
    fn request_headers(&self) -> Vec<(String, String)> {
        hostcalls::get_map(MapType::HttpRequestHeaders).unwrap_or_default()
    }

    fn property(&self, property: Property) -> Option<String> {
        let path = match property {
            Property::PeerCertDigest => vec!["connection", "sha256_peer_certificate_digest"],
            Property::PeerUriSan => vec!["connection", "uri_san_peer_certificate"],
            Property::RouteRequirement => vec!["xds", "route_metadata", "filter_metadata", "keybound", "requirement"],
            Property::RouteName => vec!["xds", "route_name"],
        };
        hostcalls::get_property(path)
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok())
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value);
    }

    fn set_response_header(&self, name: &str, value: &str) {
        let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(value));
    }

    fn send_response(&self, status: u16, headers: &[(String, String)], body: &[u8]) {
        let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let _ = hostcalls::send_http_response(u32::from(status), hs, Some(body));
    }

    fn record(&self, gate: &Gate, log: &DecisionLog) {
        let mut m = self.metrics.borrow_mut();
        m.record(log, gate);
        m.maybe_gauges(gate);
    }

    fn count(&self, name: &'static str) {
        self.metrics.borrow_mut().inc(name);
    }

    fn log_enabled(&self, level: Level, now: u64) -> bool {
        match level {
            Level::Info => self.metrics.borrow_mut().info_enabled(now),
            Level::Debug => hostcalls::get_log_level().is_ok_and(|l| l as u32 <= LogLevel::Debug as u32),
            Level::Warn | Level::Critical => true,
        }
    }

    fn log(&self, level: Level, message: &str) {
        log(wasm_level(level), message);
    }

    fn set_filter_state(&self, name: &str, value: &str) {
        // Envoy stores it as filter state `wasm.keybound.<name>`.
        let _ = hostcalls::set_property(vec![&format!("keybound.{name}")], Some(value.as_bytes()));
    }

    fn http_call(&self, call: &HttpCall<'_>) -> Result<(), String> {
        dispatch(call).map(|_| ())
    }

    fn resume(&self) {
        let _ = hostcalls::resume_http_request();
    }

    fn now(&self) -> u64 {
        now_secs(hostcalls::get_current_time().unwrap_or(std::time::UNIX_EPOCH))
    }
}

impl Http {
    /// Fails closed without a configuration: no traffic.
    fn no_gate(&self) -> Action {
        self.send_http_response(503, vec![("content-type", "application/json")], Some(UNAVAILABLE));
        Action::Pause
    }
}

fn action(a: adapter::Action) -> Action {
    match a {
        adapter::Action::Continue => Action::Continue,
        adapter::Action::Stop => Action::Pause,
    }
}

impl Context for Http {
    fn on_http_call_response(&mut self, _token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        let Some(gate) = self.gate.clone() else {
            return;
        };
        let (status, body) = call_answer(self, body_size);
        let host = WasmHost { metrics: &self.metrics };
        adapter::on_fetch_answer(&gate, &mut self.stream, &host, &Shared, &self.verifier, status, &body);
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let Some(gate) = self.gate.clone() else {
            return self.no_gate();
        };
        let host = WasmHost { metrics: &self.metrics };
        action(adapter::on_request_headers(
            &gate,
            &mut self.stream,
            &host,
            &Shared,
            &self.verifier,
        ))
    }

    fn on_http_response_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let host = WasmHost { metrics: &self.metrics };
        adapter::on_response_headers(&mut self.stream, &host);
        Action::Continue
    }
}
