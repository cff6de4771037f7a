//! The demo's HTTP client: [ureq](https://docs.rs/ureq) (blocking, rustls with ring) trusting the
//! demo's CA, optionally presenting a client certificate (the mTLS route). Redirects are never
//! followed (the story reads `Location`), statuses other than 2xx are answers, not errors, and no
//! proxy from the environment is used (every peer is on 127.0.0.1).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};

/// The largest response body read (the demo's answers are a few kB; the browser package is the
/// largest thing served).
const BODY_LIMIT: u64 = 64 * 1024 * 1024;

/// An HTTP response.
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
    CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The certificates of a PEM file, at least one.
fn certificates(path: &Path) -> Result<Vec<Certificate<'static>>, String> {
    let certs: Vec<Certificate<'static>> = pem_certs(path)?
        .iter()
        .map(|c| Certificate::from_der(c).to_owned())
        .collect();
    if certs.is_empty() {
        return Err(format!("{}: no certificate", path.display()));
    }
    Ok(certs)
}

/// An HTTP client: plain ([`Client::plain`]) or trusting a CA, with an optional client
/// certificate ([`Client::tls`]).
#[derive(Debug, Clone)]
pub struct Client {
    agent: ureq::Agent,
    tls: bool,
}

impl Client {
    /// A client for `http://` URLs.
    pub fn plain() -> Client {
        Client {
            agent: agent(None),
            tls: false,
        }
    }

    /// A client trusting `ca` (PEM) only, presenting the client certificate and key `client`
    /// (PEM files) when given. It also speaks plain HTTP.
    ///
    /// # Errors
    /// A message naming a file that cannot be read or holds no certificate or key.
    pub fn tls(ca: &Path, client: Option<(&Path, &Path)>) -> Result<Client, String> {
        let roots = certificates(ca)?;
        let client_cert = match client {
            Some((cert, key)) => {
                let chain = certificates(cert)?;
                let pem = std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?;
                let key = PrivateKey::from_pem(&pem).map_err(|e| format!("{}: {e}", key.display()))?;
                Some(ClientCert::new_with_certs(&chain, key))
            }
            None => None,
        };
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .root_certs(RootCerts::Specific(Arc::new(roots)))
            .client_cert(client_cert)
            .build();
        Ok(Client {
            agent: agent(Some(tls)),
            tls: true,
        })
    }

    /// Sends one request and reads the whole response. Redirects are returned, not followed.
    ///
    /// # Errors
    /// A message naming the URL if it is not one, an `https` URL for a plain client, or the
    /// connection, TLS or the response fails.
    pub fn request(
        &self,
        url: &str,
        method: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response, String> {
        if url.starts_with("https:") && !self.tls {
            return Err(format!("{url}: https needs a TLS client (Client::tls)"));
        }
        let mut builder = ureq::http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let sent = match body {
            Some(b) => builder.body(b).map(|r| self.agent.run(r)),
            None => builder.body(()).map(|r| self.agent.run(r)),
        };
        let mut res = sent
            .map_err(|e| format!("{method} {url}: {e}"))?
            .map_err(|e| format!("{method} {url}: {e}"))?;
        let status = res.status().as_u16();
        let headers = res
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = res
            .body_mut()
            .with_config()
            .limit(BODY_LIMIT)
            .read_to_vec()
            .map_err(|e| format!("{method} {url}: the body: {e}"))?;
        Ok(Response { status, headers, body })
    }
}

/// A ureq agent: no redirects, no proxy, statuses as answers, 30 s per call.
fn agent(tls: Option<TlsConfig>) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .max_redirects(0)
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(30)));
    if let Some(tls) = tls {
        config = config.tls_config(tls);
    }
    config.build().new_agent()
}

/// Sends one request with `client`, or for `http://` URLs with a plain client when `None`
/// (see [`Client::request`]).
///
/// # Errors
/// As [`Client::request`].
pub fn request(
    url: &str,
    client: Option<&Client>,
    method: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response, String> {
    match client {
        Some(c) => c.request(url, method, headers, body),
        None => Client::plain().request(url, method, headers, body),
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
    fn query_parameters_are_decoded() {
        assert_eq!(
            query_params("/cb?code=a%20b&state=s"),
            vec![("code".into(), "a b".into()), ("state".into(), "s".into())]
        );
        assert_eq!(form(&[("a", "b c"), ("d", "&")]), "a=b+c&d=%26");
    }

    #[test]
    fn bad_urls_and_files_get_clear_errors() {
        let e = request("https://127.0.0.1:1/", None, "GET", &[], None).unwrap_err();
        assert!(e.contains("https needs a TLS client"), "{e}");
        let e = request("not a url", None, "GET", &[], None).unwrap_err();
        assert!(e.starts_with("GET not a url: "), "{e}");
        let missing = Path::new("/nonexistent/ca.pem");
        let e = Client::tls(missing, None).unwrap_err();
        assert!(e.starts_with("/nonexistent/ca.pem: "), "{e}");
        let empty = std::env::temp_dir().join(format!("kb-demo-empty-{}.pem", std::process::id()));
        std::fs::write(&empty, "").unwrap();
        let e = Client::tls(&empty, None).unwrap_err();
        std::fs::remove_file(&empty).unwrap();
        assert!(e.ends_with(": no certificate"), "{e}");
    }
}
