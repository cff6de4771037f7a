//! Behind a TLS-terminating proxy (`[trusted_proxy]`): a plain-HTTP listener that only the
//! configured proxy addresses may connect to, taking the client certificate the proxy verified
//! from the header the configuration names, and the client's address from the last
//! `X-Forwarded-For` entry (the one the proxy appended).
//!
//! The certificate then serves exactly as one presented over this server's own TLS:
//! `tls_client_auth` (chain checked against `tls.client_ca`), `self_signed_tls_client_auth`, and
//! certificate-bound tokens. On the TLS listener these headers are never read.
//!
//! - `xfcc`: Envoy's `x-forwarded-client-cert`, last element, with `Cert` (and `Chain`): Envoy
//!   needs `forward_client_cert_details: SANITIZE_SET` and `set_current_client_cert_details:
//!   { cert: true, chain: true }`.
//! - `client-cert`: RFC 9440 `Client-Cert` and `Client-Cert-Chain`.
//!
//! A header that is present but malformed is refused with 400 `invalid_request`: the proxy is
//! misconfigured, and guessing would be worse.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keybound_core::cert::{Xfcc, XfccPolicy, client_cert_chain_header, client_cert_header};
use rustls::pki_types::CertificateDer;

use crate::config::CertHeader;
use crate::error::OAuthError;
use crate::http::ClientAddr;
use crate::tls::PeerCerts;

/// Envoy's client certificate header.
pub const XFCC: &str = "x-forwarded-client-cert";
/// RFC 9440's client certificate header.
pub const CLIENT_CERT: &str = "client-cert";
/// RFC 9440's chain header.
pub const CLIENT_CERT_CHAIN: &str = "client-cert-chain";

/// Whether a connection from `peer` may use the proxy listener.
pub fn trusted(addresses: &[IpAddr], peer: IpAddr) -> bool {
    let peer = peer.to_canonical();
    addresses.iter().any(|a| a.to_canonical() == peer)
}

/// The client certificate chain (leaf first) the proxy forwarded, `None` without one.
///
/// # Errors
/// `invalid_request` if the header is repeated or malformed.
pub fn peer_certs(kind: CertHeader, headers: &HeaderMap) -> Result<PeerCerts, OAuthError> {
    let one = |name: &str| -> Result<Option<&str>, OAuthError> {
        let mut values = headers.get_all(name).iter();
        let first = values.next();
        if values.next().is_some() {
            return Err(OAuthError::invalid_request(format!("{name} repeated")));
        }
        first
            .map(|v| {
                v.to_str()
                    .map_err(|_| OAuthError::invalid_request(format!("{name} is not text")))
            })
            .transpose()
    };
    let bad = |name: &str, e: keybound_core::Error| OAuthError::invalid_request(format!("{name}: {}", e.reason()));
    let ders: Vec<Vec<u8>> = match kind {
        CertHeader::Xfcc => {
            let Some(value) = one(XFCC)? else {
                return Ok(PeerCerts(None));
            };
            let xfcc = Xfcc::parse(value).map_err(|e| bad(XFCC, e))?;
            let element = xfcc.select(&XfccPolicy::default()).map_err(|e| bad(XFCC, e))?;
            element.certificates().map_err(|e| bad(XFCC, e))?
        }
        CertHeader::ClientCert => {
            let Some(leaf) = one(CLIENT_CERT)? else {
                if one(CLIENT_CERT_CHAIN)?.is_some() {
                    return Err(OAuthError::invalid_request("client-cert-chain without client-cert"));
                }
                return Ok(PeerCerts(None));
            };
            let mut ders = vec![client_cert_header(leaf).map_err(|e| bad(CLIENT_CERT, e))?];
            if let Some(chain) = one(CLIENT_CERT_CHAIN)? {
                ders.extend(client_cert_chain_header(chain).map_err(|e| bad(CLIENT_CERT_CHAIN, e))?);
            }
            ders
        }
    };
    Ok(PeerCerts(Some(Arc::new(
        ders.into_iter().map(CertificateDer::from).collect(),
    ))))
}

/// The client's address: the last `X-Forwarded-For` entry (appended by the proxy), else the
/// proxy's own address.
pub fn client_addr(headers: &HeaderMap, proxy: IpAddr) -> IpAddr {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(proxy)
}

/// Middleware of the proxy listener: replaces the connection's (empty) certificate and the proxy's
/// address by what the proxy forwarded.
pub async fn from_proxy(kind: CertHeader, proxy: IpAddr, mut req: Request, next: Next) -> Response {
    match peer_certs(kind, req.headers()) {
        Ok(certs) => {
            let addr = client_addr(req.headers(), proxy);
            req.extensions_mut().insert(certs);
            req.extensions_mut().insert(ClientAddr(addr));
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_configured_addresses_are_trusted_v4_mapped_included() {
        let list = ["127.0.0.2".parse().unwrap()];
        assert!(trusted(&list, "127.0.0.2".parse().unwrap()));
        assert!(trusted(&list, "::ffff:127.0.0.2".parse().unwrap()));
        assert!(!trusted(&list, "127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn client_cert_headers_give_the_chain_and_malformed_ones_are_refused() {
        let h = headers(&[("client-cert", ":bGVhZg==:"), ("client-cert-chain", ":Y2E=:")]);
        let certs = peer_certs(CertHeader::ClientCert, &h).unwrap();
        let chain = certs.0.unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[0].as_ref(), b"leaf");
        assert!(
            peer_certs(CertHeader::ClientCert, &HeaderMap::new())
                .unwrap()
                .0
                .is_none()
        );
        for bad in [
            headers(&[("client-cert", "bGVhZg==")]),
            headers(&[("client-cert", ":bGVhZg==:"), ("client-cert", ":bGVhZg==:")]),
            headers(&[("client-cert-chain", ":Y2E=:")]),
        ] {
            let e = peer_certs(CertHeader::ClientCert, &bad).unwrap_err();
            assert_eq!(e.code, crate::error::Code::InvalidRequest);
        }
        // The other header kind is not read.
        assert!(peer_certs(CertHeader::Xfcc, &h).unwrap().0.is_none());
        let e = peer_certs(CertHeader::Xfcc, &headers(&[(XFCC, "Hash=00")])).unwrap_err();
        assert_eq!(e.code, crate::error::Code::InvalidRequest);
    }

    #[test]
    fn the_client_address_is_the_last_forwarded_entry() {
        let proxy: IpAddr = "127.0.0.2".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "203.0.113.9, 198.51.100.7")]);
        assert_eq!(client_addr(&h, proxy), "198.51.100.7".parse::<IpAddr>().unwrap());
        assert_eq!(client_addr(&HeaderMap::new(), proxy), proxy);
        assert_eq!(client_addr(&headers(&[("x-forwarded-for", "junk")]), proxy), proxy);
    }
}
