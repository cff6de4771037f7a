//! A test PKI made at test time (rcgen) and a TLS client (rustls, ring provider) for requests to
//! Envoy's TLS listeners, with or without a client certificate.
//!
//! [`Pki::generate`] makes a CA and, signed by it: `gateway` and `front` (server certificates for
//! `localhost` and `127.0.0.1`, each with a SPIFFE-style URI SAN that Envoy writes as the XFCC
//! `By`) and two client certificates `alice` and `bob`. A second CA, `mesh_ca`, signs only the
//! internal hop's certificates: `mesh_front`, the front hop's client certificate towards the
//! gateway (URI SAN [`FRONT_URI`]), so that a gateway trusting only `mesh_ca` accepts no client's
//! own certificate, and `mesh_gateway`, the gateway's server certificate on that hop. Three
//! payment providers' client certificates carry PSD2 QCStatements (ETSI TS 119 495): `tpp_pi`
//! (`PSP_PI`, `PSP_AI`), `tpp_ai` (`PSP_AI`) and `tpp_bad` (a malformed statement). Everything
//! is written as PEM files into a directory removed on drop, for Envoy to read.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use keybound_core::cert::X5tS256;
use keybound_core::qc::{PspRole, QC_STATEMENTS_ARCS, encode_psd2_qc_statements};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

use crate::{Response, TempDir, exchange};

/// The URI SAN of the gateway's server certificate.
pub const GATEWAY_URI: &str = "spiffe://keybound.test/gateway";
/// The URI SAN of the front hop's certificate (its XFCC `By`, and its identity at the gateway).
pub const FRONT_URI: &str = "spiffe://keybound.test/front";

/// A certificate and its key, as PEM files and DER.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Certificate (PEM file).
    pub cert: PathBuf,
    /// Private key (PKCS#8 PEM file).
    pub key: PathBuf,
    /// The certificate's DER.
    pub der: Vec<u8>,
    key_der: Vec<u8>,
}

impl Identity {
    /// The RFC 8705 `x5t#S256` of the certificate (base64url SHA-256 of the DER), for `cnf`.
    pub fn x5t_s256(&self) -> String {
        X5tS256::from_der(&self.der).to_string()
    }

    /// Lower-case hex SHA-256 of the DER (an XFCC `Hash`).
    pub fn sha256_hex(&self) -> String {
        X5tS256::from_der(&self.der)
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// A CA and the certificates it signed, on disk while this lives.
pub struct Pki {
    /// The CA certificate (PEM file).
    pub ca: PathBuf,
    ca_der: Vec<u8>,
    /// Server certificate for the gateway (`localhost`, `127.0.0.1`, [`GATEWAY_URI`]).
    pub gateway: Identity,
    /// Certificate of the front hop (`localhost`, `127.0.0.1`, [`FRONT_URI`]), server and client.
    pub front: Identity,
    /// The internal CA that signed only [`Pki::mesh_front`] (PEM file).
    pub mesh_ca: PathBuf,
    /// The front hop's client certificate towards the gateway ([`FRONT_URI`]), from `mesh_ca`.
    pub mesh_front: Identity,
    /// The gateway's server certificate on the internal hop (`localhost`, `127.0.0.1`,
    /// [`GATEWAY_URI`]), from `mesh_ca`.
    pub mesh_gateway: Identity,
    /// A client certificate (URI `spiffe://keybound.test/client/alice`).
    pub alice: Identity,
    /// Another client certificate (URI `spiffe://keybound.test/client/bob`).
    pub bob: Identity,
    /// A payment provider's client certificate with the PSD2 roles `PSP_PI` and `PSP_AI`.
    pub tpp_pi: Identity,
    /// A payment provider's client certificate with the PSD2 role `PSP_AI` only.
    pub tpp_ai: Identity,
    /// A client certificate whose QCStatements extension is malformed.
    pub tpp_bad: Identity,
    _dir: TempDir,
}

fn rc(e: rcgen::Error) -> String {
    format!("rcgen: {e}")
}

fn issue(dir: &TempDir, issuer: &Issuer<'_, KeyPair>, name: &str, sans: Vec<SanType>) -> Result<Identity, String> {
    issue_with(dir, issuer, name, sans, Vec::new())
}

/// A payment provider's certificate with this QCStatements extension value.
fn issue_tpp(dir: &TempDir, issuer: &Issuer<'_, KeyPair>, name: &str, statements: Vec<u8>) -> Result<Identity, String> {
    let extension = CustomExtension::from_oid_content(&QC_STATEMENTS_ARCS, statements);
    issue_with(
        dir,
        issuer,
        name,
        vec![dns(&format!("{name}.keybound.test"))?],
        vec![extension],
    )
}

fn issue_with(
    dir: &TempDir,
    issuer: &Issuer<'_, KeyPair>,
    name: &str,
    sans: Vec<SanType>,
    extensions: Vec<CustomExtension>,
) -> Result<Identity, String> {
    let key = KeyPair::generate().map_err(rc)?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.subject_alt_names = sans;
    params.custom_extensions = extensions;
    let cert = params.signed_by(&key, issuer).map_err(rc)?;
    let (cert_path, key_path) = (dir.0.join(format!("{name}.pem")), dir.0.join(format!("{name}.key")));
    std::fs::write(&cert_path, cert.pem()).map_err(|e| e.to_string())?;
    std::fs::write(&key_path, key.serialize_pem()).map_err(|e| e.to_string())?;
    Ok(Identity {
        cert: cert_path,
        key: key_path,
        der: cert.der().to_vec(),
        key_der: key.serialize_der(),
    })
}

fn uri(s: &str) -> Result<SanType, String> {
    Ok(SanType::URI(s.try_into().map_err(rc)?))
}

fn dns(s: &str) -> Result<SanType, String> {
    Ok(SanType::DnsName(s.try_into().map_err(rc)?))
}

/// A self-signed CA written to `<file>.pem`: its path, DER, and issuer.
fn make_ca(dir: &TempDir, file: &str, name: &str) -> Result<(PathBuf, Vec<u8>, Issuer<'static, KeyPair>), String> {
    let key = KeyPair::generate().map_err(rc)?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).map_err(rc)?;
    let path = dir.0.join(format!("{file}.pem"));
    std::fs::write(&path, cert.pem()).map_err(|e| e.to_string())?;
    Ok((path, cert.der().to_vec(), Issuer::new(params, key)))
}

impl Pki {
    /// Generates the two CAs and the six certificates (P-256 keys) into a fresh directory.
    ///
    /// # Errors
    /// If generation or writing fails.
    pub fn generate() -> Result<Pki, String> {
        let dir = TempDir::new("pki")?;
        let (ca, ca_der, issuer) = make_ca(&dir, "ca", "keybound test CA")?;
        let (mesh_ca, _, mesh) = make_ca(&dir, "mesh-ca", "keybound test mesh CA")?;
        let server_sans = |u: &str| -> Result<Vec<SanType>, String> {
            Ok(vec![
                dns("localhost")?,
                SanType::IpAddress([127, 0, 0, 1].into()),
                uri(u)?,
            ])
        };
        Ok(Pki {
            ca,
            ca_der,
            gateway: issue(&dir, &issuer, "gateway", server_sans(GATEWAY_URI)?)?,
            front: issue(&dir, &issuer, "front", server_sans(FRONT_URI)?)?,
            mesh_ca,
            mesh_front: issue(&dir, &mesh, "mesh-front", vec![uri(FRONT_URI)?])?,
            mesh_gateway: issue(&dir, &mesh, "mesh-gateway", server_sans(GATEWAY_URI)?)?,
            alice: issue(
                &dir,
                &issuer,
                "alice",
                vec![uri("spiffe://keybound.test/client/alice")?],
            )?,
            bob: issue(&dir, &issuer, "bob", vec![uri("spiffe://keybound.test/client/bob")?])?,
            tpp_pi: issue_tpp(
                &dir,
                &issuer,
                "tpp-pi",
                encode_psd2_qc_statements(
                    &[PspRole::PaymentInitiation, PspRole::AccountInformation],
                    "Financial Conduct Authority",
                    "GB-FCA",
                ),
            )?,
            tpp_ai: issue_tpp(
                &dir,
                &issuer,
                "tpp-ai",
                encode_psd2_qc_statements(&[PspRole::AccountInformation], "Financial Conduct Authority", "GB-FCA"),
            )?,
            tpp_bad: issue_tpp(&dir, &issuer, "tpp-bad", vec![0x30, 0x03, 0x30, 0x01, 0x06])?,
            _dir: dir,
        })
    }

    /// A TLS listener serving `server` (e.g. `&pki.gateway`) that asks for client certificates from
    /// this CA (`require`: refuse handshakes without one).
    pub fn listener(&self, server: &Identity, require: bool) -> crate::TlsListener {
        crate::TlsListener {
            cert: server.cert.clone(),
            key: server.key.clone(),
            client_ca: Some(self.ca.clone()),
            require_client_cert: require,
            client_uri_sans: Vec::new(),
        }
    }

    fn client_config(&self, client: Option<&Identity>) -> Result<rustls::ClientConfig, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.ca_der.clone()))
            .map_err(|e| e.to_string())?;
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        match client {
            None => Ok(builder.with_no_client_auth()),
            Some(id) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from(id.der.clone())],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_der.clone())),
                )
                .map_err(|e| e.to_string()),
        }
    }
}

/// Sends one HTTP/1.1 request over TLS (server name `localhost`, verified against `pki`'s CA),
/// presenting `client`'s certificate if given, and reads the whole response.
///
/// # Errors
/// Connection and handshake failures (e.g. a client certificate the server refuses), I/O errors,
/// unparseable responses.
pub fn request_tls(
    port: u16,
    pki: &Pki,
    client: Option<&Identity>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Response, String> {
    let config = pki.client_config(client)?;
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let sock = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect {port}: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    // TLS writes small records; without this, Nagle and delayed ACKs add ~40 ms per request.
    sock.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    exchange(&mut tls, method, path, headers)
}

/// Writes `bytes` and reads one HTTP/1.1 response: up to its `content-length`, to the end of a
/// chunked body, or else until the peer closes (`UnexpectedEof` after data counts as the end: not
/// every server sends `close_notify`). Not waiting for the close matters: Envoy holds a connection
/// open for its `delayed_close_timeout` (1 s) after a local reply.
///
/// # Errors
/// I/O errors before a complete response was read.
pub(crate) fn write_then_read_response<S: Read + Write>(s: &mut S, bytes: &[u8]) -> Result<Vec<u8>, String> {
    s.write_all(bytes).map_err(|e| e.to_string())?;
    s.flush().map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if response_complete(&raw) {
            return Ok(raw);
        }
        match s.read(&mut buf) {
            Ok(0) => return Ok(raw),
            Ok(n) => raw.extend_from_slice(buf.get(..n).unwrap_or(&[])),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => return Ok(raw),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Whether `raw` holds a whole response whose end is known from its headers.
fn response_complete(raw: &[u8]) -> bool {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(raw.get(..end).unwrap_or(&[])).to_ascii_lowercase();
    let body = raw.get(end + 4..).unwrap_or(&[]);
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return true;
    }
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            match (k.trim(), v.trim()) {
                ("content-length", n) => return n.parse::<usize>().is_ok_and(|n| body.len() >= n),
                ("transfer-encoding", te) if te.contains("chunked") => {
                    return body.ends_with(b"0\r\n\r\n");
                }
                _ => {}
            }
        }
    }
    false
}
