//! PSD2 attributes of a qualified website-authentication or seal certificate ([ETSI TS 119 495]):
//! the roles of the payment service provider, the competent authority (NCA) that licensed it, and
//! its organisation identifier.
//!
//! The roles are a QCStatement (`id-etsi-psd2-qcStatement`, 0.4.0.19495.2) in the certificate's
//! QCStatements extension (RFC 3739, 1.3.6.1.5.5.7.1.3):
//!
//! ```text
//! PSD2QcType ::= SEQUENCE { rolesOfPSP RolesOfPSP, nCAName NCAName, nCAId NCAId }
//! RolesOfPSP ::= SEQUENCE OF RoleOfPSP
//! RoleOfPSP  ::= SEQUENCE { roleOfPspOid RoleOfPspOid, roleOfPspName RoleOfPspName }
//! NCAName, NCAId, RoleOfPspName ::= UTF8String (SIZE (1..256))
//! ```
//!
//! The organisation identifier is the subject's `organizationIdentifier` (2.5.4.97), e.g.
//! `PSDGB-FCA-123456`. Parsing is strict DER: a wrong tag, a bad length, trailing bytes, a role
//! whose OID and name disagree, an unknown role, no role, an empty or over-long string, or the
//! statement or extension twice are refused with [`Error::InvalidCertificate`] naming what is
//! wrong. Which roles a client or route needs is the caller's policy.
//!
//! The certificate's signature and chain are not checked here: whoever presents the DER (the
//! TLS stack, a trusted proxy) has validated it.
//!
//! [ETSI TS 119 495]: https://www.etsi.org/deliver/etsi_ts/119400_119499/119495/

use alloc::string::String;
use alloc::vec::Vec;

use crate::error::{Error, Result};

/// OID 1.3.6.1.5.5.7.1.3, `id-pe-qcStatements` (RFC 3739).
const QC_STATEMENTS: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x03];
/// OID 0.4.0.19495.2, `id-etsi-psd2-qcStatement`.
const PSD2_STATEMENT: &[u8] = &[0x04, 0x00, 0x81, 0x98, 0x27, 0x02];
/// OID 2.5.4.97, `organizationIdentifier`.
const ORGANIZATION_IDENTIFIER: &[u8] = &[0x55, 0x04, 0x61];
/// The longest string TS 119 495 allows.
const MAX_STRING: usize = 256;

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const UTF8_STRING: u8 = 0x0c;
const PRINTABLE_STRING: u8 = 0x13;
const OCTET_STRING: u8 = 0x04;
const BOOLEAN: u8 = 0x01;

/// A PSD2 role of a payment service provider (TS 119 495 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PspRole {
    /// `PSP_AS`: account servicing (a bank holding the account).
    AccountServicing,
    /// `PSP_PI`: payment initiation.
    PaymentInitiation,
    /// `PSP_AI`: account information.
    AccountInformation,
    /// `PSP_IC`: issuing of card-based payment instruments.
    IssuingCardBased,
}

impl PspRole {
    /// Every role, in TS 119 495's order.
    pub const ALL: [PspRole; 4] = [
        PspRole::AccountServicing,
        PspRole::PaymentInitiation,
        PspRole::AccountInformation,
        PspRole::IssuingCardBased,
    ];

    /// The role's name (`PSP_PI`).
    pub fn name(self) -> &'static str {
        match self {
            PspRole::AccountServicing => "PSP_AS",
            PspRole::PaymentInitiation => "PSP_PI",
            PspRole::AccountInformation => "PSP_AI",
            PspRole::IssuingCardBased => "PSP_IC",
        }
    }

    /// The role named `name` (`PSP_PI`), if it is one.
    pub fn from_name(name: &str) -> Option<PspRole> {
        PspRole::ALL.into_iter().find(|r| r.name() == name)
    }

    /// The content octets of the role's OID (0.4.0.19495.1.N).
    fn oid(self) -> [u8; 7] {
        let n = match self {
            PspRole::AccountServicing => 1,
            PspRole::PaymentInitiation => 2,
            PspRole::AccountInformation => 3,
            PspRole::IssuingCardBased => 4,
        };
        [0x04, 0x00, 0x81, 0x98, 0x27, 0x01, n]
    }
}

/// The PSD2 attributes of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Psd2Attributes {
    /// The provider's roles, as listed (at least one, no repeats).
    pub roles: Vec<PspRole>,
    /// The competent authority's name (`nCAName`), e.g. `Financial Conduct Authority`.
    pub nca_name: String,
    /// The competent authority's identifier (`nCAId`), e.g. `GB-FCA`.
    pub nca_id: String,
    /// The subject's `organizationIdentifier`, if present.
    pub organization_identifier: Option<String>,
}

impl Psd2Attributes {
    /// Whether the certificate grants `role`.
    pub fn has(&self, role: PspRole) -> bool {
        self.roles.contains(&role)
    }
}

fn bad(what: &'static str) -> Error {
    Error::InvalidCertificate { what }
}

/// A DER reader over a byte slice: one tag-length-value at a time.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The next element's tag, without consuming it.
    fn peek(&self) -> Option<u8> {
        self.0.first().copied()
    }

    /// The next element: its tag and content. Low tag numbers only; definite, minimal lengths.
    fn next(&mut self, what: &'static str) -> Result<(u8, &'a [u8])> {
        let (&tag, rest) = self.0.split_first().ok_or(bad(what))?;
        if tag & 0x1f == 0x1f {
            return Err(bad(what));
        }
        let (&first, mut rest) = rest.split_first().ok_or(bad(what))?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return Err(bad(what));
            }
            let (bytes, after) = rest.split_at_checked(n).ok_or(bad(what))?;
            rest = after;
            let len = bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            // Minimal: no leading zero byte, and the long form only from 128.
            if bytes.first() == Some(&0) || len < 0x80 {
                return Err(bad(what));
            }
            len
        };
        let (content, after) = rest.split_at_checked(len).ok_or(bad(what))?;
        self.0 = after;
        Ok((tag, content))
    }

    /// The next element, which must have tag `tag`.
    fn expect(&mut self, tag: u8, what: &'static str) -> Result<&'a [u8]> {
        match self.next(what)? {
            (t, content) if t == tag => Ok(content),
            _ => Err(bad(what)),
        }
    }

    /// Skips the next element if it has tag `tag`.
    fn skip_if(&mut self, tag: u8, what: &'static str) -> Result<()> {
        if self.peek() == Some(tag) {
            self.next(what)?;
        }
        Ok(())
    }

    fn end(&self, what: &'static str) -> Result<()> {
        if self.is_empty() { Ok(()) } else { Err(bad(what)) }
    }
}

fn utf8(content: &[u8], what: &'static str) -> Result<String> {
    let s = core::str::from_utf8(content).map_err(|_| bad(what))?;
    if s.is_empty() || s.chars().count() > MAX_STRING {
        return Err(bad(what));
    }
    Ok(String::from(s))
}

/// The PSD2 attributes of a DER certificate: `None` when it has no QCStatements extension or no
/// PSD2 statement in it.
///
/// # Errors
/// [`Error::InvalidCertificate`] if the certificate's structure, the QCStatements extension or
/// the PSD2 statement is malformed (see the module documentation).
pub fn psd2_from_certificate(der: &[u8]) -> Result<Option<Psd2Attributes>> {
    let mut outer = Der(der);
    let cert = outer.expect(SEQUENCE, "certificate is not a DER SEQUENCE")?;
    outer.end("bytes after the certificate")?;
    let mut cert = Der(cert);
    let tbs = cert.expect(SEQUENCE, "certificate has no tbsCertificate")?;
    let mut tbs = Der(tbs);
    tbs.skip_if(0xa0, "certificate version")?;
    tbs.expect(0x02, "certificate serial number")?;
    tbs.expect(SEQUENCE, "certificate signature algorithm")?;
    tbs.expect(SEQUENCE, "certificate issuer")?;
    tbs.expect(SEQUENCE, "certificate validity")?;
    let subject = tbs.expect(SEQUENCE, "certificate subject")?;
    tbs.expect(SEQUENCE, "certificate public key")?;
    tbs.skip_if(0x81, "certificate issuerUniqueID")?;
    tbs.skip_if(0x82, "certificate subjectUniqueID")?;
    let mut statements = None;
    if tbs.peek() == Some(0xa3) {
        let wrapped = tbs.expect(0xa3, "certificate extensions")?;
        let mut wrapped = Der(wrapped);
        let extensions = wrapped.expect(SEQUENCE, "certificate extensions")?;
        wrapped.end("bytes after the extensions")?;
        let mut extensions = Der(extensions);
        while !extensions.is_empty() {
            let mut ext = Der(extensions.expect(SEQUENCE, "certificate extension")?);
            let id = ext.expect(OID, "extension id")?;
            ext.skip_if(BOOLEAN, "extension critical flag")?;
            let value = ext.expect(OCTET_STRING, "extension value")?;
            ext.end("bytes after an extension")?;
            if id == QC_STATEMENTS {
                if statements.is_some() {
                    return Err(bad("QCStatements extension repeated"));
                }
                statements = Some(value);
            }
        }
    }
    tbs.end("bytes after the certificate extensions")?;
    let Some(statements) = statements else {
        return Ok(None);
    };
    let Some((roles, nca_name, nca_id)) = parse_qc_statements(statements)? else {
        return Ok(None);
    };
    Ok(Some(Psd2Attributes {
        roles,
        nca_name,
        nca_id,
        organization_identifier: organization_identifier(subject)?,
    }))
}

/// The PSD2 statement in a QCStatements extension value (`SEQUENCE OF QCStatement`): roles,
/// NCA name and NCA id; `None` without a PSD2 statement (other statements are skipped).
///
/// # Errors
/// [`Error::InvalidCertificate`] as [`psd2_from_certificate`].
#[allow(clippy::type_complexity, reason = "the three fields of PSD2QcType")]
pub fn parse_qc_statements(value: &[u8]) -> Result<Option<(Vec<PspRole>, String, String)>> {
    let mut outer = Der(value);
    let list = outer.expect(SEQUENCE, "QCStatements is not a SEQUENCE")?;
    outer.end("bytes after QCStatements")?;
    let mut list = Der(list);
    let mut found = None;
    while !list.is_empty() {
        let mut statement = Der(list.expect(SEQUENCE, "QCStatement is not a SEQUENCE")?);
        let id = statement.expect(OID, "QCStatement id")?;
        if id != PSD2_STATEMENT {
            continue;
        }
        if found.is_some() {
            return Err(bad("PSD2 QCStatement repeated"));
        }
        let mut info = Der(statement.expect(SEQUENCE, "PSD2QcType is not a SEQUENCE")?);
        statement.end("bytes after the PSD2 QCStatement")?;
        let mut roles_der = Der(info.expect(SEQUENCE, "rolesOfPSP is not a SEQUENCE")?);
        let mut roles = Vec::new();
        while !roles_der.is_empty() {
            let mut role = Der(roles_der.expect(SEQUENCE, "RoleOfPSP is not a SEQUENCE")?);
            let oid = role.expect(OID, "roleOfPspOid")?;
            let name = utf8(role.expect(UTF8_STRING, "roleOfPspName")?, "roleOfPspName")?;
            role.end("bytes after a RoleOfPSP")?;
            let by_oid = PspRole::ALL
                .into_iter()
                .find(|r| r.oid() == oid)
                .ok_or(bad("unknown PSD2 role"))?;
            if by_oid.name() != name {
                return Err(bad("PSD2 role OID and name disagree"));
            }
            if roles.contains(&by_oid) {
                return Err(bad("PSD2 role repeated"));
            }
            roles.push(by_oid);
        }
        if roles.is_empty() {
            return Err(bad("PSD2 QCStatement has no role"));
        }
        let nca_name = utf8(info.expect(UTF8_STRING, "nCAName")?, "nCAName")?;
        let nca_id = utf8(info.expect(UTF8_STRING, "nCAId")?, "nCAId")?;
        info.end("bytes after PSD2QcType")?;
        found = Some((roles, nca_name, nca_id));
    }
    Ok(found)
}

/// The subject's `organizationIdentifier` (2.5.4.97), if present.
fn organization_identifier(subject: &[u8]) -> Result<Option<String>> {
    let mut rdns = Der(subject);
    let mut found = None;
    while !rdns.is_empty() {
        let mut set = Der(rdns.expect(SET, "subject RDN is not a SET")?);
        while !set.is_empty() {
            let mut attr = Der(set.expect(SEQUENCE, "subject attribute is not a SEQUENCE")?);
            let id = attr.expect(OID, "subject attribute type")?;
            let (tag, value) = attr.next("subject attribute value")?;
            attr.end("bytes after a subject attribute")?;
            if id == ORGANIZATION_IDENTIFIER {
                if !matches!(tag, UTF8_STRING | PRINTABLE_STRING) {
                    return Err(bad("organizationIdentifier is not a string"));
                }
                if found.is_some() {
                    return Err(bad("organizationIdentifier repeated"));
                }
                found = Some(utf8(value, "organizationIdentifier")?);
            }
        }
    }
    Ok(found)
}

/// DER of one tag-length-value.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let significant = bytes.get(skip..).unwrap_or_default();
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
    out
}

/// The DER value of a QCStatements extension holding one PSD2 statement, for a certificate
/// issuer (the demo PKI, tests): the extension's OID is 1.3.6.1.5.5.7.1.3.
pub fn encode_psd2_qc_statements(roles: &[PspRole], nca_name: &str, nca_id: &str) -> Vec<u8> {
    let roles: Vec<u8> = roles
        .iter()
        .flat_map(|r| {
            tlv(
                SEQUENCE,
                &[tlv(OID, &r.oid()), tlv(UTF8_STRING, r.name().as_bytes())].concat(),
            )
        })
        .collect();
    let info = tlv(
        SEQUENCE,
        &[
            tlv(SEQUENCE, &roles),
            tlv(UTF8_STRING, nca_name.as_bytes()),
            tlv(UTF8_STRING, nca_id.as_bytes()),
        ]
        .concat(),
    );
    let statement = tlv(SEQUENCE, &[tlv(OID, PSD2_STATEMENT), info].concat());
    tlv(SEQUENCE, &statement)
}

/// The OID arcs of the QCStatements extension, for certificate builders that take arcs.
pub const QC_STATEMENTS_ARCS: [u64; 9] = [1, 3, 6, 1, 5, 5, 7, 1, 3];
/// The OID arcs of `organizationIdentifier`.
pub const ORGANIZATION_IDENTIFIER_ARCS: [u64; 4] = [2, 5, 4, 97];

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn oid_bytes(arcs: &[u64]) -> Vec<u8> {
        let mut out = vec![(arcs[0] * 40 + arcs[1]) as u8];
        for &arc in &arcs[2..] {
            let mut digits = vec![(arc & 0x7f) as u8];
            let mut rest = arc >> 7;
            while rest > 0 {
                digits.push(0x80 | (rest & 0x7f) as u8);
                rest >>= 7;
            }
            out.extend(digits.iter().rev());
        }
        out
    }

    #[test]
    fn oids_are_the_standard_ones() {
        assert_eq!(oid_bytes(&QC_STATEMENTS_ARCS), QC_STATEMENTS);
        assert_eq!(oid_bytes(&[0, 4, 0, 19495, 2]), PSD2_STATEMENT);
        assert_eq!(oid_bytes(&ORGANIZATION_IDENTIFIER_ARCS), ORGANIZATION_IDENTIFIER);
        for (i, role) in PspRole::ALL.into_iter().enumerate() {
            assert_eq!(oid_bytes(&[0, 4, 0, 19495, 1, i as u64 + 1]), role.oid());
            assert_eq!(PspRole::from_name(role.name()), Some(role));
        }
        assert_eq!(PspRole::from_name("PSP_XX"), None);
    }

    #[test]
    fn an_encoded_statement_parses_back() {
        let v = encode_psd2_qc_statements(
            &[PspRole::PaymentInitiation, PspRole::AccountInformation],
            "Financial Conduct Authority",
            "GB-FCA",
        );
        let (roles, name, id) = parse_qc_statements(&v).unwrap().unwrap();
        assert_eq!(roles, [PspRole::PaymentInitiation, PspRole::AccountInformation]);
        assert_eq!((name.as_str(), id.as_str()), ("Financial Conduct Authority", "GB-FCA"));
        // Other statements are skipped; none is PSD2.
        let compliance = tlv(SEQUENCE, &tlv(OID, &oid_bytes(&[0, 4, 0, 1862, 1, 1])));
        assert_eq!(parse_qc_statements(&tlv(SEQUENCE, &compliance)).unwrap(), None);
        // Long names use the long length form.
        let long = "N".repeat(200);
        let v = encode_psd2_qc_statements(&[PspRole::AccountServicing], &long, "X");
        assert_eq!(parse_qc_statements(&v).unwrap().unwrap().1, long);
    }

    fn role(oid: &[u8], name: &str) -> Vec<u8> {
        tlv(SEQUENCE, &[tlv(OID, oid), tlv(UTF8_STRING, name.as_bytes())].concat())
    }

    fn statement(roles: &[Vec<u8>], name: &str, id: &str) -> Vec<u8> {
        let info = tlv(
            SEQUENCE,
            &[
                tlv(SEQUENCE, &roles.concat()),
                tlv(UTF8_STRING, name.as_bytes()),
                tlv(UTF8_STRING, id.as_bytes()),
            ]
            .concat(),
        );
        tlv(SEQUENCE, &tlv(SEQUENCE, &[tlv(OID, PSD2_STATEMENT), info].concat()))
    }

    fn reason(v: &[u8]) -> &'static str {
        match parse_qc_statements(v) {
            Err(Error::InvalidCertificate { what }) => what,
            other => panic!("accepted: {other:?}"),
        }
    }

    #[test]
    fn malformed_statements_are_refused_with_a_reason() {
        let pi = PspRole::PaymentInitiation.oid();
        let ai = PspRole::AccountInformation.oid();
        assert_eq!(
            reason(&statement(&[role(&pi, "PSP_AI")], "N", "I")),
            "PSD2 role OID and name disagree"
        );
        let mut unknown = pi;
        unknown[6] = 9;
        assert_eq!(
            reason(&statement(&[role(&unknown, "PSP_XX")], "N", "I")),
            "unknown PSD2 role"
        );
        assert_eq!(reason(&statement(&[], "N", "I")), "PSD2 QCStatement has no role");
        assert_eq!(
            reason(&statement(&[role(&pi, "PSP_PI"), role(&pi, "PSP_PI")], "N", "I")),
            "PSD2 role repeated"
        );
        assert_eq!(reason(&statement(&[role(&ai, "PSP_AI")], "", "I")), "nCAName");
        assert_eq!(
            reason(&statement(&[role(&ai, "PSP_AI")], "N", &"x".repeat(257))),
            "nCAId"
        );
        // The statement twice.
        let one = encode_psd2_qc_statements(&[PspRole::AccountServicing], "N", "I");
        let inner = Der(&one).expect(SEQUENCE, "").unwrap().to_vec();
        assert_eq!(
            reason(&tlv(SEQUENCE, &[inner.clone(), inner].concat())),
            "PSD2 QCStatement repeated"
        );
        // Trailing bytes, truncation, indefinite and non-minimal lengths, a wrong tag.
        let mut trailing = one.clone();
        trailing.push(0);
        assert_eq!(reason(&trailing), "bytes after QCStatements");
        assert!(parse_qc_statements(&one[..one.len() - 1]).is_err());
        assert!(parse_qc_statements(&[0x30, 0x80, 0x00, 0x00]).is_err());
        assert!(parse_qc_statements(&[0x30, 0x81, 0x00]).is_err());
        assert!(parse_qc_statements(&[0x31, 0x00]).is_err());
        assert!(parse_qc_statements(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(parse_qc_statements(&[]).is_err());
        // A role name that is not UTF-8.
        let bad_utf8 = tlv(SEQUENCE, &[tlv(OID, &pi), tlv(UTF8_STRING, &[0xff])].concat());
        assert_eq!(reason(&statement(&[bad_utf8], "N", "I")), "roleOfPspName");
    }
}
