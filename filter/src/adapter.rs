//! What every host adapter (the proxy-wasm filter, the native Envoy module) does around a
//! [`Gate`] decision, independent of the host's API: build the [`Request`] from the header list
//! and the connection and route properties the configuration reads, turn an
//! [`Outcome::Allow`] into header edits, choose the counters, log
//! lines and filter state of a decision, pause a request for a fetch (JWKS, introspection) and
//! decide it again on the answer. [`on_request_headers`], [`on_fetch_answer`] and
//! [`on_response_headers`] are the whole request flow; an adapter implements [`Host`] (moving
//! bytes in and out of its host) and calls them from its host's events.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use keybound_core::jws::Verifier;

use crate::config::CertSource;
use crate::gate::{DecisionLog, Fetch, Gate, HttpCall, Outcome, Request, Strip};
use crate::replay::SharedStore;

/// The body of a 503 when the filter cannot decide (no configuration, a fetch that could not be
/// sent).
pub const UNAVAILABLE: &[u8] = br#"{"error":"temporarily_unavailable"}"#;

/// The response header that carries a fresh DPoP nonce.
pub const NONCE_HEADER: &str = "dpop-nonce";

/// The first value of header `name` (lower case, pseudo-headers included), or `""`.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
}

/// The request as the gate sees it: pseudo-headers from `headers`, nothing read from the
/// connection or the route (the caller fills those in when the configuration reads them).
pub fn request(headers: &[(String, String)], now: u64) -> Request<'_> {
    Request {
        method: header(headers, ":method"),
        scheme: header(headers, ":scheme"),
        authority: header(headers, ":authority"),
        path: header(headers, ":path"),
        headers,
        peer_cert_digest: None,
        peer_uri_san: None,
        route_name: None,
        route_requirement: None,
        now,
    }
}

/// One change to the request headers before it is forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit<'a> {
    /// Remove every value of this header.
    Remove(&'a str),
    /// Replace every value of this header with this one.
    Set(&'a str, &'a str),
}

/// The header edits for an allowed request, in order: remove what `strip` names and the request
/// carries (only what is there, in every spelling: each removal is a call into the host), then
/// the canonical `:path` if any, then the verified headers.
pub fn allow_edits<'a>(
    gate: &Gate,
    strip: Strip,
    path: Option<&'a str>,
    set: &'a [(String, String)],
    headers: &'a [(String, String)],
) -> Vec<Edit<'a>> {
    let mut edits: Vec<Edit<'a>> = gate.strip_names(strip, headers).into_iter().map(Edit::Remove).collect();
    if let Some(path) = path {
        edits.push(Edit::Set(":path", path));
    }
    edits.extend(set.iter().map(|(k, v)| Edit::Set(k.as_str(), v.as_str())));
    edits
}

/// The plain counters (besides the decision counter, [`crate::metrics::decision_counter`]) a
/// decision increments, by name without the host's prefix.
pub fn extra_counters(log: &DecisionLog) -> impl Iterator<Item = &'static str> {
    [
        log.token_cache_hit.then_some("keybound.token_cache_hits"),
        log.nonce_challenge.then_some("keybound.nonce_challenges"),
        (log.reason == "proof_replayed").then_some("keybound.replays"),
    ]
    .into_iter()
    .flatten()
}

/// Whether an allowed request gets a decision log line (requests on open routes and CORS
/// preflights do not).
pub fn logs_allow(log: &DecisionLog) -> bool {
    !matches!(log.reason, "no_auth" | "cors_preflight")
}

/// Whether a local reply gets a decision log line (documents the filter serves do not).
pub fn logs_reply(log: &DecisionLog) -> bool {
    log.decision != "serve"
}

/// Unix seconds of `t` (0 before the epoch).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Log levels an adapter prints at.
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

/// A connection or route property the gate may need, read from the host only when the
/// configuration uses it ([`reads`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Property {
    /// `connection.sha256_peer_certificate_digest`: the client certificate's SHA-256, lower-case
    /// hex.
    PeerCertDigest,
    /// `connection.uri_san_peer_certificate`: the client certificate's first URI SAN.
    PeerUriSan,
    /// `xds.route_metadata.filter_metadata.keybound.requirement`.
    RouteRequirement,
    /// `xds.route_name`.
    RouteName,
}

/// The properties a configuration reads for every request (each read is a call into the host).
pub fn reads(gate: &Gate) -> Vec<Property> {
    let config = gate.config();
    let mut out = Vec::new();
    match &config.cert_source {
        CertSource::Connection => out.push(Property::PeerCertDigest),
        CertSource::Xfcc {
            front_proxy_uri_sans, ..
        } if !front_proxy_uri_sans.is_empty() => out.push(Property::PeerUriSan),
        _ => {}
    }
    if config.routes.metadata {
        out.push(Property::RouteRequirement);
    }
    if !config.routes.names.is_empty() {
        out.push(Property::RouteName);
    }
    out
}

/// What the request flow needs from a host, for one request.
pub trait Host {
    /// All request headers (pseudo-headers included), names lower case, in order.
    fn request_headers(&self) -> Vec<(String, String)>;
    /// A connection or route property, if the host has it.
    fn property(&self, property: Property) -> Option<String>;
    /// Sets (`Some`) or removes (`None`) a request header.
    fn set_request_header(&self, name: &str, value: Option<&str>);
    /// Sets a response header (in the response-headers event).
    fn set_response_header(&self, name: &str, value: &str);
    /// Replies locally.
    fn send_response(&self, status: u16, headers: &[(String, String)], body: &[u8]);
    /// Counts a decision: the decision counter, and the [`extra_counters`].
    fn record(&self, gate: &Gate, log: &DecisionLog);
    /// Increments a plain counter ([`FETCH_COUNTERS`], ...), by name without the host's prefix.
    fn count(&self, name: &'static str);
    /// Whether a line at `level` would be printed (`now`: unix seconds, for hosts that cache
    /// the answer).
    fn log_enabled(&self, level: Level, now: u64) -> bool;
    /// Logs a line.
    fn log(&self, level: Level, message: &str);
    /// Sets a value in Envoy filter state under this host's name for `keybound.<name>`.
    fn set_filter_state(&self, name: &str, value: &str);
    /// Sends an HTTP call through an Envoy cluster for this request; its answer comes back
    /// through [`on_fetch_answer`].
    ///
    /// # Errors
    /// Why the call was not sent (for the log).
    fn http_call(&self, call: &HttpCall<'_>) -> Result<(), String>;
    /// Resumes the request paused for a fetch (it is forwarded upstream).
    fn resume(&self);
    /// Unix seconds.
    fn now(&self) -> u64;
}

/// What the host should do with the request after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Forward it.
    Continue,
    /// Stop: a local reply was sent, or a fetch is under way.
    Stop,
}

/// Per-request state of the flow.
#[derive(Debug, Default)]
pub struct Stream {
    /// The nonce to add to the response.
    fresh_nonce: Option<String>,
    /// The fetch the request waits for.
    pending: Option<Fetch>,
}

/// The plain counters the request flow and the background JWKS refresh increment (besides
/// [`extra_counters`]), for hosts that must define their counters up front.
pub const FETCH_COUNTERS: [&str; 5] = [
    "keybound.jwks_fetches",
    "keybound.jwks_fetch_ok",
    "keybound.jwks_fetch_failed",
    "keybound.introspection_calls",
    "keybound.introspection_failed",
];

/// The counter a fetch increments when it is sent.
pub fn fetch_counter(fetch: &Fetch) -> &'static str {
    match fetch {
        Fetch::Jwks(_) => "keybound.jwks_fetches",
        Fetch::Introspect(_) => "keybound.introspection_calls",
    }
}

/// The decision of a request whose fetch could not be made or answered.
fn unavailable_log(fetch: &Fetch) -> DecisionLog {
    DecisionLog {
        decision: "unavailable",
        reason: match fetch {
            Fetch::Jwks(_) => "jwks_unavailable",
            Fetch::Introspect(_) => "introspection_unavailable",
        },
        ..DecisionLog::default()
    }
}

/// What happened to a fetch's answer: the counter to increment (if any) and the line to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerReport {
    /// Counter name, without the host's prefix.
    pub counter: Option<&'static str>,
    /// Log level.
    pub level: Level,
    /// Log line.
    pub message: String,
}

/// Hands a fetch's answer (`status`: the HTTP status, `None` if the call failed) to the gate.
pub fn take_answer(
    gate: &mut Gate,
    fetch: &Fetch,
    status: Option<u16>,
    body: &[u8],
    store: &dyn SharedStore,
    now: u64,
) -> AnswerReport {
    match fetch {
        Fetch::Jwks(i) => match gate.jwks_response(*i, status, body, store, now) {
            Ok(n) => AnswerReport {
                counter: Some("keybound.jwks_fetch_ok"),
                level: Level::Info,
                message: format!("keybound: issuer {i}: fetched {n} key(s)"),
            },
            Err(e) => AnswerReport {
                counter: Some("keybound.jwks_fetch_failed"),
                level: Level::Warn,
                message: format!("keybound: issuer {i}: JWKS fetch failed ({e}); keeping the keys we have"),
            },
        },
        Fetch::Introspect(token) => match gate.introspection_response(token, status, body, now) {
            Ok(()) => AnswerReport {
                counter: None,
                level: Level::Debug,
                message: "keybound: introspection answered".to_owned(),
            },
            Err(reason) => AnswerReport {
                counter: Some("keybound.introspection_failed"),
                level: Level::Warn,
                message: format!("keybound: introspection failed ({reason}, status {status:?})"),
            },
        },
    }
}

/// The decision in filter state (`decision`, `reason`, `requirement`, `mode`, `binding`, and
/// the forwarded claims), for access logs and RBAC, when `filter_state` is configured.
fn filter_state(host: &dyn Host, gate: &Gate, l: &DecisionLog) {
    if !gate.config().filter_state {
        return;
    }
    host.set_filter_state("decision", l.decision);
    host.set_filter_state("reason", l.reason);
    host.set_filter_state("requirement", gate.requirement_name(l.requirement));
    host.set_filter_state("mode", l.mode.as_str());
    if let Some(b) = l.binding {
        host.set_filter_state("binding", b);
    }
    for (name, value) in &l.claims {
        host.set_filter_state(name, value);
    }
}

fn reply_unavailable(host: &dyn Host) {
    host.send_response(
        503,
        &[("content-type".to_owned(), "application/json".to_owned())],
        UNAVAILABLE,
    );
}

/// Decides a request on its headers (again after a fetch if `resumed`) and acts on the outcome:
/// header edits, a local reply, or a fetch sent and the request paused.
fn decide_request(
    gate: &RefCell<Gate>,
    stream: &mut Stream,
    host: &dyn Host,
    store: &dyn SharedStore,
    verifier: &dyn Verifier,
    resumed: bool,
) -> Action {
    let headers = host.request_headers();
    let mut values: [Option<String>; 4] = Default::default();
    for p in reads(&gate.borrow()) {
        let slot = match p {
            Property::PeerCertDigest => 0,
            Property::PeerUriSan => 1,
            Property::RouteRequirement => 2,
            Property::RouteName => 3,
        };
        if let Some(v) = values.get_mut(slot) {
            *v = host.property(p);
        }
    }
    let [digest, uri_san, route_requirement, route_name] = &values;
    let now = host.now();
    let req = Request {
        peer_cert_digest: digest.as_deref(),
        peer_uri_san: uri_san.as_deref(),
        route_requirement: route_requirement.as_deref(),
        route_name: route_name.as_deref(),
        ..request(&headers, now)
    };
    let outcome = if resumed {
        gate.borrow_mut().decide_again(&req, store, verifier)
    } else {
        gate.borrow_mut().decide(&req, store, verifier)
    };
    let gate = gate.borrow();
    match outcome {
        Outcome::Allow {
            strip,
            path,
            set,
            fresh_nonce,
            log,
        } => {
            for edit in allow_edits(&gate, strip, path.as_deref(), &set, &headers) {
                match edit {
                    Edit::Remove(name) => host.set_request_header(name, None),
                    Edit::Set(name, value) => host.set_request_header(name, Some(value)),
                }
            }
            stream.fresh_nonce = fresh_nonce;
            host.record(&gate, &log);
            filter_state(host, &gate, &log);
            if logs_allow(&log) && host.log_enabled(Level::Info, now) {
                host.log(Level::Info, &log.to_json());
            }
            if resumed {
                host.resume();
            }
            Action::Continue
        }
        Outcome::Deny {
            status,
            headers,
            body,
            log,
        } => {
            host.record(&gate, &log);
            filter_state(host, &gate, &log);
            if logs_reply(&log) && host.log_enabled(Level::Info, now) {
                host.log(Level::Info, &log.to_json());
            }
            host.send_response(status, &headers, body.as_bytes());
            Action::Stop
        }
        Outcome::Fetch(fetch) => {
            host.count(fetch_counter(&fetch));
            let sent = if resumed {
                Err("a second fetch for one request".to_owned())
            } else {
                gate.call_for(&fetch)
                    .ok_or_else(|| "no such fetch".to_owned())
                    .and_then(|call| host.http_call(&call))
            };
            match sent {
                Ok(()) => stream.pending = Some(fetch),
                Err(e) => {
                    host.log(Level::Warn, &format!("keybound: {e}"));
                    host.record(&gate, &unavailable_log(&fetch));
                    reply_unavailable(host);
                }
            }
            Action::Stop
        }
    }
}

/// The answer to the fetch a paused request waits for (`status`: `None` if the call failed):
/// hands it to the gate, then decides the request again (it is resumed or refused).
#[allow(clippy::too_many_arguments, reason = "the request flow's parts, each from the host")]
pub fn on_fetch_answer(
    gate: &RefCell<Gate>,
    stream: &mut Stream,
    host: &dyn Host,
    store: &dyn SharedStore,
    verifier: &dyn Verifier,
    status: Option<u16>,
    body: &[u8],
) {
    let Some(fetch) = stream.pending.take() else {
        return;
    };
    let report = take_answer(&mut gate.borrow_mut(), &fetch, status, body, store, host.now());
    if let Some(c) = report.counter {
        host.count(c);
    }
    if report.level != Level::Debug || host.log_enabled(Level::Debug, host.now()) {
        host.log(report.level, &report.message);
    }
    decide_request(gate, stream, host, store, verifier, true);
}

/// Adds the fresh DPoP nonce, if the decision made one, to the response.
pub fn on_response_headers(stream: &mut Stream, host: &dyn Host) {
    if let Some(nonce) = stream.fresh_nonce.take() {
        host.set_response_header(NONCE_HEADER, &nonce);
    }
}

/// The request flow's first event: decides the request on its headers.
pub fn on_request_headers(
    gate: &RefCell<Gate>,
    stream: &mut Stream,
    host: &dyn Host,
    store: &dyn SharedStore,
    verifier: &dyn Verifier,
) -> Action {
    decide_request(gate, stream, host, store, verifier, false)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed step fails the test")]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn pseudo_headers_become_the_request() {
        let headers = h(&[
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", "rs.example.com"),
            (":path", "/a?b"),
            ("x", "1"),
        ]);
        let r = request(&headers, 7);
        assert_eq!(
            (r.method, r.scheme, r.authority, r.path, r.now),
            ("GET", "https", "rs.example.com", "/a?b", 7)
        );
        assert_eq!(header(&headers, "missing"), "");
    }

    #[test]
    fn counters_follow_the_log() {
        let log = DecisionLog {
            reason: "proof_replayed",
            token_cache_hit: true,
            ..DecisionLog::default()
        };
        assert_eq!(
            extra_counters(&log).collect::<Vec<_>>(),
            ["keybound.token_cache_hits", "keybound.replays"]
        );
        assert!(logs_allow(&DecisionLog {
            reason: "ok",
            ..DecisionLog::default()
        }));
        assert!(!logs_allow(&DecisionLog {
            reason: "no_auth",
            ..DecisionLog::default()
        }));
    }
}
