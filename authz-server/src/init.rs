//! `keybound-authz init`: development certificates, client keys and a demo configuration.
//!
//! Everything is generated fresh from OS randomness: a development CA, a server certificate for
//! `localhost` and `127.0.0.1` signed by it, a client certificate signed by it (for
//! `tls_client_auth`), a self-signed client certificate (for `self_signed_tls_client_auth`), two
//! P-256 keys for `private_key_jwt` clients, a DPoP nonce secret, and a demo user with a random
//! password. **For development only**: the CA key is written next to the certificates.

use std::fmt::Write as _;
use std::path::Path;

use keybound_core::jws::{P256Signer, Signer};
use keybound_core::qc::PspRole;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// What `init` needs.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The issuer URL to write into the config.
    pub issuer: String,
    /// The listen address to write into the config.
    pub listen: String,
    /// Overwrite an existing config.
    pub force: bool,
}

fn write_private(path: &Path, contents: &str) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::remove_file(path);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        f.write_all(contents.as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, contents).map_err(|e| format!("{}: {e}", path.display()))
    }
}

fn write_public(path: &Path, contents: &str) -> Result<(), String> {
    std::fs::write(path, contents).map_err(|e| format!("{}: {e}", path.display()))
}

fn rc(e: rcgen::Error) -> String {
    format!("certificate generation: {e}")
}

fn leaf_params(cn: &str, sans: Vec<String>, eku: ExtendedKeyUsagePurpose) -> Result<CertificateParams, String> {
    let mut p = CertificateParams::new(sans).map_err(rc)?;
    // Most general first in the encoding, so the RFC 4514 string is `CN=..,O=keybound demo`.
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::OrganizationName, "keybound demo");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![eku];
    p.not_before = rcgen::date_time_ymd(2025, 1, 1);
    p.not_after = rcgen::date_time_ymd(2035, 1, 1);
    Ok(p)
}

/// The demo competent authority's name and id in the PSD2 statements of the dev certificates.
pub const DEMO_NCA: (&str, &str) = ("keybound Demo Competent Authority", "XX-KBD");

/// A QCStatements extension with a PSD2 statement of these roles from [`DEMO_NCA`].
fn psd2_extension(roles: &[PspRole]) -> CustomExtension {
    CustomExtension::from_oid_content(
        &keybound_core::qc::QC_STATEMENTS_ARCS,
        keybound_core::qc::encode_psd2_qc_statements(roles, DEMO_NCA.0, DEMO_NCA.1),
    )
}

/// A new P-256 key for `private_key_jwt`: (the base64url private scalar, the public JWK JSON).
fn jwt_key(kid: &str) -> Result<(String, String), String> {
    let rec = crate::keys::generate(0).map_err(|e| e.to_string())?;
    let secret: [u8; 32] = rec.secret.as_slice().try_into().map_err(|_| "key size".to_string())?;
    let signer = P256Signer::from_bytes(&secret).map_err(|e| e.to_string())?;
    let jwk = keybound_core::jwk::Jwk::new(
        signer.public_key().clone(),
        Some(kid.into()),
        Some(keybound_core::jws::Alg::Es256),
    );
    Ok((keybound_core::b64::encode(&secret), jwk.to_json()))
}

/// The argon2id PHC string of a password, with a random salt.
///
/// # Errors
/// A message if the random source or the hasher fails.
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::PasswordHasher;
    let salt = crate::random::bytes::<16>().map_err(|e| e.to_string())?;
    let hash = argon2::Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map_err(|e| e.to_string())?;
    Ok(hash.to_string())
}

/// Generates the files into `dir`; returns the demo user's password.
///
/// # Errors
/// A message if a file cannot be written, the config exists (without `force`), or generation
/// fails.
pub fn run(dir: &Path, opts: &InitOptions) -> Result<String, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let config_path = dir.join("authz.toml");
    if config_path.exists() && !opts.force {
        return Err(format!("{} exists (use --force to overwrite)", config_path.display()));
    }

    // CA
    let ca_key = KeyPair::generate().map_err(rc)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(rc)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::OrganizationName, "keybound demo");
    ca_params.distinguished_name.push(DnType::CommonName, "keybound dev CA");
    ca_params
        .distinguished_name
        .push(DnType::OrganizationName, "keybound demo");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    ca_params.not_after = rcgen::date_time_ymd(2035, 1, 1);
    let ca_cert = ca_params.self_signed(&ca_key).map_err(rc)?;
    write_public(&dir.join("ca.pem"), &ca_cert.pem())?;
    write_private(&dir.join("ca-key.pem"), &ca_key.serialize_pem())?;
    let ca = Issuer::new(ca_params, ca_key);

    // server
    let server_key = KeyPair::generate().map_err(rc)?;
    let server = leaf_params(
        "localhost",
        vec!["localhost".into(), "127.0.0.1".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    )?
    .signed_by(&server_key, &ca)
    .map_err(rc)?;
    write_public(&dir.join("server.pem"), &server.pem())?;
    write_private(&dir.join("server-key.pem"), &server_key.serialize_pem())?;

    // tls_client_auth client: a payment provider's qualified certificate, with the PSD2 roles
    // PSP_PI and PSP_AI (ETSI TS 119 495) from a made-up competent authority.
    let mtls_key = KeyPair::generate().map_err(rc)?;
    let mut mtls_params = leaf_params(
        "mtls-client",
        vec!["mtls-client.keybound.test".into()],
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    mtls_params.custom_extensions = vec![psd2_extension(&[
        PspRole::PaymentInitiation,
        PspRole::AccountInformation,
    ])];
    let mtls = mtls_params.signed_by(&mtls_key, &ca).map_err(rc)?;
    write_public(&dir.join("mtls-client.pem"), &mtls.pem())?;
    write_private(&dir.join("mtls-client-key.pem"), &mtls_key.serialize_pem())?;

    // The same client's other certificate, with the PSD2 role PSP_AI only: it may read accounts
    // but not initiate payments.
    let ai_key = KeyPair::generate().map_err(rc)?;
    let mut ai_params = leaf_params(
        "mtls-client",
        vec!["mtls-client.keybound.test".into()],
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    ai_params.custom_extensions = vec![psd2_extension(&[PspRole::AccountInformation])];
    let ai = ai_params.signed_by(&ai_key, &ca).map_err(rc)?;
    write_public(&dir.join("mtls-client-ai.pem"), &ai.pem())?;
    write_private(&dir.join("mtls-client-ai-key.pem"), &ai_key.serialize_pem())?;

    // self_signed_tls_client_auth client
    let ss_key = KeyPair::generate().map_err(rc)?;
    let ss = leaf_params(
        "selfsigned-client",
        vec!["selfsigned-client.keybound.test".into()],
        ExtendedKeyUsagePurpose::ClientAuth,
    )?
    .self_signed(&ss_key)
    .map_err(rc)?;
    write_public(&dir.join("selfsigned-client.pem"), &ss.pem())?;
    write_private(&dir.join("selfsigned-client-key.pem"), &ss_key.serialize_pem())?;

    // private_key_jwt clients
    let (fapi_secret, fapi_jwk) = jwt_key("fapi-dpop-1")?;
    write_private(&dir.join("fapi-dpop.key"), &fapi_secret)?;
    let (rs_secret, rs_jwk) = jwt_key("resource-server-1")?;
    write_private(&dir.join("resource-server.key"), &rs_secret)?;

    let nonce_secret = crate::random::token().map_err(|e| e.to_string())?;
    let password = crate::random::token().map_err(|e| e.to_string())?;
    let password = password.get(..16).unwrap_or(&password).to_string();
    let hash = hash_password(&password)?;

    let mut cfg = String::new();
    let _ = write!(
        cfg,
        r#"# keybound-authz demo configuration, generated by `keybound-authz init`. Development only.
issuer = "{issuer}"
listen = "{listen}"
database = "authz.sqlite"
scopes = ["openid", "accounts", "payments"]
# The resource servers (RFC 8707 resource indicators). An access token is for one of them: the
# `resource` the client asks for, else the client's default (here the only one).
audience = ["https://api.keybound.test"]

[tls]
cert = "server.pem"
key = "server-key.pem"
client_ca = "ca.pem"

[tokens]
access_token_lifetime = 300
refresh_token_lifetime = 86400
code_lifetime = 60
par_lifetime = 90

[dpop]
nonce = "required"
nonce_secrets = ["{nonce_secret}"]

# Rich Authorization Requests (RFC 9396): the authorization_details types clients may ask for,
# each with its shape and the sentence the consent page shows.
[authorization_details_types.payment_initiation]
consent = "Pay {{/instructedAmount/amount}} {{/instructedAmount/currency}} to {{/creditorName}} (account {{/creditorAccount/iban}})"
[authorization_details_types.payment_initiation.shape]
type = "object"
required = ["instructedAmount", "creditorName", "creditorAccount"]
additionalProperties = false
properties.actions = {{ type = "array", items = {{ enum = ["initiate", "status", "cancel"] }} }}
properties.locations = {{ type = "array", items = {{ type = "string" }} }}
properties.instructedAmount = {{ type = "object", required = ["currency", "amount"], additionalProperties = false, properties = {{ currency = {{ enum = ["EUR", "GBP"] }}, amount = {{ type = "string", minLength = 1, maxLength = 18 }} }} }}
properties.creditorName = {{ type = "string", minLength = 1, maxLength = 70 }}
properties.creditorAccount = {{ type = "object", required = ["iban"], properties = {{ iban = {{ type = "string", minLength = 15, maxLength = 34 }} }} }}
properties.remittanceInformationUnstructured = {{ type = "string", maxLength = 140 }}

[authorization_details_types.account_information]
consent = "Read the balances and transactions of the accounts {{/accounts}}"
shape = {{ type = "object", required = ["accounts"], properties = {{ accounts = {{ type = "array", minItems = 1, items = {{ type = "string" }} }}, actions = {{ type = "array" }} }} }}

# PSD2 roles (ETSI TS 119 495) a client certificate must carry to be granted a scope.
[psd2]
scope_roles = {{ payments = ["PSP_PI"] }}

# Password and TOTP guessing throttle (these are the defaults): failures per account and per
# client address before a lock, quiet seconds after which the count starts again, the first lock
# (doubled by each further failure) and the longest.
# [login]
# account_max_failures = 5
# address_max_failures = 20
# failure_window = 900
# lockout = 60
# max_lockout = 3600

# A confidential FAPI client: private_key_jwt + DPoP (key in fapi-dpop.key).
[[clients]]
client_id = "fapi-dpop"
name = "FAPI DPoP demo client"
auth_method = "private_key_jwt"
sender_constraint = "dpop"
redirect_uris = ["https://client.keybound.test/cb", "http://127.0.0.1:8080/cb"]
scopes = ["openid", "accounts", "payments"]
resources = ["https://api.keybound.test"]
grant_types = ["authorization_code", "refresh_token", "client_credentials"]
jwks = '{{"keys":[{fapi_jwk}]}}'
authorization_details_types = ["payment_initiation", "account_information"]

# A confidential FAPI client: tls_client_auth + certificate-bound tokens (mtls-client.pem).
[[clients]]
client_id = "fapi-mtls"
name = "FAPI mTLS demo client"
auth_method = "tls_client_auth"
tls_client_auth_subject_dn = "CN=mtls-client,O=keybound demo"
sender_constraint = "mtls"
redirect_uris = ["https://client.keybound.test/cb"]
scopes = ["openid", "accounts", "payments"]
resources = ["https://api.keybound.test"]
grant_types = ["authorization_code", "refresh_token", "client_credentials"]
authorization_details_types = ["payment_initiation", "account_information"]

# self_signed_tls_client_auth (selfsigned-client.pem).
[[clients]]
client_id = "selfsigned"
auth_method = "self_signed_tls_client_auth"
certificate = "selfsigned-client.pem"
sender_constraint = "mtls"
redirect_uris = ["https://client.keybound.test/cb"]
scopes = ["accounts"]
resources = ["https://api.keybound.test"]

# A public browser client (DPoP required).
[[clients]]
client_id = "public-spa"
name = "Browser demo app"
auth_method = "none"
sender_constraint = "dpop"
redirect_uris = ["http://127.0.0.1:8080/cb", "http://localhost:8080/cb"]
scopes = ["openid", "accounts"]
resources = ["https://api.keybound.test"]
grant_types = ["authorization_code", "refresh_token"]
authorization_details_types = ["payment_initiation", "account_information"]

# A resource server allowed to introspect (key in resource-server.key).
[[clients]]
client_id = "resource-server"
auth_method = "private_key_jwt"
sender_constraint = "dpop"
grant_types = []
introspection = true
jwks = '{{"keys":[{rs_jwk}]}}'

[[users]]
username = "alice"
password_hash = "{hash}"
"#,
        issuer = opts.issuer,
        listen = opts.listen,
    );
    if opts.force {
        let _ = std::fs::remove_file(&config_path);
    }
    write_private(&config_path, &cfg)?;
    write_private(
        &dir.join("demo-credentials.txt"),
        &format!("username: alice\npassword: {password}\n"),
    )?;
    Ok(password)
}
