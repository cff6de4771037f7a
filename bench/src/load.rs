//! A closed-loop HTTP/1.1 load generator: `connections` keep-alive connections, one thread
//! each, every request taken from a pre-built list (so per-request work such as signing a DPoP
//! proof is done before the clock starts), each answer checked for the expected status.
//!
//! It runs on the other core from Envoy (`taskset`); what it measures is Envoy's answer rate,
//! per-request latency (write to last byte of the answer), and Envoy's CPU time per request
//! (from `/proc/<pid>/stat`), which is the number that does not depend on whether the generator
//! kept Envoy busy all the time.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How to reach the server.
#[derive(Clone)]
pub enum Transport {
    /// Plain TCP.
    Plain,
    /// TLS with this client configuration (server name `localhost`).
    Tls(Arc<rustls::ClientConfig>),
}

/// A load run.
pub struct Load {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// TCP or TLS.
    pub transport: Transport,
    /// Concurrent connections.
    pub connections: usize,
    /// How long to send.
    pub duration: Duration,
    /// The requests, used in order, each at most once; the run stops early when they run out.
    pub requests: Arc<Vec<Vec<u8>>>,
    /// The status every answer must have.
    pub expect: u16,
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// Answers with the expected status.
    pub ok: u64,
    /// Answers with another status, or broken connections.
    pub errors: u64,
    /// Wall time of the run (s).
    pub seconds: f64,
    /// Median latency (µs).
    pub p50_us: f64,
    /// 99th percentile latency (µs).
    pub p99_us: f64,
    /// Envoy CPU time per answered request (µs), user + system.
    pub cpu_us_per_request: f64,
    /// Envoy CPU utilisation during the run (1.0 = one core busy).
    pub utilisation: f64,
}

impl Measured {
    /// Answers per second.
    pub fn rps(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ok as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// CPU time (user + system) of a process so far, in seconds.
///
/// # Errors
/// If `/proc/<pid>/stat` cannot be read.
pub fn cpu_seconds(pid: u32) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    // Fields after the command name (which may contain spaces) in parentheses.
    let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
    Ok((tick(11) + tick(12)) / clock_ticks())
}

/// CPU time of a process tree's root and its direct children, in seconds: the root's user +
/// system time, the time of its children that exited and were waited for (`cutime`, `cstime`),
/// and that of its children still running (e.g. a PostgreSQL postmaster and its backends).
///
/// # Errors
/// If `/proc/<root>/stat` cannot be read.
#[allow(
    dead_code,
    reason = "bench/authz's PostgreSQL server; keybound-bench measures Envoy alone"
)]
pub fn tree_cpu_seconds(root: u32) -> Result<f64, String> {
    let fields = |pid: &str| -> Option<Vec<f64>> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after = stat.rsplit_once(')').map(|(_, a)| a)?;
        // After ')': state, ppid, ..., utime (12th), stime, cutime, cstime.
        Some(
            after
                .split_whitespace()
                .take(15)
                .map(|f| f.parse::<f64>().unwrap_or(0.0))
                .collect(),
        )
    };
    let tick = |f: &[f64], i: usize| f.get(i).copied().unwrap_or(0.0);
    let own = fields(&root.to_string()).ok_or_else(|| format!("/proc/{root}/stat unreadable"))?;
    let mut ticks = tick(&own, 11) + tick(&own, 12) + tick(&own, 13) + tick(&own, 14);
    for entry in std::fs::read_dir("/proc")
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
    {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else {
            continue;
        };
        if let Some(f) = fields(pid)
            && tick(&f, 1) == f64::from(root)
        {
            ticks += tick(&f, 11) + tick(&f, 12);
        }
    }
    Ok(ticks / clock_ticks())
}

fn clock_ticks() -> f64 {
    // CLK_TCK is 100 on every Linux configuration this runs on (getconf CLK_TCK).
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

fn connect(port: u16, transport: &Transport) -> Result<Box<dyn Stream>, String> {
    let sock = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect {port}: {e}"))?;
    sock.set_nodelay(true).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    match transport {
        Transport::Plain => Ok(Box::new(sock)),
        Transport::Tls(config) => {
            let name = rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
            let conn = rustls::ClientConnection::new(config.clone(), name).map_err(|e| e.to_string())?;
            Ok(Box::new(rustls::StreamOwned::new(conn, sock)))
        }
    }
}

/// One request on its own connection: the answer's status and body.
///
/// # Errors
/// If the connection fails or the answer does not parse.
#[allow(dead_code, reason = "used by keybound-bench-authz, which includes this module")]
pub fn exchange(port: u16, transport: &Transport, request: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let mut r = BufReader::new(connect(port, transport)?);
    r.get_mut().write_all(request).map_err(|e| e.to_string())?;
    r.get_mut().flush().map_err(|e| e.to_string())?;
    read_response(&mut r)
}

/// Reads one response; returns its status and body.
fn read_response(r: &mut BufReader<Box<dyn Stream>>) -> Result<(u16, Vec<u8>), String> {
    let mut line = String::new();
    if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
        return Err("connection closed".into());
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {line:?}"))?;
    let mut length = 0usize;
    loop {
        line.clear();
        r.read_line(&mut line).map_err(|e| e.to_string())?;
        let h = line.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    r.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok((status, body))
}

/// Runs the load against the process `pid` (for its CPU time).
///
/// # Errors
/// If no connection can be made or nothing was answered.
pub fn run(load: &Load, pid: u32) -> Result<Measured, String> {
    run_with_cpu(load, &|| cpu_seconds(pid))
}

/// Runs the load; `cpu` reads the CPU seconds used so far by everything that serves it (a server
/// and its database, say), before and after.
///
/// # Errors
/// If no connection can be made or nothing was answered.
pub fn run_with_cpu(load: &Load, cpu: &dyn Fn() -> Result<f64, String>) -> Result<Measured, String> {
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::<u32>::new()));
    let errors = Arc::new(AtomicUsize::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    // Connect (and handshake) before the clock starts.
    let mut streams = Vec::new();
    for _ in 0..load.connections {
        streams.push(connect(load.port, &load.transport)?);
    }
    let cpu0 = cpu()?;
    let start = Instant::now();
    let mut threads = Vec::new();
    for stream in streams {
        let (next, stop, latencies, errors, first_error) = (
            next.clone(),
            stop.clone(),
            latencies.clone(),
            errors.clone(),
            first_error.clone(),
        );
        let requests = load.requests.clone();
        let expect = load.expect;
        threads.push(std::thread::spawn(move || {
            let mut own = Vec::with_capacity(1 << 16);
            let mut reader = BufReader::with_capacity(64 * 1024, stream);
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(req) = requests.get(i) else {
                    break;
                };
                let t = Instant::now();
                let sent = reader.get_mut().write_all(req).and_then(|()| reader.get_mut().flush());
                let result = sent
                    .map_err(|e| e.to_string())
                    .and_then(|()| read_response(&mut reader).map(|(status, _)| status));
                match result {
                    Ok(status) if status == expect => {
                        own.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                    }
                    other => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        let mut f = first_error.lock().unwrap_or_else(|e| e.into_inner());
                        if f.is_none() {
                            *f = Some(format!("{other:?}"));
                        }
                        if other.is_err() {
                            break;
                        }
                    }
                }
            }
            latencies.lock().unwrap_or_else(|e| e.into_inner()).extend(own);
        }));
    }
    while start.elapsed() < load.duration && next.load(Ordering::Relaxed) < load.requests.len() {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu = cpu()? - cpu0;
    let mut lat = std::mem::take(&mut *latencies.lock().unwrap_or_else(|e| e.into_inner()));
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        f64::from(lat.get(i).copied().unwrap_or(0))
    };
    let ok = lat.len() as u64;
    if ok == 0 {
        let f = first_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
        return Err(format!("no request answered with {}: {f:?}", load.expect));
    }
    let errors = errors.load(Ordering::Relaxed) as u64;
    if errors > 0 {
        let f = first_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
        eprintln!("bench: {errors} unexpected answers, first: {f:?}");
    }
    Ok(Measured {
        ok,
        errors,
        seconds,
        p50_us: pct(0.5),
        p99_us: pct(0.99),
        cpu_us_per_request: cpu * 1e6 / ok as f64,
        utilisation: cpu / seconds,
    })
}

/// A GET request with these extra headers (`host: rs.example.com`).
pub fn get(path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut r = format!("GET {path} HTTP/1.1\r\nhost: rs.example.com\r\n");
    for (k, v) in headers {
        r.push_str(k);
        r.push_str(": ");
        r.push_str(v);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}
