//! What every host adapter (the proxy-wasm filter, the native Envoy module) does around a
//! [`Gate`] decision, independent of the host's API: build the [`Request`] from the header list,
//! turn an [`Outcome::Allow`](crate::gate::Outcome::Allow) into header edits, choose the
//! counters and log lines of a decision. The adapters only move bytes in and out of their host.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::gate::{DecisionLog, Gate, Request, Strip};

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
