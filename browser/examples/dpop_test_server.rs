//! The HTTP server the browser tests talk to (`cargo xtask test` starts it; not for production).
//!
//! It listens on `127.0.0.1` on a free port, prints `listening on http://127.0.0.1:PORT`, and
//! exits when its standard input closes (so it never outlives the xtask that started it). It
//! answers with CORS headers, so the test page (another origin) can send `Authorization` and
//! `DPoP` and read `DPoP-Nonce`, `WWW-Authenticate` and `Date`.
//!
//! Every DPoP proof it receives is verified by keybound-core, as a resource server or an
//! authorization server would, with these query parameters:
//! - `id=X`: requests are counted per `X` (`GET /count?id=X` returns `{"count": n}`);
//! - `as=1`: answer like an authorization server (400 with a JSON error body) instead of a
//!   resource server (401 with a `WWW-Authenticate` challenge);
//! - `nonce=1`: require a valid server nonce (`use_dpop_nonce` otherwise);
//! - `nonce=offer`: do not require one, but send the current `DPoP-Nonce` with every answer;
//! - `nonce=fixed`: answer `use_dpop_nonce` every time, always with the same nonce;
//! - `nonce=always`: answer `use_dpop_nonce` with a new nonce every time (a server that can never
//!   be satisfied: the client must not loop);
//! - `skew=S`: the server's clock is S seconds off (its `Date` header, the `iat` window, nonces).
//!
//! A request that passes gets 200 and `{"jkt", "htm", "htu", "jti", "iat", "nonce", "ath"}` as
//! verified. Every response carries `Date` and, with `nonce=1`, the current `DPoP-Nonce`.
//!
//! For the login tests it also answers, as an authorization server would:
//! - `GET /.well-known/oauth-authorization-server[/PATH]`: RFC 8414 metadata whose `issuer` is
//!   `http://HOST` whatever `PATH` is (so an issuer with a path gets metadata naming another
//!   issuer), with `/login/par?as=1&nonce=1` and `/login/token?as=1&nonce=1` as endpoints;
//! - `POST /login/par`: after the proof, checks the pushed request with keybound-core (`dpop_jkt` equal
//!   to the proof's key thumbprint, `code_challenge_method=S256` and a well-formed challenge, and
//!   `client_id`, `redirect_uri`, `state`, `response_type=code` present) and answers 201 with
//!   `request_uri` = `urn:ietf:params:oauth:request_uri:` + the received challenge (so a test
//!   can compare it with its verifier), or 400 `invalid_request`;
//! - `POST /login/token`: after the proof, 400 `invalid_grant` (it issued no code).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use keybound_core::Error;
use keybound_core::dpop::{NonceCheck, ProofPolicy, ProofTarget, verify_proof};
use keybound_core::error::Challenge;
use keybound_core::htu::Htu;
use keybound_core::jws::RustCrypto;
use keybound_core::nonce::NonceSecrets;
use keybound_core::request::Scheme;

/// Test-only nonce secret (32 bytes, base64url).
const SECRET: &str = "a2V5Ym91bmQtYnJvd3Nlci10ZXN0LXNlcnZlci1zZWNyZXQ";
const MAX_HEAD: usize = 64 * 1024;

struct State {
    counts: Mutex<HashMap<String, u64>>,
    secrets: NonceSecrets,
    always_counter: AtomicU64,
}

fn main() -> std::io::Result<()> {
    let secrets = NonceSecrets::from_config(&[SECRET], 120, "test_server.secret")
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let state = Arc::new(State {
        counts: Mutex::new(HashMap::new()),
        secrets,
        always_counter: AtomicU64::new(0),
    });
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("listening on http://{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    // Exit when the parent closes our stdin (or dies).
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        std::process::exit(0);
    });
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let state = Arc::clone(&state);
        std::thread::spawn(move || {
            let _ = handle(stream, &state);
        });
    }
    Ok(())
}

struct Request {
    method: String,
    path: String,
    query: HashMap<String, String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

fn read_request(stream: &TcpStream) -> std::io::Result<Option<Request>> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Ok(None);
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut headers = Vec::new();
    let mut total = line.len();
    loop {
        let mut h = String::new();
        let n = reader.read_line(&mut h)?;
        total += n;
        if n == 0 || h == "\r\n" || h == "\n" || total > MAX_HEAD {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    let mut req = Request {
        method: method.to_string(),
        path: path.to_string(),
        query,
        headers,
        body: Vec::new(),
    };
    let length: usize = req
        .header("content-length")
        .first()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length.min(1 << 20)];
    reader.read_exact(&mut body)?;
    req.body = body;
    req.headers.retain(|(n, _)| !n.is_empty());
    Ok(Some(req))
}

/// An HTTP date (RFC 9110 §5.6.7, IMF-fixdate) for Unix seconds.
fn http_date(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = (days + 4).rem_euclid(7); // 1970-01-01 was a Thursday
    let wd = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    let mn = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        wd.get(usize::try_from(weekday).unwrap_or(0)).unwrap_or(&"Thu"),
        day,
        mn.get(usize::try_from(month - 1).unwrap_or(0)).unwrap_or(&"Jan"),
        year,
        secs / 3600,
        (secs % 3600) / 60,
        secs % 60
    )
}

fn handle(mut stream: TcpStream, state: &State) -> std::io::Result<()> {
    let Some(req) = read_request(&stream)? else {
        return Ok(());
    };
    let real_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let skew: i64 = req.query.get("skew").and_then(|s| s.parse().ok()).unwrap_or(0);
    let now = u64::try_from(i64::try_from(real_now).unwrap_or(0).saturating_add(skew)).unwrap_or(0);
    let origin = req
        .header("origin")
        .first()
        .map(|s| s.to_string())
        .unwrap_or("*".into());
    let mut headers = vec![
        ("Date".to_string(), http_date(i64::try_from(now).unwrap_or(0))),
        ("Access-Control-Allow-Origin".into(), origin),
        ("Vary".into(), "Origin".into()),
        (
            "Access-Control-Expose-Headers".into(),
            "DPoP-Nonce, WWW-Authenticate, Date".into(),
        ),
        ("Cache-Control".into(), "no-store".into()),
    ];
    if req.method == "OPTIONS" {
        headers.push((
            "Access-Control-Allow-Methods".into(),
            "GET, POST, PUT, PATCH, DELETE".into(),
        ));
        headers.push((
            "Access-Control-Allow-Headers".into(),
            "Authorization, DPoP, Content-Type".into(),
        ));
        headers.push(("Access-Control-Max-Age".into(), "600".into()));
        return respond(&mut stream, 204, &headers, "");
    }
    let id = req.query.get("id").cloned().unwrap_or_default();
    if req.path == "/count" {
        let count = state
            .counts
            .lock()
            .map(|c| c.get(&id).copied().unwrap_or(0))
            .unwrap_or(0);
        return respond(&mut stream, 200, &headers, &format!(r#"{{"count":{count}}}"#));
    }
    if req.method == "GET" && req.path.starts_with(METADATA_PATH) {
        let host = req.header("host").first().copied().unwrap_or("127.0.0.1");
        let base = format!("http://{host}");
        let metadata = serde_json::json!({
            "issuer": base,
            "pushed_authorization_request_endpoint": format!("{base}/login/par?as=1&nonce=1"),
            "authorization_endpoint": format!("{base}/authorize"),
            "token_endpoint": format!("{base}/login/token?as=1&nonce=1"),
            "code_challenge_methods_supported": ["S256"],
            "dpop_signing_alg_values_supported": ["ES256"],
        });
        return respond(&mut stream, 200, &headers, &metadata.to_string());
    }
    if let Ok(mut counts) = state.counts.lock() {
        *counts.entry(id).or_insert(0) += 1;
    }
    let as_mode = req.query.get("as").is_some_and(|v| v == "1");
    let nonce_mode = req.query.get("nonce").map(String::as_str).unwrap_or("0");
    let (status, body) = match verify(&req, state, now, nonce_mode) {
        Ok(body) if req.method == "POST" && req.path == "/login/par" => par(&req, &body),
        Ok(_) if req.method == "POST" && req.path == "/login/token" => (400, r#"{"error":"invalid_grant"}"#.into()),
        Ok(body) => (200, body),
        Err(e) => {
            let code = e.code().map(|c| c.as_str()).unwrap_or("invalid_request");
            if as_mode {
                // RFC 9449 §8: an authorization server answers 400 with the error in the body.
                (400, format!(r#"{{"error":"{code}"}}"#))
            } else {
                let challenge = Challenge {
                    scheme_used: Some(Scheme::DPoP),
                    bearer_allowed: false,
                    algs: &ProofPolicy::default().algs.to_vec(),
                    realm: None,
                    required_scope: "",
                    resource_metadata: None,
                };
                headers.push(("WWW-Authenticate".into(), e.www_authenticate(&challenge)));
                (e.status(), format!(r#"{{"error":"{code}"}}"#))
            }
        }
    };
    match nonce_mode {
        "always" => {
            let n = state.always_counter.fetch_add(1, Ordering::Relaxed);
            headers.push(("DPoP-Nonce".into(), format!("never-good-{n}")));
        }
        "1" | "offer" => headers.push(("DPoP-Nonce".into(), state.secrets.issue(now))),
        "fixed" => headers.push(("DPoP-Nonce".into(), "the-same-nonce".into())),
        _ => {}
    }
    respond(&mut stream, status, &headers, &body)
}

const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";

/// `application/x-www-form-urlencoded` decoding of one name or value.
fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks a pushed authorization request whose proof passed (`verified` is the proof's JSON
/// summary); see the module docs.
fn par(req: &Request, verified: &str) -> (u16, String) {
    let form: HashMap<String, String> = String::from_utf8_lossy(&req.body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (form_decode(k), form_decode(v)))
        .collect();
    let jkt = serde_json::from_str::<serde_json::Value>(verified)
        .ok()
        .and_then(|v| v.get("jkt").and_then(|j| j.as_str()).map(str::to_string));
    let get = |name: &str| form.get(name).map(String::as_str);
    let challenge = get("code_challenge").unwrap_or("");
    let ok = jkt.is_some()
        && get("dpop_jkt") == jkt.as_deref()
        && keybound_core::pkce::check_challenge(get("code_challenge_method"), challenge).is_ok()
        && get("response_type") == Some("code")
        && ["client_id", "redirect_uri", "state"]
            .iter()
            .all(|n| get(n).is_some_and(|v| !v.is_empty()));
    if ok {
        let uri = format!("urn:ietf:params:oauth:request_uri:{challenge}");
        (
            201,
            serde_json::json!({ "request_uri": uri, "expires_in": 60 }).to_string(),
        )
    } else {
        (400, r#"{"error":"invalid_request"}"#.into())
    }
}

fn verify(req: &Request, state: &State, now: u64, nonce_mode: &str) -> Result<String, Error> {
    let proofs = req.header("dpop");
    let [proof] = proofs.as_slice() else {
        return Err(if proofs.is_empty() {
            Error::MissingProof
        } else {
            Error::MultipleDpopHeaders
        });
    };
    let token = match req.header("authorization").as_slice() {
        [] => None,
        [auth] => Some(auth.strip_prefix("DPoP ").ok_or(Error::UnsupportedScheme)?),
        _ => return Err(Error::MultipleAuthorizationHeaders),
    };
    let host = req.header("host").first().copied().unwrap_or("127.0.0.1");
    let htu = Htu::from_parts("http", host, &req.path)?;
    let target = ProofTarget {
        method: &req.method,
        htu: &htu,
        access_token: token,
    };
    let nonce = match nonce_mode {
        "1" => NonceCheck::Required(&state.secrets),
        "always" | "fixed" => return Err(Error::NonceRequired),
        _ => NonceCheck::Off,
    };
    let verified = verify_proof(proof, &target, &ProofPolicy::default(), nonce, now, &RustCrypto)?;
    let claims = proof
        .split('.')
        .nth(1)
        .and_then(|p| keybound_core::b64::decode(p).ok())
        .and_then(|p| serde_json::from_slice::<serde_json::Value>(&p).ok())
        .unwrap_or_default();
    Ok(serde_json::json!({
        "jkt": verified.jkt().to_string(),
        "jti": verified.jti(),
        "iat": verified.iat(),
        "htm": claims.get("htm"),
        "htu": claims.get("htu"),
        "nonce": claims.get("nonce"),
        "ath": claims.get("ath"),
        "server_now": now,
    })
    .to_string())
}

fn respond(stream: &mut TcpStream, status: u16, headers: &[(String, String)], body: &str) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        _ => "Other",
    };
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if status != 204 {
        out.push_str("Content-Type: application/json\r\n");
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    stream.write_all(out.as_bytes())?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::{form_decode, http_date};

    #[test]
    fn form_values_are_decoded() {
        assert_eq!(form_decode("http%3A%2F%2Fa.b%2Fcb"), "http://a.b/cb");
        assert_eq!(form_decode("openid+accounts"), "openid accounts");
        assert_eq!(form_decode("100%"), "100%");
        assert_eq!(form_decode("%zz"), "%zz");
    }

    #[test]
    fn http_dates_are_imf_fixdates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        // RFC 9110 §5.6.7's example
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    }
}
