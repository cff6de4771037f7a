//! One Envoy per scenario: a single worker (`--concurrency 1`) pinned to CPU 0, answering from
//! the route itself (`direct_response`), so that what is measured is Envoy and its HTTP filters,
//! not an upstream.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keybound_e2e::{
    Pki, TempDir, envoy_binary, envoy_module, free_port, module_filter_yaml, request, wasm_filter_yaml, yaml_str,
};

/// The HTTP filter under test.
pub enum Filter {
    /// No auth filter.
    None,
    /// The keybound filter with this JSON configuration.
    Keybound(String),
    /// The keybound native module (`target/release/libkeybound_envoy_module.so`) with this JSON
    /// configuration.
    Module(String),
    /// Envoy's `jwt_authn` for this issuer, audience and inline JWKS.
    JwtAuthn {
        /// `iss`.
        issuer: String,
        /// `aud`.
        audience: String,
        /// The JWKS, JSON.
        jwks: String,
        /// Whether its JWT cache is on (1,000 tokens); off, every request's JWT is verified.
        cache: bool,
    },
}

/// A listener: plaintext, or TLS requiring client certificates from the test CA.
pub enum Listener<'a> {
    /// Plain HTTP/1.1.
    Plain,
    /// mTLS with the gateway certificate of this PKI.
    Mtls(&'a Pki),
}

/// A running Envoy; killed when dropped.
pub struct Envoy {
    /// Listener port.
    pub port: u16,
    /// Admin port (for `/stats`).
    pub admin: u16,
    child: Child,
    _dir: TempDir,
}

impl Envoy {
    /// The sum of the filter's decision counters with this decision (`allow`, `deny`...).
    pub fn decisions(&self, decision: &str) -> u64 {
        request(self.admin, "GET", "/stats?format=json", &[])
            .ok()
            .and_then(|r| {
                let stats = r.json();
                let all = stats.get("stats")?.as_array()?;
                Some(
                    all.iter()
                        .filter(|s| {
                            s.get("name")
                                .and_then(|n| n.as_str())
                                .and_then(keybound_filter::metrics::parse_decision_counter)
                                .is_some_and(|[d, ..]| d == decision)
                        })
                        .filter_map(|s| s.get("value")?.as_u64())
                        .sum(),
                )
            })
            .unwrap_or(0)
    }

    /// A counter from `/stats` (0 if absent), e.g. `wasmcustom.keybound.replays`.
    pub fn counter(&self, name: &str) -> u64 {
        request(self.admin, "GET", "/stats?format=json", &[])
            .ok()
            .and_then(|r| {
                r.json()
                    .get("stats")?
                    .as_array()?
                    .iter()
                    .find(|s| s.get("name").and_then(|n| n.as_str()) == Some(name))?
                    .get("value")?
                    .as_u64()
            })
            .unwrap_or(0)
    }

    /// The process id (for its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts Envoy with `filter` on `listener`, extra clusters `(name, port)`, pinned to CPU 0.
    ///
    /// # Errors
    /// If Envoy is missing or not ready within 30 s.
    pub fn start(
        filter: &Filter,
        listener: &Listener<'_>,
        clusters: &[(&str, u16)],
        wasm: &Path,
    ) -> Result<Envoy, String> {
        let dir = TempDir::new("bench")?;
        let (port, admin) = (free_port()?, free_port()?);
        let yaml = bootstrap(port, admin, filter, listener, clusters, wasm)?;
        let cfg = dir.0.join("envoy.yaml");
        std::fs::write(&cfg, yaml).map_err(|e| e.to_string())?;
        let child = Command::new("taskset")
            .args(["-c", "0"])
            .arg(envoy_binary()?)
            .arg("-c")
            .arg(&cfg)
            .args(["--concurrency", "1", "--disable-hot-restart", "--log-level", "error"])
            .arg("--log-path")
            .arg(dir.0.join("envoy.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting envoy under taskset: {e}"))?;
        let mut envoy = Envoy {
            port,
            admin,
            child,
            _dir: dir,
        };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                let log = std::fs::read_to_string(envoy._dir.0.join("envoy.log")).unwrap_or_default();
                return Err(format!("envoy exited with {status}: {log}"));
            }
            if request(admin, "GET", "/ready", &[]).is_ok_and(|r| r.status == 200) {
                return Ok(envoy);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = envoy.child.kill();
        Err("envoy not ready after 30 s".into())
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bootstrap(
    port: u16,
    admin: u16,
    filter: &Filter,
    listener: &Listener<'_>,
    clusters: &[(&str, u16)],
    wasm: &Path,
) -> Result<String, String> {
    let http_filter = match filter {
        Filter::None => String::new(),
        Filter::Keybound(config) => wasm_filter_yaml(&wasm.display().to_string(), config),
        Filter::Module(config) => module_filter_yaml(&envoy_module()?.display().to_string(), config),
        Filter::JwtAuthn {
            issuer,
            audience,
            jwks,
            cache,
        } => format!(
            r#"          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                kb:
                  issuer: {}
                  audiences: [{}]
                  local_jwks: {{ inline_string: {} }}
                  forward: true{}
              rules:
              - match: {{ prefix: "/" }}
                requires: {{ provider_name: kb }}
"#,
            yaml_str(issuer),
            yaml_str(audience),
            yaml_str(jwks),
            if *cache {
                "\n                  jwt_cache_config: { jwt_cache_size: 1000 }"
            } else {
                ""
            }
        ),
    };
    let tls = match listener {
        Listener::Plain => String::new(),
        Listener::Mtls(pki) => format!(
            r#"
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificates:
            - certificate_chain: {{ filename: {} }}
              private_key: {{ filename: {} }}
            validation_context:
              trusted_ca: {{ filename: {} }}"#,
            yaml_str(&pki.gateway.cert.display().to_string()),
            yaml_str(&pki.gateway.key.display().to_string()),
            yaml_str(&pki.ca.display().to_string())
        ),
    };
    let mut extra = String::new();
    for (name, p) in clusters {
        extra.push_str(&format!(
            r#"
  - name: {}
    connect_timeout: 1s
    type: STATIC
    load_assignment:
      cluster_name: {}
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {p} }} }} }}"#,
            yaml_str(name),
            yaml_str(name)
        ));
    }
    let clusters = if extra.is_empty() {
        "  clusters: []".to_owned()
    } else {
        format!("  clusters:{extra}")
    };
    Ok(format!(
        r#"static_resources:
  listeners:
  - name: main
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                direct_response: {{ status: 200, body: {{ inline_string: "ok" }} }}
          http_filters:
{http_filter}          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router{tls}
{clusters}
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
"#
    ))
}
