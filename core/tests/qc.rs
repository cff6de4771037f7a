//! PSD2 attributes read from real X.509 certificates (built with rcgen, as a CA would issue them).
#![allow(clippy::unwrap_used, reason = "tests")]

use keybound_core::qc::{
    ORGANIZATION_IDENTIFIER_ARCS, PspRole, QC_STATEMENTS_ARCS, encode_psd2_qc_statements, psd2_from_certificate,
};
use rcgen::{CertificateParams, CustomExtension, DnType, KeyPair};

fn certificate(statements: Option<Vec<u8>>, org_id: Option<&str>) -> Vec<u8> {
    let mut params = CertificateParams::new(vec!["tpp.example".into()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "Example TPP");
    if let Some(id) = org_id {
        params
            .distinguished_name
            .push(DnType::CustomDnType(ORGANIZATION_IDENTIFIER_ARCS.to_vec()), id);
    }
    if let Some(value) = statements {
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(&QC_STATEMENTS_ARCS, value));
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    params.self_signed(&key).unwrap().der().to_vec()
}

#[test]
fn roles_authority_and_organisation_come_from_the_certificate() {
    let der = certificate(
        Some(encode_psd2_qc_statements(
            &[PspRole::PaymentInitiation, PspRole::AccountInformation],
            "Financial Conduct Authority",
            "GB-FCA",
        )),
        Some("PSDGB-FCA-123456"),
    );
    let a = psd2_from_certificate(&der).unwrap().unwrap();
    assert!(a.has(PspRole::PaymentInitiation) && a.has(PspRole::AccountInformation));
    assert!(!a.has(PspRole::AccountServicing));
    assert_eq!(a.nca_name, "Financial Conduct Authority");
    assert_eq!(a.nca_id, "GB-FCA");
    assert_eq!(a.organization_identifier.as_deref(), Some("PSDGB-FCA-123456"));
}

#[test]
fn a_certificate_without_psd2_statements_has_no_attributes() {
    assert_eq!(psd2_from_certificate(&certificate(None, None)).unwrap(), None);
    assert_eq!(
        psd2_from_certificate(&certificate(None, Some("PSDGB-FCA-1"))).unwrap(),
        None
    );
}

#[test]
fn malformed_statements_and_certificates_are_refused() {
    // The extension holds something that is not a SEQUENCE OF QCStatement.
    let bad = certificate(Some(vec![0x04, 0x01, 0x00]), None);
    assert!(psd2_from_certificate(&bad).is_err());
    // A truncated certificate, trailing bytes, not DER at all.
    let good = certificate(
        Some(encode_psd2_qc_statements(&[PspRole::AccountServicing], "N", "I")),
        None,
    );
    assert!(psd2_from_certificate(&good[..good.len() - 1]).is_err());
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(psd2_from_certificate(&trailing).is_err());
    assert!(psd2_from_certificate(b"not a certificate").is_err());
}

/// A certificate OpenSSL made (`openssl req -x509 -subj "/CN=Example TPP/organizationIdentifier=
/// PSDGB-FCA-123456" -addext "1.3.6.1.5.5.7.1.3=DER:…"`, the fuzz seed), read the same way.
#[test]
fn a_certificate_from_openssl_reads_the_same() {
    let der = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/seeds/qc/certificate-psd2.der"
    ))
    .unwrap();
    let a = psd2_from_certificate(&der).unwrap().unwrap();
    assert_eq!(a.roles, [PspRole::PaymentInitiation, PspRole::AccountInformation]);
    assert_eq!(
        (a.nca_name.as_str(), a.nca_id.as_str()),
        ("Financial Conduct Authority", "GB-FCA")
    );
    assert_eq!(a.organization_identifier.as_deref(), Some("PSDGB-FCA-123456"));
}
