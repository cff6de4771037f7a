//! Behind a TLS-terminating proxy: a real Envoy terminates the client's mutual TLS and forwards
//! the verified certificate in XFCC to keybound-authz's plain-HTTP `trusted_proxy` listener, which
//! only Envoy's address (127.0.0.2 here) may use. `tls_client_auth`,
//! `self_signed_tls_client_auth` and certificate-bound tokens work as over the server's own TLS;
//! nobody else can hand the server a certificate. Needs Envoy (`cargo xtask test` installs it).
#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

mod common;

use std::time::Duration;

use common::*;
use keybound_core::cert::X5tS256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PROXY_ADDR: &str = "127.0.0.2";

fn envoy_yaml(env: &Env, admin: u16, upstream: u16) -> String {
    let file = |name: &str| env.path(name).display().to_string();
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: public
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: false
          common_tls_context:
            tls_certificates:
            - certificate_chain: {{ filename: "{cert}" }}
              private_key: {{ filename: "{key}" }}
            validation_context:
              trusted_ca: {{ filename: "{ca}" }}
              trust_chain_verification: ACCEPT_UNTRUSTED
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: public
          use_remote_address: true
          forward_client_cert_details: SANITIZE_SET
          set_current_client_cert_details: {{ cert: true, chain: true }}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{{ match: {{ prefix: "/" }}, route: {{ cluster: authz }} }}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: authz
    type: STATIC
    connect_timeout: 2s
    upstream_bind_config: {{ source_address: {{ address: {PROXY_ADDR}, port_value: 0 }} }}
    load_assignment:
      cluster_name: authz
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {upstream} }} }} }}
"#,
        port = env.port,
        cert = file("server.pem"),
        key = file("server-key.pem"),
        ca = file("ca.pem"),
    )
}

/// keybound-authz with its own TLS on a side port and the proxy listener; Envoy on the issuer's
/// port.
fn start(header: &str) -> (Env, Server, keybound_e2e::Envoy, u16) {
    let proxy_port = free_port();
    let env = Env::new(&Options {
        extra: format!(
            "[trusted_proxy]\nlisten = \"127.0.0.1:{proxy_port}\"\naddresses = [\"{PROXY_ADDR}\"]\nclient_cert_header = \"{header}\"\n"
        ),
        ..no_nonce()
    });
    let own_tls = format!("127.0.0.1:{}", free_port());
    let server = Server::start_with_env(&env.config, env.port, &[("KEYBOUND_AUTHZ_LISTEN", &own_tls)]);
    let admin = free_port();
    let envoy = keybound_e2e::Envoy::start_yaml(&envoy_yaml(&env, admin, proxy_port), env.port, admin).unwrap();
    (env, server, envoy, proxy_port)
}

fn thumbprint(env: &Env, pem: &str) -> String {
    keybound_core::b64::encode(
        X5tS256::from_pem(&std::fs::read_to_string(env.path(pem)).unwrap())
            .unwrap()
            .as_bytes(),
    )
}

/// One raw HTTP/1.1 request to the proxy listener from `from`: the answer, or `""` when the
/// connection is closed unanswered.
async fn direct(from: &str, port: u16, path: &str, headers: &[(&str, String)], body: &str) -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut s = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    // The server may close before reading: only the answer matters.
    let _ = s.write_all(req.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn client_credentials() -> Vec<(&'static str, &'static str)> {
    vec![
        ("grant_type", "client_credentials"),
        ("client_id", "mtls"),
        ("scope", "accounts"),
    ]
}

#[tokio::test]
async fn certificates_verified_by_envoy_authenticate_clients_and_bind_tokens() {
    let (env, server, _envoy, proxy_port) = start("xfcc");
    let public = Https::new(&env, None);
    // The metadata is the issuer's, with the mTLS aliases at the same (proxied) URLs.
    let meta = public.get("/.well-known/oauth-authorization-server").await.json();
    assert_eq!(meta["issuer"], env.issuer.as_str());
    assert_eq!(
        meta["mtls_endpoint_aliases"]["token_endpoint"],
        env.url("/token").as_str()
    );
    assert_eq!(meta["tls_client_certificate_bound_access_tokens"], true);

    // tls_client_auth: the CA-issued certificate, presented to Envoy; the token is bound to it.
    let r = Https::mtls(&env).post_form("/token", &client_credentials(), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let c = claims(r.json()["access_token"].as_str().unwrap());
    assert_eq!(
        c["cnf"]["x5t#S256"].as_str(),
        Some(thumbprint(&env, "mtls-client.pem").as_str())
    );

    // self_signed_tls_client_auth: Envoy accepts the untrusted certificate, keybound-authz checks
    // it against the registered one.
    let (_, challenge) = pkce();
    let mut params = authz_params("selfsigned", &challenge, REDIRECT);
    for p in &mut params {
        if p.0 == "scope" {
            p.1 = "accounts";
        }
    }
    let r = Https::self_signed(&env).post_form("/par", &params, &[]).await;
    assert_eq!(r.status, 201, "{}", r.text());

    // No certificate, or one forged in a header by the client: Envoy sanitises XFCC.
    let forged = format!(
        "Cert=\"{}\"",
        std::fs::read_to_string(env.path("mtls-client.pem"))
            .unwrap()
            .replace('\n', "%0A")
            .replace(' ', "%20")
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
    );
    for headers in [vec![], vec![("x-forwarded-client-cert", forged.as_str())]] {
        let r = public.post_form("/token", &client_credentials(), &headers).await;
        assert_eq!((r.status, r.error().as_str()), (401, "invalid_client"), "{headers:?}");
    }
    // The self-signed certificate is not the mtls client's.
    let r = Https::self_signed(&env)
        .post_form("/token", &client_credentials(), &[])
        .await;
    assert_eq!((r.status, r.error().as_str()), (401, "invalid_client"));

    // Straight to the proxy listener from another address: closed unanswered, whatever it sends.
    let answer = direct(
        "127.0.0.1",
        proxy_port,
        "/token",
        &[("x-forwarded-client-cert", forged.clone())],
        "",
    )
    .await;
    assert_eq!(answer, "", "an untrusted peer gets no answer");
    // From the proxy's address, a malformed certificate header is refused, not guessed.
    let answer = direct(
        PROXY_ADDR,
        proxy_port,
        "/token",
        &[("x-forwarded-client-cert", "Cert=\"junk\"".into())],
        "",
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 400") && answer.contains("invalid_request"),
        "{answer}"
    );

    // The request log names the client's address (from Envoy's X-Forwarded-For: for a loopback
    // client Envoy appends the machine's own address), never the proxy's.
    let log = server.stop();
    let token_lines: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["event"] == "request" && l["path"] == "/token")
        .collect();
    assert!(token_lines.len() >= 4, "{log}");
    assert!(
        token_lines.iter().take(4).all(|l| l["client"]
            .as_str()
            .is_some_and(|c| c != PROXY_ADDR && c.parse::<std::net::IpAddr>().is_ok())),
        "{log}"
    );
    assert!(log.contains("untrusted_proxy_connection"), "{log}");
}

/// RFC 9440 `Client-Cert`: what a proxy that speaks it (here the test, from the trusted address)
/// forwards; the token is bound to that certificate, and a malformed value is refused.
#[tokio::test]
async fn rfc9440_client_cert_from_the_trusted_proxy() {
    let (env, server, _envoy, proxy_port) = start("client-cert");
    let pem = std::fs::read_to_string(env.path("mtls-client.pem")).unwrap();
    let der = keybound_core::cert::pem_certificates(&pem).unwrap().remove(0);
    let sf = |der: &[u8]| {
        let b = keybound_core::b64::encode(der).replace('-', "+").replace('_', "/");
        let pad = "=".repeat((4 - b.len() % 4) % 4);
        format!(":{b}{pad}:")
    };
    let body = encode(&client_credentials());
    let answer = direct(
        PROXY_ADDR,
        proxy_port,
        "/token",
        &[
            ("client-cert", sf(&der)),
            ("x-forwarded-for", "203.0.113.9, 198.51.100.7".into()),
        ],
        &body,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let json: serde_json::Value = serde_json::from_str(answer.split_once("\r\n\r\n").unwrap().1).unwrap();
    let c = claims(json["access_token"].as_str().unwrap());
    assert_eq!(
        c["cnf"]["x5t#S256"].as_str(),
        Some(thumbprint(&env, "mtls-client.pem").as_str())
    );
    // The Envoy in front forwards XFCC, which this listener does not read: no certificate.
    let r = Https::mtls(&env).post_form("/token", &client_credentials(), &[]).await;
    assert_eq!((r.status, r.error().as_str()), (401, "invalid_client"));
    let answer = direct(
        PROXY_ADDR,
        proxy_port,
        "/token",
        &[("client-cert", "not-a-byte-sequence".into())],
        &body,
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 400") && answer.contains("invalid_request"),
        "{answer}"
    );
    let log = server.stop();
    assert!(
        log.lines()
            .any(|l| l.contains(r#""client":"198.51.100.7""#) && l.contains(r#""status":200"#)),
        "the client's address is the last X-Forwarded-For entry: {log}"
    );
}
