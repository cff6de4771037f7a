//! TLS: the rustls server configuration, the optional client certificate, and the checks of a
//! client certificate against a registered client (RFC 8705 §2).
//!
//! One listener serves everyone: the server *requests* a client certificate but does not require
//! one, so DPoP clients connect without a certificate while `tls_client_auth` and
//! `self_signed_tls_client_auth` clients present theirs. At the TLS layer the certificate is only
//! checked to be a certificate whose key signed the handshake (proof of possession); which
//! certificate is acceptable depends on the client, so the application checks it per client
//! ([`check_tls_client_auth`], [`check_self_signed`]). TLS 1.2 and 1.3 only, `ring` provider.

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use keybound_core::cert::X5tS256;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};

/// The certificate chain the client presented on this connection, if any (leaf first).
#[derive(Debug, Clone, Default)]
pub struct PeerCerts(pub Option<Arc<Vec<CertificateDer<'static>>>>);

impl PeerCerts {
    /// The leaf certificate.
    pub fn leaf(&self) -> Option<&CertificateDer<'static>> {
        self.0.as_ref().and_then(|c| c.first())
    }

    /// The SHA-256 thumbprint of the leaf (`x5t#S256`).
    pub fn thumbprint(&self) -> Option<X5tS256> {
        self.leaf().map(|c| X5tS256::from_der(c.as_ref()))
    }
}

/// Requests a client certificate, does not require one, and accepts any certificate whose key
/// signs the handshake. The application decides per client whether the certificate is acceptable.
#[derive(Debug)]
struct OptionalClientCert {
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for OptionalClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Only require that it parses as X.509; trust is decided per client by the application.
        x509_parser::parse_x509_certificate(end_entity.as_ref())
            .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Reads every certificate of a PEM file.
///
/// # Errors
/// A message if the file cannot be read or holds no certificate.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(f))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", path.display()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    rustls_pemfile::private_key(&mut BufReader::new(f))
        .map_err(|e| format!("{}: {e}", path.display()))?
        .ok_or_else(|| format!("{}: no private key", path.display()))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the server configuration: TLS 1.2+, ALPN `http/1.1`, optional client certificates.
///
/// # Errors
/// A message naming the file if the certificate or key cannot be read or do not match.
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, String> {
    let provider = provider();
    let verifier = Arc::new(OptionalClientCert {
        algs: provider.signature_verification_algorithms,
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(read_certs(cert)?, read_key(key)?)
        .map_err(|e| format!("tls.cert / tls.key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Verifies `tls_client_auth` certificate chains against the configured CA.
#[derive(Debug, Clone)]
pub struct CaVerifier(Arc<dyn ClientCertVerifier>);

impl CaVerifier {
    /// Builds a verifier trusting the certificates in `ca` (PEM).
    ///
    /// # Errors
    /// A message if the file cannot be read or holds no usable trust anchor.
    pub fn from_pem_file(ca: &Path) -> Result<CaVerifier, String> {
        let mut roots = RootCertStore::empty();
        for c in read_certs(ca)? {
            roots.add(c).map_err(|e| format!("tls.client_ca: {e}"))?;
        }
        let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| format!("tls.client_ca: {e}"))?;
        Ok(CaVerifier(v))
    }

    /// Whether the chain (leaf first) is valid now and chains to the CA, for client auth.
    pub fn verify(&self, chain: &[CertificateDer<'static>]) -> bool {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return false;
        };
        self.0.verify_client_cert(leaf, intermediates, UnixTime::now()).is_ok()
    }
}

fn short_name(oid: &x509_parser::der_parser::oid::Oid<'_>) -> String {
    use x509_parser::oid_registry as o;
    let known = [
        (o::OID_X509_COMMON_NAME, "CN"),
        (o::OID_X509_ORGANIZATION_NAME, "O"),
        (o::OID_X509_ORGANIZATIONAL_UNIT, "OU"),
        (o::OID_X509_COUNTRY_NAME, "C"),
        (o::OID_X509_LOCALITY_NAME, "L"),
        (o::OID_X509_STATE_OR_PROVINCE_NAME, "ST"),
    ];
    known
        .iter()
        .find(|(k, _)| k == oid)
        .map_or_else(|| oid.to_id_string(), |(_, n)| (*n).to_string())
}

/// The subject DN of a certificate as an RFC 4514 string (most specific RDN first, e.g.
/// `CN=client,O=keybound`), the form `tls_client_auth_subject_dn` is compared with.
pub fn subject_dn(cert: &[u8]) -> Option<String> {
    let (_, c) = x509_parser::parse_x509_certificate(cert).ok()?;
    let mut parts = Vec::new();
    for rdn in c.subject().iter() {
        let mut attrs = Vec::new();
        for atv in rdn.iter() {
            let value = atv.as_str().ok()?;
            let mut escaped = String::with_capacity(value.len());
            for (i, ch) in value.chars().enumerate() {
                if matches!(ch, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
                    || (i == 0 && matches!(ch, ' ' | '#'))
                    || (i + 1 == value.chars().count() && ch == ' ')
                {
                    escaped.push('\\');
                }
                escaped.push(ch);
            }
            attrs.push(format!("{}={escaped}", short_name(atv.attr_type())));
        }
        parts.push(attrs.join("+"));
    }
    parts.reverse();
    Some(parts.join(","))
}

/// The DNS names in a certificate's subjectAltName.
pub fn san_dns(cert: &[u8]) -> Vec<String> {
    let Ok((_, c)) = x509_parser::parse_x509_certificate(cert) else {
        return Vec::new();
    };
    let Ok(Some(san)) = c.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_string()),
            _ => None,
        })
        .collect()
}

fn normalise_dn(dn: &str) -> String {
    dn.split(',').map(str::trim).collect::<Vec<_>>().join(",")
}

/// `tls_client_auth` (RFC 8705 §2.1): the chain is valid and issued by the configured CA, and the
/// leaf's subject DN or a DNS SAN is the registered one.
pub fn check_tls_client_auth(
    ca: Option<&CaVerifier>,
    certs: &PeerCerts,
    subject: Option<&str>,
    san: Option<&str>,
) -> bool {
    let (Some(ca), Some(chain)) = (ca, certs.0.as_ref()) else {
        return false;
    };
    let Some(leaf) = chain.first() else {
        return false;
    };
    if !ca.verify(chain) {
        return false;
    }
    let dn_ok = subject.is_some_and(|want| subject_dn(leaf.as_ref()).is_some_and(|dn| dn == normalise_dn(want)));
    let san_ok = san.is_some_and(|want| san_dns(leaf.as_ref()).iter().any(|d| d.eq_ignore_ascii_case(want)));
    dn_ok || san_ok
}

/// `self_signed_tls_client_auth` (RFC 8705 §2.2): the leaf is the registered certificate.
pub fn check_self_signed(certs: &PeerCerts, registered: Option<&X5tS256>) -> bool {
    matches!((certs.thumbprint(), registered), (Some(got), Some(want)) if &got == want)
}
