//! A small authorization-server stand-in for the filter's network paths: it serves a JWKS at
//! `/jwks` and answers RFC 7662 introspection at `/introspect` (HTTP Basic client
//! authentication), with switches to change keys, fail, and count calls. It is a real HTTP/1.1
//! server on 127.0.0.1 that Envoy reaches through a cluster; the tests decide what it answers.
//!
//! Also here: [`Connection`], a keep-alive HTTP/1.1 client, for requests that must land on the
//! same Envoy worker (each worker has its own token cache).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::Response;

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

#[derive(Default)]
struct State {
    jwks: String,
    jwks_status: u16,
    /// Introspection answers by token; unknown tokens are inactive.
    answers: HashMap<String, String>,
    introspection_status: u16,
    /// The accepted `authorization` header of the introspection client.
    client_auth: String,
    jwks_calls: Vec<Seen>,
    introspection_calls: Vec<Seen>,
}

/// The running server. Stops when dropped.
pub struct IssuerServer {
    /// Its port.
    pub port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl IssuerServer {
    /// Starts it on a free port, serving `jwks` and accepting introspection calls authenticated
    /// with `client_auth` (the whole `authorization` header value).
    ///
    /// # Errors
    /// If it cannot bind.
    pub fn start(jwks: &str, client_auth: &str) -> Result<IssuerServer, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let state = Arc::new(Mutex::new(State {
            jwks: jwks.to_owned(),
            jwks_status: 200,
            introspection_status: 200,
            client_auth: client_auth.to_owned(),
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, shared) = (stop.clone(), state.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(c) = conn {
                    let shared = shared.clone();
                    std::thread::spawn(move || {
                        let _ = serve(c, &shared);
                    });
                }
            }
        });
        Ok(IssuerServer { port, state, stop })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves this JWKS from now on.
    pub fn set_jwks(&self, jwks: &str) {
        self.state().jwks = jwks.to_owned();
    }

    /// Answers `/jwks` with this status (200: the JWKS; anything else: an error page).
    pub fn set_jwks_status(&self, status: u16) {
        self.state().jwks_status = status;
    }

    /// Answers introspection of `token` with this JSON.
    pub fn set_introspection(&self, token: &str, answer: &str) {
        self.state().answers.insert(token.to_owned(), answer.to_owned());
    }

    /// Answers `/introspect` with this status (200: the answer; anything else: an error).
    pub fn set_introspection_status(&self, status: u16) {
        self.state().introspection_status = status;
    }

    /// The JWKS requests so far.
    pub fn jwks_calls(&self) -> Vec<Seen> {
        self.state().jwks_calls.clone()
    }

    /// The introspection requests so far.
    pub fn introspection_calls(&self) -> Vec<Seen> {
        self.state().introspection_calls.clone()
    }
}

impl Drop for IssuerServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Reads one request; `None` at the end of the connection.
fn read_request(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Seen>> {
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

fn form_value(body: &str, name: &str) -> Option<String> {
    body.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn serve(stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    while let Some(seen) = read_request(&mut reader)? {
        let (status, body) = {
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            match (seen.method.as_str(), seen.path.split('?').next().unwrap_or("")) {
                ("GET", "/jwks") => {
                    s.jwks_calls.push(seen.clone());
                    if s.jwks_status == 200 {
                        (200, s.jwks.clone())
                    } else {
                        (s.jwks_status, "<html>unavailable</html>".to_owned())
                    }
                }
                ("POST", "/introspect") => {
                    s.introspection_calls.push(seen.clone());
                    if seen.header("authorization") != Some(s.client_auth.as_str()) {
                        (401, r#"{"error":"invalid_client"}"#.to_owned())
                    } else if s.introspection_status != 200 {
                        (s.introspection_status, r#"{"error":"server_error"}"#.to_owned())
                    } else {
                        let token = form_value(&seen.body, "token").unwrap_or_default();
                        let answer = s.answers.get(&token).cloned();
                        (200, answer.unwrap_or_else(|| r#"{"active":false}"#.to_owned()))
                    }
                }
                _ => (404, r#"{"error":"not_found"}"#.to_owned()),
            }
        };
        write!(
            out,
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )?;
        out.flush()?;
    }
    Ok(())
}

/// A keep-alive HTTP/1.1 connection: every request on it reaches the same Envoy worker.
pub struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Connection {
    /// Connects to 127.0.0.1:`port`.
    ///
    /// # Errors
    /// If it cannot connect.
    pub fn open(port: u16) -> Result<Connection, String> {
        let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect {port}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .map_err(|e| e.to_string())?;
        let writer = s.try_clone().map_err(|e| e.to_string())?;
        Ok(Connection {
            reader: BufReader::new(s),
            writer,
        })
    }

    /// Sends a request without a body (`host: rs.example.com`) and reads the answer.
    ///
    /// # Errors
    /// On I/O errors or a response that does not parse.
    pub fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Result<Response, String> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nhost: rs.example.com\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        self.writer.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let io = |e: std::io::Error| e.to_string();
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).map_err(io)?;
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        let mut headers = Vec::new();
        let (mut length, mut chunked) = (0usize, false);
        loop {
            let mut h = String::new();
            self.reader.read_line(&mut h).map_err(io)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_owned());
                if k == "content-length" {
                    length = v.parse().unwrap_or(0);
                }
                if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                    chunked = true;
                }
                headers.push((k, v));
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                self.reader.read_line(&mut size).map_err(io)?;
                let n = usize::from_str_radix(size.trim(), 16).map_err(|e| e.to_string())?;
                let mut chunk = vec![0u8; n + 2];
                self.reader.read_exact(&mut chunk).map_err(io)?;
                chunk.truncate(n);
                body.extend_from_slice(&chunk);
                if n == 0 {
                    break;
                }
            }
        } else {
            body.resize(length, 0);
            self.reader.read_exact(&mut body).map_err(io)?;
        }
        Ok(Response {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}
