//! PSD2 roles (ETSI TS 119 495) a client certificate must carry: the client's own
//! (`clients[].psd2_roles`) and those of the scopes it asks for (`psd2.scope_roles`), read from
//! the certificate's QCStatements by keybound-core ([`keybound_core::qc`]).

use keybound_core::qc::{PspRole, psd2_from_certificate};

use crate::config::{Client, Config};
use crate::error::{Code, OAuthError};
use crate::tls::PeerCerts;

/// Checks that the connection's client certificate carries every role `client` needs and every
/// role the `scopes` need.
///
/// # Errors
/// `invalid_client` (401) when the client's own roles are missing, the certificate is absent or
/// its PSD2 statement is malformed (the reason names what); `invalid_scope` when a scope's role
/// is missing.
pub fn check(config: &Config, client: &Client, scopes: &[String], peer: &PeerCerts) -> Result<(), OAuthError> {
    let for_scopes: Vec<(&str, PspRole)> = scopes
        .iter()
        .filter_map(|s| config.scope_roles.get_key_value(s))
        .flat_map(|(s, roles)| roles.iter().map(move |r| (s.as_str(), *r)))
        .collect();
    if client.psd2_roles.is_empty() && for_scopes.is_empty() {
        return Ok(());
    }
    let Some(leaf) = peer.leaf() else {
        if let Some((scope, role)) = for_scopes.first()
            && client.psd2_roles.is_empty()
        {
            return Err(OAuthError::new(
                Code::InvalidScope,
                format!(
                    "scope {scope} needs the PSD2 role {} and no client certificate was presented",
                    role.name()
                ),
            ));
        }
        return Err(OAuthError::invalid_client("PSD2 roles need a client certificate"));
    };
    let roles = match psd2_from_certificate(leaf.as_ref()) {
        Ok(Some(a)) => a.roles,
        Ok(None) => Vec::new(),
        Err(e) => {
            return Err(OAuthError::invalid_client(format!(
                "client certificate QCStatements: {}",
                match e {
                    keybound_core::Error::InvalidCertificate { what } => what,
                    _ => "malformed",
                }
            )));
        }
    };
    if let Some(missing) = client.psd2_roles.iter().find(|r| !roles.contains(r)) {
        return Err(OAuthError::invalid_client(format!(
            "client certificate lacks the PSD2 role {}",
            missing.name()
        )));
    }
    if let Some((scope, role)) = for_scopes.iter().find(|(_, r)| !roles.contains(r)) {
        return Err(OAuthError::new(
            Code::InvalidScope,
            format!("scope {scope} needs the PSD2 role {}", role.name()),
        ));
    }
    Ok(())
}
