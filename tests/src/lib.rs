//! # keybound-e2e
//!
//! Runs the real thing: Envoy (from `.tools/envoy`, installed by `cargo xtask test`) with the
//! release build of the keybound filter, an upstream that echoes the request headers it received
//! as JSON, and a plain HTTP/1.1 client. Processes are stopped when their handle drops.

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
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: rs.example.com\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("content-length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Result<Response, String> {
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
/// it received (repeated headers joined with `, `).
pub struct Upstream {
    /// Its port.
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl Upstream {
    /// Starts it on a free port.
    ///
    /// # Errors
    /// If it cannot bind.
    pub fn start() -> Result<Upstream, String> {
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
                    std::thread::spawn(move || {
                        let _ = serve(c);
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

fn serve(stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut headers = serde_json::Map::new();
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
                let joined = match headers.get(&k).and_then(|x| x.as_str()) {
                    Some(prev) => format!("{prev}, {v}"),
                    None => v,
                };
                headers.insert(k, joined.into());
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        let payload = serde_json::Value::Object(headers).to_string();
        write!(
            out,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{payload}",
            payload.len()
        )?;
        out.flush()?;
    }
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

/// The Envoy bootstrap for a plaintext listener, the filter with `filter_config` (JSON), and a
/// route to `upstream_port`.
pub fn envoy_yaml(port: u16, admin: u16, upstream_port: u16, wasm: &str, filter_config: &str) -> String {
    let config = serde_json::Value::String(filter_config.to_owned()).to_string();
    format!(
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
                route: {{ cluster: upstream }}
          http_filters:
          - name: envoy.filters.http.wasm
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
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    connect_timeout: 1s
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {upstream_port} }} }} }}
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
"#
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
        let envoy = envoy_binary()?;
        let wasm = filter_wasm()?;
        let dir = TempDir::new("envoy")?;
        let (port, admin) = (free_port()?, free_port()?);
        let yaml = envoy_yaml(port, admin, upstream.port, &wasm.display().to_string(), filter_config);
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

    /// The value of a counter in `/stats` (0 if absent), e.g. `wasmcustom.keybound.allowed`.
    pub fn counter(&self, name: &str) -> u64 {
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
    let envoy = envoy_binary()?;
    let wasm = filter_wasm()?;
    let dir = TempDir::new("validate")?;
    let yaml = envoy_yaml(
        free_port()?,
        free_port()?,
        free_port()?,
        &wasm.display().to_string(),
        filter_config,
    );
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
