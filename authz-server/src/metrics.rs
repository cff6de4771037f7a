//! Prometheus metrics, served at `/metrics` on the admin listener (`[admin] listen`), in the
//! OpenMetrics text format.
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `keybound_authz_http_requests_total` | `endpoint`, `status` | requests by route (`other` for unknown paths) and status |
//! | `keybound_authz_http_request_duration_seconds` | `endpoint` | request latency |
//! | `keybound_authz_tokens_issued_total` | `grant`, `binding` | token responses by grant type and binding (`dpop`, `mtls`) |
//! | `keybound_authz_login_failures_total` | `factor` | wrong passwords (`password`) and TOTP codes (`totp`) |
//! | `keybound_authz_login_throttled_total` | | login attempts refused by the throttle |
//! | `keybound_authz_storage_duration_seconds` | `op` | storage latency of every call, by method (`use_code`, `remember_once`, `ping`, …) |

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of the request metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointStatus {
    /// The route (`/token`, `/register/{client_id}`), `other` for unknown paths.
    pub endpoint: String,
    /// The HTTP status.
    pub status: u16,
}

/// The label of the per-endpoint latency.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Endpoint {
    /// The route.
    pub endpoint: String,
}

/// Labels of the token counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrantBinding {
    /// `authorization_code`, `refresh_token`, `client_credentials`.
    pub grant: &'static str,
    /// `dpop` or `mtls`.
    pub binding: &'static str,
}

/// The label of login failures.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Factor {
    /// `password` or `totp`.
    pub factor: &'static str,
}

/// The label of the storage latency.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Op {
    /// The storage operation.
    pub op: &'static str,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    // 0.5 ms to ~4 s.
    prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 14)
}

/// Every metric of one server.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Requests by endpoint and status.
    pub requests: Family<EndpointStatus, Counter>,
    /// Request latency by endpoint.
    pub request_seconds: Family<Endpoint, Histogram>,
    /// Token responses by grant and binding.
    pub tokens: Family<GrantBinding, Counter>,
    /// Failed login factors.
    pub login_failures: Family<Factor, Counter>,
    /// Login attempts refused by the throttle.
    pub login_throttled: Counter,
    /// Storage latency by operation.
    pub storage_seconds: Family<Op, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `keybound_authz` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("keybound_authz");
        let requests = Family::<EndpointStatus, Counter>::default();
        let request_seconds = Family::<Endpoint, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        let tokens = Family::<GrantBinding, Counter>::default();
        let login_failures = Family::<Factor, Counter>::default();
        let login_throttled = Counter::default();
        let storage_seconds = Family::<Op, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        registry.register(
            "http_requests",
            "HTTP requests by endpoint and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by endpoint",
            request_seconds.clone(),
        );
        registry.register("tokens_issued", "Token responses by grant and binding", tokens.clone());
        registry.register("login_failures", "Failed login factors", login_failures.clone());
        registry.register(
            "login_throttled",
            "Login attempts refused by the throttle",
            login_throttled.clone(),
        );
        registry.register(
            "storage_duration_seconds",
            "Storage latency by operation",
            storage_seconds.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            requests,
            request_seconds,
            tokens,
            login_failures,
            login_throttled,
            storage_seconds,
        }
    }

    /// Counts one request.
    pub fn request(&self, endpoint: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&EndpointStatus {
                endpoint: endpoint.to_owned(),
                status,
            })
            .inc();
        self.request_seconds
            .get_or_create(&Endpoint {
                endpoint: endpoint.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one token response.
    pub fn token(&self, grant: &'static str, binding: &'static str) {
        self.tokens.get_or_create(&GrantBinding { grant, binding }).inc();
    }

    /// Counts one failed factor (`password`, `totp`).
    pub fn login_failure(&self, factor: &'static str) {
        self.login_failures.get_or_create(&Factor { factor }).inc();
    }

    /// Records how long a storage operation took.
    pub fn storage(&self, op: &'static str, elapsed: Duration) {
        self.storage_seconds
            .get_or_create(&Op { op })
            .observe(elapsed.as_secs_f64());
    }

    /// The text exposition (OpenMetrics).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = match self.registry.lock() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_appear_with_their_labels() {
        let m = Metrics::new();
        m.request("/token", 200, Duration::from_millis(3));
        m.request("/token", 200, Duration::from_millis(3));
        m.token("authorization_code", "dpop");
        m.login_failure("password");
        m.login_throttled.inc();
        m.storage("ping", Duration::from_micros(300));
        let text = m.render();
        for line in [
            r#"keybound_authz_http_requests_total{endpoint="/token",status="200"} 2"#,
            r#"keybound_authz_tokens_issued_total{grant="authorization_code",binding="dpop"} 1"#,
            r#"keybound_authz_login_failures_total{factor="password"} 1"#,
            "keybound_authz_login_throttled_total 1",
            r#"keybound_authz_storage_duration_seconds_count{op="ping"} 1"#,
            r#"keybound_authz_http_request_duration_seconds_count{endpoint="/token"} 2"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
