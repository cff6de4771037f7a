//! The demo directory: what `keybound-authz init` generates (dev CA, server certificate, client
//! certificate and keys, demo user), one more client certificate from the same CA (the "wrong"
//! certificate of the story), the authorization server's configuration for the chosen ports, the
//! Envoy bootstrap and `endpoints.json`.
//!
//! Generation is idempotent: `init` and the extra certificate run only when their files are
//! missing; the configurations are rewritten on every start (ports may change).

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// The ports the demo listens on (all on 127.0.0.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// The demo page (`--page-port`).
    pub page: u16,
    /// keybound-authz (`--authz-port`).
    pub authz: u16,
    /// Envoy's DPoP listener (`--dpop-port`).
    pub dpop: u16,
    /// Envoy's mTLS listener (`--mtls-port`).
    pub mtls: u16,
    /// The upstream echo API (`--echo-port`).
    pub echo: u16,
    /// Envoy's admin interface (`--admin-port`).
    pub admin: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            page: 8080,
            authz: 8443,
            dpop: 9443,
            mtls: 9444,
            echo: 8081,
            admin: 9901,
        }
    }
}

impl Ports {
    /// Each port with its role and the flag that changes it.
    pub fn named(&self) -> [(u16, &'static str, &'static str); 6] {
        [
            (self.page, "the demo page", "--page-port"),
            (self.authz, "keybound-authz", "--authz-port"),
            (self.dpop, "Envoy's DPoP listener", "--dpop-port"),
            (self.mtls, "Envoy's mTLS listener", "--mtls-port"),
            (self.echo, "the echo API", "--echo-port"),
            (self.admin, "Envoy's admin interface", "--admin-port"),
        ]
    }

    /// Free ports chosen by the OS (for tests and parallel runs).
    ///
    /// # Errors
    /// If no port can be bound.
    pub fn free() -> Result<Ports, String> {
        let listeners = (0..6)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let ports = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        match ports.as_slice() {
            [page, authz, dpop, mtls, echo, admin] => Ok(Ports {
                page: *page,
                authz: *authz,
                dpop: *dpop,
                mtls: *mtls,
                echo: *echo,
                admin: *admin,
            }),
            _ => Err("could not pick free ports".into()),
        }
    }

    /// Fails with a clear message if a port is taken (or two roles share one).
    ///
    /// # Errors
    /// The first port in use, its role and the flag to change it.
    pub fn check_free(&self) -> Result<(), String> {
        let named = self.named();
        for (i, (port, role, flag)) in named.iter().enumerate() {
            if let Some((_, other, _)) = named.iter().skip(i + 1).find(|(p, _, _)| p == port) {
                return Err(format!(
                    "port {port} is given to both {role} and {other}: change one ({flag})"
                ));
            }
            if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", *port)) {
                return Err(format!(
                    "port {port} (for {role}) is in use on 127.0.0.1 ({e}): stop what uses it (e.g. another demo: \
                     `ss -ltnp | grep :{port}`) or choose another port with {flag} N"
                ));
            }
        }
        Ok(())
    }
}

/// What the demo generated and where.
#[derive(Debug, Clone)]
pub struct DemoFiles {
    /// The demo directory.
    pub dir: PathBuf,
    /// `keybound-authz init`'s directory (`<dir>/authz`).
    pub authz_dir: PathBuf,
    /// The authorization server's configuration for this run.
    pub authz_config: PathBuf,
    /// The Envoy bootstrap for this run.
    pub envoy_config: PathBuf,
    /// `endpoints.json`.
    pub endpoints: PathBuf,
    /// The demo user's name and password.
    pub user: (String, String),
    /// The DPoP nonce secret shared by keybound-authz and the filter, if nonces are on.
    pub nonce_secret: Option<String>,
    /// The base64 SHA-256 of the server certificates' public key (Chromium's
    /// `--ignore-certificate-errors-spki-list`).
    pub server_spki_sha256: String,
}

impl DemoFiles {
    /// A file in `init`'s directory.
    pub fn authz_file(&self, name: &str) -> PathBuf {
        self.authz_dir.join(name)
    }

    /// The dev CA certificate.
    pub fn ca(&self) -> PathBuf {
        self.authz_file("ca.pem")
    }
}

/// The URLs of a running demo.
#[derive(Debug, Clone)]
pub struct Urls {
    /// The issuer (keybound-authz).
    pub issuer: String,
    /// The demo page's origin (`http://127.0.0.1:PORT`).
    pub page: String,
    /// The DPoP-protected API through Envoy.
    pub dpop_api: String,
    /// The certificate-protected API through Envoy.
    pub mtls_api: String,
    /// Envoy's admin interface.
    pub admin: String,
    /// The echo API (direct, unprotected).
    pub echo: String,
}

impl Urls {
    /// The URLs for `ports`.
    pub fn new(ports: &Ports) -> Urls {
        Urls {
            issuer: format!("https://127.0.0.1:{}", ports.authz),
            page: format!("http://127.0.0.1:{}", ports.page),
            dpop_api: format!("https://127.0.0.1:{}/api/accounts", ports.dpop),
            mtls_api: format!("https://127.0.0.1:{}/api/accounts", ports.mtls),
            admin: format!("http://127.0.0.1:{}", ports.admin),
            echo: format!("http://127.0.0.1:{}", ports.echo),
        }
    }

    /// The DPoP listener as a protected resource (RFC 9728 `resource`): its origin.
    pub fn dpop_resource(&self) -> String {
        let rest = self.dpop_api.strip_prefix("https://").unwrap_or(&self.dpop_api);
        let authority = rest.split('/').next().unwrap_or(rest);
        format!("https://{authority}")
    }

    /// The page's OAuth redirect URI.
    pub fn redirect_uri(&self) -> String {
        format!("{}/cb", self.page)
    }
}

/// The access-token audience of the demo (what `init` configures).
pub const AUDIENCE: &str = "https://api.keybound.test";
/// The public browser client of the demo page.
pub const PAGE_CLIENT: &str = "public-spa";
/// The confidential DPoP client of the scripted story (`private_key_jwt`).
pub const DPOP_CLIENT: &str = "fapi-dpop";
/// The confidential mTLS client of the scripted story (`tls_client_auth`).
pub const MTLS_CLIENT: &str = "fapi-mtls";
/// The redirect URI of the confidential clients (never fetched: the story reads the `Location`).
pub const NATIVE_REDIRECT: &str = "https://client.keybound.test/cb";

/// Generates what is missing in `dir` and writes this run's configurations.
///
/// # Errors
/// A message naming the step that failed.
pub fn prepare(dir: &Path, authz_bin: &Path, filter_wasm: &Path, ports: &Ports) -> Result<DemoFiles, String> {
    let authz_dir = dir.join("authz");
    std::fs::create_dir_all(&authz_dir).map_err(|e| format!("{}: {e}", authz_dir.display()))?;
    let urls = Urls::new(ports);
    let init_config = authz_dir.join("authz.toml");
    let current = init_is_current(&authz_dir);
    if current {
        println!("demo: PKI and keys: already in {}", authz_dir.display());
    } else {
        if init_config.exists() {
            println!(
                "demo: {} was made by an older `keybound-authz init` (no PSD2 certificates or payment types): making it again",
                authz_dir.display()
            );
        }
        println!(
            "demo: generating the dev CA, certificates, client keys and demo user with `keybound-authz init` into {}",
            authz_dir.display()
        );
        let mut init = Command::new(authz_bin);
        init.arg("init")
            .arg("--dir")
            .arg(&authz_dir)
            .args(["--listen", &format!("127.0.0.1:{}", ports.authz)]);
        if init_config.exists() {
            init.arg("--force");
            // Issued by the old CA: issue it again below.
            for f in ["other-client.pem", "other-client-key.pem"] {
                let _ = std::fs::remove_file(authz_dir.join(f));
            }
        }
        let out = init.output().map_err(|e| format!("{}: {e}", authz_bin.display()))?;
        if !out.status.success() {
            return Err(format!(
                "keybound-authz init failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    if authz_dir.join("other-client.pem").exists() {
        println!("demo: second client certificate: already there");
    } else {
        println!("demo: issuing a second client certificate (CN=other-client) from the dev CA");
        issue_other_client(&authz_dir)?;
    }

    let text = std::fs::read_to_string(&init_config).map_err(|e| format!("{}: {e}", init_config.display()))?;
    let mut table: toml::Table = text.parse().map_err(|e| format!("{}: {e}", init_config.display()))?;
    let nonce_secret = patch_authz_config(&mut table, &urls, ports)?;
    let authz_config = authz_dir.join("demo-authz.toml");
    let rendered = format!(
        "# Written by keybound-demo on every start from authz.toml (generated by `keybound-authz init`):\n\
         # issuer, listen, CORS origins and the public client's redirect URIs follow the demo's ports.\n{}",
        toml::to_string(&table).map_err(|e| e.to_string())?
    );
    write_private(&authz_config, &rendered)?;

    let user = read_user(&authz_dir.join("demo-credentials.txt"))?;
    let server_spki_sha256 = spki_sha256(&authz_dir.join("server.pem"))?;
    let envoy_config = dir.join("envoy.yaml");
    let files = DemoFiles {
        dir: dir.to_path_buf(),
        authz_dir,
        authz_config,
        envoy_config,
        endpoints: dir.join("endpoints.json"),
        user,
        nonce_secret,
        server_spki_sha256,
    };
    write_atomic(&files.envoy_config, &envoy_yaml(&files, &urls, ports, filter_wasm))?;
    Ok(files)
}

/// Whether `dir` holds what the current `keybound-authz init` writes: the config with the payment
/// types (RFC 9396) and the PSD2 certificates. A directory from an older version is made again.
fn init_is_current(dir: &Path) -> bool {
    dir.join("mtls-client-ai.pem").is_file()
        && std::fs::read_to_string(dir.join("authz.toml")).is_ok_and(|t| t.contains("[authorization_details_types."))
}

/// Writes a file readable by its owner only, atomically (a process reading it at the same time
/// sees the old or the new contents).
fn write_private(path: &Path, contents: &str) -> Result<(), String> {
    write_atomic(path, contents)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Writes a file through a temporary file and a rename.
fn write_atomic(path: &Path, contents: &str) -> Result<(), String> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, contents).map_err(|e| format!("{}: {e}", tmp.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Points `init`'s configuration at this run's ports; returns the nonce secret (if nonces are on).
fn patch_authz_config(table: &mut toml::Table, urls: &Urls, ports: &Ports) -> Result<Option<String>, String> {
    table.insert("issuer".into(), urls.issuer.clone().into());
    table.insert("listen".into(), format!("127.0.0.1:{}", ports.authz).into());
    // The gateway's DPoP listener is a resource too (RFC 8707): a client that discovered it from
    // its RFC 9728 metadata asks for a token for it; the rest get the demo audience.
    table.insert(
        "audience".into(),
        toml::Value::Array(vec![AUDIENCE.into(), urls.dpop_resource().into()]),
    );
    table.insert("default_resource".into(), AUDIENCE.into());
    let origins = [urls.page.clone(), format!("http://localhost:{}", ports.page)];
    table.insert(
        "cors_origins".into(),
        toml::Value::Array(origins.iter().map(|o| o.clone().into()).collect()),
    );
    let clients = table
        .get_mut("clients")
        .and_then(toml::Value::as_array_mut)
        .ok_or("authz.toml has no [[clients]]")?;
    let public = clients
        .iter_mut()
        .filter_map(toml::Value::as_table_mut)
        .find(|c| c.get("client_id").and_then(toml::Value::as_str) == Some(PAGE_CLIENT))
        .ok_or_else(|| format!("authz.toml has no client {PAGE_CLIENT}"))?;
    public.insert(
        "redirect_uris".into(),
        toml::Value::Array(vec![
            urls.redirect_uri().into(),
            format!("http://localhost:{}/cb", ports.page).into(),
        ]),
    );
    // The scripted DPoP client asks for a token for the gateway it discovered (story, chapter 0).
    let clients = table
        .get_mut("clients")
        .and_then(toml::Value::as_array_mut)
        .ok_or("authz.toml has no [[clients]]")?;
    let dpop_client = clients
        .iter_mut()
        .filter_map(toml::Value::as_table_mut)
        .find(|c| c.get("client_id").and_then(toml::Value::as_str) == Some(DPOP_CLIENT))
        .ok_or_else(|| format!("authz.toml has no client {DPOP_CLIENT}"))?;
    dpop_client.insert(
        "resources".into(),
        toml::Value::Array(vec![AUDIENCE.into(), urls.dpop_resource().into()]),
    );
    dpop_client.insert("default_resource".into(), AUDIENCE.into());
    let dpop = table.get("dpop").and_then(toml::Value::as_table);
    let required = dpop.and_then(|d| d.get("nonce")).and_then(toml::Value::as_str) == Some("required");
    let secret = dpop
        .and_then(|d| d.get("nonce_secrets"))
        .and_then(toml::Value::as_array)
        .and_then(|a| a.first())
        .and_then(toml::Value::as_str)
        .map(str::to_string);
    Ok(if required { secret } else { None })
}

fn read_user(path: &Path) -> Result<(String, String), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .ok_or_else(|| format!("{}: no `{name}` line", path.display()))
    };
    Ok((field("username:")?, field("password:")?))
}

/// A second client certificate from the dev CA, for a client that is not registered: the
/// certificate of "someone else" in the story.
fn issue_other_client(dir: &Path) -> Result<(), String> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).map_err(|e| format!("{name}: {e}"));
    let ca_key = rcgen::KeyPair::from_pem(&read("ca-key.pem")?).map_err(|e| format!("ca-key.pem: {e}"))?;
    let ca = rcgen::Issuer::from_ca_cert_pem(&read("ca.pem")?, ca_key).map_err(|e| format!("ca.pem: {e}"))?;
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(vec!["other-client.keybound.test".to_string()]).map_err(|e| e.to_string())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "keybound demo");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "other-client");
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2035, 1, 1);
    let cert = params.signed_by(&key, &ca).map_err(|e| e.to_string())?;
    write_private(&dir.join("other-client-key.pem"), &key.serialize_pem())?;
    std::fs::write(dir.join("other-client.pem"), cert.pem()).map_err(|e| format!("other-client.pem: {e}"))
}

/// base64 (standard) SHA-256 of a certificate's SubjectPublicKeyInfo.
fn spki_sha256(cert: &Path) -> Result<String, String> {
    let der = crate::http::pem_certs(cert)?
        .into_iter()
        .next()
        .ok_or_else(|| format!("{}: no certificate", cert.display()))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).map_err(|e| format!("{}: {e}", cert.display()))?;
    let digest = Sha256::digest(parsed.public_key().raw);
    Ok(base64_std(&digest))
}

/// Standard base64 with padding (what Chromium expects for SPKI hashes).
fn base64_std(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].iter().enumerate() {
            if i <= chunk.len() {
                let idx = usize::try_from((n >> shift) & 63).unwrap_or(0);
                out.push(char::from(ALPHABET.get(idx).copied().unwrap_or(b'A')));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn yaml_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The filter configuration of one listener, on `port`: proofs are checked against the origins
/// clients use for it (`https://127.0.0.1:<port>`, `https://localhost:<port>`).
fn filter_config(files: &DemoFiles, urls: &Urls, port: u16, mtls: bool) -> serde_json::Value {
    let origins = [format!("https://127.0.0.1:{port}"), format!("https://localhost:{port}")];
    let dpop = match (&files.nonce_secret, mtls) {
        (Some(secret), false) => serde_json::json!({
            "max_age_seconds": 300,
            "nonce": { "mode": "required", "secrets": [secret], "step_seconds": 120 },
            "origins": origins,
        }),
        _ => serde_json::json!({ "max_age_seconds": 300, "origins": origins }),
    };
    let mut config = serde_json::json!({
        "issuers": [{
            "issuer": urls.issuer,
            "audiences": [AUDIENCE, urls.dpop_resource()],
            "jwks_uri": format!("{}/jwks", urls.issuer),
            "jwks_cluster": "authz",
            "jwks_refresh_seconds": 60,
            "jwks_min_refetch_seconds": 5,
        }],
        "dpop": dpop,
        "rules": [
            { "prefix": "/healthz", "auth": "none" },
            { "prefix": "/api", "scopes": ["accounts"] },
            { "prefix": "/payments", "requirement": "payments" },
        ],
        // A payment needs the consent for it in the token (RFC 9396); over mTLS also a payment
        // initiator's qualified certificate (PSD2 role PSP_PI). The granted details go upstream.
        "requirements": {
            "payments": if mtls {
                serde_json::json!({ "psd2_roles": ["PSP_PI"] })
            } else {
                serde_json::json!({ "authorization_details_types": ["payment_initiation"] })
            }
        },
        "forward": { "claims": { "x-authorization-details": "/authorization_details" } },
    });
    if let (true, Some(obj)) = (mtls, config.as_object_mut()) {
        obj.insert("mtls".into(), serde_json::json!({ "source": "connection" }));
    }
    if let (false, Some(obj)) = (mtls, config.as_object_mut()) {
        // RFC 9728: the listener says which authorization server issues tokens for it.
        obj.insert(
            "resource_metadata".into(),
            serde_json::json!([{
                "resource": urls.dpop_resource(),
                "authorization_servers": [urls.issuer],
                "scopes_supported": ["accounts"],
                "resource_name": "keybound demo API (DPoP)",
            }]),
        );
        obj.insert("filter_state".into(), true.into());
    }
    config
}

/// The Envoy bootstrap: a DPoP listener (TLS, CORS for the demo page, the filter with nonces) and
/// an mTLS listener (client certificate required, the filter binding tokens to it), both in front
/// of the echo API; the filter fetches keybound-authz's JWKS through the `authz` cluster.
pub fn envoy_yaml(files: &DemoFiles, urls: &Urls, ports: &Ports, filter_wasm: &Path) -> String {
    let cert = yaml_str(&files.authz_file("server.pem").display().to_string());
    let key = yaml_str(&files.authz_file("server-key.pem").display().to_string());
    let ca = yaml_str(&files.ca().display().to_string());
    let wasm = yaml_str(&filter_wasm.display().to_string());
    let origins = [urls.page.clone(), format!("http://localhost:{}", ports.page)];
    let origin_matchers = origins
        .iter()
        .map(|o| format!("{{ exact: {} }}", yaml_str(o)))
        .collect::<Vec<_>>()
        .join(", ");
    let listener = |name: &str, port: u16, mtls: bool| {
        let config = yaml_str(&filter_config(files, urls, port, mtls).to_string());
        let client_certs = if mtls {
            format!(
                "          require_client_certificate: true\n          common_tls_context:\n            \
                 tls_certificates: [{{ certificate_chain: {{ filename: {cert} }}, private_key: {{ filename: {key} }} }}]\n            \
                 validation_context: {{ trusted_ca: {{ filename: {ca} }} }}\n"
            )
        } else {
            format!(
                "          common_tls_context:\n            \
                 tls_certificates: [{{ certificate_chain: {{ filename: {cert} }}, private_key: {{ filename: {key} }} }}]\n"
            )
        };
        // On the mTLS listener Envoy writes the client's certificate into XFCC, replacing any
        // the client sent, so the filter can read its PSD2 roles (the hash is checked against the
        // connection's own certificate).
        let xfcc = if mtls {
            "          forward_client_cert_details: SANITIZE_SET\n          set_current_client_cert_details: { cert: true }\n"
        } else {
            "          forward_client_cert_details: SANITIZE\n"
        };
        format!(
            r#"  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
{client_certs}      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
{xfcc}          # Paths normalised before routing and filters, an encoded / or \ refused, header
          # names with underscores refused (README: "Deploying safely").
          normalize_path: true
          merge_slashes: true
          path_with_escaped_slashes_action: REJECT_REQUEST
          common_http_protocol_options:
            headers_with_underscores_action: REJECT_REQUEST
          route_config:
            virtual_hosts:
            - name: api
              domains: ["*"]
              typed_per_filter_config:
                envoy.filters.http.cors:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
                  allow_origin_string_match: [{origin_matchers}]
                  allow_methods: "GET, POST"
                  allow_headers: "authorization, dpop, content-type"
                  expose_headers: "dpop-nonce, www-authenticate, date"
                  max_age: "600"
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: echo }}
          http_filters:
          - name: envoy.filters.http.cors
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: keybound
                root_id: keybound
                fail_open: false
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: {config}
                vm_config:
                  runtime: envoy.wasm.runtime.v8
                  code: {{ local: {{ filename: {wasm} }} }}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
        )
    };
    format!(
        r#"# Written by keybound-demo on every start. The keybound demo gateway: a DPoP route and an
# mTLS route in front of the echo API; keys from keybound-authz's jwks_uri.
stats_config:
{stats_tags}static_resources:
  listeners:
{dpop}{mtls}  clusters:
  - name: echo
    connect_timeout: 1s
    type: STATIC
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {echo} }} }} }}
  - name: authz
    connect_timeout: 2s
    type: STATIC
    load_assignment:
      cluster_name: authz
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {authz} }} }} }}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: localhost
        common_tls_context:
          validation_context:
            trusted_ca: {{ filename: {ca} }}
            match_typed_subject_alt_names:
            - {{ san_type: DNS, matcher: {{ exact: localhost }} }}
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
"#,
        stats_tags = keybound_filter::metrics::stats_tags_yaml(),
        dpop = listener("dpop", ports.dpop, false),
        mtls = listener("mtls", ports.mtls, true),
        echo = ports.echo,
        authz = ports.authz,
        admin = ports.admin,
    )
}

/// The `kid` of a client's registered key, from the authorization server's config.
pub fn client_kid(files: &DemoFiles, client_id: &str) -> Option<String> {
    let text = std::fs::read_to_string(&files.authz_config).ok()?;
    let table: toml::Table = text.parse().ok()?;
    let client = table
        .get("clients")?
        .as_array()?
        .iter()
        .find(|c| c.get("client_id").and_then(toml::Value::as_str) == Some(client_id))?;
    let jwks: serde_json::Value = serde_json::from_str(client.get("jwks")?.as_str()?).ok()?;
    jwks.pointer("/keys/0/kid")?.as_str().map(str::to_string)
}

/// `endpoints.json`: everything a client needs to drive the running demo.
pub fn endpoints_json(files: &DemoFiles, urls: &Urls) -> serde_json::Value {
    let f = |name: &str| files.authz_file(name).display().to_string();
    serde_json::json!({
        "authorization_server": {
            "issuer": urls.issuer,
            "discovery": format!("{}/.well-known/openid-configuration", urls.issuer),
            "pushed_authorization_request_endpoint": format!("{}/par", urls.issuer),
            "authorization_endpoint": format!("{}/authorize", urls.issuer),
            "token_endpoint": format!("{}/token", urls.issuer),
            "jwks_uri": format!("{}/jwks", urls.issuer),
            "config": files.authz_config.display().to_string(),
        },
        "gateway": {
            "dpop_api": urls.dpop_api,
            "mtls_api": urls.mtls_api,
            "admin": urls.admin,
            "audience": AUDIENCE,
            "required_scope": "accounts",
        },
        "upstream_echo": urls.echo,
        "demo_page": format!("{}/", urls.page),
        "ca_file": f("ca.pem"),
        "server_spki_sha256": files.server_spki_sha256,
        "clients": [
            {
                "client_id": DPOP_CLIENT,
                "auth_method": "private_key_jwt",
                "sender_constraint": "dpop",
                "private_key_file": f("fapi-dpop.key"),
                "private_key_format": "base64url P-256 private scalar (ES256)",
                "key_id": client_kid(files, DPOP_CLIENT),
                "client_assertion_audience": urls.issuer,
                "redirect_uri": NATIVE_REDIRECT,
                "scope": "openid accounts",
            },
            {
                "client_id": MTLS_CLIENT,
                "auth_method": "tls_client_auth",
                "sender_constraint": "mtls",
                "certificate_file": f("mtls-client.pem"),
                "private_key_file": f("mtls-client-key.pem"),
                "redirect_uri": NATIVE_REDIRECT,
                "scope": "openid accounts",
            },
            {
                "client_id": PAGE_CLIENT,
                "auth_method": "none",
                "sender_constraint": "dpop",
                "redirect_uri": urls.redirect_uri(),
                "scope": "openid accounts",
            },
        ],
        "other_client_certificate": {
            "certificate_file": f("other-client.pem"),
            "private_key_file": f("other-client-key.pem"),
            "note": "issued by the same CA but registered for no client: tokens bound to another certificate fail with it",
        },
        "user": { "username": files.user.0, "password": files.user.1 },
        "dpop_nonce": {
            "mode": if files.nonce_secret.is_some() { "required" } else { "off" },
            "where": if files.nonce_secret.is_some() {
                "authorization server (PAR, token: 400 use_dpop_nonce) and gateway DPoP route (401 use_dpop_nonce); same secret, so one nonce is good at both"
            } else {
                "nowhere"
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_standard_matches_rfc4648_vectors() {
        assert_eq!(base64_std(b""), "");
        assert_eq!(base64_std(b"f"), "Zg==");
        assert_eq!(base64_std(b"fo"), "Zm8=");
        assert_eq!(base64_std(b"foo"), "Zm9v");
        assert_eq!(base64_std(b"foob"), "Zm9vYg==");
        assert_eq!(base64_std(b"fooba"), "Zm9vYmE=");
        assert_eq!(base64_std(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn a_port_in_use_is_named_with_its_flag() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = l.local_addr().unwrap().port();
        let mut ports = Ports::free().unwrap();
        ports.mtls = taken;
        let e = ports.check_free().unwrap_err();
        assert!(e.contains(&format!("port {taken}")) && e.contains("--mtls-port"), "{e}");
        let mut ports = Ports::free().unwrap();
        ports.echo = ports.page;
        let e = ports.check_free().unwrap_err();
        assert!(e.contains("both"), "{e}");
        drop(l);
    }

    #[test]
    fn config_patch_follows_ports_and_reads_the_nonce_secret() {
        let mut t: toml::Table = r#"
issuer = "https://127.0.0.1:1"
listen = "127.0.0.1:1"
[dpop]
nonce = "required"
nonce_secrets = ["c2VjcmV0"]
[[clients]]
client_id = "public-spa"
redirect_uris = ["http://127.0.0.1:8080/cb"]
[[clients]]
client_id = "fapi-dpop"
resources = ["https://api.keybound.test"]
"#
        .parse()
        .unwrap();
        let ports = Ports {
            page: 7000,
            authz: 7001,
            dpop: 7002,
            ..Ports::default()
        };
        let secret = patch_authz_config(&mut t, &Urls::new(&ports), &ports).unwrap();
        assert_eq!(secret.as_deref(), Some("c2VjcmV0"));
        assert_eq!(t["issuer"].as_str(), Some("https://127.0.0.1:7001"));
        assert_eq!(t["listen"].as_str(), Some("127.0.0.1:7001"));
        assert_eq!(t["cors_origins"][0].as_str(), Some("http://127.0.0.1:7000"));
        assert_eq!(
            t["clients"][0]["redirect_uris"][0].as_str(),
            Some("http://127.0.0.1:7000/cb")
        );
        // The gateway's DPoP listener is a resource the DPoP client may ask for (story, chapter 0).
        let both = toml::Value::Array(vec![AUDIENCE.into(), "https://127.0.0.1:7002".into()]);
        assert_eq!(t["audience"], both);
        assert_eq!(t["clients"][1]["resources"], both);
        assert_eq!(t["default_resource"].as_str(), Some(AUDIENCE));
        let mut no_public: toml::Table = "[[clients]]\nclient_id = \"x\"\n".parse().unwrap();
        assert!(patch_authz_config(&mut no_public, &Urls::new(&ports), &ports).is_err());
    }

    /// Issue 12: the gateway the demo generates normalises paths, refuses underscores in header
    /// names, and checks proofs against the origins of each listener.
    #[test]
    fn the_generated_gateway_is_hardened_and_knows_its_origins() {
        let ports = Ports {
            dpop: 7443,
            mtls: 7444,
            ..Ports::default()
        };
        let files = DemoFiles {
            dir: "d".into(),
            authz_dir: "d/authz".into(),
            authz_config: "d/authz.toml".into(),
            envoy_config: "d/envoy.yaml".into(),
            endpoints: "d/endpoints.json".into(),
            user: ("alice".into(), "pw".into()),
            nonce_secret: Some("c2VjcmV0".into()),
            server_spki_sha256: String::new(),
        };
        let yaml = envoy_yaml(&files, &Urls::new(&ports), &ports, Path::new("f.wasm"));
        for setting in [
            "normalize_path: true",
            "merge_slashes: true",
            "path_with_escaped_slashes_action: REJECT_REQUEST",
            "headers_with_underscores_action: REJECT_REQUEST",
        ] {
            assert_eq!(yaml.matches(setting).count(), 2, "{setting} on both listeners");
        }
        for port in [7443, 7444] {
            let origins = format!(r#"\"origins\":[\"https://127.0.0.1:{port}\",\"https://localhost:{port}\"]"#);
            assert!(yaml.contains(&origins), "{origins} in {yaml}");
        }
    }
}
