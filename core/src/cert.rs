//! Client certificates for certificate-bound tokens ([RFC 8705 §3]): the `x5t#S256` thumbprint
//! from DER, PEM, Envoy's hex digest, or an `x-forwarded-client-cert` (XFCC) header.
//!
//! ## XFCC
//! Envoy's format is a comma-separated list of elements, one per proxy hop that appended one;
//! each element is a semicolon-separated list of `Key=Value` pairs. Values may be double-quoted,
//! with `\"` for a quote inside; commas, semicolons and equals signs inside quotes are literal.
//! Keys: `By`, `Hash` (hex SHA-256 of the DER certificate), `Cert` and `Chain` (URL-encoded PEM),
//! `Subject`, `URI`, `DNS` (the last two may repeat). [`Xfcc::parse`] reads the full format.
//!
//! An XFCC header must only be trusted when it comes from a configured hop (the front proxy that
//! terminated the client's TLS, with `forward_client_cert_details: SANITIZE_SET` so a client
//! cannot inject one). Which element describes the client is a deployment fact:
//! [`XfccPolicy::element_from_end`] picks it, counted from the last element (the one appended by
//! the proxy nearest to us), and [`XfccPolicy::expected_by`] optionally requires its `By` (the
//! proxy's own URI SAN).
//!
//! [RFC 8705 §3]: https://www.rfc-editor.org/rfc/rfc8705#section-3

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use sha2::{Digest, Sha256};

use crate::b64;
use crate::error::{Error, Result};

/// The longest XFCC header parsed (bytes); a chain of a few certificates fits.
pub const MAX_XFCC_LEN: usize = 64 * 1024;
/// The most elements (hops) parsed in one XFCC header.
pub const MAX_XFCC_ELEMENTS: usize = 16;

/// An `x5t#S256` certificate thumbprint: SHA-256 of the DER certificate.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct X5tS256([u8; 32]);

impl X5tS256 {
    /// The thumbprint of a DER-encoded certificate.
    ///
    /// The DER is hashed as given; it is not parsed. Whoever presents it (the TLS stack, the
    /// front proxy) has already validated the certificate chain.
    pub fn from_der(der: &[u8]) -> Self {
        X5tS256(Sha256::digest(der).into())
    }

    /// The thumbprint of the first `CERTIFICATE` block of a PEM document.
    ///
    /// # Errors
    /// [`Error::InvalidCertificate`] if there is no well-formed `CERTIFICATE` block.
    pub fn from_pem(pem: &str) -> Result<Self> {
        let first = pem_certificates(pem)?.into_iter().next();
        first
            .map(|der| Self::from_der(&der))
            .ok_or(Error::InvalidCertificate { what: "PEM" })
    }

    /// From Envoy's `connection.sha256_peer_certificate_digest` (or an XFCC `Hash`): 64 hex
    /// digits of the SHA-256 of the DER certificate.
    ///
    /// # Errors
    /// [`Error::InvalidCertificate`] unless it is exactly 64 hex digits.
    pub fn from_hex_digest(hex: &str) -> Result<Self> {
        let bad = Error::InvalidCertificate { what: "hex digest" };
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return Err(bad);
        }
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            let s = core::str::from_utf8(pair).map_err(|_| bad.clone())?;
            if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad);
            }
            *o = u8::from_str_radix(s, 16).map_err(|_| bad.clone())?;
        }
        Ok(X5tS256(out))
    }

    /// Parses the base64url value of a `cnf` `x5t#S256` member.
    ///
    /// # Errors
    /// [`Error::Malformed`] (part `AccessToken`) unless strict base64url of 32 bytes.
    pub fn parse_cnf(s: &str) -> Result<Self> {
        let bad = Error::Malformed {
            part: crate::error::Part::AccessToken,
            what: "cnf.x5t#S256",
        };
        b64::decode(s)
            .map_err(|_| bad.clone())?
            .try_into()
            .map(X5tS256)
            .map_err(|_| bad)
    }

    /// The SHA-256 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for X5tS256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&b64::encode(&self.0))
    }
}

impl fmt::Debug for X5tS256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "X5tS256({self})")
    }
}

/// The DER of every `CERTIFICATE` block of a PEM document, in order.
///
/// # Errors
/// [`Error::InvalidCertificate`] if there is none, or a block is unterminated, empty or not
/// base64.
pub fn pem_certificates(pem: &str) -> Result<Vec<Vec<u8>>> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let bad = Error::InvalidCertificate { what: "PEM" };
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let body = rest.get(start + BEGIN.len()..).ok_or(bad.clone())?;
        let end = body.find(END).ok_or(bad.clone())?;
        let der = b64::decode_pem_body(body.get(..end).ok_or(bad.clone())?).map_err(|_| bad.clone())?;
        if der.is_empty() {
            return Err(bad);
        }
        out.push(der);
        rest = body.get(end + END.len()..).ok_or(bad.clone())?;
    }
    if out.is_empty() {
        return Err(bad);
    }
    Ok(out)
}

/// The certificate in an RFC 9440 `Client-Cert` header: one structured-field byte sequence
/// (`:base64 DER:`, RFC 8941 §3.3.5), without parameters.
///
/// # Errors
/// [`Error::InvalidCertificate`] if the value is not exactly one non-empty byte sequence.
pub fn client_cert_header(value: &str) -> Result<Vec<u8>> {
    sf_bytes(value.trim_matches(' '))
}

/// The certificates in an RFC 9440 `Client-Cert-Chain` header: a structured-field list of byte
/// sequences, in the order given (the issuer of the `Client-Cert` first).
///
/// # Errors
/// [`Error::InvalidCertificate`] if a member is not a non-empty byte sequence, or there are
/// more than [`MAX_XFCC_ELEMENTS`].
pub fn client_cert_chain_header(value: &str) -> Result<Vec<Vec<u8>>> {
    let members: Vec<&str> = value.split(',').map(|m| m.trim_matches([' ', '\t'])).collect();
    if members.len() > MAX_XFCC_ELEMENTS {
        return Err(Error::InvalidCertificate {
            what: "Client-Cert-Chain has too many certificates",
        });
    }
    members.into_iter().map(sf_bytes).collect()
}

fn sf_bytes(item: &str) -> Result<Vec<u8>> {
    let bad = Error::InvalidCertificate {
        what: "not a structured-field byte sequence",
    };
    let inner = item
        .strip_prefix(':')
        .and_then(|s| s.strip_suffix(':'))
        .ok_or(bad.clone())?;
    if inner.is_empty()
        || !inner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    {
        return Err(bad);
    }
    b64::decode_pem_body(inner).map_err(|_| bad)
}

/// One element (one hop) of an XFCC header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct XfccElement {
    /// `By`: the URI SAN of the proxy that appended this element.
    pub by: Option<String>,
    /// `Hash`: hex SHA-256 of the client's DER certificate.
    pub hash: Option<String>,
    /// `Cert`: the client certificate as PEM (already percent-decoded).
    pub cert: Option<String>,
    /// `Chain`: the client certificate chain as PEM (already percent-decoded).
    pub chain: Option<String>,
    /// `Subject`: the certificate's subject DN.
    pub subject: Option<String>,
    /// `URI`: URI SANs of the certificate.
    pub uri: Vec<String>,
    /// `DNS`: DNS SANs of the certificate.
    pub dns: Vec<String>,
}

impl XfccElement {
    /// The thumbprint of the client certificate this element describes, from `Hash` or `Cert`.
    ///
    /// # Errors
    /// [`Error::InvalidCertificate`] if neither is present or malformed, or if both are present and
    /// disagree.
    pub fn thumbprint(&self) -> Result<X5tS256> {
        let from_hash = self.hash.as_deref().map(X5tS256::from_hex_digest).transpose()?;
        let from_cert = self.cert.as_deref().map(X5tS256::from_pem).transpose()?;
        match (from_hash, from_cert) {
            (Some(h), Some(c)) if h != c => Err(Error::InvalidCertificate {
                what: "XFCC Hash and Cert disagree",
            }),
            (Some(t), _) | (None, Some(t)) => Ok(t),
            (None, None) => Err(Error::InvalidCertificate {
                what: "XFCC element has no Hash or Cert",
            }),
        }
    }

    /// The client's certificate chain as DER, leaf first: `Chain` (which Envoy writes with the
    /// leaf first) when present, else `Cert` alone.
    ///
    /// # Errors
    /// [`Error::InvalidCertificate`] if neither is present, either is malformed, or `Chain` does
    /// not start with `Cert`.
    pub fn certificates(&self) -> Result<Vec<Vec<u8>>> {
        let cert = self.cert.as_deref().map(pem_certificates).transpose()?;
        let chain = self.chain.as_deref().map(pem_certificates).transpose()?;
        match (cert, chain) {
            (Some(c), Some(chain)) if c.first() != chain.first() => Err(Error::InvalidCertificate {
                what: "XFCC Chain does not start with Cert",
            }),
            (_, Some(chain)) => Ok(chain),
            (Some(c), None) => Ok(c.into_iter().take(1).collect()),
            (None, None) => Err(Error::InvalidCertificate {
                what: "XFCC element has no Cert",
            }),
        }
    }
}

/// A parsed XFCC header: its elements, oldest hop first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xfcc {
    elements: Vec<XfccElement>,
}

/// Which XFCC element to trust.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XfccPolicy {
    /// The element to use, counted from the last (0 = the element appended by the nearest proxy;
    /// with a `SANITIZE_SET` front proxy there is exactly one).
    pub element_from_end: usize,
    /// If set, the chosen element's `By` must equal this.
    pub expected_by: Option<String>,
}

impl Xfcc {
    /// Parses an XFCC header value.
    ///
    /// # Errors
    /// [`Error::InvalidCertificate`] for an unterminated quote, a pair without `=`, an unknown key,
    /// a repeated single-valued key, a bad percent-encoding, an empty header, or more than
    /// [`MAX_XFCC_ELEMENTS`] elements or [`MAX_XFCC_LEN`] bytes.
    pub fn parse(header: &str) -> Result<Self> {
        let bad = |what| Error::InvalidCertificate { what };
        if header.len() > MAX_XFCC_LEN {
            return Err(bad("XFCC too long"));
        }
        let mut elements = Vec::new();
        let mut element = XfccElement::default();
        let mut rest = header.trim_start();
        if rest.is_empty() {
            return Err(bad("empty XFCC"));
        }
        loop {
            // key
            let eq = rest.find('=').ok_or(bad("XFCC pair without '='"))?;
            let (key, after) = rest.split_at(eq);
            let key = key.trim();
            let after = after.get(1..).unwrap_or("");
            // value: quoted or bare
            let (value, after) = if let Some(q) = after.strip_prefix('"') {
                let mut v = String::new();
                let mut chars = q.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some((_, e)) => v.push(e),
                            None => break,
                        },
                        '"' => {
                            end = Some(i + 1);
                            break;
                        }
                        c => v.push(c),
                    }
                }
                let end = end.ok_or(bad("unterminated quote in XFCC"))?;
                (v, q.get(end..).unwrap_or(""))
            } else {
                let stop = after.find([';', ',']).unwrap_or(after.len());
                let (v, a) = after.split_at(stop);
                (String::from(v.trim()), a)
            };
            set_field(&mut element, key, value)?;
            let after = after.trim_start();
            match after.chars().next() {
                None => {
                    elements.push(element);
                    break;
                }
                Some(';') => rest = after.get(1..).unwrap_or("").trim_start(),
                Some(',') => {
                    elements.push(core::mem::take(&mut element));
                    if elements.len() >= MAX_XFCC_ELEMENTS {
                        return Err(bad("too many XFCC elements"));
                    }
                    rest = after.get(1..).unwrap_or("").trim_start();
                }
                Some(_) => return Err(bad("garbage after XFCC value")),
            }
            if rest.is_empty() {
                return Err(bad("XFCC ends with a separator"));
            }
        }
        Ok(Xfcc { elements })
    }

    /// The elements, oldest hop first.
    pub fn elements(&self) -> &[XfccElement] {
        &self.elements
    }

    /// The element the policy trusts.
    ///
    /// # Errors
    /// [`Error::InvalidCertificate`] if there is no such element or its `By` is not the expected one.
    pub fn select(&self, policy: &XfccPolicy) -> Result<&XfccElement> {
        let idx = self
            .elements
            .len()
            .checked_sub(policy.element_from_end + 1)
            .ok_or(Error::InvalidCertificate {
                what: "XFCC has fewer elements than trusted hops",
            })?;
        let el = self
            .elements
            .get(idx)
            .ok_or(Error::InvalidCertificate { what: "XFCC element" })?;
        if let Some(by) = &policy.expected_by
            && el.by.as_deref() != Some(by.as_str())
        {
            return Err(Error::InvalidCertificate {
                what: "XFCC By is not the trusted proxy",
            });
        }
        Ok(el)
    }

    /// Parses a header and returns the thumbprint of the certificate in the trusted element.
    ///
    /// # Errors
    /// As [`Xfcc::parse`], [`Xfcc::select`] and [`XfccElement::thumbprint`].
    pub fn thumbprint(header: &str, policy: &XfccPolicy) -> Result<X5tS256> {
        Xfcc::parse(header)?.select(policy)?.thumbprint()
    }
}

fn set_field(el: &mut XfccElement, key: &str, value: String) -> Result<()> {
    let bad = |what| Error::InvalidCertificate { what };
    let once = |slot: &mut Option<String>, v: String| {
        if slot.replace(v).is_some() {
            Err(bad("repeated XFCC key"))
        } else {
            Ok(())
        }
    };
    match key.to_ascii_lowercase().as_str() {
        "by" => once(&mut el.by, value),
        "hash" => once(&mut el.hash, value),
        "cert" => once(&mut el.cert, percent_decode(&value)?),
        "chain" => once(&mut el.chain, percent_decode(&value)?),
        "subject" => once(&mut el.subject, value),
        "uri" => {
            el.uri.push(value);
            Ok(())
        }
        "dns" => {
            el.dns.push(value);
            Ok(())
        }
        _ => Err(bad("unknown XFCC key")),
    }
}

fn percent_decode(s: &str) -> Result<String> {
    let bad = Error::InvalidCertificate {
        what: "XFCC percent-encoding",
    };
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or(bad.clone())?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad);
            }
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad.clone())?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_documentation_examples_parse() {
        let x = Xfcc::parse(r#"By=http://frontend.lyft.com;Hash=468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688;Subject="/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client";URI=http://testclient.lyft.com"#).unwrap();
        let e = x.elements().first().unwrap();
        assert_eq!(e.by.as_deref(), Some("http://frontend.lyft.com"));
        assert_eq!(
            e.subject.as_deref(),
            Some("/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client")
        );
        assert_eq!(e.uri, ["http://testclient.lyft.com"]);

        let x = Xfcc::parse(r#"By=http://frontend.lyft.com;Hash=468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688;URI=http://testclient.lyft.com,By=http://backend.lyft.com;Hash=9ba61d6425303443c0748a02dd8de688468ed33be74eee6556d90c0149c1309e;URI=http://frontend.lyft.com"#).unwrap();
        assert_eq!(x.elements().len(), 2);
        let last = x.select(&XfccPolicy::default()).unwrap();
        assert_eq!(last.by.as_deref(), Some("http://backend.lyft.com"));
        let first = x
            .select(&XfccPolicy {
                element_from_end: 1,
                expected_by: None,
            })
            .unwrap();
        assert_eq!(first.by.as_deref(), Some("http://frontend.lyft.com"));

        let x = Xfcc::parse(r#"By=http://frontend.lyft.com;Hash=468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688;Subject="CN=Test, O=\"Lyft; Inc\"";URI=;DNS=lyft.com;DNS=www.lyft.com"#).unwrap();
        let e = x.elements().first().unwrap();
        assert_eq!(e.subject.as_deref(), Some(r#"CN=Test, O="Lyft; Inc""#));
        assert_eq!(e.dns, ["lyft.com", "www.lyft.com"]);
        assert_eq!(e.uri, [""]);
    }

    #[test]
    fn cert_is_percent_decoded_and_hashed_like_der() {
        let der = [0x30u8, 0x03, 0x02, 0x01, 0x01];
        let pem = alloc::format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            "MAMCAQE="
        );
        let encoded: String = pem
            .bytes()
            .map(|b| match b {
                b'\n' => "%0A".into(),
                b'=' => "%3D".into(),
                b' ' => "%20".into(),
                b => String::from(char::from(b)),
            })
            .collect();
        let header = alloc::format!("By=spiffe://front;Cert=\"{encoded}\"");
        let t = Xfcc::thumbprint(
            &header,
            &XfccPolicy {
                element_from_end: 0,
                expected_by: Some("spiffe://front".into()),
            },
        )
        .unwrap();
        assert_eq!(t, X5tS256::from_der(&der));
        let hex: String = X5tS256::from_der(&der)
            .as_bytes()
            .iter()
            .map(|b| alloc::format!("{b:02x}"))
            .collect();
        assert_eq!(X5tS256::from_hex_digest(&hex).unwrap(), t);
        assert_eq!(X5tS256::from_hex_digest(&hex.to_ascii_uppercase()).unwrap(), t);
        // Hash and Cert together must agree
        let both = alloc::format!("Hash={hex};Cert=\"{encoded}\"");
        assert_eq!(Xfcc::thumbprint(&both, &XfccPolicy::default()).unwrap(), t);
        let wrong = alloc::format!("Hash={};Cert=\"{encoded}\"", "0".repeat(64));
        assert!(Xfcc::thumbprint(&wrong, &XfccPolicy::default()).is_err());
    }

    #[test]
    fn untrusted_or_malformed_xfcc_is_refused() {
        let h = "By=spiffe://evil;Hash=468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688";
        let policy = XfccPolicy {
            element_from_end: 0,
            expected_by: Some("spiffe://front".into()),
        };
        assert!(Xfcc::thumbprint(h, &policy).is_err());
        assert!(
            Xfcc::thumbprint(
                h,
                &XfccPolicy {
                    element_from_end: 1,
                    expected_by: None
                }
            )
            .is_err()
        );
        for bad in [
            "",
            "By",
            "Subject=\"unterminated",
            "Hash=ab;Hash=cd",
            "Foo=bar",
            "Cert=%zz",
            "Hash=abc",
            "By=x;",
            "By=x,",
            "Subject=\"a\"junk",
            "URI=a",
        ] {
            assert!(Xfcc::thumbprint(bad, &XfccPolicy::default()).is_err(), "{bad}");
        }
        let many =
            ["Hash=468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688"; MAX_XFCC_ELEMENTS + 1].join(",");
        assert!(Xfcc::parse(&many).is_err());
    }

    #[test]
    fn cnf_and_digest_formats_are_strict() {
        assert!(X5tS256::from_hex_digest("zz").is_err());
        assert!(X5tS256::from_hex_digest(&"g".repeat(64)).is_err());
        assert!(X5tS256::from_hex_digest(&"+1".repeat(32)).is_err());
        assert!(X5tS256::parse_cnf("AAAA").is_err());
        assert!(X5tS256::from_pem("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----").is_err());
        assert!(X5tS256::from_pem("no pem here").is_err());
    }

    fn pem(blocks: &[&[u8]]) -> String {
        blocks
            .iter()
            .map(|der| {
                let b = b64::encode(der).replace('-', "+").replace('_', "/");
                let pad = "=".repeat((4 - b.len() % 4) % 4);
                alloc::format!("-----BEGIN CERTIFICATE-----\n{b}{pad}\n-----END CERTIFICATE-----\n")
            })
            .collect()
    }

    fn sf(der: &[u8]) -> String {
        let b = b64::encode(der).replace('-', "+").replace('_', "/");
        let pad = "=".repeat((4 - b.len() % 4) % 4);
        alloc::format!(":{b}{pad}:")
    }

    #[test]
    fn pem_documents_give_every_certificate_in_order() {
        let doc = pem(&[b"leaf-der", b"intermediate"]);
        assert_eq!(
            pem_certificates(&doc).unwrap(),
            [b"leaf-der".to_vec(), b"intermediate".to_vec()]
        );
        assert!(pem_certificates("nothing").is_err());
        assert!(
            pem_certificates("-----BEGIN CERTIFICATE-----\nAAAA").is_err(),
            "unterminated"
        );
        assert_eq!(X5tS256::from_pem(&doc).unwrap(), X5tS256::from_der(b"leaf-der"));
    }

    #[test]
    fn rfc9440_headers_are_byte_sequences_and_anything_else_is_refused() {
        assert_eq!(client_cert_header(&sf(b"leaf")).unwrap(), b"leaf");
        assert_eq!(
            client_cert_header(&alloc::format!(" {} ", sf(b"leaf"))).unwrap(),
            b"leaf"
        );
        let chain = alloc::format!("{}, {}", sf(b"ca1"), sf(b"ca2"));
        assert_eq!(
            client_cert_chain_header(&chain).unwrap(),
            [b"ca1".to_vec(), b"ca2".to_vec()]
        );
        for bad in [
            "",
            "::",
            "bGVhZg==",
            ":bGVhZg==",
            ":bGVh Zg==:",
            ":bGVhZg==:;p=1",
            ":bGVhZg-_:",
            ":***:",
        ] {
            assert!(client_cert_header(bad).is_err(), "{bad}");
        }
        assert!(client_cert_chain_header(&alloc::format!("{},", sf(b"x"))).is_err());
        let many = alloc::vec![sf(b"x"); MAX_XFCC_ELEMENTS + 1].join(",");
        assert!(client_cert_chain_header(&many).is_err());
    }

    #[test]
    fn xfcc_certificates_prefer_the_chain_and_it_must_start_with_the_leaf() {
        let el = |cert: Option<String>, chain: Option<String>| XfccElement {
            cert,
            chain,
            ..XfccElement::default()
        };
        let leaf = pem(&[b"leaf"]);
        let chain = pem(&[b"leaf", b"ca"]);
        assert_eq!(el(Some(leaf.clone()), None).certificates().unwrap(), [b"leaf".to_vec()]);
        assert_eq!(
            el(Some(leaf.clone()), Some(chain.clone())).certificates().unwrap(),
            [b"leaf".to_vec(), b"ca".to_vec()]
        );
        assert_eq!(el(None, Some(chain)).certificates().unwrap().len(), 2);
        assert!(el(Some(leaf), Some(pem(&[b"other", b"ca"]))).certificates().is_err());
        assert!(el(None, None).certificates().is_err());
    }
}
