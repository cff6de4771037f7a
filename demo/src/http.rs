//! A small blocking HTTP/1.1 client (plain or TLS with rustls, optionally with a client
//! certificate) and a small threaded HTTP/1.1 server, enough for the demo's scripted client, its
//! page server, its echo API and the WebDriver calls of the browser test.
//!
//! Every request uses a new connection (`Connection: close`); bodies are read up to their
//! `Content-Length` (or chunked), so a peer that keeps the connection open does not delay us.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// An HTTP response (or request, for the server side: see [`Request`]).
#[derive(Debug, Clone, Default)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers in order, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with a status, a content type and a body.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.into(),
        }
    }

    /// A JSON response.
    pub fn json_body(status: u16, value: &serde_json::Value) -> Response {
        Response::new(status, "application/json", value.to_string())
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    ///
    /// # Errors
    /// A message with the body if it is not JSON.
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("not JSON ({e}): {}", self.text()))
    }
}

/// Reads PEM certificates.
///
/// # Errors
/// A message naming the file.
pub fn pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    rustls_pemfile::certs(&mut BufReader::new(f))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn pem_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    rustls_pemfile::private_key(&mut BufReader::new(f))
        .map_err(|e| format!("{}: {e}", path.display()))?
        .ok_or_else(|| format!("{}: no private key", path.display()))
}

/// A TLS client configuration trusting `ca` (PEM), with an optional client certificate and key
/// (PEM files).
///
/// # Errors
/// A message if a file cannot be read or rustls refuses it.
pub fn tls_config(ca: &Path, client: Option<(&Path, &Path)>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in pem_certs(ca)? {
        roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(pem_certs(cert)?, pem_key(key)?)
            .map_err(|e| format!("{}: {e}", cert.display()))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The parts of an `http(s)://host:port/path?query` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `http` or `https`.
    pub scheme: String,
    /// Host (no brackets).
    pub host: String,
    /// Port (default by scheme).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    /// Parses an absolute http(s) URL.
    ///
    /// # Errors
    /// A message if it is not one.
    pub fn parse(url: &str) -> Result<Url, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("not an absolute URL: {url}"))?;
        let default_port = match scheme {
            "http" => 80,
            "https" => 443,
            _ => return Err(format!("not an http(s) URL: {url}")),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (rest.get(..i).unwrap_or(rest), rest.get(i..).unwrap_or("/")),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("bad port in {url}"))?),
            None => (authority, default_port),
        };
        Ok(Url {
            scheme: scheme.into(),
            host: host.into(),
            port,
            path,
        })
    }

    /// `host:port` as sent in `Host`.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Sends one request on a new connection and reads the response. `tls` is required for https
/// URLs. The server name checked in the certificate is `localhost` for `127.0.0.1` (the demo
/// certificates name both).
///
/// # Errors
/// A message if the connection, TLS or the response fails.
pub fn request(
    url: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
    method: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response, String> {
    let u = Url::parse(url)?;
    let tcp = TcpStream::connect((u.host.as_str(), u.port)).map_err(|e| format!("connect {}: {e}", u.authority()))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut head = format!(
        "{method} {} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n",
        u.path,
        u.authority()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if body.is_some() || matches!(method, "POST" | "PUT" | "PATCH") {
        head.push_str(&format!("content-length: {}\r\n", body.map_or(0, <[u8]>::len)));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    if u.scheme == "https" {
        let config = tls.ok_or_else(|| format!("{url}: https needs a TLS configuration"))?;
        let name = if u.host == "127.0.0.1" {
            "localhost"
        } else {
            u.host.as_str()
        };
        let name = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
        let conn = rustls::ClientConnection::new(config.clone(), name).map_err(|e| e.to_string())?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        stream.write_all(&bytes).map_err(|e| format!("{url}: {e}"))?;
        stream.flush().map_err(|e| format!("{url}: {e}"))?;
        read_response(&mut BufReader::new(stream), method == "HEAD").map_err(|e| format!("{url}: {e}"))
    } else {
        let mut stream = tcp;
        stream.write_all(&bytes).map_err(|e| format!("{url}: {e}"))?;
        read_response(&mut BufReader::new(stream), method == "HEAD").map_err(|e| format!("{url}: {e}"))
    }
}

fn read_head(r: &mut impl BufRead) -> Result<(String, Vec<(String, String)>), String> {
    let mut first = String::new();
    r.read_line(&mut first).map_err(|e| e.to_string())?;
    if first.is_empty() {
        return Err("connection closed before a response".into());
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).map_err(|e| e.to_string())?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Ok((first.trim_end().to_string(), headers))
}

fn header_of<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn read_body(r: &mut impl BufRead, headers: &[(String, String)]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    if header_of(headers, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).map_err(|e| e.to_string())?;
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| format!("bad chunk size {size:?}"))?;
            if size == 0 {
                break;
            }
            let mut chunk = vec![0; size];
            r.read_exact(&mut chunk).map_err(|e| e.to_string())?;
            body.extend_from_slice(&chunk);
            let mut crlf = String::new();
            r.read_line(&mut crlf).map_err(|e| e.to_string())?;
        }
    } else if let Some(len) = header_of(headers, "content-length") {
        let len: usize = len.parse().map_err(|_| format!("bad content-length {len}"))?;
        body.resize(len, 0);
        r.read_exact(&mut body).map_err(|e| e.to_string())?;
    } else {
        match r.read_to_end(&mut body) {
            Ok(_) => {}
            // A TLS peer that closes without close_notify: what we have is the body.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(body)
}

fn read_response(r: &mut impl BufRead, head_only: bool) -> Result<Response, String> {
    let (status_line, headers) = read_head(r)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let body = if head_only || status == 204 || status == 304 {
        Vec::new()
    } else {
        read_body(r, &headers)?
    };
    Ok(Response { status, headers, body })
}

/// A request received by [`serve`].
#[derive(Debug, Clone)]
pub struct Request {
    /// The method.
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Headers in order, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Request {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("/")
    }

    /// The first value of a header (name lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_of(&self.headers, name)
    }
}

/// A request handler of [`serve`].
pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// Serves HTTP/1.1 on `listener` in a background thread, one thread per connection, one request
/// per connection. Runs until the process ends.
pub fn serve(listener: TcpListener, handler: Handler) {
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let handler = handler.clone();
            std::thread::spawn(move || {
                let _ = handle(stream, &handler);
            });
        }
    });
}

fn handle(stream: TcpStream, handler: &Handler) -> Result<(), String> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let (line, headers) = read_head(&mut reader)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("GET").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let body = if header_of(&headers, "content-length").is_some() || header_of(&headers, "transfer-encoding").is_some()
    {
        read_body(&mut reader, &headers)?
    } else {
        Vec::new()
    };
    let req = Request {
        method,
        target,
        headers,
        body,
    };
    let res = handler(&req);
    let mut out = format!("HTTP/1.1 {} {}\r\n", res.status, reason(res.status));
    for (k, v) in &res.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        res.body.len()
    ));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&res.body);
    let mut stream = stream;
    stream.write_all(&bytes).map_err(|e| e.to_string())?;
    stream.flush().map_err(|e| e.to_string())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        303 => "See Other",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Status",
    }
}

/// Percent-encodes form fields (`application/x-www-form-urlencoded`).
pub fn form(fields: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields {
        s.append_pair(k, v);
    }
    s.finish()
}

/// The query parameters of a URL or target.
pub fn query_params(url: &str) -> Vec<(String, String)> {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = Url::parse("https://127.0.0.1:9443/api/accounts?x=1").unwrap();
        assert_eq!(
            (u.scheme.as_str(), u.host.as_str(), u.port),
            ("https", "127.0.0.1", 9443)
        );
        assert_eq!(u.path, "/api/accounts?x=1");
        assert_eq!(Url::parse("http://localhost").unwrap().path, "/");
        assert_eq!(Url::parse("http://h?q=1").unwrap().path, "/?q=1");
        assert!(Url::parse("ftp://x/").is_err());
        assert!(Url::parse("/relative").is_err());
        assert!(Url::parse("http://h:99999/").is_err());
    }

    #[test]
    fn server_and_client_round_trip() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        serve(
            l,
            Arc::new(|r: &Request| {
                Response::json_body(
                    201,
                    &serde_json::json!({"m": r.method, "p": r.path(), "b": String::from_utf8_lossy(&r.body), "h": r.header("x-a")}),
                )
            }),
        );
        let r = request(
            &format!("http://127.0.0.1:{port}/a/b?c=d"),
            None,
            "POST",
            &[("x-a", "1")],
            Some(b"hello"),
        )
        .unwrap();
        assert_eq!(r.status, 201);
        let j = r.json().unwrap();
        assert_eq!(j["m"], "POST");
        assert_eq!(j["p"], "/a/b");
        assert_eq!(j["b"], "hello");
        assert_eq!(j["h"], "1");
        assert_eq!(
            query_params("/cb?code=a%20b&state=s"),
            vec![("code".into(), "a b".into()), ("state".into(), "s".into())]
        );
    }
}
