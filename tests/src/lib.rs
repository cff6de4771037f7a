//! # keybound-e2e
//!
//! Runs the real thing: Envoy (from `.tools/envoy`, installed by `cargo xtask test`) with the
//! release build of the keybound filter, an upstream that echoes the request headers it received
//! as JSON (optionally doing its own CORS, like an application), a plain HTTP/1.1 client, a
//! static web site for browser pages ([`site`]), and headless Chromium through WebDriver
//! ([`webdriver`]). Processes are stopped when their handle drops.
//!
//! The HTTP clients here ([`request`] and [`tls::request_tls`]) are hand-written on purpose: the
//! seam tests send exact bytes (unnormalised paths, duplicate and odd headers) that a library
//! client would normalise or refuse.

pub mod tls;
// lead's modules (e.g. `pub mod issuer;`) go here.
pub mod issuer;
pub mod postgres;
pub mod site;
pub mod webdriver;

pub use site::{SiteContent, StaticSite};
pub use tls::{Identity, Pki, request_tls};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

/// The Envoy binary installed by `cargo xtask test`.
///
/// # Errors
/// A message saying how to install it.
pub fn envoy_binary() -> Result<PathBuf, String> {
    let p = root().join(".tools/envoy/bin/envoy");
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "{} is missing: run `cargo xtask test`, which installs it",
            p.display()
        ))
    }
}

/// The filter built by `cargo xtask test` (`--release --target wasm32-wasip1`).
///
/// # Errors
/// A message saying how to build it.
pub fn filter_wasm() -> Result<PathBuf, String> {
    let p = root().join("target/wasm32-wasip1/release/keybound_filter.wasm");
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "{} is missing: run `cargo xtask test`, which builds it",
            p.display()
        ))
    }
}

/// The native Envoy module built by `cargo xtask test` (`cargo build --release -p
/// keybound-envoy-module`).
///
/// # Errors
/// A message saying how to build it.
pub fn envoy_module() -> Result<PathBuf, String> {
    let p = root().join("target/release/libkeybound_envoy_module.so");
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "{} is missing: run `cargo build --release -p keybound-envoy-module` (or `cargo xtask test`)",
            p.display()
        ))
    }
}

/// Which keybound adapter an Envoy runs: the proxy-wasm filter or the native dynamic module.
/// The same tests run against both (see [`Adapter::from_env`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Adapter {
    /// The proxy-wasm filter (`envoy.filters.http.wasm`, V8).
    #[default]
    Wasm,
    /// The native module (`envoy.filters.http.dynamic_modules`).
    Module,
}

impl Adapter {
    /// `KEYBOUND_ADAPTER=module` selects the module; anything else (or unset), the wasm filter.
    pub fn from_env() -> Adapter {
        match std::env::var("KEYBOUND_ADAPTER").as_deref() {
            Ok("module") => Adapter::Module,
            _ => Adapter::Wasm,
        }
    }

    /// The built filter for this adapter ([`filter_wasm`] or [`envoy_module`]).
    ///
    /// # Errors
    /// As those.
    pub fn artifact(self) -> Result<PathBuf, String> {
        match self {
            Adapter::Wasm => filter_wasm(),
            Adapter::Module => envoy_module(),
        }
    }

    /// The prefix Envoy gives the filter's custom stats: `wasmcustom.` for the wasm filter, the
    /// module's `metrics_namespace` for the module.
    pub fn stats_prefix(self) -> &'static str {
        match self {
            Adapter::Wasm => "wasmcustom.",
            Adapter::Module => "dynamicmodulescustom.",
        }
    }
}

/// A free TCP port on 127.0.0.1.
///
/// # Errors
/// If no port can be bound.
pub fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
}

impl Response {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The body as JSON (the echo upstream's headers).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Sends one HTTP/1.1 request (`Connection: close`) and reads the whole response.
///
/// # Errors
/// I/O errors and unparseable responses.
pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Result<Response, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect {port}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    exchange(&mut s, method, path, headers)
}

/// Writes one request (`host: rs.example.com`, `connection: close`, the `headers` in order, an
/// empty body) on `s` and reads the response until the server closes.
fn exchange<S: Read + Write>(
    s: &mut S,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Response, String> {
    let raw = tls::write_then_read_response(s, &request_bytes(method, path, headers, true))?;
    parse_response(&raw)
}

/// A request without a body: `host: rs.example.com` (unless `headers` has a `host`),
/// `connection: close` if `close`, then `headers` in order.
pub(crate) fn request_bytes(method: &str, path: &str, headers: &[(&str, &str)], close: bool) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str("host: rs.example.com\r\n");
    }
    if close {
        req.push_str("connection: close\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("content-length: 0\r\n\r\n");
    req.into_bytes()
}

pub(crate) fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no header end")?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let headers: Vec<(String, String)> = headers;
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(body)? } else { body.to_owned() };
    Ok(Response { status, headers, body })
}

/// Decodes a chunked body (RFC 9112 §7.1).
fn dechunk(mut rest: &str) -> Result<String, String> {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").ok_or("bad chunk")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).map_err(|e| e.to_string())?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(after.get(..size).ok_or("short chunk")?);
        rest = after.get(size + 2..).ok_or("short chunk")?;
    }
}

/// An upstream that answers every request with 200 and a JSON object of the request headers
/// it received (repeated headers joined with `, `), and the request target it received as
/// `:path`.
///
/// Started with [`Upstream::start_cors`], it also does CORS itself, as an application behind a
/// gateway without a CORS filter would: it answers a preflight from an allowed origin with 204 and
/// the `Access-Control-Allow-*` headers, and adds `Access-Control-Allow-Origin` (and
/// `Vary: Origin`) to its answers to requests from an allowed origin.
pub struct Upstream {
    /// Its port.
    pub port: u16,
    stop: Arc<AtomicBool>,
}

/// The methods a CORS upstream allows in answer to a preflight.
pub const CORS_ALLOW_METHODS: &str = "GET, POST, PUT, PATCH, DELETE";

/// The request headers a CORS upstream allows in answer to a preflight: those of a DPoP call.
pub const CORS_ALLOW_HEADERS: &str = "authorization, dpop, content-type";

/// The response headers a CORS upstream lets pages read.
pub const CORS_EXPOSE_HEADERS: &str = "DPoP-Nonce, WWW-Authenticate";

impl Upstream {
    /// Starts it on a free port.
    ///
    /// # Errors
    /// If it cannot bind.
    pub fn start() -> Result<Upstream, String> {
        Upstream::start_serving(None)
    }

    /// Starts it on a free port, doing CORS for pages on `allowed_origins` (exact
    /// `scheme://host[:port]` strings, compared with the request's `Origin` as sent): a preflight
    /// (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from one of them is answered
    /// 204 with `Access-Control-Allow-Origin` (that origin), `-Allow-Methods`
    /// ([`CORS_ALLOW_METHODS`]), `-Allow-Headers` ([`CORS_ALLOW_HEADERS`]) and `Vary: Origin`, from
    /// another origin 204 without them; every other request is echoed as by [`Upstream::start`],
    /// with `Access-Control-Allow-Origin`, `-Expose-Headers` ([`CORS_EXPOSE_HEADERS`]) and
    /// `Vary: Origin` when its `Origin` is allowed.
    ///
    /// # Errors
    /// If it cannot bind.
    pub fn start_cors(allowed_origins: &[String]) -> Result<Upstream, String> {
        Upstream::start_serving(Some(Arc::new(allowed_origins.to_vec())))
    }

    fn start_serving(cors: Option<Arc<Vec<String>>>) -> Result<Upstream, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(c) = conn {
                    let cors = cors.clone();
                    std::thread::spawn(move || {
                        let _ = serve(c, cors.as_deref().map(Vec::as_slice));
                    });
                }
            }
        });
        Ok(Upstream { port, stop })
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// For a CORS upstream: whether `seen` is a preflight (answered with 204 instead of the echo), and
/// the CORS header lines (each ending in CRLF) of its answer, none unless its `Origin` is allowed.
fn cors_headers(seen: &Seen, allowed_origins: &[String]) -> (bool, String) {
    let origin = seen.header("origin").filter(|o| allowed_origins.iter().any(|a| a == o));
    let preflight = seen.method == "OPTIONS"
        && seen.header("origin").is_some()
        && seen.header("access-control-request-method").is_some();
    let Some(origin) = origin else {
        return (preflight, String::new());
    };
    let headers = if preflight {
        format!(
            "access-control-allow-origin: {origin}\r\naccess-control-allow-methods: {CORS_ALLOW_METHODS}\r\n\
             access-control-allow-headers: {CORS_ALLOW_HEADERS}\r\nvary: Origin\r\n"
        )
    } else {
        format!(
            "access-control-allow-origin: {origin}\r\naccess-control-expose-headers: {CORS_EXPOSE_HEADERS}\r\n\
             vary: Origin\r\n"
        )
    };
    (preflight, headers)
}

fn serve(stream: TcpStream, cors: Option<&[String]>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    while let Some(seen) = read_request(&mut reader)? {
        let (preflight, cors_lines) = cors.map_or((false, String::new()), |o| cors_headers(&seen, o));
        if preflight {
            let response = format!("HTTP/1.1 204 No Content\r\n{cors_lines}content-length: 0\r\n\r\n");
            out.write_all(response.as_bytes())?;
            out.flush()?;
            continue;
        }
        // Repeated headers joined with ", ", as a proxy may fold them.
        let mut headers = serde_json::Map::new();
        headers.insert(":path".into(), seen.path.clone().into());
        for (k, v) in seen.headers {
            let joined = match headers.get(&k).and_then(|x| x.as_str()) {
                Some(prev) => format!("{prev}, {v}"),
                None => v,
            };
            headers.insert(k, joined.into());
        }
        let payload = serde_json::Value::Object(headers).to_string();
        // One write: `write!` would send the pieces as separate segments, and Nagle plus delayed
        // ACKs would add ~40 ms to every request.
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{cors_lines}content-length: {}\r\n\r\n{payload}",
            payload.len()
        );
        out.write_all(response.as_bytes())?;
        out.flush()?;
    }
    Ok(())
}

/// One request the server received.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path with query.
    pub path: String,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
}

impl Seen {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Reads one request; `None` at the end of the connection.
pub(crate) fn read_request(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Seen>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let mut seen = Seen {
        method: parts.next().unwrap_or("").to_owned(),
        path: parts.next().unwrap_or("").to_owned(),
        ..Seen::default()
    };
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_owned());
            if k == "content-length" {
                length = v.parse().unwrap_or(0);
            }
            seen.headers.push((k, v));
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    seen.body = String::from_utf8_lossy(&body).into_owned();
    Ok(Some(seen))
}

/// A running Envoy with the keybound filter in front of an upstream.
pub struct Envoy {
    /// The listener port.
    pub port: u16,
    /// The admin port.
    pub admin: u16,
    child: Child,
    /// Where its log goes.
    pub log: PathBuf,
    /// The adapter it runs (for the stats prefix).
    adapter: Adapter,
    _dir: TempDir,
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory under `target/e2e`.
    ///
    /// # Errors
    /// If it cannot be created.
    pub fn new(name: &str) -> Result<TempDir, String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let p = root()
            .join("target/e2e")
            .join(format!("{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).map_err(|e| e.to_string())?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TLS listener for [`EnvoyOptions::tls`].
#[derive(Debug, Clone, Default)]
pub struct TlsListener {
    /// Server certificate chain (PEM file).
    pub cert: PathBuf,
    /// Server private key (PEM file).
    pub key: PathBuf,
    /// If set, Envoy asks for a client certificate and verifies it against this CA (PEM file).
    pub client_ca: Option<PathBuf>,
    /// Refuse the handshake without a client certificate (needs `client_ca`).
    pub require_client_cert: bool,
    /// If not empty, only client certificates with one of these URI SANs are accepted.
    pub client_uri_sans: Vec<String>,
}

/// TLS from Envoy to the `upstream` cluster, for [`EnvoyOptions::upstream_tls`].
#[derive(Debug, Clone, Default)]
pub struct UpstreamTls {
    /// CA that signed the upstream's server certificate (PEM file).
    pub ca: PathBuf,
    /// SNI sent to the upstream (also used as the expected DNS SAN).
    pub sni: String,
    /// Envoy's own client certificate and key (PEM files), for mTLS to the upstream.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// Everything about an Envoy besides the filter configuration; `Default` is what
/// [`Envoy::start`] uses: a plaintext listener and only the `upstream` cluster.
#[derive(Debug, Clone, Default)]
pub struct EnvoyOptions {
    /// Extra STATIC clusters `(name, port)`: plaintext HTTP/1.1 to `127.0.0.1:port`, for the
    /// filter's `dispatch_http_call` (JWKS, introspection).
    pub clusters: Vec<(String, u16)>,
    /// Serve TLS (optionally mTLS) on the listener instead of plaintext.
    pub tls: Option<TlsListener>,
    /// `forward_client_cert_details` of the HTTP connection manager: `SANITIZE` (Envoy's default),
    /// `FORWARD_ONLY`, `APPEND_FORWARD`, `SANITIZE_SET` or `ALWAYS_FORWARD_ONLY`.
    pub forward_client_cert: Option<String>,
    /// `set_current_client_cert_details` fields set to true, of `subject`, `cert`, `chain`, `dns`,
    /// `uri` (`Hash` and `By` are always in an element Envoy writes).
    pub set_current_client_cert: Vec<String>,
    /// TLS to the `upstream` cluster (e.g. a front proxy calling the gateway over mTLS).
    pub upstream_tls: Option<UpstreamTls>,
    /// Leave out the HTTP connection manager's path normalisation (`normalize_path`,
    /// `merge_slashes`, `path_with_escaped_slashes_action: REJECT_REQUEST`) and
    /// `headers_with_underscores_action: REJECT_REQUEST`, which every configuration we ship sets:
    /// to test that the filter is safe without them.
    pub raw_paths: bool,
    /// The virtual host's routes, as YAML list items indented 14 spaces (`None`: one route,
    /// everything to the `upstream` cluster).
    pub routes: Option<String>,
    /// HTTP filters between keybound and the router, as YAML list items indented 10 spaces.
    pub filters_after: String,
    /// An access log: the file and its text format (a newline is added).
    pub access_log: Option<(std::path::PathBuf, String)>,
    /// Environment variables of the filter's VM (`vm_config.environment_variables.key_values`).
    pub vm_env: Vec<(String, String)>,
    /// The adapter (`None`: [`Adapter::from_env`]).
    pub adapter: Option<Adapter>,
}

impl EnvoyOptions {
    /// The adapter these options choose.
    pub fn adapter(&self) -> Adapter {
        self.adapter.unwrap_or_else(Adapter::from_env)
    }
}

/// `s` as a YAML scalar (a JSON string, which YAML reads as the same string).
pub fn yaml_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn path_str(p: &std::path::Path) -> String {
    yaml_str(&p.display().to_string())
}

fn san_matchers(uris: &[String], dns: Option<&str>, indent: &str) -> String {
    let mut out = String::new();
    if uris.is_empty() && dns.is_none() {
        return out;
    }
    out.push_str(&format!("{indent}match_typed_subject_alt_names:\n"));
    for u in uris {
        out.push_str(&format!(
            "{indent}- {{ san_type: URI, matcher: {{ exact: {} }} }}\n",
            yaml_str(u)
        ));
    }
    if let Some(d) = dns {
        out.push_str(&format!(
            "{indent}- {{ san_type: DNS, matcher: {{ exact: {} }} }}\n",
            yaml_str(d)
        ));
    }
    out
}

fn static_cluster(name: &str, port: u16, transport: &str) -> String {
    format!(
        r#"  - name: {name}
    connect_timeout: 1s
    type: STATIC
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}
{transport}"#,
        name = yaml_str(name)
    )
}

/// The keybound filter as an entry of an HTTP connection manager's `http_filters` (indented for
/// it, ending with a newline): the wasm at `wasm` with the JSON configuration `config`, V8,
/// failing closed.
pub fn wasm_filter_yaml(wasm: &str, config: &str) -> String {
    wasm_filter_yaml_env(wasm, config, &[])
}

/// [`wasm_filter_yaml`] with environment variables `env` for the VM
/// (`vm_config.environment_variables.key_values`, where the filter reads `*_from_env` secrets).
pub fn wasm_filter_yaml_env(wasm: &str, config: &str, env: &[(String, String)]) -> String {
    let mut vm_env = String::new();
    if !env.is_empty() {
        vm_env.push_str("                  environment_variables:\n                    key_values:\n");
        for (k, v) in env {
            vm_env.push_str(&format!("                      {}: {}\n", yaml_str(k), yaml_str(v)));
        }
    }
    format!(
        r#"          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: keybound
                root_id: keybound
                fail_open: false
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: {config}
                vm_config:
                  runtime: envoy.wasm.runtime.v8
                  code: {{ local: {{ filename: {wasm} }} }}
{vm_env}"#,
        config = yaml_str(config),
        wasm = yaml_str(wasm)
    )
}

/// The keybound module as an entry of an HTTP connection manager's `http_filters` (indented for
/// it, ending with a newline): the shared object at `module` with the JSON configuration
/// `config` (the wasm filter's), its stats under `dynamicmodulescustom.`.
pub fn module_filter_yaml(module: &str, config: &str) -> String {
    format!(
        r#"          - name: envoy.filters.http.dynamic_modules
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
              dynamic_module_config:
                module: {{ local: {{ filename: {module} }} }}
              filter_name: keybound
              filter_config:
                "@type": type.googleapis.com/google.protobuf.StringValue
                value: {config}
"#,
        config = yaml_str(config),
        module = yaml_str(module)
    )
}

/// What every HTTP connection manager we ship sets (see README, "Deploying safely"): paths
/// normalised (RFC 3986 dot segments, merged slashes) before routing and filters, an encoded `/`
/// or `\` refused, header names with underscores refused.
pub const HARDENED_HCM: &str = "          normalize_path: true
          merge_slashes: true
          path_with_escaped_slashes_action: REJECT_REQUEST
          common_http_protocol_options:
            headers_with_underscores_action: REJECT_REQUEST
";

/// The Envoy bootstrap: a listener on `port` (plaintext or TLS per `opts`), the keybound filter
/// of `opts.adapter()` with `filter` = `(wasm or module path, JSON configuration)` if given (none: a plain proxy, e.g. a front
/// hop), a route for everything to the `upstream` cluster at `upstream_port`, the extra clusters,
/// and the admin interface on `admin`.
pub fn bootstrap(
    port: u16,
    admin: u16,
    upstream_port: u16,
    filter: Option<(&str, &str)>,
    opts: &EnvoyOptions,
) -> String {
    let wasm_filter = filter.map_or_else(String::new, |(artifact, config)| match opts.adapter() {
        Adapter::Wasm => wasm_filter_yaml_env(artifact, config, &opts.vm_env),
        Adapter::Module => module_filter_yaml(artifact, config),
    });
    let listener_tls = match &opts.tls {
        None => String::new(),
        Some(t) => {
            let validation = match &t.client_ca {
                None => String::new(),
                Some(ca) => format!(
                    "            validation_context:\n              trusted_ca: {{ filename: {} }}\n{}",
                    path_str(ca),
                    san_matchers(&t.client_uri_sans, None, "              ")
                ),
            };
            format!(
                r#"      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: {require}
          common_tls_context:
            tls_certificates:
            - certificate_chain: {{ filename: {cert} }}
              private_key: {{ filename: {key} }}
{validation}"#,
                require = t.require_client_cert,
                cert = path_str(&t.cert),
                key = path_str(&t.key),
            )
        }
    };
    let mut xfcc = String::new();
    if !opts.raw_paths {
        xfcc.push_str(HARDENED_HCM);
    }
    if let Some(mode) = &opts.forward_client_cert {
        xfcc.push_str(&format!("          forward_client_cert_details: {mode}\n"));
    }
    if !opts.set_current_client_cert.is_empty() {
        xfcc.push_str("          set_current_client_cert_details:\n");
        for f in &opts.set_current_client_cert {
            xfcc.push_str(&format!("            {f}: true\n"));
        }
    }
    let upstream_transport = match &opts.upstream_tls {
        None => String::new(),
        Some(u) => {
            let client = match &u.client_cert {
                None => String::new(),
                Some((cert, key)) => format!(
                    "          tls_certificates:\n          - certificate_chain: {{ filename: {} }}\n            private_key: {{ filename: {} }}\n",
                    path_str(cert),
                    path_str(key)
                ),
            };
            format!(
                r#"    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: {sni}
        common_tls_context:
{client}          validation_context:
            trusted_ca: {{ filename: {ca} }}
{sans}"#,
                sni = yaml_str(&u.sni),
                ca = path_str(&u.ca),
                sans = san_matchers(&[], Some(&u.sni), "            ")
            )
        }
    };
    if let Some((file, format)) = &opts.access_log {
        xfcc.push_str(&format!(
            r#"          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {}
              log_format: {{ text_format_source: {{ inline_string: {} }} }}
"#,
            path_str(file),
            yaml_str(&format!("{format}\n"))
        ));
    }
    let routes = opts.routes.clone().unwrap_or_else(|| {
        "              - match: { prefix: \"/\" }\n                route: { cluster: upstream }\n".to_owned()
    });
    let filters_after = &opts.filters_after;
    let stats_tags = keybound_filter::metrics::stats_tags_yaml();
    let mut clusters = static_cluster("upstream", upstream_port, &upstream_transport);
    for (name, p) in &opts.clusters {
        clusters.push_str(&static_cluster(name, *p, ""));
    }
    format!(
        r#"stats_config:
{stats_tags}static_resources:
  listeners:
  - name: main
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
{xfcc}          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
{routes}          http_filters:
{wasm_filter}{filters_after}          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
{listener_tls}  clusters:
{clusters}admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
"#
    )
}

/// The Envoy bootstrap for a plaintext listener, the filter with `filter_config` (JSON), and a
/// route to `upstream_port`.
pub fn envoy_yaml(port: u16, admin: u16, upstream_port: u16, wasm: &str, filter_config: &str) -> String {
    bootstrap(
        port,
        admin,
        upstream_port,
        Some((wasm, filter_config)),
        &EnvoyOptions::default(),
    )
}

impl Envoy {
    /// Starts Envoy (`--concurrency 2`) with the filter configured by `filter_config`, in front of
    /// `upstream`, and waits until it is ready.
    ///
    /// # Errors
    /// If Envoy or the filter is missing, or Envoy does not become ready in 30 s (the message
    /// includes the end of its log).
    pub fn start(filter_config: &str, upstream: &Upstream) -> Result<Envoy, String> {
        Envoy::start_with(filter_config, upstream, &EnvoyOptions::default())
    }

    /// As [`Envoy::start`], with extra clusters, a TLS listener and XFCC settings from `opts`.
    ///
    /// # Errors
    /// As [`Envoy::start`].
    pub fn start_with(filter_config: &str, upstream: &Upstream, opts: &EnvoyOptions) -> Result<Envoy, String> {
        let filter = opts.adapter().artifact()?.display().to_string();
        let mut envoy = Envoy::start_on_free_ports(|port, admin| {
            bootstrap(port, admin, upstream.port, Some((&filter, filter_config)), opts)
        })?;
        envoy.adapter = opts.adapter();
        Ok(envoy)
    }

    /// As [`Envoy::start_with`], with the filter configuration made for the listener's port
    /// (`filter_config(port)`), e.g. to name `http://127.0.0.1:{port}` in `dpop.origins` when a
    /// browser calls the gateway at that address.
    ///
    /// # Errors
    /// As [`Envoy::start`].
    pub fn start_with_port(
        filter_config: impl Fn(u16) -> String,
        upstream: &Upstream,
        opts: &EnvoyOptions,
    ) -> Result<Envoy, String> {
        let filter = opts.adapter().artifact()?.display().to_string();
        let mut envoy = Envoy::start_on_free_ports(|port, admin| {
            bootstrap(port, admin, upstream.port, Some((&filter, &filter_config(port))), opts)
        })?;
        envoy.adapter = opts.adapter();
        Ok(envoy)
    }

    /// An Envoy WITHOUT the keybound filter (a front hop) that routes everything to
    /// `127.0.0.1:upstream_port` (e.g. another Envoy's [`Envoy::port`]).
    ///
    /// # Errors
    /// As [`Envoy::start`].
    pub fn start_proxy(upstream_port: u16, opts: &EnvoyOptions) -> Result<Envoy, String> {
        Envoy::start_on_free_ports(|port, admin| bootstrap(port, admin, upstream_port, None, opts))
    }

    /// Starts Envoy on `yaml(port, admin)` with two free ports. A port found free can be taken
    /// by another process (any outgoing connection of a test running in parallel) before Envoy
    /// binds it; when Envoy exits because an address is in use, this tries again with new ports
    /// (three attempts).
    fn start_on_free_ports(yaml: impl Fn(u16, u16) -> String) -> Result<Envoy, String> {
        Envoy::start_on_ports(free_port, yaml)
    }

    /// [`Envoy::start_on_free_ports`] with the ports from `next_port`.
    fn start_on_ports(
        mut next_port: impl FnMut() -> Result<u16, String>,
        yaml: impl Fn(u16, u16) -> String,
    ) -> Result<Envoy, String> {
        let mut last = String::new();
        for _ in 0..3 {
            let (port, admin) = (next_port()?, next_port()?);
            match Envoy::start_yaml(&yaml(port, admin), port, admin) {
                Err(e) if e.contains("already in use") => last = e,
                started => return started,
            }
        }
        Err(last)
    }

    /// Starts Envoy on a complete bootstrap whose listener is on `port` and admin on `admin`
    /// (e.g. a committed `envoy/*.yaml` with its placeholders filled in).
    ///
    /// # Errors
    /// As [`Envoy::start`].
    pub fn start_yaml(yaml: &str, port: u16, admin: u16) -> Result<Envoy, String> {
        let envoy = envoy_binary()?;
        let dir = TempDir::new("envoy")?;
        let cfg = dir.0.join("envoy.yaml");
        std::fs::write(&cfg, yaml).map_err(|e| e.to_string())?;
        let log = dir.0.join("envoy.log");
        let child = Command::new(envoy)
            .arg("-c")
            .arg(&cfg)
            .args([
                "--concurrency",
                "2",
                "--file-flush-interval-msec",
                "200",
                "--disable-hot-restart",
            ])
            .arg("--log-path")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting envoy: {e}"))?;
        let mut e = Envoy {
            port,
            admin,
            child,
            log,
            adapter: Adapter::Wasm,
            _dir: dir,
        };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(status)) = e.child.try_wait() {
                return Err(format!("envoy exited with {status}: {}", e.log_tail()));
            }
            if request(admin, "GET", "/ready", &[]).is_ok_and(|r| r.status == 200) {
                return Ok(e);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("envoy not ready after 30 s: {}", e.log_tail()))
    }

    /// The last lines of Envoy's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines
            .iter()
            .rev()
            .take(20)
            .rev()
            .copied()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The sum of the decision counters (`keybound.requests_total`, see
    /// [`keybound_filter::metrics`]) with this decision (`allow`, `deny`, `unavailable`,
    /// `serve`) and, if given, this reason.
    pub fn decisions(&self, decision: &str, reason: Option<&str>) -> u64 {
        let Ok(r) = request(self.admin, "GET", "/stats?format=json", &[]) else {
            return 0;
        };
        let stats = r.json();
        stats
            .get("stats")
            .and_then(|s| s.as_array())
            .map(|a| {
                a.iter()
                    .filter(|s| {
                        s.get("name")
                            .and_then(|n| n.as_str())
                            .and_then(keybound_filter::metrics::parse_decision_counter)
                            .is_some_and(|[d, r, ..]| d == decision && reason.is_none_or(|want| want == r))
                    })
                    .filter_map(|s| s.get("value").and_then(|v| v.as_u64()))
                    .sum()
            })
            .unwrap_or(0)
    }

    /// The value of a counter in `/stats` (0 if absent), e.g. `wasmcustom.keybound.replays`
    /// (with the module, `wasmcustom.` stands for its stats prefix, so one test reads both).
    pub fn counter(&self, name: &str) -> u64 {
        let name = match name.strip_prefix("wasmcustom.") {
            Some(rest) => format!("{}{rest}", self.adapter.stats_prefix()),
            None => name.to_owned(),
        };
        let name = name.as_str();
        let Ok(r) = request(self.admin, "GET", "/stats?format=json", &[]) else {
            return 0;
        };
        let stats = r.json();
        stats
            .get("stats")
            .and_then(|s| s.as_array())
            .and_then(|a| a.iter().find(|s| s.get("name").and_then(|n| n.as_str()) == Some(name)))
            .and_then(|s| s.get("value"))
            .and_then(|v| v.as_u64())
            .unwrap_or(0)
    }
}

impl Envoy {
    /// The process id of this Envoy, e.g. to freeze it (`kill -STOP`) as an instance that hangs;
    /// it is still killed when the handle drops.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `envoy --mode validate` on a bootstrap with this filter configuration.
///
/// # Errors
/// If Envoy is missing; otherwise returns whether validation passed and its output.
pub fn validate(filter_config: &str) -> Result<(bool, String), String> {
    validate_with(filter_config, &EnvoyOptions::default())
}

/// As [`validate`], with `opts` (clusters, TLS, XFCC).
///
/// # Errors
/// If Envoy or the filter is missing.
pub fn validate_with(filter_config: &str, opts: &EnvoyOptions) -> Result<(bool, String), String> {
    let filter = opts.adapter().artifact()?.display().to_string();
    validate_yaml(&bootstrap(
        free_port()?,
        free_port()?,
        free_port()?,
        Some((&filter, filter_config)),
        opts,
    ))
}

/// Runs `envoy --mode validate` on a complete bootstrap.
///
/// # Errors
/// If Envoy is missing; otherwise returns whether validation passed and its output.
pub fn validate_yaml(yaml: &str) -> Result<(bool, String), String> {
    let envoy = envoy_binary()?;
    let dir = TempDir::new("validate")?;
    let cfg = dir.0.join("envoy.yaml");
    std::fs::write(&cfg, yaml).map_err(|e| e.to_string())?;
    let out = Command::new(envoy)
        .args(["--mode", "validate", "-c"])
        .arg(&cfg)
        .output()
        .map_err(|e| e.to_string())?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed step fails the test")]
mod tests {
    use super::*;

    /// A listener port taken between choosing it and Envoy binding it: Envoy exits, and the
    /// start is tried again on new ports.
    #[test]
    fn a_port_taken_before_envoy_binds_it_is_replaced() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = taken.local_addr().unwrap().port();
        let mut ports = vec![Ok(busy), free_port(), free_port(), free_port()].into_iter();
        let envoy = Envoy::start_on_ports(
            || ports.next().unwrap(),
            |port, admin| bootstrap(port, admin, 9, None, &EnvoyOptions::default()),
        )
        .unwrap();
        assert_ne!(envoy.port, busy);
        assert!(request(envoy.admin, "GET", "/ready", &[]).is_ok_and(|r| r.status == 200));
    }
}
