//! # keybound-envoy-module
//!
//! keybound as a native Envoy HTTP filter (`envoy.filters.http.dynamic_modules`, ABI v0.2.0,
//! Envoy 1.40): the same JSON configuration and the same request flow
//! ([`keybound_filter::adapter`], [`keybound_filter::gate::Gate`], keybound-core) as the
//! proxy-wasm filter, without the VM.
//!
//! - `ffi` (private) is the only code that touches Envoy: our own bindings for the part of the
//!   dynamic-module C ABI the module uses, the event hooks Envoy calls, and the module's
//!   [`Host`]: headers, local replies, counters, logs, connection and route properties
//!   (`get_attribute_string`, route metadata), filter state, HTTP callouts.
//! - [`store`] is the state shared by all workers (the `jti` replay cache, the fetched JWKS and
//!   their fetch locks); [`crypto`] verifies signatures with ring.
//! - Each worker thread has its own [`Gate`] per configuration (its token cache, like a wasm
//!   VM's); the main thread has one too, which refreshes remote JWKS in the background
//!   ([`ModuleConfig::background_fetches`], driven by a timer thread through Envoy's
//!   configuration scheduler) and publishes them to the store, where the workers adopt them.
//!
//! What the wasm filter does through Envoy's `verify_signature` foreign function
//! (`"verifier": "envoy"`) is refused at load, naming the field: the module verifies with ring.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use keybound_filter::adapter;
pub use keybound_filter::adapter::{Action, Host, Level, Property, Stream};
use keybound_filter::config::{Config, VerifierChoice};
use keybound_filter::gate::{Fetch, Gate};

pub mod crypto;
#[cfg(not(test))]
mod ffi;
pub mod store;

/// The dynamic-module ABI version this module is built for (Envoy 1.40). Envoy compares it with
/// its own and warns on a mismatch; a callback missing from the loading Envoy fails the load
/// (see `build.rs`).
pub const ABI_VERSION: &str = "v0.2.0";

/// The counters the module defines when a configuration loads (Envoy freezes stat creation
/// after that), by name without Envoy's namespace prefix.
pub const COUNTERS: [&str; 8] = [
    "keybound.token_cache_hits",
    "keybound.nonce_challenges",
    "keybound.replays",
    adapter::FETCH_COUNTERS[0],
    adapter::FETCH_COUNTERS[1],
    adapter::FETCH_COUNTERS[2],
    adapter::FETCH_COUNTERS[3],
    adapter::FETCH_COUNTERS[4],
];

/// The decision counter's name; its labels are [`keybound_filter::metrics::LABELS`].
pub const DECISION_COUNTER: &str = "keybound.requests_total";

/// Configurations destroyed so far: a worker that sees this change frees its gates of
/// configurations that are gone.
static DESTROYED: AtomicU64 = AtomicU64::new(0);

/// Ids of the configurations alive, to tell a worker which of its gates to free.
fn live() -> &'static std::sync::Mutex<std::collections::HashSet<u64>> {
    static LIVE: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<u64>>> = std::sync::OnceLock::new();
    LIVE.get_or_init(Default::default)
}

/// A loaded filter configuration (one per `filter_config` in Envoy's configuration).
#[derive(Debug)]
pub struct ModuleConfig {
    /// Distinguishes configurations in the per-thread gate tables.
    id: u64,
    config: Config,
}

impl Drop for ModuleConfig {
    fn drop(&mut self) {
        if let Ok(mut l) = live().lock() {
            l.remove(&self.id);
        }
        DESTROYED.fetch_add(1, Ordering::Release);
    }
}

/// Parses the filter configuration (the wasm filter's JSON; `*_from_env` secrets come from
/// Envoy's process environment) and refuses what this module does not do, naming the field.
///
/// # Errors
/// The message to log, naming the field: ``invalid configuration `FIELD`: REASON``.
pub fn load_config(json: &[u8]) -> Result<ModuleConfig, String> {
    let config = Config::parse(json).map_err(|e| e.to_string())?;
    if config.verifier == VerifierChoice::Envoy {
        return Err(
            "invalid configuration `verifier`: \"envoy\" (the wasm host's verify_signature) is not available to the Envoy module, which verifies with ring (use \"auto\" or \"rust\")"
                .to_owned(),
        );
    }
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut l) = live().lock() {
        l.insert(id);
    }
    Ok(ModuleConfig { id, config })
}

/// The gates of this thread, by configuration id, and the [`DESTROYED`] count they were last
/// pruned at.
struct Gates {
    gates: RefCell<HashMap<u64, Rc<RefCell<Gate>>>>,
    pruned_at: Cell<u64>,
    /// Unix second of this thread's last adoption of shared JWKS, per configuration.
    synced: RefCell<HashMap<u64, u64>>,
}

thread_local! {
    static GATES: Gates = Gates {
        gates: RefCell::new(HashMap::new()),
        pruned_at: Cell::new(0),
        synced: RefCell::new(HashMap::new()),
    };
}

/// How many gates this thread holds (for tests of freeing).
pub fn gates_on_this_thread() -> usize {
    GATES.with(|g| g.gates.borrow().len())
}

impl ModuleConfig {
    /// The validated configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether an issuer's keys come from a `jwks_uri` (then the module refreshes them in the
    /// background).
    pub fn has_remote_keys(&self) -> bool {
        self.config.has_remote_keys()
    }

    /// The signature verifier this configuration chose.
    pub fn verifier(&self) -> crypto::Choice {
        match self.config.verifier {
            VerifierChoice::Rust => crypto::Choice::Rust,
            _ => crypto::Choice::Ring,
        }
    }

    /// The one-line summary logged when the configuration loads.
    pub fn summary(&self) -> String {
        let gate = Gate::new(self.config.clone());
        format!(
            "keybound: configured {} issuer(s); replay cache up to {} bytes shared by all workers; ES256 verified by {}; ABI {ABI_VERSION}",
            self.config.issuers.len(),
            gate.replay().max_bytes(),
            self.verifier().describe(),
        )
    }

    /// This thread's gate for this configuration, created on first use (a gate keeps per-thread
    /// caches and is not thread-safe, like a wasm VM's). Gates of destroyed configurations are
    /// freed here, at the thread's first request after a destruction.
    pub fn gate(&self) -> Result<Rc<RefCell<Gate>>, String> {
        GATES.with(|g| {
            let destroyed = DESTROYED.load(Ordering::Acquire);
            if g.pruned_at.get() != destroyed {
                g.pruned_at.set(destroyed);
                if let Ok(alive) = live().lock() {
                    g.gates.borrow_mut().retain(|id, _| alive.contains(id));
                    g.synced.borrow_mut().retain(|id, _| alive.contains(id));
                }
            }
            if let Some(gate) = g.gates.borrow().get(&self.id) {
                return Ok(gate.clone());
            }
            let gate = Gate::new(self.config.clone());
            gate.prepare_shared(store::shared())
                .map_err(|e| format!("cannot create the shared replay cache: {e:?}"))?;
            let gate = Rc::new(RefCell::new(gate));
            g.gates.borrow_mut().insert(self.id, gate.clone());
            Ok(gate)
        })
    }

    /// Adopts, at most once a second per thread, the JWKS another thread fetched.
    fn adopt_shared_keys(&self, gate: &RefCell<Gate>, now: u64) {
        if !self.has_remote_keys() {
            return;
        }
        let due = GATES.with(|g| {
            let mut synced = g.synced.borrow_mut();
            let last = synced.entry(self.id).or_insert(0);
            let due = *last != now;
            *last = now;
            due
        });
        if due {
            gate.borrow_mut().adopt_shared_keys(store::shared());
        }
    }

    /// The background work of the main thread (every tick of the timer): adopts what others
    /// published and returns the JWKS fetches this thread won the instance-wide right to make
    /// (refresh due, or keys missing).
    ///
    /// # Errors
    /// If the gate cannot be made.
    pub fn background_fetches(&self, now: u64) -> Result<Vec<(Fetch, BackgroundCall)>, String> {
        let gate = self.gate()?;
        let mut gate = gate.borrow_mut();
        let fetches = gate.due_fetches(store::shared(), now);
        Ok(fetches
            .into_iter()
            .filter_map(|f| {
                let call = gate.call_for(&f)?;
                let call = BackgroundCall {
                    cluster: call.target.cluster.clone(),
                    headers: call.headers.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
                    body: call.body.clone().unwrap_or_default(),
                    timeout_ms: call.target.timeout_ms,
                };
                Some((f, call))
            })
            .collect())
    }

    /// The answer of a background fetch, on the main thread: the keys go to this thread's gate
    /// and are published to the store.
    pub fn background_answer(
        &self,
        fetch: &Fetch,
        status: Option<u16>,
        body: &[u8],
        now: u64,
    ) -> adapter::AnswerReport {
        match self.gate() {
            Ok(gate) => adapter::take_answer(&mut gate.borrow_mut(), fetch, status, body, store::shared(), now),
            Err(e) => adapter::AnswerReport {
                counter: None,
                level: Level::Critical,
                message: format!("keybound: {e}"),
            },
        }
    }
}

/// An HTTP call the main thread makes for a background fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackgroundCall {
    /// Envoy cluster.
    pub cluster: String,
    /// Headers with `:method`, `:path`, `:authority`.
    pub headers: Vec<(String, String)>,
    /// Body (empty: none).
    pub body: Vec<u8>,
    /// Timeout.
    pub timeout_ms: u64,
}

fn unavailable(host: &dyn Host) -> Action {
    host.send_response(
        503,
        &[("content-type".to_owned(), "application/json".to_owned())],
        adapter::UNAVAILABLE,
    );
    Action::Stop
}

/// Decides a request on its headers (the shared flow, [`adapter::on_request_headers`]).
pub fn on_request_headers(config: &ModuleConfig, stream: &mut Stream, host: &dyn Host) -> Action {
    let gate = match config.gate() {
        Ok(g) => g,
        Err(e) => {
            host.log(Level::Critical, &format!("keybound: {e}"));
            return unavailable(host);
        }
    };
    config.adopt_shared_keys(&gate, host.now());
    adapter::on_request_headers(&gate, stream, host, store::shared(), &config.verifier())
}

/// The answer to the HTTP callout a paused request waits for ([`adapter::on_fetch_answer`]).
pub fn on_fetch_answer(config: &ModuleConfig, stream: &mut Stream, host: &dyn Host, status: Option<u16>, body: &[u8]) {
    match config.gate() {
        Ok(gate) => adapter::on_fetch_answer(&gate, stream, host, store::shared(), &config.verifier(), status, body),
        Err(e) => {
            host.log(Level::Critical, &format!("keybound: {e}"));
            unavailable(host);
        }
    }
}

/// Adds the fresh DPoP nonce, if the decision made one, to the response.
pub fn on_response_headers(stream: &mut Stream, host: &dyn Host) {
    adapter::on_response_headers(stream, host);
}

#[cfg(test)]
mod tests;
