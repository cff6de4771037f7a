//! A small authorization-server stand-in for the filter's network paths: it serves a JWKS at
//! `/jwks` and answers RFC 7662 introspection at `/introspect` (HTTP Basic client
//! authentication), with switches to change keys, fail, and count calls. It is a real HTTP/1.1
//! server on 127.0.0.1 that Envoy reaches through a cluster; the tests decide what it answers.
//!
//! Also here: [`Connection`], a keep-alive HTTP/1.1 client, for requests that must land on the
//! same Envoy worker (each worker has its own token cache).

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::{Response, Seen, parse_response, read_request, request_bytes};

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
    stream: TcpStream,
}

impl Connection {
    /// Connects to 127.0.0.1:`port`.
    ///
    /// # Errors
    /// If it cannot connect.
    pub fn open(port: u16) -> Result<Connection, String> {
        let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect {port}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(Connection { stream })
    }

    /// Sends a request without a body (`host: rs.example.com`, the connection kept open) and reads
    /// the answer.
    ///
    /// # Errors
    /// On I/O errors or a response that does not parse.
    pub fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Result<Response, String> {
        let raw = crate::tls::write_then_read_response(&mut self.stream, &request_bytes(method, path, headers, false))?;
        parse_response(&raw)
    }
}
